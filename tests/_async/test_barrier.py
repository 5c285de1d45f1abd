"""Barriers against a real etcd: hold / release / wait, and the double barrier.

* a barrier held blocks ``wait()`` until released, whoever releases it; the waiter
  reports the release's revision; a lease-bound barrier falls with its holder's
  session, a persistent one (Go's behaviour) does not; Go's key layout;
* a double barrier of N lets nobody enter before N participants arrived and
  nobody leave before all left (checked on revisions), refuses an N+1-th, withdraws
  on timeout, and a participant whose session dies does not block the others;
  its writes whose answers are lost are sent again and recognised (one waiter key,
  one ``ready`` write).

Canonical asyncio tests; ``tests/_sync/test_barrier.py`` is generated from this file.
"""

from __future__ import annotations

from typing import Any

import pytest

from etcdsync import AsyncClient, Compare, Op, errors
from etcdsync._async.concurrency.double_barrier import AsyncDoubleBarrier
from etcdsync._backends._async import Event, spawn, wait_event
from etcdsync.watch_types import EventType

from .lock_helpers import collect, count_keys, wait_count

TTL = 5


async def test_hold_blocks_waiters_until_release(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}gate"
    passed: list[Any] = []
    through = Event()

    async def waiter() -> None:
        async with AsyncClient(etcd_endpoint) as etcd:
            passed.append(await etcd.barrier(name).wait(timeout=20))
            through.set()

    async with AsyncClient(etcd_endpoint) as etcd:
        barrier = etcd.barrier(name, ttl=TTL)
        assert await barrier.wait(timeout=0) > 0  # down: returns at once
        assert await barrier.hold() is True
        assert await barrier.hold() is True  # held by this object already
        assert await etcd.barrier(name, ttl=TTL).hold() is False  # by someone else
        assert await barrier.is_up()
        kv = (await etcd.get(name)).kv
        assert kv is not None and kv.lease != 0 and kv.create_revision == barrier.revision
        with pytest.raises(errors.BarrierTimeout):
            await barrier.wait(timeout=0.2)
        task = spawn(collect, [], waiter, name="waiter")
        assert not await wait_event(through, 0.5)
        other = etcd.barrier(name)  # anyone may release it (Go's Release)
        assert await other.release() is True
        assert await task.join(10) and through.is_set()
        deleted = await etcd.get(name)
        assert deleted.kv is None
        # The waiter saw the release itself: the revision of the delete.
        history = await etcd.watch(name, start_revision=barrier.revision + 1)
        async with history:
            batch = await history.get(timeout=5)
        (event,) = batch.events
        assert event.type is EventType.DELETE and passed == [event.revision]
        assert await other.release() is False  # down already


async def test_lease_bound_barrier_falls_with_its_session_persistent_does_not(
    etcd_endpoint: str, prefix: str
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        session = await etcd.session(ttl=TTL)
        bound = etcd.barrier(f"{prefix}bound", session=session)
        persistent = etcd.barrier(f"{prefix}persistent", persistent=True)
        assert await bound.hold() and await persistent.hold()
        kv = (await etcd.get(f"{prefix}persistent")).kv
        assert kv is not None and kv.lease == 0  # Go's layout: no lease
        await session.close()  # the holder "dies"
        assert await etcd.barrier(f"{prefix}bound").wait(timeout=5) > 0
        assert await etcd.barrier(f"{prefix}persistent").is_up()
        await persistent.release()
        with pytest.raises(errors.InvalidRequest):
            etcd.barrier(f"{prefix}x", persistent=True, ttl=5)
        with pytest.raises(errors.InvalidRequest):
            etcd.barrier("")


async def test_go_style_hold_is_honoured(etcd_endpoint: str, prefix: str) -> None:
    # What Go's Barrier.Hold writes: put-if-absent of <name>, empty value, no lease.
    name = f"{prefix}gate"
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.txn([Compare.version(name) == 0], [Op.put(name, "")])
        barrier = etcd.barrier(name, ttl=TTL)
        assert await barrier.hold() is False and await barrier.is_up()
        with pytest.raises(errors.BarrierTimeout):
            await barrier.wait(timeout=0.2)
        await etcd.delete(name)  # Go's Release
        await barrier.wait(timeout=5)


# --- double barrier --------------------------------------------------------------------------


async def _waiter_events(etcd: AsyncClient, prefix: str, start: int) -> dict[bytes, list[int]]:
    """PUT and DELETE revisions of every waiter key since ``start``, from history."""
    current = (await etcd.get(prefix, prefix=True)).revision
    out: dict[bytes, list[int]] = {}
    async with await etcd.watch(prefix, prefix=True, start_revision=start) as watcher:
        seen = start - 1
        while seen < current:
            batch = await watcher.get(timeout=5)
            for event in batch.events:
                out.setdefault(event.key, []).append(event.revision)
            seen = max(seen, batch.revision)
    return out


async def test_nobody_enters_before_count_nobody_leaves_before_all(
    etcd_endpoint: str, prefix: str
) -> None:
    name, count = f"{prefix}round", 3
    entered: dict[int, int] = {}
    left: dict[int, int] = {}
    in_events = {i: Event() for i in range(count)}
    go_leave = {i: Event() for i in range(count)}
    out_events = {i: Event() for i in range(count)}
    results: list[Any] = []

    async def participant(i: int) -> None:
        async with AsyncClient(etcd_endpoint) as etcd:
            barrier = etcd.double_barrier(name, count, ttl=TTL)
            entered[i] = await barrier.enter(timeout=20)
            assert barrier.entered
            in_events[i].set()
            assert await wait_event(go_leave[i], 20)
            left[i] = await barrier.leave(timeout=20)
            assert not barrier.entered and barrier.key == ""
            out_events[i].set()

    async with AsyncClient(etcd_endpoint) as etcd:
        start = (await etcd.get(name)).revision + 1
        tasks = [spawn(collect, results, participant, 0, name="p0")]
        await wait_count(etcd, f"{name}/waiters/", 1)
        tasks.append(spawn(collect, results, participant, 1, name="p1"))
        await wait_count(etcd, f"{name}/waiters/", 2)
        assert not await wait_event(in_events[0], 0.3)  # 2 of 3: nobody is in
        assert not in_events[1].is_set()
        tasks.append(spawn(collect, results, participant, 2, name="p2"))
        for i in range(count):
            assert await wait_event(in_events[i], 10)
        # Everybody entered at the same revision: the ready key's write, after the
        # last waiter key was created.
        assert len(set(entered.values())) == 1
        ready = (await etcd.get(f"{name}/ready")).kv
        assert ready is not None and ready.mod_revision == entered[0]

        # The oldest and one other ask to leave: both wait for the third.
        go_leave[0].set()
        go_leave[1].set()
        assert not await wait_event(out_events[0], 0.5)
        assert not out_events[1].is_set()
        go_leave[2].set()
        for task in tasks:
            assert await task.join(20)
        assert results == [None] * count, results
        assert await count_keys(etcd, f"{name}/") == 0  # waiters and ready gone

        events = await _waiter_events(etcd, f"{name}/waiters/", start)
        assert len(events) == count
        created = [revisions[0] for revisions in events.values()]
        deleted = [revisions[-1] for revisions in events.values()]
        assert all(len(revisions) == 2 for revisions in events.values())
        assert max(created) < min(entered.values())  # nobody entered before all came
        assert min(left.values()) >= max(deleted)  # nobody left before all had gone


async def test_a_participant_too_many_is_refused_and_a_timeout_withdraws(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}round"
    async with AsyncClient(etcd_endpoint) as etcd:
        first = etcd.double_barrier(name, 2, ttl=TTL)
        with pytest.raises(errors.BarrierTimeout):
            await first.enter(timeout=0.3)
        assert await count_keys(etcd, f"{name}/waiters/") == 0  # withdrawn
        results: list[Any] = []
        a = spawn(collect, results, etcd.double_barrier(name, 2, ttl=TTL).enter, 10, name="a")
        await wait_count(etcd, f"{name}/waiters/", 1)
        b = etcd.double_barrier(name, 2, ttl=TTL)
        await b.enter(timeout=10)
        assert await a.join(10) and isinstance(results[0], int)
        with pytest.raises(errors.BarrierFullError):
            await etcd.double_barrier(name, 2, ttl=TTL).enter(timeout=5)
        assert await count_keys(etcd, f"{name}/waiters/") == 2
        with pytest.raises(errors.BarrierError):
            await b.enter()  # in already
        with pytest.raises(errors.BarrierError):
            await etcd.double_barrier(name, 2).leave()  # never entered
        for bad in (0, -1, True, 1.5):
            with pytest.raises(errors.InvalidRequest):
                etcd.double_barrier(name, bad)  # type: ignore[arg-type]


async def test_a_dead_participant_does_not_block_the_others(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}round"
    async with AsyncClient(etcd_endpoint) as etcd:
        doomed_session = await etcd.session(ttl=TTL)
        results: list[Any] = []
        doomed = etcd.double_barrier(name, 3, session=doomed_session)
        others = [etcd.double_barrier(name, 3, ttl=TTL) for _ in range(2)]
        tasks = [spawn(collect, results, doomed.enter, 10, name="doomed")]
        await wait_count(etcd, f"{name}/waiters/", 1)
        tasks += [spawn(collect, results, b.enter, 10, name=f"o{i}") for i, b in enumerate(others)]
        for task in tasks:
            assert await task.join(10)
        assert all(isinstance(r, int) for r in results), results
        # The oldest participant dies inside: its key goes with its lease, and the
        # others' leave() does not wait for it forever.
        await doomed_session.close()
        left: list[Any] = []
        leaving = [spawn(collect, left, b.leave, 10, name=f"l{i}") for i, b in enumerate(others)]
        for task in leaving:
            assert await task.join(15)
        assert len(left) == 2 and all(isinstance(rev, int) and rev > 0 for rev in left), left
        assert await count_keys(etcd, f"{name}/waiters/") == 0


class _AnswerLost:
    """A real client whose next ``lose`` txn answers are dropped after etcd applied
    them (a leader crashing after the commit looks the same to the caller)."""

    def __init__(self, client: AsyncClient, lose: int) -> None:
        self._client = client
        self.lose = lose

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def txn(self, *args: Any, **kw: Any) -> Any:
        response = await self._client.txn(*args, **kw)
        if self.lose:
            self.lose -= 1
            raise errors.Unavailable("test: the answer was lost")
        return response


async def test_double_barrier_writes_whose_answers_are_lost_are_sent_again(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}round"
    async with AsyncClient(etcd_endpoint) as etcd:
        # Alone in a barrier of 1: the waiter key's put and the ready write each lose
        # their answer once, then the leave's delete.
        lossy = _AnswerLost(etcd, 2)
        barrier = AsyncDoubleBarrier(lossy, name, 1, ttl=TTL)  # type: ignore[arg-type]
        opened = await barrier.enter(timeout=10)
        assert lossy.lose == 0
        waiters = (await etcd.get(f"{name}/waiters/", prefix=True)).kvs
        assert [kv.key.decode() for kv in waiters] == [barrier.key]  # one key: ours
        ready = (await etcd.get(f"{name}/ready")).kv
        assert ready is not None and ready.mod_revision == opened and ready.version == 1
        lossy.lose = 1
        assert await barrier.leave(timeout=10) > opened
        assert lossy.lose == 0 and await count_keys(etcd, f"{name}/") == 0
