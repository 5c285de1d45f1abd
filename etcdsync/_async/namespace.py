"""Namespaced views of a client: the whole API, confined to the keys under a prefix.

``etcd.namespace("tenant-a/")`` returns an :class:`AsyncNamespace` that shares the
client's connection, watch streams, keepalive stream and shared sessions, but
whose every key lives under ``tenant-a/``: keys are prefixed on the way out and
stripped on the way back (responses, watch events, ``prev_kv``, txn
sub-responses, ``time_to_live(keys=True)``), and ranges (``prefix=True``,
``from_key=True``, an explicit ``range_end``, the empty key) never reach outside
the prefix.  Recipes run inside it unchanged and keep Go's key layout, so
``etcd.namespace("a/").lock("x")`` and ``etcdctl lock a/x`` contend for one lock.

Leases are not namespaced (etcd has one lease space): a namespace grants,
revokes and keeps alive leases like its client.  Cluster, maintenance and auth
calls are cluster-wide and stay on the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._keyspace import KeySpace
from .concurrency.session import AsyncSessionPool
from .connection import AsyncConnection
from .kv import AsyncKV
from .lease import AsyncLeaseAPI
from .recipes import AsyncRecipesAPI
from .watch import AsyncWatchAPI

if TYPE_CHECKING:
    from .concurrency.recipe_client import AsyncRecipeClient

__all__ = ["AsyncNamespace", "AsyncNamespaceAPI"]


class AsyncNamespaceAPI:
    """``namespace(prefix)``; mixed into :class:`etcdsync.AsyncClient` and
    :class:`AsyncNamespace` (so namespaces nest)."""

    _conn: AsyncConnection
    _keyspace: KeySpace
    _sessions: AsyncSessionPool

    def namespace(self, prefix: str | bytes) -> AsyncNamespace:
        """A view of this client confined to the keys under ``prefix``.

        ``etcd.namespace("a/").namespace("b/")`` is the namespace ``a/b/``.  The
        view needs no closing: it lives as long as the client.
        """
        return AsyncNamespace(self._conn, self._keyspace.child(prefix), self._sessions)


class AsyncNamespace(AsyncKV, AsyncLeaseAPI, AsyncWatchAPI, AsyncRecipesAPI, AsyncNamespaceAPI):
    """A client's KV, txn, watch, lease and recipe API under a key prefix.

    Made by :meth:`etcdsync.AsyncClient.namespace`; see :mod:`this module
    <etcdsync._async.namespace>` for how keys and ranges map.
    """

    def __init__(
        self, conn: AsyncConnection, keyspace: KeySpace, sessions: AsyncSessionPool
    ) -> None:
        self._conn = conn
        self._keyspace = keyspace
        self._sessions = sessions

    @property
    def prefix(self) -> bytes:
        """The full prefix of this namespace (nested prefixes joined)."""
        return self._keyspace.prefix

    @property
    def closed(self) -> bool:
        """True once the client this is a view of was closed."""
        return self._conn.closed

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} {self.prefix!r} {state}>"


if TYPE_CHECKING:

    def _runs_recipes(view: AsyncNamespace) -> AsyncRecipeClient:
        return view  # mypy proves the namespace satisfies the recipes' protocol
