"""Waiting for one's turn in a queue of lease-bound keys ordered by create revision.

Locks, semaphores and elections queue their contenders as keys under one prefix;
a contender's place is its key's create revision.  A contender whose turn has not
come waits for the *deletion* of keys created before its own, never for "any
change" under the prefix, so a release wakes only the next contender instead of
all of them (no thundering herd).

Public helpers (used by the Mutex, RWLock, Semaphore and Election recipes):

* :func:`wait_for_deletes` - wait until at most ``allowed`` keys under a prefix
  have a create revision ``<= max_create_revision``;
* :func:`session_error` - the error a recipe raises once its session has ended;
* :func:`foreign_key_error` - the error for a lease-less key under a recipe's prefix;
* :class:`AsyncWaitAbort` - ends a wait from another task or thread.

Deadlines come from the pure :class:`etcdsync._deadline.Deadline`.

Everything here uses the client's public KV and Watch API only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from ... import errors
from ..._backends._async import StateLock, spawn, wait_event
from ..._deadline import Deadline
from ...models import GetResponse
from ...ops import Op
from ...watch_types import EventType
from .recipe_client import AsyncRecipeClient

if TYPE_CHECKING:
    from ..watcher import AsyncWatcher
    from .session import AsyncSession

__all__ = [
    "WAIT_REQUEST_TIMEOUT",
    "AsyncWaitAbort",
    "foreign_key_error",
    "request_while_alive",
    "session_error",
    "wait_for_deletes",
]


WAIT_REQUEST_TIMEOUT = 1.0
"""The longest a waiter with a session runs one request (see ``_SessionWatch.request``)."""
_RETRY_FIRST_DELAY = 0.05
_MIN_ATTEMPT = 0.05  # a repeated request is not worth making with less time than this

_T = TypeVar("_T")


def session_error(session: AsyncSession) -> errors.EtcdError:
    """The error to raise because ``session`` has ended.

    A lost lease (expired, revoked, renewals halted, orphaned) becomes a
    :class:`~etcdsync.errors.SessionExpiredError` carrying its ``lease_id`` and
    ``reason``; a closed session or client keeps its
    :class:`~etcdsync.errors.ClientClosedError`.
    """
    return session.waiter_error()


class AsyncWaitAbort:
    """Ends the :func:`wait_for_deletes` calls given it, from any task or thread.

    ``abort(error)`` makes every such wait - running now or started later - raise
    ``error`` at once (an Election's ``resign()`` ends a ``campaign()`` pending in
    another thread this way).
    """

    def __init__(self) -> None:
        self._lock = StateLock()
        self._error: errors.EtcdError | None = None
        self._guards: list[_SessionWatch] = []

    @property
    def error(self) -> errors.EtcdError | None:
        """The error given to :meth:`abort`, or None."""
        return self._error

    def abort(self, error: errors.EtcdError) -> None:
        """End the waits with ``error`` (the first call wins)."""
        with self._lock:
            if self._error is not None:
                return
            self._error = error
            guards = list(self._guards)
        for guard in guards:
            guard.interrupt()

    def check(self) -> None:
        """Raise the abort's error, if any."""
        if self._error is not None:
            raise self._error

    def _add(self, guard: _SessionWatch) -> None:
        with self._lock:
            self._guards.append(guard)

    def _remove(self, guard: _SessionWatch) -> None:
        with self._lock:
            if guard in self._guards:
                self._guards.remove(guard)


async def request_while_alive(
    session: AsyncSession,
    deadline: Deadline,
    call: Callable[[float | None], Awaitable[_T]],
    abort: AsyncWaitAbort | None = None,
) -> _T:
    """``await call(timeout)`` for a waiter of ``session``: retried while it times out
    or finds no server, until ``deadline`` passes or the session ends (or ``abort``
    fires).  ``call`` must be safe to repeat (a read, a watch's creation, a
    create-if-absent txn).

    A request cannot be interrupted, so each attempt gets at most
    :data:`WAIT_REQUEST_TIMEOUT`: on a silent endpoint the waiter notices its
    session's end within about that long, instead of the client's request timeout,
    and it goes on waiting - until its own deadline or its session's end - rather
    than failing on one slow request.
    """
    delay = _RETRY_FIRST_DELAY
    # The first attempt may reach past the deadline (a timeout=0 call still makes
    # its one request); a repeated one only gets what is left.
    timeout = deadline.rpc_timeout()
    while True:
        if abort is not None:
            abort.check()
        if session.is_done:
            raise session_error(session)
        if timeout is None or timeout > WAIT_REQUEST_TIMEOUT:
            timeout = WAIT_REQUEST_TIMEOUT
        try:
            return await call(timeout)
        except (errors.Timeout, errors.ConnectionError_):
            remaining = deadline.remaining()
            if remaining is not None and remaining < _RETRY_FIRST_DELAY + _MIN_ATTEMPT:
                raise
        pause = delay if remaining is None else min(delay, remaining - _MIN_ATTEMPT)
        await wait_event(session.done, pause)
        delay = min(delay * 2, WAIT_REQUEST_TIMEOUT)
        timeout = deadline.remaining()


class _SessionWatch:
    """Ends the current wait as soon as the session ends or the abort fires (cancels
    its watcher), and runs the wait's requests so that they cannot outlive either
    for long (:meth:`request`)."""

    def __init__(
        self, session: AsyncSession | None, abort: AsyncWaitAbort | None, deadline: Deadline
    ) -> None:
        self._session = session
        self._abort = abort
        self._deadline = deadline
        self._lock = StateLock()
        self._watcher: AsyncWatcher | None = None
        if session is not None:
            session.add_done_callback(self._on_done)
        if abort is not None:
            abort._add(self)

    def _on_done(self, error: errors.EtcdError) -> None:
        self.interrupt()

    def interrupt(self) -> None:
        # Runs in the keepalive manager's task/thread or the aborting one: hand the
        # (I/O doing) cancel to a task of its own.  A cancelled watcher ends the
        # waiter's read at once.
        with self._lock:
            watcher = self._watcher
        if watcher is not None:
            spawn(watcher.cancel, name="etcdsync-wait-abort")

    def check(self) -> None:
        """Raise the abort's error, or the session's if it has ended."""
        if self._abort is not None:
            self._abort.check()
        if self._session is not None and self._session.is_done:
            raise session_error(self._session)

    async def request(self, call: Callable[[float | None], Awaitable[_T]]) -> _T:
        """``await call(timeout)``: one of the wait's requests (a read, a watch's
        creation), run by :func:`request_while_alive` when the wait has a session."""
        if self._session is None:
            self.check()
            return await call(self._deadline.rpc_timeout())
        return await request_while_alive(self._session, self._deadline, call, self._abort)

    def follow(self, watcher: AsyncWatcher) -> None:
        with self._lock:
            self._watcher = watcher
        # The session may have ended (or the abort fired) before the watcher was
        # registered here.
        self.check()

    def follow_none(self) -> None:
        with self._lock:
            self._watcher = None

    def close(self) -> None:
        self.follow_none()
        if self._session is not None:
            self._session.remove_done_callback(self._on_done)
        if self._abort is not None:
            self._abort._remove(self)


# The keys of the predecessors still present, youngest first, and the read's revision.
_Predecessors = tuple[list[bytes], int]


class OwnKeyGone(Exception):
    """Raised by :func:`wait_for_deletes` given ``own_key``: the read that found no
    predecessor left found the waiter's own key gone too (or replaced).  The caller
    decides what that means (its session ended, its key was deleted)."""


async def wait_for_deletes(
    client: AsyncRecipeClient,
    prefix: str | bytes,
    max_create_revision: int,
    *,
    session: AsyncSession | None = None,
    timeout: float | None = None,
    allowed: int = 0,
    abort: AsyncWaitAbort | None = None,
    leased_only: bool = False,
    own_key: str | bytes | None = None,
) -> int:
    """Wait until at most ``allowed`` keys under ``prefix`` have a create revision
    ``<= max_create_revision``; return the revision at which that held.

    Call it with ``max_create_revision`` = (your own key's create revision - 1):
    it then waits for your predecessors to go.

    * ``allowed=0`` (mutex, election, RW lock): repeatedly read the *last* key
      created at or before ``max_create_revision``, and watch for its DELETE
      (the watch starts now and the key is checked again once it exists); when
      no such key is left, return.  Each contender watches one key: its
      immediate predecessor.
    * ``allowed > 0`` (semaphore of ``allowed + 1`` holders): read the set of
      predecessors once, then follow the DELETE events under ``prefix`` and count
      them off locally - no read per wake-up.  The predecessor set can only
      shrink (a key created later has a higher create revision), so the local
      count is exact.  Waiting on one chosen key would be wrong here: holders
      release in any order.

    Stops with :func:`session_error` (a
    :class:`~etcdsync.errors.SessionExpiredError`, or
    :class:`~etcdsync.errors.ClientClosedError`) as soon as ``session`` ends, and
    with :class:`~etcdsync.errors.Timeout` once ``timeout`` seconds have passed
    (``timeout=0`` makes exactly one check; after the deadline no other request
    is started), and with the error given to
    ``abort`` as soon as it fires.  ``max_create_revision`` must not exceed the
    store's current revision (it never does when it is below a key you created).

    With ``leased_only`` every predecessor must be a lease-bound key (the
    prefix belongs to the recipe): one without a lease would never go, so
    :func:`foreign_key_error` is raised as soon as one is read.

    ``own_key`` (with ``allowed=0``): the waiter's own key, created at
    ``max_create_revision + 1``.  Every read of the predecessors then reads it too,
    in the same txn, and the read that finds no predecessor left also proves the
    key still there - at that very revision, with no request of its own (a
    handover costs the waiter one read).  :class:`OwnKeyGone` is raised when it is
    not.
    """
    if not isinstance(allowed, int) or isinstance(allowed, bool) or allowed < 0:
        raise errors.InvalidRequest(f"allowed must be an int >= 0, got {allowed!r}")
    if (
        not isinstance(max_create_revision, int)
        or isinstance(max_create_revision, bool)
        or max_create_revision < 0
    ):
        raise errors.InvalidRequest(
            f"max_create_revision must be an int >= 0, got {max_create_revision!r}"
        )
    if own_key is not None and (allowed != 0 or max_create_revision < 1):
        raise errors.InvalidRequest("own_key needs allowed=0 and max_create_revision >= 1")
    deadline = Deadline(timeout)
    guard = _SessionWatch(session, abort, deadline)
    own_present = [False]  # whether the last read found own_key at its revision

    older = {
        "prefix": True,
        "max_create_revision": max_create_revision,
        "sort_order": "descend",
        "sort_target": "create",
        "limit": 1 if allowed == 0 else 0,
        "keys_only": True,
    }

    async def read(request_timeout: float | None) -> _Predecessors:
        if own_key is None:
            response = await client.get(prefix, **older, timeout=request_timeout)  # type: ignore[arg-type]
        else:
            # One txn: the predecessors, and our own key at the same revision.
            both = await client.txn(
                (),
                (Op.get(prefix, **older), Op.get(own_key, keys_only=True)),  # type: ignore[arg-type]
                (),
                timeout=request_timeout,
            )
            found, mine = both.responses
            assert isinstance(found, GetResponse) and isinstance(mine, GetResponse)
            own_present[0] = bool(mine.kvs) and (
                mine.kvs[0].create_revision == max_create_revision + 1
            )
            response = found
        if leased_only:
            for kv in response.kvs:
                if not kv.lease:
                    raise foreign_key_error(kv.key, prefix)
        # Not ``count``: etcd counts the range before the create-revision filter.
        return [kv.key for kv in response.kvs], response.revision

    async def predecessors() -> _Predecessors:
        return await guard.request(read)

    checked = False
    try:
        while True:
            guard.check()
            if max_create_revision == 0:
                return 0  # nothing can be older than revision 1
            if checked and deadline.expired():
                raise _timeout(prefix, deadline)  # no request after the deadline
            keys, revision = await predecessors()
            checked = True
            if len(keys) <= allowed:
                if own_key is not None and not own_present[0]:
                    raise OwnKeyGone(own_key)
                return revision
            if max_create_revision > revision:
                raise errors.InvalidRequest(
                    f"max_create_revision {max_create_revision} is in the future "
                    f"(current revision {revision})"
                )
            if deadline.expired():
                raise _timeout(prefix, deadline)
            # Only the youngest predecessor matters with allowed=0: once it is gone,
            # look again.  With allowed > 0 every predecessor is counted off.
            target: str | bytes = keys[0] if allowed == 0 else prefix
            done = await _follow_deletes(client, guard, target, allowed, deadline, predecessors)
            if done:
                return done
    finally:
        guard.close()


async def _follow_deletes(
    client: AsyncRecipeClient,
    guard: _SessionWatch,
    target: str | bytes,
    allowed: int,
    deadline: Deadline,
    predecessors: Callable[[], Awaitable[_Predecessors]],
) -> int:
    """Watch ``target`` (a key or, with ``allowed > 0``, the prefix) and strike the
    predecessors off as they are deleted.

    The watch starts "from now" and the predecessors are read again *after* it
    exists, so no deletion can fall between the two.  (Watching from the first
    read's revision + 1 would do too, but etcd serves a watch that starts in the
    past from its unsynced group, which it visits every 100 ms: every lock
    handover would wait ~100 ms for its DELETE event.)

    Returns the revision at which at most ``allowed`` predecessors remained
    (``allowed > 0``), or 0 to ask the caller for a fresh read: the single watched
    key is gone or was replaced (``allowed == 0``), or the watch failed over a
    compaction.
    """
    # require_leader: a member cut off from its leader learns of no deletion, so a
    # waiter watching through it would wait forever (or until its timeout) while the
    # lock passes it by; with the header the member ends the stream within three
    # election timeouts and the watch resumes on a member that has a leader.

    async def start(request_timeout: float | None) -> AsyncWatcher:
        return await client.watch(
            target,
            prefix=allowed > 0,
            no_put=True,
            require_leader=True,
            timeout=request_timeout,
        )

    watcher = await guard.request(start)
    try:
        guard.follow(watcher)
        if deadline.expired():
            raise _timeout(target, deadline)  # no request after the deadline
        current, revision = await predecessors()
        if allowed == 0:
            if target not in current:
                return 0  # deleted (or no longer the youngest) before the watch began
        elif len(current) <= allowed:
            return revision
        keys = set(current)
        while True:
            try:
                batch = await watcher.get(deadline.remaining())
            except TimeoutError:
                raise _timeout(target, deadline) from None
            except StopAsyncIteration:
                guard.check()  # cancelled because the session ended
                return 0
            except errors.CompactedError:
                return 0  # the history needed is gone: read again
            for event in batch.events:
                if event.type is EventType.DELETE and event.kv.key in keys:
                    keys.discard(event.kv.key)
                    if allowed == 0:
                        return 0
                    if len(keys) <= allowed:
                        return event.kv.mod_revision
    finally:
        guard.follow_none()
        await watcher.cancel()


def _timeout(what: str | bytes, deadline: Deadline) -> errors.Timeout:
    return errors.Timeout(f"still waiting for deletions under {what!r} after {deadline.timeout} s")


def foreign_key_error(key: bytes, prefix: str | bytes) -> errors.ForeignKeyError:
    """The error for ``key``, found without a lease under a recipe's ``prefix``."""
    raw_prefix = prefix.encode() if isinstance(prefix, str) else prefix
    return errors.ForeignKeyError(
        f"{key!r} has no lease but sits under {raw_prefix!r}, the prefix of a lock, "
        "semaphore or election, where every key is a contender's lease-bound key: it "
        "would hold the recipe for good.  Keep data out of a recipe's prefix (e.g. "
        "write it next to the prefix, not under it) and delete that key",
        key=key,
        prefix=raw_prefix,
    )
