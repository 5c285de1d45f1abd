"""Service discovery: services register themselves, a client picks among them (asyncio).

    python examples/service_discovery_async.py                    # starts an embedded etcd
    python examples/service_discovery_async.py 127.0.0.1:2379     # or uses yours

Three instances of an "echo" service start, each on its own port and its own client
(as separate processes would), and register themselves with
``etcd.services(namespace).register(...)``: a lease-bound key holding their address,
port and a payload, renewed by the client's session.  A client watches the service
and calls ``choose("echo")`` round-robin: each request goes to the next live
instance.  One instance dies without deregistering (its client is closed without
a word, like a crashed process: its lease is revoked; a killed process's would
expire within the TTL) and the client stops choosing it; another deregisters
cleanly.  Everything lives under a fresh namespace, deleted at the end.  The same
steps with threads and ``Client``: ``service_discovery.py``.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from etcdsync import AsyncClient, AsyncServiceDiscovery, CacheEventType
from etcdsync.testing import endpoint_or_embedded

TTL = 5


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
    """The service itself: echo one line back, signed."""
    line = await reader.readline()
    writer.write(f"{name} says {line.decode().strip()}\n".encode())
    await writer.drain()
    writer.close()


Instance = tuple[AsyncClient, AsyncServiceDiscovery, asyncio.Server]


async def start_instance(endpoint: str, namespace: str, name: str) -> Instance:
    """One instance: a TCP server on a free port, registered under its own client."""
    server = await asyncio.start_server(lambda r, w: serve(r, w, name), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    etcd = AsyncClient(endpoint)
    services = etcd.services(namespace, ttl=TTL)
    await services.register("echo", name, "127.0.0.1", port, payload={"version": "1.0"})
    print(f"{name} listening on 127.0.0.1:{port}, registered")
    return etcd, services, server


async def call(address: str, port: int | None, text: str) -> str:
    reader, writer = await asyncio.open_connection(address, port)
    writer.write(f"{text}\n".encode())
    await writer.drain()
    answer = (await reader.readline()).decode().strip()
    writer.close()
    return answer


async def run(endpoint: str) -> None:
    namespace = f"examples/services/{uuid.uuid4().hex[:8]}"
    instances = [await start_instance(endpoint, namespace, f"echo-{i}") for i in range(3)]
    async with AsyncClient(endpoint) as etcd:
        try:
            async with etcd.services(namespace) as services, services.watch("echo") as watch:
                for _ in range(3):  # the instances already registered
                    event = await watch.get(5)
                    assert event.instance is not None
                    print("watch:", event.type.value, event.instance.id, event.instance.addr)
                for i in range(4):
                    chosen = await services.choose("echo")  # round-robin
                    print(f"request {i} ->", await call(chosen.address, chosen.port, f"hello {i}"))

                # echo-0 dies without deregistering: its lease goes (revoked on close
                # here; a killed process's lease expires within the TTL).
                dead_client, _, dead_server = instances[0]
                dead_server.close()
                await dead_client.close()
                event = await watch.get(TTL + 5)
                assert event.type is CacheEventType.REMOVED and event.instance is not None
                print("watch:", event.type.value, event.instance.id, "(its lease ended)")
                live = [i.id for i in await services.instances("echo")]
                print("live instances:", live)
                for i in range(2):
                    chosen = await services.choose("echo")
                    print(f"request {i} ->", await call(chosen.address, chosen.port, "again"))

                # echo-1 leaves cleanly.
                await services.deregister("echo", "echo-1")
                event = await watch.get(5)
                assert event.instance is not None
                print("watch:", event.type.value, event.instance.id, "(deregistered)")
                sticky = {(await services.choose("echo", "sticky")).id for _ in range(3)}
                print("sticky choice:", sticky)
        finally:
            for client, own, server in instances[1:]:
                await own.close()  # deregisters what is still registered
                server.close()
                await client.close()
            deleted = await etcd.delete(namespace + "/", prefix=True)
            print(f"cleaned up {deleted.deleted} key(s) under {namespace}/")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(run(endpoint))
