"""Partitioned workers: 12 shards shared by worker threads that come and go.

    python examples/partitioned_workers.py                    # starts an embedded etcd
    python examples/partitioned_workers.py 127.0.0.1:2379     # or uses yours

Each worker runs ``etcd.partitioner("shards", SHARDS)``: it joins the group of workers
and owns the shards that rendezvous hashing gives it among the live workers, each
through a lease-bound owner key that no other worker can create while it exists.
The workers process their shards with guarded writes (``guarded_txn(shard, ...)``),
which etcd applies only while the writer still owns the shard.  A worker that stops
hands its shards over (``RELEASED`` first, then its keys go); a new worker takes its
share from the others.  Everything lives in a fresh namespace, deleted at the end.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable

from etcdsync import Client, Namespace, Op, OwnershipChange, OwnershipChangeType, errors
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
        """Wait until every shard is owned and only ``workers`` own shards."""
        with self.changed:
            settled = self.changed.wait_for(
                lambda: set(self.owners) == set(SHARDS) and set(self.owners.values()) == workers,
                timeout,
            )
            assert settled, f"shards not spread over {sorted(workers)}: {self.owners}"
            return {w: sorted(s for s, o in self.owners.items() if o == w) for w in sorted(workers)}


class Worker:
    """A worker thread: a partitioner plus a loop of guarded writes on its shards."""

    def __init__(self, etcd: Namespace, name: str, board: Board) -> None:
        self.name = name
        self.part = etcd.partitioner("shards", SHARDS, ttl=5, value=name)
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


def run(endpoint: str) -> None:
    run_prefix = f"examples/partitioned_workers/{uuid.uuid4().hex[:8]}/"
    with Client(endpoint) as client:
        etcd = client.namespace(run_prefix)  # every key of this run under its prefix
        board = Board()
        workers = [Worker(etcd, f"worker-{i}", board) for i in range(3)]
        try:
            for name, shards in board.wait_for({w.name for w in workers}).items():
                print(f"{name} owns {', '.join(shards)}")
            print("worker-1 stops: its shards are handed over")
            workers[1].stop()
            for name, shards in board.wait_for({"worker-0", "worker-2"}).items():
                print(f"  {name} owns {len(shards)} shards")
            print("worker-3 joins: it takes its share")
            workers.append(Worker(etcd, "worker-3", board))
            for name, shards in board.wait_for({"worker-0", "worker-2", "worker-3"}).items():
                print(f"  {name} owns {len(shards)} shards")
        finally:
            for worker in workers:
                worker.stop()
        progress = etcd.get("progress/", prefix=True)
        total = sum(int(kv.value) for kv in progress.kvs)
        print(f"{total} guarded writes over {len(progress.kvs)} shards; none owned twice")
        print(
            "left under the partitioner:", etcd.get("shards/", prefix=True, count_only=True).count
        )
        client.delete(run_prefix, prefix=True)


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        run(endpoint)
