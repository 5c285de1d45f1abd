"""The lock a locked function holds, for its body: ``etcdsync.current_lock()``; pure.

``@etcd.locked(name)`` runs the decorated function holding ``etcd.lock(name)``
(see :mod:`etcdsync._async.concurrency.locked`).  While the body runs, the held
lock is the value of one :class:`contextvars.ContextVar`, so the body - and any
function it calls, in the same thread or asyncio task - reads it with
:func:`current_lock` to pass the fencing token on or to guard a write::

    @etcd.locked("jobs/nightly", ttl=30, timeout=0)
    def nightly() -> None:
        lock = current_lock()
        assert lock is not None
        storage.write(report(), fencing_token=lock.fencing_token)
        lock.guarded_txn([Op.put("jobs/nightly/last-run", today())])

A context variable works for both flavours: each asyncio task has its own
context (a task created by the body copies it, and so sees the lock too), and
each thread has its own (a thread started by the body does *not* see it: pass
the lock along, or run the thread's target in ``contextvars.copy_context()``).
Nested locked functions see the innermost lock; the outer one is restored when
the inner function returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar, Token
from typing import Any, Protocol

from .ops import Compare, Op

__all__ = ["HeldLock", "current_lock"]


class _Flag(Protocol):
    def is_set(self) -> bool: ...


class HeldLock(Protocol):
    """What a held lock offers in both flavours (a ``Mutex`` or an ``AsyncMutex``).

    ``guarded_txn`` returns a ``TxnResponse`` (the sync client's) or an awaitable
    of one (the asyncio client's): ``await`` it in ``async def`` code.
    """

    @property
    def name(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def fencing_token(self) -> int: ...

    @property
    def held(self) -> bool: ...

    @property
    def lost(self) -> _Flag: ...

    def is_owner(self) -> Compare: ...

    def guarded_txn(
        self,
        success: Iterable[Op],
        failure: Iterable[Op] = ...,
        compare: Iterable[Compare] = ...,
        *,
        timeout: float | None = ...,
    ) -> Any: ...


_CURRENT: ContextVar[HeldLock | None] = ContextVar("etcdsync_current_lock", default=None)


def current_lock() -> HeldLock | None:
    """The lock held by the innermost ``@locked`` function running in this thread or
    asyncio task, or None outside of one.

    Its ``fencing_token`` (the lock key's create revision, growing with every new
    holder) is what to hand to a resource outside etcd; ``is_owner()`` and
    ``guarded_txn()`` guard writes in etcd; ``lost`` tells when the hold is lost.
    """
    return _CURRENT.get()


def set_current(lock: HeldLock) -> Token[HeldLock | None]:
    """Make ``lock`` the current lock (for the decorator); returns the reset token."""
    return _CURRENT.set(lock)


def reset_current(token: Token[HeldLock | None]) -> None:
    """Restore the current lock of before :func:`set_current`."""
    _CURRENT.reset(token)
