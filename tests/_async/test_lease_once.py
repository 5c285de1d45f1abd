"""Run-once leases against a real etcd: one winner per period, N slots, renewal,
expiry with the period, fencing, no leaked lease for the refused.

Waits for a period's end watch the slot key's deletion (the lease expiring); no
test sleeps.

Canonical asyncio tests; ``tests/_sync/test_lease_once.py`` is generated from this file.
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any

import pytest

from etcdsync import AsyncClient, AsyncLeaseOnce, Op, errors
from etcdsync._async.concurrency.lease_once import acquire_lease_once
from etcdsync.watch_types import EventType


async def _wait_deleted(etcd: Any, key: str, after_revision: int, timeout: float) -> int:
    """The revision at which ``key`` was deleted (watching from ``after_revision + 1``)."""
    async with await etcd.watch(key, start_revision=after_revision + 1) as watcher:
        while True:
            batch = await watcher.get(timeout=timeout)
            for event in batch.events:
                if event.type == EventType.DELETE:
                    return int(event.revision)


async def test_the_first_caller_wins_the_others_are_refused(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}nightly"
    async with AsyncClient(etcd_endpoint) as etcd:
        first = await etcd.lease_once(name, 30)
        assert isinstance(first, AsyncLeaseOnce)
        assert first and first.acquired and first.slot == 0 and first.key == f"{name}/0"
        assert first.ttl >= 30 and not first.renewed
        kv = (await etcd.get(f"{name}/0")).kvs[0]
        assert kv.value == f"{socket.gethostname()}:{os.getpid()}".encode()  # default value
        assert kv.lease == first.lease_id and kv.create_revision == first.revision
        status = await etcd.time_to_live(first.lease_id)
        assert status.granted_ttl == first.ttl  # a lease of the period, not kept alive

        for value in ("other", b"another"):
            refused = await etcd.lease_once(name, 30, value=value)
            assert not refused and refused.slot is None and refused.key is None
            assert [h.value for h in refused.holders] == [kv.value]
            assert refused.revision >= first.revision
        # The same caller again, without renew: told no (it has this period already).
        assert not await etcd.lease_once(name, 30)

        await first.release()
        assert (await etcd.get(f"{name}/0")).kvs == []
        second = await etcd.lease_once(name, 30, value="other")
        assert second and second.lease_id != first.lease_id
        await second.release()


async def test_the_name_returns_when_the_period_expires(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}job"
    async with AsyncClient(etcd_endpoint) as etcd:
        first = await etcd.lease_once(name, 1, value="a")
        assert first
        assert not await etcd.lease_once(name, 1, value="b")
        # Nobody keeps the lease alive: the key goes with the period.
        deleted = await _wait_deleted(etcd, f"{name}/0", first.revision, timeout=10)
        with pytest.raises(errors.LeaseNotFoundError):
            await etcd.time_to_live(first.lease_id)
        later = await etcd.lease_once(name, 1, value="b")
        assert later and later.revision > deleted


async def test_n_holders_per_period(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}pool"
    async with AsyncClient(etcd_endpoint) as etcd:
        a = await etcd.lease_once(name, 30, holders=2, value="a")
        b = await etcd.lease_once(name, 30, holders=2, value="b")
        assert (a.slot, b.slot) == (0, 1)
        c = await etcd.lease_once(name, 30, holders=2, value="c")
        assert not c and sorted(h.value for h in c.holders) == [b"a", b"b"]
        # One identity holds one slot at most.
        await a.release()
        assert not await etcd.lease_once(name, 30, holders=2, value="b")
        c = await etcd.lease_once(name, 30, holders=2, value="c")
        assert c.slot == 0  # the lowest free slot
        listing = await etcd.get(f"{name}/", prefix=True)
        assert {kv.key: kv.value for kv in listing.kvs} == {
            f"{name}/0".encode(): b"c",
            f"{name}/1".encode(): b"b",
        }
        await b.release()
        await c.release()


async def test_renew_takes_the_held_slot_for_a_new_period(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}sticky"
    async with AsyncClient(etcd_endpoint) as etcd:
        first = await etcd.lease_once(name, 30, value="host-1")
        assert not await etcd.lease_once(name, 30, value="host-2", renew=True)
        again = await etcd.lease_once(name, 30, value="host-1", renew=True)
        assert again and again.renewed and again.slot == first.slot
        assert again.lease_id != first.lease_id
        kv = (await etcd.get(f"{name}/0")).kvs[0]
        assert kv.lease == again.lease_id and kv.create_revision == first.revision
        await again.release()
        await first.release()  # its lease holds nothing any more: harmless


async def test_is_holder_guards_writes_to_the_period(etcd_endpoint: str, prefix: str) -> None:
    name, out = f"{prefix}job", f"{prefix}out"
    async with AsyncClient(etcd_endpoint) as etcd:
        won = await etcd.lease_once(name, 30)
        assert (await etcd.txn([won.is_holder()], [Op.put(out, "1")])).succeeded
        await won.release()
        assert not (await etcd.txn([won.is_holder()], [Op.put(out, "2")])).succeeded
        assert (await etcd.get(out)).kvs[0].value == b"1"
        winner = await etcd.lease_once(name, 30, value="x")
        assert winner
        loser = await etcd.lease_once(name, 30, value="y")
        with pytest.raises(errors.InvalidRequest):
            loser.is_holder()
        await winner.release()


class _LateComer:
    """Passes calls to a real client; while a lease is being granted, another caller
    takes the name - the race between the free-slot read and the claim."""

    def __init__(self, client: Any, name: str) -> None:
        self._client, self._name = client, name
        self.granted: list[int] = []
        self.rival: Any = None

    async def grant(self, ttl: int, **kwargs: Any) -> Any:
        self.rival = await self._client.lease_once(self._name, 30, value="rival")
        lease = await self._client.grant(ttl, **kwargs)
        self.granted.append(lease.id)
        return lease

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def test_a_caller_that_loses_the_race_is_refused_and_leaks_no_lease(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}race"
    async with AsyncClient(etcd_endpoint) as etcd:
        spy = _LateComer(etcd, name)
        lost = await acquire_lease_once(spy, name, 30, value="me")  # type: ignore[arg-type]
        assert spy.rival and not lost
        assert [h.value for h in lost.holders] == [b"rival"]
        assert len(spy.granted) == 1
        assert spy.granted[0] not in await etcd.leases()  # revoked at once
        await spy.rival.release()


class _Crowd:
    """Passes calls to a real client; while a lease is being granted, ``n`` rivals take
    slots (the lowest free ones)."""

    def __init__(self, client: Any, name: str, holders: int, n: int) -> None:
        self._client, self._name, self._holders, self._n = client, name, holders, n
        self.rivals: list[Any] = []

    async def grant(self, ttl: int, **kwargs: Any) -> Any:
        for i in range(self._n):
            rival = await self._client.lease_once(
                self._name, 30, holders=self._holders, value=f"rival-{i}"
            )
            self.rivals.append(rival)
        return await self._client.grant(ttl, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def test_many_slots_are_claimed_in_rounds(etcd_endpoint: str, prefix: str) -> None:
    """One claim txn tries at most 16 slots: when rivals took all of them meanwhile,
    the next round takes a slot the failed claim saw free."""
    name = f"{prefix}wide"
    async with AsyncClient(etcd_endpoint) as etcd:
        crowd = _Crowd(etcd, name, 40, 16)
        won = await acquire_lease_once(crowd, name, 30, holders=40, value="me")  # type: ignore[arg-type]
        assert [r.slot for r in crowd.rivals] == list(range(16))
        assert won and won.slot == 16 and won.key == f"{name}/16"
        assert (await etcd.get(f"{name}/16")).kvs[0].value == b"me"
        assert len((await etcd.get(f"{name}/", prefix=True)).kvs) == 17
        for lease in [won, *crowd.rivals]:
            await lease.release()


async def test_lease_once_in_a_namespace_and_with_a_timedelta(
    etcd_endpoint: str, prefix: str
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        space = etcd.namespace(prefix)
        won = await space.lease_once("job", datetime.timedelta(seconds=29.5))
        assert won and won.key == "job/0" and won.ttl >= 30
        assert (await etcd.get(f"{prefix}job/0")).kvs[0].lease == won.lease_id
        await won.release()


async def test_bad_arguments_are_refused_at_once(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        for args, kwargs in (
            (("", 10), {}),
            ((f"{prefix}x", 0), {}),
            ((f"{prefix}x", 1.5), {}),
            ((f"{prefix}x", 10), {"holders": 0}),
            ((f"{prefix}x", 10), {"value": 3}),
        ):
            with pytest.raises(errors.InvalidRequest):
                await etcd.lease_once(*args, **kwargs)
        assert (await etcd.get(f"{prefix}x/", prefix=True)).kvs == []
