#!/usr/bin/env python3
"""Prefix listing: what the key index costs, and how fast listings are answered.

Starts corekv (2 shards) three times: with neither the key index nor a watch history
(`--watch-history-changes 0`), with the watch history only (the default), and with both
(`--key-index`); loads the same keys into each (`key:0000000` .., 11 bytes, 64-byte values,
pipelined PUTs) and reports per key: RSS after loading and the server's CPU time per PUT.
With the index on, it then adds 100 keys under `pfx/` and measures

- the latency of `GET /v1/keys?prefix=pfx/` (100 of N+100 keys) over one keep-alive socket,
- the throughput of a full listing (`GET /v1/keys`, and `&values=true`), streamed.

Only talks to 127.0.0.1 and stops every server it starts. After `cargo build --release`:

    python3 scripts/list_bench.py [--keys 1000000] [--queries 500] [--cpus 0-1]
"""

import argparse
import http.client
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kvlib  # noqa: E402

VALUE_BYTES = 64
PREFIX_KEYS = 100


def loaded_server(keys, cpus, workdir, name, *flags):
    port = kvlib.free_port()
    proc = kvlib.start_corekv(port, os.path.join(workdir, f"list-bench-{name}.log"), "--shards", "2", *flags,
                              cpus=cpus)
    time.sleep(0.5)
    empty = kvlib.rss_bytes(proc.pid)
    cpu_before = kvlib.cpu_seconds(proc.pid)
    took = kvlib.load(port, keys, VALUE_BYTES, "http")
    cpu = kvlib.cpu_seconds(proc.pid) - cpu_before
    time.sleep(1.0)
    loaded = kvlib.rss_bytes(proc.pid)
    kvlib.log(f"{name}: {keys:,} keys in {took:.1f} s, RSS {empty / 2**20:.1f} -> {loaded / 2**20:.1f} MiB, "
              f"server CPU {cpu:.2f} s")
    return proc, port, {"rss_per_key": (loaded - empty) / keys, "cpu_us_per_put": cpu / keys * 1e6,
                        "load_s": took}


def get(conn, path):
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    return body


def prefix_latency(port, queries):
    conn = http.client.HTTPConnection(kvlib.HOST, port, timeout=30)
    for i in range(PREFIX_KEYS):
        conn.request("PUT", f"/v1/keys/pfx/{i:03d}", body=b"v" * VALUE_BYTES)
        conn.getresponse().read()
    body = get(conn, "/v1/keys?prefix=pfx/")
    assert body.count(b'"pfx/') == PREFIX_KEYS, body[:200]
    samples = []
    for _ in range(queries):
        started = time.perf_counter()
        get(conn, "/v1/keys?prefix=pfx/")
        samples.append(time.perf_counter() - started)
    samples.sort()
    return {q: samples[int(q / 100 * (len(samples) - 1))] * 1e6 for q in (50, 99)}


def full_listing(port, values):
    conn = http.client.HTTPConnection(kvlib.HOST, port, timeout=60)
    started = time.perf_counter()
    body = get(conn, "/v1/keys" + ("?values=true" if values else ""))
    took = time.perf_counter() - started
    keys = body.count(b'"key:') if not values else body.count(b'{"key":')
    return {"keys": keys, "seconds": took, "keys_per_s": keys / took, "mib_per_s": len(body) / took / 2**20}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--cpus", default=None, help="CPUs to pin the servers to (taskset list)")
    args = p.parse_args()
    kvlib.install_cleanup()
    kvlib.corekv_bin()
    workdir = os.path.join(kvlib.ROOT, "target", "bench-results")
    os.makedirs(workdir, exist_ok=True)

    proc, _, neither = loaded_server(args.keys, args.cpus, workdir, "neither", "--watch-history-changes", "0")
    kvlib.stop(proc)
    proc, _, without = loaded_server(args.keys, args.cpus, workdir, "history-only")
    kvlib.stop(proc)
    proc, port, with_index = loaded_server(args.keys, args.cpus, workdir, "key-index", "--key-index")
    latency = prefix_latency(port, args.queries)
    keys_only = full_listing(port, values=False)
    with_values = full_listing(port, values=True)
    kvlib.stop(proc)

    print(f"{args.keys:,} keys (11 bytes, {VALUE_BYTES}-byte values), 2 shards\n")
    print("| | RSS per key | server CPU per PUT | load time |")
    print("|---|---:|---:|---:|")
    for name, r in (("--watch-history-changes 0", neither),
                    ("default (watch history 1024)", without),
                    ("--key-index (and watch history 1024)", with_index)):
        print(f"| {name} | {r['rss_per_key']:.0f} B | {r['cpu_us_per_put']:.2f} µs | {r['load_s']:.1f} s |")
    print(f"\nindex cost: {with_index['rss_per_key'] - without['rss_per_key']:.0f} B per key, "
          f"{with_index['cpu_us_per_put'] - without['cpu_us_per_put']:+.2f} µs CPU per PUT")
    print(f"watch history cost: {without['cpu_us_per_put'] - neither['cpu_us_per_put']:+.2f} µs CPU per PUT\n")
    print(f"prefix of {PREFIX_KEYS} keys among {args.keys + PREFIX_KEYS:,}: "
          f"p50 {latency[50]:.0f} µs, p99 {latency[99]:.0f} µs ({args.queries} queries, one socket)")
    for name, r in (("keys only", keys_only), ("with values", with_values)):
        print(f"full listing, {name}: {r['keys']:,} keys in {r['seconds']:.2f} s = "
              f"{r['keys_per_s'] / 1e6:.2f} M keys/s, {r['mib_per_s']:.0f} MiB/s")


if __name__ == "__main__":
    main()
