"""A delay queue: reminders taken no earlier than their due time, one cancelled.

    python examples/delay_queue.py                    # starts an embedded etcd
    python examples/delay_queue.py 127.0.0.1:2379     # or uses yours

A producer schedules reminders ``0.2`` to ``1.2`` seconds ahead with
``etcd.delay_queue(name).put(value, delay=...)`` (in any order: the queue serves
them by due time) and cancels one with ``remove(id)`` - the id ``put`` returned.
Two consumer threads take them with ``get()``, which waits until the next reminder
is due (woken by the clock, or by a new reminder due sooner).  The due time is the
producer's wall clock plus the delay, compared with the consumer's clock: here one
host, one clock.  Everything lives in a fresh namespace, deleted at the end.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid

from etcdsync import Client, DelayQueue, errors
from etcdsync.testing import endpoint_or_embedded

REMINDERS = {"water plants": 1.0, "stand up": 0.2, "call home": 0.6, "spam": 0.4, "tea": 1.2}


def consumer(etcd: Client, ident: str, log: list[str]) -> None:
    reminders = etcd.delay_queue("reminders")
    while True:
        try:
            item = reminders.get(timeout=2)
        except errors.QueueTimeout:
            return  # nothing due for 2 s: done
        late = time.time() - DelayQueue.due_time(item)
        log.append(f"{ident}: {item.value.decode():13} due {late * 1000:5.1f} ms ago")
        assert late >= 0, "taken before its time"


def main(endpoint: str) -> None:
    run_prefix = f"examples/delay_queue/{uuid.uuid4().hex[:8]}/"
    with Client(endpoint) as root:
        etcd = root.namespace(run_prefix)
        try:
            reminders = etcd.delay_queue("reminders")
            ids = {text: reminders.put(text, delay=delay) for text, delay in REMINDERS.items()}
            print(
                f"scheduled {len(ids)} reminders; cancelled 'spam':", reminders.remove(ids["spam"])
            )
            log: list[str] = []
            threads = [
                threading.Thread(target=consumer, args=(etcd, f"consumer-{i}", log))
                for i in range(2)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            print(*log, sep="\n")
            assert len(log) == len(REMINDERS) - 1 and not any("spam" in line for line in log)
        finally:
            deleted = etcd.delete("", prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        main(endpoint)
