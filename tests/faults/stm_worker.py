"""Worker of the STM fault scenario: random transfers, exactly once each, across faults.

    python tests/faults/stm_worker.py ENDPOINTS PREFIX ACTOR SEED

Transfer number ``seq`` moves an amount between two of ten accounts and writes the
ledger entry ``<PREFIX>ledger/<ACTOR>/<seq>`` in the same commit.  The function
*reads* its own ledger entry first, so the entry is in the read set: when a commit's
outcome is unknown (``Timeout`` / ``Unavailable`` from the commit, e.g. the leader
died), the worker simply runs the same transfer again - if the first commit landed,
the rerun finds the entry and writes nothing ("already"); if not, it commits now.
Each transfer is applied exactly once, and the worker learns which.

Prints one JSON line per transfer outcome that was not a plain commit, a
``{"progress": n}`` line every 50 transfers, and a final summary line; stops when
the key ``<PREFIX>stop`` exists (checked every 10 transfers).
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable

from etcdsync import STM, ChannelSettings, Client, Isolation, errors

SETTINGS = ChannelSettings(keepalive_time=1.0, keepalive_timeout=1.0)
ACCOUNTS = 10
GIVE_UP_AFTER = 90.0


def _transfer(keys: list[str], amount: int, ledger: str, entry: str) -> Callable[[STM], str]:
    """The STM function of one transfer; its ledger entry is in its read set."""

    def transfer(stm: STM) -> str:
        if stm.get(ledger) is not None:
            return "already"  # an earlier attempt with an unknown outcome committed
        have, other = (int(v or b"0") for v in stm.get_many(keys))
        if have < amount:
            return "skipped"
        stm.put(keys[0], str(have - amount))
        stm.put(keys[1], str(other + amount))
        stm.put(ledger, entry)
        return "committed"

    return transfer


def run(endpoints: str, prefix: str, actor: str, seed: str) -> int:
    rng = random.Random(seed)
    accounts = [f"{prefix}acct/{i}" for i in range(ACCOUNTS)]
    outcomes: Counter[str] = Counter()
    give_up = time.monotonic() + GIVE_UP_AFTER
    with Client(endpoints.split(","), timeout=2.0, settings=SETTINGS) as etcd:
        seq = 0
        while True:
            if seq % 10 == 0 and _stopped(etcd, f"{prefix}stop"):
                break
            source, target = rng.sample(range(ACCOUNTS), 2)
            amount = rng.randint(1, 50)
            ledger = f"{prefix}ledger/{actor}/{seq:05d}"
            keys = [accounts[source], accounts[target]]

            transfer = _transfer(keys, amount, ledger, f"{source} {target} {amount}")
            unknown = 0
            while True:
                if time.monotonic() > give_up:
                    print("gave up", flush=True)
                    return 1
                try:
                    result = etcd.stm(
                        transfer, isolation=Isolation.SERIALIZABLE_SNAPSHOT, timeout=10
                    )
                except (errors.Timeout, errors.Unavailable, errors.STMConflictError) as exc:
                    # Unknown outcome (or no answer): run the same transfer again.
                    unknown += 1
                    outcomes[type(exc).__name__] += 1
                    continue
                break
            outcomes[result] += 1
            if unknown or result == "already":
                print(json.dumps({"seq": seq, "unknown": unknown, "result": result}), flush=True)
            seq += 1
            if seq % 50 == 0:
                print(json.dumps({"progress": seq}), flush=True)
    print(json.dumps({"actor": actor, "transfers": seq, "outcomes": dict(outcomes)}), flush=True)
    return 0


def _stopped(etcd: Client, key: str) -> bool:
    try:
        return bool(etcd.get(key).kvs)
    except errors.EtcdError:
        return False


if __name__ == "__main__":
    sys.exit(run(*sys.argv[1:5]))
