"""Partitioned workers: 12 shards shared by worker threads that come and go.

    python examples/partitioned_workers.py                    # starts an embedded etcd
    python examples/partitioned_workers.py 127.0.0.1:2379     # or uses yours

Each worker runs ``etcd.partitioner("shards", SHARDS)``: it joins the group of workers
and owns the shards that rendezvous hashing gives it among the live workers, each
through a lease-bound owner key that no other worker can create while it exists.
The workers process their shards with guarded writes (``guarded_txn(shard, ...)``),
which etcd applies only while the writer still owns the shard.  A worker that stops
hands its shards over (``RELEASED`` first, then its keys go); a new worker takes its
share from the others.  Each worker's member id is its name (``member_id=``), so the
shares are the same on every run; the example waits until every shard is owned by its
rendezvous owner among the live workers (``rendezvous_owner``) - the protocol's own
definition of "settled", which also holds when a worker's share is empty.  Everything
lives in a fresh namespace, deleted at the end.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable

from etcdsync import Client, Namespace, Op, OwnershipChange, OwnershipChangeType, errors
from etcdsync.group_types import rendezvous_owner
from etcdsync.testing import endpoint_or_embedded

SHARDS = [f"shard-{i:02d}" for i in range(12)]


class Board:
    """Who owns which shard, as the workers' callbacks report it."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.owners: dict[str, str] = {}

    def callback(self, worker: str) -> Callable[[OwnershipChange], None]:
        def on_change(change: OwnershipChange) -> None:
            with self.changed:
                if change.type is OwnershipChangeType.ACQUIRED:
                    assert change.item not in self.owners, "owned twice!"
                    self.owners[change.item] = worker
                elif self.owners.get(change.item) == worker:
                    del self.owners[change.item]
                self.changed.notify_all()

        return on_change

    def wait_for(self, workers: set[str], timeout: float = 20) -> dict[str, list[str]]:
        """Wait until every shard is owned by its rendezvous owner among ``workers``.

        Not "until every worker owns a shard": rendezvous hashing may give a worker no
        shard at all (12 shards over 3 random member ids: about 2% of the time), and such
        a worker never reports anything.  No lease has to expire here (workers stop
        cleanly), so a settle is a watch delivery plus a release and a create per moved
        shard, each retried with at most 5 s of backoff: 20 s leaves room for a loaded host.
        """
        expected = {shard: rendezvous_owner(shard, workers) for shard in SHARDS}
        with self.changed:
            settled = self.changed.wait_for(lambda: self.owners == expected, timeout)
            assert settled, f"shards not spread over {sorted(workers)}: {self.owners}"
            return {w: sorted(s for s, o in self.owners.items() if o == w) for w in sorted(workers)}


class Worker:
    """A worker thread: a partitioner plus a loop of guarded writes on its shards."""

    def __init__(self, etcd: Namespace, name: str, board: Board) -> None:
        self.name = name
        # The member id names the worker: shares are rendezvous-hashed over member ids.
        self.part = etcd.partitioner("shards", SHARDS, ttl=5, member_id=name, value=name)
        self.part.add_callback(board.callback(name))
        self.etcd = etcd
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name=name)
        self.thread.start()

    def run(self) -> None:
        self.part.start(timeout=10)
        while not self.stopping.is_set():
            for shard in sorted(self.part.owned()):
                key = f"progress/{shard}"
                done = int(self.etcd.get(key).value or b"0")
                try:
                    # Applied only while this worker still owns the shard (its fencing token).
                    self.part.guarded_txn(shard, [Op.put(key, str(done + 1))])
                except errors.NotOwnerError:
                    pass  # handed over meanwhile: the next owner carries on
            self.stopping.wait(0.05)
        self.part.stop()  # RELEASED for each shard, then its keys (and membership) go

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)


# The first three start, the second stops, the fourth joins.  Any names work; the
# example tests also run names that give a worker an empty share.
NAMES = ("worker-0", "worker-1", "worker-2", "worker-3")


def show(shares: dict[str, list[str]]) -> None:
    for name, shards in shares.items():
        print(f"  {name} owns {len(shards)} shards: {', '.join(shards) or '-'}")


def run(endpoint: str, names: tuple[str, str, str, str] = NAMES) -> None:
    first, leaving, third, joining = names
    run_prefix = f"examples/partitioned_workers/{uuid.uuid4().hex[:8]}/"
    with Client(endpoint) as client:
        etcd = client.namespace(run_prefix)  # every key of this run under its prefix
        try:
            board = Board()
            workers = [Worker(etcd, name, board) for name in (first, leaving, third)]
            try:
                print(f"{first}, {leaving} and {third} start")
                show(board.wait_for({first, leaving, third}))
                print(f"{leaving} stops: its shards are handed over")
                workers[1].stop()
                show(board.wait_for({first, third}))
                print(f"{joining} joins: it takes its share")
                workers.append(Worker(etcd, joining, board))
                show(board.wait_for({first, third, joining}))
            finally:
                for worker in workers:
                    worker.stop()
            progress = etcd.get("progress/", prefix=True)
            total = sum(int(kv.value) for kv in progress.kvs)
            print(f"{total} guarded writes over {len(progress.kvs)} shards; none owned twice")
            print(
                "left under the partitioner:",
                etcd.get("shards/", prefix=True, count_only=True).count,
            )
        finally:
            # Only this run's keys, even when a wait above failed.
            client.delete(run_prefix, prefix=True)


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        run(endpoint)
