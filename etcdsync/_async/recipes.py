"""Client entry points of the recipes: sessions, locks, elections, live config.

The recipes themselves live in ``concurrency/`` and are typed against
:class:`~etcdsync._async.concurrency.recipe_client.AsyncRecipeClient`; they never
import the client.  These factories only construct them with ``self``.  Locks and
elections created without an explicit session share one session per TTL per
client (:class:`~etcdsync._async.concurrency.session.AsyncSessionPool`): one lease
serves every acquire, and it is replaced when lost.
"""

from __future__ import annotations

from ..lease_types import LeaseLike
from .concurrency.config import AsyncConfigWatcher, Decoder, Validator
from .concurrency.election import AsyncElection
from .concurrency.mutex import AsyncMutex
from .concurrency.recipe_client import AsyncRecipeClient
from .concurrency.rwlock import AsyncRWLock
from .concurrency.semaphore import AsyncSemaphore
from .concurrency.session import DEFAULT_SESSION_TTL, AsyncSession, AsyncSessionPool
from .protocol import AsyncKVClient


class AsyncRecipesAPI:
    """Recipe factories; mixed into :class:`etcdsync.AsyncClient`."""

    _sessions: AsyncSessionPool

    async def session(
        self: AsyncKVClient, *, ttl: int = DEFAULT_SESSION_TTL, lease: LeaseLike | None = None
    ) -> AsyncSession:
        """A new session: a lease of ``ttl`` seconds (or ``lease``) kept alive until closed."""
        return await AsyncSession.create(self, ttl=ttl, lease=lease)

    async def shared_session(self, ttl: int = DEFAULT_SESSION_TTL) -> AsyncSession:
        """The client's session for ``ttl``, created on first use and replaced once lost.

        Recipes created without ``session=`` use it; it is revoked when the client
        closes.
        """
        return await self._sessions.get(ttl)

    def lock(
        self: AsyncRecipeClient,
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
        return AsyncMutex(self, name, session=session, ttl=ttl, timeout=timeout)

    def rwlock(
        self: AsyncRecipeClient,
        name: str,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
    ) -> AsyncRWLock:
        """A distributed readers-writer lock: ``.read()`` and ``.write()`` give the locks."""
        return AsyncRWLock(self, name, session=session, ttl=ttl)

    def semaphore(
        self: AsyncRecipeClient,
        name: str,
        limit: int,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
        timeout: float | None = None,
    ) -> AsyncSemaphore:
        """A distributed counting semaphore admitting ``limit`` holders at once."""
        return AsyncSemaphore(self, name, limit, session=session, ttl=ttl, timeout=timeout)

    def election(
        self: AsyncRecipeClient,
        name: str,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
    ) -> AsyncElection:
        """A leader election named ``name`` (Go/etcdctl-compatible key layout)."""
        return AsyncElection(self, name, session=session, ttl=ttl)

    def config(
        self: AsyncRecipeClient,
        prefix: str,
        *,
        decode: str | Decoder = "json",
        validate: Validator | None = None,
        page_size: int = 1000,
    ) -> AsyncConfigWatcher:
        """A live view of the keys under ``prefix``; ``await watcher.start()`` (or
        ``async with``) loads the snapshot and follows every change."""
        return AsyncConfigWatcher(
            self, prefix, decode=decode, validate=validate, page_size=page_size
        )
