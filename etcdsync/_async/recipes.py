"""Client entry points of the recipes: sessions, locks, elections, live config.

The recipes themselves live in ``concurrency/`` and use only the client's public
API.  Locks and elections created without an explicit session share one session
per TTL per client: one lease serves every acquire, and it is replaced when lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._backends._async import Lock
from ..lease_types import LeaseLike
from .concurrency.config import AsyncConfigWatcher, Decoder, Validator
from .concurrency.election import AsyncElection
from .concurrency.mutex import AsyncMutex
from .concurrency.rwlock import AsyncRWLock
from .concurrency.semaphore import AsyncSemaphore
from .concurrency.session import DEFAULT_SESSION_TTL, AsyncSession

if TYPE_CHECKING:
    from .client import AsyncClient


class AsyncRecipesAPI:
    """Recipe factories; mixed into :class:`etcdsync.AsyncClient`."""

    _shared_sessions: dict[int, AsyncSession]
    _shared_sessions_lock: Lock

    def _client(self) -> AsyncClient:
        return self  # type: ignore[return-value]  # the mixin is only used by AsyncClient

    async def session(
        self, *, ttl: int = DEFAULT_SESSION_TTL, lease: LeaseLike | None = None
    ) -> AsyncSession:
        """A new session: a lease of ``ttl`` seconds (or ``lease``) kept alive until closed."""
        return await AsyncSession.create(self._client(), ttl=ttl, lease=lease)

    async def shared_session(self, ttl: int = DEFAULT_SESSION_TTL) -> AsyncSession:
        """The client's session for ``ttl``, created on first use and replaced once lost.

        Recipes created without ``session=`` use it; it is revoked when the client
        closes.
        """
        async with self._shared_sessions_lock:
            session = self._shared_sessions.get(ttl)
            if session is None or session.is_done:
                session = await self.session(ttl=ttl)
                self._shared_sessions[ttl] = session
            return session

    async def _close_shared_sessions(self) -> None:
        sessions, self._shared_sessions = list(self._shared_sessions.values()), {}
        for session in sessions:
            await session.close()

    def lock(
        self,
        name: str,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
        timeout: float | None = None,
    ) -> AsyncMutex:
        """A distributed mutex named ``name`` (Go/etcdctl-compatible key layout).

        ``async with etcd.lock("jobs/nightly", timeout=10) as lock:`` acquires it
        (raising on timeout: the body never runs unlocked) and releases it on exit.
        """
        return AsyncMutex(self._client(), name, session=session, ttl=ttl, timeout=timeout)

    def rwlock(
        self, name: str, *, ttl: int | None = None, session: AsyncSession | None = None
    ) -> AsyncRWLock:
        """A distributed readers-writer lock: ``.read()`` and ``.write()`` give the locks."""
        return AsyncRWLock(self._client(), name, session=session, ttl=ttl)

    def semaphore(
        self,
        name: str,
        limit: int,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
        timeout: float | None = None,
    ) -> AsyncSemaphore:
        """A distributed counting semaphore admitting ``limit`` holders at once."""
        return AsyncSemaphore(
            self._client(), name, limit, session=session, ttl=ttl, timeout=timeout
        )

    def election(
        self, name: str, *, ttl: int | None = None, session: AsyncSession | None = None
    ) -> AsyncElection:
        """A leader election named ``name`` (Go/etcdctl-compatible key layout)."""
        return AsyncElection(self._client(), name, session=session, ttl=ttl)

    def config(
        self,
        prefix: str,
        *,
        decode: str | Decoder = "json",
        validate: Validator | None = None,
        page_size: int = 1000,
    ) -> AsyncConfigWatcher:
        """A live view of the keys under ``prefix``; ``await watcher.start()`` (or
        ``async with``) loads the snapshot and follows every change."""
        return AsyncConfigWatcher(
            self._client(), prefix, decode=decode, validate=validate, page_size=page_size
        )
