"""Service discovery: services register themselves, a client picks among them (threads).

    python examples/service_discovery.py                    # starts an embedded etcd
    python examples/service_discovery.py 127.0.0.1:2379     # or uses yours

The same steps as ``service_discovery_async.py`` with ``Client`` and threads.  Three
instances of an "echo" service start, each a TCP server on its own port (served by a
thread) with its own client (as separate processes would), and register themselves
with ``etcd.services(namespace).register(...)``: a lease-bound key holding their
address, port and a payload, renewed by the client's session.  A client watches the
service and calls ``choose("echo")`` round-robin: each request goes to the next live
instance.  One instance dies without deregistering (its client is closed without a
word, like a crashed process: its lease is revoked; a killed process's would expire
within the TTL) and the client stops choosing it; another deregisters cleanly.
Everything lives under a fresh namespace, deleted at the end.
"""

from __future__ import annotations

import socket
import socketserver
import sys
import threading
import uuid

from etcdsync import CacheEventType, Client, ServiceDiscovery
from etcdsync.testing import endpoint_or_embedded

TTL = 5


def echo_server(name: str) -> socketserver.ThreadingTCPServer:
    """The service itself: echo one line back, signed; served by a thread of its own."""

    class Echo(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline()
            self.wfile.write(f"{name} says {line.decode().strip()}\n".encode())

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(
        target=server.serve_forever, args=(0.05,), name=f"{name}-server", daemon=True
    ).start()
    return server


Instance = tuple[Client, ServiceDiscovery, socketserver.ThreadingTCPServer]


def start_instance(endpoint: str, namespace: str, name: str) -> Instance:
    """One instance: a TCP server on a free port, registered under its own client."""
    server = echo_server(name)
    port = server.server_address[1]
    etcd = Client(endpoint)
    services = etcd.services(namespace, ttl=TTL)
    services.register("echo", name, "127.0.0.1", port, payload={"version": "1.0"})
    print(f"{name} listening on 127.0.0.1:{port}, registered")
    return etcd, services, server


def call(address: str, port: int | None, text: str) -> str:
    assert port is not None
    with socket.create_connection((address, port), timeout=5) as conn:
        conn.sendall(f"{text}\n".encode())
        return conn.makefile().readline().strip()


def stop_server(server: socketserver.ThreadingTCPServer) -> None:
    server.shutdown()
    server.server_close()


def run(endpoint: str) -> None:
    namespace = f"examples/services/{uuid.uuid4().hex[:8]}"
    instances = [start_instance(endpoint, namespace, f"echo-{i}") for i in range(3)]
    with Client(endpoint) as etcd:
        try:
            with etcd.services(namespace) as services, services.watch("echo") as watch:
                for _ in range(3):  # the instances already registered
                    event = watch.get(5)
                    assert event.instance is not None
                    print("watch:", event.type.value, event.instance.id, event.instance.addr)
                for i in range(4):
                    chosen = services.choose("echo")  # round-robin
                    print(f"request {i} ->", call(chosen.address, chosen.port, f"hello {i}"))

                # echo-0 dies without deregistering: its lease goes (revoked on close
                # here; a killed process's lease expires within the TTL).
                dead_client, _, dead_server = instances[0]
                stop_server(dead_server)
                dead_client.close()
                event = watch.get(TTL + 5)
                assert event.type is CacheEventType.REMOVED and event.instance is not None
                print("watch:", event.type.value, event.instance.id, "(its lease ended)")
                live = [i.id for i in services.instances("echo")]
                print("live instances:", live)
                for i in range(2):
                    chosen = services.choose("echo")
                    print(f"request {i} ->", call(chosen.address, chosen.port, "again"))

                # echo-1 leaves cleanly.
                services.deregister("echo", "echo-1")
                event = watch.get(5)
                assert event.instance is not None
                print("watch:", event.type.value, event.instance.id, "(deregistered)")
                sticky = {services.choose("echo", "sticky").id for _ in range(3)}
                print("sticky choice:", sticky)
        finally:
            for client, own, server in instances[1:]:
                own.close()  # deregisters what is still registered
                stop_server(server)
                client.close()
            deleted = etcd.delete(namespace + "/", prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {namespace}/")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        run(endpoint)
