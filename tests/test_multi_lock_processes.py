"""Multi-locks across real processes (sync client): no deadlock, no overlap.

Four processes each take :data:`ROUNDS` multi-locks on random sets of 3 of 6 names,
each set listed in a random order (so every pair of processes asks for overlapping
sets in conflicting orders).  Under each multi-lock a process reads one counter per
name and writes them all back incremented in one txn guarded by every fencing
compare.  The run must end within its bound (no deadlock), every counter must equal
the number of multi-locks that included its name, each counter value must have been
read by exactly one holder, and along each name's values the fencing tokens must
grow: no two holders of one name ever overlapped.

The worker processes run this very file: ``python test_multi_lock_processes.py ...``.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from etcdsync import Client, Op

THIS = str(Path(__file__).resolve())
WORKERS = 4
ROUNDS = 500  # 4 x 500 = 2,000 multi-lock acquisitions of 3 locks each
NAMES = 6
SET_SIZE = 3
BOUND = 60.0  # seconds the whole run may take (13 s measured here): a deadlock exceeds it


def _names(prefix: str) -> list[str]:
    return [f"{prefix}lock{i}" for i in range(NAMES)]


def _worker(endpoint: str, prefix: str, seed: int, rounds: int) -> int:
    """Take ``rounds`` random multi-locks; print ``name value token`` per lock held."""
    rng = random.Random(seed)
    names = _names(prefix)
    with Client(endpoint) as etcd:
        for _ in range(rounds):
            chosen = rng.sample(names, SET_SIZE)  # a random order, too
            with etcd.multi_lock(chosen, ttl=10, timeout=60) as multi:
                counters = [f"{name}-counter" for name in multi.order]
                read = etcd.txn([], [Op.get(counter) for counter in counters])
                values = [int(r.kvs[0].value) if r.kvs else 0 for r in read.responses]  # type: ignore[union-attr]
                done = multi.guarded_txn(
                    [Op.put(c, str(v + 1)) for c, v in zip(counters, values, strict=True)]
                )
                assert done.succeeded
                tokens = multi.tokens
                for name, value in zip(multi.order, values, strict=True):
                    print(f"{name} {value} {tokens[name]}")
        sys.stdout.flush()
    return 0


def test_four_processes_overlapping_sets_no_deadlock_no_overlap(
    etcd_endpoint: str, prefix: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    # Output to files: a full pipe would block a worker while it holds its locks.
    files = [tmp_path / f"worker-{seed}.out" for seed in range(WORKERS)]
    children = []
    for seed, path in enumerate(files):
        with path.open("w") as out:
            children.append(
                subprocess.Popen(
                    [sys.executable, THIS, etcd_endpoint, prefix, str(seed), str(ROUNDS)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
    outputs: list[str] = []
    try:
        for child, path in zip(children, files, strict=True):
            child.wait(timeout=max(BOUND - (time.monotonic() - started), 1))
            out = path.read_text()
            assert child.returncode == 0, out[-3000:]
            outputs.append(out)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
    elapsed = time.monotonic() - started
    holds: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for out in outputs:
        for line in out.splitlines():
            name, value, token = line.split()
            holds[name].append((int(value), int(token)))
    assert sum(len(h) for h in holds.values()) == WORKERS * ROUNDS * SET_SIZE
    with Client(etcd_endpoint) as etcd:
        for name in _names(prefix):
            seen = sorted(holds[name])
            # Each value read by exactly one holder: nobody overlapped on this name...
            assert [value for value, _ in seen] == list(range(len(seen))), name
            # ...and the holds of one name follow each other in fencing-token order.
            tokens = [token for _, token in seen]
            assert all(a < b for a, b in itertools.pairwise(tokens)), name
            assert etcd.get(f"{name}-counter").value == str(len(seen)).encode()
            assert etcd.get(f"{name}/", prefix=True, count_only=True).count == 0
    print(
        f"\nmulti-lock: {WORKERS} processes x {ROUNDS} acquisitions of {SET_SIZE} of {NAMES} "
        f"locks in {elapsed:.1f} s ({WORKERS * ROUNDS / elapsed:.0f} multi-locks/s)"
    )


def _main(argv: Sequence[str]) -> int:
    endpoint, prefix, seed, rounds = argv
    return _worker(endpoint, prefix, int(seed), int(rounds))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
