"""MultiLock: several mutexes taken as one - all of them or none.

Deadlock-free by a global order: every multi-lock acquires its mutexes in the
order of their server-side keys (the client's namespace prefix + the name, as
bytes), whatever order the caller listed them in.  A contender that holds a
mutex only ever waits for a mutex later in that order, so no two contenders can
wait for each other in a cycle - between processes, and between tasks or
threads of one process (whose holders of one name already exclude each other
through the session's in-process claims).  One deadline bounds the whole
acquire; when it passes, or any step fails, the mutexes already taken are
released before the error is raised.

Each mutex is an ordinary :class:`~.mutex.AsyncMutex` (Go's and etcdctl's key
layout), so a multi-lock on ``["a", "b"]`` excludes ``etcd.lock("a")`` and
``etcdctl lock b``.  Each keeps its own fencing token; :meth:`AsyncMultiLock.is_owner`
gives every fencing compare, and :meth:`AsyncMultiLock.guarded_txn` writes only
while all of them hold.  The loss of any one mutex is the loss of the multi-lock
(the one model of :mod:`.holding`).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from types import TracebackType

from ... import errors
from ..._deadline import Deadline
from ...models import TxnResponse
from ...ops import Compare, Op
from ._waiting import session_error
from .holding import AsyncHeldResource, LostCallback
from .mutex import AsyncMutex
from .recipe_client import AsyncRecipeClient
from .session import AsyncSession

__all__ = ["AsyncMultiLock", "LostCallback"]


class AsyncMultiLock(AsyncHeldResource[errors.EtcdError]):
    """Mutexes on several names, held all together; ``client.multi_lock(names)``.

    ::

        async with etcd.multi_lock(["accounts/7", "accounts/3"], timeout=10) as both:
            await both.guarded_txn([Op.put("accounts/7/balance", "90"),
                                    Op.put("accounts/3/balance", "110")])

    ``acquire()`` takes the mutexes in one global order (:attr:`order`: by
    server-side key), so overlapping multi-locks requested in any order never
    deadlock; ``timeout`` (default: the one given at creation; None waits
    forever) bounds the whole acquire and, when it passes, the mutexes taken
    are released and :class:`~etcdsync.errors.LockTimeout` is raised - the
    ``async with`` body never runs with only some of them.  ``release()``
    releases all of them (in reverse order).

    :attr:`tokens` maps each name to its fencing token; :meth:`is_owner` returns
    one compare per mutex; :meth:`guarded_txn` runs a txn only while every
    mutex is held.  Losing any mutex (its session ended, its key deleted) loses
    the multi-lock: :attr:`lost`, :attr:`lost_error`, :meth:`add_lost_callback`
    follow ``recipes_docs/loss.md``.  Not re-entrant (one object, one holder).
    """

    def __init__(
        self,
        client: AsyncRecipeClient,
        names: Iterable[str],
        *,
        ttl: int | None = None,
        session: AsyncSession | None = None,
        timeout: float | None = None,
    ) -> None:
        if isinstance(names, str | bytes):
            raise errors.InvalidRequest("names must be a list of lock names, not one str")
        listed = list(names)
        if not listed:
            raise errors.InvalidRequest("a multi-lock needs at least one name")
        for name in listed:
            if not isinstance(name, str) or not name:
                raise errors.InvalidRequest(f"a lock name must be a non-empty str, got {name!r}")
        if len(set(listed)) != len(listed):
            raise errors.InvalidRequest(f"the lock names must be distinct, got {listed!r}")
        Deadline(timeout)  # validates it
        super().__init__()
        self._client = client
        self._names = tuple(listed)
        prefix = client.key_prefix
        ordered = sorted(listed, key=lambda name: prefix + name.encode("utf-8"))
        # The mutexes validate ttl and session themselves.
        self._locks = [AsyncMutex(client, name, ttl=ttl, session=session) for name in ordered]
        self._timeout = timeout
        self._acquiring = False
        for lock in self._locks:
            lock.add_lost_callback(partial(self._part_lost, lock))

    # --- state ---------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        """The lock names, as given."""
        return self._names

    @property
    def order(self) -> tuple[str, ...]:
        """The lock names in acquisition order (the global order of their keys)."""
        return tuple(lock.name for lock in self._locks)

    @property
    def locks(self) -> tuple[AsyncMutex, ...]:
        """The mutexes, in acquisition order."""
        return tuple(self._locks)

    @property
    def held(self) -> bool:
        """True while every mutex is held (acquired, not released, none lost)."""
        return self._is_held() and all(lock.held for lock in self._locks)

    def _require_held(self) -> None:
        with self._state_lock:
            if not self._holding:
                raise errors.LockError(f"the multi-lock {list(self._names)!r} is not held")

    @property
    def tokens(self) -> dict[str, int]:
        """Each name's fencing token (its key's create revision); raises
        :class:`~etcdsync.errors.LockError` when not held."""
        self._require_held()
        return {lock.name: lock.fencing_token for lock in self._locks}

    @property
    def keys(self) -> dict[str, str]:
        """Each name's lock key; raises :class:`~etcdsync.errors.LockError` when not held."""
        self._require_held()
        return {lock.name: lock.key for lock in self._locks}

    def is_owner(self) -> list[Compare]:
        """One compare per mutex, each true only while its hold is current: add them
        all to a txn's compares to make its writes conditional on holding every lock."""
        self._require_held()
        return [lock.is_owner() for lock in self._locks]

    # --- the loss model's declarations ------------------------------------------------------

    def _session_lost(self, session: AsyncSession, error: errors.EtcdError) -> errors.EtcdError:
        return session_error(session)

    def _guard_failed(self) -> errors.EtcdError:
        return errors.LockLostError(
            f"a lock of the multi-lock {list(self._names)!r} is no longer held: lost"
        )

    def _lost_exception(self, error: errors.EtcdError) -> errors.EtcdError:
        lost = errors.LockLostError(f"the multi-lock {list(self._names)!r} was lost: {error}")
        lost.__cause__ = error
        return lost

    def _part_lost(self, lock: AsyncMutex, error: errors.EtcdError) -> None:
        """A mutex's loss callback: the loss of any part is the loss of the whole."""
        with self._state_lock:
            hold = self._hold if self._holding else 0
        if hold:
            self._mark_lost(hold, self._part_error(lock, error))

    def _part_error(self, lock: AsyncMutex, error: errors.EtcdError) -> errors.EtcdError:
        if isinstance(error, errors.SessionExpiredError | errors.ClientClosedError):
            return error
        part = errors.LockLostError(f"{lock.name!r} of the multi-lock was lost: {error}")
        part.__cause__ = error
        return part

    async def guarded_txn(
        self,
        success: Iterable[Op],
        failure: Iterable[Op] = (),
        compare: Iterable[Compare] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResponse:
        """Run a txn (``compare`` / ``success`` / ``failure``) only while every mutex
        is held, atomically: the ops run in a nested txn guarded by all the
        fencing compares, in one request.

        Returns the outer response's header with the nested txn's outcome.  When
        etcd finds a fencing compare false, nothing is written, the lost mutex and
        the multi-lock are marked lost and :class:`~etcdsync.errors.LockLostError`
        is raised (at once, without a request, when the loss is already known);
        :class:`~etcdsync.errors.LockError` when not held.
        """
        with self._state_lock:
            hold = self._hold
            known = self._lost_error if self._holding else None
        if known is not None:
            raise self._lost_exception(known)
        guards = self.is_owner()
        response = await self._client.txn(
            guards, [Op.txn(compare, success, failure)], [], timeout=timeout
        )
        if not response.succeeded:
            # Find the mutex that was lost: its own guarded (empty) txn marks it.
            for lock in self._locks:
                try:
                    await lock.guarded_txn([], timeout=timeout)
                except errors.LockLostError:
                    pass
            failed = self._guard_failed()
            self._mark_lost(hold, failed)
            with self._state_lock:
                recorded = self._lost_error if self._hold == hold else None
            raise self._lost_exception(recorded or failed)
        inner = response.responses[0]
        assert isinstance(inner, TxnResponse), "the response of a nested txn"
        return TxnResponse(response.header, inner.succeeded, inner.responses)

    # --- acquire / release ------------------------------------------------------------------

    def _start(self) -> None:
        with self._state_lock:
            if self._acquiring or self._holding:
                state = "being acquired" if self._acquiring else "held"
                raise errors.LockError(
                    f"the multi-lock {list(self._names)!r} is already {state} by this object: "
                    "it is not re-entrant (use one object per holder)"
                )
            self._acquiring = True

    async def acquire(self, timeout: float | None = None) -> AsyncMultiLock:
        """Take every mutex, in :attr:`order`; return this object, holding them all.

        ``timeout`` (default: the one given at creation; None or ``inf`` waits
        forever) bounds the whole acquire.  Raises
        :class:`~etcdsync.errors.LockTimeout` when it passes, and any error of a
        mutex's acquire (:class:`~etcdsync.errors.SessionExpiredError`...), after
        releasing the mutexes already taken; LockError if this object is held
        or being acquired.
        """
        limit = self._timeout if timeout is None else timeout
        deadline = Deadline(limit)
        self._start()
        taken: list[AsyncMutex] = []
        try:
            for lock in self._locks:
                try:
                    await lock.acquire(timeout=deadline.remaining())
                except errors.LockTimeout as exc:
                    raise errors.LockTimeout(
                        f"the multi-lock {list(self._names)!r} was not acquired within "
                        f"{limit} s: {lock.name!r} was not free ({len(taken)} of "
                        f"{len(self._locks)} taken, now released)"
                    ) from exc
                taken.append(lock)
            self._hold_all()
        except BaseException:
            await self._release(taken)
            raise
        finally:
            with self._state_lock:
                self._acquiring = False
        return self

    async def try_acquire(self) -> bool:
        """Take every mutex if all are free now, without waiting; False (and nothing
        left taken) when one of them is held by someone else."""
        self._start()
        taken: list[AsyncMutex] = []
        try:
            for lock in self._locks:
                if not await lock.try_acquire():
                    await self._release(taken)
                    return False
                taken.append(lock)
            self._hold_all()
        except BaseException:
            await self._release(taken)
            raise
        finally:
            with self._state_lock:
                self._acquiring = False
        return True

    def _hold_all(self) -> None:
        """Every mutex is taken: begin the hold (following the first one's session);
        a part lost meanwhile loses it at once."""
        session = self._locks[0].session
        assert session is not None, "a held mutex has a session"
        hold = self._begin_hold(session)
        for lock in self._locks:
            error = lock.lost_error
            if lock.lost.is_set() and error is not None:
                self._mark_lost(hold, self._part_error(lock, error))

    async def _release(self, locks: list[AsyncMutex]) -> None:
        for lock in reversed(locks):
            await lock.release()

    async def release(self) -> None:
        """Release every mutex, in reverse order (idempotent).

        Each delete is guarded by its fencing token, so it never deletes a newer
        holder's key, and is bounded by the client's request timeout; a delete
        that fails goes on in the background (see ``Mutex.release``).
        """
        if not self._end_hold():
            return
        await self._release(self._locks)

    async def __aenter__(self) -> AsyncMultiLock:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()

    def __repr__(self) -> str:
        state = "held" if self._holding else "being acquired" if self._acquiring else "idle"
        lost = " lost" if self._holding and self._lost_error is not None else ""
        return f"<{type(self).__name__} {list(self.order)!r} {state}{lost}>"
