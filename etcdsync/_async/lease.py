"""Lease requests: grant, revoke, time-to-live, list, and keeping leases alive."""

from __future__ import annotations

from .. import errors
from .._keyspace import KeySpace
from .._methods import LEASE_GRANT, LEASE_LEASES, LEASE_REVOKE, LEASE_TIME_TO_LIVE
from ..lease_types import (
    Lease,
    LeaseKeepAliveResult,
    LeaseLike,
    LeaseLostReason,
    LeaseTimeToLive,
    lease_id_of,
)
from .connection import AsyncConnection
from .keepalive import AsyncKeepAlive, AsyncKeepAliveManager, renew_once

# Lease TTLs and ids are int64 on the wire (etcd itself refuses TTLs above 9e9 s).
_INT64_MAX = 2**63 - 1


class AsyncLeaseAPI:
    """Lease requests; mixed into :class:`etcdsync.AsyncClient`.

    Every method taking a lease accepts a lease id (``int``) or a
    :class:`~etcdsync.Lease` (anything with an ``id``).
    """

    _conn: AsyncConnection
    _keyspace: KeySpace

    async def grant(self, ttl: int, *, lease_id: int = 0, timeout: float | None = None) -> Lease:
        """Create a lease that expires ``ttl`` seconds after its last renewal.

        ``lease_id`` asks for a specific id (0: the server picks one).  The returned
        :class:`~etcdsync.Lease` carries the TTL actually granted (etcd raises TTLs
        below its minimum).  Raises :class:`~etcdsync.errors.LeaseTTLTooLargeError`
        for a TTL above the server's maximum.
        """
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 < ttl <= _INT64_MAX:
            raise errors.InvalidRequest(
                f"ttl must be an int from 1 to 2**63 - 1 (seconds), got {ttl!r}"
            )
        if (
            not isinstance(lease_id, int)
            or isinstance(lease_id, bool)
            or not 0 <= lease_id <= _INT64_MAX
        ):
            raise errors.InvalidRequest(
                f"lease_id must be an int from 0 to 2**63 - 1, got {lease_id!r}"
            )
        request = LEASE_GRANT.request(TTL=ttl, ID=lease_id)
        # Not repeated after an unknown outcome: a second grant would leak a lease.
        response = await self._conn.unary(LEASE_GRANT, request, timeout=timeout, idempotent=False)
        if response.error:
            raise errors.InternalServerError(
                f"lease grant failed: {response.error}", details=response.error
            )
        return Lease.from_pb(response)

    async def revoke(self, lease: LeaseLike, *, timeout: float | None = None) -> None:
        """Revoke a lease now, deleting every key attached to it.

        Listeners of the lease on this client learn it at once (reason
        ``"revoked"``).  Raises :class:`~etcdsync.errors.LeaseNotFoundError` when
        the lease does not exist (already expired or revoked).
        """
        lease_id = lease_id_of(lease)
        request = LEASE_REVOKE.request(ID=lease_id)
        try:
            await self._conn.unary(LEASE_REVOKE, request, timeout=timeout, idempotent=False)
        except errors.LeaseNotFoundError as exc:
            self._lease_gone(lease_id, LeaseLostReason.EXPIRED, "revoke found no such lease")
            raise errors.LeaseNotFoundError(
                f"lease {lease_id:x} not found",
                lease_id=lease_id,
                code=exc.code,
                details=exc.details,
                endpoint=exc.endpoint,
            ) from None
        self._lease_gone(lease_id, LeaseLostReason.REVOKED, "revoked by this client")

    async def time_to_live(
        self, lease: LeaseLike, *, keys: bool = False, timeout: float | None = None
    ) -> LeaseTimeToLive:
        """The remaining and granted TTL of a lease, and its keys if ``keys=True``.

        Raises :class:`~etcdsync.errors.LeaseNotFoundError` when the lease does not
        exist (never granted, expired or revoked).
        """
        lease_id = lease_id_of(lease)
        request = LEASE_TIME_TO_LIVE.request(ID=lease_id, keys=keys)
        response = await self._conn.unary(
            LEASE_TIME_TO_LIVE, request, timeout=timeout, idempotent=True
        )
        if response.TTL < 0:  # etcd answers -1 rather than an error for a missing lease
            raise errors.LeaseNotFoundError(f"lease {lease_id:x} not found", lease_id=lease_id)
        return LeaseTimeToLive.from_pb(self._keyspace.inbound(response))

    async def leases(self, *, timeout: float | None = None) -> list[int]:
        """The ids of every lease the cluster holds."""
        response = await self._conn.unary(
            LEASE_LEASES, LEASE_LEASES.request(), timeout=timeout, idempotent=True
        )
        return [status.ID for status in response.leases]

    async def keep_alive_once(
        self, lease: LeaseLike, *, timeout: float | None = None
    ) -> LeaseKeepAliveResult:
        """Renew a lease once (on a short-lived stream of its own) and return its new TTL.

        Raises :class:`~etcdsync.errors.LeaseNotFoundError` when the lease is gone.
        """
        return await renew_once(self._conn, lease_id_of(lease), timeout)

    def keep_alive(self, lease: LeaseLike) -> AsyncKeepAlive:
        """Keep a lease alive until every listener closes; return a new listener.

        Renewals go over one stream shared by all the leases of this client, each
        sent about a third of the lease's TTL after the previous one.  The returned
        :class:`AsyncKeepAlive` yields each renewal and tells when the lease is lost
        (expired, revoked, keepalive halted, client closed) - see its docs.  Any
        number of listeners may watch one lease; the lease is renewed while at least
        one is open.  Registering does no I/O and returns at once::

            async with etcd.keep_alive(lease) as ka:
                async for result in ka:
                    ...

        A :class:`~etcdsync.Lease` tells the manager the lease's TTL up front; for a
        bare id the first deadline assumes 5 s until the server reports the TTL.
        """
        lease_id = lease_id_of(lease)
        ttl_hint = getattr(lease, "ttl", None)
        if not isinstance(ttl_hint, int) or isinstance(ttl_hint, bool):
            ttl_hint = None
        return self._keepalives().listen(lease_id, ttl_hint)

    # --- internals ---------------------------------------------------------------------

    def _keepalives(self) -> AsyncKeepAliveManager:
        """The connection's one keepalive manager (shared with namespaced views)."""
        conn = self._conn
        return conn.shared(AsyncKeepAliveManager, lambda: AsyncKeepAliveManager(conn))

    def _lease_gone(self, lease_id: int, reason: LeaseLostReason, detail: str) -> None:
        self._keepalives().lease_gone(lease_id, reason, detail)
