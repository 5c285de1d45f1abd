"""Service discovery across real processes (sync client).

Three processes each register one instance of ``api`` with a TTL of 2 s.  A client
in the test process sees all three and visits each once per round-robin round.  One
process is killed with SIGKILL: its instance leaves ``instances()`` within TTL + 1 s,
with nobody's help but its lease's expiry.  The lease of another is revoked from the
test process: that process reports the loss, registers again through a fresh
session (a new lease) and reports it; the watch sees the instance go and come back.
Round-robin then visits each live instance once per round.

The worker processes run this very file: ``python test_services_processes.py ...``.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from etcdsync import CacheEventType, Client, RegistrationEvent, errors

THIS = str(Path(__file__).resolve())
TTL = 2
ADDED, REMOVED = CacheEventType.ADDED, CacheEventType.REMOVED
MARK = ">> "  # the workers' reports; other lines are their logs


def _instance(endpoint: str, namespace: str, instance_id: str, port: int) -> int:
    """Register ``instance_id`` (TTL 2 s), report registration events, deregister
    when told (or die when killed)."""
    with Client(endpoint) as etcd:
        services = etcd.services(namespace, ttl=TTL)
        registration = services.register(
            "api", instance_id, "127.0.0.1", port, payload={"pid": "self"}
        )

        def report(event: RegistrationEvent) -> None:
            print(f"{MARK}{event.type.value} {event.instance.lease:x}", flush=True)

        registration.add_listener(report)
        assert registration.instance is not None
        print(f"{MARK}registered {registration.instance.lease:x}", flush=True)
        sys.stdin.readline()
        registration.deregister()
        print(f"{MARK}deregistered", flush=True)
    return 0


class _Worker:
    def __init__(self, endpoint: str, namespace: str, instance_id: str, port: int) -> None:
        self.id = instance_id
        self.proc = subprocess.Popen(
            [sys.executable, THIS, endpoint, namespace, instance_id, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.logs: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(MARK):
                self.lines.put(line[len(MARK) :].rstrip("\n"))
            else:
                self.logs.append(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float) -> str:
        """The next report of the worker (its log lines are kept in ``logs``)."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"{self.id}: no report within {timeout} s; logs: {self.logs}")
        if line is None:
            pytest.fail(f"{self.id} ended (rc={self.proc.wait()}); logs: {self.logs}")
        return line

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def test_killed_instance_leaves_revoked_one_comes_back(etcd_endpoint: str, prefix: str) -> None:
    namespace = prefix + "svc"
    with Client(etcd_endpoint) as etcd:
        services = etcd.services(namespace)
        watch = services.watch("api", include_existing=False)
        watch.start(timeout=10)
        workers = [_Worker(etcd_endpoint, namespace, f"i{n}", 9000 + n) for n in range(3)]
        try:
            leases = {}
            for worker in workers:
                word, lease = worker.line(20).split()
                assert word == "registered"
                leases[worker.id] = int(lease, 16)
            added = [watch.get(10) for _ in range(3)]
            assert sorted(e.instance.id for e in added if e.instance) == ["i0", "i1", "i2"]
            live = services.instances("api")
            assert sorted(i.id for i in live) == ["i0", "i1", "i2"]
            assert all(i.payload == {"pid": "self"} and i.port == 9000 + int(i.id[1]) for i in live)
            first_round = [services.choose("api").id for _ in range(3)]
            assert sorted(first_round) == ["i0", "i1", "i2"]

            # SIGKILL: the instance goes with its lease, within TTL + 1 s.
            victim, revoked, survivor = workers
            victim.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            gone = watch.get(TTL + 5)
            gone_after = time.monotonic() - killed_at
            assert (gone.type, gone.instance and gone.instance.id) == (REMOVED, "i0")
            assert gone_after <= TTL + 1, f"listed {gone_after:.2f} s after the SIGKILL"
            assert sorted(i.id for i in services.instances("api")) == ["i1", "i2"]
            with pytest.raises(errors.LeaseNotFoundError):
                etcd.time_to_live(leases["i0"])

            # A revoked session: the process registers again through a new lease.
            etcd.revoke(leases["i1"])
            assert revoked.line(10).split() == ["lost", f"{leases['i1']:x}"]
            word, new_lease = revoked.line(10).split()
            assert word == "reregistered" and int(new_lease, 16) != leases["i1"]
            went, came = watch.get(10), watch.get(10)
            assert (went.type, went.instance and went.instance.id) == (REMOVED, "i1")
            assert (came.type, came.instance and came.instance.id) == (ADDED, "i1")
            assert came.instance is not None and came.instance.lease == int(new_lease, 16)

            # Round-robin visits each live instance once per round.
            live_ids = sorted(i.id for i in services.instances("api"))
            assert live_ids == ["i1", "i2"]
            for _ in range(3):
                assert sorted(services.choose("api").id for _ in live_ids) == live_ids

            for worker in (revoked, survivor):
                worker.send("quit\n")
                assert worker.line(10) == "deregistered"
            left = sorted(
                (e.type, e.instance and e.instance.id) for e in (watch.get(10), watch.get(10))
            )
            assert left == [(REMOVED, "i1"), (REMOVED, "i2")]
            assert services.instances("api") == []
            with pytest.raises(errors.ServiceTimeout):
                watch.get(0.3)
        finally:
            for worker in workers:
                worker.kill()
            watch.cancel()
            services.close()
    print(f"\nservice instance SIGKILLed with TTL {TTL} s: gone after {gone_after:.2f} s")


def _main(argv: Sequence[str]) -> int:
    endpoint, namespace, instance_id, port = argv
    return _instance(endpoint, namespace, instance_id, int(port))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
