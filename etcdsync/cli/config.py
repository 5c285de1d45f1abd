"""``etcdsync config get|watch|put PREFIX``: a prefix's keys as one JSON document.

``get`` and ``watch`` print each snapshot as one line of JSON, ``{"revision": R,
"values": {...}}``, with the keys relative to PREFIX: ``get`` prints the current one,
``watch`` prints it and then every change (each applied whole: the keys a transaction
changed together arrive together).  Values are decoded as the library decodes them by
default (:data:`etcdsync.codecs.DEFAULT_DECODER`, strict JSON), so a value a service
using ``etcd.config(PREFIX)`` would refuse is refused here too: ``get`` fails naming the
key, ``watch`` reports it on stderr and keeps going.  ``--decode auto`` shows values that
are not JSON as text, ``--decode text`` shows every value as text.

``put PREFIX FILE.json`` (``-`` for stdin) writes a nested JSON object as keys, in one
transaction: ``{"db": {"host": "h", "port": 5432}}`` becomes ``PREFIX/db/host`` =
``"h"`` and ``PREFIX/db/port`` = ``5432`` (each leaf JSON-encoded; an array is one
leaf).  Only the keys whose value changes are written, so a second run of the same file
writes nothing (no new revision); ``--prune`` also deletes the keys under PREFIX that the
document no longer has.  The transaction is guarded by the revision of the read it was
computed from: if PREFIX changed meanwhile it is computed again.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from .. import Client, Compare, ConfigSnapshot, ConfigWatcher, Op, errors
from ..codecs import DECODERS, DEFAULT_DECODER
from ._common import (
    EXIT_OK,
    CliError,
    Interrupted,
    UsageError,
    add_connection_options,
    emit,
    info,
    interrupts_raise,
    one_line,
    open_client,
)

__all__ = ["flatten", "plan_put", "register", "run_get", "run_put", "run_watch"]

# The decoders the CLI offers: the library's, except "raw" (bytes are not JSON).
_CHOICES = sorted(name for name in DECODERS if name != "raw")
# A put whose guard failed (PREFIX changed between the read and the txn) is computed
# again from a new read, at most this many times.
_PUT_ATTEMPTS = 5


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "config",
        help="print a config prefix as JSON (get), follow it (watch), write it (put)",
        description="Read the keys under a prefix as one JSON document, at one revision, "
        "or write a JSON document as keys, in one transaction.",
    )
    actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, run, text in (
        ("get", run_get, "print the current snapshot of PREFIX"),
        ("watch", run_watch, "print the snapshot of PREFIX, then each change"),
    ):
        action = actions.add_parser(name, help=text, description=text + ", as JSON lines.")
        action.add_argument("prefix", metavar="PREFIX", help="key prefix, e.g. services/api/")
        action.add_argument(
            "--decode",
            choices=_CHOICES,
            default=DEFAULT_DECODER,
            help=f"how values are decoded (default {DEFAULT_DECODER}, as etcd.config() "
            "decodes them; auto: JSON if it parses, else text)",
        )
        add_connection_options(action)
        action.set_defaults(run=run, subparser=action)
    put = actions.add_parser(
        "put",
        help="write a nested JSON document as the keys under PREFIX, in one transaction",
        description="Write the JSON object in FILE as keys under PREFIX (nested objects "
        "become key paths: db/host), in one transaction.  Only changed keys are written: "
        "a second run writes nothing.  Prints one JSON line: the revision, what was "
        "written and deleted.",
    )
    put.add_argument("prefix", metavar="PREFIX", help="key prefix ending in /, e.g. services/api/")
    put.add_argument("file", metavar="FILE.json", help="the JSON document (- for stdin)")
    put.add_argument(
        "--prune",
        action="store_true",
        help="also delete the keys under PREFIX that the document does not have",
    )
    put.add_argument(
        "--dry-run", action="store_true", help="print what would change, change nothing"
    )
    add_connection_options(put)
    put.set_defaults(run=run_put, subparser=put)
    sub.set_defaults(subparser=sub)


# --- get / watch ----------------------------------------------------------------------------


def _line(snapshot: ConfigSnapshot) -> str:
    return json.dumps(
        {"revision": snapshot.revision, "values": snapshot.to_dict()},
        sort_keys=True,
        ensure_ascii=False,
    )


def _watcher(args: argparse.Namespace, client: Client) -> ConfigWatcher:
    return client.config(args.prefix, decode=args.decode)


def run_get(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        watcher = _watcher(args, client)
        try:
            watcher.start(timeout=args.request_timeout)
        except errors.ConfigValidationError as exc:
            hint = " (--decode auto shows values that are not JSON as text)"
            raise CliError(one_line(exc) + (hint if args.decode == "json" else "")) from None
        try:
            emit(_line(watcher.snapshot))
        finally:
            watcher.stop()
    return EXIT_OK


def _report(error: errors.EtcdError) -> None:
    info(f"etcdsync: warning: {one_line(error)}")


def run_watch(args: argparse.Namespace) -> int:
    restore = interrupts_raise()
    try:
        with open_client(args) as client:
            watcher = _watcher(args, client)
            watcher.on_error(_report)
            with watcher.start(timeout=args.request_timeout):
                for snapshot in watcher:
                    emit(_line(snapshot))
    except Interrupted:
        pass  # how watching normally ends
    finally:
        restore()
    return EXIT_OK


# --- put ------------------------------------------------------------------------------------


def flatten(document: Mapping[str, Any]) -> dict[str, str]:
    """The keys (relative, ``/``-joined) and JSON-encoded leaf values of a nested object.

    An empty object contributes no key.  Raises ValueError for an empty or
    ``/``-containing member name and for two paths that end up as one key.
    """
    out: dict[str, str] = {}

    def walk(node: Mapping[str, Any], path: str) -> None:
        for name, value in node.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"member {name!r} under {path or 'the top'!r}: names must "
                                 "be non-empty and without '/' (nest objects instead)")  # fmt: skip
            key = f"{path}/{name}" if path else name
            if isinstance(value, Mapping):
                walk(value, key)
            else:
                if key in out:
                    raise ValueError(f"{key!r} is given twice")
                out[key] = _encode(value)

    walk(document, "")
    return out


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _same(stored: bytes, wanted: str) -> bool:
    """Does the stored value already mean ``wanted`` (compared as canonical JSON, so
    ``1`` and ``true`` differ and spacing does not matter)?"""
    try:
        return _encode(json.loads(stored)) == wanted
    except ValueError:
        return False


def plan_put(
    current: Mapping[str, bytes], wanted: Mapping[str, str], *, prune: bool
) -> tuple[dict[str, str], list[str]]:
    """What to write (relative key -> encoded value) and what to delete (relative keys)
    to turn ``current`` into ``wanted``: only what changes."""
    puts = {
        key: value
        for key, value in wanted.items()
        if key not in current or not _same(current[key], value)
    }
    deletes = sorted(key for key in current if key not in wanted) if prune else []
    return puts, deletes


def _read_document(path: str) -> dict[str, Any]:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path} must hold a JSON object, not {type(document).__name__}")
    return document


def run_put(args: argparse.Namespace) -> int:
    prefix: str = args.prefix
    if not prefix.endswith("/") or prefix == "/":
        raise UsageError(f"PREFIX must end with '/' and name something, got {prefix!r}")
    try:
        wanted = flatten(_read_document(args.file))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    raw_prefix = prefix.encode()
    with open_client(args) as client:
        for _ in range(_PUT_ATTEMPTS):
            response = client.get(prefix, prefix=True)
            read_at = response.revision
            current = {kv.key[len(raw_prefix) :].decode(): kv.value for kv in response.kvs}
            puts, deletes = plan_put(current, wanted, prune=args.prune)
            summary: dict[str, Any] = {
                "put": sorted(puts),
                "deleted": deletes,
                "unchanged": len(wanted) - len(puts),
            }
            if not puts and not deletes:
                emit(json.dumps({"revision": read_at, "changed": False, **summary}))
                return EXIT_OK
            if args.dry_run:
                emit(json.dumps({"revision": read_at, "changed": False, "dry_run": True,
                                 **summary}))  # fmt: skip
                return EXIT_OK
            # Nothing under PREFIX changed since the read (a deletion of a key we leave
            # as it is escapes this compare: the check below catches it).
            guard = Compare.mod_revision(prefix, prefix=True) < read_at + 1
            ops = [Op.put(prefix + key, value) for key, value in sorted(puts.items())]
            ops += [Op.delete(prefix + key) for key in deletes]
            try:
                done = client.txn([guard], ops)
            except errors.TooManyOpsError as exc:
                raise CliError(
                    f"{len(ops)} changes do not fit in one transaction ({one_line(exc)}); "
                    "raise etcd's --max-txn-ops or split the document"
                ) from None
            if not done.succeeded:
                continue  # PREFIX changed meanwhile: plan again
            after = client.get(prefix, prefix=True, revision=done.revision)
            state = {kv.key[len(raw_prefix) :].decode(): kv.value for kv in after.kvs}
            if plan_put(state, wanted, prune=args.prune) != ({}, []):
                continue  # a key was deleted meanwhile: put it back
            emit(json.dumps({"revision": done.revision, "changed": True, **summary}))
            return EXIT_OK
    raise CliError(f"{prefix!r} kept changing: gave up after {_PUT_ATTEMPTS} attempts")
