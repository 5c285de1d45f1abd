"""Secrets stay secret: the client's private key, password and auth tokens never appear
in a repr, an error or a log record (every logger at DEBUG), through a session that
logs in, watches, renews a lease, outlives its token, is refused, and fails a handshake.

Canonical asyncio tests; ``tests/_sync/test_secrets.py`` is generated from this file.
"""

from __future__ import annotations

import logging
import uuid

import pytest

from etcdsync import AsyncClient, TLSConfig, errors
from etcdsync._backends._async import sleep
from etcdsync.testing.plugin import EtcdServerFactory
from etcdsync.testing.tls import TLSFiles, generate_tls_files

RUN = f"{__name__}/{uuid.uuid4().hex[:8]}"
PASSWORD = "s3cret-Pa55word-7f1c"
# Simple tokens expire after this many idle seconds (etcd checks once a second).
TOKEN_TTL = 1


def _key_body(pem: bytes) -> list[str]:
    """The base64 lines of a PEM private key: any of them would leak part of it."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]


def _texts_of(error: BaseException) -> list[str]:
    """What a caller or a traceback shows of an error, its cause and context included."""
    texts = []
    seen: BaseException | None = error
    while seen is not None:
        texts += [str(seen), repr(seen), repr(vars(seen))]
        seen = seen.__cause__ or seen.__context__
    return texts


async def test_no_secret_in_reprs_errors_or_logs(
    etcd_server_factory: EtcdServerFactory,
    etcd_tls_files: TLSFiles,
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    files = etcd_tls_files
    server = etcd_server_factory(
        tls=files, client_cert_auth=True, extra_args=[f"--auth-token-ttl={TOKEN_TTL}"]
    )
    server.etcdctl("user", "add", f"root:{PASSWORD}")
    server.etcdctl("auth", "enable")
    key_pem = files.client_key_file.read_bytes()
    tls = TLSConfig(
        ca_pem=files.ca_file.read_bytes(),
        cert_pem=files.client_cert_file.read_bytes(),
        key_pem=key_pem,
    )
    shown: list[str] = [repr(tls), str(tls)]
    tokens: set[str] = set()
    prefix = f"{RUN}/"

    async with AsyncClient(server.endpoint, tls=tls, user="root", password=PASSWORD) as etcd:
        shown.append(repr(etcd))
        await etcd.put(prefix + "a", "1")
        watcher = await etcd.watch(prefix, prefix=True)
        session = await etcd.session(ttl=5)
        shown += [repr(watcher), repr(session)]
        tokens.add(etcd._conn.token or "")
        # Waiting on the server's token clock: no event announces the expiry.
        await sleep(TOKEN_TTL + 1.5)
        await etcd.put(prefix + "b", "2")  # logs in again
        tokens.add(etcd._conn.token or "")
        late = await etcd.watch(prefix + "b")  # a create on a stream whose token expired
        await late.cancel()
        await session.close()
        await watcher.cancel()
    assert len(tokens) == 2 and "" not in tokens, "the test must have seen two tokens"

    async with AsyncClient(
        server.endpoint, tls=tls, user="root", password=PASSWORD + "-wrong", timeout=3
    ) as bad:
        with pytest.raises(errors.AuthFailedError) as refused:
            await bad.get(prefix + "a")
        shown += _texts_of(refused.value)
    foreign = generate_tls_files(tmp_path_factory.mktemp("foreign-tls"))
    untrusting = TLSConfig(ca_file=foreign.ca_file, cert_pem=tls.cert_pem, key_pem=key_pem)
    async with AsyncClient(
        server.endpoint, tls=untrusting, user="root", password=PASSWORD, timeout=3
    ) as lost:
        with pytest.raises(errors.TLSError) as handshake:
            await lost.get(prefix + "a")
        shown += _texts_of(handshake.value)
        with pytest.raises(errors.TLSError) as handshake:
            await lost.watch(prefix)
        shown += _texts_of(handshake.value)
    with pytest.raises(errors.InvalidRequest) as undecodable:
        AsyncClient(server.endpoint, user="root", password=PASSWORD + "\udcff")
    shown += _texts_of(undecodable.value)

    shown += [caplog.text, *(str(record.args) for record in caplog.records)]
    secrets = {"password": PASSWORD, **{f"token {i}": t for i, t in enumerate(tokens)}}
    secrets.update({f"key line {i}": line for i, line in enumerate(_key_body(key_pem))})
    for text in shown:
        for what, secret in secrets.items():
            assert secret not in text, f"{what} shown in: {text[:200]}"
    assert "key_pem=<hidden>" in repr(tls)
