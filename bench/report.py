"""Turn a run into the results table, the target checks and bench/RESULTS.md."""

# The tables use the multiplication sign on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import curves
from .config import (
    ASYNC_PEERS,
    CLIENTS_BY_NAME,
    FLOOR_WORKLOADS,
    FLOORS,
    SYNC_PEERS,
    WORKLOADS_BY_NAME,
    Metric,
)
from .runner import Run

PEERS = (*SYNC_PEERS, *ASYNC_PEERS)


@dataclass(frozen=True)
class Stat:
    median: float
    extreme: float
    """min over the repetitions; for counts, the worst (max)."""
    n: int


def stat(run: Run, client: str, workload: str, key: str) -> Stat | None:
    outcome = run.outcomes.get(client, {}).get(workload)
    if outcome is None:
        return None
    values = [
        float(rep[key])
        for rep in outcome.reps
        if key in rep and isinstance(rep[key], int | float) and math.isfinite(rep[key])
    ]
    if not values:
        return None
    metric = _metric(workload, key)
    extreme = max(values) if metric.better == "count" else min(values)
    return Stat(statistics.median(values), extreme, len(values))


def _metric(workload: str, key: str) -> Metric:
    for metric in WORKLOADS_BY_NAME[workload].metrics:
        if metric.key == key:
            return metric
    raise KeyError(key)


def median(run: Run, client: str, workload: str, key: str) -> float | None:
    s = stat(run, client, workload, key)
    return None if s is None else s.median


def advantage(mine: float | None, other: float | None, better: str) -> float | None:
    """How many times better ``mine`` is than ``other`` (> 1: mine is better)."""
    if mine is None or other is None or mine <= 0 or other <= 0:
        return None
    return mine / other if better == "higher" else other / mine


def best_of(run: Run, clients: tuple[str, ...], workload: str, key: str) -> float | None:
    values = [v for c in clients if (v := median(run, c, workload, key)) is not None]
    if not values:
        return None
    return max(values) if _metric(workload, key).better == "higher" else min(values)


def _fmt(value: float, digits: int) -> str:
    if digits == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}×"


# --- the table -------------------------------------------------------------------------

RATIO_COLUMNS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("sync ÷ best sync peer", "etcdsync-sync", SYNC_PEERS),
    ("async ÷ best async peer", "etcdsync-async", ASYNC_PEERS),
    ("sync ÷ Go", "etcdsync-sync", ("go",)),
    ("async ÷ Go", "etcdsync-async", ("go",)),
)


def table(run: Run) -> str:
    clients = [c for c in run.clients if c in run.outcomes]
    header = ["workload", "metric", *clients, *(name for name, _, _ in RATIO_COLUMNS)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    notes: list[str] = []
    for name in run.workloads:
        workload = WORKLOADS_BY_NAME[name]
        if workload.sweep:
            continue  # a cost curve: see curves.section
        params = _params(run, name)
        title = workload.describe(params) if params else name
        for i, metric in enumerate(workload.metrics):
            row = [f"**{name}**: {title}" if i == 0 else "", metric.label]
            for client in clients:
                row.append(_cell(run, client, name, metric, notes))
            for _, mine, others in RATIO_COLUMNS:
                if metric.better in ("higher", "lower"):
                    value = advantage(
                        median(run, mine, name, metric.key),
                        best_of(run, others, name, metric.key),
                        metric.better,
                    )
                    row.append(_ratio(value))
                else:
                    row.append("")
            lines.append("| " + " | ".join(row) + " |")
    out = "\n".join(lines)
    if notes:
        out += "\n\n" + "\n".join(f"- {note}" for note in dict.fromkeys(notes))
    return out


def _params(run: Run, workload: str) -> dict[str, object]:
    for per in run.outcomes.values():
        outcome = per.get(workload)
        if outcome is not None and outcome.params:
            return outcome.params
    return {}


def _cell(run: Run, client: str, workload: str, metric: Metric, notes: list[str]) -> str:
    outcome = run.outcomes.get(client, {}).get(workload)
    if outcome is None:
        return "n/a"
    s = stat(run, client, workload, metric.key)
    if s is None:
        if outcome.skipped:
            notes.append(f"{client} / {workload}: skipped: {outcome.skipped}")
            return "skipped"
        if outcome.error:
            notes.append(f"{client} / {workload}: failed: {outcome.error}")
            return "failed"
        return "—"
    if outcome.error:
        notes.append(f"{client} / {workload}: incomplete: {outcome.error}")
    if metric.better == "count":
        return _fmt(s.extreme, 0)
    if metric.better == "info" or s.n == 1:
        return _fmt(s.median, metric.digits)
    return f"{_fmt(s.median, metric.digits)} ({_fmt(s.extreme, metric.digits)})"


# --- the floor -------------------------------------------------------------------------

# Per floor workload: its rate (or time) metric and its client-CPU metric.
FLOOR_METRICS: dict[str, tuple[str, str]] = {
    "put_seq": ("ops_s", "cpu_us_op"),
    "get_seq": ("ops_s", "cpu_us_op"),
    "delete_seq": ("ops_s", "cpu_us_op"),
    "txn_seq": ("ops_s", "cpu_us_op"),
    "put_threads": ("ops_s", "cpu_us_op"),
    "put_inflight": ("ops_s", "cpu_us_op"),
    "range_read": ("read_ms", "cpu_ms"),
    "watch_delivery": ("events_s", "cpu_us_per_event"),
    "lock_uncontended": ("cycles_s", "cpu_us_op"),
}
CPU_FLOOR_TARGET = 1.03
"""Client CPU per call at most this many times the bare-grpc floor's (issue 15)."""
CPU_FLOOR_WORKLOADS = ("put_seq", "get_seq", "delete_seq", "txn_seq", "put_inflight")


def floor_ratio(run: Run, client: str, workload: str, key: str) -> float | None:
    """etcdsync's median ÷ its floor's median (rates: < 1 is slower than the floor;
    times and CPU: > 1 costs more than the floor)."""
    mine = median(run, client, workload, key)
    floor = median(run, FLOORS[client], workload, key)
    if mine is None or floor is None or floor <= 0:
        return None
    return mine / floor


def floor_table(run: Run) -> str:
    """etcdsync against the same requests over a bare grpc channel, per workload."""
    flavours = [c for c in FLOORS if c in run.outcomes and FLOORS[c] in run.outcomes]
    if not flavours:
        return "No floor in this run (run the bare-sync / bare-async clients too)."
    header = ["workload"]
    for client in flavours:
        header += [f"{client} rate ÷ floor", f"{client} CPU ÷ floor"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for name in run.workloads:
        if name not in FLOOR_WORKLOADS or name not in FLOOR_METRICS:
            continue
        rate_key, cpu_key = FLOOR_METRICS[name]
        row = [name]
        for client in flavours:
            rate = floor_ratio(run, client, name, rate_key)
            if rate is not None and _metric(name, rate_key).better == "lower":
                rate = 1 / rate  # a time: shown as a rate ratio too (< 1: slower)
            cpu = floor_ratio(run, client, name, cpu_key)
            row += [_ratio(rate) or "n/a", _ratio(cpu) or "n/a"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# --- RPCs per recipe operation -----------------------------------------------------------

RPC_OPERATIONS: tuple[tuple[str, str, int, str], ...] = (
    (
        "lock_rpcs",
        "lock acquire + release, uncontended",
        2,
        "one txn (create the key, read the owner), one delete",
    ),
    (
        "handoff_rpcs",
        "contended handoff (holder's release to waiter's acquire)",
        2,
        "the holder's delete, one read by the waiter (no predecessor left, own key kept)",
    ),
    (
        "campaign_rpcs",
        "campaign + resign, uncontended",
        2,
        "one txn (create the key, read the leader), one delete",
    ),
    (
        "config_rpcs",
        "config update fan-out (beyond the writer's put)",
        0,
        "none: the update reaches every subscriber over the watch stream",
    ),
)


def rpc_table(run: Run) -> str:
    """Unary RPCs per recipe operation, per client, with the minimum."""
    if "recipe_rpcs" not in run.workloads:
        return "Not measured in this run."
    clients = [c for c in run.clients if run.outcomes.get(c, {}).get("recipe_rpcs")]
    header = ["operation", "minimum", *clients]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for key, label, minimum, why in RPC_OPERATIONS:
        row = [label, f"{minimum}: {why}"]
        for client in clients:
            st = stat(run, client, "recipe_rpcs", key)
            if st is None:
                row.append("—")
                continue
            msgs = stat(run, client, "recipe_rpcs", key.replace("_rpcs", "_watch_msgs"))
            cell = f"{st.extreme:g}"
            if msgs is not None and msgs.extreme:
                cell += f" + {msgs.extreme:g} watch msgs"
            row.append(cell)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# --- the targets -----------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    target: str
    measured: str
    met: bool | None  # None: not measurable in this run


def _ge(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _all(*flags: bool | None) -> bool | None:
    if any(flag is None for flag in flags):
        return None
    return all(flags)


def checks(run: Run) -> list[Check]:
    out: list[Check] = []
    s, a = "etcdsync-sync", "etcdsync-async"

    def adv(mine: str, others: tuple[str, ...], workload: str, key: str) -> float | None:
        return advantage(
            median(run, mine, workload, key),
            best_of(run, others, workload, key),
            _metric(workload, key).better,
        )

    def show(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}×"

    for workload, what in (("put_seq", "put"), ("get_seq", "get")):
        peer, go = adv(s, SYNC_PEERS, workload, "ops_s"), adv(s, ("go",), workload, "ops_s")
        cpu_peer = adv(s, SYNC_PEERS, workload, "cpu_us_op")
        cpu_go = adv(s, ("go",), workload, "cpu_us_op")
        out.append(
            Check(
                f"sync sequential {what} ≥ 1.2× best sync peer and ≥ 0.8× Go",
                f"ops/s {show(peer)} peer, {show(go)} Go (client CPU per op: "
                f"{show(cpu_peer)} peer, {show(cpu_go)} Go)",
                _all(_ge(peer, 1.2), _ge(go, 0.8)),
            )
        )
    x = adv(a, ASYNC_PEERS, "put_inflight", "ops_s")
    out.append(Check("async put, 64 in flight ≥ 1.5× aetcd", show(x), _ge(x, 1.5)))

    watch: list[str] = []
    flags: list[bool | None] = []
    for client in (s, a):
        lost = stat(run, client, "watch_delivery", "lost")
        lag = stat(run, client, "watch_delivery", "lag_ms")
        if lost is None or lag is None:
            flags.append(None)
            continue
        watch.append(f"{client}: {lost.extreme:.0f} lost, lag {lag.median:.1f} ms")
        flags.append(lost.extreme == 0 and lag.median <= 100)
    out.append(
        Check(
            "watch keeps up (lag ≤ 100 ms after the last write), 0 events lost",
            "; ".join(watch) or "n/a",
            _all(*flags),
        )
    )

    streams_text: list[str] = []
    flags = []
    for client in (s, a):
        st = stat(run, client, "watchers_large", "streams")
        n = _params(run, "watchers_large").get("n")
        if st is None:
            flags.append(None)
            continue
        streams_text.append(f"{client}: {n} watchers on {st.extreme:.0f} stream(s)")
        flags.append(st.extreme == 1)
    n_watchers = _params(run, "watchers_large").get("n", 10_000)
    out.append(
        Check(
            f"{n_watchers:,} watchers on one stream", "; ".join(streams_text) or "n/a", _all(*flags)
        )
    )

    lease_text: list[str] = []
    flags = []
    for client in (s, a):
        cpu = median(run, client, "leases_large", "cpu_pct")
        lost = stat(run, client, "leases_large", "lost")
        if cpu is None or lost is None:
            flags.append(None)
            continue
        lease_text.append(f"{client}: {cpu:.1f}% of one core, {lost.extreme:.0f} lost")
        flags.append(cpu < 10 and lost.extreme == 0)
    params = _params(run, "leases_large")
    out.append(
        Check(
            f"{params.get('n', 10_000):,} leases kept alive under 10% of one core",
            "; ".join(lease_text) or "n/a",
            _all(*flags),
        )
    )

    xs = adv(s, PEERS, "lock_uncontended", "cycles_s")
    xa = adv(a, PEERS, "lock_uncontended", "cycles_s")
    out.append(
        Check(
            "lock cycles ≥ 2× the best peer's recipe",
            f"sync {show(xs)}, async {show(xa)}",
            _all(_ge(xs, 2), _ge(xa, 2)),
        )
    )

    ws, wa = adv(s, PEERS, "lock_contended", "wall_s"), adv(a, PEERS, "lock_contended", "wall_s")
    left = [stat(run, c, "lock_contended", "leases_left") for c in (s, a)]
    left_text = ", ".join("n/a" if x is None else f"{x.extreme:.0f}" for x in left)
    out.append(
        Check(
            "4×200 contended cycles in ≤ half the best peer's time, 0 leases left",
            f"sync {show(ws)}, async {show(wa)} faster; leases left {left_text}",
            _all(
                _ge(ws, 2),
                _ge(wa, 2),
                *(None if x is None else x.extreme == 0 for x in left),
            ),
        )
    )

    rs, ra = adv(s, PEERS, "range_read", "read_ms"), adv(a, PEERS, "range_read", "read_ms")
    cs, ca = adv(s, PEERS, "range_read", "cpu_ms"), adv(a, PEERS, "range_read", "cpu_ms")
    cpu_ratios = []
    flags = []
    for client in (s, a):
        for workload in CPU_FLOOR_WORKLOADS:
            if not CLIENTS_BY_NAME[client].runs(WORKLOADS_BY_NAME[workload]):
                continue
            if workload not in run.workloads:
                continue
            r = floor_ratio(run, client, workload, FLOOR_METRICS[workload][1])
            flags.append(None if r is None else r <= CPU_FLOOR_TARGET)
            cpu_ratios.append(f"{client.removeprefix('etcdsync-')} {workload} {show(r)}")
    out.append(
        Check(
            f"client CPU per call ≤ {CPU_FLOOR_TARGET}× the bare-grpc floor's",
            ", ".join(cpu_ratios) or "n/a",
            _all(*flags) if flags else None,
        )
    )
    lock_floor = [floor_ratio(run, c, "lock_uncontended", "cycles_s") for c in (s, a)]
    out.append(
        Check(
            "uncontended lock cycles ≥ 0.9× the floor's two bare RPCs (txn + delete)",
            f"sync {show(lock_floor[0])}, async {show(lock_floor[1])}",
            _all(*(None if x is None else x >= 0.9 for x in lock_floor)),
        )
    )
    for key, label, minimum, _ in RPC_OPERATIONS:
        counts = [stat(run, c, "recipe_rpcs", key) for c in (s, a)]
        shown = ", ".join(
            f"{c.removeprefix('etcdsync-')} {'n/a' if x is None else f'{x.extreme:g}'}"
            for c, x in zip((s, a), counts, strict=True)
        )
        out.append(
            Check(
                f"{label}: at its minimum of {minimum} unary RPCs",
                shown,
                _all(*(None if x is None else x.extreme <= minimum for x in counts)),
            )
        )
    sweep = WORKLOADS_BY_NAME["sweep_watchers"]
    at_1000 = [
        (
            dict(curves.points(run, s, sweep.name, "threads")).get(1000),
            dict(curves.points(run, s, sweep.name, "rss_mb")).get(1000),
        )
    ]
    threads, rss = at_1000[0]
    out.append(
        Check(
            "1,000 sync callback watchers add ≤ 2 threads and ≤ 2 MiB",
            "n/a" if threads is None or rss is None else f"{threads:g} threads, {rss:.1f} MiB",
            None if threads is None or rss is None else threads <= 2 and rss <= 2,
        )
    )
    flat: list[str] = []
    flags = []
    for client in (s, a):
        pts = curves.points(run, client, "sweep_leases", "cpu_us_per_renewal")
        if len(pts) < 2 or pts[0][1] <= 0:
            flags.append(None)
            continue
        ratio = pts[-1][1] / pts[0][1]
        flat.append(
            f"{client.removeprefix('etcdsync-')} {pts[0][1]:.0f} µs at {pts[0][0]:,} → "
            f"{pts[-1][1]:.0f} µs at {pts[-1][0]:,} (×{ratio:.2f})"
        )
        flags.append(ratio <= 1.25)
    out.append(
        Check(
            "keepalive CPU per renewal flat (largest ÷ smallest sweep size ≤ 1.25)",
            "; ".join(flat) or "n/a",
            _all(*flags) if flags else None,
        )
    )
    range_cpu = [adv(c, PEERS, "range_read", "cpu_ms") for c in (s, a)]
    out.append(
        Check(
            "range read of 10,000 keys: client CPU at or below the best peer's",
            f"sync {show(range_cpu[0])}, async {show(range_cpu[1])} (peer ÷ etcdsync)",
            _all(*(None if x is None else x >= 1.0 for x in range_cpu)),
        )
    )
    watch_cpu = [adv(c, PEERS, "watch_delivery", "cpu_us_per_event") for c in (s, a)]
    out.append(
        Check(
            "watch delivery: watcher CPU per event at or below the best peer's",
            f"sync {show(watch_cpu[0])}, async {show(watch_cpu[1])} (peer ÷ etcdsync)",
            _all(*(None if x is None else x >= 1.0 for x in watch_cpu)),
        )
    )
    out.append(
        Check(
            "range read of 10,000 keys faster than every peer",
            f"sync {show(rs)}, async {show(ra)} vs the fastest peer (client CPU: "
            f"{show(cs)}, {show(ca)})",
            _all(_ge(rs, 1.0), _ge(ra, 1.0)),
        )
    )
    return out


def checks_markdown(run: Run) -> str:
    lines = ["| target | measured (medians) | met |", "|---|---|---|"]
    mark: dict[bool | None, str] = {True: "yes", False: "**no**", None: "n/a"}
    for check in checks(run):
        lines.append(f"| {check.target} | {check.measured} | {mark[check.met]} |")
    return "\n".join(lines)


# --- the document ----------------------------------------------------------------------


def machine_markdown(run: Run) -> str:
    lines = [f"- {key}: {value}" for key, value in run.machine.items()]
    lines.append(f"- etcd: {run.etcd} (one member, loopback, data dir in tmpfs)")
    for client in run.clients:
        spec = CLIENTS_BY_NAME[client]
        if client in run.unavailable:
            lines.append(f"- {client}: **not run**: {run.unavailable[client]}")
            continue
        versions = ", ".join(f"{k} {v}" for k, v in sorted(run.versions.get(client, {}).items()))
        note = f" — {spec.note}" if spec.note else ""
        lines.append(f"- {client}: {versions}{note}")
    return "\n".join(lines)


def document(
    run: Run,
    command: str,
    extra: Callable[[], str] | None = None,
    output: Path | None = None,
) -> str:
    """RESULTS.md; the sweeps' plots go to ``plots/`` beside ``output``."""
    base = (output or Path("RESULTS.md")).resolve().parent
    mode = "quick (reduced sizes, 1 repetition)" if run.quick else "full"
    parts = [
        "# etcdsync benchmark results",
        "",
        f"Generated by `{command}` ({mode}; {run.seconds:.0f} s, of which "
        f"{run.setup_seconds:.0f} s installing peers and building the Go ceiling). All "
        "figures come from this one run, on one etcd; the machine is shared, so compare "
        "columns, not runs. How each workload is measured: bench/README.md.",
        "",
        "## Machine",
        "",
        machine_markdown(run),
        "",
        "## Results",
        "",
        "Cells: median (min) over the repetitions — for counts, the worst repetition. "
        "Ratio columns compare medians and read as *how many times better etcdsync is* "
        "(> 1: etcdsync better): for rates etcdsync ÷ peer, for times, CPU and memory "
        "peer ÷ etcdsync. Best sync peer: etcd3, pyetcd (etcd-sdk-python); async peer: "
        "aetcd; Go: clientv3, the ceiling.",
        "",
        table(run),
        "",
        "Reading the table:",
        "",
        "- Locks: etcd3, pyetcd and aetcd lock one key with a new lease per acquire "
        "attempt, never revoked (the leases left), and are not FIFO: the process that "
        "releases usually takes the lock straight back (few holder changes), which keeps "
        "their contended wall time short. etcdsync and Go queue contenders by create "
        "revision: one holder change per cycle.",
        "- Leases: etcd3, pyetcd and aetcd have no keepalive manager; their rows are a "
        "user's loop renewing every lease with the library's one-shot refresh (a new "
        "stream per renewal) every TTL/3 from 16 threads (64 tasks for aetcd).",
        "- Watch: on 2 cores the writer, etcd and the watcher share the CPU, so the "
        "delivery rate is bounded by the writer; the watcher's CPU per event is the "
        "client's own cost.",
        "",
        "## The floor: etcdsync ÷ bare grpc",
        "",
        "The bare-sync and bare-async columns send the same requests over a raw grpc "
        "channel (sync stack / grpc.aio) in the same venv, with the same deadline, and "
        "keep the response messages as gRPC returns them (bench/drivers/bare_sync.py). "
        "Ratios are etcdsync's median ÷ the floor's median: for the rate, < 1 is slower "
        "than the floor; for client CPU (per call, per read, per event or per cycle), > 1 "
        "is what etcdsync adds on top of grpc. The floor's lock cycle is the two RPCs a "
        "lock needs at least: one txn, one delete.",
        "",
        floor_table(run),
        "",
        "## RPCs per recipe operation",
        "",
        "Counted by the server (its grpc_server_handled_total and "
        "grpc_server_msg_received_total counters) around each operation, with nothing "
        "else talking to it; keepalive renewals left out. The cells are unary RPCs, plus "
        "the messages sent on the shared watch stream (creates, cancels). etcd3, pyetcd "
        "and aetcd have no election or config recipe.",
        "",
        rpc_table(run),
        "",
        "## Cost curves",
        "",
        "Each sweep runs one workload at growing sizes, one process per size, the "
        "clients taking turns; the peers stop where their loops cannot keep up (their "
        "largest size is in the table). Per-item costs divide by the size; a ratio near "
        "×1 between the smallest and the largest size is a flat curve.",
        "",
        curves.section(run, base / "plots", base),
        "## Targets",
        "",
        checks_markdown(run),
        "",
    ]
    if extra is not None:
        parts += [extra(), ""]
    return "\n".join(parts)
