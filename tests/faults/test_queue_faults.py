"""The FIFO queue across a leader crash: every item delivered exactly once.

Two producer threads and two consumer threads (sync clients, each starting on a
different member) run a queue while the cluster's leader is SIGKILLed and
restarted.  Requests in flight at the crash fail with an unknown outcome; the
queue settles each through its writer's receipt (``recipes_docs/queue.md``), so
afterwards:

* every put the producers were told succeeded was taken exactly once;
* a put that raised ``QueueOutcomeUnknownError`` (its receipt could not be read
  back in time) was taken at most once - accounted for, never assumed;
* no item was taken twice, nothing foreign was taken, and the queue ends empty;
* each producer's items were taken in the order it put them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import pytest

from etcdsync import errors
from etcdsync.testing import EtcdCluster

from .conftest import client, endpoints_first, report, wait_for
from .history import FAIL, INFO, OK, History

pytestmark = pytest.mark.faults

ITEMS = 200  # per producer
STOP = b"stop"


def _produce(history: History, endpoints: list[str], name: str, actor: str) -> None:
    with client(endpoints) as etcd:
        queue = etcd.queue(name, ttl=10)
        i = 0
        while i < ITEMS:
            value = f"{actor}:{i}"
            started = history.record(actor, "invoke", "put", {"value": value}).time
            try:
                revision = queue.put(value)  # settled as long as it takes
            except errors.QueueOutcomeUnknownError as exc:
                history.record(actor, INFO, "put", {"value": value}, type(exc).__name__)
                i += 1  # maybe in the queue: never put twice
                continue
            except errors.EtcdError as exc:
                # Not applied (refused, unreachable, session replaced): put it again.
                history.record(actor, FAIL, "put", {"value": value}, type(exc).__name__)
                continue
            history.record(
                actor, OK, "put", {"value": value, "revision": revision, "started": started}
            )
            i += 1


def _consume(history: History, endpoints: list[str], name: str, actor: str) -> None:
    with client(endpoints) as etcd:
        queue = etcd.queue(name, ttl=10)
        while True:
            started = time.monotonic()
            try:
                item = queue.get()  # until the stop item (the test bounds the thread)
            except errors.EtcdError as exc:
                # An unknown take is handed to a later get() once settled.
                history.record(actor, INFO, "take", {}, type(exc).__name__)
                continue
            if item.value == STOP:
                return
            history.record(
                actor,
                OK,
                "take",
                {"value": item.text, "revision": item.revision, "started": started},
            )


class _Settled(logging.Handler):
    """Counts the queue writes settled through a receipt (logged by the recipe)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.applied = self.not_applied = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("settled a queue write"):
            if ": applied" in message:
                self.applied += 1
            else:
                self.not_applied += 1


@pytest.mark.timeout(60)
def test_queue_items_delivered_exactly_once_across_a_leader_kill(
    cluster: EtcdCluster, history: History
) -> None:
    settled = _Settled()
    logger = logging.getLogger("etcdsync.recipes")
    logger.addHandler(settled)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        _run_queue_scenario(cluster, history, settled)
    finally:
        logger.removeHandler(settled)
        logger.setLevel(old_level)


def _run_queue_scenario(cluster: EtcdCluster, history: History, settled: _Settled) -> None:
    name = "q1/jobs"
    producers = [f"p{i}" for i in range(2)]
    consumers = [f"c{i}" for i in range(2)]
    threads = [
        threading.Thread(
            target=_consume,
            args=(history, endpoints_first(cluster.endpoints, i % 3), name, actor),
            daemon=True,
        )
        for i, actor in enumerate(consumers)
    ] + [
        threading.Thread(
            target=_produce,
            args=(history, endpoints_first(cluster.endpoints, (i + 1) % 3), name, actor),
            daemon=True,
        )
        for i, actor in enumerate(producers)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    # Kill the leader with producers and consumers in full swing.
    wait_for(lambda: len(history.select("put", OK)) >= ITEMS // 2, 20, "puts")
    leader = cluster.wait_for_leader()
    killed_at = history.event("nemesis", "kill", member=leader).time
    cluster.kill(leader)

    def since_kill(op: str) -> list[float]:
        return [e.time for e in history.select(op, OK) if e.args["started"] > killed_at]

    wait_for(
        lambda: len(since_kill("put")) >= 10 and len(since_kill("take")) >= 10,
        15,
        "puts and takes started after the kill to complete",
    )
    resumed = max(min(since_kill(op)) for op in ("put", "take")) - killed_at
    cluster.start_member(leader)
    history.event("nemesis", "restarted", member=leader)
    for thread in threads[len(consumers) :]:
        thread.join(30)
        assert not thread.is_alive(), "a producer did not finish"
    with client(cluster.endpoints) as etcd:
        queue = etcd.queue(name)
        for _ in consumers:
            queue.put(STOP)
        for thread in threads[: len(consumers)]:
            thread.join(30)
            assert not thread.is_alive(), "a consumer did not finish"
        assert queue.size() == 0
    elapsed = time.monotonic() - started

    acknowledged = {e.args["value"] for e in history.select("put", OK)}
    unknown = {e.args["value"] for e in history.select("put", INFO)}
    takes = [(e.args["revision"], e.args["value"]) for e in history.select("take", OK)]
    counts = Counter(value for _, value in takes)
    assert [v for v, n in counts.items() if n > 1] == [], "items taken twice"
    assert acknowledged - set(counts) == set(), "acknowledged puts never taken"
    assert set(counts) - acknowledged - unknown == set(), "taken items nobody put"
    assert len(acknowledged) + len(unknown) == ITEMS * len(producers)
    takes.sort()
    for actor in producers:
        sequence = [int(v.split(":")[1]) for _, v in takes if v.startswith(f"{actor}:")]
        assert sequence == sorted(sequence), f"{actor}'s items taken out of order"
    settled_unknown = len(history.select("take", INFO))
    assert elapsed < 30, elapsed
    report(
        f"queue scenario (leader SIGKILL, 2 producers x {ITEMS} items, 2 consumers, etcd "
        f"{cluster.version}): {len(takes)} items taken, 0 twice, 0 lost; "
        f"{len(unknown)} puts left unknown ({len(unknown & set(counts))} of them taken), "
        f"{settled_unknown} takes raised and were handed out later; {settled.applied} lost "
        f"answers settled as applied, {settled.not_applied} as not applied; first put and take "
        f"{resumed:.2f} s after the kill; {elapsed:.1f} s in all"
    )
