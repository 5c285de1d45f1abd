"""Leader election: three workers, one leader, a fenced write, a crash and a handover.

    python examples/election.py                    # starts an embedded etcd
    python examples/election.py 127.0.0.1:2379     # or uses yours

Three worker threads campaign for "demo/scheduler" (each with a session of its own,
TTL 2 s).  The leader writes its results with ``guarded_txn``, so a leader that
lost its lease cannot overwrite its successor's work.  The first leader then
"crashes" (stops renewing its lease without resigning): within the TTL the next
worker is elected.  An observer prints every leadership change, in order.
"""

from __future__ import annotations

import sys
import threading
import uuid

from etcdsync import Client, Namespace, Op
from etcdsync.testing import endpoint_or_embedded

ELECTION = "demo/scheduler"


def worker(etcd: Namespace, name: str, crash: threading.Event, done: threading.Event) -> None:
    session = etcd.session(ttl=2)
    election = etcd.election(ELECTION, session=session)
    election.campaign(name, timeout=30)  # blocks until this worker leads
    print(f"{name}: elected (fencing token {election.leader_revision})")
    election.guarded_txn([Op.put("demo/scheduler-state", f"run by {name}")])
    if name == "worker-0":
        crash.wait(10)
        print(f"{name}: crashing without resigning")
        session.orphan()  # renewals stop; the lease expires after its TTL
        return
    try:
        election.proclaim(f"{name} (busy)")
        done.wait(10)
    finally:
        election.resign()
        session.close()


def run(endpoint: str) -> None:
    with Client(endpoint) as client:
        # A fresh namespace: every key below lives under it, and nothing else is touched.
        etcd = client.namespace(f"examples/election/{uuid.uuid4().hex[:8]}/")
        etcd.delete("demo/", prefix=True)
        observer = etcd.election(ELECTION).observe()
        crash, done = threading.Event(), threading.Event()
        workers = []
        with etcd.watch(ELECTION + "/", prefix=True) as candidates:
            for i in range(3):
                thread = threading.Thread(target=worker, args=(etcd, f"worker-{i}", crash, done))
                thread.start()
                workers.append(thread)
                candidates.get(timeout=10)  # its candidate key: the queue order is set
        changes = []
        for step in range(4):  # worker-0, worker-1, worker-1 (busy), worker-2
            leader = observer.get(timeout=15)
            changes.append(leader.value.decode())
            print(f"observer: leader is now {leader.value.decode()!r}")
            if step == 0:
                crash.set()
            if step == 2:
                done.set()
        for thread in workers:
            thread.join(30)
        observer.cancel()
        print("state ->", etcd.get("demo/scheduler-state").value)
        assert changes == ["worker-0", "worker-1", "worker-1 (busy)", "worker-2"], changes
        etcd.delete("demo/", prefix=True)


def main() -> int:
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        run(endpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
