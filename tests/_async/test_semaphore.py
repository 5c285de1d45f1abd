"""Semaphore against a real etcd: the limit, FIFO admission, out-of-order releases.

Canonical asyncio tests; ``tests/_sync/test_semaphore.py`` is generated from this file.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from etcdsync import AsyncClient, errors
from etcdsync._async.concurrency.semaphore import AsyncSemaphore
from etcdsync._backends._async import Event, sleep, spawn, wait_event

from .lock_helpers import collect, count_keys, wait_count

TTL = 5


async def test_limit_holders_at_once(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}pool"
    async with AsyncClient(etcd_endpoint) as etcd:
        first = etcd.semaphore(name, 2, ttl=TTL)
        assert isinstance(first, AsyncSemaphore) and first.limit == 2
        second = etcd.semaphore(name, 2, ttl=TTL)
        third = etcd.semaphore(name, 2, ttl=TTL)
        # One client, one session: keys are per acquire, so slots can share it.
        await first.acquire()
        await second.acquire(timeout=5)
        assert first.held and second.held and first.key != second.key
        assert [kv.key.decode() for kv in await first.holders()] == [first.key, second.key]
        assert await third.try_acquire() is False
        with pytest.raises(errors.LockTimeout):
            await third.acquire(timeout=0.3)
        await wait_count(etcd, f"{name}/", 2)  # no queued key left (removed in the background)
        with pytest.raises(errors.LockError):
            await first.acquire()  # one object, one slot
        await first.release()
        assert await third.try_acquire() is True
        await second.release()
        await third.release()
        assert await count_keys(etcd, f"{name}/") == 0


async def test_released_slots_go_to_waiters_in_order_whatever_the_release_order(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}pool"
    admitted: dict[str, Event] = {"c": Event(), "d": Event()}
    leave: dict[str, Event] = {"c": Event(), "d": Event()}
    results: list[Any] = []

    async def contender(label: str) -> None:
        async with AsyncClient(etcd_endpoint) as etcd:
            async with etcd.semaphore(name, 2, ttl=TTL, timeout=20):
                admitted[label].set()
                assert await wait_event(leave[label], 20)

    async with AsyncClient(etcd_endpoint) as etcd:
        a = await etcd.semaphore(name, 2, ttl=TTL).acquire()
        b = await etcd.semaphore(name, 2, ttl=TTL).acquire()
        c = spawn(collect, results, contender, "c", name="c")
        await wait_count(etcd, f"{name}/", 3)
        d = spawn(collect, results, contender, "d", name="d")
        await wait_count(etcd, f"{name}/", 4)
        assert not admitted["c"].is_set() and not admitted["d"].is_set()

        await a.release()  # the oldest holder leaves: c (first in line) is admitted
        assert await wait_event(admitted["c"], 10)
        assert not await wait_event(admitted["d"], 0.3)

        # The *newest* holder leaves while b, older, stays: d must still get the slot.
        leave["c"].set()
        assert await wait_event(admitted["d"], 10)
        assert b.held
        holders = [kv.key.decode() for kv in await b.holders()]
        assert len(holders) == 2 and holders[0] == b.key
        leave["d"].set()
        assert await c.join(10) and await d.join(10)
        await b.release()
    assert results == [None, None]


async def test_never_more_than_limit_inside(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}pool"
    inside = [0]
    peak = [0]
    tokens: list[int] = []
    results: list[Any] = []
    guard = threading.Lock()  # the sync flavour's threads update the tallies

    async def worker() -> None:
        async with AsyncClient(etcd_endpoint) as etcd:
            for _ in range(4):
                async with etcd.semaphore(name, 2, ttl=TTL, timeout=30) as slot:
                    with guard:
                        tokens.append(slot.fencing_token)
                        inside[0] += 1
                        peak[0] = max(peak[0], inside[0])
                    await sleep(0.01)
                    with guard:
                        inside[0] -= 1

    tasks = [spawn(collect, results, worker, name=f"worker-{i}") for i in range(5)]
    for task in tasks:
        assert await task.join(60)
    assert results == [None] * 5
    assert len(tokens) == 20 and len(set(tokens)) == 20
    assert 1 <= peak[0] <= 2


async def test_limit_one_is_a_mutex(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}pool"
    async with AsyncClient(etcd_endpoint) as a, AsyncClient(etcd_endpoint) as b:
        holder = await a.semaphore(name, 1, ttl=TTL).acquire()
        other = b.semaphore(name, 1, ttl=TTL)
        assert await other.try_acquire() is False
        await holder.release()
        assert await other.try_acquire() is True
        await other.release()


async def test_invalid_limit(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        for limit in (0, -1, True, 1.5):
            with pytest.raises(errors.InvalidRequest):
                etcd.semaphore("x", limit)  # type: ignore[arg-type]
