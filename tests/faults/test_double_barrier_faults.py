"""The double barrier's enter() and leave() called *during* a leader election.

``test_recipe_faults_more.py`` has participants wait in the barrier across a leader
kill; here the calls themselves start right after the SIGKILL, before a new leader is
elected, so their first requests (the session's lease grant, the waiter key's put, the
``ready`` write, the deletes of ``leave()``) time out or find no leader.  Like a lock's
acquire, the barrier repeats them within the caller's deadline (``recipes_docs/
barrier.md``), so:

* the last participant, arriving during the election, enters, and everyone enters at
  one revision, after its arrival;
* everyone leaves during a second election (the new leader killed), nobody before the
  last one started to leave, and no waiter key is left behind.
"""

from __future__ import annotations

import threading
import time

import pytest

from etcdsync import errors
from etcdsync.testing import EtcdCluster

from .conftest import client, endpoints_first, report, wait_for
from .history import FAIL, INVOKE, OK, History

pytestmark = pytest.mark.faults

COUNT = 3
DEADLINE = 20.0  # each call's timeout: far beyond an election (about 1 s here)


def _kill_leader(cluster: EtcdCluster, history: History) -> tuple[int, float]:
    leader = cluster.wait_for_leader()
    killed_at = history.event("nemesis", "kill", member=leader).time
    cluster.kill(leader)
    return leader, killed_at


@pytest.mark.timeout(60)
def test_double_barrier_enter_and_leave_during_leader_elections(
    cluster: EtcdCluster, history: History
) -> None:
    name = "db2/round"
    began = time.monotonic()
    go_leave = threading.Event()
    arrive_last = threading.Event()

    def participate(index: int) -> None:
        actor = f"a{index}"
        with client(endpoints_first(cluster.endpoints, index)) as etcd:
            if index == COUNT - 1:
                arrive_last.wait(30)
            barrier = etcd.double_barrier(name, COUNT, ttl=10)
            history.record(actor, INVOKE, "enter")
            try:
                opened = barrier.enter(timeout=DEADLINE)
            except errors.EtcdError as exc:
                history.record(actor, FAIL, "enter", {}, repr(exc))
                return
            history.record(actor, OK, "enter", {"revision": opened})
            go_leave.wait(30)
            history.record(actor, INVOKE, "leave")
            try:
                barrier.leave(timeout=DEADLINE)
            except errors.EtcdError as exc:
                history.record(actor, FAIL, "leave", {}, repr(exc))
                return
            history.record(actor, OK, "leave")

    threads = [threading.Thread(target=participate, args=(i,), daemon=True) for i in range(COUNT)]
    for thread in threads:
        thread.start()
    with client(cluster.endpoints) as etcd:

        def waiting() -> int:
            return etcd.get(f"{name}/waiters/", prefix=True, count_only=True).count

        wait_for(lambda: waiting() == COUNT - 1, 10, "the first participants to arrive")
        # The last one arrives the moment the leader dies: its session, its key and
        # the ready key are written across the election.
        first_leader, first_kill = _kill_leader(cluster, history)
        arrive_last.set()
        wait_for(lambda: len(history.select("enter")) == 2 * COUNT, 30, "every enter() to end")
        assert history.select("enter", FAIL) == [], history.select("enter", FAIL)
        entered_at = max(e.time for e in history.select("enter", OK))
        cluster.start_member(first_leader)
        history.event("nemesis", "restarted", member=first_leader)
        # Everyone leaves the moment the new leader dies.
        second_leader, second_kill = _kill_leader(cluster, history)
        go_leave.set()
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive(), "a participant did not finish"
        cluster.start_member(second_leader)
        history.event("nemesis", "restarted", member=second_leader)
        assert waiting() == 0, "a participant's key outlived its leave()"
    entered = history.select("enter", OK)
    last_arrival = max(e.time for e in history.select("enter", INVOKE))
    assert all(e.time > last_arrival for e in entered), "entered before the last arrived"
    assert len({e.args["revision"] for e in entered}) == 1, "the barrier opened twice"
    assert history.select("leave", FAIL) == [], history.select("leave", FAIL)
    left = history.select("leave", OK)
    assert len(left) == COUNT
    last_leave = max(e.time for e in history.select("leave", INVOKE))
    assert all(e.time >= last_leave for e in left), "left before the last one left"
    report(
        f"double barrier election scenario ({COUNT} participants, etcd {cluster.version}): "
        f"the last arrived at the leader's SIGKILL and all entered "
        f"{entered_at - first_kill:.2f} s after it, at one revision; all left across a "
        f"second leader kill within {max(e.time for e in left) - second_kill:.2f} s; "
        f"{time.monotonic() - began:.1f} s in all"
    )
