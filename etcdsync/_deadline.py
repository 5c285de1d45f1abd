"""Deadlines: one point in time shared by the several waits and requests of an operation.

Pure (no I/O, no flavour): both the asyncio and the threaded recipes compute
every "how long may I still wait" from a :class:`Deadline`, never by hand.
"""

from __future__ import annotations

import math
import time

from . import errors

__all__ = ["CLEANUP_MIN_TIMEOUT", "MIN_RPC_TIMEOUT", "Deadline"]

MIN_RPC_TIMEOUT = 0.5
"""Seconds granted to a request started at (or past) its operation's deadline: a
``timeout=0`` operation can still make the one read that decides it."""

CLEANUP_MIN_TIMEOUT = 0.2
"""Seconds granted to the cleanup request (delete a queued key, withdraw a
candidacy) of an operation that failed at or past its deadline; a cleanup that
does not fit goes on in the background."""


class Deadline:
    """A point in time (monotonic clock) by which an operation must end; None: never.

    ``Deadline(None)`` and ``Deadline(float("inf"))`` never expire:
    :meth:`remaining` and :meth:`rpc_timeout` are then None ("no limit"), which
    every wait and request of the library accepts.  A negative, NaN, boolean or
    non-numeric timeout raises :class:`~etcdsync.errors.InvalidRequest`.
    """

    __slots__ = ("at", "timeout")

    def __init__(self, timeout: float | None) -> None:
        if timeout is not None and (
            not isinstance(timeout, (int, float))
            or isinstance(timeout, bool)
            or math.isnan(timeout)
            or timeout < 0
        ):
            raise errors.InvalidRequest(
                f"timeout must be a number >= 0 (inf: no deadline) or None, got {timeout!r}"
            )
        if timeout is not None and math.isinf(timeout):
            timeout = None
        self.timeout = timeout
        """The timeout in seconds; None without a deadline (``inf`` included)."""
        self.at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left (never negative), or None without a deadline."""
        if self.at is None:
            return None
        return max(self.at - time.monotonic(), 0.0)

    def expired(self) -> bool:
        """True once the deadline has passed (never without one)."""
        return self.at is not None and time.monotonic() >= self.at

    def rpc_timeout(self) -> float | None:
        """The timeout for one request: what is left, at least :data:`MIN_RPC_TIMEOUT`;
        None (the client's default) without a deadline."""
        remaining = self.remaining()
        return None if remaining is None else max(remaining, MIN_RPC_TIMEOUT)

    def cleanup_timeout(self) -> float | None:
        """The timeout for the cleanup request of an operation that is failing: what
        is left, at least :data:`CLEANUP_MIN_TIMEOUT`; None (the client's default)
        without a deadline."""
        remaining = self.remaining()
        return None if remaining is None else max(remaining, CLEANUP_MIN_TIMEOUT)

    def __repr__(self) -> str:
        return f"<Deadline timeout={self.timeout!r} remaining={self.remaining()!r}>"
