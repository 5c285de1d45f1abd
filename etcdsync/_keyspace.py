"""Key spaces: the prefix a namespaced client adds to keys on the way out and
strips on the way back.

Every KV request, txn (its compares and nested ops included), watch creation and
lease time-to-live answer passes through the client's :class:`KeySpace` (see the
one request path in ``_async/kv.py``).  The root key space (no prefix) changes
nothing and costs one attribute test; a namespace's rewrites requests on copies
(never the caller's :class:`~etcdsync.ops.Op`) and strips the prefix from
responses in place (they are fresh from the wire).

Ranges map as Go's ``namespace`` package maps them, so nothing outside the prefix
can be reached: a key ``k`` becomes ``prefix + k``; a range end of ``"\\0"``
(``from_key``, or "every key") becomes the end of the prefix's range; any other
range end ``e`` becomes ``prefix + e``.  An empty key never reaches the server
unprefixed, and the key equal to the prefix itself (an empty key inside the
namespace) is never part of a range.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ._keys import ALL_KEYS_END, prefix_end, to_key
from ._pb import kv_pb2
from ._pb import rpc_pb2 as rpc
from .errors import InvalidRequest

__all__ = ["ROOT", "KeySpace"]

_M = TypeVar("_M")

# The requests that carry keys (a CompactionRequest, say, passes unchanged).
_KEYED = (
    rpc.RangeRequest,
    rpc.PutRequest,
    rpc.DeleteRangeRequest,
    rpc.TxnRequest,
    rpc.WatchCreateRequest,
)


class KeySpace:
    """The keys under one prefix, seen without it."""

    __slots__ = ("_end", "_length", "prefix")

    def __init__(self, prefix: bytes = b"") -> None:
        self.prefix = prefix
        self._length = len(prefix)
        self._end = prefix_end(prefix) if prefix else ALL_KEYS_END

    def child(self, prefix: object) -> KeySpace:
        """The key space of ``prefix`` inside this one (prefixes concatenate)."""
        raw = to_key(prefix, allow_empty=True)
        if not raw:
            raise InvalidRequest("a namespace prefix must not be empty")
        return KeySpace(self.prefix + raw)

    @property
    def is_root(self) -> bool:
        return not self._length

    # --- outbound: requests are rewritten on copies ----------------------------------------

    def outbound(self, request: _M) -> _M:
        """The request with every key and range in this key space (a copy)."""
        if not self._length or not isinstance(request, _KEYED):
            return request
        original: Any = request
        copy = type(original)()
        copy.CopyFrom(original)
        self._prefix_request(copy)
        return copy  # type: ignore[no-any-return]

    def _prefix_request(self, request: Any) -> None:
        if isinstance(request, rpc.TxnRequest):
            for compare in request.compare:
                self._prefix_range(compare)
            for op in (*request.success, *request.failure):
                which = op.WhichOneof("request")
                if which is not None:
                    self._prefix_request(getattr(op, which))
        else:  # RangeRequest, PutRequest, DeleteRangeRequest, WatchCreateRequest
            self._prefix_range(request)

    def _prefix_range(self, message: Any) -> None:
        message.key = self.prefix + message.key
        end = getattr(message, "range_end", None)
        if end is None:  # a PutRequest has no range
            return
        if end == ALL_KEYS_END:
            message.range_end = self._end
        elif end:
            message.range_end = self.prefix + end

    # --- inbound: responses are stripped in place -------------------------------------------

    def inbound(self, response: _M) -> _M:
        """Strip this key space's prefix from every key of a response."""
        if self._length:
            self._strip_response(response)
        return response

    def _strip_response(self, response: Any) -> None:
        if isinstance(response, rpc.RangeResponse):
            self._strip_kvs(response.kvs)
        elif isinstance(response, rpc.PutResponse):
            if response.HasField("prev_kv"):
                self._strip_kv(response.prev_kv)
        elif isinstance(response, rpc.DeleteRangeResponse):
            self._strip_kvs(response.prev_kvs)
        elif isinstance(response, rpc.TxnResponse):
            for op in response.responses:
                which = op.WhichOneof("response")
                if which is not None:
                    self._strip_response(getattr(op, which))
        elif isinstance(response, rpc.LeaseTimeToLiveResponse):
            # A lease may hold keys outside the namespace: those are not ours to show.
            mine = [key[self._length :] for key in response.keys if self._owns(key)]
            del response.keys[:]
            response.keys.extend(mine)

    def strip_event(self, event: kv_pb2.Event) -> None:
        """Strip the prefix from a watch event's key-values (in place)."""
        if self._length:
            self._strip_kv(event.kv)
            if event.HasField("prev_kv"):
                self._strip_kv(event.prev_kv)

    def _strip_kvs(self, kvs: Any) -> None:
        for kv in kvs:
            self._strip_kv(kv)

    def _strip_kv(self, kv: Any) -> None:
        if kv.key.startswith(self.prefix):
            kv.key = kv.key[self._length :]

    def _owns(self, key: bytes) -> bool:
        return key.startswith(self.prefix) and len(key) > self._length

    def __repr__(self) -> str:
        return f"<KeySpace {self.prefix!r}>"


ROOT = KeySpace()
"""The whole keyspace: no prefix, no rewriting."""
