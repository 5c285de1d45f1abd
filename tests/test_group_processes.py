"""Group membership across real processes (sync client).

Two member processes join a group with a TTL of 2 s; one is killed with SIGKILL: it
leaves ``members()`` within TTL + 1 s, with nobody's help but its lease's expiry, and
a watch of the group reports every join and leave once, in order.

The worker processes run this very file: ``python test_group_processes.py ...``.
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
from pathlib import Path

import pytest

from etcdsync import Client, errors
from etcdsync.group_types import MembershipEventType

THIS = str(Path(__file__).resolve())
TTL = 2
JOIN, LEAVE = MembershipEventType.JOIN, MembershipEventType.LEAVE


def _member(endpoint: str, name: str) -> int:
    """Join ``name`` (TTL 2 s), say so, leave when told (or die when killed)."""
    with Client(endpoint) as etcd:
        group = etcd.group(name, ttl=TTL)
        member = group.join(f"pid-{os.getpid()}")
        print(f"joined {member.id}", flush=True)
        sys.stdin.readline()
        group.leave()
        print("left", flush=True)
    return 0


class _Member:
    def __init__(self, endpoint: str, name: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, THIS, endpoint, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output within {timeout} s")
        if line is None:
            pytest.fail(f"the member ended (rc={self.proc.wait()})")
        return line

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def test_a_killed_member_leaves_within_its_ttl(etcd_endpoint: str, prefix: str) -> None:
    name = prefix + "group"
    with Client(etcd_endpoint) as etcd:
        group = etcd.group(name)
        with group.watch() as watch:
            members = [_Member(etcd_endpoint, name) for _ in range(2)]
            try:
                ids = [m.line(20).split()[1] for m in members]
                joins = [watch.get(timeout=10) for _ in range(2)]
                assert sorted((e.type, e.member.id) for e in joins) == sorted(
                    (JOIN, i) for i in ids
                )
                victim, survivor = members
                victim.proc.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                event = watch.get(timeout=TTL + 5)
                left_after = time.monotonic() - killed_at
                assert (event.type, event.member.id) == (LEAVE, ids[0])
                assert left_after <= TTL + 1, f"left {left_after:.2f} s after the SIGKILL"
                assert [m.id for m in group.members()] == [ids[1]]
                # Gone with its lease: nobody deleted the key.
                with pytest.raises(errors.LeaseNotFoundError):
                    etcd.time_to_live(event.member.lease)
                # The survivor leaves by itself; nothing else happened meanwhile.
                assert survivor.proc.stdin is not None
                survivor.proc.stdin.write("leave\n")
                survivor.proc.stdin.flush()
                assert survivor.line(10) == "left"
                event = watch.get(timeout=5)
                assert (event.type, event.member.id) == (LEAVE, ids[1])
                with pytest.raises(errors.GroupTimeout):
                    watch.get(timeout=0.3)
            finally:
                for m in members:
                    m.kill()
        assert group.members() == []
    print(f"\ngroup member SIGKILLed with TTL {TTL} s: left the group after {left_after:.2f} s")


def _main(argv: Sequence[str]) -> int:
    endpoint, name = argv
    return _member(endpoint, name)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
