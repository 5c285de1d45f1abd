"""The fault-injection proxy of etcdsync.testing, against a real etcd."""

from __future__ import annotations

import time

import pytest

from etcdsync import Client, errors
from etcdsync.testing.proxy import FaultProxy


def test_forwards_then_resets_and_recovers(etcd_endpoint: str, prefix: str) -> None:
    with FaultProxy(etcd_endpoint) as proxy, Client(proxy.endpoint, timeout=3) as etcd:
        etcd.put(prefix + "k", "1")
        assert proxy.connections == 1
        proxy.reset()  # RST every connection: the client reconnects on its own
        assert etcd.get(prefix + "k").value == b"1"
        assert proxy.connections == 1


def test_blackhole_holds_bytes_until_heal(etcd_endpoint: str, prefix: str) -> None:
    with FaultProxy(etcd_endpoint) as proxy, Client(proxy.endpoint, timeout=3) as etcd:
        etcd.put(prefix + "k", "1")
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(errors.Timeout):
            etcd.get(prefix + "k", timeout=0.5)
        assert time.monotonic() - started < 1.5
        proxy.heal()
        assert etcd.get(prefix + "k").value == b"1"


def test_delay_adds_latency_both_ways(etcd_endpoint: str, prefix: str) -> None:
    with FaultProxy(etcd_endpoint) as proxy, Client(proxy.endpoint, timeout=3) as etcd:
        etcd.put(prefix + "k", "1")
        proxy.delay(0.2)
        started = time.monotonic()
        etcd.get(prefix + "k")
        assert time.monotonic() - started >= 0.4


def test_refuses_non_loopback_targets() -> None:
    with pytest.raises(ValueError):
        FaultProxy("10.0.0.1:2379")
