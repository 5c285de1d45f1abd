"""Live config, asyncio flavour: a validated, hot-reloading view of a prefix.

    python examples/config_watcher_async.py                    # starts an embedded etcd
    python examples/config_watcher_async.py 127.0.0.1:2379     # or uses yours

The same steps as ``config_watcher.py`` with ``AsyncClient``.  A service keeps its
settings under ``demo/services/api/`` (inside a fresh namespace of its own, so nothing
else on the cluster is touched) as JSON values.  The watcher loads them at one
revision, then follows every change: a txn that changes three keys is applied as one
update; a value that is not JSON, or a state the validator refuses, is rejected and
the last good config stays in force until someone fixes it.  The subscriber is a
coroutine function (awaited in a task of its own), and each wait is bounded with
``asyncio.wait_for``; at the end the same changes are followed with ``async for``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

from etcdsync import AsyncClient, ConfigSnapshot, Op, errors
from etcdsync.testing import endpoint_or_embedded

PREFIX = "demo/services/api/"


def validate(config: ConfigSnapshot) -> None:
    """Refuse configs the service could not run with (a plain function, as in sync)."""
    port = config.get("port")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an int in 1..65535, got {port!r}")


async def run(endpoint: str) -> None:
    async with AsyncClient(endpoint) as client:
        # A fresh namespace: every key below lives under it, and nothing else is touched.
        etcd = client.namespace(f"examples/config-watcher-async/{uuid.uuid4().hex[:8]}/")
        await etcd.put(PREFIX + "port", "8080")
        await etcd.put(PREFIX + "workers", "4")

        async with etcd.config(PREFIX, validate=validate) as config:
            print("start    ->", dict(config.snapshot), "@", config.revision)

            applied: asyncio.Queue[ConfigSnapshot] = asyncio.Queue()
            rejected: asyncio.Queue[errors.EtcdError] = asyncio.Queue()

            async def reconfigure(snapshot: ConfigSnapshot) -> None:
                # Awaited in a task of its own: a slow reconfiguration stalls nothing.
                print("applied  ->", dict(snapshot), "@", snapshot.revision)
                await applied.put(snapshot)

            def complain(error: errors.EtcdError) -> None:
                # Called from the watcher's task: keep it short (no await).
                print("rejected ->", error)
                rejected.put_nowait(error)

            config.subscribe(reconfigure)
            config.on_error(complain)

            # Three keys in one txn: subscribers see one update with all three.
            await etcd.txn(
                [],
                [
                    Op.put(PREFIX + "port", "9090"),
                    Op.put(PREFIX + "workers", "8"),
                    Op.put(PREFIX + "features", json.dumps({"beta": True})),
                ],
            )
            good = await asyncio.wait_for(applied.get(), 10)
            assert dict(good) == {"port": 9090, "workers": 8, "features": {"beta": True}}

            # Not JSON: rejected, the last good config stays in force.
            await etcd.put(PREFIX + "workers", "eight")
            await asyncio.wait_for(rejected.get(), 10)
            print("still    ->", dict(config.snapshot), "unchanged:", config.snapshot is good)
            assert config.snapshot is good

            # Fixed, but now the validator refuses the port: rejected too.
            await etcd.put(PREFIX + "workers", "8")
            await etcd.put(PREFIX + "port", "70000")
            await asyncio.wait_for(rejected.get(), 10)
            await etcd.put(PREFIX + "port", "443")
            final = await asyncio.wait_for(applied.get(), 10)
            assert final["port"] == 443
            print("final    ->", dict(config.snapshot))
            print("problems ->", len(config.errors), "reported;", "reloads:", config.reloads)

            # Or, without a subscriber: iterate the snapshots (the current one first).
            async def follow() -> list[int]:
                ports = []
                async for snapshot in config:
                    ports.append(snapshot["port"])
                    if snapshot["port"] == 8443:
                        return ports
                return ports

            follower = asyncio.create_task(follow())
            await etcd.put(PREFIX + "port", "8443")
            print("followed ->", await asyncio.wait_for(follower, 10))
        await etcd.delete("demo/", prefix=True)


def main() -> int:
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(run(endpoint))
    return 0


if __name__ == "__main__":
    sys.exit(main())
