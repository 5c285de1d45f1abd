"""TLS failures against real etcd servers: typed, saying why, on every path.

A client whose TLS configuration the server refuses - a CA that did not sign the
server's certificate, a name the certificate does not carry, a missing client
certificate - gets :class:`~etcdsync.errors.TLSError` (a ``ConnectionFailedError``)
whose ``reason`` says which, from its first call whatever that call is: a unary
request, a watch, a snapshot, a server-side observation, a session (lease grant and
keepalive stream), a single renewal; and within the call's deadline, or at once
without one (a watch used to wait out its whole timeout, or forever, and then say
nothing).  A lease kept alive from the start is lost at once, saying why (it used to
run out its TTL blaming "the server ended the lease keepalive stream").  A handshake
that merely broke off (a plaintext server) is typed too, and a watch's Timeout says
so.  One member refusing the handshake does not fail a stream another member serves.

Canonical asyncio tests; ``tests/_sync/test_tls_failures.py`` is generated from this.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Awaitable, Callable

import grpc
import pytest

from etcdsync import AsyncClient, LeaseLostReason, TLSConfig, errors
from etcdsync.testing.plugin import EtcdServerFactory
from etcdsync.testing.server import EtcdServer
from etcdsync.testing.tls import TLSFiles, generate_tls_files

from .timing import within

RUN = f"{__name__}/{uuid.uuid4().hex[:8]}"
# The clients' deadline; a refused handshake must end every call before it.
TIMEOUT = 3.0
_GRPC_VERSION = tuple(int(part) for part in grpc.__version__.split(".")[:2])


@pytest.fixture(scope="module")
def foreign_tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """Another CA and its certificates: nothing the test servers trust or present."""
    return generate_tls_files(tmp_path_factory.mktemp("foreign-tls"))


def _tls_server(factory: EtcdServerFactory, files: TLSFiles) -> EtcdServer:
    # Server-side TLS only: etcd reads --trusted-ca-file as "require client certificates".
    return factory(cert_file=files.server_cert_file, key_file=files.server_key_file)


async def _unary(client: AsyncClient) -> None:
    await client.get(f"{RUN}/k")


async def _watch(client: AsyncClient) -> None:
    await client.watch(f"{RUN}/k")


async def _snapshot(client: AsyncClient) -> None:
    await client.snapshot(io.BytesIO())


async def _observe(client: AsyncClient) -> None:
    observer = await client.server_observe(f"{RUN}/election")
    await observer.get()


async def _session(client: AsyncClient) -> None:
    await client.session(ttl=5)


async def _renew_once(client: AsyncClient) -> None:
    await client.keep_alive_once(0x1234)  # a short stream of its own


# Each path as the client's first call: nothing else has found out about TLS before.
FIRST_CALLS: list[Callable[[AsyncClient], Awaitable[None]]] = [
    _unary,
    _watch,
    _snapshot,
    _observe,
    _session,
    _renew_once,
]


async def _refused_everywhere(endpoint: str, tls: TLSConfig, reason: str) -> None:
    for first_call in FIRST_CALLS:
        # With the deadline, and without any (a watch used to wait forever then).
        for timeout in (TIMEOUT, None):
            async with AsyncClient(endpoint, tls=tls, timeout=timeout) as client:
                with within(TIMEOUT), pytest.raises(errors.TLSError) as caught:
                    await first_call(client)
            error = caught.value
            where = f"{first_call.__name__}, timeout={timeout}"
            assert error.reason == reason, where
            assert "TLS handshake failed" in str(error), where
            assert isinstance(error, errors.ConnectionFailedError), where


async def test_untrusted_server_certificate_fails_typed_on_every_path(
    etcd_server_factory: EtcdServerFactory, etcd_tls_files: TLSFiles, foreign_tls: TLSFiles
) -> None:
    server = _tls_server(etcd_server_factory, etcd_tls_files)
    await _refused_everywhere(server.endpoint, TLSConfig(ca_file=foreign_tls.ca_file), "unknown CA")
    # The certificate is trusted but does not name the host checked.
    wrong_name = TLSConfig(ca_file=etcd_tls_files.ca_file, server_name="other.test")
    await _refused_everywhere(server.endpoint, wrong_name, "hostname")


async def test_refused_client_certificate_fails_typed_on_every_path(
    etcd_server_factory: EtcdServerFactory, etcd_tls_files: TLSFiles, foreign_tls: TLSFiles
) -> None:
    files = etcd_tls_files
    server = etcd_server_factory(tls=files, client_cert_auth=True)
    await _refused_everywhere(
        server.endpoint, TLSConfig(ca_file=files.ca_file), "client certificate"
    )
    foreign_cert = TLSConfig(
        ca_file=files.ca_file,
        cert_file=foreign_tls.client_cert_file,
        key_file=foreign_tls.client_key_file,
    )
    await _refused_everywhere(server.endpoint, foreign_cert, "client certificate")


async def test_kept_alive_lease_is_lost_at_once_saying_why(
    etcd_server_factory: EtcdServerFactory, etcd_tls_files: TLSFiles, foreign_tls: TLSFiles
) -> None:
    server = _tls_server(etcd_server_factory, etcd_tls_files)
    async with AsyncClient(server.endpoint, tls=TLSConfig(ca_file=etcd_tls_files.ca_file)) as good:
        lease = await good.grant(60)  # outlives the test: the loss below is not its TTL
    untrusting = TLSConfig(ca_file=foreign_tls.ca_file)
    async with AsyncClient(server.endpoint, tls=untrusting, timeout=TIMEOUT) as client:
        # The keepalive stream is this client's first call: no unary call failed before.
        async with client.keep_alive(lease) as listener:
            with within(TIMEOUT), pytest.raises(errors.LeaseExpiredError) as caught:
                await listener.next_result(timeout=2 * TIMEOUT)
    assert caught.value.reason == LeaseLostReason.HALTED
    assert "TLS handshake failed" in str(caught.value)
    assert "not signed by a CA this client trusts" in str(caught.value)


async def test_handshake_with_a_plaintext_server(
    etcd_server_factory: EtcdServerFactory, etcd_tls_files: TLSFiles
) -> None:
    plain = etcd_server_factory()
    tls = TLSConfig(ca_file=etcd_tls_files.ca_file)
    async with AsyncClient(plain.endpoint, tls=tls, timeout=TIMEOUT) as client:
        with within(TIMEOUT), pytest.raises(errors.ConnectionFailedError) as caught:
            await client.get(f"{RUN}/k")
    # Older grpcio (1.60, the oldest we support) words a handshake broken off by a
    # plaintext server like any closed connection ("Socket closed"): nothing tells it
    # apart from a member going away, so it stays a plain ConnectionFailedError.
    worded = isinstance(caught.value, errors.TLSError)
    if not worded:
        assert "Socket closed" in str(caught.value)
        assert _GRPC_VERSION < (1, 85), f"grpcio {grpc.__version__} no longer says why"
    else:
        assert caught.value.reason == "handshake"
        assert "does the server serve TLS" in str(caught.value)
    # A handshake that broke off may be a member dying mid-handshake: a watch keeps
    # trying until its deadline, and its Timeout then says what went wrong.
    async with AsyncClient(plain.endpoint, tls=tls, timeout=TIMEOUT) as client:
        with within(TIMEOUT + 1.0), pytest.raises(errors.Timeout) as timed_out:
            await client.watch(f"{RUN}/k", timeout=1.0)
    if worded:
        assert "TLS handshake failed" in str(timed_out.value)
        assert isinstance(timed_out.value.__cause__, errors.TLSError)


async def test_one_refusing_member_does_not_fail_the_streams(
    etcd_server_factory: EtcdServerFactory, etcd_tls_files: TLSFiles, foreign_tls: TLSFiles
) -> None:
    refusing = _tls_server(etcd_server_factory, foreign_tls)  # not signed by our CA
    serving = _tls_server(etcd_server_factory, etcd_tls_files)
    tls = TLSConfig(ca_file=etcd_tls_files.ca_file)
    key = f"{RUN}/one-refusing"
    async with AsyncClient([refusing.endpoint, serving.endpoint], tls=tls, timeout=TIMEOUT) as etcd:
        with within(TIMEOUT):
            watcher = await etcd.watch(key)  # the first call: fails over to `serving`
        revision = (await etcd.put(key, "v")).revision
        events = []
        while not events:  # a progress notice or the created notice may come first
            events = (await watcher.get(timeout=TIMEOUT)).events
        assert [(e.key, e.value, e.revision) for e in events] == [(key.encode(), b"v", revision)]
        assert etcd.endpoint == serving.endpoint
        await watcher.cancel()
