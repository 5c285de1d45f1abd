"""Namespaces: one etcd shared by tenants that never see each other's keys.

    python examples/namespaces.py                    # starts an embedded etcd
    python examples/namespaces.py 127.0.0.1:2379     # or uses yours

Each tenant gets ``etcd.namespace("<run>/tenant-a/")``: the same KV, watch, lease and
recipe API, with every key under its prefix.  Both tenants use the same key and lock
names; nothing collides, and ``etcdctl lock <run>/tenant-a/jobs`` would contend with
tenant A's lock (Go's key layout, inside the prefix).  The same steps in asyncio:
``namespaces_async.py``.  Everything the example writes lives under a fresh run prefix
and is deleted at the end.
"""

from __future__ import annotations

import sys
import uuid

from etcdsync import Client
from etcdsync.testing import endpoint_or_embedded


def run(endpoint: str) -> None:
    run_prefix = f"examples/namespaces/{uuid.uuid4().hex[:8]}/"
    with Client(endpoint) as etcd:
        root = etcd.namespace(run_prefix)  # this run's keys only
        tenant_a, tenant_b = root.namespace("tenant-a/"), root.namespace("tenant-b/")
        try:
            tenant_a.put("settings/color", "blue")
            tenant_b.put("settings/color", "green")
            for name, tenant in (("a", tenant_a), ("b", tenant_b)):
                listing = tenant.get("", prefix=True)
                print(f"tenant {name} sees", {kv.key_str: kv.value_str for kv in listing})

            # The same lock name in both tenants: two different locks, held at once.
            with tenant_a.lock("jobs", ttl=10, timeout=5) as lock_a:
                with tenant_b.lock("jobs", ttl=10, timeout=5) as lock_b:
                    print("tenant a holds", lock_a.key, "- tenant b holds", lock_b.key)
                    print("on the server:", etcd.get(run_prefix + "tenant-a/" + lock_a.key).kv)

            # A watch in a namespace reports namespace-relative keys.
            with tenant_a.watch("settings/", prefix=True) as watcher:
                tenant_b.put("settings/color", "red")  # not tenant a's business
                tenant_a.put("settings/color", "navy")
                batch = watcher.get(timeout=5)
                print("tenant a was told:", [(e.key, e.value) for e in batch.events])
        finally:
            deleted = root.delete("", prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        run(endpoint)
