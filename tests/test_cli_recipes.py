"""``etcdsync queue|barrier|counter``, run as a user runs them: subprocesses on real etcd."""

from __future__ import annotations

import subprocess

from test_cli import CLI, _env, run_cli

from etcdsync import Client


def test_queue_put_take_fifo_priority_and_timeout(etcd_endpoint: str, prefix: str) -> None:
    name, urgent = f"{prefix}jobs", f"{prefix}urgent"
    for value in ("first", "second"):
        assert run_cli("queue", "put", name, value, endpoint=etcd_endpoint).returncode == 0
    assert run_cli("queue", "size", name, endpoint=etcd_endpoint).stdout.strip() == "2"
    taken = [run_cli("queue", "take", name, endpoint=etcd_endpoint).stdout for _ in range(2)]
    assert taken == ["first\n", "second\n"]
    empty = run_cli("queue", "take", name, "--timeout", "0.5", endpoint=etcd_endpoint)
    assert empty.returncode == 4 and empty.stdout == ""
    assert "empty" in empty.stderr

    for value, priority in (("routine", "10"), ("now", "0")):
        put = run_cli("queue", "put", urgent, value, "--priority", priority, endpoint=etcd_endpoint)
        assert put.returncode == 0, put.stderr
    first = run_cli("queue", "take", urgent, "--priority", endpoint=etcd_endpoint)
    assert first.stdout == "now\n"
    # The library sees what the command put (one layout for both).
    with Client(etcd_endpoint) as etcd:
        assert etcd.priority_queue(urgent).get(timeout=5).value == b"routine"


def test_barrier_wait_blocks_until_release(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}deploy"
    assert run_cli("barrier", "hold", name, endpoint=etcd_endpoint).stdout == "held\n"
    waiter = subprocess.Popen(
        [*CLI, "barrier", "wait", name, "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(etcd_endpoint),
    )
    try:
        with Client(etcd_endpoint) as etcd:
            # The waiter has not passed while the barrier is up: it is still running
            # once a later write (made after it started) is committed.
            assert etcd.barrier(name).is_up()
            assert waiter.poll() is None
            released = run_cli("barrier", "release", name, endpoint=etcd_endpoint)
            assert released.stdout == "released\n"
            out, _ = waiter.communicate(timeout=30)
            assert waiter.returncode == 0
            assert out.startswith("released at revision ")
            assert not etcd.barrier(name).is_up()
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait(10)
    timed_out = run_cli("barrier", "hold", name, endpoint=etcd_endpoint)
    assert timed_out.returncode == 0
    still = run_cli("barrier", "wait", name, "--timeout", "0.5", endpoint=etcd_endpoint)
    assert still.returncode == 4
    run_cli("barrier", "release", name, endpoint=etcd_endpoint)


def test_counter_add_and_get(etcd_endpoint: str, prefix: str) -> None:
    name = f"{prefix}visits"
    assert run_cli("counter", "get", name, endpoint=etcd_endpoint).stdout == "0\n"
    assert run_cli("counter", "add", name, "5", endpoint=etcd_endpoint).stdout == "5\n"
    assert run_cli("counter", "add", name, "-2", endpoint=etcd_endpoint).stdout == "3\n"
    with Client(etcd_endpoint) as etcd:
        assert etcd.counter(name).value() == 3
