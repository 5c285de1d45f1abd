"""Bad input and refused requests: each raises its typed error from etcdsync.errors,
quickly, and the client stays usable afterwards.

``pytest.raises`` with our types is the check that no ``grpc.RpcError`` ever reaches the
caller.  Canonical asyncio tests; ``tests/_sync/test_errors.py`` is generated from this.
"""

from __future__ import annotations

import uuid

import pytest

from etcdsync import AsyncClient, ChannelSettings, Compare, Op, errors
from etcdsync._methods import KV_PUT, KV_RANGE
from etcdsync._pb import rpc_pb2 as rpc
from etcdsync.testing.plugin import EtcdServerFactory

from .timing import within

RUN = f"{__name__}/{uuid.uuid4().hex[:8]}"

# "Quickly": a refused request must not wait for a deadline or a retry budget.
FAST = 1.0


def _prefix(test: str) -> str:
    return f"{RUN}/{test}/"


async def _still_usable(client: AsyncClient, key: str) -> None:
    revision = (await client.put(key, "ok")).revision
    got = await client.get(key)
    assert got.value == b"ok" and got.kv is not None and got.kv.mod_revision == revision


async def test_empty_key(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as client:
        with within(FAST):
            for call in (
                lambda: client.put("", "v"),
                lambda: client.put(b"", "v"),
                lambda: client.get(""),
                lambda: client.get("", range_end="z"),
                lambda: client.delete(""),
            ):
                with pytest.raises(errors.KeyEmptyError):
                    await call()
            for build in (
                lambda: Op.put("", "v"),
                lambda: Op.get(""),
                lambda: Op.delete(b""),
                lambda: Compare.value("") == "v",
            ):
                with pytest.raises(errors.KeyEmptyError):
                    build()
        # The server's own refusal (bypassing our check) maps to the same type.
        with within(FAST), pytest.raises(errors.KeyEmptyError) as caught:
            await client._conn.unary(KV_PUT, rpc.PutRequest(key=b"", value=b"v"), idempotent=False)
        assert caught.value.code == "INVALID_ARGUMENT"
        assert caught.value.details == "etcdserver: key is not provided"
        assert isinstance(caught.value, ValueError)
        await _still_usable(client, _prefix("empty") + "k")


async def test_wrong_types_and_bad_options(etcd_endpoint: str) -> None:
    key = _prefix("types") + "k"
    bad_calls = [
        lambda c: c.put(1, "v"),
        lambda c: c.put(key, 1.5),
        lambda c: c.put(key, None),
        lambda c: c.put(key, "v", lease=-1),
        lambda c: c.put(key, "v", lease="1"),
        lambda c: c.put(key, "v", lease=2**64),
        lambda c: c.put(key, "v", ignore_value=True),  # a value contradicts ignore_value
        lambda c: c.put(key, "v", prev_kv="yes"),
        lambda c: c.get(None),
        lambda c: c.get(key, limit=-1),
        lambda c: c.get(key, limit="10"),
        lambda c: c.get(key, limit=2**70),
        lambda c: c.get(key, revision=-5),
        lambda c: c.get(key, keys_only="yes"),
        lambda c: c.get(key, sort_order="sideways"),
        lambda c: c.get(key, sort_order=7),
        lambda c: c.get(key, sort_target=1.5),
        lambda c: c.get(key, prefix=True, from_key=True),
        lambda c: c.get(key, range_end=5),
        lambda c: c.get(key, timeout=0),
        lambda c: c.get(key, timeout=-1),
        lambda c: c.delete(key, prefix=True, range_end="z"),
        lambda c: c.txn(compare=["version(k) == 0"]),
        lambda c: c.txn(success=[("put", key, "v")]),
        lambda c: c.txn(compare=[Compare.version(key) == 2**64]),
        lambda c: c.compact(0),
        lambda c: c.do(None),
    ]
    async with AsyncClient(etcd_endpoint) as client:
        for index, call in enumerate(bad_calls):
            with within(FAST), pytest.raises(errors.InvalidRequest) as caught:
                await call(client)
            assert isinstance(caught.value, ValueError), index
        for build in (
            lambda: Compare.version(key) == "1",
            lambda: Compare.value(key) == 1,
            lambda: Compare.mod_revision(key, prefix=True, from_key=True),
            lambda: Compare.version(key, bogus=True),
            lambda: Compare.of("colour", key, "=", 1),
            lambda: Compare.of("version", key, ">=", 1),
        ):
            with pytest.raises(errors.InvalidRequest):
                build()
        await _still_usable(client, key)


async def test_value_over_server_limit(etcd_server_factory: EtcdServerFactory) -> None:
    # etcd answers "request is too large" up to its gRPC limit (max_request_bytes plus
    # 512 KiB of slack) and its gRPC layer refuses anything larger: both are this error.
    server = etcd_server_factory(max_request_bytes=16 * 1024)
    async with AsyncClient(server.endpoint) as client:
        with within(FAST), pytest.raises(errors.RequestTooLargeError) as caught:
            await client.put("big", b"x" * (32 * 1024))
        assert caught.value.details == "etcdserver: request is too large"
        with within(FAST), pytest.raises(errors.RequestTooLargeError):
            await client.txn(success=[Op.put(f"k{i}", b"y" * 1024) for i in range(20)])
        with within(FAST), pytest.raises(errors.RequestTooLargeError) as caught:
            await client.put("huge", b"z" * (1024 * 1024))
        assert isinstance(caught.value, errors.ClientError)
        assert (await client.get("", prefix=True)).count == 0  # nothing was written
        await _still_usable(client, "small")


async def test_value_over_client_send_limit(etcd_endpoint: str) -> None:
    key = _prefix("sendlimit") + "k"
    async with AsyncClient(etcd_endpoint) as client:
        with within(FAST), pytest.raises(errors.RequestTooLargeError) as caught:
            await client.put(key, b"x" * (3 * 1024 * 1024))
        error = caught.value
        assert error.limit == ChannelSettings().max_send_bytes
        assert error.size is not None and error.size > error.limit
        assert (await client.get(key)).kvs == []
        await _still_usable(client, key)
    small = ChannelSettings(max_send_bytes=1024)
    async with AsyncClient(etcd_endpoint, settings=small) as client:
        with within(FAST), pytest.raises(errors.RequestTooLargeError) as caught:
            await client.put(key, b"x" * 2048)
        assert caught.value.limit == 1024
        await _still_usable(client, key)


async def test_txn_duplicate_key(etcd_endpoint: str) -> None:
    p = _prefix("dup")
    async with AsyncClient(etcd_endpoint) as client:
        for branch in (
            [Op.put(p + "k", "1"), Op.put(p + "k", "2")],
            [Op.put(p + "k", "1"), Op.delete(p, prefix=True)],  # a delete overlapping a put
        ):
            with within(FAST), pytest.raises(errors.DuplicateKeyError):
                await client.txn(success=branch)
        with pytest.raises(errors.DuplicateKeyError):
            await client.txn(failure=[Op.put(p + "k", "1"), Op.put(p + "k", "2")])
        assert (await client.get(p, prefix=True)).count == 0  # nothing applied
        # Reading a key twice, or writing it in each branch, is allowed.
        ok = await client.txn(
            success=[Op.get(p + "k"), Op.get(p + "k"), Op.put(p + "k", "s")],
            failure=[Op.put(p + "k", "f")],
        )
        assert ok.succeeded and (await client.get(p + "k")).value == b"s"


async def test_txn_too_many_ops(etcd_endpoint: str) -> None:
    # etcd's default --max-txn-ops is 128, per branch and for the compares.
    p = _prefix("many")
    async with AsyncClient(etcd_endpoint) as client:
        with within(FAST), pytest.raises(errors.TooManyOpsError):
            await client.txn(success=[Op.put(f"{p}{i}", "v") for i in range(129)])
        with within(FAST), pytest.raises(errors.TooManyOpsError):
            await client.txn(compare=[Compare.version(f"{p}{i}") == 0 for i in range(129)])
        assert (await client.get(p, prefix=True)).count == 0
        full = await client.txn(success=[Op.put(f"{p}{i}", "v") for i in range(128)])
        assert full.succeeded and len(full.responses) == 128
        assert (await client.get(p, prefix=True, count_only=True)).count == 128


async def test_unavailable_revisions(etcd_server_factory: EtcdServerFactory) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint) as client:
        r1 = (await client.put("k", "1")).revision
        r2 = (await client.put("k", "2")).revision
        await client.compact(r2, physical=True)
        with within(FAST), pytest.raises(errors.CompactedError) as compacted:
            await client.get("k", revision=r1)
        assert compacted.value.endpoint == server.endpoint
        assert "compacted" in str(compacted.value)
        with within(FAST), pytest.raises(errors.CompactedError):
            await client.txn(success=[Op.get("k", revision=r1)])
        with within(FAST), pytest.raises(errors.FutureRevisionError) as future:
            await client.get("k", revision=r2 + 10)
        assert future.value.endpoint == server.endpoint
        assert isinstance(future.value, errors.ClientError)
        assert (await client.get("k", revision=r2)).value == b"2"


async def test_calls_after_close(etcd_endpoint: str) -> None:
    key = _prefix("closed") + "k"
    client = AsyncClient(etcd_endpoint)
    await client.put(key, "v")
    txn = client.transaction().Then(Op.get(key))
    await client.close()
    await client.close()  # idempotent
    assert client.closed and "closed" in repr(client)
    with within(FAST):
        for call in (
            lambda: client.get(key),
            lambda: client.put(key, "v"),
            lambda: client.delete(key),
            lambda: client.txn(success=[Op.get(key)]),
            lambda: client.do(Op.get(key)),
            lambda: client.compact(1),
            lambda: txn.commit(),
        ):
            with pytest.raises(errors.ClientClosedError):
                await call()
        with pytest.raises(errors.ClientClosedError):
            async for _ in client.iterate(key, prefix=True):
                pass
        with pytest.raises(errors.ClientClosedError):
            async with client:
                pass
    # The raw layer refuses too: nothing can reach a closed channel.
    with pytest.raises(errors.ClientClosedError):
        await client._conn.unary(KV_RANGE, rpc.RangeRequest(key=b"k"), idempotent=True)


async def test_error_attributes(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as client:
        current = (await client.get("x")).revision
        with pytest.raises(errors.FutureRevisionError) as caught:
            await client.get("x", revision=current + 100)
        error = caught.value
        assert error.code == "OUT_OF_RANGE"
        assert error.details == "etcdserver: mvcc: required revision is a future revision"
        assert error.endpoint == etcd_endpoint
        assert etcd_endpoint in str(error)
        assert isinstance(error, errors.EtcdError)
