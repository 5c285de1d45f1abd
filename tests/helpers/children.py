"""Interactive worker processes for the barrier and queue process tests.

A :class:`Child` runs ``python <test file> MODE ARGS...`` (the test file runs
itself as the worker) and hands its stdout to the test line by line, with
timeouts, through a reader thread; the test can write to its stdin and kill it.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import pytest


class Child:
    """A worker process whose output lines are read by a thread (so reads time out)."""

    def __init__(self, script: str, *args: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, script, *(str(a) for a in args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.rstrip("\n")))
        self.lines.put(None)

    def timed_line(self, timeout: float) -> tuple[float, str]:
        """The next line and when it was read (``time.monotonic()``); fails the test
        if none comes in time or the process ends first."""
        try:
            item = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output within {timeout} s; so far: {self.seen[-20:]}")
        if item is None:
            self.lines.put(None)  # stays ended for later reads
            pytest.fail(f"the process ended (rc={self.proc.wait()}); output: {self.seen[-20:]}")
        self.seen.append(item[1])
        return item

    def line(self, timeout: float) -> str:
        return self.timed_line(timeout)[1]

    def pending(self) -> list[str]:
        """The lines already received and not read yet (no waiting)."""
        out = []
        while True:
            try:
                item = self.lines.get_nowait()
            except queue.Empty:
                return out
            if item is None:
                self.lines.put(None)
                return out
            self.seen.append(item[1])
            out.append(item[1])

    def rest(self, timeout: float) -> list[str]:
        """Every remaining line, once the process has exited."""
        self.proc.wait(timeout)
        out = []
        while (item := self.lines.get(timeout=timeout)) is not None:
            out.append(item[1])
        self.lines.put(None)
        self.seen += out
        return out

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL (resumed first, in case it is stopped); waits for the exit."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)


def kill_all(children: Sequence[Child]) -> None:
    for child in children:
        child.kill()
