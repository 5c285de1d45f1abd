"""The workloads, for clients with a blocking API (threads for concurrency).

Each driver script supplies an adapter: a thin translation of a handful of
operations into its library's natural calls.  Everything measured is here, so
every client runs literally the same loop.  Standard library only.
"""

from __future__ import annotations

import statistics
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import _common as c


class KeepaliveStats(Protocol):
    renewals: int
    lost: int

    def stop(self) -> None: ...


class SyncAdapter(Protocol):
    def versions(self) -> dict[str, str]: ...
    def close(self) -> None: ...
    def put(self, key: bytes, value: bytes) -> None: ...
    def get(self, key: bytes) -> object: ...
    def delete(self, key: bytes) -> object: ...
    def txn_cas(self, key: bytes, value: bytes) -> object: ...
    def get_prefix(self, prefix: bytes) -> int: ...
    def delete_prefix(self, prefix: bytes) -> None: ...
    def watch_prefix(
        self, prefix: bytes
    ) -> tuple[Iterator[Sequence[bytes]], Callable[[], None]]: ...
    def watch_key(self, key: bytes) -> object: ...
    def grant(self, ttl: int) -> Any: ...
    def keep_alive(self, leases: list[Any], ttl: int) -> KeepaliveStats: ...
    def lock_cycle(self, name: str, ttl: int, timeout: float, body: Callable[[], None]) -> bool: ...
    def lock_hold(self, name: str, ttl: int, timeout: float) -> Callable[[], None]: ...
    def campaign_cycle(self, name: str, ttl: int) -> None: ...
    def config_subscribe(self, prefix: bytes, subscribers: int) -> Counter: ...
    def watch_many(self, key: bytes, n: int, on_event: Callable[[], None]) -> None: ...
    def group_sweep(self, name: str, n: int, ttl: int, timeout: float) -> dict[str, float]: ...


class Counter:
    """Calls counted from any thread; ``wait_for(total)`` blocks until that many."""

    def __init__(self) -> None:
        self.count = 0
        self._cond = threading.Condition()

    def __call__(self, *_: object) -> None:
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait_for(self, total: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count >= total, timeout)


class RefreshLoop:
    """Keepalive for clients without a keepalive manager: what their users write.

    ``threads`` threads each own a slice of the leases and renew each one a third
    of the TTL after its previous renewal with the library's one-shot refresh
    call.  ``refresh(lease)`` returns the TTL the server answered (0: expired).
    """

    def __init__(
        self, refresh: Callable[[Any], int], leases: list[Any], ttl: int, threads: int = 16
    ) -> None:
        self.renewals = 0
        self.lost = 0
        self._refresh = refresh
        self._period = ttl / 3
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(leases[i::threads],), daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, leases: list[Any]) -> None:
        now = time.monotonic()
        due = [now + self._period] * len(leases)
        while not self._stop.is_set():
            for i, lease in enumerate(leases):
                delay = due[i] - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                try:
                    ttl = self._refresh(lease)
                except Exception:
                    ttl = 0
                with self._lock:
                    if ttl > 0:
                        self.renewals += 1
                    else:
                        self.lost += 1
                due[i] = time.monotonic() + self._period

    def stop(self) -> None:
        self._stop.set()


def _warmup(a: SyncAdapter, prefix: bytes) -> None:
    for _ in range(20):
        a.put(prefix + b"warmup", b"x")
        a.get(prefix + b"warmup")


def put_seq(a: SyncAdapter, p: dict[str, Any]) -> None:
    value = b"v" * p["value_size"]
    _warmup(a, p["prefix"])
    for rep in range(p["reps"]):
        keys = [b"%sput/%d/%08d" % (p["prefix"], rep, i) for i in range(p["n"])]
        lat = []
        cpu0, start = time.process_time(), time.perf_counter()
        for key in keys:
            t = time.perf_counter()
            a.put(key, value)
            lat.append(time.perf_counter() - t)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        c.result("put_seq", rep, **c.latency_metrics(lat, len(keys), wall, cpu))


def get_seq(a: SyncAdapter, p: dict[str, Any]) -> None:
    key = p["prefix"] + b"get/key"
    a.put(key, b"v" * p["value_size"])
    _warmup(a, p["prefix"])
    for rep in range(p["reps"]):
        lat = []
        cpu0, start = time.process_time(), time.perf_counter()
        for _ in range(p["n"]):
            t = time.perf_counter()
            a.get(key)
            lat.append(time.perf_counter() - t)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        c.result("get_seq", rep, **c.latency_metrics(lat, p["n"], wall, cpu))


def delete_seq(a: SyncAdapter, p: dict[str, Any]) -> None:
    value = b"v" * p["value_size"]
    _warmup(a, p["prefix"])
    for rep in range(p["reps"]):
        keys = [b"%sdel/%d/%08d" % (p["prefix"], rep, i) for i in range(p["n"])]
        for key in keys:  # each delete removes a key that exists (not timed)
            a.put(key, value)
        lat = []
        cpu0, start = time.process_time(), time.perf_counter()
        for key in keys:
            t = time.perf_counter()
            a.delete(key)
            lat.append(time.perf_counter() - t)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        c.result("delete_seq", rep, **c.latency_metrics(lat, len(keys), wall, cpu))


def txn_seq(a: SyncAdapter, p: dict[str, Any]) -> None:
    key, value = p["prefix"] + b"txn/key", b"v" * p["value_size"]
    a.put(key, value)
    _warmup(a, p["prefix"])
    for rep in range(p["reps"]):
        lat = []
        cpu0, start = time.process_time(), time.perf_counter()
        for _ in range(p["n"]):
            t = time.perf_counter()
            a.txn_cas(key, value)
            lat.append(time.perf_counter() - t)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        c.result("txn_seq", rep, **c.latency_metrics(lat, p["n"], wall, cpu))


def put_threads(a: SyncAdapter, p: dict[str, Any]) -> None:
    value = b"v" * p["value_size"]
    threads = p["threads"]
    _warmup(a, p["prefix"])
    per_thread = p["n"] // threads

    def work(keys: list[bytes], lat: list[float], barrier: threading.Barrier) -> None:
        barrier.wait()
        for key in keys:
            t = time.perf_counter()
            a.put(key, value)
            lat.append(time.perf_counter() - t)

    for rep in range(p["reps"]):
        lats: list[list[float]] = [[] for _ in range(threads)]
        barrier = threading.Barrier(threads + 1)
        pool = [
            threading.Thread(
                target=work,
                args=(
                    [b"%sput16/%d/%d/%d" % (p["prefix"], rep, t, i) for i in range(per_thread)],
                    lats[t],
                    barrier,
                ),
            )
            for t in range(threads)
        ]
        for thread in pool:
            thread.start()
        barrier.wait()
        cpu0, start = time.process_time(), time.perf_counter()
        for thread in pool:
            thread.join()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        flat = [x for lat in lats for x in lat]
        c.result("put_threads", rep, **c.latency_metrics(flat, len(flat), wall, cpu))


def range_read(a: SyncAdapter, p: dict[str, Any], endpoint: str) -> None:
    prefix = p["prefix"] + b"range/"
    # The keys stay between the rounds of this workload: load them once.
    if a.get_prefix(prefix) != p["keys"]:  # also warms up
        c.preload(p, endpoint, prefix, p["keys"], p["value_size"])
        if a.get_prefix(prefix) != p["keys"]:
            raise RuntimeError("range read returned the wrong number of keys")
    reads = p.get("reads", 1)
    for rep in range(p["reps"]):
        # Several reads per process, averaged: a read's share of the garbage collector's
        # full passes (which one read in a fresh process may or may not trigger) is
        # then counted for every client alike.
        cpu0, start = time.process_time(), time.perf_counter()
        for _ in range(reads):
            count = a.get_prefix(prefix)
            if count != p["keys"]:
                raise RuntimeError(f"range read returned {count} keys, not {p['keys']}")
        wall, cpu = (time.perf_counter() - start) / reads, (time.process_time() - cpu0) / reads
        c.result("range_read", rep, read_ms=wall * 1e3, keys_s=count / wall, cpu_ms=cpu * 1e3)


def watch_delivery(a: SyncAdapter, p: dict[str, Any], endpoint: str) -> None:
    _warmup(a, p["prefix"])
    for rep in range(p["reps"]):
        prefix = b"%swatch/%d/" % (p["prefix"], rep)
        events, cancel = a.watch_prefix(prefix)
        delivery = c.Delivery(p["events"])
        writer = c.start_writer(p, endpoint, prefix, p["events"], p["batch"], p["value_size"])
        # The deadline ends a watcher that stopped delivering (events lost).
        timer = threading.Timer(p["deadline"], cancel)
        timer.start()
        last = time.time()
        cpu0 = time.process_time()
        try:
            for keys in events:
                done = delivery.add(keys)
                last = time.time()
                if done:
                    break
        finally:
            timer.cancel()
            cancel()
        cpu = time.process_time() - cpu0
        report = c.finish_writer(writer, timeout=p["deadline"])
        c.result("watch_delivery", rep, **c.watch_metrics(delivery, report, last, cpu))
        a.delete_prefix(prefix)


def watchers(a: SyncAdapter, p: dict[str, Any], workload: str) -> None:
    _warmup(a, p["prefix"])
    streams0, watchers0 = c.watch_gauges(p["metrics_url"])
    rss0 = c.rss_mb()
    keys = [b"%swatchers/%08d" % (p["prefix"], i) for i in range(p["n"])]
    start = time.perf_counter()
    handles = [a.watch_key(key) for key in keys]
    wall = time.perf_counter() - start
    rss1 = c.rss_mb()
    streams1, watchers1 = c.watch_gauges(p["metrics_url"])
    c.result(
        workload,
        p["rep"],
        create_s=wall,
        rss_mb=rss1 - rss0,
        streams=streams1 - streams0,
        server_watchers=watchers1 - watchers0,
    )
    del handles


def leases(a: SyncAdapter, p: dict[str, Any], workload: str) -> None:
    ttl = p["ttl"]
    with ThreadPoolExecutor(16) as pool:
        granted = list(pool.map(lambda _: a.grant(ttl), range(p["n"])))
    stats = a.keep_alive(granted, ttl)
    time.sleep(p["warmup"])
    for rep in range(p["reps"]):
        renewals0 = stats.renewals
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(p["window"])
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        renewals = stats.renewals - renewals0
        c.result(
            workload,
            rep,
            cpu_pct=cpu / wall * 100,
            renewals_s=renewals / wall,
            expected_renewals_s=p["n"] / (ttl / 3),
            cpu_us_per_renewal=cpu / renewals * 1e6 if renewals else float("nan"),
            lost=stats.lost,
        )
    stats.stop()


def lock_uncontended(a: SyncAdapter, p: dict[str, Any]) -> None:
    name = p["prefix"].decode() + "lock/solo"
    for _ in range(3):
        a.lock_cycle(name, p["ttl"], p["timeout"], lambda: None)
    for rep in range(p["reps"]):
        lat = []
        failures = 0
        cpu0, start = time.process_time(), time.perf_counter()
        for _ in range(p["cycles"]):
            t = time.perf_counter()
            if a.lock_cycle(name, p["ttl"], p["timeout"], lambda: None):
                lat.append(time.perf_counter() - t)
            else:
                failures += 1
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        metrics = c.latency_metrics(lat, len(lat), wall, cpu)
        c.result(
            "lock_uncontended",
            rep,
            cycles_s=metrics["ops_s"],
            p50_ms=metrics["p50_ms"],
            p99_ms=metrics["p99_ms"],
            cpu_us_op=metrics["cpu_us_op"],
            failures=failures,
        )


def lock_contended(p: dict[str, Any], endpoint: str) -> None:
    for rep in range(p["reps"]):
        name = f"{p['prefix'].decode()}lock/contended/{rep}"
        params = dict(p, prefix=p["prefix"].decode())
        metrics = c.run_contenders(endpoint, params, name, p["procs"], p["cycles"])
        c.result("lock_contended", rep, **metrics)


# The least each recipe operation needs, in unary RPCs (see bench/README.md).
RPC_MINIMUM = {"lock_rpcs": 2, "handoff_rpcs": 2, "campaign_rpcs": 2, "config_rpcs": 0}


def recipe_rpcs(a: SyncAdapter, p: dict[str, Any], make_other: Callable[[], SyncAdapter]) -> None:
    """RPCs per recipe operation, from the server's own counters (nothing else talks to
    the server meanwhile).  Unary calls count; watch stream messages are reported apart
    (``*_watch_msgs``); keepalive renewals are left out."""
    url, ttl, timeout = p["metrics_url"], p["ttl"], p["timeout"]
    base = p["prefix"].decode() + "rpc/"
    metrics: dict[str, float] = {}

    def measure(key: str, run: Callable[[], None], per: int = 1) -> None:
        before = c.rpc_counts(url)
        run()
        delta = c.rpc_delta(before, c.rpc_counts(url))
        metrics[key] = c.unary_total(delta) / per
        metrics[key.replace("_rpcs", "_watch_msgs")] = delta.get("Watch:msgs", 0.0) / per

    # Uncontended acquire + release, the session already made.
    for _ in range(3):
        a.lock_cycle(base + "solo", ttl, timeout, _noop)
    cycles = p["cycles"]

    def solo() -> None:
        for _ in range(cycles):
            a.lock_cycle(base + "solo", ttl, timeout, _noop)

    measure("lock_rpcs", solo, cycles)

    # Contended handoff: from the holder's release to the waiter's acquire.
    other = make_other()
    try:
        other.lock_cycle(base + "warm", ttl, timeout, _noop)
        marks: dict[str, dict[str, float]] = {}

        def waiter_body() -> None:
            marks["acquired"] = c.rpc_counts(url)

        release = a.lock_hold(base + "handoff", ttl, timeout)
        waiter = threading.Thread(
            target=other.lock_cycle, args=(base + "handoff", ttl, timeout, waiter_body)
        )
        waiter.start()
        time.sleep(0.5)  # the waiter is queued and watching
        marks["release"] = c.rpc_counts(url)
        release()
        waiter.join(timeout)
        delta = c.rpc_delta(marks["release"], marks["acquired"])
        metrics["handoff_rpcs"] = c.unary_total(delta)
        metrics["handoff_watch_msgs"] = delta.get("Watch:msgs", 0.0)
    finally:
        other.close()

    try:
        a.campaign_cycle(base + "election", ttl)
        measure("campaign_rpcs", lambda: a.campaign_cycle(base + "election", ttl))
    except c.Unsupported:
        pass
    try:
        calls = a.config_subscribe(p["prefix"] + b"rpc/config/", p["subscribers"])
    except c.Unsupported:
        pass
    else:
        key, subscribers = p["prefix"] + b"rpc/config/k", p["subscribers"]

        def update() -> None:
            total = calls.count + subscribers
            a.put(key, b'"%d"' % time.time_ns())
            if not calls.wait_for(total, timeout):
                raise RuntimeError("the config subscribers did not all see the update")

        update()
        measure("config_rpcs", update)
        metrics["config_rpcs"] -= 1  # the update's own put
    c.result("recipe_rpcs", p.get("rep", 0), **metrics)


# --- cost curves (one size per process; see config.SWEEPS) ---------------------------


def sweep_watchers(a: SyncAdapter, p: dict[str, Any]) -> None:
    n, key = p["n"], p["prefix"] + b"sweep/watched"
    a.put(key, b"0")  # connected, and the key exists
    # A first watcher elsewhere: the client's watch stream (and its reader) exist, so
    # the figures are what the n watchers themselves add.
    first = a.watch_key(key + b"/first")
    threads0, rss0 = threading.active_count(), c.rss_mb()
    counter = Counter()
    with c.allocations("sweep_watchers"):
        start = time.perf_counter()
        a.watch_many(key, n, counter)
        create = time.perf_counter() - start
        rss1, threads1 = c.rss_mb(), threading.active_count()
    put_at = time.perf_counter()
    a.put(key, b"1")
    if not counter.wait_for(n, p["timeout"]):
        raise RuntimeError(f"{counter.count} of {n} watchers saw the put")
    deliver = time.perf_counter() - put_at
    c.result(
        "sweep_watchers",
        p["rep"],
        create_s=create,
        rss_mb=rss1 - rss0,
        deliver_ms=deliver * 1e3,
        threads=threads1 - threads0,
    )
    del first


def sweep_lock(p: dict[str, Any], endpoint: str) -> None:
    procs = p["procs"]
    cycles = max(2, p["cycles_total"] // procs)
    name = f"{p['prefix'].decode()}lock/sweep/{procs}"
    params = dict(p, prefix=p["prefix"].decode())
    c.result("sweep_lock", p["rep"], **c.run_contenders(endpoint, params, name, procs, cycles))


def sweep_config(a: SyncAdapter, p: dict[str, Any]) -> None:
    n, prefix = p["n"], p["prefix"] + b"sweep/config/"
    a.put(prefix + b"k", b'"start"')
    threads0 = threading.active_count()
    counter = a.config_subscribe(prefix, n)
    threads = threading.active_count() - threads0
    fanout = []
    for i in range(p["updates"]):
        total = counter.count + n
        start = time.perf_counter()
        a.put(prefix + b"k", b'"%d"' % i)
        if not counter.wait_for(total, p["timeout"]):
            raise RuntimeError(f"{total - counter.count} subscribers missed an update")
        fanout.append(time.perf_counter() - start)
    c.result(
        "sweep_config",
        p["rep"],
        fanout_ms=statistics.median(fanout) * 1e3,
        threads=threads,
    )


def sweep_group(a: SyncAdapter, p: dict[str, Any]) -> None:
    name = p["prefix"].decode() + "sweep/group"
    metrics = a.group_sweep(name, p["n"], p["ttl"], p["timeout"])
    c.result("sweep_group", p["rep"], **metrics)


def contender(a: SyncAdapter, p: dict[str, Any]) -> None:
    a.get(b"warmup")
    c.contender_ready()
    intervals: list[tuple[float, float, float]] = []
    failures = 0

    requested = [0.0]

    def body() -> None:
        acquired = time.time()
        intervals.append((acquired, time.time(), requested[0]))

    for _ in range(p["cycles"]):
        requested[0] = time.time()
        try:
            if not a.lock_cycle(p["lock_name"], p["ttl"], p["timeout"], body):
                failures += 1
        except Exception:
            traceback.print_exc()
            failures += 1
    c.contender_report(intervals, failures)


def main(make_adapter: Callable[[str], SyncAdapter], client: str) -> None:
    args = c.parse_args()
    p = dict(args.params)
    p["prefix"] = p.get("prefix", "bench/").encode()
    adapter = make_adapter(args.endpoint)
    try:
        if args.role == "contender":
            contender(adapter, p)
            return
        c.emit("meta", client=client, versions=adapter.versions())
        run(adapter, args.workload, p, args.endpoint, make_adapter)
    finally:
        adapter.close()


def run(
    a: SyncAdapter,
    workload: str,
    p: dict[str, Any],
    endpoint: str,
    make_adapter: Callable[[str], SyncAdapter],
) -> None:
    try:
        if workload == "put_seq":
            put_seq(a, p)
        elif workload == "get_seq":
            get_seq(a, p)
        elif workload == "delete_seq":
            delete_seq(a, p)
        elif workload == "txn_seq":
            txn_seq(a, p)
        elif workload == "put_threads":
            put_threads(a, p)
        elif workload == "range_read":
            range_read(a, p, endpoint)
        elif workload == "watch_delivery":
            watch_delivery(a, p, endpoint)
        elif workload.startswith("watchers"):
            watchers(a, p, workload)
        elif workload.startswith("leases"):
            leases(a, p, workload)
        elif workload == "lock_uncontended":
            lock_uncontended(a, p)
        elif workload == "sweep_watchers":
            sweep_watchers(a, p)
        elif workload == "sweep_leases":
            leases(a, p, workload)
        elif workload == "sweep_lock":
            a.lock_cycle(p["prefix"].decode() + "lock/probe", p["ttl"], p["timeout"], _noop)
            sweep_lock(p, endpoint)
        elif workload == "sweep_config":
            sweep_config(a, p)
        elif workload == "sweep_group":
            sweep_group(a, p)
        elif workload == "recipe_rpcs":
            recipe_rpcs(a, p, lambda: make_adapter(endpoint))
        elif workload == "lock_contended":
            # Probe the recipe first so a missing one is a skip, not 4 crashes.
            a.lock_cycle(p["prefix"].decode() + "lock/probe", p["ttl"], p["timeout"], _noop)
            lock_contended(p, endpoint)
        else:
            raise c.Unsupported(f"no such workload for a sync client: {workload}")
    except c.Unsupported as exc:
        c.skip(workload, str(exc))


def _noop() -> None:
    pass
