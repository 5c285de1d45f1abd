"""A worker pool whose leader schedules, and stops the moment it loses (asyncio).

    python examples/leader_worker_pool_async.py                    # starts an embedded etcd
    python examples/leader_worker_pool_async.py 127.0.0.1:2379     # or uses yours

Three pool members (each with its own client, as separate hosts would have) run
``election.run(schedule, name, forever=True)``: whoever leads runs ``schedule(term)``,
which puts tasks under ``tasks/``, each write guarded by the term's fencing compare;
every member takes tasks (the first to delete one gets it).  Midway an operator revokes
the leader's lease - as an expired lease would after a partition: its ``schedule`` task
is **cancelled** as soon as its client learns of it (no second scheduler keeps going),
another member takes over, and the ex-leader campaigns again and queues behind.  At the
end each member's ``run()`` is cancelled, which resigns.  Everything the example writes
lives under a fresh run prefix and is deleted at the end.  The same pool with threads,
where the work is told of the loss instead of cancelled: ``leader_worker_pool.py``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections import Counter

from etcdsync import AsyncClient, AsyncTerm, Compare, Op
from etcdsync.testing import endpoint_or_embedded
from etcdsync.watch_types import EventType

started = time.monotonic()


def log(text: str) -> None:
    print(f"{time.monotonic() - started:6.2f}s  {text}", flush=True)


async def member(endpoint: str, run_prefix: str, name: str, taken: Counter[str]) -> None:
    async with AsyncClient(endpoint) as etcd:
        space = etcd.namespace(run_prefix)  # this run's keys only
        election = space.election("pool/leader", ttl=5)

        async def schedule(term: AsyncTerm) -> None:
            log(f"{name} leads (term {term.revision}) and schedules")
            count = 0
            try:
                while True:
                    count += 1
                    task = f"tasks/{term.revision}-{count:03d}"
                    await term.guarded_txn([Op.put(task, f"scheduled by {name}")])
                    await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                why = "its term was lost" if term.lost.is_set() else "shutting down"
                log(f"{name} stopped scheduling after {count} task(s): {why}")
                raise

        async def take_tasks() -> None:
            async with await space.watch("tasks/", prefix=True) as watcher:
                while True:
                    for event in (await watcher.get()).events:
                        if event.type is EventType.PUT:
                            got = await space.txn(
                                [Compare.version(event.key) > 0], [Op.delete(event.key)]
                            )
                            if got.succeeded:
                                taken[name] += 1

        worker = asyncio.create_task(take_tasks())
        try:
            await election.run(schedule, name, forever=True)
        finally:
            worker.cancel()


async def main(endpoint: str) -> None:
    run_prefix = f"examples/leader-pool/{uuid.uuid4().hex[:8]}/"
    taken: Counter[str] = Counter()
    async with AsyncClient(endpoint) as admin:
        space = admin.namespace(run_prefix)
        election = space.election("pool/leader")
        members = [
            asyncio.create_task(member(endpoint, run_prefix, f"member-{i}", taken))
            for i in range(3)
        ]
        try:
            async with election.observe() as observer:
                first = await observer.get(timeout=20)
                log(f"leader: {first.value.decode()}")
                await asyncio.sleep(0.5)  # let it schedule a few tasks
                log(f"operator revokes {first.value.decode()}'s lease")
                await admin.revoke(first.lease)
                second = await observer.get(timeout=20)
                log(f"new leader: {second.value.decode()}")
                assert second.create_revision > first.create_revision
                await asyncio.sleep(0.5)
        finally:
            for task in members:
                task.cancel()  # run() resigns on the way out
            await asyncio.gather(*members, return_exceptions=True)
            log(f"tasks taken per member: {dict(sorted(taken.items()))}")
            deleted = await space.delete("", prefix=True)
            log(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")
        assert sum(taken.values()) > 0


if __name__ == "__main__":
    logging.basicConfig(format="         (log) %(name)s: %(message)s")
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(main(endpoint))
