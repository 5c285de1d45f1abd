"""The pure layer, without a server: key and range-end arithmetic, Op and Compare
building and validation, error translation of synthetic statuses, and the unasync
generator's output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from etcdsync import Compare, CompareResult, CompareTarget, Op, SortOrder, SortTarget, errors
from etcdsync._keys import ALL_KEYS_END, key_range, prefix_end, to_bytes, to_key
from etcdsync._pb import rpc_pb2 as rpc
from etcdsync.ops import range_request, txn_request

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import unasync  # noqa: E402

sys.path.pop(0)


# --- keys and ranges --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        (b"a", b"b"),
        (b"abc", b"abd"),
        (b"a\x00", b"a\x01"),
        (b"a\xfe", b"a\xff"),
        (b"a\xff", b"b"),  # trailing 0xff cannot be incremented: drop it, bump the rest
        (b"a\xff\xff", b"b"),
        (b"\x01\xff", b"\x02"),
        (b"\xff", ALL_KEYS_END),  # nothing above: to the end of the keyspace
        (b"\xff\xff", ALL_KEYS_END),
    ],
)
def test_prefix_end(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end
    # Whatever starts with the prefix sorts below the end; the end itself does not start
    # with it (unless the range is open-ended).
    for suffix in (b"", b"\x00", b"\xff\xff\xff"):
        assert end == ALL_KEYS_END or prefix + suffix < end
    assert end == ALL_KEYS_END or not end.startswith(prefix)


def test_key_range() -> None:
    assert key_range("k") == (b"k", b"")
    assert key_range("a", range_end="c") == (b"a", b"c")
    assert key_range(b"a", range_end=b"") == (b"a", b"")
    assert key_range("ab", prefix=True) == (b"ab", b"ac")
    assert key_range("k", from_key=True) == (b"k", ALL_KEYS_END)
    # An empty key is allowed only when it means "every key".
    assert key_range("", prefix=True) == (b"\0", b"\0")
    assert key_range(b"", from_key=True) == (b"\0", b"\0")
    with pytest.raises(errors.KeyEmptyError):
        key_range("")
    with pytest.raises(errors.KeyEmptyError):
        key_range("", range_end="z")
    for combo in ({"prefix": True, "from_key": True}, {"prefix": True, "range_end": "z"}):
        with pytest.raises(errors.InvalidRequest):
            key_range("k", **combo)  # type: ignore[arg-type]


def test_key_encoding() -> None:
    assert to_bytes("é") == "é".encode()
    assert to_bytes(bytearray(b"ab")) == b"ab"
    assert to_bytes(memoryview(b"cd")) == b"cd"
    assert to_key(b"\xff\x00") == b"\xff\x00"
    for bad in (1, None, 1.5, ["k"]):
        with pytest.raises(errors.InvalidRequest):
            to_bytes(bad)
    with pytest.raises(errors.KeyEmptyError):
        to_key("")
    assert to_key("", allow_empty=True) == b""


# --- ops ----------------------------------------------------------------------------------


def test_op_get_options_reach_the_request() -> None:
    op = Op.get(
        "k",
        prefix=True,
        limit=5,
        revision=7,
        sort_order="descend",
        sort_target="mod",
        serializable=True,
        keys_only=True,
        count_only=True,
        min_mod_revision=1,
        max_mod_revision=2,
        min_create_revision=3,
        max_create_revision=4,
    )
    r = op.request
    assert isinstance(r, rpc.RangeRequest) and op.kind == "get"
    assert (r.key, r.range_end, r.limit, r.revision) == (b"k", b"l", 5, 7)
    assert (r.sort_order, r.sort_target) == (SortOrder.DESCEND, SortTarget.MOD)
    assert r.serializable and r.keys_only and r.count_only
    assert (r.min_mod_revision, r.max_mod_revision) == (1, 2)
    assert (r.min_create_revision, r.max_create_revision) == (3, 4)
    # A target alone sorts ascending; nothing given keeps etcd's key order.
    alone = range_request("k", sort_target=SortTarget.VALUE)
    assert (alone.sort_order, alone.sort_target) == (SortOrder.ASCEND, SortTarget.VALUE)
    plain = range_request("k")
    assert (plain.sort_order, plain.sort_target) == (SortOrder.NONE, SortTarget.KEY)


def test_op_put_and_delete() -> None:
    put = Op.put("k", "v", lease=42, prev_kv=True)
    assert isinstance(put.request, rpc.PutRequest) and put.kind == "put"
    assert (put.request.key, put.request.value, put.request.lease) == (b"k", b"v", 42)
    assert put.request.prev_kv
    keep = Op.put("k", ignore_value=True, ignore_lease=True)
    assert isinstance(keep.request, rpc.PutRequest)
    assert keep.request.ignore_value and keep.request.ignore_lease

    class Lease:
        id = 99

    assert Op.put("k", lease=Lease()).request.lease == 99  # type: ignore[arg-type]
    delete = Op.delete("a", range_end="c", prev_kv=True)
    assert isinstance(delete.request, rpc.DeleteRangeRequest)
    assert (delete.request.key, delete.request.range_end) == (b"a", b"c")
    assert delete.request.prev_kv
    assert repr(delete) == "Op.delete(b'a')" and repr(Op.txn()) == "Op.txn(...)"


@pytest.mark.parametrize(
    "build",
    [
        lambda: Op.get("k", limit=-1),
        lambda: Op.get("k", limit=True),
        lambda: Op.get("k", revision=2**63),
        lambda: Op.get("k", min_mod_revision="1"),
        lambda: Op.get("k", sort_order="up"),
        lambda: Op.get("k", sort_order=3),
        lambda: Op.get("k", sort_target=5),
        lambda: Op.get("k", sort_target=2.0),
        lambda: Op.get("k", serializable="no"),
        lambda: Op.get("k", keys_only=1),
        lambda: Op.get("k", count_only=None),
        lambda: Op.put("k", "v", prev_kv="yes"),
        lambda: Op.put("k", "v", ignore_value=True),
        lambda: Op.put("k", lease=1, ignore_lease=True),
        lambda: Op.put("k", lease=-1),
        lambda: Op.put("k", lease=2**63),
        lambda: Op.put("k", 7),
        lambda: Op.delete("k", prev_kv=0),
        lambda: Op.delete("k", prefix=True, from_key=True),
    ],
)
def test_op_validation(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.InvalidRequest):
        build()


def test_largest_values_are_accepted() -> None:
    big = 2**63 - 1
    assert Op.get("k", revision=big, limit=big).request.revision == big
    assert Op.put("k", lease=big).request.lease == big


# --- compares ---------------------------------------------------------------------------


def test_compare_operators_and_targets() -> None:
    cases = [
        (Compare.value("k") == "v", CompareTarget.VALUE, CompareResult.EQUAL, b"v"),
        (Compare.value("k") != b"v", CompareTarget.VALUE, CompareResult.NOT_EQUAL, b"v"),
        (Compare.version("k") < 3, CompareTarget.VERSION, CompareResult.LESS, 3),
        (Compare.create_revision("k") > 4, CompareTarget.CREATE, CompareResult.GREATER, 4),
        (Compare.mod_revision("k") == 5, CompareTarget.MOD, CompareResult.EQUAL, 5),
        (Compare.lease("k") != 6, CompareTarget.LEASE, CompareResult.NOT_EQUAL, 6),
        (Compare.of("mod", "k", "<", 9), CompareTarget.MOD, CompareResult.LESS, 9),
        (Compare.of("create", "k", "==", 1), CompareTarget.CREATE, CompareResult.EQUAL, 1),
        (Compare.of(CompareTarget.VALUE, "k", ">", "a"), CompareTarget.VALUE,
         CompareResult.GREATER, b"a"),
    ]  # fmt: skip
    fields = {
        CompareTarget.VALUE: "value",
        CompareTarget.VERSION: "version",
        CompareTarget.CREATE: "create_revision",
        CompareTarget.MOD: "mod_revision",
        CompareTarget.LEASE: "lease",
    }
    for compare, target, result, operand in cases:
        assert isinstance(compare, Compare)
        assert (compare.target, compare.result, compare.operand) == (target, result, operand)
        pb = compare.to_pb()
        assert (pb.target, pb.result, pb.key) == (target, result, b"k")
        assert pb.WhichOneof("target_union") == fields[target]
        assert getattr(pb, fields[target]) == operand


def test_range_compares() -> None:
    prefixed = Compare.mod_revision("a/", prefix=True) < 10
    assert (prefixed.key, prefixed.range_end) == (b"a/", b"a0")
    ranged = Compare.version("a", range_end="c") == 1
    assert (ranged.key, ranged.range_end) == (b"a", b"c")
    tail = Compare.create_revision("m", from_key=True) > 0
    assert (tail.key, tail.range_end) == (b"m", ALL_KEYS_END)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Compare.version("k") == "1",
        lambda: Compare.version("k") == True,  # noqa: E712 - a bool is not a version
        lambda: Compare.mod_revision("k") < 2**63,
        lambda: Compare.value("k") == 1,
        lambda: Compare.value("k", prefix=True, range_end="z"),
        lambda: Compare.value("k", prefx=True),
        lambda: Compare.of("nope", "k", "=", 1),
        lambda: Compare.of("value", "k", "<=", "v"),
        lambda: Compare.value(""),
    ],
)
def test_compare_validation(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.InvalidRequest):
        build()


def test_compare_operand_is_not_hashable_or_truthy_by_accident() -> None:
    operand = Compare.version("k")
    with pytest.raises(TypeError):
        hash(operand)
    # `Compare.version(k) == 0` must build a compare, never a plain bool.
    assert isinstance(operand == 0, Compare)


def test_txn_request() -> None:
    inner = Op.txn([Compare.version("x") == 0], [Op.put("x", "1")], [Op.get("x")])
    req = txn_request(
        [Compare.value("k") == "v"],
        [Op.get("k"), Op.put("k", "w"), Op.delete("k"), inner],
        [],
    )
    assert [op.WhichOneof("request") for op in req.success] == [
        "request_range",
        "request_put",
        "request_delete_range",
        "request_txn",
    ]
    nested = req.success[3].request_txn
    assert nested.success[0].request_put.key == b"x"
    assert nested.failure[0].request_range.key == b"x"
    assert list(req.failure) == [] and len(req.compare) == 1
    with pytest.raises(errors.InvalidRequest):
        txn_request([True], [], [])  # type: ignore[list-item]
    with pytest.raises(errors.InvalidRequest):
        txn_request([], [Op.get("k"), "put"], [])  # type: ignore[list-item]


# --- error translation ------------------------------------------------------------------


class _FakeStatus(grpc.RpcError):
    """The two accessors our translation reads from a failed gRPC call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_translate_message_too_large() -> None:
    from etcdsync import _status

    sent = _FakeStatus(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "CLIENT: Sent message larger than max (3000 vs. 2000)"
    )
    error = _status.translate(sent, endpoint="h:1")
    assert isinstance(error, errors.RequestTooLargeError)
    assert (error.size, error.limit, error.endpoint) == (3000, 2000, "h:1")
    received = _FakeStatus(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "grpc: received message larger than max (9 vs. 8)"
    )
    error = _status.translate(received)
    assert isinstance(error, errors.RequestTooLargeError) and (error.size, error.limit) == (9, 8)
    busy = _FakeStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many requests")
    assert type(_status.translate(busy)) is errors.ResourceExhaustedError


# --- unasync ----------------------------------------------------------------------------


def test_unasync_substitutions() -> None:
    source = (
        "from .._backends._async import Lock\n"
        "from .connection import AsyncConnection\n"
        "class AsyncKV:\n"
        "    async def get(self) -> AsyncIterator[int]:\n"
        "        async with self._lock:\n"
        "            return await self._conn.unary()\n"
        "    async def __aenter__(self): ...\n"
        "    async def __anext__(self):\n"
        "        raise StopAsyncIteration\n"
        "    # the async client\n"
        "        async for x in aiter(y): await anext(z)\n"
    )
    out = unasync.unasync_text(source, "etcdsync/_async/x.py")
    assert out.splitlines()[0].startswith("# GENERATED by scripts/unasync.py")
    assert out.splitlines()[1:] == [
        "from .._backends._sync import Lock",
        "from .connection import Connection",
        "class KV:",
        "    def get(self) -> Iterator[int]:",
        "        with self._lock:",
        "            return self._conn.unary()",
        "    def __enter__(self): ...",
        "    def __next__(self):",
        "        raise StopIteration",
        "    # the sync client",
        "        for x in iter(y): next(z)",
    ]
    # Words that merely contain "async" are left alone.
    assert unasync.unasync_text("import asyncio\n", "s").splitlines()[1] == "import asyncio"


def test_generated_sync_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "unasync.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_txn_nesting_is_bounded_with_a_typed_error() -> None:
    from etcdsync.ops import MAX_TXN_DEPTH, txn_request

    op = Op.get("k")
    for _ in range(MAX_TXN_DEPTH - 1):
        op = Op.txn([], [op], [])
    assert op.depth == MAX_TXN_DEPTH - 1
    assert txn_request([], [], [op]).failure  # the outer txn makes it MAX_TXN_DEPTH deep
    with pytest.raises(errors.InvalidRequest, match="nest"):
        txn_request([], [op, Op.txn([], [op], [])], [])
    with pytest.raises(errors.InvalidRequest, match="nest"):
        Op.txn([], [], [Op.txn([], [op], [])])
