"""The ``etcdsync`` command's waits end within their bounds, and ``elect --listen``
reports vacancy.

* ``elect NAME --listen`` prints ``no leader`` when the leader resigns with no
  successor (the observer's vacancy);
* ``lock --timeout 2`` against a silent (blackholed) endpoint exits 4 within its
  timeout plus the interpreter's start and a small bound - the creation of the session
  it needs included;
* ``lock`` whose lock is lost (the endpoint went silent past the TTL) terminates its
  command and exits 3 soon after: releasing a lock whose session has ended makes no
  request, and closing the client revokes nothing that is already gone.
"""

from __future__ import annotations

import signal
import time

from test_cli import Proc, run_cli

from etcdsync import Client
from etcdsync.testing.proxy import FaultProxy

# What starting a Python interpreter and importing etcdsync (grpc, protobuf) costs
# here, on a machine shared with other test runs.
STARTUP = 3.0


def test_elect_listen_prints_vacancy(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}election"
    listener = Proc(["elect", name, "--listen"], etcd_endpoint)
    try:
        assert listener.line(timeout=15) == "no leader"  # nobody leads yet
        with Client(etcd_endpoint) as etcd:
            election = etcd.election(name, ttl=5)
            election.campaign("alpha", timeout=5)
            assert listener.line(timeout=10).split()[:2] == ["leader", "alpha"]
            election.resign()  # no successor
            assert listener.line(timeout=10) == "no leader"
            election.campaign("beta", timeout=5)
            assert listener.line(timeout=10).split()[:2] == ["leader", "beta"]
            election.resign()
            assert listener.line(timeout=10) == "no leader"
        listener.signal(signal.SIGINT)
        assert listener.wait(10) == 0
    finally:
        listener.stop()


def test_lock_timeout_bounds_the_whole_wait_on_a_silent_endpoint(
    etcd_endpoint: str, prefix: str
) -> None:
    with FaultProxy(etcd_endpoint) as proxy:
        proxy.blackhole()
        started = time.monotonic()
        done = run_cli(
            "lock", f"{prefix}job", "--timeout", "2", "--", "true", endpoint=proxy.endpoint
        )
        took = time.monotonic() - started
    assert done.returncode == 4, done.stderr
    assert "not acquired within 2 s" in done.stderr
    assert took < 2 + 0.5 + STARTUP, f"took {took:.1f} s"


def test_lock_exits_soon_after_the_lock_is_lost(etcd_endpoint: str, prefix: str) -> None:
    ttl = 2
    with FaultProxy(etcd_endpoint) as proxy:
        holder = Proc(
            [
                "lock",
                f"{prefix}job",
                "--ttl",
                str(ttl),
                "--",
                "sh",
                "-c",
                "echo started; exec sleep 60",
            ],
            proxy.endpoint,
        )
        try:
            assert holder.line(timeout=15) == "started"
            proxy.blackhole()
            silent = time.monotonic()
            status = holder.wait(ttl + 10)
            took = time.monotonic() - silent
            assert status == 3, holder.err
            assert any("lost" in line for line in holder.err)
            # The keepalive declares the lease lost within the TTL; then the command is
            # terminated, the release makes no request and the client closes at once.
            assert took < ttl + 1.5, f"exited {took:.1f} s after the endpoint went silent"
        finally:
            holder.stop()
