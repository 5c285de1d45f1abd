"""Test-suite plumbing: run ``async def`` tests on a fresh event loop each.

The real-etcd fixtures (``etcd_server``, ``etcd_endpoint``...) come from the
``etcdsync.testing.plugin`` pytest plugin, registered by the package's entry point.
Tests under ``tests/_async`` are canonical; ``tests/_sync`` is generated from them
by ``scripts/unasync.py``, so every behaviour is checked in both flavours.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

_IN_FRESH_INTERPRETER = "ETCDSYNC_TEST_IN_FRESH_INTERPRETER"


def _run_in_fresh_interpreter(item: pytest.Function, env: dict[str, str]) -> None:
    """Run one test alone in a new pytest process with ``env`` added to its environment.

    For tests whose process state matters more than their code: a test that forks must
    not inherit the gRPC threads and pollers that hundreds of earlier tests left in
    this process, and gRPC reads its environment (``GRPC_POLL_STRATEGY``) only once,
    when it is first imported.
    """
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", item.nodeid]
    child_env = {**os.environ, **env, _IN_FRESH_INTERPRETER: "1"}
    result = subprocess.run(
        command,
        cwd=item.config.rootpath,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"in a fresh interpreter ({env}): exit {result.returncode}\n"
            f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}",
            pytrace=False,
        )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run coroutine tests with asyncio.run (no pytest-asyncio needed); run tests
    marked ``fresh_interpreter`` in a new pytest process."""
    marker = pyfuncitem.get_closest_marker("fresh_interpreter")
    if marker is not None and not os.environ.get(_IN_FRESH_INTERPRETER):
        _run_in_fresh_interpreter(pyfuncitem, dict(marker.kwargs.get("env", {})))
        return True
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs: dict[str, Any] = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(pyfuncitem.obj(**kwargs))
    return True


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix no other test (of either flavour) uses on the shared server."""
    return f"{request.node.nodeid}/{uuid.uuid4().hex[:8]}/"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the multi-process scenarios (``tests/test_*_processes.py``) ``processes``.

    They prove exclusion and exactly-once delivery across real processes and take most
    of the suite's time; CI runs them on its main leg and deselects them
    (``-m "not processes"``) on the legs that check other Pythons and dependency ends.
    """
    for item in items:
        if item.path.name.endswith("_processes.py"):
            item.add_marker(pytest.mark.processes)
