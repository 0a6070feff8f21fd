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
Needs valgrind (apt-get install valgrind). Loopback only; every server it starts is stopped.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

CONNECTIONS = 16
REQUESTS_SMALL, REQUESTS_LARGE = 1600, 6400
VALUE = b"v" * 64


def total_instructions(binary, requests):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tempfile.NamedTemporaryFile(prefix="callgrind.", delete=False).name
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "serve",
         "--addr", f"127.0.0.1:{port}", "--shards", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                with socket.create_connection(("127.0.0.1", port)) as s:
                    s.sendall(b"PUT /v1/keys/k HTTP/1.1\r\nContent-Length: 64\r\n\r\n" + VALUE)
                    s.recv(200)
                break
            except OSError:
                time.sleep(0.1)
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
        server.send_signal(signal.SIGINT)
        server.wait(timeout=120)
    with open(out) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                os.unlink(out)
                return int(line.split()[1])
    raise SystemExit(f"no instruction total in {out}")


def main():
    binaries = sys.argv[1:] or ["target/release/corekv"]
    print(f"| binary | instructions per GET ({REQUESTS_SMALL} vs {REQUESTS_LARGE} requests) |\n|---|---:|")
    for binary in binaries:
        small = total_instructions(binary, REQUESTS_SMALL)
        large = total_instructions(binary, REQUESTS_LARGE)
        print(f"| {binary} | {(large - small) / (REQUESTS_LARGE - REQUESTS_SMALL):,.0f} |")


if __name__ == "__main__":
    main()
