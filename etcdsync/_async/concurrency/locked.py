"""Locked functions: ``@etcd.locked(name)`` runs a function holding ``etcd.lock(name)``.

Each call creates its own :class:`~.mutex.AsyncMutex` (the Go/etcdctl key
layout), acquires it - waiting at most ``timeout`` seconds, else raising
:class:`~etcdsync.errors.LockTimeout` without running the body - runs the
function and releases the lock when it returns or raises.  While the body runs,
the held lock is :func:`etcdsync.current_lock` (a context variable, see
:mod:`etcdsync.locked_types`): its fencing token guards what the body writes.

The asyncio client's decorator wraps ``async def`` functions, the sync client's
plain functions; the wrong kind is refused at decoration time.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from ... import errors
from ..._backends._async import FLAVOUR
from ...locked_types import reset_current, set_current
from .mutex import AsyncMutex
from .recipe_client import AsyncRecipeClient
from .session import AsyncSession

__all__ = ["locked"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def locked(
    client: AsyncRecipeClient,
    name: str,
    *,
    ttl: int | None = None,
    timeout: float | None = None,
    session: AsyncSession | None = None,
) -> Callable[[Callable[_P, Awaitable[_R]]], Callable[_P, Awaitable[_R]]]:
    """A decorator: each call of the function runs holding the lock ``name``.

    ``ttl`` (seconds; the shared session's, default 60) or ``session`` is what
    the lock's key is bound to, as for ``client.lock()``.  ``timeout`` bounds
    the wait for the lock (None: wait as long as it takes; 0: take it only if
    it is free now); when it passes the call raises
    :class:`~etcdsync.errors.LockTimeout` and the body does not run.  The
    arguments are checked now: a bad name, ttl or timeout raises
    :class:`~etcdsync.errors.InvalidRequest` at decoration time.
    """
    AsyncMutex(client, name, session=session, ttl=ttl, timeout=timeout)  # checks the arguments

    def decorate(fn: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
        if not callable(fn):
            raise errors.InvalidRequest(f"@locked decorates a function, got {fn!r}")
        if inspect.iscoroutinefunction(fn) != (FLAVOUR == "async"):
            wanted = "coroutine functions" if FLAVOUR == "async" else "plain functions"
            raise errors.InvalidRequest(
                f"the {FLAVOUR} client's locked() decorates {wanted}; {fn!r} is not one "
                "(use the other client's decorator)"
            )

        @functools.wraps(fn)
        async def call_locked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            lock = AsyncMutex(client, name, session=session, ttl=ttl, timeout=timeout)
            async with lock:
                token = set_current(lock)
                try:
                    return await fn(*args, **kwargs)
                finally:
                    reset_current(token)

        return call_locked

    return decorate
