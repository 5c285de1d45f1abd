"""Auth administration: enable/disable authentication, users, roles, permissions.

To turn authentication on: add a ``root`` user, grant it the ``root`` role (etcd
creates that role on demand), then :meth:`AsyncAuthAPI.auth_enable`.  From then on
every request needs a user: create clients with ``user=``/``password=``.
"""

from __future__ import annotations

from .. import errors
from .._keys import key_range
from .._methods import (
    AUTH_DISABLE,
    AUTH_ENABLE,
    AUTH_STATUS,
    ROLE_ADD,
    ROLE_DELETE,
    ROLE_GET,
    ROLE_GRANT_PERMISSION,
    ROLE_LIST,
    ROLE_REVOKE_PERMISSION,
    USER_ADD,
    USER_CHANGE_PASSWORD,
    USER_DELETE,
    USER_GET,
    USER_GRANT_ROLE,
    USER_LIST,
    USER_REVOKE_ROLE,
)
from .._pb import auth_pb2
from ..admin_types import AuthStatus, Permission, PermissionType
from .connection import AsyncConnection


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise errors.InvalidRequest(f"{what} must be a non-empty str, got {value!r}")
    return value


def _password(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise errors.InvalidRequest("password must be a non-empty str")
    return value


class AsyncAuthAPI:
    """Auth administration requests; mixed into :class:`etcdsync.AsyncClient`.

    Once auth is enabled these need a client authenticated as a user with the
    ``root`` role.  Listing and reading are retried on transient failures;
    changes are not retried after they may have reached the server (on
    :class:`~etcdsync.errors.Unavailable` their outcome is unknown).
    """

    _conn: AsyncConnection

    # --- switching auth on and off -----------------------------------------------------

    async def auth_enable(self, *, timeout: float | None = None) -> None:
        """Turn authentication on.

        Requires a ``root`` user holding the ``root`` role; raises
        :class:`~etcdsync.errors.AuthError` otherwise.
        """
        await self._conn.unary(
            AUTH_ENABLE, AUTH_ENABLE.request(), timeout=timeout, idempotent=False
        )

    async def auth_disable(self, *, timeout: float | None = None) -> None:
        """Turn authentication off (needs a root client while it is on)."""
        await self._conn.unary(
            AUTH_DISABLE, AUTH_DISABLE.request(), timeout=timeout, idempotent=False
        )

    async def auth_status(self, *, timeout: float | None = None) -> AuthStatus:
        """Whether auth is enabled, and the auth store revision (etcd 3.5+; older
        servers raise :class:`~etcdsync.errors.UnsupportedError`)."""
        response = await self._conn.unary(
            AUTH_STATUS, AUTH_STATUS.request(), timeout=timeout, idempotent=True
        )
        return AuthStatus.from_pb(response)

    # --- users ------------------------------------------------------------------------

    async def user_add(
        self,
        name: str,
        password: str | None = None,
        *,
        no_password: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Create a user with ``password``, or with ``no_password=True`` a user that
        can only authenticate with a TLS client certificate (CN = its name).

        Raises :class:`~etcdsync.errors.UserExistsError` if the name is taken.
        """
        if no_password:
            if password is not None:
                raise errors.InvalidRequest("give a password or no_password=True, not both")
            request = USER_ADD.request(
                name=_name(name, "name"), options=auth_pb2.UserAddOptions(no_password=True)
            )
        else:
            if password is None:
                raise errors.InvalidRequest("a password is required (or no_password=True)")
            request = USER_ADD.request(name=_name(name, "name"), password=_password(password))
        await self._conn.unary(USER_ADD, request, timeout=timeout, idempotent=False)

    async def user_get(self, name: str, *, timeout: float | None = None) -> list[str]:
        """The roles granted to a user; raises :class:`~etcdsync.errors.UserNotFoundError`."""
        request = USER_GET.request(name=_name(name, "name"))
        response = await self._conn.unary(USER_GET, request, timeout=timeout, idempotent=True)
        return list(response.roles)

    async def user_list(self, *, timeout: float | None = None) -> list[str]:
        """Every user name."""
        response = await self._conn.unary(
            USER_LIST, USER_LIST.request(), timeout=timeout, idempotent=True
        )
        return list(response.users)

    async def user_delete(self, name: str, *, timeout: float | None = None) -> None:
        """Delete a user; raises :class:`~etcdsync.errors.UserNotFoundError`."""
        request = USER_DELETE.request(name=_name(name, "name"))
        await self._conn.unary(USER_DELETE, request, timeout=timeout, idempotent=False)

    async def user_change_password(
        self, name: str, password: str, *, timeout: float | None = None
    ) -> None:
        """Set a user's password (existing tokens of the user stay valid until they
        expire)."""
        request = USER_CHANGE_PASSWORD.request(
            name=_name(name, "name"), password=_password(password)
        )
        await self._conn.unary(USER_CHANGE_PASSWORD, request, timeout=timeout, idempotent=False)

    async def user_grant_role(self, user: str, role: str, *, timeout: float | None = None) -> None:
        """Grant ``role`` to ``user`` (both must exist)."""
        request = USER_GRANT_ROLE.request(user=_name(user, "user"), role=_name(role, "role"))
        await self._conn.unary(USER_GRANT_ROLE, request, timeout=timeout, idempotent=False)

    async def user_revoke_role(self, user: str, role: str, *, timeout: float | None = None) -> None:
        """Take ``role`` away from ``user``; raises
        :class:`~etcdsync.errors.NotGrantedError` if it was not granted."""
        request = USER_REVOKE_ROLE.request(name=_name(user, "user"), role=_name(role, "role"))
        await self._conn.unary(USER_REVOKE_ROLE, request, timeout=timeout, idempotent=False)

    # --- roles ------------------------------------------------------------------------

    async def role_add(self, name: str, *, timeout: float | None = None) -> None:
        """Create a role without permissions; raises
        :class:`~etcdsync.errors.RoleExistsError` if the name is taken."""
        request = ROLE_ADD.request(name=_name(name, "name"))
        await self._conn.unary(ROLE_ADD, request, timeout=timeout, idempotent=False)

    async def role_get(self, name: str, *, timeout: float | None = None) -> list[Permission]:
        """The permissions of a role; raises :class:`~etcdsync.errors.RoleNotFoundError`."""
        request = ROLE_GET.request(role=_name(name, "name"))
        response = await self._conn.unary(ROLE_GET, request, timeout=timeout, idempotent=True)
        return [Permission.from_pb(p) for p in response.perm]

    async def role_list(self, *, timeout: float | None = None) -> list[str]:
        """Every role name."""
        response = await self._conn.unary(
            ROLE_LIST, ROLE_LIST.request(), timeout=timeout, idempotent=True
        )
        return list(response.roles)

    async def role_delete(self, name: str, *, timeout: float | None = None) -> None:
        """Delete a role (it is revoked from every user holding it)."""
        request = ROLE_DELETE.request(role=_name(name, "name"))
        await self._conn.unary(ROLE_DELETE, request, timeout=timeout, idempotent=False)

    async def role_grant_permission(
        self,
        role: str,
        key: str | bytes,
        *,
        permission: PermissionType | str,
        range_end: str | bytes | None = None,
        prefix: bool = False,
        from_key: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Allow ``role`` to read, write or both (``permission``) on ``key``.

        ``prefix=True`` covers every key starting with ``key``, ``from_key=True``
        every key from ``key`` on, ``range_end`` the range ``[key, range_end)``.
        ``permission`` is a :class:`~etcdsync.PermissionType` or its name
        (``"read"``, ``"write"``, ``"readwrite"``); it has no default on purpose.
        """
        kind = PermissionType.parse(permission)
        start, end = key_range(key, range_end=range_end, prefix=prefix, from_key=from_key)
        perm = auth_pb2.Permission(permType=kind.name, key=start, range_end=end)
        request = ROLE_GRANT_PERMISSION.request(name=_name(role, "role"), perm=perm)
        await self._conn.unary(ROLE_GRANT_PERMISSION, request, timeout=timeout, idempotent=False)

    async def role_revoke_permission(
        self,
        role: str,
        key: str | bytes,
        *,
        range_end: str | bytes | None = None,
        prefix: bool = False,
        from_key: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Remove the permission of ``role`` granted on exactly this key or range.

        Raises :class:`~etcdsync.errors.NotGrantedError` when no permission matches.
        """
        start, end = key_range(key, range_end=range_end, prefix=prefix, from_key=from_key)
        request = ROLE_REVOKE_PERMISSION.request(role=_name(role, "role"), key=start, range_end=end)
        await self._conn.unary(ROLE_REVOKE_PERMISSION, request, timeout=timeout, idempotent=False)
