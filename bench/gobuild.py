"""Build the Go load generator (bench/goload) offline, in GOPATH mode.

Needs Debian's ``golang-go`` and ``golang-etcd-server-dev`` (clientv3 and its
dependencies under /usr/share/gocode).  When they are missing and this runs as
root with apt available, they are installed (after ``apt-cache policy`` shows a
candidate); any failure is returned as the reason the Go ceiling is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "goload" / "main.go"
WORK = HERE / ".work"
BINARY = WORK / "goload"
GOCODE = Path("/usr/share/gocode")
CLIENTV3 = GOCODE / "src" / "go.etcd.io" / "etcd" / "clientv3"
PACKAGES = ("golang-go", "golang-etcd-server-dev")


class GoUnavailable(RuntimeError):
    """Why there is no Go ceiling in this run."""


def _installed() -> bool:
    return shutil.which("go") is not None and CLIENTV3.is_dir()


def _apt_install() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise GoUnavailable(
            f"go or clientv3 missing and apt-get is not usable here: install {' '.join(PACKAGES)}"
        )
    policy = subprocess.run(
        ["apt-cache", "policy", *PACKAGES], capture_output=True, text=True, timeout=60
    ).stdout
    if policy.count("Candidate:") < len(PACKAGES) or "Candidate: (none)" in policy:
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=300)
        policy = subprocess.run(
            ["apt-cache", "policy", *PACKAGES], capture_output=True, text=True, timeout=60
        ).stdout
        if policy.count("Candidate:") < len(PACKAGES) or "Candidate: (none)" in policy:
            raise GoUnavailable(f"apt has no candidate for {' '.join(PACKAGES)}")
    done = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    if done.returncode != 0:
        raise GoUnavailable("apt-get install failed: " + done.stderr.strip()[-300:])


def build(allow_apt: bool = True) -> Path:
    """Path of an up-to-date goload binary; raises GoUnavailable with the reason."""
    if not _installed():
        if not allow_apt:
            raise GoUnavailable(f"go or clientv3 missing (Debian packages {', '.join(PACKAGES)})")
        _apt_install()
        if not _installed():
            raise GoUnavailable("go or clientv3 still missing after apt-get install")
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    WORK.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "GO111MODULE": "off",  # GOPATH mode: Debian's sources, no module download
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOPATH": f"{WORK / 'gopath'}:{GOCODE}",
        "GOCACHE": str(WORK / "gocache"),
    }
    done = subprocess.run(
        ["go", "build", "-o", str(BINARY), "."],
        cwd=SOURCE.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise GoUnavailable("go build failed: " + done.stderr.strip()[-500:])
    return BINARY


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    go = subprocess.run(["go", "version"], capture_output=True, text=True)
    if go.returncode == 0:
        out["go"] = go.stdout.split()[2]
    pkg = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "golang-etcd-server-dev"],
        capture_output=True,
        text=True,
    )
    if pkg.returncode == 0:
        out["golang-etcd-server-dev"] = pkg.stdout.strip()
    return out
