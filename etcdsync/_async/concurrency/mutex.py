"""Mutex: a distributed lock with fencing tokens, compatible with Go and ``etcdctl lock``.

Every contender puts one lease-bound key under ``<name>/``; the key with the
lowest create revision holds the lock and the others queue behind it in create
revision order (FIFO), each waiting only for the deletion of its predecessor.
The key layout is the one of Go's ``concurrency.Mutex`` (``<name>/<lease id in
hex>``, empty value), so Python, Go and ``etcdctl lock <name>`` exclude each other.
The queueing, fencing and loss machinery is :class:`~.queue_lock.AsyncQueueLock`.
"""

from __future__ import annotations

from .queue_lock import AsyncQueueLock, LostCallback
from .session import AsyncSession

__all__ = ["AsyncMutex", "LostCallback"]


class AsyncMutex(AsyncQueueLock):
    """A distributed mutual-exclusion lock; create with ``client.lock(name)``.

    ::

        async with etcd.lock("jobs/nightly", ttl=10, timeout=5) as lock:
            await lock.guarded_txn([Op.put("state/nightly", "running")])

    The key is ``<name>/<session lease id in hex>`` (Go's and etcdctl's layout).
    Holders that share a session in one process would share that key, so they
    first claim it in the session's in-process claims (``session.claims``),
    waiting their turn within the acquire's timeout, then queue in etcd.  A
    timed-out acquire raises :class:`~etcdsync.errors.LockTimeout`: the
    ``async with`` body never runs unlocked.

    **Not re-entrant**: acquiring an object that is held raises
    :class:`~etcdsync.errors.LockError`; a second object for the same name and
    session acquired by the holder itself waits for the first one's release
    (deadlock until its timeout).  ``client.reentrant_lock(name)`` is the
    re-entrant form (:class:`~etcdsync.AsyncReentrantLock`).
    """

    def _new_key(self, session: AsyncSession) -> str:
        return f"{self._name}/{session.lease_id:x}"

    def _claim_key(self, session: AsyncSession) -> bytes:
        # The server-side key: equal relative keys in two namespaces are not one lock.
        return self._client.key_prefix + self._new_key(session).encode()
