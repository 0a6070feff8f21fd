#!/usr/bin/env python3
"""Replicated clusters on loopback for benchmarks (issue #13): the one way the scripts start a
3-member etcd cluster or a 3-node corekv cluster.

A *target* knows how to start its members (pinned with taskset), wait until the cluster is
healthy, preload the keyspace, name the wrk script for each workload, pick the member wrk
talks to, and list its members' pids for CPU accounting. scripts/cluster_bench.py drives any
target the same way.

Run alone to keep a cluster up for manual work until Ctrl-C:

    python3 scripts/cluster.py etcd [--members 3] [--cpus 1]

Only ever listens on and talks to 127.0.0.1. Every process is started through kvlib, so
kvlib.stop_all() stops them on exit, Ctrl-C and SIGTERM.
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kvlib  # noqa: E402

WRK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk")

# How long a fresh cluster gets to elect a leader and report healthy.
HEALTH_TIMEOUT_S = 30.0
# Connections the preloader uses (each is one keep-alive HTTP/1.1 connection).
PRELOAD_CONNECTIONS = 8


def post_json(port, path, body, conn=None, timeout=10.0):
    """POSTs a JSON body; returns (status, decoded JSON or None). Reuses `conn` when given."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(kvlib.HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, None
    finally:
        if own:
            conn.close()


def member_cpu(cpus, i):
    """The taskset CPU list of member i: members take the given lists in turn (on a 2-CPU
    machine all members share the one server CPU)."""
    return cpus[i % len(cpus)] if cpus else None


def b64(text):
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


class Etcd:
    """A Debian `etcd-server` cluster of `members` on loopback, fsync on every commit (etcd's
    default: no --unsafe-no-fsync), its data on the worktree's disk (not tmpfs), the JSON
    gateway on each member's client port."""

    name = "etcd"
    scripts = {"put": "etcd_put.lua", "get": "etcd_range.lua"}

    def __init__(self, members=3):
        if not shutil.which("etcd"):
            raise SystemExit("etcd is not installed: apt-get install -y etcd-server")
        self.members = members
        self.client_ports = [kvlib.free_port() for _ in range(members)]
        self.peer_ports = [kvlib.free_port() for _ in range(members)]
        self.procs = []

    def start(self, workdir, cpus):
        """Starts every member (member i pinned to `cpus[i % len(cpus)]`, unpinned when `cpus`
        is empty) and waits until each reports healthy."""
        cluster = ",".join(f"n{i}=http://{kvlib.HOST}:{p}" for i, p in enumerate(self.peer_ports))
        token = f"corekv-bench-{os.getpid()}-{time.time_ns()}"
        for i in range(self.members):
            data = os.path.join(workdir, f"etcd-n{i}")
            client = f"http://{kvlib.HOST}:{self.client_ports[i]}"
            peer = f"http://{kvlib.HOST}:{self.peer_ports[i]}"
            argv = ["etcd", "--name", f"n{i}", "--data-dir", data,
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", cluster, "--initial-cluster-state", "new",
                    "--initial-cluster-token", token, "--logger", "zap", "--log-level", "warn"]
            log = os.path.join(workdir, f"etcd-n{i}.log")
            self.procs.append(kvlib.start(argv, log, cpu=member_cpu(cpus, i)))
        deadline = time.time() + HEALTH_TIMEOUT_S
        for proc, port in zip(self.procs, self.client_ports):
            remaining = max(1.0, deadline - time.time())
            kvlib.wait_until(lambda: self.healthy(port), proc, f"etcd on {port}", timeout=remaining)

    def healthy(self, port):
        try:
            status, body = kvlib.http_request(port, "GET", "/health", timeout=1.0)
            return status == 200 and json.loads(body).get("health") == "true"
        except (OSError, ValueError, IndexError):
            return False

    def leader(self):
        """Index of the member that leads, from each member's /v3/maintenance/status."""
        for i, port in enumerate(self.client_ports):
            status, body = post_json(port, "/v3/maintenance/status", {})
            if status == 200 and body and body.get("leader") == body["header"]["member_id"]:
                return i
        return None

    def preload(self, keys, value_bytes):
        """PUTs keys 0..keys-1 (kvlib.key) through the leader's gateway, on a few keep-alive
        connections, so reads find every key."""
        port = self.client_ports[self.leader() or 0]
        value = b64("v" * value_bytes)
        errors = []

        def run(share):
            conn = http.client.HTTPConnection(kvlib.HOST, port, timeout=30)
            try:
                for i in share:
                    status, _ = post_json(port, "/v3/kv/put", {"key": b64(kvlib.key(i)), "value": value}, conn)
                    if status != 200:
                        raise RuntimeError(f"preload PUT answered {status}")
            except Exception as e:  # reported below; a loader thread must not die silently
                errors.append(e)
            finally:
                conn.close()

        threads = [threading.Thread(target=run, args=(range(s, keys, PRELOAD_CONNECTIONS),))
                   for s in range(PRELOAD_CONNECTIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def pids(self):
        return [p.pid for p in self.procs]


class Corekv:
    """corekv members on loopback, driven through PUT/GET /v1/keys/KEY (scripts/wrk/put.lua,
    get.lua; a GET is a linearizable read, ReadIndex, by default).

    With `members` > 1, a cluster (issue #13): member i is `--node-id i+1 --peers ...` with a
    data dir of its own under the workdir (its Raft log, fdatasynced before a write is
    answered: the same durability as etcd's fsync on commit), `shards` shards each (1 by
    default: one Raft group, as etcd has). With `members` == 1, one unreplicated node with a
    durable `--data-dir` (`--fsync always`), for the "cluster against one durable node" ratio."""

    name = "corekv"
    scripts = {"put": "put.lua", "get": "get.lua"}
    # Shard s of a member takes peer traffic on its peer port + PEER_PORT_STRIDE * s
    # (src/limits.rs PEER_PORT_STRIDE_PER_SHARD).
    PEER_PORT_STRIDE = 100

    def __init__(self, members=3, shards=1):
        self.members = members
        self.shards = shards
        self.client_ports = [kvlib.free_port() for _ in range(members)]
        self.peer_ports = [self.free_peer_port() for _ in range(members)]
        self.procs = []

    def free_peer_port(self):
        """A free port whose every shard port (+ stride per shard) is free too."""
        while True:
            port = kvlib.free_port()
            if port + self.PEER_PORT_STRIDE * (self.shards - 1) > 65535:
                continue
            probes = []
            try:
                for s in range(1, self.shards):
                    probe = socket.socket()
                    probes.append(probe)
                    probe.bind((kvlib.HOST, port + self.PEER_PORT_STRIDE * s))
                return port
            except OSError:
                continue
            finally:
                for probe in probes:
                    probe.close()

    def member_args(self, i, workdir):
        """The serve flags of member i beyond --addr and --cpus."""
        args = ["--shards", str(self.shards), "--data-dir", os.path.join(workdir, f"corekv-n{i}")]
        if self.members == 1:
            return args + ["--fsync", "always"]
        peers = ",".join(f"{n + 1}={kvlib.HOST}:{p}" for n, p in enumerate(self.peer_ports))
        return args + ["--node-id", str(i + 1), "--peers", peers]

    def start(self, workdir, cpus):
        """Starts every member (pinned like etcd's, see member_cpu) and, for a cluster, waits
        until every member names the same leader for every group."""
        for i, port in enumerate(self.client_ports):
            log = os.path.join(workdir, f"corekv-n{i}.log")
            self.procs.append(kvlib.start_corekv(port, log, *self.member_args(i, workdir),
                                                 cpus=member_cpu(cpus, i)))
        if self.members > 1:
            kvlib.wait_until(lambda: self.leader() is not None, self.procs[0], "a corekv leader",
                             timeout=HEALTH_TIMEOUT_S)

    def leaders(self, port):
        """Each group's leader (node id, 0 when none) as the member on `port` sees it."""
        try:
            status, body = kvlib.http_request(port, "GET", "/v1/cluster", timeout=2.0)
            if status != 200:
                return None
            return [group.get("leader", 0) for group in json.loads(body)["groups"]]
        except (OSError, ValueError, KeyError):
            return None

    def leader(self):
        """Index of the member leading group 0, once every member agrees on every group's
        leader; None before that."""
        if self.members == 1:
            return 0
        seen = [self.leaders(port) for port in self.client_ports]
        if seen[0] and all(s == seen[0] for s in seen) and all(seen[0]):
            return seen[0][0] - 1
        return None

    def preload(self, keys, value_bytes):
        kvlib.load(self.client_ports[self.leader() or 0], keys, value_bytes, "http")

    def pids(self):
        return [p.pid for p in self.procs]


TARGETS = {"etcd": Etcd, "corekv": Corekv}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", choices=sorted(TARGETS))
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--cpus", default="", help="comma-separated CPUs, member i on the i-th (cycled)")
    p.add_argument("--workdir", default=None)
    args = p.parse_args()
    kvlib.install_cleanup()
    workdir = args.workdir or os.path.join(kvlib.ROOT, "target", "cluster", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(workdir, exist_ok=True)
    target = TARGETS[args.target](args.members)
    target.start(workdir, [c for c in args.cpus.split(",") if c])
    kvlib.log(f"{args.target}: {args.members} members up, client ports {target.client_ports}, "
              f"leader n{target.leader()}, data and logs in {workdir}; Ctrl-C stops them")
    try:
        while all(proc.poll() is None for proc in target.procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    kvlib.stop_all()


if __name__ == "__main__":
    main()
