"""A multi-lock: move money between accounts, each transfer holding both accounts.

    python examples/multi_lock.py                    # starts an embedded etcd
    python examples/multi_lock.py 127.0.0.1:2379     # or uses yours

Four threads make random transfers between five accounts.  A transfer from A to B
takes ``etcd.multi_lock([A, B])`` - the two mutexes, all or nothing - and writes
both balances in one txn guarded by both fencing tokens.  Half the transfers name
their accounts in the opposite order; the multi-lock takes its mutexes in one global
order anyway, so two transfers A->B and B->A never deadlock.  At the end the money
is all there.  Everything lives in a fresh namespace, deleted at the end.
"""

from __future__ import annotations

import random
import sys
import threading
import uuid

from etcdsync import Client, Op
from etcdsync.testing import endpoint_or_embedded

ACCOUNTS = [f"account-{i}" for i in range(5)]
START = 100
TRANSFERS = 15


def transfers(etcd: Client, seed: int, log: list[str]) -> None:
    rng = random.Random(seed)
    for _ in range(TRANSFERS):
        source, target = rng.sample(ACCOUNTS, 2)  # any order: no deadlock
        with etcd.multi_lock([f"locks/{source}", f"locks/{target}"], ttl=10, timeout=30) as both:
            balances = {a: int(etcd.get(f"balances/{a}").value) for a in (source, target)}
            amount = rng.randint(1, 20)
            both.guarded_txn(
                [
                    Op.put(f"balances/{source}", str(balances[source] - amount)),
                    Op.put(f"balances/{target}", str(balances[target] + amount)),
                ]
            )
            log.append(f"{amount:3} {source} -> {target} (tokens {sorted(both.tokens.values())})")


def main(endpoint: str) -> None:
    run_prefix = f"examples/multi_lock/{uuid.uuid4().hex[:8]}/"
    with Client(endpoint) as root:
        etcd = root.namespace(run_prefix)
        try:
            for account in ACCOUNTS:
                etcd.put(f"balances/{account}", str(START))
            log: list[str] = []
            workers = [
                threading.Thread(target=transfers, args=(etcd, seed, log)) for seed in range(4)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            print(*log[:5], "...", sep="\n")
            balances = {a: int(etcd.get(f"balances/{a}").value) for a in ACCOUNTS}
            print(f"{len(log)} transfers; balances:", balances)
            assert sum(balances.values()) == START * len(ACCOUNTS), "money was lost"
            print("total:", sum(balances.values()), "- nothing lost, no deadlock")
        finally:
            deleted = etcd.delete("", prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        main(endpoint)
