"""Live config: a validated, hot-reloading view of a prefix.

    python examples/config_watcher.py                    # starts an embedded etcd
    python examples/config_watcher.py 127.0.0.1:2379     # or uses yours

A service keeps its settings under ``demo/services/api/`` (inside a fresh namespace of
its own, so nothing else on the cluster is touched) as JSON values.  The
watcher loads them at one revision, then follows every change: a txn that
changes three keys is applied as one update; a value that is not JSON, or a
state the validator refuses, is rejected and the last good config stays in
force until someone fixes it.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid

from etcdsync import Client, ConfigSnapshot, Op, errors
from etcdsync.testing import endpoint_or_embedded

PREFIX = "demo/services/api/"


def validate(config: ConfigSnapshot) -> None:
    """Refuse configs the service could not run with."""
    port = config.get("port")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an int in 1..65535, got {port!r}")


def run(endpoint: str) -> None:
    with Client(endpoint) as client:
        # A fresh namespace: every key below lives under it, and nothing else is touched.
        etcd = client.namespace(f"examples/config_watcher/{uuid.uuid4().hex[:8]}/")
        etcd.delete(PREFIX, prefix=True)
        etcd.put(PREFIX + "port", "8080")
        etcd.put(PREFIX + "workers", "4")

        with etcd.config(PREFIX, validate=validate) as config:
            print("start    ->", dict(config.snapshot), "@", config.revision)

            applied, rejected = threading.Event(), threading.Event()

            def reconfigure(snapshot: ConfigSnapshot) -> None:
                # Runs in a thread of its own: a slow reconfiguration stalls nothing.
                print("applied  ->", dict(snapshot), "@", snapshot.revision)
                applied.set()

            def complain(error: errors.EtcdError) -> None:
                print("rejected ->", error)
                rejected.set()

            config.subscribe(reconfigure)
            config.on_error(complain)

            # Three keys in one txn: subscribers see one update with all three.
            etcd.txn(
                [],
                [
                    Op.put(PREFIX + "port", "9090"),
                    Op.put(PREFIX + "workers", "8"),
                    Op.put(PREFIX + "features", json.dumps({"beta": True})),
                ],
            )
            assert applied.wait(10)
            good = config.snapshot

            # Not JSON: rejected, the last good config stays in force.
            etcd.put(PREFIX + "workers", "eight")
            assert rejected.wait(10)
            rejected.clear()
            print("still    ->", dict(config.snapshot), "unchanged:", config.snapshot is good)

            # Fixed, but now the validator refuses the port: rejected too.
            etcd.put(PREFIX + "workers", "8")
            etcd.put(PREFIX + "port", "70000")
            assert rejected.wait(10)
            applied.clear()
            etcd.put(PREFIX + "port", "443")
            assert applied.wait(10)
            print("final    ->", dict(config.snapshot))
            print("problems ->", len(config.errors), "reported;", "reloads:", config.reloads)
        etcd.delete("demo/", prefix=True)


def main() -> int:
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        run(endpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
