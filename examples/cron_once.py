"""A cron job that runs on exactly one of N hosts, per scheduled time.

    python examples/cron_once.py                    # starts an embedded etcd
    python examples/cron_once.py 127.0.0.1:2379     # or uses yours

Every host runs the same crontab entry at 03:00.  The job is a ``@etcd.locked``
function with ``timeout=0``: the host that takes the lock runs it, the others get
``LockTimeout`` at once and skip.  A lock alone is "one at a time", not "once": a
slow host that takes the lock after the winner released it would run the job again.
So the job also records the scheduled time it ran for, written with the lock's
fencing compare (``guarded_txn``), and skips a time that is already done.

Three hosts are simulated here by three threads, each with its own client (its own
session, as separate machines would have).  The shell form of the same idea, for a
crontab line, is::

    etcdsync lock --timeout 0 jobs/nightly -- ./nightly-report.sh

(exit status 4 when another host holds the lock; the command sees the fencing token in
``ETCDSYNC_LOCK_REV``).  Everything the example writes lives under a fresh run prefix and
is deleted at the end.
"""

from __future__ import annotations

import sys
import threading
import uuid

from etcdsync import Client, Compare, Op, current_lock, errors
from etcdsync.testing import endpoint_or_embedded

SCHEDULED = "2026-12-01T03:00"  # the slot every host computes alike from its crontab


def host(endpoint: str, run_prefix: str, name: str, start: threading.Barrier) -> str:
    with Client(endpoint) as etcd:
        space = etcd.namespace(run_prefix)

        # The lock's keys live under jobs/nightly/; the job's own state elsewhere.
        @space.locked("jobs/nightly", ttl=30, timeout=0)
        def nightly() -> str:
            lock = current_lock()
            assert lock is not None
            last = space.get("state/nightly/last-run").kv
            if last is not None and last.value == SCHEDULED.encode():
                return "skipped: already done for this slot"
            report = f"report for {SCHEDULED}, made by {name}"
            # Written only while this host still holds the lock (the fencing compare)
            # and nobody recorded a run since our read.
            done = lock.guarded_txn(
                [
                    Op.put("state/nightly/last-run", SCHEDULED),
                    Op.put("state/nightly/report", report),
                ],
                compare=[
                    Compare.mod_revision("state/nightly/last-run")
                    == (last.mod_revision if last is not None else 0)
                ],
            )
            if not done.succeeded:
                return "skipped: another host recorded this slot first"
            return f"ran (fencing token {lock.fencing_token})"

        start.wait()  # the hosts' clocks strike 03:00 together
        try:
            return nightly()
        except errors.LockTimeout:
            return "skipped: another host holds the lock"


def main(endpoint: str) -> None:
    run_prefix = f"examples/cron-once/{uuid.uuid4().hex[:8]}/"
    names = ["host-a", "host-b", "host-c"]
    ran = 0
    try:
        for round_name, together in (("together", True), ("one by one, later", False)):
            outcomes: dict[str, str] = {}
            barrier = threading.Barrier(len(names) if together else 1)

            def call(name: str, out: dict[str, str], start: threading.Barrier) -> None:
                out[name] = host(endpoint, run_prefix, name, start)

            threads = [
                threading.Thread(target=call, args=(name, outcomes, barrier)) for name in names
            ]
            for thread in threads:
                thread.start()
                if not together:
                    thread.join()
            for thread in threads:
                thread.join()
            print(f"{round_name}:")
            for name in names:
                print(f"  {name}: {outcomes[name]}")
            ran += sum(outcome.startswith("ran") for outcome in outcomes.values())
        assert ran == 1, f"the job ran {ran} times"
        with Client(endpoint) as etcd:
            report = etcd.get(run_prefix + "state/nightly/report").value
            print("the report:", report.decode() if report else None)
            assert report is not None
    finally:
        with Client(endpoint) as etcd:
            deleted = etcd.delete(run_prefix, prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        main(endpoint)
