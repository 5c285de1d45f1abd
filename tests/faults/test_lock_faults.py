"""Mutex under faults: leader crashes, a frozen holder, a partitioned member.

The workload (``worker.py lock``): processes take one Mutex, read a counter and write
counter + 1 through ``guarded_txn`` - the value carries the writer's fencing token -
and release.  Afterwards the counter key's history, replayed from the store, must
show fencing tokens that never go back (no two holders' guarded effects interleave)
and values that grow by exactly one per write (no lost update), and it must agree
with what each worker was told (acknowledged writes present, refused ones absent).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from etcdsync import AsyncClient, Op
from etcdsync.testing import EtcdCluster

from .conftest import (
    SETTINGS,
    TTL,
    Worker,
    client,
    endpoints_first,
    follower_of,
    replay,
    report,
    wait_for,
)
from .history import FAIL, OK, History, check_acknowledged, check_fenced_effects

pytestmark = pytest.mark.faults


def _parse(value: bytes) -> tuple[int, int, str]:
    """``value:token:actor:seq`` -> (value, token, op id)."""
    number, token, op_id = value.decode().split(":", 2)
    return int(number), int(token), op_id


def _check_lock_workload(
    history: History, cluster: EtcdCluster, counter: str, start_revision: int
) -> tuple[int, int]:
    """Check the counter's committed history against the fencing rules and the
    workers' histories; return (guarded writes committed, holds)."""
    with client(cluster.endpoints) as etcd:
        events = replay(etcd, counter, start_revision=start_revision)
    effects = []
    for event in events:
        value, token, op_id = _parse(event.kv.value)
        effects.append((event.revision, token, value, op_id))
    fencing = check_fenced_effects(effects)
    assert fencing.overlaps == [], fencing.overlaps[:5]
    assert fencing.lost_updates == [], fencing.lost_updates[:5]
    acks = check_acknowledged(history, "write", [e[3] for e in effects])
    assert acks.acknowledged_missing == [], "acknowledged guarded writes not in the store"
    assert acks.failed_but_committed == [], "refused guarded writes found in the store"
    assert acks.applied_twice == []
    assert acks.committed_unknown == [], "writes in the store that no worker made"
    # Each acknowledged write's token is the one its holder got from acquire.
    for entry in history.select("write", OK):
        assert entry.args["token"] > 0
    return fencing.effects, fencing.holds


def _start_lock_workers(
    workers: Callable[..., Worker], orders: list[list[str]], name: str, counter: str
) -> list[Worker]:
    started = [
        workers("lock", endpoints, name, counter, 60, f"w{i}", TTL)
        for i, endpoints in enumerate(orders)
    ]
    for worker in started:
        worker.expect("started", 20)
    return started


def _stop(started: list[Worker]) -> None:
    for worker in started:
        worker.send("stop\n")
    for worker in started:
        assert worker.wait(30) == 0, worker.seen


@pytest.mark.timeout(120)
def test_leader_killed_twice_under_lock_contention(
    cluster: EtcdCluster, history: History, workers: Callable[..., Worker]
) -> None:
    """Scenario 1: four processes contend on a Mutex; the leader is SIGKILLed twice."""
    name, counter = "s1/lock", "s1/counter"
    with client(cluster.endpoints) as etcd:
        start_revision = etcd.get(counter).revision + 1
    orders = [endpoints_first(cluster.endpoints, i % 3) for i in range(4)]
    started = _start_lock_workers(workers, orders, name, counter)
    wait_for(lambda: len(history.select("write", OK)) >= 50, 30, "50 guarded writes")
    reacquired: list[float] = []
    resumed: list[float] = []
    for _ in range(2):
        leader = cluster.wait_for_leader()
        killed_at = history.event("nemesis", "kill", member=leader).time
        cluster.kill(leader)
        # The holder at the kill may still write before anyone acquires again: wait for
        # both a new acquisition and a write after the kill.
        wait_for(
            lambda at=killed_at: (
                history.first("acquire", after=at) is not None
                and history.first("write", after=at) is not None
            ),
            10,
            "an acquisition and a write",
        )
        acquired = history.first("acquire", after=killed_at)
        written = history.first("write", after=killed_at)
        assert acquired is not None and written is not None
        reacquired.append(acquired.time - killed_at)
        resumed.append(written.time - killed_at)
        cluster.start_member(leader)  # back with its data; waits until healthy
        history.event("nemesis", "restarted", member=leader)
        # Some more work on the healed cluster before the next crash.
        done = len(history.select("write", OK))
        wait_for(lambda n=done: len(history.select("write", OK)) >= n + 50, 30, "50 more writes")
    _stop(started)

    committed, holds = _check_lock_workload(history, cluster, counter, start_revision)
    assert all(t < 5.0 for t in reacquired), reacquired
    indeterminate = len(history.select("write", "info"))
    report(
        f"scenario 1 (leader SIGKILL x2, 4 lock processes, etcd {cluster.version}): "
        f"{committed} guarded writes in {holds} holds, 0 overlaps, 0 lost updates, "
        f"{indeterminate} indeterminate; reacquired "
        f"{' / '.join(f'{t:.2f} s' for t in reacquired)} after the kills, first guarded "
        f"write {' / '.join(f'{t:.2f} s' for t in resumed)}"
    )


@pytest.mark.timeout(90)
def test_paused_holder_is_fenced_off(
    cluster: EtcdCluster, history: History, workers: Callable[..., Worker]
) -> None:
    """Scenario 2: the holder process is frozen (SIGSTOP) past its TTL; the next holder
    (an asyncio client) takes over; the resumed holder's guarded write is refused and
    it learns that the lock was lost."""
    import asyncio

    name, data = "s2/lock", "s2/data"
    follower = follower_of(cluster)
    order = endpoints_first(cluster.endpoints, follower)
    holder = workers("hold", order, name, data, "holder", TTL)
    holder.expect("holding", 20)
    holder.pause()
    paused_at = history.event("nemesis", "sigstop-holder").time

    async def contend() -> tuple[float, int]:
        async with AsyncClient(cluster.endpoints, timeout=2.0, settings=SETTINGS) as etcd:
            lock = await etcd.lock(name, ttl=TTL).acquire(timeout=15)
            waited = time.monotonic() - paused_at
            token = lock.fencing_token
            history.record("contender", OK, "acquire", {"token": token})
            history.record("contender", "invoke", "write", {"id": "contender:1", "token": token})
            await lock.guarded_txn([Op.put(data, f"fresh:{token}")])
            history.record("contender", OK, "write", {"id": "contender:1", "token": token})
            # Resume the frozen holder while this one still holds the lock.
            holder.resume()
            history.event("nemesis", "sigcont-holder")
            holder.send("go\n")
            await asyncio.get_running_loop().run_in_executor(None, holder.wait, 30)
            await lock.release()
            return waited, token

    waited, token = asyncio.run(contend())
    holder_token = history.select("acquire", OK, actor="holder")[0].args["token"]
    assert token > holder_token
    (raw,) = [e for e in history.select("fenced-txn", actor="holder") if e.kind != "invoke"]
    assert raw.kind == FAIL, "etcd accepted a write fenced by a lost lock"
    (lost,) = history.select("lost", actor="holder")
    assert lost.args["told"] is True and lost.args["session_done"] is True
    (guarded,) = [e for e in history.select("write", actor="holder") if e.kind != "invoke"]
    assert guarded.kind == FAIL and "LockLostError" in guarded.result

    with client(cluster.endpoints) as etcd:
        assert etcd.get(data).value == f"fresh:{token}".encode()
        values = [e.kv.value for e in replay(etcd, data, start_revision=1)]
    assert values == [f"fresh:{token}".encode()], values
    report(
        f"scenario 2 (holder SIGSTOPped past its {TTL} s TTL, etcd {cluster.version}): next "
        f"holder in {waited:.2f} s (token {holder_token} -> {token}); the resumed holder's "
        f"fenced txn and guarded write refused, told lost: {lost.args['told']}"
    )


@pytest.mark.timeout(120)
def test_partitioned_member_under_lock_workload(
    proxied_cluster: EtcdCluster, history: History, workers: Callable[..., Worker]
) -> None:
    """Scenario 10: the member the client uses is cut off from its peers (peer-port
    partition): its ``require_leader`` watch moves to a member with a leader, and a
    lock workload running meanwhile keeps its fencing."""
    cluster = proxied_cluster
    name, counter, prefix = "s10/lock", "s10/counter", "s10/keys/"
    cut = follower_of(cluster)
    near = endpoints_first(cluster.endpoints, cut)
    majority = [e for i, e in enumerate(cluster.endpoints) if i != cut]
    with client(near) as etcd, client(majority) as writer:
        start_revision = etcd.get(counter).revision + 1
        watcher = etcd.watch(prefix, prefix=True, require_leader=True)
        received: list[tuple[float, int, bytes]] = []
        stop = threading.Event()

        def consume() -> None:
            while not stop.is_set():
                try:
                    batch = watcher.get(timeout=0.2)
                except TimeoutError:
                    continue
                now = time.monotonic()
                received.extend((now, e.revision, e.key) for e in batch.events)

        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        # Two lock workers start on the member to be cut off, one on the majority side.
        started = _start_lock_workers(workers, [near, near, majority], name, counter)
        wait_for(lambda: len(history.select("write", OK)) >= 50, 30, "50 guarded writes")

        keys_written: list[int] = []
        writing = threading.Event()

        def write_keys() -> None:
            i = 0
            while not writing.is_set():
                keys_written.append(writer.put(f"{prefix}{i:05d}", "x").revision)
                i += 1
                time.sleep(0.02)

        key_writer = threading.Thread(target=write_keys, daemon=True)
        key_writer.start()
        wait_for(lambda: len(received) >= 5, 10, "the watch to deliver")
        cluster.member_id(cut)  # looked up now, so the partition itself is instant
        cut_at = history.event("nemesis", "partition", member=cut).time
        cluster.partition(cut)
        # Nothing committed after this revision can have reached the cut-off member.
        at_cut = writer.get(prefix, count_only=True).revision
        # The partition is real: the member cut off loses its leader.
        orphaned = wait_for(
            lambda: cluster[cut].metrics().get("etcd_server_has_leader") == 0.0,
            10,
            "the cut-off member to lose its leader",
        )
        # The cut-off member can deliver nothing newer than what it had: a delivery
        # past it proves the watch moved to a member of the majority.
        wait_for(
            lambda: any(t > cut_at and rev > at_cut for t, rev, _ in received),
            15,
            "the require_leader watch to fail over",
        )
        moved = next(t for t, rev, _ in received if t > cut_at and rev > at_cut) - cut_at
        # Keep the member cut off for a while (well past the TTL of the sessions that
        # renewed through it), with the lock changing hands meanwhile.
        during = len(history.select("write", OK))
        wait_for(
            lambda: (
                len(history.select("write", OK)) >= during + 20
                and time.monotonic() > cut_at + 2.5 * TTL
            ),
            30,
            "writes during the partition",
        )
        cluster.heal_network()
        history.event("nemesis", "heal")
        cluster.wait_ready(20)
        writing.set()
        key_writer.join(10)
        _stop(started)
        last = keys_written[-1]
        wait_for(lambda: bool(received) and received[-1][1] >= last, 15, "the last key")
        stop.set()
        reader.join(5)
        history_of_keys = replay(etcd, prefix, prefix=True, start_revision=1)
        expected = [(e.revision, e.key) for e in history_of_keys]
        watcher.cancel()
        lost_sessions = sum(
            "Session" in (e.result or "") or "LockLost" in (e.result or "")
            for e in history.entries
            if e.kind != OK
        )

    revisions = [rev for _, rev, _ in received]
    assert len(revisions) == len(set(revisions)), "duplicate watch events"
    assert revisions == sorted(revisions)
    assert [(rev, key) for _, rev, key in received] == expected, "lost or foreign events"
    committed, holds = _check_lock_workload(history, cluster, counter, start_revision)
    report(
        f"scenario 10 (peer partition of the client's member, etcd {cluster.version}): "
        f"member leaderless after {orphaned:.2f} s, require_leader watch failed over "
        f"{moved:.2f} s after the cut, {len(received)} "
        f"events, 0 lost, 0 duplicated; lock workload {committed} guarded writes in "
        f"{holds} holds, 0 overlaps; {lost_sessions} session/lock losses reported"
    )
