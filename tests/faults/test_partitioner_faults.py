"""Partitioner under faults: three members across a leader SIGKILL on a 3-member cluster.

Three members (threads of this process, one sync client each, each client starting on
another member) share 30 items with a TTL of 2 s and make guarded writes per owned
item: read the item's record, write ``count + 1`` guarded only by ``is_owner(item)``.
A member whose membership is lost (its lease may not survive the election) starts
again.  The leader is killed mid-run; while the cluster elects a new one, a member
stops (handing its items over) and a fourth one joins; the killed member is
restarted.  Afterwards the store's history must show owner keys that never coexist
and record counts that grow by exactly one per write, each write made under the
owner key of the time (``helpers.partitions``), every acknowledged write present,
and every item owned again by the rendezvous owner among the three members.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from helpers.partitions import check_history, replay, wait_for_assignment

from etcdsync import Op, errors
from etcdsync.testing import EtcdCluster

from .conftest import TTL, client, endpoints_first, report

pytestmark = pytest.mark.faults

ITEMS = [f"item-{i:02d}" for i in range(30)]


class _Member:
    """One partitioner member in a thread: guarded writes round after round."""

    def __init__(self, endpoints: Sequence[str], name: str, records: str) -> None:
        self.endpoints, self.name, self.records = list(endpoints), name, records
        self.writes: list[tuple[str, str, int]] = []
        self.starts = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _start(self, part: Any) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                part.start(timeout=5)
                self.starts += 1
                return
            except errors.EtcdError:
                if time.monotonic() > deadline:
                    raise
                self.stop.wait(0.2)  # the cluster is electing: try again

    def _run(self) -> None:
        try:
            with client(self.endpoints) as etcd:
                part = etcd.partitioner(self.name, ITEMS, ttl=TTL)
                self._start(part)
                while not self.stop.is_set():
                    if not part.running:  # the membership was lost: join again
                        self._start(part)
                    me = part.member_id
                    for item in sorted(part.owned()):
                        try:
                            guard, token = part.is_owner(item), part.fencing_token(item)
                        except errors.NotOwnerError:
                            continue
                        key = self.records + item
                        value = ""
                        try:
                            current = etcd.get(key).value
                            count = int(current.split(b":")[0]) if current else 0
                            value = f"{count + 1}:{me}:{token}"
                            done = etcd.txn([guard], [Op.put(key, value)])
                        except errors.EtcdError:
                            continue  # the fault: the outcome is checked in the store
                        if done.succeeded:
                            self.writes.append((item, value, done.revision))
                    self.stop.wait(0.05)
                part.stop()
        except BaseException as exc:  # handed to the test
            self.error = exc

    def finish(self, timeout: float) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "a member did not stop"
        if self.error is not None:
            raise self.error


def _wait_writes(etcd: Any, records: str, count: int, timeout: float) -> None:
    """Wait (on a watch from now) for ``count`` more record writes."""
    seen = 0
    deadline = time.monotonic() + timeout
    with etcd.watch(records, prefix=True) as watcher:
        while seen < count:
            left = deadline - time.monotonic()
            assert left > 0, f"only {seen} of {count} writes within {timeout} s"
            seen += len(watcher.get(timeout=left).events)


@pytest.mark.timeout(90)
def test_partitioner_across_a_leader_kill(cluster: EtcdCluster) -> None:
    name, records = "part", "records/"
    with client(cluster.endpoints) as etcd:
        start = etcd.get(name).revision + 1
        members = [_Member(endpoints_first(cluster.endpoints, i), name, records) for i in range(3)]
        try:
            wait_for_assignment(etcd, name, 3, ITEMS, 20)
            _wait_writes(etcd, records, len(ITEMS), 15)
            before = sum(len(m.writes) for m in members)
            leader = cluster.wait_for_leader()
            cluster.kill(leader)
            killed_at = time.monotonic()
            # Shares move during the election: a member leaves, another joins.
            members[0].finish(30)
            members.append(_Member(endpoints_first(cluster.endpoints, leader), name, records))
            settled_at, _ = wait_for_assignment(etcd, name, 3, ITEMS, 20)
            cluster.start_member(leader)
            # Work goes on after the fault, on the healed cluster.
            resumed = sum(len(m.writes) for m in members)
            wait_for_assignment(etcd, name, 3, ITEMS, 20)
            _wait_writes(etcd, records, len(ITEMS), 15)
        finally:
            for m in members:
                m.stop.set()
        for m in members:
            m.finish(30)
        assert etcd.get(f"{name}/", prefix=True, count_only=True).count == 0
        history = check_history(
            replay(etcd, f"{name}/owners/", start), replay(etcd, records, start), records
        )
    assert set(history.tenure) == set(ITEMS)
    acked = [write for m in members for write in m.writes]
    assert set(acked) <= history.stored, "acknowledged guarded writes missing from the store"
    assert len(acked) > resumed >= before > 0
    report(
        f"partitioner (leader SIGKILL + a leave and a join, 30 items, TTL {TTL} s, etcd "
        f"{cluster.version}): {history.writes} guarded writes, {history.ownerships} "
        f"ownerships, 0 overlaps, 0 lost updates; every item owned by its rendezvous owner "
        f"{settled_at - killed_at:.2f} s after the kill; "
        f"{sum(m.starts for m in members) - len(members)} rejoin(s) after a lost membership"
    )
