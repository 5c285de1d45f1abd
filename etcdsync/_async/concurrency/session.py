"""Session: one lease kept alive, the liveness every recipe key is bound to.

Keys written through a session carry its lease, so they vanish when the owner
stops renewing - crashed, frozen or partitioned - within the TTL.  ``done`` is
set when the lease is lost (expired, revoked, keepalive halted, client closed) or
the session is closed: a holder of a lock or leadership must then assume it lost
it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from ... import errors
from ..._backends._async import Event, Lock, StateLock, wait_event
from ..._callbacks import call_callback
from ...lease_types import Lease, LeaseLike, lease_id_of
from ..protocol import AsyncKVClient
from .claims import AsyncClaims

DEFAULT_SESSION_TTL = 60

SessionCallback = Callable[[errors.EtcdError], Any]


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
        write the same key (see :mod:`.claims`)."""

    @classmethod
    async def create(
        cls,
        client: AsyncKVClient,
        *,
        ttl: int = DEFAULT_SESSION_TTL,
        lease: LeaseLike | None = None,
    ) -> AsyncSession:
        """Grant a lease of ``ttl`` seconds (or adopt ``lease``) and keep it alive."""
        if lease is None:
            if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
                raise errors.InvalidRequest(f"ttl must be a positive int, got {ttl!r}")
            granted = await client.grant(ttl)
        else:
            lease_id = lease_id_of(lease)
            remaining = await client.time_to_live(lease_id)
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

    def _on_keepalive(self, item: object) -> None:
        if isinstance(item, errors.EtcdError):
            self._end(item)

    def _end(self, error: errors.EtcdError) -> None:
        with self._state_lock:
            if self._error is not None:
                return
            self._error = error
            callbacks, self._callbacks = self._callbacks, []
        self.done.set()
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
        return await wait_event(self.done, timeout)

    def orphan(self) -> None:
        """Stop renewing without revoking: the lease (and its keys) expire after the TTL."""
        self._keepalive.close()
        self._end(errors.LeaseExpiredError("the session was orphaned", lease_id=self.lease_id))

    async def close(self) -> None:
        """Stop renewing and revoke the lease, deleting every key bound to it."""
        if self._closed:
            return
        self._closed = True
        was_alive = self._error is None
        self._keepalive.close()
        self._end(errors.ClientClosedError("the session was closed"))
        if was_alive and not self.client.closed:
            try:
                await self.client.revoke(self.lease_id)
            except errors.LeaseNotFoundError:
                pass  # already gone: nothing to clean up

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


class AsyncSessionPool:
    """The shared sessions of one client: one per TTL, created on first use and
    replaced once lost.

    Recipes created without ``session=`` take theirs from here, so one lease serves
    every acquire and campaign of a client (and of its namespaces).  The pool is
    closed - every session revoked - when the client closes, before its connection
    goes.
    """

    def __init__(self, client: AsyncKVClient) -> None:
        self._client = client
        self._sessions: dict[int, AsyncSession] = {}
        self._lock = Lock()

    async def get(self, ttl: int = DEFAULT_SESSION_TTL) -> AsyncSession:
        """The live shared session for ``ttl``, granting a new one when needed."""
        async with self._lock:
            session = self._sessions.get(ttl)
            if session is None or session.is_done:
                session = await AsyncSession.create(self._client, ttl=ttl)
                self._sessions[ttl] = session
            return session

    async def close(self) -> None:
        """Revoke every shared session (their keys go with their leases)."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
