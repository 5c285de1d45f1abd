"""Watch callbacks run by the client's dispatcher: few workers, order kept, no stalls.

The workers are threads in the sync client and tasks in the async one; both are
named ``etcdsync-watch-callbacks*``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from etcdsync import AsyncClient, Op, errors
from etcdsync._async.watch_callbacks import STALL_BOUND, dispatcher_of
from etcdsync._backends._async import Event, sleep, wait_event
from etcdsync.watch_types import WatchResponse

WORKER_PREFIX = "etcdsync-watch-callbacks"


def _callback_workers() -> int:
    """Threads (sync) or live tasks (async) of the callback dispatcher."""
    names = [t.name for t in threading.enumerate()]
    try:
        import asyncio

        names += [t.get_name() for t in asyncio.all_tasks() if not t.done()]
    except RuntimeError:
        pass  # no event loop: the sync flavour
    return sum(1 for name in names if name.startswith(WORKER_PREFIX))


async def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await sleep(0.01)


async def test_a_thousand_callback_watchers_add_two_workers(
    etcd_endpoint: str, prefix: str
) -> None:
    delivered: list[bytes] = []
    lock = threading.Lock()

    def on_batch(item: WatchResponse | errors.EtcdError) -> None:
        if isinstance(item, WatchResponse):
            with lock:
                delivered.extend(e.key for e in item.events)

    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.watch(prefix + "warm-up")  # the shared stream and its reader exist
        threads = threading.active_count()
        watchers = [
            await etcd.add_watch_callback(f"{prefix}w/{i:04d}", on_batch) for i in range(1000)
        ]
        assert threading.active_count() - threads <= 2
        assert _callback_workers() <= 2
        for first in range(0, 1000, 100):  # every watcher gets its key's put
            ops = [Op.put(f"{prefix}w/{i:04d}", "v") for i in range(first, first + 100)]
            await etcd.txn(success=ops)
        await _until(lambda: len(delivered) >= 1000, 30, f"{len(delivered)} of 1000 delivered")
        assert sorted(delivered) == [f"{prefix}w/{i:04d}".encode() for i in range(1000)]
        assert threading.active_count() - threads <= 2
        assert _callback_workers() <= 2
        dispatcher = dispatcher_of(etcd._conn)
        assert dispatcher.feeds == 1000
        for watcher in watchers:
            await watcher.cancel()
        # With no callback watcher left, the workers and the supervisor end.
        await _until(lambda: _callback_workers() == 0, 5, "callback workers still running")
        assert dispatcher.feeds == 0


async def test_a_slow_callback_does_not_hold_up_other_watchers(
    etcd_endpoint: str, prefix: str
) -> None:
    release = Event()
    slow_started = Event()
    fast_called = Event()
    fast_calls: list[float] = []

    async def slow(item: WatchResponse | errors.EtcdError) -> None:
        slow_started.set()
        await wait_event(release, 10)

    def fast(item: WatchResponse | errors.EtcdError) -> None:
        fast_calls.append(time.monotonic())
        fast_called.set()

    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.add_watch_callback(prefix + "slow", slow)
        await etcd.add_watch_callback(prefix + "fast", fast)
        dispatcher = dispatcher_of(etcd._conn)
        await etcd.put(prefix + "slow", "1")
        assert await wait_event(slow_started, 5)
        started = dispatcher.workers_started
        put_at = time.monotonic()
        await etcd.put(prefix + "fast", "1")
        # Delivered while the slow callback still blocks its worker: another took over.
        assert await wait_event(fast_called, 5), "the fast watcher waited for the slow one"
        assert not release.is_set()
        assert dispatcher.workers_started == started + 1
        delay = fast_calls[0] - put_at
        print(f"fast watcher's callback {delay * 1e3:.0f} ms after its put (bound {STALL_BOUND} s)")
        assert delay < STALL_BOUND + 1.0  # the bound, plus an honest margin for a busy box
        release.set()


async def test_each_watchers_callbacks_stay_in_order_and_one_at_a_time(
    etcd_endpoint: str, prefix: str
) -> None:
    release = Event()
    active = {"a": 0, "b": 0}
    overlaps = {"a": 0, "b": 0}
    lock = threading.Lock()
    seen: dict[str, list[int]] = {"a": [], "b": []}

    async def record(name: str, item: WatchResponse | errors.EtcdError) -> None:
        with lock:
            overlaps[name] += active[name]  # another call of the same watcher running
            active[name] += 1
        if name == "a" and not seen["a"]:
            await wait_event(release, 10)  # the first batch of "a" is slow
        with lock:
            active[name] -= 1
            if isinstance(item, WatchResponse):
                seen[name].extend(e.revision for e in item.events)

    async def on_a(item: WatchResponse | errors.EtcdError) -> None:
        await record("a", item)

    async def on_b(item: WatchResponse | errors.EtcdError) -> None:
        await record("b", item)

    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.add_watch_callback(prefix + "a", on_a)
        await etcd.add_watch_callback(prefix + "b", on_b)
        written: dict[str, list[int]] = {"a": [], "b": []}
        for i in range(20):
            for name in ("a", "b"):
                written[name].append((await etcd.put(prefix + name, str(i))).revision)
        # "b" is served in full while the first batch of "a" blocks its worker.
        await _until(lambda: seen["b"] == written["b"], 10, f"b got {seen['b']}")
        assert seen["a"] == []
        release.set()
        await _until(lambda: seen["a"] == written["a"], 10, f"a got {seen['a']}")
    assert overlaps == {"a": 0, "b": 0}
    assert seen == written


async def test_terminal_error_is_the_last_call_and_workers_end_on_close(
    etcd_endpoint: str, prefix: str
) -> None:
    calls: list[WatchResponse | errors.EtcdError] = []
    etcd = AsyncClient(etcd_endpoint)
    await etcd.add_watch_callback(prefix + "k", calls.append)
    await etcd.put(prefix + "k", "1")
    await _until(lambda: len(calls) == 1, 5, f"calls: {calls}")
    await etcd.close()
    await _until(lambda: _callback_workers() == 0, 5, "callback workers still running")
    assert isinstance(calls[0], WatchResponse)
    assert len(calls) == 2 and isinstance(calls[1], errors.ClientClosedError)
