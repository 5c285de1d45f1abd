"""Receipts: settling a queue write whose answer was lost.

A queue write (a put, a take, a claim, a consume) that fails with
:class:`~etcdsync.errors.Timeout` or :class:`~etcdsync.errors.Unavailable` may or
may not have been applied - and may even be applied *later*, when a member that
had already appended it to its log commits it.  Repeating it blindly would put an
item twice; forgetting it would lose a taken item.  So every such write also
stamps a **receipt**: a lease-bound key of the writer's own, guarded by its mod
revision::

    txn([mod_revision(receipt) == m],                    # nobody else writes it
        [txn(<the write's compares>, <its ops> + [put(receipt, "<seq>:<branch>")],
             [<the next alternative, the same way>]),
         get(receipt)],
        [get(receipt)])

After an unknown outcome the writer *settles* it with one more txn:
``txn([mod_revision(receipt) == m], [put(receipt, "<seq>:fence")], [get(receipt)])``.
If the fence is applied, the write was not, and never will be: its compare on
``m`` is false from now on.  If the fence is refused, the receipt changed, which
only the write itself can have done, and the receipt's value says which branch
ran.  A write whose receipt's lease is gone cannot be applied either (etcd refuses
a put bound to a missing lease), so a receipt needs no cleanup: it lives as long
as its session.

Receipts are pooled per (session, client, queue name) in the process, so queue
objects created per request share a handful of receipt keys instead of leaving one
each; a receipt serves one write at a time.  A write that stays unsettled past its
deadline leaves its receipt *pending*; the next write through the same pool tries
to settle it first, and a take found applied then is handed to the next ``get()``
(nothing taken is dropped while the session lives).
"""

from __future__ import annotations

import logging
import secrets
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ... import errors
from ..._backends._async import StateLock, sleep
from ..._deadline import Deadline
from ...models import GetResponse, KeyValue
from ...ops import Compare, Op
from ._waiting import session_error
from .recipe_client import AsyncRecipeClient
from .session import AsyncSession

__all__ = ["Alternative", "AsyncReceipt", "AsyncReceiptBook", "Written", "receipt_book"]

log = logging.getLogger("etcdsync.recipes")

_FENCE = "fence"
_INIT = "init"
# Backoff between attempts to settle (seconds): the cluster is electing a leader.
_SETTLE_FIRST_DELAY = 0.05
_SETTLE_MAX_DELAY = 1.0
# Each settling attempt waits at most this long at first (doubling after each one
# that timed out): a request whose proposal died with a crashed leader is answered
# only by the server's own request timeout (~6 s on etcd 3.5), while a fence sent
# anew reaches the new leader as soon as there is one.  Fences are safe to repeat.
_SETTLE_FIRST_ATTEMPT = 1.0

Alternative = tuple[Sequence[Compare], Sequence[Op]]
"""One branch of a receipted write: its compares and the ops it runs when they hold."""


@dataclass(frozen=True)
class Written:
    """What a receipted write did.

    ``branch`` is the index of the alternative that ran (None: none of them);
    ``revision`` the store revision of the write when one ran (else of the read);
    ``context`` whatever the caller handed to :meth:`AsyncReceipt.write`.
    ``settled`` is True when the answer was lost and the receipt had to be read back.
    """

    branch: int | None
    revision: int
    context: Any = None
    settled: bool = False


def outcome_unknown(exc: BaseException) -> bool:
    """True when a write that raised ``exc`` may have been applied (now or later)."""
    if isinstance(exc, errors.ConnectionFailedError | errors.ResourceExhaustedError):
        return False  # never reached a member, or refused before it was proposed
    if isinstance(exc, errors.ClientError | errors.AuthError | errors.ClientClosedError):
        return False  # refused by the server's checks, or the client is gone
    return not isinstance(exc, errors.ForkedClientError)


def _kv(response: object) -> KeyValue | None:
    assert isinstance(response, GetResponse)
    return response.kv


class AsyncReceipt:
    """One receipt key: serves one write at a time (see the module docstring)."""

    def __init__(self, key: str, session: AsyncSession) -> None:
        self.key = key
        self.lease_id = session.lease_id
        # Weak: the registry of books must not keep a session (its key) alive.
        self._session = weakref.ref(session)
        self.mod = 0  # the receipt's mod revision as last known; 0 before init
        self.seq = 0
        self.pending: Written | None = None  # an unsettled write (branch unknown)

    def _stamp(self, note: str) -> Op:
        return Op.put(self.key, f"{self.seq}:{note}", lease=self.lease_id)

    def _guard(self) -> Compare:
        return Compare.mod_revision(self.key) == self.mod

    async def _init(self, client: AsyncRecipeClient, deadline: Deadline) -> None:
        """Create the receipt key (bound to the session's lease)."""
        while True:
            try:
                response = await client.txn(
                    [Compare.version(self.key) == 0],
                    [self._stamp(_INIT)],
                    [Op.get(self.key)],
                    timeout=deadline.rpc_timeout(),
                )
            except errors.LeaseNotFoundError:
                raise self._session_gone() from None
            except Exception as exc:
                if not outcome_unknown(exc) and not isinstance(exc, errors.ConnectionFailedError):
                    raise
                if deadline.expired():
                    raise
                await sleep(min(_SETTLE_FIRST_DELAY, deadline.remaining() or _SETTLE_FIRST_DELAY))
                continue
            if response.succeeded:
                self.mod = response.revision
                return
            kv = _kv(response.responses[0])
            if kv is None or kv.lease != self.lease_id:
                raise errors.QueueError(f"the receipt key {self.key!r} is used by someone else")
            self.mod = kv.mod_revision  # an earlier attempt of ours created it
            return

    def _session_gone(self) -> errors.EtcdError:
        session = self._session()
        if session is not None and session.is_done:
            return session_error(session)
        return errors.SessionExpiredError(
            f"the receipt {self.key!r} is gone with the lease {self.lease_id:x}",
            lease_id=self.lease_id,
            reason="expired",
        )

    async def write(
        self,
        client: AsyncRecipeClient,
        alternatives: Sequence[Alternative],
        deadline: Deadline,
        context: Any = None,
    ) -> Written:
        """Run the first alternative whose compares hold (or none), stamping the
        receipt; settle the outcome if the answer is lost.

        Raises :class:`~etcdsync.errors.QueueOutcomeUnknownError` (the receipt is
        left pending) when the outcome cannot be settled before ``deadline``; a
        session error when the receipt's lease is gone (nothing was written); any
        other error of the request when nothing was written.
        """
        assert self.pending is None, "settle a pending receipt before writing through it"
        for _ in range(2):
            if self.mod == 0:
                await self._init(client, deadline)
            self.seq += 1
            chain: list[Op] = []
            for index in reversed(range(len(alternatives))):
                compares, ops = alternatives[index]
                chain = [Op.txn(compares, [*ops, self._stamp(str(index))], chain)]
            try:
                response = await client.txn(
                    [self._guard()],
                    [*chain, Op.get(self.key)],
                    [Op.get(self.key)],
                    timeout=deadline.rpc_timeout(),
                )
            except errors.LeaseNotFoundError:
                raise self._session_gone() from None
            except BaseException as exc:
                if not outcome_unknown(exc):
                    raise
                self.pending = Written(None, 0, context)
                if not isinstance(exc, Exception):
                    raise  # cancelled or interrupted: settled by a later write
                return await self.settle(client, deadline, exc)
            kv = _kv(response.responses[-1])
            if response.succeeded:
                assert kv is not None
                self.mod = kv.mod_revision
                branch = self._branch(kv.value)
                assert branch != _FENCE
                return Written(
                    branch if isinstance(branch, int) else None, response.revision, context
                )
            # The receipt changed under us: nothing was written.  Its lease is gone,
            # or someone deleted the key: then make it anew and write again (once).
            self.mod = 0
            session = self._session()
            if kv is not None or session is None or session.is_done:
                break
        raise self._session_gone()

    def _branch(self, value: bytes) -> int | str | None:
        """The branch this seq's stamp names (an index or "fence"), None if not stamped."""
        seq, _, note = value.decode().partition(":")
        if seq != str(self.seq):
            return None
        return note if note in (_FENCE, _INIT) else int(note)

    async def settle(
        self, client: AsyncRecipeClient, deadline: Deadline, cause: BaseException | None = None
    ) -> Written:
        """Settle the pending write: read its receipt back, fencing it off if it was
        not applied.  Raises QueueOutcomeUnknownError if ``deadline`` passes first
        (the receipt stays pending) or if the receipt's lease is gone (then the
        write can no longer be applied, but whether it was is unknowable)."""
        pending = self.pending
        assert pending is not None
        delay, attempt = _SETTLE_FIRST_DELAY, _SETTLE_FIRST_ATTEMPT
        while True:
            budget = deadline.rpc_timeout()
            try:
                response = await client.txn(
                    [self._guard()],
                    [self._stamp(_FENCE)],
                    [Op.get(self.key)],
                    timeout=attempt if budget is None else min(budget, attempt),
                )
            except errors.LeaseNotFoundError:
                self.pending, self.mod = None, 0
                raise self._unknown(cause, "the session's lease ended") from None
            except Exception as exc:
                if not outcome_unknown(exc) and not isinstance(exc, errors.ConnectionFailedError):
                    raise
                cause = exc
                if deadline.expired():
                    raise self._unknown(cause, "the deadline passed") from exc
                if isinstance(exc, errors.Timeout):
                    attempt *= 2  # maybe the cluster is just slow: give it longer
                else:
                    await sleep(min(delay, deadline.remaining() or delay))
                    delay = min(delay * 2, _SETTLE_MAX_DELAY)
                continue
            if response.succeeded:
                self.mod = response.revision  # fenced: the write was not applied
                branch: int | str | None = _FENCE
            else:
                kv = _kv(response.responses[0])
                if kv is None:
                    self.pending, self.mod = None, 0
                    raise self._unknown(cause, "the session's lease ended")
                self.mod = kv.mod_revision
                branch = self._branch(kv.value)
            self.pending = None
            log.info(
                "settled a queue write whose answer was lost: %s (receipt %r)",
                "applied" if isinstance(branch, int) else "not applied",
                self.key,
            )
            if isinstance(branch, int):
                return Written(branch, self.mod, pending.context, settled=True)
            # Fenced now or by an earlier settle attempt, or nothing stamped by this seq.
            return Written(None, self.mod, pending.context, settled=True)

    def _unknown(self, cause: BaseException | None, why: str) -> errors.QueueOutcomeUnknownError:
        error = errors.QueueOutcomeUnknownError(
            f"the outcome of a queue write is unknown ({why}; receipt {self.key!r})"
        )
        error.__cause__ = cause
        return error


class AsyncReceiptBook:
    """The receipts of one (session, client, queue name) in this process."""

    def __init__(self, prefix: str, session: AsyncSession) -> None:
        self._prefix = prefix
        self._session_ref = weakref.ref(session)
        self._lock = StateLock()
        self._free: list[AsyncReceipt] = []
        self._pending: list[AsyncReceipt] = []
        self.recovered: deque[Written] = deque()
        """Writes settled later than their call returned, found applied (e.g. a take
        whose ``get()`` raised): the next ``get()`` hands them out."""

    def take(self) -> AsyncReceipt:
        """A free receipt (a new one if none is free); hand it back with :meth:`give`."""
        with self._lock:
            if self._free:
                return self._free.pop()
        session = self._session_ref()
        if session is None:
            raise errors.ClientClosedError("the session of this queue is gone")
        key = f"{self._prefix}{session.lease_id:x}-{secrets.token_hex(4)}"
        return AsyncReceipt(key, session)

    def give(self, receipt: AsyncReceipt) -> None:
        with self._lock:
            (self._pending if receipt.pending is not None else self._free).append(receipt)

    async def settle_pending(self, client: AsyncRecipeClient, deadline: Deadline) -> None:
        """Settle every pending receipt within ``deadline`` (moving applied writes to
        :attr:`recovered`); those still unsettled when it passes stay pending."""
        with self._lock:
            pending, self._pending = self._pending, []
        for receipt in pending:
            try:
                written = await receipt.settle(client, deadline)
            except errors.QueueOutcomeUnknownError:
                if receipt.pending is not None:
                    self.give(receipt)
                continue
            except BaseException:
                self.give(receipt)
                raise
            if written.branch is not None:
                self.recovered.append(written)
            self.give(receipt)


# session -> client -> receipt key prefix -> book.  Weak on both levels: a book lives
# as long as its session and its client (a namespaced view of a client is a client
# of its own here, since its keys are elsewhere).
_BOOKS: weakref.WeakKeyDictionary[AsyncSession, weakref.WeakKeyDictionary[Any, dict[str, Any]]]
_BOOKS = weakref.WeakKeyDictionary()
_BOOKS_LOCK = StateLock()


def receipt_book(client: AsyncRecipeClient, session: AsyncSession, prefix: str) -> AsyncReceiptBook:
    """The process's receipt book for ``client``, ``session`` and the receipt key
    ``prefix`` (one per queue name)."""
    with _BOOKS_LOCK:
        per_client = _BOOKS.get(session)
        if per_client is None:
            per_client = _BOOKS[session] = weakref.WeakKeyDictionary()
        try:
            books = per_client.get(client)
            if books is None:
                books = per_client[client] = {}
        except TypeError:  # a client object that cannot be weakly referenced
            return AsyncReceiptBook(prefix, session)
        book = books.get(prefix)
        if book is None:
            book = books[prefix] = AsyncReceiptBook(prefix, session)
        assert isinstance(book, AsyncReceiptBook)
        return book
