"""Request builders: :class:`Op` (get/put/delete/txn) and :class:`Compare`.

Pure and IO-free, shared by the sync and async clients.  An ``Op`` is what
``client.do(op)`` executes and what a txn's branches hold; ``Compare`` is a txn
guard.  Every option the etcd v3 API offers is a keyword argument here; invalid
combinations raise :class:`etcdsync.errors.InvalidRequest` at build time, before
anything is sent.

>>> from etcdsync.ops import Op, Compare
>>> guard = Compare.version("config/a") == 0          # "key does not exist"
>>> op = Op.put("config/a", b"1", prev_kv=True)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ._keys import key_range, to_bytes, to_key
from ._pb import rpc_pb2 as rpc
from .errors import InvalidRequest
from .lease_types import LeaseLike

__all__ = ["Compare", "CompareResult", "CompareTarget", "Op", "SortOrder", "SortTarget"]


class SortOrder(enum.IntEnum):
    """Order of a ranged get's results (``NONE`` keeps etcd's key order)."""

    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.IntEnum):
    """Field a ranged get sorts by."""

    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


# The wire fields are int64: protobuf would raise a bare ValueError past this.
_INT64_MAX = 2**63 - 1

# The builders skip every check when an int option is this very object: the default
# 0 (CPython has one 0; a 0 that is another object, or a False, takes the checked path).
_ZERO = 0
_new = object.__new__


def _check_revision(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _INT64_MAX:
        raise InvalidRequest(f"{name} must be an int in [0, 2**63), got {value!r}")
    return value


def _check_flag(name: str, value: bool) -> bool:
    # protobuf raises TypeError for a str and silently accepts ints: refuse both.
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be a bool, got {value!r}")
    return value


_SortEnum = TypeVar("_SortEnum", SortOrder, SortTarget)


def _sort_option(kind: type[_SortEnum], value: _SortEnum | str | None) -> _SortEnum | None:
    if value is None:
        return None
    member: _SortEnum | None = None
    if isinstance(value, str):
        member = kind.__members__.get(value.upper())
    elif isinstance(value, int) and not isinstance(value, bool):
        member = next((m for m in kind if m.value == value), None)
    if member is None:
        names = ", ".join(m.name.lower() for m in kind)
        raise InvalidRequest(f"unknown {kind.__name__} {value!r}; use one of {names}")
    return member


def _parse_sort(
    sort_order: SortOrder | str | None, sort_target: SortTarget | str | None
) -> tuple[int, int]:
    order = _sort_option(SortOrder, sort_order)
    target = _sort_option(SortTarget, sort_target)
    if target is not None and order is None:
        # etcd ignores a target without an order; ascending is what callers mean.
        order = SortOrder.ASCEND
    return int(order or SortOrder.NONE), int(target or SortTarget.KEY)


def range_request(
    key: object,
    *,
    range_end: object | None = None,
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
) -> rpc.RangeRequest:
    """Build a RangeRequest; see :meth:`Op.get` for the options."""
    if range_end is None and prefix is False and from_key is False:
        # One key (the common call): no range arithmetic.
        raw_key, raw_end = (key if type(key) is bytes and key else to_key(key)), b""
    else:
        raw_key, raw_end = key_range(key, range_end=range_end, prefix=prefix, from_key=from_key)
    if (
        limit is _ZERO
        and revision is _ZERO
        and sort_order is None
        and sort_target is None
        and serializable is False
        and keys_only is False
        and count_only is False
        and min_mod_revision is _ZERO
        and max_mod_revision is _ZERO
        and min_create_revision is _ZERO
        and max_create_revision is _ZERO
    ):
        # Every option at its default (nothing to check, nothing to set): the other
        # fields keep their zero values, exactly as below.
        return rpc.RangeRequest(key=raw_key, range_end=raw_end)
    order, target = _parse_sort(sort_order, sort_target)
    return rpc.RangeRequest(
        key=raw_key,
        range_end=raw_end,
        limit=_check_revision("limit", limit),
        revision=_check_revision("revision", revision),
        sort_order=order,  # type: ignore[arg-type]
        sort_target=target,  # type: ignore[arg-type]
        serializable=_check_flag("serializable", serializable),
        keys_only=_check_flag("keys_only", keys_only),
        count_only=_check_flag("count_only", count_only),
        min_mod_revision=_check_revision("min_mod_revision", min_mod_revision),
        max_mod_revision=_check_revision("max_mod_revision", max_mod_revision),
        min_create_revision=_check_revision("min_create_revision", min_create_revision),
        max_create_revision=_check_revision("max_create_revision", max_create_revision),
    )


def put_request(
    key: object,
    value: object = b"",
    *,
    lease: LeaseLike = 0,
    prev_kv: bool = False,
    ignore_value: bool = False,
    ignore_lease: bool = False,
) -> rpc.PutRequest:
    """Build a PutRequest; see :meth:`Op.put` for the options."""
    raw_value = value if type(value) is bytes else to_bytes(value, "value")
    if lease is _ZERO and prev_kv is False and ignore_value is False and ignore_lease is False:
        # No option (the common call): nothing to check but the key.
        return rpc.PutRequest(
            key=key if type(key) is bytes and key else to_key(key), value=raw_value
        )
    for name, flag in (
        ("prev_kv", prev_kv),
        ("ignore_value", ignore_value),
        ("ignore_lease", ignore_lease),
    ):
        _check_flag(name, flag)
    if ignore_value and raw_value:
        raise InvalidRequest("ignore_value=True keeps the current value: pass no value")
    if ignore_lease and lease:
        raise InvalidRequest("ignore_lease=True keeps the current lease: pass no lease")
    return rpc.PutRequest(
        key=to_key(key),
        value=raw_value,
        lease=_lease_id(lease),
        prev_kv=prev_kv,
        ignore_value=ignore_value,
        ignore_lease=ignore_lease,
    )


def delete_request(
    key: object,
    *,
    range_end: object | None = None,
    prefix: bool = False,
    from_key: bool = False,
    prev_kv: bool = False,
) -> rpc.DeleteRangeRequest:
    """Build a DeleteRangeRequest; see :meth:`Op.delete` for the options."""
    if range_end is None and prefix is False and from_key is False and prev_kv is False:
        # One key, no option (the common call).
        return rpc.DeleteRangeRequest(key=key if type(key) is bytes and key else to_key(key))
    raw_key, raw_end = key_range(key, range_end=range_end, prefix=prefix, from_key=from_key)
    return rpc.DeleteRangeRequest(
        key=raw_key, range_end=raw_end, prev_kv=_check_flag("prev_kv", prev_kv)
    )


def _lease_id(lease: object) -> int:
    lease_id = getattr(lease, "id", lease)  # accept a Lease object or a plain id
    if not isinstance(lease_id, int) or isinstance(lease_id, bool):
        raise InvalidRequest(f"lease must be a lease id (int >= 0), got {lease!r}")
    if not 0 <= lease_id <= _INT64_MAX:
        raise InvalidRequest(f"lease must be a lease id (int >= 0), got {lease!r}")
    return lease_id


class Op:
    """One KV operation: a get, put, delete or nested txn.

    Build with :meth:`get`, :meth:`put`, :meth:`delete` or :meth:`txn`; run with
    ``client.do(op)`` or place in a txn branch.
    """

    __slots__ = ("depth", "kind", "request")

    kind: str
    request: rpc.RangeRequest | rpc.PutRequest | rpc.DeleteRangeRequest | rpc.TxnRequest
    depth: int
    """How many txns deep this op nests (0 for a get, put or delete)."""

    def __init__(
        self,
        kind: str,
        request: rpc.RangeRequest | rpc.PutRequest | rpc.DeleteRangeRequest | rpc.TxnRequest,
        depth: int = 0,
    ) -> None:
        self.kind = kind
        self.request = request
        self.depth = depth

    def __repr__(self) -> str:
        if isinstance(self.request, rpc.TxnRequest):
            return "Op.txn(...)"
        return f"Op.{self.kind}({self.request.key!r})"

    @classmethod
    def get(
        cls,
        key: object,
        *,
        range_end: object | None = None,
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
    ) -> Op:
        """Read a key or a range.

        ``range_end`` reads ``[key, range_end)``; ``prefix=True`` every key starting
        with ``key``; ``from_key=True`` every key ``>= key``.  ``limit`` caps the
        number of keys (0 = no cap); ``revision`` reads the store as of that
        revision; ``serializable`` allows a possibly stale local read without a
        quorum round; ``keys_only`` omits values; ``count_only`` returns only the
        count; the ``min_*``/``max_*`` revisions filter on mod/create revision.
        """
        return cls(
            "get",
            range_request(
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
            ),
        )

    @classmethod
    def put(
        cls,
        key: object,
        value: object = b"",
        *,
        lease: LeaseLike = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
    ) -> Op:
        """Write ``value`` at ``key``.

        ``lease`` binds the key to a lease (it is deleted when the lease ends);
        ``prev_kv`` returns the previous key-value; ``ignore_value`` updates the
        key keeping its value (e.g. to move it to a new lease); ``ignore_lease``
        keeps its current lease.
        """
        return cls(
            "put",
            put_request(
                key,
                value,
                lease=lease,
                prev_kv=prev_kv,
                ignore_value=ignore_value,
                ignore_lease=ignore_lease,
            ),
        )

    @classmethod
    def delete(
        cls,
        key: object,
        *,
        range_end: object | None = None,
        prefix: bool = False,
        from_key: bool = False,
        prev_kv: bool = False,
    ) -> Op:
        """Delete a key or a range (same range options as :meth:`get`)."""
        return cls(
            "delete",
            delete_request(
                key, range_end=range_end, prefix=prefix, from_key=from_key, prev_kv=prev_kv
            ),
        )

    @classmethod
    def txn(
        cls,
        compare: Iterable[Compare] = (),
        success: Iterable[Op] = (),
        failure: Iterable[Op] = (),
    ) -> Op:
        """A nested transaction, usable as a branch op of an outer txn (at most
        :data:`MAX_TXN_DEPTH` txns deep, counting the outer one)."""
        success, failure = list(success), list(failure)
        request = txn_request(compare, success, failure)
        return cls("txn", request, 1 + _branch_depth(success, failure))


# --- compares ----------------------------------------------------------------


class CompareResult(enum.IntEnum):
    """The relation a compare asserts."""

    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class CompareTarget(enum.IntEnum):
    """The field of a key a compare looks at."""

    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


_TARGET_FIELD = {
    CompareTarget.VERSION: "version",
    CompareTarget.CREATE: "create_revision",
    CompareTarget.MOD: "mod_revision",
    CompareTarget.VALUE: "value",
    CompareTarget.LEASE: "lease",
}

_OPERATORS = {
    "=": CompareResult.EQUAL,
    "==": CompareResult.EQUAL,
    "!=": CompareResult.NOT_EQUAL,
    "<": CompareResult.LESS,
    ">": CompareResult.GREATER,
}


@dataclass(frozen=True, eq=False)
class Compare:
    """A txn guard: ``<target of key(s)> <relation> <operand>``.

    Build one with an operator on a target::

        Compare.value("k") == "v"
        Compare.version("k") > 0
        Compare.create_revision("lock/") < 100      # oldest waiter
        Compare.mod_revision("a", prefix=True) < 50  # range compare: all keys under a
        Compare.lease("k") == lease.id

    or explicitly: ``Compare.of("value", "k", "!=", b"x")``.
    A range compare (``range_end``/``prefix``/``from_key``) holds when it holds for
    every key in the range.
    """

    target: CompareTarget
    result: CompareResult
    key: bytes
    range_end: bytes
    operand: int | bytes

    def to_pb(self) -> rpc.Compare:
        """The wire form of this compare."""
        pb = rpc.Compare(
            result=int(self.result),  # type: ignore[arg-type]
            target=int(self.target),  # type: ignore[arg-type]
            key=self.key,
            range_end=self.range_end,
        )
        setattr(pb, _TARGET_FIELD[self.target], self.operand)
        return pb

    def _add_to(self, compares: Any) -> None:
        """Append the wire form to a TxnRequest's ``compare`` field (built in place:
        no message copied)."""
        pb = compares.add(result=int(self.result), target=int(self.target), key=self.key)
        if self.range_end:
            pb.range_end = self.range_end
        setattr(pb, _TARGET_FIELD[self.target], self.operand)

    @staticmethod
    def value(key: object, **range_opts: object) -> CompareOperand:
        """Compare the value of ``key`` (bytes/str operand)."""
        return CompareOperand(CompareTarget.VALUE, key, range_opts)

    @staticmethod
    def version(key: object, **range_opts: object) -> CompareOperand:
        """Compare the version (number of writes since creation; 0 = absent)."""
        return CompareOperand(CompareTarget.VERSION, key, range_opts)

    @staticmethod
    def create_revision(key: object, **range_opts: object) -> CompareOperand:
        """Compare the revision at which the key was created (0 = absent)."""
        return CompareOperand(CompareTarget.CREATE, key, range_opts)

    @staticmethod
    def mod_revision(key: object, **range_opts: object) -> CompareOperand:
        """Compare the revision of the key's last write."""
        return CompareOperand(CompareTarget.MOD, key, range_opts)

    @staticmethod
    def lease(key: object, **range_opts: object) -> CompareOperand:
        """Compare the id of the lease the key is bound to (0 = none)."""
        return CompareOperand(CompareTarget.LEASE, key, range_opts)

    @staticmethod
    def of(target: str | CompareTarget, key: object, op: str, operand: object) -> Compare:
        """Build a compare from names, e.g. ``Compare.of("mod", "k", "<", 10)``."""
        if isinstance(target, str):
            aliases = {"create_revision": "CREATE", "mod_revision": "MOD", "create": "CREATE"}
            name = aliases.get(target.lower(), target.upper())
            try:
                target = CompareTarget[name]
            except KeyError:
                raise InvalidRequest(f"unknown compare target {target!r}") from None
        if op not in _OPERATORS:
            raise InvalidRequest(f"unknown compare operator {op!r}; use =, !=, < or >")
        return CompareOperand(target, key, {})._build(_OPERATORS[op], operand)


class CompareOperand:
    """The left side of a compare; an operator with the operand completes it."""

    __slots__ = ("_key", "_range_end", "_target")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, target: CompareTarget, key: object, range_opts: dict[str, object]) -> None:
        self._target = target
        if not range_opts:  # one key (the common compare): no range arithmetic
            self._key = key if type(key) is bytes and key else to_key(key)
            self._range_end = b""
            return
        unknown = set(range_opts) - {"range_end", "prefix", "from_key"}
        if unknown:
            raise InvalidRequest(f"unknown compare option(s): {', '.join(sorted(unknown))}")
        self._key, self._range_end = key_range(
            key,
            range_end=range_opts.get("range_end"),
            prefix=bool(range_opts.get("prefix", False)),
            from_key=bool(range_opts.get("from_key", False)),
        )

    def _build(self, result: CompareResult, operand: object) -> Compare:
        if self._target is CompareTarget.VALUE:
            value: int | bytes = to_bytes(operand, "compare operand")
        else:
            lease_or_int: object = getattr(operand, "id", operand)  # a Lease compares by id
            if not isinstance(lease_or_int, int) or isinstance(lease_or_int, bool):
                raise InvalidRequest(
                    f"{self._target.name.lower()} compares take an int, got {operand!r}"
                )
            if not -_INT64_MAX - 1 <= lease_or_int <= _INT64_MAX:
                raise InvalidRequest(f"compare operand {operand!r} does not fit in int64")
            value = lease_or_int
        # As Compare(...), without the frozen dataclass's field-by-field __init__.
        compare = _new(Compare)
        compare.__dict__.update(
            target=self._target,
            result=result,
            key=self._key,
            range_end=self._range_end,
            operand=value,
        )
        return compare

    def __eq__(self, other: object) -> Compare:  # type: ignore[override]
        return self._build(CompareResult.EQUAL, other)

    def __ne__(self, other: object) -> Compare:  # type: ignore[override]
        return self._build(CompareResult.NOT_EQUAL, other)

    def __lt__(self, other: object) -> Compare:
        return self._build(CompareResult.LESS, other)

    def __gt__(self, other: object) -> Compare:
        return self._build(CompareResult.GREATER, other)


# --- txn -----------------------------------------------------------------------


def request_op(op: Op) -> rpc.RequestOp:
    """Wrap an Op as a txn branch element."""
    if not isinstance(op, Op):
        raise InvalidRequest(f"txn branches hold Op objects, got {type(op).__name__}")
    request = op.request
    if isinstance(request, rpc.RangeRequest):
        return rpc.RequestOp(request_range=request)
    if isinstance(request, rpc.PutRequest):
        return rpc.RequestOp(request_put=request)
    if isinstance(request, rpc.DeleteRangeRequest):
        return rpc.RequestOp(request_delete_range=request)
    return rpc.RequestOp(request_txn=request)


MAX_TXN_DEPTH = 32
"""The deepest nesting of txns (the outer one included) a request may have.

protobuf's decoders stop at a fixed message depth (100 for upb; each txn level
costs two: the RequestOp and the TxnRequest, and the response twice that), so a
deeper txn would fail inside protobuf with a DecodeError instead of a clear error;
32 leaves a wide margin and no real txn comes near it."""


def _branch_depth(success: Sequence[Op], failure: Sequence[Op]) -> int:
    return max((op.depth for op in (*success, *failure) if isinstance(op, Op)), default=0)


# The RequestOp field of each request type (a nested txn otherwise).
_OP_FIELDS: dict[type, str] = {
    rpc.RangeRequest: "request_range",
    rpc.PutRequest: "request_put",
    rpc.DeleteRangeRequest: "request_delete_range",
}


def txn_request(
    compare: Iterable[Compare], success: Iterable[Op], failure: Iterable[Op]
) -> rpc.TxnRequest:
    """Build a TxnRequest from compares and branch ops."""
    success, failure = list(success), list(failure)
    depth = 1 + _branch_depth(success, failure)
    if depth > MAX_TXN_DEPTH:
        raise InvalidRequest(f"txns nest {depth} deep; at most {MAX_TXN_DEPTH} are allowed")
    compares: Sequence[Compare] = list(compare)
    for c in compares:
        if not isinstance(c, Compare):
            raise InvalidRequest(
                f"txn compares must be Compare objects, got {type(c).__name__}"
                " (did you write `Compare.value(k) == v`?)"
            )
    # Built in place, as request_op() would wrap each op: every op's request is
    # copied once (into its branch), every compare not at all.
    request = rpc.TxnRequest()
    for c in compares:
        c._add_to(request.compare)
    for branch, ops in ((request.success, success), (request.failure, failure)):
        for op in ops:
            if not isinstance(op, Op):
                raise InvalidRequest(f"txn branches hold Op objects, got {type(op).__name__}")
            inner = op.request
            field = _OP_FIELDS.get(type(inner), "request_txn")
            getattr(branch.add(), field).CopyFrom(inner)
    return request
