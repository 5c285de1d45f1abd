"""The prefix cache against a real etcd: reads, listeners, waits, restarts, compaction.

* the cache reads a prefix at one revision (paging through a large one) and follows
  it: ``get``, ``in``, ``len``, iteration in key order, ``revision``, ``snapshot``;
* listeners and event streams receive an ``ADDED`` / ``UPDATED`` / ``REMOVED`` per
  change, each once, in revision order - exactly the store's history, rebuilt from
  a watch replay - across two server crashes and restarts;
* after a compaction that the watch fell behind, one ``RESET`` and the net difference
  (``resync``): a listener that applies the events holds exactly the store's state,
  and the events after it follow the history again;
* ``wait_for`` returns the first snapshot that satisfies its predicate, times out
  with ``CacheTimeout``; a raising listener is logged and keeps receiving.

Canonical asyncio tests; ``tests/_sync/test_cache.py`` is generated from this file.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from helpers import pings

from etcdsync import AsyncClient, CacheEvent, CacheEventType, Op, errors
from etcdsync._backends._async import Event, wait_event
from etcdsync.testing.proxy import FaultProxy
from etcdsync.watch_types import EventType

ADDED, UPDATED, REMOVED, RESET = (
    CacheEventType.ADDED,
    CacheEventType.UPDATED,
    CacheEventType.REMOVED,
    CacheEventType.RESET,
)


class _Recorder:
    """A listener that records events and signals each arrival."""

    def __init__(self) -> None:
        self.events: list[CacheEvent] = []
        self.arrived = Event()

    def __call__(self, event: CacheEvent) -> None:
        self.events.append(event)
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 10) -> list[CacheEvent]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(self.events)} of {count} events: {self.events}"
            await wait_event(self.arrived, left)
            self.arrived.clear()
        return list(self.events)


def _brief(events: list[CacheEvent]) -> list[tuple[CacheEventType, bytes, bytes | None, int]]:
    return [(e.type, e.key, e.value, e.revision) for e in events]


async def _take(stream: Any, count: int, timeout: float = 10) -> list[CacheEvent]:
    deadline = time.monotonic() + timeout
    return [await stream.get(max(deadline - time.monotonic(), 0.01)) for _ in range(count)]


async def _history(
    etcd: Any, prefix: str, start: int, end: int, known: dict[bytes, bytes] | None = None
) -> list[tuple[CacheEventType, bytes, bytes | None, int]]:
    """The changes under ``prefix`` from ``start`` to ``end`` as cache events, rebuilt
    from the store's own history (a watch replay from ``start``); ``known`` is the
    state before ``start`` (updated in place)."""
    state = {} if known is None else known
    out: list[tuple[CacheEventType, bytes, bytes | None, int]] = []
    watcher = await etcd.watch(prefix, prefix=True, start_revision=start)
    try:
        while not out or out[-1][3] < end:
            for event in (await watcher.get(timeout=10)).events:
                if event.type is EventType.DELETE:
                    out.append((REMOVED, event.key, state.pop(event.key), event.revision))
                else:
                    kind = UPDATED if event.key in state else ADDED
                    state[event.key] = event.kv.value
                    out.append((kind, event.key, event.kv.value, event.revision))
    finally:
        await watcher.cancel()
    return out


def _apply(state: dict[bytes, bytes], events: list[CacheEvent]) -> None:
    """What a listener that mirrors the prefix does with the events."""
    for event in events:
        if event.type is REMOVED:
            del state[event.key]
        elif event.type is not RESET:
            assert event.kv is not None
            if event.type is ADDED:
                assert event.key not in state
            else:
                assert event.key in state
            state[event.key] = event.kv.value


async def test_reads_listeners_and_waits(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "b", "2")
        first = await etcd.put(prefix + "a", "1")
        await etcd.put(prefix + "other", "x")
        cache = etcd.cache(prefix)
        with pytest.raises(errors.CacheError):
            cache.get(prefix + "a")
        recorder = _Recorder()
        cache.add_listener(recorder, initial=True)  # before start: the first read's keys
        async with cache:
            assert cache.revision >= first.revision
            kv = cache.get(prefix + "a")
            assert kv is not None and kv.value == b"1"
            assert cache.get(prefix.encode() + b"b") is not None
            assert cache.get(prefix + "zzz") is None
            assert prefix + "a" in cache and len(cache) == 3
            assert [kv.key for kv in cache] == sorted(kv.key for kv in cache)
            initial = await recorder.wait_for(3)
            assert all(e.initial and e.type is ADDED for e in initial)
            assert [e.key for e in initial] == sorted(e.key for e in initial)
            late = _Recorder()
            cache.add_listener(late, key_prefix=prefix + "c/")
            stream = cache.events()
            put = await etcd.put(prefix + "c/1", "one")
            upd = await etcd.put(prefix + "a", "1b")
            txn = await etcd.txn([], [Op.put(prefix + "c/2", "two"), Op.delete(prefix + "b")])
            got = await _take(stream, 4)
            assert _brief(got) == [
                (ADDED, (prefix + "c/1").encode(), b"one", put.revision),
                (UPDATED, (prefix + "a").encode(), b"1b", upd.revision),
                (ADDED, (prefix + "c/2").encode(), b"two", txn.revision),
                (REMOVED, (prefix + "b").encode(), b"2", txn.revision),
            ]
            assert got[1].prev_kv is not None and got[1].prev_kv.value == b"1"
            assert [e.key for e in await late.wait_for(2)] == [
                (prefix + "c/1").encode(),
                (prefix + "c/2").encode(),
            ]
            snap = await cache.wait_for(lambda s: s.revision >= txn.revision, timeout=5)
            assert set(snap) == {(prefix + k).encode() for k in ("a", "c/1", "c/2", "other")}
            assert snap[prefix + "c/2"].value == b"two" and snap.revision == cache.revision
            put = await etcd.put(prefix + "d", "4")
            snap = await cache.wait_for(lambda s: prefix + "d" in s, timeout=5)
            assert snap[prefix + "d"].value == b"4" and snap.revision == put.revision
            with pytest.raises(errors.CacheTimeout):
                await cache.wait_for(lambda s: prefix + "never" in s, timeout=0.2)
            await stream.cancel()
            assert [e.type async for e in stream] == [ADDED]  # the event before cancel
            assert len(await recorder.wait_for(3 + 5)) == 8
        # Stopped: the contents stay readable, nothing follows any more.
        assert cache.get(prefix + "d") is not None and not cache.running
        with pytest.raises(errors.CacheError):
            await cache.wait_for(lambda s: False, timeout=1)
        with pytest.raises(errors.CacheError):
            await cache.start()
        assert len(recorder.events) == 8  # initial + c/1, a, c/2, b, d, and nothing else


async def test_paged_load_and_namespaces(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        for i in range(35):
            await etcd.put(f"{prefix}ns/k{i:02d}", str(i))
        scoped = etcd.namespace(prefix + "ns/")
        async with scoped.cache("", page_size=10) as cache:
            assert len(cache) == 35
            assert [kv.key for kv in cache][:2] == [b"k00", b"k01"]
            stream = cache.events()
            await scoped.delete("k07")
            (event,) = await _take(stream, 1)
            assert (event.type, event.key, event.value) == (REMOVED, b"k07", b"7")
            assert "k07" not in cache and len(cache) == 34


async def test_a_raising_listener_is_logged_and_keeps_receiving(
    etcd_endpoint: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[bytes] = []
    arrived = Event()

    def flaky(event: CacheEvent) -> None:
        seen.append(event.key)
        arrived.set()
        raise RuntimeError("listener bug")

    async with AsyncClient(etcd_endpoint) as etcd:
        async with etcd.cache(prefix) as cache:
            cache.add_listener(flaky)
            stream = cache.events()
            with caplog.at_level(logging.ERROR, logger="etcdsync.callbacks"):
                await etcd.put(prefix + "1", "x")
                await etcd.put(prefix + "2", "x")
                await _take(stream, 2)
                deadline = time.monotonic() + 5
                while len(seen) < 2 and time.monotonic() < deadline:
                    await wait_event(arrived, 0.5)
                    arrived.clear()
            assert seen == [(prefix + "1").encode(), (prefix + "2").encode()]
            assert "listener bug" in caplog.text
            assert cache.remove_listener(flaky) == 1
            await etcd.put(prefix + "3", "x")
            await _take(stream, 1)
        assert len(seen) == 2  # removed: not called again


async def test_history_is_exact_across_server_restarts(etcd_server_factory: Any) -> None:
    server = etcd_server_factory()
    prefix = "cached/"
    async with AsyncClient(server.endpoint, timeout=5) as watching:
        cache = watching.cache(prefix)
        recorder = _Recorder()
        cache.add_listener(recorder)
        await cache.start()
        stream = cache.events()
        start = cache.revision + 1
        async with AsyncClient(server.endpoint, timeout=5) as a:
            await a.put(prefix + "a", "1")
            lease = await a.grant(60)
            await a.put(prefix + "leased", "L", lease=lease)
            await a.put(prefix + "a", "2")
            await _take(stream, 3)
        server.crash()
        server.restart()
        # A fresh client writes while the watching one may still be reconnecting.
        async with AsyncClient(server.endpoint, timeout=5) as b:
            await b.txn([], [Op.put(prefix + "b", "1"), Op.delete(prefix + "a")])
            await b.revoke(lease)  # the leased key goes with its lease
            await _take(stream, 3)
        server.crash()
        server.restart()
        async with AsyncClient(server.endpoint, timeout=5) as c:
            await c.put(prefix + "c", "1")
            await c.put(prefix + "b", "2")
            last = await c.delete(prefix + "c")
            got = await _take(stream, 3)
            replay = await _history(c, prefix, start, last.revision)
        events = await recorder.wait_for(9)
        assert _brief(events) == replay and len(replay) == 9
        assert got[-1].revision == last.revision
        assert cache.resets == 0 and not any(e.resync for e in events)
        with pytest.raises(errors.CacheTimeout):
            await stream.get(0.3)  # nothing more, nothing twice
        assert {kv.key: kv.value for kv in cache} == {(prefix + "b").encode(): b"2"}
        await cache.stop()


async def test_one_reset_after_a_compaction_then_consistent(etcd_server_factory: Any) -> None:
    server = etcd_server_factory(extra_args=pings.MEMBER_ARGS)
    prefix = "compacted/"
    with FaultProxy(server.endpoint) as proxy:
        async with (
            AsyncClient(proxy.endpoint, settings=pings.SETTINGS) as watching,
            AsyncClient(server.endpoint) as etcd,
        ):
            await etcd.put(prefix + "keep", "1")
            await etcd.put(prefix + "drop", "1")
            await etcd.put(prefix + "change", "1")
            await etcd.put(prefix + "recreate", "1")
            cache = watching.cache(prefix)
            recorder = _Recorder()
            cache.add_listener(recorder, initial=True)
            await cache.start()
            stream = cache.events()
            mirrored: dict[bytes, bytes] = {}
            _apply(mirrored, await recorder.wait_for(4))
            proxy.blackhole()  # the cache is cut off while the prefix changes
            proxy.reset()
            await etcd.delete(prefix + "drop")
            await etcd.put(prefix + "change", "2")
            await etcd.put(prefix + "change", "3")
            await etcd.put(prefix + "new", "1")
            await etcd.delete(prefix + "recreate")
            await etcd.put(prefix + "recreate", "2")
            await etcd.put(prefix + "flash", "1")
            await etcd.delete(prefix + "flash")  # created and deleted inside the gap
            latest = await etcd.put("filler", "x")
            await etcd.compact(latest.revision)
            proxy.heal()
            reset = await stream.get(30)
            assert reset.type is RESET and reset.kv is None
            diff = await _take(stream, 5)
            assert all(e.resync and e.revision == reset.revision for e in diff)
            # In key order; a key deleted and created again: REMOVED, then ADDED.
            assert [(e.type, e.key) for e in diff] == [
                (UPDATED, (prefix + "change").encode()),
                (REMOVED, (prefix + "drop").encode()),
                (ADDED, (prefix + "new").encode()),
                (REMOVED, (prefix + "recreate").encode()),
                (ADDED, (prefix + "recreate").encode()),
            ]
            events = await recorder.wait_for(4 + 6)
            assert [e.type for e in events[4:]].count(RESET) == 1 and cache.resets == 1
            _apply(mirrored, events[4:])
            store = await etcd.get(prefix, prefix=True, revision=reset.revision)
            assert mirrored == {kv.key: kv.value for kv in store.kvs}
            assert mirrored == {kv.key: kv.value for kv in cache}
            # And it follows the history from there.
            await etcd.put(prefix + "keep", "2")
            last = await etcd.delete(prefix + "new")
            after = await _take(stream, 2)
            known = dict(mirrored)
            assert _brief(after) == await _history(
                etcd, prefix, reset.revision + 1, last.revision, known
            )
            assert not any(e.resync for e in after)
            _apply(mirrored, (await recorder.wait_for(12))[10:])
            assert mirrored == known == {kv.key: kv.value for kv in cache}
            with pytest.raises(errors.CacheTimeout):
                await stream.get(0.3)
            await cache.stop()


async def test_bad_arguments(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        with pytest.raises(errors.InvalidRequest):
            etcd.cache(42)  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidRequest):
            etcd.cache("x/", page_size=0)
        cache = etcd.cache("x/")
        with pytest.raises(errors.InvalidRequest):
            cache.add_listener("not callable")  # type: ignore[arg-type]
        await cache.stop()
        with pytest.raises(errors.CacheError):
            cache.events()
