"""The ``etcdsync`` command, run as a user runs it: subprocesses against a real etcd.

* ``lock``: concurrent processes doing read-sleep-write on a counter file never overlap
  and see increasing fencing tokens; the command's status, environment, signals and
  the loss of the lock are handled as documented;
* ``elect``: a killed leader is replaced within its TTL; ``--listen`` follows it;
* ``config get|watch`` print JSON snapshots with their revisions;
* ``server`` runs etcd in the foreground and stops it cleanly;
* usage errors exit 2 with a usage line, an unreachable etcd exits 1 with one line.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from etcdsync import Client, Op

CLI = [sys.executable, "-m", "etcdsync"]


def _env(endpoint: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDSYNC_")}
    if endpoint is not None:
        env["ETCDSYNC_ENDPOINTS"] = endpoint
    return env


def run_cli(
    *args: str, endpoint: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(endpoint),
        check=False,
    )


class Proc:
    """A long-running CLI process whose output lines are read by threads."""

    def __init__(self, args: Sequence[str], endpoint: str | None = None) -> None:
        self.proc = subprocess.Popen(
            [*CLI, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(endpoint),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()
        threading.Thread(target=self._pump_err, args=(self.proc.stderr,), daemon=True).start()

    def _pump(self, stream: Iterator[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _pump_err(self, stream: Iterator[str]) -> None:
        for line in stream:
            self.err.append(line.rstrip("\n"))

    def line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output within {timeout} s; stderr: {self.err}")
        if line is None:
            pytest.fail(f"exited with {self.proc.wait()} first; stderr: {self.err}")
        return line

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _dead_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- lock ---------------------------------------------------------------------------------


# Read the counter, sleep, write it back: without mutual exclusion, concurrent runs lose
# updates.  Each run logs "<fencing token> <value read>".
_INCREMENT = (
    'n=$(cat "$1"); sleep 0.05; echo $((n + 1)) > "$1"; echo "$ETCDSYNC_LOCK_REV $n" >> "$2"'
)


def test_concurrent_lock_processes_never_overlap(
    etcd_endpoint: str, prefix: str, tmp_path: Path
) -> None:
    counter, log = tmp_path / "counter", tmp_path / "log"
    counter.write_text("0\n")
    log.write_text("")
    workers, rounds = 4, 3
    lock = [*CLI, "lock", f"{prefix}files", "--ttl", "5", "--"]
    loop = f'for i in $(seq {rounds}); do "$@" sh -c \'{_INCREMENT}\' - "$C" "$L" || exit 1; done'
    env = {**_env(etcd_endpoint), "C": str(counter), "L": str(log)}
    shells = [subprocess.Popen(["sh", "-c", loop, "-", *lock], env=env) for _ in range(workers)]
    try:
        codes = [shell.wait(60) for shell in shells]
    finally:
        for shell in shells:
            if shell.poll() is None:
                shell.kill()
    assert codes == [0] * workers
    total = workers * rounds
    assert counter.read_text().strip() == str(total)
    runs = sorted(
        (int(n), int(rev)) for rev, n in (line.split() for line in log.read_text().splitlines())
    )
    # Every value was read by exactly one run, and the fencing tokens grow with it.
    assert [n for n, _ in runs] == list(range(total))
    tokens = [rev for _, rev in runs]
    assert tokens == sorted(set(tokens)), tokens
    with Client(etcd_endpoint) as etcd:
        assert etcd.get(f"{prefix}files/", prefix=True, count_only=True).count == 0


def test_lock_runs_the_command_with_the_key_and_token_and_returns_its_status(
    etcd_endpoint: str, prefix: str
) -> None:
    script = 'echo "$ETCDSYNC_LOCK_KEY $ETCDSYNC_LOCK_REV $ETCD_LOCK_KEY $ETCD_LOCK_REV"; exit 7'
    result = run_cli("lock", f"{prefix}job", "--", "sh", "-c", script, endpoint=etcd_endpoint)
    assert result.returncode == 7, result.stderr
    key, rev, ctl_key, ctl_rev = result.stdout.split()
    assert key.startswith(f"{prefix}job/") and (ctl_key, ctl_rev) == (key, rev)
    with Client(etcd_endpoint) as etcd:
        assert etcd.get(key).kv is None  # released
        assert int(rev) < etcd.get(key).revision


def test_lock_without_command_prints_the_key_and_releases_on_sigint(
    etcd_endpoint: str, prefix: str, procs: list[Proc]
) -> None:
    holder = Proc(["lock", f"{prefix}held"], etcd_endpoint)
    procs.append(holder)
    key = holder.line(timeout=15)
    with Client(etcd_endpoint) as etcd:
        assert key.startswith(f"{prefix}held/") and etcd.get(key).kv is not None
        holder.signal(signal.SIGINT)
        assert holder.wait(10) == 0
        assert etcd.get(key).kv is None


def test_lock_forwards_sigterm_to_the_command_then_releases(
    etcd_endpoint: str, prefix: str, procs: list[Proc], tmp_path: Path
) -> None:
    marker = tmp_path / "ready"
    script = f'trap "echo got-term; exit 5" TERM; touch {marker}; while :; do sleep 0.05; done'
    holder = Proc(["lock", f"{prefix}fwd", "--", "sh", "-c", script], etcd_endpoint)
    procs.append(holder)
    _wait_for(marker.exists, 15, "the command to start")
    holder.signal(signal.SIGTERM)
    assert holder.wait(10) == 5  # the command's own status
    assert holder.line(timeout=5) == "got-term"
    with Client(etcd_endpoint) as etcd:
        assert etcd.get(f"{prefix}fwd/", prefix=True, count_only=True).count == 0


def test_lock_lost_while_running_terminates_the_command(
    etcd_endpoint: str, prefix: str, procs: list[Proc], tmp_path: Path
) -> None:
    info = tmp_path / "info"
    script = f'echo "$$ $ETCDSYNC_LOCK_KEY" > {info}.tmp; mv {info}.tmp {info}; exec sleep 60'
    holder = Proc(["lock", f"{prefix}lost", "--ttl", "3", "--", "sh", "-c", script], etcd_endpoint)
    procs.append(holder)
    _wait_for(info.exists, 15, "the command to start")
    pid_text, key = info.read_text().split()
    with Client(etcd_endpoint) as etcd:
        # Revoking the session's lease takes the lock away, as an expiry would.
        etcd.revoke(int(key.rsplit("/", 1)[1], 16))
    revoked = time.monotonic()
    assert holder.wait(10) == 3
    assert time.monotonic() - revoked < 3 + 1.5  # noticed within the TTL
    assert any("lost" in line for line in holder.err), holder.err
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_text), 0)  # the command was terminated (and reaped)


def test_lock_timeout_exits_4_and_leaves_no_queued_key(etcd_endpoint: str, prefix: str) -> None:
    with Client(etcd_endpoint) as etcd:
        with etcd.lock(f"{prefix}busy", ttl=10):
            started = time.monotonic()
            result = run_cli(
                "lock", f"{prefix}busy", "--timeout", "0.5", "--", "true", endpoint=etcd_endpoint
            )
            assert result.returncode == 4, result.stderr
            assert "not acquired within 0.5 s" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
            assert time.monotonic() - started < 10
            assert etcd.get(f"{prefix}busy/", prefix=True, count_only=True).count == 1


def test_lock_interrupted_while_waiting_withdraws(
    etcd_endpoint: str, prefix: str, procs: list[Proc]
) -> None:
    with Client(etcd_endpoint) as etcd:
        with etcd.lock(f"{prefix}queue", ttl=10):
            waiter = Proc(["lock", f"{prefix}queue", "--", "true"], etcd_endpoint)
            procs.append(waiter)
            _wait_for(
                lambda: etcd.get(f"{prefix}queue/", prefix=True, count_only=True).count == 2,
                15,
                "the waiter to queue",
            )
            waiter.signal(signal.SIGTERM)
            assert waiter.wait(10) == 128 + signal.SIGTERM
            assert etcd.get(f"{prefix}queue/", prefix=True, count_only=True).count == 1, waiter.err


# --- elect --------------------------------------------------------------------------------


def test_elect_hands_over_when_the_leader_is_killed(
    etcd_endpoint: str, prefix: str, procs: list[Proc]
) -> None:
    name = f"{prefix}election"
    listener = Proc(["elect", name, "--listen"], etcd_endpoint)
    first = Proc(["elect", name, "alpha", "--ttl", "2"], etcd_endpoint)
    procs += [listener, first]
    assert first.line(timeout=15).startswith("elected alpha ")
    second = Proc(["elect", name, "beta", "--ttl", "2"], etcd_endpoint)
    procs.append(second)
    with Client(etcd_endpoint) as etcd:
        _wait_for(
            lambda: etcd.get(f"{name}/", prefix=True, count_only=True).count == 2,
            15,
            "the second candidate",
        )
    first.proc.kill()
    killed = time.monotonic()
    assert second.line(timeout=10).startswith("elected beta ")
    assert time.monotonic() - killed < 2 + 1.5
    seen: list[list[str]] = []
    while len(seen) < 2:
        line = listener.line(timeout=10)
        if line != "no leader":
            seen.append(line.split()[:2])
    assert seen == [["leader", "alpha"], ["leader", "beta"]]
    # SIGTERM resigns at once: the listener learns of it without waiting for a TTL.
    second.signal(signal.SIGTERM)
    assert second.wait(10) == 0
    assert any("resigned" in line for line in second.err)
    listener.signal(signal.SIGINT)
    assert listener.wait(10) == 0


# --- config -------------------------------------------------------------------------------


def test_config_get_and_watch_print_snapshots_with_revisions(
    etcd_endpoint: str, prefix: str, procs: list[Proc]
) -> None:
    with Client(etcd_endpoint) as etcd:
        etcd.put(f"{prefix}cfg/port", "8080")
        written = etcd.put(f"{prefix}cfg/color", '"blue"').revision  # JSON, as decoded by default
        result = run_cli("config", "get", f"{prefix}cfg/", endpoint=etcd_endpoint)
        assert result.returncode == 0, result.stderr
        snapshot = json.loads(result.stdout)
        assert snapshot["values"] == {"port": 8080, "color": "blue"}
        assert snapshot["revision"] >= written

        watcher = Proc(["config", "watch", f"{prefix}cfg/"], etcd_endpoint)
        procs.append(watcher)
        assert json.loads(watcher.line(timeout=15))["values"] == {"port": 8080, "color": "blue"}
        changed = etcd.txn(
            [], [Op.put(f"{prefix}cfg/port", "9090"), Op.delete(f"{prefix}cfg/color")]
        ).revision
        update = json.loads(watcher.line(timeout=10))
        assert update == {"revision": changed, "values": {"port": 9090}}
        watcher.signal(signal.SIGTERM)
        assert watcher.wait(10) == 0

    strict = run_cli(
        "config", "get", f"{prefix}cfg-bad/", "--decode", "json", endpoint=etcd_endpoint
    )
    assert strict.returncode == 0 and json.loads(strict.stdout)["values"] == {}


# --- server -------------------------------------------------------------------------------


def test_server_runs_in_the_foreground_and_stops_on_sigterm(
    procs: list[Proc], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = Proc(["server", "--port", "0", "--data-dir", str(data)])
    procs.append(server)
    assert server.line(timeout=30).startswith("etcd ")
    exported = server.line(timeout=5)
    assert exported.startswith("export ETCDSYNC_ENDPOINTS=127.0.0.1:")
    endpoint = exported.split("=", 1)[1]
    with Client(endpoint) as etcd:
        etcd.put("kept", "yes")
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(tuple(endpoint.split(":")), timeout=2)  # type: ignore[arg-type]
    # The same directory brings the data back.
    again = Proc(["server", "--port", "0", "--data-dir", str(data)])
    procs.append(again)
    again.line(timeout=30)
    endpoint = again.line(timeout=5).split("=", 1)[1]
    with Client(endpoint) as etcd:
        assert etcd.get("kept").value == b"yes"
    again.signal(signal.SIGINT)
    assert again.wait(15) == 0


def test_server_runs_a_cluster(procs: list[Proc]) -> None:
    server = Proc(["server", "--members", "3", "--port", "0"])
    procs.append(server)
    server.line(timeout=30)
    endpoints = server.line(timeout=5).split("=", 1)[1].split(",")
    assert len(endpoints) == 3
    with Client(endpoints[0]) as one, Client(endpoints[2]) as three:
        one.put("k", "v")
        assert three.get("k").value == b"v"
        assert len(one.member_list()) == 3
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        [],
        ["lock"],
        ["lock", "name", "--ttl", "soon"],
        ["elect", "name"],
        ["elect", "name", "proposal", "--listen"],
        ["config", "get"],
        ["demo", "--workers", "1"],
        ["--endpoints", "not-an-endpoint", "config", "get", "x"],
    ],
)
def test_usage_errors_exit_2_with_a_usage_line(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result
    assert result.stderr.startswith("usage: etcdsync"), result.stderr
    assert "error:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "args"),
    [
        ("ETCDSYNC_PASSWORD", ["--user", "root", "config", "get", "x"]),
        ("ETCDSYNC_ENDPOINTS", ["config", "get", "x"]),
    ],
)
def test_undecodable_environment_exits_2_naming_the_variable(
    variable: str, args: list[str]
) -> None:
    env = {os.fsencode(k): os.fsencode(v) for k, v in _env().items()}
    env[variable.encode()] = b"secret-\xff\xfe"  # not UTF-8
    result = subprocess.run([*CLI, *args], capture_output=True, env=env, timeout=30, check=False)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr
    assert variable in stderr and "is not valid UTF-8 text" in stderr, stderr
    assert "Traceback" not in stderr and "secret" not in stderr  # nor the value itself


@pytest.mark.parametrize(
    "args",
    [
        ["config", "get", "x"],
        ["lock", "x", "--", "true"],
        ["elect", "x", "me"],
        ["elect", "x", "--listen"],
    ],
)
def test_unreachable_etcd_exits_1_with_one_line(args: list[str]) -> None:
    endpoint = f"127.0.0.1:{_dead_port()}"
    started = time.monotonic()
    result = run_cli("--timeout", "2", "--endpoints", endpoint, *args, timeout=20)
    assert result.returncode == 1, result
    assert time.monotonic() - started < 2 + 5  # the deadline, plus interpreter start-up
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("etcdsync: error: "), result.stderr
    assert endpoint in lines[0]


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("etcdsync ")
