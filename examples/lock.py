"""Distributed locks: a Mutex guarding a job with fencing, a semaphore, a RW lock.

    python examples/lock.py                    # starts an embedded etcd
    python examples/lock.py 127.0.0.1:2379     # or uses yours

Four worker threads share one client (one session lease serves all their locks)
and take turns on a job.  Each holder writes its result with ``guarded_txn``: the
write is applied only if the lock is still held, so a holder that paused past
its lease's TTL cannot overwrite the work of the next one.
"""

from __future__ import annotations

import sys
import threading
import uuid

from etcdsync import Client, Namespace, Op, errors
from etcdsync.testing import endpoint_or_embedded


def worker(etcd: Namespace, index: int, log: list[str]) -> None:
    for _ in range(3):
        # The body never runs unlocked: a timed-out acquire raises LockTimeout.
        with etcd.lock("demo/jobs/nightly", ttl=10, timeout=30) as lock:
            lock.add_lost_callback(lambda error: print(f"worker {index}: LOST ({error})"))
            runs = int(etcd.get("demo/jobs/nightly-runs").value or b"0")
            # Written only while this hold is current; the token tells the holds apart.
            lock.guarded_txn(
                [
                    Op.put("demo/jobs/nightly-runs", str(runs + 1)),
                    Op.put("demo/jobs/nightly-last", f"worker {index} token {lock.fencing_token}"),
                ]
            )
            log.append(f"worker {index} ran the job (fencing token {lock.fencing_token})")


def run(endpoint: str) -> None:
    with Client(endpoint) as client:
        # A fresh namespace: every key below lives under it, and nothing else is touched.
        namespace = f"examples/lock/{uuid.uuid4().hex[:8]}/"
        etcd = client.namespace(namespace)
        log: list[str] = []
        threads = [threading.Thread(target=worker, args=(etcd, i, log)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print("\n".join(log))
        print("runs  ->", etcd.get("demo/jobs/nightly-runs").value)  # b'12': none lost
        print("last  ->", etcd.get("demo/jobs/nightly-last").value)

        # "Only one of us should run this": try_acquire does not wait.
        with Client(endpoint) as other_client:
            mine = etcd.lock("demo/jobs/cleanup")
            theirs = other_client.namespace(namespace).lock("demo/jobs/cleanup")
            print("try   ->", mine.try_acquire(), theirs.try_acquire())  # True False
            try:
                theirs.acquire(timeout=0.2)
            except errors.LockTimeout:
                print("wait  -> timed out after 0.2 s: the lock is taken")
            mine.release()

        # A semaphore: at most two holders of "demo/gpus" at once.
        a, b, c = (etcd.semaphore("demo/gpus", 2) for _ in range(3))
        print("sem   ->", a.try_acquire(), b.try_acquire(), c.try_acquire())  # True True False
        a.release()
        print("sem   ->", c.try_acquire())  # True: a freed its slot
        b.release()
        c.release()

        # A readers-writer lock: readers share, a writer is alone.
        rw = etcd.rwlock("demo/catalog")
        with rw.read(), rw.read():
            print("rw    -> two readers at once; writer gets in?", rw.write().try_acquire())
        with rw.write(timeout=5) as writer:
            writer.guarded_txn([Op.put("demo/catalog-data", "v2")])
            print("rw    -> writer alone, wrote", etcd.get("demo/catalog-data").value)

        etcd.delete("demo/", prefix=True)


def main() -> int:
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        run(endpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
