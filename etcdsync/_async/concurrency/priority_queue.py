"""PriorityQueue: items served by priority, then arrival; compatible with Go's
``recipe.PriorityQueue``.

Each item is a key ``<name>/<priority, 5 digits>/<sequence, 16 digits>`` (no
lease), so key order is priority order (0 first), then arrival order within a
priority.  A producer reads the last key of its priority and writes the next
sequence number in a txn that also touches a bookkeeping key
``__<name>/<priority, 5 digits>``, guarded by that key's mod revision: two
producers racing for one number conflict on it and one of them reads again
(Go's ``newSequentialKV``).  Consumers take the first key still there, as the FIFO
queue does.  Go's ``PriorityQueue`` uses the same keys, so both can share a queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from ... import errors
from ..._deadline import Deadline
from ...models import KeyValue
from ...ops import Compare, Op
from ...queue_types import check_priority
from ._receipt import Alternative
from .queue import BATCH, AsyncDeletingQueue, encode_value
from .session import AsyncSession

__all__ = ["AsyncPriorityQueue"]


def _sequential_put(
    session: AsyncSession, *, base: str, since: int, key: str, value: bytes
) -> list[Alternative]:
    # The bookkeeping key unchanged since the read: no other producer took a number.
    return [([Compare.mod_revision(base) < since + 1], [Op.put(base, b""), Op.put(key, value)])]


class AsyncPriorityQueue(AsyncDeletingQueue):
    """A distributed priority queue; create with ``client.priority_queue(name)``.

    ::

        tasks = etcd.priority_queue("tasks")
        await tasks.put(b"routine", priority=10)
        await tasks.put(b"urgent", priority=0)
        (await tasks.get()).value   # b"urgent": lower numbers first

    ``get()`` returns the item with the lowest priority number, the oldest first
    among equal priorities; each item is taken by exactly one ``get()``.  Like
    :class:`~etcdsync.AsyncQueue`, puts and takes are settled through receipts
    when an answer is lost, and an item taken by a consumer that crashes is lost.
    Producers of one priority serialise on its bookkeeping key: each put costs a
    read and a txn, and a conflicting put reads again.
    """

    async def put(self, value: str | bytes, priority: int, *, timeout: float | None = None) -> int:
        """Add ``value`` with ``priority`` (0 - 65535; 0 is served first); returns
        the revision of the put.

        ``timeout`` bounds the whole put; if it passes before a lost answer is
        settled, raises :class:`~etcdsync.errors.QueueOutcomeUnknownError`.
        """
        data = encode_value(value)
        check_priority(priority)
        deadline = Deadline(timeout)
        level = f"{self._name}/{priority:05d}"
        base = f"__{level}"
        while True:
            last = await self._client.get(
                f"{level}/",
                prefix=True,
                sort_order="descend",
                sort_target="key",
                limit=1,
                keys_only=True,
                timeout=deadline.rpc_timeout(),
            )
            sequence = 0
            if last.kvs:
                tail = last.kvs[0].key.rsplit(b"/", 1)[-1]
                if not tail.isdigit():
                    raise errors.QueueError(f"{last.kvs[0].key!r} is not a priority queue item key")
                sequence = int(tail) + 1
            key = f"{level}/{sequence:016d}"
            try:
                written, _ = await self._write(
                    partial(_sequential_put, base=base, since=last.revision, key=key, value=data),
                    deadline,
                    context=("put", key),
                )
            except errors.QueueOutcomeUnknownError as exc:
                exc.key = key.encode()
                raise
            if written.branch is not None:
                return written.revision
            # Another producer of this priority took the number: read again.

    enqueue = put
    """Go's name for :meth:`put`."""

    async def _head(self, deadline: Deadline) -> tuple[list[KeyValue], int]:
        response = await self._client.get(
            self.items_prefix,
            prefix=True,
            sort_order="ascend",
            sort_target="key",
            limit=BATCH,
            timeout=deadline.rpc_timeout(),
        )
        return response.kvs, response.revision

    def _alternatives(
        self, session: AsyncSession, head: Sequence[KeyValue], revision: int
    ) -> list[Alternative]:
        # Taking an item also requires that nothing put after the read sorts before
        # it: an item of a higher priority that arrived meanwhile is served first
        # (the txn takes nothing and the consumer reads the head again).
        return [
            (
                [
                    Compare.mod_revision(kv.key) == kv.mod_revision,
                    Compare.create_revision(self.items_prefix, range_end=kv.key) < revision + 1,
                ],
                [Op.delete(kv.key)],
            )
            for kv in head
        ]
