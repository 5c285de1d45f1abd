"""Free loopback TCP ports for the etcd members this process starts."""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["HOST", "allocate_ports"]

#: Loopback only: an embedded or test etcd must never be exposed beyond this machine.
HOST = "127.0.0.1"

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

    Safe to call from several threads without a lock: a port is checked against the
    ports already given while our socket holds it bound, so no other thread can bind
    it at the same time, and a thread that bound it earlier recorded it before letting
    it go.
    """
    low, high = 20000, _ephemeral_low()
    holders: list[socket.socket] = []
    chosen: list[int] = []
    try:
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
                sock.bind((HOST, port))
            except OSError:
                sock.close()
                continue
            port = sock.getsockname()[1]
            if port in _ports_given:  # given meanwhile, or a kernel-chosen port given before
                sock.close()
                continue
            holders.append(sock)
            _ports_given.add(port)
            chosen.append(port)
    finally:
        for sock in holders:
            sock.close()
    return chosen
