"""A prefix cache: a live local copy of a prefix, with listeners.

    python examples/prefix_cache.py                    # starts an embedded etcd
    python examples/prefix_cache.py 127.0.0.1:2379     # or uses yours

``etcd.cache(prefix)`` reads every key under the prefix at one revision, then
follows a watch from the next one: reads (``get``, ``in``, iteration) are local and
never block, and listeners hear about every added, updated and removed key once,
in revision order - here, feature flags flipped by another client.  ``wait_for``
blocks until a condition on the contents holds.  Everything lives under a fresh
prefix, deleted at the end.
"""

from __future__ import annotations

import sys
import threading
import uuid

from etcdsync import CacheEvent, Client, Op
from etcdsync.testing import endpoint_or_embedded


def main(endpoint: str) -> None:
    prefix = f"examples/cache/{uuid.uuid4().hex[:8]}/flags/"
    with Client(endpoint) as etcd, Client(endpoint) as admin:
        admin.put(prefix + "dark-mode", "off")
        admin.put(prefix + "beta", "on")
        heard: list[CacheEvent] = []
        done = threading.Event()

        def listener(event: CacheEvent) -> None:  # runs in a thread of its own
            print(f"  listener: {event.type.value:8} {event.key.decode()} = {event.value!r}")
            heard.append(event)
            if len(heard) == 2 + 4:
                done.set()

        try:
            with etcd.cache(prefix) as flags:
                flags.add_listener(listener, initial=True)  # the present keys first
                print("at revision", flags.revision, "the flags are:")
                for kv in flags:
                    print(f"  {kv.key.decode()} = {kv.value.decode()}")
                admin.put(prefix + "dark-mode", "on")
                admin.txn([], [Op.put(prefix + "new-ui", "on"), Op.delete(prefix + "beta")])
                admin.put(prefix + "kill-switch", "off")
                snap = flags.wait_for(lambda s: prefix + "kill-switch" in s, timeout=5)
                names = {k.decode().rsplit("/", 1)[1]: v.value.decode() for k, v in snap.items()}
                print(f"kill-switch seen at revision {snap.revision}:", names)
                assert done.wait(5), heard
                kv = flags.get(prefix + "dark-mode")
                print("dark-mode is", kv.value.decode() if kv else None, "- read locally")
        finally:
            deleted = admin.delete(prefix.split("flags/")[0], prefix=True)
            print(f"cleaned up {deleted.deleted} key(s)")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        main(endpoint)
