"""The narrow client protocol the recipes are written against.

A recipe needs reads, txns, watches, paging, leases and the closed state - not
the whole client.  Typing the recipes against :class:`AsyncKVClient` (and
:class:`~etcdsync._async.concurrency.recipe_client.AsyncRecipeClient`, which adds
sessions) instead of the concrete client means they run unchanged on anything
that offers these calls: the client itself, a namespaced view of it
(:meth:`etcdsync.AsyncClient.namespace`), or a user's own wrapper.

Only the parameters the recipes pass are declared; an implementation may accept
more (the client does).  Nothing here imports the client module or a recipe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Protocol

from ..lease_types import Lease, LeaseLike, LeaseTimeToLive
from ..models import DeleteResponse, GetResponse, KeyValue, PutResponse, TxnResponse
from ..ops import Compare, Op, SortOrder, SortTarget
from .keepalive import AsyncKeepAlive
from .watcher import AsyncWatcher

__all__ = ["AsyncKVClient"]


class AsyncKVClient(Protocol):
    """KV, txn, watch and lease calls: what a recipe may ask of a client."""

    @property
    def closed(self) -> bool:
        """True once the client (or what it is a view of) was closed."""
        ...

    @property
    def key_prefix(self) -> bytes:
        """The prefix the keys of this client live under on the server: ``b""`` for
        a client, the namespace's prefix for a namespaced view.  Recipes key their
        in-process claims by it, so that two namespaces sharing a session never
        exclude each other over equal relative keys."""
        ...

    async def get(
        self,
        key: str | bytes,
        *,
        range_end: str | bytes | None = None,
        prefix: bool = False,
        limit: int = 0,
        revision: int = 0,
        sort_order: SortOrder | str | None = None,
        sort_target: SortTarget | str | None = None,
        keys_only: bool = False,
        max_create_revision: int = 0,
        timeout: float | None = None,
    ) -> GetResponse: ...

    async def put(
        self,
        key: str | bytes,
        value: str | bytes = b"",
        *,
        lease: LeaseLike = 0,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> PutResponse: ...

    async def delete(
        self,
        key: str | bytes,
        *,
        range_end: str | bytes | None = None,
        prefix: bool = False,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> DeleteResponse: ...

    async def txn(
        self,
        compare: Iterable[Compare] = (),
        success: Iterable[Op] = (),
        failure: Iterable[Op] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResponse: ...

    def iterate(
        self,
        key: str | bytes,
        *,
        range_end: str | bytes | None = None,
        prefix: bool = False,
        page_size: int = 1000,
        revision: int = 0,
        timeout: float | None = None,
    ) -> AsyncIterator[KeyValue]: ...

    async def watch(
        self,
        key: str | bytes,
        *,
        range_end: str | bytes | None = None,
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        no_put: bool = False,
        no_delete: bool = False,
        require_leader: bool = False,
        timeout: float | None = None,
    ) -> AsyncWatcher: ...

    async def grant(self, ttl: int, *, timeout: float | None = None) -> Lease: ...

    async def revoke(self, lease: LeaseLike, *, timeout: float | None = None) -> None: ...

    async def time_to_live(
        self, lease: LeaseLike, *, keys: bool = False, timeout: float | None = None
    ) -> LeaseTimeToLive: ...

    def keep_alive(self, lease: LeaseLike) -> AsyncKeepAlive: ...
