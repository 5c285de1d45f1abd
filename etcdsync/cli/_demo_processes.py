"""The demo's worker processes: how one is started, and the threads reading its output.

Each worker (``etcdsync demo-worker``, see ``_demo_worker``) prints one JSON report per
line on stdout; a reader thread per worker decodes them and puts them, and finally the
exit code, on the demo's inbox, so that one thread handles everything in order.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue
import subprocess
import sys
import threading
from typing import IO, Any

from ._common import ENV_PASSWORD
from ._demo_check import WorkerLog

__all__ = ["WorkerProcess", "worker_command"]


def worker_command(args: argparse.Namespace, endpoints: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a worker connecting like the demo does;
    each worker adds its own ``--prefix``, ``--name`` and ``--ttl``."""
    argv = [sys.executable, "-m", "etcdsync", "demo-worker", "--endpoints", endpoints]
    for flag, value in (
        ("--cacert", args.cacert),
        ("--cert", args.cert),
        ("--key", args.key),
        ("--server-name", args.server_name),
        ("--user", args.user),
    ):
        if value:
            argv += [flag, value]
    env = dict(os.environ)
    if args.password:
        env[ENV_PASSWORD] = args.password  # not on the command line, where ps shows it
    return argv, env


class WorkerProcess:
    """A worker process and the threads reading its output."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], inbox: queue.Queue[Any]):
        self.name = name
        self.log = WorkerLog(name)
        self.stderr: collections.deque[str] = collections.deque(maxlen=20)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            # Its own session: a Ctrl-C at the terminal reaches the demo alone, which
            # then stops the workers itself.
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._read, args=(self.proc.stdout, inbox), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), daemon=True).start()

    def _read(self, stream: IO[str], inbox: queue.Queue[Any]) -> None:
        for line in stream:
            try:
                report = json.loads(line)
            except ValueError:
                self.stderr.append(line.rstrip())
                continue
            inbox.put(("report", self, report))
        inbox.put(("exit", self, self.proc.wait()))

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr.append(line.rstrip())

    def stop(self) -> None:
        """Ask for a clean stop (release, resign, report)."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        except OSError:
            pass  # it is gone already

    def kill(self) -> None:
        self.proc.kill()  # Popen never signals a process it has reaped
