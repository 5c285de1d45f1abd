"""Session: one lease kept alive, the liveness every recipe key is bound to.

Keys written through a session carry its lease, so they vanish when the owner
stops renewing - crashed, frozen or partitioned - within the TTL.  ``done`` is
set when the lease is lost (expired, revoked, keepalive halted, client closed,
or a request proved it gone) or the session is closed: a holder of a lock or
leadership must then assume it lost it, and every waiter of the session stops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ... import errors
from ... import telemetry as _telemetry
from ..._backends._async import Event, Lock, StateLock, acquire_lock, sleep, spawn, wait_event
from ..._callbacks import call_callback
from ..._deadline import Deadline
from ..._logfields import fields, loss_level
from ...lease_types import Lease, LeaseLike, LeaseLostReason, lease_id_of
from ..protocol import AsyncKVClient
from .claims import AsyncClaims

__all__ = ["DEFAULT_SESSION_TTL", "AsyncSession", "AsyncSessionPool", "ended_error", "is_final"]

DEFAULT_SESSION_TTL = 60

log = logging.getLogger("etcdsync.recipes")

SessionCallback = Callable[[errors.EtcdError], Any]

# The background revoke of a lease whose revoke request failed: each attempt's
# timeout, and the pause between attempts (doubling up to the maximum).
_REVOKE_ATTEMPT_TIMEOUT = 5.0
_REVOKE_FIRST_DELAY = 0.2
_REVOKE_MAX_DELAY = 2.0
# How long the client's close() waits for the revoke of each shared session.
_CLOSE_REVOKE_TIMEOUT = 2.0


def ended_error(lease_id: int, error: errors.EtcdError | None) -> errors.EtcdError:
    """What a recipe raises because the session of lease ``lease_id`` ended with ``error``.

    A lost lease (expired, revoked, renewals halted, orphaned) becomes a
    :class:`~etcdsync.errors.SessionExpiredError` carrying its ``lease_id`` and
    ``reason``; a closed session or client keeps its
    :class:`~etcdsync.errors.ClientClosedError`.
    """
    if isinstance(error, errors.SessionExpiredError):
        return error
    if isinstance(error, errors.LeaseExpiredError) or error is None:
        reason = getattr(error, "reason", None)
        detail = error.message if error is not None else "the session ended"
        new = errors.SessionExpiredError(
            f"session {lease_id:x} ended: {detail}",
            lease_id=lease_id,
            reason=None if reason is None else str(reason),
        )
        new.__cause__ = error
        return new
    return error


class AsyncSession:
    """A lease kept alive for recipes; create with ``await client.session(ttl=...)``.

    One session serves any number of locks and elections.  Closing it revokes the
    lease (deleting every key bound to it) unless :meth:`orphan` was called.
    """

    def __init__(self, client: AsyncKVClient, lease: Lease) -> None:
        self.client = client
        self.lease = lease
        self.done = Event()
        """Set when the lease is lost or the session is closed."""
        self._error: errors.EtcdError | None = None
        self._callbacks: list[SessionCallback] = []
        # Guards _error/_callbacks against the keepalive thread of the sync flavour;
        # never held across an await or a callback, so it is free in the async one.
        self._state_lock = StateLock()
        self._keepalive = client.keep_alive(lease)
        self._keepalive.add_callback(self._on_keepalive)
        self._closed = False
        self.claims = AsyncClaims()
        """In-process exclusion of the holders that share this session and would
        write the same key (see :mod:`.claims`); closed when the session ends."""

    @classmethod
    async def create(
        cls,
        client: AsyncKVClient,
        *,
        ttl: int = DEFAULT_SESSION_TTL,
        lease: LeaseLike | None = None,
        timeout: float | None = None,
    ) -> AsyncSession:
        """Grant a lease of ``ttl`` seconds (or adopt ``lease``) and keep it alive.

        ``timeout`` bounds the request (default: the client's).  A grant whose
        caller stops waiting (cancelled, interrupted) is revoked in the
        background once it completes: no lease is left behind.
        """
        if lease is None:
            if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
                raise errors.InvalidRequest(f"ttl must be a positive int, got {ttl!r}")
            granted = await _Grant(client, ttl, Deadline(timeout).rpc_timeout()).result()
        else:
            lease_id = lease_id_of(lease)
            remaining = await client.time_to_live(lease_id, timeout=Deadline(timeout).rpc_timeout())
            if remaining.ttl <= 0:
                raise errors.LeaseNotFoundError(f"lease {lease_id:x} is gone", lease_id=lease_id)
            granted = Lease(lease_id, remaining.granted_ttl)
        return cls(client, granted)

    @property
    def lease_id(self) -> int:
        return self.lease.id

    @property
    def ttl(self) -> int:
        return self.lease.ttl

    @property
    def error(self) -> errors.EtcdError | None:
        """Why the session ended (a LeaseExpiredError or ClientClosedError), or None."""
        return self._error

    @property
    def is_done(self) -> bool:
        return self.done.is_set()

    def check(self) -> None:
        """Raise the session's error if it has ended."""
        if self._error is not None:
            raise self._error

    def waiter_error(self) -> errors.EtcdError:
        """What a waiter of this ended session raises: a
        :class:`~etcdsync.errors.SessionExpiredError`, or the
        :class:`~etcdsync.errors.ClientClosedError` of a closed session or client."""
        return ended_error(self.lease_id, self._error)

    def lease_gone(self, cause: errors.EtcdError | None = None) -> errors.EtcdError:
        """A request proved the lease gone (a put or txn with it answered "lease not
        found", a time-to-live found none): end the session now and return the
        error to raise (:meth:`waiter_error`).

        Renewals stop, :attr:`done` is set, waiters stop and holders are told, and
        the client's shared session pool hands out a fresh session next time.
        """
        self._keepalive.close()
        error = errors.SessionExpiredError(
            f"session {self.lease_id:x} ended: the server has no such lease "
            "(it expired, or was revoked elsewhere)",
            lease_id=self.lease_id,
            reason=str(LeaseLostReason.EXPIRED),
        )
        error.__cause__ = cause
        self._end(error)
        return self.waiter_error()

    def _on_keepalive(self, item: object) -> None:
        if isinstance(item, errors.EtcdError):
            self._end(item)

    def _end(self, error: errors.EtcdError) -> None:
        with self._state_lock:
            if self._error is not None:
                return
            self._error = error
            callbacks, self._callbacks = self._callbacks, []
        if _telemetry.active is not None:
            _telemetry.active.session_ended(error)
        self.done.set()
        self.claims.close(self.waiter_error())
        for fn in callbacks:
            call_callback("session-done", fn, error)

    def add_done_callback(self, fn: SessionCallback) -> None:
        """Call ``fn(error)`` once when the session ends (at once if it has).

        The callback runs in the keepalive manager's task (in the sync client, its
        thread), or in the caller's when the session has already ended: keep it short.
        An exception it raises is logged under the ``etcdsync.callbacks`` logger.
        """
        with self._state_lock:
            error = self._error
            if error is None:
                self._callbacks.append(fn)
        if error is not None:
            call_callback("session-done", fn, error)

    def remove_done_callback(self, fn: SessionCallback) -> None:
        """Forget ``fn`` (added by :meth:`add_done_callback`); nothing if it is not there.

        Recipes register a callback per acquire and remove it on release, so a
        long-lived session does not accumulate them.
        """
        with self._state_lock:
            if fn in self._callbacks:
                self._callbacks.remove(fn)

    async def wait_done(self, timeout: float | None = None) -> bool:
        """Wait until the session ends; True if it did within ``timeout``."""
        return await wait_event(self.done, Deadline(timeout).remaining())

    def orphan(self) -> None:
        """Stop renewing without revoking: the lease (and its keys) expire after the TTL."""
        self._keepalive.close()
        self._end(errors.LeaseExpiredError("the session was orphaned", lease_id=self.lease_id))

    def _stop(self) -> bool:
        """End the session locally (waiters stop at once); True if the lease may
        still live on the server and should be revoked."""
        if self._closed:
            return False
        self._closed = True
        was_alive = self._error is None
        self._keepalive.close()
        self._end(errors.ClientClosedError("the session was closed"))
        return was_alive and not self.client.closed

    async def close(self, *, timeout: float | None = None) -> None:
        """Stop renewing and revoke the lease, deleting every key bound to it.

        Waiters of the session stop at once (``ClientClosedError``).  The revoke is
        bounded by ``timeout`` (default: the client's request timeout); when it
        fails it is retried in the background until it succeeds or the lease has
        expired by itself (no renewal keeps it any longer), and the error is
        raised; a refusal (permission denied: a revoke needs write access to the
        lease's keys) is raised and not retried - the lease expires after its TTL.
        Idempotent; no request when the lease is already gone.
        """
        if self._stop():
            await self._revoke(timeout)

    def close_in_background(self) -> None:
        """End the session now (waiters stop at once) and revoke its lease from a
        task (thread) of its own: for a caller that must not wait (cancelled)."""
        if self._stop():
            revoke_in_background(self.client, self.lease_id, self.ttl)

    async def _revoke(self, timeout: float | None, *, retry: bool = True) -> None:
        try:
            await self.client.revoke(self.lease_id, timeout=Deadline(timeout).rpc_timeout())
        except (errors.LeaseNotFoundError, errors.ClientClosedError):
            pass  # already gone, or the closing client revokes its sessions itself
        except BaseException as exc:
            if retry and not is_final(exc):  # a refusal would be refused again
                revoke_in_background(self.client, self.lease_id, self.ttl)
            if isinstance(exc, errors.EtcdError):
                raise

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "done" if self.is_done else "alive"
        return f"<{type(self).__name__} lease={self.lease_id:x} ttl={self.ttl} {state}>"


class _Grant:
    """One lease grant, run in a task (thread) of its own so that a caller who stops
    waiting - cancelled, interrupted - never leaks its lease: the grant then
    completes unobserved and is revoked in the background."""

    def __init__(self, client: AsyncKVClient, ttl: int, timeout: float | None) -> None:
        self._client = client
        self._lock = StateLock()
        self._lease: Lease | None = None
        self._error: BaseException | None = None
        self._abandoned = False
        self._done = Event()
        spawn(self._run, ttl, timeout, name="etcdsync-session-grant")

    async def _run(self, ttl: int, timeout: float | None) -> None:
        lease: Lease | None = None
        try:
            lease = await self._client.grant(ttl, timeout=timeout)
        except BaseException as exc:  # handed to the caller; cancelled: the loop is ending
            self._error = exc
        finally:
            with self._lock:
                abandoned = self._abandoned
                if not abandoned:
                    self._lease = lease
            self._done.set()
            if abandoned and lease is not None:
                revoke_in_background(self._client, lease.id, lease.ttl)

    async def result(self) -> Lease:
        """The granted lease; the grant's error; revoke-on-completion if interrupted."""
        try:
            await wait_event(self._done, None)
        except BaseException:
            with self._lock:
                self._abandoned = True
                lease, self._lease = self._lease, None
            if lease is not None:
                revoke_in_background(self._client, lease.id, lease.ttl)
            raise
        if self._lease is None:
            error = self._error
            if not isinstance(error, Exception):
                raise errors.ClientClosedError("the lease grant was cancelled")
            raise error
        return self._lease


def is_final(exc: BaseException) -> bool:
    """True for an error the server gives again whatever the retry: a refusal of
    the request itself (permission denied, authentication failed, an invalid
    request), unlike a timeout, an unreachable member or a stale token (which
    the connection refreshes).  Such a request is never retried in the background."""
    if isinstance(exc, errors.InvalidAuthTokenError):
        return False
    return isinstance(exc, (errors.AuthError, errors.ClientError, errors.UnsupportedError))


def revoke_in_background(client: AsyncKVClient, lease_id: int, ttl: int) -> None:
    """Revoke ``lease_id`` from a task (thread) of its own, retrying until it is
    gone, the client is closed, or the lease must have expired by itself."""
    spawn(_revoke_later, client, lease_id, ttl, name="etcdsync-session-revoke")


async def _revoke_later(client: AsyncKVClient, lease_id: int, ttl: int) -> None:
    expires = time.monotonic() + ttl + 1.0  # no renewal keeps it beyond its TTL
    delay = _REVOKE_FIRST_DELAY
    while not client.closed and time.monotonic() < expires:
        try:
            await client.revoke(lease_id, timeout=_REVOKE_ATTEMPT_TIMEOUT)
            return
        except (errors.LeaseNotFoundError, errors.ClientClosedError):
            return
        except errors.EtcdError as exc:
            if is_final(exc):
                log.warning("revoking lease %x was refused (%s); it expires after its TTL",
                            lease_id, exc)  # fmt: skip
                return
            log.debug("revoking lease %x failed (%r); retrying", lease_id, exc)
        await sleep(delay)
        delay = min(delay * 2, _REVOKE_MAX_DELAY)


class AsyncSessionPool:
    """The shared sessions of one client: one per TTL, created on first use and
    replaced once lost.

    Recipes created without ``session=`` take theirs from here, so one lease serves
    every acquire and campaign of a client (and of its namespaces).  A session is
    lost when its keepalive says so or when a recipe's request proved its lease
    gone (:meth:`AsyncSession.lease_gone`); the next :meth:`get` grants a new one.
    The pool is closed - every session ended, then revoked - when the client
    closes, before its connection goes.
    """

    def __init__(self, client: AsyncKVClient) -> None:
        self._client = client
        self._sessions: dict[int, AsyncSession] = {}
        self._lock = Lock()

    async def get(
        self, ttl: int = DEFAULT_SESSION_TTL, *, timeout: float | None = None
    ) -> AsyncSession:
        """The live shared session for ``ttl``, granting a new one when needed.

        ``timeout`` bounds the wait for another caller's grant and the grant
        itself (:class:`~etcdsync.errors.Timeout`).
        """
        deadline = Deadline(timeout)
        session = self._sessions.get(ttl)
        if session is not None and not session.is_done:
            return session
        if not await acquire_lock(self._lock, deadline.remaining()):
            raise errors.Timeout(f"no shared session (ttl {ttl}) within {timeout} s")
        try:
            session = self._sessions.get(ttl)
            if session is None or session.is_done:
                session = await AsyncSession.create(
                    self._client, ttl=ttl, timeout=deadline.rpc_timeout()
                )
                self._sessions[ttl] = session
            return session
        finally:
            self._lock.release()

    async def close(self) -> None:
        """End every shared session (their waiters stop at once), then revoke
        them (their keys go with their leases), each within
        :data:`_CLOSE_REVOKE_TIMEOUT` seconds: a lease whose revoke fails expires
        after its TTL (nothing renews it any more)."""
        sessions, self._sessions = list(self._sessions.values()), {}
        alive = [session for session in sessions if session._stop()]
        for session in alive:
            try:
                await session._revoke(_CLOSE_REVOKE_TIMEOUT, retry=False)
            except errors.EtcdError as exc:
                # The lease outlives us until its TTL (its keys with it): a WARNING,
                # unless the revoke failed only because the client was closed first.
                log.log(
                    loss_level(exc),
                    "revoking the shared session %x failed: %s",
                    session.lease_id,
                    exc,
                    extra=fields("session", lease_id=session.lease_id, event="revoke-failed"),
                )
