"""`python -m loadtests.compare`: the three completion modes and the baseline, each run
`--repeats` times in turn (so that drift in the machine hits all alike), as a Markdown table.

    python -m loadtests.compare --users 64 --duration 20 --repeats 3 --out loadtest-out/compare
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from reference.loadtests import run

MODES = ("poll", "batch", "push", "baseline")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.compare", description=__doc__)
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scenario", default="lifecycle")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--out", type=Path, default=Path("loadtest-out/compare"))
    args = p.parse_args(argv)
    modes = args.modes.split(",")
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for i in range(args.repeats):
        for mode in modes:
            out = args.out / f"{mode}-{i + 1}"
            flags = ["--users", str(args.users), "--duration", str(args.duration),
                     "--scenario", args.scenario, "--out", str(out)]
            flags += ["--baseline"] if mode == "baseline" else ["--completion", mode]
            print(f"compare: run {i + 1}/{args.repeats}, {mode}", file=sys.stderr, flush=True)
            run.main(flags)
            results[mode].append(json.loads((out / "summary.json").read_text()))
    table = render(results, args)
    (args.out / "compare.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "compare.md").write_text(table)
    print(table)
    return 0


def _spread(values: list[float], digits: int = 1) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:.{digits}f}"
    return f"{mid:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def render(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.users} users, {args.duration:g} s each, scenario {args.scenario}; "
        f"median (min-max) of {args.repeats} runs",
        "",
        "| mode | req/s | failures | latency p50 ms | p99 ms | notice p50 ms | queue p50 ms "
        "| work p50 ms | Redis reads/req | Redis cmds/req | CPU ms/req: API | workers | all |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, runs in results.items():
        def col(key: str, sub: str | None = None, digits: int = 1,
                runs: list[dict[str, Any]] = runs) -> str:
            return _spread([r[key][sub] if sub else r[key] for r in runs], digits)

        lines.append(
            f"| {mode} | {col('throughput_rps', digits=0)} | {col('failures', digits=0)} "
            f"| {col('latency_ms', 'p50', 1)} | {col('latency_ms', 'p99', 1)} "
            f"| {col('notice_ms', 'p50', 2)} | {col('queue_ms', 'p50', 2)} "
            f"| {col('work_ms', 'p50', 2)} | {col('redis_reads_per_request', digits=2)} "
            f"| {col('redis_commands_per_request', digits=1)} "
            f"| {col('cpu_ms_per_request', 'api', 3)} | {col('cpu_ms_per_request', 'workers', 3)} "
            f"| {_spread([sum(r['cpu_ms_per_request'].values()) for r in runs], 3)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
