"""A separate writer process: commits N sequenced keys exactly once each.

    python tests/helpers/writer.py ENDPOINT PREFIX COUNT

Each key is written with a put-if-absent txn, so a write whose outcome was
unknown (the server died mid-request) can be retried without a second revision:
afterwards the store holds exactly one revision per key, and that list is what
a watcher must have received.  Prints "progress N" lines and "done".
"""

from __future__ import annotations

import sys
import time

from etcdsync import Client, Compare, Op, errors


def main() -> int:
    endpoint, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    deadline = time.monotonic() + 120
    with Client(endpoint, timeout=2.0) as etcd:
        for i in range(count):
            key = f"{prefix}{i:06d}"
            while True:
                if time.monotonic() > deadline:
                    print("gave up", flush=True)
                    return 1
                try:
                    etcd.txn([Compare.version(key) == 0], [Op.put(key, str(i))])
                    break
                except errors.EtcdError:
                    time.sleep(0.02)  # server down: poll until it is back
            if i % 100 == 0:
                print(f"progress {i}", flush=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
