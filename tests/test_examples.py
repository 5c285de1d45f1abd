"""Every example in ``examples/`` runs to completion against a real etcd (so none rots)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# One entry per example script; each takes the etcd endpoint as its only argument.
SCRIPTS = [
    "config_watcher.py",
    "cron_once.py",
    "delay_queue.py",
    "election.py",
    "election_async.py",
    "leader_worker_pool.py",
    "lock.py",
    "lock_async.py",
    "multi_lock.py",
    "namespaces.py",
    "partitioned_workers.py",
    "prefix_cache.py",
    "quickstart.py",
    "quickstart_async.py",
    "service_discovery.py",
    "stm_transfer.py",
    "typed_config.py",
    "typed_config_async.py",
    "web_service_async.py",
    "work_queue.py",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script: str, etcd_endpoint: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), etcd_endpoint],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{script} printed nothing"
