"""``etcdsync config put`` and the decoder default the CLI shares with the library.

* ``config put PREFIX FILE.json`` writes a nested document in one transaction: a
  watcher sees all its keys in one revision; a second run writes nothing (no new
  revision); ``--prune`` deletes what the document dropped; ``--dry-run`` changes nothing.
* ``config get`` decodes as ``etcd.config()`` does by default (strict JSON): a value a
  service would refuse is refused here too, naming the key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from etcdsync import Client, errors
from etcdsync.codecs import DEFAULT_DECODER
from etcdsync.watch_types import EventType

CLI = [sys.executable, "-m", "etcdsync"]


def _cli(endpoint: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDSYNC_")}
    env["ETCDSYNC_ENDPOINTS"] = endpoint
    return subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, text=True, timeout=30, env=env
    )


def _put(endpoint: str, prefix: str, path: Path, doc: Any, *flags: str) -> dict[str, Any]:
    path.write_text(json.dumps(doc), encoding="utf-8")
    result = _cli(endpoint, "config", "put", prefix, str(path), *flags)
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def _values(etcd: Client, prefix: str) -> dict[str, str]:
    got = etcd.get(prefix, prefix=True)
    return {kv.key.decode()[len(prefix) :]: kv.value.decode() for kv in got.kvs}


DOC = {
    "db": {"host": "db1", "port": 5432, "pool": {"size": 8}},
    "features": ["a", "b"],
    "debug": False,
    "name": None,
}


def test_put_is_atomic_idempotent_and_prunes(
    etcd_endpoint: str, prefix: str, tmp_path: Path
) -> None:
    cfg = f"{prefix}cfg/"
    doc = tmp_path / "settings.json"
    with Client(etcd_endpoint) as etcd:
        etcd.put(f"{prefix}other", "untouched")  # next to the prefix, not under it
        start = etcd.get(cfg, prefix=True).revision
        first = _put(etcd_endpoint, cfg, doc, DOC)
        assert first["changed"] is True and first["unchanged"] == 0
        assert first["put"] == ["db/host", "db/pool/size", "db/port", "debug", "features", "name"]
        assert _values(etcd, cfg) == {
            "db/host": '"db1"',
            "db/port": "5432",
            "db/pool/size": "8",
            "features": '["a", "b"]',
            "debug": "false",
            "name": "null",
        }
        # One transaction: every key was written in one revision, the one printed.
        with etcd.watch(cfg, prefix=True, start_revision=start + 1) as watcher:
            events = watcher.get(timeout=10).events
        assert {event.revision for event in events} == {first["revision"]}
        assert len(events) == 6

        # Idempotent: the same document again writes nothing - no new revision.
        again = _put(etcd_endpoint, cfg, doc, DOC)
        assert again["changed"] is False and again["put"] == [] and again["unchanged"] == 6
        assert etcd.get(cfg).revision == first["revision"]

        # A stored value with other spacing means the same: still nothing to write;
        # `1` is not `true`, though.
        etcd.put(f"{cfg}features", '[ "a","b" ]')
        changed = dict(DOC, debug=0)
        third = _put(etcd_endpoint, cfg, doc, changed)
        assert third["put"] == ["debug"] and third["unchanged"] == 5

        # Without --prune a dropped key stays; with it, it goes (in the same txn).
        smaller = {"db": {"host": "db2", "port": 5432}}
        kept = _put(etcd_endpoint, cfg, doc, smaller)
        assert kept["put"] == ["db/host"] and kept["deleted"] == []
        assert "features" in _values(etcd, cfg)
        dry = _put(etcd_endpoint, cfg, doc, smaller, "--prune", "--dry-run")
        assert dry["dry_run"] is True and dry["deleted"] == [
            "db/pool/size",
            "debug",
            "features",
            "name",
        ]
        assert "features" in _values(etcd, cfg)  # the dry run changed nothing
        before = etcd.get(cfg).revision
        pruned = _put(etcd_endpoint, cfg, doc, smaller, "--prune")
        assert pruned["revision"] > before and pruned["put"] == []
        assert len(pruned["deleted"]) == 4
        assert _values(etcd, cfg) == {"db/host": '"db2"', "db/port": "5432"}
        deletes = etcd.watch(cfg, prefix=True, start_revision=before + 1)
        with deletes:
            batch = deletes.get(timeout=10)
        assert {e.type for e in batch.events} == {EventType.DELETE}
        assert {e.revision for e in batch.events} == {pruned["revision"]}
        assert _put(etcd_endpoint, cfg, doc, smaller, "--prune")["changed"] is False
        assert etcd.get(f"{prefix}other").value == b"untouched"

        # stdin works as the file; a typed watcher reads what was written.
        result = _cli(etcd_endpoint, "config", "put", cfg, "-", stdin=json.dumps(DOC))
        assert result.returncode == 0 and json.loads(result.stdout)["changed"] is True
        with etcd.config(cfg) as config:
            assert config.snapshot.to_dict()["db/pool/size"] == 8


def test_put_refuses_bad_input(etcd_endpoint: str, prefix: str, tmp_path: Path) -> None:
    doc = tmp_path / "doc.json"
    doc.write_text('{"a": 1}', encoding="utf-8")
    assert _cli(etcd_endpoint, "config", "put", f"{prefix}no-slash", str(doc)).returncode == 2
    for text in ("[1, 2]", "{not json", '{"a/b": 1}', '{"": 1}'):
        doc.write_text(text, encoding="utf-8")
        result = _cli(etcd_endpoint, "config", "put", f"{prefix}cfg/", str(doc))
        assert result.returncode == 2, (text, result.stderr)
    missing = _cli(etcd_endpoint, "config", "put", f"{prefix}cfg/", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    with Client(etcd_endpoint) as etcd:
        assert etcd.get(f"{prefix}cfg/", prefix=True, count_only=True).count == 0


def test_get_decodes_like_the_library(etcd_endpoint: str, prefix: str) -> None:
    assert DEFAULT_DECODER == "json"
    cfg = f"{prefix}cfg/"
    with Client(etcd_endpoint) as etcd:
        etcd.put(f"{cfg}host", "db2")  # not JSON: a service's etcd.config(cfg) refuses it
        etcd.put(f"{cfg}port", "5432")
        with pytest.raises(errors.ConfigValidationError) as refused:
            etcd.config(cfg).start(timeout=5)
        assert refused.value.keys == ("host",)
    strict = _cli(etcd_endpoint, "config", "get", cfg)
    assert strict.returncode == 1
    assert "'host'" in strict.stderr and "--decode auto" in strict.stderr
    auto = _cli(etcd_endpoint, "config", "get", cfg, "--decode", "auto")
    assert auto.returncode == 0
    assert json.loads(auto.stdout)["values"] == {"host": "db2", "port": 5432}
