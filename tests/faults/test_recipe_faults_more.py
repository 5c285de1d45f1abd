"""The smaller recipes across a leader SIGKILL: counter, run-once lease, barriers, group.

Each scenario runs its recipe on a fresh 3-member cluster, with actors (threads, each
with its own client starting on a different member) in full swing while the leader
is killed, then restarts the member and holds what the actors were told against the
store's own history:

* counter: the key's history counts up by exactly one per write, every acknowledged
  ``add()`` is one of those writes, and the writes nobody was told about are no more
  than the adds whose outcome was unknown (no increment lost or applied twice);
* run-once lease: every period (a creation of the slot key) has exactly one winner,
  and every caller told "yours" won a period nobody else won;
* barrier: no waiter passes before the release, every waiter passes after it;
  double barrier: nobody enters before the last participant arrived (who arrives
  after the kill), nobody returns from ``leave()`` before the last one left;
* group: the members across the kill keep their membership, and a subscription sees
  each join and leave once, in the store's order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from etcdsync import Client, errors
from etcdsync.group_types import MembershipEventType
from etcdsync.testing import EtcdCluster
from etcdsync.watch_types import Event, EventType

from .conftest import TTL, client, endpoints_first, replay, report, wait_for
from .history import FAIL, INFO, INVOKE, OK, History

pytestmark = pytest.mark.faults

ACTORS = 4


def _kill_leader(cluster: EtcdCluster, history: History) -> tuple[int, float]:
    """SIGKILL the leader; (its index, the time of the kill)."""
    leader = cluster.wait_for_leader()
    killed_at = history.event("nemesis", "kill", member=leader).time
    cluster.kill(leader)
    return leader, killed_at


def _restart(cluster: EtcdCluster, history: History, member: int) -> None:
    cluster.start_member(member)
    history.event("nemesis", "restarted", member=member)


def _actors(
    cluster: EtcdCluster,
    body: Callable[[Client, str], None],
    count: int = ACTORS,
    *,
    first: int = 0,
) -> list[threading.Thread]:
    """Start ``count`` threads running ``body(client, actor)``, actors ``a<first>``,
    ``a<first + 1>``...; actor ``a<i>`` has its own client starting on member ``i % 3``."""

    def run(index: int) -> None:
        with client(endpoints_first(cluster.endpoints, index % 3)) as etcd:
            body(etcd, f"a{index}")

    threads = [
        threading.Thread(target=run, args=(i,), daemon=True) for i in range(first, first + count)
    ]
    for thread in threads:
        thread.start()
    return threads


def _join_all(threads: list[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.01))
        assert not thread.is_alive(), "an actor did not finish"


def _replay_until(etcd: Client, prefix: str, start: int, end_key: str) -> list[Event]:
    """Every event under ``prefix`` from ``start`` until the write of ``end_key`` (under
    ``prefix``, written last): the store's own history, deletes included."""
    end_revision = etcd.put(end_key, "").revision
    events: list[Event] = []
    deadline = time.monotonic() + 10
    with etcd.watch(prefix, prefix=True, start_revision=start) as watcher:
        while not (events and events[-1].revision >= end_revision):
            left = deadline - time.monotonic()
            assert left > 0, f"the replay of {prefix!r} did not reach revision {end_revision}"
            events.extend(watcher.get(timeout=left).events)
    return [e for e in events if e.key != end_key.encode()]


# --- counter ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_counter_counts_exactly_across_a_leader_kill(
    cluster: EtcdCluster, history: History
) -> None:
    name = "c1/hits"
    stop = threading.Event()
    with client(cluster.endpoints) as etcd:
        start = etcd.get(name).revision + 1

    def add(etcd: Client, actor: str) -> None:
        counter = etcd.counter(name)
        while not stop.is_set():
            started = history.record(actor, INVOKE, "add").time
            try:
                value = counter.add()
            except (errors.Timeout, errors.Unavailable) as exc:
                history.record(actor, INFO, "add", {}, type(exc).__name__)
                continue
            except errors.EtcdError as exc:
                history.record(actor, FAIL, "add", {}, type(exc).__name__)
                continue
            history.record(actor, OK, "add", {"value": value, "started": started})

    began = time.monotonic()
    threads = _actors(cluster, add)
    wait_for(lambda: len(history.select("add", OK)) >= 100, 15, "adds before the kill")
    leader, killed_at = _kill_leader(cluster, history)

    def after_kill() -> list[float]:
        return [e.time for e in history.select("add", OK) if e.args["started"] > killed_at]

    wait_for(lambda: len(after_kill()) >= 50, 15, "adds started after the kill")
    resumed = min(after_kill()) - killed_at
    _restart(cluster, history, leader)
    stop.set()
    _join_all(threads, 15)

    with client(cluster.endpoints) as etcd:
        final = etcd.counter(name).value()
        writes = [int(e.kv.value) for e in replay(etcd, name, start_revision=start)]
    acknowledged = [e.args["value"] for e in history.select("add", OK)]
    unknown = len(history.select("add", INFO))
    # Each write adds exactly one to the one before: no update lost, none applied twice.
    assert writes == list(range(1, final + 1)), writes[:20]
    assert len(set(acknowledged)) == len(acknowledged), "two adds were told the same value"
    assert set(acknowledged) <= set(writes), "an acknowledged add is not in the store"
    unacknowledged = final - len(acknowledged)
    assert 0 <= unacknowledged <= unknown, (final, len(acknowledged), unknown)
    report(
        f"counter scenario (leader SIGKILL, {ACTORS} adders, etcd {cluster.version}): final "
        f"{final} = {len(acknowledged)} acknowledged + {unacknowledged} of {unknown} unknown "
        f"adds; every write +1; first add {resumed:.2f} s after the kill; "
        f"{time.monotonic() - began:.1f} s in all"
    )


# --- run-once lease ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_lease_once_has_one_winner_per_period_across_a_leader_kill(
    cluster: EtcdCluster, history: History
) -> None:
    name = "lo1/job"
    slot = f"{name}/0".encode()
    stop = threading.Event()
    with client(cluster.endpoints) as etcd:
        start = etcd.get(name).revision + 1

    def race(etcd: Client, actor: str) -> None:
        while not stop.is_set():
            started = history.record(actor, INVOKE, "take").time
            try:
                result = etcd.lease_once(name, 1, value=actor)
            except (errors.Timeout, errors.Unavailable) as exc:
                history.record(actor, INFO, "take", {}, type(exc).__name__)
                continue
            except errors.EtcdError as exc:
                history.record(actor, FAIL, "take", {}, type(exc).__name__)
                continue
            if result:
                history.record(actor, OK, "take", {"revision": result.revision, "at": started})
            else:
                history.record(actor, FAIL, "take", {"refused": True})
            stop.wait(0.02)  # pacing, not synchronisation: keeps the racers off one core

    began = time.monotonic()
    threads = _actors(cluster, race)
    wait_for(lambda: len(history.select("take", OK)) >= 3, 15, "periods before the kill")
    leader, killed_at = _kill_leader(cluster, history)

    def after_kill() -> list[float]:
        return [e.time for e in history.select("take", OK) if e.args["at"] > killed_at]

    wait_for(lambda: len(after_kill()) >= 3, 20, "periods won after the kill")
    resumed = min(after_kill()) - killed_at
    _restart(cluster, history, leader)
    stop.set()
    _join_all(threads, 15)

    with client(cluster.endpoints) as etcd:
        events = _replay_until(etcd, "lo1/", start, "lo1/end")
    # A period is one creation of the slot key; its value names the winner.
    periods = {
        e.revision: e.kv.value.decode()
        for e in events
        if e.key == slot and e.type is EventType.PUT and e.kv.version == 1
    }
    assert all(e.key == slot for e in events), "a key other than the slot was written"
    assert not [e for e in events if e.type is EventType.PUT and e.kv.version != 1], (
        "a slot was overwritten while taken"
    )
    wins = [(e.args["revision"], e.actor) for e in history.select("take", OK)]
    assert len({revision for revision, _ in wins}) == len(wins), "two winners of one period"
    for revision, actor in wins:
        assert periods.get(revision) == actor, f"{actor} was told it won at {revision}"
    unclaimed = [r for r in periods if r not in {revision for revision, _ in wins}]
    for revision in unclaimed:
        # A period nobody was told about: its winner's answer was lost (an unknown take).
        assert history.select("take", INFO, actor=periods[revision]), periods[revision]
    report(
        f"run-once lease scenario (leader SIGKILL, {ACTORS} racers, 1 s periods, etcd "
        f"{cluster.version}): {len(periods)} periods, {len(wins)} told to their one winner, "
        f"{len(unclaimed)} won by an unknown take; "
        f"{len(history.select('take', FAIL))} refusals; first win {resumed:.2f} s after the "
        f"kill; {time.monotonic() - began:.1f} s in all"
    )


# --- barriers ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_barrier_holds_across_a_leader_kill_and_releases_everyone(
    cluster: EtcdCluster, history: History
) -> None:
    name = "b1/gate"
    began = time.monotonic()
    with client(cluster.endpoints) as holder:
        gate = holder.barrier(name, ttl=10)
        assert gate.hold()

        def wait(etcd: Client, actor: str) -> None:
            history.record(actor, INVOKE, "wait")
            try:
                revision = etcd.barrier(name).wait(timeout=30)
            except errors.EtcdError as exc:
                history.record(actor, FAIL, "wait", {}, type(exc).__name__)
                return
            history.record(actor, OK, "wait", {"revision": revision})

        threads = _actors(cluster, wait)
        wait_for(lambda: len(history.select("wait", INVOKE)) == ACTORS, 10, "waiters")
        leader, killed_at = _kill_leader(cluster, history)
        cluster.wait_for_leader(exclude=leader)
        assert gate.is_up(), "the barrier fell with the leader"
        assert history.select("wait", OK) == [], "a waiter passed the raised barrier"
        released_at = history.record("holder", INVOKE, "release").time
        assert gate.release()
        release_revision = holder.get(name).revision  # nothing else writes: the delete's
        _join_all(threads, 30)
        _restart(cluster, history, leader)
    passed = history.select("wait", OK)
    assert len(passed) == ACTORS, history.select("wait", FAIL)
    assert all(e.time > released_at for e in passed), "a waiter passed before the release"
    assert all(e.args["revision"] >= release_revision for e in passed), passed
    slowest = max(e.time for e in passed) - released_at
    report(
        f"barrier scenario (leader SIGKILL while {ACTORS} wait, etcd {cluster.version}): "
        f"none passed while up, all {ACTORS} passed within {slowest:.2f} s of the "
        f"release ({released_at - killed_at:.2f} s after the kill); "
        f"{time.monotonic() - began:.1f} s in all"
    )


@pytest.mark.timeout(60)
def test_double_barrier_enters_and_leaves_together_across_a_leader_kill(
    cluster: EtcdCluster, history: History
) -> None:
    name = "db1/round"
    count = 3
    go_leave = threading.Event()
    began = time.monotonic()

    def participate(etcd: Client, actor: str) -> None:
        barrier = etcd.double_barrier(name, count, ttl=10)
        history.record(actor, INVOKE, "enter")
        try:
            opened = barrier.enter(timeout=30)
        except errors.EtcdError as exc:
            history.record(actor, FAIL, "enter", {}, type(exc).__name__)
            return
        history.record(actor, OK, "enter", {"revision": opened})
        go_leave.wait(30)
        history.record(actor, INVOKE, "leave")
        try:
            barrier.leave(timeout=30)
        except errors.EtcdError as exc:
            history.record(actor, FAIL, "leave", {}, type(exc).__name__)
            return
        history.record(actor, OK, "leave")

    with client(cluster.endpoints) as etcd:

        def waiting() -> int:
            return etcd.get(f"{name}/waiters/", prefix=True, count_only=True).count

        first = _actors(cluster, participate, count - 1)
        wait_for(lambda: waiting() == count - 1, 10, "the first participants to arrive")
        leader, killed_at = _kill_leader(cluster, history)
        # The last one arrives once a new leader is elected: the first two wait across
        # the election (test_double_barrier_faults.py has one arrive during it).
        cluster.wait_for_leader(exclude=leader)
        assert history.select("enter", OK) == [], "entered before the count was complete"
        last = _actors(cluster, participate, 1, first=count - 1)
        wait_for(lambda: len(history.select("enter", OK)) == count, 20, "everyone entering")
        _restart(cluster, history, leader)
        go_leave.set()
        _join_all(first + last, 30)
        assert waiting() == 0, "a participant's key outlived its leave()"
    entered = history.select("enter", OK)
    last_arrival = max(e.time for e in history.select("enter", INVOKE))
    assert all(e.time > last_arrival for e in entered), "entered before the last arrived"
    assert len({e.args["revision"] for e in entered}) == 1, "the barrier opened twice"
    left = history.select("leave", OK)
    assert len(left) == count, history.select("leave", FAIL)
    last_leave = max(e.time for e in history.select("leave", INVOKE))
    assert all(e.time >= last_leave for e in left), "left before the last one left"
    report(
        f"double barrier scenario (leader SIGKILL while 2 wait to enter, {count} participants, "
        f"etcd {cluster.version}): all entered at revision {entered[0].args['revision']} "
        f"after the last arrival ({last_arrival - killed_at:.2f} s after the kill), all "
        f"left together; {time.monotonic() - began:.1f} s in all"
    )


# --- group -----------------------------------------------------------------------------------


def _follow(etcd: Client, name: str, stop: threading.Event, seen: list[Any]) -> None:
    watch = etcd.group(name).watch()
    watch.start()
    while not stop.is_set():
        try:
            event = watch.get(timeout=0.2)
        except errors.GroupTimeout:
            continue
        seen.append(event)
    watch.cancel()


@pytest.mark.timeout(60)
def test_group_keeps_members_and_reports_each_change_once_across_a_leader_kill(
    cluster: EtcdCluster, history: History
) -> None:
    name = "g1/workers"
    began = time.monotonic()
    stop = threading.Event()
    seen: list[Any] = []
    clients = [client(endpoints_first(cluster.endpoints, i % 3)) for i in range(5)]
    try:
        watcher_client, *member_clients = clients
        start = watcher_client.get(name).revision + 1
        follower = threading.Thread(
            target=_follow, args=(watcher_client, name, stop, seen), daemon=True
        )
        follower.start()
        groups = [c.group(name, ttl=TTL) for c in member_clients]
        for i, group in enumerate(groups[:3]):
            group.join(f"m{i}")
        leader, killed_at = _kill_leader(cluster, history)
        elected = cluster.wait_for_leader(exclude=leader)
        history.event("nemesis", "elected", member=elected)
        groups[3].join("m3")  # a join and a leave while the old leader is down
        groups[1].leave()
        _restart(cluster, history, leader)
        with client(cluster.endpoints) as etcd:
            members = etcd.group(name).members()
            events = _replay_until(etcd, "g1/", start, "g1/end")
            wait_for(lambda: len(seen) >= len(events), 10, "the subscription to catch up")
        stop.set()
        follower.join(5)
        assert [m.text for m in members] == ["m0", "m2", "m3"]
        for i in (0, 2, 3):
            assert not groups[i].lost.is_set(), f"m{i} lost its membership: {groups[i]}"
        # The store's history as joins and leaves, in order.
        expected = [
            ("join" if e.type is EventType.PUT else "leave", e.key, e.revision) for e in events
        ]
        got = [(e.type.value, e.member.key, e.revision) for e in seen]
        assert got == expected, (got, expected)
        assert not [e for e in seen if e.type is MembershipEventType.UPDATE or e.resync]
    finally:
        stop.set()
        for c in clients:
            c.close()
    report(
        f"group scenario (leader SIGKILL, 4 members of TTL {TTL} s, etcd {cluster.version}): "
        f"3 kept their membership, a join and a leave "
        f"{history.select('elected')[0].time - killed_at:.2f} s after the kill (old leader "
        f"down); the subscription saw all {len(seen)} changes once, in order; "
        f"{time.monotonic() - began:.1f} s in all"
    )
