"""Quickstart, asyncio flavour: KV, a guarded txn and a live watch, against a real etcd.

    python examples/quickstart_async.py                    # starts an embedded etcd
    python examples/quickstart_async.py 127.0.0.1:2379     # or uses yours

The same steps as ``quickstart.py`` with ``AsyncClient``: every call is awaited, and
the watch is an async iterator.  Everything lives in a fresh namespace, deleted at
the end; nothing else on the cluster is touched.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from etcdsync import AsyncClient, Compare, Op
from etcdsync.testing import endpoint_or_embedded


async def run(endpoint: str) -> None:
    async with AsyncClient(endpoint) as client:
        # A fresh namespace: every key below lives under it, and nothing else is touched.
        etcd = client.namespace(f"examples/quickstart-async/{uuid.uuid4().hex[:8]}/")
        await etcd.put("demo/config/color", "blue")
        print("get   ->", (await etcd.get("demo/config/color")).value)

        async with await etcd.watch("demo/config/", prefix=True) as watcher:
            # Compare-and-swap: only one of many writers can win this.
            won = await etcd.txn(
                compare=[Compare.value("demo/config/color") == "blue"],
                success=[Op.put("demo/config/color", "green"), Op.put("demo/config/size", "XL")],
                failure=[Op.get("demo/config/color")],
            )
            print("txn   ->", "succeeded" if won.succeeded else "lost", "at revision", won.revision)

            batch = await watcher.get(timeout=5)  # both writes of the txn arrive as one batch
            for event in batch.events:
                print(
                    f"watch -> {event.type.name} {event.key.decode()}={event.value.decode()}"
                    f" @ {event.revision}"
                )

        everything = await etcd.get("demo/", prefix=True)
        print("range ->", {kv.key.decode(): kv.value.decode() for kv in everything})
        await etcd.delete("demo/", prefix=True)


def main() -> int:
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(run(endpoint))
    return 0


if __name__ == "__main__":
    sys.exit(main())
