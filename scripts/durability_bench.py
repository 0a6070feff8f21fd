#!/usr/bin/env python3
"""The durability benchmark (issue #12): what `--data-dir` costs, against Redis's AOF.

Run it through scripts/durability-bench.sh (which installs wrk and redis first). It measures,
pinned per shared/BENCHMARKING.md (server on --server-cpu, load on --client-cpu):
  1. PUT requests/s and server CPU µs per request: corekv in memory and with
     `--fsync never|everysec|always` (wrk, scripts/wrk/put.lua), Redis with `appendonly yes`
     and `appendfsync everysec|always` (redis-benchmark), same value size and connections;
  2. recovery: start-up time of corekv on a data dir holding N keys (1M by default);
  3. disk bytes per key: corekv's data dir (log, then snapshot) against Redis's AOF and RDB.
Talks only to 127.0.0.1; every server it starts is stopped on exit or Ctrl-C.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kvlib  # noqa: E402

WRK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per throughput run")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--keys", type=int, default=10000, help="keyspace of the PUT runs")
    p.add_argument("--value-bytes", type=int, default=64)
    p.add_argument("--recovery-keys", type=int, default=1_000_000, help="keys for recovery and disk use (10M: 10000000)")
    p.add_argument("--server-cpu", type=int, default=1)
    p.add_argument("--client-cpu", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where data dirs go (default: a temp dir on target/'s disk)")
    return p.parse_args()


def disk_bytes(path):
    """Bytes the files under `path` occupy on disk (allocated blocks: a preallocated segment
    counts whole)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def wrk_put(port, args):
    argv = ["taskset", "-c", str(args.client_cpu), "wrk", "-t1", f"-c{args.connections}",
            f"-d{args.duration}s", "-s", os.path.join(WRK_DIR, "put.lua"), f"http://{kvlib.HOST}:{port}"]
    env = dict(os.environ, KEYS=str(args.keys), VALUE_BYTES=str(args.value_bytes))
    text = subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout
    line = next(line for line in text.splitlines() if line.startswith("WRK_RESULT"))
    fields = dict(kv.split("=") for kv in line.split()[1:])
    return int(fields["requests"]), int(fields["status_errors"])


def redis_set(port, args, requests):
    argv = ["taskset", "-c", str(args.client_cpu), "redis-benchmark", "-h", kvlib.HOST, "-p", str(port),
            "-t", "set", "-c", str(args.connections), "-d", str(args.value_bytes), "-r", str(args.keys),
            "-n", str(requests), "-q", "--csv"]
    subprocess.run(argv, capture_output=True, text=True, check=True)
    return requests, 0


def start_redis(port, workdir, fsync, cpu):
    os.makedirs(workdir, exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", kvlib.HOST, "--save", "", "--appendonly", "yes",
            "--appendfsync", fsync, "--daemonize", "no", "--protected-mode", "no", "--dir", workdir,
            "--io-threads", "1"]
    proc = kvlib.start(argv, os.path.join(workdir, "redis.log"), cpu=cpu)
    kvlib.wait_until(lambda: kvlib.redis_ping(port), proc, "redis-server")
    return proc


def throughput(args, base):
    """PUT req/s and server CPU µs/req for each contender, one after another."""
    rows = []
    contenders = [("corekv memory", []), ("corekv --fsync never", ["never"]),
                  ("corekv --fsync everysec", ["everysec"]), ("corekv --fsync always", ["always"]),
                  ("redis aof everysec", "everysec"), ("redis aof always", "always")]
    for name, how in contenders:
        port = kvlib.free_port()
        workdir = os.path.join(base, name.replace(" ", "_").replace("-", ""))
        if name.startswith("redis"):
            if not shutil.which("redis-server"):
                kvlib.log(f"note: redis-server missing; {name} skipped")
                continue
            proc = start_redis(port, workdir, how, args.server_cpu)
        else:
            flags = ["--shards", "1"]
            if how:
                flags += ["--data-dir", os.path.join(workdir, "data"), "--fsync", how[0]]
            os.makedirs(workdir, exist_ok=True)
            proc = kvlib.start_corekv(port, os.path.join(workdir, "corekv.log"), *flags, cpus=args.server_cpu)
        try:
            ticks0, wall0 = kvlib.cpu_ticks(proc.pid), time.time()
            if name.startswith("redis"):
                # About as many requests as corekv did in the same time: run for --duration.
                requests, errors = 0, 0
                while time.time() - wall0 < args.duration:
                    done, _ = redis_set(port, args, 20_000)
                    requests += done
            else:
                requests, errors = wrk_put(port, args)
            wall = time.time() - wall0
            cpu = (kvlib.cpu_ticks(proc.pid) - ticks0) / kvlib.CLK_TCK
        finally:
            kvlib.stop(proc)
        rows.append((name, requests / wall, cpu * 1e6 / max(1, requests), errors))
        kvlib.log(f"{name}: {requests / wall:,.0f} PUT/s, {cpu * 1e6 / max(1, requests):.1f} µs CPU/req, {errors} non-2xx")
    return rows


def recovery(args, base):
    """Loads N keys into a durable corekv, restarts it, times recovery; disk bytes per key."""
    n = args.recovery_keys
    data = os.path.join(base, "recovery", "data")
    os.makedirs(os.path.dirname(data), exist_ok=True)
    log_path = os.path.join(base, "recovery", "corekv.log")
    flags = ["--shards", "1", "--data-dir", data, "--fsync", "everysec"]
    port = kvlib.free_port()
    proc = kvlib.start_corekv(port, log_path, *flags, cpus=args.server_cpu)
    try:
        kvlib.load(port, n, args.value_bytes, "http")
    finally:
        kvlib.stop(proc)
    log_bytes = disk_bytes(data)
    started = time.time()
    proc = kvlib.start_corekv(port, log_path, *flags, cpus=args.server_cpu, timeout=600)
    seconds = time.time() - started
    try:
        _status, body = kvlib.http_request(port, "GET", "/v1/stats")
        storage = json.loads(body)["shards"][0]["storage"]
    finally:
        kvlib.stop(proc)
    kvlib.log(f"recovery of {n:,} keys: {seconds:.2f} s to ready, recovery itself "
              f"{storage['recovery_us'] / 1e6:.2f} s for {storage['recovery_records']:,} records")
    snap_bytes = disk_bytes(data)
    return {"keys": n, "recovery_s": seconds, "log_bytes_per_key": log_bytes / n,
            "after_restart_bytes_per_key": snap_bytes / n}


def redis_disk(args, base):
    """Redis AOF and RDB bytes per key for the same keys."""
    if not shutil.which("redis-server"):
        return None
    n = args.recovery_keys
    workdir = os.path.join(base, "redis-disk")
    port = kvlib.free_port()
    proc = start_redis(port, workdir, "everysec", args.server_cpu)
    try:
        kvlib.load(port, n, args.value_bytes, "redis")
        time.sleep(1.5)
        aof = disk_bytes(os.path.join(workdir, "appendonlydir"))
        subprocess.run(["redis-cli", "-p", str(port), "SAVE"], capture_output=True)
        rdb = os.path.getsize(os.path.join(workdir, "dump.rdb"))
    finally:
        kvlib.stop(proc)
    return {"aof_bytes_per_key": aof / n, "rdb_bytes_per_key": rdb / n}


def main():
    args = parse_args()
    kvlib.install_cleanup()
    kvlib.corekv_bin()
    base = args.workdir or tempfile.mkdtemp(prefix="durability-bench-", dir=os.path.join(kvlib.ROOT, "target"))
    try:
        rows = throughput(args, base)
        rec = recovery(args, base)
        disk = redis_disk(args, base)
    finally:
        kvlib.stop_all()
    print(f"\n## PUT, {args.connections} connections, {args.value_bytes}-byte values, {args.duration} s each")
    print("| contender | PUT/s | server CPU µs/req | non-2xx |\n|---|---|---|---|")
    for name, rps, us, errors in rows:
        print(f"| {name} | {rps:,.0f} | {us:.1f} | {errors} |")
    print(f"\n## Recovery and disk, {rec['keys']:,} keys")
    print(f"- corekv: ready after {rec['recovery_s']:.2f} s; data dir {rec['log_bytes_per_key']:.0f} bytes/key "
          f"(log, preallocated segments count whole), {rec['after_restart_bytes_per_key']:.0f} bytes/key after the restart")
    if disk:
        print(f"- redis: AOF {disk['aof_bytes_per_key']:.0f} bytes/key, RDB {disk['rdb_bytes_per_key']:.0f} bytes/key")
    print(f"\n(work files in {base})")


if __name__ == "__main__":
    main()
