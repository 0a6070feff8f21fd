//! The process against a hostile environment, with the real binary: a second server on a port
//! already served, too few file descriptors, and flag values that would overflow deadlines.

mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Conn, Server, read_final};

/// 24 h in ms: `limits::TIMEOUT_MS_CEILING`, the highest timeout flag accepted.
const TIMEOUT_MS_CEILING: u64 = 24 * 3600 * 1000;
/// `limits::CONNECTIONS_PER_SHARD_MAX_CEILING`.
const CONNECTIONS_PER_SHARD_MAX_CEILING: u64 = 1_000_000;

/// A `corekv serve` command with these flags (and `--shards 2` unless they name a count).
fn serve_command(flags: &[&str]) -> Command {
    let mut command = Command::new(common::binary());
    command.arg("serve");
    if !flags.contains(&"--shards") {
        command.args(["--shards", "2"]);
    }
    command.args(flags);
    command
}

/// Limits the child's RLIMIT_NOFILE to `soft` / `hard` descriptors before it runs.
fn limit_fds(command: &mut Command, soft: u64, hard: u64) {
    // SAFETY: runs in the forked child before exec; setrlimit is async-signal-safe and only
    // reads the struct on this stack frame.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Waits for `child` to exit, killing it (and returning None) after `within`.
fn wait_bounded(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Runs `corekv serve` with `flags` to its exit (bounded); returns its exit code and stderr.
fn run_to_exit(flags: &[&str]) -> (Option<i32>, String) {
    let mut child = serve_command(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corekv");
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = status.unwrap_or_else(|| panic!("corekv {flags:?} did not exit; log:\n{stderr}"));
    (status.code(), stderr)
}

/// A free port on 127.0.0.1, released for the server to bind (from below the ephemeral range,
/// so no outgoing connection takes it meanwhile: see `common::ports`).
fn free_port_addr() -> SocketAddr {
    common::ports::reserve_one().local_addr().unwrap()
}

/// Every one of `count` fresh connections writes a key and reads it back.
fn assert_serves_every_request(server: &Server, count: usize) {
    for i in 0..count {
        let key = format!("k{i}");
        let put = server.request("PUT", &format!("/v1/keys/{key}"), key.as_bytes());
        assert!(put.status == 200 || put.status == 201, "PUT {key}: {}", put.status);
        let got = server.request("GET", &format!("/v1/keys/{key}"), b"");
        assert_eq!((got.status, got.body), (200, key.into_bytes()), "GET k{i}");
    }
}

// Goal: a second server on a port the first serves fails at start (exit 1, naming the address)
// instead of silently taking half the connections; one process's two shards share a fixed port.
#[test]
fn a_second_server_on_a_served_port_fails_at_start() {
    let addr = free_port_addr().to_string();
    let first = Server::start_command(serve_command(&["--addr", &addr]));
    let (code, stderr) = run_to_exit(&["--addr", &addr]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("address {addr} is already in use")),
        "{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert_serves_every_request(&first, 40);
    assert!(
        first
            .log()
            .contains(&format!("listening on http://{addr} with 2 shards"))
    );
}

// Goal: with a soft RLIMIT_NOFILE far below the hard one, the server raises it and serves more
// connections at once than the soft limit would allow.
#[test]
fn the_soft_fd_limit_is_raised_to_the_hard_one() {
    let mut command = serve_command(&["--addr", "127.0.0.1:0"]);
    limit_fds(&mut command, 48, 1024);
    let server = Server::start_command(command);
    let mut open: Vec<Conn> = (0..120).map(|_| server.connect()).collect();
    for (i, conn) in open.iter_mut().enumerate() {
        let status = conn.request("GET", "/v1/readiness", &[], b"").status;
        assert_eq!(status, 200, "connection {i} of 120");
    }
}

/// Opens connections that each complete a request, until one is answered 503; returns the
/// open ones and that 503's connection. Panics when a connection is left unanswered.
fn open_until_refused(server: &Server, attempts_max: usize) -> (Vec<Conn>, Conn, common::Response) {
    let mut open = Vec::new();
    for i in 0..attempts_max {
        let mut conn = server.connect();
        conn.send(b"GET /v1/readiness HTTP/1.1\r\nHost: t\r\n\r\n");
        let response = read_final(&mut conn.reader)
            .unwrap_or_else(|e| panic!("connection {i} got no answer ({e}); log:\n{}", server.log()));
        if response.status == 503 {
            return (open, conn, response);
        }
        assert_eq!(response.status, 200, "connection {i}");
        open.push(conn);
    }
    panic!(
        "{attempts_max} connections open and none refused; log:\n{}",
        server.log()
    );
}

// Goal: out of file descriptors, a new connection is answered 503 with a JSON error and closed
// (not left hanging), the log does not flood, and the server serves again once connections
// close.
#[test]
fn out_of_file_descriptors_new_connections_get_503_and_the_log_stays_quiet() {
    // One shard: with two, the descriptor one shard frees to refuse a client can be taken by
    // the other shard's accept, leaving the first without a reserve until a descriptor frees
    // (a known limit of per-shard reserves, documented in ARCHITECTURE's limits table), and a
    // knock on that shard then waits.
    let flags = ["--addr", "127.0.0.1:0", "--max-connections", "100000", "--shards", "1"];
    let mut command = serve_command(&flags);
    limit_fds(&mut command, 64, 64);
    let server = Server::start_command(command);
    assert_eq!(
        server.log().matches("RLIMIT_NOFILE is 64").count(),
        1,
        "one warning that --max-connections does not fit: {}",
        server.log()
    );
    let (open, mut refused, response) = open_until_refused(&server, 200);
    assert!(open.len() >= 10, "only {} connections before the limit", open.len());
    assert!(response.error().contains("file descriptors"), "{:?}", response.error());
    assert!(refused.is_closed(), "the refused connection is closed");

    // Keep knocking for a while at the limit: every knock is answered, none floods the log.
    // (A knock may find a descriptor another shard freed for a moment and be served: it is
    // kept open, so the server stays at its limit.)
    let mut open = open;
    let (knocks, mut refusals) = (20, 0);
    for _ in 0..knocks {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
        stream
            .write_all(b"GET /v1/readiness HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(stream);
        let status = read_final(&mut reader).expect("an answer at the limit").status;
        match status {
            503 => refusals += 1,
            200 => open.push(Conn { reader }),
            other => panic!("status {other} at the limit"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refusals * 2 >= knocks, "{refusals} of {knocks} knocks refused");

    drop(open);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.request("GET", "/v1/readiness", b"").status != 200 {
        assert!(Instant::now() < deadline, "never served again; log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_serves_every_request(&server, 10);
    let log = server.log();
    let accept_lines = log.matches("accept failed").count();
    // Unlimited, each shard logged one line per 10 ms of the second or more spent at the limit.
    assert!(
        (1..=10).contains(&accept_lines),
        "{accept_lines} accept-failure lines:\n{log}"
    );
    assert!(log.lines().count() < 30, "the log flooded:\n{log}");
}

// Goal: a timeout or connection flag past its ceiling is refused at start (exit 2) with a
// message naming the flag and its range, instead of overflowing the deadline arithmetic.
#[test]
fn huge_flag_values_are_refused_with_their_range() {
    let over = (TIMEOUT_MS_CEILING + 1).to_string();
    let max = u64::MAX.to_string();
    let range = format!("1..={TIMEOUT_MS_CEILING}");
    for flag in ["--idle-timeout-ms", "--header-timeout-ms", "--body-timeout-ms"] {
        for value in [&over, &max] {
            let (code, stderr) = run_to_exit(&["--addr", "127.0.0.1:0", flag, value]);
            assert_eq!(code, Some(2), "{flag} {value}: {stderr}");
            assert!(stderr.contains(flag) && stderr.contains(&range), "{flag}: {stderr}");
        }
    }
    let (code, stderr) = run_to_exit(&["--shutdown-grace-ms", &max]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--shutdown-grace-ms") && stderr.contains(&format!("0..={TIMEOUT_MS_CEILING}")));
    let connections_over = (CONNECTIONS_PER_SHARD_MAX_CEILING + 1).to_string();
    let (code, stderr) = run_to_exit(&["--max-connections", &connections_over]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--max-connections") && stderr.contains("1..=1000000"),
        "{stderr}"
    );
}

// Goal: every timeout at its ceiling is accepted, and reads under those deadlines still work
// (no overflow makes them time out at once).
#[test]
fn timeouts_at_their_ceiling_are_accepted_and_work() {
    let ceiling = TIMEOUT_MS_CEILING.to_string();
    let mut flags = vec!["--addr", "127.0.0.1:0"];
    for flag in [
        "--idle-timeout-ms",
        "--header-timeout-ms",
        "--body-timeout-ms",
        "--shutdown-grace-ms",
    ] {
        flags.extend([flag, ceiling.as_str()]);
    }
    let server = Server::start_command(serve_command(&flags));
    let mut conn = server.connect();
    // A request sent in two parts waits under the header deadline, then is answered.
    conn.send(b"PUT /v1/keys/slow HTTP/1.1\r\nHost: t\r\n");
    std::thread::sleep(Duration::from_millis(200));
    conn.send(b"Content-Length: 2\r\n\r\nok");
    assert!(matches!(conn.read().status, 200 | 201));
    assert_eq!(conn.request("GET", "/v1/keys/slow", &[], b"").body, b"ok");
}
