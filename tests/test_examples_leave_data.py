"""Running the examples against an etcd that holds other data leaves that data untouched.

People point examples at a shared development cluster; an example that cleans up with a
broad delete (``demo/``, from-key) would destroy somebody's keys.  Sentinel keys sit
where a careless example would write or delete (under ``demo/``, ``examples/``, next
to every run prefix, and at both ends of the keyspace); every example runs, then every
sentinel must still hold its value at its original revision.

Every example must confine itself to a fresh run prefix, ``examples/<root>/<random>/``
(``f"examples/<root>/{uuid.uuid4()...}"`` in its source): the test finds each root and
puts sentinels on the root key itself, just inside it before and after any run id, and
beside it - a delete of the whole root, from a key, or of a prefix without its ``/``
would take one of them.
"""

from __future__ import annotations

import re
import subprocess
import sys

from test_examples import EXAMPLES, SCRIPTS

from etcdsync import Client
from etcdsync.testing.plugin import EtcdServerFactory

SENTINELS = [
    "\x01first",
    "demo/",
    "demo/config/color",
    "demo/jobs/nightly/last-run",
    "demo/services/api/port",
    "examples/",
    "examples/namespaces",
    "examples/quickstart/x",
    "etcdsync-demo/keep",
    "jobs/nightly/last-run",
    "~last",
    "\xff\xfflast",
]


# How an example names its fresh run prefix: f"examples/<root>/{uuid.uuid4().hex[:8]}/...".
RUN_PREFIX = re.compile(r'f"(examples/[A-Za-z0-9_-]+)/\{uuid\.uuid4\(\)')


def run_roots() -> dict[str, set[str]]:
    """Each example's run-prefix roots, read from its source."""
    return {script: set(RUN_PREFIX.findall((EXAMPLES / script).read_text())) for script in SCRIPTS}


def test_every_example_uses_a_fresh_run_prefix() -> None:
    missing = [script for script, roots in run_roots().items() if not roots]
    assert not missing, f"examples without a fresh examples/<root>/<random>/ prefix: {missing}"


def test_examples_leave_other_data_untouched(etcd_server_factory: EtcdServerFactory) -> None:
    server = etcd_server_factory()
    beside_runs = {
        key
        for roots in run_roots().values()
        for root in roots
        for key in (root, root + "/", root + "/~after-any-run", root + "-keep")
    }
    sentinels = sorted(set(SENTINELS) | beside_runs)
    with Client(server.endpoint) as etcd:
        written = {key: etcd.put(key, f"sentinel {key!r}").revision for key in sentinels}
    failures = []
    for script in SCRIPTS:
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / script), server.endpoint],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            failures.append(f"{script} failed:\n{result.stdout}\n{result.stderr}")
    assert not failures, "\n".join(failures)
    with Client(server.endpoint) as etcd:
        for key, revision in written.items():
            kv = etcd.get(key).kv
            assert kv is not None, f"an example deleted {key!r}"
            assert kv.value == f"sentinel {key!r}".encode(), f"an example overwrote {key!r}"
            assert kv.mod_revision == revision, f"an example rewrote {key!r}"
