"""The benchmark's quick mode still runs end to end (so ``make bench`` never rots).

Runs ``python -m bench --quick`` for the two etcdsync flavours and their bare-grpc
floors only (the peers need network installs) and checks that the results table
has a row for every workload with a positive figure for each client that runs it,
and that the floor table compares etcdsync with the floor.  No speed is asserted:
the figures depend on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.config import CLIENTS_BY_NAME, FLOOR_WORKLOADS, WORKLOADS  # noqa: E402

FLAVOURS = ("etcdsync-sync", "etcdsync-async")
CLIENTS = (*FLAVOURS, "bare-sync", "bare-async")


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
        sys.executable, "-m", "bench", "--quick", "--clients", ",".join(CLIENTS),
        "--output", str(tmp_path / "results.md"), "--json", str(tmp_path / "results.json"),
    ]  # fmt: skip
    etcd = os.environ.get("ETCDSYNC_TEST_ETCD")
    if etcd:
        cmd += ["--etcd", etcd]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(done.stdout)
    document = (tmp_path / "results.md").read_text()
    assert document.startswith("# etcdsync benchmark results")

    for workload in WORKLOADS:
        if workload.sweep:
            continue  # cost curves: checked below
        assert workload.name in rows, f"no row for {workload.name}:\n{done.stdout}"
        for index, metric in enumerate(workload.metrics):
            row = rows[workload.name][metric.label]
            for client in CLIENTS:
                if not CLIENTS_BY_NAME[client].runs(workload):
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

    # The floor table: a finite ratio for every workload the floor runs.
    floor = document.split("## The floor")[1].split("## ")[0]
    floor_rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
        for line in floor.splitlines()
        if line.startswith("| ") and not line.startswith("| workload")
    }
    for name in FLOOR_WORKLOADS:
        cells = [c for c in floor_rows[name] if c != "n/a"]
        assert cells, (name, floor_rows)
        assert all(float(c.rstrip("\u00d7")) > 0 for c in cells), (name, floor_rows[name])

    # The cost curves: a table per sweep with a figure per size for each flavour, the
    # growth stated, and a plot when matplotlib (the bench extra) is installed.
    curves = document.split("## Cost curves")[1].split("## Targets")[0]
    for workload in WORKLOADS:
        if not workload.sweep:
            continue
        part = curves.split(f"### {workload.name}:")[1].split("### ")[0]
        assert "Growth" in part, part
        table = [line for line in part.splitlines() if line.startswith("|")]
        header = [c.strip() for c in table[0].strip("|").split("|")]
        assert header[:2] == ["metric", "size"], table[0]
        for client in FLAVOURS:
            assert client in header, (workload.name, header)
        rows = [line for line in table[2:]]  # after the header and its rule
        assert len(rows) == len(workload.metrics) * len(workload.quick["sizes"]), part
        for row in rows:
            cells = [c.strip() for c in row.strip("|").split("|")]
            for client in FLAVOURS:
                value = cells[header.index(client)]
                assert value != "\u2014", (workload.name, client, row)
                assert float(value.replace(",", "")) >= 0, (workload.name, client, row)
        if importlib.util.find_spec("matplotlib") is not None:
            assert (tmp_path / "plots" / f"{workload.name}.png").stat().st_size > 1000

    # What bounds a missed memory target (bench.miss_profiles): the sites holding the
    # heap's growth while the watchers are created, read back from the run's JSON.
    # (The CPU profiles need py-spy, a download: not run here.)
    from bench import miss_profiles
    from bench.runner import Run

    run = Run.from_json(json.loads((tmp_path / "results.json").read_text()))
    assert run.outcomes["etcdsync-sync"]["sweep_watchers"].reps
    subject = miss_profiles.Subject(
        "etcdsync-sync", "sweep_watchers", kind="memory", overrides=(("n", 100),)
    )
    lines = miss_profiles.memory_markdown(run, subject)
    sites = [line for line in lines if line.startswith("| ") and ".py:" in line]
    assert sites, lines
    assert any("etcdsync" in line or "_sync" in line for line in sites), sites
    assert all(float(line.split("|")[2]) >= 0 for line in sites[:1]), sites
