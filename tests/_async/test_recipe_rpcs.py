"""RPCs per recipe operation, counted by the server itself (its gRPC counters).

Each test runs on a private server, so nothing else is counted.  Unary calls are
``grpc_server_handled_total{grpc_type="unary"}`` per method; watch creates and
cancels are the messages the server received on Watch streams.  Keepalive
renewals are not counted (sessions here have a long TTL).

Each operation is at its minimum (what a correct recipe needs at least):

* lock acquire + release, uncontended: 2 (one txn creating the key and reading
  the owner, one delete);
* contended handoff, from the holder's release to the waiter's acquire: 2 (the
  delete, then one read by the waiter: its predecessors and its own key, in one
  txn);
* campaign + resign, uncontended: 2 (the create also reads the oldest candidate;
  the resign's delete);
* a config update reaching every subscriber: 0 beyond the writer's put.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from etcdsync import AsyncClient
from etcdsync._backends._async import Event, spawn, wait_event

TTL = 60  # no keepalive renewal falls inside a measurement


def _unary(server: Any) -> Counter[str]:
    counts: Counter[str] = Counter()
    for sample in server.metrics().series("grpc_server_handled_total", grpc_type="unary"):
        counts[sample.labels["grpc_method"]] += int(sample.value)
    return counts


def _watch_msgs(server: Any) -> int:
    series = server.metrics().series("grpc_server_msg_received_total", grpc_method="Watch")
    return int(sum(s.value for s in series))


def _delta(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


async def test_uncontended_lock_cycle_is_two_txns(etcd_server_factory: Any) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint) as etcd:
        async with etcd.lock("rpc/lock", ttl=TTL):
            pass  # the session and its keepalive exist from here on
        before, msgs = _unary(server), _watch_msgs(server)
        for _ in range(10):
            async with etcd.lock("rpc/lock", ttl=TTL):
                pass
        assert _delta(before, _unary(server)) == {"Txn": 20}
        assert _watch_msgs(server) == msgs


async def test_contended_handoff_rpcs(etcd_server_factory: Any) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint) as holder, AsyncClient(server.endpoint) as waiter:
        for client in (holder, waiter):
            async with client.lock("rpc/warm", ttl=TTL):
                pass
        lock = holder.lock("rpc/handoff", ttl=TTL)
        await lock.acquire()
        msgs = _watch_msgs(server)
        counts: dict[str, Counter[str]] = {}
        acquired = Event()

        async def wait_for_the_lock() -> None:
            async with waiter.lock("rpc/handoff", ttl=TTL):
                counts["acquired"] = _unary(server)
                acquired.set()

        spawn(wait_for_the_lock, name="test-waiter")
        deadline = time.monotonic() + 10
        while _watch_msgs(server) == msgs:  # queued: its watch on the holder's key exists
            assert time.monotonic() < deadline, "the waiter never started watching"
            await wait_event(acquired, 0.01)
        counts["release"] = _unary(server)
        await lock.release()
        assert await wait_event(acquired, 10)
        handoff = _delta(counts["release"], counts["acquired"])
        total = sum(handoff.values())
        print(f"handoff: {handoff}")
        # The holder's guarded delete, and the waiter's one read (a txn of two ranges).
        assert handoff == {"Txn": 2}, handoff
        assert total == 2


async def test_campaign_and_resign_rpcs(etcd_server_factory: Any) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint) as etcd:
        election = etcd.election("rpc/election", ttl=TTL)
        await election.campaign(b"a")
        await election.resign()
        before, msgs = _unary(server), _watch_msgs(server)
        await election.campaign(b"b")
        await election.resign()
        cycle = _delta(before, _unary(server))
        print(f"campaign + resign: {cycle}, {_watch_msgs(server) - msgs} watch msgs")
        # The create (which read the oldest candidate too), then the guarded delete.
        assert cycle == {"Txn": 2}, cycle


async def test_a_config_update_costs_no_rpc_beyond_the_put(etcd_server_factory: Any) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint) as writer, AsyncClient(server.endpoint) as reader:
        await writer.put("rpc/config/a", '"0"')
        configs = [await reader.config("rpc/config/").start() for _ in range(2)]
        seen: list[Any] = []
        for config in configs:
            for _ in range(5):
                config.subscribe(seen.append)
        before, msgs = _unary(server), _watch_msgs(server)
        put = await writer.put("rpc/config/a", '"1"')
        for config in configs:
            snapshot = await config.wait_for_change(put.revision - 1, timeout=10)
            assert snapshot.revision == put.revision
        deadline = time.monotonic() + 10
        while len(seen) < 10:  # every subscriber called
            assert time.monotonic() < deadline, f"{len(seen)} of 10 subscribers called"
            await wait_event(Event(), 0.01)
        assert _delta(before, _unary(server)) == {"Put": 1}
        assert _watch_msgs(server) == msgs
        for config in configs:
            await config.stop()
