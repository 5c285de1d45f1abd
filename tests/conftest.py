"""Test-suite plumbing: run ``async def`` tests on a fresh event loop each.

The real-etcd fixtures (``etcd_server``, ``etcd_endpoint``...) come from the
``etcdsync.testing.plugin`` pytest plugin, registered by the package's entry point.
Tests under ``tests/_async`` are canonical; ``tests/_sync`` is generated from them
by ``scripts/unasync.py``, so every behaviour is checked in both flavours.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from typing import Any

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run coroutine tests with asyncio.run (no pytest-asyncio needed)."""
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
