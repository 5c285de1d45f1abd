"""The client: one object with every etcd API, over one connection."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from .._config import DEFAULT_ENDPOINT, ChannelSettings, TLSConfig
from .._keyspace import ROOT
from .auth import AsyncAuthAPI
from .cluster import AsyncClusterAPI
from .concurrency.session import AsyncSessionPool
from .connection import AsyncConnection
from .kv import AsyncKV
from .lease import AsyncLeaseAPI
from .maintenance import AsyncMaintenanceAPI
from .namespace import AsyncNamespaceAPI
from .recipes import AsyncRecipesAPI
from .server_recipes import AsyncServerRecipesAPI
from .watch import AsyncWatchAPI

if TYPE_CHECKING:
    from .concurrency.recipe_client import AsyncRecipeClient


class AsyncClient(
    AsyncKV,
    AsyncLeaseAPI,
    AsyncWatchAPI,
    AsyncRecipesAPI,
    AsyncClusterAPI,
    AsyncMaintenanceAPI,
    AsyncAuthAPI,
    AsyncServerRecipesAPI,
    AsyncNamespaceAPI,
):
    """An etcd v3 client.

    >>> async with AsyncClient(["127.0.0.1:2379"]) as etcd:
    ...     await etcd.put("greeting", "hello")
    ...     (await etcd.get("greeting")).value
    b'hello'

    ``endpoints`` are tried in order; on a connection failure the client moves to
    the next one.  ``timeout`` is the default deadline of every call in seconds
    (``None``: no deadline), overridable per call.  ``tls`` enables TLS or mutual
    TLS; ``user``/``password`` enable etcd authentication (the token is renewed
    when it expires).  ``retries`` bounds the retries of calls that are safe to
    repeat.  ``settings`` tunes the gRPC channel (keepalive pings, message sizes).

    The client is safe to share between tasks.  Close it (or use ``async with``)
    to end its connections and background tasks; calls after ``close()`` raise
    :class:`~etcdsync.errors.ClientClosedError`.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] = (DEFAULT_ENDPOINT,),
        *,
        timeout: float | None = 10.0,
        tls: TLSConfig | None = None,
        user: str | None = None,
        password: str | None = None,
        retries: int = 3,
        settings: ChannelSettings | None = None,
    ) -> None:
        self._conn = AsyncConnection(
            endpoints,
            timeout=timeout,
            tls=tls,
            user=user,
            password=password,
            retries=retries,
            settings=settings or ChannelSettings(),
        )
        self._keyspace = ROOT
        self._sessions = AsyncSessionPool(self)
        self._conn.on_closing(self._sessions.close)

    @property
    def endpoints(self) -> list[str]:
        """The configured endpoints, as ``host:port``."""
        return list(self._conn.endpoints)

    @property
    def endpoint(self) -> str:
        """The endpoint requests currently go to."""
        return self._conn.endpoint

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._conn.closed

    async def close(self) -> None:
        """Revoke the shared sessions, then end every stream, background task and
        connection.  Idempotent."""
        await self._conn.close()

    async def __aenter__(self) -> AsyncClient:
        self._conn.check_usable()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} {','.join(self._conn.endpoints)} {state}>"


if TYPE_CHECKING:

    def _runs_recipes(client: AsyncClient) -> AsyncRecipeClient:
        return client  # mypy proves the client satisfies the recipes' protocol
