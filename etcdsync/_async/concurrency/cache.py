"""PrefixCache: a live, local, read-only copy of every key under a prefix.

The cache is a :class:`~.mirror.AsyncPrefixMirror` (every key read at one
revision R, paging through a large prefix, then a watch from R + 1: no write
falls between the two) with what a program needs on top: reads from any task
or thread, listeners told of every added, updated and removed key, each once
and in revision order, and waits for a condition on the contents.

The mirror's watch resumes across reconnects and server restarts from the last
revision it delivered, so nothing is lost or repeated.  When it cannot resume -
the history it needs was compacted while the client was away, or the server
ended the watch - the cache reads the whole prefix again and tells every
listener once, with a ``RESET`` event, followed by the net difference between
the state before and after the gap (each marked ``resync``): a listener that
applies the events keeps an exact copy of the prefix, and one that only cares
about the gap rebuilds from :meth:`AsyncPrefixCache.snapshot`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, NoReturn

from ... import errors
from ..._backends._async import Event, Queue, StateLock, Task, run_callback, spawn, wait_event
from ..._deadline import Deadline
from ..._keys import to_bytes
from ...cache_types import CacheEvent, CacheEventType, CacheSnapshot
from ...models import KeyValue
from ...watch_types import Event as WatchEvent
from ...watch_types import EventType
from ..protocol import AsyncKVClient
from .mirror import AsyncPrefixMirror

__all__ = [
    "AsyncCacheEvents",
    "AsyncPrefixCache",
    "CacheEvent",
    "CacheEventType",
    "CacheListener",
    "CacheSnapshot",
]

log = logging.getLogger("etcdsync.cache")

CacheListener = Callable[[CacheEvent], Any]
"""Called with each :class:`~etcdsync.cache_types.CacheEvent` of a prefix cache."""

_ADDED, _UPDATED, _REMOVED, _RESET = (
    CacheEventType.ADDED,
    CacheEventType.UPDATED,
    CacheEventType.REMOVED,
    CacheEventType.RESET,
)
# Reloads after a failure back off exponentially (with jitter) up to this.
_BACKOFF_START = 0.1
_BACKOFF_MAX = 5.0
# How long stop() waits for the background task or thread to end.
_JOIN_TIMEOUT = 5.0


class _Listener:
    """One consumer of the events: a callback fed by a task (thread) of its own, or
    an event stream the user reads.  Its queue holds its events in order; None
    ends it."""

    def __init__(self, callback: CacheListener | None, key_prefix: bytes) -> None:
        self.callback = callback
        self.key_prefix = key_prefix
        self.queue: Queue[CacheEvent | None] = Queue()
        self.initial = False  # wants ADDED events for the keys present at the first load
        self.closed = False
        self.task: Task | None = None

    def offer(self, events: list[CacheEvent]) -> None:
        for event in events:
            if event.type is _RESET or event.key.startswith(self.key_prefix):
                self.queue.put(event)


def _initial(kvs: dict[bytes, KeyValue], revision: int) -> list[CacheEvent]:
    return [CacheEvent(_ADDED, key, kvs[key], revision, initial=True) for key in sorted(kvs)]


def _difference(
    old: dict[bytes, KeyValue], new: dict[bytes, KeyValue], revision: int
) -> list[CacheEvent]:
    """The net difference from ``old`` to ``new``, as events of ``revision``."""
    events: list[CacheEvent] = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if after is None:
            assert before is not None
            events.append(CacheEvent(_REMOVED, key, before, revision, resync=True))
        elif before is None:
            events.append(CacheEvent(_ADDED, key, after, revision, resync=True))
        elif before.create_revision != after.create_revision:
            # Deleted and created again inside the gap.
            events.append(CacheEvent(_REMOVED, key, before, revision, resync=True))
            events.append(CacheEvent(_ADDED, key, after, revision, resync=True))
        elif before.mod_revision != after.mod_revision:
            events.append(CacheEvent(_UPDATED, key, after, revision, before, resync=True))
    return events


class AsyncPrefixCache:
    """A live, read-only copy of the keys under ``prefix``; ``client.cache(prefix)``.

    ::

        async with etcd.cache("services/") as cache:
            cache.add_listener(lambda event: print(event.type, event.key))
            kv = cache.get("services/api/7")          # a KeyValue, or None
            for kv in cache:                           # every key, in key order
                ...
            await cache.wait_for(lambda snap: "services/api/7" in snap, timeout=5)

    ``await start()`` (or ``async with``) reads the prefix and follows every
    change until :meth:`stop`.  Keys are full keys (with the prefix), as
    :class:`~etcdsync.models.KeyValue` has them; ``str`` keys are encoded as
    UTF-8.  Reads are local and never block: :meth:`get`, ``in``, ``len()``,
    iteration (one consistent :meth:`snapshot`, in key order) and
    :attr:`revision` (the store revision the contents reflect).  The cache
    trails the store by the watch's latency; to see a write of your own, wait
    for it: ``await cache.wait_for(lambda snap: snap.revision >= put.revision)``
    (the write must be under the prefix).

    **Listeners** (:meth:`add_listener`) and **event streams** (:meth:`events`)
    receive a :class:`~etcdsync.cache_types.CacheEvent` per added, updated and
    removed key, each once, in revision order (in etcd's order within a
    revision), across reconnects and server restarts.  After a gap in the watch
    (compaction) they receive one ``RESET`` event, then the net difference
    (``resync``).  Each listener runs in a task (thread, in the sync client) of
    its own, so a slow one delays neither the cache nor the others; its events
    queue up meanwhile (unbounded).  A listener that raises is logged (the one
    callback policy of :mod:`etcdsync._callbacks`) and keeps receiving.
    """

    def __init__(
        self, client: AsyncKVClient, prefix: str | bytes, *, page_size: int = 1000
    ) -> None:
        self._client = client
        self.prefix = prefix
        self._prefix = to_bytes(prefix, "prefix")
        self._mirror = AsyncPrefixMirror(
            client,
            self._prefix,
            page_size=page_size,
            on_revision=self._on_revision,
            on_event=self._on_event,
        )
        # Shared with user threads (sync flavour) and listener tasks; never held
        # across a wait or a callback.
        self._lock = StateLock()
        self._kvs: dict[bytes, KeyValue] = {}
        self._revision = 0
        self._resets = 0
        self._loaded = False
        self._listeners: list[_Listener] = []
        self._changed = Event()  # replaced at each change; the old one is set
        self._stopped = False
        self._end_error: errors.EtcdError | None = None
        # Touched only by the task (thread) that drives the mirror.
        self._batch: list[tuple[WatchEvent, KeyValue | None]] = []
        self._loads = 0
        self._task: Task | None = None
        self._started = False
        self.last_error: errors.EtcdError | None = None
        """The most recent watch or reload failure (the cache recovered from it, or
        is retrying), or None."""

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, *, timeout: float | None = None) -> AsyncPrefixCache:
        """Read the prefix and start following it; returns ``self``.  Idempotent.

        Raises :class:`~etcdsync.errors.CacheTimeout` if the prefix cannot be read
        within ``timeout`` seconds, and the client's errors; nothing is started then.
        """
        if self._started:
            if self._stopped:
                raise errors.CacheError("a stopped cache cannot be started again")
            return self
        try:
            await self._mirror.load(timeout)
        except errors.Timeout as exc:
            if timeout is None or isinstance(exc, errors.CacheTimeout):
                raise
            raise errors.CacheTimeout(
                f"the cache of {self.prefix!r} was not loaded within {timeout} s"
            ) from exc
        self._started = True
        self._task = spawn(self._run, name="etcdsync-cache")
        return self

    async def stop(self) -> None:
        """Stop following the prefix; the contents stay readable.  Idempotent.

        The listeners receive the events already queued for them, then end; event
        streams end (``StopAsyncIteration``) after those events.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        await self._mirror.close()
        self._end_listeners()
        self._wake_waiters()
        if self._task is not None:
            self._task.cancel()
            await self._task.join(_JOIN_TIMEOUT)

    async def close(self) -> None:
        """Same as :meth:`stop`."""
        await self.stop()

    async def __aenter__(self) -> AsyncPrefixCache:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop` (or the client's close)."""
        return self._started and not self._stopped and self._end_error is None

    # --- reading --------------------------------------------------------------------------

    def _check_loaded(self) -> None:
        if not self._loaded:
            raise errors.CacheError(f"the cache of {self.prefix!r} is not started")

    @property
    def revision(self) -> int:
        """The store revision the contents reflect: the last change applied (or the
        revision of the last full read)."""
        self._check_loaded()
        return self._revision

    @property
    def resets(self) -> int:
        """How many times a gap in the watch (compaction) forced a full re-read."""
        return self._resets

    def get(self, key: str | bytes) -> KeyValue | None:
        """The key-value of ``key`` (a full key), or None if it is not there."""
        self._check_loaded()
        return self._kvs.get(to_bytes(key))

    def snapshot(self) -> CacheSnapshot:
        """The contents at one revision, as an immutable mapping (key -> KeyValue)."""
        self._check_loaded()
        with self._lock:
            return CacheSnapshot(self._kvs, self._revision)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str | bytes) and to_bytes(key) in self._kvs

    def __len__(self) -> int:
        return len(self._kvs)

    def __iter__(self) -> Iterator[KeyValue]:
        """The key-values, in key order, from one consistent snapshot."""
        snapshot = self.snapshot()
        return iter([snapshot[key] for key in snapshot])

    # --- following the mirror -------------------------------------------------------------

    def _on_event(self, event: WatchEvent, previous: KeyValue | None) -> None:
        self._batch.append((event, previous))

    def _on_revision(self, revision: int) -> None:
        """After each revision (and each load): apply it and tell the listeners."""
        loads = self._mirror.reloads + 1
        batch, self._batch = self._batch, []
        if loads != self._loads:
            first = self._loads == 0
            self._loads = loads
            new = dict(self._mirror.kvs)
            with self._lock:
                old, self._kvs, self._revision = self._kvs, new, revision
                self._loaded = True
                if first:
                    initial = _initial(new, revision)
                    for listener in self._listeners:
                        if listener.initial:
                            listener.offer(initial)
                else:
                    self._resets += 1
                    events = [CacheEvent(_RESET, b"", None, revision)]
                    events += _difference(old, new, revision)
                    for listener in self._listeners:
                        listener.offer(events)
            if not first:
                log.warning(
                    "cache %r re-read at revision %d after a gap in its watch",
                    self.prefix,
                    revision,
                )
        else:
            events = []
            for event, previous in batch:
                if event.type is EventType.PUT:
                    if previous is None:
                        events.append(CacheEvent(_ADDED, event.key, event.kv, revision))
                    else:
                        events.append(CacheEvent(_UPDATED, event.key, event.kv, revision, previous))
                elif previous is not None:
                    events.append(CacheEvent(_REMOVED, event.key, previous, revision))
            with self._lock:
                for change in events:
                    if change.type is _REMOVED:
                        self._kvs.pop(change.key, None)
                    else:
                        assert change.kv is not None
                        self._kvs[change.key] = change.kv
                self._revision = revision
                for listener in self._listeners:
                    listener.offer(events)
        self._wake_waiters()

    async def _run(self) -> None:
        """Drive the mirror; reload (with backoff after failures) when its watch fails."""
        delay = _BACKOFF_START
        while not self._stopped:
            reloading = not self._mirror.watching
            try:
                await self._mirror.step()
            except StopAsyncIteration:
                return  # stop() closed the mirror
            except errors.ClientClosedError as exc:
                self._end(exc)
                return
            except errors.EtcdError as exc:
                # Compacted history or a watch the server ended: the mirror dropped
                # its watch and the next step reads everything again.  A failed
                # read is retried after a pause.
                self.last_error = exc
                log.info("cache %r: %s", self.prefix, exc)
                if reloading:
                    await wait_event(self._changed, random.uniform(delay / 2, delay))
                    delay = min(delay * 2, _BACKOFF_MAX)
                continue
            if reloading:
                delay = _BACKOFF_START

    def _wake_waiters(self) -> None:
        with self._lock:
            changed, self._changed = self._changed, Event()
        changed.set()

    def _end(self, error: errors.EtcdError) -> None:
        """The client closed: nothing more will come."""
        self._end_error = error
        self.last_error = error
        self._end_listeners()
        self._wake_waiters()

    def _end_listeners(self) -> None:
        with self._lock:
            listeners, self._listeners = self._listeners, []
            for listener in listeners:
                listener.closed = True
                listener.queue.put(None)

    # --- listeners ------------------------------------------------------------------------

    def _subscribe(self, listener: _Listener, initial: bool) -> None:
        with self._lock:
            if self._stopped or self._end_error is not None:
                raise errors.CacheError(f"the cache of {self.prefix!r} is stopped")
            self._listeners.append(listener)
            if initial:
                if self._loaded:
                    listener.offer(_initial(self._kvs, self._revision))
                else:
                    listener.initial = True

    def _unsubscribe(self, listener: _Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
            if not listener.closed:
                listener.closed = True
                listener.queue.put(None)

    def add_listener(
        self, fn: CacheListener, *, initial: bool = False, key_prefix: str | bytes = b""
    ) -> Callable[[], None]:
        """Call ``fn(event)`` for each change; returns a function that removes it.

        ``fn`` runs in a task (thread, in the sync client) of its own, with the
        events in order; in the asyncio client it may be a coroutine function.
        With ``initial=True`` it first receives an ``ADDED`` event (``initial``)
        for every key present (at the first read, if the cache is not started
        yet).  ``key_prefix`` restricts it to the keys that start with it
        (``RESET`` events always come).  An exception it raises is logged under
        the ``etcdsync.callbacks`` logger.
        """
        if not callable(fn):
            raise errors.InvalidRequest(f"a listener must be callable, got {fn!r}")
        listener = _Listener(fn, to_bytes(key_prefix, "key_prefix"))
        self._subscribe(listener, initial)
        listener.task = spawn(self._deliver, listener, name="etcdsync-cache-listener")
        return lambda: self._unsubscribe(listener)

    def remove_listener(self, fn: CacheListener) -> int:
        """Stop calling ``fn``; returns how many registrations were removed (0 if none)."""
        with self._lock:
            found = [listener for listener in self._listeners if listener.callback == fn]
        for listener in found:
            self._unsubscribe(listener)
        return len(found)

    async def _deliver(self, listener: _Listener) -> None:
        assert listener.callback is not None
        while True:
            event = await listener.queue.get()
            if event is None:
                return
            await run_callback("cache-listener", listener.callback, event)

    def events(self, *, initial: bool = False, key_prefix: str | bytes = b"") -> AsyncCacheEvents:
        """A stream of the changes from now on: ``async for event in cache.events():``.

        Same events, order and options as :meth:`add_listener`; the stream is
        registered at once, so nothing is missed before the first ``get()``.
        """
        listener = _Listener(None, to_bytes(key_prefix, "key_prefix"))
        self._subscribe(listener, initial)
        return AsyncCacheEvents(self, listener)

    # --- waiting --------------------------------------------------------------------------

    async def wait_for(
        self, predicate: Callable[[CacheSnapshot], object], *, timeout: float | None = None
    ) -> CacheSnapshot:
        """Wait until ``predicate(snapshot)`` is true; return that snapshot.

        The predicate is called with the contents now, then after each change.
        Raises :class:`~etcdsync.errors.CacheTimeout` after ``timeout`` seconds,
        :class:`~etcdsync.errors.CacheError` if the cache is not started or is
        stopped, and :class:`~etcdsync.errors.ClientClosedError` once the client
        closed.
        """
        deadline = Deadline(timeout)
        self._check_loaded()
        while True:
            with self._lock:
                changed = self._changed
                snapshot = CacheSnapshot(self._kvs, self._revision)
            if predicate(snapshot):
                return snapshot
            if self._stopped:
                raise errors.CacheError(f"the cache of {self.prefix!r} is stopped")
            if self._end_error is not None:
                raise self._end_error
            if deadline.expired():
                raise errors.CacheTimeout(
                    f"the condition on the cache of {self.prefix!r} did not hold within "
                    f"{timeout} s (revision {snapshot.revision})"
                )
            await wait_event(changed, deadline.remaining())

    def __repr__(self) -> str:
        where = (
            f"revision={self._revision} keys={len(self._kvs)}" if self._loaded else "not started"
        )
        return f"<{type(self).__name__} {self.prefix!r} {where}>"


class AsyncCacheEvents:
    """The changes of a prefix cache as a stream; create with ``cache.events()``.

    ``get(timeout)`` returns the next :class:`~etcdsync.cache_types.CacheEvent`
    (raising :class:`~etcdsync.errors.CacheTimeout`); ``async for`` iterates;
    :meth:`cancel` ends the stream after the events already received; it also
    ends when the cache stops, and raises
    :class:`~etcdsync.errors.ClientClosedError` once the client closed.
    """

    def __init__(self, cache: AsyncPrefixCache, listener: _Listener) -> None:
        self._cache = cache
        self._listener = listener
        self._ended = False

    async def get(self, timeout: float | None = None) -> CacheEvent:
        """The next event; ``StopAsyncIteration`` once the stream has ended."""
        if self._ended:
            self._raise_end()
        try:
            event = await self._listener.queue.get(Deadline(timeout).remaining())
        except TimeoutError:
            raise errors.CacheTimeout(f"no change of the cache within {timeout} s") from None
        if event is None:
            self._ended = True
            self._raise_end()
        return event

    def _raise_end(self) -> NoReturn:
        error = self._cache._end_error
        if error is not None and not self._cache._stopped:
            raise error
        raise StopAsyncIteration

    def __aiter__(self) -> AsyncCacheEvents:
        return self

    async def __anext__(self) -> CacheEvent:
        return await self.get()

    async def cancel(self) -> None:
        """End the stream (after the events already received)."""
        self._cache._unsubscribe(self._listener)

    async def __aenter__(self) -> AsyncCacheEvents:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cancel()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._cache!r}>"
