"""The connection under member faults: the ordering guard against a lagging member,
server streams (snapshot, election observe) across the death of their member.

Scenario A: a member cut off from the others by a peer partition still answers
serializable reads, from its own, older state.  A client that already saw a newer
revision and fails over to it must never go back in time: it reads again on another
member, or raises StaleReadError.

Scenario A2: a member cut off from its peers holds a write until etcd's own request
timeout and then answers with a deadline error of its own ("context deadline
exceeded", code UNKNOWN on etcd 3.5).  That answer counts as a failed member, as a
client-side deadline does: the next call is served by another member at once.

Scenario B: the member streaming a snapshot, or serving a server-side election
observation, is killed mid-stream: the snapshot starts over on another member and is
complete and valid; the observation goes on elsewhere and reports the next leader
once.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from typing import Any

import pytest

from etcdsync import AsyncClient, Client, errors
from etcdsync.testing import EtcdCluster

from .conftest import SETTINGS, client, endpoints_first, report

pytestmark = pytest.mark.faults


def _roles(cluster: EtcdCluster) -> tuple[int, int, int]:
    """(lagging, writer, other): two followers and the leader, in that order."""
    leader = cluster.wait_for_leader()
    followers = [i for i in range(len(cluster)) if i != leader]
    return followers[0], leader, followers[1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_ordering_guard_never_reads_behind_what_was_seen(
    proxied_cluster: EtcdCluster, flavour: str
) -> None:
    """Scenario A (both flavours)."""
    cluster = proxied_cluster
    lagging, good, other = _roles(cluster)
    proxied = cluster.proxied_endpoints
    with client([cluster.endpoints[good]]) as admin:
        admin.put("order/k", "old")
        cluster.partition(lagging)  # from here on it learns nothing new
        seen = admin.put("order/k", "new").revision
    with client([cluster.endpoints[lagging]]) as direct:
        lag_rev = direct.get("order/k", serializable=True).revision
    assert lag_rev < seen
    # Endpoints: the good member first, then the lagging one, then the other.
    endpoints = [proxied[good], proxied[lagging], proxied[other]]
    run = _guard_sync if flavour == "sync" else _guard_async_runner
    outcome = run(cluster, endpoints, good, other)
    assert outcome["first_revision"] >= seen
    # After the failover, the serializable read went to the lagging member first...
    assert outcome["failed_over_to"] == proxied[lagging]
    # ...whose stale answer was not returned: it was read again on the other member.
    assert outcome["value"] == b"new" and outcome["revision"] >= seen, outcome
    assert outcome["served_by"] == proxied[other]
    # With no up-to-date member left, the guard raises a typed error instead.
    assert outcome["stale_error"] == "StaleReadError", outcome
    assert outcome["stale_revision"] < outcome["stale_seen"]
    report(
        f"ordering guard ({flavour}): saw revision {seen}; the lagging member answered "
        f"serializable reads at {lag_rev}; re-read elsewhere at {outcome['revision']}; "
        f"alone, StaleReadError ({outcome['stale_revision']} < {outcome['stale_seen']})"
    )


def _guard_sync(
    cluster: EtcdCluster, endpoints: list[str], good: int, other: int
) -> dict[str, Any]:
    outcome: dict[str, Any] = {}
    with client(endpoints) as etcd, client([endpoints[2], endpoints[1]], retries=2) as alone:
        outcome["first_revision"] = etcd.get("order/k").revision  # linearizable, seen
        alone.get("order/k")  # this one saw the new revision too
        cluster.client_proxy(good).blackhole()
        with pytest.raises(errors.Timeout):
            etcd.get("order/k", timeout=0.5)  # the good member went silent: fail over
        outcome["failed_over_to"] = etcd.endpoint
        response = etcd.get("order/k", serializable=True)
        outcome.update(value=response.value, revision=response.revision)
        outcome["served_by"] = etcd.endpoint
        cluster.kill(other)  # `alone` has only the lagging member left
        started = time.monotonic()
        try:
            alone.get("order/k", serializable=True)
            outcome["stale_error"] = "none"
        except errors.EtcdError as exc:
            outcome["stale_error"] = type(exc).__name__
            outcome["stale_revision"] = getattr(exc, "revision", None)
            outcome["stale_seen"] = getattr(exc, "seen_revision", None)
        assert time.monotonic() - started < 2.5  # within the client's deadline
    return outcome


async def _guard_async(
    cluster: EtcdCluster, endpoints: list[str], good: int, other: int
) -> dict[str, Any]:
    outcome: dict[str, Any] = {}
    options: dict[str, Any] = {"timeout": 2.0, "settings": SETTINGS}
    async with (
        AsyncClient(endpoints, **options) as etcd,
        AsyncClient([endpoints[2], endpoints[1]], retries=2, **options) as alone,
    ):
        outcome["first_revision"] = (await etcd.get("order/k")).revision
        await alone.get("order/k")
        cluster.client_proxy(good).blackhole()
        with pytest.raises(errors.Timeout):
            await etcd.get("order/k", timeout=0.5)
        outcome["failed_over_to"] = etcd.endpoint
        response = await etcd.get("order/k", serializable=True)
        outcome.update(value=response.value, revision=response.revision)
        outcome["served_by"] = etcd.endpoint
        cluster.kill(other)
        started = time.monotonic()
        try:
            await alone.get("order/k", serializable=True)
            outcome["stale_error"] = "none"
        except errors.EtcdError as exc:
            outcome["stale_error"] = type(exc).__name__
            outcome["stale_revision"] = getattr(exc, "revision", None)
            outcome["stale_seen"] = getattr(exc, "seen_revision", None)
        assert time.monotonic() - started < 2.5
    return outcome


def _guard_async_runner(
    cluster: EtcdCluster, endpoints: list[str], good: int, other: int
) -> dict[str, Any]:
    return asyncio.run(_guard_async(cluster, endpoints, good, other))


# etcd's request timeout with the harness's 500 ms election timeout: 5 s + 2 x 0.5 s.
SERVER_REQUEST_TIMEOUT = 6.0
# The client's deadline: longer, so the cut-off member's own answer comes first.
CLIENT_DEADLINE = 9.0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_server_reported_deadline_moves_the_client(
    proxied_cluster: EtcdCluster, flavour: str
) -> None:
    """Scenario A2 (both flavours)."""
    cluster = proxied_cluster
    cut, leader, _ = _roles(cluster)
    endpoints = endpoints_first(cluster.endpoints, cut)
    cluster.member_id(cut)  # looked up now, so the partition itself is instant
    cluster.partition(cut)
    # Leaderless, the member holds a proposal until etcd's request timeout and answers
    # with its context's error (with a leader still believed in, it answers "request
    # timed out": that one already moved the client).
    started = time.monotonic()
    while cluster[cut].metrics().get("etcd_server_has_leader") != 0.0:
        assert time.monotonic() - started < 10, "the cut-off member kept its leader"
        time.sleep(0.02)
    run = _moves_sync if flavour == "sync" else _moves_async_runner
    outcome = run(endpoints)
    first = outcome["first"]
    # The member answered by itself, before the client's deadline passed.
    assert first["error"] in ("Timeout", "Unavailable"), first
    assert first["elapsed"] < CLIENT_DEADLINE - 0.5, first
    assert first["endpoint"] == cluster.endpoints[cut]
    # The next call went elsewhere and was served well within etcd's request timeout
    # (on the cut-off member it would have waited that long again).
    after = outcome["next"]
    assert after["endpoint"] != cluster.endpoints[cut], outcome
    assert after["elapsed"] < SERVER_REQUEST_TIMEOUT - 1.0, outcome
    with client([cluster.endpoints[leader]]) as check:
        assert check.get("a2/k").value == b"after"
    report(
        f"server-reported deadline ({flavour}): the cut-off member answered "
        f"{first['code']} {first['details']!r} after {first['elapsed']:.2f} s; the next "
        f"put was served by another member in {after['elapsed']:.2f} s"
    )


def _moves_sync(endpoints: list[str]) -> dict[str, Any]:
    outcome: dict[str, Any] = {}
    with client(endpoints, timeout=CLIENT_DEADLINE) as etcd:
        started = time.monotonic()
        try:
            etcd.put("a2/k", "before")
            outcome["first"] = {"error": "none"}
        except errors.EtcdError as exc:
            outcome["first"] = _failure(exc, started)
        started = time.monotonic()
        etcd.put("a2/k", "after")
        outcome["next"] = {"elapsed": time.monotonic() - started, "endpoint": etcd.endpoint}
    return outcome


async def _moves_async(endpoints: list[str]) -> dict[str, Any]:
    outcome: dict[str, Any] = {}
    async with AsyncClient(endpoints, timeout=CLIENT_DEADLINE, settings=SETTINGS) as etcd:
        started = time.monotonic()
        try:
            await etcd.put("a2/k", "before")
            outcome["first"] = {"error": "none"}
        except errors.EtcdError as exc:
            outcome["first"] = _failure(exc, started)
        started = time.monotonic()
        await etcd.put("a2/k", "after")
        outcome["next"] = {"elapsed": time.monotonic() - started, "endpoint": etcd.endpoint}
    return outcome


def _moves_async_runner(endpoints: list[str]) -> dict[str, Any]:
    return asyncio.run(_moves_async(endpoints))


def _failure(exc: errors.EtcdError, started: float) -> dict[str, Any]:
    return {
        "error": type(exc).__name__,
        "code": exc.code,
        "details": exc.details,
        "elapsed": time.monotonic() - started,
        "endpoint": exc.endpoint,
    }


class _KillAfter(io.BytesIO):
    """A snapshot target that kills member ``index`` once ``limit`` bytes arrived, and
    reads slowly meanwhile, so that the member is still sending when it dies (gRPC's
    flow control holds the rest of the stream on its side)."""

    def __init__(self, cluster: EtcdCluster, index: int, limit: int) -> None:
        super().__init__()
        self.cluster, self.index, self.limit = cluster, index, limit
        self.killed_at: float | None = None

    def write(self, data: Any) -> int:
        written = super().write(data)
        if self.killed_at is None:
            if self.tell() >= self.limit:
                self.cluster.kill(self.index)
                self.killed_at = time.monotonic()
            else:
                time.sleep(0.002)  # a slow disk
        return written


@pytest.mark.timeout(60)
def test_server_streams_go_on_when_their_member_dies(proxied_cluster: EtcdCluster) -> None:
    """Scenario B: snapshot and server-side observe across a member's SIGKILL."""
    cluster = proxied_cluster
    serving, leader, other = _roles(cluster)
    first = [cluster.proxied_endpoints[i] for i in (serving, leader, other)]
    with client(endpoints_first(cluster.endpoints, leader), timeout=10) as admin:
        for i in range(80):  # about 8 MiB: more than gRPC's flow-control windows
            admin.put(f"snap/{i}", bytes(range(256)) * 400)
        lease = admin.grant(30)
        leader_key = admin.server_campaign("obs", lease, "one")
        with Client(first, timeout=30, settings=SETTINGS) as etcd:
            observer = etcd.server_observe("obs")
            assert etcd.endpoint == first[0]
            assert (kv := observer.get()) is not None and kv.value == b"one"
            out = _KillAfter(cluster, serving, 1_000_000)
            size = etcd.snapshot(out)
            assert out.killed_at is not None
            snapshot_done = time.monotonic() - out.killed_at
            data = out.getvalue()
            assert size == len(data) > 8_000_000
            assert hashlib.sha256(data[:-32]).digest() == data[-32:]
            assert etcd.endpoint != first[0]
            # The observation's member is dead too: the next leader is still reported.
            admin.server_proclaim(leader_key, "two")
            started = time.monotonic()
            kv = observer.get()
            observed = time.monotonic() - started
            assert kv is not None and kv.value == b"two"
            assert observed < 3.0 and observer.reconnects >= 1
            observer.cancel()
        admin.revoke(lease)
    report(
        f"server streams: snapshot of {size} bytes complete {snapshot_done:.2f} s after its "
        f"member's SIGKILL (started over elsewhere, checksum valid); observe reported "
        f"the next leader {observed:.2f} s after the proclaim"
    )
