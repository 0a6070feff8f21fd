//! `--data-dir` against the real binary (2 shards): acknowledged writes survive kill -9, torn
//! tails and corruption at start-up, snapshots racing writes, shard-count changes, TTLs across
//! restarts, the data-dir lock, a full disk, and the storage stats.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Server, binary, fresh_dir, keys_on_shard, start_on_data_dir, with_small_tmpfs};
use corekv::shard::shard_for;

/// Small segments keep recovery quick in a debug build (a segment is preallocated whole).
const SEGMENT_BYTES: &str = "1048576";
/// How long a stopped server gets to exit.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// Stops a server with SIGTERM (a clean close of every log) and waits for it.
fn stop(server: Server) {
    let status = server.signal_and_wait(libc::SIGTERM, EXIT_WITHIN);
    assert!(
        status.is_some_and(|s| s.success()),
        "the server did not stop cleanly: {status:?}"
    );
}

/// Runs `corekv serve` that must fail: returns its exit code and its log.
fn serve_failing(dir: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(binary())
        .args(["serve", "--addr", "127.0.0.1:0", "--shards", "2", "--data-dir"])
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + EXIT_WITHIN;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut log = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
            return (status.code(), log);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("corekv serve kept running where it should have failed");
}

fn put(server: &Server, key: &str, value: &str) -> u16 {
    server
        .request("PUT", &format!("/v1/keys/{key}"), value.as_bytes())
        .status
}

fn get(server: &Server, key: &str) -> Option<String> {
    let response = server.request("GET", &format!("/v1/keys/{key}"), b"");
    match response.status {
        200 => Some(String::from_utf8(response.body).unwrap()),
        404 => None,
        status => panic!("GET {key}: {status}"),
    }
}

/// Every key of `model` reads back with its value, and nothing else is asked.
fn assert_model(server: &Server, model: &HashMap<String, Option<String>>) {
    for (key, value) in model {
        assert_eq!(&get(server, key), value, "key {key}");
    }
}

/// One writer's record of a key: what was acknowledged last, and what was in flight.
#[derive(Default, Clone)]
struct Written {
    acked: Option<String>,
    in_flight: Option<String>,
}

/// 32 connections write their own keys until `stop`; each returns what it saw acknowledged.
fn write_until_stopped(
    server: &Server,
    round: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<HashMap<String, Written>>> {
    (0..32)
        .map(|thread| {
            let addr = server.addr;
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut seen: HashMap<String, Written> = HashMap::new();
                let Ok(stream) = std::net::TcpStream::connect(addr) else {
                    return seen;
                };
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut conn = common::Conn {
                    reader: std::io::BufReader::new(stream),
                };
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("r{round}-t{thread}-k{}", i % 20);
                    let value = format!("{thread}-{i}");
                    seen.entry(key.clone()).or_default().in_flight = Some(value.clone());
                    let request = common::encode_request("PUT", &format!("/v1/keys/{key}"), &[], value.as_bytes());
                    if std::io::Write::write_all(conn.reader.get_mut(), &request).is_err() {
                        break;
                    }
                    match common::read_final(&mut conn.reader) {
                        Ok(response) if response.status < 300 => {
                            let entry = seen.get_mut(&key).unwrap();
                            entry.acked = entry.in_flight.take();
                        }
                        _ => break,
                    }
                }
                seen
            })
        })
        .collect()
}

// Goal: under --fsync always and everysec, every write acknowledged before a kill -9 is there
// after the restart (or the value that was in flight for its key), over several rounds.
#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = fresh_dir("durability-tests", "kill9");
    for (round, fsync) in ["always", "always", "everysec", "everysec"].iter().enumerate() {
        let server = start_on_data_dir(&dir, SEGMENT_BYTES, &["--fsync", fsync]);
        let stop = Arc::new(AtomicBool::new(false));
        let writers = write_until_stopped(&server, round, Arc::clone(&stop));
        std::thread::sleep(Duration::from_millis(1500));
        let killed = server.signal_and_wait(libc::SIGKILL, EXIT_WITHIN);
        assert!(killed.is_some(), "kill -9 ends the server");
        stop.store(true, Ordering::Relaxed);
        let seen: Vec<HashMap<String, Written>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        let acked = seen
            .iter()
            .flat_map(|s| s.values())
            .filter(|w| w.acked.is_some())
            .count();
        assert!(acked > 100, "round {round}: only {acked} keys acknowledged");
        let server = start_on_data_dir(&dir, SEGMENT_BYTES, &["--fsync", fsync]);
        for (key, written) in seen.iter().flat_map(|s| s.iter()) {
            let value = get(&server, key);
            let ok = value == written.acked || value.is_some() && value == written.in_flight;
            assert!(
                ok,
                "round {round} ({fsync}): {key} reads {value:?}; acknowledged {:?}, in flight {:?}",
                written.acked, written.in_flight
            );
        }
        stop_server_quietly(server);
    }
}

fn stop_server_quietly(server: Server) {
    let _ = server.signal_and_wait(libc::SIGTERM, EXIT_WITHIN);
}

/// Offsets of the records in a segment: (start, end) of each, from its file header on.
fn record_bounds(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut bounds = Vec::new();
    let mut at = 0;
    while at + 16 <= bytes.len() && bytes[at..at + 16].iter().any(|&b| b != 0) {
        let payload = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        bounds.push((at, at + 16 + payload));
        at += 16 + payload;
    }
    bounds
}

/// The first segment of shard 0 in the data dir's only layout of 2 shards.
fn shard0_segment(dir: &Path) -> PathBuf {
    dir.join("layout-1-shards-2/shard-0/log-00000000000000000001.wal")
}

// Goal: a segment cut inside its last records is truncated at the torn record with a warning
// naming FILE:OFFSET and serves exactly the records before it; a flipped bit in the middle of
// a segment stops start-up with exit 1 and `FILE:OFFSET:`. For segments written through
// O_DIRECT (`always`) and through the page cache (`never`) alike.
#[test]
fn a_torn_tail_is_cut_and_a_flipped_bit_stops_start_up() {
    for fsync in ["always", "never"] {
        torn_tail_scenario(fsync);
    }
}

fn torn_tail_scenario(fsync: &str) {
    let dir = fresh_dir("durability-tests", &format!("torn-{fsync}"));
    let keys = keys_on_shard("torn-", 0, 2, 12);
    let server = start_on_data_dir(&dir, SEGMENT_BYTES, &["--fsync", fsync]);
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(put(&server, key, &format!("value-{i}")), 201);
    }
    stop(server);
    let segment = shard0_segment(&dir);
    let original = std::fs::read(&segment).unwrap();
    let bounds = record_bounds(&original);
    assert_eq!(bounds.len(), keys.len() + 1, "a file header and one record per write");
    for (torn, cut_into) in [(12, 5), (11, 20), (10, 1)] {
        let (start_at, _) = bounds[torn];
        std::fs::write(&segment, &original[..start_at + cut_into]).unwrap();
        let server = start_on_data_dir(&dir, SEGMENT_BYTES, &[]);
        let warning = format!("{}:{start_at}: torn last record", segment.display());
        assert!(server.log().contains(&warning), "no `{warning}` in:\n{}", server.log());
        for (i, key) in keys.iter().enumerate() {
            let expected = (i + 1 < torn).then(|| format!("value-{i}"));
            assert_eq!(get(&server, key), expected, "cut in record {torn}: key {i}");
        }
        stop(server);
        assert_eq!(
            std::fs::metadata(&segment).unwrap().len() as usize,
            start_at,
            "truncated at the torn record"
        );
    }
    let mut flipped = original.clone();
    let (start_at, end) = bounds[5];
    flipped[(start_at + end) / 2] ^= 0x40;
    std::fs::write(&segment, &flipped).unwrap();
    let (code, log) = serve_failing(&dir, &[]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(&format!("{}:{start_at}: ", segment.display())), "{log}");
    // The README's way past it: cut the file at the offset named; every record before it is
    // served again.
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(start_at as u64).unwrap();
    drop(file);
    let server = start_on_data_dir(&dir, SEGMENT_BYTES, &[]);
    for (i, key) in keys.iter().enumerate() {
        let expected = (i + 1 < 5).then(|| format!("value-{i}"));
        assert_eq!(get(&server, key), expected, "cut at the damage: key {i}");
    }
    stop(server);
}

// Goal: snapshots taken while writes race them (tiny snapshot threshold), then a kill -9 and a
// restart, give exactly the state the writers acknowledged.
#[test]
fn snapshots_racing_writes_recover_to_the_model() {
    let dir = fresh_dir("durability-tests", "snapshots");
    let flags = [
        "--fsync",
        "never",
        "--snapshot-floor-bytes",
        "0",
        "--snapshot-log-ratio",
        "1",
    ];
    let server = start_on_data_dir(&dir, SEGMENT_BYTES, &flags);
    let writers: Vec<_> = (0..4)
        .map(|thread| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut conn = common::Conn::new(addr);
                let mut model = HashMap::new();
                for i in 0..3000 {
                    let key = format!("s{thread}-{}", i % 97);
                    if i % 7 == 3 {
                        let status = conn.request("DELETE", &format!("/v1/keys/{key}"), &[], b"").status;
                        assert_eq!(status, 200);
                        model.insert(key, None);
                    } else {
                        let value = format!("v{i}-{}", "x".repeat(i % 50));
                        let status = conn
                            .request("PUT", &format!("/v1/keys/{key}"), &[], value.as_bytes())
                            .status;
                        assert!(status < 300, "{status}");
                        model.insert(key, Some(value));
                    }
                }
                model
            })
        })
        .collect();
    let model: HashMap<String, Option<String>> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let stats = server.request("GET", "/v1/stats", b"").json();
    let snapshots: u64 = (0..2)
        .map(|i| stats["shards"][i]["storage"]["snapshots"].as_u64().unwrap())
        .sum();
    assert!(snapshots >= 2, "snapshots ran during the writes: {stats}");
    server.signal_and_wait(libc::SIGKILL, EXIT_WITHIN);
    let server = start_on_data_dir(&dir, SEGMENT_BYTES, &flags);
    assert_model(&server, &model);
    stop(server);
}

// Goal: every key survives shard-count changes 2 -> 3 -> 1 across restarts, deletes stay
// deleted, and the superseded layouts are removed once the new shards have snapshotted.
#[test]
fn shard_count_changes_keep_every_key() {
    let dir = fresh_dir("durability-tests", "reshard");
    let mut model = HashMap::new();
    let server = start_on_data_dir(&dir, SEGMENT_BYTES, &[]);
    for i in 0..200 {
        let (key, value) = (format!("m{i}"), format!("first-{i}"));
        assert_eq!(put(&server, &key, &value), 201);
        model.insert(key, Some(value));
    }
    stop(server);
    for (shards, step) in [("3", "second"), ("1", "third")] {
        let server = start_on_data_dir(&dir, SEGMENT_BYTES, &["--shards", shards]);
        assert_model(&server, &model);
        for i in (0..200).step_by(3) {
            let key = format!("m{i}");
            if i % 2 == 0 {
                let value = format!("{step}-{i}");
                assert!(put(&server, &key, &value) < 300);
                model.insert(key, Some(value));
            } else {
                assert_eq!(server.request("DELETE", &format!("/v1/keys/{key}"), b"").status, 200);
                model.insert(key, None);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let layouts = || {
            std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("layout-"))
                .count()
        };
        while layouts() > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            layouts(),
            1,
            "the superseded layout is removed after {shards} shards snapshotted"
        );
        stop(server);
    }
    let server = start_on_data_dir(&dir, SEGMENT_BYTES, &["--shards", "1"]);
    assert_model(&server, &model);
}

// Goal: a key whose TTL ran out while the server was down stays gone; a live TTL survives
// with about its remaining time.
#[test]
fn ttls_count_down_across_restarts() {
    let dir = fresh_dir("durability-tests", "ttl");
    let server = start_on_data_dir(&dir, SEGMENT_BYTES, &[]);
    assert_eq!(server.request("PUT", "/v1/keys/short?ttl_ms=700", b"s").status, 201);
    assert_eq!(server.request("PUT", "/v1/keys/long?ttl_ms=60000", b"l").status, 201);
    let written = Instant::now();
    stop(server);
    std::thread::sleep(Duration::from_millis(900).saturating_sub(written.elapsed()));
    let server = start_on_data_dir(&dir, SEGMENT_BYTES, &[]);
    assert_eq!(get(&server, "short"), None, "expired while the server was down");
    let response = server.request("GET", "/v1/keys/long", b"");
    assert_eq!(response.status, 200);
    let ttl: u64 = response.header("x-ttl-ms").unwrap().parse().unwrap();
    let elapsed = written.elapsed().as_millis() as u64;
    assert!(
        ttl <= 60_000 - 800 && ttl + elapsed >= 59_000,
        "ttl {ttl} after {elapsed} ms"
    );
}

// Goal: a second server on a data dir in use exits 1 naming the holder's pid; --design locked
// with --data-dir is refused.
#[test]
fn a_locked_data_dir_is_refused_naming_the_pid() {
    let dir = fresh_dir("durability-tests", "lock");
    let server = start_on_data_dir(&dir, SEGMENT_BYTES, &[]);
    let (code, log) = serve_failing(&dir, &[]);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!("data dir in use by process {}", server.pid())),
        "{log}"
    );
    let (code, log) = serve_failing(&fresh_dir("durability-tests", "lock-locked"), &["--design", "locked"]);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("--data-dir is not supported with --design locked"),
        "{log}"
    );
}

// Goal: the storage stats are present (zero without --data-dir) and move with writes.
#[test]
fn storage_stats_are_reported_and_move() {
    let memory = Server::start(&[]);
    let stats = memory.request("GET", "/v1/stats", b"").json();
    assert_eq!(stats["shards"][0]["storage"]["writes"], 0);
    let dir = fresh_dir("durability-tests", "stats");
    let server = start_on_data_dir(&dir, SEGMENT_BYTES, &["--fsync", "always"]);
    for i in 0..50 {
        assert_eq!(put(&server, &format!("st{i}"), "v"), 201);
    }
    let stats = server.request("GET", "/v1/stats", b"").json();
    let sum = |field: &str| {
        (0..2)
            .map(|i| stats["shards"][i]["storage"][field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert!(
        sum("writes") > 0 && sum("fsyncs") > 0 && sum("log_bytes") > 0 && sum("segments") >= 2,
        "{stats}"
    );
    assert!(sum("fsync_us_sum") >= sum("fsync_us_max"), "{stats}");
    let metrics = String::from_utf8(server.request("GET", "/metrics", b"").body).unwrap();
    assert!(metrics.contains("corekv_fsyncs_total{shard=\"0\"}"), "{metrics}");
    stop(server);
    let server = start_on_data_dir(&dir, SEGMENT_BYTES, &[]);
    let stats = server.request("GET", "/v1/stats", b"").json();
    let recovered: u64 = (0..2)
        .map(|i| stats["shards"][i]["storage"]["recovery_records"].as_u64().unwrap())
        .sum();
    assert!(recovered >= 50, "{stats}");
}

// Goal: on a full disk (a small tmpfs; needs root) writes answer 507 with a JSON error and are
// not applied, reads keep working, and writes resume once space is freed; through O_DIRECT
// (`always`) and through the page cache (`everysec`) alike.
#[test]
fn a_full_disk_refuses_writes_without_applying_them() {
    for fsync in ["always", "everysec"] {
        with_small_tmpfs("durability-tests", |dir, filler| full_disk_scenario(dir, filler, fsync));
    }
}

fn full_disk_scenario(dir: &Path, filler: &Path, fsync: &str) {
    let server = start_on_data_dir(dir, SEGMENT_BYTES, &["--fsync", fsync]);
    assert_eq!(put(&server, "kept", "old"), 201);
    let value = "x".repeat(60_000);
    let mut refused = None;
    // Keys on the shard of `kept`: its log is the one that finds the disk full.
    let owner = shard_for(b"kept", 2);
    let fill = (0..)
        .map(|i| format!("fill{i}"))
        .filter(|k| shard_for(k.as_bytes(), 2) == owner);
    for key in fill.take(200) {
        let response = server.request("PUT", &format!("/v1/keys/{key}"), value.as_bytes());
        if response.status == 507 {
            refused = Some(response);
            break;
        }
        assert!(response.status < 300, "{}", response.status);
    }
    let refused = refused.expect("the disk filled up");
    assert!(refused.error().starts_with("disk full: "), "{}", refused.error());
    // As large as the refused write: a smaller one could still fit the current segment.
    let response = server.request("PUT", "/v1/keys/kept", value.as_bytes());
    assert_eq!(response.status, 507, "a write to the full shard is refused");
    assert_eq!(
        get(&server, "kept").as_deref(),
        Some("old"),
        "a refused write is not applied"
    );
    assert_eq!(
        server.request("GET", "/v1/stats", b"").status,
        200,
        "reads keep working"
    );
    std::fs::remove_file(filler).unwrap();
    let response = server.request("PUT", "/v1/keys/kept", value.as_bytes());
    assert_eq!(response.status, 200, "writes resume once space is freed");
    assert_eq!(get(&server, "kept").as_deref(), Some(value.as_str()));
}

// Goal: a key's version (its ETag) survives a restart, from the log and from a snapshot, so an
// If-Match written before the restart still holds after it; later writes get newer versions;
// a transaction is answered with --data-dir (tests/txn_durable.rs checks its writes persist).
#[test]
fn versions_survive_restarts() {
    let dir = fresh_dir("durability-tests", "versions");
    let server = start_on_data_dir(&dir, SEGMENT_BYTES, &[]);
    // Versions consumed by a key rewritten many times: replaying only final states (a
    // snapshot) would hand the other keys different versions if versions were not kept.
    for round in 0..200 {
        assert!(put(&server, "churn", &round.to_string()) < 300);
    }
    for i in 0..50 {
        assert!(put(&server, &format!("k{i}"), "v") < 300);
    }
    assert!(put(&server, "k7", "again") < 300);
    let etag = |server: &Server, key: &str| {
        let response = server.request("GET", &format!("/v1/keys/{key}"), b"");
        assert_eq!(response.status, 200, "{key}");
        response.header("etag").unwrap().to_string()
    };
    let before: Vec<String> = (0..50).map(|i| etag(&server, &format!("k{i}"))).collect();
    let txn = server.request("POST", "/v1/txn", br#"{"compare": [], "success": [], "failure": []}"#);
    assert_eq!(txn.status, 200, "{}", String::from_utf8_lossy(&txn.body));
    stop(server);
    // From the log, then from the snapshots a shard-count change writes (keys change shards).
    for extra in [&[][..], &["--shards", "3"][..]] {
        let server = start_on_data_dir(&dir, SEGMENT_BYTES, extra);
        let after: Vec<String> = (0..50).map(|i| etag(&server, &format!("k{i}"))).collect();
        assert_eq!(before, after, "ETags after a restart ({extra:?})");
        stop(server);
    }
    let server = start_on_data_dir(&dir, SEGMENT_BYTES, &[]);
    let mut conn = server.connect();
    let response = conn.request("PUT", "/v1/keys/k7", &[("If-Match", &before[7])], b"third");
    assert!(
        response.status < 300,
        "If-Match from before the restart: {}",
        response.status
    );
    assert_ne!(
        response.header("etag").unwrap(),
        before[7],
        "a later write gets a new version"
    );
    stop(server);
}

/// `corekv serve` run in `cwd` with a relative `--data-dir data`, ready.
fn start_relative(cwd: &Path) -> Server {
    let mut cmd = Command::new(binary());
    cmd.current_dir(cwd)
        .args(["serve", "--addr", "127.0.0.1:0", "--shards", "2", "--data-dir", "data"]);
    Server::start_command(cmd)
}

// Goal: a relative --data-dir (the README's `--data-dir ./data`) takes writes on every shard
// and keeps them across a restart (glommio opens files relative to no directory, so a relative
// path once failed every write).
#[test]
fn a_relative_data_dir_takes_writes_and_keeps_them() {
    let cwd = fresh_dir("durability-tests", "relative");
    let server = start_relative(&cwd);
    let keys: Vec<String> = (0..20).map(|i| format!("rel-{i}")).collect();
    for key in &keys {
        assert_eq!(put(&server, key, key), 201, "{key}");
    }
    stop(server);
    assert!(
        cwd.join("data").join("LOCK").exists(),
        "the data dir is under the working directory"
    );
    let server = start_relative(&cwd);
    for key in &keys {
        assert_eq!(get(&server, key).as_deref(), Some(key.as_str()), "{key}");
    }
    stop(server);
}
