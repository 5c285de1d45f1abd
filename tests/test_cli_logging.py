"""The ``etcdsync`` command says each thing once, and helps with ``--`` (issue 16, item 3).

* ``elect``: a lost leadership is one line (``etcdsync: error: leadership of 'x' lost:
  session ended``), not the library's warning plus a doubled message;
* ``lock``: a lock lost while COMMAND runs is one line too;
* ``lock NAME COMMAND`` (``--`` forgotten) fails with the lock's usage and a hint;
* ``lock NAME --`` with nothing after it is refused instead of holding the lock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli import Proc, _wait_for, run_cli

from etcdsync import Client


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


def test_lock_command_without_dashdash_gets_a_hint() -> None:
    result = run_cli("lock", "x", "true")
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("usage: etcdsync lock NAME"), result.stderr
    assert "unrecognized arguments: true" in lines[-1], result.stderr
    assert "goes after `--`" in lines[-1], result.stderr


def test_lock_with_nothing_after_dashdash_is_refused(etcd_endpoint: str, prefix: str) -> None:
    started = time.monotonic()
    result = run_cli("lock", f"{prefix}empty", "--", endpoint=etcd_endpoint, timeout=20)
    assert result.returncode == 2, result
    assert result.stderr.startswith("usage: etcdsync lock NAME"), result.stderr
    assert "nothing after `--`" in result.stderr
    assert time.monotonic() - started < 20  # refused, not held until interrupted
    with Client(etcd_endpoint) as etcd:
        assert etcd.get(f"{prefix}empty/", prefix=True, count_only=True).count == 0


def test_elect_prints_a_lost_leadership_once(
    etcd_endpoint: str,
    prefix: str,
    procs: list[Proc],
) -> None:
    name = f"{prefix}e1"
    leader = Proc(["elect", name, "me", "--ttl", "5"], etcd_endpoint)
    procs.append(leader)
    assert leader.line(timeout=15).startswith("elected me ")
    with Client(etcd_endpoint) as etcd:
        [kv] = etcd.get(f"{name}/", prefix=True).kvs
        etcd.revoke(kv.lease)  # as an expiry would
    assert leader.wait(10) == 3
    # The error is the last line written: once it is read, every line before it is too.
    _wait_for(lambda: any("error:" in line for line in leader.err), 5, "the error line")
    lost = [line for line in leader.err if "lost" in line.replace(name, "")]
    assert lost == [f"etcdsync: error: leadership of '{name}' lost: session ended"], leader.err


def test_lock_prints_a_lost_lock_once(
    etcd_endpoint: str,
    prefix: str,
    procs: list[Proc],
    tmp_path: Path,
) -> None:
    info = tmp_path / "info"
    script = f'echo "$ETCDSYNC_LOCK_KEY" > {info}.tmp; mv {info}.tmp {info}; exec sleep 60'
    holder = Proc(["lock", f"{prefix}l", "--ttl", "5", "--", "sh", "-c", script], etcd_endpoint)
    procs.append(holder)
    _wait_for(info.exists, 15, "the command to start")
    key = info.read_text().strip()
    with Client(etcd_endpoint) as etcd:
        etcd.revoke(int(key.rsplit("/", 1)[1], 16))
    assert holder.wait(15) == 3
    _wait_for(lambda: any("error:" in line for line in holder.err), 5, "the error line")
    lost = [line for line in holder.err if "lost" in line.replace(prefix, "")]
    assert len(lost) == 1 and lost[0].startswith("etcdsync: error: lock "), holder.err


def test_a_refused_lock_prints_one_line(etcd_server_factory: Any) -> None:
    server = etcd_server_factory()
    with Client(server.endpoint, timeout=5) as admin:
        admin.user_add("root", "rootpw")
        admin.user_grant_role("root", "root")
        admin.role_add("reader")
        admin.role_grant_permission("reader", "locks/", prefix=True, permission="read")
        admin.user_add("alice", "alicepw")
        admin.user_grant_role("alice", "reader")
        admin.auth_enable()
    result = run_cli(
        "--user", "alice", "--password", "alicepw", "lock", "locks/job", "--", "true",
        endpoint=server.endpoint,
    )  # fmt: skip
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("etcdsync: error: "), result.stderr
    assert "permission denied" in lines[0]
