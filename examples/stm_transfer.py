"""STM: bank transfers between accounts, atomic and exactly once, from many threads.

    python examples/stm_transfer.py                    # starts an embedded etcd
    python examples/stm_transfer.py 127.0.0.1:2379     # or uses yours

Each transfer is a plain Python function over ``stm.get`` / ``stm.put``; ``etcd.stm``
commits its writes in one txn guarded by what it read and runs it again if another
transfer got in first.  The function also reads and writes a ledger entry, so a
transfer whose commit outcome is unknown (a leader died mid-request) can simply be
run again: the rerun finds its entry and writes nothing.  Four threads make 25
transfers each; the total is conserved.  A counter and a run-once lease show the
two smaller recipes of the same family.  Everything lives under a fresh namespace
that is deleted at the end.
"""

from __future__ import annotations

import random
import sys
import threading
import uuid

from etcdsync import STM, Client, errors
from etcdsync.testing import endpoint_or_embedded

ACCOUNTS = ["alice", "bob", "carol", "dave"]


def transfer(etcd: Client, source: str, target: str, amount: int, transfer_id: str) -> str:
    def move(stm: STM) -> str:
        if stm.get(f"ledger/{transfer_id}") is not None:
            return "already done"  # an earlier run committed (its answer was lost)
        have, other = (int(v or b"0") for v in stm.get_many([f"acct/{source}", f"acct/{target}"]))
        if have < amount:
            return "refused: insufficient funds"
        stm.put(f"acct/{source}", str(have - amount))
        stm.put(f"acct/{target}", str(other + amount))
        stm.put(f"ledger/{transfer_id}", f"{source} -> {target}: {amount}")
        return "committed"

    while True:
        try:
            return etcd.stm(move, timeout=10)  # serializable snapshot isolation
        except (errors.Timeout, errors.Unavailable):
            continue  # outcome unknown: safe to run again, thanks to the ledger entry


def worker(etcd: Client, index: int, outcomes: list[str]) -> None:
    rng = random.Random(index)
    for n in range(25):
        source, target = rng.sample(ACCOUNTS, 2)
        outcomes.append(transfer(etcd, source, target, rng.randint(1, 40), f"w{index}-{n}"))


def run(endpoint: str) -> None:
    run_prefix = f"examples/stm/{uuid.uuid4().hex[:8]}/"
    with Client(endpoint) as root:
        etcd = root.namespace(run_prefix)
        try:
            for account in ACCOUNTS:
                etcd.put(f"acct/{account}", "100")
            outcomes: list[str] = []
            threads = [threading.Thread(target=worker, args=(etcd, i, outcomes)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            balances = {kv.key_str: int(kv.value) for kv in etcd.get("acct/", prefix=True).kvs}
            print("balances:", balances, "total:", sum(balances.values()))
            assert sum(balances.values()) == 100 * len(ACCOUNTS)
            print("outcomes:", {o: outcomes.count(o) for o in sorted(set(outcomes))})
            print("ledger entries:", etcd.get("ledger/", prefix=True, count_only=True).count)

            # A counter: atomic add by compare-and-swap, optionally bounded.
            seats = etcd.counter("seats-taken", max=3)
            for _ in range(4):
                try:
                    print("seat taken, now", seats.add())
                except errors.CounterBoundsError as exc:
                    print("no seat left:", exc.value, "taken of", exc.bound)

            # A run-once lease: the first caller in the period wins, the others are told no.
            first = etcd.lease_once("nightly-report", 60, value="host-a")
            second = etcd.lease_once("nightly-report", 60, value="host-b")
            print("host-a runs the report:", bool(first), "- host-b:", bool(second))
            first.release()
        finally:
            deleted = etcd.delete("", prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        run(endpoint)
