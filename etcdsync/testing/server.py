"""Run a real, throwaway etcd server for tests.

:class:`EtcdServer` is an :class:`~etcdsync._embedded.process.EtcdProcess` (a single etcd
member on free loopback ports with its data in tmpfs, that can be stopped, killed,
paused and restarted while only ever signalling the process it started itself) with
what tests need on top: :meth:`~EtcdServer.crash` that keeps acknowledged writes,
:meth:`~EtcdServer.metrics` and :meth:`~EtcdServer.etcdctl`.

The pieces live in modules of their own and are re-exported here, where tests have
always imported them: ports (:mod:`etcdsync._embedded.ports`), the process lifecycle
(:mod:`etcdsync._embedded.process`), ``/metrics`` parsing (:mod:`.metrics`), TLS
material (:mod:`.tls`) and etcdctl (:mod:`.etcdctl`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .._embedded.ports import allocate_ports
from .._embedded.probe import HTTP_ERRORS, http_get
from .._embedded.process import (
    DEFAULT_ELECTION_MS,
    DEFAULT_HEARTBEAT_MS,
    EtcdProcess,
    EtcdStartError,
    default_tmp_dir,
)
from .etcdctl import EtcdctlError, run_etcdctl
from .metrics import Metrics, MetricSample
from .tls import TLSFiles, generate_tls_files, openssl_available

__all__ = [
    "DEFAULT_ELECTION_MS",
    "DEFAULT_HEARTBEAT_MS",
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


class EtcdServer(EtcdProcess):
    """A real etcd member on loopback, owned by this process, for tests.

    Everything :class:`~etcdsync._embedded.process.EtcdProcess` offers (construct, then
    :meth:`start`, or ``with EtcdServer() as server:``; :meth:`stop`, :meth:`kill`,
    :meth:`pause`, :meth:`restart`, ...) plus :meth:`crash`, :meth:`metrics` and
    :meth:`etcdctl`. With ``tls`` (:func:`generate_tls_files` output) the client
    certificate is also used by :meth:`etcdctl`.
    """

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

    # ---- inspection --------------------------------------------------------------

    def metrics(self, timeout: float = 5.0) -> Metrics:
        """Fetch and parse ``/metrics``."""
        return Metrics(http_get(self.metrics_url, timeout=timeout))

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
