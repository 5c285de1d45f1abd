"""Typed responses, built from the wire messages; pure and IO-free."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Union

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


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as stored: value plus its revisions and lease.

    ``create_revision`` is the revision that created the key (it is the fencing
    token of a lock key); ``mod_revision`` the revision of its last write;
    ``version`` counts writes since creation; ``lease`` is 0 when unbound.
    """

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, pb: Any) -> KeyValue:
        return cls(pb.key, pb.value, pb.create_revision, pb.mod_revision, pb.version, pb.lease)

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
