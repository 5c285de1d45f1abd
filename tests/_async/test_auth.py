"""Auth administration against a private real etcd: users, roles, key permissions
enforced by the server, enabling and disabling authentication.

Every test uses its own server (``etcd_server_factory``) so auth never leaks into
other tests.  Canonical asyncio tests; ``tests/_sync/test_auth.py`` is generated.
"""

from __future__ import annotations

import pytest

from etcdsync import AsyncClient, Permission, PermissionType, errors
from etcdsync.testing.plugin import EtcdServerFactory
from etcdsync.testing.server import EtcdServer


def _has_auth_status(server: EtcdServer) -> bool:
    return server.binary.version_info >= (3, 5)


async def _setup_users(admin: AsyncClient) -> None:
    await admin.user_add("root", "rootpw")
    await admin.user_grant_role("root", "root")
    await admin.role_add("reader")
    await admin.role_grant_permission("reader", "app/", prefix=True, permission="read")
    await admin.user_add("alice", "alicepw")
    await admin.user_grant_role("alice", "reader")
    await admin.role_add("writer")
    await admin.role_grant_permission(
        "writer", "rw/", prefix=True, permission=PermissionType.READWRITE
    )
    await admin.user_add("bob", "bobpw")
    await admin.user_grant_role("bob", "writer")


async def test_users_roles_and_permissions(etcd_server_factory: EtcdServerFactory) -> None:
    server = etcd_server_factory()
    endpoint = server.endpoint
    async with AsyncClient(endpoint, timeout=5) as admin:
        if _has_auth_status(server):
            assert not (await admin.auth_status()).enabled
        else:
            with pytest.raises(errors.UnsupportedError):
                await admin.auth_status()
        await _setup_users(admin)
        assert await admin.user_get("alice") == ["reader"]
        assert await admin.role_get("reader") == [Permission(PermissionType.READ, b"app/", b"app0")]
        assert set(await admin.user_list()) == {"root", "alice", "bob"}
        # The root role is built in: grantable, but not listed.
        assert set(await admin.role_list()) == {"reader", "writer"}
        # What etcdctl sees is what we wrote.
        assert "app/" in server.etcdctl("role", "get", "reader")

        with pytest.raises(errors.UserExistsError):
            await admin.user_add("alice", "other")
        with pytest.raises(errors.UserNotFoundError):
            await admin.user_get("nobody")
        with pytest.raises(errors.RoleNotFoundError):
            await admin.role_get("nothing")
        with pytest.raises(errors.RoleExistsError):
            await admin.role_add("reader")
        with pytest.raises(errors.InvalidRequest):
            await admin.user_add("carol")  # neither a password nor no_password
        with pytest.raises(errors.InvalidRequest):
            await admin.role_grant_permission("reader", "x", permission="execute")

        await admin.auth_enable()
        with pytest.raises(errors.AuthError):
            await admin.get("app/x")  # no user: refused now

    async with AsyncClient(endpoint, user="root", password="rootpw") as root:
        if _has_auth_status(server):
            status = await root.auth_status()
            assert status.enabled and status.auth_revision > 0
        await root.put("app/x", "1")
        await root.put("other/x", "2")

    async with AsyncClient(endpoint, user="alice", password="alicepw", timeout=5) as alice:
        assert (await alice.get("app/x")).value == b"1"
        with pytest.raises(errors.PermissionDeniedError):
            await alice.put("app/x", "mine")  # READ only
        with pytest.raises(errors.PermissionDeniedError):
            await alice.get("other/x")  # outside the prefix
        with pytest.raises(errors.PermissionDeniedError):
            await alice.user_list()  # not root

    async with AsyncClient(endpoint, user="bob", password="bobpw", timeout=5) as bob:
        await bob.put("rw/k", "v")
        assert (await bob.get("rw/k")).value == b"v"
        with pytest.raises(errors.PermissionDeniedError):
            await bob.get("app/x")

    async with AsyncClient(endpoint, user="alice", password="wrong", timeout=5) as bad:
        with pytest.raises(errors.AuthFailedError):
            await bad.get("app/x")

    async with AsyncClient(endpoint, user="root", password="rootpw") as root:
        await root.user_change_password("alice", "newpw")
        await root.user_revoke_role("bob", "writer")
        with pytest.raises(errors.NotGrantedError):
            await root.user_revoke_role("bob", "writer")
        await root.role_revoke_permission("reader", "app/", prefix=True)
        assert await root.role_get("reader") == []
        with pytest.raises(errors.NotGrantedError):
            await root.role_revoke_permission("reader", "app/", prefix=True)
        await root.user_delete("bob")
        await root.role_delete("writer")
        assert set(await root.user_list()) == {"root", "alice"}
        assert set(await root.role_list()) == {"reader"}

    async with AsyncClient(endpoint, user="alice", password="alicepw", timeout=5) as old:
        with pytest.raises(errors.AuthFailedError):
            await old.get("app/x")
    async with AsyncClient(endpoint, user="alice", password="newpw", timeout=5) as alice:
        with pytest.raises(errors.PermissionDeniedError):
            await alice.get("app/x")  # the permission was revoked

    async with AsyncClient(endpoint, user="root", password="rootpw") as root:
        await root.auth_disable()
    async with AsyncClient(endpoint) as anonymous:
        assert (await anonymous.get("other/x")).value == b"2"
        if _has_auth_status(server):
            assert not (await anonymous.auth_status()).enabled
        with pytest.raises(errors.UserNotFoundError):
            await anonymous.user_delete("bob")


async def test_enable_without_root_is_refused(etcd_server_factory: EtcdServerFactory) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint, timeout=5) as client:
        with pytest.raises(errors.AuthError):
            await client.auth_enable()  # no root user yet
        await client.put("still", "open")  # auth stayed off
        assert (await client.get("still")).value == b"open"


async def test_user_without_password(etcd_server_factory: EtcdServerFactory) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint, timeout=5) as client:
        await client.user_add("certonly", no_password=True)
        await client.user_add("root", "rootpw")
        await client.user_grant_role("root", "root")
        await client.auth_enable()
    # A password-less user can only log in with a client certificate.
    async with AsyncClient(server.endpoint, user="certonly", password="x", timeout=5) as c:
        with pytest.raises(errors.AuthFailedError):
            await c.get("k")
    async with AsyncClient(server.endpoint, user="root", password="rootpw") as root:
        assert "certonly" in await root.user_list()
        with pytest.raises(errors.InvalidRequest):
            await root.user_add("x", "pw", no_password=True)
        await root.auth_disable()
