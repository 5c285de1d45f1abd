"""Why contended lock handoffs take ~100 ms: etcd delivers late to "unsynced" watchers.

    .venv/bin/python -m bench.unsynced_watch [--trials 50]

A watcher created with a ``start_revision`` at or below the store's current
revision joins etcd's *unsynced* group, which the server catches up only in its
periodic sync (every 100 ms); a watcher created "from now" is synced at once.
This measures the time from a delete to its DELETE event for both kinds, on a
private etcd.  A lock waiter that reads its predecessor at revision R and then
watches it from R + 1 is unsynced whenever any other write landed in between,
which under contention is most of the time.
"""

from __future__ import annotations

import argparse
import statistics
import time

from etcdsync import Client
from etcdsync.testing.server import EtcdServer


def trial(etcd: Client, index: int, from_past: bool) -> float:
    key = f"unsynced/{index}"
    etcd.put(key, "x")
    seen_at = etcd.get(key).revision
    etcd.put("unsynced/other", "y")  # another write: seen_at + 1 is now in the past
    watcher = etcd.watch(key, start_revision=seen_at + 1) if from_past else etcd.watch(key)
    start = time.perf_counter()
    etcd.delete(key)
    watcher.get(timeout=5)
    elapsed = time.perf_counter() - start
    watcher.cancel()
    return elapsed * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--etcd", default=None, help="etcd version (3.5, 3.4) or path")
    args = parser.parse_args()
    with EtcdServer(version=args.etcd) as server, Client(server.endpoint) as etcd:
        print(f"etcd {server.version}: delete -> DELETE event, {args.trials} trials each")
        for from_past in (True, False):
            ms = [trial(etcd, i, from_past) for i in range(args.trials)]
            label = "watch from a past revision" if from_past else "watch from now"
            print(
                f"  {label:27} median {statistics.median(ms):6.1f} ms   "
                f"min {min(ms):6.1f}   max {max(ms):6.1f}"
            )


if __name__ == "__main__":
    main()
