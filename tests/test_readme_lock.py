"""The README's lock snippet, exactly as written there, run twice in a row.

It used to write its data under the lock's own prefix (``jobs/nightly/last-run``): a key
without a lease that sorted first and held the lock for good, so the second run waited
out its whole timeout.  The snippet runs in a namespace, so its keys stay the test's.
"""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path

from etcdsync import Client, Op

README = Path(__file__).resolve().parent.parent / "README.md"


def _lock_snippet() -> str:
    """The ``with etcd.lock(...)`` block of the README's recipes example."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if 'with etcd.lock("jobs/nightly"' in line)
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


def test_the_readme_lock_snippet_runs_twice_without_waiting(
    etcd_endpoint: str, prefix: str
) -> None:
    snippet = _lock_snippet()
    timeout = float(re.search(r"timeout=(\d+)", snippet).group(1))  # type: ignore[union-attr]
    with Client(etcd_endpoint) as client:
        etcd = client.namespace(prefix)
        for _ in range(2):
            started = time.monotonic()
            exec(snippet, {"etcd": etcd, "Op": Op})
            assert time.monotonic() - started < min(timeout, 5.0)
        # Nothing of the lock is left, and the data lives outside its prefix.
        assert etcd.get("jobs/nightly/", prefix=True, count_only=True).count == 0
        assert etcd.get("state/nightly/last-run").value == b"today"
