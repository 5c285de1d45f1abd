"""STM and Counter across real processes (sync client).

* STM, under each serializable level: four processes make 500 random transfers
  each between ten accounts.  Every committed transfer also writes a ledger entry
  in the same txn.  Afterwards the store's own history is replayed: each commit is
  one revision holding exactly its ledger entry and its two account writes, and
  the values written are the replayed balances moved by the ledger's amount - a
  lost update or a write based on a stale read would show as a mismatch.  The
  total is conserved and the ledger counts every reported commit once.
* Counter: eight processes add 1 five hundred times each: the counter ends at
  exactly 4000 and the values the adds returned are 1..4000, each once.  With a
  bound, exactly ``max`` adds succeed and no write ever crosses it.

The worker processes run this very file: ``python test_stm_processes.py MODE ...``.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from helpers.processes import Workers, replay_until

from etcdsync import STM, Client, Isolation, Op, errors
from etcdsync.watch_types import EventType

THIS = str(Path(__file__).resolve())
ACCOUNTS = 10
OPENING = 1000


# --- the worker side (runs in the child processes) ------------------------------------------


def _transfer(
    keys: list[str], amount: int, entry: str, ledger: str, style: int, runs: list[int]
) -> Callable[[STM], bool]:
    """The STM function of one transfer: move ``amount`` from keys[0] to keys[1] and
    write the ledger entry, or write nothing when the funds are short."""

    def transfer(stm: STM) -> bool:
        runs[0] += 1
        if style == 0:
            values = [stm.get(keys[0]), stm.get(keys[1])]
        else:
            values = stm.get_many(keys)
        have, other = (int(v or b"0") for v in values)
        if have < amount:
            return False
        stm.put(keys[0], str(have - amount))
        stm.put(keys[1], str(other + amount))
        stm.put(ledger, entry)
        return True

    return transfer


def _transfer_worker(endpoint: str, prefix: str, level: str, worker: str, count: int) -> int:
    rng = random.Random(f"{prefix}{worker}")
    accounts = [f"{prefix}acct/{i}" for i in range(ACCOUNTS)]
    committed = skipped = 0
    attempts = Tally[int]()
    with Client(endpoint) as etcd:
        for seq in range(count):
            source, target = rng.sample(range(ACCOUNTS), 2)
            amount = rng.randint(1, 50)
            keys = [accounts[source], accounts[target]]
            ledger = f"{prefix}ledger/{worker}/{seq:04d}"
            style = seq % 3  # exercise get, get_many and prefetch
            runs = [0]
            transfer = _transfer(keys, amount, f"{source} {target} {amount}", ledger, style, runs)
            done = etcd.stm(
                transfer,
                isolation=level,
                retries=10_000,
                prefetch=keys if style == 2 else (),
                timeout=60,
            )
            committed += done
            skipped += not done
            attempts[runs[0]] += 1
    print(
        json.dumps({"committed": committed, "skipped": skipped, "attempts": dict(attempts)}),
        flush=True,
    )
    return 0


def _count_worker(endpoint: str, name: str, count: int, maximum: str) -> int:
    returned: list[int] = []
    refused = 0
    with Client(endpoint) as etcd:
        counter = etcd.counter(name, max=None if maximum == "none" else int(maximum))
        for _ in range(count):
            try:
                returned.append(counter.add(timeout=60))
            except errors.CounterBoundsError:
                refused += 1
    print(json.dumps({"returned": returned, "refused": refused}), flush=True)
    return 0


def _main(argv: Sequence[str]) -> int:
    mode, *args = argv
    if mode == "transfer":
        return _transfer_worker(args[0], args[1], args[2], args[3], int(args[4]))
    if mode == "count":
        return _count_worker(args[0], args[1], int(args[2]), args[3])
    raise SystemExit(f"unknown mode {mode!r}")


# --- the test side ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "isolation",
    [Isolation.SERIALIZABLE_SNAPSHOT, Isolation.SERIALIZABLE, Isolation.REPEATABLE_READS],
    ids=lambda level: level.value,
)
def test_four_processes_of_random_transfers_match_the_ledger(
    etcd_endpoint: str, prefix: str, isolation: Isolation
) -> None:
    workers, transfers = 4, 500
    accounts = [f"{prefix}acct/{i}" for i in range(ACCOUNTS)]
    with Client(etcd_endpoint) as etcd:
        opened = etcd.txn(success=[Op.put(key, str(OPENING)) for key in accounts])
        start = opened.revision + 1
        procs = Workers(
            THIS,
            [
                ["transfer", etcd_endpoint, prefix, isolation.value, f"w{i}", str(transfers)]
                for i in range(workers)
            ],
        )
        reports = [lines[-1] for lines in procs.results(timeout=100)]
        committed = sum(report["committed"] for report in reports)
        assert committed + sum(report["skipped"] for report in reports) == workers * transfers
        assert committed > workers * transfers * 0.9  # the funds rarely run out

        listing = etcd.get(f"{prefix}acct/", prefix=True).kvs
        final = {kv.key.decode(): int(kv.value) for kv in listing}
        assert sum(final.values()) == ACCOUNTS * OPENING  # total conserved
        ledger = etcd.get(f"{prefix}ledger/", prefix=True, count_only=True).count
        assert ledger == committed  # each commit recorded once

        events = replay_until(etcd, prefix, start, f"{prefix}end")

    # Replay the history: one revision per commit, its effect exactly the ledger's.
    balances = {key: OPENING for key in accounts}
    by_revision: dict[int, list[tuple[str, bytes, int]]] = {}
    for event in events:
        assert event.type == EventType.PUT
        by_revision.setdefault(event.revision, []).append(
            (event.kv.key.decode(), event.kv.value, event.kv.version)
        )
    assert len(by_revision) == committed
    for revision, writes in sorted(by_revision.items()):
        entries = [(v, version) for k, v, version in writes if k.startswith(f"{prefix}ledger/")]
        assert len(entries) == 1 and len(writes) == 3, (revision, writes)
        assert entries[0][1] == 1  # a ledger entry is written once
        source, target, amount = (int(x) for x in entries[0][0].split())
        balances[accounts[source]] -= amount
        balances[accounts[target]] += amount
        written = {k: int(v) for k, v, _ in writes if k in balances}
        assert written == {
            accounts[source]: balances[accounts[source]],
            accounts[target]: balances[accounts[target]],
        }, f"revision {revision}: a commit built on stale balances"
        assert balances[accounts[source]] >= 0
    assert balances == final
    retried = sum(n for report in reports for a, n in report["attempts"].items() if a != "1")
    print(f"{isolation.value}: {committed} commits, {retried} transfers retried at least once")


def test_eight_processes_count_exactly(etcd_endpoint: str, prefix: str) -> None:
    workers, adds = 8, 500
    name = f"{prefix}counter"
    procs = Workers(THIS, [["count", etcd_endpoint, name, str(adds), "none"]] * workers)
    reports = [lines[-1] for lines in procs.results(timeout=100)]
    returned = sorted(value for report in reports for value in report["returned"])
    assert returned == list(range(1, workers * adds + 1))  # each new value given once
    with Client(etcd_endpoint) as etcd:
        assert etcd.get(name).kvs[0].value == str(workers * adds).encode()


def test_a_bounded_counter_stops_exactly_at_its_bound(etcd_endpoint: str, prefix: str) -> None:
    workers, adds, maximum = 8, 60, 300
    name = f"{prefix}counter"
    with Client(etcd_endpoint) as etcd:
        start = etcd.put(f"{prefix}begin", "").revision + 1
        procs = Workers(THIS, [["count", etcd_endpoint, name, str(adds), str(maximum)]] * workers)
        reports = [lines[-1] for lines in procs.results(timeout=100)]
        returned = sorted(value for report in reports for value in report["returned"])
        assert returned == list(range(1, maximum + 1))
        assert sum(report["refused"] for report in reports) == workers * adds - maximum
        events = replay_until(etcd, prefix, start, f"{prefix}end")
    # Every write was one step up, never past the bound.
    assert [int(event.kv.value) for event in events] == list(range(1, maximum + 1))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
