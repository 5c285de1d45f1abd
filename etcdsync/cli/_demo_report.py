"""What the demo prints about the run: the status line and the final summary."""

from __future__ import annotations

from collections.abc import Sequence

from ._common import emit
from ._demo_check import Check, WorkerLog

__all__ = ["print_summary", "status_line"]


def status_line(
    leader: str, lock: str, counter: str | int, members: int, logs: Sequence[WorkerLog]
) -> str:
    """Who leads, who holds the lock (and how many wait), the counter, how many
    members the group has, and the config version each worker runs."""
    seen = " ".join(f"{log.name}:{'killed' if log.killed else _version(log)}" for log in logs)
    return (
        f"| leader {leader:<8} | lock {lock:<19} | counter {counter:>4} "
        f"| members {members} | config {seen}"
    )


def _version(log: WorkerLog) -> str:
    seen = log.versions_seen
    return f"v{seen[-1]}" if seen else "-"


def print_summary(logs: Sequence[WorkerLog], checks: Sequence[Check], took: float) -> bool:
    """Print each worker's acknowledged increments and every check; True if all passed."""
    emit("")
    counts = ", ".join(
        f"{log.name} {len(log.acked)}" + (" (killed)" if log.killed else "") for log in logs
    )
    emit(f"summary after {took:.1f} s - increments acknowledged: {counts}")
    for check in checks:
        emit(f"  {'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
    passed = all(check.ok for check in checks)
    emit("self-check passed" if passed else "self-check FAILED")
    return passed
