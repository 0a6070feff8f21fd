#!/usr/bin/env python3
"""Measures `corekv serve --load`: generates a file of LINES `<key> <value>` lines (default
10,000,000: 11-byte keys, 64-byte values, ~770 MB; cached under target/load-bench/), starts the
release binary with 1 and with 2 shards (through kvlib, the scripts' one way to start a server),
and reports the time until the load finished and lines per second, as the server logs them.
Run it through scripts/load-bench.sh. Loopback only; every server it starts is stopped.

    scripts/load-bench.sh [LINES]
"""

import json
import os
import platform
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kvlib  # noqa: E402

VALUE = "v-0123456789abcdefghijklmnopqrstuvwxyz-0123456789abcdefghijklmn"
# Readiness waits for the load; 10 million lines take well under this on a loaded machine.
LOAD_TIMEOUT_S = 600


def data_file(lines, directory):
    path = os.path.join(directory, f"data-{lines}.txt")
    if not (os.path.exists(path) and os.path.getsize(path) > 0):
        kvlib.log(f"generating {path} ({lines} lines)")
        with open(path + ".tmp", "w") as f:
            for start in range(0, lines, 100_000):
                f.write("".join(f"{kvlib.key(i)} {VALUE}\n" for i in range(start, min(lines, start + 100_000))))
        os.replace(path + ".tmp", path)
    return path


def run(shards, path, directory):
    """One start with `--load`: (seconds, lines/s, keys served, RSS bytes), from the server's log."""
    log_path = os.path.join(directory, f"serve-{shards}.log")
    with open(path, "rb") as f:  # warm the page cache so both runs read it alike
        while f.read(1 << 24):
            pass
    port = kvlib.free_port()
    os.environ.setdefault("RUST_LOG", "info")
    proc = kvlib.start_corekv(port, log_path, "--shards", str(shards), "--load", path, timeout=LOAD_TIMEOUT_S)
    try:
        _, body = kvlib.http_request(port, "GET", "/v1/stats")
        keys = json.loads(body)["keys"]
        rss = kvlib.rss_bytes(proc.pid)
    finally:
        kvlib.stop(proc)
    with open(log_path, errors="replace") as f:
        summary = re.search(r"loaded \d+ lines .* in ([0-9.]+) s: (\d+) lines/s", f.read())
    if not summary:
        raise RuntimeError(f"no load summary in {log_path}")
    return summary.group(1), summary.group(2), keys, rss


def main():
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    kvlib.install_cleanup()
    directory = os.path.join(kvlib.ROOT, "target", "load-bench")
    os.makedirs(directory, exist_ok=True)
    path = data_file(lines, directory)
    mib = os.path.getsize(path) / 2**20
    print("\n| shards | lines | MiB | seconds | lines/s | keys served | RSS after |\n|---:|---:|---:|---:|---:|---:|---:|")
    for shards in (1, 2):
        seconds, rate, keys, rss = run(shards, path, directory)
        print(f"| {shards} | {lines} | {mib:.0f} | {seconds} | {rate} | {keys} | {rss / 2**20:.0f} MiB |", flush=True)
    print(f"\nmachine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, {platform.release()}")


if __name__ == "__main__":
    main()
