"""Mutex against a real etcd: queueing, timeouts, fencing, loss, in-process exclusion.

Canonical asyncio tests; ``tests/_sync/test_mutex.py`` is generated from this file
(tasks become threads).  Contenders that must queue in etcd use separate clients
(each has its own shared session, hence its own key); holders that share a client
share one session and one key and must exclude each other in-process.
Multi-process and etcdctl interoperability tests live in ``tests/test_lock_processes.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from etcdsync import AsyncClient, Compare, Op, errors
from etcdsync._async.concurrency.mutex import AsyncMutex
from etcdsync._backends._async import Event, sleep, spawn, wait_event

from .lock_helpers import collect, count_keys, wait_count

TTL = 5


async def test_key_layout_token_and_release(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}job"
    async with AsyncClient(etcd_endpoint) as etcd:
        lock = etcd.lock(name, ttl=TTL)
        assert isinstance(lock, AsyncMutex) and not lock.held
        async with lock as held:
            assert held is lock and lock.held and not lock.lost.is_set()
            session = lock.session
            assert session is not None and session.ttl >= TTL
            assert lock.key == f"{name}/{session.lease_id:x}"  # Go/etcdctl layout
            kv = (await etcd.get(lock.key)).kv
            assert kv is not None
            assert kv.value == b"" and kv.lease == session.lease_id
            assert lock.fencing_token == kv.create_revision
            assert (await etcd.txn([lock.is_owner()])).succeeded
        assert not lock.held
        assert await count_keys(etcd, f"{name}/") == 0
        with pytest.raises(errors.LockError):
            _ = lock.fencing_token
        with pytest.raises(errors.LockError):
            lock.is_owner()
        # A second hold by the same object gets a new, higher token.
        first = kv.create_revision
        await lock.acquire()
        assert lock.fencing_token > first
        await lock.release()
        await lock.release()  # idempotent


async def test_try_acquire_and_timeout_leave_no_queued_key(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}job"
    async with AsyncClient(etcd_endpoint) as a, AsyncClient(etcd_endpoint) as b:
        holder = await a.lock(name, ttl=TTL).acquire()
        contender = b.lock(name, ttl=TTL)
        assert await contender.try_acquire() is False
        assert not contender.held
        assert await count_keys(a, f"{name}/") == 1

        started = time.monotonic()
        with pytest.raises(errors.LockTimeout) as caught:
            await contender.acquire(timeout=0.3)
        elapsed = time.monotonic() - started
        assert isinstance(caught.value, TimeoutError)  # LockTimeout is a Timeout
        assert 0.3 <= elapsed < 3.0
        # Its queued key is removed in the background, after the error was raised.
        await wait_count(a, f"{name}/", 1)

        await holder.release()
        assert await contender.try_acquire() is True
        assert contender.held
        await contender.release()


async def test_timed_out_context_manager_never_runs_its_body(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}job"
    ran = []
    async with AsyncClient(etcd_endpoint) as a, AsyncClient(etcd_endpoint) as b:
        async with a.lock(name, ttl=TTL):
            with pytest.raises(errors.LockTimeout):
                async with b.lock(name, ttl=TTL, timeout=0.2):
                    ran.append("body")  # pragma: no cover - must never run
        assert ran == []
        await wait_count(a, f"{name}/", 0)  # the timed-out key goes in the background


async def test_waiters_are_served_in_arrival_order(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}job"
    order: list[tuple[int, int]] = []
    results: list[Any] = []

    async def waiter(index: int) -> None:
        async with AsyncClient(etcd_endpoint) as etcd:
            async with etcd.lock(name, ttl=TTL, timeout=20) as lock:
                order.append((index, lock.fencing_token))

    async with AsyncClient(etcd_endpoint) as etcd:
        holder = await etcd.lock(name, ttl=TTL).acquire()
        holder_token = holder.fencing_token
        tasks = []
        for index in range(3):
            tasks.append(spawn(collect, results, waiter, index, name=f"waiter-{index}"))
            await wait_count(etcd, f"{name}/", index + 2)  # queued before the next one
        assert order == []
        await holder.release()
        for task in tasks:
            assert await task.join(20)
    assert results == [None, None, None]
    assert [index for index, _ in order] == [0, 1, 2]
    tokens = [token for _, token in order]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    assert tokens[0] > holder_token


async def test_a_leaving_waiter_does_not_let_the_next_one_in(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}job"
    results: list[Any] = []
    acquired = Event()

    async def second() -> None:
        async with AsyncClient(etcd_endpoint) as etcd:
            async with etcd.lock(name, ttl=TTL, timeout=20):
                acquired.set()

    async with (
        AsyncClient(etcd_endpoint) as etcd,
        AsyncClient(etcd_endpoint) as first_client,
    ):
        holder = await etcd.lock(name, ttl=TTL).acquire()
        first_results: list[Any] = []
        first = spawn(
            collect, first_results, first_client.lock(name, ttl=TTL).acquire, 1.0, name="first"
        )
        await wait_count(etcd, f"{name}/", 2)
        task = spawn(collect, results, second, name="second")
        await wait_count(etcd, f"{name}/", 3)
        # The first waiter gives up: the second must now wait for the holder, not enter.
        assert await first.join(10)
        assert isinstance(first_results[0], errors.LockTimeout)
        await wait_count(etcd, f"{name}/", 2)
        assert not await wait_event(acquired, 0.5)
        assert holder.held
        await holder.release()
        assert await wait_event(acquired, 10)
        assert await task.join(10)
    assert results == [None]


async def test_retried_release_never_deletes_a_newer_holders_key(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}job"
    async with AsyncClient(etcd_endpoint) as a, AsyncClient(etcd_endpoint) as b:
        session_a = await a.session(ttl=TTL)
        old = await a.lock(name, session=session_a).acquire()
        old_token = old.fencing_token
        # The first release reached etcd (the key is gone) but its answer was lost...
        await a.delete(old.key)
        # ...and a newer holder created the same key (same lease: shared session).
        session_b = await b.session(lease=session_a.lease)
        new = await b.lock(name, session=session_b).acquire()
        assert new.key == old.key and new.fencing_token > old_token
        # The retried release must leave the newer holder's key alone.
        await old.release()
        kv = (await a.get(new.key)).kv
        assert kv is not None and kv.create_revision == new.fencing_token
        assert (await b.txn([new.is_owner()])).succeeded
        await new.release()
        assert await count_keys(a, f"{name}/") == 0
        session_b.orphan()
        await session_a.close()


async def test_not_reentrant(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}job"
    async with AsyncClient(etcd_endpoint) as etcd:
        lock = await etcd.lock(name, ttl=TTL).acquire()
        with pytest.raises(errors.LockError):
            await lock.acquire()
        with pytest.raises(errors.LockError):
            await lock.try_acquire()
        # Another object of the same client and name waits for the first (in-process).
        other = etcd.lock(name, ttl=TTL)
        assert await other.try_acquire() is False
        with pytest.raises(errors.LockTimeout):
            await other.acquire(timeout=0.2)
        assert lock.held
        await lock.release()
        assert await other.try_acquire() is True
        await other.release()


async def test_holders_sharing_a_client_exclude_each_other(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}counter"
    counter = [0]
    keys: set[str] = set()
    results: list[Any] = []

    async def worker() -> None:
        for _ in range(10):
            async with etcd.lock(name, ttl=TTL, timeout=30) as lock:
                keys.add(lock.key)
                value = counter[0]
                await sleep(0.002)  # a race window: another holder would interleave here
                counter[0] = value + 1

    async with AsyncClient(etcd_endpoint) as etcd:
        tasks = [spawn(collect, results, worker, name=f"worker-{i}") for i in range(6)]
        for task in tasks:
            assert await task.join(60)
    assert results == [None] * 6
    assert counter[0] == 60
    assert len(keys) == 1  # one session, one key: exclusion had to be local


async def test_waiter_stops_as_soon_as_its_session_is_lost(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}job"
    async with AsyncClient(etcd_endpoint) as a, AsyncClient(etcd_endpoint) as b:
        holder = await a.lock(name, ttl=TTL).acquire()
        session = await b.session(ttl=TTL)
        results: list[Any] = []
        task = spawn(collect, results, b.lock(name, session=session).acquire, name="waiter")
        await wait_count(a, f"{name}/", 2)
        started = time.monotonic()
        await b.revoke(session.lease_id)  # seen at once by this client's keepalive
        assert await task.join(5)
        assert time.monotonic() - started < 1.0
        assert isinstance(results[0], errors.SessionExpiredError)
        assert results[0].lease_id == session.lease_id
        assert await count_keys(a, f"{name}/") == 1
        assert holder.held
        await holder.release()


async def test_waiter_learns_of_a_lease_revoked_elsewhere(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}job"
    ttl = 3
    async with AsyncClient(etcd_endpoint) as a, AsyncClient(etcd_endpoint) as b:
        holder = await a.lock(name, ttl=TTL).acquire()
        session = await b.session(ttl=ttl)
        results: list[Any] = []
        task = spawn(collect, results, b.lock(name, session=session).acquire, name="waiter")
        await wait_count(a, f"{name}/", 2)
        started = time.monotonic()
        await a.revoke(session.lease_id)  # b learns it at its next renewal (~ttl/3)
        assert await task.join(ttl + 2)
        assert time.monotonic() - started < ttl + 1
        assert isinstance(results[0], errors.SessionExpiredError)
        await holder.release()


async def test_lost_event_callback_and_fencing_when_session_ends(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}job"
    seen: list[errors.EtcdError] = []
    async with AsyncClient(etcd_endpoint) as etcd:
        session = await etcd.session(ttl=TTL)
        lock = etcd.lock(name, session=session)
        lock.add_lost_callback(seen.append)
        await lock.acquire()
        owner = lock.is_owner()
        await etcd.revoke(session.lease_id)
        assert await lock.wait_lost(5)
        assert lock.lost.is_set() and not lock.held
        assert len(seen) == 1 and isinstance(seen[0], errors.SessionExpiredError)
        # etcd rejects a write guarded by the old ownership...
        response = await etcd.txn([owner], [Op.put(f"{prefix}data", "x")])
        assert not response.succeeded
        # ...and guarded_txn refuses to write at all.
        with pytest.raises(errors.LockLostError):
            await lock.guarded_txn([Op.put(f"{prefix}data", "x")])
        assert (await etcd.get(f"{prefix}data")).kv is None
        await lock.release()  # nothing left to delete; no error
        assert await count_keys(etcd, f"{name}/") == 0


async def test_guarded_txn_writes_only_while_owner(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}job"
    data = f"{prefix}data"
    async with AsyncClient(etcd_endpoint) as etcd:
        async with etcd.lock(name, ttl=TTL) as lock:
            done = await lock.guarded_txn([Op.put(data, "1")])
            assert done.succeeded and done.revision > lock.fencing_token
            assert (await etcd.get(data)).value == b"1"
            # The caller's own compares decide between success and failure...
            other = await lock.guarded_txn(
                [Op.put(data, "2")], [Op.get(data)], [Compare.value(data) == "nope"]
            )
            assert not other.succeeded and not lock.lost.is_set()
            assert (await etcd.get(data)).value == b"1"
            # ...while a lost lock key raises and writes nothing.
            await etcd.delete(lock.key)
            with pytest.raises(errors.LockLostError):
                await lock.guarded_txn([Op.put(data, "3")])
            assert lock.lost.is_set()
            assert (await etcd.get(data)).value == b"1"


async def test_closing_the_client_marks_a_held_lock_lost(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}job"
    async with AsyncClient(etcd_endpoint) as observer:
        etcd = AsyncClient(etcd_endpoint)
        lock = await etcd.lock(name, ttl=TTL).acquire()
        await etcd.close()
        assert lock.lost.is_set()
        assert await count_keys(observer, f"{name}/") == 0  # the shared session was revoked
        await lock.release()


async def test_thousand_cycles_use_one_lease_and_leak_none(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}job"
    leases: set[int] = set()
    async with AsyncClient(etcd_endpoint) as observer:
        before = set(await observer.leases())
        async with AsyncClient(etcd_endpoint) as etcd:
            for _ in range(1000):
                async with etcd.lock(name, ttl=TTL) as lock:
                    session = lock.session
                    assert session is not None
                    leases.add(session.lease_id)
        after = set(await observer.leases())
        assert len(leases) == 1
        assert not leases & after
        assert after - before == set()
        assert await count_keys(observer, f"{name}/") == 0


async def test_invalid_arguments(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        with pytest.raises(errors.InvalidRequest):
            etcd.lock("")
        with pytest.raises(errors.InvalidRequest):
            etcd.lock("x", ttl=0)
        with pytest.raises(errors.InvalidRequest):
            etcd.lock("x", timeout=-1)
        session = await etcd.session(ttl=TTL)
        with pytest.raises(errors.InvalidRequest):
            etcd.lock("x", ttl=TTL, session=session)
        await session.close()
        with pytest.raises(errors.ClientClosedError):
            await etcd.lock("x", session=session).acquire()
