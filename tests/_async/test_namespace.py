"""Namespaced clients against a real etcd: every key confined to the prefix.

Each test puts "decoy" keys just outside the namespace (sorting before it, equal
to the prefix, equal to the prefix without its slash, and after it) and checks
that no read, range, watch, txn or delete of the namespace ever sees or touches
them.  Canonical asyncio tests; ``tests/_sync/test_namespace.py`` is generated.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from etcdsync import AsyncClient, Compare, Op, errors
from etcdsync.models import GetResponse, TxnResponse
from etcdsync.testing.plugin import EtcdServerFactory
from etcdsync.watch_types import EventType

INSIDE = {"a": "1", "a/1": "2", "b": "3", "c": "4"}


def _keys(response: GetResponse) -> list[bytes]:
    return [kv.key for kv in response.kvs]


async def _with_decoys(etcd: AsyncClient, base: str) -> dict[str, str]:
    """Keys around the namespace ``base + "ns/"``, none of them inside it."""
    decoys = {
        f"{base}a": "outside-before",  # same relative name as an inside key
        f"{base}ns": "outside-no-slash",
        f"{base}ns/": "outside-the-prefix-itself",
        f"{base}ns0": "outside-after",
        f"{base}nt/a": "outside-after-2",
    }
    for key, value in decoys.items():
        await etcd.put(key, value)
    return decoys


async def _decoys_intact(etcd: AsyncClient, decoys: dict[str, str]) -> None:
    for key, value in decoys.items():
        assert (await etcd.get(key)).value == value.encode(), key


async def test_every_range_form_stays_inside(etcd_server_factory: EtcdServerFactory) -> None:
    # A private server: a namespace that leaked a from-key delete would wipe the store.
    server = etcd_server_factory()
    base = "t/"
    async with AsyncClient(server.endpoint) as etcd:
        decoys = await _with_decoys(etcd, base)
        ns = etcd.namespace(f"{base}ns/")
        assert ns.prefix == f"{base}ns/".encode()
        for key, value in INSIDE.items():
            await ns.put(key, value)
        assert (await etcd.get(f"{base}ns/a")).value == b"1"  # really prefixed on the server

        single = await ns.get("a")
        assert single.kv is not None and single.kv.key == b"a" and single.value == b"1"
        everything = [b"a", b"a/1", b"b", b"c"]
        assert _keys(await ns.get("", prefix=True)) == everything
        assert _keys(await ns.get("", from_key=True)) == everything
        assert _keys(await ns.get("\0", from_key=True)) == everything
        assert _keys(await ns.get("b", from_key=True)) == [b"b", b"c"]
        assert _keys(await ns.get("a", prefix=True)) == [b"a", b"a/1"]
        assert _keys(await ns.get("a", range_end="c")) == [b"a", b"a/1", b"b"]
        assert _keys(await ns.get("a", range_end="\xff")) == everything
        assert (await ns.get("", prefix=True, count_only=True)).count == 4
        described = await ns.get("", from_key=True, sort_order="descend", limit=2)
        assert _keys(described) == [b"c", b"b"] and described.more
        paged = [kv.key async for kv in ns.iterate("", prefix=True, page_size=1)]
        assert paged == everything
        op = Op.get("", from_key=True)
        first, again = await ns.do(op), await ns.do(op)  # the caller's Op is never rewritten
        assert isinstance(first, GetResponse) and isinstance(again, GetResponse)
        assert _keys(first) == _keys(again) == everything

        put = await ns.put("a", "1b", prev_kv=True)
        assert put.prev_kv is not None and put.prev_kv.key == b"a"

        deleted = await ns.delete("b", from_key=True, prev_kv=True)
        assert deleted.deleted == 2 and [kv.key for kv in deleted.prev_kvs] == [b"b", b"c"]
        deleted = await ns.delete("", prefix=True, prev_kv=True)
        assert deleted.deleted == 2 and [kv.key for kv in deleted.prev_kvs] == [b"a", b"a/1"]
        assert (await ns.delete("", from_key=True)).deleted == 0
        await _decoys_intact(etcd, decoys)
        assert (await etcd.get(base, prefix=True, count_only=True)).count == len(decoys)


async def test_txn_compares_and_both_branches(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        decoys = await _with_decoys(etcd, prefix)
        ns = etcd.namespace(f"{prefix}ns/")
        await ns.put("a", "1")
        await ns.put("b", "2")

        # "a" is "outside-before" one level up: the compare must read the inside key.
        ok = await ns.txn(
            [Compare.value("a") == "1", Compare.version("", prefix=True) > 0],
            [Op.put("a", "10", prev_kv=True), Op.get("", prefix=True), Op.delete("zz")],
            [Op.get("b")],
        )
        assert ok.succeeded
        put, listing, _ = ok.responses
        assert put.prev_kv is not None and put.prev_kv.key == b"a"  # type: ignore[union-attr]
        assert isinstance(listing, GetResponse) and _keys(listing) == [b"a", b"b"]
        assert ok.revision == (await ns.get("a")).kv.mod_revision  # type: ignore[union-attr]

        failed = await ns.txn(
            [Compare.value("a") == "1"],  # now "10"
            [Op.put("a", "never")],
            [Op.get("b"), Op.txn([Compare.value("b") == "2"], [Op.get("a")], [])],
        )
        assert not failed.succeeded
        got_b, nested = failed.responses
        assert isinstance(got_b, GetResponse) and _keys(got_b) == [b"b"]
        assert isinstance(nested, TxnResponse) and nested.succeeded
        inner = nested.responses[0]
        assert isinstance(inner, GetResponse) and inner.value == b"10" and _keys(inner) == [b"a"]

        fluent = (
            await ns.transaction()
            .If(Compare.create_revision("b") > 0)
            .Then(Op.get("b"))
            .Else(Op.get("a"))
            .commit()
        )
        assert fluent.succeeded and _keys(fluent.responses[0]) == [b"b"]  # type: ignore[arg-type]
        await _decoys_intact(etcd, decoys)


async def test_watch_with_prev_kv_sees_only_the_namespace(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        ns = etcd.namespace(f"{prefix}ns/")
        async with await ns.watch("", prefix=True, prev_kv=True) as watcher:
            await ns.put("k", "v1")
            await etcd.put(f"{prefix}k", "outside")  # same relative name, outside
            await etcd.put(f"{prefix}ns0", "outside")
            await ns.put("k", "v2")
            await ns.delete("k")
            seen: list[tuple[EventType, bytes, bytes | None]] = []
            while len(seen) < 3:
                for event in (await watcher.get(timeout=5)).events:
                    prev = event.prev_kv.key if event.prev_kv is not None else None
                    seen.append((event.type, event.key, prev))
            assert seen == [
                (EventType.PUT, b"k", None),
                (EventType.PUT, b"k", b"k"),
                (EventType.DELETE, b"k", b"k"),
            ]
            marker = await ns.put("marker", "")
            batch = await watcher.get(timeout=5)  # nothing from outside came in between
            assert [(e.key, e.revision) for e in batch.events] == [(b"marker", marker.revision)]


async def test_leases_show_only_namespace_keys(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        ns = etcd.namespace(f"{prefix}ns/")
        lease = await ns.grant(30)
        try:
            await ns.put("leased", "v", lease=lease)
            await etcd.put(f"{prefix}outside", "v", lease=lease)
            inside = await ns.time_to_live(lease, keys=True)
            assert inside.keys == [b"leased"]
            outside = await etcd.time_to_live(lease, keys=True)
            assert sorted(outside.keys) == sorted(
                [f"{prefix}ns/leased".encode(), f"{prefix}outside".encode()]
            )
        finally:
            await ns.revoke(lease)
        assert (await ns.get("leased")).kv is None


async def test_recipes_run_inside(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        ns = etcd.namespace(f"{prefix}ns/")
        async with ns.lock("job", ttl=10, timeout=5) as lock:
            session = lock.session
            assert session is not None
            assert lock.key == f"job/{session.lease_id:x}"  # Go's layout, inside the prefix
            assert (await etcd.get(f"{prefix}ns/{lock.key}")).kv is not None
            written = await lock.guarded_txn([Op.put("guarded", "x")])
            assert written.succeeded and written.revision > 0
            assert (await etcd.get(f"{prefix}ns/guarded")).value == b"x"
            private = await ns.session(ttl=5)
            with pytest.raises(errors.LockTimeout):
                await ns.lock("job", timeout=0.3, session=private).acquire()
            await private.close()
        assert (await etcd.get(f"{prefix}ns/job/", prefix=True, count_only=True)).count == 0

        election = ns.election("leader", ttl=10)
        await election.campaign("me", timeout=5)
        leader = await ns.election("leader").leader()
        assert leader is not None and leader.value == b"me"
        assert leader.key.startswith(b"leader/")
        await election.resign()

        slot = ns.semaphore("pool", 2, ttl=10)
        async with slot:
            holders = await slot.holders()
            assert [kv.key for kv in holders] == [slot.key.encode()]
            assert slot.key.startswith("pool/")

        await ns.put("cfg/port", "8080")
        await etcd.put(f"{prefix}cfg/port", "1")  # outside: must not be seen
        async with ns.config("cfg/") as config:
            assert config.snapshot.to_dict() == {"port": 8080}
            before = config.revision
            await ns.put("cfg/host", '"db"')
            changed = await config.wait_for_change(before, timeout=5)
            assert changed.to_dict() == {"port": 8080, "host": "db"}


async def test_nested_namespaces_join_prefixes(etcd_endpoint: str, prefix: str) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        outer = etcd.namespace(f"{prefix}a/")
        inner = outer.namespace("b/")
        assert inner.prefix == f"{prefix}a/b/".encode()
        await inner.put("k", "v")
        assert (await etcd.get(f"{prefix}a/b/k")).value == b"v"
        assert _keys(await outer.get("", prefix=True)) == [b"b/k"]
        assert _keys(await inner.get("", from_key=True)) == [b"k"]
        with pytest.raises(errors.InvalidRequest):
            etcd.namespace("")
        with pytest.raises(errors.InvalidRequest):
            etcd.namespace(42)  # type: ignore[arg-type]


async def test_namespace_follows_the_client_close(etcd_endpoint: str, prefix: str) -> None:
    etcd = AsyncClient(etcd_endpoint)
    ns = etcd.namespace(f"{prefix}ns/")
    await ns.put("k", "v")
    assert not ns.closed
    await etcd.close()
    assert ns.closed
    with pytest.raises(errors.ClientClosedError):
        await ns.get("k")


def _etcdctl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


async def test_etcdctl_lock_contends_through_a_namespace(etcd_server: Any, prefix: str) -> None:
    name = f"{prefix}ns/x"
    ctl = subprocess.Popen(
        [*etcd_server.etcdctl_args(), "lock", name, "--ttl=2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_etcdctl_env(),
        text=True,
    )
    try:
        assert ctl.stdout is not None
        ctl_key = ctl.stdout.readline().strip()  # etcdctl prints the key once it holds it
        assert ctl_key.startswith(f"{name}/")
        async with AsyncClient(etcd_server.endpoint) as etcd:
            lock = etcd.namespace(f"{prefix}ns/").lock("x", ttl=5)
            assert await lock.try_acquire() is False
            ctl.terminate()
            ctl.wait(10)
            await lock.acquire(timeout=10)  # etcdctl's key goes (released or expired)
            assert lock.key.startswith("x/")
            ctl_rev = (await etcd.get(ctl_key)).kv
            assert ctl_rev is None
            await lock.release()
    finally:
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait(10)


async def test_equal_names_in_two_namespaces_are_different_locks(
    etcd_endpoint: str, prefix: str
) -> None:
    # Both namespaces use the client's shared session, hence equal relative keys.
    async with AsyncClient(etcd_endpoint) as etcd:
        tenant_a, tenant_b = etcd.namespace(f"{prefix}a/"), etcd.namespace(f"{prefix}b/")
        async with tenant_a.lock("jobs", ttl=10, timeout=2) as lock_a:
            async with tenant_b.lock("jobs", ttl=10, timeout=2) as lock_b:
                assert lock_a.key == lock_b.key  # relative keys are equal...
                assert lock_a.session is lock_b.session  # ...on one shared session
        first, second = tenant_a.election("e", ttl=10), tenant_b.election("e", ttl=10)
        await first.campaign("a", timeout=2)
        await second.campaign("b", timeout=2)
        assert first.session is second.session  # no private session was needed
        assert first.is_leader and second.is_leader
        await first.resign()
        await second.resign()
