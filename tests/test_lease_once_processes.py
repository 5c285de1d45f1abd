"""Run-once leases across real processes (sync client): one winner per period.

Eight processes race for a name with a 1-second period (the shortest lease TTL
the test servers grant: etcd's minimum is 1.5 election timeouts, rounded up).
Each process tries, then watches the slot keys from the revision of its answer on
and tries again as soon as a slot is deleted (its period expired) - no sleeps: the
races are driven by the expiries themselves.  Afterwards the store's history of
the slot keys is replayed and must agree with what the processes were told:

* every creation of a slot key is exactly one process's win (same revision, same
  lease), and every win is one creation: exactly one winner per period and slot;
* every refusal happened at a revision at which all slots were held (or the
  refused process held one itself);
* with ``holders=3`` the same holds per slot, and at no revision more than three
  keys exist.

The worker processes run this very file: ``python test_lease_once_processes.py ...``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers.processes import Workers, replay_until

from etcdsync import Client
from etcdsync.watch_types import EventType

THIS = str(Path(__file__).resolve())
PERIOD = 1


# --- the worker side (runs in the child processes) ------------------------------------------


def _race_worker(endpoint: str, base: str, holders: int) -> int:
    """Try for the name, then wait (watching) for a slot to free or for the stop key."""
    name, stop = f"{base}job", f"{base}stop".encode()
    me = f"worker-{os.getpid()}"
    with Client(endpoint) as etcd:
        while True:
            answer = etcd.lease_once(name, PERIOD, holders=holders, value=me, timeout=10)
            print(
                json.dumps(
                    {
                        "me": me,
                        "acquired": answer.acquired,
                        "slot": answer.slot,
                        "lease": answer.lease_id,
                        "ttl": answer.ttl,
                        "revision": answer.revision,
                    }
                ),
                flush=True,
            )
            # The stop key may predate this answer's revision (then the watch below
            # would not show it): look for it first.
            if etcd.get(stop).kvs:
                return 0
            with etcd.watch(base, prefix=True, start_revision=answer.revision + 1) as watcher:
                freed = False
                while not freed:
                    for event in watcher.get(timeout=30).events:
                        if event.kv.key == stop:
                            return 0
                        if event.type == EventType.DELETE:
                            freed = True


def _main(argv: Sequence[str]) -> int:
    mode, *args = argv
    if mode == "race":
        return _race_worker(args[0], args[1], int(args[2]))
    raise SystemExit(f"unknown mode {mode!r}")


# --- the test side ----------------------------------------------------------------------


def _slot(key: bytes, job: bytes) -> int:
    assert key.startswith(job), key
    return int(key[len(job) :])


@pytest.mark.parametrize(("holders", "periods"), [(1, 20), (3, 24)], ids=["single", "three"])
def test_eight_processes_race_one_winner_per_period(
    etcd_endpoint: str, prefix: str, holders: int, periods: int
) -> None:
    workers = 8
    base = prefix
    job = f"{base}job/".encode()
    with Client(etcd_endpoint) as etcd:
        start = etcd.put(f"{base}begin", "").revision + 1
        procs = Workers(THIS, [["race", etcd_endpoint, base, str(holders)]] * workers)
        try:
            # Stop the race once `periods` slot-periods have begun (creations).
            created = 0
            deadline = time.monotonic() + 30 + periods * (PERIOD + 1)
            with etcd.watch(job, prefix=True, start_revision=start) as watcher:
                while created < periods:
                    left = deadline - time.monotonic()
                    assert left > 0, f"only {created} periods began in time"
                    for event in watcher.get(timeout=left).events:
                        created += event.type == EventType.PUT and event.kv.version == 1
            etcd.put(f"{base}stop", "")
            answers = [a for lines in procs.results(timeout=60) for a in lines]
        finally:
            procs.kill()
        events = [
            e for e in replay_until(etcd, base, start, f"{base}end") if e.kv.key.startswith(job)
        ]

    wins = {(a["slot"], a["revision"]): a for a in answers if a["acquired"]}
    assert len(wins) == sum(a["acquired"] for a in answers)  # no two wins at one revision
    assert all(a["ttl"] == PERIOD for a in wins.values())  # the server granted the period

    # The slots' history: per slot, creation and deletion alternate; each creation is
    # exactly one reported win (same lease), and each win is a creation.
    held: dict[int, tuple[int, bytes]] = {}  # slot -> (lease, holder) at this point
    holders_at: list[tuple[int, dict[int, bytes]]] = []  # (revision, slot -> holder)
    creations = set()
    for event in events:
        slot = _slot(event.kv.key, job)
        assert 0 <= slot < holders
        if event.type == EventType.PUT:
            assert event.kv.version == 1 and slot not in held, "a slot taken twice"
            win = wins.get((slot, event.revision))
            assert win is not None, f"slot {slot} created at {event.revision} by no winner"
            assert win["lease"] == event.kv.lease and event.kv.value == win["me"].encode()
            held[slot] = (event.kv.lease, event.kv.value)
            creations.add((slot, event.revision))
        else:
            assert slot in held, "a slot deleted while free"
            del held[slot]
        assert len(held) <= holders
        holders_at.append((event.revision, {s: v for s, (_, v) in held.items()}))
    assert creations == set(wins), "wins that no slot creation shows"
    assert len(creations) >= periods

    # Every refusal was given while all slots were taken (or by one of them).
    def state_at(revision: int) -> dict[int, bytes]:
        current: dict[int, bytes] = {}
        for at, state in holders_at:
            if at > revision:
                break
            current = state
        return current

    refusals = [a for a in answers if not a["acquired"]]
    assert refusals, "nobody was ever refused: the race did not happen"
    for refusal in refusals:
        state = state_at(refusal["revision"])
        assert len(state) == holders or refusal["me"].encode() in state.values(), (
            f"refused at revision {refusal['revision']} while slots were free: {state}"
        )
    winners = {a["me"] for a in wins.values()}
    print(
        f"holders={holders}: {len(creations)} periods, {len(refusals)} refusals, "
        f"{len(winners)} distinct winners"
    )


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
