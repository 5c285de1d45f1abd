"""``etcdsync demo`` (what ``make demo`` runs) finishes quickly, keeps talking, and its
self-check passes; and the self-check itself catches the failures it exists to catch.

The second half feeds the check functions hand-made histories (lists of the events
etcd would have reported, and of the workers' reports): an overlapping leadership, a
lost update, a write by a stale lock holder, a missed config version.  Each must be
flagged, so a passing demo means something.  (A member that never joined or
never left, too.)
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time

from etcdsync.cli._demo_check import (
    Change,
    WorkerLog,
    check_config,
    check_counter,
    check_fencing,
    check_group,
    check_leadership,
    leadership_terms,
    ledger_key,
)


def test_demo_passes_its_self_check_in_well_under_a_minute() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ETCDSYNC_") or k == "ETCDSYNC_TEST_ETCD"
    }
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "etcdsync", "demo", "--duration", "10", "--workers", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    stamped: list[tuple[float, str]] = []
    assert proc.stdout is not None

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stamped.append((time.monotonic(), line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    took = time.monotonic() - started
    assert proc.stderr is not None
    output = "\n".join(line for _, line in stamped)
    assert code == 0, f"{output}\n{proc.stderr.read()}"
    assert took < 60
    assert output.splitlines()[-1] == "self-check passed"
    for check in (
        "counter exact",
        "lock fencing",
        "one leader at a time",
        "config seen by all",
        "group membership",
    ):
        assert f"ok    {check}:" in output, output
    assert "SIGKILL" in output and "s after the kill" in output
    assert "left the members" in output and "| members 3 |" in output
    # Progress is visible: never more than a couple of seconds without a line.
    times = [started] + [at for at, _ in stamped]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 2.5, (max(gaps), output)


# --- the self-check against hand-made histories ---------------------------------------------

_rev = iter(range(2, 10_000))


def put(key: str, value: str = "", *, lease: int = 0, create: int | None = None) -> Change:
    revision = next(_rev)
    return Change(revision, key, value, create or revision, lease, False)


def delete(change: Change) -> Change:
    return Change(next(_rev), change.key, "", 0, 0, True)


def same_revision(*changes: Change) -> list[Change]:
    """Changes of one txn share its revision."""
    revision = changes[0].revision
    return [
        Change(
            revision,
            c.key,
            c.value,
            revision if c.create_revision == c.revision else c.create_revision,
            c.lease,
            c.deleted,
        )
        for c in changes
    ]


def increment(worker: str, value: int, token: int) -> list[Change]:
    return same_revision(put("counter", str(value)), put(ledger_key(value), f"{worker} {token}"))


def test_overlapping_leadership_is_flagged() -> None:
    a = put("election/a", "w1")
    b = put("election/b", "w2")
    history = [a, b, delete(a)]
    terms = leadership_terms(history)
    assert [(t.worker, t.start, t.end) for t in terms] == [
        ("w1", a.revision, history[2].revision),
        ("w2", history[2].revision, None),
    ]
    honest = [WorkerLog("w1", elected=[(a.revision, a.revision)]), WorkerLog("w2")]
    honest[1].elected.append((b.revision, history[2].revision))
    assert check_leadership(history, honest, None).ok
    # w2 claims to lead at a revision where etcd still had w1 in charge.
    liar = WorkerLog("w2", elected=[(b.revision, b.revision)])
    result = check_leadership(history, [honest[0], liar], None)
    assert not result.ok and "outside" in result.detail
    # A killed leader nobody replaced is a failed failover.
    assert not check_leadership([a, b], honest, "w1").ok


def test_a_lost_update_or_a_missing_acknowledged_increment_is_flagged() -> None:
    history = increment("w1", 1, 10) + increment("w2", 2, 20)
    logs = [WorkerLog("w1", acked={1: 10}), WorkerLog("w2", acked={2: 20})]
    assert check_counter(history, logs).ok
    # Two writers both wrote 2 (the second overwrote the first): a lost update.
    lost = history + increment("w1", 2, 30)
    result = check_counter(lost, [WorkerLog("w1", acked={1: 10, 2: 30}), logs[1]])
    assert not result.ok
    # An increment acknowledged to a worker that etcd does not have.
    result = check_counter(history, [WorkerLog("w1", acked={1: 10, 3: 40}), logs[1]])
    assert not result.ok and "missing" in result.detail


def test_an_indeterminate_increment_is_counted_only_if_it_landed() -> None:
    history = increment("w1", 1, 10) + increment("w2", 2, 20)
    killed = WorkerLog("w2", killed=True, in_flight=(2, 20))
    result = check_counter(history, [WorkerLog("w1", acked={1: 10}), killed])
    assert result.ok and "1 of 1 indeterminate" in result.detail
    # Not in flight, not acknowledged: an increment nobody can account for.
    assert not check_counter(history, [WorkerLog("w1", acked={1: 10}), WorkerLog("w2")]).ok


def test_a_write_by_a_stale_lock_holder_is_flagged() -> None:
    old = put("lock/a", lease=0xA)
    logs = [WorkerLog("w1", leases={0xA}), WorkerLog("w2", leases={0xB})]
    fine = [old, *increment("w1", 1, old.revision)]
    assert check_fencing(fine, logs).ok
    gone = delete(old)
    new = put("lock/b", lease=0xB)
    # w1 writes with its old token after its key expired and w2 holds the lock.
    stale = [*fine, gone, new, *increment("w1", 2, old.revision)]
    result = check_fencing(stale, logs)
    assert not result.ok and "held the lock" in result.detail


def test_a_missed_or_torn_config_version_is_flagged() -> None:
    full = [(1, 5, True), (2, 9, True), (3, 12, True)]
    assert check_config([WorkerLog("w1", configs=full)], 3).ok
    assert not check_config([WorkerLog("w1", configs=[full[0], full[2]])], 3).ok
    assert not check_config([WorkerLog("w1", configs=[*full[:2], (3, 12, False)])], 3).ok
    # A killed worker is not expected to see versions published after its death.
    assert check_config(
        [WorkerLog("w1", configs=full), WorkerLog("w2", killed=True, configs=full[:1])], 3
    ).ok


def test_a_member_that_never_joined_or_never_left_is_flagged() -> None:
    logs = [WorkerLog("w1", ready=True, leases={0xA}), WorkerLog("w2", ready=True, leases={0xB})]
    one = put("members/a", "w1", lease=0xA)
    two = put("members/b", "w2", lease=0xB)
    history = [one, two, delete(one), delete(two)]
    result = check_group(history, logs, "w1")
    assert result.ok, result.detail
    # w2 never joined.
    assert "w2 never joined" in check_group([one, delete(one)], logs, "w1").detail
    # The killed worker's key outlived the run.
    result = check_group([one, two, delete(two)], logs, "w1")
    assert not result.ok and "never left" in result.detail
    # A member key bound to someone else's lease.
    stolen = put("members/c", "w2", lease=0xA)
    assert not check_group([one, stolen, delete(one), delete(stolen)], logs, None).ok
