"""The workloads, for asyncio clients (in-flight tasks for concurrency).

The same loops as ``_sync_harness`` with ``await``; adapters translate a
handful of operations into each library's natural calls.  Standard library only.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import _common as c


class KeepaliveStats(Protocol):
    renewals: int
    lost: int

    async def stop(self) -> None: ...


class AsyncAdapter(Protocol):
    def versions(self) -> dict[str, str]: ...
    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def put(self, key: bytes, value: bytes) -> None: ...
    async def get(self, key: bytes) -> object: ...
    async def delete(self, key: bytes) -> object: ...
    async def txn_cas(self, key: bytes, value: bytes) -> object: ...
    async def get_prefix(self, prefix: bytes) -> int: ...
    async def delete_prefix(self, prefix: bytes) -> None: ...
    async def watch_prefix(
        self, prefix: bytes
    ) -> tuple[AsyncIterator[Sequence[bytes]], Callable[[], Awaitable[None]]]: ...
    async def watch_key(self, key: bytes) -> object: ...
    async def grant(self, ttl: int) -> Any: ...
    async def keep_alive(self, leases: list[Any], ttl: int) -> KeepaliveStats: ...
    async def lock_cycle(
        self, name: str, ttl: int, timeout: float, body: Callable[[], None]
    ) -> bool: ...
    async def lock_hold(
        self, name: str, ttl: int, timeout: float
    ) -> Callable[[], Awaitable[None]]: ...
    async def campaign_cycle(self, name: str, ttl: int) -> None: ...
    async def config_subscribe(self, prefix: bytes, subscribers: int) -> Counter: ...
    async def watch_many(self, key: bytes, n: int, on_event: Callable[[], None]) -> None: ...
    async def group_sweep(
        self, name: str, n: int, ttl: int, timeout: float
    ) -> dict[str, float]: ...


class Counter:
    """Calls counted on the event loop; ``wait_for(total)`` waits until that many."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def __call__(self, *_: object) -> None:
        self.count += 1
        self._changed.set()

    async def wait_for(self, total: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.count < total:
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                return self.count >= total
        return True


class RefreshLoop:
    """Keepalive for clients without a keepalive manager: what their users write.

    ``tasks`` tasks each own a slice of the leases and renew each one a third of
    the TTL after its previous renewal with the library's one-shot refresh call,
    which returns the TTL the server answered (0: expired).
    """

    def __init__(
        self,
        refresh: Callable[[Any], Awaitable[int]],
        leases: list[Any],
        ttl: int,
        tasks: int = 64,
    ) -> None:
        self.renewals = 0
        self.lost = 0
        self._refresh = refresh
        self._period = ttl / 3
        self._tasks = [asyncio.create_task(self._run(leases[i::tasks])) for i in range(tasks)]

    async def _run(self, leases: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        due = [loop.time() + self._period] * len(leases)
        while True:
            for i, lease in enumerate(leases):
                delay = due[i] - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    ttl = await self._refresh(lease)
                except Exception:
                    ttl = 0
                if ttl > 0:
                    self.renewals += 1
                else:
                    self.lost += 1
                due[i] = loop.time() + self._period

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _warmup(a: AsyncAdapter, prefix: bytes) -> None:
    for _ in range(20):
        await a.put(prefix + b"warmup", b"x")
        await a.get(prefix + b"warmup")


async def put_seq(a: AsyncAdapter, p: dict[str, Any]) -> None:
    value = b"v" * p["value_size"]
    await _warmup(a, p["prefix"])
    for rep in range(p["reps"]):
        keys = [b"%sput/%d/%08d" % (p["prefix"], rep, i) for i in range(p["n"])]
        lat = []
        cpu0, start = time.process_time(), time.perf_counter()
        for key in keys:
            t = time.perf_counter()
            await a.put(key, value)
            lat.append(time.perf_counter() - t)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        c.result("put_seq", rep, **c.latency_metrics(lat, len(keys), wall, cpu))


async def get_seq(a: AsyncAdapter, p: dict[str, Any]) -> None:
    key = p["prefix"] + b"get/key"
    await a.put(key, b"v" * p["value_size"])
    await _warmup(a, p["prefix"])
    for rep in range(p["reps"]):
        lat = []
        cpu0, start = time.process_time(), time.perf_counter()
        for _ in range(p["n"]):
            t = time.perf_counter()
            await a.get(key)
            lat.append(time.perf_counter() - t)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        c.result("get_seq", rep, **c.latency_metrics(lat, p["n"], wall, cpu))


async def delete_seq(a: AsyncAdapter, p: dict[str, Any]) -> None:
    value = b"v" * p["value_size"]
    await _warmup(a, p["prefix"])
    for rep in range(p["reps"]):
        keys = [b"%sdel/%d/%08d" % (p["prefix"], rep, i) for i in range(p["n"])]
        for key in keys:  # each delete removes a key that exists (not timed)
            await a.put(key, value)
        lat = []
        cpu0, start = time.process_time(), time.perf_counter()
        for key in keys:
            t = time.perf_counter()
            await a.delete(key)
            lat.append(time.perf_counter() - t)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        c.result("delete_seq", rep, **c.latency_metrics(lat, len(keys), wall, cpu))


async def txn_seq(a: AsyncAdapter, p: dict[str, Any]) -> None:
    key, value = p["prefix"] + b"txn/key", b"v" * p["value_size"]
    await a.put(key, value)
    await _warmup(a, p["prefix"])
    for rep in range(p["reps"]):
        lat = []
        cpu0, start = time.process_time(), time.perf_counter()
        for _ in range(p["n"]):
            t = time.perf_counter()
            await a.txn_cas(key, value)
            lat.append(time.perf_counter() - t)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        c.result("txn_seq", rep, **c.latency_metrics(lat, p["n"], wall, cpu))


async def put_inflight(a: AsyncAdapter, p: dict[str, Any]) -> None:
    value = b"v" * p["value_size"]
    inflight = p["inflight"]
    await _warmup(a, p["prefix"])
    per_task = p["n"] // inflight

    async def work(keys: list[bytes], lat: list[float]) -> None:
        for key in keys:
            t = time.perf_counter()
            await a.put(key, value)
            lat.append(time.perf_counter() - t)

    for rep in range(p["reps"]):
        lats: list[list[float]] = [[] for _ in range(inflight)]
        keys = [
            [b"%sput64/%d/%d/%d" % (p["prefix"], rep, t, i) for i in range(per_task)]
            for t in range(inflight)
        ]
        cpu0, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(work(keys[t], lats[t]) for t in range(inflight)))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        flat = [x for lat in lats for x in lat]
        c.result("put_inflight", rep, **c.latency_metrics(flat, len(flat), wall, cpu))


async def range_read(a: AsyncAdapter, p: dict[str, Any], endpoint: str) -> None:
    prefix = p["prefix"] + b"range/"
    # The keys stay between the rounds of this workload: load them once.
    if await a.get_prefix(prefix) != p["keys"]:  # also warms up
        await asyncio.to_thread(c.preload, p, endpoint, prefix, p["keys"], p["value_size"])
        if await a.get_prefix(prefix) != p["keys"]:
            raise RuntimeError("range read returned the wrong number of keys")
    reads = p.get("reads", 1)
    for rep in range(p["reps"]):
        # Several reads per process, averaged: a read's share of the garbage collector's
        # full passes (which one read in a fresh process may or may not trigger) is
        # then counted for every client alike.
        cpu0, start = time.process_time(), time.perf_counter()
        for _ in range(reads):
            count = await a.get_prefix(prefix)
            if count != p["keys"]:
                raise RuntimeError(f"range read returned {count} keys, not {p['keys']}")
        wall, cpu = (time.perf_counter() - start) / reads, (time.process_time() - cpu0) / reads
        c.result("range_read", rep, read_ms=wall * 1e3, keys_s=count / wall, cpu_ms=cpu * 1e3)


async def watch_delivery(a: AsyncAdapter, p: dict[str, Any], endpoint: str) -> None:
    await _warmup(a, p["prefix"])
    for rep in range(p["reps"]):
        prefix = b"%swatch/%d/" % (p["prefix"], rep)
        events, cancel = await a.watch_prefix(prefix)
        delivery = c.Delivery(p["events"])
        writer = c.start_writer(p, endpoint, prefix, p["events"], p["batch"], p["value_size"])
        last = [time.time()]
        cpu0 = time.process_time()
        try:
            await asyncio.wait_for(_consume(events, delivery, last), p["deadline"])
        except asyncio.TimeoutError:
            pass  # counted as lost events
        finally:
            await cancel()
        cpu = time.process_time() - cpu0
        report = await asyncio.to_thread(c.finish_writer, writer, p["deadline"])
        c.result("watch_delivery", rep, **c.watch_metrics(delivery, report, last[0], cpu))
        await a.delete_prefix(prefix)


async def _consume(
    events: AsyncIterator[Sequence[bytes]], delivery: c.Delivery, last: list[float]
) -> None:
    async for keys in events:
        done = delivery.add(keys)
        last[0] = time.time()
        if done:
            return


async def watchers(a: AsyncAdapter, p: dict[str, Any], workload: str) -> None:
    await _warmup(a, p["prefix"])
    streams0, watchers0 = c.watch_gauges(p["metrics_url"])
    rss0 = c.rss_mb()
    keys = [b"%swatchers/%08d" % (p["prefix"], i) for i in range(p["n"])]
    start = time.perf_counter()
    handles = [await a.watch_key(key) for key in keys]
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


async def leases(a: AsyncAdapter, p: dict[str, Any], workload: str) -> None:
    ttl = p["ttl"]
    semaphore = asyncio.Semaphore(64)

    async def grant() -> Any:
        async with semaphore:
            return await a.grant(ttl)

    granted = await asyncio.gather(*(grant() for _ in range(p["n"])))
    stats = await a.keep_alive(list(granted), ttl)
    await asyncio.sleep(p["warmup"])
    for rep in range(p["reps"]):
        renewals0 = stats.renewals
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(p["window"])
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
    await stats.stop()


async def lock_uncontended(a: AsyncAdapter, p: dict[str, Any]) -> None:
    name = p["prefix"].decode() + "lock/solo"
    for _ in range(3):
        await a.lock_cycle(name, p["ttl"], p["timeout"], _noop)
    for rep in range(p["reps"]):
        lat = []
        failures = 0
        cpu0, start = time.process_time(), time.perf_counter()
        for _ in range(p["cycles"]):
            t = time.perf_counter()
            if await a.lock_cycle(name, p["ttl"], p["timeout"], _noop):
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


async def lock_contended(p: dict[str, Any], endpoint: str) -> None:
    for rep in range(p["reps"]):
        name = f"{p['prefix'].decode()}lock/contended/{rep}"
        params = dict(p, prefix=p["prefix"].decode())
        metrics = await asyncio.to_thread(
            c.run_contenders, endpoint, params, name, p["procs"], p["cycles"]
        )
        c.result("lock_contended", rep, **metrics)


async def recipe_rpcs(
    a: AsyncAdapter, p: dict[str, Any], make_other: Callable[[], Awaitable[AsyncAdapter]]
) -> None:
    """As ``_sync_harness.recipe_rpcs``: RPCs per recipe operation from the server's
    own counters."""
    url, ttl, timeout = p["metrics_url"], p["ttl"], p["timeout"]
    base = p["prefix"].decode() + "rpc/"
    metrics: dict[str, float] = {}

    async def measure(key: str, run: Callable[[], Awaitable[None]], per: int = 1) -> None:
        before = c.rpc_counts(url)
        await run()
        delta = c.rpc_delta(before, c.rpc_counts(url))
        metrics[key] = c.unary_total(delta) / per
        metrics[key.replace("_rpcs", "_watch_msgs")] = delta.get("Watch:msgs", 0.0) / per

    for _ in range(3):
        await a.lock_cycle(base + "solo", ttl, timeout, _noop)
    cycles = p["cycles"]

    async def solo() -> None:
        for _ in range(cycles):
            await a.lock_cycle(base + "solo", ttl, timeout, _noop)

    await measure("lock_rpcs", solo, cycles)

    other = await make_other()
    try:
        await other.lock_cycle(base + "warm", ttl, timeout, _noop)
        marks: dict[str, dict[str, float]] = {}

        def waiter_body() -> None:
            marks["acquired"] = c.rpc_counts(url)

        release = await a.lock_hold(base + "handoff", ttl, timeout)
        waiter = asyncio.create_task(other.lock_cycle(base + "handoff", ttl, timeout, waiter_body))
        await asyncio.sleep(0.5)  # the waiter is queued and watching
        marks["release"] = c.rpc_counts(url)
        await release()
        await asyncio.wait_for(waiter, timeout)
        delta = c.rpc_delta(marks["release"], marks["acquired"])
        metrics["handoff_rpcs"] = c.unary_total(delta)
        metrics["handoff_watch_msgs"] = delta.get("Watch:msgs", 0.0)
    finally:
        await other.close()

    try:
        await a.campaign_cycle(base + "election", ttl)
        await measure("campaign_rpcs", lambda: a.campaign_cycle(base + "election", ttl))
    except c.Unsupported:
        pass
    try:
        calls = await a.config_subscribe(p["prefix"] + b"rpc/config/", p["subscribers"])
    except c.Unsupported:
        pass
    else:
        key, subscribers = p["prefix"] + b"rpc/config/k", p["subscribers"]

        async def update() -> None:
            total = calls.count + subscribers
            await a.put(key, b'"%d"' % time.time_ns())
            if not await calls.wait_for(total, timeout):
                raise RuntimeError("the config subscribers did not all see the update")

        await update()
        await measure("config_rpcs", update)
        metrics["config_rpcs"] -= 1  # the update's own put
    c.result("recipe_rpcs", p.get("rep", 0), **metrics)


# --- cost curves (one size per process; see config.SWEEPS) ---------------------------


def _threads() -> int:
    return threading.active_count()


async def sweep_watchers(a: AsyncAdapter, p: dict[str, Any]) -> None:
    n, key = p["n"], p["prefix"] + b"sweep/watched"
    await a.put(key, b"0")  # connected, and the key exists
    # A first watcher elsewhere: the client's watch stream (and its reader) exist, so
    # the figures are what the n watchers themselves add.
    first = await a.watch_key(key + b"/first")
    threads0, rss0 = _threads(), c.rss_mb()
    counter = Counter()
    start = time.perf_counter()
    await a.watch_many(key, n, counter)
    create = time.perf_counter() - start
    rss1, threads1 = c.rss_mb(), _threads()
    put_at = time.perf_counter()
    await a.put(key, b"1")
    if not await counter.wait_for(n, p["timeout"]):
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


async def sweep_lock(p: dict[str, Any], endpoint: str) -> None:
    procs = p["procs"]
    cycles = max(2, p["cycles_total"] // procs)
    name = f"{p['prefix'].decode()}lock/sweep/{procs}"
    params = dict(p, prefix=p["prefix"].decode())
    metrics = await asyncio.to_thread(c.run_contenders, endpoint, params, name, procs, cycles)
    c.result("sweep_lock", p["rep"], **metrics)


async def sweep_config(a: AsyncAdapter, p: dict[str, Any]) -> None:
    n, prefix = p["n"], p["prefix"] + b"sweep/config/"
    await a.put(prefix + b"k", b'"start"')
    threads0 = _threads()
    counter = await a.config_subscribe(prefix, n)
    threads = _threads() - threads0
    fanout = []
    for i in range(p["updates"]):
        total = counter.count + n
        start = time.perf_counter()
        await a.put(prefix + b"k", b'"%d"' % i)
        if not await counter.wait_for(total, p["timeout"]):
            raise RuntimeError(f"{total - counter.count} subscribers missed an update")
        fanout.append(time.perf_counter() - start)
    c.result("sweep_config", p["rep"], fanout_ms=statistics.median(fanout) * 1e3, threads=threads)


async def sweep_group(a: AsyncAdapter, p: dict[str, Any]) -> None:
    name = p["prefix"].decode() + "sweep/group"
    metrics = await a.group_sweep(name, p["n"], p["ttl"], p["timeout"])
    c.result("sweep_group", p["rep"], **metrics)


async def contender(a: AsyncAdapter, p: dict[str, Any]) -> None:
    await a.get(b"warmup")
    await asyncio.to_thread(c.contender_ready)
    intervals: list[tuple[float, float, float]] = []
    failures = 0

    requested = [0.0]

    def body() -> None:
        acquired = time.time()
        intervals.append((acquired, time.time(), requested[0]))

    for _ in range(p["cycles"]):
        requested[0] = time.time()
        try:
            if not await a.lock_cycle(p["lock_name"], p["ttl"], p["timeout"], body):
                failures += 1
        except Exception:
            traceback.print_exc()
            failures += 1
    c.contender_report(intervals, failures)


def main(make_adapter: Callable[[str], AsyncAdapter], client: str) -> None:
    asyncio.run(_main(make_adapter, client))


async def _main(make_adapter: Callable[[str], AsyncAdapter], client: str) -> None:
    args = c.parse_args()
    p = dict(args.params)
    p["prefix"] = p.get("prefix", "bench/").encode()
    adapter = make_adapter(args.endpoint)
    await adapter.connect()
    try:
        if args.role == "contender":
            await contender(adapter, p)
            return
        c.emit("meta", client=client, versions=adapter.versions())
        await run(adapter, args.workload, p, args.endpoint, make_adapter)
    finally:
        await adapter.close()


async def run(
    a: AsyncAdapter,
    workload: str,
    p: dict[str, Any],
    endpoint: str,
    make_adapter: Callable[[str], AsyncAdapter],
) -> None:
    async def make_other() -> AsyncAdapter:
        other = make_adapter(endpoint)
        await other.connect()
        return other

    try:
        if workload == "put_seq":
            await put_seq(a, p)
        elif workload == "get_seq":
            await get_seq(a, p)
        elif workload == "delete_seq":
            await delete_seq(a, p)
        elif workload == "txn_seq":
            await txn_seq(a, p)
        elif workload == "put_inflight":
            await put_inflight(a, p)
        elif workload == "range_read":
            await range_read(a, p, endpoint)
        elif workload == "watch_delivery":
            await watch_delivery(a, p, endpoint)
        elif workload.startswith("watchers"):
            await watchers(a, p, workload)
        elif workload.startswith("leases"):
            await leases(a, p, workload)
        elif workload == "lock_uncontended":
            await lock_uncontended(a, p)
        elif workload == "sweep_watchers":
            await sweep_watchers(a, p)
        elif workload == "sweep_leases":
            await leases(a, p, workload)
        elif workload == "sweep_lock":
            probe = p["prefix"].decode() + "lock/probe"
            await a.lock_cycle(probe, p["ttl"], p["timeout"], _noop)
            await sweep_lock(p, endpoint)
        elif workload == "sweep_config":
            await sweep_config(a, p)
        elif workload == "sweep_group":
            await sweep_group(a, p)
        elif workload == "recipe_rpcs":
            await recipe_rpcs(a, p, make_other)
        elif workload == "lock_contended":
            # Probe the recipe first so a missing one is a skip, not 4 crashes.
            probe = p["prefix"].decode() + "lock/probe"
            await a.lock_cycle(probe, p["ttl"], p["timeout"], _noop)
            await lock_contended(p, endpoint)
        else:
            raise c.Unsupported(f"no such workload for an async client: {workload}")
    except c.Unsupported as exc:
        c.skip(workload, str(exc))


def _noop() -> None:
    pass
