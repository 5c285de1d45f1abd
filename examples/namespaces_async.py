"""Namespaces: one etcd shared by tenants that never see each other's keys (asyncio).

    python examples/namespaces_async.py                    # starts an embedded etcd
    python examples/namespaces_async.py 127.0.0.1:2379     # or uses yours

Each tenant gets ``etcd.namespace("<run>/tenant-a/")``: the same KV, watch, lease and
recipe API, with every key under its prefix.  Both tenants use the same key and lock
names; nothing collides, and ``etcdctl lock <run>/tenant-a/jobs`` would contend with
tenant A's lock (Go's key layout, inside the prefix).  The same steps with ``Client``:
``namespaces.py``.  Everything the example writes lives under a fresh run prefix and
is deleted at the end.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from etcdsync import AsyncClient
from etcdsync.testing import endpoint_or_embedded


async def run(endpoint: str) -> None:
    run_prefix = f"examples/namespaces/{uuid.uuid4().hex[:8]}/"
    async with AsyncClient(endpoint) as etcd:
        root = etcd.namespace(run_prefix)  # this run's keys only
        tenant_a, tenant_b = root.namespace("tenant-a/"), root.namespace("tenant-b/")
        try:
            await tenant_a.put("settings/color", "blue")
            await tenant_b.put("settings/color", "green")
            for name, tenant in (("a", tenant_a), ("b", tenant_b)):
                listing = await tenant.get("", prefix=True)
                print(f"tenant {name} sees", {kv.key_str: kv.value_str for kv in listing})

            # The same lock name in both tenants: two different locks, held at once.
            async with tenant_a.lock("jobs", ttl=10, timeout=5) as lock_a:
                async with tenant_b.lock("jobs", ttl=10, timeout=5) as lock_b:
                    print("tenant a holds", lock_a.key, "- tenant b holds", lock_b.key)
                    print(
                        "on the server:", (await etcd.get(run_prefix + "tenant-a/" + lock_a.key)).kv
                    )

            # A watch in a namespace reports namespace-relative keys.
            async with await tenant_a.watch("settings/", prefix=True) as watcher:
                await tenant_b.put("settings/color", "red")  # not tenant a's business
                await tenant_a.put("settings/color", "navy")
                batch = await watcher.get(timeout=5)
                print("tenant a was told:", [(e.key, e.value) for e in batch.events])
        finally:
            deleted = await root.delete("", prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(run(endpoint))
