"""A work queue with at-least-once delivery, asyncio flavour: producers, consumers, a crash.

    python examples/work_queue_async.py                    # starts an embedded etcd
    python examples/work_queue_async.py 127.0.0.1:2379     # or uses yours

The same steps as ``work_queue.py`` with ``AsyncClient``.  Two producer tasks put 10
jobs each into ``etcd.locking_queue("jobs")``; three consumer tasks take them.  A
consumer *claims* a job (the job stays in the queue, hidden from the others, the claim
bound to the consumer's session lease), does the work, then ``consume()``s it: the job
is deleted and the result written **in one txn**, only while the claim holds - so a
result is recorded exactly once even if a job is delivered twice.  One consumer
"crashes" holding a job: its session ends without consuming, the claim goes with the
lease, and the job is served again to another consumer.

The asyncio way to stop consumers: they wait in ``get()`` with no timeout (an idle
consumer costs no requests: the wait is a watch), and are **cancelled** once a watch
on the results has seen every job done; each consumer's session closes on the way out.
Everything lives in a fresh namespace, deleted at the end.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from etcdsync import AsyncClient, AsyncNamespace, Op
from etcdsync.testing import endpoint_or_embedded

JOBS_PER_PRODUCER = 10
CONSUMERS = 3


async def producer(etcd: AsyncNamespace, ident: str) -> None:
    jobs = etcd.locking_queue("jobs")
    for i in range(JOBS_PER_PRODUCER):
        await jobs.put(f"{ident}-job-{i}")


async def consumer(etcd: AsyncNamespace, ident: str, log: list[str]) -> None:
    # Each consumer has a session of its own (TTL 5 s): the lease its claims live on.
    async with await etcd.session(ttl=5) as session:
        jobs = etcd.locking_queue("jobs", session=session)
        while True:
            claim = await jobs.get()  # waits for a job; ends when this task is cancelled
            result = claim.text.upper()  # the "work"
            # The result and the job's deletion commit together, while the claim holds.
            await claim.consume([Op.put(f"results/{claim.text}", f"{result} by {ident}")])
            log.append(f"{ident} did {claim.text}")


async def crashing_consumer(etcd: AsyncNamespace, log: list[str]) -> str:
    """Claims a job and dies without consuming it (its session ends)."""
    session = await etcd.session(ttl=5)
    claim = await etcd.locking_queue("jobs", session=session).get(timeout=10)
    log.append(f"crasher claimed {claim.text} and died")
    await session.close()  # as a crash would, after the TTL: the claim is gone, the job is back
    return claim.text


async def all_done(etcd: AsyncNamespace, start_revision: int, count: int) -> None:
    """Return once ``count`` distinct results were written after ``start_revision``."""
    seen: set[bytes] = set()
    async with await etcd.watch("results/", prefix=True, start_revision=start_revision) as w:
        while len(seen) < count:
            seen.update(event.key for event in (await w.get()).events)


async def run(endpoint: str) -> None:
    run_prefix = f"examples/work-queue-async/{uuid.uuid4().hex[:8]}/"
    async with AsyncClient(endpoint) as client:
        etcd = client.namespace(run_prefix)  # every key of this run under its prefix
        try:
            await asyncio.gather(*(producer(etcd, f"p{i}") for i in range(2)))
            print("queued:", await etcd.locking_queue("jobs").size(), "jobs")

            log: list[str] = []
            dropped = await crashing_consumer(etcd, log)
            start = (await etcd.get("results/")).revision + 1
            consumers = [
                asyncio.create_task(consumer(etcd, f"c{i}", log)) for i in range(CONSUMERS)
            ]
            try:
                await asyncio.wait_for(all_done(etcd, start, 2 * JOBS_PER_PRODUCER), 60)
            finally:
                for task in consumers:
                    task.cancel()  # leaves get() at once; the session closes on the way out
                await asyncio.gather(*consumers, return_exceptions=True)
            for line in log[:4]:
                print(line)
            print("...")
            results = await etcd.get("results/", prefix=True)
            print(f"{results.count} results, one per job:", results.count == 2 * JOBS_PER_PRODUCER)
            assert results.count == 2 * JOBS_PER_PRODUCER
            redone = (await etcd.get(f"results/{dropped}")).value
            print(f"the job the crasher dropped ({dropped}) was done again:", redone)
            assert redone is not None
            left = await etcd.locking_queue("jobs").size()
            print("left in the queue:", left)
            assert left == 0
        finally:
            deleted = await client.delete(run_prefix, prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(run(endpoint))
