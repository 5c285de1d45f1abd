"""One etcd member process on loopback, owned by this process.

:class:`EtcdProcess` starts a single etcd member on free loopback ports with its data in
tmpfs, waits until it is healthy, and stops, kills, pauses or restarts it while only ever
signalling the process it started itself.  ``etcdsync server`` and ``etcdsync demo`` run
their etcd with it; the test harness's :class:`~etcdsync.testing.server.EtcdServer` is an
:class:`EtcdProcess` with what tests need on top (crash, metrics, etcdctl).

Every member also gets a plain-HTTP metrics listener (``--listen-metrics-urls``). It serves
``/health`` and ``/metrics`` on both etcd 3.4 and 3.5, so readiness checks and metrics work
the same way whether or not the client listener uses TLS (with client certificate auth,
the client port would refuse an anonymous health probe).
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, TypeVar

from .binaries import EtcdBinary, find_etcd
from .ports import HOST as _HOST
from .ports import allocate_ports
from .probe import HTTP_ERRORS, http_get

__all__ = [
    "DEFAULT_ELECTION_MS",
    "DEFAULT_HEARTBEAT_MS",
    "EtcdProcess",
    "EtcdStartError",
    "TLSPaths",
    "default_tmp_dir",
]

StrPath = str | os.PathLike[str]

_Self = TypeVar("_Self", bound="EtcdProcess")

# Default Raft timings. 50 ms / 500 ms keeps etcd's 1:10 ratio (it requires election >=
# 5 x heartbeat) and cuts single-member startup from ~1 s to ~0.15 s, because the first
# election waits for one election timeout. It also makes leader failover fast in clusters.
DEFAULT_HEARTBEAT_MS = 50
DEFAULT_ELECTION_MS = 500

_PORT_RETRIES = 5


class EtcdStartError(RuntimeError):
    """etcd failed to start or become healthy; the message ends with its log tail."""

    def __init__(self, message: str, log_tail: str = "", *, port_in_use: bool = False) -> None:
        full = f"{message}\n--- etcd log (tail) ---\n{log_tail}" if log_tail else message
        super().__init__(full)
        self.log_tail = log_tail
        #: True when the failure was a listener that could not bind (lost a port race).
        self.port_in_use = port_in_use


def default_tmp_dir() -> str | None:
    """/dev/shm when usable: etcd fsyncs constantly and tmpfs makes that free."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None


def _proc_state(pid: int) -> str | None:
    """Linux scheduler state letter of ``pid`` ("T" when stopped), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; the state follows it.
    tail = stat.rsplit(")", 1)[-1].split()
    return tail[0] if tail else None


def _etcd_env() -> dict[str, str]:
    """The environment for etcd: ours minus ETCD_* settings.

    etcd reads every flag from ETCD_<FLAG> variables too; a stray ETCD_DATA_DIR or
    ETCD_AUTO_COMPACTION_RETENTION from the developer's shell must not change the test
    server. ETCD_UNSUPPORTED_ARCH is kept and, off x86-64, set: etcd 3.4 refuses to start
    on arm64 without it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    arch = platform.machine().lower()
    goarch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64"}.get(arch, arch)
    if "ETCD_UNSUPPORTED_ARCH" in os.environ:
        env["ETCD_UNSUPPORTED_ARCH"] = os.environ["ETCD_UNSUPPORTED_ARCH"]
    elif goarch != "amd64":
        env["ETCD_UNSUPPORTED_ARCH"] = goarch
    return env


# Servers still running at interpreter exit are killed so a crashed or interrupted test
# session does not leave etcd processes behind. Weak references: a dropped server object
# must not be kept alive by this registry.
_live: weakref.WeakSet[EtcdProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live):
        try:
            server.stop(timeout=2.0)
        except Exception:  # best effort at exit, never mask the real error
            pass


class TLSPaths(Protocol):
    """The certificate files :class:`EtcdProcess` takes as ``tls``
    (:class:`~etcdsync.testing.tls.TLSFiles` is one)."""

    @property
    def ca_file(self) -> Path: ...
    @property
    def server_cert_file(self) -> Path: ...
    @property
    def server_key_file(self) -> Path: ...
    @property
    def client_cert_file(self) -> Path: ...
    @property
    def client_key_file(self) -> Path: ...


class EtcdProcess:
    """A real etcd member on loopback, owned by this process.

    Construct, then :meth:`start` (or use ``with EtcdProcess() as server:``). Ports are
    chosen at first start unless given; :meth:`restart` reuses ports and data.
    :meth:`stop` is final: it terminates etcd and deletes the data directory unless
    ``keep_data`` is set or the caller supplied ``base_dir``. :meth:`kill` simulates a
    crash and keeps the data so a later :meth:`start` recovers it.

    ``binary`` (or ``version``, passed to :func:`~etcdsync._embedded.binaries.find_etcd`)
    selects the etcd executable. ``tls`` fills the four TLS options from
    :func:`~etcdsync.testing.tls.generate_tls_files` output (any :class:`TLSPaths`); the
    client certificate is then also used by the test harness's ``etcdctl``.
    ``initial_cluster`` / ``initial_cluster_token`` and explicit ports are what
    :class:`~etcdsync.testing.cluster.EtcdCluster` uses to form a cluster.
    """

    def __init__(
        self,
        binary: EtcdBinary | None = None,
        *,
        version: str | None = None,
        name: str = "default",
        max_request_bytes: int | None = None,
        quota_backend_bytes: int | None = None,
        auto_compaction: str | int | None = None,
        auto_compaction_mode: Literal["periodic", "revision"] = "periodic",
        heartbeat_interval_ms: int | None = DEFAULT_HEARTBEAT_MS,
        election_timeout_ms: int | None = DEFAULT_ELECTION_MS,
        tls: TLSPaths | None = None,
        cert_file: StrPath | None = None,
        key_file: StrPath | None = None,
        trusted_ca_file: StrPath | None = None,
        client_cert_auth: bool = False,
        client_cert_file: StrPath | None = None,
        client_key_file: StrPath | None = None,
        extra_args: Sequence[str] = (),
        base_dir: StrPath | None = None,
        keep_data: bool = False,
        client_port: int | None = None,
        peer_port: int | None = None,
        metrics_port: int | None = None,
        initial_cluster: str | None = None,
        initial_cluster_token: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.binary = binary if binary is not None else find_etcd(version)
        self.name = name
        self.max_request_bytes = max_request_bytes
        self.quota_backend_bytes = quota_backend_bytes
        self.auto_compaction = auto_compaction
        self.auto_compaction_mode = auto_compaction_mode
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.election_timeout_ms = election_timeout_ms
        self.cert_file = _opt_path(cert_file, tls.server_cert_file if tls else None)
        self.key_file = _opt_path(key_file, tls.server_key_file if tls else None)
        self.trusted_ca_file = _opt_path(trusted_ca_file, tls.ca_file if tls else None)
        self.client_cert_auth = client_cert_auth
        self.client_cert_file = _opt_path(client_cert_file, tls.client_cert_file if tls else None)
        self.client_key_file = _opt_path(client_key_file, tls.client_key_file if tls else None)
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        if client_cert_auth and self.trusted_ca_file is None:
            raise ValueError("client_cert_auth requires trusted_ca_file")
        self.extra_args = list(extra_args)
        self.keep_data = keep_data
        self.initial_cluster = initial_cluster
        self.initial_cluster_token = initial_cluster_token or f"etcdsync-{uuid.uuid4().hex[:12]}"
        self.start_timeout = start_timeout

        self._owns_dir = base_dir is None
        self._base_dir: Path | None = Path(base_dir) if base_dir is not None else None
        # Only ports we picked ourselves may be re-picked after losing a bind race.
        self._auto_ports = client_port is None and peer_port is None and metrics_port is None
        self._client_port = client_port
        self._peer_port = peer_port
        self._metrics_port = metrics_port
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._log_offset = 0
        self._ever_started = False

    # ---- addresses ---------------------------------------------------------------

    @staticmethod
    def _need(port: int | None) -> int:
        if port is None:
            raise RuntimeError("ports are assigned at start(); start the server first")
        return port

    @property
    def client_port(self) -> int:
        return self._need(self._client_port)

    @property
    def peer_port(self) -> int:
        return self._need(self._peer_port)

    @property
    def metrics_port(self) -> int:
        return self._need(self._metrics_port)

    @property
    def tls(self) -> bool:
        """Whether the client listener speaks TLS."""
        return self.cert_file is not None

    @property
    def endpoint(self) -> str:
        """``"127.0.0.1:<client port>"``, the form gRPC targets use."""
        return f"{_HOST}:{self.client_port}"

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint]

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://{_HOST}:{self.peer_port}"

    @property
    def metrics_url(self) -> str:
        """Plain-HTTP ``/metrics`` URL (separate listener, never TLS)."""
        return f"http://{_HOST}:{self.metrics_port}/metrics"

    @property
    def health_url(self) -> str:
        return f"http://{_HOST}:{self.metrics_port}/health"

    # ---- state -------------------------------------------------------------------

    @property
    def version(self) -> str:
        """Version of the etcd binary, e.g. ``"3.5.1"``."""
        return self.binary.version

    @property
    def pid(self) -> int | None:
        """PID of the running etcd, or ``None`` when not running."""
        return self._proc.pid if self.is_running and self._proc is not None else None

    @property
    def is_running(self) -> bool:
        """True while the process exists (including while paused)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_paused(self) -> bool:
        return self._paused and self.is_running

    @property
    def base_dir(self) -> Path:
        if self._base_dir is None:
            raise RuntimeError("the data directory is created at start()")
        return self._base_dir

    @property
    def data_dir(self) -> Path:
        """etcd's ``--data-dir``."""
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        """File receiving etcd's stdout and stderr (appended across restarts)."""
        return self.base_dir / "etcd.log"

    def logs(self) -> str:
        """Everything etcd logged, across restarts."""
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, RuntimeError):
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines logged since the most recent launch."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read().decode("utf-8", errors="replace")
        except (OSError, RuntimeError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ---- lifecycle ---------------------------------------------------------------

    def command(self) -> list[str]:
        """The etcd command line for the current ports and directories."""
        cluster = self.initial_cluster or f"{self.name}={self.peer_url}"
        args = [
            str(self.binary.path),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--listen-metrics-urls", f"http://{_HOST}:{self.metrics_port}",
            "--initial-cluster", cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.initial_cluster_token,
        ]  # fmt: skip
        if self.binary.version_info < (3, 5):
            # 3.4 defaults to the deprecated capnslog logger; zap matches 3.5's output.
            args += ["--logger", "zap", "--log-outputs", "stderr"]
        if self.heartbeat_interval_ms is not None:
            args += ["--heartbeat-interval", str(self.heartbeat_interval_ms)]
        if self.election_timeout_ms is not None:
            args += ["--election-timeout", str(self.election_timeout_ms)]
        if self.max_request_bytes is not None:
            args += ["--max-request-bytes", str(self.max_request_bytes)]
        if self.quota_backend_bytes is not None:
            args += ["--quota-backend-bytes", str(self.quota_backend_bytes)]
        if self.auto_compaction is not None:
            args += [
                "--auto-compaction-mode", self.auto_compaction_mode,
                "--auto-compaction-retention", str(self.auto_compaction),
            ]  # fmt: skip
        if self.cert_file is not None and self.key_file is not None:
            args += ["--cert-file", str(self.cert_file), "--key-file", str(self.key_file)]
        if self.trusted_ca_file is not None:
            args += ["--trusted-ca-file", str(self.trusted_ca_file)]
        if self.client_cert_auth:
            args.append("--client-cert-auth=true")
        args += self.extra_args
        return args

    def _prepare_dirs(self) -> None:
        if self._base_dir is None:
            self._base_dir = Path(tempfile.mkdtemp(prefix="etcdsync-", dir=default_tmp_dir()))
        self._base_dir.mkdir(parents=True, exist_ok=True)

    def _assign_ports(self, fresh: bool = False) -> None:
        if fresh or self._client_port is None or self._peer_port is None:
            self._client_port, self._peer_port, self._metrics_port = allocate_ports(3)
        elif self._metrics_port is None:
            (self._metrics_port,) = allocate_ports(1)

    def _launch(self) -> None:
        """Spawn etcd without waiting for it to become healthy."""
        log_path = self.log_path
        with open(log_path, "ab") as log:
            self._log_offset = log.tell()
            header = f"=== etcdsync: launching {' '.join(self.command())}\n"
            log.write(header.encode())
            log.flush()
            self._log_offset += len(header.encode())
            # The child inherits the log descriptor; ours closes when the block ends.
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_etcd_env(),
            )
        self._paused = False
        self._ever_started = True
        _live.add(self)

    def start(self: _Self, *, wait: bool = True, timeout: float | None = None) -> _Self:
        """Start etcd (a fresh data dir after :meth:`stop`; the same one after :meth:`kill`).

        With ``wait`` (the default) block until ``/health`` reports healthy, retrying with
        new ports if ours were taken between choosing and binding them. Returns ``self``.
        """
        if self.is_running:
            raise RuntimeError(f"etcd {self.name!r} is already running (pid {self.pid})")
        self._prepare_dirs()
        self._assign_ports()
        retries = _PORT_RETRIES if (self._auto_ports and not self._has_data()) else 1
        for attempt in range(retries):
            self._launch()
            if not wait:
                return self
            try:
                self.wait_ready(timeout)
                return self
            except EtcdStartError as exc:
                self._terminate(graceful=False)
                if not exc.port_in_use or attempt == retries - 1:
                    raise
                # A first launch that failed to bind left nothing worth keeping.
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self._assign_ports(fresh=True)
        raise AssertionError("unreachable")

    def _has_data(self) -> bool:
        return self._base_dir is not None and (self.data_dir / "member").exists()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll ``/health`` until etcd reports healthy.

        Raises :class:`EtcdStartError` (with the log tail) if etcd exits or does not become
        healthy within ``timeout`` seconds (default ``start_timeout``).
        """
        limit = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        last_error = "no response yet"
        while True:
            proc = self._proc
            if proc is None:
                raise RuntimeError("etcd was never started")
            if self._paused:
                raise RuntimeError("etcd is paused; resume() it first")
            code = proc.poll()
            if code is not None:
                tail = self.log_tail()
                raise EtcdStartError(
                    f"etcd {self.name!r} exited with code {code} during startup",
                    tail,
                    port_in_use="address already in use" in tail,
                )
            try:
                body = json.loads(http_get(self.health_url, timeout=1.0))
                if body.get("health") in ("true", True):
                    return
                last_error = f"unhealthy: {body}"
            except HTTP_ERRORS as exc:
                # 503 with a JSON body means "up but no leader yet"; keep polling.
                last_error = repr(exc)
            if time.monotonic() >= deadline:
                raise EtcdStartError(
                    f"etcd {self.name!r} not healthy after {limit}s (last: {last_error})",
                    self.log_tail(),
                )
            time.sleep(0.02)

    def _signal(self, sig: signal.Signals) -> None:
        # Popen.send_signal polls first and does nothing once the child has been reaped,
        # so a recycled PID can never receive our signal.
        if self._proc is not None:
            self._proc.send_signal(sig)

    def _terminate(self, *, graceful: bool, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if self._paused:
                # A stopped process only acts on SIGTERM once continued.
                self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait()
        self._paused = False
        _live.discard(self)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate (SIGTERM, then SIGKILL after ``timeout``) and remove the data.

        Data is kept when ``keep_data=True`` or the caller supplied ``base_dir``. Calling
        :meth:`start` afterwards begins again with an empty data directory.
        """
        self._terminate(graceful=True, timeout=timeout)
        self._proc = None
        if self._owns_dir and not self.keep_data and self._base_dir is not None:
            shutil.rmtree(self._base_dir, ignore_errors=True)
            self._base_dir = None

    def terminate(self, *, graceful: bool = True, timeout: float = 10.0) -> None:
        """End the process (SIGTERM, or SIGKILL if not ``graceful``) but keep the data.

        Unlike :meth:`stop` the server can be brought back with :meth:`start`.
        """
        self._terminate(graceful=graceful, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL etcd (a crash); data stays for a later :meth:`start`/:meth:`restart`."""
        self._terminate(graceful=False)

    def pause(self) -> None:
        """SIGSTOP etcd: its sockets stay open but nothing is answered."""
        if not self.is_running:
            raise RuntimeError("etcd is not running")
        self._signal(signal.SIGSTOP)
        self._paused = True
        self._wait_state(stopped=True)

    def resume(self) -> None:
        """SIGCONT a paused etcd."""
        if not self.is_running:
            raise RuntimeError("etcd is not running")
        self._signal(signal.SIGCONT)
        self._paused = False
        self._wait_state(stopped=False)

    def _wait_state(self, *, stopped: bool, timeout: float = 2.0) -> None:
        """Wait until the kernel shows the requested state (signals are asynchronous).

        Without this a test could observe the server still answering right after
        ``pause()`` returned. Best effort where /proc is unavailable.
        """
        pid = self.pid
        if pid is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = _proc_state(pid)
            if state is None or (state in ("T", "t")) == stopped:
                return
            time.sleep(0.005)

    def restart(self, *, graceful: bool = True, timeout: float | None = None) -> None:
        """Stop (SIGTERM, or SIGKILL if not ``graceful``) and start on the same ports/data."""
        if self.is_running:
            self._terminate(graceful=graceful)
        if not self._ever_started:
            raise RuntimeError("restart() of a server that was never started")
        self.start(timeout=timeout)

    def __enter__(self: _Self) -> _Self:
        if not self.is_running:
            try:
                self.start()
            except BaseException:
                # __exit__ will not run; do not leave a data directory behind.
                self.stop()
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.endpoint if self._client_port is not None else "unstarted"
        state = "paused" if self.is_paused else "running" if self.is_running else "stopped"
        return f"<{type(self).__name__} {self.name} etcd {self.version} {where} {state}>"

    # ---- inspection --------------------------------------------------------------

    def health(self, timeout: float = 2.0) -> bool:
        """One ``/health`` probe; False on any error."""
        try:
            body = json.loads(http_get(self.health_url, timeout=timeout))
        except HTTP_ERRORS:
            return False
        return bool(body.get("health") in ("true", True))


def _opt_path(value: StrPath | None, fallback: Path | None) -> Path | None:
    if value is not None:
        return Path(value)
    return fallback
