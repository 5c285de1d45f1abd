"""What is benchmarked: the clients, the workloads, their sizes and metrics."""

# The tables use the multiplication sign on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["sync", "async", "go"]
Better = Literal["higher", "lower", "count", "info"]


@dataclass(frozen=True)
class ClientSpec:
    name: str
    """Command-line name and table column."""
    kind: Kind
    driver: str | None
    """Script under bench/drivers/ (None: the Go load generator)."""
    requirements: tuple[str, ...] = ()
    """pip requirements of its own venv under bench/.venvs/ (empty: the project's)."""
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""
    workloads: tuple[str, ...] | None = None
    """The only workloads this client runs (None: every workload of its kind)."""

    @property
    def etcdsync(self) -> bool:
        return self.name.startswith("etcdsync")

    def runs(self, workload: Workload) -> bool:
        return self.kind in workload.kinds and (
            self.workloads is None or workload.name in self.workloads
        )


FLOOR_WORKLOADS = (
    "put_seq",
    "get_seq",
    "delete_seq",
    "txn_seq",
    "put_threads",
    "put_inflight",
    "range_read",
    "watch_delivery",
    "lock_uncontended",
)
"""What the bare-grpc floor runs: every single request a client library wraps (its
lock cycle is the two RPCs a lock needs at least: one txn, one delete)."""

CLIENTS: tuple[ClientSpec, ...] = (
    ClientSpec("etcdsync-sync", "sync", "etcdsync_sync.py"),
    ClientSpec("etcdsync-async", "async", "etcdsync_async.py"),
    ClientSpec(
        "etcd3",
        "sync",
        "etcd3_driver.py",
        # etcd3 0.12's Lock.acquire passes tenacity a wait function of the pre-7.0
        # signature: with a current tenacity every contended acquire raises TypeError.
        ("etcd3==0.12.0", "tenacity==6.3.1"),
        # Its generated *_pb2 modules predate protobuf 4: importable only with the
        # pure-Python protobuf runtime.
        {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"},
        note=(
            "imported with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python (its generated "
            "modules do not load on protobuf >= 4's upb runtime); tenacity pinned to 6.3.1 "
            "(its lock breaks with tenacity >= 7)"
        ),
    ),
    ClientSpec(
        "pyetcd",
        "sync",
        "pyetcd_driver.py",
        # etcd-sdk-python does not declare its protobuf dependency.
        ("etcd-sdk-python==0.0.7", "protobuf"),
        note="package etcd-sdk-python; protobuf added (undeclared dependency)",
    ),
    ClientSpec("aetcd", "async", "aetcd_driver.py", ("aetcd==1.0.0",)),
    ClientSpec("go", "go", None, note="Go clientv3 (Debian golang-etcd-server-dev), the ceiling"),
    # The floor: the same requests over a raw grpc channel, in the project's venv (same
    # grpcio and protobuf as etcdsync), with no client library between.
    ClientSpec(
        "bare-sync",
        "sync",
        "bare_sync.py",
        note="the floor: the same requests over a raw grpc channel (sync stack)",
        workloads=FLOOR_WORKLOADS,
    ),
    ClientSpec(
        "bare-async",
        "async",
        "bare_async.py",
        note="the floor: the same requests over a raw grpc.aio channel",
        workloads=FLOOR_WORKLOADS,
    ),
)

CLIENTS_BY_NAME = {spec.name: spec for spec in CLIENTS}
SYNC_PEERS = ("etcd3", "pyetcd")
ASYNC_PEERS = ("aetcd",)
FLOORS = {"etcdsync-sync": "bare-sync", "etcdsync-async": "bare-async"}


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: Better
    digits: int = 0


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    kinds: tuple[Kind, ...]
    metrics: tuple[Metric, ...]
    full: dict[str, Any]
    quick: dict[str, Any]
    interleave: bool = True
    """Run each repetition in a fresh driver process, the repetitions of all clients
    taking turns (client A rep 1, client B rep 1, ..., A rep 2...): load drifting on a
    shared machine then hits every client alike.  False for workloads whose set-up
    (granting 10,000 leases) should be paid once: all repetitions in one process."""
    count_leases: bool = False
    """Count the leases left on the server after each repetition."""
    sweep: str | None = None
    """A cost curve: the parameter that takes each of ``params["sizes"]`` in turn (one
    driver process per size, the clients taking turns); reported as curves with a
    plot, not in the results table."""
    caps: dict[str, int] = field(default_factory=dict)
    """Per client, the largest size it runs in this sweep (the peers' loops cannot keep
    up with the largest sizes, or their runs would take most of the benchmark)."""
    per_item: dict[str, str] = field(default_factory=dict)
    """For a sweep: metric key -> the unit of that metric divided by the size (the
    per-item cost whose growth RESULTS.md states), e.g. ``{"create_s": "µs/watcher"}``."""

    def describe(self, params: dict[str, Any]) -> str:
        return self.title.format(**params)

    def sizes(self, params: dict[str, Any], client: str) -> list[int]:
        cap = self.caps.get(client)
        return [n for n in params.get("sizes", ()) if cap is None or n <= cap]


ALL_KINDS: tuple[Kind, ...] = ("sync", "async", "go")
_OPS = Metric("ops_s", "ops/s", "higher")
_P50 = Metric("p50_ms", "p50 ms", "lower", 3)
_P99 = Metric("p99_ms", "p99 ms", "lower", 3)
_CPU_OP = Metric("cpu_us_op", "client CPU µs/op", "lower", 1)
_VALUE = {"value_size": 100}
# Sequential single requests: 5 interleaved rounds of 2,000 calls, so etcdsync and the
# bare-grpc floor are compared on medians of alternating processes.
_SEQ_FULL = {"n": 2000, "reps": 5, **_VALUE}
_SEQ_QUICK = {"n": 100, "reps": 1, **_VALUE}
_LEASE_TTL = 10
# 10 s bounds an acquire: far above any honest wait here (4 contenders, ms-long holds),
# and the bound on python-etcd3's lost wake-ups (it then waits out its timeout).
_LOCK = {"ttl": 10, "timeout": 10}

WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "put_seq",
        "sequential put ({n} × {value_size} B)",
        ALL_KINDS,
        (_OPS, _P50, _P99, _CPU_OP),
        _SEQ_FULL,
        _SEQ_QUICK,
    ),
    Workload(
        "get_seq",
        "sequential get ({n}, linearizable)",
        ALL_KINDS,
        (_OPS, _P50, _P99, _CPU_OP),
        _SEQ_FULL,
        _SEQ_QUICK,
    ),
    Workload(
        "delete_seq",
        "sequential delete ({n} existing keys)",
        ALL_KINDS,
        (_OPS, _P50, _P99, _CPU_OP),
        _SEQ_FULL,
        _SEQ_QUICK,
    ),
    Workload(
        "txn_seq",
        "sequential txn ({n}: if version > 0 then put else get)",
        ALL_KINDS,
        (_OPS, _P50, _P99, _CPU_OP),
        _SEQ_FULL,
        _SEQ_QUICK,
    ),
    Workload(
        "put_threads",
        "put, {threads} threads ({n} puts)",
        ("sync", "go"),
        (_OPS, _P99, _CPU_OP),
        {"n": 3200, "threads": 16, "reps": 3, **_VALUE},
        {"n": 320, "threads": 16, "reps": 1, **_VALUE},
    ),
    Workload(
        "put_inflight",
        "put, {inflight} in flight ({n} puts)",
        ("async", "go"),
        (_OPS, _P99, _CPU_OP),
        {"n": 3200, "inflight": 64, "reps": 3, **_VALUE},
        {"n": 320, "inflight": 64, "reps": 1, **_VALUE},
    ),
    Workload(
        "range_read",
        "range read of {keys} keys",
        ALL_KINDS,
        (
            Metric("read_ms", "ms per read", "lower", 1),
            Metric("cpu_ms", "client CPU ms", "lower", 1),
        ),
        {"keys": 10_000, "reps": 5, "reads": 10, **_VALUE},
        {"keys": 1000, "reps": 1, "reads": 3, **_VALUE},
    ),
    Workload(
        "watch_delivery",
        "watch: 1 prefix watcher, {events} events in txns of {batch}",
        ALL_KINDS,
        (
            Metric("events_s", "events/s delivered", "higher"),
            Metric("cpu_us_per_event", "watcher CPU µs/event", "lower", 1),
            Metric("lag_ms", "lag after last write ms", "info", 1),
            Metric("lost", "events lost (worst)", "count"),
        ),
        {"events": 20_000, "batch": 100, "reps": 3, "deadline": 60, **_VALUE},
        {"events": 2000, "batch": 100, "reps": 1, "deadline": 20, **_VALUE},
    ),
    Workload(
        "watchers_small",
        "create {n} watchers",
        ALL_KINDS,
        (
            Metric("create_s", "creation s", "lower", 2),
            Metric("rss_mb", "RSS growth MiB", "lower", 1),
            Metric("streams", "watch streams used", "count"),
        ),
        {"n": 1000, "reps": 3},
        {"n": 100, "reps": 1},
    ),
    Workload(
        "watchers_large",
        "create {n} watchers",
        ALL_KINDS,
        (
            Metric("create_s", "creation s", "lower", 2),
            Metric("rss_mb", "RSS growth MiB", "lower", 1),
            Metric("streams", "watch streams used", "count"),
        ),
        {"n": 10_000, "reps": 3},
        {"n": 1000, "reps": 1},
    ),
    Workload(
        "leases_small",
        "keep {n} leases alive (TTL {ttl} s)",
        ALL_KINDS,
        (
            Metric("cpu_pct", "client CPU % of one core", "lower", 1),
            Metric("renewals_s", "renewals/s", "info"),
            Metric("lost", "leases lost (worst)", "count"),
        ),
        {"n": 1000, "ttl": _LEASE_TTL, "reps": 3},
        {"n": 100, "ttl": 3, "reps": 1},
        interleave=False,
    ),
    Workload(
        "leases_large",
        "keep {n} leases alive (TTL {ttl} s)",
        ALL_KINDS,
        (
            Metric("cpu_pct", "client CPU % of one core", "lower", 1),
            Metric("renewals_s", "renewals/s", "info"),
            Metric("lost", "leases lost (worst)", "count"),
        ),
        {"n": 10_000, "ttl": _LEASE_TTL, "reps": 3},
        {"n": 1000, "ttl": 3, "reps": 1},
        interleave=False,
    ),
    Workload(
        "lock_uncontended",
        "lock acquire+release, uncontended ({cycles} cycles)",
        ALL_KINDS,
        (
            Metric("cycles_s", "cycles/s", "higher"),
            Metric("p50_ms", "p50 ms", "lower", 2),
            Metric("cpu_us_op", "client CPU µs/cycle", "lower"),
            Metric("leases_left", "leases left after", "count"),
        ),
        {"cycles": 200, "reps": 3, **_LOCK},
        {"cycles": 20, "reps": 1, **_LOCK},
        count_leases=True,
    ),
    Workload(
        "recipe_rpcs",
        "RPCs per recipe operation ({cycles} lock cycles, {subscribers} config subscribers)",
        ALL_KINDS,
        (
            Metric("lock_rpcs", "lock acquire+release: unary RPCs", "count", 1),
            Metric("lock_watch_msgs", "lock acquire+release: watch msgs", "count", 1),
            Metric("handoff_rpcs", "contended handoff: unary RPCs", "count", 1),
            Metric("handoff_watch_msgs", "contended handoff: watch msgs", "count", 1),
            Metric("campaign_rpcs", "campaign+resign: unary RPCs", "count", 1),
            Metric("campaign_watch_msgs", "campaign+resign: watch msgs", "count", 1),
            Metric("config_rpcs", "config update fan-out: unary RPCs", "count", 1),
            Metric("config_watch_msgs", "config update fan-out: watch msgs", "count", 1),
        ),
        {"cycles": 20, "subscribers": 10, "reps": 2, "ttl": 30, "timeout": 10},
        {"cycles": 5, "subscribers": 3, "reps": 1, "ttl": 30, "timeout": 10},
    ),
    Workload(
        "lock_contended",
        "lock, {procs} processes × {cycles} contended cycles",
        ALL_KINDS,
        (
            Metric("wall_s", "wall s", "lower", 2),
            Metric("handoff_p50_ms", "handoff p50 ms", "lower", 1),
            Metric("handoff_p99_ms", "handoff p99 ms", "lower", 1),
            Metric("switches", "holder changes", "info"),
            Metric("failures", "failed cycles (worst)", "count"),
            Metric("overlaps", "exclusion violations (worst)", "count"),
            Metric("leases_left", "leases left after", "count"),
        ),
        {"procs": 4, "cycles": 200, "reps": 3, **_LOCK},
        {"procs": 4, "cycles": 10, "reps": 1, **_LOCK},
        count_leases=True,
    ),
)

_PEERS_UP_TO = {"etcd3": 10_000, "pyetcd": 10_000, "aetcd": 10_000}
_PEER_PROCS_UP_TO = {"etcd3": 32, "pyetcd": 32, "aetcd": 32}

SWEEPS: tuple[Workload, ...] = (
    Workload(
        "sweep_watchers",
        "watchers of one key: create, memory, one put delivered to all",
        ALL_KINDS,
        (
            Metric("create_s", "creation s", "lower", 2),
            Metric("rss_mb", "RSS growth MiB", "lower", 1),
            Metric("deliver_ms", "one put to all ms", "lower", 1),
            Metric("threads", "threads added", "info"),
        ),
        {"sizes": [1000, 10_000, 100_000], "reps": 1, "timeout": 120},
        {"sizes": [100, 1000], "reps": 1, "timeout": 30},
        sweep="n",
        per_item={"create_s": "µs/watcher", "rss_mb": "KiB/watcher", "deliver_ms": "µs/watcher"},
    ),
    Workload(
        "sweep_leases",
        "leases kept alive (TTL {ttl} s): client CPU",
        ALL_KINDS,
        (
            Metric("cpu_pct", "client CPU % of one core", "lower", 1),
            Metric("cpu_us_per_renewal", "CPU µs per renewal", "lower", 1),
            Metric("lost", "leases lost", "count"),
        ),
        {"sizes": [1000, 10_000, 50_000], "reps": 1, "ttl": _LEASE_TTL},
        {"sizes": [100, 500], "reps": 1, "ttl": 3},
        sweep="n",
        caps=_PEERS_UP_TO,
        per_item={"cpu_pct": "µs CPU/s per lease", "cpu_us_per_renewal": ""},
    ),
    Workload(
        "sweep_lock",
        "lock contenders across processes ({cycles_total} cycles in all)",
        ALL_KINDS,
        (
            Metric("handoff_p50_ms", "handoff p50 ms", "lower", 1),
            Metric("handoff_p99_ms", "handoff p99 ms", "lower", 1),
            Metric("wall_s", "total s", "lower", 2),
            Metric("worst_wait_ms", "worst wait ms", "lower", 0),
            Metric("fairness", "worst ÷ mean wait", "lower", 1),
            Metric("failures", "failed cycles", "count"),
            Metric("overlaps", "exclusion violations", "count"),
        ),
        {"sizes": [2, 8, 32, 128], "reps": 1, "cycles_total": 256, **_LOCK},
        {"sizes": [2, 4], "reps": 1, "cycles_total": 8, **_LOCK},
        sweep="procs",
        caps=_PEER_PROCS_UP_TO,
        per_item={"handoff_p50_ms": "", "handoff_p99_ms": "", "worst_wait_ms": "", "fairness": ""},
    ),
    Workload(
        "sweep_config",
        "config subscribers of one watcher: one update fanned out",
        ("sync", "async"),
        (
            Metric("fanout_ms", "update to all subscribers ms", "lower", 2),
            Metric("threads", "threads added", "info"),
        ),
        {"sizes": [1, 100, 1000], "reps": 1, "updates": 5, "timeout": 60},
        {"sizes": [1, 10], "reps": 1, "updates": 2, "timeout": 30},
        sweep="n",
        per_item={"fanout_ms": "µs/subscriber"},
    ),
    Workload(
        "sweep_group",
        "group members (one client): join, list, watch",
        ("sync", "async"),
        (
            Metric("join_s", "joining all s", "lower", 2),
            Metric("members_ms", "members() ms", "lower", 1),
            Metric("watch_all_ms", "watch start to all joins ms", "lower", 1),
            Metric("notify_ms", "one more join seen ms", "lower", 1),
        ),
        {"sizes": [10, 100, 1000], "reps": 1, "ttl": 30, "timeout": 60},
        {"sizes": [5, 10], "reps": 1, "ttl": 30, "timeout": 30},
        sweep="n",
        per_item={"join_s": "µs/member", "members_ms": "µs/member", "watch_all_ms": "µs/member"},
    ),
)

WORKLOADS = (*WORKLOADS, *SWEEPS)
WORKLOADS_BY_NAME = {w.name: w for w in WORKLOADS}


def lease_timing(params: dict[str, Any]) -> dict[str, Any]:
    """Measurement windows of one renewal period (TTL/3) each, the first starting
    half a period after the keepalives were registered: each window then holds
    exactly one renewal of every lease, whatever the phase of the waves."""
    period = params["ttl"] / 3
    return {"window": round(period, 3), "warmup": round(period / 2, 3)}
