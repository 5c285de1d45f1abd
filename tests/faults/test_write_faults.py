"""Writes under faults: quorum loss, and compare-and-swap across a leader crash.

The question each time: is what the client was told true?  An acknowledged write
must be in the store afterwards; a write reported as failed must not be; a write
with an unknown outcome (timeout, broken connection) may be either - and the
library must never have repeated it on its own (see recipes_docs/retry-policy.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from etcdsync import errors
from etcdsync.testing import EtcdCluster

from .conftest import Worker, client, endpoints_first, replay, report, wait_for
from .history import INFO, INVOKE, OK, History, check_acknowledged, outcome_of

pytestmark = pytest.mark.faults

CALL_TIMEOUT = 1.0
SLACK = 0.7
OUTAGE = 3.0


def _writer(
    history: History, endpoints: list[str], prefix: str, actor: str, stop: threading.Event
) -> None:
    """Put fresh keys one after another, recording every outcome."""
    with client(endpoints, timeout=CALL_TIMEOUT) as etcd:
        seq = 0
        while not stop.is_set():
            seq += 1
            key = f"{prefix}{actor}/{seq:05d}"
            started = time.monotonic()
            history.record(actor, INVOKE, "put", {"id": key}, at=started)
            try:
                etcd.put(key, actor)
            except errors.EtcdError as exc:
                kind, result = outcome_of(exc, write=True), type(exc).__name__
            except Exception as exc:  # untyped: reported by the check
                kind, result = INFO, f"UNTYPED {type(exc).__name__}: {exc}"
            else:
                kind, result = OK, None
            history.record(
                actor, kind, "put", {"id": key, "elapsed": time.monotonic() - started}, result
            )


def _reader(
    history: History, endpoints: list[str], key: str, actor: str, stop: threading.Event
) -> None:
    """Linearizable reads, recording every outcome (a read during the outage must fail)."""
    with client(endpoints, timeout=CALL_TIMEOUT) as etcd:
        while not stop.is_set():
            started = time.monotonic()
            history.record(actor, INVOKE, "get", {}, at=started)
            try:
                etcd.get(key)
            except errors.EtcdError as exc:
                kind, result = "fail", type(exc).__name__
            except Exception as exc:
                kind, result = "fail", f"UNTYPED {type(exc).__name__}: {exc}"
            else:
                kind, result = OK, None
            history.record(actor, kind, "get", {"elapsed": time.monotonic() - started}, result)
            time.sleep(0.05)


@pytest.mark.timeout(90)
def test_quorum_loss(cluster: EtcdCluster, history: History) -> None:
    """Scenario 7: two of three members are frozen (SIGSTOP) for 3 s under a write
    load: no write is acknowledged that is not in the store afterwards, writes during
    the outage fail with typed errors within their deadline, and writes succeed again
    within 5 s of the resume."""
    prefix = "s7/"
    leader = cluster.wait_for_leader()
    frozen = [i for i in range(len(cluster)) if i != leader]
    near = endpoints_first(cluster.endpoints, leader)
    stop = threading.Event()
    threads = [
        threading.Thread(target=_writer, args=(history, near, prefix, f"w{i}", stop), daemon=True)
        for i in range(3)
    ]
    threads.append(
        threading.Thread(
            target=_reader, args=(history, near, f"{prefix}w0/00001", "r", stop), daemon=True
        )
    )
    for thread in threads:
        thread.start()
    wait_for(lambda: len(history.select("put", OK)) >= 30, 20, "30 writes before the outage")
    paused_at = history.event("nemesis", "sigstop", members=frozen).time
    for index in frozen:
        cluster.pause(index)
    wait_for(lambda: time.monotonic() > paused_at + OUTAGE, OUTAGE + 5, "the outage")
    for index in frozen:
        cluster.resume(index)
    resumed_at = history.event("nemesis", "sigcont", members=frozen).time
    wait_for(
        lambda: history.first("put", OK, after=resumed_at) is not None, 10, "a write to succeed"
    )
    recovered = history.first("put", OK, after=resumed_at)
    assert recovered is not None
    done = len(history.select("put", OK))
    wait_for(lambda: len(history.select("put", OK)) >= done + 30, 20, "30 writes after")
    stop.set()
    for thread in threads:
        thread.join(10)
    cluster.wait_ready(20)
    with client(cluster.endpoints) as etcd:
        stored = [kv.key.decode() for kv in etcd.get(prefix, prefix=True, keys_only=True).kvs]

    acks = check_acknowledged(history, "put", stored)
    assert acks.acknowledged_missing == [], "acknowledged writes are missing"
    assert acks.failed_but_committed == [], "writes reported failed were applied"
    assert acks.committed_unknown == [], "the store holds writes nobody made"
    completions = [e for e in history.entries if e.op in ("put", "get") and e.kind != INVOKE]
    untyped = [e.result for e in completions if str(e.result).startswith("UNTYPED")]
    assert untyped == []
    late = [e for e in completions if e.args["elapsed"] > CALL_TIMEOUT + SLACK]
    assert late == [], [(e.actor, e.op, round(e.args["elapsed"], 2), e.result) for e in late]
    # No false success: nothing invoked once the quorum was gone can be acknowledged
    # before the quorum is back (a write needs a majority; a linearizable read too).
    false_success = [
        (e.actor, e.op, round(e.time - paused_at, 3), round(e.args["elapsed"], 3))
        for e in completions
        if e.kind == OK
        and e.time - e.args["elapsed"] > paused_at + 0.2  # invoked once the quorum was gone
        and e.time < resumed_at
    ]
    assert false_success == [], false_success
    outage_errors = sorted(
        {str(e.result) for e in completions if paused_at < e.time < resumed_at and e.kind != OK}
    )
    assert outage_errors, "nothing failed during the outage?"
    recovery = recovered.time - resumed_at
    assert recovery < 5.0
    report(
        f"scenario 7 (2 of 3 members SIGSTOPped for {OUTAGE:g} s, etcd {cluster.version}): "
        f"{acks.ok} writes acknowledged, all in the store; {acks.failed} failed, none "
        f"applied; {acks.indeterminate} indeterminate ({acks.indeterminate_committed} of "
        f"them committed after all); outage errors: {', '.join(outage_errors)}; 0 false "
        f"successes; writes again {recovery:.2f} s after the resume"
    )


@pytest.mark.timeout(120)
def test_cas_increments_across_a_leader_kill(
    cluster: EtcdCluster, history: History, workers: Callable[..., Worker]
) -> None:
    """Scenario 9: four processes increment one counter with compare-and-swap txns (on
    its mod revision, re-reading after a failed compare) while the leader is SIGKILLed:
    the final value lies within [acknowledged, acknowledged + indeterminate], no
    increment reported as failed committed, none committed twice."""
    key, target = "s9/counter", 200
    with client(cluster.endpoints) as etcd:
        start = etcd.get(key).revision + 1
    started = [
        workers("cas", endpoints_first(cluster.endpoints, i % 3), key, target, f"c{i}")
        for i in range(4)
    ]
    wait_for(lambda: len(history.select("cas", OK)) >= 60, 30, "60 increments")
    leader = cluster.wait_for_leader()
    killed_at = history.event("nemesis", "kill", member=leader).time
    cluster.kill(leader)
    elected = cluster.wait_for_leader(timeout=10, exclude=leader)
    history.event("nemesis", "elected", member=elected)
    wait_for(lambda: len(history.select("cas", OK)) >= 120, 30, "120 increments")
    cluster.start_member(leader)
    history.event("nemesis", "restarted", member=leader)
    for worker in started:
        assert worker.wait(60) == 0, worker.seen
    with client(cluster.endpoints) as etcd:
        events = replay(etcd, key, start_revision=start)

    values = [int(e.kv.value.split(b"|")[0]) for e in events]
    ids = [e.kv.value.split(b"|")[1].decode() for e in events]
    assert values == list(range(1, len(values) + 1)), "an increment was lost or doubled"
    acks = check_acknowledged(history, "cas", ids)
    assert acks.acknowledged_missing == [], "acknowledged increments are missing"
    assert acks.failed_but_committed == [], "increments reported failed were applied"
    assert acks.applied_twice == [], "an increment was applied twice (a blind retry?)"
    assert acks.committed_unknown == []
    final = values[-1]
    assert acks.ok <= final <= acks.ok + acks.indeterminate
    assert final == acks.ok + acks.indeterminate_committed
    # The first increment both started and acknowledged after the kill: it needed the
    # new leader.
    invoked = {e.args["id"]: e.time for e in history.select("cas", INVOKE)}
    first_after = next(e for e in history.select("cas", OK) if invoked[e.args["id"]] > killed_at)
    report(
        f"scenario 9 (CAS increments x4 processes, leader SIGKILL, etcd {cluster.version}): "
        f"final {final} in [{acks.ok}, {acks.ok + acks.indeterminate}] (acknowledged "
        f"{acks.ok}, indeterminate {acks.indeterminate}, {acks.indeterminate_committed} of "
        f"them committed); {acks.failed} compare failures, none applied; 0 applied twice; "
        f"increments again {first_after.time - killed_at:.2f} s after the kill"
    )
