"""Cluster membership and multi-endpoint behaviour against a real 3-member cluster:
member list, a learner's whole life (add, join, promote, update, remove),
sync_endpoints, and failover when the member in use is killed.

Canonical asyncio tests; ``tests/_sync/test_cluster.py`` is generated from this file.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from etcdsync import AsyncClient, Member, errors
from etcdsync._backends._async import sleep
from etcdsync.testing.cluster import EtcdCluster
from etcdsync.testing.plugin import EtcdServerFactory
from etcdsync.testing.server import allocate_ports

RUN = f"{__name__}/{uuid.uuid4().hex[:8]}"
T = TypeVar("T")


async def _when_healthy(call: Callable[[], Awaitable[T]], limit: float = 15.0) -> T:
    """Run a membership change, waiting out etcd's "unhealthy cluster" refusal.

    With --strict-reconfig-check (the default) the leader refuses to add or remove
    members until it has been connected to every voter for 5 s (HealthInterval), so
    a freshly started or healed cluster answers "etcdserver: unhealthy cluster"
    first.  The refusal happens before anything is proposed: repeating is safe.
    """
    deadline = time.monotonic() + limit
    while True:
        try:
            return await call()
        except errors.Unavailable as exc:
            if exc.details != "etcdserver: unhealthy cluster":
                raise
            assert time.monotonic() < deadline, "the cluster never became healthy"
            await sleep(0.2)


def _by_name(members: list[Member]) -> dict[str, Member]:
    return {m.name: m for m in members}


async def test_member_list_matches_cluster(etcd_cluster: EtcdCluster) -> None:
    async with AsyncClient(etcd_cluster.endpoints[0]) as client:
        members = await client.member_list()
        assert await client.member_list(linearizable=True) == members
        by_name = _by_name(members)
        assert sorted(by_name) == [m.name for m in etcd_cluster]
        for server in etcd_cluster:
            member = by_name[server.name]
            assert member.peer_urls == (server.peer_url,)
            assert member.client_urls == (server.client_url,)
            assert not member.is_learner and member.is_started
            # The id is the one the member reports for itself.
            assert (await client.status(server.endpoint)).member_id == member.id
        assert len({m.id for m in members}) == 3


async def test_member_calls_validate_arguments(etcd_cluster: EtcdCluster) -> None:
    async with AsyncClient(etcd_cluster.endpoints[0]) as client:
        with pytest.raises(errors.InvalidRequest):
            await client.member_add([])
        with pytest.raises(errors.InvalidRequest):
            await client.member_add("127.0.0.1:1234")  # not a URL
        with pytest.raises(errors.InvalidRequest):
            await client.member_remove(0)
        with pytest.raises(errors.MemberNotFoundError):
            await client.member_remove(0x1234)
        voter = (await client.member_list())[0]
        with pytest.raises(errors.MemberNotLearnerError):
            await client.member_promote(voter.id)
        assert len(await client.member_list()) == 3  # nothing changed


async def test_learner_join_promote_update_remove(
    etcd_cluster: EtcdCluster, etcd_server_factory: EtcdServerFactory
) -> None:
    client_port, peer_port, metrics_port = allocate_ports(3)
    peer_url = f"http://127.0.0.1:{peer_port}"
    async with AsyncClient(etcd_cluster.endpoints, timeout=10) as client:
        added = await _when_healthy(lambda: client.member_add_as_learner([peer_url]))
        learner_id = added.member.id
        assert added.member.is_learner and added.member.peer_urls == (peer_url,)
        assert not added.member.is_started  # no name until the process publishes it
        assert {m.id for m in added.members} >= {learner_id}
        assert len(added.members) == 4
        try:
            with pytest.raises(errors.MemberExistsError):
                await client.member_add([etcd_cluster[1].peer_url], learner=True)
            other_url = f"http://127.0.0.1:{allocate_ports(1)[0]}"
            with pytest.raises(errors.TooManyLearnersError):  # etcd allows one learner
                await client.member_add_as_learner([other_url])

            # The new process joins the existing cluster with the membership it was given.
            initial = ",".join(f"{m.name}={m.peer_url}" for m in etcd_cluster)
            learner = etcd_server_factory(
                name="learner",
                client_port=client_port,
                peer_port=peer_port,
                metrics_port=metrics_port,
                initial_cluster=f"{initial},learner={peer_url}",
                extra_args=["--initial-cluster-state", "existing"],
            )
            status = await client.status(learner.endpoint)
            assert status.is_learner and status.member_id == learner_id
            joined = _by_name(await client.member_list(linearizable=True))["learner"]
            assert joined.id == learner_id and joined.client_urls == (learner.client_url,)

            # Promotion is refused until the learner's log has caught up: retry.
            deadline = time.monotonic() + 15
            while True:
                try:
                    members = await client.member_promote(learner_id)
                    break
                except errors.LearnerNotReadyError:
                    assert time.monotonic() < deadline, "learner never caught up"
                    await sleep(0.1)
            promoted = {m.id: m for m in members}[learner_id]
            assert not promoted.is_learner
            # The member itself learns it when it applies the change, a moment later.
            while (await client.status(learner.endpoint)).is_learner:
                assert time.monotonic() < deadline, "the member never saw its promotion"
                await sleep(0.05)

            extra_url = f"http://127.0.0.1:{allocate_ports(1)[0]}"
            members = await client.member_update(learner_id, [peer_url, extra_url])
            assert {m.id: m for m in members}[learner_id].peer_urls == (peer_url, extra_url)
        finally:
            members = await _when_healthy(lambda: client.member_remove(learner_id))
            # The removed member shuts itself down, slowly on 3.4; its data is worthless.
            for server in etcd_server_factory.servers:
                server.kill()
        assert learner_id not in {m.id for m in members}
        assert len(members) == 3
        listed = await client.member_list(linearizable=True)
        assert sorted(m.name for m in listed) == [m.name for m in etcd_cluster]
        with pytest.raises(errors.MemberNotFoundError):
            await client.member_remove(learner_id)


async def test_sync_endpoints(etcd_cluster: EtcdCluster) -> None:
    first = etcd_cluster.endpoints[1]
    async with AsyncClient(first) as client:
        assert client.endpoints == [first]  # opt-in: nothing changes by itself
        endpoints = await client.sync_endpoints()
        assert sorted(endpoints) == sorted(etcd_cluster.endpoints)
        assert client.endpoints == endpoints
        assert client.endpoint == first  # still listed, so kept


async def test_failover_when_used_follower_is_killed(etcd_cluster: EtcdCluster) -> None:
    key = f"{RUN}/follower/"
    leader = etcd_cluster.wait_for_leader()
    follower = next(i for i in range(len(etcd_cluster)) if i != leader)
    order = [follower] + [i for i in range(len(etcd_cluster)) if i != follower]
    endpoints = [etcd_cluster[i].endpoint for i in order]
    try:
        async with AsyncClient(endpoints, timeout=5) as client:
            await client.put(key + "before", "1")
            assert client.endpoint == endpoints[0]
            etcd_cluster.kill(follower)
            # Reads are safe to repeat: the first one after the kill already succeeds
            # (retried on the next member when the dead one refuses or drops it).
            assert (await client.get(key + "before")).value == b"1"
            assert client.endpoint != endpoints[0]
            # A write that was in flight when the connection dropped has an unknown
            # outcome and is reported, not retried: at most one such failure, then
            # writes go to the next member.
            for attempt in range(2):
                try:
                    await client.put(key + "after", str(attempt))
                    break
                except errors.Unavailable:
                    assert attempt == 0
            after = await client.get(key + "after")
            assert after.value is not None
            assert client.endpoint != endpoints[0]
    finally:
        etcd_cluster.heal()


async def test_failover_when_used_leader_is_killed(etcd_cluster: EtcdCluster) -> None:
    key = f"{RUN}/leader/"
    leader = etcd_cluster.wait_for_leader()
    order = [leader] + [i for i in range(len(etcd_cluster)) if i != leader]
    endpoints = [etcd_cluster[i].endpoint for i in order]
    try:
        async with AsyncClient(endpoints, timeout=2) as client:
            await client.put(key + "before", "1")
            etcd_cluster.kill(leader)
            # Until the survivors elect a new leader (about one election timeout), a
            # write may fail: Unavailable, or Timeout when a follower forwarded it to
            # the dead leader and it was lost.  Either way its outcome is unknown and
            # it is not retried.  What is guaranteed is that the client recovers on
            # its own, with no reconfiguration, well within a deadline.
            deadline = time.monotonic() + 15
            failures = 0
            while True:
                try:
                    await client.put(key + "after", "2")
                    break
                except (errors.Unavailable, errors.Timeout):
                    failures += 1
                    assert time.monotonic() < deadline, f"no write after {failures} failures"
            assert (await client.get(key + "after")).value == b"2"
            assert (await client.get(key + "before")).value == b"1"
            assert client.endpoint != endpoints[0]
    finally:
        etcd_cluster.heal()
