#!/usr/bin/env python3
"""User-space instructions per request of a corekv binary, counted by callgrind.

Wall-clock benchmarks on this 2-CPU machine drift by 10-20% between rounds, which hides
changes of a few percent; callgrind counts instructions exactly, whatever else the machine is
doing. The server (1 shard, under valgrind) gets a small and a large number of keep-alive GETs
of one existing 64-byte key over 16 connections; the difference between the two runs, divided
by the difference in requests, is the cost of one request without start-up and shutdown.
Kernel work (TCP, io_uring) is not counted: it is most of a request's CPU (see
docs/BENCHMARKS.md), so this measures only what corekv's own code can change.

Usage: scripts/instructions.py [BINARY ...]   (default: target/release/corekv)
KEEP_CALLGRIND=1 keeps the callgrind files (their paths are in /tmp) for callgrind_annotate.
Needs valgrind (apt-get install valgrind). Loopback only; every server it starts is stopped.
"""
import os
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kvlib  # noqa: E402

CONNECTIONS = 16
REQUESTS_SMALL, REQUESTS_LARGE = 1600, 6400
VALUE = b"v" * 64


def total_instructions(binary, requests):
    port = kvlib.free_port()
    out = tempfile.NamedTemporaryFile(prefix="callgrind.", delete=False).name
    # Under valgrind start-up is slow, and callgrind writes its counts only once the server has
    # shut down in order (SIGINT), so both waits are long.
    server = kvlib.start_corekv(
        port, os.devnull, "--shards", "1", binary=binary, timeout=120,
        wrapper=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
    try:
        status, _ = kvlib.http_request(port, "PUT", "/v1/keys/k", VALUE)
        if status not in (200, 201):
            raise SystemExit(f"storing the key answered {status}")
        conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
        for _ in range(requests // CONNECTIONS):
            for c in conns:
                c.sendall(b"GET /v1/keys/k HTTP/1.1\r\nHost: x\r\n\r\n")
            for c in conns:
                data = b""
                while not data.endswith(VALUE):
                    chunk = c.recv(4096)
                    if not chunk:
                        raise SystemExit("the server closed a connection")
                    data += chunk
        for c in conns:
            c.close()
        time.sleep(1)
    finally:
        kvlib.stop(server, grace=120, signum=signal.SIGINT)
    with open(out) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                os.environ.get("KEEP_CALLGRIND") or os.unlink(out)
                return int(line.split()[1])
    raise SystemExit(f"no instruction total in {out}")


def main():
    kvlib.install_cleanup()
    binaries = sys.argv[1:] or ["target/release/corekv"]
    print(f"| binary | instructions per GET ({REQUESTS_SMALL} vs {REQUESTS_LARGE} requests) |\n|---|---:|")
    for binary in binaries:
        small = total_instructions(binary, REQUESTS_SMALL)
        large = total_instructions(binary, REQUESTS_LARGE)
        print(f"| {binary} | {(large - small) / (REQUESTS_LARGE - REQUESTS_SMALL):,.0f} |")


if __name__ == "__main__":
    main()
