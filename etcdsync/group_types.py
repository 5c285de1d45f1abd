"""Group membership and partitioning values: members, membership events, ownership
changes, and the rendezvous hash that decides which member owns which item.

Pure and IO-free; shared by both flavours.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import EtcdError, InvalidRequest
from .models import KeyValue

__all__ = [
    "GroupMember",
    "MembershipEvent",
    "MembershipEventType",
    "OwnershipChange",
    "OwnershipChangeType",
    "check_member_id",
    "member_from_kv",
    "rendezvous_owner",
    "rendezvous_score",
]


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One member of a group, as stored in its key ``<group>/<id>``.

    ``id`` is the key's last part (by default the member's session lease id in
    lowercase hex), ``value`` what the member announced, ``create_revision`` the
    revision of its join (members are ordered by it; it is also the membership's
    fencing token), ``mod_revision`` the revision of its last update and
    ``lease`` the lease its key is bound to.
    """

    id: str
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int

    @property
    def text(self) -> str:
        """The value decoded as UTF-8."""
        return self.value.decode("utf-8")


def member_from_kv(prefix: bytes, kv: KeyValue) -> GroupMember | None:
    """The member a key under ``prefix`` (the group's ``<name>/``) stands for, or
    None for a key that is not a member key (its id would contain ``/``: a key of
    a nested group or of a partitioner's bookkeeping)."""
    suffix = kv.key[len(prefix) :]
    if not suffix or b"/" in suffix or not kv.key.startswith(prefix):
        return None
    return GroupMember(
        id=suffix.decode("utf-8", "surrogateescape"),
        key=kv.key,
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        lease=kv.lease,
    )


def check_member_id(member_id: object) -> str:
    """Validate an explicit member id: a non-empty str without ``/``."""
    if not isinstance(member_id, str) or not member_id or "/" in member_id:
        raise InvalidRequest(f"a member id must be a non-empty str without '/', got {member_id!r}")
    return member_id


class MembershipEventType(enum.Enum):
    """What happened to a member."""

    JOIN = "join"
    """A member joined (its key was created)."""
    LEAVE = "leave"
    """A member left: it called ``leave()``, its lease ended, or its key was deleted."""
    UPDATE = "update"
    """A member announced a new value (its key was written again)."""


@dataclass(frozen=True, slots=True)
class MembershipEvent:
    """One change of a group's membership.

    ``member`` is the member as it is after the change (for ``LEAVE``: as it was
    last seen), ``revision`` the store revision of the change.  ``initial`` marks
    the ``JOIN`` events of the members already present when the watch began
    (``revision`` is then the revision of that first read).  ``resync`` marks the
    events computed by comparing the state before and after a full re-read (the
    watch fell behind a compaction): they give the net difference, so a member
    that joined and left inside the gap is not reported and a member that left
    and joined again under the same id is reported as ``LEAVE`` + ``JOIN``.
    """

    type: MembershipEventType
    member: GroupMember
    revision: int
    initial: bool = False
    resync: bool = False


class OwnershipChangeType(enum.Enum):
    """How a partitioner's ownership of an item changed."""

    ACQUIRED = "acquired"
    """This member created the item's owner key: it owns the item from now on."""
    RELEASED = "released"
    """This member hands the item over (re-balancing or ``stop()``); the owner key
    is deleted only after every callback for this change has returned."""
    LOST = "lost"
    """The ownership ended without a hand-over: the session ended or the owner key
    was deleted.  Another member may own the item already."""


@dataclass(frozen=True, slots=True)
class OwnershipChange:
    """A change of a partitioner's ownership of one item.

    ``token`` is the ownership's fencing token (the create revision of the owner
    key); ``error`` says why a ``LOST`` ownership ended (None otherwise).
    """

    type: OwnershipChangeType
    item: str
    token: int
    error: EtcdError | None = None


def rendezvous_score(member_id: str, item: str) -> int:
    """The highest-random-weight score of ``item`` for ``member_id``: the first eight
    bytes (big-endian) of BLAKE2b-64 over ``member_id``, a NUL byte and ``item``,
    both UTF-8.  Stable across processes, platforms and Python versions."""
    data = member_id.encode("utf-8", "surrogateescape") + b"\0" + item.encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def rendezvous_owner(item: str, member_ids: Iterable[str]) -> str | None:
    """The member that owns ``item`` among ``member_ids`` (rendezvous hashing): the
    one with the highest :func:`rendezvous_score`, ties broken by the larger id.
    None when there is no member.  Removing a member moves only its own items;
    adding one moves to it only the items it now scores highest on."""
    best: tuple[int, str] | None = None
    for member_id in member_ids:
        candidate = (rendezvous_score(member_id, item), member_id)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[1]
