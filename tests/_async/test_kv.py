"""KV against a real etcd: get/put/delete with every option, compaction, do(), iterate().

Canonical asyncio tests; ``tests/_sync/test_kv.py`` is generated from this file.  Each
test writes under its own prefix (module name + run id + test name) because the session
server is shared; tests that delete from-key or compact use a private server.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from etcdsync import AsyncClient, Op, SortOrder, SortTarget, errors
from etcdsync._methods import LEASE_GRANT, LEASE_REVOKE
from etcdsync.models import DeleteResponse, GetResponse, PutResponse, TxnResponse
from etcdsync.testing.plugin import EtcdServerFactory
from etcdsync.testing.server import EtcdServer

RUN = f"{__name__}/{uuid.uuid4().hex[:8]}"


def _prefix(test: str) -> str:
    return f"{RUN}/{test}/"


def _keys(response: GetResponse) -> list[bytes]:
    return [kv.key for kv in response.kvs]


def _ctl_json(server: EtcdServer, *args: str) -> dict[str, Any]:
    """``etcdctl get ... -w json`` parsed: the server's own client as a cross-check."""
    out: dict[str, Any] = json.loads(server.etcdctl("get", *args, "-w", "json"))
    return out


def _ctl_keys(out: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(kv["key"]) for kv in out.get("kvs", [])]


async def _grant(client: AsyncClient, ttl: int = 60) -> int:
    # A raw LeaseGrant keeps these tests independent of the lease API.
    response = await client._conn.unary(LEASE_GRANT, LEASE_GRANT.request(TTL=ttl), idempotent=False)
    return int(response.ID)


async def _revoke(client: AsyncClient, lease_id: int) -> None:
    await client._conn.unary(LEASE_REVOKE, LEASE_REVOKE.request(ID=lease_id), idempotent=False)


async def _put_many(client: AsyncClient, items: list[tuple[str, str]]) -> int:
    """Write ``items`` in txns of 100 puts; return the last revision."""
    revision = 0
    for start in range(0, len(items), 100):
        chunk = items[start : start + 100]
        response = await client.txn(success=[Op.put(k, v) for k, v in chunk])
        revision = response.revision
    return revision


# --- put / get / delete ---------------------------------------------------------------


async def test_put_get_delete_str_and_bytes(etcd_server: EtcdServer, etcd_endpoint: str) -> None:
    p = _prefix("basic")
    async with AsyncClient(etcd_endpoint) as client:
        put = await client.put(p + "ключ", "значение")
        assert isinstance(put, PutResponse) and put.prev_kv is None
        got = await client.get(p + "ключ")
        assert got.count == 1 and not got.more
        kv = got.kv
        assert kv is not None
        assert kv.key == (p + "ключ").encode() and kv.key_str == p + "ключ"
        assert kv.value == "значение".encode() and kv.value_str == "значение"
        assert kv.create_revision == kv.mod_revision == put.revision
        assert kv.version == 1 and kv.lease == 0
        assert got.revision >= put.revision

        # The server's own client sees exactly what we wrote.
        ctl = _ctl_json(etcd_server, p + "ключ")
        assert base64.b64decode(ctl["kvs"][0]["value"]) == "значение".encode()
        assert int(ctl["kvs"][0]["mod_revision"]) == put.revision

        # Bytes keys and values go through untouched, including non-UTF-8 and NUL bytes.
        raw_key = p.encode() + b"\x80\xfe\x00bin"
        raw_value = bytes(range(256))
        second = await client.put(raw_key, raw_value)
        assert second.revision == put.revision + 1
        assert (await client.get(raw_key)).value == raw_value

        # A second write bumps version and mod revision, never the create revision.
        third = await client.put(p + "ключ", b"v2")
        kv2 = (await client.get(p + "ключ")).kv
        assert kv2 is not None and kv2.version == 2
        assert kv2.create_revision == put.revision and kv2.mod_revision == third.revision

        deleted = await client.delete(p + "ключ")
        assert isinstance(deleted, DeleteResponse)
        assert deleted.deleted == 1 and deleted.prev_kvs == []
        assert deleted.revision == third.revision + 1
        missing = await client.get(p + "ключ")
        assert missing.kvs == [] and missing.kv is None and missing.value is None
        assert missing.count == 0
        assert (await client.delete(p + "ключ")).deleted == 0
        assert (await client.delete(raw_key)).deleted == 1


async def test_get_range_end_and_prefix(etcd_endpoint: str) -> None:
    p = _prefix("range")
    async with AsyncClient(etcd_endpoint) as client:
        for name in ("a", "ab", "b", "c", "d"):
            await client.put(p + name, name)
        half_open = await client.get(p + "b", range_end=p + "d")
        assert _keys(half_open) == [(p + "b").encode(), (p + "c").encode()]
        as_bytes = await client.get((p + "a").encode(), range_end=(p + "b").encode())
        assert _keys(as_bytes) == [(p + "a").encode(), (p + "ab").encode()]
        under_a = await client.get(p + "a", prefix=True)
        assert [kv.value for kv in under_a] == [b"a", b"ab"]
        everything = await client.get(p, prefix=True)
        assert [kv.value for kv in everything] == [b"a", b"ab", b"b", b"c", b"d"]
        assert everything.count == 5 and len(everything) == 5
        # An inverted range is empty, not an error.
        assert (await client.get(p + "d", range_end=p + "a")).kvs == []


async def test_empty_prefix_reads_every_key(etcd_server: EtcdServer, etcd_endpoint: str) -> None:
    p = _prefix("allkeys")
    async with AsyncClient(etcd_endpoint) as client:
        await client.put(p + "1", "x")
        rev = (await client.put(p + "2", "y")).revision
        every = await client.get("", prefix=True, keys_only=True, revision=rev)
        assert {(p + "1").encode(), (p + "2").encode()} <= set(_keys(every))
        assert _keys(every) == sorted(_keys(every))
        ctl = _ctl_json(etcd_server, "", "--prefix", "--keys-only", f"--rev={rev}")
        assert _ctl_keys(ctl) == _keys(every)
        assert every.count == int(ctl["count"]) == len(every.kvs)
        counted = await client.get(b"", prefix=True, count_only=True, revision=rev)
        assert counted.count == every.count and counted.kvs == []
        from_start = await client.get("", from_key=True, count_only=True, revision=rev)
        assert from_start.count == every.count


async def test_prefix_ending_in_0xff(etcd_endpoint: str) -> None:
    base = _prefix("ff").encode() + b"x"
    inside = [base + b"\xff", base + b"\xff\x00", base + b"\xff\xff\x01"]
    # base + 0xfe sorts before the range; base[:-1] + "y" is exactly its range end.
    outside = [base + b"\xfe", base[:-1] + b"y"]
    async with AsyncClient(etcd_endpoint) as client:
        for key in inside + outside:
            await client.put(key, b"v")
        got = await client.get(base + b"\xff", prefix=True)
        assert _keys(got) == inside
        gone = await client.delete(base + b"\xff", prefix=True, prev_kv=True)
        assert gone.deleted == 3 and [kv.key for kv in gone.prev_kvs] == inside
        assert _keys(await client.get(base, prefix=True)) == [base + b"\xfe"]
        assert (await client.get(base[:-1] + b"y")).count == 1

        # A prefix of only 0xff bytes ranges to the end of the keyspace.
        tail = b"\xff\xff" + base
        await client.put(tail, b"t")
        await client.put(b"\xff\xfe" + base, b"u")
        try:
            top = await client.get(b"\xff\xff", prefix=True)
            assert tail in _keys(top)
            assert all(k.startswith(b"\xff\xff") for k in _keys(top))
        finally:
            await client.delete(tail)
            await client.delete(b"\xff\xfe" + base)
            await client.delete(base[:-1] + b"y")


async def test_get_from_key(etcd_server: EtcdServer, etcd_endpoint: str) -> None:
    p = _prefix("fromkey")
    async with AsyncClient(etcd_endpoint) as client:
        for name in ("a", "b", "c"):
            rev = (await client.put(p + name, name)).revision
        got = await client.get(p + "b", from_key=True, revision=rev)
        keys = _keys(got)
        assert keys[:2] == [(p + "b").encode(), (p + "c").encode()]
        assert all(k >= (p + "b").encode() for k in keys)
        ctl = _ctl_json(etcd_server, p + "b", "--from-key", "--keys-only", f"--rev={rev}")
        assert _ctl_keys(ctl) == keys and got.count == int(ctl["count"])
        limited = await client.get(p + "b", from_key=True, limit=1, revision=rev)
        assert _keys(limited) == [(p + "b").encode()] and limited.more
        assert limited.count == got.count


async def test_limit_more_and_count(etcd_endpoint: str) -> None:
    p = _prefix("limit")
    async with AsyncClient(etcd_endpoint) as client:
        for i in range(5):
            await client.put(f"{p}{i}", str(i))
        two = await client.get(p, prefix=True, limit=2)
        assert [kv.value for kv in two] == [b"0", b"1"]
        assert two.more is True and two.count == 5
        exact = await client.get(p, prefix=True, limit=5)
        assert len(exact) == 5 and exact.more is False and exact.count == 5
        over = await client.get(p, prefix=True, limit=6)
        assert len(over) == 5 and over.more is False
        unlimited = await client.get(p, prefix=True, limit=0)
        assert len(unlimited) == 5 and unlimited.more is False


async def test_sort_every_target_and_order(etcd_server: EtcdServer, etcd_endpoint: str) -> None:
    p = _prefix("sort")
    k1, k2, k3 = (f"{p}k{i}".encode() for i in (1, 2, 3))
    async with AsyncClient(etcd_endpoint) as client:
        # Chosen so that each target orders the three keys differently:
        #   key k1,k2,k3   create k3,k1,k2   mod k2,k3,k1   version k2,k1,k3   value k1,k3,k2
        await client.put(k3, "x")
        await client.put(k1, "x")
        await client.put(k2, "c")
        await client.put(k3, "y")
        await client.put(k3, "b")
        await client.put(k1, "a")
        expected = {
            SortTarget.KEY: [k1, k2, k3],
            SortTarget.CREATE: [k3, k1, k2],
            SortTarget.MOD: [k2, k3, k1],
            SortTarget.VERSION: [k2, k1, k3],
            SortTarget.VALUE: [k1, k3, k2],
        }
        for target, ascending in expected.items():
            up = await client.get(p, prefix=True, sort_order=SortOrder.ASCEND, sort_target=target)
            assert _keys(up) == ascending, target
            down = await client.get(
                p, prefix=True, sort_order=SortOrder.DESCEND, sort_target=target
            )
            assert _keys(down) == ascending[::-1], target
        # Names work too, and a target alone sorts ascending (as etcd itself does).
        named = await client.get(p, prefix=True, sort_order="descend", sort_target="mod")
        assert _keys(named) == [k1, k3, k2]
        target_only = await client.get(p, prefix=True, sort_target=SortTarget.CREATE)
        assert _keys(target_only) == [k3, k1, k2]
        # The limit applies after sorting: the newest key, though it is not first by key.
        newest = await client.get(
            p, prefix=True, sort_order="descend", sort_target="create", limit=1
        )
        assert _keys(newest) == [k2] and newest.more and newest.count == 3
        ctl = _ctl_json(etcd_server, p, "--prefix", "--sort-by=MODIFY", "--order=DESCEND")
        assert _ctl_keys(ctl) == [k1, k3, k2]


async def test_serializable_keys_only_count_only(etcd_endpoint: str) -> None:
    p = _prefix("flags")
    async with AsyncClient(etcd_endpoint) as client:
        for i in range(3):
            rev = (await client.put(f"{p}{i}", f"value-{i}")).revision
        serial = await client.get(p, prefix=True, serializable=True)
        assert [kv.value for kv in serial] == [b"value-0", b"value-1", b"value-2"]
        assert serial.revision >= rev
        keys_only = await client.get(p, prefix=True, keys_only=True)
        assert _keys(keys_only) == [f"{p}{i}".encode() for i in range(3)]
        assert all(kv.value == b"" and kv.mod_revision > 0 for kv in keys_only)
        count_only = await client.get(p, prefix=True, count_only=True)
        assert count_only.kvs == [] and count_only.count == 3


async def test_mod_and_create_revision_filters(etcd_endpoint: str) -> None:
    p = _prefix("revfilters")
    a, b, c = (f"{p}{n}".encode() for n in "abc")
    async with AsyncClient(etcd_endpoint) as client:
        await client.put(a, "1")
        rev_b = (await client.put(b, "1")).revision
        await client.put(c, "1")
        await client.put(a, "2")  # a: created before b, modified after c
        assert _keys(await client.get(p, prefix=True, min_mod_revision=rev_b)) == [a, b, c]
        assert _keys(await client.get(p, prefix=True, max_mod_revision=rev_b)) == [b]
        assert _keys(await client.get(p, prefix=True, min_create_revision=rev_b)) == [b, c]
        assert _keys(await client.get(p, prefix=True, max_create_revision=rev_b)) == [a, b]
        window = await client.get(
            p, prefix=True, min_create_revision=rev_b, max_create_revision=rev_b
        )
        assert _keys(window) == [b]
        both = await client.get(
            p, prefix=True, min_mod_revision=rev_b + 1, max_create_revision=rev_b
        )
        assert _keys(both) == [a]


async def test_historical_read(etcd_endpoint: str) -> None:
    p = _prefix("history")
    async with AsyncClient(etcd_endpoint) as client:
        r1 = (await client.put(p + "k", "v1")).revision
        r2 = (await client.put(p + "k", "v2")).revision
        r3 = (await client.delete(p + "k")).revision
        assert (await client.get(p + "k", revision=r1)).value == b"v1"
        old = await client.get(p + "k", revision=r2)
        assert old.value == b"v2" and old.kv is not None and old.kv.version == 2
        assert (await client.get(p + "k", revision=r3)).kvs == []
        assert (await client.get(p, prefix=True, revision=r1)).count == 1
        assert (await client.get(p + "k")).kvs == []


async def test_future_revision(etcd_endpoint: str) -> None:
    async with AsyncClient(etcd_endpoint) as client:
        current = (await client.put(_prefix("future") + "k", "v")).revision
        with pytest.raises(errors.FutureRevisionError):
            await client.get(_prefix("future") + "k", revision=current + 1000)
        assert (await client.get(_prefix("future") + "k", revision=current)).value == b"v"


async def test_put_prev_kv(etcd_endpoint: str) -> None:
    key = _prefix("prevkv") + "k"
    async with AsyncClient(etcd_endpoint) as client:
        first = await client.put(key, "one", prev_kv=True)
        assert first.prev_kv is None
        second = await client.put(key, "two", prev_kv=True)
        assert second.prev_kv is not None
        assert second.prev_kv.value == b"one" and second.prev_kv.version == 1
        assert second.prev_kv.mod_revision == first.revision
        third = await client.put(key, "three")  # not asked for
        assert third.prev_kv is None


async def test_put_lease_ignore_value_ignore_lease(etcd_endpoint: str) -> None:
    key = _prefix("lease") + "k"
    async with AsyncClient(etcd_endpoint) as client:
        lease1 = await _grant(client)
        lease2 = await _grant(client)
        try:
            await client.put(key, "v1", lease=lease1)
            kv = (await client.get(key)).kv
            assert kv is not None and kv.lease == lease1 and kv.value == b"v1"

            await client.put(key, "v2", ignore_lease=True)  # new value, lease kept
            kv = (await client.get(key)).kv
            assert kv is not None and kv.lease == lease1 and kv.value == b"v2"

            await client.put(key, lease=lease2, ignore_value=True)  # value kept, lease moved
            kv = (await client.get(key)).kv
            assert kv is not None and kv.lease == lease2 and kv.value == b"v2"

            await client.put(key, "v3")  # a plain put detaches the key from its lease
            kv = (await client.get(key)).kv
            assert kv is not None and kv.lease == 0

            await client.put(key, "v4", lease=lease1)
            await _revoke(client, lease1)
            assert (await client.get(key)).kvs == []  # the lease took the key with it

            with pytest.raises(errors.InvalidRequest):  # nothing to keep the value of
                await client.put(_prefix("lease") + "absent", ignore_value=True)
            with pytest.raises(errors.LeaseNotFoundError) as caught:
                await client.put(key, "v", lease=lease1)  # revoked
            assert caught.value.lease_id == lease1
            assert (await client.get(key)).kvs == []
        finally:
            await _revoke(client, lease2)


async def test_delete_range_prefix_and_prev_kv(etcd_endpoint: str) -> None:
    p = _prefix("delete")
    async with AsyncClient(etcd_endpoint) as client:
        for name in ("a", "b", "c1", "c2", "d"):
            await client.put(p + name, "val-" + name)
        ranged = await client.delete(p + "a", range_end=p + "c", prev_kv=True)
        assert ranged.deleted == 2
        assert [(kv.key, kv.value) for kv in ranged.prev_kvs] == [
            ((p + "a").encode(), b"val-a"),
            ((p + "b").encode(), b"val-b"),
        ]
        prefixed = await client.delete(p + "c", prefix=True)
        assert prefixed.deleted == 2 and prefixed.prev_kvs == []
        left = await client.get(p, prefix=True)
        assert _keys(left) == [(p + "d").encode()]


async def test_delete_from_key_and_compact(etcd_server_factory: EtcdServerFactory) -> None:
    # Private server: a from-key delete and a compaction must not touch shared state.
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint) as client:
        for name in ("a", "b", "c"):
            await client.put(name, name)
        gone = await client.delete("b", from_key=True, prev_kv=True)
        assert gone.deleted == 2 and [kv.key for kv in gone.prev_kvs] == [b"b", b"c"]
        assert _keys(await client.get("", prefix=True)) == [b"a"]

        r1 = (await client.put("k", "v1")).revision
        r2 = (await client.put("k", "v2")).revision
        r3 = (await client.put("k", "v3")).revision
        await client.compact(r2, physical=True)
        with pytest.raises(errors.CompactedError) as caught:
            await client.get("k", revision=r1)
        assert isinstance(caught.value, errors.ClientError)
        assert (await client.get("k", revision=r2)).value == b"v2"  # r2 itself is kept
        assert (await client.get("k")).value == b"v3"
        with pytest.raises(errors.CompactedError):
            await client.compact(r1)  # already compacted past it
        with pytest.raises(errors.FutureRevisionError):
            await client.compact(r3 + 100)
        for bad in (0, -1):
            with pytest.raises(errors.InvalidRequest):
                await client.compact(bad)
        await client.compact(r3)  # logical compaction also takes effect
        with pytest.raises(errors.CompactedError):
            await client.get("k", revision=r2)


async def test_do_runs_every_op_kind(etcd_endpoint: str) -> None:
    p = _prefix("do")
    async with AsyncClient(etcd_endpoint) as client:
        put = await client.do(Op.put(p + "k", "v", prev_kv=True))
        assert isinstance(put, PutResponse) and put.prev_kv is None
        got = await client.do(Op.get(p, prefix=True, keys_only=True))
        assert isinstance(got, GetResponse) and _keys(got) == [(p + "k").encode()]
        assert got.kvs[0].value == b""
        txn = await client.do(Op.txn(success=[Op.get(p + "k"), Op.put(p + "j", "w")]))
        assert isinstance(txn, TxnResponse) and txn.succeeded
        first = txn.responses[0]
        assert isinstance(first, GetResponse) and first.value == b"v"
        assert isinstance(txn.responses[1], PutResponse)
        deleted = await client.do(Op.delete(p, prefix=True, prev_kv=True))
        assert isinstance(deleted, DeleteResponse) and deleted.deleted == 2
        assert sorted(kv.value for kv in deleted.prev_kvs) == [b"v", b"w"]
        with pytest.raises(errors.InvalidRequest):
            await client.do("get k")  # type: ignore[arg-type]


# --- iterate ------------------------------------------------------------------------


def _range_calls(server: EtcdServer) -> float:
    samples = server.metrics().series("grpc_server_handled_total", grpc_method="Range")
    return sum(s.value for s in samples)


async def test_iterate_pages_at_one_revision(etcd_server: EtcdServer, etcd_endpoint: str) -> None:
    p = _prefix("iterate")
    items = [(f"{p}{i:05d}", f"v{i}") for i in range(2500)]
    async with AsyncClient(etcd_endpoint) as client:
        pinned = await _put_many(client, items)
        before = _range_calls(etcd_server)
        seen = []
        async for kv in client.iterate(p, prefix=True, page_size=1000):
            seen.append(kv)
            if len(seen) == 1000:
                # Between pages: writes into the part not read yet must stay invisible.
                await client.put(f"{p}01500x", "new")
                await client.delete(f"{p}02000")
                await client.put(f"{p}01200", "changed")
        assert _range_calls(etcd_server) - before == 3  # 1000 + 1000 + 500, not one big read
        assert [(kv.key_str, kv.value_str) for kv in seen] == items
        assert max(kv.mod_revision for kv in seen) <= pinned

        now = [kv.key_str async for kv in client.iterate(p, prefix=True, page_size=1000)]
        assert len(now) == 2500 and f"{p}01500x" in now and f"{p}02000" not in now

        # An explicit revision reads the old snapshot, here with keys only and odd pages.
        old = [
            kv
            async for kv in client.iterate(
                p, prefix=True, page_size=700, revision=pinned, keys_only=True
            )
        ]
        assert [kv.key_str for kv in old] == [k for k, _ in items]
        assert all(kv.value == b"" for kv in old)

        ranged = [
            kv.key_str
            async for kv in client.iterate(f"{p}00010", range_end=f"{p}00013", page_size=1)
        ]
        assert ranged == [f"{p}00010", f"{p}00011", f"{p}00012"]
        single = [kv.value async for kv in client.iterate(f"{p}00042")]
        assert single == [b"v42"]
        for bad in ({"page_size": 0}, {"page_size": True}, {"keys_only": "yes"}):
            with pytest.raises(errors.InvalidRequest):
                async for _ in client.iterate(p, prefix=True, **bad):  # type: ignore[arg-type]
                    pass
        await client.delete(p, prefix=True)
