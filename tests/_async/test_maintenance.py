"""Maintenance requests against real etcd: status and hashes on every member of a
3-member cluster, alarms (including a real NOSPACE alarm and its recovery),
defragmentation, snapshots checked by etcd's own tooling, and leader transfer.

Canonical asyncio tests; ``tests/_sync/test_maintenance.py`` is generated from this file.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from pathlib import Path

import pytest

from etcdsync import AlarmType, AsyncClient, errors
from etcdsync._backends._async import sleep
from etcdsync.testing.cluster import EtcdCluster
from etcdsync.testing.plugin import EtcdServerFactory
from etcdsync.testing.server import allocate_ports, run_etcdctl

RUN = f"{__name__}/{uuid.uuid4().hex[:8]}"


async def test_status_of_every_member(etcd_cluster: EtcdCluster) -> None:
    async with AsyncClient(etcd_cluster.endpoints) as client:
        ids = {m.name: m.id for m in await client.member_list()}
        statuses = [await client.status(server.endpoint) for server in etcd_cluster]
        # Each status comes from the member asked for, not from the current endpoint.
        assert [s.member_id for s in statuses] == [ids[m.name] for m in etcd_cluster]
        assert len({s.leader for s in statuses}) == 1
        assert len({s.raft_term for s in statuses}) == 1
        assert sum(s.is_leader for s in statuses) == 1
        assert statuses[0].leader in ids.values()
        for status in statuses:
            assert status.version == etcd_cluster.version
            assert 0 < status.db_size_in_use <= status.db_size
            assert status.raft_applied_index > 0 and status.raft_index > 0
            assert not status.is_learner and status.errors == ()
        current = await client.status()
        assert current.member_id == ids[etcd_cluster[0].name]  # the current endpoint


async def test_hash_kv_agrees_across_members(etcd_cluster: EtcdCluster) -> None:
    async with AsyncClient(etcd_cluster.endpoints) as client:
        for i in range(5):
            await client.put(f"{RUN}/hash/{i}", str(i))
        revision = (await client.put(f"{RUN}/hash/last", "x")).revision
        hashes = []
        for server in etcd_cluster:
            # A linearizable read through the member: it has applied `revision` now.
            async with AsyncClient(server.endpoint) as one:
                await one.get(f"{RUN}/hash/last")
            hashes.append(await client.hash_kv(revision, server.endpoint))
        assert len({h.hash for h in hashes}) == 1
        assert len({h.compact_revision for h in hashes}) == 1
        assert len({h.member_id for h in hashes}) == 3
        await client.put(f"{RUN}/hash/after", "y")
        # The hash is of the history up to `revision`: later writes do not change it.
        again = await client.hash_kv(revision, etcd_cluster[0].endpoint)
        assert again.hash == hashes[0].hash and again.revision > revision
        latest = await client.hash_kv(endpoint=etcd_cluster[0].endpoint)
        assert latest.hash != hashes[0].hash
        whole = await client.hash(etcd_cluster[0].endpoint)
        assert whole.hash > 0 and whole.member_id == hashes[0].member_id
        with pytest.raises(errors.InvalidRequest):
            await client.hash_kv(-1)


async def test_pinned_endpoint_never_fails_over(etcd_cluster: EtcdCluster) -> None:
    dead = f"127.0.0.1:{allocate_ports(1)[0]}"
    async with AsyncClient(etcd_cluster.endpoints, timeout=3) as client:
        with pytest.raises(errors.ConnectionFailedError) as caught:
            await client.status(dead)
        assert caught.value.endpoints == (dead,)
        assert client.endpoint == etcd_cluster.endpoints[0]


async def test_no_alarms_on_a_healthy_cluster(etcd_cluster: EtcdCluster) -> None:
    async with AsyncClient(etcd_cluster.endpoints) as client:
        assert await client.alarms() == []
        assert await client.alarm_disarm() == []


async def test_nospace_alarm_and_recovery(etcd_server_factory: EtcdServerFactory) -> None:
    server = etcd_server_factory(quota_backend_bytes=256 * 1024)
    value = b"x" * 32 * 1024
    async with AsyncClient(server.endpoint) as client:
        # The quota is checked against the backend size, which grows when etcd
        # commits its write batch (every 100 ms): keep writing until refused.
        refused = False
        for i in range(2000):
            try:
                await client.put(f"fill/{i}", value)
            except errors.ResourceExhaustedError:
                refused = True
                break
        assert refused, "the quota was never enforced"
        member_id = (await client.status()).member_id
        alarms = await client.alarms()
        assert [(a.member_id, a.type) for a in alarms] == [(member_id, AlarmType.NOSPACE)]
        assert "NOSPACE" in " ".join((await client.status()).errors)
        with pytest.raises(errors.ResourceExhaustedError):
            await client.put("small", "1")  # refused while the alarm is raised

        # The documented recovery: free space, give it back, then disarm.
        deleted = await client.delete("fill/", prefix=True)
        await client.compact(deleted.revision, physical=True)
        before = await client.status()
        await client.defragment()
        after = await client.status()
        assert after.db_size < before.db_size
        cleared = await client.alarm_disarm()
        assert [(a.member_id, a.type) for a in cleared] == [(member_id, AlarmType.NOSPACE)]
        assert await client.alarms() == []
        await client.put("small", "1")
        assert (await client.get("small")).value == b"1"


def _snapshot_status(cluster: EtcdCluster, path: Path) -> dict[str, int]:
    """Ask etcd's own tooling to read the file: etcdutl (3.5+) or etcdctl (3.4)."""
    etcdutl = cluster.binary.path.with_name("etcdutl")
    tool = etcdutl if etcdutl.exists() else cluster.binary.require_etcdctl()
    out = run_etcdctl([str(tool), "snapshot", "status", str(path), "-w", "json"])
    status: dict[str, int] = json.loads(out)
    return status


async def test_snapshot_to_file(etcd_cluster: EtcdCluster, tmp_path: Path) -> None:
    async with AsyncClient(etcd_cluster.endpoints) as client:
        revision = (await client.put(f"{RUN}/snap", "v")).revision
        path = tmp_path / "member1.db"
        size = await client.snapshot(path, etcd_cluster[1].endpoint)
        assert size == path.stat().st_size > 0
        assert not (tmp_path / "member1.db.part").exists()
        data = path.read_bytes()
        # The trailing SHA-256 etcd appends covers everything before it.
        assert hashlib.sha256(data[:-32]).digest() == data[-32:]
        status = _snapshot_status(etcd_cluster, path)
        assert status["revision"] >= revision and status["totalKey"] > 0

        buffer = io.BytesIO()
        written = await client.snapshot(buffer)
        assert written == len(buffer.getvalue()) > 0


async def test_snapshot_failure_leaves_no_file(etcd_cluster: EtcdCluster, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{allocate_ports(1)[0]}"
    path = tmp_path / "never.db"
    async with AsyncClient(etcd_cluster.endpoints, timeout=3) as client:
        with pytest.raises(errors.ConnectionFailedError):
            await client.snapshot(path, dead)
    assert list(tmp_path.iterdir()) == []


async def test_move_leader(etcd_cluster: EtcdCluster) -> None:
    leader_index = etcd_cluster.wait_for_leader()
    # Start on a follower: the request must still reach the leader.
    follower = next(i for i in range(len(etcd_cluster)) if i != leader_index)
    async with AsyncClient(etcd_cluster[follower].endpoint) as client:
        old_leader = (await client.status()).leader
        target = next(m.id for m in await client.member_list() if m.id != old_leader)
        await client.move_leader(target)
        # The old leader returns once the target leads; other members learn it
        # with the next heartbeat.
        deadline = time.monotonic() + 5
        while (await client.status()).leader != target:
            assert time.monotonic() < deadline, "leadership did not move"
            await sleep(0.05)
        assert (await client.status(etcd_cluster[leader_index].endpoint)).leader == target
        with pytest.raises(errors.InvalidRequest):
            await client.move_leader(0x1234)  # not a member
        with pytest.raises(errors.InvalidRequest):
            await client.move_leader(0)
