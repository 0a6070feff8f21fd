"""Helpers shared by every script in scripts/: the one way to start a server and wait until it
is ready (`start_corekv`, `start_nginx`, `start_redis`, pinned with taskset), stopping it,
reading its CPU time and memory from /proc, and loading keys fast over pipelined sockets.

Only ever talks to 127.0.0.1. Every process started here is registered and killed by
`stop_all()`, which the scripts call on exit, Ctrl-C and SIGTERM.
"""

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_started = []


def log(message):
    print(message, file=sys.stderr, flush=True)


def stop_all():
    """Stops every server this process started: SIGTERM, then SIGKILL after 5 s."""
    while _started:
        stop(_started[-1])


def install_cleanup():
    """Stops the servers on normal exit, Ctrl-C and SIGTERM."""
    import atexit

    atexit.register(stop_all)

    def on_signal(signum, _frame):
        stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)


def start(argv, log_path, cpu=None):
    """Starts a server, pinned to `cpu` (a taskset list) when given."""
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu)] + argv
    out = open(log_path, "wb")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    _started.append(proc)
    return proc


def stop(proc, grace=5.0, signum=signal.SIGTERM):
    """Stops one server: `signum` (SIGTERM), then SIGKILL after `grace` seconds."""
    if proc in _started:
        _started.remove(proc)
    if proc.poll() is None:
        proc.send_signal(signum)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A free port for a server told its port in advance, from below the kernel's ephemeral
    range: a port found by binding :0 and releasing it may be given to any outgoing
    connection (wrk's, a peer's) before the server binds it (tests/common/ports.rs)."""
    low = _ephemeral_low()
    while True:
        port = random.randrange(10000, low - 200)
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port


def http_status(port, path, timeout=1.0):
    """Status of a GET, or None when nothing answers."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            data = s.recv(4096)
        return int(data.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return None


def http_request(port, method, path, body=b"", timeout=10.0):
    """One request on a fresh `Connection: close` socket: (status, body bytes)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(head.encode() + body)
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split(b" ", 2)[1]), rest.partition(b"\r\n\r\n")[2]


def wait_until(check, proc, what, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} was not ready after {timeout} s")


def corekv_bin(env="COREKV_BIN"):
    path = os.environ.get(env) or os.path.join(ROOT, "target", "release", "corekv")
    if not os.access(path, os.X_OK):
        raise SystemExit(f"no corekv binary at {path}: run `cargo build --release` or set COREKV_BIN")
    return path


def start_corekv(port, log_path, *serve_args, cpus=None, bin_env="COREKV_BIN", binary=None, wrapper=(),
                 timeout=20.0):
    """The one way the scripts start corekv: `corekv serve --addr 127.0.0.1:PORT SERVE_ARGS...`,
    waiting until `/v1/readiness` answers 200 (so a `--load` has finished). With `cpus`, its
    executors are pinned there (`--cpus`) and so is its main thread (taskset). `binary` (or the
    variable `bin_env`, for the baseline contender) names the binary; `wrapper` runs it under a
    tool (e.g. valgrind), which is why `timeout` can be raised."""
    argv = list(wrapper) + [binary or corekv_bin(bin_env), "serve", "--addr", f"{HOST}:{port}", *serve_args]
    if cpus is not None:
        argv += ["--cpus", str(cpus)]
    proc = start(argv, log_path, cpu=cpus)
    wait_until(lambda: http_status(port, "/v1/readiness") == 200, proc, "corekv", timeout=timeout)
    return proc


NGINX_BODY = "v" * 64


def start_nginx(port, cpu, workdir):
    """nginx with one process (`master_process off`) answering `return 200` with a 64-byte body
    to every request: the per-core ceiling of an HTTP server on this machine."""
    if not shutil.which("nginx"):
        return None
    os.makedirs(workdir, exist_ok=True)
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 120s;
    client_body_temp_path {workdir}/body;
    default_type application/octet-stream;
    server {{
        listen {HOST}:{port};
        location / {{ return 200 "{NGINX_BODY}"; }}
    }}
}}
""")
    proc = start(["nginx", "-p", workdir, "-c", conf], os.path.join(workdir, "stderr.log"), cpu=cpu)
    wait_until(lambda: http_status(port, "/v1/readiness") == 200, proc, "nginx")
    return proc


AXUM_CONTENDER = os.path.join(ROOT, "scripts", "axum-contender", "target", "release", "axum-contender")


def start_axum(port, cpu, log_path):
    """The lock-based Rust contender (scripts/axum-contender): axum, one tokio worker, one
    RwLock<HashMap>. Built by scripts/bench.sh; None when it is not built."""
    if not os.path.exists(AXUM_CONTENDER):
        return None
    proc = start([AXUM_CONTENDER, str(port)], log_path, cpu=cpu)
    wait_until(lambda: http_status(port, "/v1/readiness") == 200, proc, "axum-contender")
    return proc


def redis_ping(port):
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(port, cpu, workdir):
    """A fresh redis-server without persistence, one I/O thread."""
    if not shutil.which("redis-server"):
        return None
    os.makedirs(workdir, exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--protected-mode", "no", "--maxclients", "10000",
            "--dir", workdir, "--io-threads", "1"]
    proc = start(argv, os.path.join(workdir, "redis.log"), cpu=cpu)
    wait_until(lambda: redis_ping(port), proc, "redis-server")
    return proc


def cpu_ticks(pid):
    """utime + stime of the process (all its threads) plus its reaped children, in ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of the file): utime, stime, cutime, cstime are 14..17.
    return sum(int(fields[i]) for i in (11, 12, 13, 14))


def cpu_seconds(pid):
    return cpu_ticks(pid) / CLK_TCK


def machine_cpu_busy(cpu):
    """Busy and total jiffies of one CPU, from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                values = [int(v) for v in line.split()[1:]]
                idle = values[3] + values[4]
                return sum(values) - idle, sum(values)
    return 0, 0


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def key(i):
    """The i-th key: `key:0000001`, 11 bytes up to 10 million keys."""
    return f"key:{i:07d}"


def _pipelined(port, payloads, ack, batch):
    """Sends `payloads` (bytes each) over one socket, `batch` at a time, and waits for as many
    answers (each counted by the `ack` marker) before the next batch. Returns answers seen."""
    seen = 0
    with socket.create_connection((HOST, port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(payloads), batch):
            chunk = payloads[start:start + batch]
            s.sendall(b"".join(chunk))
            want = seen + len(chunk)
            carry = b""
            while seen < want:
                data = s.recv(1 << 20)
                if not data:
                    raise RuntimeError("the server closed the connection while loading")
                window = carry + data
                seen += window.count(ack) - carry.count(ack)
                carry = window[-(len(ack) - 1):]
    return seen


def load(port, count, value_bytes, protocol, sockets=4, batch=1000):
    """Stores keys 0..count-1 with `value_bytes`-byte values, pipelined over a few sockets.
    `protocol` is "http" (corekv's PUT /v1/keys/{key}) or "redis" (SET). Returns seconds."""
    value = b"v" * value_bytes
    if protocol == "http":
        head = (f"Host: {HOST}\r\nContent-Length: {value_bytes}\r\n\r\n").encode()

        def payload(i):
            return b"PUT /v1/keys/" + key(i).encode() + b" HTTP/1.1\r\n" + head + value
        # Every 2xx answer to a PUT starts with this; anything else stops the count short.
        ack = b"HTTP/1.1 20"
    else:
        tail = f"${value_bytes}\r\n".encode() + value + b"\r\n"

        def payload(i):
            k = key(i).encode()
            return b"*3\r\n$3\r\nSET\r\n$" + str(len(k)).encode() + b"\r\n" + k + b"\r\n" + tail
        ack = b"+OK\r\n"
    started = time.time()
    shares = [range(s, count, sockets) for s in range(sockets)]
    results = [0] * sockets
    errors = []

    def run(index):
        try:
            payloads = [payload(i) for i in shares[index]]
            results[index] = _pipelined(port, payloads, ack, batch)
        except Exception as e:  # reported below; a loader thread must not die silently
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(sockets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    if sum(results) != count:
        raise RuntimeError(f"loaded {sum(results)} of {count} keys")
    return time.time() - started
