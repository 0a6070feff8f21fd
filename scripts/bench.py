#!/usr/bin/env python3
"""The wrk benchmark of corekv, with nginx and Redis as reference points in the same run.

Run it through scripts/bench.sh (which installs wrk, nginx and redis first). Each contender is
started fresh for each run, pinned to the server CPU, preloaded with the keyspace, and driven
by wrk (or redis-benchmark) pinned to the client CPU. Runs are interleaved: every round goes
through every connection count, workload and contender, so machine drift hits all alike; the
report quotes medians over the rounds.

Per run: requests/s, p50 and p99 latency, non-2xx responses, and the server's CPU time per
request (utime+stime from /proc/PID/stat before and after, divided by the requests completed).
Also recorded, to judge noise: the CPU time other processes used during the run
(`foreign_cpu_pct`, of one CPU) and the softirq time on the server CPU (the loopback TCP work
charged to no process). A run with foreign CPU over --noisy-pct is run again once.

Every setting has a flag and an environment variable (BENCH_<FLAG>, e.g. BENCH_DURATION=20).
"""

import argparse
import csv
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kvlib  # noqa: E402
import report  # noqa: E402

WRK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk")

# What each workload runs: a wrk script for HTTP servers, redis-benchmark arguments for Redis.
WORKLOADS = {
    "get": {"wrk": "get.lua", "redis": ["-t", "get"]},
    "put": {"wrk": "put.lua", "redis": ["-t", "set"]},
    "mix": {"wrk": "mix.lua", "redis": None},  # redis-benchmark has no 90/10 mix
    "get_p16": {"wrk": "get_pipelined.lua", "redis": ["-t", "get", "-P", "{pipeline}"]},
    "put_p16": {"wrk": None, "redis": ["-t", "set", "-P", "{pipeline}"]},  # Redis only
}

# The contenders: corekv designs, then the references (skipped when not installed).
CONTENDERS = {
    "sharded": {"kind": "corekv", "design": "sharded", "shards": 1},
    "locked": {"kind": "corekv", "design": "locked", "shards": 1},
    "sharded-2on1": {"kind": "corekv", "design": "sharded", "shards": 2},
    # An older build to compare an optimisation against in the same interleaved run:
    # COREKV_BASELINE_BIN=path/to/old/corekv scripts/bench.sh --contenders sharded,baseline
    "baseline": {"kind": "corekv", "design": "sharded", "shards": 1, "bin_env": "COREKV_BASELINE_BIN"},
    "axum": {"kind": "axum"},
    "nginx": {"kind": "nginx"},
    "redis": {"kind": "redis"},
}

# redis-benchmark runs a request count, not a duration: requests per second expected, to size
# a run to about --duration seconds.
REDIS_RATE = {False: 90_000, True: 900_000}


def env_default(name, default):
    return os.environ.get("BENCH_" + name.upper().replace("-", "_"), default)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: 2 s runs, 1 round, 64 connections")
    p.add_argument("--duration", type=int, default=int(env_default("duration", 10)), help="seconds per run")
    p.add_argument("--rounds", type=int, default=int(env_default("rounds", 2)))
    p.add_argument("--connections", default=env_default("connections", "1,8,64,512"))
    p.add_argument("--workloads", default=env_default("workloads", "get,put,mix,get_p16,put_p16"))
    p.add_argument("--contenders", default=env_default("contenders", ",".join(CONTENDERS)))
    p.add_argument("--server-cpu", default=env_default("server_cpu", "1"))
    p.add_argument("--client-cpu", default=env_default("client_cpu", "0"))
    p.add_argument("--wrk-threads", type=int, default=int(env_default("wrk_threads", 1)))
    p.add_argument("--keys", type=int, default=int(env_default("keys", 10_000)))
    p.add_argument("--value-bytes", type=int, default=int(env_default("value_bytes", 64)))
    p.add_argument("--pipeline", type=int, default=int(env_default("pipeline", 16)))
    p.add_argument("--noisy-pct", type=float, default=float(env_default("noisy_pct", 15)),
                   help="re-run a run once when other processes used more than this %% of a CPU")
    p.add_argument("--profile", default=env_default("profile", ""),
                   help="after the rounds, extra runs under `perf record -e cpu-clock -g`, "
                        "e.g. sharded:get:64,sharded:get_p16:64")
    p.add_argument("--out", default=env_default("out", ""), help="output directory")
    args = p.parse_args()
    if args.quick:
        args.duration, args.rounds = 2, 1
        if "BENCH_CONNECTIONS" not in os.environ and "--connections" not in sys.argv:
            args.connections = "64"
    args.connections = [int(c) for c in args.connections.split(",") if c]
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.contenders = [c for c in args.contenders.split(",") if c]
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w}; known: {', '.join(WORKLOADS)}")
    for c in args.contenders:
        if c not in CONTENDERS:
            p.error(f"unknown contender {c}; known: {', '.join(CONTENDERS)}")
    if not args.out:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out = os.path.join(kvlib.ROOT, "target", "bench-results", stamp)
    return args


def available(contender):
    kind = CONTENDERS[contender]["kind"]
    if contender == "baseline":
        return bool(os.environ.get("COREKV_BASELINE_BIN"))
    if kind == "axum":
        return os.path.exists(kvlib.AXUM_CONTENDER)
    if kind == "nginx":
        return shutil.which("nginx") is not None
    if kind == "redis":
        return shutil.which("redis-server") is not None and shutil.which("redis-benchmark") is not None
    return True


def applies(contender, workload):
    kind = CONTENDERS[contender]["kind"]
    spec = WORKLOADS[workload]
    return spec["redis"] is not None if kind == "redis" else spec["wrk"] is not None


def start_contender(contender, args, workdir):
    """Starts the contender, preloads it, and returns (process, port)."""
    spec = CONTENDERS[contender]
    port = kvlib.free_port()
    log = os.path.join(workdir, f"{contender}.log")
    if spec["kind"] == "corekv":
        bin_env = spec.get("bin_env", "COREKV_BIN")
        proc = kvlib.start_corekv(port, log, "--shards", str(spec["shards"]), "--design", spec["design"],
                                  cpus=args.server_cpu, bin_env=bin_env)
        kvlib.load(port, args.keys, args.value_bytes, "http")
    elif spec["kind"] == "axum":
        proc = kvlib.start_axum(port, args.server_cpu, log)
        kvlib.load(port, args.keys, args.value_bytes, "http")
    elif spec["kind"] == "nginx":
        proc = kvlib.start_nginx(port, args.server_cpu, os.path.join(workdir, "nginx"))
    else:
        proc = kvlib.start_redis(port, args.server_cpu, os.path.join(workdir, "redis"))
        kvlib.load(port, args.keys, args.value_bytes, "redis")
    return proc, port


def cpu_times_all():
    """Summed user+nice+system and softirq jiffies per CPU, from /proc/stat."""
    busy, softirq = {}, {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                busy[m.group(1)] = v[0] + v[1] + v[2]
                softirq[m.group(1)] = v[6]
    return busy, softirq


def run_client(argv, out_path):
    """Runs the load generator to completion; returns (its CPU seconds, its stdout)."""
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    with open(out_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0:4]} failed ({proc.returncode}): {text[-500:]}")
    return usage.ru_utime + usage.ru_stime, text


def client_argv(contender, workload, conns, port, args):
    pin = ["taskset", "-c", str(args.client_cpu)]
    if CONTENDERS[contender]["kind"] == "redis":
        pipelined = "-P" in WORKLOADS[workload]["redis"]
        n = REDIS_RATE[pipelined] * args.duration
        extra = [a.format(pipeline=args.pipeline) for a in WORKLOADS[workload]["redis"]]
        return pin + ["redis-benchmark", "-h", kvlib.HOST, "-p", str(port), "-c", str(conns),
                      "-n", str(n), "-r", str(args.keys), "-d", str(args.value_bytes), "--csv"] + extra
    script = os.path.join(WRK_DIR, WORKLOADS[workload]["wrk"])
    threads = min(args.wrk_threads, conns)
    return pin + ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{args.duration}s",
                  "--timeout", "10s", "-s", script, f"http://{kvlib.HOST}:{port}"]


def parse_wrk(text):
    m = re.search(r"WRK_RESULT (.*)", text)
    if not m:
        raise RuntimeError(f"wrk printed no result line: {text[-500:]}")
    fields = dict(kv.split("=") for kv in m.group(1).split())
    values = {k: int(v) for k, v in fields.items()}
    seconds = values["duration_us"] / 1e6
    errors = sum(values[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return {
        "requests": values["requests"],
        "seconds": seconds,
        "rps": values["requests"] / seconds,
        # 0 means wrk's histogram could not say (see scripts/wrk/lib.lua): missing, not 0.
        "p50_us": values["p50_us"] or "",
        "p99_us": values["p99_us"] or "",
        "non2xx": values["status_errors"],
        "socket_errors": errors,
    }


def parse_redis(text, n):
    rows = list(csv.reader(line for line in text.splitlines() if line.startswith('"')))
    header, data = rows[0], rows[-1]
    row = dict(zip(header, data))
    rps = float(row["rps"])
    return {
        "requests": n,
        "seconds": n / rps,
        "rps": rps,
        "p50_us": float(row["p50_latency_ms"]) * 1000,
        "p99_us": float(row["p99_latency_ms"]) * 1000,
        "non2xx": "",
        "socket_errors": "",
    }


def measure(contender, workload, conns, args, workdir, perf_path=None):
    """One run against a freshly started contender. Returns the result row."""
    proc, port = start_contender(contender, args, workdir)
    try:
        argv = client_argv(contender, workload, conns, port, args)
        load1 = os.getloadavg()[0]
        perf = None
        if perf_path:
            perf = subprocess.Popen(
                ["taskset", "-c", str(args.client_cpu), "perf", "record", "-e", "cpu-clock", "-g",
                 "-p", str(proc.pid), "-o", perf_path, "--", "sleep", str(max(1, args.duration - 2))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        busy0, soft0 = cpu_times_all()
        ticks0 = kvlib.cpu_ticks(proc.pid)
        wall0 = time.time()
        client_cpu, text = run_client(argv, os.path.join(workdir, "client.out"))
        wall = time.time() - wall0
        ticks = kvlib.cpu_ticks(proc.pid) - ticks0
        busy1, soft1 = cpu_times_all()
        if perf:
            perf.wait()
        if proc.poll() is not None:
            raise RuntimeError(f"{contender} exited during the run (see {workdir})")
    finally:
        kvlib.stop(proc)
    if CONTENDERS[contender]["kind"] == "redis":
        result = parse_redis(text, int(argv[argv.index("-n") + 1]))
    else:
        result = parse_wrk(text)
    server_seconds = ticks / kvlib.CLK_TCK
    all_busy = sum(busy1[c] - busy0[c] for c in busy1) / kvlib.CLK_TCK
    foreign = max(0.0, all_busy - server_seconds - client_cpu)
    cpu = str(args.server_cpu).split(",")[0].split("-")[0]
    softirq = (soft1.get(cpu, 0) - soft0.get(cpu, 0)) / kvlib.CLK_TCK
    result.update({
        "contender": contender,
        "workload": workload,
        "conns": conns,
        "cpu_us_per_req": server_seconds * 1e6 / max(1, result["requests"]),
        "server_cpu_pct": 100 * server_seconds / wall,
        "softirq_us_per_req": softirq * 1e6 / max(1, result["requests"]),
        "foreign_cpu_pct": 100 * foreign / wall,
        "load1": load1,
    })
    return result


FIELDS = ["round", "conns", "workload", "contender", "rps", "p50_us", "p99_us", "non2xx",
          "socket_errors", "cpu_us_per_req", "softirq_us_per_req", "server_cpu_pct",
          "foreign_cpu_pct", "load1", "requests", "seconds", "rerun"]


def describe_machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": os.uname().release,
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }


def main():
    args = parse_args()
    kvlib.install_cleanup()
    os.makedirs(args.out, exist_ok=True)
    workdir = os.path.join(args.out, "work")
    os.makedirs(workdir, exist_ok=True)
    kvlib.corekv_bin()
    contenders = []
    for c in args.contenders:
        if available(c):
            contenders.append(c)
        else:
            kvlib.log(f"note: {c} is not installed; its reference runs are skipped")
    os.environ.update({"KEYS": str(args.keys), "VALUE_BYTES": str(args.value_bytes),
                       "PIPELINE": str(args.pipeline)})
    machine = describe_machine()
    command = " ".join(["scripts/bench.sh"] + sys.argv[1:])
    kvlib.log(f"results in {args.out}")
    csv_path = os.path.join(args.out, "results.csv")
    rows = []
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        for round_index in range(args.rounds):
            # Rotate the order each round so no contender always runs first.
            shift = round_index % len(contenders)
            order = contenders[shift:] + contenders[:shift]
            for conns in args.connections:
                for workload in args.workloads:
                    for contender in order:
                        if not applies(contender, workload):
                            continue
                        result = measure(contender, workload, conns, args, workdir)
                        result["rerun"] = 0
                        if result["foreign_cpu_pct"] > args.noisy_pct:
                            kvlib.log(f"  noisy ({result['foreign_cpu_pct']:.0f}% of a CPU used by "
                                      "others): running it again")
                            again = measure(contender, workload, conns, args, workdir)
                            again["rerun"] = 1
                            if again["foreign_cpu_pct"] < result["foreign_cpu_pct"]:
                                result = again
                        result["round"] = round_index + 1
                        rows.append(result)
                        writer.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v)
                                         for k, v in result.items()})
                        f.flush()
                        kvlib.log(
                            f"round {round_index + 1} c={conns:<4} {workload:<7} {contender:<12} "
                            f"{result['rps']:>10,.0f} req/s  p50 {result['p50_us']!s:>7} us  "
                            f"p99 {result['p99_us']!s:>7} us  non2xx {result['non2xx']}  "
                            f"cpu {result['cpu_us_per_req']:.2f} us/req  "
                            f"others {result['foreign_cpu_pct']:.0f}%")
    for spec in [s for s in args.profile.split(",") if s]:
        contender, workload, conns = spec.split(":")
        path = os.path.join(args.out, f"perf-{contender}-{workload}-{conns}")
        kvlib.log(f"profiling {spec}")
        result = measure(contender, workload, int(conns), args, workdir, perf_path=path + ".data")
        def perf_report(*extra):
            text = subprocess.run(["perf", "report", "--stdio", "--no-children", "-i", path + ".data", *extra],
                                  capture_output=True, text=True).stdout
            return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]

        with open(path + ".txt", "w") as f:
            f.write(f"# {spec}: {result['rps']:.0f} req/s, {result['cpu_us_per_req']:.2f} us CPU/req "
                    "(under perf)\n\n# by shared object\n")
            f.write("\n".join(perf_report("-g", "none", "--sort", "dso")[:8]) + "\n\n# top symbols\n")
            f.write("\n".join(perf_report("-g", "none")[:60]) + "\n\n# top symbols with call chains\n")
            f.write("\n".join(perf_report()[:200]) + "\n")
        kvlib.log(f"  profile summary: {path}.txt")
    if rows:
        report.write(args.out, machine, command, vars(args))


if __name__ == "__main__":
    main()
