"""Liveness of the connection (issue 12): bad input fails at once with a typed error,
``inf`` means no deadline, a frozen first endpoint does not fail the first connect,
streams resume within a second of their member coming back, server streams outlive
their connection, the auth token is refreshed under a live watch stream, and a forked
child gets ForkedClientError from everything it inherited.

Canonical asyncio tests; ``tests/_sync/test_liveness_connection.py`` is generated.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from helpers import pings

from etcdsync import AsyncClient, ChannelSettings, errors
from etcdsync._backends._async import sleep, spawn
from etcdsync.testing.plugin import EtcdServerFactory
from etcdsync.testing.proxy import FaultProxy

from .timing import within


async def _endswithin(seconds: float, call: Callable[[], Awaitable[Any]]) -> BaseException:
    """Run ``call``, which must raise within ``seconds``; return what it raised."""
    started = time.monotonic()
    try:
        await call()
    except BaseException as exc:  # returned for the caller's assertions
        elapsed = time.monotonic() - started
        assert elapsed < seconds, f"{exc!r} after {elapsed:.2f}s, expected < {seconds}s"
        return exc
    raise AssertionError("the call returned instead of raising")


# --- bad input ------------------------------------------------------------------------


BAD_TIMEOUTS = [math.nan, 1e10, "1", -1.0, True]


async def test_bad_input_raises_typed_errors_at_once(etcd_endpoint: str, prefix: str) -> None:
    for bad in BAD_TIMEOUTS:
        with pytest.raises(errors.InvalidRequest):
            AsyncClient(etcd_endpoint, timeout=bad)  # type: ignore[arg-type]
    async with AsyncClient(etcd_endpoint, timeout=5) as etcd:
        await etcd.put(prefix + "k", "v")
        watcher = await etcd.watch(prefix + "k")
        lease = await etcd.grant(30)
        listener = etcd.keep_alive(lease)
        calls: list[Callable[[Any], Awaitable[Any]]] = [
            lambda t: etcd.get(prefix + "k", timeout=t),
            lambda t: etcd.put(prefix + "k", "v", timeout=t),
            lambda t: etcd.txn(success=[], timeout=t),
            lambda t: etcd.watch(prefix + "k", timeout=t),
            lambda t: watcher.get(timeout=t),
            lambda t: listener.next_result(timeout=t),
            lambda t: listener.wait_lost(timeout=t),
            lambda t: etcd.keep_alive_once(lease, timeout=t),
            lambda t: etcd.snapshot(io.BytesIO(), timeout=t),
            lambda t: etcd.server_observe(prefix + "e", timeout=t),
        ]
        for call in calls:
            for bad in BAD_TIMEOUTS:
                error = await _endswithin(1, lambda: call(bad))  # noqa: B023
                assert isinstance(error, errors.InvalidRequest), (bad, error)
        for ttl in (2**63, 2**64, 0):
            error = await _endswithin(1, lambda: etcd.grant(ttl))  # noqa: B023
            assert isinstance(error, errors.InvalidRequest), (ttl, error)
        error = await _endswithin(1, lambda: etcd.grant(10, lease_id=2**63))
        assert isinstance(error, errors.InvalidRequest)
        surrogate = prefix + "\ud800"
        for call in (
            lambda: etcd.put(surrogate, "v"),
            lambda: etcd.get(surrogate),
            lambda: etcd.put(prefix + "k", surrogate),
            lambda: etcd.watch(surrogate),
            lambda: etcd.delete(surrogate),
        ):
            error = await _endswithin(1, call)
            assert isinstance(error, errors.InvalidRequest), error
            assert "UTF-8" in str(error)
        # Still usable after all of that.
        assert (await etcd.get(prefix + "k")).value == b"v"
        listener.close()
        await watcher.cancel()
        await etcd.revoke(lease)


async def test_inf_means_no_deadline(etcd_endpoint: str, prefix: str) -> None:
    key = prefix + "k"
    async with AsyncClient(etcd_endpoint, timeout=math.inf) as etcd:
        assert etcd._conn.timeout is None
        await etcd.put(key, "1", timeout=math.inf)
        watcher = await etcd.watch(key, timeout=math.inf)
        await etcd.put(key, "2")
        batch = await watcher.get(timeout=math.inf)
        assert batch.events[0].value == b"2"
        await watcher.cancel()
    # A call with no deadline waits for a silent member instead of failing at once.
    with FaultProxy(etcd_endpoint) as proxy:
        async with AsyncClient(proxy.endpoint, timeout=0.5) as etcd:
            await etcd.get(key)  # connected
            proxy.blackhole()
            with within(2), pytest.raises(errors.Timeout):
                await etcd.get(key)  # the client's default deadline applies
            waiter = _start(lambda: etcd.get(key, timeout=math.inf))
            await sleep(1.0)  # the fault lasts a second: the call must still be waiting
            assert not waiter.done()
            proxy.heal()
            with within(3):
                assert (await waiter.result()).value == b"2"


class _Pending:
    """A call running in the background (a task; a thread in the sync flavour)."""

    def __init__(self, call: Callable[[], Awaitable[Any]]) -> None:
        self.outcome: list[Any] = []
        self._call = call
        self.task = spawn(self._run, name="pending-call")

    async def _run(self) -> None:
        try:
            self.outcome.append(await self._call())
        except BaseException as exc:  # kept for result()
            self.outcome.append(exc)

    def done(self) -> bool:
        return bool(self.outcome)

    async def result(self) -> Any:
        assert await self.task.join(10), "the call did not end"
        value = self.outcome[0]
        if isinstance(value, BaseException):
            raise value
        return value


def _start(call: Callable[[], Awaitable[Any]]) -> _Pending:
    return _Pending(call)


# --- first connect ----------------------------------------------------------------------


async def test_first_connect_skips_a_frozen_first_endpoint(etcd_endpoint: str, prefix: str) -> None:
    with FaultProxy(etcd_endpoint) as frozen:
        frozen.blackhole()  # accepts connections, answers nothing: a SIGSTOPped member
        endpoints = [frozen.endpoint, etcd_endpoint]
        async with AsyncClient(endpoints, timeout=5) as etcd:
            with within(2):
                await etcd.put(prefix + "k", "v")  # a write: sent once, to the live member
            assert etcd.endpoint == etcd_endpoint
        async with AsyncClient(endpoints, timeout=5) as etcd:
            with within(2):  # a stream as the very first call
                watcher = await etcd.watch(prefix + "k", start_revision=1)
                assert (await watcher.get(timeout=2)).events[-1].value == b"v"
            await watcher.cancel()
        # Every endpoint refused: still a fast, typed failure.
        async with AsyncClient([_dead(), _dead()], timeout=3) as etcd:
            with within(3.5), pytest.raises(errors.ConnectionFailedError):
                await etcd.get(prefix + "k")


def _dead() -> str:
    from etcdsync.testing.server import allocate_ports

    return f"127.0.0.1:{allocate_ports(1)[0]}"


async def test_endpoints_auto_sync_from_the_member_list(etcd_endpoint: str) -> None:
    dead = _dead()
    settings = ChannelSettings(auto_sync_interval=0.2)
    async with AsyncClient([dead, etcd_endpoint], timeout=5, settings=settings) as etcd:
        await etcd.get("x")  # the first request starts the periodic sync
        deadline = time.monotonic() + 5
        while etcd.endpoints != [etcd_endpoint]:  # nothing announces a sync: poll
            assert time.monotonic() < deadline, etcd.endpoints
            await sleep(0.05)
        assert etcd.endpoint == etcd_endpoint
    for bad in (math.nan, 0, "1"):
        with pytest.raises(errors.InvalidRequest):
            ChannelSettings(auto_sync_interval=bad)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidRequest):
        ChannelSettings(reconnect_backoff_max=math.inf)


# --- recovery after a restart -------------------------------------------------------------

# The outage lasts long enough for every backoff (gRPC's and the streams') to reach its cap.
OUTAGE = 4.0


async def test_watch_and_keepalive_resume_within_a_second_of_a_restart(
    etcd_server_factory: EtcdServerFactory,
) -> None:
    server = etcd_server_factory()
    renewals: list[float] = []
    async with AsyncClient(server.endpoint, timeout=5) as etcd:
        watcher = await etcd.watch("r/", prefix=True)
        config = await etcd.config("r/", decode="text").start(timeout=5)  # a recipe
        listener = etcd.keep_alive(await etcd.grant(30))
        listener.add_callback(lambda result: renewals.append(time.monotonic()))
        await listener.next_result(timeout=5)
        before = config.revision
        server.kill()
        killed = time.monotonic()
        await sleep(OUTAGE)  # the fault itself: the member stays down this long
        server.restart()  # returns once /health says healthy
        healthy = time.monotonic()
        async with AsyncClient(server.endpoint, timeout=5, retries=50) as writer:
            await writer.put("r/after", "1")
        batch = await watcher.get(timeout=5)
        watch_resumed = time.monotonic() - healthy
        assert batch.events[0].key == b"r/after"
        snapshot = await config.wait_for_change(before, timeout=5)
        config_resumed = time.monotonic() - healthy
        assert snapshot.to_dict() == {"after": "1"}
        await listener.next_result(timeout=5)
        renewed = min(t for t in renewals if t > killed) - healthy
        logging.getLogger(__name__).info(
            "watch resumed %.2f s, config %.2f s, keepalive %.2f s after healthy",
            watch_resumed,
            config_resumed,
            renewed,
        )
        assert watch_resumed < 1.0, f"watch resumed {watch_resumed:.2f}s after healthy"
        assert config_resumed < 1.0, f"config resumed {config_resumed:.2f}s after healthy"
        # Negative when the stream renewed before /health reported healthy.
        assert renewed < 1.0, f"first renewal {renewed:.2f}s after healthy"
        listener.close()
        await config.stop()
        await watcher.cancel()


# --- server streams across a broken connection ---------------------------------------------


class _CutAfter(io.BytesIO):
    """A snapshot target that resets the proxy once ``limit`` bytes were written."""

    def __init__(self, proxy: FaultProxy, limit: int) -> None:
        super().__init__()
        self.proxy = proxy
        self.limit = limit
        self.cuts = 0

    def write(self, data: Any) -> int:
        written = super().write(data)
        if self.cuts == 0 and self.tell() >= self.limit:
            self.cuts += 1
            self.proxy.reset()  # the member's connection dies mid-stream
        return written


async def test_snapshot_starts_over_elsewhere_when_its_connection_dies(
    etcd_server_factory: EtcdServerFactory,
) -> None:
    server = etcd_server_factory()
    async with AsyncClient(server.endpoint) as etcd:
        for i in range(40):  # about 1 MiB of data
            await etcd.put(f"snap/{i}", os.urandom(25_000))
    with FaultProxy(server.endpoint) as proxy:
        async with AsyncClient([proxy.endpoint, server.endpoint], timeout=30) as etcd:
            await etcd.get("snap/0")  # the first connect picks the proxy
            assert etcd.endpoint == proxy.endpoint
            proxy.delay(0.01)  # slow enough to be cut mid-stream
            # Cut early: on a loaded machine the consumer lags behind gRPC's buffers,
            # and a cut after 100 kB once came after the last byte had been received.
            out = _CutAfter(proxy, 20_000)
            size = await etcd.snapshot(out)
            assert out.cuts == 1 and etcd.endpoint == server.endpoint
            data = out.getvalue()
            assert size == len(data) > 900_000
            assert hashlib.sha256(data[:-32]).digest() == data[-32:]
            # Pinned to one member, the snapshot is not started over elsewhere.
            proxy.heal()
            out = _CutAfter(proxy, 100_000)
            proxy.delay(0.01)
            with pytest.raises(errors.ConnectionError_):
                await etcd.snapshot(out, endpoint=proxy.endpoint)
            assert out.cuts == 1


async def test_server_observe_survives_its_connection_dying(
    etcd_server_factory: EtcdServerFactory,
) -> None:
    # Pings every second bound a reset that grpcio before 1.80 can miss (helpers.pings).
    server = etcd_server_factory(extra_args=pings.MEMBER_ARGS)
    async with AsyncClient(server.endpoint) as leader_client:
        lease = await leader_client.grant(30)
        leader = await leader_client.server_campaign("obs", lease, "one")
        with FaultProxy(server.endpoint) as proxy:
            async with AsyncClient(
                [proxy.endpoint, server.endpoint], settings=pings.SETTINGS
            ) as etcd:
                observer = await etcd.server_observe("obs")
                assert etcd.endpoint == proxy.endpoint
                first = await observer.get()
                assert first is not None and first.value == b"one"
                proxy.reset()  # the observation's connection dies
                await leader_client.server_proclaim(leader, "two")
                with within(3):
                    second = await observer.get()
                # The leader already reported is not reported again after the reconnect.
                assert second is not None and second.value == b"two"
                assert observer.reconnects >= 1
                observer.cancel()
                assert await observer.get() is None
        await leader_client.revoke(lease)


# --- auth token under live streams -----------------------------------------------------------

TOKEN_TTL = 1


async def test_auth_token_refreshed_under_live_streams(
    etcd_server_factory: EtcdServerFactory,
) -> None:
    server = etcd_server_factory(extra_args=[f"--auth-token-ttl={TOKEN_TTL}"])
    server.etcdctl("user", "add", "root:rootpw")
    server.etcdctl("auth", "enable")
    async with AsyncClient(server.endpoint, user="root", password="rootpw", timeout=5) as etcd:
        first = await etcd.watch("a/", prefix=True)
        listener = etcd.keep_alive(await etcd.grant(3))
        old_token = etcd._conn.token
        # Waiting on the server's token clock: nothing announces the expiry.
        await sleep(TOKEN_TTL + 1.5)
        # etcd checks the stream's token at each create: refused, logged in again,
        # reopened - and every watcher of the stream re-created from where it was.
        with within(3):
            second = await etcd.watch("b/", prefix=True)
        assert etcd._conn.token != old_token
        await etcd.put("a/1", "x")
        await etcd.put("b/1", "y")
        assert (await first.get(timeout=3)).events[0].key == b"a/1"
        assert (await second.get(timeout=3)).events[0].key == b"b/1"
        assert (await listener.next_result(timeout=3)).ttl > 0
        # A restarted member forgot every token: the streams log in again on their own.
        server.restart()
        async with AsyncClient(server.endpoint, user="root", password="rootpw") as writer:
            await writer.put("a/2", "z")
        assert (await first.get(timeout=5)).events[0].key == b"a/2"
        third = await etcd.watch("c/", prefix=True)
        await etcd.put("c/1", "w")
        assert (await third.get(timeout=3)).events[0].key == b"c/1"
        assert (await listener.next_result(timeout=5)).ttl > 0
        listener.close()
        for watcher in (first, second, third):
            await watcher.cancel()


# --- fork -------------------------------------------------------------------------------------


# The fork tests run alone in a fresh interpreter with GRPC_POLL_STRATEGY=poll, the
# setting recipes_docs/connection.md prescribes for a parent that forks while its
# clients hold live streams.  Forked from the suite's own process (hundreds of clients
# made and closed, gRPC's epoll poller) the child died in os.fork() itself in 4 of 10
# asyncio runs, inside gRPC's fork handlers, before any etcdsync code ran in it.
FORKING = pytest.mark.fresh_interpreter(env={"GRPC_POLL_STRATEGY": "poll"})


def _fork() -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        return os.fork()


def _run_in_child(call: Callable[[], Any]) -> Any:
    """Run the child's part: in a new event loop for asyncio.  The parent's loop does
    not cross the fork (asyncio reports none running in the child), and letting it run
    on would run the parent's gRPC callbacks in the child - gRPC then crashes."""
    result = call()
    if inspect.isawaitable(result):
        return asyncio.run(result)  # type: ignore[arg-type]
    return result


async def _child_checks(
    etcd: AsyncClient, watcher: Any, listener: Any, prefix: str
) -> dict[str, Any]:
    """What the child measures: the error and time of each inherited object."""
    warnings_seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings_seen.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logging.getLogger("etcdsync").addHandler(handler)
    report: dict[str, Any] = {}

    async def record(name: str, call: Callable[[], Awaitable[Any]]) -> None:
        started = time.monotonic()
        try:
            await call()
            report[name] = ["returned", time.monotonic() - started]
        except BaseException as exc:  # the child reports whatever happened
            report[name] = [type(exc).__name__, time.monotonic() - started, str(exc)[:300]]

    await record("watcher.get", lambda: watcher.get())  # no timeout: must not block
    await record("iterate", lambda: watcher.__anext__())
    await record("listener", lambda: listener.next_result())
    await record("get", lambda: etcd.get(prefix + "k"))
    await record("watch", lambda: etcd.watch(prefix + "k"))
    await record("lock", lambda: etcd.lock(prefix + "lock").acquire(timeout=5))
    await record("watcher.cancel", lambda: watcher.cancel())
    await record("close", lambda: etcd.close())
    await record("after close", lambda: etcd.get(prefix + "k"))
    report["warnings"] = warnings_seen
    return report


@FORKING
async def test_forked_child_gets_forked_client_error_from_everything(
    etcd_endpoint: str, prefix: str
) -> None:
    async with AsyncClient(etcd_endpoint, timeout=5) as etcd:
        watcher = await etcd.watch(prefix + "k")
        listener = etcd.keep_alive(await etcd.grant(30))
        async with etcd.lock(prefix + "lock", ttl=10):
            pass  # the shared session exists and is inherited too
        await etcd.put(prefix + "k", "1")
        read, write = os.pipe()
        pid = _fork()
        if pid == 0:  # the child: report, then leave without running pytest's teardown
            code = 1
            try:
                report = _run_in_child(lambda: _child_checks(etcd, watcher, listener, prefix))
                os.write(write, json.dumps(report).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
        os.close(read)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        report = json.loads(b"".join(chunks))
        for name in ("watcher.get", "iterate", "listener", "get", "watch", "lock"):
            kind, seconds = report[name][:2]
            assert kind == "ForkedClientError", (name, report)
            assert seconds < 1.0, (name, report)
        for name in ("watcher.cancel", "close"):
            kind, seconds = report[name][:2]
            assert kind == "returned" and seconds < 1.0, (name, report)
        assert report["after close"][0] == "ForkedClientError", report
        assert report["warnings"] == []  # nothing retried in the background
        assert issubclass(errors.ForkedClientError, errors.ClientClosedError)
        # The parent's client is untouched by the child's close().
        await etcd.put(prefix + "k", "2")
        values = [e.value for e in (await watcher.get(timeout=5)).events]
        if values == [b"1"]:
            values = [e.value for e in (await watcher.get(timeout=5)).events]
        assert values[-1] == b"2"
        assert (await listener.next_result(timeout=15)).ttl > 0
        listener.close()
        await watcher.cancel()


@FORKING
async def test_a_with_block_ends_quietly_in_a_forked_child(etcd_endpoint: str, prefix: str) -> None:
    read, write = os.pipe()
    pid = -1
    started = 0.0
    try:
        async with AsyncClient(etcd_endpoint, timeout=5) as etcd:
            watcher = await etcd.watch(prefix + "k")
            await etcd.put(prefix + "k", "1")
            pid = _fork()
            started = time.monotonic()
        # Parent and child both leave the block: the child's exit must neither raise,
        # nor hang, nor touch the parent's connection.
        if pid == 0:
            os.write(write, f"{time.monotonic() - started:.3f}".encode())
            os._exit(0)
    finally:
        if pid == 0:
            os._exit(1)  # the with block raised in the child
    os.close(write)
    _, status = os.waitpid(pid, 0)
    elapsed = os.read(read, 100)
    os.close(read)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert float(elapsed) < 1.0
    # The parent closed its own client as usual: buffered batches, then the end.
    assert (await watcher.get(timeout=1)).events[0].value == b"1"
    with pytest.raises(errors.ClientClosedError):
        await watcher.get(timeout=1)
