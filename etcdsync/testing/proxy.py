"""A TCP proxy on loopback that injects network faults between a client and etcd.

Put it in front of a member's client or peer port and point the other side at
``proxy.endpoint``.  It forwards bytes both ways until told to misbehave:

* :meth:`FaultProxy.delay` - hold every chunk for a while before forwarding it,
  optionally for a random extra (``jitter``): a slow, uneven network;
* :meth:`FaultProxy.blackhole` - keep connections open but forward nothing (and
  accept new connections that go nowhere): what a dead network path looks like,
  which only keepalive pings or deadlines can detect;
* :meth:`FaultProxy.reset` - abort every open connection with a TCP RST;
* :meth:`FaultProxy.heal` - back to plain forwarding.

One thread multiplexes all connections with ``selectors``; it only ever talks to
loopback addresses.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

_CHUNK = 65536


@dataclass
class _Pipe:
    """One proxied connection: the accepted socket and its upstream socket."""

    client: socket.socket
    upstream: socket.socket
    # Bytes waiting to be written to each side, with the time they may leave.
    to_upstream: list[tuple[float, bytes]] = field(default_factory=list)
    to_client: list[tuple[float, bytes]] = field(default_factory=list)

    def peer_of(self, sock: socket.socket) -> socket.socket:
        return self.upstream if sock is self.client else self.client

    def queue_for(self, sock: socket.socket) -> list[tuple[float, bytes]]:
        """The queue of bytes travelling *to* ``sock``."""
        return self.to_client if sock is self.client else self.to_upstream


class FaultProxy:
    """Forward ``127.0.0.1:<listen_port>`` to ``target`` (``host:port`` on loopback)."""

    def __init__(self, target: str, *, listen_port: int = 0) -> None:
        host, _, port = target.rpartition(":")
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the fault proxy only forwards to loopback, not {host!r}")
        self.target = (host, int(port))
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", listen_port))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._pipes: dict[socket.socket, _Pipe] = {}
        self._lock = threading.Lock()
        self._delay = 0.0
        self._jitter = 0.0
        self._random = random.Random()
        self._blackholed = False
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """Where clients should connect: ``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """How many proxied connections are open."""
        with self._lock:
            return len({id(p) for p in self._pipes.values()})

    # --- faults --------------------------------------------------------------------------

    def delay(self, seconds: float, *, jitter: float = 0.0, seed: int | None = None) -> None:
        """Hold each chunk ``seconds`` before forwarding it (0: no delay), plus a random
        extra drawn uniformly from ``[0, jitter]`` per chunk (``seed`` makes the draws
        repeatable).

        The delay applies in each direction, so a round trip takes twice as long:
        ``delay(0.05, jitter=0.15)`` gives round trips of 100-400 ms.  Bytes keep
        their order (a chunk never overtakes the one before it, as on TCP)."""
        if seconds < 0 or jitter < 0:
            raise ValueError(f"delay and jitter must be >= 0, got {seconds!r} and {jitter!r}")
        with self._lock:
            self._delay = seconds
            self._jitter = jitter
            self._random = random.Random(seed)
        self._wake()

    def blackhole(self) -> None:
        """Forward nothing, in either direction, on old and new connections."""
        with self._lock:
            self._blackholed = True
        self._wake()

    def reset(self) -> None:
        """Abort every open connection with a TCP RST."""
        with self._lock:
            pipes = {id(p): p for p in self._pipes.values()}.values()
            for pipe in pipes:
                self._drop(pipe, abort=True)
        self._wake()

    def heal(self) -> None:
        """Forward normally again (bytes held by a blackhole are delivered)."""
        with self._lock:
            self._delay = 0.0
            self._jitter = 0.0
            self._blackholed = False
            now = time.monotonic()
            for pipe in self._pipes.values():
                for queue in (pipe.to_client, pipe.to_upstream):
                    queue[:] = [(min(due, now), data) for due, data in queue]
        self._wake()

    # --- the loop -------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run(self) -> None:
        while not self._stop.is_set():
            timeout = self._next_due()
            for key, events in self._selector.select(timeout):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                else:
                    self._on_ready(key.fileobj, events)  # type: ignore[arg-type]
            self._flush()

    def _next_due(self) -> float:
        with self._lock:
            dues = [
                q[0][0] for p in self._pipes.values() for q in (p.to_client, p.to_upstream) if q
            ]
        if not dues or min(dues) == float("inf"):
            return 0.5
        return max(0.0, min(dues) - time.monotonic())

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            _abort(client)
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe = _Pipe(client, upstream)
        with self._lock:
            self._pipes[client] = pipe
            self._pipes[upstream] = pipe
        self._selector.register(client, selectors.EVENT_READ, "pipe")
        self._selector.register(upstream, selectors.EVENT_READ, "pipe")

    def _on_ready(self, sock: socket.socket, events: int) -> None:
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
            # A blackhole holds the bytes (as TCP would keep retransmitting them)
            # until heal(); nothing reaches the other side meanwhile.
            if self._blackholed:
                due = float("inf")
            else:
                due = time.monotonic() + self._delay
                if self._jitter:
                    due += self._random.uniform(0.0, self._jitter)
            queue = pipe.queue_for(pipe.peer_of(sock))
            if queue and queue[-1][0] > due:
                due = queue[-1][0]  # never before the bytes ahead of it (TCP keeps order)
            queue.append((due, data))

    def _flush(self) -> None:
        now = time.monotonic()
        with self._lock:
            for pipe in {id(p): p for p in self._pipes.values()}.values():
                for sock, queue in (
                    (pipe.client, pipe.to_client),
                    (pipe.upstream, pipe.to_upstream),
                ):
                    while queue and queue[0][0] <= now:
                        _, data = queue.pop(0)
                        try:
                            sock.setblocking(True)
                            sock.sendall(data)
                            sock.setblocking(False)
                        except OSError:
                            self._drop(pipe, abort=True)
                            break

    def _drop(self, pipe: _Pipe, *, abort: bool) -> None:
        for sock in (pipe.client, pipe.upstream):
            self._pipes.pop(sock, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            if abort:
                _abort(sock)
            else:
                sock.close()

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop forwarding, close every connection and the listener."""
        self._stop.set()
        self._wake()
        self._thread.join(5)
        with self._lock:
            for pipe in {id(p): p for p in self._pipes.values()}.values():
                self._drop(pipe, abort=False)
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _abort(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER with a zero timeout)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
