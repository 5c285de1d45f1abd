"""Watches under faults: a restarted member, a compaction while away, a blackholed path.

A writer process (``worker.py seq``) commits sequenced keys exactly once each; the
store's history of the prefix, replayed afterwards, is what every watcher must have
received: each event once, in revision order, none missing.  Both flavours watch:
the sync client in the test, the asyncio client in a thread next to it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import pytest

from etcdsync import AsyncClient, errors
from etcdsync.models import KeyValue
from etcdsync.testing import EtcdCluster

from .conftest import (
    SETTINGS,
    InThread,
    WatchLog,
    WatchRecord,
    Worker,
    async_watch_log,
    client,
    endpoints_first,
    follower_of,
    replay,
    report,
    wait_for,
)
from .history import History, check_delivery, resume_points

pytestmark = pytest.mark.faults


def _assert_delivered(name: str, log: list[WatchRecord], expected: list[tuple[int, bytes]]) -> None:
    delivery = check_delivery([(rev, key) for _, rev, key in log], expected)
    assert delivery.duplicated == [], f"{name}: duplicated revisions {delivery.duplicated[:5]}"
    assert delivery.lost == [], f"{name}: lost revisions {delivery.lost[:5]}"
    assert delivery.out_of_order == [], f"{name}: out of order {delivery.out_of_order[:5]}"
    assert delivery.wrong_revision == [], delivery.wrong_revision[:5]


def _decoded(kvs: list[KeyValue], prefix: str) -> dict[str, str]:
    """What a ``decode="text"`` ConfigWatcher should show for ``kvs``."""
    return {kv.key.decode()[len(prefix) :]: kv.value.decode() for kv in kvs}


def _longest_stall(log: list[WatchRecord], after: float) -> float:
    """The longest wait between deliveries from time ``after`` on."""
    times = [after] + [t for t, _, _ in log if t > after]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


@pytest.mark.timeout(120)
def test_member_serving_the_watch_restarted_during_writes(
    cluster: EtcdCluster, history: History, workers: Callable[..., Worker]
) -> None:
    """Scenario 3: the member serving the watches (the leader) crashes (SIGKILL; SIGTERM
    on etcd 3.5.0-3.5.2, see EtcdServer.crash) and is started again while 500 sequenced
    writes go on: nothing lost, nothing repeated, the watch resumes at the last delivered
    revision + 1, and a ConfigWatcher on the same prefix converges to the store."""
    prefix, count = "s3/", 500
    serving = cluster.wait_for_leader()
    near = endpoints_first(cluster.endpoints, serving)
    with client(near) as etcd:
        start = etcd.get(prefix, prefix=True, count_only=True).revision
        sync_log = WatchLog(etcd.watch(prefix, prefix=True))
        config = etcd.config(prefix, decode="text").start(timeout=5)
        ready, stop = threading.Event(), threading.Event()
        async_actor = InThread(async_watch_log, near, prefix, ready, stop)
        assert ready.wait(10)
        elsewhere = endpoints_first(cluster.endpoints, (serving + 1) % 3)
        writer = workers("seq", elsewhere, prefix, count, "writer", 0.004)
        writer.expect("progress 150", 30)
        member = cluster.members[serving]
        signal = member.crash_signal
        restart_at = history.event("nemesis", f"{signal}+start", member=serving).time
        member.crash()
        cluster.restart(serving)  # start again on its data
        back_at = history.event("nemesis", "restarted", member=serving).time
        writer.expect("done", 60)
        assert writer.wait(10) == 0

        store = replay(etcd, prefix, prefix=True, start_revision=start + 1)
        expected = [(e.revision, e.key) for e in store]
        assert len(expected) == count
        last = expected[-1][0]
        # Nothing else writes to the cluster: the prefix's revisions are consecutive, so
        # a lossless resume shows as "first revision after the restart = last before + 1".
        assert [r for r, _ in expected] == list(range(expected[0][0], last + 1))
        wait_for(lambda: sync_log.last_revision() >= last, 15, "the sync watcher")
        sync_events = sync_log.stop()
        final = _decoded(etcd.get(prefix, prefix=True).kvs, prefix)
        converged = wait_for(
            lambda: config.snapshot.revision == last and config.snapshot.to_dict() == final,
            15,
            "the ConfigWatcher to converge",
        )
        reconnects = etcd._watch_stream(False).reconnects
        stop.set()
        async_events = async_actor.result(15)
        config.stop()

    _assert_delivered("sync watcher", sync_events, expected)
    _assert_delivered("async watcher", async_events, expected)
    resumed = resume_points([(t, rev) for t, rev, _ in sync_events], restart_at)
    assert resumed is not None and resumed[1] == resumed[0] + 1, resumed
    async_resumed = resume_points([(t, rev) for t, rev, _ in async_events], restart_at)
    assert async_resumed is not None and async_resumed[1] == async_resumed[0] + 1
    assert reconnects >= 1
    stall = _longest_stall(sync_events, restart_at)
    report(
        f"scenario 3 (watched member {signal} + restart during {count} writes, etcd "
        f"{cluster.version}): sync and async watchers {len(sync_events)} / "
        f"{len(async_events)} events, 0 lost, 0 duplicated, resumed at {resumed[1]} = last "
        f"{resumed[0]} + 1 (stall {stall:.2f} s, member back after "
        f"{back_at - restart_at:.2f} s); ConfigWatcher converged at revision {last} "
        f"({converged:.2f} s after the replay)"
    )


@pytest.mark.timeout(90)
def test_compaction_past_a_disconnected_watcher(cluster: EtcdCluster, history: History) -> None:
    """Scenario 4: the only member a watcher can reach is down while the others write,
    delete and compact; once it is back the watcher gets a CompactedError carrying the
    compact revision (sync and async), and a ConfigWatcher reloads and converges."""
    prefix = "s4/"
    lonely = follower_of(cluster)
    alone = [cluster.endpoints[lonely]]
    others = [e for i, e in enumerate(cluster.endpoints) if i != lonely]
    with client(alone) as near, client(others) as etcd:
        first = etcd.put(f"{prefix}000", "0").revision
        for i in range(1, 10):
            etcd.put(f"{prefix}{i:03d}", str(i))
        watcher = near.watch(prefix, prefix=True, start_revision=first)
        seen = 0
        while seen < 10:
            seen += len(watcher.get(timeout=5).events)
        config = near.config(prefix, decode="text").start(timeout=5)
        assert config.snapshot.to_dict() == _decoded(etcd.get(prefix, prefix=True).kvs, prefix)

        ready = threading.Event()

        async def async_side() -> int:
            async with AsyncClient(alone, timeout=2.0, settings=SETTINGS) as etcd_async:
                behind = await etcd_async.watch(prefix, prefix=True, start_revision=first)
                got = 0
                while got < 10:
                    got += len((await behind.get(timeout=5)).events)
                ready.set()
                with pytest.raises(errors.CompactedError) as caught:
                    while True:
                        await behind.get(timeout=20)
                return caught.value.compact_revision

        async_actor = InThread(async_side)
        assert ready.wait(10)
        history.event("nemesis", "kill", member=lonely)
        cluster.kill(lonely)
        for i in range(10, 60):
            etcd.put(f"{prefix}{i:03d}", str(i))
        for i in range(0, 10, 2):
            etcd.delete(f"{prefix}{i:03d}")
        etcd.put(f"{prefix}001", "changed")
        compacted = etcd.get(prefix, count_only=True).revision
        etcd.compact(compacted, physical=True)
        history.event("nemesis", "compacted", revision=compacted)
        cluster.start_member(lonely)
        back_at = history.event("nemesis", "started", member=lonely).time

        with pytest.raises(errors.CompactedError) as caught:
            while True:
                watcher.get(timeout=20)
        told = time.monotonic() - back_at
        assert caught.value.compact_revision == compacted
        assert async_actor.result(30) == compacted
        final = _decoded(etcd.get(prefix, prefix=True).kvs, prefix)
        converged = wait_for(
            lambda: config.snapshot.to_dict() == final, 15, "the ConfigWatcher to converge"
        )
        assert config.reloads >= 1
        assert any(isinstance(e, errors.CompactedError) for e in config.errors)
        config.stop()
    report(
        f"scenario 4 (compaction past a watcher whose member was down, etcd "
        f"{cluster.version}): CompactedError(compact_revision={compacted}) in sync and async "
        f"{told:.2f} s after the member returned; ConfigWatcher reloaded "
        f"({config.reloads}x) and converged in {converged:.2f} s"
    )


@pytest.mark.timeout(120)
def test_blackholed_client_path_fails_over(
    proxied_cluster: EtcdCluster, history: History, workers: Callable[..., Worker]
) -> None:
    """Scenario 8: the network path from the client to its member goes silent (the
    proxy forwards nothing, the TCP connection stays up): gRPC keepalive pings notice
    it, the watches and the lease keepalive move to another member, and no event is
    lost or delivered twice."""
    cluster = proxied_cluster
    prefix, count = "s8/", 300
    holed = 0
    via = endpoints_first(cluster.proxied_endpoints, holed)
    with client(via) as etcd:
        start = etcd.get(prefix, prefix=True, count_only=True).revision
        sync_log = WatchLog(etcd.watch(prefix, prefix=True))
        lease = etcd.grant(5)
        renewals: list[float] = []
        keepalive = etcd.keep_alive(lease)
        keepalive.add_callback(lambda result: renewals.append(time.monotonic()))
        ready, stop = threading.Event(), threading.Event()
        async_actor = InThread(async_watch_log, via, prefix, ready, stop)
        assert ready.wait(10)
        writer = workers("seq", cluster.endpoints, prefix, count, "writer", 0.01)
        writer.expect("progress 100", 30)
        holed_at = history.event("nemesis", "blackhole", member=holed).time
        cluster.client_proxy(holed).blackhole()
        writer.expect("done", 60)
        assert writer.wait(10) == 0
        with client(cluster.endpoints) as direct:
            store = replay(direct, prefix, prefix=True, start_revision=start + 1)
        expected = [(e.revision, e.key) for e in store]
        assert len(expected) == count
        last = expected[-1][0]
        wait_for(lambda: sync_log.last_revision() >= last, 15, "the sync watcher")
        sync_events = sync_log.stop()
        stop.set()
        async_events = async_actor.result(15)
        # The unary calls moved with the streams, and the lease lived on.
        assert etcd.endpoint != via[0]
        assert etcd.get(prefix, prefix=True, count_only=True).count == count
        assert not keepalive.lost.is_set(), keepalive.error
        assert etcd.time_to_live(lease).ttl > 0
        keepalive.close()
        cluster.heal_network()

    _assert_delivered("sync watcher", sync_events, expected)
    _assert_delivered("async watcher", async_events, expected)
    stall = _longest_stall(sync_events, holed_at)
    async_stall = _longest_stall(async_events, holed_at)
    renewed = next(t for t in renewals if t > holed_at) - holed_at
    assert stall < 5.0 and async_stall < 5.0 and renewed < 5.0
    report(
        f"scenario 8 (client path blackholed, etcd {cluster.version}): watches failed over "
        f"after {stall:.2f} s (sync) / {async_stall:.2f} s (async), keepalive renewed after "
        f"{renewed:.2f} s; {len(sync_events)} / {len(async_events)} events, 0 lost, "
        f"0 duplicated"
    )
