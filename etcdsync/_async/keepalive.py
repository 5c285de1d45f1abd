"""Lease keepalive: one LeaseKeepAlive stream per client renews every kept-alive lease.

The manager starts on the first ``keep_alive()`` and runs two loops:

* the *sender* owns the stream: it opens it (again, with jittered backoff, after a
  failure - possibly on another endpoint), sends each lease's renewal when it is due
  (a third of the TTL the server last reported), and declares a lease lost when its
  deadline passes without a confirmed renewal;
* the *reader* reads the answers of one stream, moves each lease's deadline to
  "request sent + TTL" (conservative: the server renewed it no earlier than we
  asked) and hands the result to the lease's listeners.

Each wake-up of the sender costs O(due leases x log n), not O(n): every lease has
one entry in a heap keyed by the next time something may happen to it (its renewal
is due, or its deadline passes) - one pop and one push per renewal.  Entries are
never removed in place: a lease released, lost or rescheduled earlier leaves its
old entry behind, recognised as stale when popped (lazy deletion).

A stream can stall without breaking: a member forwards each renewal to the raft
leader and answers a stream's renewals one after the other, so a renewal forwarded
to a leader cut off from its peers holds the whole stream for etcd's request
timeout (about 6 s), long enough for short leases to lapse, although a fresh
stream renews at once once a new leader is elected; and a member that went silent
(frozen, or its network path dead) keeps its connection up until the channel's
keepalive gives up (30 s by default).  So when a renewal stays unanswered and the
stream answered nothing else for the *stall bound* of that lease (see
:func:`stall_bound`), the sender drops the stream, moves on as after a failed
member (the connection's failover: the next member that is connected; the same
one when it is the only endpoint) and sends the renewal again on a new stream.

Each listener (:class:`AsyncKeepAlive`) buffers only the latest result, so a slow
listener never holds up the manager or the other listeners.  State shared with
user code is guarded by the backend's ``StateLock`` (a thread lock in both
flavours): the critical sections never wait on anything, so in the asyncio flavour
the lock is always free and costs nothing, and in the threaded flavour it is what
keeps user threads and the manager's threads consistent.  Listener callbacks run
under the one callback policy (:mod:`etcdsync._callbacks`), outside the lock.
"""

from __future__ import annotations

import collections
import heapq
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .. import _status, errors
from .. import telemetry as _telemetry
from .._backends._async import BidiStream, Event, Queue, StateLock, Task, spawn, wait_event
from .._callbacks import call_callback
from .._config import check_timeout
from .._methods import LEASE_KEEPALIVE
from ..lease_types import LeaseKeepAliveResult, LeaseLostReason
from .connection import REQUIRE_LEADER, AsyncConnection
from .watch_stream import write_refused

log = logging.getLogger("etcdsync.lease")

KeepAliveCallback = Callable[[LeaseKeepAliveResult | errors.LeaseExpiredError], None]

# Deadline assumed for a lease given by id only, until the server reports its TTL.
_GUESSED_TTL = 5.0
# Renewals due within this window are sent together (fewer wake-ups with many leases).
_COALESCE = 0.05
# An unanswered renewal is repeated after this long at the earliest.
_MIN_RESEND = 0.5
# The sender wakes at least this often even with nothing to do.
_MAX_IDLE = 5.0
# A stream that leaves a renewal unanswered, and answers nothing else, for a sixth of
# the lease's TTL (never less than this) is stalled: see stall_bound().
_STALL_FRACTION = 6.0
_MIN_STALL = 0.5
# Reconnect backoff: the connection's stream backoff (50 ms growing to 1 s, jittered,
# cut short when the member's connection is up again), and never longer than a
# quarter of the time left before the nearest lease deadline.
_BACKOFF_MIN = 0.05
# How long close() waits for the manager's tasks/threads to end.
_JOIN_TIMEOUT = 5.0
# How long a sender whose write failed waits for its reader to tell the call's status.
_STATUS_WAIT = 0.5
# How listener callbacks are named in the callback policy's log lines.
_CALLBACK = "lease keepalive"


# --- the listener handle ------------------------------------------------------------


class AsyncKeepAlive:
    """A listener on one kept-alive lease; returned by ``client.keep_alive(lease)``.

    Iterate it (``async for result in ka``) to receive each renewal as a
    :class:`~etcdsync.LeaseKeepAliveResult`.  Only the latest result is buffered:
    a listener that reads slowly skips renewals instead of slowing anything down.
    When the lease is lost the iteration raises
    :class:`~etcdsync.errors.LeaseExpiredError` (its ``reason`` says why; never
    a silent stop); after :meth:`close` it simply ends.

    ``lost`` is an event set when the lease is gone; ``lost_reason`` and ``error``
    tell why.  Callbacks (:meth:`add_callback`) receive every result and finally
    the error.  Closing the last listener of a lease stops its renewal (the lease
    then expires on the server after its TTL; revoke it to end it at once).
    ``async with`` closes it on exit.
    """

    def __init__(self, manager: AsyncKeepAliveManager, lease_id: int) -> None:
        self.lease_id = lease_id
        self.lost = Event()
        """Set when the lease is gone (expired, revoked, keepalive halted, client closed)."""
        self._manager = manager
        self._mutex = StateLock()
        self._ready = Event()  # set when a result, the loss or close is pending
        self._latest: LeaseKeepAliveResult | None = None
        self._last: LeaseKeepAliveResult | None = None
        self._callbacks: list[KeepAliveCallback] = []
        self._reason: LeaseLostReason | None = None
        self._error: errors.LeaseExpiredError | None = None
        self._closed = False

    # --- state --------------------------------------------------------------------

    @property
    def lost_reason(self) -> LeaseLostReason | None:
        """Why the lease was lost, or None while it is kept alive."""
        return self._reason

    @property
    def error(self) -> errors.LeaseExpiredError | None:
        """The error describing the loss (with ``lease_id`` and ``reason``), or None."""
        return self._error

    @property
    def last_result(self) -> LeaseKeepAliveResult | None:
        """The most recent renewal seen by this listener (read or not)."""
        return self._last

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    # --- receiving ----------------------------------------------------------------

    def add_callback(self, fn: KeepAliveCallback) -> None:
        """Call ``fn(result)`` on every renewal and ``fn(error)`` once when the lease is lost.

        Callbacks run in the manager's background task (in the sync client: its
        reader or sender thread), except for a loss caused by this client - a
        ``revoke()`` or the client's ``close()`` - which is reported in the task or
        thread that made that call, and a callback added after the loss, which is
        called at once.  Keep callbacks short and non-blocking: they delay the
        renewals of every lease of the client.  An exception a callback raises is
        logged with its traceback (logger ``etcdsync.callbacks``) and otherwise
        ignored: the callback still receives the next renewal and the loss.
        """
        with self._mutex:
            error = self._error
            if error is None:
                self._callbacks.append(fn)
        if error is not None:
            call_callback(_CALLBACK, fn, error)

    async def next_result(self, timeout: float | None = None) -> LeaseKeepAliveResult:
        """Wait for the next renewal and return it.

        Raises :class:`~etcdsync.errors.LeaseExpiredError` once the lease is lost,
        :class:`~etcdsync.errors.Timeout` when ``timeout`` seconds pass first (None
        or ``inf``: no limit), :class:`~etcdsync.errors.ClientClosedError` after
        :meth:`close`, and :class:`~etcdsync.errors.ForkedClientError` in a forked
        child.
        """
        self._manager.check_process()
        seconds = check_timeout(timeout, allow_zero=True)
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            with self._mutex:
                if self._error is not None:
                    raise self._fresh_error()
                if self._closed:
                    raise errors.ClientClosedError("this keepalive listener was closed")
                result, self._latest = self._latest, None
                if result is not None:
                    return result
                self._ready.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise errors.Timeout(f"no renewal of lease {self.lease_id:x} within {timeout} s")
            await wait_event(self._ready, remaining)

    async def wait_lost(self, timeout: float | None = None) -> bool:
        """Wait until the lease is lost; True if it was, False if ``timeout`` passed.

        Raises :class:`~etcdsync.errors.ForkedClientError` in a forked child (nothing
        renews the lease there, nor tells its loss).
        """
        self._manager.check_process()
        return await wait_event(self.lost, check_timeout(timeout, allow_zero=True))

    def __aiter__(self) -> AsyncKeepAlive:
        return self

    async def __anext__(self) -> LeaseKeepAliveResult:
        try:
            return await self.next_result()
        except errors.ClientClosedError:
            if self._closed and self._error is None:
                raise StopAsyncIteration from None
            raise

    # --- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening (idempotent).  The last listener to close stops the renewals.

        In a forked child it only marks the listener closed: the renewals are the
        parent's (and a lock held by a thread that did not cross the fork is never
        released there).
        """
        if self._manager.forked:
            self._closed = True
            return
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._callbacks.clear()
            self._ready.set()
        self._manager.release(self)

    async def __aenter__(self) -> AsyncKeepAlive:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"lost ({self._reason})" if self._reason else "closed" if self._closed else "alive"
        return f"<{type(self).__name__} lease={self.lease_id:x} {state}>"

    # --- called by the manager ----------------------------------------------------------

    def _deliver(self, result: LeaseKeepAliveResult) -> None:
        with self._mutex:
            if self._closed or self._error is not None:
                return
            self._latest = self._last = result
            self._ready.set()
            callbacks = list(self._callbacks)
        for fn in callbacks:
            call_callback(_CALLBACK, fn, result)

    def _set_lost(self, reason: LeaseLostReason, detail: str) -> None:
        with self._mutex:
            if self._error is not None or self._closed:
                return
            self._reason = reason
            self._error = _lost_error(self.lease_id, reason, detail)
            self.lost.set()
            self._ready.set()
            callbacks, self._callbacks = self._callbacks, []
            error = self._error
        for fn in callbacks:
            call_callback(_CALLBACK, fn, error)

    def _fresh_error(self) -> errors.LeaseExpiredError:
        # A new instance per raise: re-raising one object would chain its tracebacks.
        assert self._error is not None and self._reason is not None
        return _lost_error(self.lease_id, self._reason, self._error.details or "")


def _lost_error(lease_id: int, reason: LeaseLostReason, detail: str) -> errors.LeaseExpiredError:
    message = f"lease {lease_id:x} is lost: {reason.value}"
    if detail:
        message = f"{message} ({detail})"
    return errors.LeaseExpiredError(
        message, lease_id=lease_id, reason=reason, details=detail or None
    )


# --- the manager --------------------------------------------------------------------


def stall_bound(ttl: float) -> float:
    """How long a keepalive stream may leave a renewal of a lease with this TTL
    unanswered, answering nothing else either, before it counts as stalled.

    A renewal is sent a third of the TTL after the previous one, so two thirds of
    the TTL are left when it goes out.  A sixth of the TTL leaves time for three
    more attempts on fresh streams before the lease's deadline (for a 3 s lease:
    0.5 s each, and a new raft leader is elected within about a second of losing
    the old one).  A healthy member answers a renewal within milliseconds, even
    forwarding it to the leader (one peer round trip; renewals do not go through
    raft), so half a second of silence is never normal; and because any answer on
    the stream counts as progress, a member working through a long queue of
    renewals is not mistaken for a stalled one.  A false alarm costs one new stream.
    """
    return max(ttl / _STALL_FRACTION, _MIN_STALL)


class _Tracked:
    """Renewal state of one kept-alive lease."""

    __slots__ = (
        "confirmed",
        "deadline",
        "lease_id",
        "listeners",
        "next_send",
        "scheduled",
        "sent",
        "ticket",
        "ttl",
    )

    def __init__(self, lease_id: int, ttl: float, now: float) -> None:
        self.lease_id = lease_id
        self.listeners: list[AsyncKeepAlive] = []
        self.ttl = ttl
        self.next_send = now
        self.deadline = now + ttl
        self.confirmed = False  # has the server confirmed a renewal yet?
        self.sent: collections.deque[float] = collections.deque()  # unanswered send times
        # The lease's live heap entry: its wake-up time and ticket (older entries of
        # the lease carry other tickets and are skipped when popped).
        self.scheduled = float("inf")
        self.ticket = -1

    def wake_time(self) -> float:
        """When the sender must look at this lease next: its renewal or its deadline."""
        return min(self.next_send, self.deadline)


class _Link:
    """One opened stream and what its reader learned about it."""

    def __init__(self, stream: BidiStream, endpoint: str, now: float) -> None:
        self.stream = stream
        self.endpoint = endpoint
        self.broken = False
        self.answered = False
        self.stalled = False  # dropped by the sender: renewals went unanswered too long
        self.progress_at = now  # the last answer read, or the opening
        # Send times of the unanswered requests, oldest first: a member answers a
        # stream's requests in order, so the oldest is the one it is stuck on.
        self.pending: collections.deque[float] = collections.deque()
        # The shortest stall bound of the leases renewed on this stream: requests
        # queue behind the stuck one whatever their lease, so the shortest decides.
        self.bound = float("inf")
        self.error: errors.EtcdError | None = None

    def stall_at(self) -> float:
        """When the stream counts as stalled if nothing is answered before (inf: no
        request unanswered)."""
        if not self.pending:
            return float("inf")
        return max(self.pending[0], self.progress_at) + self.bound


class AsyncKeepAliveManager:
    """Keeps a client's leases alive over one LeaseKeepAlive stream (see the module doc)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._mutex = StateLock()
        self._leases: dict[int, _Tracked] = {}
        # (wake-up time, ticket, lease): the sender's agenda (see the module doc).
        self._agenda: list[tuple[float, int, _Tracked]] = []
        self._tickets = 0
        self._wake_at = float("inf")  # when the sender means to wake next
        self._wakeup = Event()  # something changed: the sender should look again
        self._stop = Event()
        self._hooked = False
        self._closed = False
        self._sender: Task | None = None
        self._link: _Link | None = None
        self._last_error: errors.EtcdError | None = None
        # Did the last stream break with its connection (so a reconnect may start as
        # soon as the member's channel is up again)?
        self._connection_lost = False
        self.streams_opened = 0
        """How many LeaseKeepAlive streams this manager opened (1 + reconnections)."""
        self.stalls = 0
        """How many streams were dropped because they left renewals unanswered too long."""
        self.leases_examined = 0
        """How many times the sender looked at a lease's schedule: it looks only at the
        leases due (and at stale agenda entries), never at every lease."""

    @property
    def forked(self) -> bool:
        """True in a child process that inherited this manager through fork()."""
        return self._conn.forked

    def check_process(self) -> None:
        """Raise ForkedClientError in a forked child."""
        self._conn.check_process()

    # --- listeners ------------------------------------------------------------------

    def listen(self, lease_id: int, ttl_hint: float | None) -> AsyncKeepAlive:
        """Add a listener on ``lease_id`` and make sure the lease is being renewed."""
        self._conn.check_usable()
        handle = AsyncKeepAlive(self, lease_id)
        now = time.monotonic()
        with self._mutex:
            if self._closed:
                raise errors.ClientClosedError("the client is closed")
            if not self._hooked:
                self._conn.on_close(self.close)
                self._hooked = True
            if self._sender is None or self._sender.done():
                # First listener (or the sender died of a bug, already reported to the
                # listeners it had): a lease nobody renews must not go unwatched.
                self._sender = spawn(self._run, name="etcdsync-lease-keepalive")
            tracked = self._leases.get(lease_id)
            if tracked is None:
                ttl = ttl_hint if ttl_hint and ttl_hint > 0 else _GUESSED_TTL
                tracked = self._leases[lease_id] = _Tracked(lease_id, ttl, now)
                self._schedule(tracked, now)
            tracked.listeners.append(handle)
        self._wakeup.set()
        return handle

    def release(self, handle: AsyncKeepAlive) -> None:
        """Remove a listener; a lease without listeners is no longer renewed."""
        with self._mutex:
            tracked = self._leases.get(handle.lease_id)
            if tracked is None or handle not in tracked.listeners:
                return
            tracked.listeners.remove(handle)
            if not tracked.listeners:
                del self._leases[handle.lease_id]

    def lease_gone(self, lease_id: int, reason: LeaseLostReason, detail: str = "") -> None:
        """Tell every listener of ``lease_id`` that it is gone (e.g. after ``revoke()``)."""
        with self._mutex:
            tracked = self._leases.pop(lease_id, None)
        if tracked is not None:
            for handle in tracked.listeners:
                handle._set_lost(reason, detail)

    @property
    def lease_ids(self) -> list[int]:
        """The leases currently kept alive."""
        with self._mutex:
            return list(self._leases)

    # --- the sender: owns the stream --------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                link = await self._connect()
                if link is not None:
                    await self._serve(link)
                    if link.answered:
                        attempt = 0  # it worked for a while: start backoff afresh
                    await self._recover(link)
                if self._stop.is_set():
                    break
                await self._pause(self._backoff(attempt))
                attempt += 1
        except Exception:  # a bug here must not leave listeners waiting silently
            log.exception("lease keepalive manager failed")
            self._fail_all(LeaseLostReason.HALTED, "the keepalive manager failed")

    async def _connect(self) -> _Link | None:
        endpoint = self._conn.endpoint
        try:
            # Like Go's lessor: a member cut off from its leader cannot renew anything
            # (it waits for a leader to forward to), and with ``hasleader`` it ends the
            # stream (3 election timeouts after losing its leader), so the manager moves
            # to a member that can renew - instead of waiting for the leases to lapse.
            stream = await self._conn.open_stream(LEASE_KEEPALIVE, extra_metadata=REQUIRE_LEADER)
        except errors.EtcdError as exc:
            self._last_error = exc
            self._connection_lost = _status.lost_connection(exc)
            return None
        now = time.monotonic()
        link = _Link(stream, endpoint, now)
        with self._mutex:
            if self._closed:
                stream.cancel()
                return None
            self._link = link
            self.streams_opened += 1
            for tracked in self._leases.values():
                # Answers to requests on the old stream will never come: renew at once
                # (which also shows at once that the new stream works).
                tracked.sent.clear()
                tracked.next_send = now
                self._schedule(tracked, now)
        return link

    async def _serve(self, link: _Link) -> None:
        reader = spawn(self._read, link, name="etcdsync-lease-reader")
        try:
            while True:
                self._wakeup.clear()
                if self._stop.is_set() or link.broken:
                    return
                due, wake_at = self._plan(time.monotonic(), link)
                if link.stalled:
                    return
                try:
                    for lease_id in due:
                        await link.stream.write(LEASE_KEEPALIVE.request(ID=lease_id))
                except Exception as exc:
                    # The stream is torn down below and reopened; the reader reports the
                    # failed call's status (a refused TLS handshake, say): let it.
                    _write_failed("lease keepalive", exc)
                    await reader.join(_STATUS_WAIT)
                    return
                await wait_event(self._wakeup, max(wake_at - time.monotonic(), 0.0))
        finally:
            link.stream.cancel()
            reader.cancel()
            await reader.join(_JOIN_TIMEOUT)
            with self._mutex:
                if self._link is link:
                    self._link = None

    def _schedule(self, tracked: _Tracked, wake: float) -> None:
        """Make sure the sender looks at ``tracked`` by ``wake`` (under the mutex).

        A lease keeps its live entry when that one comes no later: waking early is
        harmless (the sender looks, finds nothing to do and reschedules), and it
        spares a push per answer.  Pushing an earlier entry leaves the old one stale.
        """
        if wake >= tracked.scheduled:
            return
        self._tickets += 1
        tracked.ticket = self._tickets
        tracked.scheduled = wake
        heapq.heappush(self._agenda, (wake, self._tickets, tracked))
        if wake < self._wake_at:
            self._wake_at = wake
            self._wakeup.set()

    def _plan(self, now: float, link: _Link) -> tuple[list[int], float]:
        """Pick the renewals to send now; expire overdue leases; notice a stalled
        stream (``link.stalled``); say when to wake next.  Looks only at the leases
        whose agenda entry is due."""
        due: list[int] = []
        overdue: list[_Tracked] = []
        # Rescheduled after the loop: a lease whose deadline falls within the
        # coalescing window would otherwise come straight back to it.
        later: list[tuple[_Tracked, float]] = []
        horizon = now + _COALESCE
        agenda = self._agenda
        with self._mutex:
            # The sender is awake: what it reschedules now needs no wake-up signal.
            self._wake_at = float("-inf")
            if now >= link.stall_at():
                # The oldest request is unanswered and the stream answered nothing else
                # meanwhile: drop it (the caller does); _connect renews on the next one.
                link.stalled = True
            while agenda and agenda[0][0] <= horizon and not link.stalled:
                _, ticket, tracked = heapq.heappop(agenda)
                self.leases_examined += 1
                if ticket != tracked.ticket or self._leases.get(tracked.lease_id) is not tracked:
                    continue  # stale: rescheduled earlier, or released / lost meanwhile
                tracked.scheduled = float("inf")
                if tracked.deadline <= now:
                    overdue.append(tracked)
                    del self._leases[tracked.lease_id]
                    continue
                if tracked.next_send <= horizon:
                    due.append(tracked.lease_id)
                    tracked.sent.append(now)
                    tracked.next_send = now + max(tracked.ttl / 3.0, _MIN_RESEND)
                    link.pending.append(now)
                    link.bound = min(link.bound, stall_bound(tracked.ttl))
                # Always later than now: the deadline was not reached, and the next
                # renewal is after the window.
                later.append((tracked, tracked.wake_time()))
            for tracked, wake in later:
                self._schedule(tracked, wake)
            wake_at = agenda[0][0] if agenda else now + _MAX_IDLE
            wake_at = min(wake_at, now + _MAX_IDLE, link.stall_at())
            self._wake_at = wake_at
        if link.stalled:
            self.stalls += 1
            self._last_error = errors.Timeout(
                "the lease keepalive stream left renewals unanswered for too long",
                endpoint=link.endpoint,
            )
            log.info("lease keepalive stream on %s stalled: opening a new one", link.endpoint)
            if _telemetry.active is not None:
                _telemetry.active.keepalive_failed("stall")
        self._report_halted(overdue)
        return due, wake_at

    def _report_halted(self, overdue: list[_Tracked]) -> None:
        if not overdue:
            return
        if _telemetry.active is not None:
            _telemetry.active.keepalive_failed("halted", len(overdue))
        cause = f"; last error: {self._last_error}" if self._last_error else ""
        for tracked in overdue:
            detail = (
                f"no renewal confirmed within its TTL of {tracked.ttl:g} s{cause}"
                if tracked.confirmed
                else f"the server did not answer its first renewal in time{cause}"
            )
            for handle in tracked.listeners:
                handle._set_lost(LeaseLostReason.HALTED, detail)

    async def _recover(self, link: _Link) -> None:
        """After a broken stream: remember why, move endpoint, refresh a stale token."""
        if link.stalled:
            # Whether the member is silent or waits on a lost leader, another member
            # can renew now: a fresh stream there does not wait behind the stuck one.
            self._connection_lost = False
            self._conn.failover(link.endpoint)
            return
        error = link.error
        if error is None:
            error = errors.Unavailable(
                "the server ended the lease keepalive stream", endpoint=link.endpoint
            )
        self._last_error = error
        self._connection_lost = _status.lost_connection(error)
        if self._conn.tls_refused_everywhere(error):
            # No member accepts this client's certificates: no renewal can get through.
            # Say so now rather than when the leases run out.
            self._fail_all(LeaseLostReason.HALTED, f"no renewal possible: {error}")
        if self._stop.is_set():
            return
        if isinstance(error, errors.InvalidAuthTokenError):
            try:
                await self._conn.authenticate(stale_token=self._conn.token)
            except errors.EtcdError as exc:
                self._last_error = exc
        elif isinstance(error, errors.ConnectionError_):
            self._conn.failover(link.endpoint)

    def _backoff(self, attempt: int) -> float:
        delay = self._conn.stream_backoff(attempt)
        with self._mutex:
            nearest = min((t.deadline for t in self._leases.values()), default=None)
        if nearest is not None:
            # Near a deadline, try more often rather than let a healthy lease lapse.
            delay = min(delay, max((nearest - time.monotonic()) / 4.0, _BACKOFF_MIN))
        return delay

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds before reconnecting, expiring leases whose deadline
        passes; end early once the member's connection is up again."""
        until = time.monotonic() + delay
        connection_lost = self._connection_lost
        while True:
            self._wakeup.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            overdue: list[_Tracked] = []
            wake_at = until
            with self._mutex:
                for tracked in list(self._leases.values()):
                    if tracked.deadline <= now:
                        overdue.append(tracked)
                        del self._leases[tracked.lease_id]
                    else:
                        wake_at = min(wake_at, tracked.deadline)
            self._report_halted(overdue)
            if now >= until:
                return
            if await self._conn.pause_before_reconnect(
                max(wake_at - now, 0.0), self._wakeup, connection_lost=connection_lost
            ):
                return  # connected again: reconnect now
            connection_lost = connection_lost or not self._conn.endpoint_ready()

    # --- the reader: answers of one stream ---------------------------------------------------

    async def _read(self, link: _Link) -> None:
        try:
            while True:
                message = await link.stream.read()
                if message is None:
                    return
                if not link.answered:
                    link.answered = True
                    self._last_error = None  # the server answers again: old causes are moot
                self._on_answer(link, message.ID, message.TTL)
        except Exception as exc:
            if not _status.is_rpc_error(exc):
                log.exception("lease keepalive reader failed")
            link.error = self._conn.translate(exc, link.endpoint)
        finally:
            link.broken = True
            self._wakeup.set()

    def _on_answer(self, link: _Link, lease_id: int, ttl: int) -> None:
        now = time.monotonic()
        with self._mutex:
            link.progress_at = now
            if link.pending:
                link.pending.popleft()
            tracked = self._leases.get(lease_id)
            if tracked is None:
                return  # released or lost meanwhile
            sent_at = tracked.sent.popleft() if tracked.sent else now
            if ttl <= 0:
                del self._leases[lease_id]
                # Our deadline is conservative (the server renewed no earlier than we
                # asked), so a lease gone before it cannot have expired: it was revoked.
                revoked = tracked.confirmed and now < tracked.deadline
            else:
                tracked.ttl = float(ttl)
                tracked.confirmed = True
                tracked.deadline = sent_at + ttl
                tracked.next_send = sent_at + ttl / 3.0
                # Usually the time of the entry the lease has (the resend planned when
                # the request went out, a third of the TTL later): nothing is pushed.
                self._schedule(tracked, tracked.wake_time())
            listeners = list(tracked.listeners)
        if ttl <= 0:
            if revoked:
                reason, detail = LeaseLostReason.REVOKED, "the server no longer has it"
            else:
                reason, detail = LeaseLostReason.EXPIRED, "the server no longer has it"
            for handle in listeners:
                handle._set_lost(reason, detail)
            return
        result = LeaseKeepAliveResult(lease_id, ttl)
        for handle in listeners:
            handle._deliver(result)

    # --- shutdown --------------------------------------------------------------------------

    def _fail_all(self, reason: LeaseLostReason, detail: str) -> None:
        with self._mutex:
            tracked_all = list(self._leases.values())
            self._leases.clear()
            self._agenda.clear()
        for tracked in tracked_all:
            for handle in tracked.listeners:
                handle._set_lost(reason, detail)

    async def close(self) -> None:
        """Stop the stream and the manager's tasks; listeners learn "client closed"."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            link = self._link
        self._stop.set()
        self._wakeup.set()
        if link is not None:
            link.stream.cancel()
        # Stop, wake-up and the cancelled stream end the sender and its reader on their
        # own; cancelling the sender (possible only in the asyncio flavour) is the last
        # resort, as it could interrupt its wait for the reader.
        if self._sender is not None and not await self._sender.join(_JOIN_TIMEOUT):
            self._sender.cancel()
            if not await self._sender.join(1.0):
                log.warning("the lease keepalive manager did not stop within %s s", _JOIN_TIMEOUT)
        self._fail_all(LeaseLostReason.CLIENT_CLOSED, "")


def _write_failed(what: str, exc: Exception) -> None:
    if write_refused(exc):
        log.debug("%s stream refused a request (%r)", what, exc)
    else:
        log.warning("unexpected error writing to the %s stream", what, exc_info=True)


# --- one renewal on its own stream --------------------------------------------------------


async def renew_once(
    conn: AsyncConnection, lease_id: int, timeout: float | None
) -> LeaseKeepAliveResult:
    """Renew ``lease_id`` once over a short-lived stream of its own.

    Raises :class:`~etcdsync.errors.LeaseNotFoundError` when the lease is gone and
    :class:`~etcdsync.errors.Timeout` when no answer comes within the deadline.
    """
    effective = conn.effective_timeout(timeout)
    stream = await conn.open_stream(LEASE_KEEPALIVE)
    answers: Queue[Any] = Queue()
    reader = spawn(_read_one, stream, answers, name="etcdsync-lease-renew-once")
    try:
        try:
            await stream.write(LEASE_KEEPALIVE.request(ID=lease_id))
        except Exception as exc:
            # The reader reports the failed call's status (or we time out below).
            _write_failed("lease renewal", exc)
        try:
            answer = await answers.get(effective)
        except TimeoutError:
            raise errors.Timeout(
                f"no answer to the renewal of lease {lease_id:x} within {effective} s",
                endpoint=conn.endpoint,
            ) from None
    finally:
        stream.cancel()
        reader.cancel()
        await reader.join(_JOIN_TIMEOUT)
    if isinstance(answer, BaseException):
        raise conn.translate(answer)
    if answer is None:
        raise errors.Unavailable(
            "the server ended the lease keepalive stream without answering",
            endpoint=conn.endpoint,
        )
    ttl: int = answer.TTL
    if ttl <= 0:
        raise errors.LeaseNotFoundError(f"lease {lease_id:x} not found", lease_id=lease_id)
    return LeaseKeepAliveResult(lease_id, ttl)


async def _read_one(stream: BidiStream, answers: Queue[Any]) -> None:
    try:
        answers.put(await stream.read())
    except Exception as exc:
        answers.put(exc)
