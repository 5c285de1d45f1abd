"""A real multi-member etcd cluster on loopback for failover tests.

Members are :class:`~etcdsync.testing.server.EtcdServer` instances sharing one binary and a
static ``--initial-cluster``. Raft timings default to 50 ms heartbeat / 500 ms election
timeout so that losing the leader is repaired in about a second.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from .binaries import EtcdBinary, find_etcd
from .server import (
    DEFAULT_ELECTION_MS,
    DEFAULT_HEARTBEAT_MS,
    HTTP_ERRORS,
    EtcdServer,
    EtcdStartError,
    allocate_ports,
    default_tmp_dir,
    run_etcdctl,
)

__all__ = ["EtcdCluster"]

_PORT_RETRIES = 3


class EtcdCluster:
    """``size`` etcd members started from the same binary on 127.0.0.1.

    Per-member fault injection is by index (:meth:`kill`, :meth:`pause`, :meth:`resume`,
    :meth:`restart`, :meth:`stop_member`, :meth:`start_member`); :meth:`heal` brings every
    member back. The leader is found through each member's ``etcd_server_is_leader``
    gauge. Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        size: int = 3,
        binary: EtcdBinary | None = None,
        *,
        version: str | None = None,
        heartbeat_interval_ms: int = DEFAULT_HEARTBEAT_MS,
        election_timeout_ms: int = DEFAULT_ELECTION_MS,
        max_request_bytes: int | None = None,
        quota_backend_bytes: int | None = None,
        extra_args: Sequence[str] = (),
        keep_data: bool = False,
        start_timeout: float = 30.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one member")
        self.size = size
        self.binary = binary if binary is not None else find_etcd(version)
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.election_timeout_ms = election_timeout_ms
        self.max_request_bytes = max_request_bytes
        self.quota_backend_bytes = quota_backend_bytes
        self.extra_args = list(extra_args)
        self.keep_data = keep_data
        self.start_timeout = start_timeout
        self.members: list[EtcdServer] = []
        self._base_dir: Path | None = None

    # ---- construction ------------------------------------------------------------

    def _build_members(self) -> None:
        """Create member objects with fresh ports and a shared initial-cluster string."""
        if self._base_dir is None:
            root = default_tmp_dir()
            self._base_dir = Path(tempfile.mkdtemp(prefix="etcdsync-cluster-", dir=root))
        ports = allocate_ports(3 * self.size)
        names = [f"m{i}" for i in range(self.size)]
        peers = [f"http://127.0.0.1:{ports[3 * i + 1]}" for i in range(self.size)]
        initial = ",".join(f"{n}={p}" for n, p in zip(names, peers, strict=True))
        token = f"etcdsync-cluster-{uuid.uuid4().hex[:12]}"
        self.members = [
            EtcdServer(
                self.binary,
                name=names[i],
                client_port=ports[3 * i],
                peer_port=ports[3 * i + 1],
                metrics_port=ports[3 * i + 2],
                initial_cluster=initial,
                initial_cluster_token=token,
                heartbeat_interval_ms=self.heartbeat_interval_ms,
                election_timeout_ms=self.election_timeout_ms,
                max_request_bytes=self.max_request_bytes,
                quota_backend_bytes=self.quota_backend_bytes,
                extra_args=self.extra_args,
                # The cluster owns the parent directory and removes it in stop().
                base_dir=self._base_dir / names[i],
                start_timeout=self.start_timeout,
            )
            for i in range(self.size)
        ]

    def start(self, timeout: float | None = None) -> EtcdCluster:
        """Start every member and wait for a healthy cluster with a leader."""
        if any(m.is_running for m in self.members):
            raise RuntimeError("cluster is already running")
        for attempt in range(_PORT_RETRIES):
            self._build_members()
            # All members must be launched before waiting: none is healthy without quorum.
            for member in self.members:
                member.start(wait=False)
            try:
                self.wait_ready(timeout)
                return self
            except EtcdStartError as exc:
                for member in self.members:
                    member.kill()
                if not exc.port_in_use or attempt == _PORT_RETRIES - 1:
                    raise
                # Peer URLs are baked into every member's bootstrap; start over from scratch.
                self._remove_dir()
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop all members and remove the data unless ``keep_data``.

        Without ``keep_data`` members are SIGKILLed: the data is deleted anyway, and a
        graceful etcd 3.5 shutdown with live peers costs about a second per member (its
        peer listener waits 1 s for open peer connections). Sending SIGTERM to all at once
        is worse still (~6 s): each member then waits on peers that are going away too.
        """
        if self.keep_data:
            for member in self.members:
                member.terminate(timeout=timeout)
        else:
            for member in self.members:
                member.kill()
            self._remove_dir()
        for member in self.members:
            # Members never own the shared directory; this only reaps and forgets them.
            member.stop(timeout=timeout)

    def _remove_dir(self) -> None:
        if self._base_dir is not None:
            shutil.rmtree(self._base_dir, ignore_errors=True)
            self._base_dir = None

    def __enter__(self) -> EtcdCluster:
        if not any(m.is_running for m in self.members):
            try:
                self.start()
            except BaseException:
                # __exit__ will not run; do not leave processes or directories behind.
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

    # ---- access ------------------------------------------------------------------

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> EtcdServer:
        return self.members[index]

    def __iter__(self) -> Iterator[EtcdServer]:
        return iter(self.members)

    def member(self, index: int) -> EtcdServer:
        return self.members[index]

    @property
    def version(self) -> str:
        return self.binary.version

    @property
    def endpoints(self) -> list[str]:
        """``"127.0.0.1:port"`` of every member, running or not, in index order."""
        return [m.endpoint for m in self.members]

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    def running_indices(self) -> list[int]:
        """Members whose process exists and is not paused."""
        return [i for i, m in enumerate(self.members) if m.is_running and not m.is_paused]

    # ---- fault injection -----------------------------------------------------------

    def kill(self, index: int) -> None:
        """SIGKILL one member (its data is kept for :meth:`start_member`)."""
        self.members[index].kill()

    def pause(self, index: int) -> None:
        self.members[index].pause()

    def resume(self, index: int) -> None:
        self.members[index].resume()

    def stop_member(self, index: int) -> None:
        """Gracefully stop one member, keeping its data (unlike ``EtcdServer.stop``)."""
        self.members[index].terminate()

    def start_member(self, index: int, *, wait: bool = True, timeout: float | None = None) -> None:
        """Start a stopped or killed member again with its old data and ports."""
        self.members[index].start(wait=wait, timeout=timeout)

    def restart(self, index: int, *, graceful: bool = True, timeout: float | None = None) -> None:
        """Restart one member on the same ports and data."""
        self.members[index].restart(graceful=graceful, timeout=timeout)

    def heal(self, timeout: float | None = None) -> None:
        """Resume paused members, start stopped ones, and wait for a healthy cluster."""
        for member in self.members:
            if member.is_paused:
                member.resume()
            elif not member.is_running:
                member.start(wait=False)
        self.wait_ready(timeout)

    # ---- observation -------------------------------------------------------------

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every running member is healthy and exactly one is leader."""
        limit = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        for index in self.running_indices():
            self.members[index].wait_ready(max(0.1, deadline - time.monotonic()))
        self.wait_for_leader(timeout=max(0.1, deadline - time.monotonic()))

    def leader_index(self, probe_timeout: float = 0.5) -> int | None:
        """Index of the single member reporting ``etcd_server_is_leader 1``, else None.

        Paused and dead members are skipped: a paused ex-leader still believes it leads
        but cannot act on it. ``None`` also covers "two members claim leadership", which
        happens briefly when an old leader has not yet noticed a newer term.
        """
        leaders: list[int] = []
        for index in self.running_indices():
            try:
                metrics = self.members[index].metrics(timeout=probe_timeout)
            except HTTP_ERRORS:
                continue
            if metrics.get("etcd_server_is_leader", 0.0) >= 1.0:
                leaders.append(index)
        return leaders[0] if len(leaders) == 1 else None

    def wait_for_leader(
        self, timeout: float = 10.0, *, exclude: int | Sequence[int] = ()
    ) -> int:
        """Poll until one member leads (not one of ``exclude``) and return its index."""
        excluded = {exclude} if isinstance(exclude, int) else set(exclude)
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leader_index()
            if leader is not None and leader not in excluded:
                return leader
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no leader (excluding {sorted(excluded)}) within {timeout}s; "
                    f"running members: {self.running_indices()}"
                )
            time.sleep(0.05)

    def etcdctl(
        self,
        *args: str,
        timeout: float = 30.0,
        check: bool = True,
        input: str | None = None,
        indices: Sequence[int] | None = None,
    ) -> str:
        """Run etcdctl against the given members (default: all running, not paused)."""
        chosen = list(indices) if indices is not None else self.running_indices()
        if not chosen:
            raise RuntimeError("no running members")
        urls = [self.members[i].client_url for i in chosen]
        argv = self.members[chosen[0]].etcdctl_args(urls)
        return run_etcdctl([*argv, *args], timeout=timeout, check=check, input=input)

    def __repr__(self) -> str:
        running = self.running_indices()
        return f"<EtcdCluster size={self.size} etcd {self.version} running={running}>"
