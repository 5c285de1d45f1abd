"""DelayQueue: items that may be taken only once their time has come.

Each item is a key ``<name>/<due time, unix ns, 20 digits>-<put time, unix ns,
20 digits>`` holding the value (no lease: an item outlives its producer), so
key order is due order, and among items due at the same nanosecond, put
order.  A consumer reads the first :data:`~.queue.BATCH` keys, keeps those whose
due time has passed by *its own* clock, and takes the first one still there in
one receipted txn, as the FIFO queue does.  When none is due it waits on a watch
of the prefix (a new item may be due sooner) no longer than until the earliest
item falls due.

**The clock.**  etcd has no wall clock to offer, so the due time is the
producer's wall clock (``clock()``, default :func:`time.time`) plus the delay,
written in the key, and a consumer compares it with its own ``clock()``.  On
hosts whose clocks agree (NTP keeps them within milliseconds) an item is never
taken before its time.  If a consumer's clock runs ahead of the producer's by
``e`` seconds, it may take an item up to ``e`` seconds early; if it runs behind,
late.  A clock stepped backwards delays items; one stepped forwards releases
them early.  Pass the same ``clock`` to producers and consumers if you have a
better shared clock.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable
from functools import partial

from ... import errors
from ..._backends._async import StateLock
from ..._deadline import Deadline
from ...models import KeyValue
from ...queue_types import QueueItem
from .queue import BATCH, AsyncDeletingQueue, _put_if_absent, encode_value
from .recipe_client import AsyncRecipeClient
from .session import AsyncSession

__all__ = ["AsyncDelayQueue", "Clock"]

Clock = Callable[[], float]
"""A wall clock: seconds since the Unix epoch, like :func:`time.time`."""

# A consumer woken by the clock wakes this much after the due time, so that its
# own clock has passed it for sure (sleeps may end a little early).
_WAKE_MARGIN = 0.002
_NS = 1_000_000_000


def _due_ns(items_prefix: bytes, key: bytes) -> int | None:
    """The due time (unix ns) written in an item key, None if it is not one."""
    due, sep, _ = key[len(items_prefix) :].partition(b"-")
    return int(due) if sep and due.isdigit() else None


class AsyncDelayQueue(AsyncDeletingQueue):
    """A distributed delay queue; create with ``client.delay_queue(name)``.

    ::

        reminders = etcd.delay_queue("reminders")
        await reminders.put(b"send invoice 42", delay=3600)     # due in an hour
        await reminders.put(b"renew cert", at=datetime(2027, 1, 1, tzinfo=UTC))
        item = await reminders.get()    # waits until an item is due, then takes it

    ``get()`` returns an item only once its due time has passed by this
    process's ``clock`` (see the module docstring for the clock assumption),
    the earliest due first; each item is taken by exactly one ``get()``.
    ``put()`` returns the item's id (the revision of the put) for
    :meth:`remove`, which deletes it if it is still queued.  Like the FIFO
    queue, puts, takes and removals are settled through receipts when an answer
    is lost, and an item taken by a consumer that crashes is lost.
    :meth:`size` counts every item, due or not.
    """

    def __init__(
        self,
        client: AsyncRecipeClient,
        name: str,
        *,
        session: AsyncSession | None = None,
        ttl: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        if clock is not None and not callable(clock):
            raise errors.InvalidRequest(f"clock must be callable, got {clock!r}")
        super().__init__(client, name, session=session, ttl=ttl)
        self._clock: Clock = clock or time.time
        self._state_lock = StateLock()
        self._next_due: int | None = None
        """The earliest due time (unix ns) not yet reached at the last read of the head."""

    @staticmethod
    def due_time(item: QueueItem) -> float:
        """The due time (unix seconds) of a taken item."""
        due = _due_ns(b"", item.key.rpartition(b"/")[2])
        if due is None:
            raise errors.QueueError(f"{item.key!r} is not a delay queue item key")
        return due / _NS

    async def put(
        self,
        value: str | bytes,
        *,
        delay: float | None = None,
        at: float | datetime.datetime | None = None,
        timeout: float | None = None,
    ) -> int:
        """Add ``value``, due ``delay`` seconds from now by ``clock()`` or ``at`` (unix
        seconds, or a datetime; a naive one is local time); neither: due now.
        Returns the item's id (the revision of the put) for :meth:`remove`.

        ``timeout`` bounds the whole put; if it passes before a lost answer is
        settled, raises :class:`~etcdsync.errors.QueueOutcomeUnknownError`.
        """
        data = encode_value(value)
        if delay is not None and at is not None:
            raise errors.InvalidRequest("pass either delay= or at=, not both")
        if isinstance(at, datetime.datetime):
            due = at.timestamp()
        elif at is not None:
            if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
                raise errors.InvalidRequest(f"at must be unix seconds or a datetime, got {at!r}")
            due = float(at)
        else:
            if delay is not None and (
                not isinstance(delay, int | float)
                or isinstance(delay, bool)
                or not math.isfinite(delay)
                or delay < 0
            ):
                raise errors.InvalidRequest(
                    f"delay must be a number of seconds >= 0, got {delay!r}"
                )
            due = self._clock() + (delay or 0.0)
        if due < 0:
            raise errors.InvalidRequest(f"the due time must not be before 1970, got {due!r}")
        due_ns = int(due * _NS)
        deadline = Deadline(timeout)
        while True:
            key = f"{self.items_prefix}{due_ns:020d}-{time.time_ns():020d}"
            try:
                written, _ = await self._write(
                    partial(_put_if_absent, key=key, value=data),
                    deadline,
                    context=("put", key),
                )
            except errors.QueueOutcomeUnknownError as exc:
                exc.key = key.encode()
                raise
            if written.branch is not None:
                return written.revision
            # Another producer wrote the same key in the same nanosecond: a new key.

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
        now = int(self._clock() * _NS)
        prefix = self.items_prefix.encode()
        due: list[KeyValue] = []
        next_due: int | None = None
        for kv in response.kvs:
            when = _due_ns(prefix, kv.key)
            if when is None:
                continue  # not an item of this layout
            if when > now:
                next_due = when  # keys are in due order: the rest are later
                break
            due.append(kv)
        with self._state_lock:
            self._next_due = next_due
        return due, response.revision

    def _wake_limit(self, deadline: Deadline) -> float | None:
        remaining = deadline.remaining()
        with self._state_lock:
            next_due = self._next_due
        if next_due is None:
            return remaining
        wait = max(next_due / _NS - self._clock(), 0.0) + _WAKE_MARGIN
        return wait if remaining is None else min(wait, remaining)
