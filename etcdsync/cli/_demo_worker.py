"""``etcdsync demo-worker``: one worker process of the demo (not meant to be run by hand).

It does what a real coordinated worker does, and reports each step as one JSON line
on stdout for the demo to show and check:

* follows the config prefix with a ConfigWatcher (each version it sees, and whether
  the snapshot was consistent: two keys written by one txn must agree);
* campaigns for leadership in a thread, reporting each term it wins (its key's create
  revision, and a revision at which it confirmed it led);
* joins the group ``members`` (its member key bound to its session's lease, so it
  leaves by itself if it dies) and leaves it when stopped;
* increments a shared counter under the lock: read, "work" for ``work_ms`` (from the
  config), then write through ``guarded_txn`` - applied only if this hold of the lock
  is still current - together with a ledger entry naming this worker and the
  fencing token.  ``inc-start`` is reported before the write, so if the worker dies
  mid-write the demo knows the increment is indeterminate.

A line ``stop`` (or EOF) on stdin ends it cleanly: release, resign, report ``bye``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import Any

from .. import Client, Compare, ConfigSnapshot, Mutex, Op, errors
from ._common import EXIT_OK, add_connection_options, one_line, open_client, positive_int
from ._demo_check import COUNTER, ELECTION, GROUP, LOCK, ledger_key, work_ms_for

__all__ = ["register", "run"]

_ACQUIRE_TIMEOUT = 1.0  # re-checks the stop request this often while queued
_LEAD_POLL = 0.2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # No help=: hidden from the command list.
    sub = commands.add_parser("demo-worker", description="One worker process of the demo.")
    sub.add_argument("--prefix", required=True, help="the demo run's key prefix")
    sub.add_argument("--name", required=True, help="this worker's name (its proposal)")
    sub.add_argument("--ttl", type=positive_int, default=2, help="session lease TTL")
    add_connection_options(sub)
    sub.set_defaults(run=run, subparser=sub)


class _Reporter:
    """JSON lines on stdout, whole lines only (several threads report)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields})
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


class _Worker:
    def __init__(self, args: argparse.Namespace, client: Client, report: _Reporter) -> None:
        self.name: str = args.name
        self.prefix: str = args.prefix
        self.client = client
        self.report = report
        self.stop = threading.Event()
        self.leading = threading.Event()
        self.lease = 0
        self.mutex = client.lock(self.prefix + LOCK, ttl=args.ttl)
        self.election = client.election(self.prefix + ELECTION, ttl=args.ttl)
        self.config = client.config(self.prefix + "config/", decode="json")

    # --- config -------------------------------------------------------------------------

    def on_config(self, snapshot: ConfigSnapshot) -> None:
        version = snapshot.get("version")
        if not isinstance(version, int):
            return
        consistent = snapshot.get("work_ms") == work_ms_for(version)
        self.report("config", version=version, revision=snapshot.revision, consistent=consistent)

    def work_seconds(self) -> float:
        work_ms = self.config.snapshot.get("work_ms", 20)
        return float(work_ms) / 1000 if isinstance(work_ms, int) else 0.02

    # --- leadership -----------------------------------------------------------------------

    def lead(self) -> None:
        """Campaign, lead until lost or stopped, and campaign again after a loss."""
        while not self.stop.is_set():
            try:
                self.election.campaign(self.name)
            except errors.ClientClosedError:
                return  # the worker is stopping
            except errors.EtcdError as exc:
                self.report("error", message=f"campaign: {one_line(exc)}")
                self.stop.wait(0.5)
                continue
            self.leading.set()
            term = self.election.leader_revision or 0
            try:
                self._confirm(term)
                while not self.stop.is_set() and not self.election.wait_lost(_LEAD_POLL):
                    pass
                if self.election.lost.is_set():
                    reason = one_line(self.election.lost_error or "lost")
                    self.report("lost", term=term, reason=reason)
                else:
                    self.election.resign()
                    self.report("resigned", term=term)
            except errors.ClientClosedError:
                return  # the worker is stopping
            except errors.EtcdError as exc:
                self.report("error", message=f"leading: {one_line(exc)}")
            finally:
                self.leading.clear()

    def _confirm(self, term: int) -> None:
        """Report the term with a revision at which etcd shows us leading."""
        first = self.client.get(
            self.prefix + ELECTION + "/",
            prefix=True,
            sort_target="CREATE",
            sort_order="ASCEND",
            limit=1,
        )
        if first.kv is not None and first.kv.create_revision == term:
            self.report("elected", term=term, seen=first.revision)

    # --- the counter ----------------------------------------------------------------------

    def count(self) -> int:
        """Increment the counter under the lock until stopped; returns the acked count."""
        acked = 0
        while not self.stop.is_set():
            try:
                self.mutex.acquire(timeout=_ACQUIRE_TIMEOUT)
            except errors.LockTimeout:
                continue
            except errors.ClientClosedError:
                break
            except errors.EtcdError as exc:
                self.report("error", message=f"lock: {one_line(exc)}")
                self.stop.wait(0.5)
                continue
            try:
                acked += self._increment(self.mutex)
            finally:
                try:
                    self.mutex.release()
                except errors.EtcdError as exc:
                    self.report("error", message=f"unlock: {one_line(exc)}")
        return acked

    def _increment(self, mutex: Mutex) -> int:
        session = mutex.session
        if session is not None and session.lease_id != self.lease:
            self.lease = session.lease_id
            self.report("lease", lease=self.lease)
        counter = self.prefix + COUNTER
        token = mutex.fencing_token
        try:
            current = int(self.client.get(counter).value or b"0")
        except errors.EtcdError as exc:
            self.report("error", message=f"read: {one_line(exc)}")
            return 0
        self.stop.wait(self.work_seconds())  # the work done while holding the lock
        value = current + 1
        entry = self.prefix + ledger_key(value)
        self.report("inc-start", value=value, token=token)
        try:
            response = mutex.guarded_txn(
                [Op.put(counter, str(value)), Op.put(entry, f"{self.name} {token}")],
                compare=[Compare.version(entry) == 0],
            )
        except errors.LockLostError as exc:
            # etcd refused the write (or it was never sent): certainly not applied.
            self.report("inc-rejected", value=value, token=token, reason=one_line(exc))
            return 0
        except errors.EtcdError as exc:
            self.report("inc-unknown", value=value, token=token, reason=one_line(exc))
            return 0
        if not response.succeeded:
            self.report("inc-conflict", value=value, token=token)
            return 0
        self.report("inc", value=value, token=token)
        return 1


def _read_stdin(stop: threading.Event) -> None:
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    stop.set()  # "stop", or EOF: the demo is gone


def run(args: argparse.Namespace) -> int:
    report = _Reporter()
    with open_client(args) as client:
        worker = _Worker(args, client, report)
        threading.Thread(target=_read_stdin, args=(worker.stop,), daemon=True).start()
        worker.config.start()
        worker.config.subscribe(worker.on_config, initial=True)
        session = client.shared_session(args.ttl)
        worker.lease = session.lease_id
        group = client.group(args.prefix + GROUP, ttl=args.ttl)
        group.join(args.name)
        report("ready", pid=os.getpid(), lease=session.lease_id)
        leader = threading.Thread(target=worker.lead, name="demo-lead", daemon=True)
        leader.start()
        acked = worker.count()
        if worker.leading.is_set():
            leader.join(5)  # it resigns, so the next candidate leads at once
        worker.config.stop()
        try:
            group.leave()
        except errors.EtcdError as exc:
            report("error", message=f"leave: {one_line(exc)}")
        report("bye", acked=acked)
    # Closing the client revoked the session: a campaign still waiting ended with it.
    leader.join(5)
    return EXIT_OK
