"""QueueLock: a lock held through one lease-bound key queued by create revision.

Every contender puts one lease-bound key under the lock's prefix; a contender is
admitted once at most ``_allowed`` keys created before its own remain (0 for a
mutex, ``limit - 1`` for a semaphore), and waits only for the deletion of its
predecessors (no thundering herd).  The Mutex, the readers-writer lock's read
and write locks and the Semaphore are this class plus a few declarations: which
key to create, which prefix to wait on, how many predecessors may remain and
whether holders that share a session must claim the key in-process first.

A lease-based lock cannot by itself guarantee mutual exclusion: a holder that
pauses (GC, SIGSTOP, a slow disk) past its lease's TTL keeps running after etcd
has handed the lock to the next contender.  Guard writes with the lock's
**fencing token** (its key's create revision) - :meth:`AsyncQueueLock.is_owner`
gives the compare, :meth:`~.holding.AsyncHeldResource.guarded_txn` applies it -
so that etcd rejects a write made by a holder that no longer holds the lock.
Loss is reported by the model of :mod:`.holding` (``recipes_docs/loss.md``).
"""

from __future__ import annotations

import secrets
from types import TracebackType
from typing import NoReturn, TypeVar

from ... import errors
from ... import telemetry as _telemetry
from ..._deadline import CLEANUP_MIN_TIMEOUT, Deadline
from ...models import GetResponse, KeyValue, TxnResponse
from ...ops import Compare, Op
from ._cleanup import cleanup_now, delete_in_background, delete_key, nothing_written
from ._waiting import (
    OwnKeyGone,
    foreign_key_error,
    request_while_alive,
    session_error,
    wait_for_deletes,
)
from .holding import AsyncHeldResource, LostCallback
from .recipe_client import AsyncRecipeClient
from .session import DEFAULT_SESSION_TTL, AsyncSession

__all__ = ["AsyncQueueLock", "LostCallback", "unique_suffix"]

_L = TypeVar("_L", bound="AsyncQueueLock")

_RELEASING_WAIT = 1.0
"""How long a ``try_acquire`` without a timeout waits for an in-process claim that
is being released (the cleanup of a failed acquire, a release's delete)."""


def unique_suffix() -> str:
    """A random suffix that makes a key unique per acquire (64 bits, hex)."""
    return secrets.token_hex(8)


def _kvs(response: object) -> list[KeyValue]:
    assert isinstance(response, GetResponse)
    return response.kvs


class AsyncQueueLock(AsyncHeldResource[errors.EtcdError]):
    """A lock held through one lease-bound key queued by create revision.

    Subclasses say which key to create (:meth:`_new_key`), which keys must be gone
    before the holder is admitted (:meth:`_wait_prefix`: those created earlier
    under it), how many of them may remain (``_allowed``) and which key, if any,
    in-process holders sharing a session must claim first (:meth:`_claim_key`).

    **One object, one holder.**  An object holds the lock at most once at a time:
    acquiring an object that is held (or being acquired) raises
    :class:`~etcdsync.errors.LockError` - the locks are not re-entrant.  Create one
    object per task or thread (``client.lock(name)`` is cheap).

    **Sessions.**  Without ``session=``, the client's shared session for ``ttl``
    (default 60 s) is used: one lease serves every acquire of the client.  The
    key is bound to the session's lease, so a crashed holder's key vanishes
    within the TTL.

    **Loss.**  :attr:`lost`, :attr:`lost_error`, :meth:`add_lost_callback`,
    :meth:`remove_lost_callback`, :meth:`wait_lost` and :meth:`guarded_txn`
    follow the one loss model of every held resource (``recipes_docs/loss.md``);
    a guarded write whose hold is gone raises :class:`~etcdsync.errors.LockLostError`.
    """

    _allowed = 0
    """How many keys created earlier under the wait prefix may exist while held."""

    _read_values = False
    """Whether the enqueue txn reads the values of the oldest keys (for :meth:`_check_read`)."""

    _telemetry_kind = "lock"
    _queue_position: int | None = None
    """How many contenders were ahead when the last acquire queued (for telemetry)."""

    def __init__(
        self,
        client: AsyncRecipeClient,
        name: str,
        *,
        session: AsyncSession | None = None,
        ttl: int | None = None,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise errors.InvalidRequest(f"a lock name must be a non-empty str, got {name!r}")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            raise errors.InvalidRequest(f"ttl must be a positive int (seconds), got {ttl!r}")
        if session is not None and ttl is not None:
            raise errors.InvalidRequest("pass either session= or ttl=, not both")
        Deadline(timeout)  # validates it
        super().__init__()
        self._client = client
        self._name = name
        self._session_arg = session
        self._ttl = ttl
        self._timeout = timeout
        # The current hold (meaningful while ``_holding``), guarded by _state_lock.
        self._acquiring = False
        self._session: AsyncSession | None = None
        self._key = ""
        self._token = 0
        self._claimed: bytes | None = None

    # --- what subclasses define -----------------------------------------------------------

    def _new_key(self, session: AsyncSession) -> str:
        """The key this acquire creates."""
        raise NotImplementedError

    def _value(self) -> bytes:
        """The value of the key this acquire creates."""
        return b""

    def _wait_prefix(self) -> str:
        """Keys created earlier under this prefix must be gone before admission."""
        return f"{self._name}/"

    def _claim_key(self, session: AsyncSession) -> bytes | None:
        """The key to claim in ``session.claims`` before queueing, when in-process
        holders sharing a session would share one etcd key; None when keys are
        unique per acquire."""
        return None

    # --- state ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def held(self) -> bool:
        """True between a successful acquire and release, unless the lock was lost."""
        session = self._session
        return self._is_held() and not (session is not None and session.is_done)

    @property
    def key(self) -> str:
        """The lock key of the current hold; raises LockError when not held."""
        return self._require_held()[0]

    @property
    def fencing_token(self) -> int:
        """The create revision of the lock key: unique per hold and increasing with
        each new holder.  Pass it to whatever the lock protects and reject anything
        older than the newest token seen; raises LockError when not held."""
        return self._require_held()[1]

    @property
    def session(self) -> AsyncSession | None:
        """The session of the current hold (None when not held)."""
        return self._session if self._holding else None

    def _state_name(self) -> str:
        if self._acquiring:
            return "being acquired"
        return "held" if self._holding else "idle"

    def _require_held(self) -> tuple[str, int]:
        with self._state_lock:
            if not self._holding:
                raise errors.LockError(f"{self._name!r} is not held by this object")
            return self._key, self._token

    def is_owner(self) -> Compare:
        """A txn compare that holds only while this hold is current: put it in the
        compares of a txn to make its writes conditional on still holding the lock."""
        key, token = self._require_held()
        return Compare.create_revision(key) == token

    # --- the loss model's declarations ----------------------------------------------------

    def _fencing_compare(self) -> Compare:
        return self.is_owner()

    def _session_lost(self, session: AsyncSession, error: errors.EtcdError) -> errors.EtcdError:
        return session_error(session)

    def _guard_failed(self) -> errors.EtcdError:
        return errors.LockLostError(
            f"{self._key!r} no longer has create revision {self._token}: lock lost"
        )

    def _lost_exception(self, error: errors.EtcdError) -> errors.EtcdError:
        lost = errors.LockLostError(f"{self._name!r} was lost: {error}")
        lost.__cause__ = error
        return lost

    # --- acquire / release ------------------------------------------------------------------

    @_telemetry.traced("lock.acquire", _telemetry.describe_lock_acquire)
    async def acquire(self: _L, timeout: float | None = None) -> _L:
        """Wait for the lock and return this object, holding it.

        ``timeout`` (default: the one given at creation; None or ``inf`` waits
        forever) bounds the whole acquire, the creation of the shared session
        included: no request is started after it (a request under way may end
        up to one round trip later).  Raises :class:`~etcdsync.errors.LockTimeout`
        when it passes; this contender's queued key is then removed in the
        background, after the error is raised;
        :class:`~etcdsync.errors.PermissionDeniedError` (and any other refusal
        of the enqueue) leaves nothing behind - nothing was written;
        :class:`~etcdsync.errors.SessionExpiredError` (or ClientClosedError)
        as soon as the session ends while waiting;
        :class:`~etcdsync.errors.ForeignKeyError` when a key without a lease
        sits among the keys it must wait for; LockError if this object is
        already held or being acquired.
        """
        await self._acquire(self._timeout if timeout is None else timeout, wait=True)
        return self

    @_telemetry.traced("lock.try_acquire", _telemetry.describe_lock_acquire)
    async def try_acquire(self, timeout: float | None = None) -> bool:
        """Take the lock if it is free now, without waiting; False (and nothing left
        queued) when another holder has it.

        ``timeout`` bounds the call (default: the client's request timeout); a
        queued key that must be removed after a failed request is removed in
        the background.
        """
        return await self._acquire(timeout, wait=False)

    async def _acquire(self, timeout: float | None, *, wait: bool) -> bool:
        deadline = Deadline(timeout)
        with self._state_lock:
            if self._acquiring or self._holding:
                raise errors.LockError(
                    f"{self._name!r} is already {self._state_name()} by this object: the "
                    "lock is not re-entrant (use one lock object per holder)"
                )
            self._acquiring = True
        try:
            try:
                return await self._attempt(deadline, wait=wait)
            except _LeaseGone as gone:
                if self._session_arg is not None:
                    raise gone.error from None
            # The shared session's lease proved gone (revoked elsewhere) before this
            # acquire queued anything: once more, on the fresh shared session.
            return await self._attempt(deadline, wait=wait)
        except BaseException as exc:
            error = exc.error if isinstance(exc, _LeaseGone) else exc
            # With a deadline every request's own timeout reaches past it, so any
            # Timeout means the deadline passed.
            if (
                isinstance(error, errors.Timeout)
                and not isinstance(error, errors.LockTimeout)
                and deadline.at is not None
            ):
                raise errors.LockTimeout(
                    f"{self._name!r} was not acquired within {timeout} s"
                ) from error
            if error is not exc:
                raise error from None
            raise
        finally:
            with self._state_lock:
                self._acquiring = False

    async def _attempt(self, deadline: Deadline, *, wait: bool) -> bool:
        """One acquire on one session; raises :class:`_LeaseGone` when the session's
        lease proves gone before anything was queued."""
        session = await self._get_session(deadline)
        claimed: bytes | None = None
        key: str | None = None
        token = 0
        try:
            wanted = self._claim_key(session)
            if wanted is not None:
                # try_acquire takes no claim another holder has, but waits (within its
                # bound, at least a short grace) for one whose holder gave up and
                # whose key is being deleted: typically one round trip.
                remaining = deadline.remaining()
                releasing: float | None
                if remaining is None:
                    releasing = None if wait else _RELEASING_WAIT
                else:
                    releasing = max(remaining, CLEANUP_MIN_TIMEOUT)
                if await session.claims.claim(
                    wanted, remaining if wait else 0.0, releasing=releasing
                ):
                    claimed = wanted  # ours to release from here on
                elif not wait:
                    return False
                else:
                    raise errors.LockTimeout(
                        f"{self._name!r} was not acquired within {deadline.timeout} s "
                        "(another holder in this process has it)"
                    )
            if deadline.timeout and deadline.expired():
                # The session's creation (or the claim) took the time: no request after
                # the deadline (a timeout=0 call still makes its one deciding request).
                raise errors.LockTimeout(
                    f"{self._name!r} was not acquired within {deadline.timeout} s"
                )
            key = self._new_key(session)
            attempts = [0]
            try:
                token, read = await self._enqueue(session, key, deadline, attempts, wait=wait)
            except errors.LeaseExpiredError:
                raise  # the session ended while the txn was repeated: not a proof about the lease
            except errors.LeaseNotFoundError as exc:
                key = None  # the txn failed as a whole: nothing was written
                raise _LeaseGone(session.lease_gone(exc)) from None
            except errors.EtcdError as exc:
                if not attempts[0] or nothing_written(exc, attempts[0]):
                    key = None  # never sent, or refused as a whole: nothing to clean up
                raise
            self._check_read(read, token)
            older = sum(1 for kv in read if kv.create_revision < token)
            self._queue_position = older  # contenders ahead when queued (telemetry)
            if older > self._allowed:
                if not wait:
                    queued, key, mine, claimed = key, None, claimed, None
                    if deadline.expired():
                        # No request after the caller's deadline: answer now, delete after.
                        guard = self._guard(session, queued, token)
                        delete_in_background(
                            self._client, session, queued, guard, mine, at_once=True
                        )
                    else:
                        timeout = deadline.cleanup_timeout()
                        await self._delete_key(session, queued, token, mine, timeout)
                    return False
                if deadline.expired():
                    # The enqueue answered past the deadline: no further request (the
                    # cleanup goes on in the background, after the error is raised).
                    raise errors.LockTimeout(
                        f"{self._name!r} was not acquired within {deadline.timeout} s"
                    )
                # With one holder at a time, the read that finds the way clear reads
                # our key too (one request per handover); with more, check it after.
                try:
                    await wait_for_deletes(
                        self._client,
                        self._wait_prefix(),
                        token - 1,
                        session=session,
                        timeout=deadline.remaining(),
                        allowed=self._allowed,
                        leased_only=True,
                        own_key=key if self._allowed == 0 else None,
                    )
                except OwnKeyGone:
                    await self._queued_key_gone(session, key, deadline)
                if self._allowed:
                    if deadline.expired():
                        raise errors.LockTimeout(  # admitted, but too late to check it
                            f"{self._name!r} was not acquired within {deadline.timeout} s"
                        )
                    await self._check_queued(session, key, token, deadline)
            self._take(session, key, token, claimed)
            return True
        except BaseException as exc:
            if key is not None:
                # Never leave a queued key behind (token 0: the put's outcome is unknown).
                await self._cleanup(session, key, token, claimed, deadline, exc)
            elif claimed is not None:
                session.claims.release(claimed)
            raise

    async def _get_session(self, deadline: Deadline) -> AsyncSession:
        session = self._session_arg
        if session is None:
            session = await self._client.shared_session(
                self._ttl or DEFAULT_SESSION_TTL, timeout=deadline.remaining()
            )
        if session.is_done:
            raise session_error(session)
        return session

    async def _enqueue(
        self,
        session: AsyncSession,
        key: str,
        deadline: Deadline,
        attempts: list[int],
        *,
        wait: bool,
    ) -> tuple[int, list[KeyValue]]:
        """Create the key (or find it) in one txn; return its create revision and the
        oldest keys under the wait prefix (up to ``_allowed + 1`` of them).

        A waiting acquire repeats the txn while it times out (it is safe to: a
        second run finds the key the first one created), each attempt bounded, so
        that it notices its session's end on a silent endpoint.  ``attempts[0]``
        counts the attempts made (a refusal of the first one wrote nothing)."""
        first = Op.get(
            self._wait_prefix(),
            prefix=True,
            sort_order="ascend",
            sort_target="create",
            limit=self._allowed + 1,
            keys_only=not self._read_values,
        )

        async def attempt(timeout: float | None) -> TxnResponse:
            attempts[0] += 1
            return await self._client.txn(
                [Compare.create_revision(key) == 0],
                [Op.put(key, self._value(), lease=session.lease_id), first],
                [Op.get(key), first],
                timeout=timeout,
            )

        if wait:
            response = await request_while_alive(session, deadline, attempt)
        else:
            response = await attempt(deadline.rpc_timeout())
        if response.succeeded:
            token = response.revision
        else:
            # The key exists already: created through this lease by an earlier
            # acquire whose release failed, or by another process sharing the lease.
            token = _kvs(response.responses[0])[0].create_revision
        return token, _kvs(response.responses[1])

    def _check_read(self, read: list[KeyValue], token: int) -> None:
        """Refuse to queue behind a key that is no contender's: one without a lease
        would never go (the prefix belongs to the recipe)."""
        for kv in read:
            if kv.create_revision < token and not kv.lease:
                raise foreign_key_error(kv.key, self._wait_prefix())

    async def _check_queued(
        self, session: AsyncSession, key: str, token: int, deadline: Deadline
    ) -> None:
        """After the wait: is our key still there?  It goes with an expired lease."""

        async def read(timeout: float | None) -> GetResponse:
            return await self._client.get(key, timeout=timeout)

        kv = (await request_while_alive(session, deadline, read)).kv
        if kv is None or kv.create_revision != token:
            await self._queued_key_gone(session, key, deadline)

    async def _queued_key_gone(
        self, session: AsyncSession, key: str, deadline: Deadline
    ) -> NoReturn:
        """Our queued key was found gone after the wait: raise why."""
        if session.is_done:
            raise session_error(session)
        try:
            await self._client.time_to_live(session.lease_id, timeout=deadline.rpc_timeout())
        except errors.LeaseNotFoundError as exc:
            raise session.lease_gone(exc) from None
        raise errors.LockLostError(
            f"the queued key {key!r} vanished while waiting (deleted, or its lease expired)"
        )

    def _take(self, session: AsyncSession, key: str, token: int, claimed: bytes | None) -> None:
        with self._state_lock:
            self._session, self._key, self._token, self._claimed = session, key, token, claimed
        # Follows the session from here: a session that ended meanwhile marks the
        # new hold lost at once.
        self._begin_hold(session)

    async def release(self, timeout: float | None = None) -> None:
        """Release the lock (idempotent: nothing happens when not held).

        Deletes the key only if its create revision is still this hold's fencing
        token, so a repeated or late release never deletes a newer holder's key.
        A session that has ended makes no request at all (the key goes, or went,
        with its lease).  ``timeout`` bounds the delete (default: the client's
        request timeout); when etcd cannot be reached in time the deletion is
        retried in the background until it succeeds or the session ends (which
        deletes the key with its lease); the lock stays taken meanwhile - safe,
        only later.
        """
        with self._state_lock:
            if not self._holding:
                return
            hold = self._hold
            session, key, token, claimed = self._session, self._key, self._token, self._claimed
        if not self._end_hold(hold):
            return  # a concurrent release won
        with self._state_lock:
            self._session = self._claimed = None
        assert session is not None
        await self._delete_key(session, key, token, claimed, Deadline(timeout).rpc_timeout())

    async def _cleanup(
        self,
        session: AsyncSession,
        key: str,
        token: int,
        claimed: bytes | None,
        deadline: Deadline,
        exc: BaseException,
    ) -> None:
        """Remove the queued key of a failed acquire: in the caller's remaining time
        or in the background (the policy of :mod:`._cleanup`): at once when the
        deadline has passed (the caller's error is raised meanwhile)."""
        now, timeout = cleanup_now(exc, deadline)
        if now:
            await self._delete_key(session, key, token, claimed, timeout)
        else:
            guard = self._guard(session, key, token)
            delete_in_background(
                self._client,
                session,
                key,
                guard,
                claimed,
                unknown=not token,
                at_once=deadline.expired(),
            )

    def _guard(self, session: AsyncSession, key: str, token: int) -> Compare:
        if token:
            return Compare.create_revision(key) == token
        return Compare.lease(key) == session.lease_id

    async def _delete_key(
        self,
        session: AsyncSession,
        key: str,
        token: int,
        claimed: bytes | None,
        timeout: float | None,
    ) -> None:
        """Delete our key (guarded by ``token``, or by our lease when the create
        revision is unknown) within ``timeout``, then release the in-process claim.
        A dead session's key is left to its lease (no request).  On failure both
        are handed to a background retry, so the key is never left queued while
        the session lives and the claim is never released before the key is gone."""
        guard = self._guard(session, key, token)
        await delete_key(self._client, session, key, guard, claimed, timeout, unknown=not token)

    # --- context manager ------------------------------------------------------------------

    async def __aenter__(self: _L) -> _L:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()

    def __repr__(self) -> str:
        holding = self._holding
        held = f" key={self._key!r} token={self._token}" if holding else ""
        lost = " lost" if holding and self._lost_error is not None else ""
        return f"<{type(self).__name__} {self._name!r} {self._state_name()}{held}{lost}>"


class _LeaseGone(Exception):
    """The session's lease proved gone before an acquire queued anything: retried
    once on a fresh shared session, else ``error`` is raised."""

    def __init__(self, error: errors.EtcdError) -> None:
        super().__init__(str(error))
        self.error = error
