"""Profile etcdsync's side of a workload with py-spy, and summarise the samples.

    python -m bench.profile etcdsync-async put_seq [--n 3000] [--idle]
    python -m bench.profile --summarise FILE

py-spy (and pyinstrument, for ad-hoc use) are installed on demand into
bench/.venvs/tools, never into the project's venv.  The driver runs as in the
benchmark, against a private etcd, under ``py-spy record --format raw``; the
summary lists the functions with the largest share of samples, by self time and
by inclusive time.  Without ``--idle`` only samples of running threads count, so
the shares are shares of the client's CPU time.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from etcdsync.testing.server import EtcdServer

from . import venvs
from .config import CLIENTS_BY_NAME, WORKLOADS_BY_NAME, ClientSpec, lease_timing

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOOLS = ClientSpec("tools", "sync", None, ("py-spy", "pyinstrument"))
RATE = 500
"""Samples per second."""
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    """``function (path/to/module.py:12)`` -> ``function (module.py)``: lines merged."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match.group("file")
    parts = path.split("/")
    short = "/".join(parts[-2:]) if "etcdsync" in parts or "grpc" in parts else parts[-1]
    return f"{match.group('func')} ({short})"


def stacks(
    raw: Path, focus: Sequence[str] = (), exclude: Sequence[str] = ()
) -> Iterator[tuple[list[str], int]]:
    """The (frames, samples) of a py-spy raw profile, outermost frame first; only the
    stacks with a frame containing every ``focus`` string and none of the ``exclude``
    strings (e.g. exclude the set-up phase of a workload)."""
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        if any(f not in stack for f in focus) or any(x in stack for x in exclude):
            continue
        yield stack.split(";"), int(count_text)


def summarise(
    raw: Path, top: int = 25, focus: list[str] | None = None, exclude: list[str] | None = None
) -> str:
    """Top functions by self and inclusive share of the samples (see :func:`stacks`)."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for raw_frames, count in stacks(raw, focus or (), exclude or ()):
        frames = [_short(f) for f in raw_frames]
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
    if total == 0:
        return "no samples"
    lines = [f"{total} samples", "", "self % | function", "---:|---"]
    lines += [f"{n / total * 100:5.1f} | {f}" for f, n in self_counts.most_common(top)]
    lines += ["", "inclusive % | function", "---:|---"]
    lines += [f"{n / total * 100:5.1f} | {f}" for f, n in incl_counts.most_common(top)]
    return "\n".join(lines)


def params_for(client: str, workload: str, overrides: dict[str, float]) -> dict[str, Any]:
    """The driver's parameters for one profiled run: the full workload, ``overrides``,
    one repetition unless they say otherwise."""
    params: dict[str, Any] = dict(WORKLOADS_BY_NAME[workload].full, **overrides)
    params["reps"] = int(overrides.get("reps", 1))
    if workload.startswith("leases"):
        params.update(lease_timing(params))
    params.update(rep=0, prefix=f"bench/{client}/", writer_cwd=str(ROOT))
    params["writer_cmd"] = [sys.executable, "-m", "bench.writer"]
    return params


def run_driver(
    client: str,
    workload: str,
    overrides: dict[str, float],
    wrapper: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> None:
    """Run one client's driver on ``workload`` against a private etcd, its command
    prefixed by ``wrapper`` (a profiler) and with ``env`` (None: this process's)."""
    spec = CLIENTS_BY_NAME[client]
    if spec.driver is None:
        raise SystemExit("only Python clients can be profiled")
    python = venvs.python_for(spec, HERE / ".work" / f"venv-{spec.name}.log")
    params = params_for(client, workload, overrides)
    with EtcdServer() as server:
        params["metrics_url"] = server.metrics_url
        cmd = [
            *wrapper, python, str(HERE / "drivers" / spec.driver),
            "--endpoint", server.endpoint, "--workload", workload, "--params", json.dumps(params),
        ]  # fmt: skip
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, timeout=900)


def record(
    client: str, workload: str, overrides: dict[str, float], mode: list[str], out: Path
) -> None:
    """Run the driver under ``py-spy record`` (raw stacks into ``out``)."""
    tools = venvs.python_for(TOOLS, HERE / ".work" / "venv-tools.log")
    py_spy = str(Path(tools).parent / "py-spy")
    wrapper = [
        py_spy, "record", "--format", "raw", "--rate", str(RATE), "-o", str(out),
        *mode, "--subprocesses", "--",
    ]  # fmt: skip
    run_driver(client, workload, overrides, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("client", nargs="?")
    parser.add_argument("workload", nargs="?")
    parser.add_argument("--set", action="append", default=[], help="param=value override")
    parser.add_argument("--idle", action="store_true", help="count idle (waiting) samples too")
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    parser.add_argument("--focus", action="append", default=[], help="keep stacks with this")
    parser.add_argument("--exclude", action="append", default=[], help="drop stacks with this")
    parser.add_argument("--summarise", type=Path, help="only summarise this raw profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if args.summarise:
        print(summarise(args.summarise, args.top, args.focus, args.exclude))
        return
    if not args.client or not args.workload:
        parser.error("client and workload are required")
    overrides = {k: float(v) for k, v in (item.split("=", 1) for item in args.set)}
    overrides = {k: int(v) if v.is_integer() else v for k, v in overrides.items()}
    out = HERE / ".work" / "profiles" / f"{args.client}-{args.workload}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = ["--idle"] * args.idle + ["--gil"] * args.gil
    record(args.client, args.workload, overrides, mode, out)
    print(f"raw profile: {out}\n")
    print(summarise(out, args.top, args.focus, args.exclude))


if __name__ == "__main__":
    main()
