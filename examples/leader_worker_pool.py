"""A worker pool whose leader schedules, and stops the moment it loses (threads).

    python examples/leader_worker_pool.py                    # starts an embedded etcd
    python examples/leader_worker_pool.py 127.0.0.1:2379     # or uses yours

The same pool as ``leader_worker_pool_async.py``, with threads and ``Client``.  Three
pool members (each with its own client, as separate hosts would have) run
``election.run(schedule, name, forever=True)`` in a thread each: whoever leads runs
``schedule(term)``, which puts tasks under ``tasks/``, each write guarded by the term's
fencing compare; every member takes tasks (the first to delete one gets it).  Midway an
operator revokes the leader's lease - as an expired lease would after a partition.

A thread cannot be interrupted from outside, so the work is **told**: it paces itself
with ``term.lost.wait(...)``, which returns the moment the client learns of the loss,
and its guarded writes fail from then on (``LeadershipLostError``, nothing written).
Another member takes over, and the ex-leader campaigns again and queues behind.  At the
end the pool is asked to stop: the leader's ``schedule`` returns, ``run()`` resigns and
returns, the next member is elected, sees the request, returns and resigns in turn.
Everything the example writes lives under a fresh run prefix and is deleted at the end.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections import Counter

from etcdsync import Client, Compare, Op, Term
from etcdsync.testing import endpoint_or_embedded
from etcdsync.watch_types import EventType

started = time.monotonic()


def log(text: str) -> None:
    print(f"{time.monotonic() - started:6.2f}s  {text}", flush=True)


def member(
    endpoint: str, run_prefix: str, name: str, taken: Counter[str], stopping: threading.Event
) -> None:
    with Client(endpoint) as etcd:
        space = etcd.namespace(run_prefix)  # this run's keys only
        election = space.election("pool/leader", ttl=5)

        def schedule(term: Term) -> None:
            log(f"{name} leads (term {term.revision}) and schedules")
            count = 0
            try:
                while not stopping.is_set():
                    count += 1
                    task = f"tasks/{term.revision}-{count:03d}"
                    term.guarded_txn([Op.put(task, f"scheduled by {name}")])
                    if term.lost.wait(0.05):  # the pause, cut short by a loss
                        break
            finally:
                why = "its term was lost" if term.lost.is_set() else "the pool stops"
                log(f"{name} stopped scheduling after {count} task(s): {why}")

        with space.watch("tasks/", prefix=True) as watcher:

            def take_tasks() -> None:
                for batch in watcher:  # ends when the watch is cancelled
                    for event in batch.events:
                        if event.type is EventType.PUT:
                            got = space.txn(
                                [Compare.version(event.key) > 0], [Op.delete(event.key)]
                            )
                            if got.succeeded:
                                taken[name] += 1

            worker = threading.Thread(target=take_tasks, name=f"{name}-worker")
            worker.start()
            try:
                # Campaigns (again after a loss, even when a guarded write raised it),
                # runs schedule while leading, resigns when it returns; ends when schedule
                # returns without a loss: once the pool stops.
                election.run(schedule, name, forever=True)
            finally:
                watcher.cancel()
                worker.join(10)


def main(endpoint: str) -> None:
    run_prefix = f"examples/leader-pool/{uuid.uuid4().hex[:8]}/"
    taken: Counter[str] = Counter()
    stopping = threading.Event()
    with Client(endpoint) as admin:
        space = admin.namespace(run_prefix)
        election = space.election("pool/leader")
        members = [
            threading.Thread(
                target=member, args=(endpoint, run_prefix, f"member-{i}", taken, stopping)
            )
            for i in range(3)
        ]
        for thread in members:
            thread.start()
        try:
            with election.observe() as observer:
                first = observer.get(timeout=20)
                log(f"leader: {first.value.decode()}")
                stopping.wait(0.5)  # let it schedule a few tasks
                log(f"operator revokes {first.value.decode()}'s lease")
                admin.revoke(first.lease)
                second = observer.get(timeout=20)
                log(f"new leader: {second.value.decode()}")
                assert second.create_revision > first.create_revision
                stopping.wait(0.5)
        finally:
            stopping.set()  # each member returns once elected: the leader first, then the next
            for thread in members:
                thread.join(30)
            log(f"tasks taken per member: {dict(sorted(taken.items()))}")
            deleted = space.delete("", prefix=True)
            log(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")
        assert not any(thread.is_alive() for thread in members), "a member did not stop"
        assert sum(taken.values()) > 0


if __name__ == "__main__":
    logging.basicConfig(format="         (log) %(name)s: %(message)s")
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        main(endpoint)
