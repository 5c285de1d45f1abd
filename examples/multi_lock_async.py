"""A multi-lock, asyncio flavour: move money between accounts, each transfer holding both.

    python examples/multi_lock_async.py                    # starts an embedded etcd
    python examples/multi_lock_async.py 127.0.0.1:2379     # or uses yours

The same steps as ``multi_lock.py`` with ``AsyncClient``.  Four tasks make random
transfers between five accounts.  A transfer from A to B takes
``etcd.multi_lock([A, B])`` - the two mutexes, all or nothing - and writes both
balances in one txn guarded by both fencing tokens.  Half the transfers name their
accounts in the opposite order; the multi-lock takes its mutexes in one global order
anyway, so two transfers A->B and B->A never deadlock.  At the end the money is all
there.

Then the asyncio way to give up waiting: an auditor on another host wants all five
accounts while a transfer holds the last one.  It takes the first four and queues for
the fifth, with no timeout; **cancelling** its task releases the four it holds and
withdraws from the fifth - all or nothing, cancellation included.  Everything lives in
a fresh namespace, deleted at the end.
"""

from __future__ import annotations

import asyncio
import random
import sys
import uuid

from etcdsync import AsyncClient, AsyncNamespace, Op
from etcdsync.testing import endpoint_or_embedded
from etcdsync.watch_types import EventType

ACCOUNTS = [f"account-{i}" for i in range(5)]
START = 100
TRANSFERS = 15


async def balance(etcd: AsyncNamespace, account: str) -> int:
    value = (await etcd.get(f"balances/{account}")).value
    assert value is not None, f"{account} has no balance"
    return int(value)


async def transfers(etcd: AsyncNamespace, seed: int, log: list[str]) -> None:
    rng = random.Random(seed)
    for _ in range(TRANSFERS):
        source, target = rng.sample(ACCOUNTS, 2)  # any order: no deadlock
        names = [f"locks/{source}", f"locks/{target}"]
        async with etcd.multi_lock(names, ttl=10, timeout=30) as both:
            balances = {a: await balance(etcd, a) for a in (source, target)}
            amount = rng.randint(1, 20)
            await both.guarded_txn(
                [
                    Op.put(f"balances/{source}", str(balances[source] - amount)),
                    Op.put(f"balances/{target}", str(balances[target] + amount)),
                ]
            )
            log.append(f"{amount:3} {source} -> {target} (tokens {sorted(both.tokens.values())})")


async def audit(auditor: AsyncNamespace) -> None:
    """Every account at once, waiting as long as it takes."""
    async with auditor.multi_lock([f"locks/{a}" for a in ACCOUNTS], ttl=10):
        print("auditor: never gets here while account-4 is held")


async def cancel_a_waiting_auditor(endpoint: str, run_prefix: str, etcd: AsyncNamespace) -> None:
    last = f"locks/{ACCOUNTS[-1]}"  # the last of the global order
    # The auditor is another host: a client (and session) of its own, kept open after the
    # cancel, so what cleans up its keys is the multi-lock, not the end of its session.
    async with AsyncClient(endpoint) as other, etcd.multi_lock([last], ttl=10, timeout=10):
        start = (await etcd.get(last)).revision + 1
        auditor = asyncio.create_task(audit(other.namespace(run_prefix)))
        # The auditor is waiting once its own key for the last lock exists: it then holds
        # the four before it (taken in order) and queues behind us for this one.
        async with await etcd.watch(last + "/", prefix=True, start_revision=start) as watch:
            while not any(e.type is EventType.PUT for e in (await watch.get(timeout=20)).events):
                pass
        held = (await etcd.get("locks/", prefix=True, count_only=True)).count
        print(f"auditor queued: {held - 1} lock key(s) of its own, waiting for {ACCOUNTS[-1]}")
        auditor.cancel()
        await asyncio.gather(auditor, return_exceptions=True)
        assert auditor.cancelled()
        # The cancelled acquire deletes its keys before it ends - or, if that takes more
        # than a second (a loaded host), goes on deleting them in the background.
        await asyncio.wait_for(keys_left(etcd, "locks/", 1), 10)
        print("auditor cancelled: its five lock keys are gone, ours is the only one left")


async def keys_left(etcd: AsyncNamespace, prefix: str, count: int) -> None:
    """Return once at most ``count`` keys are left under ``prefix``."""
    while True:
        now = await etcd.get(prefix, prefix=True, count_only=True)
        if now.count <= count:
            return
        watch = await etcd.watch(prefix, prefix=True, start_revision=now.revision + 1)
        async with watch:
            await watch.get()  # a change after that read: count again


async def main(endpoint: str) -> None:
    run_prefix = f"examples/multi-lock-async/{uuid.uuid4().hex[:8]}/"
    async with AsyncClient(endpoint) as root:
        etcd = root.namespace(run_prefix)
        try:
            for account in ACCOUNTS:
                await etcd.put(f"balances/{account}", str(START))
            log: list[str] = []
            await asyncio.gather(*(transfers(etcd, seed, log) for seed in range(4)))
            print(*log[:5], "...", sep="\n")
            balances = {a: await balance(etcd, a) for a in ACCOUNTS}
            print(f"{len(log)} transfers; balances:", balances)
            assert sum(balances.values()) == START * len(ACCOUNTS), "money was lost"
            print("total:", sum(balances.values()), "- nothing lost, no deadlock")
            await cancel_a_waiting_auditor(endpoint, run_prefix, etcd)
        finally:
            deleted = await etcd.delete("", prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(main(endpoint))
