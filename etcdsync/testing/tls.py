"""Throwaway TLS material (a CA, a server and a client certificate) made with ``openssl``."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TLSFiles", "generate_tls_files", "openssl_available"]

StrPath = str | os.PathLike[str]


def openssl_available() -> bool:
    """True when the ``openssl`` command line tool is on PATH."""
    return shutil.which("openssl") is not None


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a throwaway CA, a server certificate and a client certificate."""

    directory: Path
    ca_file: Path
    ca_key_file: Path
    server_cert_file: Path
    server_key_file: Path
    client_cert_file: Path
    client_key_file: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def generate_tls_files(
    directory: StrPath,
    *,
    hosts: Sequence[str] = ("127.0.0.1", "localhost", "::1"),
    client_common_name: str = "etcdsync-test-client",
    days: int = 2,
) -> TLSFiles:
    """Create a CA plus server and client certificates in ``directory`` with ``openssl``.

    Keys are ECDSA P-256 (fast to generate). The server certificate carries ``hosts`` as
    subjectAltNames (Go ignores the CN since 1.15) and both serverAuth and clientAuth key
    usages, because etcd 3.4's gRPC gateway dials its own client port presenting the
    server certificate. Raises :class:`RuntimeError` when ``openssl`` is not installed.
    """
    if not openssl_available():
        raise RuntimeError(
            "the `openssl` command line tool is required to generate test certificates; "
            "install it (e.g. `apt-get install openssl`)"
        )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
        "-subj", "/CN=etcdsync-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=out,
    )  # fmt: skip

    sans = ",".join(
        f"IP:{h}" if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", h) else f"DNS:{h}" for h in hosts
    )
    leaves = {
        "server": ("/CN=etcdsync-test-server", f"subjectAltName={sans}\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n"),
        "client": (f"/CN={client_common_name}", "extendedKeyUsage=clientAuth\n"),
    }  # fmt: skip
    for stem, (subject, extensions) in leaves.items():
        (out / f"{stem}.ext").write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n" + extensions
        )
        _openssl(
            "req", "-new", *ec, "-keyout", f"{stem}.key", "-out", f"{stem}.csr",
            "-subj", subject, cwd=out,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", str(random.getrandbits(63)), "-days", str(days),
            "-extfile", f"{stem}.ext", "-out", f"{stem}.crt", cwd=out,
        )  # fmt: skip
    return TLSFiles(
        directory=out,
        ca_file=out / "ca.crt",
        ca_key_file=out / "ca.key",
        server_cert_file=out / "server.crt",
        server_key_file=out / "server.key",
        client_cert_file=out / "client.crt",
        client_key_file=out / "client.key",
    )
