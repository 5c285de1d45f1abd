"""A delay queue, asyncio flavour: reminders taken no earlier than their due time.

    python examples/delay_queue_async.py                    # starts an embedded etcd
    python examples/delay_queue_async.py 127.0.0.1:2379     # or uses yours

The same steps as ``delay_queue.py`` with ``AsyncClient``.  A producer schedules
reminders ``0.2`` to ``1.2`` seconds ahead with ``await
etcd.delay_queue(name).put(value, delay=...)`` (in any order: the queue serves them by
due time) and cancels one with ``await remove(id)`` - the id ``put`` returned.  Two
consumer tasks take them with ``await get()``, which waits until the next reminder is
due (woken by the clock, or by a new reminder due sooner).

The asyncio way to stop the consumers: they wait in ``get()`` with no timeout, and are
**cancelled** once every reminder has been taken (the sync example instead stops a
consumer after 2 s with nothing due).  The due time is the producer's wall clock plus
the delay, compared with the consumer's clock: here one host, one clock.  Everything
lives in a fresh namespace, deleted at the end.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

from etcdsync import AsyncClient, AsyncDelayQueue, AsyncNamespace
from etcdsync.testing import endpoint_or_embedded

REMINDERS = {"water plants": 1.0, "stand up": 0.2, "call home": 0.6, "spam": 0.4, "tea": 1.2}


async def consumer(
    etcd: AsyncNamespace, ident: str, log: list[str], all_taken: asyncio.Event
) -> None:
    reminders = etcd.delay_queue("reminders")
    while True:
        item = await reminders.get()  # waits until one is due; ends when cancelled
        late = time.time() - AsyncDelayQueue.due_time(item)
        log.append(f"{ident}: {item.value.decode():13} due {late * 1000:5.1f} ms ago")
        assert late >= 0, "taken before its time"
        if len(log) == len(REMINDERS) - 1:
            all_taken.set()


async def main(endpoint: str) -> None:
    run_prefix = f"examples/delay-queue-async/{uuid.uuid4().hex[:8]}/"
    async with AsyncClient(endpoint) as root:
        etcd = root.namespace(run_prefix)
        try:
            reminders = etcd.delay_queue("reminders")
            ids = {
                text: await reminders.put(text, delay=delay) for text, delay in REMINDERS.items()
            }
            cancelled = await reminders.remove(ids["spam"])
            print(f"scheduled {len(ids)} reminders; cancelled 'spam':", cancelled)
            log: list[str] = []
            all_taken = asyncio.Event()
            consumers = [
                asyncio.create_task(consumer(etcd, f"consumer-{i}", log, all_taken))
                for i in range(2)
            ]
            try:
                # The last one is due 1.2 s from its put; 10 s leaves room for a loaded host.
                await asyncio.wait_for(all_taken.wait(), 10)
            finally:
                for task in consumers:
                    task.cancel()
                await asyncio.gather(*consumers, return_exceptions=True)
            print(*log, sep="\n")
            assert len(log) == len(REMINDERS) - 1 and not any("spam" in line for line in log)
            print("left in the queue:", await reminders.size())
        finally:
            deleted = await etcd.delete("", prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(main(endpoint))
