"""The library's log records: levels and structured fields (issue 16, item 3).

A hold that ends because this process closed its client (shutdown) is an expected
event, logged at INFO; a hold lost behind our back (the lease revoked, as an expiry
would) is a WARNING.  Both records carry the recipe, its name, the key and the lease
as attributes (logging's ``extra=``), and a resign logs no warning at all.
"""

from __future__ import annotations

import logging

import pytest

from etcdsync import AsyncClient
from etcdsync._backends._async import wait_event


def _records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def _library_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name.startswith("etcdsync") and r.levelno >= logging.WARNING
    ]


async def test_leadership_ended_by_closing_the_client_is_info(
    etcd_endpoint: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="etcdsync")
    name = prefix + "e"
    etcd = AsyncClient(etcd_endpoint)
    try:
        election = etcd.election(name, ttl=10)
        await election.campaign("a")
        key = election.leader_key
        session = election.session
        assert key is not None and session is not None
    finally:
        await etcd.close()  # shutdown while leading, without resigning
    assert election.lost.is_set()
    [record] = _records(caplog, "lost")
    assert record.levelno == logging.INFO, record
    assert record.name == "etcdsync.election"
    assert (record.recipe, record.recipe_name) == ("election", name)  # type: ignore[attr-defined]
    assert record.key == key.decode()  # type: ignore[attr-defined]
    assert record.lease == f"{session.lease_id:x}"  # type: ignore[attr-defined]
    assert _library_warnings(caplog) == []


async def test_leadership_lost_to_a_revoked_lease_is_a_warning(
    etcd_endpoint: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="etcdsync")
    name = prefix + "e"
    async with AsyncClient(etcd_endpoint) as etcd, AsyncClient(etcd_endpoint) as operator:
        election = etcd.election(name, ttl=10)
        await election.campaign("a")
        key, session = election.leader_key, election.session
        assert key is not None and session is not None
        await operator.revoke(session.lease_id)  # as an expiry would
        assert await wait_event(election.lost, 5)
        [record] = _records(caplog, "lost")
        assert record.levelno == logging.WARNING, record
        assert "leadership of" in record.getMessage() and name in record.getMessage()
        assert record.recipe == "election"  # type: ignore[attr-defined]
        assert record.recipe_name == name  # type: ignore[attr-defined]
        assert record.key == key.decode()  # type: ignore[attr-defined]
        assert record.lease == f"{session.lease_id:x}"  # type: ignore[attr-defined]


async def test_resign_and_release_log_no_warning(
    etcd_endpoint: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="etcdsync")
    async with AsyncClient(etcd_endpoint) as etcd:
        election = etcd.election(prefix + "e", ttl=10)
        await election.campaign("a")
        await election.resign()
        async with etcd.lock(prefix + "l", ttl=10):
            pass
        group = etcd.group(prefix + "g", ttl=10)
        await group.join("x")
        await group.leave()
    assert not election.lost.is_set()
    assert _records(caplog, "lost") == []
    assert _library_warnings(caplog) == []


async def test_membership_ended_by_closing_the_client_is_info(
    etcd_endpoint: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="etcdsync")
    etcd = AsyncClient(etcd_endpoint)
    try:
        group = etcd.group(prefix + "g", ttl=10)
        member = await group.join("x")
    finally:
        await etcd.close()
    [record] = _records(caplog, "lost")
    assert record.levelno == logging.INFO, record
    assert (record.recipe, record.recipe_name) == ("group", prefix + "g")  # type: ignore[attr-defined]
    assert record.key == member.key.decode()  # type: ignore[attr-defined]
    assert record.lease == f"{member.lease:x}"  # type: ignore[attr-defined]
    assert _library_warnings(caplog) == []
