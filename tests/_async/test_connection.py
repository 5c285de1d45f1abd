"""The connection against real etcd processes: failover, dead endpoints, deadlines
against a paused (SIGSTOP) server, clean close, TLS, mutual TLS and user/password auth
with token expiry.

Canonical asyncio tests; ``tests/_sync/test_connection.py`` is generated from this file.
Tests that pause a server or change its configuration use a private one.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from etcdsync import AsyncClient, TLSConfig, errors
from etcdsync._backends._async import Event, sleep, spawn, wait_event
from etcdsync.testing.plugin import EtcdServerFactory
from etcdsync.testing.proxy import FaultProxy
from etcdsync.testing.server import EtcdServer, TLSFiles, allocate_ports

from .timing import within

RUN = f"{__name__}/{uuid.uuid4().hex[:8]}"


def _prefix(test: str) -> str:
    return f"{RUN}/{test}/"


def _dead_endpoint() -> str:
    """A loopback port nobody listens on: connections are refused at once."""
    return f"127.0.0.1:{allocate_ports(1)[0]}"


def _background() -> set[object]:
    """Live threads, plus asyncio tasks other than the caller's when a loop runs."""
    found: set[object] = set(threading.enumerate())
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return found
    current = asyncio.current_task(loop)
    found.update(task for task in asyncio.all_tasks(loop) if task is not current)
    return found


# --- endpoints and failover ---------------------------------------------------------


async def test_failover_to_second_endpoint(etcd_endpoint: str) -> None:
    dead = _dead_endpoint()
    key = _prefix("failover") + "k"
    async with AsyncClient([dead, etcd_endpoint], timeout=5) as client:
        assert client.endpoint == dead
        with within(3):
            # A write is safe to send elsewhere: the refused connection never carried it.
            put = await client.put(key, "v")
            assert (await client.get(key)).value == b"v"
        assert client.endpoint == etcd_endpoint
        assert client.endpoints == [dead, etcd_endpoint]
        kv = (await client.get(key)).kv
        assert kv is not None and kv.mod_revision == put.revision


async def test_failover_without_retries(etcd_endpoint: str) -> None:
    # With retries=0 the failing call reports the error, but the next call already goes
    # to the next endpoint instead of hammering the dead one forever.  (A dead first
    # endpoint is never tried at all: the first connect picks one that answers.)
    key = _prefix("noretry") + "k"
    with FaultProxy(etcd_endpoint) as proxy:
        endpoints = f"{proxy.endpoint},http://{etcd_endpoint}"
        async with AsyncClient(endpoints, timeout=5, retries=0) as client:
            await client.put(key, "v")  # the first connect prefers the first endpoint
            assert client.endpoint == proxy.endpoint
            proxy.close()  # now it refuses connections
            with within(3), pytest.raises(errors.ConnectionError_) as caught:
                await client.get(key)
            assert caught.value.endpoint == proxy.endpoint
            assert client.endpoint == etcd_endpoint
            await client.put(key, "v2")


async def test_all_endpoints_dead(etcd_endpoint: str) -> None:
    first, second = _dead_endpoint(), _dead_endpoint()
    async with AsyncClient([first, second], timeout=3) as client:
        for call in (lambda: client.get("k"), lambda: client.put("k", "v")):
            with within(3.5), pytest.raises(errors.ConnectionFailedError) as caught:
                await call()
            error = caught.value
            assert set(error.endpoints) == {first, second}
            assert first in str(error) and second in str(error)
            assert isinstance(error, errors.ConnectionError_)
            assert error.code == "UNAVAILABLE"
    # A single dead endpoint fails as fast, even with a long default deadline.
    async with AsyncClient(first, timeout=30) as client:
        with within(5), pytest.raises(errors.ConnectionFailedError) as caught:
            await client.get("k")
        assert caught.value.endpoints == (first,)


async def test_reconnects_after_restart_even_when_calls_failed_meanwhile(
    etcd_server_factory: EtcdServerFactory,
) -> None:
    # Calls made while the only member is down fail fast, and then nothing is left
    # waiting on the channel.  grpc's sync stack (before ~1.7x) moves a connection
    # attempt forward only while some thread polls the channel, so without help the
    # attempts after the restart timed out "before receiving SETTINGS", forever.
    server = etcd_server_factory()
    key = _prefix("restart") + "k"
    async with AsyncClient(server.endpoint, timeout=10, retries=50) as client:
        await client.put(key, "before")
        server.kill()
        for _ in range(3):
            with within(3), pytest.raises(errors.ConnectionError_):
                await client.get(key, timeout=2)
        server.restart()  # returns once the member answers its health probe
        with within(5):
            # Retried until the channel connects again: a few backoff steps at most.
            put = await client.put(key, "after")
        kv = (await client.get(key)).kv
        assert kv is not None and kv.value == b"after" and kv.mod_revision == put.revision


async def test_per_call_timeout_on_paused_server(etcd_server_factory: EtcdServerFactory) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint, timeout=30) as client:
        await client.put("k", "before")  # connected before the pause
        server.pause()
        try:
            with within(2), pytest.raises(errors.Timeout) as caught:
                await client.get("k", timeout=0.5)
            assert isinstance(caught.value, TimeoutError)
            assert caught.value.code == "DEADLINE_EXCEEDED"
            with within(2), pytest.raises(errors.Timeout):
                await client.put("k", "during", timeout=0.5)
            async with AsyncClient(server.endpoint, timeout=0.5) as short:
                with within(2), pytest.raises(errors.Timeout):
                    await short.get("k")  # the client's default deadline applies too
        finally:
            server.resume()
        # Usable again once the server answers; the timed-out put may or may not have
        # been applied (its outcome is unknown), so either value is correct.
        assert (await client.get("k", timeout=5)).value in (b"before", b"during")
        await client.put("k", "after", timeout=5)
        assert (await client.get("k")).value == b"after"


async def test_close_leaves_nothing_behind(etcd_endpoint: str) -> None:
    key = _prefix("close") + "k"
    # Process-wide gRPC machinery starts on first use; it is not the client's to stop.
    async with AsyncClient(etcd_endpoint) as warmup:
        await warmup.get(key)
    before = _background()
    client = AsyncClient([_dead_endpoint(), etcd_endpoint])  # fails over once
    await client.put(key, "v")
    await client.txn(success=[])
    async for _ in client.iterate(key, prefix=True):
        pass
    dead_only = AsyncClient(_dead_endpoint(), timeout=2)
    with pytest.raises(errors.ConnectionFailedError) as kept:
        await dead_only.get(key)
    await client.close()
    await dead_only.close()
    deadline = time.monotonic() + 2
    while _background() - before and time.monotonic() < deadline:
        await sleep(0.01)
    assert _background() - before == set()
    # Holding on to an error must not keep a closed client's machinery alive.
    assert client.closed and kept.value.endpoints


async def test_close_during_a_call(etcd_server_factory: EtcdServerFactory) -> None:
    server = etcd_server_factory()
    client = AsyncClient(server.endpoint, timeout=30)
    await client.put("k", "v")
    outcome: list[BaseException] = []

    async def blocked_get() -> None:
        try:
            await client.get("k", timeout=20)
        except BaseException as exc:  # recorded for the assertion below, whatever it is
            outcome.append(exc)

    server.pause()  # the get can only end by close()
    try:
        task = spawn(blocked_get, name="blocked-get")
        # Whether close() lands before or during the call, the answer must be the same;
        # a moment's pause makes "during" the usual case.
        await sleep(0.2)
        with within(2):
            await client.close()
            assert await task.join(2)
    finally:
        server.resume()
    assert len(outcome) == 1 and isinstance(outcome[0], errors.ClientClosedError), outcome


async def test_a_second_close_waits_for_the_first(etcd_endpoint: str) -> None:
    """Two closers at once (a CLI closes from its signal thread while its main thread
    closes too): the second returns only once the first has revoked the sessions, so
    it can neither close the channels under that revoke nor report "closed" early."""
    key = _prefix("close-twice") + "lock"
    client = AsyncClient(etcd_endpoint)
    await client.lock(key).acquire()  # a key on the client's shared session
    entered, gate, second_done = Event(), Event(), Event()

    async def slow_closing_hook() -> None:
        entered.set()
        await wait_event(gate, 10)

    async def close_and_note() -> None:
        await client.close()
        second_done.set()

    client._conn.on_closing(slow_closing_hook)
    first = spawn(client.close, name="first-close")
    assert await wait_event(entered, 10)
    second = spawn(close_and_note, name="second-close")
    assert not await wait_event(second_done, 0.3), "the second close() did not wait"
    gate.set()
    assert await wait_event(second_done, 10) and await first.join(10) and await second.join(10)
    async with AsyncClient(etcd_endpoint) as observer:
        assert (await observer.get(key, prefix=True, count_only=True)).count == 0


# --- TLS ------------------------------------------------------------------------------


def _tls(files: TLSFiles, **overrides: object) -> TLSConfig:
    return TLSConfig(**{"ca_file": files.ca_file, **overrides})  # type: ignore[arg-type]


async def _roundtrip(client: AsyncClient, key: str) -> None:
    revision = (await client.put(key, "secure")).revision
    kv = (await client.get(key)).kv
    assert kv is not None and kv.value == b"secure" and kv.mod_revision == revision


async def test_tls(etcd_server_factory: EtcdServerFactory, etcd_tls_files: TLSFiles) -> None:
    files = etcd_tls_files
    # Server-side TLS only: etcd reads --trusted-ca-file as "require client certificates".
    server = etcd_server_factory(cert_file=files.server_cert_file, key_file=files.server_key_file)
    async with AsyncClient(server.endpoint, tls=_tls(files)) as client:
        await _roundtrip(client, "a")
    # https:// alone asks for TLS; the CA can come as PEM bytes.
    pem = TLSConfig(ca_pem=files.ca_file.read_bytes())
    async with AsyncClient(f"https://{server.endpoint}", tls=pem) as client:
        await _roundtrip(client, "b")
    # Dialling by IP but checking a name the certificate carries.
    async with AsyncClient(server.endpoint, tls=_tls(files, server_name="localhost")) as client:
        await _roundtrip(client, "c")
    refused = [
        AsyncClient(server.endpoint, timeout=3),  # plaintext to a TLS port
        AsyncClient(server.endpoint, tls=TLSConfig(), timeout=3),  # untrusted CA
        AsyncClient(server.endpoint, tls=_tls(files, server_name="other.test"), timeout=3),
    ]
    for client in refused:
        async with client:
            with within(4), pytest.raises(errors.ConnectionFailedError) as caught:
                await client.get("a")
            assert caught.value.endpoints == (server.endpoint,)
    assert "secure" in server.etcdctl(f"--cacert={files.ca_file}", "get", "a")


async def test_mutual_tls(etcd_server_factory: EtcdServerFactory, etcd_tls_files: TLSFiles) -> None:
    files = etcd_tls_files
    server = etcd_server_factory(tls=files, client_cert_auth=True)
    with_cert = _tls(files, cert_file=files.client_cert_file, key_file=files.client_key_file)
    async with AsyncClient(server.endpoint, tls=with_cert) as client:
        await _roundtrip(client, "m")
    async with AsyncClient(server.endpoint, tls=_tls(files), timeout=3) as client:
        with within(4), pytest.raises(errors.ConnectionFailedError):
            await client.get("m")  # no client certificate
    with pytest.raises(errors.InvalidRequest):
        AsyncClient(server.endpoint, tls=_tls(files, cert_file=files.client_cert_file))
    with pytest.raises(errors.InvalidRequest):
        AsyncClient(server.endpoint, tls=TLSConfig(ca_file=files.directory / "missing.pem"))


# --- user / password auth -------------------------------------------------------------


def _enable_auth(server: EtcdServer) -> None:
    server.etcdctl("user", "add", "root:rootpw")
    server.etcdctl("auth", "enable")
    root = "--user=root:rootpw"
    server.etcdctl(root, "user", "add", "alice:alicepw")
    server.etcdctl(root, "role", "add", "reader")
    server.etcdctl(root, "role", "grant-permission", "reader", "--prefix=true", "read", "pub/")
    server.etcdctl(root, "user", "grant-role", "alice", "reader")
    server.etcdctl(root, "put", "pub/x", "hello")


# Simple tokens expire after this many idle seconds (etcd checks once a second).
TOKEN_TTL = 1


async def test_user_password_auth(etcd_server_factory: EtcdServerFactory) -> None:
    server = etcd_server_factory(extra_args=[f"--auth-token-ttl={TOKEN_TTL}"])
    _enable_auth(server)
    async with AsyncClient(server.endpoint, user="root", password="rootpw") as root:
        await _roundtrip(root, "private/k")
        assert "secure" in server.etcdctl("--user=root:rootpw", "get", "private/k")

    async with AsyncClient(server.endpoint, user="root", password="wrong", timeout=3) as bad:
        for _ in range(2):  # the same typed error every time, quickly
            with within(2), pytest.raises(errors.AuthFailedError) as caught:
                await bad.get("private/k")
            assert isinstance(caught.value, errors.AuthError)

    async with AsyncClient(server.endpoint, timeout=3) as anonymous:
        with within(2), pytest.raises(errors.AuthError):
            await anonymous.get("pub/x")

    async with AsyncClient(server.endpoint, user="alice", password="alicepw") as alice:
        assert (await alice.get("pub/x")).value == b"hello"
        with within(2), pytest.raises(errors.PermissionDeniedError):
            await alice.put("pub/x", "mine")
        with pytest.raises(errors.PermissionDeniedError):
            await alice.get("private/k")
        assert (await alice.get("pub/", prefix=True)).count == 1  # still usable

    with pytest.raises(errors.InvalidRequest):
        AsyncClient(server.endpoint, user="root")  # a password is required too


async def test_auth_token_expiry(etcd_server_factory: EtcdServerFactory) -> None:
    server = etcd_server_factory(extra_args=[f"--auth-token-ttl={TOKEN_TTL}"])
    _enable_auth(server)
    reader = AsyncClient(server.endpoint, user="root", password="rootpw")
    writer = AsyncClient(server.endpoint, user="root", password="rootpw")
    async with reader, writer:
        await writer.put("k", "1")
        assert (await reader.get("k")).value == b"1"
        tokens = (reader._conn._token, writer._conn._token)
        assert all(tokens)
        # Waiting on the server's token clock: no event announces the expiry.
        await sleep(TOKEN_TTL + 1.5)
        assert (await reader.get("k")).value == b"1"  # refreshed transparently
        # A write is retried too: the server refused the stale token before applying it.
        revision = (await writer.put("k", "2")).revision
        for client, old in zip((reader, writer), tokens, strict=True):
            assert client._conn._token not in (None, old)  # each logged in again
        kv = (await reader.get("k")).kv
        assert kv is not None and kv.value == b"2" and kv.mod_revision == revision
        assert kv.version == 2  # applied exactly once
