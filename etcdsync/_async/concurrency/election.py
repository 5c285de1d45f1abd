"""Leader election on etcd, in the key layout of Go's ``concurrency`` package.

Each candidate writes ``<name>/<lease id in hex>`` holding its proposal, bound to
its session's lease; the leader is the candidate whose key has the lowest create
revision under ``<name>/``.  A candidate waits only for the deletion of the
candidates created before it, so ``etcdctl elect`` and Go programs share one
election with ours.  The leader's create revision is its fencing token: a write
guarded by :meth:`AsyncElection.is_leader_compare` fails once another candidate
could lead.  A term's loss is reported by the model of :mod:`.holding`
(``recipes_docs/loss.md``); observing is :mod:`.election_observer`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ... import errors
from ... import telemetry as _telemetry
from ..._backends._async import spawn, wait_event
from ..._deadline import CLEANUP_MIN_TIMEOUT, Deadline
from ..._keys import to_bytes
from ..._logfields import fields, loss_level
from ...models import GetResponse, KeyValue, TxnResponse
from ...ops import Compare, Op
from ...watch_types import EventType
from ._cleanup import cleanup_now, delete_in_background, delete_key, nothing_written
from ._waiting import (
    AsyncWaitAbort,
    OwnKeyGone,
    request_while_alive,
    session_error,
    wait_for_deletes,
)
from .election_observer import AsyncElectionObserver
from .holding import AsyncHeldResource
from .leadership import AsyncLeadership, AsyncTerm, run_leadership
from .recipe_client import AsyncRecipeClient
from .session import DEFAULT_SESSION_TTL, AsyncSession

if TYPE_CHECKING:
    from ..watcher import AsyncWatcher

__all__ = ["AsyncElection", "AsyncElectionObserver", "LostCallback"]

log = logging.getLogger("etcdsync.election")

LostCallback = Callable[[errors.LeadershipLostError], Any]
"""Called with a :class:`~etcdsync.errors.LeadershipLostError` when a term is lost."""

_R = TypeVar("_R")

# The leader key's watch of a term won at its campaign's deadline starts in the
# background: each attempt's timeout, and the pause between failed attempts.
_WATCH_ATTEMPT_TIMEOUT = 2.0
_WATCH_FIRST_DELAY = 0.1
_WATCH_MAX_DELAY = 2.0


class AsyncElection(AsyncHeldResource[errors.LeadershipLostError]):
    """A leader election named ``name``; create with ``client.election(name)``.

    ``await campaign(value)`` blocks until this candidate leads;
    ``proclaim(value)`` changes the announced value while leading;
    ``resign()`` steps down; ``leader()`` reads the current leader and
    ``observe()`` follows every leadership change.  Observing needs no session;
    campaigning uses ``session`` if given, else the client's shared session for
    ``ttl`` seconds (default 60).

    Leadership ends without a resign when the session ends (the process froze,
    the network failed, the lease expired) or the leader key is deleted: then
    :attr:`lost` is set, :attr:`lost_error` says why (a
    :class:`~etcdsync.errors.LeadershipLostError`) and the callbacks given to
    :meth:`add_lost_callback` are called - the one loss model of every held
    resource (``recipes_docs/loss.md``): :attr:`lost` is one event for the
    object's life, cleared when a new term begins.  Because another candidate may
    lead before this process learns it, guard every write made as leader with
    :meth:`is_leader_compare` (the fencing token) in one txn, or use
    :meth:`guarded_txn`.

    Two candidates of one process must not campaign through one session (they
    would write the same key): a candidate claims its key in the session's
    in-process claims; on the shared session a taken claim sends it to a private
    session of its own, on an explicit ``session`` it is refused.

    ``async with election:`` resigns on exit.
    """

    _telemetry_kind = "election"

    def __init__(
        self,
        client: AsyncRecipeClient,
        name: str | bytes,
        *,
        session: AsyncSession | None = None,
        ttl: int | None = None,
    ) -> None:
        raw_name = to_bytes(name, "election name")
        if not raw_name:
            raise errors.InvalidRequest("the election name must not be empty")
        if session is not None and ttl is not None:
            raise errors.InvalidRequest("pass either session or ttl, not both")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            raise errors.InvalidRequest(f"ttl must be a positive int (seconds), got {ttl!r}")
        super().__init__()
        self._client = client
        self.name = name
        self.prefix = raw_name + b"/"
        """The key prefix every candidate's key starts with (``name + "/"``)."""
        self._given_session = session
        self._ttl = ttl or DEFAULT_SESSION_TTL
        # Guarded by _state_lock (shared with the session's callback thread):
        self._term = 0  # bumped per candidacy and per withdrawal; older ones stop
        self._campaigning = False
        self._session: AsyncSession | None = None
        self._owns_session = False
        self._claimed: AsyncSession | None = None  # whose claim on our key we hold
        self._key: bytes | None = None
        self._rev = 0
        self._key_watcher: AsyncWatcher | None = None
        self._abort: AsyncWaitAbort | None = None  # ends the running campaign's wait

    # --- state -------------------------------------------------------------------------

    @property
    def session(self) -> AsyncSession | None:
        """The session of the current candidacy (None before the first campaign)."""
        return self._session

    @property
    def is_leader(self) -> bool:
        """True while this candidate leads, as far as this process knows."""
        return self._is_held()

    @property
    def leader_key(self) -> bytes | None:
        """This candidate's key while it leads, else None."""
        return self._key if self._is_held() else None

    @property
    def leader_revision(self) -> int | None:
        """The create revision of the leader key while leading: the fencing token."""
        return self._rev if self._is_held() else None

    def is_leader_compare(self) -> Compare:
        """A txn compare that holds only while this candidate's leadership lasts.

        ``client.txn([election.is_leader_compare()], [...])`` applies the writes
        only if the leader key still exists with this term's create revision.
        Raises :class:`~etcdsync.errors.NotElectedError` when not leading.
        """
        with self._state_lock:
            key, rev, leading = self._key, self._rev, self._is_held()
        if not leading or key is None:
            raise errors.NotElectedError(f"not the leader of {self.name!r}")
        return Compare.create_revision(key) == rev

    async def guarded_txn(
        self,
        success: Iterable[Op],
        failure: Iterable[Op] = (),
        compare: Iterable[Compare] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResponse:
        """Run a txn (``compare`` / ``success`` / ``failure``) only while this
        leadership lasts, atomically (see :meth:`AsyncHeldResource.guarded_txn`).

        Returns the response with the real header (``revision`` is the write's)
        and the outcome of ``compare``.  Raises
        :class:`~etcdsync.errors.NotElectedError` when not leading and
        :class:`~etcdsync.errors.LeadershipLostError` (setting :attr:`lost`) when
        the leadership is lost or etcd finds the leader key gone: then nothing
        was written.
        """
        return await super().guarded_txn(success, failure, compare, timeout=timeout)

    # --- the loss model's declarations ----------------------------------------------------

    def _fencing_compare(self) -> Compare:
        return self.is_leader_compare()

    def _loss(self, reason: str, cause: errors.EtcdError | None) -> errors.LeadershipLostError:
        error = errors.LeadershipLostError(
            f"leadership of {self.name!r} lost: {reason}", reason=reason
        )
        error.__cause__ = cause
        return error

    def _session_lost(
        self, session: AsyncSession, error: errors.EtcdError
    ) -> errors.LeadershipLostError:
        return self._loss("session ended", error)

    def _guard_failed(self) -> errors.LeadershipLostError:
        return self._loss("key deleted", None)

    def _lost_exception(self, error: errors.LeadershipLostError) -> errors.EtcdError:
        raised = errors.LeadershipLostError(error.message, reason=error.reason)
        raised.__cause__ = error
        return raised

    def _after_loss(self, error: errors.LeadershipLostError) -> None:
        # A loss because this process closed its session or client is expected (INFO);
        # a lease lost or a key deleted behind our back is a WARNING.
        session = self._session
        log.log(
            loss_level(error),
            "%s",
            error,
            extra=fields(
                "election",
                self.name,
                key=self._key,
                lease_id=session.lease_id if session is not None else None,
                event="lost",
            ),
        )
        # The key is gone (or goes with the lease): another candidate of this
        # process may use the session again.
        self._release_claim()

    # --- campaigning -------------------------------------------------------------------

    @_telemetry.traced("election.campaign", _telemetry.describe_campaign)
    async def campaign(self, value: str | bytes, *, timeout: float | None = None) -> None:
        """Become a candidate with proposal ``value`` and wait until elected.

        Returns once this candidate leads.  Raises
        :class:`~etcdsync.errors.ElectionTimeout` if not elected within
        ``timeout`` seconds (None or ``inf``: no limit; the creation of the
        session included; no request is started after it, and the candidacy's
        key is deleted in the background once the error is raised), the session's error
        (:class:`~etcdsync.errors.SessionExpiredError`...) if the session ends
        while waiting, :class:`~etcdsync.errors.LeadershipLostError` if the key
        vanished while waiting, :class:`~etcdsync.errors.ForeignKeyError` when a
        key without a lease sits among the older candidates, and
        :class:`~etcdsync.errors.ElectionError` when :meth:`resign` is called
        (from another task or thread) while it waits.  Cancelling the call
        withdraws the candidacy too.  Called while already leading, it only
        changes the value (like :meth:`proclaim`).
        """
        proposal = to_bytes(value, "value")
        deadline = Deadline(timeout)
        if self.is_leader:
            await self.proclaim(proposal, timeout=deadline.rpc_timeout())
            return
        abort = AsyncWaitAbort()
        with self._state_lock:
            if self._campaigning:
                raise errors.ElectionError(f"a campaign for {self.name!r} is already running")
            self._campaigning = True
            self._abort = abort
        try:
            await self._cleanup()
            try:
                await self._campaign(proposal, deadline, abort)
            except _LeaseGone as gone:
                if self._given_session is not None:
                    raise gone.error from None
                # The shared session's lease proved gone (revoked elsewhere) before
                # anything was written: once more, on the fresh shared session.
                await self._campaign(proposal, deadline, abort)
        except BaseException as exc:
            error = exc.error if isinstance(exc, _LeaseGone) else exc
            if (
                deadline.at is not None
                and isinstance(error, TimeoutError)
                and not isinstance(error, errors.ElectionTimeout)
            ):
                raise errors.ElectionTimeout(
                    f"not elected leader of {self.name!r} within the timeout"
                ) from error
            if error is not exc:
                raise error from None
            raise
        finally:
            with self._state_lock:
                self._campaigning = False

    async def _campaign(self, proposal: bytes, deadline: Deadline, abort: AsyncWaitAbort) -> None:
        abort.check()
        session, term = await self._enter(deadline)
        key = self._candidate_key(session)
        rev = 0
        attempts = 0
        try:
            abort.check()
            if deadline.timeout and deadline.expired():
                # The session's creation took the time: no request after the deadline
                # (a timeout=0 campaign still makes its one deciding request).
                raise errors.ElectionTimeout(
                    f"not elected leader of {self.name!r} within the timeout"
                )

            # Each request is safe to repeat (create-if-absent, update-if-ours, a
            # read): a waiter repeats it while it times out, each attempt bounded, so
            # that it notices its session's end (or a resign) on a silent endpoint.
            # The create also reads the oldest candidate: when that is the key just
            # created, the campaign is won in this one request.
            oldest = Op.get(
                self.prefix, prefix=True, sort_order="ascend", sort_target="create", limit=1,
                keys_only=True,
            )  # fmt: skip

            async def create(timeout: float | None) -> TxnResponse:
                nonlocal attempts
                attempts += 1
                return await self._client.txn(
                    [Compare.create_revision(key) == 0],
                    [Op.put(key, proposal, lease=session.lease_id), oldest],
                    [Op.get(key)],
                    timeout=timeout,
                )

            try:
                response = await request_while_alive(session, deadline, create, abort)
            except errors.LeaseExpiredError:
                raise  # the session ended while the txn was repeated: not a proof about the lease
            except errors.LeaseNotFoundError as exc:
                raise _LeaseGone(session.lease_gone(exc)) from None
            first: list[KeyValue] = []
            if response.succeeded:
                rev = response.revision
                found_oldest = response.responses[1]
                assert isinstance(found_oldest, GetResponse)
                first = found_oldest.kvs
            else:
                # Our session already has a key here (an earlier candidacy that was
                # not withdrawn): keep its place in the queue, update its value.
                found = response.responses[0]
                assert isinstance(found, GetResponse) and found.kvs, "txn get of an existing key"
                rev = found.kvs[0].create_revision
                if found.kvs[0].value != proposal:

                    async def update(timeout: float | None) -> TxnResponse:
                        return await self._client.txn(
                            [Compare.create_revision(key) == rev],
                            [Op.put(key, proposal, lease=session.lease_id)],
                            timeout=timeout,
                        )

                    updated = await request_while_alive(session, deadline, update, abort)
                    if not updated.succeeded:
                        raise await self._vanished(session, key, deadline, abort)
            with self._state_lock:
                if term == self._term:
                    self._key, self._rev = key, rev
            if first and first[0].key == key and first[0].create_revision == rev:
                # Our new key is the oldest: elected at the create's revision.
                seen = response.revision
            elif deadline.expired():
                # No request after the deadline: the withdrawal goes on in the background.
                raise errors.ElectionTimeout(
                    f"not elected leader of {self.name!r} within the timeout"
                )
            else:
                # Wait for every older candidate to go; the read that finds none left
                # also makes sure our key did not go with them (an expired lease deletes
                # it too, and then nobody older remains either).
                try:
                    seen = await wait_for_deletes(
                        self._client,
                        self.prefix,
                        rev - 1,
                        session=session,
                        timeout=deadline.remaining(),
                        abort=abort,
                        leased_only=True,
                        own_key=key,
                    )
                except OwnKeyGone:
                    raise await self._vanished(session, key, deadline, abort) from None
            await self._install(session, term, key, rev, seen, deadline, abort)
        except BaseException as exc:
            # A create never sent, or refused as a whole (permissions...), wrote
            # nothing to withdraw.
            written = not (rev == 0 and (not attempts or nothing_written(exc, attempts)))
            await self._abandon(session, term, key, rev, deadline, exc, written=written)
            raise

    async def _vanished(
        self, session: AsyncSession, key: bytes, deadline: Deadline, abort: AsyncWaitAbort
    ) -> errors.EtcdError:
        """The error for our candidate key found gone while campaigning."""
        if abort.error is not None:
            return abort.error
        if session.is_done:
            return session_error(session)
        try:
            await self._client.time_to_live(session.lease_id, timeout=deadline.rpc_timeout())
        except errors.LeaseNotFoundError as exc:
            return session.lease_gone(exc)
        return errors.LeadershipLostError(
            f"the candidate key {key!r} was deleted while campaigning", reason="key deleted"
        )

    def _candidate_key(self, session: AsyncSession) -> bytes:
        return self.prefix + format(session.lease_id, "x").encode()

    def _claim_key(self, session: AsyncSession) -> bytes:
        # The server-side key: equal relative keys in two namespaces are not one claim.
        return self._client.key_prefix + self._candidate_key(session)

    async def _enter(self, deadline: Deadline) -> tuple[AsyncSession, int]:
        """Pick the session of a new candidacy and claim its key in-process."""
        owns = False
        if self._given_session is not None:
            session = self._given_session
            if session.is_done:
                raise session_error(session)
            # A claim being released (our last candidacy's withdrawal, in the
            # background) is waited for, within the deadline (at least a short grace);
            # another candidate's is not.
            remaining = deadline.remaining()
            releasing = None if remaining is None else max(remaining, CLEANUP_MIN_TIMEOUT)
            claim_key = self._claim_key(session)
            if not await session.claims.claim(claim_key, 0, releasing=releasing):
                raise errors.ElectionError(
                    f"another candidate of this process campaigns for {self.name!r} with "
                    "this session; give each concurrent candidate its own session"
                )
        else:
            session = await self._client.shared_session(self._ttl, timeout=deadline.remaining())
            if not await session.claims.claim(self._claim_key(session), 0):
                # A private session, revoked when the candidacy ends; a grant whose
                # caller is cancelled is revoked in the background.
                session = await AsyncSession.create(
                    self._client, ttl=self._ttl, timeout=deadline.rpc_timeout()
                )
                await session.claims.claim(self._claim_key(session), 0)  # a new session
                owns = True
        with self._state_lock:
            self._term += 1
            self._session, self._owns_session, self._claimed = session, owns, session
            self._key, self._rev = None, 0
            return session, self._term

    def _release_claim(self) -> None:
        with self._state_lock:
            session, self._claimed = self._claimed, None
        if session is not None:
            session.claims.release(self._claim_key(session))

    async def _install(
        self,
        session: AsyncSession,
        term: int,
        key: bytes,
        rev: int,
        seen_revision: int,
        deadline: Deadline,
        abort: AsyncWaitAbort,
    ) -> None:
        """Begin the won term (unless the candidacy was withdrawn meanwhile) and
        start noticing its loss: the session's end, the key's deletion."""
        hold = self._begin_hold(session, valid=lambda: term == self._term and abort.error is None)
        if not hold:
            abort.check()
            raise errors.ElectionError("the candidacy was withdrawn while campaigning")
        if deadline.expired():
            # Won, but no request after the deadline: the key watch starts from the
            # won revision in the background (no deletion can be missed).
            spawn(
                self._watch_key_later, session, hold, key, rev, seen_revision,
                name="etcdsync-election-key",
            )  # fmt: skip
            return
        # require_leader (here and below): a member cut off from its leader never
        # reports the key's deletion; the header makes it end the stream so the watch
        # resumes on a member that has a leader.
        try:
            watcher = await self._client.watch(
                key,
                start_revision=seen_revision + 1,
                require_leader=True,
                timeout=deadline.rpc_timeout(),
            )
        except BaseException:
            self._end_hold(hold)
            raise
        with self._state_lock:
            self._key_watcher = watcher
        spawn(self._follow_key, watcher, session, hold, key, rev, name="etcdsync-election-key")

    async def _watch_key_later(
        self, session: AsyncSession, hold: int, key: bytes, rev: int, seen_revision: int
    ) -> None:
        """Start the leader key's watch (from ``seen_revision + 1``) for a term won
        at its campaign's deadline, retrying while it fails, then follow the key;
        stops once the term or the session ends."""
        delay = _WATCH_FIRST_DELAY
        while self._hold == hold and not session.is_done and not self._client.closed:
            try:
                watcher = await self._client.watch(
                    key,
                    start_revision=seen_revision + 1,
                    require_leader=True,
                    timeout=_WATCH_ATTEMPT_TIMEOUT,
                )
            except errors.EtcdError as exc:
                log.debug("election %r: starting the leader key watch: %s", self.name, exc)
                await wait_event(session.done, delay)
                delay = min(delay * 2, _WATCH_MAX_DELAY)
                continue
            with self._state_lock:
                current = self._hold == hold
                if current:
                    self._key_watcher = watcher
            if current:
                await self._follow_key(watcher, session, hold, key, rev)
            else:
                await watcher.cancel()  # the term ended meanwhile (resign)
            return

    async def _abandon(
        self,
        session: AsyncSession,
        term: int,
        key: bytes,
        rev: int,
        deadline: Deadline,
        exc: BaseException,
        *,
        written: bool = True,
    ) -> None:
        """A campaign failed: end candidacy ``term`` and delete its key - guarded by
        its create revision, or by our lease when the put's outcome is unknown - in
        the caller's remaining time or in the background (:mod:`._cleanup`: at once
        when the deadline has passed); a dead session's key is left to its lease, a
        key never ``written`` needs no request.  The in-process claim is released
        once the key is gone; a private session is revoked instead (its key goes with it)."""
        with self._state_lock:
            if term == self._term:
                self._term += 1  # the candidacy ends now
            if not self._holding:
                self._key, self._rev = None, 0
            owns = self._owns_session and self._session is session
            if owns:
                self._owns_session = False
            claimed = self._claimed is session
            if claimed:
                self._claimed = None
        now, timeout = cleanup_now(exc, deadline)
        if owns:
            if not now:
                session.close_in_background()
            else:
                try:
                    await session.close(timeout=timeout)
                except errors.EtcdError as error:
                    log.debug("election %r: revoking a private session: %s", self.name, error)
            return  # a private session's claims die with it
        claim = self._claim_key(session) if claimed else None
        if not written:
            if claim is not None:
                session.claims.release(claim)
            return
        if rev:
            guard = Compare.create_revision(key) == rev
        else:
            guard = Compare.lease(key) == session.lease_id
        if now:
            await delete_key(self._client, session, key, guard, claim, timeout, unknown=not rev)
        else:
            delete_in_background(
                self._client, session, key, guard, claim, unknown=not rev,
                at_once=deadline.expired(),
            )  # fmt: skip

    async def _follow_key(
        self, watcher: AsyncWatcher, session: AsyncSession, hold: int, key: bytes, rev: int
    ) -> None:
        """Watch the leader key: its deletion ends the leadership."""
        try:
            while self._hold == hold:
                try:
                    batch = await watcher.get()
                except errors.CompactedError:
                    # Fell behind a compaction: look at the key instead of guessing.
                    now = await self._client.get(key)
                    if now.kv is None or now.kv.create_revision != rev:
                        await self._key_gone(session, hold)
                        return
                    await watcher.cancel()
                    watcher = await self._client.watch(
                        key, start_revision=now.revision + 1, require_leader=True
                    )
                    with self._state_lock:
                        self._key_watcher = watcher
                    continue
                if any(event.type is EventType.DELETE for event in batch.events):
                    await self._key_gone(session, hold)
                    return
        except StopAsyncIteration:
            return  # cancelled by resign or a new campaign
        except errors.EtcdError as exc:
            # The client closed or the watch failed: the session reports real losses.
            log.debug("election %r: leader key watch ended: %s", self.name, exc)
        finally:
            await watcher.cancel()

    async def _key_gone(self, session: AsyncSession, hold: int) -> None:
        """The leader key vanished: tell whether its lease went with it."""
        with self._state_lock:
            if not self._holding or hold != self._hold:
                return  # the term ended first (resign deletes the key after): no loss
        if session.is_done:
            self._mark_lost(hold, self._loss("session ended", session.error))
            return
        try:
            # An expired or revoked lease deletes its keys before this client's
            # keepalive can notice: ask, so the reason is right (and the session ends
            # at once: the next campaign gets a fresh shared session).
            await self._client.time_to_live(session.lease_id)
        except errors.LeaseNotFoundError as exc:
            session.lease_gone(exc)  # ends the hold through the session's callback
            self._mark_lost(hold, self._loss("session ended", session.error or exc))
            return
        except errors.EtcdError:
            pass
        self._mark_lost(hold, self._loss("key deleted", None))

    async def _withdraw(self, term: int, *, timeout: float | None = None) -> None:
        """End candidacy ``term`` (resign): delete its key (only if it is still ours),
        then release what it holds.

        A failed delete is raised and the key remembered, so that calling
        :meth:`resign` again retries it.  A dead session's key is left to its lease
        (no request); a private session is revoked instead.
        """
        with self._state_lock:
            if term != self._term:
                return
            self._term += 1  # the candidacy ends now
            term = self._term
            key, rev, session, owns = self._key, self._rev, self._session, self._owns_session
        self._end_hold()  # from now on a deletion of our key is no loss
        if (
            session is not None
            and not owns
            and not session.is_done
            and not self._client.closed
            and key is not None
            and rev
        ):
            await self._client.txn(
                [Compare.create_revision(key) == rev],
                [Op.delete(key)],
                timeout=Deadline(timeout).rpc_timeout(),
            )
        with self._state_lock:
            if term != self._term:
                return
            self._key, self._rev = None, 0
        await self._cleanup(timeout)

    async def _cleanup(self, timeout: float | None = None) -> None:
        """Release what an ended candidacy still holds: its claim, watch and private
        session (revoked within ``timeout``, else in the background)."""
        with self._state_lock:
            if self._is_held():
                return
            watcher, self._key_watcher = self._key_watcher, None
            session, owns = self._session, self._owns_session
            self._owns_session = False
        if watcher is not None:
            await watcher.cancel()
        self._release_claim()
        if session is not None and owns:
            try:
                await session.close(timeout=timeout)
            except errors.EtcdError as exc:
                log.debug("election %r: revoking a private session: %s", self.name, exc)

    # --- while leading -----------------------------------------------------------------

    async def proclaim(self, value: str | bytes, *, timeout: float | None = None) -> None:
        """Announce a new ``value`` as the leader, without a new election.

        The write is guarded by the leader key's create revision (one
        :meth:`guarded_txn`, bounded by ``timeout``).  Raises
        :class:`~etcdsync.errors.NotElectedError` when not leading, and
        :class:`~etcdsync.errors.LeadershipLostError` if leadership is (or turns
        out to be) lost - the session's lease found gone included.
        """
        proposal = to_bytes(value, "value")
        with self._state_lock:
            key, session, holding = self._key, self._session, self._holding
        if not holding or key is None or session is None:
            raise errors.NotElectedError(f"not the leader of {self.name!r}")
        try:
            await self.guarded_txn([Op.put(key, proposal, lease=session.lease_id)], timeout=timeout)
        except errors.LeaseNotFoundError as exc:
            session.lease_gone(exc)  # ends the term through the session's callback
            raise self._loss("session ended", session.error) from None

    async def resign(self, *, timeout: float | None = None) -> None:
        """Step down (or withdraw a candidacy): delete this candidate's key.

        Only a key with this candidacy's create revision is deleted, so a late or
        repeated resign never removes a newer candidate's key.  Idempotent; the
        :attr:`lost` event and callbacks are not triggered.  ``timeout`` bounds
        the delete (default: the client's request timeout); a session that has
        ended makes no request (the key goes with its lease).  If the delete
        fails (e.g. :class:`~etcdsync.errors.Unavailable`) the error is raised and
        calling ``resign()`` again retries it; until then the key lives as long as
        the lease.

        A :meth:`campaign` still waiting (in another task or thread) ends at once
        with :class:`~etcdsync.errors.ElectionError`, withdrawing its key itself.
        """
        with self._state_lock:
            term = self._term
            pending = self._campaigning and not self._holding
            abort = self._abort
            if pending:
                self._term += 1  # an _install still to come finds it withdrawn
        if pending:
            if abort is not None:
                abort.abort(
                    errors.ElectionError(
                        f"the candidacy for {self.name!r} was withdrawn by resign()"
                    )
                )
            return
        await self._withdraw(term, timeout=timeout)

    # --- leader-only work (recipes_docs/leadership.md; the logic is in .leadership) ------

    def leadership(self, value: str | bytes, *, timeout: float | None = None) -> AsyncLeadership:
        """``async with election.leadership(value) as term:`` - campaign on entry (raising
        :class:`~etcdsync.errors.ElectionTimeout` after ``timeout`` seconds, the body
        not run), resign on exit.  ``term`` is an :class:`~.leadership.AsyncTerm`: the
        fencing token ``term.revision``, ``term.lost`` (this term's own event),
        ``term.check()`` and ``term.guarded_txn()``.  The body is not interrupted
        when the term is lost: check ``term.lost`` (or use :meth:`run`).
        """
        return AsyncLeadership(self, value, timeout=timeout)

    async def run(
        self,
        work: Callable[[AsyncTerm], Awaitable[_R]],
        value: str | bytes,
        *,
        timeout: float | None = None,
        forever: bool = False,
        install_signal_handlers: bool = False,
    ) -> _R | None:
        """Campaign, run ``await work(term)`` while leading, resign when it ends.

        Returns what ``work`` returned.  In the asyncio client the work runs in a
        task of its own, **cancelled** as soon as the term is known lost; in the
        sync client it runs in the calling thread and learns of a loss through
        ``term.lost`` / ``term.check()``.  A lost term raises
        :class:`~etcdsync.errors.LeadershipLostError` - unless ``forever``: then
        the election is campaigned for again (with a backoff, through ended
        sessions and outages) until the work returns or raises on its own.
        ``timeout`` bounds the campaign (not with ``forever``).  With
        ``install_signal_handlers`` (the main thread, or its event loop) the
        first SIGTERM or SIGINT stops the work, resigns and makes ``run()`` return
        None.  See ``recipes_docs/leadership.md``.
        """
        return await run_leadership(
            self,
            work,
            value,
            timeout=timeout,
            forever=forever,
            install_signal_handlers=install_signal_handlers,
            fixed_session=self._given_session is not None,
        )

    # --- observing ---------------------------------------------------------------------

    async def leader(self, *, timeout: float | None = None) -> KeyValue | None:
        """The current leader's key-value (its proposal is ``.value``), or None if none."""
        response = await self._client.get(
            self.prefix,
            prefix=True,
            sort_order="ASCEND",
            sort_target="CREATE",
            limit=1,
            timeout=timeout,
        )
        return response.kv

    def observe(self) -> AsyncElectionObserver:
        """Follow leadership changes: ``async for leader in election.observe():``.

        Yields the current leader first (or waits for one), then every change of
        leader or of its proposal, each once and in order (see
        :class:`AsyncElectionObserver`); its ``next_change()`` also reports
        vacancy (``None``: the leader left with no successor).
        """
        return AsyncElectionObserver(self._client, self.prefix)

    async def __aenter__(self) -> AsyncElection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.resign()

    def __repr__(self) -> str:
        state = "leader" if self.is_leader else "campaigning" if self._campaigning else "idle"
        return f"<{type(self).__name__} {self.name!r} {state}>"


class _LeaseGone(Exception):
    """The session's lease proved gone before a campaign wrote anything: retried
    once on a fresh shared session, else ``error`` is raised."""

    def __init__(self, error: errors.EtcdError) -> None:
        super().__init__(str(error))
        self.error = error
