"""Run a real, throwaway etcd server for tests.

:class:`EtcdServer` starts a single etcd member on free loopback ports with its data in
tmpfs, and offers the fault-injection primitives tests need (kill, pause, restart) while
only ever signalling the process it started itself.

Every member also gets a plain-HTTP metrics listener (``--listen-metrics-urls``). It serves
``/health`` and ``/metrics`` on both etcd 3.4 and 3.5, so readiness checks and metrics work
the same way whether or not the client listener uses TLS (with client certificate auth,
the client port would refuse an anonymous health probe).
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from .binaries import EtcdBinary, find_etcd

__all__ = [
    "HTTP_ERRORS",
    "EtcdServer",
    "EtcdStartError",
    "EtcdctlError",
    "MetricSample",
    "Metrics",
    "TLSFiles",
    "allocate_ports",
    "default_tmp_dir",
    "generate_tls_files",
    "openssl_available",
    "run_etcdctl",
]

StrPath = str | os.PathLike[str]

# Loopback only: tests must never expose etcd beyond this machine.
_HOST = "127.0.0.1"

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


class EtcdctlError(subprocess.CalledProcessError):
    """An ``etcdctl`` invocation failed; ``str()`` includes its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}"


# --------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------

_ports_lock = threading.Lock()
# Ports handed out by this process. Never reused, so two servers created back to back
# cannot pick the same port before either of them has bound it.
_ports_given: set[int] = set()


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def allocate_ports(count: int) -> list[int]:
    """Return ``count`` distinct loopback TCP ports that were free a moment ago.

    Ports are drawn at random from *below* the kernel's ephemeral range. A port taken with
    ``bind(0)`` lies inside that range, so an outgoing connection (say, between cluster
    peers) could later get it as its source port and make a ``restart()`` on the same
    port fail. Each candidate is test-bound and all sockets stay open until every port is
    chosen, so one call never returns duplicates. A race with another process remains
    possible; callers retry on "address already in use".
    """
    low, high = 20000, _ephemeral_low()
    holders: list[socket.socket] = []
    chosen: list[int] = []
    try:
        with _ports_lock:
            attempts = 0
            while len(chosen) < count:
                attempts += 1
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                # Fall back to kernel-chosen ports if the range below is tiny or exhausted.
                port = random.randrange(low, high) if high - low > 1000 and attempts < 500 else 0
                if port in _ports_given:
                    sock.close()
                    continue
                try:
                    sock.bind((_HOST, port))
                except OSError:
                    sock.close()
                    continue
                holders.append(sock)
                port = sock.getsockname()[1]
                _ports_given.add(port)
                chosen.append(port)
    finally:
        for sock in holders:
            sock.close()
    return chosen


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSample:
    """One Prometheus series value."""

    name: str
    labels: Mapping[str, str]
    value: float


_LABEL_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def _parse_sample(line: str) -> MetricSample | None:
    brace = line.find("{")
    space = line.find(" ")
    labels: dict[str, str] = {}
    if brace != -1 and (space == -1 or brace < space):
        name = line[:brace]
        pos = brace + 1
        while True:
            match = _LABEL_RE.match(line, pos)
            if match is None:
                break
            labels[match.group(1)] = _unescape(match.group(2))
            pos = match.end()
        end = line.find("}", pos)
        if end == -1:
            return None
        rest = line[end + 1 :].split()
    else:
        name, *rest = line.split()
    if not rest:
        return None
    try:
        value = float(rest[0])
    except ValueError:
        return None
    return MetricSample(name=name, labels=labels, value=value)


class Metrics(dict[str, float]):
    """Parsed ``/metrics``: metric name -> sum over all of its series.

    Summing is what most assertions need (``etcd_server_is_leader``, request counters).
    The individual series are in :attr:`samples` and the raw exposition in :attr:`text`.
    Histogram parts keep their suffixed names (``..._bucket``, ``..._sum``, ``..._count``).
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.samples: list[MetricSample] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            sample = _parse_sample(line)
            if sample is None:
                continue
            self.samples.append(sample)
            self[sample.name] = self.get(sample.name, 0.0) + sample.value

    def series(self, name: str, **labels: str) -> list[MetricSample]:
        """Samples of ``name`` whose labels include all of ``labels``."""
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]


# Loopback requests must not be sent to an HTTP proxy configured in the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


#: What a probe of a starting, dying or paused etcd may raise. HTTPException is not an
#: OSError (e.g. IncompleteRead when a member is killed mid-response).
HTTP_ERRORS: tuple[type[Exception], ...] = (OSError, http.client.HTTPException, ValueError)


def _http_get(url: str, timeout: float) -> str:
    with _opener.open(url, timeout=timeout) as response:
        body: bytes = response.read()
    return body.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------
# TLS material
# --------------------------------------------------------------------------------------


def openssl_available() -> bool:
    """True when the ``openssl`` command line tool is on PATH."""
    return shutil.which("openssl") is not None


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a throwaway CA, a server certificate and a client certificate."""

    directory: Path
    ca_file: Path
    ca_key_file: Path
    server_cert_file: Path
    server_key_file: Path
    client_cert_file: Path
    client_key_file: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def generate_tls_files(
    directory: StrPath,
    *,
    hosts: Sequence[str] = ("127.0.0.1", "localhost", "::1"),
    client_common_name: str = "etcdsync-test-client",
    days: int = 2,
) -> TLSFiles:
    """Create a CA plus server and client certificates in ``directory`` with ``openssl``.

    Keys are ECDSA P-256 (fast to generate). The server certificate carries ``hosts`` as
    subjectAltNames (Go ignores the CN since 1.15) and both serverAuth and clientAuth key
    usages, because etcd 3.4's gRPC gateway dials its own client port presenting the
    server certificate. Raises :class:`RuntimeError` when ``openssl`` is not installed.
    """
    if not openssl_available():
        raise RuntimeError(
            "the `openssl` command line tool is required to generate test certificates; "
            "install it (e.g. `apt-get install openssl`)"
        )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
        "-subj", "/CN=etcdsync-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=out,
    )  # fmt: skip

    sans = ",".join(
        f"IP:{h}" if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", h) else f"DNS:{h}" for h in hosts
    )
    leaves = {
        "server": ("/CN=etcdsync-test-server", f"subjectAltName={sans}\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n"),
        "client": (f"/CN={client_common_name}", "extendedKeyUsage=clientAuth\n"),
    }  # fmt: skip
    for stem, (subject, extensions) in leaves.items():
        (out / f"{stem}.ext").write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n" + extensions
        )
        _openssl(
            "req", "-new", *ec, "-keyout", f"{stem}.key", "-out", f"{stem}.csr",
            "-subj", subject, cwd=out,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", str(random.getrandbits(63)), "-days", str(days),
            "-extfile", f"{stem}.ext", "-out", f"{stem}.crt", cwd=out,
        )  # fmt: skip
    return TLSFiles(
        directory=out,
        ca_file=out / "ca.crt",
        ca_key_file=out / "ca.key",
        server_cert_file=out / "server.crt",
        server_key_file=out / "server.key",
        client_cert_file=out / "client.crt",
        client_key_file=out / "client.key",
    )


# --------------------------------------------------------------------------------------
# Process helpers
# --------------------------------------------------------------------------------------


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
_live: weakref.WeakSet[EtcdServer] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live):
        try:
            server.stop(timeout=2.0)
        except Exception:  # best effort at exit, never mask the real error
            pass


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


class EtcdServer:
    """A real etcd member on loopback, owned by this process.

    Construct, then :meth:`start` (or use ``with EtcdServer() as server:``). Ports are
    chosen at first start unless given; :meth:`restart` reuses ports and data.
    :meth:`stop` is final: it terminates etcd and deletes the data directory unless
    ``keep_data`` is set or the caller supplied ``base_dir``. :meth:`kill` simulates a
    crash and keeps the data so a later :meth:`start` recovers it.

    ``binary`` (or ``version``, passed to :func:`~etcdsync.testing.binaries.find_etcd`)
    selects the etcd executable. ``tls`` fills the four TLS options from
    :func:`generate_tls_files` output; the client certificate is then also used by
    :meth:`etcdctl`. ``initial_cluster`` / ``initial_cluster_token`` and explicit ports
    are what :class:`~etcdsync.testing.cluster.EtcdCluster` uses to form a cluster.
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
        tls: TLSFiles | None = None,
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

    def start(self, *, wait: bool = True, timeout: float | None = None) -> EtcdServer:
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
                body = json.loads(_http_get(self.health_url, timeout=1.0))
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

    @property
    def crash_signal(self) -> str:
        """What :meth:`crash` sends: ``"SIGKILL"``, or ``"SIGTERM"`` for a binary that may
        lose acknowledged writes to SIGKILL (:attr:`EtcdBinary.loses_writes_on_crash`)."""
        return "SIGTERM" if self.binary.loses_writes_on_crash else "SIGKILL"

    def crash(self) -> None:
        """End etcd abruptly, yet keep every write it acknowledged; data stays.

        For tests that check exact history across a member's death: SIGKILL where the
        binary survives that intact, SIGTERM on etcd 3.5.0-3.5.2 (see
        :attr:`crash_signal`).  Clients see the same broken streams and refused
        connections either way.
        """
        self._terminate(graceful=self.crash_signal == "SIGTERM")

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

    def __enter__(self) -> EtcdServer:
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
        return f"<EtcdServer {self.name} etcd {self.version} {where} {state}>"

    # ---- inspection --------------------------------------------------------------

    def health(self, timeout: float = 2.0) -> bool:
        """One ``/health`` probe; False on any error."""
        try:
            body = json.loads(_http_get(self.health_url, timeout=timeout))
        except HTTP_ERRORS:
            return False
        return bool(body.get("health") in ("true", True))

    def metrics(self, timeout: float = 5.0) -> Metrics:
        """Fetch and parse ``/metrics``."""
        return Metrics(_http_get(self.metrics_url, timeout=timeout))

    def etcdctl_args(self, endpoints: Sequence[str] | None = None) -> list[str]:
        """etcdctl executable and connection flags for this server (TLS included)."""
        urls = list(endpoints) if endpoints is not None else [self.client_url]
        args = [str(self.binary.require_etcdctl()), f"--endpoints={','.join(urls)}"]
        if self.tls:
            if self.trusted_ca_file is not None:
                args.append(f"--cacert={self.trusted_ca_file}")
            else:
                args.append("--insecure-skip-tls-verify")
            if self.client_cert_file is not None and self.client_key_file is not None:
                args += [f"--cert={self.client_cert_file}", f"--key={self.client_key_file}"]
        return args

    def etcdctl(
        self,
        *args: str,
        timeout: float = 30.0,
        check: bool = True,
        input: str | None = None,
        endpoints: Sequence[str] | None = None,
    ) -> str:
        """Run the matching etcdctl (v3 API) against this server and return its stdout.

        Raises :class:`EtcdctlError` on a non-zero exit when ``check`` is true.
        """
        return run_etcdctl(
            [*self.etcdctl_args(endpoints), *args], timeout=timeout, check=check, input=input
        )


def run_etcdctl(
    argv: Sequence[str], *, timeout: float = 30.0, check: bool = True, input: str | None = None
) -> str:
    """Run an etcdctl command line with ETCDCTL_API=3 and return stdout."""
    # The developer's ETCDCTL_* settings (endpoints, certs) must not redirect test traffic.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        input=input,
        check=False,
    )
    if check and result.returncode != 0:
        raise EtcdctlError(result.returncode, list(argv), result.stdout, result.stderr)
    return result.stdout


def _opt_path(value: StrPath | None, fallback: Path | None) -> Path | None:
    if value is not None:
        return Path(value)
    return fallback
