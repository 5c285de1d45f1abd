"""The shared writer: puts ``--count`` keys under ``--prefix`` in txns of ``--batch`` puts.

Every client's watch workload reads the same event stream, produced by this
process (etcdsync, one connection, one txn in flight, as fast as it goes); the
range workload uses it to preload keys.  Key ``i`` is ``prefix + "%08d" % i``,
which lets a watcher check that each event arrived exactly once.  Prints one
``@@BENCH {"start": ..., "end": ..., "written": ...}`` line (wall-clock times, so
the watching process can compare them with its own).
"""

from __future__ import annotations

import argparse
import json
import time

from etcdsync import Client, Op

MARK = "@@BENCH "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--value-size", type=int, default=100)
    args = parser.parse_args()
    value = b"w" * args.value_size
    prefix = args.prefix.encode()
    with Client(args.endpoint, timeout=30) as etcd:
        etcd.get(prefix)  # connect before the clock starts
        batches = [
            [
                Op.put(b"%s%08d" % (prefix, i), value)
                for i in range(first, min(first + args.batch, args.count))
            ]
            for first in range(0, args.count, args.batch)
        ]
        start = time.time()
        for ops in batches:
            etcd.txn(success=ops)
        end = time.time()
    print(MARK + json.dumps({"start": start, "end": end, "written": args.count}), flush=True)


if __name__ == "__main__":
    main()
