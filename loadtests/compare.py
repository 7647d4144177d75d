"""`python -m loadtests.compare`: the four completion modes and the baseline, each run
`--repeats` times in turn (so that drift in the machine hits all alike), as Markdown tables of
medians with their min-max, and compare.png (the same medians with min-max bars).

    python -m loadtests.compare --driver wrk -c 64 --duration 10 --repeats 3 --out loadtest-out/c64
    python -m loadtests.compare --users 64 --duration 20 --repeats 3   # locust, lifecycle

Each run is one `loadtests.run` (a stack of its own, started and stopped); the runs' own
directories (summary.json, plot.png, timeline.json, logs) stay under --out/<mode>-<n>/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from reference.loadtests import run

MODES = ("poll", "batch", "push", "reply", "baseline")
SUT = ("api", "workers", "rabbitmq", "redis")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--driver", choices=run.DRIVERS, default="locust")
    p.add_argument("--users", "-c", "--connections", dest="users", type=int, default=64,
                   help="locust users, or wrk connections")
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds of load per run (default 20 with locust, 10 with wrk)")
    p.add_argument("--warmup", type=float, default=None, help="wrk: unmeasured seconds first")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scenario", default=None)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--out", type=Path, default=Path("loadtest-out/compare"))
    p.add_argument("--quiet-below", type=float, default=0.3,
                   help="before each run, wait until the machine keeps fewer CPUs busy than "
                        "this (default 0.3; 0: do not wait)")
    p.add_argument("--quiet-wait", type=float, default=300,
                   help="give up waiting for a quiet machine after this many s (default 300)")
    args = p.parse_args(argv)
    modes = args.modes.split(",")
    unknown = set(modes) - set(MODES)
    if unknown:
        p.error(f"unknown modes: {', '.join(sorted(unknown))}")
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    common = ["--driver", args.driver, "--users", str(args.users),
              "--threads", str(args.threads), "--no-with-baseline"]
    for flag, value in (("--duration", args.duration), ("--warmup", args.warmup),
                        ("--scenario", args.scenario)):
        if value is not None:
            common += [flag, str(value)]
    for i in range(args.repeats):
        for mode in modes:
            out = args.out / f"{mode}-{i + 1}"
            flags = [*common, "--out", str(out)]
            flags += ["--baseline"] if mode == "baseline" else ["--completion", mode]
            busy = (run.wait_for_quiet(args.quiet_below, args.quiet_wait)
                    if args.quiet_below > 0 else float("nan"))
            print(f"compare: run {i + 1}/{args.repeats}, {mode} ({busy:.2f} CPUs busy before)",
                  file=sys.stderr, flush=True)
            run.main(flags)
            results[mode].append(json.loads((out / "summary.json").read_text()))
    table = render(results, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "compare.md").write_text(table)
    plot(results, args.repeats, args.out / "compare.png")
    print(table)
    return 0


def _values(runs: list[dict[str, Any]], key: str, sub: str | None = None) -> list[float]:
    out = []
    for r in runs:
        value = r.get(key)
        if sub is not None:
            value = value.get(sub) if isinstance(value, dict) else None
        if value is not None:
            out.append(float(value))
    return out


def _spread(values: list[float], digits: int = 1) -> str:
    if not values:
        return "n/a"
    mid = statistics.median(values)
    if len(values) == 1 or min(values) == max(values):
        return f"{mid:.{digits}f}"
    return f"{mid:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _sut(r: dict[str, Any]) -> float:
    return sum(r["cpu_ms_per_request"].get(g) or 0.0 for g in SUT)


def render(results: dict[str, list[dict[str, Any]]], repeats: int) -> str:
    first = next(runs[0] for runs in results.values() if runs)
    load = (f"wrk -t{first.get('threads', 1)} -c{first['users']}, {first['duration_s']:g} s "
            f"each after {first.get('warmup_s', 0):g} s of warm-up"
            if first["driver"] == "wrk"
            else f"locust, {first['users']} users, {first['duration_s']:g} s each")
    lines = [
        f"{load}, scenario {first['scenario']}; median (min-max) of {repeats} runs",
        "",
        "| mode | req/s | failures | latency p50 ms | p95 ms | p99 ms | queue p50 ms "
        "| work p50 ms | notice p50 ms | Redis reads/req | Redis cmds/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, runs in results.items():
        lines.append(
            f"| {mode} | {_spread(_values(runs, 'throughput_rps'), 0)} "
            f"| {_spread(_values(runs, 'failures'), 0)} "
            f"| {_spread(_values(runs, 'latency_ms', 'p50'), 2)} "
            f"| {_spread(_values(runs, 'latency_ms', 'p95'), 2)} "
            f"| {_spread(_values(runs, 'latency_ms', 'p99'), 2)} "
            f"| {_spread(_values(runs, 'queue_ms', 'p50'), 2)} "
            f"| {_spread(_values(runs, 'work_ms', 'p50'), 2)} "
            f"| {_spread(_values(runs, 'notice_ms', 'p50'), 2)} "
            f"| {_spread(_values(runs, 'redis_reads_per_request'), 2)} "
            f"| {_spread(_values(runs, 'redis_commands_per_request'), 1)} |")
    lines += [
        "",
        "CPU ms per completed request; SUT = API + workers + RabbitMQ + Redis; "
        f"the driver ({first['driver']}) runs on the same machine",
        "",
        "| mode | API | workers | RabbitMQ | Redis | SUT | driver | interrupts (no process) "
        "| other processes, CPUs busy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, runs in results.items():
        per = [_spread(_values(runs, "cpu_ms_per_request", g), 3)
               for g in (*SUT, "driver")]
        sut = _spread([_sut(r) for r in runs], 3)
        machine = [r["machine"] for r in runs if "machine" in r]
        irq = _spread([m["interrupts_ms_per_request"] for m in machine
                       if "interrupts_ms_per_request" in m], 3)
        other = _spread([m["other_cores"] for m in machine], 2)
        lines.append(f"| {mode} | {' | '.join(per[:4])} | {sut} | {per[4]} | {irq} | {other} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, list[dict[str, Any]]], repeats: int, path: Path) -> None:
    """Medians with min-max bars: throughput, latency percentiles, CPU per request."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m, runs in results.items() if runs]
    fig, (rps_ax, lat_ax, cpu_ax) = plt.subplots(1, 3, figsize=(16, 4.8))

    def bar(ax: Any, x: float, values: list[float], width: float, **kw: Any) -> None:
        if not values:
            return
        mid = statistics.median(values)
        ax.bar(x, mid, width, yerr=[[mid - min(values)], [max(values) - mid]], capsize=3, **kw)

    xs = range(len(modes))
    for k, mode in zip(xs, modes, strict=True):
        bar(rps_ax, k, _values(results[mode], "throughput_rps"), 0.6, color="tab:blue")
        for j, (q, colour) in enumerate((("p50", "tab:green"), ("p95", "tab:orange"),
                                         ("p99", "tab:red"))):
            bar(lat_ax, k + (j - 1) * 0.27, _values(results[mode], "latency_ms", q), 0.27,
                color=colour, label=q if k == 0 else None)
        bottom = 0.0
        for group, colour in zip(SUT, ("tab:blue", "tab:green", "tab:orange", "tab:red"),
                                 strict=True):
            mid = statistics.median(_values(results[mode], "cpu_ms_per_request", group) or [0])
            cpu_ax.bar(k, mid, 0.6, bottom=bottom, color=colour, label=group if k == 0 else None)
            bottom += mid
        sut = [_sut(r) for r in results[mode]]
        cpu_ax.errorbar(k, statistics.median(sut), yerr=[[statistics.median(sut) - min(sut)],
                        [max(sut) - statistics.median(sut)]], color="black", capsize=3)
    for ax, title, unit in ((rps_ax, "throughput", "requests / s"),
                            (lat_ax, "latency (client side)", "ms"),
                            (cpu_ax, "CPU per request (SUT, stacked medians)", "CPU ms")):
        ax.set_xticks(list(xs), modes)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3)
    lat_ax.legend(fontsize=8)
    cpu_ax.legend(fontsize=8)
    first = results[modes[0]][0]
    load = (f"wrk -c{first['users']}" if first["driver"] == "wrk"
            else f"locust {first['users']} users")
    fig.suptitle(f"{load}, {first['duration_s']:g} s, scenario {first['scenario']}: "
                 f"median and min-max of {repeats} runs per mode, run in turn")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
