"""Run every selected client's workloads against one etcd and collect the results.

One :class:`~etcdsync.testing.server.EtcdServer` (tmpfs data dir, loopback)
serves the whole run.  Each (client, workload) runs in a subprocess of the
client's own interpreter (its venv under bench/.venvs/, the project's .venv for
etcdsync, the Go binary for the ceiling); between runs the server is cleaned
through etcdsync: the client's keys deleted, every lease revoked.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etcdsync import AsyncClient, Client, errors
from etcdsync.testing.server import EtcdServer

from . import gobuild, venvs
from .config import CLIENTS_BY_NAME, WORKLOADS, ClientSpec, Workload, lease_timing

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DRIVERS = HERE / "drivers"
WORK = HERE / ".work"
MARK = "@@BENCH "


@dataclass
class Outcome:
    """What one client did in one workload: per-repetition metrics, or why not."""

    reps: list[dict[str, float]] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    quick: bool
    clients: list[str]
    workloads: list[str]
    machine: dict[str, str] = field(default_factory=dict)
    etcd: str = ""
    versions: dict[str, dict[str, str]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, dict[str, Outcome]] = field(default_factory=dict)
    seconds: float = 0.0
    setup_seconds: float = 0.0
    """Of ``seconds``: venvs and the Go build (before the first workload)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "quick": self.quick,
            "clients": self.clients,
            "workloads": self.workloads,
            "machine": self.machine,
            "etcd": self.etcd,
            "versions": self.versions,
            "unavailable": self.unavailable,
            "seconds": self.seconds,
            "setup_seconds": self.setup_seconds,
            "outcomes": {
                client: {name: vars(o) for name, o in per.items()}
                for client, per in self.outcomes.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        """The run :meth:`to_json` wrote (``bench/.work/results.json``)."""
        fields = {k: v for k, v in data.items() if k != "outcomes"}
        outcomes = {
            client: {name: Outcome(**o) for name, o in per.items()}
            for client, per in data.get("outcomes", {}).items()
        }
        return cls(**fields, outcomes=outcomes)


@dataclass
class Prepared:
    spec: ClientSpec
    command: list[str]
    env: dict[str, str]


def prepare(spec: ClientSpec, allow_apt: bool) -> Prepared:
    """The command that starts this client's driver (venv or Go binary made ready)."""
    WORK.mkdir(exist_ok=True)
    env = {**os.environ, **spec.env}
    if spec.kind == "go":
        return Prepared(spec, [str(gobuild.build(allow_apt))], env)
    assert spec.driver is not None
    python = venvs.python_for(spec, WORK / f"venv-{spec.name}.log")
    return Prepared(spec, [python, str(DRIVERS / spec.driver)], env)


def params_for(
    workload: Workload, spec: ClientSpec, server: EtcdServer, quick: bool, reps: int | None
) -> dict[str, Any]:
    params = dict(workload.quick if quick else workload.full)
    if reps is not None:
        params["reps"] = reps
    if workload.name.startswith(("leases", "sweep_leases")):
        params.update(lease_timing(params))
    params.update(
        prefix=f"bench/{spec.name}/",
        metrics_url=server.metrics_url,
        writer_cmd=[sys.executable, "-m", "bench.writer"],
        writer_cwd=str(ROOT),
        contender_timeout=300,
    )
    return params


def _run_driver(
    prepared: Prepared,
    endpoint: str,
    workload: str,
    params: dict[str, Any],
    timeout: float,
    log: Path,
) -> tuple[list[dict[str, Any]], str | None]:
    """Run one driver process; its records, and an error message if it failed."""
    flag = "-" if prepared.spec.kind == "go" else "--"
    cmd = [
        *prepared.command,
        f"{flag}endpoint", endpoint,
        f"{flag}workload", workload,
        f"{flag}params", json.dumps(params),
    ]  # fmt: skip
    with log.open("w") as err:
        # Own process group: on timeout the driver, its writer and its lock
        # contenders end together, and nothing else.
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=prepared.env,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return _records(out), f"timed out after {timeout:.0f} s"
    records = _records(out)
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        return records, f"exit code {proc.returncode}: " + " | ".join(tail)
    return records, None


def _records(out: str) -> list[dict[str, Any]]:
    return [json.loads(line[len(MARK) :]) for line in out.splitlines() if line.startswith(MARK)]


def _timeout(workload: Workload, quick: bool) -> float:
    if quick:
        return 60.0
    return 600.0 if workload.name == "lock_contended" or workload.sweep else 300.0


class Cleaner:
    """Resets the server between runs (through etcdsync, in this process)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def lease_count(self) -> int:
        with Client(self.endpoint, timeout=30) as etcd:
            return len(etcd.leases())

    def reset(self, prefix: str, *, keys: bool = True) -> None:
        """Revoke every lease; delete the keys under ``prefix`` too unless told not to."""
        asyncio.run(self._reset(prefix, keys))

    async def _reset(self, prefix: str, keys: bool) -> None:
        async with AsyncClient(self.endpoint, timeout=60) as etcd:
            ids = await etcd.leases()
            limit = asyncio.Semaphore(64)

            async def revoke(lease_id: int) -> None:
                async with limit:
                    try:
                        await etcd.revoke(lease_id)
                    except errors.LeaseNotFoundError:
                        pass  # expired meanwhile

            await asyncio.gather(*(revoke(i) for i in ids))
            if keys:
                await etcd.delete(prefix, prefix=True)

    def compact(self) -> None:
        with Client(self.endpoint, timeout=60) as etcd:
            revision = etcd.get("bench/").revision
            try:
                etcd.compact(revision, physical=True)
            except errors.CompactedError:
                pass  # nothing was written since the last compaction


class Round:
    """One client's repetitions of one workload, run round by round."""

    def __init__(
        self, prepared: Prepared, server: EtcdServer, workload: Workload, run: Run, reps: int | None
    ) -> None:
        self.prepared = prepared
        self.server = server
        self.workload = workload
        self.run = run
        self.params = params_for(workload, prepared.spec, server, run.quick, reps)
        self.outcome = run.outcomes.setdefault(prepared.spec.name, {})[workload.name] = Outcome(
            params={k: v for k, v in self.params.items() if k not in ("writer_cmd", "writer_cwd")}
        )
        self.sizes = workload.sizes(self.params, prepared.spec.name) if workload.sweep else []
        if workload.sweep:
            self.rounds = len(self.sizes)  # one process per size
        else:
            self.rounds = self.params["reps"] if workload.interleave else 1
        self.seconds = 0.0

    @property
    def finished(self) -> bool:
        return self.outcome.error is not None or self.outcome.skipped is not None

    def play(self, index: int, cleaner: Cleaner) -> None:
        """Run round ``index`` in a fresh driver process; record what it reported."""
        if self.finished or index >= self.rounds:
            return
        spec, workload, outcome = self.prepared.spec, self.workload, self.outcome
        params = dict(self.params)
        if workload.interleave:
            params.update(reps=1, rep=index)
        if workload.sweep:
            params[workload.sweep] = self.sizes[index]
        log = WORK / "logs" / f"{spec.name}-{workload.name}-{index}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        records, error = _run_driver(
            self.prepared,
            self.server.endpoint,
            workload.name,
            params,
            _timeout(workload, self.run.quick),
            log,
        )
        self.seconds += time.monotonic() - started
        for record in records:
            if record["type"] == "meta":
                self.run.versions.setdefault(spec.name, {}).update(record["versions"])
            elif record["type"] == "skip":
                outcome.skipped = record["reason"]
            elif record["type"] == "result":
                outcome.reps.append(dict(record["metrics"]))
                if workload.sweep:
                    outcome.reps[-1]["size"] = self.sizes[index]
        if error is not None and workload.sweep and not spec.etcdsync and outcome.reps:
            # A peer that cannot run the next size: its curve ends there (a note, not
            # a failure of the benchmark).
            outcome.skipped = f"stopped at {self.sizes[index]:,}: {error}"
            error = None
        if workload.count_leases and outcome.reps and error is None:
            outcome.reps[-1]["leases_left"] = cleaner.lease_count()
        outcome.error = error
        # Keys stay between rounds (the range workload reuses its preload); leases
        # never do: every round starts with none but its own.
        last = index == self.rounds - 1 or self.finished or bool(workload.sweep)
        cleaner.reset(self.params["prefix"], keys=last)

    def report(self) -> None:
        outcome = self.outcome
        status = outcome.error or outcome.skipped or f"{len(outcome.reps)} reps"
        print(
            f"[bench] {self.prepared.spec.name:15} {self.workload.name:17} "
            f"{self.seconds:6.1f} s  {status}",
            file=sys.stderr,
            flush=True,
        )


def run_workload(
    prepared: list[Prepared],
    server: EtcdServer,
    cleaner: Cleaner,
    workload: Workload,
    run: Run,
    reps: int | None,
) -> None:
    """Every client's repetitions of one workload (interleaved, unless the workload
    runs all of its repetitions in one process)."""
    rounds = [
        Round(item, server, workload, run, reps) for item in prepared if item.spec.runs(workload)
    ]
    for r in rounds:
        cleaner.reset(r.params["prefix"])
    if workload.interleave:
        for index in range(max((r.rounds for r in rounds), default=0)):
            for r in rounds:
                r.play(index, cleaner)
    else:
        for r in rounds:
            r.play(0, cleaner)
    for r in rounds:
        r.report()


def execute(
    clients: list[str],
    workloads: list[str],
    *,
    quick: bool,
    reps: int | None = None,
    allow_apt: bool = True,
    etcd_version: str | None = None,
) -> Run:
    from .machine import describe

    run = Run(quick=quick, clients=clients, workloads=workloads, machine=describe())
    started = time.monotonic()
    prepared: list[Prepared] = []
    for name in clients:
        spec = CLIENTS_BY_NAME[name]
        try:
            prepared.append(prepare(spec, allow_apt))
        except (venvs.VenvError, gobuild.GoUnavailable, OSError) as exc:
            run.unavailable[name] = str(exc)
            print(f"[bench] {name} unavailable: {exc}", file=sys.stderr)
            continue
        if spec.kind == "go":
            run.versions[name] = gobuild.versions()
        else:
            names = [r.split("=")[0] for r in spec.requirements] or ["etcdsync"]
            run.versions[name] = venvs.installed_versions(
                prepared[-1].command[0], [*names, "grpcio", "protobuf"]
            )
    selected = [w for w in WORKLOADS if w.name in workloads]
    run.setup_seconds = time.monotonic() - started
    with EtcdServer(version=etcd_version) as server:
        run.etcd = server.version
        cleaner = Cleaner(server.endpoint)
        # Workload by workload, every client in turn: the load of a shared machine
        # drifts over minutes, and clients compared in one row are then measured
        # close together in time.
        for workload in selected:
            run_workload(prepared, server, cleaner, workload, run, reps)
            cleaner.compact()
    run.seconds = time.monotonic() - started
    run.machine["load average at end (1/5/15 min)"] = " / ".join(
        f"{x:.2f}" for x in os.getloadavg()
    )
    return run
