"""Readers-writer lock: many readers or one writer, FIFO by arrival.

Each acquire puts one lease-bound key, unique per acquire:

* a reader: ``<name>/read/<lease id hex>-<random>``; it is admitted once no
  *writer* key created before its own remains (it waits only for earlier
  writers - readers share);
* a writer: ``<name>/write/<lease id hex>-<random>``; admitted once no key at all
  (reader or writer) created before its own remains.

Admission follows create revisions, so the lock is fair: a reader that arrives
after a waiting writer queues behind it, and writers cannot starve.  Each waiter
watches only for the deletion of its youngest blocking predecessor.  Keys are
unique per acquire, so readers and writers in one process may share a session
without any in-process exclusion.  This layout is ours (Go's ``concurrency``
package has no RW lock): only etcdsync clients take part.
"""

from __future__ import annotations

from ... import errors
from .queue_lock import AsyncQueueLock, unique_suffix
from .recipe_client import AsyncRecipeClient
from .session import AsyncSession

__all__ = ["AsyncRWLock", "AsyncReadLock", "AsyncWriteLock"]


class AsyncReadLock(AsyncQueueLock):
    """The shared side of an :class:`AsyncRWLock`: held together with other readers,
    never with a writer.  Same API as :class:`~etcdsync.AsyncMutex` (acquire,
    try_acquire, release, ``async with``, fencing_token, is_owner, guarded_txn,
    lost)."""

    def _new_key(self, session: AsyncSession) -> str:
        return f"{self._name}/read/{session.lease_id:x}-{unique_suffix()}"

    def _wait_prefix(self) -> str:
        return f"{self._name}/write/"


class AsyncWriteLock(AsyncQueueLock):
    """The exclusive side of an :class:`AsyncRWLock`: held alone.  Same API as
    :class:`~etcdsync.AsyncMutex`."""

    def _new_key(self, session: AsyncSession) -> str:
        return f"{self._name}/write/{session.lease_id:x}-{unique_suffix()}"


class AsyncRWLock:
    """A distributed readers-writer lock; create with ``client.rwlock(name)``.

    ::

        rw = etcd.rwlock("catalog")
        async with rw.read(timeout=5):      # many readers at once
            ...
        async with rw.write(timeout=5) as w:  # alone
            await w.guarded_txn([Op.put("data/catalog", blob)])

    :meth:`read` and :meth:`write` return a new lock object per call: one object
    per holder.  Neither is re-entrant: a holder of the write lock that asks for a
    read (or another write) lock waits for itself until its timeout;
    ``client.reentrant_rwlock(name)`` is the re-entrant form, with downgrade
    (:class:`~etcdsync.AsyncReentrantRWLock`).
    """

    def __init__(
        self,
        client: AsyncRecipeClient,
        name: str,
        *,
        session: AsyncSession | None = None,
        ttl: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise errors.InvalidRequest(f"a lock name must be a non-empty str, got {name!r}")
        self._client = client
        self._name = name
        self._session = session
        self._ttl = ttl

    @property
    def name(self) -> str:
        return self._name

    def read(self, *, timeout: float | None = None) -> AsyncReadLock:
        """A new read (shared) lock object; ``timeout`` bounds its acquires."""
        return AsyncReadLock(
            self._client, self._name, session=self._session, ttl=self._ttl, timeout=timeout
        )

    def write(self, *, timeout: float | None = None) -> AsyncWriteLock:
        """A new write (exclusive) lock object; ``timeout`` bounds its acquires."""
        return AsyncWriteLock(
            self._client, self._name, session=self._session, ttl=self._ttl, timeout=timeout
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r}>"
