"""STM, asyncio flavour: bank transfers between accounts, atomic and exactly once.

    python examples/stm_transfer_async.py                    # starts an embedded etcd
    python examples/stm_transfer_async.py 127.0.0.1:2379     # or uses yours

The same steps as ``stm_transfer.py`` with ``AsyncClient``.  Each transfer is an
``async def`` over ``await stm.get`` / ``stm.put`` (reads are awaited; writes only
buffer, so they are plain calls); ``await etcd.stm(fn)`` commits its writes in one txn
guarded by what it read and runs it again if another transfer got in first.  The
function also reads and writes a ledger entry, so a transfer whose commit outcome is
unknown (a leader died mid-request) can simply be run again: the rerun finds its entry
and writes nothing.  Four tasks make 25 transfers each; the total is conserved.  A
counter and a run-once lease show the two smaller recipes of the same family.
Everything lives under a fresh namespace that is deleted at the end.
"""

from __future__ import annotations

import asyncio
import random
import sys
import uuid

from etcdsync import AsyncClient, AsyncNamespace, AsyncSTM, errors
from etcdsync.testing import endpoint_or_embedded

ACCOUNTS = ["alice", "bob", "carol", "dave"]


async def transfer(
    etcd: AsyncNamespace, source: str, target: str, amount: int, transfer_id: str
) -> str:
    async def move(stm: AsyncSTM) -> str:
        if await stm.get(f"ledger/{transfer_id}") is not None:
            return "already done"  # an earlier run committed (its answer was lost)
        values = await stm.get_many([f"acct/{source}", f"acct/{target}"])
        have, other = (int(v or b"0") for v in values)
        if have < amount:
            return "refused: insufficient funds"
        stm.put(f"acct/{source}", str(have - amount))
        stm.put(f"acct/{target}", str(other + amount))
        stm.put(f"ledger/{transfer_id}", f"{source} -> {target}: {amount}")
        return "committed"

    while True:
        try:
            return await etcd.stm(move, timeout=10)  # serializable snapshot isolation
        except (errors.Timeout, errors.Unavailable):
            continue  # outcome unknown: safe to run again, thanks to the ledger entry


async def worker(etcd: AsyncNamespace, index: int, outcomes: list[str]) -> None:
    rng = random.Random(index)
    for n in range(25):
        source, target = rng.sample(ACCOUNTS, 2)
        outcomes.append(await transfer(etcd, source, target, rng.randint(1, 40), f"w{index}-{n}"))


async def run(endpoint: str) -> None:
    run_prefix = f"examples/stm-async/{uuid.uuid4().hex[:8]}/"
    async with AsyncClient(endpoint) as root:
        etcd = root.namespace(run_prefix)
        try:
            for account in ACCOUNTS:
                await etcd.put(f"acct/{account}", "100")
            outcomes: list[str] = []
            await asyncio.gather(*(worker(etcd, i, outcomes) for i in range(4)))
            accounts = await etcd.get("acct/", prefix=True)
            balances = {kv.key_str: int(kv.value) for kv in accounts.kvs}
            print("balances:", balances, "total:", sum(balances.values()))
            assert sum(balances.values()) == 100 * len(ACCOUNTS)
            print("outcomes:", {o: outcomes.count(o) for o in sorted(set(outcomes))})
            ledger = await etcd.get("ledger/", prefix=True, count_only=True)
            print("ledger entries:", ledger.count)
            # One entry per transfer that moved money (a rerun finds its entry: "already done").
            assert ledger.count == outcomes.count("committed") + outcomes.count("already done")

            # A counter: atomic add by compare-and-swap, optionally bounded.
            seats = etcd.counter("seats-taken", max=3)
            for _ in range(4):
                try:
                    print("seat taken, now", await seats.add())
                except errors.CounterBoundsError as exc:
                    print("no seat left:", exc.value, "taken of", exc.bound)

            # A run-once lease: the first caller in the period wins, the others are told no.
            first = await etcd.lease_once("nightly-report", 60, value="host-a")
            second = await etcd.lease_once("nightly-report", 60, value="host-b")
            print("host-a runs the report:", bool(first), "- host-b:", bool(second))
            assert first and not second
            await first.release()
        finally:
            deleted = await etcd.delete("", prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(run(endpoint))
