"""Thin calls to etcd's server-side lock and election services.

etcd serves ``v3lockpb.Lock`` and ``v3electionpb.Election``: the server runs the
lock or election recipe for the client, bound to a lease the client keeps alive.
They use the same key layout as the client-side recipes
(:meth:`~etcdsync.AsyncClient.lock`, :meth:`~etcdsync.AsyncClient.election`) and
etcdctl, so all of them interoperate.  The client-side recipes do more (sessions,
loss detection, fencing helpers); these exist for parity with other clients and
for callers that already manage their own lease.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from .. import errors
from .._backends._async import Event
from .._config import check_timeout
from .._keys import to_bytes, to_key
from .._methods import (
    ELECTION_CAMPAIGN,
    ELECTION_LEADER,
    ELECTION_OBSERVE,
    ELECTION_PROCLAIM,
    ELECTION_RESIGN,
    LOCK_LOCK,
    LOCK_UNLOCK,
)
from .._pb import v3election_pb2
from ..admin_types import LeaderKey
from ..lease_types import LeaseLike, lease_id_of
from ..models import KeyValue
from .connection import REQUIRE_LEADER, AsyncConnection, AsyncResponseStream


def _leader_pb(leader: LeaderKey) -> v3election_pb2.LeaderKey:
    if not isinstance(leader, LeaderKey):
        raise errors.InvalidRequest(
            f"expected the LeaderKey returned by server_campaign(), got {leader!r}"
        )
    return v3election_pb2.LeaderKey(
        name=leader.name, key=leader.key, rev=leader.revision, lease=leader.lease
    )


class AsyncLeaderObserver:
    """The leaders of a server-side election, as they change.

    Iterate it (``async for kv in observer``) to get the leader's key and value
    (a :class:`~etcdsync.KeyValue`) now and after every change; :meth:`cancel` (or
    leaving ``async with``) ends the iteration.

    The observation outlives its member: when the member goes away or loses its
    leader (the stream asks it to end then), it is opened again on another member
    - with the reconnect policy of watches - and the leader that new stream
    reports first is skipped when it was already reported.  Other errors (e.g. the
    ``timeout`` passed, permission denied) are raised by the iteration as etcdsync
    errors.
    """

    def __init__(self, conn: AsyncConnection, request: Any, deadline: float | None) -> None:
        self._conn = conn
        self._request = request
        self._deadline = deadline
        self._stream: AsyncResponseStream | None = None
        self._last: tuple[bytes, int] | None = None  # (key, mod_revision) last reported
        self._stop = Event()
        self.reconnects = 0
        """How many times the observation was opened again (for tests and metrics)."""

    async def _open(self) -> AsyncResponseStream:
        remaining = None if self._deadline is None else self._deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise errors.Timeout("the observation's timeout passed")
        self._stream = await self._conn.server_stream(
            ELECTION_OBSERVE, self._request, timeout=remaining, extra_metadata=REQUIRE_LEADER
        )
        return self._stream

    async def get(self) -> KeyValue | None:
        """The next leader, or None once the observation ended."""
        attempt = 0
        while not self._stop.is_set():
            stream = self._stream or await self._open()
            try:
                response = await stream.read()
            except errors.EtcdError as exc:
                stream.cancel()
                if not await self._conn.resume_stream(
                    exc, stream.endpoint, attempt, self._deadline, self._stop
                ):
                    if self._stop.is_set():
                        return None
                    raise
                attempt += 1
                self.reconnects += 1
                self._stream = None
                continue
            if response is None:
                return None
            attempt = 0
            kv = KeyValue.from_pb(response.kv)
            seen = (kv.key, kv.mod_revision)
            if seen != self._last:  # a reopened stream starts with the current leader
                self._last = seen
                return kv
        return None

    def cancel(self) -> None:
        """Stop observing; a pending or later :meth:`get` returns None."""
        self._stop.set()
        if self._stream is not None:
            self._stream.cancel()

    def __aiter__(self) -> AsyncLeaderObserver:
        return self

    async def __anext__(self) -> KeyValue:
        kv = await self.get()
        if kv is None:
            raise StopAsyncIteration
        return kv

    async def __aenter__(self) -> AsyncLeaderObserver:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


class AsyncServerRecipesAPI:
    """Server-side lock and election calls; mixed into :class:`etcdsync.AsyncClient`.

    None of these calls is retried after it may have reached the server: a
    repeated lock or campaign could leave a second key behind.
    """

    _conn: AsyncConnection

    # --- v3lockpb.Lock -----------------------------------------------------------------

    async def server_lock(
        self, name: str | bytes, lease: LeaseLike, *, timeout: float | None = None
    ) -> bytes:
        """Wait until the lock ``name`` is held for ``lease``; returns the lock key.

        The key lives as long as the lease: keep the lease alive while holding the
        lock, and pass the key to :meth:`server_unlock`.  On
        :class:`~etcdsync.errors.Timeout` the server withdraws the waiter.
        """
        request = LOCK_LOCK.request(name=to_key(name), lease=lease_id_of(lease))
        response = await self._conn.unary(LOCK_LOCK, request, timeout=timeout, idempotent=False)
        key: bytes = response.key
        return key

    async def server_unlock(self, key: bytes, *, timeout: float | None = None) -> None:
        """Release a lock taken with :meth:`server_lock` (deletes its key)."""
        request = LOCK_UNLOCK.request(key=to_key(key))
        await self._conn.unary(LOCK_UNLOCK, request, timeout=timeout, idempotent=False)

    # --- v3electionpb.Election ---------------------------------------------------------

    async def server_campaign(
        self,
        name: str | bytes,
        lease: LeaseLike,
        value: str | bytes = b"",
        *,
        timeout: float | None = None,
    ) -> LeaderKey:
        """Wait until elected leader of ``name`` with ``value`` as the proposal.

        Returns the :class:`~etcdsync.LeaderKey` to pass to :meth:`server_proclaim`
        and :meth:`server_resign`.  Leadership lasts as long as ``lease``.
        """
        request = ELECTION_CAMPAIGN.request(
            name=to_key(name), lease=lease_id_of(lease), value=to_bytes(value, "value")
        )
        response = await self._conn.unary(
            ELECTION_CAMPAIGN, request, timeout=timeout, idempotent=False
        )
        return LeaderKey.from_pb(response.leader)

    async def server_proclaim(
        self, leader: LeaderKey, value: str | bytes, *, timeout: float | None = None
    ) -> None:
        """Publish a new value as the leader; raises
        :class:`~etcdsync.errors.NotElectedError` when ``leader`` no longer leads."""
        request = ELECTION_PROCLAIM.request(
            leader=_leader_pb(leader), value=to_bytes(value, "value")
        )
        await self._conn.unary(ELECTION_PROCLAIM, request, timeout=timeout, idempotent=False)

    async def server_resign(self, leader: LeaderKey, *, timeout: float | None = None) -> None:
        """Give up leadership (deletes the leader key; the next candidate is elected)."""
        request = ELECTION_RESIGN.request(leader=_leader_pb(leader))
        await self._conn.unary(ELECTION_RESIGN, request, timeout=timeout, idempotent=False)

    async def server_leader(
        self, name: str | bytes, *, timeout: float | None = None
    ) -> KeyValue | None:
        """The current leader's key and value, or None when nobody leads ``name``."""
        request = ELECTION_LEADER.request(name=to_key(name))
        try:
            response = await self._conn.unary(
                ELECTION_LEADER, request, timeout=timeout, idempotent=True
            )
        except errors.NoLeaderElectedError:
            return None
        return KeyValue.from_pb(response.kv)

    async def server_observe(
        self, name: str | bytes, *, timeout: float | None = None
    ) -> AsyncLeaderObserver:
        """Follow the leaders of ``name``: the current one (if any), then each new one.

        ``timeout`` bounds the whole observation, reconnections included (default:
        none, it lasts until :meth:`AsyncLeaderObserver.cancel`).
        """
        request = ELECTION_OBSERVE.request(name=to_key(name))
        seconds = check_timeout(timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        observer = AsyncLeaderObserver(self._conn, request, deadline)
        await observer._open()
        return observer
