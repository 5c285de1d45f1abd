"""Typed, hot-reloaded settings, asyncio flavour: ``etcd.config(prefix, model=Settings)``.

    python examples/typed_config_async.py                    # starts an embedded etcd
    python examples/typed_config_async.py 127.0.0.1:2379     # or uses yours

The same steps as ``typed_config.py`` with ``AsyncClient``.  ``Settings`` is a plain
dataclass (a pydantic model works the same way, through its ``model_validate``); the
keys under the prefix map to fields - ``db/host`` is ``settings.db.host`` - and each
stored state is decoded and checked once.  A subscriber may be a coroutine function,
and ``wait_for_change`` waits for a newer state.  A state that does not
fit (a port that is not a number) is refused, with the reason, and the last good
``Settings`` stays in force.  Everything lives under a fresh run prefix, deleted at
the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import uuid

from etcdsync import AsyncClient, ConfigSnapshot, Op, errors
from etcdsync.testing import endpoint_or_embedded


@dataclasses.dataclass(frozen=True)
class Database:
    host: str
    port: int = 5432


@dataclasses.dataclass(frozen=True)
class Settings:
    db: Database
    workers: int = 4
    debug: bool = False


async def run(endpoint: str) -> None:
    run_prefix = f"examples/typed-config-async/{uuid.uuid4().hex[:8]}/"
    prefix = run_prefix + "services/api/"
    async with AsyncClient(endpoint) as etcd:
        try:
            # Values are JSON: the string "db1" is stored quoted.
            await etcd.put(prefix + "db/host", json.dumps("db1"))
            refusals: asyncio.Queue[errors.EtcdError] = asyncio.Queue()
            reloads: asyncio.Queue[ConfigSnapshot] = asyncio.Queue()

            async def on_reload(snapshot: ConfigSnapshot) -> None:  # runs in a task of its own
                await reloads.put(snapshot)

            async with etcd.config(prefix, model=Settings) as config:
                settings: Settings = config.value
                print("started with", settings)
                config.subscribe(on_reload)
                config.on_error(refusals.put_nowait)

                # Three keys in one txn: one new revision, one new Settings.
                await etcd.txn(
                    [],
                    [
                        Op.put(prefix + "db/host", json.dumps("db2")),
                        Op.put(prefix + "db/port", json.dumps(6432)),
                        Op.put(prefix + "workers", json.dumps(16)),
                    ],
                )
                snapshot = await asyncio.wait_for(reloads.get(), 10)
                print(f"reloaded at revision {snapshot.revision}:", snapshot.value)
                assert snapshot.value == Settings(Database("db2", 6432), workers=16)

                # Not a number: refused, the last good Settings stays.
                await etcd.put(prefix + "db/port", json.dumps("sixty-four"))
                refused = await asyncio.wait_for(refusals.get(), 10)
                print("refused:", refused)
                assert config.value == snapshot.value

                # Or, instead of a subscriber: wait for a state newer than a revision.
                await etcd.put(prefix + "db/port", json.dumps(6433))
                fixed = await config.wait_for_change(snapshot.revision, timeout=10)
                print("fixed:", fixed.value)
                assert fixed.value.db.port == 6433
        finally:
            deleted = await etcd.delete(run_prefix, prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


def main() -> int:
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(run(endpoint))
    return 0


if __name__ == "__main__":
    sys.exit(main())
