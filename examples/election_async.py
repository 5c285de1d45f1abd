"""Leader election, asyncio flavour: three workers, one leader, a fenced write, a crash
and a handover.

    python examples/election_async.py                    # starts an embedded etcd
    python examples/election_async.py 127.0.0.1:2379     # or uses yours

The same steps as ``election.py`` with ``AsyncClient``: three worker tasks campaign
for "demo/scheduler" (each with a session of its own, TTL 2 s).  The leader writes its
results with ``guarded_txn``, so a leader that lost its lease cannot overwrite its
successor's work.  The first leader then "crashes" (stops renewing its lease without
resigning): within the TTL the next worker is elected.  An observer prints every
leadership change, in order.  Everything lives in a fresh namespace.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from etcdsync import AsyncClient, AsyncNamespace, Op
from etcdsync.testing import endpoint_or_embedded

ELECTION = "demo/scheduler"


async def worker(
    etcd: AsyncNamespace, name: str, crash: asyncio.Event, done: asyncio.Event
) -> None:
    session = await etcd.session(ttl=2)
    election = etcd.election(ELECTION, session=session)
    await election.campaign(name, timeout=30)  # waits until this worker leads
    print(f"{name}: elected (fencing token {election.leader_revision})")
    await election.guarded_txn([Op.put("demo/scheduler-state", f"run by {name}")])
    if name == "worker-0":
        await asyncio.wait_for(crash.wait(), 10)
        print(f"{name}: crashing without resigning")
        session.orphan()  # renewals stop; the lease expires after its TTL
        return
    try:
        await election.proclaim(f"{name} (busy)")
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await election.resign()
        await session.close()


async def run(endpoint: str) -> None:
    async with AsyncClient(endpoint) as client:
        # A fresh namespace: every key below lives under it, and nothing else is touched.
        etcd = client.namespace(f"examples/election-async/{uuid.uuid4().hex[:8]}/")
        crash, done = asyncio.Event(), asyncio.Event()
        workers = []
        async with etcd.election(ELECTION).observe() as observer:
            async with await etcd.watch(ELECTION + "/", prefix=True) as candidates:
                for i in range(3):
                    workers.append(asyncio.create_task(worker(etcd, f"worker-{i}", crash, done)))
                    await candidates.get(timeout=10)  # its candidate key: the queue order is set
            changes = []
            for step in range(4):  # worker-0, worker-1, worker-1 (busy), worker-2
                leader = await observer.get(timeout=15)
                changes.append(leader.value.decode())
                print(f"observer: leader is now {leader.value.decode()!r}")
                if step == 0:
                    crash.set()
                if step == 2:
                    done.set()
            await asyncio.gather(*workers)
        print("state ->", (await etcd.get("demo/scheduler-state")).value)
        assert changes == ["worker-0", "worker-1", "worker-1 (busy)", "worker-2"], changes
        await etcd.delete("demo/", prefix=True)


def main() -> int:
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(run(endpoint))
    return 0


if __name__ == "__main__":
    sys.exit(main())
