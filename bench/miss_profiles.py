"""For each target a benchmark run missed, the profile that shows what bounds it.

    python -m bench.miss_profiles                 # profiles for bench/.work/results.json
    python -m bench.miss_profiles --results F --output bench/RESULTS.md

A full ``python -m bench`` ends with this step.  Each missed target names the
workloads that explain it; each is run again, alone, against a private etcd:

- CPU-bound targets under py-spy (``bench.profile``), etcdsync beside the floor
  (the same requests over bare grpc) or the peer it is compared with.  The samples
  are split by the layer whose Python frame was running - grpc (its C core and the
  protobuf (de)serialisation it does are charged to the grpc frame that called
  them), etcdsync's own code (including the messages it builds), the Python
  runtime (threads, queues, asyncio), the benchmark driver - and each share is
  turned into µs per operation with the run's measured CPU per operation.
- Wall-time targets (contended locks) with idle samples counted: where the time
  is spent waiting.
- The memory target with tracemalloc around the measured block
  (``bench/drivers/_common.allocations``): which lines hold the Python heap's
  growth, next to the RSS growth the run measured.

The section "What bounds each miss" is written at the end of RESULTS.md
(replacing an earlier one).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from . import curves, profile, report
from .runner import Run

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "profiles"
HEADING = "## What bounds each miss"


@dataclass(frozen=True)
class Subject:
    """One workload run to explain a miss: ``client`` against ``baseline``."""

    client: str
    workload: str
    baseline: str | None = None
    kind: str = "cpu"  # cpu | wall | memory
    overrides: tuple[tuple[str, float], ...] = ()
    focus: str | None = None
    """Count only stacks through this frame (the timed call of a sequential workload:
    its set-up writes and the warm-up stay out)."""


def _sequential(client: str, workload: str, baseline: str, call: str) -> Subject:
    """A sequential single-call workload: five repetitions, only the adapter's call."""
    return Subject(client, workload, baseline, overrides=(("reps", 5),), focus=f"Adapter.{call} (")


_LOCK_CYCLES = Subject(
    "etcdsync-sync", "lock_uncontended", "bare-sync", overrides=(("cycles", 2000),)
)

# Stable parts of the targets' texts (bench/report.py `checks`; the first that a target
# contains wins) -> the workloads that explain a miss.
SUBJECTS: tuple[tuple[str, tuple[Subject, ...]], ...] = (
    ("sync sequential put", (_sequential("etcdsync-sync", "put_seq", "bare-sync", "put"),)),
    ("sync sequential get", (_sequential("etcdsync-sync", "get_seq", "bare-sync", "get"),)),
    ("async put, 64 in flight", (Subject("etcdsync-async", "put_inflight", "bare-async"),)),
    (
        "client CPU per call",
        (
            _sequential("etcdsync-sync", "txn_seq", "bare-sync", "txn_cas"),
            _sequential("etcdsync-sync", "delete_seq", "bare-sync", "delete"),
            Subject("etcdsync-async", "txn_seq", "bare-async", overrides=(("reps", 5),)),
        ),
    ),
    ("uncontended lock cycles", (_LOCK_CYCLES,)),
    ("lock cycles", (_LOCK_CYCLES,)),
    (
        "contended cycles",
        (Subject("etcdsync-sync", "lock_contended", kind="wall", focus="Adapter.lock_cycle ("),),
    ),
    ("leases kept alive", (Subject("etcdsync-async", "leases_large"),)),
    (
        "1,000 sync callback watchers",
        (Subject("etcdsync-sync", "sweep_watchers", kind="memory", overrides=(("n", 1000),)),),
    ),
    (
        "range read of 10,000 keys faster",
        (Subject("etcdsync-async", "range_read", "aetcd", overrides=(("reps", 30),)),),
    ),
    # pyetcd is the peer with the least CPU per event in our runs.
    (
        "watch delivery",
        (Subject("etcdsync-async", "watch_delivery", "pyetcd", overrides=(("reps", 5),)),),
    ),
)

LAYERS = (
    "grpc",
    "etcdsync",
    "Python runtime",
    "benchmark driver",
    "peer library",
    "native, no Python frame",
    "other",
)
_RUNTIME_FILES = {"threading.py", "queue.py", "selectors.py", "socket.py", "contextlib.py"}
_RUNTIME_DIRS = ("asyncio/", "concurrent/")
_PEERS = ("aetcd/", "etcd3/", "pyetcd/")
_DRIVERS = {path.name for path in (HERE / "drivers").glob("*.py")}


def layer(frame: str) -> str:
    """Which layer a py-spy frame (``function (path:line)``, the path relative to its
    ``sys.path`` entry) belongs to."""
    if frame.startswith("process "):
        # Only the process line: a thread holding the GIL in C with no Python frame
        # (grpc.aio's completion-queue poller and its callbacks, mostly).
        return "native, no Python frame"
    match = profile._FRAME.match(frame)
    path = match.group("file") if match else frame
    if path.startswith(("grpc/", "google/")):
        return "grpc"
    if path.startswith("etcdsync/"):
        return "etcdsync"
    if path in _DRIVERS:
        return "benchmark driver"
    if path in _RUNTIME_FILES or path.startswith(_RUNTIME_DIRS):
        return "Python runtime"
    if path.startswith(_PEERS):
        return "peer library"
    return "other"


_NOT_THE_CLIENT = ("<frozen importlib", "-m bench.writer")
"""Stacks left out: imports, and the writer process a watch workload starts (it writes
through etcdsync, whatever client is measured)."""


@dataclass
class Shares:
    samples: int
    by_layer: dict[str, float]
    ours: list[tuple[str, float]]  # etcdsync's own frames by self share
    ours_inclusive: list[tuple[str, float]]  # etcdsync's frames by inclusive share


def shares(raw: Path, focus: str | None = None, top: int = 6) -> Shares:
    """Self samples of a py-spy raw profile, split by layer; imports left out, and
    with ``focus`` only the stacks through that frame."""
    by_layer: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in profile.stacks(raw, [focus] if focus else [], _NOT_THE_CLIENT):
        last = frames[-1]
        total += count
        where = layer(last)
        by_layer[where] += count
        if where == "etcdsync":
            ours[profile._short(last)] += count
        for frame in sorted({profile._short(f) for f in frames if layer(f) == "etcdsync"}):
            inclusive[frame] += count
    if total == 0:
        return Shares(0, {}, [], [])
    return Shares(
        total,
        {name: by_layer[name] / total for name in LAYERS},
        [(frame, n / total) for frame, n in ours.most_common(top)],
        [(frame, n / total) for frame, n in inclusive.most_common(top * 2)],
    )


def _cost_key(workload: str) -> tuple[str, str] | None:
    """The run's metric (key, unit) that the CPU shares divide."""
    if workload in report.FLOOR_METRICS:
        key = report.FLOOR_METRICS[workload][1]
        return key, "ms" if key == "cpu_ms" else "µs"
    if workload.startswith("leases"):
        return "cpu_pct", "% of a core"
    return None


def _record_cpu(subject: Subject, client: str, idle: bool, reuse: bool) -> Path:
    # Without --idle, py-spy still counts threads waiting inside C (grpc's channel
    # spin thread, a feeder blocked on its queue, a Condition.wait) as running:
    # CPU profiles therefore sample only the thread holding the GIL - all of the
    # Python code, ours and grpc's; what grpc's core does without the GIL is the same
    # for etcdsync and the floor.
    mode = "idle" if idle else "gil"
    out = WORK / f"{client}-{subject.workload}-{mode}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    if reuse and out.exists():
        return out
    print(f"[bench] profiling {client} {subject.workload}", file=sys.stderr)
    profile.record(client, subject.workload, dict(subject.overrides), [f"--{mode}"], out)
    return out


_OPERATIONS: dict[str, str] = {
    "lock_uncontended": "cycles",
    "watch_delivery": "events",
}
"""The parameter that counts a workload's operations per repetition (``n`` when not
listed)."""
_NOT_COUNTED = ("leases", "sweep", "range_read")
"""Workloads whose profile is not divided into operations (shares only): long-lived
work, or set-up (10,000 keys written) that the profile cannot tell from the reads."""


def operations(subject: Subject) -> int | None:
    """How many operations the profiled run made (repetitions included)."""
    params = profile.params_for(subject.client, subject.workload, dict(subject.overrides))
    count = params.get(_OPERATIONS.get(subject.workload, "n"))
    if not isinstance(count, int | float) or subject.workload.startswith(_NOT_COUNTED):
        return None
    return int(count) * int(params["reps"])


def _record_memory(subject: Subject, reuse: bool) -> Path:
    """Run the driver once with tracemalloc around the measured block."""
    out = WORK / f"{subject.client}-{subject.workload}-allocations.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    if reuse and out.exists():
        return out
    print(f"[bench] tracing allocations: {subject.client} {subject.workload}", file=sys.stderr)
    env = dict(os.environ, BENCH_ALLOCATIONS=str(out))  # see drivers/_common.allocations
    profile.run_driver(subject.client, subject.workload, dict(subject.overrides), env=env)
    return out


def _cpu_markdown(run: Run, subject: Subject, idle: bool, reuse: bool) -> list[str]:
    clients = [subject.client] + ([subject.baseline] if subject.baseline else [])
    got = {c: shares(_record_cpu(subject, c, idle, reuse), subject.focus) for c in clients}
    ops = None if idle else operations(subject)
    lines = [
        "| layer (" + ("samples, idle included" if idle else "GIL held; µs per operation") + ") | "
        + " | ".join(clients) + " |",
        "|" + "---|" + "---:|" * len(clients),
    ]  # fmt: skip
    for name in LAYERS:
        if all(got[c].by_layer.get(name, 0.0) < 0.005 for c in clients):
            continue
        cells = []
        for c in clients:
            share = got[c].by_layer.get(name, 0.0)
            cell = f"{share * 100:.0f}%"
            if ops:
                cell += f" ({_us_per_op(got[c], share, ops):.1f} µs)"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| samples | " + " | ".join(str(got[c].samples) for c in clients) + " |")
    cost = _cost_key(subject.workload)
    if cost and not idle:
        measured = [report.median(run, c, subject.workload, cost[0]) for c in clients]
        cells = ["n/a" if m is None else f"{m:.1f} {cost[1]}" for m in measured]
        lines.append("| the run's client CPU (all threads) | " + " | ".join(cells) + " |")
    mine = got[subject.client]
    if idle and mine.ours_inclusive:
        top = ", ".join(f"{frame} {share * 100:.0f}%" for frame, share in mine.ours_inclusive)
        lines += ["", f"Share of the time under each of etcdsync's frames: {top}."]
    elif mine.ours:
        top = ", ".join(f"{frame} {share * 100:.1f}%" for frame, share in mine.ours)
        lines += ["", f"etcdsync's own frames with the most samples: {top}."]
    lines += ["", _cpu_verdict(subject, got, ops)]
    return lines


def _us_per_op(got: Shares, share: float, ops: int) -> float:
    """GIL-held µs per operation of a layer (py-spy samples at RATE Hz)."""
    return got.samples * share / profile.RATE / ops * 1e6


def _cpu_verdict(subject: Subject, got: dict[str, Shares], ops: int | None) -> str:
    mine = got[subject.client].by_layer
    if not mine:
        return f"No samples of {subject.client} were left to read."
    biggest = max(mine, key=lambda name: mine[name])
    text = f"Bound by {biggest} ({mine[biggest] * 100:.0f}% of {subject.client}'s samples)"
    if subject.baseline and ops:
        base = got[subject.baseline]
        extra = {
            n: _us_per_op(got[subject.client], mine.get(n, 0.0), ops)
            - _us_per_op(base, base.by_layer.get(n, 0.0), ops)
            for n in LAYERS
        }
        total = sum(extra.values())
        name = max(extra, key=lambda n: extra[n])
        text += (
            f"; against {subject.baseline}, {total:+.1f} µs of GIL-held time per operation, "
            f"the largest difference in {name} ({extra[name]:+.1f} µs)"
        )
    return text + "."


def memory_markdown(run: Run, subject: Subject, reuse: bool = False) -> list[str]:
    path = _record_memory(subject, reuse)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    head, sites = rows[0], rows[1:]
    n = int(dict(subject.overrides)["n"])
    rss = dict(curves.points(run, subject.client, subject.workload, "rss_mb")).get(n)
    grown = sum(site["bytes"] for site in sites if site["bytes"] > 0)
    lines = [
        f"tracemalloc: the Python heap holds {head['traced_bytes'] / 2**20:.2f} MiB more "
        f"after the {n:,} watchers were created; RSS grew {rss:.1f} MiB in the run"
        if rss is not None
        else f"tracemalloc: {head['traced_bytes'] / 2**20:.2f} MiB more on the Python heap",
        "",
        "| where (file:line) | KiB | blocks |",
        "|---|---:|---:|",
    ]
    for site in sites[:10]:
        short = "/".join(Path(site["file"]).parts[-2:])
        lines.append(f"| {short}:{site['line']} | {site['bytes'] / 1024:.0f} | {site['count']} |")
    lines += [
        "",
        f"The top {min(len(sites), 10)} lines hold {grown / 2**20:.2f} MiB; what RSS adds beyond "
        "the Python heap is allocator slack and grpc's native buffers.",
    ]
    return lines


def section(run: Run, reuse: bool = False) -> str:
    """The markdown section for the run's missed targets (profiles run now, or
    with ``reuse`` read from the ones recorded before)."""
    parts = [
        HEADING,
        "",
        "Each missed target's workloads run again alone after the benchmark, on the "
        "same box (`python -m bench.miss_profiles`; py-spy at 500 Hz, `--subprocesses`). "
        "CPU profiles sample the thread holding the GIL (py-spy cannot tell a thread "
        "waiting inside grpc's C code from a running one): all Python code, ours and "
        "grpc's, including the C work done under the GIL (protobuf (de)serialisation is "
        "charged to the grpc frame that calls it; the request messages etcdsync builds to "
        "etcdsync). What grpc's core does without the GIL is the same for etcdsync and "
        "the floor. µs per operation = samples ÷ 500 Hz ÷ operations: wall-clock time "
        "holding the GIL, which on this 2-core box shared with etcd includes time the "
        "holder waited for a core: compare the columns of one table, not these µs with "
        "the run's client CPU shown beneath. Imports and the watch workloads' writer "
        "process are left out; for the sequential workloads only the timed call (the "
        "driver's `Adapter.<call>`) counts.",
        "",
    ]
    done: dict[Subject, list[str]] = {}
    for check in report.checks(run):
        if check.met is not False:
            continue
        subjects = next((s for part, s in SUBJECTS if part in check.target), ())
        parts += [f"### {check.target}", "", f"Measured: {check.measured}.", ""]
        if not subjects:
            parts += ["No profile is defined for this target.", ""]
        for subject in subjects:
            title = f"{subject.client}, {subject.workload}"
            if subject in done:
                parts += [f"{title}: the profile above.", ""]
                continue
            if subject.kind == "memory":
                body = memory_markdown(run, subject, reuse)
            else:
                body = _cpu_markdown(run, subject, subject.kind == "wall", reuse)
                if subject.kind == "wall":
                    body.insert(
                        0,
                        "Idle samples counted, the contenders' lock cycles only "
                        "(where the wall time goes):\n",
                    )
            done[subject] = body
            parts += [f"**{title}**", "", *body, ""]
    return "\n".join(parts)


def write(run: Run, output: Path, reuse: bool = False) -> None:
    """Append (or replace) the section in ``output``."""
    text = output.read_text() if output.exists() else ""
    head = text.split(HEADING)[0].rstrip("\n")
    output.write_text(head + "\n\n" + section(run, reuse))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=HERE / ".work" / "results.json")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument(
        "--reuse", action="store_true", help="render from the CPU profiles already recorded"
    )
    args = parser.parse_args()
    run = Run.from_json(json.loads(args.results.read_text()))
    write(run, args.output, args.reuse)
    print(f"[bench] wrote {HEADING[3:]!r} into {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
