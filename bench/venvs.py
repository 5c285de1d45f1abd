"""One virtualenv per peer client under bench/.venvs/, created on demand with pip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .config import ClientSpec

VENVS = Path(__file__).resolve().parent / ".venvs"
_MARKER = ".bench-requirements.json"


class VenvError(RuntimeError):
    """The venv could not be created or its packages installed."""


def python_for(spec: ClientSpec, log: Path) -> str:
    """The interpreter a client's driver runs with, creating its venv if needed.

    etcdsync runs in the interpreter running the benchmark (the project's .venv).
    """
    if not spec.requirements:
        return sys.executable
    venv = VENVS / spec.name
    python = venv / "bin" / "python"
    marker = venv / _MARKER
    wanted = json.dumps(sorted(spec.requirements))
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return str(python)
    print(f"[bench] creating {venv} ({', '.join(spec.requirements)})", file=sys.stderr)
    with log.open("w") as out:
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
            [str(python), "-m", "pip", "install", "--quiet", *spec.requirements],
        ]
        for cmd in steps:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=600)
            if done.returncode != 0:
                raise VenvError(f"`{' '.join(cmd[-3:])}` failed (see {log})")
    marker.write_text(wanted)
    return str(python)


def installed_versions(python: str, names: list[str]) -> dict[str, str]:
    """Versions of ``names`` installed for ``python`` (missing ones omitted)."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([python, "-c", code, *names], capture_output=True, text=True)
    if done.returncode != 0:
        return {}
    versions: dict[str, str] = json.loads(done.stdout)
    return versions
