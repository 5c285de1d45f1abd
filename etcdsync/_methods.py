"""The etcd gRPC methods we call: path plus request and response message types.

We call ``channel.unary_unary(path, ...)`` ourselves instead of generated stubs,
so the paths below are the whole contract with the server (they must stay
etcd's: ``/etcdserverpb.KV/Range`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._pb import rpc_pb2 as rpc
from ._pb import v3election_pb2 as election
from ._pb import v3lock_pb2 as lock


@dataclass(frozen=True)
class Method:
    """One RPC: its path and the message classes that go over the wire."""

    path: str
    request: Any
    response: Any

    @property
    def serializer(self) -> Any:
        return self.request.SerializeToString

    @property
    def deserializer(self) -> Any:
        return self.response.FromString


def _m(service: str, name: str, module: Any = rpc, req: str = "", resp: str = "") -> Method:
    package = module.DESCRIPTOR.package
    return Method(
        f"/{package}.{service}/{name}",
        getattr(module, req or f"{name}Request"),
        getattr(module, resp or f"{name}Response"),
    )


# KV
KV_RANGE = _m("KV", "Range")
KV_PUT = _m("KV", "Put")
KV_DELETE_RANGE = _m("KV", "DeleteRange")
KV_TXN = _m("KV", "Txn")
KV_COMPACT = _m("KV", "Compact", req="CompactionRequest", resp="CompactionResponse")

# Watch (bidi stream)
WATCH = _m("Watch", "Watch")

# Lease
LEASE_GRANT = _m("Lease", "LeaseGrant")
LEASE_REVOKE = _m("Lease", "LeaseRevoke")
LEASE_KEEPALIVE = _m("Lease", "LeaseKeepAlive")  # bidi stream
LEASE_TIME_TO_LIVE = _m("Lease", "LeaseTimeToLive")
LEASE_LEASES = _m("Lease", "LeaseLeases")

# Cluster
MEMBER_ADD = _m("Cluster", "MemberAdd")
MEMBER_REMOVE = _m("Cluster", "MemberRemove")
MEMBER_UPDATE = _m("Cluster", "MemberUpdate")
MEMBER_LIST = _m("Cluster", "MemberList")
MEMBER_PROMOTE = _m("Cluster", "MemberPromote")

# Maintenance
ALARM = _m("Maintenance", "Alarm")
STATUS = _m("Maintenance", "Status")
DEFRAGMENT = _m("Maintenance", "Defragment")
HASH = _m("Maintenance", "Hash")
HASH_KV = _m("Maintenance", "HashKV")
SNAPSHOT = _m("Maintenance", "Snapshot")  # server stream
MOVE_LEADER = _m("Maintenance", "MoveLeader")
DOWNGRADE = _m("Maintenance", "Downgrade")

# Auth
AUTH_ENABLE = _m("Auth", "AuthEnable")
AUTH_DISABLE = _m("Auth", "AuthDisable")
AUTH_STATUS = _m("Auth", "AuthStatus")
AUTHENTICATE = _m("Auth", "Authenticate")
USER_ADD = _m("Auth", "UserAdd", req="AuthUserAddRequest", resp="AuthUserAddResponse")
USER_GET = _m("Auth", "UserGet", req="AuthUserGetRequest", resp="AuthUserGetResponse")
USER_LIST = _m("Auth", "UserList", req="AuthUserListRequest", resp="AuthUserListResponse")
USER_DELETE = _m("Auth", "UserDelete", req="AuthUserDeleteRequest", resp="AuthUserDeleteResponse")
USER_CHANGE_PASSWORD = _m(
    "Auth",
    "UserChangePassword",
    req="AuthUserChangePasswordRequest",
    resp="AuthUserChangePasswordResponse",
)
USER_GRANT_ROLE = _m(
    "Auth", "UserGrantRole", req="AuthUserGrantRoleRequest", resp="AuthUserGrantRoleResponse"
)
USER_REVOKE_ROLE = _m(
    "Auth", "UserRevokeRole", req="AuthUserRevokeRoleRequest", resp="AuthUserRevokeRoleResponse"
)
ROLE_ADD = _m("Auth", "RoleAdd", req="AuthRoleAddRequest", resp="AuthRoleAddResponse")
ROLE_GET = _m("Auth", "RoleGet", req="AuthRoleGetRequest", resp="AuthRoleGetResponse")
ROLE_LIST = _m("Auth", "RoleList", req="AuthRoleListRequest", resp="AuthRoleListResponse")
ROLE_DELETE = _m("Auth", "RoleDelete", req="AuthRoleDeleteRequest", resp="AuthRoleDeleteResponse")
ROLE_GRANT_PERMISSION = _m(
    "Auth",
    "RoleGrantPermission",
    req="AuthRoleGrantPermissionRequest",
    resp="AuthRoleGrantPermissionResponse",
)
ROLE_REVOKE_PERMISSION = _m(
    "Auth",
    "RoleRevokePermission",
    req="AuthRoleRevokePermissionRequest",
    resp="AuthRoleRevokePermissionResponse",
)

# The server-side lock and election services (v3lockpb / v3electionpb)
LOCK_LOCK = _m("Lock", "Lock", lock)
LOCK_UNLOCK = _m("Lock", "Unlock", lock)
ELECTION_CAMPAIGN = _m("Election", "Campaign", election)
ELECTION_PROCLAIM = _m("Election", "Proclaim", election)
ELECTION_LEADER = _m("Election", "Leader", election)
ELECTION_OBSERVE = _m("Election", "Observe", election, req="LeaderRequest", resp="LeaderResponse")
ELECTION_RESIGN = _m("Election", "Resign", election)
