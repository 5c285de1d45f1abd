"""Worker processes for the multi-process recipe tests: start, collect JSON lines, replay.

A worker is ``python <test file> MODE ARGS...`` (the test file runs itself); it
prints one JSON object per line.  Output goes to a temporary file, so a chatty
worker never blocks on a full pipe while the test waits for another one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import IO, Any

from etcdsync import Client
from etcdsync.watch_types import Event


class Workers:
    """Processes started together; :meth:`results` waits for all of them."""

    def __init__(self, script: str, argvs: Sequence[Sequence[str]]) -> None:
        self._outputs: list[IO[str]] = []
        self.procs: list[subprocess.Popen[str]] = []
        for argv in argvs:
            out = tempfile.TemporaryFile("w+")
            self._outputs.append(out)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, script, *argv], stdout=out, stderr=subprocess.STDOUT, text=True
                )
            )

    def results(self, timeout: float) -> list[list[dict[str, Any]]]:
        """Each worker's JSON lines, once all have exited 0 (else the test fails)."""
        deadline = time.monotonic() + timeout
        try:
            for proc in self.procs:
                proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            stuck = [i for i, proc in enumerate(self.procs) if proc.poll() is None]
            self.kill()
            tails = "\n".join(f"worker {i}: {self._text(i)[-1500:]}" for i in stuck)
            raise AssertionError(
                f"workers {stuck} still running after {timeout} s\n{tails}"
            ) from None
        finally:
            self.kill()
        out: list[list[dict[str, Any]]] = []
        for i, proc in enumerate(self.procs):
            text = self._text(i)
            assert proc.returncode == 0, f"worker failed (rc={proc.returncode}):\n{text[-3000:]}"
            out.append([json.loads(line) for line in text.splitlines() if line.startswith("{")])
        return out

    def _text(self, index: int) -> str:
        file = self._outputs[index]
        file.seek(0)
        return file.read()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def replay_until(
    etcd: Client, prefix: str, start_revision: int, end_key: str, timeout: float = 30.0
) -> list[Event]:
    """Every event under ``prefix`` from ``start_revision`` up to the put of ``end_key``
    (which the caller writes, under ``prefix``, once the workload is over)."""
    etcd.put(end_key, "end")
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    with etcd.watch(prefix, prefix=True, start_revision=start_revision) as watcher:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"the replay of {prefix!r} did not reach {end_key!r}"
            for event in watcher.get(timeout=left).events:
                if event.kv.key == end_key.encode():
                    return events
                events.append(event)
