"""The benchmark's quick mode still runs end to end (so ``make bench`` never rots).

Runs ``python -m bench --quick`` for the two etcdsync flavours only (the peers
need network installs) and checks that the results table has a row for every
workload with a positive figure for each flavour that runs it.  No speed is
asserted: the figures depend on the machine.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.config import CLIENTS_BY_NAME, WORKLOADS  # noqa: E402

FLAVOURS = ("etcdsync-sync", "etcdsync-async")


def _number(cell: str) -> float:
    """The median from a cell such as ``1,234 (1,100)`` or ``0.52``."""
    return float(cell.split(" (")[0].replace(",", ""))


def _rows(table: str) -> dict[str, dict[str, dict[str, str]]]:
    """workload -> metric label -> client -> cell, from the first markdown table."""
    lines: list[str] = []
    for line in table.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break  # the targets table follows after a blank line
    lines = [line for line in lines if not line.startswith("|---")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows: dict[str, dict[str, dict[str, str]]] = {}
    workload = ""
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0].startswith("**"):
            workload = cells[0].split("**")[1]
        rows.setdefault(workload, {})[cells[1]] = dict(zip(header, cells, strict=True))
    return rows


@pytest.mark.timeout(300)
def test_quick_bench_reports_every_workload(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "bench", "--quick", "--clients", ",".join(FLAVOURS),
        "--output", str(tmp_path / "results.md"), "--json", str(tmp_path / "results.json"),
    ]  # fmt: skip
    etcd = os.environ.get("ETCDSYNC_TEST_ETCD")
    if etcd:
        cmd += ["--etcd", etcd]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(done.stdout)
    assert (tmp_path / "results.md").read_text().startswith("# etcdsync benchmark results")

    for workload in WORKLOADS:
        assert workload.name in rows, f"no row for {workload.name}:\n{done.stdout}"
        for index, metric in enumerate(workload.metrics):
            row = rows[workload.name][metric.label]
            for client in FLAVOURS:
                if CLIENTS_BY_NAME[client].kind not in workload.kinds:
                    assert row[client] == "n/a"
                    continue
                value = _number(row[client])  # "skipped"/"failed" would not parse
                assert math.isfinite(value), (workload.name, metric.label, client, row)
                if index == 0:  # the workload's headline figure: a rate or a duration
                    assert value > 0, (workload.name, metric.label, client, row)
                else:
                    assert value >= 0, (workload.name, metric.label, client, row)
                if metric.key in ("lost", "overlaps", "failures"):
                    # Correctness, not speed: every event delivered, the lock exclusive.
                    assert value == 0, (workload.name, metric.label, client, row)
