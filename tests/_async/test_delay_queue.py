"""Delay queues and removal by id against a real etcd.

* no item is taken before its due time (by the consumer's clock, the producer's on
  this host), every item is taken once after it, earliest due first; concurrent
  consumers share them; a consumer waiting in ``get()`` is woken by the clock, and
  by a new item due sooner than the one it waits for;
* the key layout puts due order in key order; an injected clock decides due-ness;
* ``remove(id)`` (the id is the put's revision) deletes a queued item of the FIFO,
  priority and delay queues, and returns False once it is taken or removed.

Canonical asyncio tests; ``tests/_sync/test_delay_queue.py`` is generated from this file.
"""

from __future__ import annotations

import time

import pytest

from etcdsync import AsyncClient, QueueItem, errors
from etcdsync._async.concurrency.delay_queue import AsyncDelayQueue
from etcdsync._backends._async import spawn

TTL = 5


async def test_no_item_before_its_time(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        queue = etcd.delay_queue(prefix + "q", ttl=TTL)
        delays = [0.9, 0.3, 0.0, 0.6, 0.3, 1.2]
        due: dict[bytes, float] = {}
        for i, delay in enumerate(delays):
            before = time.time()
            await queue.put(f"item-{i}", delay=delay)
            due[f"item-{i}".encode()] = before + delay
        taken: list[tuple[QueueItem, float]] = []
        failures: list[BaseException] = []

        async def consume() -> None:
            try:
                while True:
                    try:
                        item = await queue.get(timeout=2.5)
                    except errors.QueueTimeout:
                        return
                    taken.append((item, time.time()))
            except BaseException as exc:
                failures.append(exc)

        consumers = [spawn(consume, name=f"consumer-{i}") for i in range(2)]
        for consumer in consumers:
            assert await consumer.join(30)
        assert not failures, failures
        assert sorted(item.value for item, _ in taken) == sorted(due)  # each once
        for item, at in taken:
            assert at >= due[item.value], f"{item.value!r} taken {due[item.value] - at:.3f} s early"
            assert at >= AsyncDelayQueue.due_time(item)
            assert at - due[item.value] < 2.0  # and not much later (no lost wake-up)
        assert await queue.size() == 0


async def test_a_sooner_item_wakes_a_waiting_consumer(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        queue = etcd.delay_queue(prefix + "q", ttl=TTL)
        await queue.put("late", delay=30)
        with pytest.raises(errors.QueueTimeout):
            await queue.get(timeout=0.3)  # nothing due
        got: list[tuple[QueueItem, float]] = []

        async def consume() -> None:
            got.append((await queue.get(timeout=10), time.time()))

        consumer = spawn(consume, name="consumer")
        due = time.time() + 0.4
        await queue.put("soon", at=due)
        assert await consumer.join(10)
        ((item, at),) = got
        assert item.value == b"soon" and due <= at < due + 2
        assert await queue.size() == 1  # "late" stays queued
        keys = [kv.key for kv in (await etcd.get(prefix + "q/", prefix=True)).kvs]
        assert len(keys) == 1 and keys[0].split(b"/")[-1][:20].isdigit()


async def test_an_injected_clock_decides(etcd_endpoint: str, prefix: str) -> None:
    now = [1_000_000.0]
    async with AsyncClient(etcd_endpoint) as etcd:
        queue = etcd.delay_queue(prefix + "q", ttl=TTL, clock=lambda: now[0])
        await queue.put("b", at=1_000_060.0)
        await queue.put("a", delay=30)  # due at 1_000_030
        await queue.put("c", at=1_000_050.0)
        assert await queue.try_get() is None
        now[0] += 45
        item = await queue.try_get()
        assert item is not None and item.value == b"a"
        assert AsyncDelayQueue.due_time(item) == 1_000_030.0
        assert await queue.try_get() is None
        now[0] += 100
        # Both due: the earliest due first, whatever the order of the puts.
        taken = [await queue.try_get() for _ in range(3)]
        assert [item.value if item else None for item in taken] == [b"c", b"b", None]


async def test_remove_by_id(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        fifo = etcd.queue(prefix + "fifo", ttl=TTL)
        ids = [await fifo.put(f"job-{i}") for i in range(4)]
        assert await fifo.remove(ids[1]) is True
        assert await fifo.remove(ids[1]) is False  # gone already
        first = await fifo.get(timeout=5)
        assert first.value == b"job-0" and first.create_revision == ids[0]
        assert await fifo.remove(ids[0]) is False  # taken
        assert await fifo.remove(ids[3]) is True
        assert [(await fifo.get(timeout=5)).value] == [b"job-2"]
        assert await fifo.size() == 0
        assert await fifo.remove(10**12) is False  # never existed
        priority = etcd.priority_queue(prefix + "prio", ttl=TTL)
        low = await priority.put("low", 5)
        await priority.put("high", 0)
        assert await priority.remove(low) is True
        assert (await priority.get(timeout=5)).value == b"high" and await priority.size() == 0
        delayed = etcd.delay_queue(prefix + "delayed", ttl=TTL)
        far = await delayed.put("far", delay=3600)
        assert await delayed.size() == 1 and await delayed.remove(far) is True
        assert await delayed.size() == 0
        with pytest.raises(errors.InvalidRequest):
            await fifo.remove(0)


async def test_bad_arguments(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        queue = etcd.delay_queue(prefix + "q")
        for kwargs in ({"delay": -1}, {"delay": float("nan")}, {"at": "soon"}, {"at": -5.0}):
            with pytest.raises(errors.InvalidRequest):
                await queue.put("x", **kwargs)  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidRequest):
            await queue.put("x", delay=1, at=time.time())
        with pytest.raises(errors.InvalidRequest):
            etcd.delay_queue(prefix + "q", clock=42)  # type: ignore[arg-type]
