"""Txn against a real etcd: every compare target and relation, range compares, both
branches, nested txns, and the fluent ``If/Then/Else/commit`` builder.

Canonical asyncio tests; ``tests/_sync/test_txn.py`` is generated from this file.
"""

from __future__ import annotations

import uuid

import pytest

from etcdsync import AsyncClient, Compare, Op, errors
from etcdsync._methods import LEASE_GRANT, LEASE_REVOKE
from etcdsync.models import DeleteResponse, GetResponse, PutResponse, TxnResponse

RUN = f"{__name__}/{uuid.uuid4().hex[:8]}"


def _prefix(test: str) -> str:
    return f"{RUN}/{test}/"


async def _holds(client: AsyncClient, *compares: Compare) -> bool:
    """Whether etcd finds every compare true (an empty txn reports which branch ran)."""
    return (await client.txn(compare=compares)).succeeded


async def test_compare_value(etcd_endpoint: str) -> None:
    key = _prefix("value") + "k"
    missing = _prefix("value") + "missing"
    async with AsyncClient(etcd_endpoint) as client:
        await client.put(key, "m")
        assert await _holds(client, Compare.value(key) == "m")
        assert await _holds(client, Compare.value(key) == b"m")
        assert not await _holds(client, Compare.value(key) == "n")
        assert await _holds(client, Compare.value(key) != "n")
        assert not await _holds(client, Compare.value(key) != "m")
        assert await _holds(client, Compare.value(key) < "n")
        assert not await _holds(client, Compare.value(key) < "m")
        assert await _holds(client, Compare.value(key) > "l")
        assert not await _holds(client, Compare.value(key) > "z")
        # etcd: a value compare on a missing key is false whatever the relation.
        assert not await _holds(client, Compare.value(missing) == "")
        assert not await _holds(client, Compare.value(missing) != "x")
        # All compares of a txn must hold.
        assert not await _holds(client, Compare.value(key) == "m", Compare.value(key) == "n")


async def test_compare_version_create_mod(etcd_endpoint: str) -> None:
    key = _prefix("revs") + "k"
    missing = _prefix("revs") + "missing"
    async with AsyncClient(etcd_endpoint) as client:
        created = (await client.put(key, "1")).revision
        modified = (await client.put(key, "2")).revision
        # version is 2
        assert await _holds(client, Compare.version(key) == 2)
        assert not await _holds(client, Compare.version(key) != 2)
        assert await _holds(client, Compare.version(key) < 3)
        assert not await _holds(client, Compare.version(key) < 2)
        assert await _holds(client, Compare.version(key) > 1)
        assert not await _holds(client, Compare.version(key) > 2)
        # create revision
        assert await _holds(client, Compare.create_revision(key) == created)
        assert await _holds(client, Compare.create_revision(key) != modified)
        assert await _holds(client, Compare.create_revision(key) < modified)
        assert not await _holds(client, Compare.create_revision(key) > created)
        # mod revision
        assert await _holds(client, Compare.mod_revision(key) == modified)
        assert not await _holds(client, Compare.mod_revision(key) == created)
        assert await _holds(client, Compare.mod_revision(key) > created)
        assert not await _holds(client, Compare.mod_revision(key) < modified)
        # A missing key compares as version/create/mod 0: the "does not exist" guard.
        assert await _holds(client, Compare.version(missing) == 0)
        assert await _holds(client, Compare.create_revision(missing) == 0)
        assert await _holds(client, Compare.mod_revision(missing) < 1)
        # Compare.of spells the same compares with names.
        assert await _holds(client, Compare.of("mod", key, "=", modified))
        assert await _holds(client, Compare.of("create_revision", key, "<", modified))
        assert await _holds(client, Compare.of("version", key, "!=", 1))
        assert not await _holds(client, Compare.of("value", key, "==", "1"))


async def test_compare_lease(etcd_endpoint: str) -> None:
    p = _prefix("lease")
    async with AsyncClient(etcd_endpoint) as client:
        granted = await client._conn.unary(
            LEASE_GRANT, LEASE_GRANT.request(TTL=60), idempotent=False
        )
        lease_id = int(granted.ID)
        try:
            await client.put(p + "leased", "v", lease=lease_id)
            await client.put(p + "plain", "v")
            assert await _holds(client, Compare.lease(p + "leased") == lease_id)
            assert not await _holds(client, Compare.lease(p + "leased") != lease_id)
            assert not await _holds(client, Compare.lease(p + "leased") == 0)
            assert await _holds(client, Compare.lease(p + "leased") > 0)
            assert await _holds(client, Compare.lease(p + "leased") < lease_id + 1)
            assert await _holds(client, Compare.lease(p + "plain") == 0)
            assert not await _holds(client, Compare.lease(p + "plain") == lease_id)
        finally:
            await client._conn.unary(
                LEASE_REVOKE, LEASE_REVOKE.request(ID=lease_id), idempotent=False
            )


async def test_range_compares(etcd_endpoint: str) -> None:
    p = _prefix("rangecmp")
    async with AsyncClient(etcd_endpoint) as client:
        r1 = (await client.put(p + "a", "same")).revision
        r2 = (await client.put(p + "b", "other")).revision
        # A range compare holds only if it holds for every key in the range.
        assert await _holds(client, Compare.mod_revision(p, prefix=True) < r2 + 1)
        assert not await _holds(client, Compare.mod_revision(p, prefix=True) < r2)
        assert await _holds(client, Compare.mod_revision(p, prefix=True) > r1 - 1)
        assert not await _holds(client, Compare.mod_revision(p, prefix=True) > r1)
        assert await _holds(client, Compare.version(p, prefix=True) == 1)
        assert not await _holds(client, Compare.value(p, prefix=True) == "same")
        assert await _holds(client, Compare.value(p, prefix=True) != "third")
        await client.put(p + "b", "same")
        assert await _holds(client, Compare.value(p, prefix=True) == "same")
        assert not await _holds(client, Compare.version(p, prefix=True) == 1)
        # range_end is half-open: [a, b) holds only a.
        assert await _holds(client, Compare.mod_revision(p + "a", range_end=p + "b") == r1)
        # from_key reaches b (and any later key), whose mod revision is newer than r1.
        assert not await _holds(client, Compare.mod_revision(p + "a", from_key=True) == r1)
        # An empty range: versions compare as 0, values never match.
        assert await _holds(client, Compare.version(p + "none/", prefix=True) == 0)
        assert not await _holds(client, Compare.value(p + "none/", prefix=True) != "x")


async def test_both_branches_with_put_get_delete(etcd_endpoint: str) -> None:
    p = _prefix("branches")
    key, other = p + "k", p + "other"
    async with AsyncClient(etcd_endpoint) as client:
        await client.put(other, "o")

        def guarded() -> tuple[list[Compare], list[Op], list[Op]]:
            return (
                [Compare.version(key) == 0],
                [Op.put(key, "created"), Op.get(key)],
                [Op.get(key), Op.delete(other, prev_kv=True)],
            )

        first = await client.txn(*guarded())
        assert isinstance(first, TxnResponse) and first.succeeded is True
        put, got = first.responses
        assert isinstance(put, PutResponse) and isinstance(got, GetResponse)
        # Ops of a branch run in order: the get sees the put before it.
        assert got.value == b"created"
        assert got.kvs[0].mod_revision == first.revision
        assert (await client.get(other)).value == b"o"  # failure branch did not run

        second = await client.txn(*guarded())
        assert second.succeeded is False
        got2, deleted = second.responses
        assert isinstance(got2, GetResponse) and got2.value == b"created"
        assert isinstance(deleted, DeleteResponse) and deleted.deleted == 1
        assert [kv.value for kv in deleted.prev_kvs] == [b"o"]
        assert second.revision == first.revision + 1
        assert (await client.get(other)).kvs == []


async def test_txn_writes_are_one_revision(etcd_endpoint: str) -> None:
    p = _prefix("atomic")
    async with AsyncClient(etcd_endpoint) as client:
        before = (await client.get(p + "x")).revision
        response = await client.txn(success=[Op.put(p + str(i), str(i)) for i in range(3)])
        assert response.succeeded and response.revision == before + 1
        kvs = (await client.get(p, prefix=True)).kvs
        assert [kv.mod_revision for kv in kvs] == [response.revision] * 3
        reads = await client.txn(success=[Op.get(p, prefix=True, count_only=True)])
        assert reads.revision == response.revision  # a read-only txn writes nothing
        only = reads.responses[0]
        assert isinstance(only, GetResponse) and only.count == 3


async def test_nested_txn(etcd_endpoint: str) -> None:
    p = _prefix("nested")
    async with AsyncClient(etcd_endpoint) as client:
        await client.put(p + "flag", "x")
        inner = Op.txn(
            compare=[Compare.value(p + "flag") == "y"],
            success=[Op.put(p + "inner-success", "1")],
            failure=[Op.put(p + "inner-failure", "1"), Op.get(p + "flag")],
        )
        deeper = Op.txn(success=[Op.txn(success=[Op.get(p + "flag")])])
        outer = await client.txn(
            compare=[Compare.value(p + "flag") == "x"],
            success=[inner, deeper, Op.put(p + "outer", "1")],
            failure=[Op.put(p + "outer-failure", "1")],
        )
        assert outer.succeeded
        nested, deep, put = outer.responses
        assert isinstance(nested, TxnResponse) and nested.succeeded is False
        assert isinstance(nested.responses[0], PutResponse)
        flag = nested.responses[1]
        assert isinstance(flag, GetResponse) and flag.value == b"x"
        assert isinstance(deep, TxnResponse) and deep.succeeded
        deepest = deep.responses[0]
        assert isinstance(deepest, TxnResponse)
        assert isinstance(deepest.responses[0], GetResponse)
        assert deepest.responses[0].value == b"x"
        assert isinstance(put, PutResponse)
        keys = [kv.key for kv in (await client.get(p, prefix=True, keys_only=True)).kvs]
        assert keys == [(p + n).encode() for n in ("flag", "inner-failure", "outer")]


async def test_fluent_transaction(etcd_endpoint: str) -> None:
    p = _prefix("fluent")
    async with AsyncClient(etcd_endpoint) as client:
        created = await (
            client.transaction()
            .If(Compare.version(p + "k") == 0)
            .Then(Op.put(p + "k", "1"), Op.get(p + "k"))
            .Else(Op.get(p + "k"))
            .commit()
        )
        assert created.succeeded and len(created.responses) == 2
        again = await (
            client.transaction()
            .If(Compare.version(p + "k") == 0)
            .Then(Op.put(p + "k", "2"))
            .Else(Op.get(p + "k"))
            .commit(timeout=5)
        )
        assert not again.succeeded
        got = again.responses[0]
        assert isinstance(got, GetResponse) and got.value == b"1"
        # Each clause is optional; Else without Then is allowed, as in Go.
        assert (await client.transaction().commit()).succeeded
        only_else = await (
            client.transaction()
            .If(Compare.value(p + "k") == "nope")
            .Else(Op.delete(p + "k"))
            .commit()
        )
        assert not only_else.succeeded and (await client.get(p + "k")).kvs == []
        assert (await client.transaction().Then(Op.put(p + "t", "t")).commit()).succeeded
        assert (await client.get(p + "t")).value == b"t"


async def test_fluent_transaction_out_of_order(etcd_endpoint: str) -> None:
    key = _prefix("order") + "k"
    guard = Compare.version(key) == 0
    async with AsyncClient(etcd_endpoint) as client:
        bad_sequences = [
            lambda: client.transaction().Then(Op.get(key)).If(guard),
            lambda: client.transaction().If(guard).If(guard),
            lambda: client.transaction().Then(Op.get(key)).Then(Op.get(key)),
            lambda: client.transaction().Else(Op.get(key)).Then(Op.get(key)),
            lambda: client.transaction().Else(Op.get(key)).If(guard),
            lambda: client.transaction().Else(Op.get(key)).Else(Op.get(key)),
        ]
        for build in bad_sequences:
            with pytest.raises(errors.InvalidRequest):
                build()
        with pytest.raises(errors.InvalidRequest):
            await client.transaction().If("version == 0").commit()  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidRequest):
            await client.transaction().Then("put k v").commit()  # type: ignore[arg-type]
        # Nothing was sent by the refused builders; the client still works.
        assert (await client.get(key)).kvs == []
