"""Readers-writer lock against a real etcd: sharing, exclusion, FIFO fairness.

Canonical asyncio tests; ``tests/_sync/test_rwlock.py`` is generated from this file.
"""

from __future__ import annotations

from typing import Any

import pytest

from etcdsync import AsyncClient, Op, errors
from etcdsync._async.concurrency.rwlock import AsyncReadLock, AsyncRWLock, AsyncWriteLock
from etcdsync._backends._async import Event, sleep, spawn, wait_event

from .lock_helpers import collect, count_keys, wait_count

TTL = 5


async def test_readers_share_and_keys_are_per_role(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}catalog"
    async with AsyncClient(etcd_endpoint) as etcd:
        rw = etcd.rwlock(name, ttl=TTL)
        assert isinstance(rw, AsyncRWLock)
        first, second = rw.read(timeout=5), rw.read(timeout=5)
        assert isinstance(first, AsyncReadLock)
        # Two readers of one client (one session) hold at once: keys are per acquire.
        async with first, second:
            assert first.held and second.held
            session = first.session
            assert session is not None
            assert first.key.startswith(f"{name}/read/{session.lease_id:x}-")
            assert first.key != second.key
            assert first.fencing_token < second.fencing_token
        writer = rw.write()
        assert isinstance(writer, AsyncWriteLock)
        async with writer:
            assert writer.key.startswith(f"{name}/write/")
            await writer.guarded_txn([Op.put(f"{prefix}data", "v")])
        assert await count_keys(etcd, f"{name}/") == 0


async def test_readers_exclude_writers_and_back(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}catalog"
    async with AsyncClient(etcd_endpoint) as a, AsyncClient(etcd_endpoint) as b:
        reader = await a.rwlock(name, ttl=TTL).read().acquire()
        writer = b.rwlock(name, ttl=TTL).write()
        assert await writer.try_acquire() is False
        with pytest.raises(errors.LockTimeout):
            await writer.acquire(timeout=0.3)
        await wait_count(a, f"{name}/", 1)  # no queued key left (removed in the background)
        await reader.release()
        await writer.acquire(timeout=5)
        # Now the writer excludes readers.
        late_reader = a.rwlock(name, ttl=TTL).read()
        assert await late_reader.try_acquire() is False
        with pytest.raises(errors.LockTimeout):
            await late_reader.acquire(timeout=0.3)
        await writer.release()
        assert await late_reader.try_acquire() is True
        await late_reader.release()


async def test_reader_arriving_after_a_waiting_writer_queues_behind_it(
    etcd_endpoint: str, prefix: str
) -> None:
    name = f"{prefix}catalog"
    order: list[str] = []
    results: list[Any] = []
    writer_in = Event()
    writer_may_leave = Event()

    async def write() -> None:
        async with AsyncClient(etcd_endpoint) as etcd:
            async with etcd.rwlock(name, ttl=TTL).write(timeout=20):
                order.append("writer")
                writer_in.set()
                assert await wait_event(writer_may_leave, 20)
                order.append("writer leaves")

    async def read() -> None:
        async with AsyncClient(etcd_endpoint) as etcd:
            async with etcd.rwlock(name, ttl=TTL).read(timeout=20):
                order.append("late reader")

    async with AsyncClient(etcd_endpoint) as etcd:
        first = await etcd.rwlock(name, ttl=TTL).read().acquire()
        writer = spawn(collect, results, write, name="writer")
        await wait_count(etcd, f"{name}/", 2)
        reader = spawn(collect, results, read, name="late-reader")
        await wait_count(etcd, f"{name}/", 3)
        # Readers could share with the first reader, but this one arrived after
        # the waiting writer: it must not overtake it (writers never starve).
        assert order == []
        await first.release()
        assert await wait_event(writer_in, 10)
        assert order == ["writer"]
        writer_may_leave.set()
        assert await writer.join(10) and await reader.join(10)
    assert results == [None, None]
    assert order == ["writer", "writer leaves", "late reader"]


async def test_writers_exclude_each_other_in_order(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}catalog"
    counter = [0]
    tokens: list[int] = []
    results: list[Any] = []

    async def worker() -> None:
        async with AsyncClient(etcd_endpoint) as etcd:
            rw = etcd.rwlock(name, ttl=TTL)
            for _ in range(5):
                async with rw.write(timeout=30) as lock:
                    tokens.append(lock.fencing_token)
                    value = counter[0]
                    await sleep(0.002)  # a race window for a second writer
                    counter[0] = value + 1

    tasks = [spawn(collect, results, worker, name=f"writer-{i}") for i in range(4)]
    for task in tasks:
        assert await task.join(60)
    assert results == [None] * 4
    assert counter[0] == 20
    assert tokens == sorted(tokens) and len(set(tokens)) == 20


async def test_writers_sharing_a_client_exclude_each_other(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}catalog"
    counter = [0]
    results: list[Any] = []

    async def worker() -> None:
        for _ in range(5):
            async with rw.write(timeout=30):
                value = counter[0]
                await sleep(0.002)
                counter[0] = value + 1

    async with AsyncClient(etcd_endpoint) as etcd:
        rw = etcd.rwlock(name, ttl=TTL)
        tasks = [spawn(collect, results, worker, name=f"writer-{i}") for i in range(4)]
        for task in tasks:
            assert await task.join(60)
    assert results == [None] * 4
    assert counter[0] == 20


async def test_invalid_name(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        with pytest.raises(errors.InvalidRequest):
            etcd.rwlock("")
