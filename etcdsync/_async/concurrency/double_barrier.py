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

One round at a time: reuse a name only after everyone's ``leave()`` returned.
"""

from __future__ import annotations

import time

from ... import errors
from ..._backends._async import spawn
from ..._deadline import Deadline
from ...models import GetResponse
from ...ops import Compare, Op
from ...watch_types import EventType
from ..watcher import AsyncWatcher
from ._waiting import session_error, wait_for_deletes
from .recipe_client import AsyncRecipeClient
from .session import DEFAULT_SESSION_TTL, AsyncSession

__all__ = ["AsyncDoubleBarrier"]


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

    async def _get_session(self) -> AsyncSession:
        session = self._session_arg
        if session is None:
            session = await self._client.shared_session(self._ttl or DEFAULT_SESSION_TTL)
        if session.is_done:
            raise session_error(session)
        return session

    async def _waiters(self, deadline: Deadline) -> GetResponse:
        return await self._client.get(
            self.waiters_prefix,
            prefix=True,
            sort_order="ascend",
            sort_target="create",
            keys_only=True,
            timeout=deadline.rpc_timeout(),
        )

    # --- enter ---------------------------------------------------------------------------

    async def enter(self, timeout: float | None = None) -> int:
        """Enter, and wait until ``count`` participants have entered; returns the
        revision at which the barrier opened (the ``ready`` key's write).

        Raises :class:`~etcdsync.errors.BarrierFullError` if ``count``
        participants are inside already; :class:`~etcdsync.errors.BarrierTimeout`
        when ``timeout`` seconds pass first (the participant withdraws, unless the
        barrier opened at that moment: then it returns normally);
        :class:`~etcdsync.errors.SessionExpiredError` if the session ends while
        waiting (its key went with the lease).
        """
        if self._key:
            raise errors.BarrierError(f"this participant is in {self._name!r} already")
        deadline = Deadline(timeout)
        session = await self._get_session()
        if (await self._waiters(deadline)).count >= self._count:
            raise self._full()
        self._session = session
        try:
            await self._put_waiter(session, deadline)
            waiters = await self._waiters(deadline)
            if len(waiters.kvs) >= self._count:
                last = waiters.kvs[self._count - 1]
                if self._revision > last.create_revision:
                    await self._withdraw(deadline, unless_open=False)
                    raise self._full()
                if self._revision == last.create_revision:
                    # We complete the count: open the barrier for everyone.
                    self._entered = (await self._client.put(self.ready_key, b"")).revision
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
            if (
                isinstance(exc, errors.Timeout)
                and not isinstance(exc, errors.BarrierTimeout)
                and deadline.at is not None
            ):
                raise errors.BarrierTimeout(
                    f"the double barrier {self._name!r} did not open within {timeout} s"
                ) from exc
            raise

    def _full(self) -> errors.BarrierFullError:
        return errors.BarrierFullError(
            f"{self._count} participants are in the double barrier {self._name!r} already"
        )

    async def _put_waiter(self, session: AsyncSession, deadline: Deadline) -> None:
        while True:
            key = f"{self.waiters_prefix}{time.time_ns()}"
            self._key = key  # from here on, a failure withdraws it
            response = await self._client.txn(
                [Compare.version(key) == 0],
                [Op.put(key, b"", lease=session.lease_id)],
                [],
                timeout=deadline.rpc_timeout(),
            )
            if response.succeeded:
                self._revision = response.revision
                return
            # Another participant took the same nanosecond: another key.

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
                ready = await self._client.get(self.ready_key, timeout=deadline.rpc_timeout())
                kv = ready.kv
                if kv is not None and kv.mod_revision > self._revision:
                    return kv.mod_revision
                if session.is_done:
                    raise session_error(session)
                if deadline.expired():
                    return await self._enter_timed_out(deadline, timeout)
                if watcher is None:
                    # From now, then read again (above): no write of ``ready`` is missed.
                    watcher = await self._client.watch(
                        self.ready_key,
                        no_delete=True,
                        require_leader=True,
                        timeout=deadline.rpc_timeout(),
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
                compares, [Op.delete(key)], [Op.get(self.ready_key)], timeout=deadline.rpc_timeout()
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
        participant has not entered.
        """
        if not self._entered:
            raise errors.BarrierError(f"this participant has not entered {self._name!r}")
        deadline = Deadline(timeout)
        session = self._session
        assert session is not None
        try:
            waiters = await self._waiters(deadline)
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
                response = await self._client.txn(
                    [],
                    [Op.delete(self.ready_key), Op.delete(self._key)],
                    [],
                    timeout=deadline.rpc_timeout(),
                )
                self._forget()
                return response.revision
            if mine in keys:
                await self._client.txn(
                    [Compare.create_revision(self._key) == self._revision],
                    [Op.delete(self._key)],
                    [],
                    timeout=deadline.rpc_timeout(),
                )
            # Our key is gone: wait for everyone who entered with us (the oldest last).
            revision = await wait_for_deletes(
                self._client,
                self.waiters_prefix,
                self._entered,
                timeout=deadline.remaining(),
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
