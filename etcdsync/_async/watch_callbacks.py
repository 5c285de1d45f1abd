"""Watch callbacks of one client, run by a small pool instead of one worker each.

:meth:`~etcdsync.AsyncClient.add_watch_callback` hands its watcher to the client's
:class:`AsyncCallbackDispatcher`.  The stream's reader tells the dispatcher when a
watcher has a new batch (:meth:`AsyncWatcher.set_listener`); the dispatcher queues
that watcher, once, and a worker calls its callback with one batch at a time,
round-robin over the watchers that have work.  Each watcher's callbacks run one
after the other, in revision order, and never two at once.

Workers: one, idle or busy, while any callback watcher lives, plus a supervisor.
In the sync client they are threads, so a thousand callback watchers cost two
threads (one each before; a thread is about 16 KiB and a slow start).

A slow callback cannot hold up the others for long: when work is waiting and
every worker has been inside the same callback for :data:`STALL_BOUND` seconds,
the supervisor starts another worker, which serves the others while the slow one
goes on in the thread it has.  So a watcher's batch waits at most
:data:`STALL_BOUND` (plus the time to start a thread) behind somebody else's slow
callback.  Surplus workers end as soon as they find nothing to do while another
worker is idle; all of them end, with the supervisor, once no callback watcher is
left (cancelled, or ended with its terminal error - e.g. when the client closes).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from .. import errors
from .._backends._async import (
    Event,
    QueueEmpty,
    StateLock,
    Task,
    run_callback,
    spawn,
    wait_event,
)
from .watcher import AsyncWatcher, WatchCallback

STALL_BOUND = 0.1
"""Seconds a callback may keep every worker busy while other watchers' batches wait
before the supervisor starts another worker for them."""

CLOSE_WAIT = 1.0
"""Seconds :meth:`AsyncCallbackDispatcher.close` waits for the workers to deliver the
terminal errors and end (a callback still running past it is left to finish)."""


class _Feed:
    """One callback watcher: its callback and its place in the dispatcher."""

    __slots__ = ("callback", "done", "scheduled", "watcher")

    def __init__(self, watcher: AsyncWatcher, callback: WatchCallback) -> None:
        self.watcher = watcher
        self.callback = callback
        self.scheduled = False
        """In the ready queue or being served by a worker (then it is not queued again)."""
        self.done = False


class AsyncCallbackDispatcher:
    """Runs the callbacks of every callback watcher of one client (see the module)."""

    def __init__(self, stall_bound: float = STALL_BOUND) -> None:
        self._bound = stall_bound
        self._lock = StateLock()
        self._ready: deque[_Feed] = deque()
        self._feeds = 0  # live callback watchers
        self._workers = 0  # started and not ended
        self._idle = 0  # waiting for work, or just started
        self._busy: dict[int, float] = {}  # worker -> when its current callback began
        self._handed_off: set[int] = set()  # busy workers a new worker already replaced
        self._next_worker = 0
        self._work = Event()  # set when work waits for idle workers (or all must end)
        self._supervisor_wake = Event()
        self._supervising = False
        self._armed = False  # the supervisor waits for a deadline: no need to wake it
        self.workers_started = 0
        """How many workers this dispatcher started in all (for tests)."""
        self._live: set[_Feed] = set()
        self._tasks: list[Task] = []

    @property
    def feeds(self) -> int:
        """The live callback watchers."""
        return self._feeds

    def add(self, watcher: AsyncWatcher, callback: WatchCallback) -> None:
        """Call ``callback`` with each batch of ``watcher``, then with its terminal
        error, if any (a cancelled watcher ends without a call)."""
        feed = _Feed(watcher, callback)
        with self._lock:
            self._feeds += 1
            self._live.add(feed)
            if not self._supervising:
                self._supervising = True
                self._keep(spawn(self._supervise, name="etcdsync-watch-callbacks-supervisor"))
            if self._workers == 0:
                self._start_worker()
        watcher.set_listener(lambda: self._schedule(feed))

    # --- called by the stream's reader (any thread) ---------------------------------------

    def _schedule(self, feed: _Feed) -> None:
        """``feed``'s watcher has a new item: queue the watcher unless it already is."""
        with self._lock:
            if feed.scheduled or feed.done:
                return
            feed.scheduled = True
            self._ready.append(feed)
            self._wake_someone()

    def _wake_someone(self) -> None:
        """(Lock held, work queued.) Wake an idle worker, or the supervisor when every
        worker is busy."""
        if self._idle:
            self._work.set()
        elif self._workers == 0:
            self._start_worker()
        elif not self._armed:
            self._armed = True
            self._supervisor_wake.set()

    def _start_worker(self) -> None:
        """(Lock held.) Start a worker; it counts as idle until it takes work."""
        self._workers += 1
        self._idle += 1
        self._next_worker += 1
        self.workers_started += 1
        self._keep(spawn(self._run_worker, self._next_worker, name="etcdsync-watch-callbacks"))

    def _keep(self, task: Task) -> None:
        """(Lock held.) Remember a worker or supervisor for close()."""
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(task)

    # --- the workers ------------------------------------------------------------------------

    async def _run_worker(self, token: int) -> None:
        try:
            await self._work_loop(token)
        except BaseException:
            with self._lock:  # it died (a bug, or the loop shutting down): forget it
                self._workers -= 1
            raise

    async def _work_loop(self, token: int) -> None:
        waited = True  # counted as idle from its start
        while True:
            with self._lock:
                if waited:
                    self._idle -= 1
                    waited = False
                if self._ready:
                    feed: _Feed | None = self._ready.popleft()
                    self._busy[token] = time.monotonic()
                    if self._ready and not self._idle and not self._armed:
                        # More work waits and nobody is free.  It may have been queued
                        # while this worker still counted as idle (woken, not yet
                        # here), which woke nobody else: the supervisor must time this
                        # callback, or that work would wait until it returns.
                        self._armed = True
                        self._supervisor_wake.set()
                elif self._feeds == 0 or self._idle > 0:
                    # Nothing left to serve, or another worker already waits: end.
                    self._workers -= 1
                    if self._feeds == 0:
                        self._work.set()  # the others end too
                    return
                else:
                    feed = None
                    self._idle += 1
                    self._work.clear()
            if feed is None:
                await wait_event(self._work, None)
                waited = True
                continue
            more = False  # should serving fail (a bug, or the loop shutting down): end it
            try:
                more = await self._serve(feed)
            finally:
                with self._lock:
                    del self._busy[token]
                    self._handed_off.discard(token)
                    if not more:
                        feed.done = True
                        feed.scheduled = False
                        self._live.discard(feed)
                        self._feeds -= 1
                        if self._feeds == 0:  # the last one: every worker ends
                            self._work.set()
                            self._supervisor_wake.set()
                    elif feed.watcher.has_items():
                        self._ready.append(feed)  # round-robin: behind the others
                    else:
                        feed.scheduled = False

    async def _serve(self, feed: _Feed) -> bool:
        """Deliver one item of ``feed``; False once the watcher has ended."""
        try:
            item = await feed.watcher.take()
        except QueueEmpty:
            return True
        except errors.EtcdError as exc:  # a refused resume: the watch is over
            item = exc
        if item is None:  # cancelled by its user: no call
            return False
        await run_callback("watch", feed.callback, item)
        return not isinstance(item, errors.EtcdError)

    # --- closing --------------------------------------------------------------------------

    async def close(self) -> None:
        """The client is closing: end every callback watcher with ClientClosedError
        (its last call), then wait up to :data:`CLOSE_WAIT` seconds for the workers
        to deliver those and end."""
        with self._lock:
            live = list(self._live)
        for feed in live:
            feed.watcher.fail(errors.ClientClosedError("the client was closed"))
        deadline = time.monotonic() + CLOSE_WAIT
        with self._lock:
            tasks = list(self._tasks)
        for task in tasks:
            await task.join(max(deadline - time.monotonic(), 0.0))

    # --- the supervisor -------------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            with self._lock:
                self._supervisor_wake.clear()
                if self._feeds == 0:
                    self._supervising = False
                    return
                delay = self._check_stall()
                self._armed = delay is not None
            await wait_event(self._supervisor_wake, delay)

    def _check_stall(self) -> float | None:
        """(Lock held.) Start a worker if work waits behind callbacks busy for too
        long; the seconds until the next check is due (None: wait to be woken)."""
        if not self._ready or self._idle:
            return None
        now = time.monotonic()
        waiting = [(start, t) for t, start in self._busy.items() if t not in self._handed_off]
        if not waiting:
            return None
        start, token = min(waiting)
        if now - start >= self._bound:
            self._handed_off.add(token)
            self._start_worker()
            return self._bound
        return self._bound - (now - start)


def dispatcher_of(conn: Any) -> AsyncCallbackDispatcher:
    """The callback dispatcher of a connection (shared by its namespaced views)."""

    def create() -> AsyncCallbackDispatcher:
        dispatcher = AsyncCallbackDispatcher()
        conn.on_close(dispatcher.close)
        return dispatcher

    found: AsyncCallbackDispatcher = conn.shared(AsyncCallbackDispatcher, create)
    return found
