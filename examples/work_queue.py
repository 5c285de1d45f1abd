"""A work queue with at-least-once delivery: producers, consumers, and a crash.

    python examples/work_queue.py                    # starts an embedded etcd
    python examples/work_queue.py 127.0.0.1:2379     # or uses yours

Two producer threads put 10 jobs each into ``etcd.locking_queue("jobs")``; three
consumer threads take them.  A consumer *claims* a job (the job stays in the queue,
hidden from the others, the claim bound to the consumer's session lease), does the
work, then ``consume()``s it: the job is deleted and the result written **in one
txn**, only while the claim holds - so a result is recorded exactly once even if a
job is delivered twice.  One consumer "crashes" holding a job: its session ends
without consuming, the claim goes with the lease, and the job is served again to
another consumer.  Everything lives in a fresh namespace, deleted at the end.
"""

from __future__ import annotations

import sys
import threading
import uuid

from etcdsync import Client, Op
from etcdsync.testing import endpoint_or_embedded

JOBS_PER_PRODUCER = 10
CONSUMERS = 3


def producer(etcd: Client, ident: str) -> None:
    jobs = etcd.locking_queue("jobs")
    for i in range(JOBS_PER_PRODUCER):
        jobs.put(f"{ident}-job-{i}")


def consumer(etcd: Client, ident: str, log: list[str]) -> None:
    # Each consumer has a session of its own (TTL 5 s): the lease its claims live on.
    with etcd.session(ttl=5) as session:
        jobs = etcd.locking_queue("jobs", session=session)
        # try_get(): the jobs are all queued already; a blocking get(timeout=...)
        # would wait for new ones (or for claims that end).
        while (claim := jobs.try_get()) is not None:
            result = claim.text.upper()  # the "work"
            # The result and the job's deletion commit together, while the claim holds.
            claim.consume([Op.put(f"results/{claim.text}", f"{result} by {ident}")])
            log.append(f"{ident} did {claim.text}")


def crashing_consumer(etcd: Client, log: list[str]) -> str:
    """Claims a job and dies without consuming it (its session ends)."""
    session = etcd.session(ttl=5)
    claim = etcd.locking_queue("jobs", session=session).get(timeout=10)
    log.append(f"crasher claimed {claim.text} and died")
    session.close()  # as a crash would, after the TTL: the claim is gone, the job is back
    return claim.text


def run(endpoint: str) -> None:
    run_prefix = f"examples/work_queue/{uuid.uuid4().hex[:8]}/"
    with Client(endpoint) as client:
        etcd = client.namespace(run_prefix)  # every key of this run under its prefix
        try:
            producers = [threading.Thread(target=producer, args=(etcd, f"p{i}")) for i in range(2)]
            for thread in producers:
                thread.start()
            for thread in producers:
                thread.join()
            print("queued:", etcd.locking_queue("jobs").size(), "jobs")

            log: list[str] = []
            dropped = crashing_consumer(etcd, log)
            consumers = [
                threading.Thread(target=consumer, args=(etcd, f"c{i}", log))
                for i in range(CONSUMERS)
            ]
            for thread in consumers:
                thread.start()
            for thread in consumers:
                thread.join(60)
            for line in log[:4]:
                print(line)
            print("...")
            results = etcd.get("results/", prefix=True)
            print(f"{results.count} results, one per job:", results.count == 2 * JOBS_PER_PRODUCER)
            redone = etcd.get(f"results/{dropped}").value
            print(f"the job the crasher dropped ({dropped}) was done again:", redone)
            print("left in the queue:", etcd.locking_queue("jobs").size())
        finally:
            deleted = client.delete(run_prefix, prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        run(endpoint)
