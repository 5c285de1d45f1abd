"""Distributed locks, asyncio flavour: a Mutex guarding a job with fencing, a
semaphore, a RW lock.

    python examples/lock_async.py                    # starts an embedded etcd
    python examples/lock_async.py 127.0.0.1:2379     # or uses yours

The same steps as ``lock.py`` with ``AsyncClient``: four worker tasks share one client
(one session lease serves all their locks) and take turns on a job; ``async with``
acquires and releases.  Each holder writes its result with ``guarded_txn``: applied
only if the lock is still held, so a holder that paused past its lease's TTL cannot
overwrite the work of the next one.  Everything lives in a fresh namespace.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from etcdsync import AsyncClient, AsyncNamespace, Op, errors
from etcdsync.testing import endpoint_or_embedded


async def worker(etcd: AsyncNamespace, index: int, log: list[str]) -> None:
    for _ in range(3):
        # The body never runs unlocked: a timed-out acquire raises LockTimeout.
        async with etcd.lock("demo/jobs/nightly", ttl=10, timeout=30) as lock:
            lock.add_lost_callback(lambda error: print(f"worker {index}: LOST ({error})"))
            runs = int((await etcd.get("demo/jobs/nightly-runs")).value or b"0")
            # Written only while this hold is current; the token tells the holds apart.
            await lock.guarded_txn(
                [
                    Op.put("demo/jobs/nightly-runs", str(runs + 1)),
                    Op.put("demo/jobs/nightly-last", f"worker {index} token {lock.fencing_token}"),
                ]
            )
            log.append(f"worker {index} ran the job (fencing token {lock.fencing_token})")


async def run(endpoint: str) -> None:
    async with AsyncClient(endpoint) as client:
        # A fresh namespace: every key below lives under it, and nothing else is touched.
        namespace = f"examples/lock-async/{uuid.uuid4().hex[:8]}/"
        etcd = client.namespace(namespace)
        log: list[str] = []
        await asyncio.gather(*(worker(etcd, i, log) for i in range(4)))
        print("\n".join(log))
        print("runs  ->", (await etcd.get("demo/jobs/nightly-runs")).value)  # b'12': none lost
        print("last  ->", (await etcd.get("demo/jobs/nightly-last")).value)

        # "Only one of us should run this": try_acquire does not wait.
        async with AsyncClient(endpoint) as other_client:
            mine = etcd.lock("demo/jobs/cleanup")
            theirs = other_client.namespace(namespace).lock("demo/jobs/cleanup")
            print("try   ->", await mine.try_acquire(), await theirs.try_acquire())  # True False
            try:
                await theirs.acquire(timeout=0.2)
            except errors.LockTimeout:
                print("wait  -> timed out after 0.2 s: the lock is taken")
            await mine.release()

        # A semaphore: at most two holders of "demo/gpus" at once.
        a, b, c = (etcd.semaphore("demo/gpus", 2) for _ in range(3))
        tried = [await s.try_acquire() for s in (a, b, c)]
        print("sem   ->", *tried)  # True True False
        await a.release()
        print("sem   ->", await c.try_acquire())  # True: a freed its slot
        await b.release()
        await c.release()

        # A readers-writer lock: readers share, a writer is alone.
        rw = etcd.rwlock("demo/catalog")
        async with rw.read(), rw.read():
            print("rw    -> two readers at once; writer gets in?", await rw.write().try_acquire())
        async with rw.write(timeout=5) as writer:
            await writer.guarded_txn([Op.put("demo/catalog-data", "v2")])
            print("rw    -> writer alone, wrote", (await etcd.get("demo/catalog-data")).value)

        await etcd.delete("demo/", prefix=True)


def main() -> int:
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(run(endpoint))
    return 0


if __name__ == "__main__":
    sys.exit(main())
