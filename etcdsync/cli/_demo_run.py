"""The demo's scenario: start the workers, follow the run, kill the leader, check.

One thread (the command's) does everything in order: it takes the workers' reports
and etcd's changes from one inbox (:meth:`DemoRun.pump`), narrates them, prints a
status line every second, and follows the plan: publish config versions, SIGKILL the
leader a third of the way in, stop the workers at the end and hold what they reported
against etcd's history (``_demo_check``).
"""

from __future__ import annotations

import argparse
import json
import queue
import time
import uuid
from collections.abc import Callable
from typing import Any

from .. import Client, Op, errors
from ._common import CliError, emit, one_line
from ._demo_check import (
    COUNTER,
    ELECTION,
    END,
    GROUP,
    LOCK,
    Change,
    Check,
    check_config,
    check_counter,
    check_fencing,
    check_group,
    check_leadership,
    check_workers,
    work_ms_for,
)
from ._demo_mirror import KeyMirror
from ._demo_processes import WorkerProcess, worker_command
from ._demo_report import print_summary, status_line

__all__ = ["DemoRun"]

_TICK = 1.0
_STARTUP_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
_END_TIMEOUT = 10.0
# How long the demo waits for the leader to hold the lock too before killing it.
_KILL_WAIT = 1.5
# When (as a fraction of --duration) the demo does what.
_PLAN = ((0.20, "config"), (0.35, "kill"), (0.55, "config"), (0.75, "config"))


class DemoRun:
    def __init__(self, args: argparse.Namespace, client: Client, endpoints: str) -> None:
        self.args = args
        self.client = client
        self.endpoints = endpoints
        self.prefix = f"etcdsync-demo/{uuid.uuid4().hex[:8]}/"
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.started = time.monotonic()
        self.next_tick = self.started + _TICK
        self.workers: list[WorkerProcess] = []
        self.mirror = KeyMirror(client, self.prefix, self.inbox)
        self.version = 0
        self.announced: set[int] = set()
        self.killed: WorkerProcess | None = None
        self.killed_at = 0.0
        self.killed_lock_token = 0
        self.lock_taken_over = False
        self.member_left = False
        self.failover_after: float | None = None
        self.successor = ""

    # --- output -------------------------------------------------------------------------

    def say(self, text: str) -> None:
        emit(f"{time.monotonic() - self.started:6.1f}s  {text}")

    def _owner(self, lease: int) -> str:
        for worker in self.workers:
            if lease in worker.log.leases:
                return worker.name
        return f"lease {lease:x}"

    def leader(self) -> str | None:
        held = self.mirror.first(ELECTION + "/")
        return held.value if held is not None else None

    def lock_holder(self) -> tuple[str | None, int, int]:
        """(holder, its fencing token, how many wait) as etcd has it now."""
        keys = self.mirror.under(LOCK + "/")
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
        counter = self.mirror.live.get(COUNTER)
        members = len(self.mirror.under(GROUP + "/"))
        logs = [w.log for w in self.workers]
        self.say(status_line(leader, lock, counter.value if counter else 0, members, logs))

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
        self._note_member_left(changes)
        self.mirror.apply(changes)
        if self.killed is not None and not self.lock_taken_over:
            holder, token, _ = self.lock_holder()
            if holder is not None and token > self.killed_lock_token:
                self.lock_taken_over = True
                self.say(
                    f"  lock: {holder} took over {time.monotonic() - self.killed_at:.1f} s "
                    f"after the kill (fencing token {token})"
                )

    def _note_member_left(self, changes: list[Change]) -> None:
        """Tell when the killed worker's member key goes (read before the mirror forgets
        whose key it was)."""
        if self.killed is None or self.member_left:
            return
        for change in changes:
            before = self.mirror.live.get(change.key)
            if (
                change.deleted
                and change.key.startswith(GROUP + "/")
                and before is not None
                and before.value == self.killed.name
            ):
                self.member_left = True
                members = len(self.mirror.under(GROUP + "/")) - 1
                self.say(
                    f"  group: {self.killed.name} left the members "
                    f"{time.monotonic() - self.killed_at:.1f} s after the kill, with its "
                    f"lease; {members} members now"
                )

    def on_report(self, worker: WorkerProcess, report: dict[str, Any]) -> None:
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

    def on_exit(self, worker: WorkerProcess, code: int) -> None:
        worker.log.exit_code = code
        if worker.log.killed:
            return
        if code != 0 or not worker.log.said_bye:
            self.say(f"  {worker.name} exited unexpectedly (code {code})")
            for line in list(worker.stderr)[-5:]:
                self.say(f"    {worker.name}: {line}")

    # --- etcd ---------------------------------------------------------------------------

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
        args = self.args
        argv, env = worker_command(args, self.endpoints)
        for index in range(1, args.workers + 1):
            name = f"w{index}"
            extra = ["--prefix", self.prefix, "--name", name, "--ttl", str(args.ttl)]
            self.workers.append(WorkerProcess(name, argv + extra, env, self.inbox))

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
        self.mirror.watch(start + 1)
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
        if not self.pump(lambda: self.mirror.ended, _END_TIMEOUT):
            raise CliError("the demo's watch did not deliver the end marker")
        logs = [w.log for w in self.workers]
        killed = self.killed.name if self.killed is not None else None
        changes = self.mirror.changes
        checks = [
            check_counter(changes, logs),
            check_fencing(changes, logs),
            check_leadership(changes, logs, killed),
            check_config(logs, self.version),
            check_group(changes, logs, killed),
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
        self.mirror.close()
        try:
            self.client.delete(self.prefix, prefix=True)
        except errors.EtcdError:
            pass  # an unreachable etcd keeps a few demo keys; they are harmless

    def summary(self, checks: list[Check]) -> bool:
        logs = [w.log for w in self.workers]
        return print_summary(logs, checks, time.monotonic() - self.started)
