"""Partitioner: the items of a set divided among the live members of a group.

A partitioner named ``<name>`` keeps everything under ``<name>/``:

* ``<name>/members/<member id>`` - its group (:class:`~.group.AsyncGroup`), one
  lease-bound key per live member;
* ``<name>/owners/<item>`` - one owner key per owned item, holding the owner's
  member id, bound to the owner's session lease (the same lease as its member key).

**Who should own what** is a pure function of the member set: rendezvous hashing
(:func:`~etcdsync.group_types.rendezvous_owner`) gives each item to the member
with the highest score, so every member computes the same shares from the same
members, and a join or leave moves only the items whose top-scored member changed.

**Who owns what** is the owner keys, and only they.  An item is owned by the
member whose key ``<name>/owners/<item>`` exists; a member acquires an item only
by *creating* that key in a txn that requires it not to exist (``create_revision
== 0``) and requires its own member key to be current; it hands an item over by
running its ``RELEASED`` callbacks first and deleting the key afterwards
(guarded by the key's create revision).  etcd thus never holds two owner keys for
one item: no item is ever owned by two members at once, whatever the members
believe.  A new owner can create the key only once the old one is gone - deleted
by the old owner, or by etcd when the old owner's lease expired (a crashed or
frozen member loses its items within its TTL).  The create revision of the owner
key is the ownership's fencing token: writes guarded by
:meth:`AsyncPartitioner.is_owner` fail once the ownership has ended, so even a
paused owner that wakes up late cannot overwrite its successor's work.

Each member follows ``<name>/`` with one :class:`~.mirror.AsyncPrefixMirror` (one
read, one watch, reload after a compaction) and, after each change, re-balances:
it hands over the items it owns but should not, then creates the keys of the
items it should own that are free.  The loss of a membership or of an item
follows the one loss model of :mod:`.holding` (``recipes_docs/loss.md``).
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from ... import errors
from ..._backends._async import Event, Queue, StateLock, Task, spawn, wait_event
from ..._callbacks import call_callback
from ..._deadline import Deadline
from ..._keys import to_bytes
from ..._logfields import fields, loss_level
from ...group_types import (
    GroupMember,
    OwnershipChange,
    OwnershipChangeType,
    check_member_id,
    member_from_kv,
    rendezvous_owner,
)
from ...models import GetResponse, KeyValue, TxnResponse
from ...ops import Compare, Op
from .group import SESSION_ENDED, AsyncGroup
from .holding import AsyncHeldResource, LostCallback
from .mirror import AsyncPrefixMirror
from .recipe_client import AsyncRecipeClient
from .session import DEFAULT_SESSION_TTL, AsyncSession

__all__ = ["AsyncOwnedItem", "AsyncOwnershipChanges", "AsyncPartitioner", "ChangeCallback"]

log = logging.getLogger("etcdsync.partitioner")

ChangeCallback = Callable[[OwnershipChange], Any]
"""Called with each :class:`~etcdsync.group_types.OwnershipChange` of a partitioner."""

_ACQUIRED = OwnershipChangeType.ACQUIRED
_RELEASED = OwnershipChangeType.RELEASED
_LOST = OwnershipChangeType.LOST

KEY_DELETED = "key deleted"
MEMBERSHIP_LOST = "membership lost"

_BATCH = 64
"""Items acquired or deleted per request (nested txns; etcd allows 128 ops per txn)."""
_BACKOFF_START = 0.1
_BACKOFF_MAX = 5.0
_JOIN_TIMEOUT = 5.0
"""How long stop() waits for the balancing task or thread to end."""


class AsyncOwnedItem(AsyncHeldResource[errors.OwnershipLostError]):
    """One item of a partitioner, and this member's ownership of it.

    ``partitioner.item(name)`` returns it; it lives as long as the partitioner.
    While owned, :attr:`fencing_token` is the create revision of the owner key,
    :meth:`is_owner` the compare that holds only while this ownership lasts and
    :meth:`guarded_txn` writes only while it does.  Each ownership is a hold of the
    loss model (``recipes_docs/loss.md``): :attr:`lost` is cleared when the item is
    acquired and set when the ownership ends without a hand-over; a hand-over
    (``RELEASED``) is not a loss.
    """

    def __init__(self, owner: AsyncPartitioner, item: str, key: bytes) -> None:
        super().__init__()
        self._client = owner._client
        self._owner = owner
        self.item = item
        self.key = key
        """The owner key ``<name>/owners/<item>``."""
        self._token = 0

    @property
    def owned(self) -> bool:
        """True while this member owns the item, as far as this process knows."""
        return self._is_held()

    @property
    def fencing_token(self) -> int:
        """The create revision of the owner key; raises NotOwnerError when not owned."""
        with self._state_lock:
            if not self._is_held():
                raise errors.NotOwnerError(f"{self.item!r} is not owned", item=self.item)
            return self._token

    def is_owner(self) -> Compare:
        """A txn compare that holds only while this ownership lasts (the owner key
        exists with this ownership's create revision); raises
        :class:`~etcdsync.errors.NotOwnerError` when not owned."""
        return Compare.create_revision(self.key) == self.fencing_token

    async def guarded_txn(
        self,
        success: Iterable[Op],
        failure: Iterable[Op] = (),
        compare: Iterable[Compare] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResponse:
        """Run a txn only while this item is owned, atomically (see
        :meth:`AsyncHeldResource.guarded_txn`).  Raises
        :class:`~etcdsync.errors.NotOwnerError` when not owned and
        :class:`~etcdsync.errors.OwnershipLostError` (marking the ownership lost)
        when etcd finds the owner key gone: then nothing was written."""
        return await super().guarded_txn(success, failure, compare, timeout=timeout)

    # --- the loss model's declarations ----------------------------------------------------

    def _fencing_compare(self) -> Compare:
        return self.is_owner()

    def _loss(self, reason: str, cause: errors.EtcdError | None) -> errors.OwnershipLostError:
        error = errors.OwnershipLostError(
            f"ownership of {self.item!r} lost: {reason}", item=self.item, reason=reason
        )
        error.__cause__ = cause
        return error

    def _session_lost(
        self, session: AsyncSession, error: errors.EtcdError
    ) -> errors.OwnershipLostError:
        return self._loss(SESSION_ENDED, error)

    def _guard_failed(self) -> errors.OwnershipLostError:
        session = self._hold_session
        if session is not None and session.is_done:
            return self._loss(SESSION_ENDED, session.error)
        return self._loss(KEY_DELETED, None)

    def _lost_exception(self, error: errors.OwnershipLostError) -> errors.EtcdError:
        raised = errors.OwnershipLostError(error.message, item=self.item, reason=error.reason)
        raised.__cause__ = error
        return raised

    def _after_loss(self, error: errors.OwnershipLostError) -> None:
        self._owner._item_lost(self, error)

    # --- transitions, driven by the partitioner -------------------------------------------

    def _take(self, session: AsyncSession, token: int) -> bool:
        """Begin an ownership with ``token``; False if it was lost at once."""
        with self._state_lock:
            self._token = token
        self._begin_hold(session)
        with self._state_lock:
            return self._is_held()

    def _lose(self, error: errors.OwnershipLostError) -> None:
        with self._state_lock:
            hold = self._hold if self._holding else 0
        if hold:
            self._mark_lost(hold, error)

    def __repr__(self) -> str:
        state = f"owned token={self._token}" if self.owned else "not owned"
        return f"<{type(self).__name__} {self.item!r} {state}>"


class AsyncOwnershipChanges:
    """The ownership changes of a partitioner, from its creation on, as an iterator.

    ``partitioner.changes()`` creates it; ``get(timeout)`` returns the next
    :class:`~etcdsync.group_types.OwnershipChange` (raising
    :class:`~etcdsync.errors.PartitionerTimeout`); iteration ends after
    :meth:`close` or the partitioner's ``stop()``, once the changes already
    received are read.  Changes are never dropped: read them, or close it.
    """

    def __init__(self, owner: AsyncPartitioner) -> None:
        self._owner = owner
        self._queue: Queue[OwnershipChange | None] = Queue()
        self._ended = False

    def _put(self, change: OwnershipChange | None) -> None:
        self._queue.put(change)

    async def get(self, timeout: float | None = None) -> OwnershipChange:
        """The next change; StopAsyncIteration once closed and drained."""
        if self._ended:
            raise StopAsyncIteration
        try:
            change = await self._queue.get(timeout)
        except TimeoutError:
            raise errors.PartitionerTimeout(f"no ownership change within {timeout} s") from None
        if change is None:
            self._ended = True
            raise StopAsyncIteration
        return change

    def close(self) -> None:
        """Stop receiving changes; iteration ends after those already received."""
        if self._owner._forget_stream(self):
            self._queue.put(None)

    def __aiter__(self) -> AsyncOwnershipChanges:
        return self

    async def __anext__(self) -> OwnershipChange:
        return await self.get()

    async def __aenter__(self) -> AsyncOwnershipChanges:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class AsyncPartitioner:
    """A member that owns its share of ``items``; create with
    ``client.partitioner(name, items)``.

    ::

        async with etcd.partitioner("jobs", [f"shard-{i}" for i in range(64)], ttl=10) as part:
            part.add_callback(on_change)                # ACQUIRED / RELEASED / LOST
            for item in part.owned():
                await part.guarded_txn(item, [Op.put(f"out/{item}", result)])

    ``start()`` joins the group ``<name>/members`` and starts a balancing task
    (a thread in the sync client) that keeps this member's share: it hands over
    the items it should no longer own (``RELEASED`` callbacks first, then the
    owner key is deleted) and acquires the free items it should own
    (``ACQUIRED``).  Every member must pass the same ``items``.  ``stop()`` hands
    every item over and leaves.  See the module's documentation for the protocol
    and ``recipes_docs/partitioner.md`` for the guarantees.

    **Sessions.**  Without ``session=``, each ``start()`` opens a session of its
    own with ``ttl`` seconds (default 60): the member key and every owner key are
    bound to its lease, so a member that dies loses its items within ``ttl``, and
    ``stop()`` revokes it.  The member id is the lease id in hex unless
    ``member_id=`` names one (stable ids keep the shares stable across restarts).

    **Loss.**  When the membership ends without ``stop()`` (the session ended, or
    the member key was deleted), every owned item is reported ``LOST``, the
    partitioner stops balancing and :attr:`lost` is set (the group's loss model;
    ``start()`` joins again).  Each item's ownership is a held resource of its own
    (:meth:`item`): guard every write made for an item with :meth:`is_owner` or
    :meth:`guarded_txn`.
    """

    def __init__(
        self,
        client: AsyncRecipeClient,
        name: str,
        items: Iterable[str],
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
        member_id: str | None = None,
        value: str | bytes = b"",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise errors.InvalidRequest(f"a partitioner name must be a non-empty str, got {name!r}")
        if session is not None and ttl is not None:
            raise errors.InvalidRequest("pass either session or ttl, not both")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            raise errors.InvalidRequest(f"ttl must be a positive int (seconds), got {ttl!r}")
        if member_id is not None:
            check_member_id(member_id)
        if isinstance(items, (str, bytes)):
            raise errors.InvalidRequest("items must be an iterable of str, not a single str")
        listed = tuple(items)
        for item in listed:
            if not isinstance(item, str) or not item:
                raise errors.InvalidRequest(f"every item must be a non-empty str, got {item!r}")
        if len(set(listed)) != len(listed):
            raise errors.InvalidRequest("items must be unique")
        self._client = client
        self.name = name
        self.prefix = name.encode("utf-8") + b"/"
        """Everything of the partitioner lives under this prefix (``name + "/"``)."""
        self._owners_prefix = self.prefix + b"owners/"
        self._members_prefix = self.prefix + b"members/"
        self._items = listed
        self._ttl = ttl or DEFAULT_SESSION_TTL
        self._given_session = session
        self._member_id = member_id
        self._value = to_bytes(value, "value")
        self._group = AsyncGroup(client, f"{name}/members", session=session)
        self._group.add_lost_callback(self._on_membership_lost)
        self._holds = {
            item: AsyncOwnedItem(self, item, self._owners_prefix + item.encode("utf-8"))
            for item in listed
        }
        self._by_key = {hold.key: item for item, hold in self._holds.items()}
        # State shared with the keepalive's callbacks and user threads; a section
        # never waits, and never calls out (callbacks run from the outbox).
        self._lock = StateLock()
        self._running = False
        self._starting = False
        self._finished = True  # the last run's cleanup is done (or there was no run)
        self._membership_lost = False
        self._owned: dict[str, AsyncOwnedItem] = {}
        self._pending_deletes: dict[str, int] = {}  # item -> token of a key of ours to delete
        self._callbacks: list[ChangeCallback] = []
        self._streams: list[AsyncOwnershipChanges] = []
        self._outbox: deque[tuple[OwnershipChange, Event | None]] = deque()
        self._dispatching = False
        # The current run (touched by start/stop and the balancing task).
        self._session: AsyncSession | None = None
        self._owns_session = False
        self._mirror: AsyncPrefixMirror | None = None
        self._task: Task | None = None
        self._wake = Event()  # set by stop() and by a loss: ends a backoff wait
        self._stable = Event()
        self._members: tuple[str, ...] = ()
        self._desired: tuple[frozenset[str], str, frozenset[str]] | None = None

    # --- state ---------------------------------------------------------------------------

    @property
    def items(self) -> tuple[str, ...]:
        """Every item of the set, in the order given."""
        return self._items

    @property
    def group(self) -> AsyncGroup:
        """The group of the members (``<name>/members``): this member's membership."""
        return self._group

    @property
    def member_id(self) -> str | None:
        """This member's id while it is a member, else None."""
        return self._group.member_id

    @property
    def session(self) -> AsyncSession | None:
        """The session of the current (or last) run."""
        return self._session

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop` (or the membership's loss)."""
        return self._running and not self._membership_lost

    @property
    def members(self) -> tuple[str, ...]:
        """The member ids as of the last re-balance, in join order."""
        return self._members

    @property
    def revision(self) -> int:
        """The store revision of the last re-balance's view (0 before start)."""
        mirror = self._mirror
        return 0 if mirror is None else mirror.revision

    def owned(self) -> frozenset[str]:
        """The items this member owns now, as far as this process knows."""
        with self._lock:
            return frozenset(self._owned)

    def assigned(self) -> frozenset[str]:
        """The items this member should own, given the members of the last view."""
        desired = self._desired
        return frozenset() if desired is None else desired[2]

    def item(self, item: str) -> AsyncOwnedItem:
        """The ownership object of ``item`` (fencing token, compare, guarded txn, loss)."""
        hold = self._holds.get(item)
        if hold is None:
            raise errors.InvalidRequest(f"{item!r} is not an item of partitioner {self.name!r}")
        return hold

    def is_owner(self, item: str) -> Compare:
        """A txn compare that holds only while this member owns ``item``; raises
        :class:`~etcdsync.errors.NotOwnerError` when it does not."""
        return self.item(item).is_owner()

    def fencing_token(self, item: str) -> int:
        """The fencing token of this member's ownership of ``item`` (the owner key's
        create revision); raises :class:`~etcdsync.errors.NotOwnerError`."""
        return self.item(item).fencing_token

    async def guarded_txn(
        self,
        item: str,
        success: Iterable[Op],
        failure: Iterable[Op] = (),
        compare: Iterable[Compare] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResponse:
        """Run a txn only while this member owns ``item``, atomically: the ops run in
        a nested txn guarded by :meth:`is_owner`.  Returns the response with the
        real header (``revision`` is the write's) and the outcome of ``compare``.
        Raises :class:`~etcdsync.errors.NotOwnerError` when not owned and
        :class:`~etcdsync.errors.OwnershipLostError` when etcd finds the ownership
        gone (the item is then reported ``LOST``): nothing was written."""
        return await self.item(item).guarded_txn(success, failure, compare, timeout=timeout)

    # --- the membership's loss (the group's loss model) ------------------------------------

    @property
    def lost(self) -> Event:
        """Set when the membership is lost without :meth:`stop` (see ``loss.md``);
        one event for the partitioner's life, cleared by the next :meth:`start`."""
        return self._group.lost

    @property
    def lost_error(self) -> errors.MembershipLostError | None:
        """Why the membership was lost, once :attr:`lost` is set."""
        return self._group.lost_error

    def add_lost_callback(self, fn: LostCallback[errors.MembershipLostError]) -> None:
        """Call ``fn(error)`` each time the membership is lost (see the group's)."""
        self._group.add_lost_callback(fn)

    def remove_lost_callback(self, fn: LostCallback[errors.MembershipLostError]) -> int:
        """Stop calling ``fn``; how many registrations were removed."""
        return self._group.remove_lost_callback(fn)

    async def wait_lost(self, timeout: float | None = None) -> bool:
        """Wait until :attr:`lost` is set; True if it was within ``timeout`` seconds."""
        return await self._group.wait_lost(timeout)

    # --- changes -------------------------------------------------------------------------

    def add_callback(self, fn: ChangeCallback) -> None:
        """Call ``fn(change)`` for every later :class:`~etcdsync.group_types.OwnershipChange`.

        Callbacks are plain functions, called in the order of the changes: for
        ``ACQUIRED`` and ``RELEASED`` from the balancing task (thread), for
        ``LOST`` from whoever noticed the loss (the keepalive, a failed guarded
        write, the balancing task).  The owner key of a ``RELEASED`` item is
        deleted only once every callback has returned: stop the item's work there
        and the next owner cannot start before.  Keep them short; an exception is
        logged under ``etcdsync.callbacks``.
        """
        with self._lock:
            self._callbacks.append(fn)

    def remove_callback(self, fn: ChangeCallback) -> int:
        """Stop calling ``fn``; returns how many registrations were removed."""
        with self._lock:
            before = len(self._callbacks)
            self._callbacks = [cb for cb in self._callbacks if cb != fn]
            return before - len(self._callbacks)

    def changes(self) -> AsyncOwnershipChanges:
        """An iterator over the changes from now on (until closed or :meth:`stop`)."""
        stream = AsyncOwnershipChanges(self)
        with self._lock:
            self._streams.append(stream)
        return stream

    def _forget_stream(self, stream: AsyncOwnershipChanges) -> bool:
        with self._lock:
            if stream in self._streams:
                self._streams.remove(stream)
                return True
            return False

    def _publish(self, change: OwnershipChange, *, wait: bool = False) -> Event | None:
        """Queue ``change`` for delivery (the caller holds ``_lock``, so the order of
        the changes is the order of the transitions); with ``wait``, an event set
        once every callback for it has returned."""
        done = Event() if wait else None
        self._outbox.append((change, done))
        return done

    def _dispatch(self) -> None:
        """Deliver the queued changes, in order, unless someone else is delivering
        (then they deliver ours too)."""
        with self._lock:
            if self._dispatching:
                return
            self._dispatching = True
        try:
            while True:
                with self._lock:
                    if not self._outbox:
                        self._dispatching = False
                        return
                    change, done = self._outbox.popleft()
                    callbacks, streams = list(self._callbacks), list(self._streams)
                for fn in callbacks:
                    call_callback("ownership", fn, change)
                for stream in streams:
                    stream._put(change)
                if done is not None:
                    done.set()
        except BaseException:
            with self._lock:
                self._dispatching = False
            raise

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, *, timeout: float | None = None) -> AsyncPartitioner:
        """Join the group and start balancing; returns ``self`` (no-op while running).

        Returns after the first re-balance: the free items this member should own
        are acquired.  Items held by other members are handed over later, as
        their owners release them.  Raises
        :class:`~etcdsync.errors.PartitionerTimeout` after ``timeout`` seconds,
        :class:`~etcdsync.errors.GroupMemberExistsError` when ``member_id`` is
        taken, and the client's errors; nothing is left joined then.
        """
        deadline = Deadline(timeout)
        with self._lock:
            if self._running and not self._membership_lost:
                return self
            if self._starting:
                raise errors.PartitionerError(f"partitioner {self.name!r} is being started")
            self._starting = True
        try:
            await self._finish_run()  # a run that ended with a loss
            await self._start(deadline)
        except errors.Timeout as exc:
            if deadline.at is None or isinstance(exc, errors.PartitionerTimeout):
                raise
            raise errors.PartitionerTimeout(
                f"partitioner {self.name!r} did not start within {timeout} s"
            ) from exc
        finally:
            with self._lock:
                self._starting = False
        return self

    async def _start(self, deadline: Deadline) -> None:
        session = self._given_session
        owns = session is None
        if session is None:
            session = await self._client.session(ttl=self._ttl)
        mirror: AsyncPrefixMirror | None = None
        try:
            self._group._use_session(session)
            await self._group.join(
                self._value, member_id=self._member_id, timeout=deadline.remaining()
            )
            mirror = AsyncPrefixMirror(self._client, self.prefix)
            await mirror.load(deadline.remaining())
        except BaseException:
            if mirror is not None:
                await mirror.close()
            await self._group.leave()
            if owns:
                await session.close()
            raise
        with self._lock:
            self._session, self._owns_session, self._mirror = session, owns, mirror
            self._running, self._membership_lost, self._finished = True, False, False
            self._pending_deletes.clear()
            self._desired = None
        self._wake.clear()
        self._stable.clear()
        if not self._group.is_member:  # lost while loading: its callback found us not running
            self._on_membership_lost(
                self._group.lost_error
                or errors.MembershipLostError(
                    "membership lost while starting", reason=SESSION_ENDED
                )
            )
        await self._reconcile_safely(mirror)
        self._task = spawn(self._run, mirror, name="etcdsync-partitioner")

    async def stop(self) -> None:
        """Hand every item over (``RELEASED``, then the keys go) and leave the group.

        Idempotent.  With a session of its own, the session is closed: its lease
        is revoked, taking the member key and every owner key with it in one
        revision.  Ends the change iterators.
        """
        with self._lock:
            running = self._running
            self._running = False
        self._wake.set()
        mirror = self._mirror
        if mirror is not None:
            await mirror.close()
        task, self._task = self._task, None
        if task is not None:
            # Not cancelled: a re-balance under way finishes (an acquisition cut short
            # would leave keys nobody knows of); it stops at its next look.
            await task.join(_JOIN_TIMEOUT)
        if running:
            with self._lock:
                owned = list(self._owned)
            # A session of our own is revoked next: the keys go with it, in one revision.
            await self._release(owned, delete=not self._owns_session)
            await self._finish_run(join=False)
        self._stable.clear()
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream._put(None)

    async def _finish_run(self, *, join: bool = True) -> None:
        """After the balancing ended (stop, or a loss): delete what is left of ours,
        leave the group, close the run's own session.  Once per run; with ``join``,
        first wait for the balancing task (which may be finishing the run itself)."""
        if join:
            task, self._task = self._task, None
            if task is not None:
                await task.join(_JOIN_TIMEOUT)
        with self._lock:
            if self._finished:
                return
            self._finished = True
            session, owns = self._session, self._owns_session
            self._owns_session = False
            self._running = False
        if session is None:
            return
        if owns:
            # Revoking the lease deletes the member key and every owner key of ours in
            # one revision: the others see the member leave and the items free at once.
            await self._group._forget()
            try:
                await session.close()
            except errors.EtcdError as exc:
                log.log(
                    loss_level(exc),
                    "partitioner %r: revoking the session failed: %s",
                    self.name,
                    exc,
                    extra=fields(
                        "partitioner", self.name, lease_id=session.lease_id, event="revoke-failed"
                    ),
                )
        else:
            try:
                await self._delete_pending(session)
                await self._group.leave()
            except errors.EtcdError as exc:
                log.log(
                    loss_level(exc),
                    "partitioner %r: leaving failed: %s",
                    self.name,
                    exc,
                    extra=fields("partitioner", self.name, event="leave-failed"),
                )
        with self._lock:
            self._pending_deletes.clear()

    async def __aenter__(self) -> AsyncPartitioner:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- waiting -------------------------------------------------------------------------

    @property
    def stable(self) -> bool:
        """True when, as of the last view, this member owns exactly its share."""
        return self._stable.is_set()

    async def wait_stable(self, timeout: float | None = None) -> None:
        """Wait until this member owns exactly its share of the last view; raises
        :class:`~etcdsync.errors.PartitionerTimeout` after ``timeout`` seconds and
        :class:`~etcdsync.errors.PartitionerError` when not running."""
        if not self.running:
            raise errors.PartitionerError(f"partitioner {self.name!r} is not running")
        if not await wait_event(self._stable, timeout):
            raise errors.PartitionerTimeout(
                f"partitioner {self.name!r} did not own its share within {timeout} s"
            )

    # --- the balancing task --------------------------------------------------------------

    async def _run(self, mirror: AsyncPrefixMirror) -> None:
        """Re-balance after every change of the view, until stopped or lost.  A failed
        re-balance is retried after a backoff (with jitter) even without a change; a
        failed read of the view too."""
        backoff = _BACKOFF_START
        ok = True
        try:
            while self._balancing(mirror):
                watching = mirror.watching
                try:
                    if watching:
                        await mirror.step(None if ok else backoff * random.uniform(0.5, 1.0))
                    else:
                        await mirror.load()
                except (StopAsyncIteration, errors.ClientClosedError):
                    return
                except errors.EtcdError as exc:
                    log.debug("partitioner %r: following the view failed: %s", self.name, exc)
                    if not watching:  # the read failed: wait before the next one
                        await wait_event(self._wake, backoff * random.uniform(0.5, 1.0))
                        backoff = min(backoff * 2, _BACKOFF_MAX)
                    continue  # a failed watch was dropped: the next turn reads again
                except TimeoutError:
                    pass  # time to retry what failed
                if not self._balancing(mirror):
                    return
                ok = await self._reconcile_safely(mirror)
                backoff = _BACKOFF_START if ok else min(backoff * 2, _BACKOFF_MAX)
        finally:
            if self._membership_lost:
                await self._finish_run(join=False)

    def _balancing(self, mirror: AsyncPrefixMirror) -> bool:
        return (
            self._running
            and not self._membership_lost
            and not mirror.closed
            and self._mirror is mirror
        )

    async def _reconcile_safely(self, mirror: AsyncPrefixMirror) -> bool:
        """One re-balance; False when a request failed (retried after a backoff)."""
        try:
            return await self._reconcile(mirror)
        except errors.ClientClosedError:
            return True
        except errors.EtcdError as exc:
            log.debug("partitioner %r: re-balancing failed: %s", self.name, exc)
            return False

    def _desired_share(self, members: frozenset[str], me: str) -> frozenset[str]:
        cached = self._desired
        if cached is not None and cached[0] == members and cached[1] == me:
            return cached[2]
        if me in members:
            share = frozenset(i for i in self._items if rendezvous_owner(i, members) == me)
        else:
            share = frozenset()
        self._desired = (members, me, share)
        return share

    async def _reconcile(self, mirror: AsyncPrefixMirror) -> bool:
        """Compare the view with what this member owns: hand over what it should not
        own, acquire what it should own and is free.  True when nothing failed."""
        session, me = self._session, self._group.member_id
        if session is None or me is None or not self._balancing(mirror):
            return True
        revision = mirror.revision
        joined: list[GroupMember] = []
        owners: dict[str, KeyValue] = {}
        for key, kv in mirror.kvs.items():
            if key.startswith(self._owners_prefix):
                item = self._by_key.get(key)
                if item is not None:
                    owners[item] = kv
            elif key.startswith(self._members_prefix):
                member = member_from_kv(self._members_prefix, kv)
                if member is not None:
                    joined.append(member)
        joined.sort(key=lambda member: member.create_revision)
        self._members = tuple(member.id for member in joined)
        join_revision = self._group.join_revision or 0
        if me not in self._members and revision >= join_revision:
            # Our member key is gone: the membership's loss reports every item.
            await self._group._check_key()
            return True
        desired = self._desired_share(frozenset(self._members), me)
        my_value = me.encode("utf-8")

        def mine(kv: KeyValue) -> bool:
            return kv.lease == session.lease_id and kv.value == my_value

        with self._lock:
            owned = dict(self._owned)
        # Owned items whose key is gone, in a view that has seen their acquisition.
        for item, hold in owned.items():
            current = owners.get(item)
            token = hold._token
            if revision >= token and (current is None or current.create_revision != token):
                hold._lose(hold._loss(KEY_DELETED, None))
        # Keys of ours that no ownership stands for (an answer lost on the way).
        with self._lock:
            for item, kv in owners.items():
                if mine(kv) and item not in self._owned and item not in desired:
                    self._pending_deletes.setdefault(item, kv.create_revision)
        ok = await self._release([item for item in owned if item not in desired])
        with self._lock:
            busy = set(self._owned) | set(self._pending_deletes)
        wanted = [
            item
            for item in self._items
            if item in desired and item not in busy and (item not in owners or mine(owners[item]))
        ]
        if wanted:
            ok = await self._acquire(wanted, session, my_value) and ok
        with self._lock:
            stable = set(self._owned) == desired and not self._pending_deletes
        if stable and self._balancing(mirror):
            self._stable.set()
        else:
            self._stable.clear()
        return ok

    async def _release(self, items: list[str], *, delete: bool = True) -> bool:
        """Hand ``items`` over: end their ownership, deliver ``RELEASED`` (waiting for
        every callback), then (with ``delete``) delete their keys.  True when the
        deletes succeeded."""
        waits: list[Event] = []
        with self._lock:
            for item in items:
                hold = self._owned.pop(item, None)
                if hold is None:
                    continue
                token = hold._token
                hold._end_hold()
                self._pending_deletes[item] = token
                done = self._publish(OwnershipChange(_RELEASED, item, token), wait=True)
                assert done is not None
                waits.append(done)
        self._dispatch()
        for done in waits:
            await wait_event(done, None)
        session = self._session
        if session is None or not delete:
            return True
        try:
            await self._delete_pending(session)
        except errors.ClientClosedError:
            return True
        except errors.EtcdError as exc:
            log.debug("partitioner %r: deleting owner keys failed: %s", self.name, exc)
            return False
        return True

    async def _delete_pending(self, session: AsyncSession) -> None:
        """Delete the owner keys queued for deletion (each only if it still has the
        create revision we knew), a batch per request."""
        with self._lock:
            pending = list(self._pending_deletes.items())
        if session.is_done:
            with self._lock:
                self._pending_deletes.clear()  # they went with the lease
            return
        for start in range(0, len(pending), _BATCH):
            batch = pending[start : start + _BATCH]
            ops = [
                Op.txn(
                    [Compare.create_revision(self._holds[item].key) == token],
                    [Op.delete(self._holds[item].key)],
                )
                for item, token in batch
            ]
            await self._client.txn([], ops)
            with self._lock:
                for item, token in batch:
                    if self._pending_deletes.get(item) == token:
                        del self._pending_deletes[item]

    async def _acquire(self, items: list[str], session: AsyncSession, my_value: bytes) -> bool:
        """Create the owner keys of ``items`` (each only if it does not exist), while
        our membership lasts; take over keys of ours found there.  True when every
        request succeeded."""
        for start in range(0, len(items), _BATCH):
            batch = items[start : start + _BATCH]
            ops = [
                Op.txn(
                    [Compare.create_revision(self._holds[item].key) == 0],
                    [Op.put(self._holds[item].key, my_value, lease=session.lease_id)],
                    [Op.get(self._holds[item].key)],
                )
                for item in batch
            ]
            try:
                response = await self._group.guarded_txn(ops)
            except errors.NotMemberError:
                return True  # the membership's loss ends the balancing
            except errors.ClientClosedError:
                return True
            except errors.EtcdError as exc:
                # Unknown outcome: keys of ours may exist now; the view will show them.
                log.debug("partitioner %r: acquiring failed: %s", self.name, exc)
                return False
            for item, inner in zip(batch, response.responses, strict=True):
                assert isinstance(inner, TxnResponse), "the response of a nested txn"
                if inner.succeeded:
                    token = response.revision
                else:
                    found = inner.responses[0]
                    assert isinstance(found, GetResponse), "the nested get"
                    kv = found.kv
                    if kv is None or kv.lease != session.lease_id or kv.value != my_value:
                        continue  # another member's: it hands it over in its time
                    token = kv.create_revision
                self._took(item, session, token)
        return True

    def _took(self, item: str, session: AsyncSession, token: int) -> None:
        """Our key for ``item`` exists with ``token``: begin the ownership, announce it."""
        hold = self._holds[item]
        if not hold._take(session, token):
            return  # lost at once (the session ended): nothing to announce
        with self._lock:
            if not self._running or self._membership_lost or item in self._owned:
                keep = False
            else:
                keep = True
                self._owned[item] = hold
                self._publish(OwnershipChange(_ACQUIRED, item, token))
        if not keep:
            hold._end_hold()
            with self._lock:
                self._pending_deletes.setdefault(item, token)
            return
        self._dispatch()

    # --- losses --------------------------------------------------------------------------

    def _item_lost(self, hold: AsyncOwnedItem, error: errors.OwnershipLostError) -> None:
        """An item's ownership was lost (its ``_after_loss``): report it once."""
        with self._lock:
            if self._owned.get(hold.item) is not hold:
                return  # handed over (or never announced) meanwhile
            del self._owned[hold.item]
            self._stable.clear()
            self._publish(OwnershipChange(_LOST, hold.item, hold._token, error))
        self._dispatch()

    def _on_membership_lost(self, error: errors.MembershipLostError) -> None:
        """The group's lost callback: every item is lost, the balancing stops."""
        reason = SESSION_ENDED if error.reason == SESSION_ENDED else MEMBERSHIP_LOST
        with self._lock:
            if not self._running:
                return
            self._membership_lost = True
            owned = list(self._owned.values())
            # Keys of ours may outlive the membership (its key alone was deleted).
            for hold in owned:
                self._pending_deletes.setdefault(hold.item, hold._token)
            mirror = self._mirror
        for hold in owned:
            hold._lose(hold._loss(reason, error))
        self._stable.clear()
        self._wake.set()
        if mirror is not None:
            spawn(mirror.close, name="etcdsync-partitioner-stop")

    def __repr__(self) -> str:
        state = "running" if self.running else "lost" if self._membership_lost else "stopped"
        return (
            f"<{type(self).__name__} {self.name!r} {state} member={self.member_id!r} "
            f"owned={len(self._owned)}/{len(self._items)}>"
        )
