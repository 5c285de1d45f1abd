"""Run ``etcdctl`` (v3 API) for tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

__all__ = ["EtcdctlError", "run_etcdctl"]


class EtcdctlError(subprocess.CalledProcessError):
    """An ``etcdctl`` invocation failed; ``str()`` includes its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}"


def run_etcdctl(
    argv: Sequence[str], *, timeout: float = 30.0, check: bool = True, input: str | None = None
) -> str:
    """Run an etcdctl command line with ETCDCTL_API=3 and return stdout."""
    # The developer's ETCDCTL_* settings (endpoints, certs) must not redirect test traffic.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        input=input,
        check=False,
    )
    if check and result.returncode != 0:
        raise EtcdctlError(result.returncode, list(argv), result.stdout, result.stderr)
    return result.stdout
