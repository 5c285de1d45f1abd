"""Queue: a distributed FIFO queue, compatible with Go's ``recipe.Queue``.

Each item is a key ``<name>/<unix time in ns>`` holding the value (no lease: an
item outlives its producer); the queue's order is the keys' create revision.  A
consumer reads the :data:`BATCH` oldest items and takes the first one still there
by deleting it guarded by its mod revision - one txn for the whole batch, nested
"if the first is there delete it, else if the second..." - so each item is taken
by exactly one consumer, and consumers racing for the head each get the next item
in one round trip instead of retrying.  Go's ``Queue`` uses the same layout and the
same rule (one item per txn), so Go and Python producers and consumers can share
a queue.

Writes carry a receipt (:mod:`._receipt`): a put or a take whose answer is lost
(a member crashed mid-request) is settled by reading the receipt back, so a put is
never applied twice and a taken item is never dropped unseen.  What a receipt
cannot save: an item taken by a consumer that then crashes is gone - use
:class:`~etcdsync._async.concurrency.locking_queue.AsyncLockingQueue` (take a
claim, delete when done) for at-least-once processing.

:class:`AsyncQueueBase` is the template shared with the priority queue and the
at-least-once queue: a subclass says where its items live, in which order they
are served and how one is taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Generic, TypeVar

from ... import errors
from ..._deadline import Deadline
from ...models import GetResponse, KeyValue
from ...ops import Compare, Op
from ...queue_types import QueueItem
from ...watch_types import Event, EventType
from ..watcher import AsyncWatcher
from ._receipt import Alternative, AsyncReceiptBook, Written, receipt_book
from ._waiting import session_error
from .recipe_client import AsyncRecipeClient
from .session import DEFAULT_SESSION_TTL, AsyncSession

__all__ = ["BATCH", "AsyncDeletingQueue", "AsyncQueue", "AsyncQueueBase", "encode_value"]

BATCH = 16
"""Items read at the head of the queue per take; one txn takes the first still there."""

T = TypeVar("T")


def encode_value(value: object) -> bytes:
    """An item's value as bytes (str is encoded as UTF-8)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise errors.InvalidRequest(f"a queue value must be str or bytes, got {type(value).__name__}")


def _put_if_absent(session: AsyncSession, *, key: str, value: bytes) -> list[Alternative]:
    return [([Compare.version(key) == 0], [Op.put(key, value)])]


class AsyncQueueBase(Generic[T]):
    """The template of the queues: items are keys under one prefix, taken through a
    receipted txn; ``get()`` waits on a watch for new items.

    Subclasses define :meth:`_head` (how the head of the queue is read),
    :meth:`_alternatives` (the txn branches that take one of the head's items),
    :meth:`_taken` (what ``get()`` returns) and, if more than a PUT under the items
    prefix can free an item, :meth:`_wakes`.
    """

    _ttl_default = DEFAULT_SESSION_TTL

    def __init__(
        self,
        client: AsyncRecipeClient,
        name: str,
        *,
        session: AsyncSession | None = None,
        ttl: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise errors.InvalidRequest(f"a queue name must be a non-empty str, got {name!r}")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            raise errors.InvalidRequest(f"ttl must be a positive int (seconds), got {ttl!r}")
        if session is not None and ttl is not None:
            raise errors.InvalidRequest("pass either session= or ttl=, not both")
        self._client = client
        self._name = name
        self._session_arg = session
        self._ttl = ttl

    # --- what subclasses define -----------------------------------------------------------

    @property
    def items_prefix(self) -> str:
        """The prefix under which the items live."""
        return f"{self._name}/"

    @property
    def receipts_prefix(self) -> str:
        """The prefix of the writers' receipt keys (outside the items prefix)."""
        return f"__{self._name}/receipts/"

    async def _head(self, deadline: Deadline) -> tuple[list[KeyValue], int]:
        """The items at the head of the queue that may be taken, in queue order, and
        the revision of the read."""
        raise NotImplementedError

    def _alternatives(
        self, session: AsyncSession, head: Sequence[KeyValue], revision: int
    ) -> list[Alternative]:
        """One txn branch per item of ``head`` (read at ``revision``): take that item
        if it is still there."""
        raise NotImplementedError

    def _taken(self, session: AsyncSession, kv: KeyValue, revision: int) -> T:
        """What ``get()`` returns for the item ``kv`` taken at ``revision``."""
        raise NotImplementedError

    def _wakes(self, batch: Sequence[Event]) -> bool:
        """Whether the watched events (one revision's batch) may have freed an item."""
        return any(event.type is EventType.PUT for event in batch)

    def _watch_prefix(self) -> str:
        """The prefix ``get()`` watches while the queue is empty."""
        return self.items_prefix

    def _watch_options(self) -> dict[str, Any]:
        return {"no_delete": True}

    def _wake_limit(self, deadline: Deadline) -> float | None:
        """How long ``get()`` may wait for the watch before reading the head again
        (a delay queue wakes when its next item falls due)."""
        return deadline.remaining()

    # --- sessions and receipts ------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    async def _get_session(self) -> AsyncSession:
        session = self._session_arg
        if session is None:
            session = await self._client.shared_session(self._ttl or self._ttl_default)
        if session.is_done:
            raise session_error(session)
        return session

    async def _book(self) -> tuple[AsyncSession, AsyncReceiptBook]:
        session = await self._get_session()
        return session, receipt_book(self._client, session, self.receipts_prefix)

    async def _write(
        self,
        build: Callable[[AsyncSession], Sequence[Alternative]],
        deadline: Deadline,
        context: Any = None,
    ) -> tuple[Written, AsyncSession]:
        """Run one receipted write (see :mod:`._receipt`).  With the client's shared
        session, a write refused because the session's lease is gone is run again on
        the new shared session (nothing was written); so is a write whose lost answer
        was settled as not applied (:class:`~etcdsync.errors.QueueTimeout` if the
        deadline has passed by then)."""
        previous: AsyncSession | None = None
        while True:
            session, book = await self._book()
            if session is previous:
                raise (
                    session_error(session)
                    if session.is_done
                    else errors.SessionExpiredError(
                        f"the lease {session.lease_id:x} of the queue's session is gone",
                        lease_id=session.lease_id,
                        reason="expired",
                    )
                )
            await book.settle_pending(self._client, deadline)
            receipt = book.take()
            try:
                written = await receipt.write(self._client, build(session), deadline, context)
            except errors.SessionExpiredError:
                if self._session_arg is not None or deadline.expired():
                    raise
                previous = session
                continue
            finally:
                book.give(receipt)
            if written.settled and written.branch is None:
                # The answer was lost and the receipt proved the write not applied
                # (fenced): nothing changed, and whether its compares hold is unknown.
                # Run it again, so that "no branch ran" keeps meaning "the compares
                # failed" (a consume must not report a claim it still holds as lost).
                if deadline.expired():
                    raise errors.QueueTimeout(
                        f"a write to the queue {self._name!r} was lost and not applied "
                        "within the deadline: nothing was written"
                    )
                continue
            return written, session

    # --- the public API -------------------------------------------------------------------

    async def get(self, timeout: float | None = None) -> T:
        """Take the item at the head of the queue, waiting for one if it is empty.

        ``timeout`` (None: wait as long as it takes) bounds the whole call; raises
        :class:`~etcdsync.errors.QueueTimeout` when it passes with nothing taken.
        Waiting is watch-based: an idle consumer costs no requests until an item
        is put.
        """
        deadline = Deadline(timeout)
        watcher: AsyncWatcher | None = None
        try:
            while True:
                item = await self._take(deadline)
                if item is not None:
                    return item
                if deadline.expired():
                    raise errors.QueueTimeout(f"queue {self._name!r} stayed empty for {timeout} s")
                if watcher is None:
                    # From now, then read again: no item put after the read is missed,
                    # and etcd serves the watch from its synced group (no 100 ms lag).
                    watcher = await self._client.watch(
                        self._watch_prefix(),
                        prefix=True,
                        require_leader=True,
                        timeout=deadline.rpc_timeout(),
                        **self._watch_options(),
                    )
                    continue
                if not await self._wait_wake(watcher, deadline, timeout):
                    await watcher.cancel()
                    watcher = None  # compacted under a broken stream: watch anew
        finally:
            if watcher is not None:
                await watcher.cancel()

    async def _wait_wake(
        self, watcher: AsyncWatcher, deadline: Deadline, timeout: float | None
    ) -> bool:
        """Wait for events that may have freed an item; False if the watch must be
        made anew."""
        while True:
            try:
                batch = await watcher.get(self._wake_limit(deadline))
            except TimeoutError:
                if not deadline.expired():
                    return True  # woken by the clock: read the head again
                raise errors.QueueTimeout(
                    f"queue {self._name!r} stayed empty for {timeout} s"
                ) from None
            except StopAsyncIteration:
                raise errors.ClientClosedError("the queue's watch was cancelled") from None
            except errors.CompactedError:
                return False
            if self._wakes(batch.events):
                return True

    dequeue = get
    """Go's name for :meth:`get`."""

    async def try_get(self, timeout: float | None = None) -> T | None:
        """Take the item at the head of the queue if there is one, without waiting
        for an item; None when the queue is empty.  ``timeout`` bounds the requests."""
        return await self._take(Deadline(timeout))

    async def _take(self, deadline: Deadline) -> T | None:
        """Take one item from the head, reading again while others take them first."""
        while True:
            session, book = await self._book()
            await book.settle_pending(self._client, deadline)
            if book.recovered:
                item = self._recovered(session, book)
                if item is not None:
                    return item
            head, revision = await self._head(deadline)
            if not head:
                return None
            written, session = await self._write(
                partial(self._alternatives, head=head, revision=revision),
                deadline,
                context=("take", head),
            )
            if written.branch is not None:
                return self._taken(session, head[written.branch], written.revision)
            # Every item read was taken by others meanwhile: read the head again.

    def _recovered(self, session: AsyncSession, book: AsyncReceiptBook) -> T | None:
        """A take settled after its call had failed, found applied: its item."""
        while True:
            try:
                written = book.recovered.popleft()
            except IndexError:  # (another task or thread took the last one)
                return None
            kind, head = written.context if isinstance(written.context, tuple) else (None, None)
            if kind == "take" and written.branch is not None:
                return self._taken(session, head[written.branch], written.revision)

    async def size(self, *, timeout: float | None = None) -> int:
        """The number of items in the queue now."""
        response = await self._client.get(
            self.items_prefix, prefix=True, keys_only=True, limit=1, timeout=timeout
        )
        return response.count

    async def _put_fifo(self, value: str | bytes, timeout: float | None) -> int:
        """Put ``value`` as a new key ``<items prefix><unix time in ns>`` (Go's layout),
        served in create revision order; the revision of the put."""
        data = encode_value(value)
        deadline = Deadline(timeout)
        while True:
            key = f"{self.items_prefix}{time.time_ns()}"
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

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r}>"


class AsyncDeletingQueue(AsyncQueueBase[QueueItem]):
    """A queue whose ``get()`` takes an item by deleting it (at most once): the FIFO,
    the priority and the delay queue."""

    async def remove(self, item_id: int, *, timeout: float | None = None) -> bool:
        """Remove the item whose ``put()`` returned ``item_id`` (the revision of the
        put), if it is still queued; True if this call removed it, False if it was
        taken (or removed) already.

        One read finds the item by its create revision (etcd filters the prefix
        server-side), one receipted txn deletes it if it is still the same item,
        so a lost answer is settled, never guessed; ``timeout`` bounds both.
        """
        if not isinstance(item_id, int) or isinstance(item_id, bool) or item_id <= 0:
            raise errors.InvalidRequest(
                f"an item id is a put's revision (int > 0), got {item_id!r}"
            )
        deadline = Deadline(timeout)
        found = await self._client.txn(
            [],
            [
                Op.get(
                    self.items_prefix,
                    prefix=True,
                    keys_only=True,
                    min_create_revision=item_id,
                    max_create_revision=item_id,
                )
            ],
            timeout=deadline.rpc_timeout(),
        )
        listed = found.responses[0]
        assert isinstance(listed, GetResponse), "the response of a txn get"
        if not listed.kvs:
            return False
        key = listed.kvs[0].key
        try:
            written, _ = await self._write(
                lambda session: [([Compare.create_revision(key) == item_id], [Op.delete(key)])],
                deadline,
                context=("remove", key),
            )
        except errors.QueueOutcomeUnknownError as exc:
            exc.key = key
            raise
        return written.branch is not None

    def _alternatives(
        self, session: AsyncSession, head: Sequence[KeyValue], revision: int
    ) -> list[Alternative]:
        return [
            ([Compare.mod_revision(kv.key) == kv.mod_revision], [Op.delete(kv.key)]) for kv in head
        ]

    def _taken(self, session: AsyncSession, kv: KeyValue, revision: int) -> QueueItem:
        return QueueItem(kv.key, kv.value, kv.create_revision, revision)


class AsyncQueue(AsyncDeletingQueue):
    """A distributed FIFO queue; create with ``client.queue(name)``.

    ::

        jobs = etcd.queue("jobs")
        await jobs.put(b"resize image 42")
        item = await jobs.get(timeout=30)      # the oldest item, removed from the queue
        handle(item.value)

    Every item is taken by exactly one ``get()``, in the order of the puts
    (concurrent puts: in the order etcd applied them).  A put or take whose answer
    is lost is settled through a receipt, so a put that returns was applied once
    and a take that was applied is returned (by this call, or by the next ``get()``
    of the process if this one raised).  An item taken by a consumer that crashes
    before handling it is **lost**: use ``client.locking_queue(name)`` for
    at-least-once delivery.

    Receipts are bound to the client's shared session (``ttl`` seconds, default
    60) or ``session``.
    """

    async def put(self, value: str | bytes, *, timeout: float | None = None) -> int:
        """Append ``value`` to the queue; returns the revision of the put (the item's
        place in the queue, and its id for :meth:`remove`).

        ``timeout`` bounds the whole put, including the settling of a lost answer;
        if it passes before the outcome is known, raises
        :class:`~etcdsync.errors.QueueOutcomeUnknownError` carrying the item's key.
        """
        return await self._put_fifo(value, timeout)

    enqueue = put
    """Go's name for :meth:`put`."""

    async def _head(self, deadline: Deadline) -> tuple[list[KeyValue], int]:
        response = await self._client.get(
            self.items_prefix,
            prefix=True,
            sort_order="ascend",
            sort_target="create",
            limit=BATCH,
            timeout=deadline.rpc_timeout(),
        )
        # Items of one txn share a create revision: the key breaks the tie.
        head = sorted(response.kvs, key=lambda kv: (kv.create_revision, kv.key))
        return head, response.revision
