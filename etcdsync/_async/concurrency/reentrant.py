"""Re-entrant locks: the same owner may acquire again, and releases as often.

An owner is the calling thread (sync client) or the running asyncio task (a
coroutine it awaits is the same owner; a task it starts is another).  The lock
objects count, per owner, how often it acquired; only the first acquire of an
owner talks to etcd (a plain :class:`~.mutex.AsyncMutex`, or a read / write lock
of an :class:`~.rwlock.AsyncRWLock`, one per owner and hold) and only its last
release does.  So the keys in etcd - and every guarantee: FIFO queueing, fencing
tokens, loss - are the plain locks' ones; for a mutex the layout stays Go's and
``etcdctl lock``'s.

Re-entrancy is per lock *object*: share the object between the functions that
nest (a module-level ``etcd.reentrant_lock(name)``).  Two objects for one name
are two contenders, and an owner holding one waits for itself on the other.

The readers-writer form adds what Curator's re-entrant RW lock offers: the owner of
the write lock may take the read lock (counted, no request), and release the write
lock while still reading - a **downgrade**: it keeps read access throughout, and no
writer gets in between.  In etcd the downgraded hold keeps its write key until its
last read release, because a queue ordered by create revision cannot turn a write
key into a read key without letting a writer queued behind it overtake: other
readers therefore still wait until then.  A read holder asking for the write lock
(an *upgrade*) would wait for itself, so it raises
:class:`~etcdsync.errors.LockError` at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

from ... import errors
from ..._backends._async import StateLock, current_owner
from ...models import TxnResponse
from ...ops import Compare, Op
from .mutex import AsyncMutex
from .queue_lock import AsyncQueueLock
from .recipe_client import AsyncRecipeClient
from .rwlock import AsyncReadLock, AsyncWriteLock
from .session import AsyncSession

__all__ = ["AsyncReentrantLock", "AsyncReentrantRWLock"]

_Lock = TypeVar("_Lock", bound=AsyncQueueLock)


@dataclass
class _Hold(Generic[_Lock]):
    """One owner's hold: the plain lock that holds it in etcd, and the count."""

    lock: _Lock
    count: int = 1


class _Counted(Generic[_Lock]):
    """Holds per owner, counted; the plain lock of each is made by ``_new_lock``."""

    def __init__(self, client: AsyncRecipeClient, name: str, timeout: float | None) -> None:
        if not isinstance(name, str) or not name:
            raise errors.InvalidRequest(f"a lock name must be a non-empty str, got {name!r}")
        self._client = client
        self._name = name
        self._timeout = timeout
        self._state = StateLock()
        self._holds: dict[object, _Hold[_Lock]] = {}

    @property
    def name(self) -> str:
        return self._name

    def _mine(self) -> _Hold[_Lock] | None:
        with self._state:
            return self._holds.get(current_owner())

    def _require_mine(self, what: str) -> _Hold[_Lock]:
        hold = self._mine()
        if hold is None:
            raise errors.LockError(f"{self._name!r}: {what} is not held by the caller")
        return hold

    def _again(self, hold: _Hold[_Lock]) -> None:
        """A nested acquire of an existing hold: counted, unless the hold was lost
        (the caller must learn that rather than go on as if it held the lock)."""
        error = hold.lock.lost_error
        if error is not None or hold.lock.lost.is_set():
            raise errors.LockLostError(f"{self._name!r} was lost: {error}")
        hold.count += 1

    async def _first(self, lock: _Lock, timeout: float | None) -> None:
        """The owner's first acquire: the plain lock's, then remembered."""
        await lock.acquire(self._timeout if timeout is None else timeout)
        with self._state:
            self._holds[current_owner()] = _Hold(lock)

    def _count_down(self, hold: _Hold[_Lock]) -> bool:
        """One release of ``hold``; True when it was the last (forgotten now)."""
        with self._state:
            hold.count -= 1
            if hold.count > 0:
                return False
            owner = current_owner()
            if self._holds.get(owner) is hold:
                del self._holds[owner]
            return True


class AsyncReentrantLock(_Counted[AsyncMutex]):
    """A distributed mutex its owner (thread or task) may acquire again; create with
    ``client.reentrant_lock(name)``.

    ::

        lock = etcd.reentrant_lock("accounts")

        async def transfer():
            async with lock:          # first acquire: queues in etcd
                await audit()         # nested: counted, no request

        async def audit():
            async with lock:
                await lock.guarded_txn([Op.put("audit/last", "...")])

    ``held``, ``hold_count``, ``fencing_token``, ``is_owner()``, ``guarded_txn()``,
    ``lost`` and ``lost_error`` are those of the caller's hold (another owner sees
    its own, or none).  Releasing more often than acquired, or from an owner that
    does not hold it, raises :class:`~etcdsync.errors.LockError`.
    """

    def __init__(
        self,
        client: AsyncRecipeClient,
        name: str,
        *,
        session: AsyncSession | None = None,
        ttl: int | None = None,
        timeout: float | None = None,
    ) -> None:
        AsyncMutex(client, name, session=session, ttl=ttl, timeout=timeout)  # validates
        super().__init__(client, name, timeout)
        self._session = session
        self._ttl = ttl

    async def acquire(self, timeout: float | None = None) -> AsyncReentrantLock:
        """Acquire (again, when the caller holds it already: no request) and return
        this object.  ``timeout`` as for :meth:`AsyncMutex.acquire
        <etcdsync.AsyncMutex.acquire>` (default: the one given at creation)."""
        hold = self._mine()
        if hold is not None:
            self._again(hold)
            return self
        mutex = AsyncMutex(self._client, self._name, session=self._session, ttl=self._ttl)
        await self._first(mutex, timeout)
        return self

    async def release(self, timeout: float | None = None) -> None:
        """Undo one acquire of the caller; the last one releases the lock in etcd
        (``timeout`` bounds that request, as for ``AsyncMutex.release``)."""
        hold = self._require_mine("the lock")
        if self._count_down(hold):
            await hold.lock.release(timeout)

    @property
    def held(self) -> bool:
        """True when the caller holds the lock (and it was not lost)."""
        hold = self._mine()
        return hold is not None and hold.lock.held

    @property
    def hold_count(self) -> int:
        """How many releases the caller still owes (0: it does not hold the lock)."""
        hold = self._mine()
        return 0 if hold is None else hold.count

    @property
    def lock(self) -> AsyncMutex:
        """The plain mutex behind the caller's hold (its key, session, loss model)."""
        return self._require_mine("the lock").lock

    @property
    def fencing_token(self) -> int:
        return self.lock.fencing_token

    def is_owner(self) -> Compare:
        return self.lock.is_owner()

    async def guarded_txn(
        self,
        success: list[Op],
        failure: list[Op] | None = None,
        compare: list[Compare] | None = None,
        *,
        timeout: float | None = None,
    ) -> TxnResponse:
        """The caller's hold's :meth:`~etcdsync.AsyncMutex.guarded_txn`."""
        return await self.lock.guarded_txn(success, failure or (), compare or (), timeout=timeout)

    async def __aenter__(self) -> AsyncReentrantLock:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()

    def __repr__(self) -> str:
        with self._state:
            owners = len(self._holds)
        return f"<{type(self).__name__} {self._name!r} owners={owners}>"


class AsyncReentrantRWLock:
    """A readers-writer lock each owner may acquire again, with write -> read
    downgrade; create with ``client.reentrant_rwlock(name)``.

    ::

        rw = etcd.reentrant_rwlock("catalog")
        async with rw.write():
            await rebuild()
            async with rw.read():     # the writer reads too: counted, no request
                await publish()

        # downgrade: write, then read, then give up the write and keep reading
        await rw.acquire_write()
        await rw.acquire_read()
        await rw.release_write()      # still reading; no writer got in between
        ...
        await rw.release_read()       # now the lock is free

    The keys are those of :class:`~etcdsync.AsyncRWLock` (``<name>/read/...`` and
    ``<name>/write/...``): plain and re-entrant RW locks of one name exclude each
    other.  Read holds are per owner (readers share); a read held by the write
    owner is covered by its write key.
    """

    def __init__(
        self,
        client: AsyncRecipeClient,
        name: str,
        *,
        session: AsyncSession | None = None,
        ttl: int | None = None,
        timeout: float | None = None,
    ) -> None:
        AsyncWriteLock(client, name, session=session, ttl=ttl, timeout=timeout)  # validates
        self._session = session
        self._ttl = ttl
        self._writes: _Counted[AsyncWriteLock] = _Counted(client, name, timeout)
        self._reads: _Counted[AsyncReadLock] = _Counted(client, name, timeout)
        # Reads taken while holding the write lock, per owner: covered by the write key.
        self._covered: dict[object, int] = {}
        # Owners whose write count reached 0 while covered reads remained: their
        # write key now serves those reads (the downgrade), released with the last.
        self._downgraded: dict[object, _Hold[AsyncWriteLock]] = {}

    @property
    def name(self) -> str:
        return self._writes.name

    # --- write --------------------------------------------------------------------------

    async def acquire_write(self, timeout: float | None = None) -> None:
        """Acquire the write lock (again: counted).  Raises
        :class:`~etcdsync.errors.LockError` when the caller holds only the read lock
        (an upgrade would wait for itself)."""
        owner = current_owner()
        hold = self._writes._mine()
        if hold is not None:
            self._writes._again(hold)
            return
        with self._writes._state:
            downgraded = self._downgraded.pop(owner, None)
            if downgraded is not None:
                # Still holding the write key under the downgrade: write again.
                self._writes._holds[owner] = downgraded
                return
        if self._reads._mine() is not None:
            raise errors.LockError(
                f"{self.name!r}: the caller holds the read lock; upgrading to the write "
                "lock would wait for itself (release the read lock first)"
            )
        lock = AsyncWriteLock(self._writes._client, self.name, session=self._session, ttl=self._ttl)
        await self._writes._first(lock, timeout)

    async def release_write(self, timeout: float | None = None) -> None:
        """Undo one write acquire of the caller; the last one releases the write lock
        - or, while the caller still holds reads taken under it, downgrades."""
        owner = current_owner()
        hold = self._writes._require_mine("the write lock")
        if not self._writes._count_down(hold):
            return
        with self._writes._state:
            if self._covered.get(owner, 0) > 0:
                self._downgraded[owner] = hold  # the reads go on under the write key
                return
        await hold.lock.release(timeout)

    # --- read ---------------------------------------------------------------------------

    async def acquire_read(self, timeout: float | None = None) -> None:
        """Acquire the read lock (again: counted; under the caller's own write lock:
        counted, no request)."""
        owner = current_owner()
        with self._writes._state:
            if owner in self._writes._holds or owner in self._downgraded:
                self._covered[owner] = self._covered.get(owner, 0) + 1
                return
        hold = self._reads._mine()
        if hold is not None:
            self._reads._again(hold)
            return
        lock = AsyncReadLock(self._reads._client, self.name, session=self._session, ttl=self._ttl)
        await self._reads._first(lock, timeout)

    async def release_read(self, timeout: float | None = None) -> None:
        """Undo one read acquire of the caller; the last one releases its key (a
        downgraded write key included)."""
        owner = current_owner()
        with self._writes._state:
            covered = self._covered.get(owner, 0)
            if covered > 1:
                self._covered[owner] = covered - 1
                return
            if covered == 1:
                del self._covered[owner]
            downgraded = self._downgraded.pop(owner, None) if covered else None
        if covered:
            if downgraded is not None:  # the last read of a downgraded hold
                await downgraded.lock.release(timeout)
            return  # otherwise the write lock is still held: nothing to release yet
        hold = self._reads._require_mine("the read lock")
        if self._reads._count_down(hold):
            await hold.lock.release(timeout)

    # --- state --------------------------------------------------------------------------

    @property
    def write_count(self) -> int:
        """The caller's write acquires not yet released."""
        hold = self._writes._mine()
        return 0 if hold is None else hold.count

    @property
    def read_count(self) -> int:
        """The caller's read acquires not yet released (covered ones included)."""
        owner = current_owner()
        with self._writes._state:
            covered = self._covered.get(owner, 0)
        hold = self._reads._mine()
        return covered + (0 if hold is None else hold.count)

    @property
    def lock(self) -> AsyncQueueLock:
        """The plain lock behind the caller's hold: its write lock (also while
        downgraded), else its read lock; LockError when it holds neither."""
        owner = current_owner()
        with self._writes._state:
            write = self._writes._holds.get(owner) or self._downgraded.get(owner)
        if write is not None:
            return write.lock
        return self._reads._require_mine("the lock").lock

    @property
    def fencing_token(self) -> int:
        return self.lock.fencing_token

    def read(self, *, timeout: float | None = None) -> _Side:
        """``async with rw.read():`` - acquire_read / release_read."""
        return _Side(self.acquire_read, self.release_read, timeout)

    def write(self, *, timeout: float | None = None) -> _Side:
        """``async with rw.write():`` - acquire_write / release_write."""
        return _Side(self.acquire_write, self.release_write, timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class _Side:
    """The context manager of one side of a re-entrant RW lock."""

    def __init__(
        self,
        acquire: Callable[[float | None], Awaitable[None]],
        release: Callable[[], Awaitable[None]],
        timeout: float | None,
    ) -> None:
        self._acquire = acquire
        self._release = release
        self._timeout = timeout

    async def __aenter__(self) -> None:
        await self._acquire(self._timeout)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._release()
