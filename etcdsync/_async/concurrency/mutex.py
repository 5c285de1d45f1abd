"""Mutex: a distributed lock with fencing tokens, compatible with Go and ``etcdctl lock``.

Every contender puts one lease-bound key under ``<name>/``; the key with the
lowest create revision holds the lock and the others queue behind it in create
revision order (FIFO), each waiting only for the deletion of its predecessor.
The key layout is the one of Go's ``concurrency.Mutex`` (``<name>/<lease id in
hex>``, empty value), so Python, Go and ``etcdctl lock <name>`` exclude each other.

A lease-based lock cannot by itself guarantee mutual exclusion: a holder that
pauses (GC, SIGSTOP, a slow disk) past its lease's TTL keeps running after etcd
has handed the lock to the next contender.  Guard writes with the lock's
**fencing token** (its key's create revision) - :meth:`AsyncQueueLock.is_owner`
gives the compare, :meth:`AsyncQueueLock.guarded_txn` applies it - so that etcd
rejects a write made by a holder that no longer holds the lock.

:class:`AsyncQueueLock` is the machinery shared by the Mutex, the readers-writer
lock's read and write locks and the Semaphore.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

from ... import errors
from ..._backends._async import Event, Lock, acquire_lock, spawn, wait_event
from ...models import GetResponse, KeyValue, TxnResponse
from ...ops import Compare, Op
from ._waiting import Deadline, session_error, wait_for_deletes
from .recipe_client import AsyncRecipeClient
from .session import DEFAULT_SESSION_TTL, AsyncSession

__all__ = ["AsyncMutex", "AsyncQueueLock", "LostCallback"]

log = logging.getLogger("etcdsync.recipes")

LostCallback = Callable[[errors.EtcdError], Any]
"""Called with the reason (e.g. a SessionExpiredError) when a held lock is lost."""

_L = TypeVar("_L", bound="AsyncQueueLock")

_IDLE = "idle"
_ACQUIRING = "being acquired"
_HELD = "held"

# Backoff of the background deletion of a key whose delete request failed.
_CLEANUP_FIRST_DELAY = 0.2
_CLEANUP_MAX_DELAY = 5.0


def unique_suffix() -> str:
    """A random suffix that makes a key unique per acquire (64 bits, hex)."""
    return secrets.token_hex(8)


def _kvs(response: object) -> list[KeyValue]:
    assert isinstance(response, GetResponse)
    return response.kvs


class AsyncQueueLock:
    """A lock held through one lease-bound key queued by create revision.

    Subclasses say which key to create (:meth:`_new_key`), which keys must be gone
    before the holder is admitted (:meth:`_wait_prefix`: those created earlier
    under it) and how many of them may remain (``_allowed``).

    **One object, one holder.**  An object holds the lock at most once at a time:
    acquiring an object that is held (or being acquired) raises
    :class:`~etcdsync.errors.LockError` - the locks are not re-entrant.  Create one
    object per task or thread (``client.lock(name)`` is cheap).

    **Sessions.**  Without ``session=``, the client's shared session for ``ttl``
    (default 60 s) is used: one lease serves every acquire of the client.  The
    key is bound to the session's lease, so a crashed holder's key vanishes
    within the TTL.
    """

    _allowed = 0
    """How many keys created earlier under the wait prefix may exist while held."""

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
        self._client = client
        self._name = name
        self._session_arg = session
        self._ttl = ttl
        self._timeout = timeout
        self._state = _IDLE
        self._session: AsyncSession | None = None
        self._key = ""
        self._token = 0
        self._local: Lock | None = None
        # Guards the loss bookkeeping: the session's callback runs in the keepalive
        # manager's thread in the sync client.  Never held across a wait.
        self._mutex = threading.Lock()
        self._lost = Event()
        self._lost_error: errors.EtcdError | None = None
        self._lost_callbacks: list[LostCallback] = []

    # --- what subclasses define -----------------------------------------------------------

    def _new_key(self, session: AsyncSession) -> str:
        """The key this acquire creates."""
        raise NotImplementedError

    def _wait_prefix(self) -> str:
        """Keys created earlier under this prefix must be gone before admission."""
        return f"{self._name}/"

    def _local_lock(self, session: AsyncSession) -> Lock | None:
        """A lock excluding in-process holders that would share one key, if any."""
        return None

    # --- state ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def held(self) -> bool:
        """True between a successful acquire and release, unless the lock was lost."""
        session = self._session
        return (
            self._state == _HELD
            and not self._lost.is_set()
            and not (session is not None and session.is_done)
        )

    @property
    def lost(self) -> Event:
        """Set when the lock is lost while held: its session ended (lease expired,
        revoked, renewals halted, client closed) or a guarded write found the key
        gone.  Cleared by the next acquire.

        The session's end is detected locally and conservatively: a lease counts as
        lost once its last confirmed renewal is older than the TTL (measured from
        when the renewal was *sent*), which is no later than etcd expires it.  A
        process that is paused cannot see it: guard writes with the fencing token.
        """
        return self._lost

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
        return self._session if self._state == _HELD else None

    def _require_held(self) -> tuple[str, int]:
        if self._state != _HELD:
            raise errors.LockError(f"{self._name!r} is not held by this object")
        return self._key, self._token

    def is_owner(self) -> Compare:
        """A txn compare that holds only while this hold is current: put it in the
        compares of a txn to make its writes conditional on still holding the lock."""
        key, token = self._require_held()
        return Compare.create_revision(key) == token

    def add_lost_callback(self, fn: LostCallback) -> None:
        """Call ``fn(error)`` when a hold of this object is lost (at once if the
        current hold already is).  Keep it short: it may run in the keepalive
        manager's task or thread.  It stays registered for later holds."""
        with self._mutex:
            self._lost_callbacks.append(fn)
            error = self._lost_error if self._state == _HELD else None
        if error is not None:
            _call(fn, error)

    async def wait_lost(self, timeout: float | None = None) -> bool:
        """Wait until the current hold is lost; True if it was within ``timeout``."""
        return await wait_event(self._lost, timeout)

    # --- acquire / release ------------------------------------------------------------------

    async def acquire(self: _L, timeout: float | None = None) -> _L:
        """Wait for the lock and return this object, holding it.

        ``timeout`` (default: the one given at creation; None waits forever)
        bounds the whole acquire.  Raises :class:`~etcdsync.errors.LockTimeout`
        when it passes, after removing this contender's queued key;
        :class:`~etcdsync.errors.SessionExpiredError` (or ClientClosedError) as
        soon as the session ends while waiting; LockError if this object is
        already held or being acquired.
        """
        await self._acquire(self._timeout if timeout is None else timeout, wait=True)
        return self

    async def try_acquire(self) -> bool:
        """Take the lock if it is free now, without waiting; False (and nothing left
        queued) when another holder has it."""
        return await self._acquire(None, wait=False)

    async def _acquire(self, timeout: float | None, *, wait: bool) -> bool:
        deadline = Deadline(timeout)
        with self._mutex:
            if self._state != _IDLE:
                raise errors.LockError(
                    f"{self._name!r} is already {self._state} by this object: the lock is "
                    "not re-entrant (use one lock object per holder)"
                )
            self._state = _ACQUIRING
        session: AsyncSession | None = None
        local: Lock | None = None
        key: str | None = None
        token = 0
        try:
            session = await self._get_session()
            candidate = self._local_lock(session)
            if candidate is not None:
                if await acquire_lock(candidate, deadline.remaining() if wait else 0.0):
                    local = candidate  # ours to release from here on
                elif not wait:
                    self._state = _IDLE
                    return False
                else:
                    raise errors.LockTimeout(
                        f"{self._name!r} was not acquired within {timeout} s "
                        "(another holder in this process has it)"
                    )
            key = self._new_key(session)
            token, older = await self._enqueue(session, key, deadline)
            if older > self._allowed:
                if not wait:
                    self._state = _IDLE
                    queued, key, mine, local = key, None, local, None
                    await self._delete_key(session, queued, token, mine)
                    return False
                await wait_for_deletes(
                    self._client,
                    self._wait_prefix(),
                    token - 1,
                    session=session,
                    timeout=deadline.remaining(),
                    allowed=self._allowed,
                )
                await self._check_queued(session, key, token, deadline)
            self._take(session, key, token, local)
            return True
        except BaseException as exc:
            self._state = _IDLE
            if key is not None and session is not None:
                # Never leave a queued key behind (token 0: the put's outcome is unknown).
                await self._delete_key(session, key, token, local)
            elif local is not None:
                local.release()
            # With a deadline every request's own timeout reaches past it, so any
            # Timeout means the deadline passed.
            if (
                isinstance(exc, errors.Timeout)
                and not isinstance(exc, errors.LockTimeout)
                and deadline.at is not None
            ):
                raise errors.LockTimeout(
                    f"{self._name!r} was not acquired within {timeout} s"
                ) from exc
            raise

    async def _get_session(self) -> AsyncSession:
        session = self._session_arg
        if session is None:
            session = await self._client.shared_session(self._ttl or DEFAULT_SESSION_TTL)
        if session.is_done:
            raise session_error(session)
        return session

    async def _enqueue(
        self, session: AsyncSession, key: str, deadline: Deadline
    ) -> tuple[int, int]:
        """Create the key (or find it) in one txn; return its create revision and how
        many keys under the wait prefix are older (counting up to ``_allowed + 1``)."""
        first = Op.get(
            self._wait_prefix(),
            prefix=True,
            sort_order="ascend",
            sort_target="create",
            limit=self._allowed + 1,
            keys_only=True,
        )
        try:
            response = await self._client.txn(
                [Compare.create_revision(key) == 0],
                [Op.put(key, b"", lease=session.lease_id), first],
                [Op.get(key), first],
                timeout=deadline.rpc_timeout(),
            )
        except errors.LeaseNotFoundError:
            if session.is_done:
                raise session_error(session) from None
            raise errors.SessionExpiredError(
                f"the lease {session.lease_id:x} of the session is gone",
                lease_id=session.lease_id,
                reason="expired",
            ) from None
        if response.succeeded:
            token = response.revision
        else:
            # The key exists already: created through this lease by an earlier
            # acquire whose release failed, or by another process sharing the lease.
            token = _kvs(response.responses[0])[0].create_revision
        older = sum(1 for kv in _kvs(response.responses[1]) if kv.create_revision < token)
        return token, older

    async def _check_queued(
        self, session: AsyncSession, key: str, token: int, deadline: Deadline
    ) -> None:
        """After the wait: is our key still there?  It goes with an expired lease."""
        kv = (await self._client.get(key, timeout=deadline.rpc_timeout())).kv
        if kv is None or kv.create_revision != token:
            if session.is_done:
                raise session_error(session)
            raise errors.LockLostError(
                f"the queued key {key!r} vanished while waiting (deleted, or its lease expired)"
            )

    def _take(self, session: AsyncSession, key: str, token: int, local: Lock | None) -> None:
        with self._mutex:
            self._session, self._key, self._token, self._local = session, key, token, local
            self._lost_error = None
            self._lost.clear()
            self._state = _HELD
        session.add_done_callback(self._on_session_end)
        if session.is_done:  # ended while registering (callbacks may race in threads)
            self._on_session_end(session_error(session))

    async def release(self) -> None:
        """Release the lock (idempotent: nothing happens when not held).

        Deletes the key only if its create revision is still this hold's fencing
        token, so a repeated or late release never deletes a newer holder's key.
        When etcd cannot be reached the deletion is retried in the background until
        it succeeds or the session ends (which deletes the key with its lease); the
        lock stays taken meanwhile - safe, only later.
        """
        with self._mutex:
            if self._state != _HELD:
                return
            session, key, token, local = self._session, self._key, self._token, self._local
            self._state = _IDLE
            self._session = self._local = None
        assert session is not None
        session.remove_done_callback(self._on_session_end)
        await self._delete_key(session, key, token, local)

    async def _delete_key(
        self, session: AsyncSession, key: str, token: int, local: Lock | None
    ) -> None:
        """Delete our key (guarded by ``token``, or by our lease when the create
        revision is unknown), then free the in-process lock.  On failure both are
        handed to a background retry, so the key is never left queued while the
        session lives."""
        if token:
            guard = Compare.create_revision(key) == token
        else:
            guard = Compare.lease(key) == session.lease_id
        try:
            await self._client.txn([guard], [Op.delete(key)])
        except errors.ClientClosedError:
            pass  # a closing client revokes its sessions: the key goes with the lease
        except BaseException as exc:
            if session.is_done or self._client.closed:
                # The key goes (or went) with the lease; a new acquire in this
                # process uses a new session, hence a different key.
                if local is not None:
                    local.release()
            else:
                log.warning("deleting lock key %r failed (%r); retrying in background", key, exc)
                spawn(_delete_later, self._client, session, key, guard, local, name="etcdsync-lock")
            if not isinstance(exc, errors.EtcdError):
                raise  # cancelled or interrupted: the cleanup is under way anyway
            return
        if local is not None:
            local.release()

    # --- loss -------------------------------------------------------------------------------

    def _on_session_end(self, error: errors.EtcdError) -> None:
        session = self._session
        if session is not None:
            self._mark_lost(session_error(session))

    def _mark_lost(self, error: errors.EtcdError) -> None:
        with self._mutex:
            if self._state != _HELD or self._lost_error is not None:
                return
            self._lost_error = error
            self._lost.set()
            callbacks = list(self._lost_callbacks)
        for fn in callbacks:
            _call(fn, error)

    def _lost_exception(self) -> errors.LockLostError:
        lost = errors.LockLostError(f"{self._name!r} was lost: {self._lost_error}")
        lost.__cause__ = self._lost_error
        return lost

    async def guarded_txn(
        self,
        success: Iterable[Op],
        failure: Iterable[Op] = (),
        compare: Iterable[Compare] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResponse:
        """Run a txn (``compare`` / ``success`` / ``failure``) only if this hold is
        still current, atomically; return its response.

        Raises :class:`~etcdsync.errors.LockLostError` - and sets :attr:`lost` -
        when etcd finds the lock key gone or re-created (nothing was written), or
        at once when the loss is already known locally.
        """
        owner = self.is_owner()
        if self._lost.is_set():
            raise self._lost_exception()
        response = await self._client.txn(
            [owner], [Op.txn(compare, success, failure)], [], timeout=timeout
        )
        if not response.succeeded:
            self._mark_lost(
                errors.LockLostError(
                    f"{self._key!r} no longer has create revision {self._token}: lock lost"
                )
            )
            raise self._lost_exception()
        inner = response.responses[0]
        assert isinstance(inner, TxnResponse)
        return TxnResponse(response.header, inner.succeeded, inner.responses)

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
        held = f" key={self._key!r} token={self._token}" if self._state == _HELD else ""
        lost = " lost" if self._state == _HELD and self._lost.is_set() else ""
        return f"<{type(self).__name__} {self._name!r} {self._state}{held}{lost}>"


def _call(fn: LostCallback, error: errors.EtcdError) -> None:
    try:
        fn(error)
    except Exception:  # a user's callback must not break the caller
        log.exception("lock-lost callback %r failed", fn)


async def _delete_later(
    client: AsyncRecipeClient, session: AsyncSession, key: str, guard: Compare, local: Lock | None
) -> None:
    """Retry a failed key deletion until it succeeds or the session ends (the key
    then goes with the lease); the in-process lock stays taken until then."""
    delay = _CLEANUP_FIRST_DELAY
    try:
        while not await wait_event(session.done, delay):
            try:
                await client.txn([guard], [Op.delete(key)])
                return
            except errors.ClientClosedError:
                return
            except errors.EtcdError:
                delay = min(delay * 2, _CLEANUP_MAX_DELAY)
    finally:
        if local is not None:
            local.release()


class AsyncMutex(AsyncQueueLock):
    """A distributed mutual-exclusion lock; create with ``client.lock(name)``.

    ::

        async with etcd.lock("jobs/nightly", ttl=10, timeout=5) as lock:
            await lock.guarded_txn([Op.put("jobs/nightly/state", "running")])

    The key is ``<name>/<session lease id in hex>`` (Go's and etcdctl's layout).
    Holders that share a session in one process would share that key, so they
    first exclude each other with an in-process lock (``session.local_locks``),
    then queue in etcd.  A timed-out acquire raises
    :class:`~etcdsync.errors.LockTimeout`: the ``async with`` body never runs
    unlocked.

    **Not re-entrant**: acquiring an object that is held raises
    :class:`~etcdsync.errors.LockError`; a second object for the same name and
    session acquired by the holder itself waits for the first one's release
    (deadlock until its timeout).
    """

    def _new_key(self, session: AsyncSession) -> str:
        return f"{self._name}/{session.lease_id:x}"

    def _local_lock(self, session: AsyncSession) -> Lock | None:
        # dict.setdefault is atomic: threads racing here all get the same lock.
        return session.local_locks.setdefault(self._name, Lock())
