"""Partitioned workers, asyncio flavour: 12 shards shared by workers that come and go.

    python examples/partitioned_workers_async.py                    # starts an embedded etcd
    python examples/partitioned_workers_async.py 127.0.0.1:2379     # or uses yours

The same steps as ``partitioned_workers.py`` with ``AsyncClient``.  Each worker runs
``etcd.partitioner("shards", SHARDS)``: it joins the group of workers and owns the
shards that rendezvous hashing gives it among the live workers, each through a
lease-bound owner key that no other worker can create while it exists.

The asyncio way to work on the shards: one task per owned shard, started by the
``ACQUIRED`` callback and **cancelled** by the ``RELEASED`` (or ``LOST``) one - the
callbacks are plain functions, called in order from the partitioner's task, and the
owner key of a released shard goes only after they returned.  Each shard task makes
guarded writes (``guarded_txn(shard, ...)``), which etcd applies only while the worker
still owns the shard.  A worker that stops hands its shards over (``RELEASED`` first,
then its keys go); a new worker takes its share from the others.  Each worker's member
id is its name, and the example waits until every shard is owned by its rendezvous
owner among the live workers (``rendezvous_owner``), which also holds when a worker's
share is empty.  Everything lives in a fresh namespace, deleted at the end.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable

from etcdsync import (
    AsyncClient,
    AsyncNamespace,
    Op,
    OwnershipChange,
    OwnershipChangeType,
    errors,
)
from etcdsync.group_types import rendezvous_owner
from etcdsync.testing import endpoint_or_embedded

SHARDS = [f"shard-{i:02d}" for i in range(12)]

# The first three start, the second stops, the fourth joins.  Any names work; the
# example tests also run names that give a worker an empty share.
NAMES = ("worker-0", "worker-1", "worker-2", "worker-3")


class Board:
    """Who owns which shard, as the workers' callbacks report it."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.owners: dict[str, str] = {}

    def record(self, worker: str, change: OwnershipChange) -> None:
        if change.type is OwnershipChangeType.ACQUIRED:
            assert change.item not in self.owners, "owned twice!"
            self.owners[change.item] = worker
        elif self.owners.get(change.item) == worker:
            del self.owners[change.item]
        self.changed.set()

    async def wait_for(self, workers: set[str], timeout: float = 20) -> dict[str, list[str]]:
        """Wait until every shard is owned by its rendezvous owner among ``workers``.

        No lease has to expire here (workers stop cleanly), so a settle is a watch
        delivery plus a release and a create per moved shard, each retried with at most
        5 s of backoff: 20 s leaves room for a loaded host.
        """
        expected = {shard: rendezvous_owner(shard, workers) for shard in SHARDS}

        async def settled() -> None:
            while self.owners != expected:
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(settled(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"shards not spread over {sorted(workers)}: {self.owners}"
            ) from None
        return {w: sorted(s for s, o in self.owners.items() if o == w) for w in sorted(workers)}


class Worker:
    """A partitioner plus one task per owned shard, making guarded writes."""

    def __init__(self, etcd: AsyncNamespace, name: str, board: Board) -> None:
        self.name = name
        self.etcd = etcd
        # The member id names the worker: shares are rendezvous-hashed over member ids.
        self.part = etcd.partitioner("shards", SHARDS, ttl=5, member_id=name, value=name)
        self.part.add_callback(self.on_change(board))
        self.shard_tasks: dict[str, asyncio.Task[None]] = {}

    def on_change(self, board: Board) -> Callable[[OwnershipChange], None]:
        def on_change(change: OwnershipChange) -> None:
            board.record(self.name, change)
            if change.type is OwnershipChangeType.ACQUIRED:
                self.shard_tasks[change.item] = asyncio.create_task(self.process(change.item))
            else:  # RELEASED or LOST: stop the shard's work at its next await
                task = self.shard_tasks.pop(change.item, None)
                if task is not None:
                    task.cancel()

        return on_change

    async def process(self, shard: str) -> None:
        key = f"progress/{shard}"
        while True:
            done = int((await self.etcd.get(key)).value or b"0")
            try:
                # Applied only while this worker still owns the shard (its fencing token).
                await self.part.guarded_txn(shard, [Op.put(key, str(done + 1))])
            except errors.NotOwnerError:
                return  # handed over meanwhile: the next owner carries on
            await asyncio.sleep(0.05)

    async def start(self) -> Worker:
        await self.part.start(timeout=10)
        return self

    async def stop(self) -> None:
        await self.part.stop()  # RELEASED for each shard (cancelling its task), then the keys go
        await asyncio.gather(*self.shard_tasks.values(), return_exceptions=True)


def show(shares: dict[str, list[str]]) -> None:
    for name, shards in shares.items():
        print(f"  {name} owns {len(shards)} shards: {', '.join(shards) or '-'}")


async def run(endpoint: str, names: tuple[str, str, str, str] = NAMES) -> None:
    first, leaving, third, joining = names
    run_prefix = f"examples/partitioned-workers-async/{uuid.uuid4().hex[:8]}/"
    async with AsyncClient(endpoint) as client:
        etcd = client.namespace(run_prefix)  # every key of this run under its prefix
        try:
            board = Board()
            workers = [Worker(etcd, name, board) for name in (first, leaving, third)]
            try:
                await asyncio.gather(*(worker.start() for worker in workers))
                print(f"{first}, {leaving} and {third} start")
                show(await board.wait_for({first, leaving, third}))
                print(f"{leaving} stops: its shards are handed over")
                await workers[1].stop()
                show(await board.wait_for({first, third}))
                print(f"{joining} joins: it takes its share")
                workers.append(await Worker(etcd, joining, board).start())
                show(await board.wait_for({first, third, joining}))
            finally:
                await asyncio.gather(*(worker.stop() for worker in workers))
            progress = await etcd.get("progress/", prefix=True)
            total = sum(int(kv.value) for kv in progress.kvs)
            print(f"{total} guarded writes over {len(progress.kvs)} shards; none owned twice")
            left = await etcd.get("shards/", prefix=True, count_only=True)
            print("left under the partitioner:", left.count)
        finally:
            # Only this run's keys, even when a wait above failed.
            await client.delete(run_prefix, prefix=True)


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(run(endpoint))
