"""A cron job that runs on exactly one of N hosts, per scheduled time (asyncio).

    python examples/cron_once_async.py                    # starts an embedded etcd
    python examples/cron_once_async.py 127.0.0.1:2379     # or uses yours

The same steps as ``cron_once.py`` with ``AsyncClient``.  Every host runs the same
crontab entry at 03:00.  The job is an ``async def`` decorated with ``@etcd.locked``
and ``timeout=0``: the host that takes the lock runs it, the others get ``LockTimeout``
at once and skip.  A lock alone is "one at a time", not "once": a slow host that takes
the lock after the winner released it would run the job again.  So the job also records
the scheduled time it ran for, written with the lock's fencing compare (``await
lock.guarded_txn(...)``), and skips a time that is already done.  ``current_lock()``
finds the lock from the job's task (a context variable), at any depth of awaits.

Three hosts are simulated here by three tasks, each with its own client (its own
session, as separate machines would have).  The shell form of the same idea, for a
crontab line, is::

    etcdsync lock --timeout 0 jobs/nightly -- ./nightly-report.sh

Everything the example writes lives under a fresh run prefix and is deleted at the end.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from etcdsync import AsyncClient, Compare, Op, current_lock, errors
from etcdsync.testing import endpoint_or_embedded

SCHEDULED = "2026-12-01T03:00"  # the slot every host computes alike from its crontab


async def host(
    endpoint: str, run_prefix: str, name: str, ready: asyncio.Event, strike: asyncio.Event
) -> str:
    async with AsyncClient(endpoint) as etcd:
        space = etcd.namespace(run_prefix)

        # The lock's keys live under jobs/nightly/; the job's own state elsewhere.
        @space.locked("jobs/nightly", ttl=30, timeout=0)
        async def nightly() -> str:
            lock = current_lock()
            assert lock is not None
            last = (await space.get("state/nightly/last-run")).kv
            if last is not None and last.value == SCHEDULED.encode():
                return "skipped: already done for this slot"
            report = f"report for {SCHEDULED}, made by {name}"
            # Written only while this host still holds the lock (the fencing compare)
            # and nobody recorded a run since our read.
            done = await lock.guarded_txn(
                [
                    Op.put("state/nightly/last-run", SCHEDULED),
                    Op.put("state/nightly/report", report),
                ],
                compare=[
                    Compare.mod_revision("state/nightly/last-run")
                    == (last.mod_revision if last is not None else 0)
                ],
            )
            if not done.succeeded:
                return "skipped: another host recorded this slot first"
            return f"ran (fencing token {lock.fencing_token})"

        ready.set()
        await strike.wait()  # the hosts' clocks strike 03:00 together
        try:
            return await nightly()
        except errors.LockTimeout:
            return "skipped: another host holds the lock"


async def main(endpoint: str) -> None:
    run_prefix = f"examples/cron-once-async/{uuid.uuid4().hex[:8]}/"
    names = ["host-a", "host-b", "host-c"]
    ran = 0
    try:
        # Together: all three connect, then 03:00 strikes for all at once.
        strike = asyncio.Event()
        ready = {name: asyncio.Event() for name in names}
        tasks = {
            name: asyncio.create_task(host(endpoint, run_prefix, name, ready[name], strike))
            for name in names
        }
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready.values())), 30)
        strike.set()
        together = {name: await asyncio.wait_for(task, 30) for name, task in tasks.items()}
        # One by one, later: each host runs after the previous one finished.
        later = {}
        for name in names:
            struck = asyncio.Event()
            struck.set()
            later[name] = await asyncio.wait_for(
                host(endpoint, run_prefix, name, asyncio.Event(), struck), 30
            )
        for round_name, outcomes in (("together", together), ("one by one, later", later)):
            print(f"{round_name}:")
            for name in names:
                print(f"  {name}: {outcomes[name]}")
            ran += sum(outcome.startswith("ran") for outcome in outcomes.values())
        assert ran == 1, f"the job ran {ran} times"
        async with AsyncClient(endpoint) as etcd:
            report = (await etcd.get(run_prefix + "state/nightly/report")).value
            print("the report:", report.decode() if report else None)
            assert report is not None
    finally:
        async with AsyncClient(endpoint) as etcd:
            deleted = await etcd.delete(run_prefix, prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(main(endpoint))
