"""An asyncio web-style service: leader-only background work and a typed, hot-reloaded
config, in plain asyncio (no web framework).

    python examples/web_service_async.py                    # starts an embedded etcd
    python examples/web_service_async.py 127.0.0.1:2379     # or uses yours

Two replicas of one service run side by side, as two hosts would (each with its own
client).  Each one

* serves HTTP on 127.0.0.1 (``asyncio.start_server``): ``/hello`` answers with the
  configured greeting, ``/status`` tells whether this replica leads;
* follows its settings with ``etcd.config("settings/", model=Settings)``: a change
  written to etcd reaches every replica without a restart, as one typed ``Settings``;
* runs ``election.run(report, name, forever=True)``: only the leader runs ``report``,
  which writes a report every ``report_every_ms`` through the term's guarded txn, and
  is cancelled the moment its leadership is lost.

The example changes the greeting while both serve, then shuts the leading replica
down (``run()`` resigns as it is cancelled): the other one takes over the background
work and goes on serving.  Everything lives under a fresh run prefix, deleted at the
end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
import uuid
from typing import Any

from etcdsync import AsyncClient, AsyncTerm, Op
from etcdsync.testing import endpoint_or_embedded

started = time.monotonic()


def log(text: str) -> None:
    print(f"{time.monotonic() - started:5.2f}s  {text}", flush=True)


@dataclasses.dataclass(frozen=True)
class Settings:
    greeting: str = "hello"
    report_every_ms: int = 50


class Replica:
    """One replica of the service: an HTTP server, the live settings, the leader's job."""

    def __init__(self, endpoint: str, run_prefix: str, name: str) -> None:
        self.name = name
        self.client = AsyncClient(endpoint)
        self.space = self.client.namespace(run_prefix)  # this run's keys only
        self.config = self.space.config("settings/", model=Settings)
        self.election = self.space.election("leader", ttl=5)
        self.leading = False
        self.reports = 0
        self.reported = asyncio.Event()  # set by this replica's first report
        self.port = 0
        self._server: asyncio.Server | None = None
        self._campaign: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.config.start()  # the settings are loaded before the first request
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._campaign = asyncio.create_task(self._campaign_forever())
        log(f"{self.name} serves http://127.0.0.1:{self.port}/")

    async def _campaign_forever(self) -> None:
        await self.election.run(self._report, self.name, forever=True)

    async def _report(self, term: AsyncTerm) -> None:
        """The leader-only background work: cancelled as soon as the term is lost."""
        self.leading = True
        log(f"{self.name} leads (term {term.revision}) and starts reporting")
        try:
            while True:
                self.reports += 1
                key = f"reports/{term.revision}-{self.reports:04d}"
                # Applied only while this term lasts: a deposed leader writes nothing.
                await term.guarded_txn([Op.put(key, f"report by {self.name}")])
                self.reported.set()
                await asyncio.sleep(self.config.value.report_every_ms / 1000)
        finally:
            self.leading = False
            log(f"{self.name} stopped reporting after {self.reports} report(s)")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = (await reader.readline()).decode("latin-1").split()
            while (await reader.readline()).strip():
                pass  # the headers: nothing here needs them
            path = request[1] if len(request) > 1 else "/"
            status, body = self._route(path)
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    def _route(self, path: str) -> tuple[str, dict[str, Any]]:
        settings: Settings = self.config.value  # always the last good settings
        if path == "/hello":
            return "200 OK", {"message": f"{settings.greeting} from {self.name}"}
        if path == "/status":
            return "200 OK", {
                "replica": self.name,
                "leader": self.leading,
                "settings_revision": self.config.revision,
                "reports": self.reports,
            }
        return "404 Not Found", {"error": f"no route {path}"}

    async def stop(self) -> None:
        """Shut down: stop the background work (resigning), the server, the client."""
        if self._campaign is not None:
            self._campaign.cancel()  # run() resigns on the way out
            await asyncio.gather(self._campaign, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.config.stop()
        await self.client.close()
        log(f"{self.name} shut down")


async def fetch(port: int, path: str) -> dict[str, Any]:
    """GET ``path`` from a replica; the decoded JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    result: dict[str, Any] = json.loads(body)
    return result


async def main(endpoint: str) -> None:
    run_prefix = f"examples/web-service-async/{uuid.uuid4().hex[:8]}/"
    async with AsyncClient(endpoint) as admin:
        space = admin.namespace(run_prefix)
        await space.txn(
            [],
            [
                Op.put("settings/greeting", json.dumps("hello")),
                Op.put("settings/report_every_ms", json.dumps(50)),
            ],
        )
        replicas = [Replica(endpoint, run_prefix, f"replica-{i}") for i in range(2)]
        try:
            for replica in replicas:
                await replica.start()
            async with space.election("leader").observe() as observer:
                first = (await observer.get(timeout=20)).value.decode()
                for replica in replicas:
                    log(f"GET /hello  -> {(await fetch(replica.port, '/hello'))['message']}")

                # Hot reload: one write, every replica serves the new greeting.
                written = await space.put("settings/greeting", json.dumps("bonjour"))
                for replica in replicas:
                    await replica.config.wait_for_change(written.revision - 1, timeout=10)
                    log(f"GET /hello  -> {(await fetch(replica.port, '/hello'))['message']}")

                # The leader goes away; the other replica takes over the background work.
                leader = next(r for r in replicas if r.name == first)
                survivor = next(r for r in replicas if r is not leader)
                await asyncio.wait_for(leader.reported.wait(), 10)
                assert (await fetch(leader.port, "/status"))["leader"]
                assert not survivor.reported.is_set()  # only the leader did the work
                log(f"shutting {leader.name} down")
                await leader.stop()
                replicas.remove(leader)
                second = (await observer.get(timeout=20)).value.decode()
                assert second == survivor.name, second
                await asyncio.wait_for(survivor.reported.wait(), 10)
                status = await fetch(survivor.port, "/status")
                log(f"GET /status -> {status}")
                assert status["leader"] and status["reports"] > 0
            reports = await space.get("reports/", prefix=True, count_only=True)
            log(f"{reports.count} report(s) written, each by the leader of the moment")
        finally:
            for replica in replicas:
                await replica.stop()
            deleted = await space.delete("", prefix=True)
            log(f"cleaned up {deleted.deleted} key(s) under {run_prefix}")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(main(endpoint))
