"""One gRPC Watch stream carrying many watchers, re-established after breaks.

Each watcher gets a client-chosen watch id on this stream (etcd >= 3.4 accepts
them), so creates can be pipelined and each incarnation of a watcher - after a
reconnect or a slow-consumer suspension - gets a fresh id: responses for an old
id are recognised as stale and dropped.

When the stream breaks (member restart, leader loss, network), the reader moves
to the next endpoint if the member was unavailable, waits a jittered, growing
backoff - cut short as soon as the member's connection is up again (the
connection's reconnect policy) - opens a new stream and re-creates every active
watcher from its ``next_revision``.  Created responses are matched to creates in
order, because etcd answers a stream's creates in the order it received them.

etcd checks the stream's auth token at each create: once it has expired (or the
member restarted and forgot it), creates are refused with "permission denied".
Such a refusal makes the stream log in again and reopen, once per watcher; a
second refusal is the watcher's final answer.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from .. import _status, errors
from .. import telemetry as _telemetry
from .._backends import StreamEnded
from .._backends._async import BidiStream, Cancelled, Event, Lock, Task, spawn, wait_event
from .._config import check_timeout
from .._methods import WATCH
from .._pb import rpc_pb2 as rpc
from .connection import REQUIRE_LEADER, AsyncConnection
from .watcher import AsyncWatcher

log = logging.getLogger("etcdsync.watch")

# etcd's id for a progress notice that concerns every watcher of the stream.
_BROADCAST_ID = -1


class AsyncWatchStream:
    """The shared stream of one client for one kind of context (require_leader or not)."""

    def __init__(self, conn: AsyncConnection, *, require_leader: bool) -> None:
        self._conn = conn
        self._metadata = REQUIRE_LEADER if require_leader else ()
        self._lock = Lock()
        self._by_id: dict[int, AsyncWatcher] = {}
        self._watchers: set[AsyncWatcher] = set()
        self._pending: deque[tuple[int, AsyncWatcher]] = deque()
        self._next_id = 1
        self._stream: BidiStream | None = None
        # The member the current stream went to: a broken stream must move the client
        # away from *that* member, not from wherever another stream has moved it since.
        self._stream_endpoint = ""
        # The auth token the current stream was opened with, and the one a refused
        # create proved stale (the reader then logs in again and reopens).
        self._stream_token: str | None = None
        self._stale_token: str | None = None
        self._reader: Task | None = None
        self._stop = Event()
        self._closed = False
        # Why the stream last broke, until it delivers again: a create that is never
        # confirmed says so in its Timeout.
        self._failure: errors.EtcdError | None = None
        self.reconnects = 0
        """How many times the stream was re-established (for tests and metrics)."""

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    async def _ensure_started(self) -> None:
        if self._stream is None:
            await self._open()
            self._reader = spawn(self._read_loop, name="etcdsync-watch-reader")

    async def _open(self) -> None:
        """Open a new stream on the current endpoint, remembering which one it is."""
        self._stream_endpoint = self._conn.endpoint
        self._stream = await self._conn.open_stream(WATCH, extra_metadata=self._metadata)
        self._stream_token = self._conn.token

    def check_process(self) -> None:
        """Raise ForkedClientError in a child process that inherited this stream."""
        self._conn.check_process()

    # --- watcher management ---------------------------------------------------------------

    async def add(self, watcher: AsyncWatcher, timeout: float | None) -> None:
        """Create ``watcher`` on the server and wait for the server to confirm it
        (``timeout``: None or ``inf`` wait as long as it takes)."""
        timeout = check_timeout(timeout)
        self._conn.check_process()
        async with self._lock:
            self._conn.check_usable()
            await self._ensure_started()
            self._watchers.add(watcher)
            await self._create(watcher)
        if not await wait_event(watcher.created, timeout):
            await self.remove(watcher)
            failure = self._failure
            why = f"; the watch stream is failing: {failure}" if failure is not None else ""
            raise errors.Timeout(
                f"watch on {watcher.key!r} was not confirmed within {timeout} s{why}"
            ) from failure
        if watcher.create_error is not None:
            async with self._lock:
                self._watchers.discard(watcher)
            raise watcher.create_error

    async def _create(self, watcher: AsyncWatcher) -> None:
        """Send a create for a new incarnation of ``watcher`` (caller holds the lock)."""
        watch_id = self._next_id
        self._next_id += 1
        watcher.watch_id = watch_id
        self._by_id[watch_id] = watcher
        self._pending.append((watch_id, watcher))
        await self._send(watcher.create_request(watch_id))

    async def remove(self, watcher: AsyncWatcher) -> None:
        """Cancel ``watcher`` on the server; later responses for it are dropped.

        In a forked child it is only forgotten: the stream is the parent's.
        """
        if self._conn.forked:
            self._watchers.discard(watcher)
            return
        async with self._lock:
            self._watchers.discard(watcher)
            await self._cancel_on_server(watcher)

    async def _cancel_on_server(self, watcher: AsyncWatcher) -> None:
        watch_id, watcher.watch_id = watcher.watch_id, 0
        if self._by_id.pop(watch_id, None) is not None:
            await self._send(
                rpc.WatchRequest(cancel_request=rpc.WatchCancelRequest(watch_id=watch_id))
            )

    async def resume(self, watcher: AsyncWatcher) -> None:
        """Re-create a watcher suspended for a slow consumer, from its next revision."""
        async with self._lock:
            if watcher.suspended and not watcher.finished and not self._closed:
                watcher.suspended = False
                await self._create(watcher)

    async def request_progress(self) -> None:
        """Ask the server for a progress notice on this stream (etcd >= 3.4)."""
        async with self._lock:
            await self._ensure_started()
            await self._send(rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()))

    async def _send(self, request: rpc.WatchRequest) -> None:
        stream = self._stream
        if stream is None:
            return  # never opened: _ensure_started() opens it before the first create
        try:
            await stream.write(request)
        except Exception as exc:
            if self._closed:
                return  # close() cancelled the stream under us: nothing to resend
            # Nothing is lost: the reader sees the stream end and reconnects, which
            # re-creates every active watcher from its next revision (a cancel is moot
            # on a new stream; a progress request is best effort).
            if write_refused(exc):
                log.debug("watch stream refused a request (%r); reconnecting", exc)
            else:
                log.warning(
                    "unexpected error writing to the watch stream; reconnecting", exc_info=True
                )
            # Make sure the reader does see an end, even if the stream looked healthy.
            stream.cancel()

    # --- the reader --------------------------------------------------------------------

    async def _read_loop(self) -> None:
        attempt = 0  # failed tries in a row: the backoff grows with it
        while not self._closed:
            stream = self._stream
            assert stream is not None
            failure: BaseException | None = None
            try:
                while True:
                    response = await stream.read()
                    if response is None:
                        break  # the server ended the stream: reconnect
                    attempt = 0
                    if self._failure is not None:
                        self._failure = None
                        self._conn.note_served(self._stream_endpoint)
                    await self._dispatch(response)
                    if self._stale_token is not None:
                        break  # a create was refused for an expired token: reopen
            except Cancelled:
                # grpc.aio raises this from a call cancelled under the reader (a
                # failed write cancels it); close() cancels the reader itself.
                if self._closed:
                    raise
                failure = None
            except Exception as exc:
                if not _status.is_rpc_error(exc):  # a bug, not a broken stream: say so
                    log.exception("watch stream reader failed; reconnecting")
                failure = exc
            if self._closed:
                return
            stream.cancel()
            await self._reconnect(failure, attempt)
            attempt += 1

    async def _reconnect(self, failure: BaseException | None, attempt: int) -> None:
        endpoint = self._stream_endpoint
        failed_at = time.monotonic()
        stale, self._stale_token = self._stale_token, None
        if stale is None and failure is not None and _status.is_auth_token_error(failure):
            stale = self._conn.token
        if stale is not None:
            # The member is fine; the token is not: log in again and reopen at once.
            try:
                await self._conn.authenticate(stale_token=stale)
            except errors.EtcdError as exc:
                # Unreachable or refused: the next stream fails and we come back.
                log.debug("watch stream re-authentication failed: %s", exc)
        else:
            error = None if failure is None else self._conn.translate(failure, endpoint)
            self._failure = error
            if error is not None and self._conn.tls_refused_everywhere(error):
                # Every member refused the handshake: the watchers end with a typed
                # error instead of waiting (forever without a timeout) for a fix.
                async with self._lock:
                    self._fail_all(error)
            if error is None or isinstance(error, errors.ConnectionError_):
                self._conn.failover(endpoint)
            await self._conn.pause_before_reconnect(
                self._conn.stream_backoff(attempt),
                self._stop,
                connection_lost=error is not None and _status.lost_connection(error),
            )
            if self._stop.is_set():
                return
        async with self._lock:
            if self._closed:
                return
            try:
                await self._open()
            except errors.EtcdError as exc:  # closed or forked: tell every watcher
                self._fail_all(exc)
                return
            self.reconnects += 1
            if _telemetry.active is not None:
                _telemetry.active.watch_reconnected(time.monotonic() - failed_at)
            self._by_id.clear()
            self._pending.clear()
            for watcher in list(self._watchers):
                if watcher.active:
                    await self._create(watcher)

    async def _dispatch(self, response: rpc.WatchResponse) -> None:
        revision = response.header.revision
        self._conn.observe_revision(revision)  # the ordering guard's floor
        if response.created:
            await self._on_created(response)
            return
        watcher = self._by_id.get(response.watch_id)
        if response.canceled:
            if watcher is not None:
                self._by_id.pop(response.watch_id, None)
                if watcher.watch_id == response.watch_id:
                    watcher.on_canceled(response.compact_revision, response.cancel_reason)
            return
        if response.events or response.fragment:
            if watcher is not None and not watcher.on_events(
                revision, list(response.events), response.fragment
            ):
                await self._suspend(watcher)
            return
        # No events: a progress notice, for one watcher or (id -1) for all.
        if response.watch_id == _BROADCAST_ID:
            for each in list(self._by_id.values()):
                each.on_progress(revision)
        elif watcher is not None:
            watcher.on_progress(revision)

    async def _on_created(self, response: rpc.WatchResponse) -> None:
        if not self._pending:
            return
        watch_id, watcher = self._pending.popleft()
        if watcher.watch_id != watch_id:
            return  # cancelled or superseded meanwhile
        if response.canceled:
            self._by_id.pop(watch_id, None)
            reason = response.cancel_reason or "refused by the server"
            error = _status.translate_reason(reason)
            if self._conn.has_auth and _status.is_auth_refusal(error) and not watcher.auth_retried:
                # Probably the token this stream was opened with expired: the reader
                # logs in again and reopens, creating the watcher anew (once).
                watcher.auth_retried = True
                self._stale_token = self._stream_token or ""
                return
            self._watchers.discard(watcher)
            if response.compact_revision > 0:
                watcher.on_canceled(response.compact_revision, reason)
            else:
                watcher.fail(error)
            return
        watcher.on_created(response.header.revision)

    async def _suspend(self, watcher: AsyncWatcher) -> None:
        async with self._lock:
            if watcher.active:
                watcher.suspended = True
                await self._cancel_on_server(watcher)
                # The consumer may have drained the buffer before the flag was set;
                # it would then wait on an empty buffer forever: resume right away.
                if watcher.drained():
                    watcher.suspended = False
                    await self._create(watcher)

    def _fail_all(self, error: errors.EtcdError) -> None:
        for watcher in list(self._watchers):
            watcher.fail(error)
        self._watchers.clear()
        self._by_id.clear()

    # --- lifecycle ---------------------------------------------------------------------

    async def close(self) -> None:
        """End the stream and its reader; every watcher's next read raises ClientClosedError."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._conn.forked:
            return  # nothing of the parent's stream or reader is ours to stop
        if self._stream is not None:
            self._stream.cancel()
        if self._reader is not None:
            self._reader.cancel()
            await self._reader.join(5.0)
        # Watchers outlive their client: let them not hold its gRPC call (grpc.aio keeps
        # its poller on the first event loop while any of its channels lives).
        self._stream = None
        self._fail_all(errors.ClientClosedError("the client was closed"))


def write_refused(exc: Exception) -> bool:
    """True for what a write to a broken or ended gRPC stream raises.

    A call that failed raises its status (an ``RpcError``; its reader gets the same
    one); a write to a call that has already ended raises the backends'
    :class:`~etcdsync._backends.StreamEnded`.
    """
    return _status.is_rpc_error(exc) or isinstance(exc, StreamEnded)
