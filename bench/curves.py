"""Cost curves: the sweeps' tables, their growth, and a PNG plot per sweep.

A sweep runs one workload at growing sizes (config.SWEEPS); each repetition record
carries its ``size``.  The plots need matplotlib (the project's ``bench`` extra:
``pip install -e '.[bench]'``, which ``make bench`` installs); without it the
tables and growth statements are written and RESULTS.md says why no plot is.
"""

# The tables use the multiplication sign on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import math
import statistics
from pathlib import Path

from .config import WORKLOADS_BY_NAME, Metric, Workload
from .runner import Run

_PER_ITEM_SCALE = {"s": 1e6, "ms": 1e3, "mb": 1024.0, "pct": 1e4}
"""Metric unit (from its key's suffix) -> factor to the per-item unit of config's
``per_item`` (s -> µs, ms -> µs, MiB -> KiB, % of a core -> µs of CPU per second)."""


def points(run: Run, client: str, workload: str, key: str) -> list[tuple[int, float]]:
    """(size, median value) for each size this client ran."""
    outcome = run.outcomes.get(client, {}).get(workload)
    if outcome is None:
        return []
    by_size: dict[int, list[float]] = {}
    for rep in outcome.reps:
        value = rep.get(key)
        if "size" in rep and isinstance(value, int | float) and math.isfinite(value):
            by_size.setdefault(int(rep["size"]), []).append(float(value))
    return sorted((size, statistics.median(values)) for size, values in by_size.items())


def per_item(workload: Workload, key: str, size: int, value: float) -> float:
    """``value`` per item of the sweep's size, in config's per-item unit (an empty unit:
    the metric is compared as measured, e.g. a latency)."""
    if not workload.per_item.get(key):
        return value
    suffix = key.rsplit("_", 1)[-1]
    return value * _PER_ITEM_SCALE.get(suffix, 1.0) / size


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}"
    return f"{value:.2g}"


def _clients(run: Run, workload: str) -> list[str]:
    return [c for c in run.clients if run.outcomes.get(c, {}).get(workload) is not None]


def table(run: Run, workload: Workload) -> str:
    clients = _clients(run, workload.name)
    sizes = sorted(
        {size for c in clients for size, _ in points(run, c, workload.name, _key0(workload))}
    )
    header = ["metric", "size", *clients]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for metric in workload.metrics:
        for i, size in enumerate(sizes):
            row = [metric.label if i == 0 else "", f"{size:,}"]
            for client in clients:
                found = dict(points(run, client, workload.name, metric.key)).get(size)
                row.append("—" if found is None else _fmt(found))
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _key0(workload: Workload) -> str:
    return workload.metrics[0].key


def growth(run: Run, workload: Workload) -> list[str]:
    """Per client and per-item metric: the cost per item at the smallest and the largest
    size, and their ratio (1.0: the cost grows linearly with the size, flat per item)."""
    out: list[str] = []
    for key, unit in workload.per_item.items():
        metric = _metric(workload, key)
        parts: list[str] = []
        for client in _clients(run, workload.name):
            pts = points(run, client, workload.name, key)
            if len(pts) < 2:
                continue
            (small, v_small), (large, v_large) = pts[0], pts[-1]
            a = per_item(workload, key, small, v_small)
            b = per_item(workload, key, large, v_large)
            ratio = f"×{b / a:.2f}" if a > 0 else "n/a"
            parts.append(f"{client} {_fmt(a)} at {small:,} → {_fmt(b)} at {large:,} ({ratio})")
        if parts:
            what = f"per item ({unit})" if unit else "as measured"
            out.append(f"- {metric.label}, {what}: " + "; ".join(parts))
    return out


def _metric(workload: Workload, key: str) -> Metric:
    return next(m for m in workload.metrics if m.key == key)


def plot(run: Run, workload: Workload, out_dir: Path) -> Path:
    """One PNG for a sweep: a panel per metric (per item where config says so), x the
    size on a log scale, a line per client.  Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        m for m in workload.metrics if m.better in ("lower", "higher") or m.key in workload.per_item
    ]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        unit = workload.per_item.get(metric.key)
        for client in _clients(run, workload.name):
            pts = points(run, client, workload.name, metric.key)
            if not pts:
                continue
            xs = [size for size, _ in pts]
            ys = [per_item(workload, metric.key, s, v) for s, v in pts]
            style = "-" if client.startswith("etcdsync") else "--"
            ax.plot(xs, ys, style, marker="o", label=client)
        ax.set_xscale("log")
        ax.set_xlabel(workload.sweep or "size")
        ax.set_title(f"{metric.label}" + (f"\n({unit})" if unit else ""), fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(workload.describe(_params(run, workload.name)), fontsize=10)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{workload.name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _params(run: Run, workload: str) -> dict[str, object]:
    for per in run.outcomes.values():
        outcome = per.get(workload)
        if outcome is not None and outcome.params:
            return outcome.params
    return {}


def section(run: Run, plots_dir: Path, relative_to: Path) -> str:
    """The "Cost curves" part of RESULTS.md (and the PNGs in ``plots_dir``)."""
    sweeps = [WORKLOADS_BY_NAME[w] for w in run.workloads if WORKLOADS_BY_NAME[w].sweep]
    if not sweeps:
        return "No sweep in this run."
    parts: list[str] = []
    for workload in sweeps:
        parts += [f"### {workload.name}: {workload.describe(_params(run, workload.name))}", ""]
        try:
            path = plot(run, workload, plots_dir)
        except ImportError:
            parts += ["(no plot: matplotlib is not installed; `pip install -e '.[bench]'`)", ""]
        else:
            rel = path.relative_to(relative_to) if path.is_relative_to(relative_to) else path
            parts += [f"![{workload.name}]({rel.as_posix()})", ""]
        parts += [table(run, workload), ""]
        lines = growth(run, workload)
        if lines:
            parts += [
                "Growth (the cost at the smallest and the largest size, and their ratio):",
                "",
                *lines,
                "",
            ]
        notes = [
            f"- {client}: {outcome.skipped or outcome.error}"
            for client in _clients(run, workload.name)
            if (outcome := run.outcomes[client][workload.name]).skipped or outcome.error
        ]
        if notes:
            parts += ["Notes:", "", *notes, ""]
    return "\n".join(parts)
