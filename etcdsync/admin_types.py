"""Public types of the cluster, maintenance and auth APIs; pure and IO-free.

Members, member status, alarms, hashes, auth permissions and the leader key of
the server-side election service.  Every type is a frozen dataclass built from
its wire message with ``from_pb``; member and lease ids are plain ``int``
(etcd prints them in hex: ``f"{member.id:x}"``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest

__all__ = [
    "Alarm",
    "AlarmType",
    "AuthStatus",
    "HashKVResult",
    "HashResult",
    "LeaderKey",
    "Member",
    "MemberAddResult",
    "Permission",
    "PermissionType",
    "Status",
]


@dataclass(frozen=True, slots=True)
class Member:
    """One cluster member as the cluster configuration records it.

    ``name`` is empty and ``client_urls`` is empty until a newly added member has
    started and published itself.  A learner (``is_learner``) receives the log
    but does not vote and serves no client requests but status-like ones.
    """

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False

    @classmethod
    def from_pb(cls, pb: Any) -> Member:
        return cls(pb.ID, pb.name, tuple(pb.peerURLs), tuple(pb.clientURLs), pb.isLearner)

    @property
    def is_started(self) -> bool:
        """True once the member has started and published its name."""
        return bool(self.name)


@dataclass(frozen=True, slots=True)
class MemberAddResult:
    """The member just added (its ``id`` is final) and the whole membership after it."""

    member: Member
    members: tuple[Member, ...]

    @classmethod
    def from_pb(cls, pb: Any) -> MemberAddResult:
        return cls(Member.from_pb(pb.member), tuple(Member.from_pb(m) for m in pb.members))


@dataclass(frozen=True, slots=True)
class Status:
    """What one member reports about itself.

    ``leader`` is the member id of the leader this member knows (0: none);
    ``raft_index`` / ``raft_applied_index`` show how far it has received and
    applied the log; ``db_size`` is the backend file size and
    ``db_size_in_use`` the part holding live data (the rest is reclaimed by
    :meth:`~etcdsync.Client.defragment`).  ``errors`` lists the alarms or
    problems the member reports.
    """

    version: str
    db_size: int
    db_size_in_use: int
    leader: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
    errors: tuple[str, ...]
    is_learner: bool
    member_id: int
    revision: int

    @classmethod
    def from_pb(cls, pb: Any) -> Status:
        return cls(
            version=pb.version,
            db_size=pb.dbSize,
            db_size_in_use=pb.dbSizeInUse,
            leader=pb.leader,
            raft_index=pb.raftIndex,
            raft_term=pb.raftTerm,
            raft_applied_index=pb.raftAppliedIndex,
            errors=tuple(pb.errors),
            is_learner=pb.isLearner,
            member_id=pb.header.member_id,
            revision=pb.header.revision,
        )

    @property
    def is_leader(self) -> bool:
        """True when the reporting member is the leader."""
        return self.leader != 0 and self.leader == self.member_id


class AlarmType(enum.IntEnum):
    """The alarms a member can raise."""

    NONE = 0
    NOSPACE = 1
    """The backend reached ``--quota-backend-bytes``: writes are refused until
    space is freed (compact, defragment) and the alarm is disarmed."""
    CORRUPT = 2
    """A corruption check found diverging data between members."""


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alarm raised by one member."""

    member_id: int
    type: AlarmType

    @classmethod
    def from_pb(cls, pb: Any) -> Alarm:
        return cls(pb.memberID, AlarmType(pb.alarm))


@dataclass(frozen=True, slots=True)
class HashResult:
    """Hash of a member's whole backend (``Hash`` RPC); for debugging only."""

    hash: int
    member_id: int
    revision: int

    @classmethod
    def from_pb(cls, pb: Any) -> HashResult:
        return cls(pb.hash, pb.header.member_id, pb.header.revision)


@dataclass(frozen=True, slots=True)
class HashKVResult:
    """Hash of the key-value store up to a revision (``HashKV`` RPC).

    Members that applied the same history report the same ``hash`` for the same
    revision: comparing them across members detects divergence.
    ``compact_revision`` is the member's compaction point; ``revision`` its
    current revision.
    """

    hash: int
    compact_revision: int
    member_id: int
    revision: int

    @classmethod
    def from_pb(cls, pb: Any) -> HashKVResult:
        return cls(pb.hash, pb.compact_revision, pb.header.member_id, pb.header.revision)


class PermissionType(enum.IntEnum):
    """What a role may do on a key range."""

    READ = 0
    WRITE = 1
    READWRITE = 2

    @classmethod
    def parse(cls, value: PermissionType | str | int) -> PermissionType:
        """Accept a member, its name in any case (``"read"``) or its number."""
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        raise InvalidRequest(f"permission must be READ, WRITE or READWRITE, got {value!r}")


@dataclass(frozen=True, slots=True)
class Permission:
    """A role's permission on ``key`` (``range_end`` empty) or on ``[key, range_end)``.

    A ``range_end`` of ``b"\\0"`` means "every key from ``key`` on".
    """

    type: PermissionType
    key: bytes
    range_end: bytes = b""

    @classmethod
    def from_pb(cls, pb: Any) -> Permission:
        return cls(PermissionType(pb.permType), pb.key, pb.range_end)

    @property
    def is_range(self) -> bool:
        """True when the permission covers a range rather than one key."""
        return bool(self.range_end)


@dataclass(frozen=True, slots=True)
class AuthStatus:
    """Whether authentication is enabled, and the auth store's revision.

    ``auth_revision`` grows with every change to users, roles or permissions.
    """

    enabled: bool
    auth_revision: int

    @classmethod
    def from_pb(cls, pb: Any) -> AuthStatus:
        return cls(pb.enabled, pb.authRevision)


@dataclass(frozen=True, slots=True)
class LeaderKey:
    """The key that holds leadership in the server-side election service.

    Returned by ``server_campaign``; pass it to ``server_proclaim`` and
    ``server_resign``.  ``key`` is ``name + "/" + hex(lease)``, ``revision`` its
    create revision (a fencing token), ``lease`` the campaign's lease.
    """

    name: bytes
    key: bytes
    revision: int
    lease: int

    @classmethod
    def from_pb(cls, pb: Any) -> LeaderKey:
        return cls(pb.name, pb.key, pb.rev, pb.lease)
