"""One watch as its user sees it: a resumable position plus a bounded buffer.

The shared stream (``watch_stream.py``) feeds each watcher; the watcher keeps
``next_revision``, the revision it must resume from after any interruption: the
last delivered event's revision + 1, or the creation revision + 1 before any
event.  Never the response header's revision: while a watcher catches up, a
batch's header is the current revision but its events stop earlier.

Slow consumers: when more than ``buffer_limit`` batches wait unread, the server
side of this watch is cancelled (so the shared stream never stalls and memory
stays bounded); once the consumer has drained half of the buffer the watch is
re-created from ``next_revision``.  Nothing is lost or repeated; the cost is a
re-sync on the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .. import errors
from .._backends._async import Latch, Queue
from .._config import check_timeout
from .._keyspace import ROOT, KeySpace
from .._pb import rpc_pb2 as rpc
from ..watch_types import Event as WatchEvent
from ..watch_types import WatchResponse, events_from_pb

_Item = WatchResponse | errors.EtcdError | None  # None: cancelled by its user


class AsyncWatchOwner(Protocol):
    """What a watcher asks of the stream that feeds it (``AsyncWatchStream``).

    A protocol rather than an import keeps the watcher free of the stream module,
    which imports this one: no import cycle.
    """

    async def resume(self, watcher: AsyncWatcher) -> None: ...

    async def remove(self, watcher: AsyncWatcher) -> None: ...

    def check_process(self) -> None: ...


class AsyncWatcher:
    """A live watch: iterate it for :class:`~etcdsync.watch_types.WatchResponse` batches.

    Iteration ends when :meth:`cancel` is called; it raises
    :class:`~etcdsync.errors.CompactedError` (with ``compact_revision``) when the
    next revision was compacted, and :class:`~etcdsync.errors.ClientClosedError`
    when the client closes.  Batches arrive in revision order, each event once,
    across reconnects.
    """

    def __init__(
        self,
        stream: AsyncWatchOwner,
        template: rpc.WatchCreateRequest,
        *,
        start_revision: int,
        progress_notify: bool,
        created_notify: bool,
        buffer_limit: int,
        keyspace: KeySpace = ROOT,
    ) -> None:
        self._stream = stream
        self._keyspace = keyspace
        self._template = template
        self.next_revision = start_revision
        """The revision this watch resumes from (0 until the server pinned it)."""
        self.watch_id = 0
        """The server-side id of the current incarnation (0 while none is active)."""
        self._progress_notify = progress_notify
        self._created_notify = created_notify
        self._buffer_limit = buffer_limit
        self._queue: Queue[_Item] = Queue()
        self._fragments: list[WatchEvent] = []
        self.created = Latch()
        self.create_error: errors.EtcdError | None = None
        self.suspended = False
        self.finished = False
        self.auth_retried = False
        """Set when a create was refused for a stale token and is being retried."""
        self._end: errors.EtcdError | None = None
        self._listener: Callable[[], None] | None = None

    @property
    def key(self) -> bytes:
        return self._template.key

    @property
    def range_end(self) -> bytes:
        return self._template.range_end

    @property
    def active(self) -> bool:
        """True while the watch should exist on the server."""
        return not self.finished and not self.suspended

    def create_request(self, watch_id: int) -> rpc.WatchRequest:
        """The create request for a new incarnation with ``watch_id``, from next_revision."""
        request = rpc.WatchCreateRequest()
        request.CopyFrom(self._template)
        request.watch_id = watch_id
        request.start_revision = self.next_revision
        return rpc.WatchRequest(create_request=request)

    # --- fed by the stream (its reader task or thread) ----------------------------------

    def on_created(self, header_revision: int) -> None:
        if self.next_revision == 0:
            # A watch "from now" is pinned here, so a reconnect cannot skip writes.
            self.next_revision = header_revision + 1
        self.auth_retried = False
        first = not self.created.is_set()
        self.created.set()
        if first and self._created_notify:
            self._push(WatchResponse(header_revision, created=True))

    def on_events(self, header_revision: int, events: list[Any], fragment: bool) -> bool:
        """Take one response's events; False when the buffer overflowed (suspend me)."""
        if not self._keyspace.is_root:  # a namespace's watch: keys without its prefix
            for event in events:
                self._keyspace.strip_event(event)
        if self._fragments or fragment:
            self._fragments.extend(events_from_pb(events, self._template.prev_kv))
            if fragment:
                return True  # the rest of this batch follows in the next response
            batch, self._fragments = self._fragments, []
        else:  # the whole batch in one response: the usual case
            batch = events_from_pb(events, self._template.prev_kv)
        # Defensive: after a resume the server starts at next_revision, so nothing
        # older can arrive; dropping it anyway keeps delivery exactly-once.  Events
        # come in revision order: only a batch that starts too early needs the filter.
        if batch and batch[0].kv.mod_revision < self.next_revision:
            batch = [e for e in batch if e.kv.mod_revision >= self.next_revision]
        if not batch:
            return True
        self.next_revision = batch[-1].kv.mod_revision + 1
        self._push(WatchResponse(header_revision, batch))
        return self._queue.qsize() < self._buffer_limit

    def on_progress(self, header_revision: int) -> None:
        if self._progress_notify and not self._fragments:
            self._push(WatchResponse(header_revision, progress=True))

    def on_canceled(self, compact_revision: int, reason: str) -> None:
        """The server ended this watch; tell the consumer why."""
        if compact_revision > 0:
            error: errors.EtcdError = errors.CompactedError(
                f"watch on {self.key!r} needs revision {self.next_revision}, "
                f"compacted up to {compact_revision}",
                compact_revision=compact_revision,
            )
        else:
            error = errors.Unavailable(f"watch on {self.key!r} cancelled by the server: {reason}")
        self.fail(error)

    def fail(self, error: errors.EtcdError) -> None:
        """End the watch with ``error`` (raised by the next read)."""
        if self.finished:
            return
        self.finished = True
        if not self.created.is_set():
            self.create_error = error
            self.created.set()
        self._push(error)

    def drained(self) -> bool:
        """True when the consumer has read enough for a suspended watch to resume."""
        return self._queue.qsize() <= self._buffer_limit // 2

    def _push(self, item: _Item) -> None:
        self._queue.put(item)
        if self._listener is not None:
            self._listener()

    # --- used by a callback dispatcher (watch_callbacks.py) ------------------------------

    def set_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (from the stream's reader) after each item is buffered,
        and now if some already are: a dispatcher then runs this watcher's callback."""
        self._listener = listener
        if self._queue.qsize():
            listener()

    def has_items(self) -> bool:
        """True when an item is buffered."""
        return self._queue.qsize() > 0

    async def take(self) -> _Item:
        """The next buffered item, without waiting (raises ``QueueEmpty`` when none):
        a batch, the terminal error, or None once cancelled."""
        item = self._queue.get_nowait()
        if self.suspended and self.drained():
            await self._stream.resume(self)
        return item

    # --- used by its consumer ---------------------------------------------------------------

    async def get(self, timeout: float | None = None) -> WatchResponse:
        """The next batch; raises ``TimeoutError`` if none arrives within ``timeout``
        (None or ``inf``: wait as long as it takes).

        Raises :class:`StopAsyncIteration` once the watch was cancelled, and
        :class:`~etcdsync.errors.ForkedClientError` at once in a child process that
        inherited the watcher through ``fork()``.
        """
        self._stream.check_process()
        if self._end is not None:
            raise self._end
        item = await self._queue.get(check_timeout(timeout, allow_zero=True))
        if self.suspended and self.drained():
            await self._stream.resume(self)
        if item is None:
            self._end = errors.ClientClosedError("the watch was cancelled")
            raise StopAsyncIteration
        if isinstance(item, errors.EtcdError):
            self._end = item
            raise item
        return item

    def __aiter__(self) -> AsyncWatcher:
        return self

    async def __anext__(self) -> WatchResponse:
        return await self.get()

    async def cancel(self) -> None:
        """Stop the watch; iteration ends after the batches already buffered."""
        if not self.finished:
            self.finished = True
            await self._stream.remove(self)
            self._push(None)

    async def __aenter__(self) -> AsyncWatcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cancel()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} key={self.key!r} range_end={self.range_end!r} "
            f"next_revision={self.next_revision} finished={self.finished}>"
        )


WatchCallback = Callable[[WatchResponse | errors.EtcdError], Any]
