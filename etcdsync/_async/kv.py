"""KV requests: get, put, delete, compact, txn, and paging through large ranges.

Every KV request takes one path, :meth:`AsyncKV._request`: the verb builds its
wire request (``ops.py``), the client's key space rewrites it (a namespace adds
its prefix), the connection sends it, and the key space strips the response.  A
namespace, a trace span or a metric therefore applies in one place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from .. import errors
from .._keyspace import KeySpace
from .._methods import KV_COMPACT, KV_DELETE_RANGE, KV_PUT, KV_RANGE, KV_TXN, Method
from .._pb import rpc_pb2 as rpc
from ..lease_types import LeaseLike
from ..models import (
    CompactResponse,
    DeleteResponse,
    GetResponse,
    KeyValue,
    OpResponse,
    PutResponse,
    TxnResponse,
    wrap_kvs,
)
from ..ops import (
    Compare,
    Op,
    SortOrder,
    SortTarget,
    delete_request,
    put_request,
    range_request,
    txn_request,
)
from .connection import AsyncConnection
from .txn import AsyncTxn


def _read_only(request: rpc.TxnRequest) -> bool:
    """A txn without writes can be repeated safely."""
    for op in (*request.success, *request.failure):
        which = op.WhichOneof("request")
        if which == "request_txn":
            if not _read_only(op.request_txn):
                return False
        elif which != "request_range":
            return False
    return True


def _only_reads(ops: list[Op]) -> bool:
    """:func:`_read_only` for a branch still held as :class:`Op` objects (no walk
    through the wire message)."""
    for op in ops:
        request = op.request
        if type(request) is rpc.RangeRequest:
            continue
        if type(request) is rpc.TxnRequest and _read_only(request):
            continue
        return False
    return True


# The wire method of each request type, and whether it is safe to repeat.
_ROUTES: dict[type, tuple[Method, bool]] = {
    rpc.RangeRequest: (KV_RANGE, True),
    rpc.PutRequest: (KV_PUT, False),
    rpc.DeleteRangeRequest: (KV_DELETE_RANGE, False),
    rpc.TxnRequest: (KV_TXN, False),
    rpc.CompactionRequest: (KV_COMPACT, False),
}

# The routes of the verbs, which know their request type.
_GET = _ROUTES[rpc.RangeRequest]
_PUT = _ROUTES[rpc.PutRequest]
_DELETE = _ROUTES[rpc.DeleteRangeRequest]
_COMPACT = _ROUTES[rpc.CompactionRequest]
_WRITING_TXN = (KV_TXN, False)
_READING_TXN = (KV_TXN, True)

# The typed response of each request type (for do()).
_RESPONSES: dict[type, Any] = {
    rpc.RangeRequest: GetResponse,
    rpc.PutRequest: PutResponse,
    rpc.DeleteRangeRequest: DeleteResponse,
    rpc.TxnRequest: TxnResponse,
}


class AsyncKV:
    """Key-value requests; mixed into :class:`etcdsync.AsyncClient` and its namespaces."""

    _conn: AsyncConnection
    _keyspace: KeySpace

    @property
    def key_prefix(self) -> bytes:
        """The prefix every key of this client gets on the server (``b""`` unless it
        is a namespaced view: see :meth:`namespace`)."""
        return self._keyspace.prefix

    async def _request(
        self, request: Any, timeout: float | None, route: tuple[Method, bool] | None = None
    ) -> Any:
        """Send one KV request through the key space; the one path of every KV verb.

        ``route`` is the request's method and whether it may be repeated, when the
        caller knows them (found from the request otherwise).
        """
        if route is None:
            route = _ROUTES[type(request)]
            if route[0] is KV_TXN:  # a txn that only reads may be repeated
                route = _READING_TXN if _read_only(request) else _WRITING_TXN
        keyspace = self._keyspace
        if keyspace.prefix:
            request = keyspace.outbound(request)
        response = await self._conn.unary(route[0], request, timeout=timeout, idempotent=route[1])
        if keyspace.prefix:
            keyspace.inbound(response)
        return response

    async def get(
        self,
        key: str | bytes,
        *,
        range_end: str | bytes | None = None,
        prefix: bool = False,
        from_key: bool = False,
        limit: int = 0,
        revision: int = 0,
        sort_order: SortOrder | str | None = None,
        sort_target: SortTarget | str | None = None,
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
        min_create_revision: int = 0,
        max_create_revision: int = 0,
        timeout: float | None = None,
    ) -> GetResponse:
        """Read a key or a range of keys; options as in :meth:`etcdsync.ops.Op.get`.

        ``timeout`` overrides the client's default deadline for this call.
        Raises :class:`~etcdsync.errors.CompactedError` or
        :class:`~etcdsync.errors.FutureRevisionError` for an unavailable ``revision``.
        """
        request = range_request(
            key,
            range_end=range_end,
            prefix=prefix,
            from_key=from_key,
            limit=limit,
            revision=revision,
            sort_order=sort_order,
            sort_target=sort_target,
            serializable=serializable,
            keys_only=keys_only,
            count_only=count_only,
            min_mod_revision=min_mod_revision,
            max_mod_revision=max_mod_revision,
            min_create_revision=min_create_revision,
            max_create_revision=max_create_revision,
        )
        return GetResponse.from_pb(await self._request(request, timeout, _GET))

    async def put(
        self,
        key: str | bytes,
        value: str | bytes = b"",
        *,
        lease: LeaseLike = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
        timeout: float | None = None,
    ) -> PutResponse:
        """Write ``value`` at ``key``; options as in :meth:`etcdsync.ops.Op.put`.

        A put is never retried after it may have reached the server: on
        :class:`~etcdsync.errors.Unavailable` or :class:`~etcdsync.errors.Timeout`
        its outcome is unknown.
        """
        request = put_request(
            key,
            value,
            lease=lease,
            prev_kv=prev_kv,
            ignore_value=ignore_value,
            ignore_lease=ignore_lease,
        )
        try:
            response = await self._request(request, timeout, _PUT)
        except errors.LeaseNotFoundError as exc:
            exc.lease_id = request.lease  # the server's message does not say which
            raise
        return PutResponse.from_pb(response)

    async def delete(
        self,
        key: str | bytes,
        *,
        range_end: str | bytes | None = None,
        prefix: bool = False,
        from_key: bool = False,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> DeleteResponse:
        """Delete a key or a range; ``deleted`` in the response counts what went."""
        request = delete_request(
            key, range_end=range_end, prefix=prefix, from_key=from_key, prev_kv=prev_kv
        )
        return DeleteResponse.from_pb(await self._request(request, timeout, _DELETE))

    async def compact(
        self, revision: int, *, physical: bool = False, timeout: float | None = None
    ) -> CompactResponse:
        """Discard history older than ``revision``.

        ``physical=True`` waits until the compaction is applied to the backend.
        """
        if not isinstance(revision, int) or isinstance(revision, bool) or revision <= 0:
            raise errors.InvalidRequest(f"revision must be a positive int, got {revision!r}")
        request = rpc.CompactionRequest(revision=revision, physical=physical)
        return CompactResponse.from_pb(await self._request(request, timeout, _COMPACT))

    async def txn(
        self,
        compare: Iterable[Compare] = (),
        success: Iterable[Op] = (),
        failure: Iterable[Op] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResponse:
        """Run ``success`` if every compare holds, else ``failure``, atomically.

        A txn that only reads is retried on transient failures; one that writes
        is not (its outcome is unknown on Unavailable/Timeout).
        """
        success, failure = list(success), list(failure)
        request = txn_request(compare, success, failure)
        route = _READING_TXN if _only_reads(success) and _only_reads(failure) else _WRITING_TXN
        return TxnResponse.from_pb(await self._request(request, timeout, route))

    def transaction(self) -> AsyncTxn:
        """Start a fluent txn: ``.If(...).Then(...).Else(...)`` then ``commit()``."""
        return AsyncTxn(self._txn_request)

    async def _txn_request(self, request: rpc.TxnRequest, timeout: float | None) -> TxnResponse:
        return TxnResponse.from_pb(await self._request(request, timeout))

    async def do(self, op: Op, *, timeout: float | None = None) -> OpResponse:
        """Execute one :class:`~etcdsync.ops.Op` and return its typed response."""
        if not isinstance(op, Op):
            raise errors.InvalidRequest(f"do() takes an Op, got {type(op).__name__}")
        response = await self._request(op.request, timeout)
        result: OpResponse = _RESPONSES[type(op.request)].from_pb(response)
        return result

    async def iterate(
        self,
        key: str | bytes,
        *,
        range_end: str | bytes | None = None,
        prefix: bool = False,
        from_key: bool = False,
        page_size: int = 1000,
        revision: int = 0,
        keys_only: bool = False,
        serializable: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[KeyValue]:
        """Yield every key of a range in key order, fetched ``page_size`` at a time.

        All pages are read at one revision (the first page's, or ``revision``),
        so the result is a consistent snapshot however large the range, without
        one giant response.  ``timeout`` applies to each page.  If the pinned
        revision is compacted while paging, :class:`~etcdsync.errors.CompactedError`
        is raised.
        """
        if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size <= 0:
            raise errors.InvalidRequest(f"page_size must be a positive int, got {page_size!r}")
        first = range_request(  # validates every option before the first page
            key,
            range_end=range_end,
            prefix=prefix,
            from_key=from_key,
            revision=revision,
            keys_only=keys_only,
            serializable=serializable,
        )
        start, end = first.key, first.range_end
        while True:
            request = rpc.RangeRequest(
                key=start,
                range_end=end,
                limit=page_size,
                revision=revision,
                keys_only=keys_only,
                serializable=serializable,
            )
            response = await self._request(request, timeout, _GET)
            revision = revision or response.header.revision
            for kv in wrap_kvs(response.kvs):
                yield kv
            if not response.more or not response.kvs:
                return
            # The smallest key after the last one seen.
            start = response.kvs[-1].key + b"\0"
