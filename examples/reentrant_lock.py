"""Re-entrant locks: code that holds a lock calls code that takes it again.

    python examples/reentrant_lock.py                    # starts an embedded etcd
    python examples/reentrant_lock.py 127.0.0.1:2379     # or uses yours

Three threads deposit into an account.  ``deposit()`` takes the account's lock and
calls ``record()``, which takes the same lock again to write the ledger - with
``etcd.reentrant_lock`` the nested acquire is counted, not a deadlock.  Then a
readers-writer lock: a thread rebuilds a catalog under the write lock, takes the
read lock inside it and releases the write lock - a downgrade: it goes on reading
and no writer gets in between.  Everything lives in a fresh namespace, deleted at
the end.
"""

from __future__ import annotations

import sys
import threading
import uuid

from etcdsync import Client, Op, ReentrantLock
from etcdsync.testing import endpoint_or_embedded

DEPOSITS = 10


def record(etcd: Client, account: ReentrantLock, line: str) -> None:
    with account:  # nested when called from deposit(): no request, no deadlock
        entries = etcd.get("ledger/", prefix=True, count_only=True).count
        account.guarded_txn([Op.put(f"ledger/{entries:04}", line)])


def deposit(etcd: Client, account: ReentrantLock, who: str) -> None:
    for _ in range(DEPOSITS):
        with account:
            balance = int(etcd.get("balance").value or b"0")
            account.guarded_txn([Op.put("balance", str(balance + 1))])
            assert account.hold_count == 1
            record(etcd, account, f"{who} +1 -> {balance + 1} (token {account.fencing_token})")


def main(endpoint: str) -> None:
    run_prefix = f"examples/reentrant_lock/{uuid.uuid4().hex[:8]}/"
    with Client(endpoint) as root:
        etcd = root.namespace(run_prefix)
        try:
            account = etcd.reentrant_lock("locks/account", ttl=10, timeout=30)
            workers = [
                threading.Thread(target=deposit, args=(etcd, account, f"worker-{n}"))
                for n in range(3)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            balance = int(etcd.get("balance").value or b"0")
            entries = etcd.get("ledger/", prefix=True).kvs
            print(*(kv.value.decode() for kv in entries[:3]), "...", sep="\n")
            assert balance == 3 * DEPOSITS == len(entries), (balance, len(entries))
            print(f"balance {balance}, {len(entries)} ledger lines: every nested write landed")

            catalog = etcd.reentrant_rwlock("locks/catalog", ttl=10, timeout=30)
            catalog.acquire_write()
            etcd.put("catalog", "v2")
            catalog.acquire_read()  # the writer reads too (counted under its write key)
            catalog.release_write()  # downgrade: still reading, no writer in between
            other_writer = etcd.rwlock("locks/catalog", ttl=10).write()
            assert not other_writer.try_acquire(), "a writer got in during the downgrade"
            print("downgraded: reading", etcd.get("catalog").value, "- writers still wait")
            catalog.release_read()
            assert other_writer.try_acquire(), "the lock should be free now"
            other_writer.release()
            print("released: a writer takes it at once")
        finally:
            deleted = etcd.delete("", prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        main(endpoint)
