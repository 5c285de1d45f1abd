"""Lease values: a granted lease, its remaining time, renewal results, why it was lost.

Pure and IO-free; shared by both flavours.  Anywhere a lease id is accepted, a
:class:`Lease` is accepted too (the client reads its ``id``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import InvalidRequest

__all__ = [
    "Lease",
    "LeaseKeepAliveResult",
    "LeaseLike",
    "LeaseLostReason",
    "LeaseTimeToLive",
    "lease_id_of",
]


class _HasLeaseId(Protocol):
    @property
    def id(self) -> int: ...


LeaseLike = int | _HasLeaseId
"""A lease id, or any object with an ``id`` attribute holding one (e.g. :class:`Lease`)."""


def lease_id_of(lease: object) -> int:
    """The lease id of ``lease`` (an int or an object with ``.id``); validates it.

    Raises :class:`~etcdsync.errors.InvalidRequest` for anything but a positive id.
    """
    lease_id = getattr(lease, "id", lease)
    if not isinstance(lease_id, int) or isinstance(lease_id, bool) or lease_id <= 0:
        raise InvalidRequest(f"a lease id must be an int > 0, got {lease!r}")
    return lease_id


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted lease: its ``id`` and the ``ttl`` (seconds) the server granted.

    The server may grant a longer TTL than asked for (it enforces a minimum).
    Pass a ``Lease`` wherever a lease id is accepted: ``put(key, value, lease=lease)``,
    ``keep_alive(lease)``, ``revoke(lease)``; ``int(lease)`` is its id.
    """

    id: int
    ttl: int

    @classmethod
    def from_pb(cls, pb: Any) -> Lease:
        return cls(pb.ID, pb.TTL)

    def __int__(self) -> int:
        return self.id

    def __index__(self) -> int:
        return self.id

    @property
    def hex_id(self) -> str:
        """The id in lowercase hex, as etcdctl prints it and Go recipes put in keys."""
        return format(self.id, "x")


@dataclass(frozen=True, slots=True)
class LeaseTimeToLive:
    """What the server knows about a live lease.

    ``ttl`` is the remaining time in seconds, ``granted_ttl`` the TTL it was
    granted (or last renewed) with, ``keys`` the keys attached to it (filled only
    when asked for with ``keys=True``).
    """

    id: int
    ttl: int
    granted_ttl: int
    keys: list[bytes] = field(default_factory=list)

    @classmethod
    def from_pb(cls, pb: Any) -> LeaseTimeToLive:
        return cls(pb.ID, pb.TTL, pb.grantedTTL, list(pb.keys))


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveResult:
    """One successful renewal: the lease ``id`` now lives ``ttl`` more seconds."""

    id: int
    ttl: int


class LeaseLostReason(str, enum.Enum):
    """Why a kept-alive lease stopped being kept alive.

    The values compare equal to their strings: ``reason == "revoked"`` works.
    """

    EXPIRED = "expired"
    """The server answered that the lease does not exist (it expired, or never existed)."""
    REVOKED = "revoked"
    """The lease was revoked: by this client, or - detected when the server denied a
    renewal before the lease could have expired - by someone else."""
    HALTED = "keepalive halted"
    """No renewal reached the server before the lease's deadline (last confirmed renewal
    plus its TTL): the lease must be assumed gone, although the server may not have
    expired it yet."""
    CLIENT_CLOSED = "client closed"
    """The client was closed; the lease is no longer renewed and will expire."""

    def __str__(self) -> str:
        return self.value
