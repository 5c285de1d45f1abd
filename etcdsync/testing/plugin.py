"""pytest plugin: real etcd servers as fixtures.

Registered through the ``pytest11`` entry point, so installing etcdsync makes these
fixtures available everywhere:

``etcd_binary`` (session)
    The :class:`~etcdsync.testing.binaries.EtcdBinary` selected by ``--etcd-version``, else
    ``$ETCDSYNC_TEST_ETCD``, else etcd 3.5 (falling back to the newest installed).
``etcd_server`` (session)
    A shared single-member :class:`~etcdsync.testing.server.EtcdServer`. Tests that kill,
    pause or reconfigure a server should use ``etcd_server_factory`` instead.
``etcd_endpoint`` (session)
    ``"127.0.0.1:<port>"`` of ``etcd_server``.
``etcd_server_factory`` (function)
    ``etcd_server_factory(**options)`` starts an extra server (options as for
    ``EtcdServer``); all are stopped at teardown.
``etcd_cluster`` (module)
    A 3-member :class:`~etcdsync.testing.cluster.EtcdCluster`. Tests that break it should
    call ``etcd_cluster.heal()`` when done so later tests in the module see it whole.
``etcd_tls_files`` (session)
    A throwaway CA with server and client certificates (needs the ``openssl`` tool).

When no etcd is installed the fixtures skip with installation hints, unless a version was
requested explicitly, in which case they fail: a CI job asking for 3.4 must not go green
by skipping everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .binaries import ENV_VAR, EtcdBinary, EtcdNotFound, find_etcd, requested_version
from .cluster import EtcdCluster
from .server import EtcdServer
from .tls import TLSFiles, generate_tls_files, openssl_available

__all__ = [
    "EtcdServerFactory",
    "etcd_binary",
    "etcd_cluster",
    "etcd_endpoint",
    "etcd_server",
    "etcd_server_factory",
    "etcd_tls_files",
    "requested_etcd",
    "selected_binary",
]

_binary_key = pytest.StashKey["EtcdBinary | EtcdNotFound"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("etcdsync", "etcdsync test servers")
    group.addoption(
        "--etcd-version",
        action="store",
        default=None,
        dest="etcd_version",
        metavar="VERSION|PATH",
        help=f"etcd used by the etcd_* fixtures: a version such as 3.4 or 3.5, or a path to "
        f"an etcd executable (default: ${ENV_VAR}, else 3.5)",
    )


def requested_etcd(config: pytest.Config) -> str | None:
    """The explicitly requested etcd (``--etcd-version``, else the env var), or None."""
    # getoption with a default: the plugin may be registered after option parsing (e.g.
    # imported from a conftest), in which case the option does not exist.
    option: str | None = config.getoption("etcd_version", default=None)
    return option or requested_version()


def selected_binary(config: pytest.Config) -> EtcdBinary:
    """The etcd chosen for this session; raises EtcdNotFound. Resolved once per session."""
    cached = config.stash.get(_binary_key, None)
    if cached is None:
        try:
            cached = find_etcd(requested_etcd(config))
        except EtcdNotFound as exc:
            cached = exc
        config.stash[_binary_key] = cached
    if isinstance(cached, EtcdNotFound):
        raise cached
    return cached


def pytest_report_header(config: pytest.Config) -> list[str]:
    try:
        binary = selected_binary(config)
    except EtcdNotFound as exc:
        # Stay quiet in unrelated projects that merely have etcdsync installed.
        return [f"etcdsync: {exc}"] if requested_etcd(config) else []
    return [f"etcdsync: etcd {binary.version} ({binary.path})"]


@pytest.fixture(scope="session")
def etcd_binary(pytestconfig: pytest.Config) -> EtcdBinary:
    """The etcd binary selected for this session."""
    try:
        return selected_binary(pytestconfig)
    except EtcdNotFound as exc:
        if requested_etcd(pytestconfig):
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def etcd_server(etcd_binary: EtcdBinary) -> Iterator[EtcdServer]:
    """A single-member etcd shared by the whole session."""
    server = EtcdServer(etcd_binary, name="etcdsync-session")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def etcd_endpoint(etcd_server: EtcdServer) -> str:
    """``"127.0.0.1:<port>"`` of the session server."""
    return etcd_server.endpoint


class EtcdServerFactory:
    """Starts extra servers on demand and stops them all in :meth:`close`."""

    def __init__(self, binary: EtcdBinary) -> None:
        self.binary = binary
        self.servers: list[EtcdServer] = []

    def __call__(self, *, start: bool = True, **options: Any) -> EtcdServer:
        """Create (and by default start) an ``EtcdServer(**options)``.

        The session's binary is used unless ``binary`` or ``version`` is among ``options``.
        """
        if "binary" not in options and "version" not in options:
            options["binary"] = self.binary
        server = EtcdServer(**options)
        # Registered before starting so a failed start still gets its directory removed.
        self.servers.append(server)
        if start:
            server.start()
        return server

    def close(self) -> None:
        errors: list[BaseException] = []
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception as exc:  # stop the others, then report
                errors.append(exc)
        self.servers.clear()
        if errors:
            raise errors[0]


@pytest.fixture
def etcd_server_factory(etcd_binary: EtcdBinary) -> Iterator[EtcdServerFactory]:
    """Factory for servers with custom options; everything it started is stopped after."""
    factory = EtcdServerFactory(etcd_binary)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def etcd_cluster(etcd_binary: EtcdBinary) -> Iterator[EtcdCluster]:
    """A 3-member cluster shared by one test module."""
    cluster = EtcdCluster(3, etcd_binary)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def etcd_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """Throwaway CA, server and client certificates (skips without ``openssl``)."""
    if not openssl_available():
        pytest.skip("the openssl command line tool is not installed")
    return generate_tls_files(tmp_path_factory.mktemp("etcd-tls"))
