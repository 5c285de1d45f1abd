"""OpenTelemetry spans and metrics, read back from the SDK's in-memory exporters
(issue 16, item 2).

* a ``put`` is one span ``etcdserverpb.KV/Put`` with the method, the endpoint, the
  retry count (0) and the outcome; a read retried on the next endpoint says so;
* a contended ``lock.acquire`` is a span whose ``etcdsync.lock.wait_time`` is the
  wait the caller measured, with its queue position; the lock-wait and hold
  histograms and the acquisition/timeout counters move with it;
* the leader-change counter counts each term begun, resigned and lost;
* a session whose lease is revoked elsewhere counts as an expiry, a close does not.

Telemetry is process-wide: each test enables it with its own providers and turns
it off again.  Canonical asyncio tests; ``tests/_sync/`` is generated.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import pings

from etcdsync import AsyncClient, errors, telemetry
from etcdsync._backends._async import Event, spawn, wait_event
from etcdsync.lease_types import LeaseLostReason
from etcdsync.testing.proxy import FaultProxy

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode


class Otel:
    """The in-memory exporters of one test."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        telemetry.enable(
            tracer_provider=tracer_provider,
            meter_provider=MeterProvider(metric_readers=[self.reader]),
        )

    def finished(self, name: str) -> list[Any]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found

    def count(self, metric: str, **attributes: str) -> float:
        """A counter's value over the points matching ``attributes``."""
        return sum(
            p.value
            for p in self.points(metric)
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        )


@pytest.fixture
def otel() -> Iterator[Otel]:
    recorder = Otel()
    try:
        yield recorder
    finally:
        telemetry.disable()


async def _wait_for_keys(etcd: Any, prefix: str, count: int, timeout: float = 10) -> None:
    """Wait (on a watch) until ``count`` keys exist under ``prefix``."""
    watcher = await etcd.watch(prefix, prefix=True)
    try:
        deadline = time.monotonic() + timeout
        while (await etcd.get(prefix, prefix=True, count_only=True)).count < count:
            left = deadline - time.monotonic()
            assert left > 0, f"fewer than {count} keys under {prefix}"
            try:
                await watcher.get(timeout=left)
            except TimeoutError:
                pass
    finally:
        await watcher.cancel()


async def test_a_put_is_one_span_with_the_request_attributes(
    etcd_endpoint: str, prefix: str, otel: Otel
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.get(prefix + "warm-up")  # the first connect, out of the measured part
        otel.spans.clear()
        await etcd.put(prefix + "k", "v")
        [span] = otel.spans.get_finished_spans()
    assert span.name == "etcdserverpb.KV/Put"
    host, port = etcd_endpoint.rsplit(":", 1)
    assert dict(span.attributes) == {
        "rpc.system": "grpc",
        "rpc.service": "etcdserverpb.KV",
        "rpc.method": "Put",
        "etcdsync.endpoint": etcd_endpoint,
        "server.address": host,
        "server.port": int(port),
        "etcdsync.retries": 0,
        "etcdsync.outcome": "ok",
    }
    assert span.status.status_code != StatusCode.ERROR


async def test_a_read_retried_on_the_next_endpoint_says_so(
    etcd_endpoint: str, prefix: str, otel: Otel
) -> None:
    with FaultProxy(etcd_endpoint) as proxy:
        async with AsyncClient([proxy.endpoint, etcd_endpoint], timeout=5) as etcd:
            await etcd.put(prefix + "k", "v")  # the first connect prefers the first endpoint
            assert etcd.endpoint == proxy.endpoint
            proxy.close()  # refuses connections from now on: the read goes elsewhere
            otel.spans.clear()
            assert (await etcd.get(prefix + "k")).kv is not None
            [retried] = otel.finished("etcdserverpb.KV/Range")
    assert retried.attributes["etcdsync.retries"] >= 1
    assert retried.attributes["etcdsync.endpoint"] == etcd_endpoint  # who answered
    assert retried.attributes["etcdsync.outcome"] == "ok"


async def test_a_failed_request_is_an_error_span(
    etcd_endpoint: str, prefix: str, otel: Otel
) -> None:
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "k", "v")
        otel.spans.clear()
        with pytest.raises(errors.FutureRevisionError):
            await etcd.get(prefix + "k", revision=1 << 40)
        [span] = otel.spans.get_finished_spans()
    assert span.name == "etcdserverpb.KV/Range"
    assert span.attributes["etcdsync.outcome"] == "FutureRevisionError"
    assert span.attributes["etcdsync.retries"] == 0
    assert span.status.status_code == StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


async def test_contended_lock_acquire_span_and_lock_metrics(
    etcd_endpoint: str, prefix: str, otel: Otel
) -> None:
    name = prefix + "l"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        holder = etcd.lock(name, ttl=10)
        await holder.acquire()
        waiter = other.lock(name, ttl=10)
        done = Event()
        measured: list[float] = []

        async def wait_for_it() -> None:
            started = time.monotonic()
            try:
                await waiter.acquire(timeout=20)
                measured.append(time.monotonic() - started)
            finally:
                done.set()

        spawn(wait_for_it, name="test-waiter")
        await _wait_for_keys(etcd, name + "/", 2)  # the waiter is queued
        await holder.release()
        assert await wait_event(done, 10)
        assert waiter.held and measured
        waiter_key = waiter.key
        await waiter.release()
    spans = otel.finished("lock.acquire")
    assert len(spans) == 2
    waited = next(s for s in spans if s.attributes["etcdsync.lock.key"] == waiter_key)
    wait_time = waited.attributes["etcdsync.lock.wait_time"]
    # The span covers the acquire call the caller timed (a little less: its own start).
    assert 0 <= measured[0] - wait_time < 0.1, (measured, wait_time)
    assert waited.attributes["etcdsync.lock.queue_position"] == 1
    assert waited.attributes["etcdsync.outcome"] == "acquired"
    assert waited.attributes["etcdsync.lock.name"] == name
    # The RPCs of the acquire are children of its span.
    children = [
        s
        for s in otel.spans.get_finished_spans()
        if s.parent is not None and s.parent.span_id == waited.context.span_id
    ]
    assert any(s.name == "etcdserverpb.KV/Txn" for s in children)
    [wait_hist] = otel.points("etcdsync.lock.wait")
    assert wait_hist.count == 2 and wait_hist.attributes == {"etcdsync.lock.name": name}
    # One point per acquire: the holder's (uncontended, but its first acquire also made
    # the session, so it may be the longer one) and the waiter's.
    waits = [s.attributes["etcdsync.lock.wait_time"] for s in spans]
    assert wait_hist.sum == pytest.approx(sum(waits))
    assert wait_hist.max == pytest.approx(max(waits)) and wait_hist.max >= wait_time
    hold = {p.attributes["etcdsync.outcome"]: p for p in otel.points("etcdsync.lock.hold")}
    assert hold["released"].count == 2
    assert otel.count("etcdsync.lock.acquisitions", **{"etcdsync.lock.name": name}) == 2
    assert otel.count("etcdsync.lock.timeouts") == 0


async def test_lock_timeout_and_loss_are_counted(
    etcd_endpoint: str, prefix: str, otel: Otel
) -> None:
    name = prefix + "l"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as other:
        holder = etcd.lock(name, ttl=10)
        await holder.acquire()
        with pytest.raises(errors.LockTimeout):
            await other.lock(name, ttl=10).acquire(timeout=0.3)
        [timed_out] = [
            s
            for s in otel.finished("lock.acquire")
            if s.attributes["etcdsync.outcome"] != "acquired"
        ]
        assert timed_out.attributes["etcdsync.outcome"] == "timeout"
        assert timed_out.status.status_code == StatusCode.ERROR
        assert otel.count("etcdsync.lock.timeouts", **{"etcdsync.lock.name": name}) == 1
        session = holder.session
        assert session is not None
        await other.revoke(session.lease_id)  # as an expiry would
        assert await wait_event(holder.lost, 5)
        assert otel.count("etcdsync.lock.losses", **{"etcdsync.lock.name": name}) == 1
        assert otel.count("etcdsync.session.expiries") == 1
        await holder.release()  # no request: already lost, and not a second count
    assert otel.count("etcdsync.lock.losses") == 1
    hold = {p.attributes["etcdsync.outcome"]: p.count for p in otel.points("etcdsync.lock.hold")}
    assert hold == {"lost": 1}
    # Closing the clients closed their sessions: not expiries.
    assert otel.count("etcdsync.session.expiries") == 1


async def test_leader_changes_are_counted(etcd_endpoint: str, prefix: str, otel: Otel) -> None:
    name = prefix + "e"
    async with AsyncClient(etcd_endpoint) as a, AsyncClient(etcd_endpoint) as b:
        first, second = a.election(name, ttl=10), b.election(name, ttl=10)
        await first.campaign("a")
        done = Event()

        async def campaign() -> None:
            try:
                await second.campaign("b", timeout=20)
            finally:
                done.set()

        spawn(campaign, name="test-campaign")
        await _wait_for_keys(a, name + "/", 2)
        await first.resign()
        assert await wait_event(done, 10) and second.is_leader
        elected = {"etcdsync.election.name": name, "etcdsync.change": "elected"}
        assert otel.count("etcdsync.election.leader_changes", **elected) == 2
        assert (
            otel.count("etcdsync.election.leader_changes", **{"etcdsync.change": "resigned"}) == 1
        )
        session = second.session
        assert session is not None
        await a.revoke(session.lease_id)
        assert await wait_event(second.lost, 5)
        assert otel.count("etcdsync.election.leader_changes", **{"etcdsync.change": "lost"}) == 1
    spans = otel.finished("election.campaign")
    assert [s.attributes["etcdsync.outcome"] for s in spans] == ["elected", "elected"]
    assert spans[1].attributes["etcdsync.election.wait_time"] > 0
    assert otel.count("etcdsync.election.leader_changes") == 4  # nothing more at close


async def test_off_by_default_and_off_again(etcd_endpoint: str, prefix: str) -> None:
    assert not telemetry.is_enabled()
    recorder = Otel()
    telemetry.disable()
    async with AsyncClient(etcd_endpoint) as etcd:
        await etcd.put(prefix + "k", "v")
        async with etcd.lock(prefix + "l", ttl=10):
            pass
    assert recorder.spans.get_finished_spans() == ()
    assert recorder.points("etcdsync.lock.wait") == []


async def test_a_config_reload_is_a_span_and_watch_reconnects_are_counted(
    etcd_server_factory: Any, otel: Otel
) -> None:
    server = etcd_server_factory(extra_args=pings.MEMBER_ARGS)
    with FaultProxy(server.endpoint) as proxy:
        async with (
            AsyncClient(proxy.endpoint, settings=pings.SETTINGS) as watching,
            AsyncClient(server.endpoint) as etcd,
        ):
            await etcd.put("app/a", "1")
            cfg = await watching.config("app/").start()
            assert otel.count("etcdsync.watch.reconnects") == 0
            proxy.blackhole()  # a partition; then the history it missed is compacted
            proxy.reset()
            await etcd.put("app/b", "2")
            latest = await etcd.put("elsewhere", "x")
            await etcd.compact(latest.revision)
            proxy.heal()
            deadline = time.monotonic() + 15
            snapshot = cfg.snapshot
            while "b" not in dict(snapshot):
                left = deadline - time.monotonic()
                assert left > 0, "the config did not converge"
                snapshot = await cfg.wait_for_change(snapshot.revision, timeout=left)
            assert cfg.reloads == 1
            await cfg.stop()
    [reload] = otel.finished("config.reload")
    assert reload.attributes["etcdsync.config.prefix"] == "app/"
    assert reload.attributes["etcdsync.config.revision"] >= latest.revision
    assert reload.attributes["etcdsync.outcome"] == "ok"
    assert otel.count("etcdsync.watch.reconnects") >= 1
    # One resume gap per reconnect: the time from the stream's failure to its reopening.
    [gap] = otel.points("etcdsync.watch.resume_gap")
    assert gap.count == otel.count("etcdsync.watch.reconnects") and gap.max > 0


async def test_keepalive_stalls_and_halted_leases_are_counted(
    etcd_server_factory: Any, otel: Otel
) -> None:
    server = etcd_server_factory()
    with FaultProxy(server.endpoint) as proxy:
        async with AsyncClient(proxy.endpoint) as etcd:
            lease = await etcd.grant(2)
            async with etcd.keep_alive(lease) as ka:
                assert otel.count("etcdsync.keepalive.failures") == 0
                proxy.blackhole()  # renewals go unanswered: a stall, then the lease halts
                assert await ka.wait_lost(timeout=10)
                assert ka.lost_reason is LeaseLostReason.HALTED
            proxy.heal()
    assert otel.count("etcdsync.keepalive.failures", **{"etcdsync.failure": "stall"}) >= 1
    assert otel.count("etcdsync.keepalive.failures", **{"etcdsync.failure": "halted"}) == 1
