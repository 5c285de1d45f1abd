"""``python -m bench``: the benchmark of etcdsync against the other etcd clients.

    python -m bench                      # full run -> bench/RESULTS.md (~30 min with profiles)
    python -m bench --quick              # reduced sizes, 1 repetition (< 1 min per 2 clients)
    python -m bench --clients etcdsync-sync,etcd3 --workloads put_seq,get_seq

Peers are installed on first use into bench/.venvs/<client> (pip); the Go ceiling
is built from bench/goload with Debian's golang-go and golang-etcd-server-dev.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from . import miss_profiles, report, runner
from .config import CLIENTS, WORKLOADS

HERE = Path(__file__).resolve().parent


def _names(value: str, allowed: list[str], what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    client_names = [c.name for c in CLIENTS]
    workload_names = [w.name for w in WORKLOADS]
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="reduced sizes, one repetition")
    parser.add_argument(
        "--clients",
        type=lambda v: _names(v, client_names, "client"),
        default=client_names,
        help=f"comma-separated subset of {','.join(client_names)}",
    )
    parser.add_argument(
        "--workloads",
        type=lambda v: _names(v, workload_names, "workload"),
        default=workload_names,
        help=f"comma-separated subset of {','.join(workload_names)}",
    )
    parser.add_argument("--reps", type=int, default=None, help="override the repetitions")
    parser.add_argument("--output", type=Path, default=None, help="markdown file to write")
    parser.add_argument("--json", type=Path, default=None, help="raw results file to write")
    parser.add_argument("--etcd", default=None, help="etcd version (3.5, 3.4) or binary path")
    parser.add_argument(
        "--no-apt", action="store_true", help="never apt-get install Go for the ceiling"
    )
    parser.add_argument(
        "--no-profiles",
        action="store_true",
        help="skip profiling the missed targets after a full run (bench.miss_profiles)",
    )
    args = parser.parse_args(argv)
    suffix = "-quick" if args.quick else ""
    output = args.output or (
        HERE / ".work" / "RESULTS-quick.md" if args.quick else HERE / "RESULTS.md"
    )
    raw = args.json or HERE / ".work" / f"results{suffix}.json"

    run = runner.execute(
        args.clients,
        args.workloads,
        quick=args.quick,
        reps=args.reps,
        allow_apt=not args.no_apt,
        etcd_version=args.etcd,
    )
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = report.document(run, command.strip(), output=output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(run.to_json(), indent=1, default=str))
    if not args.quick and not args.no_profiles:
        miss_profiles.write(run, output)
    print(report.table(run))
    print()
    print(report.checks_markdown(run))
    print(f"\n[bench] wrote {output} and {raw} in {run.seconds:.0f} s", file=sys.stderr)
    failed = [
        f"{client}/{name}"
        for client, per in run.outcomes.items()
        for name, outcome in per.items()
        if outcome.error
    ]
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
