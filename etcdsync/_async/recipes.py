"""Client entry points of the recipes: sessions, locks, elections, live config.

The recipes themselves live in ``concurrency/`` and are typed against
:class:`~etcdsync._async.concurrency.recipe_client.AsyncRecipeClient`; they never
import the client.  These factories only construct them with ``self``.  Locks and
elections created without an explicit session share one session per TTL per
client (:class:`~etcdsync._async.concurrency.session.AsyncSessionPool`): one lease
serves every acquire, and it is replaced when lost.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Iterable
from typing import ParamSpec, TypeVar

from ..codecs import DEFAULT_DECODER
from ..lease_types import LeaseLike
from ..stm_types import Isolation
from .concurrency.barrier import AsyncBarrier
from .concurrency.cache import AsyncPrefixCache
from .concurrency.config import AsyncConfigWatcher, Decoder, Validator
from .concurrency.counter import AsyncCounter
from .concurrency.delay_queue import AsyncDelayQueue, Clock
from .concurrency.double_barrier import AsyncDoubleBarrier
from .concurrency.election import AsyncElection
from .concurrency.group import AsyncGroup
from .concurrency.lease_once import AsyncLeaseOnce, acquire_lease_once
from .concurrency.locked import locked as locked_function
from .concurrency.locking_queue import AsyncLockingQueue
from .concurrency.multi_lock import AsyncMultiLock
from .concurrency.mutex import AsyncMutex
from .concurrency.partitioner import AsyncPartitioner
from .concurrency.priority_queue import AsyncPriorityQueue
from .concurrency.queue import AsyncQueue
from .concurrency.recipe_client import AsyncRecipeClient
from .concurrency.reentrant import AsyncReentrantLock, AsyncReentrantRWLock
from .concurrency.rwlock import AsyncRWLock
from .concurrency.semaphore import AsyncSemaphore
from .concurrency.services import AsyncServiceDiscovery
from .concurrency.session import DEFAULT_SESSION_TTL, AsyncSession, AsyncSessionPool
from .concurrency.stm import DEFAULT_RETRIES, AsyncSTM, run_stm
from .protocol import AsyncKVClient

_T = TypeVar("_T")
_P = ParamSpec("_P")


class AsyncRecipesAPI:
    """Recipe factories; mixed into :class:`etcdsync.AsyncClient`."""

    _sessions: AsyncSessionPool

    async def session(
        self: AsyncKVClient, *, ttl: int = DEFAULT_SESSION_TTL, lease: LeaseLike | None = None
    ) -> AsyncSession:
        """A new session: a lease of ``ttl`` seconds (or ``lease``) kept alive until closed."""
        return await AsyncSession.create(self, ttl=ttl, lease=lease)

    async def shared_session(
        self, ttl: int = DEFAULT_SESSION_TTL, *, timeout: float | None = None
    ) -> AsyncSession:
        """The client's session for ``ttl``, created on first use and replaced once lost
        (its keepalive reported it, or a recipe's request proved its lease gone).

        Recipes created without ``session=`` use it; it is revoked when the client
        closes.  ``timeout`` bounds its creation (:class:`~etcdsync.errors.Timeout`).
        """
        return await self._sessions.get(ttl, timeout=timeout)

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

    def reentrant_lock(
        self: AsyncRecipeClient,
        name: str,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
        timeout: float | None = None,
    ) -> AsyncReentrantLock:
        """A mutex its owner (thread, or asyncio task) may acquire again, releasing as
        often; the keys are :meth:`lock`'s (Go/etcdctl-compatible).  Share the object
        between the code that nests: re-entrancy is per object."""
        return AsyncReentrantLock(self, name, session=session, ttl=ttl, timeout=timeout)

    def reentrant_rwlock(
        self: AsyncRecipeClient,
        name: str,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
        timeout: float | None = None,
    ) -> AsyncReentrantRWLock:
        """A readers-writer lock each owner may acquire again, whose writer may read
        and downgrade (write, read, release the write); the keys are :meth:`rwlock`'s."""
        return AsyncReentrantRWLock(self, name, session=session, ttl=ttl, timeout=timeout)

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

    async def stm(
        self: AsyncRecipeClient,
        fn: Callable[[AsyncSTM], Awaitable[_T]],
        *,
        isolation: Isolation | str = Isolation.SERIALIZABLE_SNAPSHOT,
        retries: int = DEFAULT_RETRIES,
        prefetch: Iterable[str | bytes] = (),
        timeout: float | None = None,
    ) -> _T:
        """Run ``await fn(stm)`` as a software transactional memory transaction.

        ``stm.get/get_many/rev`` read (the read set), ``stm.put/delete`` buffer
        writes; when ``fn`` returns, the writes commit in one txn guarded by the
        read set as ``isolation`` says (Go's four levels; default serializable
        snapshot).  On a conflict ``fn`` runs again, at most ``retries`` more
        times, then :class:`~etcdsync.errors.STMConflictError`.  ``prefetch``
        names keys read in one request before the first attempt.  Returns what
        ``fn`` returned.  See ``recipes_docs/stm.md``.
        """
        return await run_stm(
            self, fn, isolation=isolation, retries=retries, prefetch=prefetch, timeout=timeout
        )

    def counter(
        self: AsyncRecipeClient,
        name: str,
        *,
        initial: int = 0,
        min: int | None = None,
        max: int | None = None,
    ) -> AsyncCounter:
        """A distributed integer counter in the key ``name`` (decimal text), changed
        atomically by compare-and-swap, optionally bounded by ``min`` / ``max``."""
        return AsyncCounter(self, name, initial=initial, min=min, max=max)

    async def lease_once(
        self: AsyncRecipeClient,
        name: str,
        period: int | datetime.timedelta,
        *,
        holders: int = 1,
        value: str | bytes | None = None,
        renew: bool = False,
        timeout: float | None = None,
    ) -> AsyncLeaseOnce:
        """Try to take ``name`` for ``period`` seconds, without waiting.

        The first caller in a period gets it (the answer is true), every other
        caller until the period ends is refused (false); the period is a lease
        that is not kept alive.  ``holders=N`` admits N callers per period.
        ``value`` (default ``host:pid``) identifies the caller; with ``renew=True``
        a caller already holding a slot under that value takes it again for a new
        period.  See ``recipes_docs/lease_once.md``.
        """
        return await acquire_lease_once(
            self,
            name,
            period,
            holders=holders,
            value=value,
            renew=renew,
            timeout=timeout,
        )

    def barrier(
        self: AsyncRecipeClient,
        name: str,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
        persistent: bool = False,
    ) -> AsyncBarrier:
        """A barrier named ``name`` (Go-compatible key): ``hold()``, ``release()``,
        ``wait()``.  A hold is bound to the session's lease unless ``persistent``."""
        return AsyncBarrier(self, name, session=session, ttl=ttl, persistent=persistent)

    def double_barrier(
        self: AsyncRecipeClient,
        name: str,
        count: int,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
    ) -> AsyncDoubleBarrier:
        """One participant of a double barrier of ``count`` (Go-compatible keys):
        ``enter()`` waits for ``count`` participants, ``leave()`` for all to leave."""
        return AsyncDoubleBarrier(self, name, count, session=session, ttl=ttl)

    def queue(
        self: AsyncRecipeClient,
        name: str,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
    ) -> AsyncQueue:
        """A FIFO queue (Go-compatible keys): ``put()``, blocking ``get()``; each item
        is taken by exactly one consumer (at most once: see ``locking_queue``)."""
        return AsyncQueue(self, name, session=session, ttl=ttl)

    def priority_queue(
        self: AsyncRecipeClient,
        name: str,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
    ) -> AsyncPriorityQueue:
        """A priority queue (Go-compatible keys): ``put(value, priority)``, blocking
        ``get()`` serving priority 0 first, FIFO within a priority."""
        return AsyncPriorityQueue(self, name, session=session, ttl=ttl)

    def locking_queue(
        self: AsyncRecipeClient,
        name: str,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
    ) -> AsyncLockingQueue:
        """An at-least-once FIFO queue: ``get()`` claims an item (bound to the
        session's lease), ``consume()`` deletes it, ``release()`` hands it back; a dead
        consumer's claim ends with its lease and the item is served again."""
        return AsyncLockingQueue(self, name, session=session, ttl=ttl)

    def locked(
        self: AsyncRecipeClient,
        name: str,
        *,
        ttl: int | None = None,
        timeout: float | None = None,
        session: AsyncSession | None = None,
    ) -> Callable[[Callable[_P, Awaitable[_T]]], Callable[_P, Awaitable[_T]]]:
        """A decorator: each call of the ``async def`` function runs holding
        ``etcd.lock(name)`` (a lock object per call), released when it returns.

        A lock not acquired within ``timeout`` seconds raises
        :class:`~etcdsync.errors.LockTimeout` and the body does not run.  The body
        reads the held lock - its fencing token - with
        :func:`etcdsync.current_lock`.  See ``recipes_docs/mutex.md``.
        """
        return locked_function(self, name, ttl=ttl, timeout=timeout, session=session)

    def group(
        self: AsyncRecipeClient,
        name: str,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
    ) -> AsyncGroup:
        """The group ``name``: ``join(value)`` a lease-bound member key
        ``<name>/<member id>``, ``members()``, ``watch()`` the joins and leaves,
        ``leave()``.  See ``recipes_docs/group.md``."""
        return AsyncGroup(self, name, ttl=ttl, session=session)

    def partitioner(
        self: AsyncRecipeClient,
        name: str,
        items: Iterable[str],
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
        member_id: str | None = None,
        value: str | bytes = b"",
    ) -> AsyncPartitioner:
        """A member of the partitioner ``name``: once started, it owns its share of
        ``items`` (rendezvous hashing over the live members), each item fenced by a
        lease-bound owner key, handed over on joins and leaves so that no item is
        ever owned by two members.  See ``recipes_docs/partitioner.md``."""
        return AsyncPartitioner(
            self, name, items, ttl=ttl, session=session, member_id=member_id, value=value
        )

    def cache(
        self: AsyncKVClient, prefix: str | bytes, *, page_size: int = 1000
    ) -> AsyncPrefixCache:
        """A live, read-only local copy of every key under ``prefix``: ``get(key)``,
        iteration, listeners told of each added, updated and removed key once and
        in order, ``wait_for(predicate)``.  ``async with`` starts and stops it.  See
        ``recipes_docs/cache.md``."""
        return AsyncPrefixCache(self, prefix, page_size=page_size)

    def services(
        self: AsyncRecipeClient,
        namespace: str,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
    ) -> AsyncServiceDiscovery:
        """Service discovery in ``namespace``: ``register()`` lease-bound instances
        (re-registered after a lost session), ``instances()``, ``watch()`` and
        ``choose()`` (round-robin, random, sticky) from a prefix cache.  See
        ``recipes_docs/services.md``."""
        return AsyncServiceDiscovery(self, namespace, ttl=ttl, session=session)

    def multi_lock(
        self: AsyncRecipeClient,
        names: Iterable[str],
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
        timeout: float | None = None,
    ) -> AsyncMultiLock:
        """Mutexes on several ``names`` taken as one, all or none, in one global order
        (no deadlock between overlapping multi-locks); one fencing token per lock.
        See ``recipes_docs/multi_lock.md``."""
        return AsyncMultiLock(self, names, ttl=ttl, session=session, timeout=timeout)

    def delay_queue(
        self: AsyncRecipeClient,
        name: str,
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
        clock: Clock | None = None,
    ) -> AsyncDelayQueue:
        """A queue whose items are taken only once due (``put(value, delay=...)``),
        by the wall ``clock`` (default ``time.time``) of producers and consumers.
        See ``recipes_docs/delay_queue.md``."""
        return AsyncDelayQueue(self, name, session=session, ttl=ttl, clock=clock)

    def config(
        self: AsyncRecipeClient,
        prefix: str,
        *,
        decode: str | Decoder = DEFAULT_DECODER,
        validate: Validator | None = None,
        page_size: int = 1000,
        model: object = None,
    ) -> AsyncConfigWatcher:
        """A live view of the keys under ``prefix``; ``await watcher.start()`` (or
        ``async with``) loads the snapshot and follows every change.

        With ``model`` (a dataclass, or a class with pydantic's ``model_validate``)
        each state becomes one instance - ``watcher.value``, ``snapshot.value`` -
        its keys nested on ``/``.  See ``recipes_docs/config.md``."""
        return AsyncConfigWatcher(
            self, prefix, decode=decode, validate=validate, page_size=page_size, model=model
        )
