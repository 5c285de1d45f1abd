"""Typed responses, built from the wire messages; pure and IO-free."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Union

from ._pb import kv_pb2 as _kv_pb2

__all__ = [
    "CompactResponse",
    "DeleteResponse",
    "GetResponse",
    "KeyValue",
    "OpResponse",
    "PutResponse",
    "ResponseHeader",
    "TxnResponse",
]


@dataclass(frozen=True, slots=True)
class ResponseHeader:
    """Which member answered and the store revision when it did."""

    cluster_id: int
    member_id: int
    revision: int
    raft_term: int

    @classmethod
    def from_pb(cls, pb: Any) -> ResponseHeader:
        return cls(pb.cluster_id, pb.member_id, pb.revision, pb.raft_term)


class KeyValue:
    """One key as stored: value plus its revisions and lease.

    ``create_revision`` is the revision that created the key (it is the fencing
    token of a lock key); ``mod_revision`` the revision of its last write;
    ``version`` counts writes since creation; ``lease`` is 0 when unbound.

    Immutable.  Built from the wire message without copying its fields: a range
    of ten thousand keys costs one small object per key, and each field is read
    from the message when first asked for.
    """

    __slots__ = ("_pb",)

    _pb: Any

    def __init__(
        self,
        key: bytes,
        value: bytes = b"",
        create_revision: int = 0,
        mod_revision: int = 0,
        version: int = 0,
        lease: int = 0,
    ) -> None:
        object.__setattr__(
            self,
            "_pb",
            _kv_pb2.KeyValue(
                key=key,
                value=value,
                create_revision=create_revision,
                mod_revision=mod_revision,
                version=version,
                lease=lease,
            ),
        )

    @classmethod
    def from_pb(cls, pb: Any) -> KeyValue:
        kv = object.__new__(cls)
        object.__setattr__(kv, "_pb", pb)
        return kv

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    @property
    def key(self) -> bytes:
        return self._pb.key  # type: ignore[no-any-return]

    @property
    def value(self) -> bytes:
        return self._pb.value  # type: ignore[no-any-return]

    @property
    def create_revision(self) -> int:
        return self._pb.create_revision  # type: ignore[no-any-return]

    @property
    def mod_revision(self) -> int:
        return self._pb.mod_revision  # type: ignore[no-any-return]

    @property
    def version(self) -> int:
        return self._pb.version  # type: ignore[no-any-return]

    @property
    def lease(self) -> int:
        return self._pb.lease  # type: ignore[no-any-return]

    def _fields(self) -> tuple[bytes, bytes, int, int, int, int]:
        pb = self._pb
        return (pb.key, pb.value, pb.create_revision, pb.mod_revision, pb.version, pb.lease)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyValue):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        key, value, create, mod, version, lease = self._fields()
        return (
            f"KeyValue(key={key!r}, value={value!r}, create_revision={create}, "
            f"mod_revision={mod}, version={version}, lease={lease})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (KeyValue, self._fields())

    @property
    def key_str(self) -> str:
        """The key decoded as UTF-8."""
        return self.key.decode("utf-8")

    @property
    def value_str(self) -> str:
        """The value decoded as UTF-8."""
        return self.value.decode("utf-8")


def _prev(pb: Any) -> KeyValue | None:
    return KeyValue.from_pb(pb.prev_kv) if pb.HasField("prev_kv") else None


@dataclass(frozen=True, slots=True)
class GetResponse:
    """Result of a get: the matching keys, ``count`` of all matches, and ``more``.

    ``more`` is true when ``limit`` cut the result short.  ``count`` counts every
    match in the range, even those beyond the limit.
    """

    header: ResponseHeader
    kvs: list[KeyValue]
    count: int
    more: bool

    @classmethod
    def from_pb(cls, pb: Any) -> GetResponse:
        return cls(
            ResponseHeader.from_pb(pb.header),
            [KeyValue.from_pb(kv) for kv in pb.kvs],
            pb.count,
            pb.more,
        )

    @property
    def revision(self) -> int:
        """The store revision the read was served at."""
        return self.header.revision

    @property
    def kv(self) -> KeyValue | None:
        """The first (for a single-key get: the only) key, or None."""
        return self.kvs[0] if self.kvs else None

    @property
    def value(self) -> bytes | None:
        """The first key's value, or None when nothing matched."""
        return self.kvs[0].value if self.kvs else None

    def __iter__(self) -> Iterator[KeyValue]:
        return iter(self.kvs)

    def __len__(self) -> int:
        return len(self.kvs)


@dataclass(frozen=True, slots=True)
class PutResponse:
    """Result of a put; ``prev_kv`` is set when asked for and the key existed."""

    header: ResponseHeader
    prev_kv: KeyValue | None = None

    @classmethod
    def from_pb(cls, pb: Any) -> PutResponse:
        return cls(ResponseHeader.from_pb(pb.header), _prev(pb))

    @property
    def revision(self) -> int:
        """The revision this put created."""
        return self.header.revision


@dataclass(frozen=True, slots=True)
class DeleteResponse:
    """Result of a delete: how many keys went, and their last state if asked."""

    header: ResponseHeader
    deleted: int
    prev_kvs: list[KeyValue] = field(default_factory=list)

    @classmethod
    def from_pb(cls, pb: Any) -> DeleteResponse:
        return cls(
            ResponseHeader.from_pb(pb.header),
            pb.deleted,
            [KeyValue.from_pb(k) for k in pb.prev_kvs],
        )

    @property
    def revision(self) -> int:
        """The store revision after the delete."""
        return self.header.revision


OpResponse = Union[GetResponse, PutResponse, DeleteResponse, "TxnResponse"]


@dataclass(frozen=True, slots=True)
class TxnResponse:
    """Result of a txn: ``succeeded`` says which branch ran; ``responses`` its results.

    ``responses[i]`` is the typed response of the i-th op of the branch that ran
    (a nested txn gives a nested ``TxnResponse``).
    """

    header: ResponseHeader
    succeeded: bool
    responses: list[OpResponse]

    @classmethod
    def from_pb(cls, pb: Any) -> TxnResponse:
        return cls(
            ResponseHeader.from_pb(pb.header),
            pb.succeeded,
            [response_op_from_pb(r) for r in pb.responses],
        )

    @property
    def revision(self) -> int:
        """The store revision after the txn."""
        return self.header.revision


def response_op_from_pb(pb: Any) -> OpResponse:
    """Convert one ResponseOp (a txn branch result) to its typed response."""
    which = pb.WhichOneof("response")
    if which == "response_range":
        return GetResponse.from_pb(pb.response_range)
    if which == "response_put":
        return PutResponse.from_pb(pb.response_put)
    if which == "response_delete_range":
        return DeleteResponse.from_pb(pb.response_delete_range)
    return TxnResponse.from_pb(pb.response_txn)


@dataclass(frozen=True, slots=True)
class CompactResponse:
    """Result of a compaction."""

    header: ResponseHeader

    @classmethod
    def from_pb(cls, pb: Any) -> CompactResponse:
        return cls(ResponseHeader.from_pb(pb.header))
