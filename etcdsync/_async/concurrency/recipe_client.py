"""What a recipe asks of its client: the KV protocol plus sessions.

:class:`AsyncRecipeClient` is :class:`~etcdsync._async.protocol.AsyncKVClient`
with the two session calls.  Every recipe is typed against it, never against the
client class, so recipes run on a namespaced view or any object with these calls.
"""

from __future__ import annotations

from typing import Protocol

from ...lease_types import LeaseLike
from ..protocol import AsyncKVClient
from .session import DEFAULT_SESSION_TTL, AsyncSession

__all__ = ["AsyncRecipeClient"]


class AsyncRecipeClient(AsyncKVClient, Protocol):
    """The client protocol of the recipes."""

    async def session(
        self, *, ttl: int = DEFAULT_SESSION_TTL, lease: LeaseLike | None = None
    ) -> AsyncSession:
        """A new session of its own (the caller closes it)."""
        ...

    async def shared_session(
        self, ttl: int = DEFAULT_SESSION_TTL, *, timeout: float | None = None
    ) -> AsyncSession:
        """The client's shared session for ``ttl``, replaced once lost; ``timeout``
        bounds its creation."""
        ...
