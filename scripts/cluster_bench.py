#!/usr/bin/env python3
"""The replicated-cluster benchmark (issue #13): a 3-member etcd cluster and a 3-node corekv
cluster (one shard, one Raft group per node, a data dir each) through the same harness
(scripts/cluster.py: `Etcd`, `Corekv`), interleaved in one run.

Run it through scripts/cluster-bench.sh (which installs etcd-server and wrk first). For every
round and every target a fresh cluster is started (fresh data directories, fsync on commit),
preloaded with the keyspace, and driven by wrk pinned to the client CPU, one workload after
the other: `put` (PUT of a 64-byte value) and `get` (a linearizable read of one key).

Per run: requests/s, p50/p99 latency, non-2xx responses, and the server CPU time per request
summed over every member (utime+stime of each member from /proc/PID/stat, before and after,
divided by the requests), with the per-member split. Pinning follows shared/BENCHMARKING.md:
wrk on --client-cpu, the members on --server-cpus, taken in turn (on 2 CPUs all members share
the one server CPU, so their sum is what a single core pays for a replicated write).

wrk talks to one member, --entry: `leader` (default: the leader at start, so no forwarding
hop), or a member index (a follower shows the cost of forwarding). The report says which.
Only ever talks to 127.0.0.1; every process is stopped on exit and Ctrl-C.
"""

import argparse
import csv
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (parse_wrk, run_client: one wrk result reader for every script)
import cluster  # noqa: E402
import kvlib  # noqa: E402

FIELDS = ["round", "target", "members", "workload", "connections", "entry", "rps", "p50_us",
          "p99_us", "non2xx", "socket_errors", "cpu_us_per_req", "cpu_us_per_req_by_member"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="etcd,corekv", help=f"comma-separated, of {sorted(cluster.TARGETS)}")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--workloads", default="put,get")
    p.add_argument("--connections", default="64")
    p.add_argument("--duration", type=int, default=10, help="seconds per run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--server-cpus", default="1", help="comma-separated; member i on the i-th, cycled")
    p.add_argument("--client-cpu", default="0")
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--value-bytes", type=int, default=64)
    p.add_argument("--entry", default="leader", help="`leader` or the index of the member wrk talks to")
    p.add_argument("--quick", action="store_true", help="smoke test: 3 s runs, 1 round")
    p.add_argument("--out", default=None, help="results folder (default target/cluster-bench-results/<time>)")
    args = p.parse_args()
    if args.quick:
        args.duration, args.rounds = 3, 1
    args.out = args.out or os.path.join(kvlib.ROOT, "target", "cluster-bench-results",
                                        time.strftime("%Y%m%d-%H%M%S"))
    return args


def entry_member(target, entry):
    if entry == "leader":
        leader = target.leader()
        return (0, "n0 (leader unknown)") if leader is None else (leader, f"n{leader} (leader)")
    index = int(entry)
    role = "leader" if target.leader() == index else "follower"
    return index, f"n{index} ({role})"


def measure(target, workload, connections, entry, args, workdir):
    """One wrk run against one member; CPU summed over all members."""
    member, entry_name = entry_member(target, entry)
    port = target.client_ports[member]
    script = os.path.join(cluster.WRK_DIR, target.scripts[workload])
    argv = ["taskset", "-c", args.client_cpu, "wrk", "-t", "1", "-c", str(connections),
            "-d", f"{args.duration}s", "--timeout", "10s", "-s", script, f"http://{kvlib.HOST}:{port}"]
    pids = target.pids()
    before = [kvlib.cpu_ticks(pid) for pid in pids]
    _, text = bench.run_client(argv, os.path.join(workdir, f"wrk-{target.name}-{workload}-{connections}.txt"))
    after = [kvlib.cpu_ticks(pid) for pid in pids]
    result = bench.parse_wrk(text)
    per_member = [(a - b) / kvlib.CLK_TCK * 1e6 / max(1, result["requests"]) for a, b in zip(after, before)]
    result.update({
        "entry": entry_name,
        "cpu_us_per_req": round(sum(per_member), 1),
        "cpu_us_per_req_by_member": "/".join(f"{us:.0f}" for us in per_member),
        "rps": round(result["rps"]),
    })
    return result


def run_target(name, round_no, args, writer, rows):
    workdir = os.path.join(args.out, f"round{round_no}-{name}")
    os.makedirs(workdir, exist_ok=True)
    target = cluster.TARGETS[name](args.members)
    target.start(workdir, [c for c in args.server_cpus.split(",") if c])
    try:
        target.preload(args.keys, args.value_bytes)
        for workload in args.workloads.split(","):
            for connections in (int(c) for c in args.connections.split(",")):
                result = measure(target, workload, connections, args.entry, args, workdir)
                row = {"round": round_no, "target": name, "members": args.members, "workload": workload,
                       "connections": connections, **{k: result[k] for k in FIELDS if k in result}}
                writer.writerow(row)
                rows.append(row)
                kvlib.log(f"round {round_no} {name} {workload} c={connections} via {row['entry']}: "
                          f"{row['rps']} req/s, p50 {row['p50_us']} us, p99 {row['p99_us']} us, "
                          f"non-2xx {row['non2xx']}, {row['cpu_us_per_req']} us CPU/req "
                          f"({row['cpu_us_per_req_by_member']})")
    finally:
        for proc in target.procs:
            kvlib.stop(proc)


def write_report(rows, args, path):
    """Medians over the rounds, one line per target, workload and connection count."""
    groups = {}
    for row in rows:
        groups.setdefault((row["target"], row["workload"], row["connections"]), []).append(row)
    lines = [f"# Cluster benchmark, {args.members} members, {args.duration} s runs, {args.rounds} round(s)",
             "", f"server CPUs {args.server_cpus}, client CPU {args.client_cpu}, {args.keys} keys, "
             f"{args.value_bytes}-byte values, wrk to {args.entry}", "",
             "| target | workload | conns | entry | req/s | p50 µs | p99 µs | non-2xx | CPU µs/req (sum) | by member |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (target, workload, connections), group in groups.items():
        def median(key):
            values = [r[key] for r in group if r[key] != ""]
            return round(statistics.median(values)) if values else ""
        lines.append(f"| {target} | {workload} | {connections} | {group[-1]['entry']} | {median('rps')} | "
                     f"{median('p50_us')} | {median('p99_us')} | {sum(r['non2xx'] for r in group)} | "
                     f"{median('cpu_us_per_req')} | {group[-1]['cpu_us_per_req_by_member']} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    args = parse_args()
    kvlib.install_cleanup()
    os.makedirs(args.out, exist_ok=True)
    # The wrk scripts read the keyspace from the environment (scripts/wrk/lib.lua).
    os.environ["KEYS"], os.environ["VALUE_BYTES"] = str(args.keys), str(args.value_bytes)
    rows = []
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["round", "target", "members", "workload", "connections"]
                                + [k for k in FIELDS if k not in ("round", "target", "members", "workload",
                                                                  "connections")])
        writer.writeheader()
        for round_no in range(1, args.rounds + 1):
            # Interleaved: every round goes through every target, so drift hits all alike.
            for name in args.targets.split(","):
                run_target(name, round_no, args, writer, rows)
    write_report(rows, args, os.path.join(args.out, "results.md"))
    kvlib.log(f"results in {args.out}")


if __name__ == "__main__":
    main()
