"""LockingQueue: an at-least-once FIFO queue (kazoo's ``LockingQueue`` semantics).

A consumer does not remove an item when it takes it: it puts a **claim**, a key
bound to its session's lease, and the item stays in the queue until the consumer
calls ``consume()`` (the item and the claim are deleted in one txn, together with
any writes the consumer wants to commit atomically with it) or ``release()``
(the claim is deleted: the item is served again).  If the consumer dies, its lease
expires, the claim goes with it and the item is served again - within the
session's TTL.  So every item is processed at least once; it is processed more
than once only when a consumer loses its claim (crash, pause or partition past
the TTL) before it consumes.

Key layout (no Go counterpart; everything under ``<name>/``)::

    <name>/items/<unix time in ns>     the item (no lease), FIFO by create revision
    <name>/claims/<same suffix>        a consumer's claim (its session's lease)
    <name>/receipts/<lease>-<random>   the consumers' and producers' receipts

An item's claim is taken in a txn guarded by "no claim yet" and the item's mod
revision, so two consumers never hold one item; a consume is guarded by the
claim's create revision (:meth:`AsyncClaim.is_owner`), so a consumer whose claim
expired can never delete an item another consumer now holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from functools import partial
from types import TracebackType
from typing import Any

from ... import errors
from ..._deadline import Deadline
from ...models import GetResponse, KeyValue
from ...ops import Compare, Op
from ...queue_types import QueueItem
from ...watch_types import Event, EventType
from ._receipt import Alternative
from ._waiting import session_error
from .queue import BATCH, AsyncQueueBase
from .session import AsyncSession

__all__ = ["AsyncClaim", "AsyncLockingQueue"]

log = logging.getLogger("etcdsync.recipes")


def _consume_ops(
    session: AsyncSession, *, guard: Compare, item: KeyValue, claim: str, ops: Sequence[Op]
) -> list[Alternative]:
    return [
        (
            [guard, Compare.mod_revision(item.key) == item.mod_revision],
            [Op.delete(item.key), Op.delete(claim), *ops],
        )
    ]


def _release_ops(session: AsyncSession, *, guard: Compare, claim: str) -> list[Alternative]:
    return [([guard], [Op.delete(claim)])]


class AsyncClaim:
    """A consumer's claim on one item of an :class:`AsyncLockingQueue`.

    The item stays in the queue, invisible to other consumers, until
    :meth:`consume` deletes it or :meth:`release` (or the end of the session) hands
    it back.  ``async with await queue.get() as claim:`` consumes the item when the
    block ends normally and releases it when the block raises.
    """

    def __init__(
        self,
        queue: AsyncLockingQueue,
        kv: KeyValue,
        claim_key: str,
        revision: int,
        session: AsyncSession,
    ) -> None:
        self._queue = queue
        self._kv = kv
        self.item = QueueItem(kv.key, kv.value, kv.create_revision, revision)
        """The claimed item; its ``revision`` is the claim's (the fencing token)."""
        self.claim_key = claim_key
        self.session = session
        """The session whose lease the claim is bound to."""
        self._done = False

    @property
    def key(self) -> bytes:
        return self.item.key

    @property
    def value(self) -> bytes:
        return self.item.value

    @property
    def text(self) -> str:
        return self.item.text

    @property
    def token(self) -> int:
        """The claim's create revision: unique per claim, growing with each new one."""
        return self.item.revision

    @property
    def held(self) -> bool:
        """True until consumed or released, unless the claim's session has ended
        (locally detected; a paused process cannot see it - guard writes with
        :meth:`is_owner`)."""
        return not self._done and not self.session.is_done

    def is_owner(self) -> Compare:
        """A txn compare that holds only while this claim exists: guard the effects of
        processing the item with it (or pass them to :meth:`consume`)."""
        return Compare.create_revision(self.claim_key) == self.token

    async def consume(self, ops: Iterable[Op] = (), *, timeout: float | None = None) -> int:
        """Delete the item and the claim, with ``ops`` in the same txn; returns its
        revision.

        Raises :class:`~etcdsync.errors.ClaimLostError`, writing nothing, when the
        claim is gone (its lease expired, or it was released): the item may then be
        processed by another consumer.
        """
        self._check_open()
        if self.session.is_done:
            self._done = True
            raise self._lost() from session_error(self.session)
        try:
            written, _ = await self._queue._write(
                partial(
                    _consume_ops,
                    guard=self.is_owner(),
                    item=self._kv,
                    claim=self.claim_key,
                    ops=list(ops),
                ),
                Deadline(timeout),
                context=("consume", self.claim_key),
            )
        except errors.SessionExpiredError as exc:
            self._done = True  # the claim's lease is gone, and the claim with it
            raise self._lost() from exc
        self._done = True
        if written.branch is None:
            raise self._lost()
        return written.revision

    def _lost(self) -> errors.ClaimLostError:
        return errors.ClaimLostError(
            f"the claim {self.claim_key!r} on {self.key!r} is gone (its lease ended or it "
            "was released): nothing was deleted"
        )

    async def release(self, *, timeout: float | None = None) -> bool:
        """Give the item back to the queue (delete the claim); False if the claim was
        already gone (also when its session has ended: the claim went with it)."""
        self._check_open()
        if self.session.is_done:
            self._done = True
            return False
        written, _ = await self._queue._write(
            partial(_release_ops, guard=self.is_owner(), claim=self.claim_key),
            Deadline(timeout),
            context=("release", self.claim_key),
        )
        self._done = True
        return written.branch is not None

    def _check_open(self) -> None:
        if self._done:
            raise errors.QueueError(f"the claim on {self.key!r} was consumed or released already")

    async def __aenter__(self) -> AsyncClaim:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._done:
            return
        if exc is None:
            await self.consume()
            return
        try:
            await self.release()
        except errors.EtcdError as failure:
            # The body's exception matters more; the claim ends with its lease anyway.
            log.warning("releasing the claim on %r failed: %r", self.key, failure)

    def __repr__(self) -> str:
        state = "held" if self.held else "ended"
        return f"<{type(self).__name__} {self.key!r} token={self.token} {state}>"


class AsyncLockingQueue(AsyncQueueBase[AsyncClaim]):
    """An at-least-once distributed FIFO queue; create with
    ``client.locking_queue(name)``.

    ::

        jobs = etcd.locking_queue("jobs", ttl=10)
        await jobs.put(b"resize image 42")

        claim = await jobs.get(timeout=30)    # the oldest unclaimed item, claimed
        handle(claim.value)
        await claim.consume()                 # now it is gone from the queue

    A consumer that dies before ``consume()`` loses its claim when its session's
    lease expires (``ttl`` seconds, default 60; or ``session``): the item is then
    served to another consumer.  Keep ``ttl`` short enough for the redelivery delay
    you accept and long enough that a live consumer's renewals get through.
    ``get()`` waits on a watch: it is woken by new items and by claims that end.
    """

    @property
    def items_prefix(self) -> str:
        return f"{self._name}/items/"

    @property
    def claims_prefix(self) -> str:
        """The prefix of the consumers' claims."""
        return f"{self._name}/claims/"

    @property
    def receipts_prefix(self) -> str:
        return f"{self._name}/receipts/"

    async def put(self, value: str | bytes, *, timeout: float | None = None) -> int:
        """Append ``value`` to the queue; returns the revision of the put.

        ``timeout`` bounds the whole put; if it passes before a lost answer is
        settled, raises :class:`~etcdsync.errors.QueueOutcomeUnknownError`.
        """
        return await self._put_fifo(value, timeout)

    enqueue = put
    """Go's name for :meth:`put`."""

    async def claimed(self, *, timeout: float | None = None) -> int:
        """The number of items claimed now (and still in the queue)."""
        response = await self._client.get(
            self.claims_prefix, prefix=True, keys_only=True, limit=1, timeout=timeout
        )
        return response.count

    def _suffix(self, key: bytes, prefix: str) -> bytes:
        return key[len(prefix.encode()) :]

    def _claim_key(self, item_key: bytes) -> str:
        return self.claims_prefix + self._suffix(item_key, self.items_prefix).decode()

    async def _head(self, deadline: Deadline) -> tuple[list[KeyValue], int]:
        limit = BATCH
        while True:
            # One read-only txn: the claims and the items at one revision.
            response = await self._client.txn(
                [],
                [
                    Op.get(self.claims_prefix, prefix=True, keys_only=True),
                    Op.get(
                        self.items_prefix,
                        prefix=True,
                        sort_order="ascend",
                        sort_target="create",
                        limit=limit,
                    ),
                ],
                [],
                timeout=deadline.rpc_timeout(),
            )
            claims, items = response.responses
            assert isinstance(claims, GetResponse) and isinstance(items, GetResponse)
            claimed = {self._suffix(kv.key, self.claims_prefix) for kv in claims.kvs}
            free = [
                kv
                for kv in sorted(items.kvs, key=lambda kv: (kv.create_revision, kv.key))
                if self._suffix(kv.key, self.items_prefix) not in claimed
            ]
            if free or not items.more or limit == 0:
                return free[:BATCH], response.revision
            # The head is claimed: read past the claimed items.
            wider = len(claimed) + BATCH
            limit = wider if wider > limit else 0

    def _alternatives(
        self, session: AsyncSession, head: Sequence[KeyValue], revision: int
    ) -> list[Alternative]:
        alternatives: list[Alternative] = []
        for kv in head:
            claim = self._claim_key(kv.key)
            alternatives.append(
                (
                    [Compare.version(claim) == 0, Compare.mod_revision(kv.key) == kv.mod_revision],
                    [Op.put(claim, str(kv.create_revision), lease=session.lease_id)],
                )
            )
        return alternatives

    def _taken(self, session: AsyncSession, kv: KeyValue, revision: int) -> AsyncClaim:
        return AsyncClaim(self, kv, self._claim_key(kv.key), revision, session)

    def _watch_prefix(self) -> str:
        return f"{self._name}/"

    def _watch_options(self) -> dict[str, Any]:
        return {}

    def _wakes(self, batch: Sequence[Event]) -> bool:
        items = self.items_prefix.encode()
        claims = self.claims_prefix.encode()
        deleted = {e.key for e in batch if e.type is EventType.DELETE and e.key.startswith(items)}
        for event in batch:
            if event.type is EventType.PUT and event.key.startswith(items):
                return True  # a new item
            if event.type is EventType.DELETE and event.key.startswith(claims):
                item = items + event.key[len(claims) :]
                if item not in deleted:
                    return True  # released or expired, not consumed: the item is back
        return False
