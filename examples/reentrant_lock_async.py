"""Re-entrant locks in asyncio: a task that holds a lock awaits code that takes it again.

    python examples/reentrant_lock_async.py                    # starts an embedded etcd
    python examples/reentrant_lock_async.py 127.0.0.1:2379     # or uses yours

The asyncio twin of ``reentrant_lock.py``.  The owner of a re-entrant lock is the
running task: ``deposit()`` takes the account's lock and awaits ``record()``, which
takes it again (counted, no request); three tasks deposit concurrently and exclude
each other.  Then a readers-writer lock's downgrade: write, read, release the write -
still reading, no writer in between.  Everything lives in a fresh namespace, deleted
at the end.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from etcdsync import AsyncClient, AsyncReentrantLock, Op
from etcdsync.testing import endpoint_or_embedded

DEPOSITS = 10


async def record(etcd: AsyncClient, account: AsyncReentrantLock, line: str) -> None:
    async with account:  # nested when awaited from deposit(): the same task, counted
        entries = (await etcd.get("ledger/", prefix=True, count_only=True)).count
        await account.guarded_txn([Op.put(f"ledger/{entries:04}", line)])


async def deposit(etcd: AsyncClient, account: AsyncReentrantLock, who: str) -> None:
    for _ in range(DEPOSITS):
        async with account:
            balance = int((await etcd.get("balance")).value or b"0")
            await account.guarded_txn([Op.put("balance", str(balance + 1))])
            assert account.hold_count == 1
            line = f"{who} +1 -> {balance + 1} (token {account.fencing_token})"
            await record(etcd, account, line)


async def main(endpoint: str) -> None:
    run_prefix = f"examples/reentrant_lock_async/{uuid.uuid4().hex[:8]}/"
    async with AsyncClient(endpoint) as root:
        etcd = root.namespace(run_prefix)
        try:
            account = etcd.reentrant_lock("locks/account", ttl=10, timeout=30)
            await asyncio.gather(*(deposit(etcd, account, f"task-{n}") for n in range(3)))
            balance = int((await etcd.get("balance")).value or b"0")
            entries = (await etcd.get("ledger/", prefix=True)).kvs
            print(*(kv.value.decode() for kv in entries[:3]), "...", sep="\n")
            assert balance == 3 * DEPOSITS == len(entries), (balance, len(entries))
            print(f"balance {balance}, {len(entries)} ledger lines: every nested write landed")

            catalog = etcd.reentrant_rwlock("locks/catalog", ttl=10, timeout=30)
            await catalog.acquire_write()
            await etcd.put("catalog", "v2")
            await catalog.acquire_read()  # the writer reads too (under its write key)
            await catalog.release_write()  # downgrade: still reading
            other_writer = etcd.rwlock("locks/catalog", ttl=10).write()
            assert not await other_writer.try_acquire(), "a writer got in during the downgrade"
            print("downgraded: reading", (await etcd.get("catalog")).value, "- writers wait")
            await catalog.release_read()
            assert await other_writer.try_acquire(), "the lock should be free now"
            await other_writer.release()
            print("released: a writer takes it at once")
        finally:
            deleted = await etcd.delete("", prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(main(endpoint))
