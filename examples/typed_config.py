"""Typed, hot-reloaded settings: ``etcd.config(prefix, model=Settings)``.

    python examples/typed_config.py                    # starts an embedded etcd
    python examples/typed_config.py 127.0.0.1:2379     # or uses yours

``Settings`` is a plain dataclass (nested dataclasses included; a pydantic model works
the same way, through its ``model_validate``).  The keys under the prefix map to
fields - ``db/host`` is ``settings.db.host`` - and each stored state is decoded and
checked once, into one ``Settings``: ``config.value``, and the ``.value`` of every
snapshot a subscriber gets.  A state that does not fit (here a port that is not a
number) is refused, with the reason, and the last good ``Settings`` stays in force.

The same document can be written from a shell, atomically::

    etcdsync config put services/api/ settings.json [--prune]

Everything the example writes lives under a fresh run prefix and is deleted at the end.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import sys
import uuid

from etcdsync import Client, ConfigSnapshot, Op, errors
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


def main(endpoint: str) -> None:
    prefix = f"examples/typed-config/{uuid.uuid4().hex[:8]}/services/api/"
    run_prefix = prefix.split("services/")[0]
    with Client(endpoint) as etcd:
        try:
            # Values are JSON: the string "db1" is stored quoted.
            etcd.txn([], [Op.put(prefix + "db/host", json.dumps("db1"))])
            reloads: queue.Queue[ConfigSnapshot] = queue.Queue()
            refusals: queue.Queue[errors.EtcdError] = queue.Queue()
            with etcd.config(prefix, model=Settings) as config:
                settings: Settings = config.value
                print("started with", settings)
                config.subscribe(reloads.put)  # runs in a thread of its own
                config.on_error(refusals.put)

                # Three keys in one txn: one new revision, one new Settings.
                etcd.txn(
                    [],
                    [
                        Op.put(prefix + "db/host", json.dumps("db2")),
                        Op.put(prefix + "db/port", json.dumps(6432)),
                        Op.put(prefix + "workers", json.dumps(16)),
                    ],
                )
                snapshot = reloads.get(timeout=10)
                print(f"reloaded at revision {snapshot.revision}:", snapshot.value)
                assert snapshot.value == Settings(Database("db2", 6432), workers=16)

                # Not a number: refused, the last good Settings stays.
                etcd.put(prefix + "db/port", json.dumps("sixty-four"))
                refused = refusals.get(timeout=10)
                print("refused:", refused)
                assert config.value == snapshot.value

                etcd.put(prefix + "db/port", json.dumps(6433))
                fixed = reloads.get(timeout=10)
                print("fixed:", fixed.value)
                assert fixed.value.db.port == 6433 and config.rejected is None
        finally:
            deleted = etcd.delete(run_prefix, prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        main(endpoint)
