"""The other queues across a leader SIGKILL: priority, at-least-once (locking), delay.

Each scenario runs on a fresh 3-member cluster, kills the leader with the actors in
full swing, restarts it, and holds what the actors were told against the store's
own history (a watch replay of the items' prefix):

* priority queue: every acknowledged put taken exactly once, each take told to one
  consumer at the revision of its delete, and every delete in the store removed the
  item first in (priority, arrival) order among those present - priority order holds
  across the kill with producers and consumers racing;
* locking queue: a consumer ``kill -9``ed while holding a claim, the leader killed at
  the same moment: its item is claimed again by another consumer (once the dead
  one's lease expired) and consumed; every item is deleted exactly once, each delete
  acknowledged to exactly one consumer, and no claim key was ever written twice;
* delay queue: no item taken before its due time, every acknowledged put taken once
  (none lost, none twice), each take at the revision of its delete.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from etcdsync import Client, QueueItem, errors
from etcdsync._sync.concurrency.delay_queue import DelayQueue
from etcdsync.testing import EtcdCluster
from etcdsync.watch_types import Event, EventType

from .conftest import TTL, Worker, client, endpoints_first, report, wait_for
from .history import FAIL, INFO, OK, History

pytestmark = pytest.mark.faults

END = "~end"  # a marker key written under a prefix after the run (sorts after the items)


def _replay(etcd: Client, prefix: str, start: int) -> list[Event]:
    """Every event under ``prefix`` from ``start`` on, deletes included: the store's
    own history up to a marker key written now (then dropped from the result)."""
    end_key = prefix + END
    end_revision = etcd.put(end_key, "").revision
    events: list[Event] = []
    deadline = time.monotonic() + 10
    with etcd.watch(prefix, prefix=True, start_revision=start) as watcher:
        while not (events and events[-1].revision >= end_revision):
            left = deadline - time.monotonic()
            assert left > 0, f"the replay of {prefix!r} did not reach revision {end_revision}"
            events.extend(watcher.get(timeout=left).events)
    etcd.delete(end_key)
    return [e for e in events if e.key != end_key.encode()]


def _kill_leader(cluster: EtcdCluster, history: History) -> tuple[int, float]:
    leader = cluster.wait_for_leader()
    killed_at = history.event("nemesis", "kill", member=leader).time
    cluster.kill(leader)
    return leader, killed_at


def _join(threads: list[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.01))
        assert not thread.is_alive(), "an actor did not finish"


# --- the thread scenarios: producers and consumers of one queue ---------------------------


Put = Callable[[Client, str, int], int]
"""``put(etcd, value, i)``: put the i-th item of a producer; the put's revision."""
Take = Callable[[Client], QueueItem]
"""``take(etcd)``: one ``get(timeout=...)`` of the queue."""


def _produce(
    history: History, endpoints: list[str], actor: str, items: int, put: Put, pace: float
) -> None:
    with client(endpoints) as etcd:
        i = 0
        while i < items:
            value = f"{actor}:{i}"
            started = history.record(actor, "invoke", "put", {"value": value}).time
            try:
                revision = put(etcd, value, i)
            except errors.QueueOutcomeUnknownError as exc:
                history.record(actor, INFO, "put", {"value": value}, type(exc).__name__)
                i += 1  # maybe queued: never put twice
                continue
            except errors.EtcdError as exc:
                history.record(actor, FAIL, "put", {"value": value}, type(exc).__name__)
                continue
            history.record(
                actor, OK, "put", {"value": value, "revision": revision, "started": started}
            )
            i += 1
            if pace:
                time.sleep(pace)  # pacing, not synchronisation: spreads the puts in time


def _consume(
    history: History, endpoints: list[str], actor: str, take: Take, stop: threading.Event
) -> None:
    with client(endpoints) as etcd:
        while True:
            started = time.monotonic()
            try:
                item = take(etcd)
            except errors.QueueTimeout:
                if stop.is_set():
                    return  # idle after the stop: every settled take was handed out
                continue
            except errors.EtcdError as exc:
                # An applied take whose answer was lost is handed to a later get().
                history.record(actor, INFO, "take", {}, type(exc).__name__)
                continue
            history.record(
                actor,
                OK,
                "take",
                {
                    "value": item.text,
                    "key": item.key.decode(),
                    "revision": item.revision,
                    "started": started,
                    "at": time.time(),
                    "item": item,
                },
            )


def _run(
    cluster: EtcdCluster,
    history: History,
    prefix: str,
    put: Put,
    take: Take,
    *,
    items: int,
    pace: float = 0.0,
) -> tuple[list[Event], float, float]:
    """2 producers x ``items`` and 2 consumers (each on its own member), the leader
    killed once half the puts are acknowledged; runs until the queue is empty.
    Returns the store's history of the items' prefix, the seconds from the kill to the
    first put and take started after it, and the whole run's."""
    began = time.monotonic()
    with client(cluster.endpoints) as etcd:
        start = etcd.get(prefix).revision + 1
    stop = threading.Event()
    producers = [
        threading.Thread(
            target=_produce,
            args=(history, endpoints_first(cluster.endpoints, i + 1), f"p{i}", items, put, pace),
            daemon=True,
        )
        for i in range(2)
    ]
    consumers = [
        threading.Thread(
            target=_consume,
            args=(history, endpoints_first(cluster.endpoints, i), f"c{i}", take, stop),
            daemon=True,
        )
        for i in range(2)
    ]
    for thread in consumers + producers:
        thread.start()
    wait_for(lambda: len(history.select("put", OK)) >= items, 15, "half the puts")
    leader, killed_at = _kill_leader(cluster, history)

    def since_kill(op: str) -> list[float]:
        return [e.time for e in history.select(op, OK) if e.args["started"] > killed_at]

    wait_for(
        lambda: len(since_kill("put")) >= 5 and len(since_kill("take")) >= 5,
        15,
        "puts and takes started after the kill",
    )
    resumed = max(min(since_kill(op)) for op in ("put", "take")) - killed_at
    cluster.start_member(leader)
    history.event("nemesis", "restarted", member=leader)
    _join(producers, 30)
    with client(cluster.endpoints) as etcd:
        wait_for(
            lambda: etcd.get(prefix, prefix=True, count_only=True).count == 0,
            20,
            "the queue to be drained",
        )
        stop.set()
        _join(consumers, 15)
        events = _replay(etcd, prefix, start)
    return events, resumed, time.monotonic() - began


def _check_exactly_once(history: History, events: list[Event]) -> tuple[set[str], list[str]]:
    """Puts and takes against the store: each acknowledged put taken once, each take
    told to one consumer at its delete's revision.  Returns the puts left unknown and
    the values taken."""
    acknowledged = {e.args["value"] for e in history.select("put", OK)}
    unknown = {e.args["value"] for e in history.select("put", INFO)}
    takes = history.select("take", OK)
    counts = Counter(e.args["value"] for e in takes)
    assert [v for v, n in counts.items() if n > 1] == [], "items taken twice"
    assert acknowledged - set(counts) == set(), "acknowledged puts never taken"
    assert set(counts) - acknowledged - unknown == set(), "taken items nobody put"
    deletes = {e.revision: e.key.decode() for e in events if e.type is EventType.DELETE}
    puts = [e for e in events if e.type is EventType.PUT]
    assert all(e.kv.version == 1 for e in puts), "an item key was written twice"
    assert len(deletes) == len(puts), "the queue did not end empty"
    told = {e.args["revision"]: e.args["key"] for e in takes}
    assert told == deletes, "a take the store does not have, or a delete nobody was told"
    return unknown, list(counts)


# --- priority queue -------------------------------------------------------------------------

LEVELS = 4


@pytest.mark.timeout(60)
def test_priority_queue_serves_in_priority_order_exactly_once_across_a_leader_kill(
    cluster: EtcdCluster, history: History
) -> None:
    name = "pq1/jobs"
    prefix = f"{name}/"
    items = 150

    def put(etcd: Client, value: str, i: int) -> int:
        return etcd.priority_queue(name, ttl=10).put(value, (i * 7) % LEVELS)

    def take(etcd: Client) -> QueueItem:
        return etcd.priority_queue(name, ttl=10).get(timeout=0.5)

    events, resumed, elapsed = _run(cluster, history, prefix, put, take, items=items)
    unknown, taken = _check_exactly_once(history, events)
    # Replay the store: every delete took the first key present (priority, then
    # sequence within a priority), whoever put what meanwhile.
    present: set[bytes] = set()
    for event in events:
        if event.type is EventType.PUT:
            present.add(event.key)
            continue
        first = min(present)
        assert event.key == first, f"revision {event.revision}: took {event.key!r} before {first!r}"
        present.discard(event.key)
    levels = Counter(int(e.args["key"].split("/")[2]) for e in history.select("take", OK))
    assert set(levels) == set(range(LEVELS)), levels
    report(
        f"priority queue scenario (leader SIGKILL, 2 producers x {items} items over {LEVELS} "
        f"priorities, 2 consumers, etcd {cluster.version}): {len(taken)} taken, 0 twice, "
        f"0 lost, every delete the head in priority order; {len(unknown)} puts left "
        f"unknown; {len(history.select('take', INFO))} takes raised and were handed out "
        f"later; first put and take {resumed:.2f} s after the kill; {elapsed:.1f} s in all"
    )


# --- delay queue ----------------------------------------------------------------------------

MAX_DELAY = 2.0


@pytest.mark.timeout(60)
def test_delay_queue_never_early_never_lost_never_twice_across_a_leader_kill(
    cluster: EtcdCluster, history: History
) -> None:
    name = "dq1/reminders"
    items = 60

    def put(etcd: Client, value: str, i: int) -> int:
        # Delays spread over [0, MAX_DELAY): items fall due before, during and after
        # the election.
        return etcd.delay_queue(name, ttl=10).put(value, delay=((i * 37) % 100) / 50)

    def take(etcd: Client) -> QueueItem:
        return etcd.delay_queue(name, ttl=10).get(timeout=0.5)

    events, resumed, elapsed = _run(cluster, history, f"{name}/", put, take, items=items, pace=0.02)
    unknown, taken = _check_exactly_once(history, events)
    late = []
    for entry in history.select("take", OK):
        due = DelayQueue.due_time(entry.args["item"])
        assert entry.args["at"] >= due, (
            f"{entry.args['value']} taken {due - entry.args['at']} s early"
        )
        late.append(entry.args["at"] - due)
    report(
        f"delay queue scenario (leader SIGKILL, 2 producers x {items} items due within "
        f"{MAX_DELAY:.0f} s, 2 consumers, etcd {cluster.version}): {len(taken)} taken, "
        f"none early, 0 twice, 0 lost; {len(unknown)} puts left unknown; taken "
        f"{sorted(late)[len(late) // 2]:.3f} s (median) / {max(late):.2f} s (max) after "
        f"due; first put and take {resumed:.2f} s after the kill; {elapsed:.1f} s in all"
    )


# --- locking queue --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_locking_queue_redelivers_a_killed_consumers_item_across_a_leader_kill(
    cluster: EtcdCluster, history: History, workers: Callable[..., Worker]
) -> None:
    name = "lq1/jobs"
    items = 100
    began = time.monotonic()
    with client(cluster.endpoints) as etcd:
        start = etcd.get(name).revision + 1
        queue = etcd.locking_queue(name, ttl=10)
        for i in range(items):
            queue.put(f"item-{i}")
    # c0 hangs on its third claim (mid-item); c1 and c2 work 30 ms per item.
    consumers = [
        workers("lq", endpoints_first(cluster.endpoints, i), name, f"c{i}", TTL, 0.03, stall)
        for i, stall in enumerate((3, 0, 0))
    ]
    for consumer in consumers:
        consumer.expect("started", 20)
    victim, *rest = consumers
    stalled = victim.expect("stalled ", 20).split(" ", 1)[1]
    victim.kill()  # kill -9 while it holds the claim
    leader, killed_at = _kill_leader(cluster, history)

    def claims_of(value: str) -> list[str]:
        return [e.actor for e in history.select("claim", OK) if e.args["value"] == value]

    wait_for(lambda: len(claims_of(stalled)) >= 2, 20, f"{stalled} to be claimed again")
    redelivered = next(
        e.time
        for e in history.select("claim", OK)
        if e.args["value"] == stalled and e.actor != "c0"
    )
    cluster.start_member(leader)
    history.event("nemesis", "restarted", member=leader)
    with client(cluster.endpoints) as etcd:
        wait_for(
            lambda: etcd.get(f"{name}/items/", prefix=True, count_only=True).count == 0,
            20,
            "every item to be consumed",
        )
        for consumer in rest:
            consumer.send("stop\n")
        notes: list[str] = []
        for consumer in rest:
            assert consumer.wait(15) == 0, consumer.seen
            while not consumer.notes.empty():
                notes.append(consumer.notes.get() or "")
        item_events = _replay(etcd, f"{name}/items/", start)
        claim_events = _replay(etcd, f"{name}/claims/", start)

    assert claims_of(stalled)[0] == "c0" and "c0" not in claims_of(stalled)[1:], claims_of(stalled)
    consumed = history.select("consume", OK)
    by_value = Counter(e.args["value"] for e in consumed)
    assert [v for v, n in by_value.items() if n > 1] == [], "an item consumed twice"
    assert set(by_value) == {f"item-{i}" for i in range(items)}, "an item never consumed"
    deletes = [e for e in item_events if e.type is EventType.DELETE]
    assert len(deletes) == items and len({e.key for e in deletes}) == items, "deleted twice?"
    assert sorted(e.args["revision"] for e in consumed) == sorted(e.revision for e in deletes)
    assert not [e for e in claim_events if e.type is EventType.PUT and e.kv.version != 1], (
        "a claim was written over a live claim"
    )
    lost = history.select("consume", FAIL)
    report(
        f"locking queue scenario (consumer kill -9 mid-item + leader SIGKILL, TTL {TTL} s, "
        f"{items} items, 3 consumers, etcd {cluster.version}): {stalled} claimed again "
        f"{redelivered - killed_at:.2f} s after the kills and consumed; all {items} consumed "
        f"once ({len(history.select('claim', OK))} claims, {len(lost)} consumes refused as "
        f"claim lost); lost answers settled: {sum('applied' in n for n in notes)} "
        f"({sum('not applied' in n for n in notes)} not applied, sent again); "
        f"{time.monotonic() - began:.1f} s in all"
    )
