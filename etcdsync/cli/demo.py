"""``etcdsync demo``: worker processes coordinating through etcd, a failover, a self-check.

The demo starts an embedded etcd (unless ``--endpoints`` is given) and N worker
processes (``etcdsync demo-worker``, see ``_demo_worker``).  They elect a leader, take
turns incrementing a shared counter under a lock (each write guarded by the fencing
token), and follow a config prefix that the demo changes while they run.  A third of
the way in, the demo SIGKILLs the leader - preferably while it holds the lock - and
the others take over once its session lease expires.

Every second a status line shows who leads, who holds the lock and how many wait,
the counter, and the config version each worker runs.  At the end the demo checks
itself against etcd's own history (see ``_demo_check``) and exits 0 only if every
check passes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import IO, Any

from .. import Client, Op, errors
from ..testing import EtcdNotFound, EtcdServer, EtcdStartError
from . import _demo_worker
from ._common import (
    ENV_PASSWORD,
    EXIT_ERROR,
    EXIT_OK,
    CliError,
    Interrupted,
    UsageError,
    add_connection_options,
    emit,
    interrupts_raise,
    one_line,
    open_client,
    positive_int,
    seconds,
)
from ._demo_check import (
    COUNTER,
    ELECTION,
    END,
    LOCK,
    Change,
    Check,
    WorkerLog,
    check_config,
    check_counter,
    check_fencing,
    check_leadership,
    check_workers,
    work_ms_for,
)

__all__ = ["register", "register_worker", "run"]

DEFAULT_WORKERS = 4
MAX_WORKERS = 16
DEFAULT_DURATION = 20.0
MIN_DURATION = 8.0
DEFAULT_TTL = 2
CONFIG_VERSIONS = 4

_TICK = 1.0
_STARTUP_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
_END_TIMEOUT = 10.0
# How long the demo waits for the leader to hold the lock too before killing it.
_KILL_WAIT = 1.5
# When (as a fraction of --duration) the demo does what.
_PLAN = ((0.20, "config"), (0.35, "kill"), (0.55, "config"), (0.75, "config"))


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "demo",
        help="see workers share a lock, elect a leader and follow config, with a failover",
        description="Start an embedded etcd (unless --endpoints is given) and worker "
        "processes that elect a leader, increment a shared counter under a fenced lock "
        "and follow a config that changes while they run; kill the leader mid-run; "
        "show it live; check the outcome against etcd's history (exit 0 if it holds).",
    )
    sub.add_argument(
        "--workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"worker processes, 2 to {MAX_WORKERS} (default {DEFAULT_WORKERS})",
    )
    sub.add_argument(
        "--duration",
        type=seconds,
        default=DEFAULT_DURATION,
        metavar="S",
        help=f"seconds the workers run, at least {MIN_DURATION:g} (default {DEFAULT_DURATION:g})",
    )
    sub.add_argument(
        "--ttl",
        type=positive_int,
        default=DEFAULT_TTL,
        metavar="S",
        help=f"the workers' session TTL: how long a dead leader keeps its place "
        f"(default {DEFAULT_TTL})",
    )
    add_connection_options(sub)
    sub.set_defaults(run=run, subparser=sub)


def register_worker(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _demo_worker.register(commands)


class _Worker:
    """A worker process and the threads reading its output."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], inbox: queue.Queue[Any]):
        self.name = name
        self.log = WorkerLog(name)
        self.stderr: collections.deque[str] = collections.deque(maxlen=20)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            # Its own session: a Ctrl-C at the terminal reaches the demo alone, which
            # then stops the workers itself.
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._read, args=(self.proc.stdout, inbox), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), daemon=True).start()

    def _read(self, stream: IO[str], inbox: queue.Queue[Any]) -> None:
        for line in stream:
            try:
                report = json.loads(line)
            except ValueError:
                self.stderr.append(line.rstrip())
                continue
            inbox.put(("report", self, report))
        inbox.put(("exit", self, self.proc.wait()))

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr.append(line.rstrip())

    def stop(self) -> None:
        """Ask for a clean stop (release, resign, report)."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        except OSError:
            pass  # it is gone already

    def kill(self) -> None:
        self.proc.kill()  # Popen never signals a process it has reaped


class _Demo:
    def __init__(self, args: argparse.Namespace, client: Client, endpoints: str) -> None:
        self.args = args
        self.client = client
        self.endpoints = endpoints
        self.prefix = f"etcdsync-demo/{uuid.uuid4().hex[:8]}/"
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.started = time.monotonic()
        self.next_tick = self.started + _TICK
        self.workers: list[_Worker] = []
        self.changes: list[Change] = []
        self.live: dict[str, Change] = {}  # the prefix as etcd has it now
        self.version = 0
        self.announced: set[int] = set()
        self.killed: _Worker | None = None
        self.killed_at = 0.0
        self.killed_lock_token = 0
        self.lock_taken_over = False
        self.failover_after: float | None = None
        self.successor = ""
        self.ended = False
        self.watcher: Any = None

    # --- output -------------------------------------------------------------------------

    def say(self, text: str) -> None:
        emit(f"{time.monotonic() - self.started:6.1f}s  {text}")

    def _holder(self, prefix: str) -> Change | None:
        keys = [c for k, c in self.live.items() if k.startswith(prefix)]
        return min(keys, key=lambda c: c.create_revision, default=None)

    def _owner(self, lease: int) -> str:
        for worker in self.workers:
            if lease in worker.log.leases:
                return worker.name
        return f"lease {lease:x}"

    def leader(self) -> str | None:
        held = self._holder(ELECTION + "/")
        return held.value if held is not None else None

    def lock_holder(self) -> tuple[str | None, int, int]:
        """(holder, its fencing token, how many wait) as etcd has it now."""
        keys = [c for k, c in self.live.items() if k.startswith(LOCK + "/")]
        if not keys:
            return None, 0, 0
        first = min(keys, key=lambda c: c.create_revision)
        return self._owner(first.lease), first.create_revision, len(keys) - 1

    def _dead(self, name: str | None) -> str:
        if name is None:
            return "(none)"
        return f"{name}(dead)" if self.killed is not None and self.killed.name == name else name

    def status(self) -> None:
        leader = self._dead(self.leader())
        holder, _, waiting = self.lock_holder()
        lock = f"{self._dead(holder)} +{waiting} waiting" if holder else "free"
        counter = self.live.get(COUNTER)
        seen = " ".join(
            f"{w.name}:{'killed' if w.log.killed else _version(w.log)}" for w in self.workers
        )
        self.say(
            f"| leader {leader:<8} | lock {lock:<19} | counter "
            f"{counter.value if counter else 0:>4} | config {seen}"
        )

    # --- events -------------------------------------------------------------------------

    def pump(self, until: Callable[[], bool], timeout: float) -> bool:
        """Handle reports and etcd events, printing a status line every second, until
        ``until()`` or ``timeout`` seconds passed; returns ``until()``."""
        deadline = time.monotonic() + timeout
        while not until():
            now = time.monotonic()
            if now >= self.next_tick:
                self.status()
                self.next_tick += _TICK * (1 + int((now - self.next_tick) / _TICK))
            if now >= deadline:
                return until()
            try:
                item = self.inbox.get(timeout=min(self.next_tick, deadline) - now)
            except queue.Empty:
                continue
            self.handle(*item)
        return True

    def sleep(self, seconds: float) -> None:
        self.pump(lambda: False, seconds)

    def handle(self, kind: str, source: Any, payload: Any) -> None:
        if kind == "etcd":
            self.on_changes(payload)
        elif kind == "watch-error":
            raise CliError(f"the demo's watch failed: {one_line(payload)}")
        elif kind == "report":
            self.on_report(source, payload)
        elif kind == "exit":
            self.on_exit(source, payload)

    def on_changes(self, changes: list[Change]) -> None:
        for change in changes:
            self.changes.append(change)
            if change.deleted:
                self.live.pop(change.key, None)
            else:
                self.live[change.key] = change
            if change.key == END:
                self.ended = True
        if self.killed is not None and not self.lock_taken_over:
            holder, token, _ = self.lock_holder()
            if holder is not None and token > self.killed_lock_token:
                self.lock_taken_over = True
                self.say(
                    f"  lock: {holder} took over {time.monotonic() - self.killed_at:.1f} s "
                    f"after the kill (fencing token {token})"
                )

    def on_report(self, worker: _Worker, report: dict[str, Any]) -> None:
        log = worker.log
        log.apply(report)
        event = report.get("event")
        if event == "ready":
            self.say(f"  {worker.name} started (pid {log.pid})")
        elif event == "elected":
            after = ""
            if self.killed is not None and self.failover_after is None:
                self.failover_after = time.monotonic() - self.killed_at
                self.successor = worker.name
                after = f", {self.failover_after:.1f} s after the kill"
            self.say(f"  {worker.name} elected leader (term {report['term']}){after}")
        elif event == "lost":
            self.say(f"  {worker.name} lost the leadership: {report.get('reason')}")
        elif event == "resigned":
            self.say(f"  {worker.name} resigned")
        elif event == "inc-rejected":
            self.say(
                f"  {worker.name}: write of {report['value']} refused by etcd - its lock "
                "was lost (fencing at work)"
            )
        elif event == "inc-unknown":
            self.say(f"  {worker.name}: write of {report['value']} has an unknown outcome")
        elif event == "inc-conflict":
            self.say(f"  {worker.name}: !! value {report['value']} was already written")
        elif event == "error":
            self.say(f"  {worker.name}: {report.get('message')}")
        elif event == "config":
            self._config_seen(int(report["version"]))
        elif event == "bye":
            self.say(f"  {worker.name} stopped ({report['acked']} increments acknowledged)")

    def _config_seen(self, version: int) -> None:
        alive = [w for w in self.workers if not w.log.killed]
        if version in self.announced or not all(version in w.log.versions_seen for w in alive):
            return
        self.announced.add(version)
        self.say(f"  all {len(alive)} live workers run config v{version}")

    def on_exit(self, worker: _Worker, code: int) -> None:
        worker.log.exit_code = code
        if worker.log.killed:
            return
        if code != 0 or not worker.log.said_bye:
            self.say(f"  {worker.name} exited unexpectedly (code {code})")
            for line in list(worker.stderr)[-5:]:
                self.say(f"    {worker.name}: {line}")

    # --- etcd ---------------------------------------------------------------------------

    def watch(self, start: int) -> None:
        """Mirror the run's prefix: every change etcd makes, in revision order."""
        self.watcher = self.client.watch(self.prefix, prefix=True, start_revision=start)
        threading.Thread(target=self._follow, args=(self.watcher,), daemon=True).start()

    def _follow(self, watcher: Any) -> None:
        cut = len(self.prefix)
        try:
            for batch in watcher:
                self.inbox.put(
                    (
                        "etcd",
                        None,
                        [
                            Change(
                                e.revision,
                                e.key[cut:].decode(),
                                e.value.decode(),
                                e.kv.create_revision,
                                e.kv.lease,
                                e.type.name == "DELETE",
                            )
                            for e in batch.events
                        ],
                    )
                )
        except errors.EtcdError as exc:
            if not self.ended:
                self.inbox.put(("watch-error", None, exc))

    def publish_config(self) -> None:
        self.version += 1
        work_ms = work_ms_for(self.version)
        base = self.prefix + "config/"
        # One txn: a watcher sees both keys change together, never one without the other.
        response = self.client.txn(
            [],
            [
                Op.put(base + "version", json.dumps(self.version)),
                Op.put(base + "work_ms", json.dumps(work_ms)),
            ],
        )
        self.say(
            f"demo: config v{self.version} published (work_ms={work_ms}) "
            f"at revision {response.revision}"
        )

    # --- the run ------------------------------------------------------------------------

    def spawn(self) -> None:
        argv = [sys.executable, "-m", "etcdsync", "demo-worker", "--endpoints", self.endpoints]
        args = self.args
        for flag, value in (
            ("--cacert", args.cacert),
            ("--cert", args.cert),
            ("--key", args.key),
            ("--server-name", args.server_name),
            ("--user", args.user),
        ):
            if value:
                argv += [flag, value]
        env = dict(os.environ)
        if args.password:
            env[ENV_PASSWORD] = args.password  # not on the command line, where ps shows it
        for index in range(1, args.workers + 1):
            name = f"w{index}"
            extra = ["--prefix", self.prefix, "--name", name, "--ttl", str(args.ttl)]
            self.workers.append(_Worker(name, argv + extra, env, self.inbox))

    def kill_leader(self) -> None:
        def leader_holds_lock() -> bool:
            leader = self.leader()
            return leader is not None and self.lock_holder()[0] == leader

        self.pump(leader_holds_lock, _KILL_WAIT)
        name = self.leader()
        victim = next((w for w in self.workers if w.name == name), None)
        if victim is None:
            self.say("demo: no leader to kill right now")
            return
        holder, token, _ = self.lock_holder()
        victim.log.killed = True
        victim.kill()
        self.killed, self.killed_at = victim, time.monotonic()
        holding = holder == victim.name
        self.killed_lock_token = token if holding else 0
        self.lock_taken_over = not holding
        also = ", while it holds the lock" if holding else ""
        self.say(
            f"demo: SIGKILL {victim.name} (pid {victim.proc.pid}), the leader{also}; its "
            f"keys stay until its {self.args.ttl} s lease expires"
        )

    def run(self) -> list[Check]:
        args = self.args
        start = self.client.get(self.prefix + COUNTER).revision
        self.watch(start + 1)
        self.say(f"demo: keys under {self.prefix}")
        self.publish_config()
        self.spawn()
        self.say(f"demo: started {args.workers} worker processes; waiting for them to connect")

        def ready() -> bool:
            logs = [w.log for w in self.workers]
            return (
                all(log.ready and 1 in log.versions_seen for log in logs)
                and any(log.elected for log in logs)
            ) or any(log.exit_code is not None for log in logs)

        if not self.pump(ready, _STARTUP_TIMEOUT) or any(
            w.log.exit_code is not None for w in self.workers
        ):
            raise CliError("the workers did not start" + self._stderr_hint())
        begun = time.monotonic()
        for fraction, action in _PLAN:
            self.sleep(begun + fraction * args.duration - time.monotonic())
            if action == "kill":
                self.kill_leader()
            else:
                self.publish_config()
        self.sleep(begun + args.duration - time.monotonic())
        self.say("demo: time is up; stopping the workers")
        for worker in self.workers:
            if not worker.log.killed:
                worker.stop()
        if not self.pump(self._all_exited, _STOP_TIMEOUT):
            for worker in self.workers:
                if worker.log.exit_code is None:
                    self.say(f"demo: {worker.name} did not stop; killing it")
                    worker.kill()
            self.pump(self._all_exited, _STOP_TIMEOUT)
        # A marker written after every worker is gone: once the watch delivers it, the
        # demo has every change the workers made.
        self.client.put(self.prefix + END, "")
        if not self.pump(lambda: self.ended, _END_TIMEOUT):
            raise CliError("the demo's watch did not deliver the end marker")
        logs = [w.log for w in self.workers]
        killed = self.killed.name if self.killed is not None else None
        checks = [
            check_counter(self.changes, logs),
            check_fencing(self.changes, logs),
            check_leadership(self.changes, logs, killed),
            check_config(logs, self.version),
            check_workers(logs),
        ]
        checks.append(self._failover())
        return checks

    def _failover(self) -> Check:
        name = "failover"
        if self.killed is None:
            return Check(name, False, "the leader was never killed")
        if self.failover_after is None:
            return Check(name, False, f"nobody was elected after {self.killed.name} was killed")
        return Check(
            name,
            True,
            f"{self.successor} elected {self.failover_after:.1f} s after {self.killed.name}'s "
            f"SIGKILL (session TTL {self.args.ttl} s)",
        )

    def _all_exited(self) -> bool:
        return all(w.log.exit_code is not None for w in self.workers)

    def _stderr_hint(self) -> str:
        for worker in self.workers:
            if worker.stderr:
                return f" ({worker.name}: {worker.stderr[-1]})"
        return ""

    def shutdown(self) -> None:
        """Leave nothing behind: processes, watch, keys."""
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.kill()
            worker.proc.wait()
        if self.watcher is not None:
            self.ended = True
            self.watcher.cancel()
        try:
            self.client.delete(self.prefix, prefix=True)
        except errors.EtcdError:
            pass  # an unreachable etcd keeps a few demo keys; they are harmless

    def summary(self, checks: list[Check]) -> bool:
        emit("")
        took = time.monotonic() - self.started
        counts = ", ".join(
            f"{w.name} {len(w.log.acked)}" + (" (killed)" if w.log.killed else "")
            for w in self.workers
        )
        emit(f"summary after {took:.1f} s - increments acknowledged: {counts}")
        for check in checks:
            emit(f"  {'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
        passed = all(check.ok for check in checks)
        emit("self-check passed" if passed else "self-check FAILED")
        return passed


def _version(log: WorkerLog) -> str:
    seen = log.versions_seen
    return f"v{seen[-1]}" if seen else "-"


def run(args: argparse.Namespace) -> int:
    if not 2 <= args.workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be between 2 and {MAX_WORKERS}")
    if args.duration < MIN_DURATION:
        raise UsageError(f"--duration must be at least {MIN_DURATION:g} s")
    restore = interrupts_raise()
    demo: _Demo | None = None
    try:
        with ExitStack() as stack:
            emit(
                f"etcdsync demo: {args.workers} worker processes elect a leader, share a "
                "counter under a fenced lock and follow a live config; the leader is killed "
                "mid-run."
            )
            if args.endpoints_given:
                endpoints = args.endpoints
                emit(f"etcd at {endpoints}")
            else:
                server = _embedded(stack)
                endpoints = server.endpoint
                emit(f"embedded etcd {server.version} at {endpoints} (stopped at the end)")
            args.endpoints = endpoints
            client = stack.enter_context(open_client(args))
            demo = _Demo(args, client, endpoints)
            try:
                checks = demo.run()
            finally:
                demo.shutdown()
            return EXIT_OK if demo.summary(checks) else EXIT_ERROR
    except Interrupted as exc:
        emit("demo: interrupted")
        return 128 + exc.signum
    finally:
        restore()


def _embedded(stack: ExitStack) -> EtcdServer:
    try:
        return stack.enter_context(EtcdServer())  # stopped, data deleted, when the demo ends
    except EtcdNotFound as exc:
        raise CliError(f"no etcd to embed: {exc}") from None
    except EtcdStartError as exc:
        raise CliError(f"the embedded etcd did not start: {one_line(exc)}") from None
