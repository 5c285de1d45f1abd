"""DoubleBarrier: ``count`` participants enter together and leave together;
compatible with Go's ``recipe.DoubleBarrier``.

Key layout (Go's)::

    <name>/waiters/<unix time in ns>   one per participant, bound to its session's lease
    <name>/ready                       put by the participant that completes the count

**Enter.**  A participant puts its waiter key and reads the waiters in create
revision order.  The ``count``-th one puts ``<name>/ready``; every participant
returns from ``enter()`` once ``ready`` has been written *after* its own key was
created, so nobody enters before ``count`` participants have arrived.  A
participant arriving after the ``count``-th is refused
(:class:`~etcdsync.errors.BarrierFullError`) and withdraws its key.

**Leave.**  The oldest participant leaves last: it waits until every other waiter
key created before the barrier opened is gone, then deletes ``ready`` and its own
key.  Every other participant deletes its key and waits until all of them (the
oldest included) are gone.  So nobody returns from ``leave()`` before every
participant has left.  (Go's ``Leave`` plays the same roles: the lowest key waits
for the others, the others wait for the lowest; the two interoperate.)

**Dead participants.**  A participant's key is bound to its session's lease: one
that dies leaves with its lease, within the TTL.  Before the barrier opens, a dead
participant still counts until its key expires; after it opened, the others'
``leave()`` waits for its key to expire.  Either way nobody waits forever.

**Across a leader election.**  Like a lock's acquire, ``enter()`` and ``leave()``
repeat a request that times out or finds no server until the caller's deadline (each
attempt bounded, so a waiter notices its session's end): every one of them is safe to
repeat - reads, the watch's creation, the waiter key's put (a repeat finds the key an
earlier attempt created, bound to our lease), the ``ready`` write (guarded: written
only if not written since our key was created, else read) and the deletes.  A
participant's requests stop at once when its session ends (``enter()``), except
``leave()``'s after its own key is gone: its session does not matter any more.

One round at a time: reuse a name only after everyone's ``leave()`` returned.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ... import errors
from ..._backends._async import sleep, spawn
from ..._deadline import Deadline
from ...models import GetResponse, TxnResponse
from ...ops import Compare, Op
from ...watch_types import EventType
from ..watcher import AsyncWatcher
from ._waiting import WAIT_REQUEST_TIMEOUT, request_while_alive, session_error, wait_for_deletes
from .recipe_client import AsyncRecipeClient
from .session import DEFAULT_SESSION_TTL, AsyncSession

__all__ = ["AsyncDoubleBarrier"]

_T = TypeVar("_T")
_RETRY_FIRST_DELAY = 0.05


async def _until_deadline(
    deadline: Deadline,
    call: Callable[[float | None], Awaitable[_T]],
    *,
    attempt: float | None = WAIT_REQUEST_TIMEOUT,
) -> _T:
    """``await call(timeout)``, again while it times out or finds no server, until
    ``deadline`` passes (the last error is raised then): for requests that no longer
    depend on a session (``leave()`` once our key is gone).  ``call`` must be safe to
    repeat; each try gets at most ``attempt`` seconds (None: what is left)."""
    delay = _RETRY_FIRST_DELAY
    while True:
        timeout = deadline.rpc_timeout()
        if attempt is not None and (timeout is None or timeout > attempt):
            timeout = attempt
        try:
            return await call(timeout)
        except (errors.Timeout, errors.ConnectionError_):
            remaining = deadline.remaining()
            if remaining is not None and remaining < 2 * _RETRY_FIRST_DELAY:
                raise
        await sleep(delay if remaining is None else min(delay, remaining - _RETRY_FIRST_DELAY))
        delay = min(delay * 2, WAIT_REQUEST_TIMEOUT)


class AsyncDoubleBarrier:
    """One participant of a distributed double barrier; create with
    ``client.double_barrier(name, count)``.

    ::

        barrier = etcd.double_barrier("jobs/batch-7", 4, ttl=10)
        await barrier.enter(timeout=60)   # returns when 4 participants have entered
        ...                               # the 4 work together
        await barrier.leave(timeout=60)   # returns when all 4 have left

    Every participant must use the same ``count``.  One object is one
    participant: create one per task or thread.
    """

    def __init__(
        self,
        client: AsyncRecipeClient,
        name: str,
        count: int,
        *,
        session: AsyncSession | None = None,
        ttl: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise errors.InvalidRequest(f"a barrier name must be a non-empty str, got {name!r}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise errors.InvalidRequest(f"count must be an int >= 1, got {count!r}")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            raise errors.InvalidRequest(f"ttl must be a positive int (seconds), got {ttl!r}")
        if session is not None and ttl is not None:
            raise errors.InvalidRequest("pass either session= or ttl=, not both")
        self._client = client
        self._name = name
        self._count = count
        self._session_arg = session
        self._ttl = ttl
        self._session: AsyncSession | None = None
        self._key = ""
        self._revision = 0  # the create revision of our waiter key
        self._entered = 0  # the revision at which the barrier opened for us

    @property
    def name(self) -> str:
        return self._name

    @property
    def count(self) -> int:
        return self._count

    @property
    def waiters_prefix(self) -> str:
        return f"{self._name}/waiters/"

    @property
    def ready_key(self) -> str:
        return f"{self._name}/ready"

    @property
    def key(self) -> str:
        """This participant's waiter key ("" when not in the barrier)."""
        return self._key

    @property
    def entered(self) -> bool:
        """True between a successful ``enter()`` and the end of ``leave()``."""
        return self._entered > 0

    async def _get_session(self, deadline: Deadline) -> AsyncSession:
        session = self._session_arg
        if session is None:
            ttl = self._ttl or DEFAULT_SESSION_TTL
            # A grant whose answer is lost leaves a lease nobody renews: it expires.
            session = await _until_deadline(
                deadline, lambda timeout: self._client.shared_session(ttl, timeout=timeout)
            )
        if session.is_done:
            raise session_error(session)
        return session

    async def _read_waiters(self, timeout: float | None) -> GetResponse:
        return await self._client.get(
            self.waiters_prefix,
            prefix=True,
            sort_order="ascend",
            sort_target="create",
            keys_only=True,
            timeout=timeout,
        )

    async def _waiters(self, session: AsyncSession, deadline: Deadline) -> GetResponse:
        return await request_while_alive(session, deadline, self._read_waiters)

    # --- enter ---------------------------------------------------------------------------

    async def enter(self, timeout: float | None = None) -> int:
        """Enter, and wait until ``count`` participants have entered; returns the
        revision at which the barrier opened (the ``ready`` key's write).

        Raises :class:`~etcdsync.errors.BarrierFullError` if ``count``
        participants are inside already; :class:`~etcdsync.errors.BarrierTimeout`
        when ``timeout`` seconds pass first (the participant withdraws, unless the
        barrier opened at that moment: then it returns normally);
        :class:`~etcdsync.errors.SessionExpiredError` if the session ends while
        waiting (its key went with the lease).  A request that times out or finds
        no server (a leader election) is sent again until ``timeout``.
        """
        if self._key:
            raise errors.BarrierError(f"this participant is in {self._name!r} already")
        deadline = Deadline(timeout)
        try:
            session = await self._get_session(deadline)
            if (await self._waiters(session, deadline)).count >= self._count:
                raise self._full()
        except errors.Timeout as exc:
            raise self._enter_timeout(exc, deadline, timeout) from exc
        self._session = session
        try:
            await self._put_waiter(session, deadline)
            waiters = await self._waiters(session, deadline)
            if len(waiters.kvs) >= self._count:
                last = waiters.kvs[self._count - 1]
                if self._revision > last.create_revision:
                    await self._withdraw(deadline, unless_open=False)
                    raise self._full()
                if self._revision == last.create_revision:
                    # We complete the count: open the barrier for everyone.
                    self._entered = await self._open(session, deadline)
                    return self._entered
            self._entered = await self._wait_ready(session, deadline, timeout)
            return self._entered
        except BaseException as exc:
            if self._key and not self._entered:
                # Unless cancelled, a barrier that opened with us counted is entered.
                opened = await self._withdraw(deadline, unless_open=isinstance(exc, Exception))
                if opened:
                    self._entered = opened
                    return opened
            if isinstance(exc, errors.Timeout):
                raise self._enter_timeout(exc, deadline, timeout) from exc
            raise

    def _enter_timeout(
        self, exc: errors.Timeout, deadline: Deadline, timeout: float | None
    ) -> errors.Timeout:
        # Requests are repeated until the deadline: with one, any Timeout means it passed.
        if isinstance(exc, errors.BarrierTimeout) or deadline.at is None:
            return exc
        return errors.BarrierTimeout(
            f"the double barrier {self._name!r} did not open within {timeout} s"
        )

    def _full(self) -> errors.BarrierFullError:
        return errors.BarrierFullError(
            f"{self._count} participants are in the double barrier {self._name!r} already"
        )

    async def _put_waiter(self, session: AsyncSession, deadline: Deadline) -> None:
        while True:
            key = f"{self.waiters_prefix}{time.time_ns()}"
            self._key = key  # from here on, a failure withdraws it

            async def attempt(timeout: float | None, key: str = key) -> TxnResponse:
                return await self._client.txn(
                    [Compare.create_revision(key) == 0],
                    [Op.put(key, b"", lease=session.lease_id)],
                    [Op.get(key, keys_only=True)],
                    timeout=timeout,
                )

            try:
                response = await request_while_alive(session, deadline, attempt)
            except errors.LeaseExpiredError:
                raise  # the session ended while the txn was repeated
            except errors.LeaseNotFoundError as exc:
                raise session.lease_gone(exc) from None
            if response.succeeded:
                self._revision = response.revision
                return
            found = response.responses[0]
            assert isinstance(found, GetResponse)
            if found.kvs and found.kvs[0].lease == session.lease_id:
                # Created by an earlier attempt whose answer was lost: ours.
                self._revision = found.kvs[0].create_revision
                return
            # Another participant took the same nanosecond: another key.

    async def _open(self, session: AsyncSession, deadline: Deadline) -> int:
        """Write ``ready`` (we complete the count); the revision it was written at.

        Guarded - only if not written since our key was created, else read it - so a
        repeat after a lost answer returns the revision of the write that landed."""

        async def attempt(timeout: float | None) -> TxnResponse:
            return await self._client.txn(
                [Compare.mod_revision(self.ready_key) < self._revision + 1],
                [Op.put(self.ready_key, b"")],
                [Op.get(self.ready_key, keys_only=True)],
                timeout=timeout,
            )

        response = await request_while_alive(session, deadline, attempt)
        if response.succeeded:
            return response.revision
        ready = response.responses[0]
        assert isinstance(ready, GetResponse) and ready.kvs
        return ready.kvs[0].mod_revision

    async def _wait_ready(
        self, session: AsyncSession, deadline: Deadline, timeout: float | None
    ) -> int:
        """Wait until ``ready`` is written after our key was created."""
        watcher: AsyncWatcher | None = None

        def on_session_end(error: errors.EtcdError) -> None:
            # Runs in the keepalive manager's task/thread: end the wait at once.
            if watcher is not None:
                spawn(watcher.cancel, name="etcdsync-barrier-abort")

        session.add_done_callback(on_session_end)
        try:
            while True:
                ready = await request_while_alive(
                    session,
                    deadline,
                    lambda timeout: self._client.get(self.ready_key, timeout=timeout),
                )
                kv = ready.kv
                if kv is not None and kv.mod_revision > self._revision:
                    return kv.mod_revision
                if session.is_done:
                    raise session_error(session)
                if deadline.expired():
                    return await self._enter_timed_out(deadline, timeout)
                if watcher is None:
                    # From now, then read again (above): no write of ``ready`` is missed.
                    watcher = await request_while_alive(
                        session,
                        deadline,
                        lambda timeout: self._client.watch(
                            self.ready_key, no_delete=True, require_leader=True, timeout=timeout
                        ),
                    )
                    continue
                try:
                    batch = await watcher.get(deadline.remaining())
                except TimeoutError:
                    return await self._enter_timed_out(deadline, timeout)
                except StopAsyncIteration:
                    if session.is_done:
                        raise session_error(session) from None
                    raise errors.ClientClosedError("the barrier's watch was cancelled") from None
                except errors.CompactedError:
                    await watcher.cancel()
                    watcher = None
                    continue
                for event in batch.events:
                    if event.type is EventType.PUT and event.revision > self._revision:
                        return event.revision
        finally:
            session.remove_done_callback(on_session_end)
            if watcher is not None:
                await watcher.cancel()

    async def _enter_timed_out(self, deadline: Deadline, timeout: float | None) -> int:
        """Withdraw, unless the barrier opened meanwhile (then we are in)."""
        opened = await self._withdraw(deadline, unless_open=True)
        if opened:
            return opened
        raise errors.BarrierTimeout(
            f"the double barrier {self._name!r} did not open within {timeout} s; "
            "this participant withdrew"
        )

    async def _withdraw(self, deadline: Deadline, *, unless_open: bool) -> int:
        """Delete our waiter key (best effort: it goes with the lease otherwise).

        With ``unless_open``, only if ``ready`` was not written since our key was
        created; if it was, the barrier opened with us counted: keep the key and
        return the revision at which it opened (0 otherwise).
        """
        key, session, revision = self._key, self._session, self._revision
        if not key or session is None or session.is_done or self._client.closed:
            self._forget()
            return 0
        compares = [Compare.lease(key) == session.lease_id]
        if unless_open:
            compares.append(Compare.mod_revision(self.ready_key) < revision + 1)
        try:
            response = await self._client.txn(
                compares,
                [Op.delete(key)],
                [Op.get(self.ready_key)],
                timeout=deadline.cleanup_timeout(),
            )
        except errors.EtcdError:
            self._forget()
            return 0  # the key ends with the session's lease
        if unless_open and not response.succeeded:
            ready = response.responses[0]
            assert isinstance(ready, GetResponse)
            if ready.kv is not None and ready.kv.mod_revision > revision:
                return ready.kv.mod_revision
        self._forget()
        return 0

    def _forget(self) -> None:
        self._key, self._revision, self._entered = "", 0, 0

    # --- leave ---------------------------------------------------------------------------

    async def leave(self, timeout: float | None = None) -> int:
        """Leave, and wait until every participant has left; returns the revision at
        which the last one was gone.

        Raises :class:`~etcdsync.errors.BarrierTimeout` when ``timeout`` seconds
        pass first (call ``leave()`` again to go on waiting); BarrierError if this
        participant has not entered.  Requests are sent again until ``timeout``, as
        in :meth:`enter`.
        """
        if not self._entered:
            raise errors.BarrierError(f"this participant has not entered {self._name!r}")
        deadline = Deadline(timeout)
        session = self._session
        assert session is not None
        try:
            waiters = await _until_deadline(deadline, self._read_waiters)
            keys = [kv.key for kv in waiters.kvs if kv.create_revision <= self._entered]
            mine = self._key.encode()
            if mine in keys and keys[0] == mine:
                # The oldest leaves last: wait for the others, then close the barrier.
                if len(keys) > 1:
                    await wait_for_deletes(
                        self._client,
                        self.waiters_prefix,
                        self._entered,
                        session=session,
                        timeout=deadline.remaining(),
                        allowed=1,
                    )
                closing = [Op.delete(self.ready_key), Op.delete(self._key)]
                response = await _until_deadline(
                    deadline, lambda timeout: self._client.txn([], closing, [], timeout=timeout)
                )
                self._forget()
                return response.revision
            if mine in keys:
                guard = [Compare.create_revision(self._key) == self._revision]
                leaving = [Op.delete(self._key)]
                await _until_deadline(
                    deadline, lambda timeout: self._client.txn(guard, leaving, [], timeout=timeout)
                )
            # Our key is gone: wait for everyone who entered with us (the oldest last).
            # (Its requests are single tries without a session: repeat the whole wait.)
            revision = await _until_deadline(
                deadline,
                lambda timeout: wait_for_deletes(
                    self._client, self.waiters_prefix, self._entered, timeout=timeout
                ),
                attempt=None,
            )
            self._forget()
            return revision
        except errors.Timeout as exc:
            if isinstance(exc, errors.BarrierTimeout) or deadline.at is None:
                raise
            raise errors.BarrierTimeout(
                f"not everyone left the double barrier {self._name!r} within {timeout} s"
            ) from exc

    def __repr__(self) -> str:
        state = "entered" if self.entered else ("waiting" if self._key else "outside")
        return f"<{type(self).__name__} {self._name!r} count={self._count} {state}>"
