"""etcdsync without the ``otel`` extra (issue 16, item 2).

In a fresh interpreter where ``import opentelemetry`` fails (as when the extra is
not installed), etcdsync imports, talks to etcd and takes a lock as usual, and
``telemetry.enable()`` raises a typed error naming the extra.  With OpenTelemetry
installed, nothing imports it until ``enable()`` is called.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

_BLOCK = """
import importlib.abc, sys

class _NoOtel(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, _NoOtel())
"""

_USE = """
import sys
from etcdsync import Client, errors, telemetry

with Client(ENDPOINT) as etcd:
    etcd.put(PREFIX + "k", "v")
    assert etcd.get(PREFIX + "k").kv.value == b"v"
    with etcd.lock(PREFIX + "l", ttl=10) as lock:
        assert lock.held
    election = etcd.election(PREFIX + "e", ttl=10)
    election.campaign("me")
    election.resign()
assert not telemetry.is_enabled()
assert not any(m.split(".")[0] == "opentelemetry" for m in sys.modules), "imported"
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_etcdsync_works_without_opentelemetry(etcd_endpoint: str, prefix: str) -> None:
    setup = f"ENDPOINT = {etcd_endpoint!r}\nPREFIX = {prefix!r}\n"
    enable = textwrap.dedent(
        """
        try:
            telemetry.enable()
        except errors.UnsupportedError as exc:
            assert "etcdsync[otel]" in str(exc), exc
            print("refused")
        """
    )
    result = _run(_BLOCK + setup + _USE + enable)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "refused"


def test_opentelemetry_is_not_imported_until_enabled(etcd_endpoint: str, prefix: str) -> None:
    setup = f"ENDPOINT = {etcd_endpoint!r}\nPREFIX = {prefix!r}\n"
    result = _run(setup + _USE)
    assert result.returncode == 0, result.stderr
