//! Replication (`--peers`) against real processes: three `corekv serve` members on loopback,
//! two shards each (two Raft groups), killed and restarted with SIGKILL.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, key_in, try_request};
use corekv::limits::REPLICATION_TIMEOUT_MS;

const SHARDS: usize = 2;
/// How long a group may take to elect a leader (after start or after its leader dies): a few
/// election timeouts (1-2 s each) on a loaded 2-CPU machine.
const ELECTION_WITHIN: Duration = Duration::from_secs(15);

/// Peer ports for `count` nodes: each node's base port and its +stride shard port, from
/// below the ephemeral range (see `common::ports`), released for the nodes to bind.
fn free_peer_ports(count: usize) -> Vec<u16> {
    let reserve = || common::ports::reserve(SHARDS as u16);
    (0..count).map(|_| reserve()[0].local_addr().unwrap().port()).collect()
}

/// The `--peers` list for these ports: node `i + 1` at `ports[i]`.
fn peer_list(ports: &[u16]) -> String {
    let members: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{}=127.0.0.1:{port}", i + 1))
        .collect();
    members.join(",")
}

fn start_node(id: usize, peers: &str, extra: &[&str]) -> Server {
    let id = id.to_string();
    let mut flags = vec!["--node-id", &id, "--peers", peers];
    flags.extend_from_slice(extra);
    Server::start(&flags)
}

/// Every group's leader as `node`'s `/v1/cluster` sees it (0 when none), by shard.
fn leaders(node: &Server) -> Vec<u64> {
    let Some(response) = try_request(node.addr, "GET", "/v1/cluster", b"") else {
        return vec![0; SHARDS];
    };
    let cluster = response.json();
    let groups = cluster["groups"].as_array().cloned().unwrap_or_default();
    groups.iter().map(|g| g["leader"].as_u64().unwrap_or(0)).collect()
}

/// Waits until every node agrees on a leader for every group (among `alive` node ids).
fn wait_for_leaders(nodes: &[&Server], alive: &[u64]) -> Vec<u64> {
    let deadline = Instant::now() + ELECTION_WITHIN;
    loop {
        let seen: Vec<Vec<u64>> = nodes.iter().map(|node| leaders(node)).collect();
        let first = &seen[0];
        if first.len() == SHARDS && first.iter().all(|l| alive.contains(l)) && seen.iter().all(|s| s == first) {
            return first.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leaders within {ELECTION_WITHIN:?}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn three_nodes() -> (Vec<Server>, String) {
    let peers = peer_list(&free_peer_ports(3));
    let nodes: Vec<Server> = (1..=3).map(|id| start_node(id, &peers, &[])).collect();
    (nodes, peers)
}

// Goal: a write through any node is read back (linearizably) from every node, a follower
// forwards it and names the group's leader, and /v1/cluster shows leaders, terms and indices.
#[test]
fn writes_through_any_node_are_read_from_every_node() {
    let (nodes, _) = three_nodes();
    let refs: Vec<&Server> = nodes.iter().collect();
    let leaders = wait_for_leaders(&refs, &[1, 2, 3]);
    for (shard, &leader) in leaders.iter().enumerate() {
        for (i, writer) in nodes.iter().enumerate() {
            let key = key_in(shard, SHARDS, &format!("w{i}"));
            let value = format!("value of {key}");
            let put = writer.request("PUT", &format!("/v1/keys/{key}"), value.as_bytes());
            assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
            assert_eq!(
                put.header("x-corekv-leader"),
                Some(leader.to_string().as_str()),
                "node {} wrote shard {shard}'s key",
                i + 1
            );
            for reader in &nodes {
                let got = reader.request("GET", &format!("/v1/keys/{key}"), b"");
                assert_eq!((got.status, got.body), (200, value.clone().into_bytes()));
            }
        }
    }
    let cluster = nodes[0].request("GET", "/v1/cluster", b"").json();
    assert_eq!(cluster["node_id"], 1);
    assert_eq!(cluster["nodes"].as_array().unwrap().len(), 3);
    for group in cluster["groups"].as_array().unwrap() {
        assert!(group["term"].as_u64().unwrap() >= 1, "{group}");
        assert!(group["commit_index"].as_u64().unwrap() >= 4, "{group}");
        assert_eq!(group["applied_index"], group["commit_index"], "{group}");
        if group["role"] == "leader" {
            assert_eq!(group["followers"].as_array().unwrap().len(), 2, "{group}");
        }
    }
    let cli = cluster_status(&nodes[1]);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let status: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(status["node_id"], 2);
    assert_eq!(status["groups"].as_array().unwrap().len(), SHARDS);
    let metrics = nodes[0].request("GET", "/metrics", b"");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("corekv_raft_term{shard=\"0\"}"), "{text}");
    assert!(text.contains("corekv_raft_commits_total"), "{text}");
}

// Goal: killing a group's leader while writers write elects a new leader in bounded time,
// every acknowledged write stays readable from the survivors, and the killed node, restarted
// with an empty log, catches up from the leader.
#[test]
fn a_killed_leader_is_replaced_and_every_acknowledged_write_survives() {
    const WRITERS: usize = 16;
    const WRITING: Duration = Duration::from_secs(3);
    let (mut nodes, peers) = three_nodes();
    let refs: Vec<&Server> = nodes.iter().collect();
    let leader = wait_for_leaders(&refs, &[1, 2, 3])[0] as usize;
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (acked, stop, addrs) = (Arc::clone(&acked), Arc::clone(&stop), addrs.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("k{w}-{i}");
                    let addr = addrs[(w + i) % addrs.len()];
                    i += 1;
                    if let Some(r) = try_request(addr, "PUT", &format!("/v1/keys/{key}"), key.as_bytes())
                        && r.status == 201
                    {
                        acked.lock().unwrap().push(key);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(WRITING / 3);
    drop(nodes.remove(leader - 1)); // SIGKILL
    std::thread::sleep(WRITING * 2 / 3);
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    let survivors: Vec<u64> = [1u64, 2, 3].into_iter().filter(|id| *id != leader as u64).collect();
    let refs: Vec<&Server> = nodes.iter().collect();
    let new_leader = wait_for_leaders(&refs, &survivors)[0];
    assert_ne!(new_leader, leader as u64);
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "only {} writes were acknowledged", acked.len());
    for node in &nodes {
        for key in &acked {
            let got = node.request("GET", &format!("/v1/keys/{key}"), b"");
            assert_eq!((got.status, &got.body[..]), (200, key.as_bytes()), "{key}");
        }
    }
    let restarted = start_node(leader, &peers, &[]);
    let deadline = Instant::now() + ELECTION_WITHIN;
    for key in &acked {
        loop {
            let got = restarted.request("GET", &format!("/v1/keys/{key}?consistency=stale"), b"");
            if got.status == 200 {
                assert_eq!(got.body, key.as_bytes());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the restarted node never caught up with {key}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// Goal: a node whose peers are all gone answers writes and linearizable reads with 503
// "no quorum for shard N" within the bound, never hangs, and still answers stale reads.
#[test]
fn a_node_alone_answers_no_quorum_within_the_bound() {
    let (mut nodes, _) = three_nodes();
    let refs: Vec<&Server> = nodes.iter().collect();
    wait_for_leaders(&refs, &[1, 2, 3]);
    let key = key_in(0, SHARDS, "alone");
    assert_eq!(nodes[0].request("PUT", &format!("/v1/keys/{key}"), b"v").status, 201);
    let alone = nodes.remove(0);
    drop(nodes);
    let bound = Duration::from_millis(REPLICATION_TIMEOUT_MS) + Duration::from_secs(3);
    for (method, body) in [("PUT", &b"w"[..]), ("GET", b"")] {
        let started = Instant::now();
        let got = alone.request(method, &format!("/v1/keys/{key}"), body);
        assert!(started.elapsed() < bound, "{method} took {:?}", started.elapsed());
        assert_eq!(got.status, 503, "{method}");
        assert_eq!(got.error(), "no quorum for shard 0", "{method}");
    }
    let stale = alone.request("GET", &format!("/v1/keys/{key}?consistency=stale"), b"");
    assert_eq!((stale.status, stale.body), (200, b"v".to_vec()));
}

// Goal: a member running another shard count is refused, with a clear error logged on both
// sides, and its peer forms no group with it.
#[test]
fn a_shard_count_mismatch_is_refused_on_both_sides() {
    let peers = peer_list(&free_peer_ports(2));
    let two = start_node(1, &peers, &[]);
    let three = start_node(2, &peers, &["--shards", "3"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = "every node of a cluster must run the same shard count";
    while !(two.log().contains(wanted) && three.log().contains(wanted)) {
        assert!(
            Instant::now() < deadline,
            "no refusal logged\n--- 2 shards:\n{}\n--- 3 shards:\n{}",
            two.log(),
            three.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(leaders(&two), vec![0; SHARDS], "no group forms across the mismatch");
}

// Goal: without --peers nothing changes: writes carry no leader header and /v1/cluster is 404.
#[test]
fn a_node_without_peers_runs_alone() {
    let server = Server::start(&[]);
    let put = server.request("PUT", "/v1/keys/solo", b"v");
    assert_eq!((put.status, put.header("x-corekv-leader")), (201, None));
    assert_eq!(server.request("GET", "/v1/cluster", b"").status, 404);
    let cli = cluster_status(&server);
    assert!(!cli.status.success());
    assert!(
        String::from_utf8_lossy(&cli.stderr).contains("does not run as a cluster"),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
}

/// `corekv cluster status --addr` against `node`.
fn cluster_status(node: &Server) -> std::process::Output {
    std::process::Command::new(common::binary())
        .args(["cluster", "status", "--addr", &node.addr.to_string()])
        .output()
        .unwrap()
}

/// Opens a peer connection to `port` as node `node_id` and reads the listener's verdict:
/// `Some(reason)` (empty when accepted), `None` when it closed without one.
fn peer_handshake(port: u16, node_id: u64) -> (TcpStream, Option<String>) {
    use std::io::Read;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let handshake = corekv::replication::codec::Handshake {
        node_id,
        shard: 0,
        nr_shards: SHARDS as u32,
    };
    let _ = stream.write_all(&handshake.encode());
    let mut len = [0u8; 4];
    if stream.read_exact(&mut len).is_err() {
        return (stream, None);
    }
    let mut reason = vec![0u8; u32::from_le_bytes(len) as usize];
    stream.read_exact(&mut reason).unwrap();
    (stream, Some(String::from_utf8(reason).unwrap()))
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

// Goal: frames that declare huge lengths reserve no memory (the buffer grows only as bytes
// arrive), and one past PEER_FRAME_BYTES_MAX closes its connection.
#[test]
fn peer_frames_reserve_no_memory_from_declared_lengths() {
    use std::io::Read;
    const CONNECTIONS: usize = 8;
    const DECLARED_BYTES: u32 = 60 << 20;
    let ports = free_peer_ports(2);
    let node = start_node(1, &peer_list(&ports), &[]);
    let before = rss_bytes(node.pid());
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let (mut stream, verdict) = peer_handshake(ports[0], 2);
        assert_eq!(verdict.as_deref(), Some(""), "a member's handshake is accepted");
        stream.write_all(&DECLARED_BYTES.to_le_bytes()).unwrap();
        stream.write_all(&[0u8; 16]).unwrap();
        held.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown = rss_bytes(node.pid()).saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "RSS grew by {grown} bytes for {CONNECTIONS} declared frames"
    );
    let (mut stream, _) = peer_handshake(ports[0], 2);
    let past = corekv::limits::PEER_FRAME_BYTES_MAX as u32 + 1;
    stream.write_all(&past.to_le_bytes()).unwrap();
    assert_eq!(
        stream.read(&mut [0u8; 1]).unwrap_or(0),
        0,
        "an oversized frame closes the connection"
    );
    drop(held);
}

// Goal: a shard holds at most PEER_CONNECTIONS_PER_SHARD_MAX peer connections; the next one is
// closed without a verdict, and a non-member's handshake is refused with a reason.
#[test]
fn peer_connections_are_bounded_and_strangers_refused() {
    let ports = free_peer_ports(2);
    let node = start_node(1, &peer_list(&ports), &[]);
    let (_, stranger) = peer_handshake(ports[0], 9);
    assert!(
        stranger.unwrap().contains("not a member"),
        "a stranger is refused with a reason"
    );
    let mut held = Vec::new();
    for _ in 0..corekv::limits::PEER_CONNECTIONS_PER_SHARD_MAX {
        let (stream, verdict) = peer_handshake(ports[0], 2);
        assert_eq!(verdict.as_deref(), Some(""));
        held.push(stream);
    }
    let (_, verdict) = peer_handshake(ports[0], 2);
    assert_eq!(verdict, None, "the connection past the limit is closed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.log().contains("peer connections already open") {
        assert!(Instant::now() < deadline, "the refusal is not logged:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

// Goal: with --data-dir, a whole cluster killed at once (SIGKILL) comes back with every
// acknowledged write: each node's Raft log was on disk before the write was answered.
#[test]
fn a_cluster_killed_whole_comes_back_from_its_raft_logs() {
    let base = std::env::temp_dir().join(format!("corekv-cluster-{}", std::process::id()));
    let dirs: Vec<String> = (1..=3)
        .map(|id| base.join(format!("node{id}")).display().to_string())
        .collect();
    let peers = peer_list(&free_peer_ports(3));
    let start = |id: usize| start_node(id, &peers, &["--data-dir", &dirs[id - 1]]);
    let nodes: Vec<Server> = (1..=3).map(start).collect();
    let refs: Vec<&Server> = nodes.iter().collect();
    wait_for_leaders(&refs, &[1, 2, 3]);
    let keys: Vec<String> = (0..40).map(|i| format!("durable-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let put = nodes[i % 3].request("PUT", &format!("/v1/keys/{key}"), key.as_bytes());
        assert_eq!(put.status, 201, "{key}");
    }
    drop(nodes); // SIGKILL, all three
    let nodes: Vec<Server> = (1..=3).map(start).collect();
    let refs: Vec<&Server> = nodes.iter().collect();
    wait_for_leaders(&refs, &[1, 2, 3]);
    for node in &nodes {
        for key in &keys {
            let got = node.request("GET", &format!("/v1/keys/{key}"), b"");
            assert_eq!((got.status, &got.body[..]), (200, key.as_bytes()), "{key}");
        }
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&base);
}

// ---------------------------------------------------------------------------------------------
// Log compaction and snapshots (InstallSnapshot): a small `--raft-snapshot-entries` makes every
// group snapshot its store and cut its log many times in a few hundred writes.

/// Entries per snapshot in these tests: small, so a few hundred writes compact several times.
const SNAPSHOT_ENTRIES: &str = "40";

/// Each group's `/v1/cluster` entry on `node` (empty when it does not answer).
fn groups(node: &Server) -> Vec<serde_json::Value> {
    try_request(node.addr, "GET", "/v1/cluster", b"")
        .map(|r| r.json()["groups"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

/// Writes every key (value: the key, repeated to `value_bytes`) through the nodes in turn, 4
/// writers at once, retrying 503s (an election) until `ELECTION_WITHIN`; returns the values.
fn put_all(addrs: &[SocketAddr], keys: &[String], value_bytes: usize) -> Vec<(String, Vec<u8>)> {
    let written: Vec<(String, Vec<u8>)> = keys
        .iter()
        .map(|key| {
            (
                key.clone(),
                key.as_bytes().iter().copied().cycle().take(value_bytes).collect(),
            )
        })
        .collect();
    std::thread::scope(|scope| {
        for writer in 0..4 {
            let written = &written;
            scope.spawn(move || {
                for (i, (key, value)) in written.iter().enumerate().skip(writer).step_by(4) {
                    let deadline = Instant::now() + ELECTION_WITHIN;
                    loop {
                        let addr = addrs[i % addrs.len()];
                        let got = try_request(addr, "PUT", &format!("/v1/keys/{key}"), value);
                        if got.as_ref().is_some_and(|r| r.status == 201) {
                            break;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "{key} was never acknowledged: {:?}",
                            got.map(|r| r.status)
                        );
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            });
        }
    });
    written
}

/// Waits until `node` answers every key with its value on a stale (local) read, then checks
/// a linearizable read of each too.
fn assert_holds(node: &Server, written: &[(String, Vec<u8>)]) {
    let deadline = Instant::now() + ELECTION_WITHIN;
    for (key, value) in written {
        loop {
            let got = node.request("GET", &format!("/v1/keys/{key}?consistency=stale"), b"");
            if got.status == 200 && &got.body == value {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node never caught up with {key}: {}",
                got.status
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Linearizable: through the group's leader, which may still be being elected (503).
    for (key, value) in written {
        loop {
            let got = node.request("GET", &format!("/v1/keys/{key}"), b"");
            if got.status == 503 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            assert_eq!(got.status, 200, "{key}: {}", got.error());
            assert!(&got.body == value, "{key}: a value of {} bytes", got.body.len());
            break;
        }
    }
}

// Goal: with --data-dir, every group compacts several times while writes go on, each raft
// log file stays bounded on disk, and a node SIGKILLed and restarted restores its snapshot
// and log tail with every acknowledged write.
#[test]
fn compaction_bounds_the_raft_log_and_a_restart_restores_the_snapshot() {
    const VALUE_BYTES: usize = 1024;
    // 40 entries of ~1 KiB between cuts (plus hard states); without compaction each file
    // would hold ~300 KiB by the end.
    const LOG_FILE_BYTES_MAX: u64 = 160 << 10;
    let base = std::env::temp_dir().join(format!("corekv-raftsnap-a-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let dirs: Vec<std::path::PathBuf> = (1..=3).map(|id| base.join(format!("node{id}"))).collect();
    let peers = peer_list(&free_peer_ports(3));
    let start = |id: usize| {
        let dir = dirs[id - 1].display().to_string();
        start_node(
            id,
            &peers,
            &["--data-dir", &dir, "--raft-snapshot-entries", SNAPSHOT_ENTRIES],
        )
    };
    let mut nodes: Vec<Server> = (1..=3).map(start).collect();
    wait_for_leaders(&nodes.iter().collect::<Vec<_>>(), &[1, 2, 3]);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let logs: Vec<std::path::PathBuf> = dirs
        .iter()
        .flat_map(|dir| (0..SHARDS).map(move |shard| dir.join("raft").join(format!("shard-{shard}.log"))))
        .collect();
    let writing = AtomicBool::new(true);
    // The largest log file seen, sampled every 10 ms while the writes go on.
    let (written, largest) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut largest = (0, String::new());
            while writing.load(Ordering::Relaxed) {
                for log in &logs {
                    let bytes = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
                    if bytes > largest.0 {
                        largest = (bytes, log.display().to_string());
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            largest
        });
        let keys: Vec<String> = (0..600).map(|i| format!("compact-{i}")).collect();
        let written = put_all(&addrs, &keys, VALUE_BYTES);
        writing.store(false, Ordering::Relaxed);
        (written, sampler.join().unwrap())
    });
    assert!(largest.0 > 0, "no raft log was written");
    assert!(
        largest.0 < LOG_FILE_BYTES_MAX,
        "{} reached {} bytes",
        largest.1,
        largest.0
    );
    for node in &nodes {
        for group in groups(node) {
            assert!(group["snapshots_taken"].as_u64().unwrap() >= 3, "{group}");
            assert!(group["snapshot_index"].as_u64().unwrap() > 0, "{group}");
        }
    }
    assert!(dirs[1].join("raft").join("shard-0.snap").exists());
    drop(nodes.remove(1)); // SIGKILL node 2
    let restarted = start(2);
    assert!(
        restarted.log().contains("restored the raft snapshot"),
        "{}",
        restarted.log()
    );
    assert_holds(&restarted, &written);
    drop((nodes, restarted));
    let _ = std::fs::remove_dir_all(&base);
}

// Goal: a node whose data dir is wiped after the leaders compacted their logs rejoins empty,
// is sent each group's snapshot (InstallSnapshot), keeps it on disk (a restart restores it),
// and holds every acknowledged write, read stale from it and linearizably through it.
#[test]
fn a_wiped_node_rejoins_by_snapshot() {
    rejoin_by_snapshot("b", true);
}

// Goal: the same for a node without --data-dir restarted empty (its snapshot in memory only).
#[test]
fn a_node_restarted_empty_rejoins_by_snapshot() {
    rejoin_by_snapshot("c", false);
}

/// Three nodes (with `--data-dir` when `durable`); node 3 is killed, emptied, and written
/// past; restarted, it must be sent a snapshot in each group and then hold every write (and,
/// when durable, hold them again after one more SIGKILL and restart).
fn rejoin_by_snapshot(tag: &str, durable: bool) {
    let base = std::env::temp_dir().join(format!("corekv-raftsnap-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let dirs: Vec<String> = (1..=3)
        .map(|id| base.join(format!("node{id}")).display().to_string())
        .collect();
    let peers = peer_list(&free_peer_ports(3));
    let start = |id: usize| {
        let mut flags = vec!["--raft-snapshot-entries", SNAPSHOT_ENTRIES];
        if durable {
            flags.extend(["--data-dir", &dirs[id - 1]]);
        }
        start_node(id, &peers, &flags)
    };
    let mut nodes: Vec<Server> = (1..=3).map(start).collect();
    wait_for_leaders(&nodes.iter().collect::<Vec<_>>(), &[1, 2, 3]);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let keys: Vec<String> = (0..100).map(|i| format!("before-{i}")).collect();
    let mut written = put_all(&addrs, &keys, 64);
    drop(nodes.remove(2)); // SIGKILL node 3
    let _ = std::fs::remove_dir_all(&dirs[2]);
    let survivors: Vec<&Server> = nodes.iter().collect();
    wait_for_leaders(&survivors, &[1, 2]);
    let keys: Vec<String> = (0..300).map(|i| format!("while-down-{i}")).collect();
    written.extend(put_all(&addrs[..2], &keys, 64));
    for group in groups(&nodes[0]) {
        assert!(
            group["snapshot_index"].as_u64().unwrap() > 1,
            "the log was compacted: {group}"
        );
    }
    let wiped = start(3);
    let deadline = Instant::now() + ELECTION_WITHIN;
    loop {
        let caught_up = groups(&wiped);
        let received = |g: &serde_json::Value| g["snapshots_received"].as_u64().unwrap_or(0) > 0;
        if caught_up.len() == SHARDS && caught_up.iter().all(received) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot received: {caught_up:?}\n{}",
            wiped.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_holds(&wiped, &written);
    let leader_commits: Vec<u64> = groups(&nodes[0])
        .iter()
        .map(|g| g["commit_index"].as_u64().unwrap())
        .collect();
    let deadline = Instant::now() + ELECTION_WITHIN;
    while !groups(&wiped)
        .iter()
        .zip(&leader_commits)
        .all(|(g, commit)| g["applied_index"].as_u64().unwrap() >= *commit)
    {
        assert!(
            Instant::now() < deadline,
            "the wiped node's applied index never caught up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let snap = std::path::Path::new(&dirs[2]).join("raft").join("shard-1.snap");
    assert_eq!(snap.exists(), durable, "{}", snap.display());
    let metrics = String::from_utf8_lossy(&wiped.request("GET", "/metrics", b"").body).into_owned();
    assert!(
        metrics.contains("corekv_raft_snapshots_received_total{shard=\"0\"} "),
        "{metrics}"
    );
    if durable {
        // The snapshot it was sent is on its disk: restarted again, it comes back from it.
        drop(wiped); // SIGKILL
        let again = start(3);
        assert!(again.log().contains("restored the raft snapshot"), "{}", again.log());
        assert_holds(&again, &written);
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&base);
}

/// Waits until every group on `node` satisfies `ok`, failing with `what` and its log.
fn wait_groups(node: &Server, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + ELECTION_WITHIN;
    loop {
        let seen = groups(node);
        if seen.len() == SHARDS && seen.iter().all(&ok) {
            return seen;
        }
        assert!(Instant::now() < deadline, "{what}: {seen:?}\n{}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

// Goal: a follower wiped and left behind the compaction point catches up by a snapshot many
// chunks long (64 KiB chunks, about 3 MiB of data per group), and its store ends up equal to
// the leader's (every key with the leader's value, deleted keys absent, the same key count on
// every node). Before that, started with a `--raft-snapshot-bytes-max` below the snapshot, it
// refuses it (counted, nothing received) while the other two go on writing.
#[test]
fn a_follower_catches_up_by_a_snapshot_of_many_chunks() {
    const CHUNK_BYTES: u64 = 64 << 10;
    let base = std::env::temp_dir().join(format!("corekv-raftsnap-chunks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let dirs: Vec<String> = (1..=3)
        .map(|id| base.join(format!("node{id}")).display().to_string())
        .collect();
    let peers = peer_list(&free_peer_ports(3));
    let chunk = CHUNK_BYTES.to_string();
    let start = |id: usize, extra: &[&str]| {
        let mut flags = vec![
            "--raft-snapshot-entries",
            SNAPSHOT_ENTRIES,
            "--raft-snapshot-chunk-bytes",
            &chunk,
            "--data-dir",
            &dirs[id - 1],
        ];
        flags.extend_from_slice(extra);
        start_node(id, &peers, &flags)
    };
    let mut nodes: Vec<Server> = (1..=3).map(|id| start(id, &[])).collect();
    wait_for_leaders(&nodes.iter().collect::<Vec<_>>(), &[1, 2, 3]);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let big: Vec<String> = (0..96).map(|i| format!("big-{i}")).collect();
    let mut written = put_all(&addrs, &big, 64 << 10);
    // SIGKILL node 3 and wipe it: with its old log it might be caught up by the appends its
    // leader queued for it while it was down, and need no snapshot.
    drop(nodes.remove(2));
    let _ = std::fs::remove_dir_all(&dirs[2]);
    wait_for_leaders(&nodes.iter().collect::<Vec<_>>(), &[1, 2]);
    let deleted: Vec<String> = written.drain(..16).map(|(key, _)| key).collect();
    for key in &deleted {
        let got = nodes[0].request("DELETE", &format!("/v1/keys/{key}"), b"");
        assert!(matches!(got.status, 200 | 204), "{key}: {}", got.error());
    }
    let small: Vec<String> = (0..200).map(|i| format!("small-{i}")).collect();
    written.extend(put_all(&addrs[..2], &small, 16));

    // Refused: the bound is below every group's snapshot (about 2.5 MiB each).
    let refusing = start(3, &["--raft-snapshot-bytes-max", "1MiB"]);
    let refused = wait_groups(&refusing, "no snapshot refused", |g| {
        g["snapshots_refused"].as_u64() > Some(0)
    });
    assert!(refused.iter().all(|g| g["snapshots_received"] == 0), "{refused:?}");
    let more: Vec<String> = (0..20).map(|i| format!("during-refusal-{i}")).collect();
    written.extend(put_all(&addrs[..2], &more, 16));
    drop(refusing);

    let node3 = start(3, &[]);
    let caught_up = wait_groups(&node3, "no snapshot received", |g| {
        g["snapshots_received"].as_u64() > Some(0)
    });
    for group in &caught_up {
        let chunks = group["snapshot_chunks_received"].as_u64().unwrap();
        assert!(chunks >= 20, "the snapshot came in many chunks: {group}");
        assert_eq!(group["snapshots_refused"], 0, "{group}");
    }
    let sent: u64 = nodes
        .iter()
        .flat_map(groups)
        .map(|g| g["snapshots_sent"].as_u64().unwrap())
        .sum();
    assert!(sent >= SHARDS as u64, "each group's leader sent its snapshot: {sent}");
    assert_holds(&node3, &written);
    for key in &deleted {
        let got = node3.request("GET", &format!("/v1/keys/{key}?consistency=stale"), b"");
        assert_eq!(got.status, 404, "{key} was deleted while node 3 was down");
    }
    // Same stores: every node holds as many keys as every other, and no more than written.
    let all = [&nodes[0], &nodes[1], &node3];
    for shard in 0..SHARDS {
        wait_applied_everywhere(&all, shard);
    }
    let key_counts: Vec<u64> = all
        .iter()
        .map(|node| node.request("GET", "/v1/stats", b"").json()["keys"].as_u64().unwrap())
        .collect();
    assert_eq!(key_counts, vec![written.len() as u64; 3]);
    drop((nodes, node3));
    let _ = std::fs::remove_dir_all(&base);
}

// ---------------------------------------------------------------------------------------------
// Eviction decided by the log (issue #13): under `--eviction lru`, reads (never replicated)
// must not change which keys a replica evicts.

/// `--max-keys` for the eviction test: 20 keys for each of the two shards.
const LRU_KEYS_MAX: usize = 40;

/// Waits until every node has applied everything `nodes[0]` has committed in group `shard`
/// (so their stores hold the same entries' effects). One group only: a node restarted empty
/// stays behind in a group nobody writes to (its leader still counts the entries it had
/// matched before the restart) until that group's next entry.
fn wait_applied_everywhere(nodes: &[&Server], shard: usize) {
    let deadline = Instant::now() + ELECTION_WITHIN;
    let index = |node: &Server, field: &str| groups(node).get(shard).and_then(|g| g[field].as_u64());
    loop {
        let commit = index(nodes[0], "commit_index");
        let applied: Vec<Option<u64>> = nodes.iter().map(|node| index(node, "applied_index")).collect();
        if commit.is_some() && applied.iter().all(|applied| *applied >= commit) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {shard}: commit {commit:?}, applied {applied:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The keys of `keys` that `node` holds, by stale (local) reads.
fn held(node: &Server, keys: &[String]) -> Vec<String> {
    keys.iter()
        .filter(|key| {
            let got = node.request("GET", &format!("/v1/keys/{key}?consistency=stale"), b"");
            assert!(matches!(got.status, 200 | 404), "{key}: {}", got.status);
            got.status == 200
        })
        .cloned()
        .collect()
}

/// Writes `keys` one at a time through `writer` and, after each, reads the two oldest keys
/// still held (the next LRU victims) through `reader` with `?consistency=stale`: on a replica
/// whose reads reordered its LRU list, that would save them from eviction there only.
fn write_while_reading_old_keys(writer: &Server, reader: &Server, keys: &[String], from: usize) {
    let per_shard = LRU_KEYS_MAX / SHARDS;
    for i in from..keys.len() {
        let put = writer.request("PUT", &format!("/v1/keys/{}", keys[i]), b"v");
        assert_eq!(put.status, 201, "{}: {}", keys[i], put.error());
        let oldest = &keys[(i + 1).saturating_sub(per_shard)..(i + 3).saturating_sub(per_shard)];
        for old in oldest {
            let got = reader.request("GET", &format!("/v1/keys/{old}?consistency=stale"), b"");
            assert!(matches!(got.status, 200 | 404), "{}", got.status);
        }
    }
}

// Goal: under `--eviction lru --max-keys`, writes past the budget while one follower serves
// stale reads of the oldest keys leave every node with exactly the same keys, including a node
// restarted empty and caught up by snapshot (which must carry the leader's LRU order).
#[test]
fn lru_eviction_evicts_the_same_keys_on_every_replica() {
    let peers = peer_list(&free_peer_ports(3));
    let max_keys = LRU_KEYS_MAX.to_string();
    let flags = [
        "--max-keys",
        &max_keys,
        "--eviction",
        "lru",
        "--raft-snapshot-entries",
        SNAPSHOT_ENTRIES,
    ];
    let mut nodes: Vec<Server> = (1..=3).map(|id| start_node(id, &peers, &flags)).collect();
    let leader = wait_for_leaders(&nodes.iter().collect::<Vec<_>>(), &[1, 2, 3])[0] as usize;
    // Node ids are 1-based; `reader` perturbs its LRU order, `restarted` rejoins by snapshot.
    let followers: Vec<usize> = (1..=3).filter(|id| *id != leader).collect();
    let (reader, restarted) = (followers[0], followers[1]);
    let keys = common::keys_on_shard("lru", 0, SHARDS, 150);
    write_while_reading_old_keys(&nodes[leader - 1], &nodes[reader - 1], &keys[..50], 0);
    drop(nodes.remove(restarted - 1)); // SIGKILL: it rejoins empty
    let index = |id: usize| if id > restarted { id - 2 } else { id - 1 };
    write_while_reading_old_keys(&nodes[index(leader)], &nodes[index(reader)], &keys[..120], 50);
    nodes.insert(restarted - 1, start_node(restarted, &peers, &flags));
    write_while_reading_old_keys(&nodes[leader - 1], &nodes[reader - 1], &keys, 120);
    let refs: Vec<&Server> = nodes.iter().collect();
    wait_applied_everywhere(&refs, 0);
    let received = groups(&nodes[restarted - 1])[0]["snapshots_received"].as_u64();
    assert!(
        received > Some(0),
        "node {restarted} rejoined by snapshot: {received:?}"
    );
    let on_leader = held(&nodes[leader - 1], &keys);
    assert_eq!(on_leader.len(), LRU_KEYS_MAX / SHARDS, "{on_leader:?}");
    for id in [reader, restarted] {
        assert_eq!(
            held(&nodes[id - 1], &keys),
            on_leader,
            "node {id} against leader {leader}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A hostile peer on the peer port: snapshot transfers that are oversize, out of order,
// interleaved, never begun or inline are refused or ignored, and hold no memory.

/// An accepted peer connection to shard 0 at `port`, as node `node_id`.
fn peer_connection(port: u16, node_id: u64) -> TcpStream {
    let (stream, verdict) = peer_handshake(port, node_id);
    assert_eq!(verdict.as_deref(), Some(""), "a member's handshake is accepted");
    stream
}

/// Whether the node closes `stream` (EOF or reset) within `within` of what was sent.
fn closed_by_node(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match std::io::Read::read(stream, &mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

/// A `MsgSnapshot` from node 2 to node 1 (its data left out) and its data: one key.
fn hostile_snapshot() -> (Vec<u8>, Vec<u8>) {
    use corekv::replication::snapshot::Encoder;
    use protobuf::Message as _;
    use raft::eraftpb::{Message, MessageType};
    let mut encoder = Encoder::new(10);
    encoder.add(b"from-the-transfer", &[b'v'; 3000], None, 3);
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgSnapshot);
    (message.from, message.to, message.term) = (2, 1, 1);
    let meta = message.mut_snapshot().mut_metadata();
    (meta.index, meta.term) = (5, 1);
    meta.mut_conf_state().voters = vec![1, 2];
    (message.write_to_bytes().unwrap(), encoder.finish())
}

/// Node 1's group-0 counter `field` in `/v1/cluster`.
fn group0(node: &Server, field: &str) -> u64 {
    groups(node)[0][field].as_u64().unwrap()
}

// Goal: a peer claiming to be member 2 cannot make node 1 hold memory or fall over with
// snapshot frames: a begin past --raft-snapshot-bytes-max, a chunk out of order and a
// MsgSnapshot inline in a raft frame close the connection (the first two counted as refused);
// 64 MiB of chunks of a transfer never begun are ignored (resident memory does not grow with
// them); a transfer interleaved with a second one is discarded, and the second, whole, is
// installed (its key readable), so the reassembly works end to end in the real binary.
#[test]
fn a_hostile_peer_cannot_abuse_snapshot_transfers() {
    use corekv::replication::codec::{self, SnapshotBegin, SnapshotChunk};
    let ports = free_peer_ports(2);
    let node = start_node(1, &peer_list(&ports), &["--raft-snapshot-bytes-max", "1MiB"]);
    let (message, data) = hostile_snapshot();
    let crc = crc32c::crc32c(&data);
    let begin = |transfer: u64, data_bytes: u64| {
        codec::snapshot_begin_frame(&SnapshotBegin {
            transfer,
            data_bytes,
            data_crc: crc,
            message: &message,
        })
    };
    let chunk = |transfer: u64, offset: usize, bytes: &[u8]| {
        codec::snapshot_chunk_frame(&SnapshotChunk {
            transfer,
            offset: offset as u64,
            bytes,
        })
    };

    let mut oversize = peer_connection(ports[0], 2);
    oversize.write_all(&begin(1, (1 << 20) + 1)).unwrap();
    assert!(
        closed_by_node(&mut oversize, ELECTION_WITHIN),
        "a begin past the bound closes"
    );
    let mut out_of_order = peer_connection(ports[0], 2);
    out_of_order.write_all(&begin(2, data.len() as u64)).unwrap();
    out_of_order.write_all(&chunk(2, 1, &data[1..100])).unwrap();
    assert!(
        closed_by_node(&mut out_of_order, ELECTION_WITHIN),
        "a chunk out of order closes"
    );
    assert_eq!(group0(&node, "snapshots_refused"), 2);
    let mut inline = peer_connection(ports[0], 2);
    inline.write_all(&codec::raft_frame(&message)).unwrap();
    assert!(
        closed_by_node(&mut inline, ELECTION_WITHIN),
        "a MsgSnapshot in a raft frame closes"
    );

    let mut endless = peer_connection(ports[0], 2);
    let megabyte = vec![7u8; 1 << 20];
    let before = rss_bytes(node.pid());
    for i in 0..64 {
        endless.write_all(&chunk(99, i << 20, &megabyte)).unwrap();
    }
    let deadline = Instant::now() + ELECTION_WITHIN;
    while group0(&node, "snapshot_chunks_received") < 65 {
        assert!(Instant::now() < deadline, "the chunks never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    let grown = rss_bytes(node.pid()).saturating_sub(before);
    assert!(grown < 16 << 20, "ignored chunks held {grown} bytes");
    assert!(
        !closed_by_node(&mut endless, Duration::from_millis(500)),
        "ignored chunks keep the connection"
    );

    let mut interleaved = peer_connection(ports[0], 2);
    let half = data.len() / 2;
    interleaved.write_all(&begin(3, data.len() as u64)).unwrap();
    interleaved.write_all(&chunk(3, 0, &data[..half])).unwrap();
    interleaved.write_all(&begin(4, data.len() as u64)).unwrap();
    interleaved.write_all(&chunk(3, half, &data[half..])).unwrap();
    interleaved.write_all(&chunk(4, 0, &data[..half])).unwrap();
    interleaved.write_all(&chunk(4, half, &data[half..])).unwrap();
    let deadline = Instant::now() + ELECTION_WITHIN;
    loop {
        let got = node.request("GET", "/v1/keys/from-the-transfer?consistency=stale", b"");
        if got.status == 200 {
            assert_eq!(got.body, vec![b'v'; 3000]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second transfer was never installed: {}",
            got.status
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(group0(&node, "snapshots_received"), 1);
    assert_eq!(
        group0(&node, "snapshots_refused"),
        2,
        "the discarded transfer is not a refusal"
    );
}

// Goal: while a member builds a snapshot (node 1 only, slowed to ~2.4 s, longer than an
// election timeout, through the hidden per-chunk delay; the others build theirs at once), its
// driver goes on ticking and replicating with its applies deferred, then applies them in
// order: where node 1 leads, its followers see heartbeats throughout and call no election
// (leaders and terms stay; the driver paused instead would cost one); where it follows, it
// ends up holding every write the others acknowledged meanwhile.
#[test]
fn a_group_keeps_its_leader_while_it_builds_a_snapshot() {
    let dir = std::env::temp_dir().join(format!("corekv-slow-snapshot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let load = dir.join("keys.txt");
    // 6,400 keys: ~3,200 per shard, four chunks of STORAGE_SNAPSHOT_CHUNK_KEYS (1,024), so
    // three delays of 800 ms per build.
    let lines: String = (0..6400).map(|i| format!("loaded-{i} value-{i}\n")).collect();
    std::fs::write(&load, lines).unwrap();
    let load = load.display().to_string();
    let peers = peer_list(&free_peer_ports(3));
    let flags = ["--raft-snapshot-entries", "200", "--load", &load];
    let slow = [&flags[..], &["--raft-snapshot-build-delay-ms", "800"]].concat();
    let nodes: Vec<Server> = (1..=3)
        .map(|id| start_node(id, &peers, if id == 1 { &slow } else { &flags }))
        .collect();
    let all: Vec<&Server> = nodes.iter().collect();
    let leaders_before = wait_for_leaders(&all, &[1, 2, 3]);
    let terms = |node: &Server| -> Vec<u64> { groups(node).iter().map(|g| g["term"].as_u64().unwrap()).collect() };
    let terms_before = terms(&nodes[0]);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let keys: Vec<String> = (0..1200).map(|i| format!("during-{i}")).collect();
    let written = put_all(&addrs, &keys, 32);
    // Every member builds its own snapshot of each group once 200 entries applied.
    for node in &nodes {
        wait_groups(node, "no snapshot taken", |g| g["snapshots_taken"].as_u64() > Some(0));
    }
    for node in &nodes {
        assert_eq!(terms(node), terms_before, "a term changed: an election during a build");
        assert_eq!(leaders(node), leaders_before, "a leader changed during a build");
    }
    for node in &nodes {
        assert_holds(node, &written);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
