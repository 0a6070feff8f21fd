#!/usr/bin/env python3
"""Turns a benchmark's results.csv into results.md (medians over rounds, and the performance
targets checked) and chart.png (requests/s and server CPU per request by workload and
contender). Called by scripts/bench.py; run it alone to redo a report:

    python3 scripts/report.py target/bench-results/<timestamp>
"""

import csv
import json
import os
import statistics
import sys

CONTENDER_ORDER = ["sharded", "locked", "sharded-2on1", "nginx", "redis"]
WORKLOAD_ORDER = ["get", "put", "mix", "get_p16", "put_p16"]
LABELS = {
    "sharded": "corekv sharded, 1 shard",
    "locked": "corekv locked, 1 executor",
    "sharded-2on1": "corekv sharded, 2 shards on 1 CPU",
    "nginx": "nginx `return 200` (1 process)",
    "redis": "Redis (redis-benchmark)",
}
WORKLOAD_LABELS = {
    "get": "GET",
    "put": "PUT / SET",
    "mix": "90/10 GET/PUT",
    "get_p16": "GET pipelined 16",
    "put_p16": "SET pipelined 16",
}
# Targets from issue 3.
PIPELINED_CPU_US_MAX = 1.0
TWO_SHARDS_LOSS_MAX = 0.15
# A run during which other processes used more than this % of a CPU is noisy (see bench.py).
NOISY_PCT = 15.0


def order(value, ordering):
    return ordering.index(value) if value in ordering else len(ordering)


def medians(rows, noisy_pct=NOISY_PCT):
    """(conns, workload, contender) -> median of each number over the rounds. Runs during which
    other processes used more than `noisy_pct` of a CPU are left out when a quieter run of the
    same cell exists."""
    groups = {}
    for row in rows:
        groups.setdefault((int(row["conns"]), row["workload"], row["contender"]), []).append(row)
    out = {}
    for key, group in groups.items():
        quiet = [r for r in group if float(r["foreign_cpu_pct"]) <= noisy_pct]
        noisy_left_out = len(group) - len(quiet) if quiet else 0
        group = quiet or group
        def med(field):
            values = [float(r[field]) for r in group if r.get(field) not in ("", None)]
            return statistics.median(values) if values else None

        non2xx = [int(r["non2xx"]) for r in group if r.get("non2xx") not in ("", None)]
        out[key] = {
            "rps": med("rps"),
            "p50_us": med("p50_us"),
            "p99_us": med("p99_us"),
            "cpu_us_per_req": med("cpu_us_per_req"),
            "softirq_us_per_req": med("softirq_us_per_req"),
            "foreign_cpu_pct": max(float(r["foreign_cpu_pct"]) for r in group),
            "non2xx": sum(non2xx) if non2xx else None,
            "rounds": len(group),
            "noisy_left_out": noisy_left_out,
        }
    return out


def fmt_us(value):
    if value is None:
        return "–"
    return f"{value / 1000:.1f} ms" if value >= 10_000 else f"{value:.0f} µs"


def table(stats):
    lines = [
        "| conns | workload | contender | requests/s | p50 | p99 | non-2xx | server CPU µs/req | softirq µs/req | others' CPU (max) | runs |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = sorted(stats, key=lambda k: (k[0], order(k[1], WORKLOAD_ORDER), order(k[2], CONTENDER_ORDER)))
    for conns, workload, contender in keys:
        s = stats[(conns, workload, contender)]
        non2xx = "n/a" if s["non2xx"] is None else f"{s['non2xx']}"
        runs = f"{s['rounds']}" + (f" (+{s['noisy_left_out']} noisy)" if s["noisy_left_out"] else "")
        lines.append(
            f"| {conns} | {WORKLOAD_LABELS.get(workload, workload)} | {LABELS.get(contender, contender)} "
            f"| {s['rps']:,.0f} | {fmt_us(s['p50_us'])} | {fmt_us(s['p99_us'])} | {non2xx} "
            f"| {s['cpu_us_per_req']:.2f} | {s['softirq_us_per_req']:.2f} | {s['foreign_cpu_pct']:.0f}% "
            f"| {runs} |")
    return "\n".join(lines)


def targets(stats, connections):
    """The issue's performance targets, each met or missed with its numbers."""
    lines = []

    def get(conns, workload, contender):
        return stats.get((conns, workload, contender))

    for conns in connections:
        for workload in ("get", "put"):
            ours, ceiling = get(conns, workload, "sharded"), get(conns, workload, "nginx")
            if not ours or not ceiling:
                continue
            cpu_ok = ours["cpu_us_per_req"] <= ceiling["cpu_us_per_req"]
            rps_ok = ours["rps"] >= ceiling["rps"]
            lines.append(
                f"- {workload.upper()} at {conns} connections, sharded vs nginx: CPU "
                f"{ours['cpu_us_per_req']:.2f} vs {ceiling['cpu_us_per_req']:.2f} µs/req "
                f"({(ours['cpu_us_per_req'] / ceiling['cpu_us_per_req'] - 1) * 100:+.0f}%), "
                f"{ours['rps']:,.0f} vs {ceiling['rps']:,.0f} req/s "
                f"({(ours['rps'] / ceiling['rps'] - 1) * 100:+.0f}%): "
                f"**{'met' if cpu_ok and rps_ok else 'missed'}**")
        ours = get(conns, "get_p16", "sharded")
        if ours:
            ok = ours["cpu_us_per_req"] <= PIPELINED_CPU_US_MAX
            lines.append(
                f"- GET pipelined 16 at {conns} connections: {ours['cpu_us_per_req']:.2f} µs CPU/req "
                f"(target ≤ {PIPELINED_CPU_US_MAX:.1f}): **{'met' if ok else 'missed'}**")
        for workload in ("get", "get_p16"):
            one, two = get(conns, workload, "sharded"), get(conns, workload, "sharded-2on1")
            if one and two:
                loss = 1 - two["rps"] / one["rps"]
                ok = loss < TWO_SHARDS_LOSS_MAX
                lines.append(
                    f"- {WORKLOAD_LABELS[workload]} at {conns} connections, 2 shards on 1 CPU vs 1 shard: "
                    f"{two['rps']:,.0f} vs {one['rps']:,.0f} req/s, loss {loss * 100:.1f}% "
                    f"(target < {TWO_SHARDS_LOSS_MAX * 100:.0f}%): **{'met' if ok else 'missed'}**")
    return "\n".join(lines)


def chart(stats, connections, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contenders = sorted({k[2] for k in stats}, key=lambda c: order(c, CONTENDER_ORDER))
    workloads = sorted({k[1] for k in stats}, key=lambda w: order(w, WORKLOAD_ORDER))
    fig, axes = plt.subplots(2, len(connections), figsize=(7 * len(connections), 8), squeeze=False)
    width = 0.8 / max(1, len(contenders))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, conns in enumerate(connections):
        for row, (field, title, scale) in enumerate([
            ("rps", "requests/s (thousands)", 1e-3),
            ("cpu_us_per_req", "server CPU per request (µs)", 1.0),
        ]):
            ax = axes[row][col]
            for i, contender in enumerate(contenders):
                xs, ys = [], []
                for x, workload in enumerate(workloads):
                    s = stats.get((conns, workload, contender))
                    if s and s[field] is not None:
                        xs.append(x + (i - (len(contenders) - 1) / 2) * width)
                        ys.append(s[field] * scale)
                bars = ax.bar(xs, ys, width, label=LABELS.get(contender, contender).replace("`", ""),
                              color=colors[i % len(colors)])
                ax.bar_label(bars, fmt="%.0f" if field == "rps" else "%.1f", fontsize=6, padding=1)
            ax.set_xticks(range(len(workloads)))
            ax.set_xticklabels([WORKLOAD_LABELS.get(w, w) for w in workloads], fontsize=8)
            ax.set_title(f"{title}, {conns} connections", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle("corekv vs references: server on one CPU, load generator on the other\n"
                 "(medians over rounds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(out_dir, machine, command, settings):
    with open(os.path.join(out_dir, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump({"machine": machine, "command": command, "settings": settings}, f, indent=1)
    stats = medians(rows, float(settings.get("noisy_pct", NOISY_PCT)))
    connections = sorted({k[0] for k in stats})
    settings_line = (
        f"{settings['rounds']} interleaved round(s) of {settings['duration']} s runs; "
        f"{settings['keys']:,} keys, {settings['value_bytes']}-byte values; server on CPU "
        f"{settings['server_cpu']}, load generator on CPU {settings['client_cpu']}")
    text = "\n\n".join([
        "# corekv benchmark",
        f"Machine: {machine['nproc']} CPUs, {machine['cpu']}, Linux {machine['kernel']}, {machine['date']}.  \n"
        f"Command: `{command}`  \n{settings_line}.",
        "Medians over the rounds, leaving out runs during which other processes used more than "
        f"{float(settings.get('noisy_pct', NOISY_PCT)):.0f}% of a CPU when a quieter run of the same "
        "cell exists (`runs` counts the runs used, and the noisy ones left out). Latency with pipelining is per batch of 16 (how wrk times it). "
        "non-2xx is wrk's count of responses with status ≥ 400 (n/a for redis-benchmark). "
        "Server CPU is utime+stime of the server process; softirq is the loopback TCP work on the "
        "server CPU that no process is charged for; others' CPU is what other processes on the "
        "machine used during the runs used, at most, in % of one CPU (noise).",
        table(stats),
        "## Targets",
        targets(stats, connections) or "(not enough contenders in this run to check them)",
    ]) + "\n"
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text)
    print(text)
    try:
        chart(stats, connections, os.path.join(out_dir, "chart.png"))
        print(f"chart: {os.path.join(out_dir, 'chart.png')}")
    except ImportError:
        print("note: matplotlib is not installed; no chart (pip install matplotlib)", file=sys.stderr)


if __name__ == "__main__":
    directory = sys.argv[1]
    with open(os.path.join(directory, "meta.json")) as f:
        meta = json.load(f)
    write(directory, meta["machine"], meta["command"], meta["settings"])
