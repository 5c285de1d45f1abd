"""A real multi-member etcd cluster on loopback for failover tests.

Members are :class:`~etcdsync.testing.server.EtcdServer` instances sharing one binary and a
static ``--initial-cluster``. Raft timings default to 50 ms heartbeat / 500 ms election
timeout so that losing the leader is repaired in about a second.

Network faults: ``client_proxies=True`` puts a :class:`~etcdsync.testing.proxy.FaultProxy`
in front of each member's client port (:attr:`EtcdCluster.proxied_endpoints`);
``peer_proxies=True`` routes all raft traffic through a :class:`PeerProxy` per member
(each member advertises its proxy as its peer URL), so :meth:`EtcdCluster.partition`
can cut one member off from the others.
"""

from __future__ import annotations

import json
import selectors
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from .._embedded.ports import allocate_ports
from .._embedded.probe import HTTP_ERRORS, http_get
from .._embedded.process import (
    DEFAULT_ELECTION_MS,
    DEFAULT_HEARTBEAT_MS,
    EtcdStartError,
    default_tmp_dir,
)
from .binaries import EtcdBinary, find_etcd
from .etcdctl import run_etcdctl
from .proxy import FaultProxy, _Pipe
from .server import EtcdServer

__all__ = ["EtcdCluster", "PeerProxy"]

_PORT_RETRIES = 3
_CHUNK = 65536


class PeerProxy(FaultProxy):
    """A :class:`FaultProxy` in front of one member's peer port that can also cut the
    connections *opened by* a given member.

    Raft traffic between two members flows over connections that either side may
    have dialled (etcd's stream readers dial the sender; pipelines dial the receiver),
    so blackholing a member's own proxy only stops what the others dialled to it.
    Every raft request names its sender in the ``X-Server-From`` header, so this
    proxy tags each connection with the member that opened it, and :meth:`cut_from`
    holds every byte of those connections, both ways - together with a blackhole of
    the member's own proxy that isolates it completely.
    """

    _HEADER = b"\r\nx-server-from:"
    _PEEK_LIMIT = 16384  # the header is in the first request's head

    def __init__(self, target: str, *, listen_port: int = 0) -> None:
        self._heads: dict[int, bytes] = {}  # id(pipe) -> request bytes seen so far
        self._origins: dict[int, str] = {}  # id(pipe) -> sender's member id ("" unknown)
        self._cut: set[str] = set()
        super().__init__(target, listen_port=listen_port)

    def cut_from(self, member_id: str) -> None:
        """Forward nothing on connections opened by ``member_id`` (hex) until :meth:`heal`."""
        with self._lock:
            self._cut.add(member_id)
        self._wake()

    def heal(self) -> None:
        with self._lock:
            self._cut.clear()
        super().heal()

    def _origin(self, pipe_key: int, data: bytes) -> str | None:
        """The sender named by a connection's first request (None: not known yet)."""
        origin = self._origins.get(pipe_key)
        if origin is not None:
            return origin
        head = self._heads.get(pipe_key, b"") + data
        lower = head.lower()
        at = lower.find(self._HEADER)
        if at >= 0 and b"\r\n" in lower[at + len(self._HEADER) :]:
            rest = head[at + len(self._HEADER) :]
            origin = rest.split(b"\r\n", 1)[0].strip().decode("ascii", "replace")
        elif b"\r\n\r\n" in head or len(head) > self._PEEK_LIMIT:
            origin = ""  # e.g. a /version probe: no sender named
        if origin is None:
            self._heads[pipe_key] = head
        else:
            self._heads.pop(pipe_key, None)
            self._origins[pipe_key] = origin
        return origin

    def _drop(self, pipe: _Pipe, *, abort: bool) -> None:
        # Pipes are keyed by id(): forget a closed one before its id can be reused.
        self._origins.pop(id(pipe), None)
        self._heads.pop(id(pipe), None)
        super()._drop(pipe, abort=abort)

    def _on_ready(self, sock: socket.socket, events: int) -> None:
        # FaultProxy._on_ready plus the per-sender cut.
        with self._lock:
            pipe = self._pipes.get(sock)
            if pipe is None or not events & selectors.EVENT_READ:
                return
            try:
                data = sock.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                self._drop(pipe, abort=False)
                return
            origin = self._origins.get(id(pipe))
            if origin is None and sock is pipe.client:
                origin = self._origin(id(pipe), data)
            held = self._blackholed or (origin is not None and origin in self._cut)
            due = float("inf") if held else time.monotonic() + self._delay
            pipe.queue_for(pipe.peer_of(sock)).append((due, data))


class EtcdCluster:
    """``size`` etcd members started from the same binary on 127.0.0.1.

    Per-member fault injection is by index (:meth:`kill`, :meth:`pause`, :meth:`resume`,
    :meth:`restart`, :meth:`stop_member`, :meth:`start_member`); :meth:`heal` brings every
    member back. The leader is found through each member's ``etcd_server_is_leader``
    gauge. Use as a context manager or call :meth:`start` / :meth:`stop`.

    ``client_proxies`` / ``peer_proxies`` put fault proxies in front of the client /
    peer ports (see the module doc): :meth:`client_proxy`, :attr:`proxied_endpoints`,
    :meth:`partition`; :meth:`heal` also heals every proxy.
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
        client_proxies: bool = False,
        peer_proxies: bool = False,
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
        self._want_client_proxies = client_proxies
        self._want_peer_proxies = peer_proxies
        self.client_proxies: list[FaultProxy] = []
        """One proxy per member's client port (with ``client_proxies=True``), by index."""
        self.peer_proxies: list[PeerProxy] = []
        """One proxy per member's peer port (with ``peer_proxies=True``), by index."""
        self._member_ids: dict[str, str] = {}  # name -> hex member id

    # ---- construction ------------------------------------------------------------

    def _build_members(self) -> None:
        """Create member objects with fresh ports and a shared initial-cluster string."""
        if self._base_dir is None:
            root = default_tmp_dir()
            self._base_dir = Path(tempfile.mkdtemp(prefix="etcdsync-cluster-", dir=root))
        ports = allocate_ports(3 * self.size)
        names = [f"m{i}" for i in range(self.size)]
        self._close_proxies()  # from a start attempt that lost a port race
        if self._want_client_proxies:
            self.client_proxies = [
                FaultProxy(f"127.0.0.1:{ports[3 * i]}") for i in range(self.size)
            ]
        if self._want_peer_proxies:
            # Every member advertises its proxy: all raft traffic goes through one.
            self.peer_proxies = [
                PeerProxy(f"127.0.0.1:{ports[3 * i + 1]}") for i in range(self.size)
            ]
            peers = [f"http://{proxy.endpoint}" for proxy in self.peer_proxies]
        else:
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
                # etcd keeps the last value of a repeated flag: this overrides the
                # member's own peer URL with its proxy's.
                extra_args=[*self.extra_args, "--initial-advertise-peer-urls", peers[i]]
                if self._want_peer_proxies
                else self.extra_args,
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
        self._close_proxies()

    def _close_proxies(self) -> None:
        for proxy in [*self.client_proxies, *self.peer_proxies]:
            proxy.close()
        self.client_proxies, self.peer_proxies = [], []
        self._member_ids.clear()

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

    @property
    def proxied_endpoints(self) -> list[str]:
        """The client proxies' ``"127.0.0.1:port"`` in index order (``client_proxies=True``)."""
        if not self.client_proxies:
            raise RuntimeError("the cluster was created without client_proxies=True")
        return [proxy.endpoint for proxy in self.client_proxies]

    def client_proxy(self, index: int) -> FaultProxy:
        """The proxy in front of member ``index``'s client port."""
        if not self.client_proxies:
            raise RuntimeError("the cluster was created without client_proxies=True")
        return self.client_proxies[index]

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

    def partition(self, index: int) -> None:
        """Cut member ``index`` off from the other members (``peer_proxies=True``).

        Its own peer proxy forwards nothing, and the others' hold every connection it
        opened: no raft message passes either way.  Its client port stays reachable.
        Undo with :meth:`heal_network` (or :meth:`heal`).
        """
        if not self.peer_proxies:
            raise RuntimeError("the cluster was created without peer_proxies=True")
        member_id = self.member_id(index)
        self.peer_proxies[index].blackhole()
        for other, proxy in enumerate(self.peer_proxies):
            if other != index:
                proxy.cut_from(member_id)

    def heal_network(self) -> None:
        """Let every client and peer proxy forward normally again."""
        for proxy in [*self.client_proxies, *self.peer_proxies]:
            proxy.heal()

    def member_id(self, index: int) -> str:
        """Member ``index``'s raft id in lowercase hex (as etcd prints it)."""
        name = self.members[index].name
        if name not in self._member_ids:
            self._member_ids.update(self._fetch_member_ids())
        return self._member_ids[name]

    def _fetch_member_ids(self) -> dict[str, str]:
        # Any running member lists them all on its peer port (/members, plain JSON).
        for index in self.running_indices():
            try:
                body = http_get(f"{self.members[index].peer_url}/members", timeout=2.0)
                listed = json.loads(body)
            except HTTP_ERRORS:
                continue
            return {m["name"]: _hex_id(m["id"]) for m in listed if m.get("name")}
        raise RuntimeError("no running member answered /members")

    def heal(self, timeout: float | None = None) -> None:
        """Heal every proxy, resume paused members, start stopped ones, and wait for a
        healthy cluster."""
        self.heal_network()
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

    def wait_for_leader(self, timeout: float = 10.0, *, exclude: int | Sequence[int] = ()) -> int:
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


def _hex_id(raw: object) -> str:
    """A member id from /members (a hex string, or a number in some versions) as hex."""
    return f"{raw:x}" if isinstance(raw, int) else str(raw).lower()
