"""Watch against a real etcd: options, ordering, resume, compaction, multiplexing."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from etcdsync import AsyncClient, Compare, Op, errors
from etcdsync._backends._async import Event, wait_event
from etcdsync.watch_types import EventType, WatchResponse

WRITER = Path(__file__).resolve().parent.parent / "helpers" / "writer.py"


async def _collect(watcher: Any, count: int, timeout: float = 10.0) -> list[Any]:
    """Read batches until ``count`` events arrived (fails on timeout)."""
    events: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(events)} of {count} events arrived"
        batch = await watcher.get(timeout=remaining)
        events.extend(batch.events)
    return events


async def test_put_and_delete_events_in_order(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        watcher = await etcd.watch(prefix, prefix=True, prev_kv=True)
        r1 = await etcd.put(prefix + "a", "1")
        r2 = await etcd.put(prefix + "a", "2")
        r3 = await etcd.delete(prefix + "a")
        await etcd.put("outside-" + prefix, "x")  # not under the prefix
        events = await _collect(watcher, 3)
        assert [(e.type, e.revision) for e in events] == [
            (EventType.PUT, r1.revision),
            (EventType.PUT, r2.revision),
            (EventType.DELETE, r3.revision),
        ]
        assert events[0].prev_kv is None
        assert events[1].prev_kv is not None and events[1].prev_kv.value == b"1"
        assert events[2].prev_kv is not None and events[2].prev_kv.value == b"2"
        await watcher.cancel()
        assert [batch async for batch in watcher] == []


async def test_txn_events_arrive_as_one_batch(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        watcher = await etcd.watch(prefix, prefix=True)
        keys = [prefix + k for k in ("x", "y", "z")]
        response = await etcd.txn([], [Op.put(k, "v") for k in keys])
        batch = await watcher.get(timeout=5)
        assert [e.key.decode() for e in batch.events] == keys
        assert {e.revision for e in batch.events} == {response.revision}


async def test_filters_range_and_from_key(etcd_endpoint: str, prefix: str) -> None:
    base = prefix
    async with AsyncClient(etcd_endpoint) as etcd:
        no_put = await etcd.watch(base, prefix=True, no_put=True)
        no_delete = await etcd.watch(base, prefix=True, no_delete=True)
        ranged = await etcd.watch(base + "b", range_end=base + "d")
        from_key = await etcd.watch(base + "c", from_key=True)
        for key in ("a", "b", "c", "d"):
            await etcd.put(base + key, "v")
        await etcd.delete(base, prefix=True)
        assert [e.type for e in await _collect(no_put, 4)] == [EventType.DELETE] * 4
        puts = await _collect(no_delete, 4)
        assert [e.key for e in puts] == [(base + k).encode() for k in "abcd"]
        in_range = await _collect(ranged, 4)  # b, c put then deleted
        assert [(e.type, e.key[-1:]) for e in in_range] == [
            (EventType.PUT, b"b"),
            (EventType.PUT, b"c"),
            (EventType.DELETE, b"b"),
            (EventType.DELETE, b"c"),
        ]
        after_c = await _collect(from_key, 4)
        assert [e.key[-1:] for e in after_c] == [b"c", b"d", b"c", b"d"]


async def test_start_revision_replays_history(etcd_endpoint: str, prefix: str) -> None:
    key = prefix + "k"
    async with AsyncClient(etcd_endpoint) as etcd:
        first = await etcd.put(key, "1")
        await etcd.put(key, "2")
        watcher = await etcd.watch(key, start_revision=first.revision)
        events = await _collect(watcher, 2)
        assert [e.value for e in events] == [b"1", b"2"]
        assert events[0].revision == first.revision


async def test_created_and_progress_notices(etcd_endpoint: str, prefix: str) -> None:
    key = prefix + "k"
    async with AsyncClient(etcd_endpoint) as etcd:
        watcher = await etcd.watch(key, created_notify=True, progress_notify=True)
        created = await watcher.get(timeout=5)
        assert created.created and created.events == []
        put = await etcd.put(key, "v")
        assert (await watcher.get(timeout=5)).events[0].revision == put.revision
        await etcd.request_watch_progress()
        progress = await watcher.get(timeout=5)
        assert progress.progress and progress.events == []
        assert progress.revision >= put.revision


async def test_callback_form(etcd_endpoint: str, prefix: str) -> None:
    key = prefix + "k"
    seen: list[WatchResponse | errors.EtcdError] = []
    got_two = threading.Event()

    def on_batch(item: WatchResponse | errors.EtcdError) -> None:
        seen.append(item)
        if sum(len(b.events) for b in seen if isinstance(b, WatchResponse)) >= 2:
            got_two.set()

    async with AsyncClient(etcd_endpoint) as etcd:
        watcher = await etcd.add_watch_callback(key, on_batch)
        await etcd.put(key, "1")
        await etcd.put(key, "2")
        deadline = time.monotonic() + 5
        while not got_two.is_set():  # the callback runs in its own task/thread
            assert time.monotonic() < deadline, seen
            await etcd.get(key)  # yields to the callback task in the async flavour
        await watcher.cancel()
    values = [e.value for b in seen if isinstance(b, WatchResponse) for e in b.events]
    assert values == [b"1", b"2"]


async def test_compacted_start_revision_raises_with_compact_revision(
    etcd_server_factory: Any,
) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint) as etcd:
        first = await etcd.put("k", "1")
        last = await etcd.put("k", "2")
        await etcd.compact(last.revision)
        watcher = await etcd.watch("k", start_revision=first.revision)
        started = time.monotonic()
        with pytest.raises(errors.CompactedError) as caught:
            await watcher.get(timeout=5)
        assert time.monotonic() - started < 2.0
        assert caught.value.compact_revision == last.revision
        with pytest.raises(errors.CompactedError):  # the error sticks
            await watcher.get(timeout=1)


async def test_compaction_past_a_suspended_watcher(etcd_server_factory: Any) -> None:
    """A watcher that stopped reading is suspended; compaction meanwhile is reported."""
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint) as etcd:
        watcher = await etcd.watch("p/", prefix=True, buffer_limit=2)
        for i in range(5):  # overflow: the watch is cancelled server-side
            await etcd.put(f"p/{i}", "v")
        later = [await etcd.put(f"p/late{i}", "v") for i in range(3)]
        # Unsuspending needs the consumer to drain; first compact past its position.
        await etcd.compact(later[-1].revision)
        received: list[Any] = []
        started = time.monotonic()
        with pytest.raises(errors.CompactedError) as caught:
            while True:
                received.extend((await watcher.get(timeout=5)).events)
        assert time.monotonic() - started < 2.0
        assert caught.value.compact_revision == later[-1].revision
        # What was delivered before the error is a gap-free prefix of the history.
        revisions = [e.revision for e in received]
        assert revisions == sorted(set(revisions)) and len(received) >= 2


async def test_slow_watcher_does_not_block_others_and_loses_nothing(
    etcd_endpoint: str, prefix: str
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        slow = await etcd.watch(prefix, prefix=True, buffer_limit=4)
        fast = await etcd.watch(prefix, prefix=True)
        revisions = [(await etcd.put(f"{prefix}{i:03d}", "v")).revision for i in range(60)]
        assert [e.revision for e in await _collect(fast, 60)] == revisions
        assert [e.revision for e in await _collect(slow, 60)] == revisions


async def test_one_stream_for_a_thousand_watchers(etcd_server_factory: Any) -> None:
    server = etcd_server_factory()
    before = server.metrics()
    async with AsyncClient(server.endpoint) as etcd:
        watchers = [await etcd.watch(f"w/{i}") for i in range(1000)]
        metrics = server.metrics()
        assert metrics["etcd_debugging_mvcc_watch_stream_total"] == (
            before["etcd_debugging_mvcc_watch_stream_total"] + 1
        )
        assert metrics["etcd_debugging_mvcc_watcher_total"] == 1000
        put = await etcd.put("w/999", "v")
        assert (await watchers[999].get(timeout=5)).events[0].revision == put.revision
    deadline = time.monotonic() + 5  # the server tears the stream down after we close
    while server.metrics()["etcd_debugging_mvcc_watcher_total"] != 0:
        assert time.monotonic() < deadline, "watchers left on the server after close"


async def test_fragmented_responses_arrive_whole(etcd_server_factory: Any) -> None:
    server = etcd_server_factory(max_request_bytes=16 * 1024)
    async with AsyncClient(server.endpoint) as etcd:
        value = b"x" * (10 * 1024)
        first = await etcd.put("big/0", value)
        for i in range(1, 20):
            await etcd.put(f"big/{i}", value)
        watcher = await etcd.watch(
            "big/", prefix=True, start_revision=first.revision, fragment=True
        )
        batch = await watcher.get(timeout=5)
        # 200 KiB of catch-up over a 16 KiB limit: the server split it, we joined it.
        assert len(batch.events) == 20
        assert all(e.value == value for e in batch.events)


async def test_resume_after_server_kills_loses_and_repeats_nothing(
    etcd_server_factory: Any,
) -> None:
    server = etcd_server_factory()
    count = 5000
    async with AsyncClient(server.endpoint, timeout=5) as etcd:
        watcher = await etcd.watch("seq/", prefix=True)
        writer = subprocess.Popen(
            [sys.executable, str(WRITER), server.endpoint, "seq/", str(count)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            received: list[tuple[bytes, int]] = []
            for kill_after in (1500, 3500):
                received += [
                    (e.key, e.revision)
                    for e in await _collect(watcher, kill_after - len(received), 60)
                ]
                server.crash()
                server.restart()
            received += [
                (e.key, e.revision) for e in await _collect(watcher, count - len(received), 60)
            ]
            assert writer.wait(60) == 0
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        committed = await etcd.get("seq/", prefix=True, sort_target="MOD")
        assert len(committed.kvs) == count
        assert received == [(kv.key, kv.mod_revision) for kv in committed.kvs]
        # Nothing extra is pending: the next event is the next write.
        marker = await etcd.put("seq/~marker", "end")
        assert [(e.key, e.revision) for e in (await watcher.get(timeout=5)).events] == [
            (b"seq/~marker", marker.revision)
        ]
        stream = etcd._watch_stream(False)
        assert stream.reconnects >= 2


async def test_close_ends_streams_tasks_and_threads(etcd_endpoint: str, prefix: str) -> None:
    etcd = AsyncClient(etcd_endpoint)
    watcher = await etcd.watch(prefix + "k")
    await etcd.add_watch_callback(prefix + "k2", lambda item: None)
    await etcd.close()
    with pytest.raises(errors.ClientClosedError):
        await watcher.get(timeout=2)
    with pytest.raises(errors.ClientClosedError):
        await etcd.watch("again")
    _assert_no_background_work()


def _assert_no_background_work() -> None:
    """Every thread (sync) or task (async) etcdsync starts is named etcdsync-*."""
    deadline = time.monotonic() + 5
    while ours := [t for t in threading.enumerate() if t.name.startswith("etcdsync-")]:
        assert time.monotonic() < deadline, ours
        time.sleep(0.01)  # threads end on their own once their stream is cancelled
    _assert_no_background_tasks()


def _assert_no_background_tasks() -> None:
    try:
        import asyncio

        current = asyncio.current_task()
    except RuntimeError:
        return  # sync flavour: threads were checked
    ours = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert [t for t in ours if t.get_name().startswith("etcdsync-")] == []


async def test_bad_watch_arguments(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        with pytest.raises(errors.KeyEmptyError):
            await etcd.watch("")
        with pytest.raises(errors.InvalidRequest):
            await etcd.watch("k", start_revision=-1)
        with pytest.raises(errors.InvalidRequest):
            await etcd.watch("k", prefix=True, from_key=True)
        # The client is still usable.
        watcher = await etcd.watch("k-bad-args")
        await watcher.cancel()


async def test_guarded_write_visible_to_watcher(etcd_endpoint: str, prefix: str) -> None:
    key = prefix + "k"
    async with AsyncClient(etcd_endpoint) as etcd:
        watcher = await etcd.watch(key, require_leader=True)
        response = await etcd.txn([Compare.version(key) == 0], [Op.put(key, "v")])
        assert response.succeeded
        batch = await watcher.get(timeout=5)
        assert batch.events[0].revision == response.revision


async def test_a_raising_watch_callback_is_logged_and_gets_the_next_batch(
    etcd_endpoint: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="etcdsync.callbacks")
    key = prefix + "k"
    seen: list[WatchResponse | errors.EtcdError] = []
    first, second = Event(), Event()

    def on_batch(item: WatchResponse | errors.EtcdError) -> None:
        seen.append(item)
        if not first.is_set():
            first.set()
            raise RuntimeError("bug in the first call")
        second.set()

    async with AsyncClient(etcd_endpoint) as etcd:
        watcher = await etcd.add_watch_callback(key, on_batch)
        await etcd.put(key, "1")
        assert await wait_event(first, 10)
        await etcd.put(key, "2")  # a batch of its own, after the callback raised
        assert await wait_event(second, 10), seen
        await watcher.cancel()
    values = [e.value for b in seen if isinstance(b, WatchResponse) for e in b.events]
    assert values == [b"1", b"2"]
    records = [r for r in caplog.records if r.name == "etcdsync.callbacks"]
    assert len(records) == 1, records
    assert records[0].exc_info is not None
    assert "bug in the first call" in str(records[0].exc_info[1])
    assert "watch callback" in records[0].getMessage()
