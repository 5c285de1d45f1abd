"""Plumbing shared by every Python driver; standard library only.

A driver runs in its client's own virtualenv, so nothing here may import
etcdsync or a peer library.  The protocol with the orchestrator
(``bench/runner.py``) is one JSON object per stdout line, prefixed with
``MARK`` so that whatever a library prints itself is ignored::

    {"type": "meta", "client": ..., "versions": {...}}
    {"type": "result", "workload": ..., "rep": 0, "metrics": {...}}
    {"type": "skip", "workload": ..., "reason": ...}

A lock contender (a child process of a driver) speaks the same way with its
parent: it prints ``READY`` once connected, waits for ``GO`` on stdin, then
prints its intervals as one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

MARK = "@@BENCH "


class Unsupported(Exception):
    """A client lacks what a workload needs: the workload is reported as skipped."""


@dataclass
class Args:
    endpoint: str
    workload: str
    params: dict[str, Any]
    role: str


def parse_args(argv: Sequence[str] | None = None) -> Args:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--workload", default="")
    parser.add_argument("--params", default="{}")
    parser.add_argument("--role", default="driver", choices=["driver", "contender"])
    ns = parser.parse_args(argv)
    return Args(ns.endpoint, ns.workload, json.loads(ns.params), ns.role)


def host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


def emit(kind: str, **fields: Any) -> None:
    print(MARK + json.dumps({"type": kind, **fields}), flush=True)


def result(workload: str, rep: int, **metrics: float | int) -> None:
    emit("result", workload=workload, rep=rep, metrics=metrics)


def skip(workload: str, reason: str) -> None:
    emit("skip", workload=workload, reason=reason)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def latency_metrics(
    latencies_s: Sequence[float], ops: int, wall_s: float, cpu_s: float
) -> dict[str, float]:
    """Rate and latency percentiles, and this process's CPU time per operation
    (all threads: far less sensitive than wall time to other load on the machine)."""
    return {
        "ops_s": ops / wall_s,
        "p50_ms": percentile(latencies_s, 50) * 1e3,
        "p99_ms": percentile(latencies_s, 99) * 1e3,
        "cpu_us_op": cpu_s / max(ops, 1) * 1e6,
    }


def rss_mb() -> float:
    """Resident set size of this process now (not the peak), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


ALLOCATIONS_ENV = "BENCH_ALLOCATIONS"
"""When set (to a file path), :func:`allocations` writes where the Python heap grew."""


@contextlib.contextmanager
def allocations(workload: str, top: int = 15) -> Iterator[None]:
    """Trace the Python allocations made inside the block (only when
    :data:`ALLOCATIONS_ENV` names a file; otherwise free): the sites that still hold
    memory at its end, largest first, as JSON lines - how ``bench.miss_profiles``
    shows what a memory figure is made of."""
    path = os.environ.get(ALLOCATIONS_ENV)
    if not path:
        yield
        return
    import tracemalloc

    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    try:
        yield
    finally:
        after = tracemalloc.take_snapshot()
        traced, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        stats = after.compare_to(before, "lineno")
        with open(path, "w") as out:
            out.write(json.dumps({"workload": workload, "traced_bytes": traced}) + "\n")
            for stat in stats[:top]:
                frame = stat.traceback[0]
                site = {"file": frame.filename, "line": frame.lineno}
                out.write(json.dumps(dict(site, bytes=stat.size_diff, count=stat.count_diff)))
                out.write("\n")


def watch_gauges(metrics_url: str) -> tuple[float, float]:
    """(watch streams, watchers) the server holds, from its Prometheus gauges."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    streams = watchers = 0.0
    for line in text.splitlines():
        if line.startswith("etcd_debugging_mvcc_watch_stream_total "):
            streams = float(line.split()[1])
        elif line.startswith("etcd_debugging_mvcc_watcher_total "):
            watchers = float(line.split()[1])
    return streams, watchers


_HANDLED = re.compile(
    r'^grpc_server_handled_total\{grpc_code="[^"]*",grpc_method="([^"]+)",'
    r'grpc_service="[^"]*",grpc_type="unary"\} (\S+)$'
)
_STREAM_MSGS = re.compile(
    r'^grpc_server_msg_received_total\{grpc_method="([^"]+)",grpc_service="[^"]*",'
    r'grpc_type="bidi_stream"\} (\S+)$'
)


def rpc_counts(metrics_url: str) -> dict[str, float]:
    """The server's own RPC counters: finished unary calls per method, and messages
    received on bidi streams (``Watch:msgs``: watch creates and cancels)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _HANDLED.match(line)
        if match:
            out[match.group(1)] = out.get(match.group(1), 0.0) + float(match.group(2))
            continue
        match = _STREAM_MSGS.match(line)
        if match:
            key = match.group(1) + ":msgs"
            out[key] = out.get(key, 0.0) + float(match.group(2))
    return out


def rpc_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What changed between two :func:`rpc_counts` (zero entries left out)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def unary_total(delta: dict[str, float]) -> float:
    """Unary RPCs in a :func:`rpc_delta` (keepalive and watch stream messages apart)."""
    return sum(v for k, v in delta.items() if not k.endswith(":msgs"))


def key_index(key: bytes) -> int:
    """The event index a writer put at the end of ``key`` (8 digits)."""
    return int(key[-8:])


@dataclass
class Delivery:
    """Which of ``expected`` writer keys a watcher has seen, and how often."""

    expected: int
    seen: bytearray = field(init=False)
    unique: int = 0
    received: int = 0

    def __post_init__(self) -> None:
        self.seen = bytearray(self.expected)

    def add(self, keys: Sequence[bytes]) -> bool:
        """Count a batch of keys; True once every expected key arrived."""
        for key in keys:
            index = key_index(key)
            self.received += 1
            if not self.seen[index]:
                self.seen[index] = 1
                self.unique += 1
        return self.unique >= self.expected


def start_writer(
    params: dict[str, Any], endpoint: str, prefix: bytes, count: int, batch: int, value_size: int
) -> subprocess.Popen[str]:
    """Run the shared writer (etcdsync, project venv) that puts ``count`` keys
    under ``prefix`` in txns of ``batch`` puts, as fast as one connection can."""
    cmd = [
        *params["writer_cmd"],
        "--endpoint", endpoint,
        "--prefix", prefix.decode(),
        "--count", str(count),
        "--batch", str(batch),
        "--value-size", str(value_size),
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, cwd=params.get("writer_cwd") or None
    )


def finish_writer(proc: subprocess.Popen[str], timeout: float) -> dict[str, float]:
    """Wait for a writer and return its report (start/end wall times, written)."""
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"writer failed with exit code {proc.returncode}")
    for line in out.splitlines():
        if line.startswith(MARK):
            report: dict[str, float] = json.loads(line[len(MARK) :])
            return report
    raise RuntimeError("writer printed no report")


def preload(params: dict[str, Any], endpoint: str, prefix: bytes, count: int, size: int) -> None:
    proc = start_writer(params, endpoint, prefix, count, 100, size)
    finish_writer(proc, timeout=120)


def watch_metrics(
    delivery: Delivery, writer: dict[str, float], last_event_at: float, cpu_s: float
) -> dict[str, float]:
    """Delivery rate from the writer's first commit to the last event seen, and
    the watching process's CPU time per event (the writer is another process)."""
    span = max(last_event_at - writer["start"], 1e-9)
    writer_span = max(writer["end"] - writer["start"], 1e-9)
    return {
        "events_s": delivery.unique / span,
        "writer_events_s": delivery.expected / writer_span,
        "lag_ms": max(0.0, last_event_at - writer["end"]) * 1e3,
        "lost": delivery.expected - delivery.unique,
        "duplicates": delivery.received - delivery.unique,
        "cpu_us_per_event": cpu_s / max(delivery.received, 1) * 1e6,
    }


# --- lock contention: parent side ----------------------------------------------------


def run_contenders(
    endpoint: str, params: dict[str, Any], name: str, procs: int, cycles: int
) -> dict[str, float]:
    """Start ``procs`` contender processes of this driver on lock ``name``, release
    them at once, and merge their hold intervals into handoff figures."""
    child_params = dict(params, lock_name=name, cycles=cycles)
    cmd = [
        sys.executable, sys.argv[0], "--role", "contender",
        "--endpoint", endpoint, "--params", json.dumps(child_params),
    ]  # fmt: skip
    children = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(procs)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            while True:
                line = child.stdout.readline()
                if not line:
                    raise RuntimeError("contender exited before it was ready")
                if line.startswith(MARK + "READY"):
                    break
        go = time.time()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("GO\n")
            child.stdin.flush()
        reports = []
        for child in children:
            out, _ = child.communicate(timeout=params.get("contender_timeout", 300))
            for line in out.splitlines():
                if line.startswith(MARK):
                    reports.append(json.loads(line[len(MARK) :]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    if len(reports) != procs:
        raise RuntimeError(f"only {len(reports)} of {procs} contenders reported")
    return contention_metrics(go, reports, procs * cycles)


def contention_metrics(go: float, reports: list[dict[str, Any]], wanted: int) -> dict[str, float]:
    """Wall time, and handoff latency between *different* processes.

    A holder's interval ends when it starts releasing; the next holder can only
    own the lock after that delete committed, so a negative gap means two
    processes held the lock at once (``overlaps``).  ``switches`` counts the
    holder changes: an unfair lock lets the releasing process take it back.
    """
    held = sorted(
        (interval[0], interval[1], report["pid"])
        for report in reports
        for interval in report["intervals"]
    )
    # From asking for the lock to holding it (contenders that report when they asked).
    waits = [
        interval[0] - interval[2]
        for report in reports
        for interval in report["intervals"]
        if len(interval) > 2
    ]
    pairs = list(itertools.pairwise(held))
    overlaps = sum(1 for cur, nxt in pairs if nxt[0] < cur[1])
    handoffs = [nxt[0] - cur[1] for cur, nxt in pairs if nxt[2] != cur[2]]
    end = max((h[1] for h in held), default=go)
    return {
        "wall_s": end - go,
        "cycles": len(held),
        "switches": len(handoffs),
        "handoff_p50_ms": percentile(handoffs, 50) * 1e3,
        "handoff_p99_ms": percentile(handoffs, 99) * 1e3,
        "overlaps": overlaps,
        # Cycles whose acquire timed out or failed.
        "failures": wanted - len(held),
        **wait_metrics(waits),
    }


def wait_metrics(waits: list[float]) -> dict[str, float]:
    """The longest wait for the lock, and how far it is from the mean (fairness: a
    FIFO lock keeps it near the queue length, an unfair one lets a waiter starve)."""
    if not waits:
        return {}
    mean = sum(waits) / len(waits)
    return {
        "worst_wait_ms": max(waits) * 1e3,
        "mean_wait_ms": mean * 1e3,
        "fairness": max(waits) / mean if mean > 0 else 1.0,
    }


# --- lock contention: child side -----------------------------------------------------


def contender_ready() -> None:
    print(MARK + "READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        raise SystemExit("no GO from the parent")


def contender_report(intervals: list[tuple[float, float, float]], failures: int) -> None:
    report = {"intervals": intervals, "failures": failures, "pid": os.getpid()}
    print(MARK + json.dumps(report), flush=True)
