"""``etcdsync services list|watch``, run as a user runs them: subprocesses on real etcd."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest
from test_cli import Proc, run_cli

from etcdsync import Client


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


def test_services_list_and_watch(etcd_endpoint: str, prefix: str, procs: list[Proc]) -> None:
    namespace = f"{prefix}svc"
    with Client(etcd_endpoint) as etcd:
        services = etcd.services(namespace, ttl=10)
        services.register("api", "a1", "10.0.0.1", 8080, payload={"zone": "x"})
        services.register("db", "main", "10.0.0.9", 5432)
        listed = run_cli("services", "list", namespace, "api", endpoint=etcd_endpoint)
        assert listed.returncode == 0, listed.stderr
        (line,) = listed.stdout.splitlines()
        record = json.loads(line)
        assert (record["name"], record["id"], record["addr"], record["payload"]) == (
            "api",
            "a1",
            "10.0.0.1:8080",
            {"zone": "x"},
        )
        everything = run_cli("services", "list", namespace, endpoint=etcd_endpoint)
        assert [json.loads(x)["id"] for x in everything.stdout.splitlines()] == ["a1", "main"]
        empty = run_cli("services", "list", namespace, "nothing", endpoint=etcd_endpoint)
        assert empty.returncode == 0 and empty.stdout == ""

        watcher = Proc(["services", "watch", namespace, "api"], etcd_endpoint)
        procs.append(watcher)
        first = json.loads(watcher.line(20))
        assert (first["event"], first["instance"]["id"], first["initial"]) == ("added", "a1", True)
        second = services.register("api", "a2", "10.0.0.2", 8080)
        added = json.loads(watcher.line(10))
        assert (added["event"], added["instance"]["id"]) == ("added", "a2")
        assert second.instance is not None
        assert added["revision"] == second.instance.create_revision
        second.deregister()
        removed = json.loads(watcher.line(10))
        assert (removed["event"], removed["instance"]["id"]) == ("removed", "a2")
        watcher.signal(signal.SIGINT)
        assert watcher.wait(10) == 0
        services.close()
