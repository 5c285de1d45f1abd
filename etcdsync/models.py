"""Typed responses, built from the wire messages; pure and IO-free."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import FrozenInstanceError, dataclass, field
from typing import Any, NamedTuple, Union

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


class ResponseHeader:
    """Which member answered and the store revision when it did.

    Immutable.  Like :class:`KeyValue`, built from the wire message without copying
    its fields: every response has a header, and most callers read one field of it
    (``revision``) or none.
    """

    __slots__ = ("_pb",)
    __match_args__ = ("cluster_id", "member_id", "revision", "raft_term")

    _pb: Any

    def __init__(self, cluster_id: int, member_id: int, revision: int, raft_term: int) -> None:
        fields = _HeaderFields(cluster_id, member_id, revision, raft_term)
        object.__setattr__(self, "_pb", fields)

    @classmethod
    def from_pb(cls, pb: Any) -> ResponseHeader:
        header = _new(cls)
        _set_header_pb(header, pb)
        return header

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    @property
    def cluster_id(self) -> int:
        return self._pb.cluster_id  # type: ignore[no-any-return]

    @property
    def member_id(self) -> int:
        return self._pb.member_id  # type: ignore[no-any-return]

    @property
    def revision(self) -> int:
        return self._pb.revision  # type: ignore[no-any-return]

    @property
    def raft_term(self) -> int:
        return self._pb.raft_term  # type: ignore[no-any-return]

    def _fields(self) -> tuple[int, int, int, int]:
        pb = self._pb
        return (pb.cluster_id, pb.member_id, pb.revision, pb.raft_term)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResponseHeader) or other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        cluster_id, member_id, revision, raft_term = self._fields()
        return (
            f"ResponseHeader(cluster_id={cluster_id!r}, member_id={member_id!r}, "
            f"revision={revision!r}, raft_term={raft_term!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (ResponseHeader, self._fields())


class _HeaderFields(NamedTuple):
    """What a header built by hand holds in place of the wire message."""

    cluster_id: int
    member_id: int
    revision: int
    raft_term: int


_new = object.__new__
_set_header_pb = ResponseHeader.__dict__["_pb"].__set__


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
        kv = _new(cls)
        _set_kv_pb(kv, pb)
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


_set_kv_pb = KeyValue.__dict__["_pb"].__set__


def wrap_kvs(kvs: Any) -> list[KeyValue]:
    """``[KeyValue.from_pb(kv) for kv in kvs]``, faster: a range of ten thousand keys
    builds ten thousand of them (a third less CPU), a get one or none."""
    count = len(kvs)
    if count > 8:
        wrapped = list(map(_new, [KeyValue] * count))
        deque(map(_set_kv_pb, wrapped, kvs), maxlen=0)  # sets every _pb; keeps nothing
        return wrapped
    wrapped = []
    for pb in kvs:
        kv = _new(KeyValue)
        _set_kv_pb(kv, pb)
        wrapped.append(kv)
    return wrapped


def _prev(pb: Any) -> KeyValue | None:
    return KeyValue.from_pb(pb.prev_kv) if pb.HasField("prev_kv") else None


def _slot_setters(cls: type, *names: str) -> tuple[Any, ...]:
    """The slot descriptors' setters of a frozen dataclass: ``from_pb`` fills an
    instance with them, at half the cost of the generated ``__init__`` (which goes
    through ``object.__setattr__`` for every field)."""
    return tuple(cls.__dict__[name].__set__ for name in names)


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
        response = _new(cls)
        set_header, set_kvs, set_count, set_more = _GET_SETTERS
        header = _new(ResponseHeader)
        _set_header_pb(header, pb.header)
        set_header(response, header)
        set_kvs(response, wrap_kvs(pb.kvs))
        set_count(response, pb.count)
        set_more(response, pb.more)
        return response

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
        response = _new(cls)
        set_header, set_prev_kv = _PUT_SETTERS
        header = _new(ResponseHeader)
        _set_header_pb(header, pb.header)
        set_header(response, header)
        set_prev_kv(response, KeyValue.from_pb(pb.prev_kv) if pb.HasField("prev_kv") else None)
        return response

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
        response = _new(cls)
        set_header, set_deleted, set_prev_kvs = _DELETE_SETTERS
        header = _new(ResponseHeader)
        _set_header_pb(header, pb.header)
        set_header(response, header)
        set_deleted(response, pb.deleted)
        set_prev_kvs(response, wrap_kvs(pb.prev_kvs))
        return response

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
        response = _new(cls)
        set_header, set_succeeded, set_responses = _TXN_SETTERS
        header = _new(ResponseHeader)
        _set_header_pb(header, pb.header)
        set_header(response, header)
        set_succeeded(response, pb.succeeded)
        set_responses(response, [response_op_from_pb(r) for r in pb.responses])
        return response

    @property
    def revision(self) -> int:
        """The store revision after the txn."""
        return self.header.revision


def response_op_from_pb(pb: Any) -> OpResponse:
    """Convert one ResponseOp (a txn branch result) to its typed response."""
    which = pb.WhichOneof("response")
    convert = _OP_RESPONSES.get(which, TxnResponse.from_pb)
    return convert(getattr(pb, which or "response_txn"))  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class CompactResponse:
    """Result of a compaction."""

    header: ResponseHeader

    @classmethod
    def from_pb(cls, pb: Any) -> CompactResponse:
        return cls(ResponseHeader.from_pb(pb.header))


_GET_SETTERS = _slot_setters(GetResponse, "header", "kvs", "count", "more")
_PUT_SETTERS = _slot_setters(PutResponse, "header", "prev_kv")
_DELETE_SETTERS = _slot_setters(DeleteResponse, "header", "deleted", "prev_kvs")
_TXN_SETTERS = _slot_setters(TxnResponse, "header", "succeeded", "responses")
_OP_RESPONSES: dict[str | None, Any] = {
    "response_range": GetResponse.from_pb,
    "response_put": PutResponse.from_pb,
    "response_delete_range": DeleteResponse.from_pb,
}
