"""Worker processes of the fault scenarios (sync client); each prints its history.

    python tests/faults/worker.py MODE ENDPOINTS ARGS...

``ENDPOINTS`` is a comma-separated list (the first one is used first).  Every
operation is printed as one JSON line (see ``history.py``: invoke, then ok / fail /
info), which the test merges into the scenario's history; other lines are progress
notes.  Modes:

* ``lock NAME COUNTER SECONDS ACTOR TTL`` - take the Mutex, read the counter and
  write counter + 1 with ``guarded_txn`` (the value carries the fencing token),
  release; again until SECONDS have passed or a line arrives on stdin;
* ``hold NAME DATA ACTOR TTL`` - take the Mutex, print "holding", wait for a line on
  stdin (the test freezes us meanwhile), then try a plain fenced txn and a
  ``guarded_txn`` and say what happened;
* ``cas KEY TARGET ACTOR`` - compare-and-swap increments of one counter (compare on
  its mod revision) until it reaches TARGET, re-reading after every failure; never
  repeating a write whose outcome is unknown;
* ``seq PREFIX COUNT ACTOR PACE`` - put-if-absent of COUNT sequenced keys (the
  compare makes a retry after an unknown outcome harmless), PACE seconds apart;
* ``lq NAME ACTOR TTL WORK STALL_AT`` - a LockingQueue consumer: claim, "work" WORK
  seconds, consume; on its STALL_AT-th claim (0: never) print "stalled VALUE" and hang
  holding the claim (the test kills it); stop at a line on stdin once the queue is idle.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Sequence

from history import Recorder  # run as a script: this directory is on sys.path

from etcdsync import ChannelSettings, Client, Compare, Op, errors

# Fast dead-connection detection (the members run with --grpc-keepalive-min-time=500ms).
SETTINGS = ChannelSettings(keepalive_time=1.0, keepalive_timeout=1.0)
GIVE_UP_AFTER = 90.0  # a hard stop, far beyond any scenario's own watchdog


def _client(endpoints: str) -> Client:
    return Client(endpoints.split(","), timeout=2.0, settings=SETTINGS)


def counter_value(raw: bytes | None) -> int:
    """The counter of a ``value:token:actor:seq`` (lock) or ``value|id`` (cas) record."""
    if not raw:
        return 0
    return int(raw.replace(b"|", b":").split(b":")[0])


def _stdin_line() -> threading.Event:
    """An event set when a line (or EOF) arrives on stdin: the test's "stop"."""
    said = threading.Event()

    def read() -> None:
        sys.stdin.readline()
        said.set()

    threading.Thread(target=read, daemon=True).start()
    return said


def lock_worker(
    endpoints: str, name: str, counter: str, seconds: float, actor: str, ttl: int
) -> int:
    rec = Recorder(actor)
    until = time.monotonic() + seconds
    stop = _stdin_line()
    seq = 0
    with _client(endpoints) as etcd:
        lock = etcd.lock(name, ttl=ttl)
        print("started", flush=True)
        while time.monotonic() < until and not stop.is_set():
            rec.invoke("acquire")
            try:
                lock.acquire(timeout=10)
            except errors.EtcdError as exc:
                rec.error("acquire", exc, write=False)
                time.sleep(0.05)
                continue
            token = lock.fencing_token
            rec.ok("acquire", token=token)
            try:
                value = counter_value(etcd.get(counter).value)
            except errors.EtcdError as exc:
                rec.error("read", exc, write=False)
            else:
                seq += 1
                op_id = f"{actor}:{seq}"
                rec.invoke("write", id=op_id, token=token, value=value + 1)
                try:
                    done = lock.guarded_txn([Op.put(counter, f"{value + 1}:{token}:{op_id}")])
                    rec.ok("write", revision=done.header.revision, id=op_id, token=token)
                except errors.EtcdError as exc:
                    rec.error("write", exc, write=True, id=op_id, token=token)
            rec.invoke("release", token=token)
            try:
                lock.release()
                rec.ok("release", token=token)
            except errors.EtcdError as exc:
                rec.error("release", exc, write=True, token=token)
    return 0


def hold_worker(endpoints: str, name: str, data: str, actor: str, ttl: int) -> int:
    rec = Recorder(actor)
    with _client(endpoints) as etcd:
        lock = etcd.lock(name, ttl=ttl).acquire(timeout=10)
        session = lock.session
        assert session is not None
        rec.ok("acquire", token=lock.fencing_token, ttl=session.ttl)
        print("holding", flush=True)
        sys.stdin.readline()  # the test froze us past the TTL and resumed us meanwhile
        rec.invoke("fenced-txn", id=f"{actor}:raw", token=lock.fencing_token)
        raw = etcd.txn([lock.is_owner()], [Op.put(data, f"stale:{lock.fencing_token}")])
        (rec.ok if raw.succeeded else rec.fail)(
            "fenced-txn", id=f"{actor}:raw", token=lock.fencing_token
        )
        told = lock.wait_lost(10)
        rec.ok("lost", told=told, session_done=session.is_done)
        rec.invoke("write", id=f"{actor}:guarded", token=lock.fencing_token)
        try:
            lock.guarded_txn([Op.put(data, f"stale:{lock.fencing_token}")])
            rec.ok("write", id=f"{actor}:guarded", token=lock.fencing_token)
        except errors.EtcdError as exc:
            rec.error("write", exc, write=True, id=f"{actor}:guarded", token=lock.fencing_token)
        lock.release()
    return 0


def cas_worker(endpoints: str, key: str, target: int, actor: str) -> int:
    rec = Recorder(actor)
    seq = 0
    give_up = time.monotonic() + GIVE_UP_AFTER
    with _client(endpoints) as etcd:
        while time.monotonic() < give_up:
            try:
                kv = etcd.get(key).kv
            except errors.EtcdError as exc:
                rec.error("read", exc, write=False)
                time.sleep(0.02)
                continue
            value = counter_value(kv.value if kv else None)
            if value >= target:
                return 0
            seq += 1
            op_id = f"{actor}:{seq}"
            rec.invoke("cas", id=op_id, value=value + 1)
            try:
                done = etcd.txn(
                    [Compare.mod_revision(key) == (kv.mod_revision if kv else 0)],
                    [Op.put(key, f"{value + 1}|{op_id}")],
                )
            except errors.EtcdError as exc:
                # Unknown outcome: a new attempt starts from a fresh read, never a resend.
                rec.error("cas", exc, write=True, id=op_id)
                continue
            if done.succeeded:
                rec.ok("cas", id=op_id, value=value + 1, revision=done.header.revision)
            else:
                rec.fail("cas", "compare failed", id=op_id)
    print("gave up", flush=True)
    return 1


def seq_worker(endpoints: str, prefix: str, count: int, actor: str, pace: float) -> int:
    rec = Recorder(actor)
    give_up = time.monotonic() + GIVE_UP_AFTER
    with _client(endpoints) as etcd:
        for i in range(count):
            key = f"{prefix}{i:06d}"
            while True:
                if time.monotonic() > give_up:
                    print("gave up", flush=True)
                    return 1
                rec.invoke("put", id=key)
                try:
                    done = etcd.txn([Compare.version(key) == 0], [Op.put(key, str(i))])
                except errors.EtcdError as exc:
                    rec.error("put", exc, write=True, id=key)
                    time.sleep(0.02)
                    continue
                # A failed compare means an earlier attempt with an unknown outcome did
                # commit: the key is written exactly once either way.
                rec.ok("put", id=key, fresh=done.succeeded)
                break
            if i % 50 == 0:
                print(f"progress {i}", flush=True)
            if pace:
                time.sleep(pace)
    print("done", flush=True)
    return 0


def locking_consumer_worker(
    endpoints: str, name: str, actor: str, ttl: int, work: float, stall_at: int
) -> int:
    rec = Recorder(actor)
    stop = _stdin_line()
    claims = 0
    # The recipe logs each write whose lost answer it settled: note them for the test.
    settled = logging.StreamHandler(sys.stdout)
    settled.setFormatter(logging.Formatter("note %(message)s"))
    logging.getLogger("etcdsync.recipes").addHandler(settled)
    logging.getLogger("etcdsync.recipes").setLevel(logging.INFO)
    with _client(endpoints) as etcd:
        queue = etcd.locking_queue(name, ttl=ttl)
        print("started", flush=True)
        while True:
            try:
                claim = queue.get(timeout=0.5)
            except errors.QueueTimeout:
                if stop.is_set():
                    return 0
                continue
            except errors.EtcdError as exc:  # a claim raised: handed to a later get()
                rec.info("claim", f"{type(exc).__name__}: {exc}")
                continue
            claims += 1
            rec.ok("claim", value=claim.text, token=claim.token)
            if claims == stall_at:
                print(f"stalled {claim.text}", flush=True)
                threading.Event().wait()  # mid-item until the test's kill -9
            time.sleep(work)  # the item's processing
            rec.invoke("consume", value=claim.text, token=claim.token)
            try:
                revision = claim.consume()  # no timeout: a lost answer is settled
            except errors.ClaimLostError as exc:
                rec.fail("consume", str(exc), value=claim.text, token=claim.token)
            except errors.EtcdError as exc:
                rec.error("consume", exc, write=True, value=claim.text, token=claim.token)
            else:
                rec.ok("consume", value=claim.text, token=claim.token, revision=revision)


def main(argv: Sequence[str]) -> int:
    mode, endpoints, *args = argv
    if mode == "lock":
        return lock_worker(endpoints, args[0], args[1], float(args[2]), args[3], int(args[4]))
    if mode == "hold":
        return hold_worker(endpoints, args[0], args[1], args[2], int(args[3]))
    if mode == "cas":
        return cas_worker(endpoints, args[0], int(args[1]), args[2])
    if mode == "seq":
        return seq_worker(endpoints, args[0], int(args[1]), args[2], float(args[3]))
    if mode == "lq":
        a = args
        return locking_consumer_worker(endpoints, a[0], a[1], int(a[2]), float(a[3]), int(a[4]))
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
