"""Barrier: block processes until someone releases them; compatible with Go's
``recipe.Barrier``.

The barrier is one key, ``<name>``: while it exists the barrier is up and
``wait()`` blocks; deleting it (``release()``) lets every waiter through at once.
Go's ``Barrier`` uses the same key (``Hold`` creates it if absent, ``Release``
deletes it, ``Wait`` waits for its deletion), so Go and Python holders and waiters
can share one barrier.

**Lease-bound by default.**  Go's barrier key has no lease: a holder that dies
without releasing blocks every waiter until someone deletes the key by hand.
Here ``hold()`` binds the key to the holder's session (the client's shared session
of ``ttl`` seconds, default 60, or ``session``), so a dead holder's barrier falls
within its TTL - and so does a live holder's whose lease could not be renewed in
time (paused or partitioned past the TTL): the waiters then pass early.  Pass
``persistent=True`` for Go's behaviour: the barrier stays up until released, whatever
happens to its holder.
"""

from __future__ import annotations

import secrets

from ... import errors
from ..._deadline import Deadline
from ...models import GetResponse
from ...ops import Compare, Op
from ...watch_types import EventType
from ._waiting import session_error
from .recipe_client import AsyncRecipeClient
from .session import DEFAULT_SESSION_TTL, AsyncSession

__all__ = ["AsyncBarrier"]


class AsyncBarrier:
    """A distributed barrier; create with ``client.barrier(name)``.

    ::

        gate = etcd.barrier("deploy/gate", ttl=30)
        await gate.hold()          # coordinator: raise the barrier
        ...
        await gate.release()       # let everyone through

        await etcd.barrier("deploy/gate").wait(timeout=600)   # workers

    ``hold()`` raises the barrier if it is down (True) and reports False when it is
    up already, held by someone else; ``release()`` lowers it whoever raised it;
    ``wait()`` returns once it is down.  Nothing stops a waiter that arrives after
    the release: a barrier lets through everyone who comes while it is down.
    """

    def __init__(
        self,
        client: AsyncRecipeClient,
        name: str,
        *,
        session: AsyncSession | None = None,
        ttl: int | None = None,
        persistent: bool = False,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise errors.InvalidRequest(f"a barrier name must be a non-empty str, got {name!r}")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            raise errors.InvalidRequest(f"ttl must be a positive int (seconds), got {ttl!r}")
        if session is not None and ttl is not None:
            raise errors.InvalidRequest("pass either session= or ttl=, not both")
        if persistent and (session is not None or ttl is not None):
            raise errors.InvalidRequest("a persistent barrier has no session: drop session=/ttl=")
        self._client = client
        self._name = name
        self._session_arg = session
        self._ttl = ttl
        self._persistent = persistent
        # Identifies this object's holds: a retried hold recognises its own key.
        self._token = secrets.token_hex(8).encode()
        self._revision = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def persistent(self) -> bool:
        """True if a hold is not bound to a lease (Go's behaviour)."""
        return self._persistent

    @property
    def revision(self) -> int:
        """The create revision of this object's last successful hold (0: none)."""
        return self._revision

    async def _lease(self) -> int:
        if self._persistent:
            return 0
        session = self._session_arg
        if session is None:
            session = await self._client.shared_session(self._ttl or DEFAULT_SESSION_TTL)
        if session.is_done:
            raise session_error(session)
        return session.lease_id

    async def hold(self, *, timeout: float | None = None) -> bool:
        """Raise the barrier: create its key (bound to the session's lease unless
        persistent).  True if this object holds it now - also when an earlier
        hold of this object is still up; False if it is up already, raised by
        someone else (nothing is changed then).

        Safe to call again after a :class:`~etcdsync.errors.Timeout` or
        :class:`~etcdsync.errors.Unavailable`: the key's value identifies this
        object's hold.
        """
        lease = await self._lease()
        response = await self._client.txn(
            [Compare.create_revision(self._name) == 0],
            [Op.put(self._name, self._token, lease=lease)],
            [Op.get(self._name)],
            timeout=timeout,
        )
        if response.succeeded:
            self._revision = response.revision
            return True
        current = response.responses[0]
        assert isinstance(current, GetResponse)
        kv = current.kv
        if kv is not None and kv.value == self._token:
            self._revision = kv.create_revision
            return True
        return False

    async def release(self, *, timeout: float | None = None) -> bool:
        """Lower the barrier, whoever raised it (Go's ``Release``): every waiter goes
        through.  True if it was up."""
        response = await self._client.delete(self._name, timeout=timeout)
        return response.deleted > 0

    async def is_up(self, *, timeout: float | None = None) -> bool:
        """True if the barrier is up now."""
        return (await self._client.get(self._name, keys_only=True, timeout=timeout)).kv is not None

    async def wait(self, timeout: float | None = None) -> int:
        """Wait until the barrier is down; returns the revision at which it was seen
        down (the release's revision when this call waited for it).

        Returns at once when it is not up.  Waits on a watch of the key (no
        polling).  Raises :class:`~etcdsync.errors.BarrierTimeout` when ``timeout``
        seconds pass first.
        """
        deadline = Deadline(timeout)
        response = await self._client.get(
            self._name, keys_only=True, timeout=deadline.rpc_timeout()
        )
        if response.kv is None:
            return response.revision
        while True:
            if deadline.expired():
                raise self._timeout(timeout)
            # From now, then read again: a release between the two is seen by the read,
            # one after it by the watch.
            watcher = await self._client.watch(
                self._name, no_put=True, require_leader=True, timeout=deadline.rpc_timeout()
            )
            try:
                response = await self._client.get(
                    self._name, keys_only=True, timeout=deadline.rpc_timeout()
                )
                if response.kv is None:
                    return response.revision
                while True:
                    try:
                        batch = await watcher.get(deadline.remaining())
                    except TimeoutError:
                        raise self._timeout(timeout) from None
                    except StopAsyncIteration:
                        raise errors.ClientClosedError(
                            "the barrier's watch was cancelled"
                        ) from None
                    except errors.CompactedError:
                        break  # watch anew
                    for event in batch.events:
                        if event.type is EventType.DELETE:
                            return event.revision
            finally:
                await watcher.cancel()

    def _timeout(self, timeout: float | None) -> errors.BarrierTimeout:
        return errors.BarrierTimeout(f"barrier {self._name!r} was still up after {timeout} s")

    def __repr__(self) -> str:
        kind = "persistent" if self._persistent else "lease-bound"
        return f"<{type(self).__name__} {self._name!r} {kind}>"
