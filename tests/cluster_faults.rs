//! Network faults against a real 3-node cluster (issue #13): every peer link runs through a
//! fault proxy the test controls (tests/common/proxy.rs), and concurrent histories recorded
//! while links are cut, slowed or lossy, and a node is killed, go through the crate's
//! linearizability checker. Also: the data-dir lock in cluster mode.
//!
//! How the proxies sit: a node's `--peers` entry for itself is its real peer address (it
//! listens there, `replication::run`), and its entries for the others are only dialed
//! (`transport::dial_forever`); a listener checks the dialer's node id in the handshake, never
//! its address. So node i's list names, for each other node j, the proxy of the directed link
//! i → j. Shard s dials port + `PEER_PORT_STRIDE_PER_SHARD` × s, so each link is one proxy per
//! shard, bound on the matching ports. Cutting both directions of a node's four links
//! partitions it away.
//!
//! What a 503 write means for the checker: `Group::submit` answers 503 "no quorum" at once when
//! the group's queue is full or raft-rs refused the proposal (no leader known): never proposed,
//! a definite failure; and after `REPLICATION_TIMEOUT_MS` for a proposal handed to raft-rs and
//! not applied here in time, which may still commit (a follower's was forwarded to a leader; a
//! leader's may be in a quorum's logs). The two look the same to a client, so every 5xx write
//! is recorded `Pending` (may or may not have taken effect), which is sound for both; a read
//! that got no 200/404 observed nothing and is left out; a create's 412 is an observation
//! (tests/common/history.rs). A conditional write is decided when its entry is applied, in log
//! order on every replica, so its 412 is linearizable at that point.
//!
//! The cluster tests of this file run one at a time (`serial()`): each starts three servers
//! with two shards and a dozen proxies, and their timing bounds assume a 2-CPU machine is not
//! running three clusters at once.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::history::{HistoryClient, Recorder};
use common::proxy::Proxy;
use common::{Server, key_in, try_request};
use corekv::check::linearizability::{Operation, Output, Verdict, check};
use corekv::limits::{PEER_PORT_STRIDE_PER_SHARD, REPLICATION_TIMEOUT_MS};
use corekv::shard::shard_for;

const SHARDS: usize = 2;
const NODE_IDS: [u64; 3] = [1, 2, 3];
/// How long a group may take to elect a leader (at start, or once its leader is cut off): a
/// few election timeouts (1-2 s each) on a loaded 2-CPU machine.
const ELECTION_WITHIN: Duration = Duration::from_secs(15);
/// How long a node cut off from its quorum may take to answer 503: the replication timeout,
/// plus slack for a loaded machine.
const NO_QUORUM_WITHIN: Duration = Duration::from_millis(REPLICATION_TIMEOUT_MS + 3_000);
/// How long a healed or restarted node may take to hold every acknowledged write.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(15);
/// How long a member that votes may take to remove its abstention markers (an unlink and a
/// directory fsync on the blocking pool).
const MARKERS_REMOVED_WITHIN: Duration = Duration::from_secs(5);
/// History clients: two per node; each stops after this many operations or when told, and
/// waits `PACING` between operations, so the histories span every fault of a test (~12 s)
/// and stay small enough for the checker.
const CLIENTS: usize = 6;
const OPERATIONS_PER_CLIENT_MAX: usize = 800;
const PACING: Duration = Duration::from_millis(20);
/// Keys the histories touch: few, so operations overlap on every key.
const KEYS: u64 = 4;
/// A client whose last operation failed waits this long before the next, so a node that
/// refuses at once (no leader known) adds a bounded number of pending writes to the history.
const FAILURE_BACKOFF: Duration = Duration::from_millis(200);

/// Serializes this file's cluster tests (see the module docs); a failed test's poison is
/// harmless, the guard protects no data.
fn serial() -> MutexGuard<'static, ()> {
    static CLUSTERS: Mutex<()> = Mutex::new(());
    CLUSTERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Listeners on a port P and on P + stride × s for every other shard s, so a whole node's
/// (or link's) shard ports are held together (below the ephemeral range: see `common::ports`).
fn shard_port_listeners() -> Vec<TcpListener> {
    common::ports::reserve(SHARDS as u16)
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The directed peer link `from` → `to`: one proxy per shard port.
struct Link {
    from: u64,
    to: u64,
    proxies: Vec<Proxy>,
}

/// Three members on loopback, every peer link through a proxy; each node keeps its HTTP port
/// across restarts, so clients' addresses stay valid. Kills every node and removes the data
/// dirs when dropped.
struct Cluster {
    /// Node `id` at index `id - 1`; `None` while killed.
    nodes: Vec<Option<Server>>,
    http_ports: Vec<u16>,
    /// Each node's base peer port (shard `s` listens on it + `PEER_PORT_STRIDE_PER_SHARD` × s).
    peer_ports: Vec<u16>,
    /// Listeners holding a node's HTTP and peer ports until it first starts, so no proxy (nor
    /// any connection's ephemeral port) takes one of them meanwhile.
    reserved: Vec<Option<Vec<TcpListener>>>,
    /// Node `id`'s `--peers`: its own real address, the proxies of its outgoing links.
    peers: Vec<String>,
    links: Vec<Link>,
    /// With `--data-dir`: node `id`'s directory at index `id - 1`.
    data_dirs: Option<Vec<PathBuf>>,
    base_dir: Option<PathBuf>,
}

impl Cluster {
    /// Starts the three members, with a data dir each when `durable` (`tag` names it).
    fn start(durable: bool, tag: &str) -> Cluster {
        let mut reserved: Vec<Vec<TcpListener>> = NODE_IDS.iter().map(|_| shard_port_listeners()).collect();
        let node_ports: Vec<u16> = reserved.iter().map(|l| l[0].local_addr().unwrap().port()).collect();
        let mut http_ports = Vec::new();
        for listeners in &mut reserved {
            let http = common::ports::reserve_one();
            http_ports.push(http.local_addr().unwrap().port());
            listeners.push(http);
        }
        let mut links = Vec::new();
        let mut peers = Vec::new();
        for from in NODE_IDS {
            let mut members = Vec::new();
            for to in NODE_IDS {
                let real = node_ports[to as usize - 1];
                if from == to {
                    members.push(format!("{to}=127.0.0.1:{real}"));
                    continue;
                }
                let listeners = shard_port_listeners();
                members.push(format!("{to}={}", listeners[0].local_addr().unwrap()));
                let proxies = listeners
                    .into_iter()
                    .enumerate()
                    .map(|(shard, listener)| {
                        let target = local(real + shard as u16 * PEER_PORT_STRIDE_PER_SHARD);
                        Proxy::start_on(listener, target, from * 100 + to * 10 + shard as u64)
                    })
                    .collect();
                links.push(Link { from, to, proxies });
            }
            peers.push(members.join(","));
        }
        let base_dir =
            durable.then(|| std::env::temp_dir().join(format!("corekv-faults-{}-{tag}", std::process::id())));
        let data_dirs = base_dir
            .as_ref()
            .map(|base| NODE_IDS.iter().map(|id| base.join(format!("node{id}"))).collect());
        let mut cluster = Cluster {
            nodes: NODE_IDS.iter().map(|_| None).collect(),
            http_ports,
            peer_ports: node_ports,
            reserved: reserved.into_iter().map(Some).collect(),
            peers,
            links,
            data_dirs,
            base_dir,
        };
        for id in NODE_IDS {
            cluster.restart(id);
        }
        cluster
    }

    /// Starts node `id` (again) on its HTTP port, peers and data dir.
    fn restart(&mut self, id: u64) {
        let i = id as usize - 1;
        assert!(self.nodes[i].is_none(), "node {id} is already running");
        drop(self.reserved[i].take());
        let mut cmd = Command::new(common::binary());
        cmd.args(["serve", "--addr", &format!("127.0.0.1:{}", self.http_ports[i])]);
        cmd.args(["--shards", &SHARDS.to_string(), "--node-id", &id.to_string()]);
        cmd.args(["--peers", &self.peers[i]]);
        if let Some(dirs) = &self.data_dirs {
            cmd.arg("--data-dir").arg(&dirs[i]);
        }
        self.nodes[i] = Some(Server::start_command(cmd));
    }

    /// SIGKILLs node `id` and waits until nothing listens on its HTTP and peer ports any more.
    /// (A killed process's io_uring is torn down by the kernel after it exits, so its
    /// listening sockets may outlive it briefly; a restart then would share or miss them.)
    fn kill(&mut self, id: u64) {
        const PORT_FREED_WITHIN: Duration = Duration::from_secs(10);
        let i = id as usize - 1;
        drop(self.nodes[i].take().expect("node is running"));
        let deadline = Instant::now() + PORT_FREED_WITHIN;
        // Not a bind probe: the killed server's accepted connections sit in TIME_WAIT on the
        // port, which the server's SO_REUSEPORT bind accepts and a plain bind does not.
        while Instant::now() < deadline {
            let peer_ports = (0..SHARDS as u16).map(|s| self.peer_ports[i] + s * PEER_PORT_STRIDE_PER_SHARD);
            if !std::iter::once(self.http_ports[i])
                .chain(peer_ports)
                .any(common::ports::is_listening)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("node {id}'s port stayed in use {PORT_FREED_WITHIN:?} after it was killed");
    }

    fn node(&self, id: u64) -> &Server {
        self.nodes[id as usize - 1].as_ref().expect("node is running")
    }

    /// Node `id`'s client address (the same across restarts).
    fn addr(&self, id: u64) -> SocketAddr {
        local(self.http_ports[id as usize - 1])
    }

    fn proxies(&self) -> impl Iterator<Item = &Proxy> {
        self.links.iter().flat_map(|link| &link.proxies)
    }

    /// Cuts both directions of every link between node `id` and the others.
    fn isolate(&self, id: u64) {
        let touching = self.links.iter().filter(|link| link.from == id || link.to == id);
        for proxy in touching.flat_map(|link| &link.proxies) {
            proxy.cut();
        }
    }

    fn heal(&self) {
        self.proxies().for_each(Proxy::heal);
    }

    /// `/v1/cluster` of node `id`'s groups, by shard (empty when it does not answer).
    fn groups(&self, id: u64) -> Vec<serde_json::Value> {
        try_request(self.addr(id), "GET", "/v1/cluster", b"")
            .filter(|response| response.status == 200)
            .and_then(|response| response.json()["groups"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Every group's leader as node `id` sees it (0 when none), by shard.
    fn leaders(&self, id: u64) -> Vec<u64> {
        let groups = self.groups(id);
        groups.iter().map(|g| g["leader"].as_u64().unwrap_or(0)).collect()
    }

    /// Waits until every node of `asked` names the same leader for every group, one of
    /// `candidates`, and returns them by shard.
    fn wait_for_leaders(&self, asked: &[u64], candidates: &[u64]) -> Vec<u64> {
        let deadline = Instant::now() + ELECTION_WITHIN;
        loop {
            let seen: Vec<Vec<u64>> = asked.iter().map(|id| self.leaders(*id)).collect();
            let first = &seen[0];
            let agreed = first.len() == SHARDS && seen.iter().all(|s| s == first);
            if agreed && first.iter().all(|leader| candidates.contains(leader)) {
                return first.clone();
            }
            assert!(
                Instant::now() < deadline,
                "nodes {asked:?} agreed on no leaders among {candidates:?} within {ELECTION_WITHIN:?}: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear(); // SIGKILL, before their data dirs go
        if let Some(base) = &self.base_dir {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// Polls until `get` on `addr` answers 200 with `value`, or fails the test past `within`.
fn wait_for_value(addr: SocketAddr, path: &str, value: &[u8], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = try_request(addr, "GET", path, b"");
        if got.as_ref().is_some_and(|r| r.status == 200 && r.body == value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} never answered {path} with {:?} within {within:?}; last: {:?}",
            String::from_utf8_lossy(value),
            got.map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks node `addr` for `method` on `key` and asserts a 503 "no quorum for shard N" within
/// `NO_QUORUM_WITHIN`.
fn assert_no_quorum(addr: SocketAddr, method: &str, key: &str, body: &[u8]) {
    let shard = shard_for(key.as_bytes(), SHARDS);
    let started = Instant::now();
    let got = try_request(addr, method, &format!("/v1/keys/{key}"), body);
    let took = started.elapsed();
    let got = got.unwrap_or_else(|| panic!("{method} {key} on {addr}: no answer within {took:?}"));
    assert!(took < NO_QUORUM_WITHIN, "{method} {key} took {took:?}");
    assert_eq!(
        (got.status, got.error()),
        (503, format!("no quorum for shard {shard}")),
        "{method} {key} on a node without a quorum"
    );
}

// Goal: a leader cut off from both others stops serving (503 "no quorum" within the bound,
// never a stale success) while the majority elects a new leader and takes writes; healed, it
// steps down, catches up, and every acknowledged write is read from all three.
#[test]
fn a_partitioned_leader_refuses_and_the_majority_goes_on() {
    let _serial = serial();
    let cluster = Cluster::start(false, "partition");
    let old = cluster.wait_for_leaders(&NODE_IDS, &NODE_IDS)[0];
    let majority: Vec<u64> = NODE_IDS.into_iter().filter(|id| *id != old).collect();
    let keys: Vec<String> = (0..SHARDS).map(|shard| key_in(shard, SHARDS, "part")).collect();
    for key in &keys {
        let put = cluster.node(old).request("PUT", &format!("/v1/keys/{key}"), b"before");
        assert_eq!(put.status, 201, "{key}");
        for id in NODE_IDS {
            wait_for_value(
                cluster.addr(id),
                &format!("/v1/keys/{key}?consistency=stale"),
                b"before",
                CATCH_UP_WITHIN,
            );
        }
    }
    cluster.isolate(old);
    let cut_at = Instant::now();
    let new = cluster.wait_for_leaders(&majority, &majority);
    assert_ne!(new[0], old);
    assert!(cut_at.elapsed() < ELECTION_WITHIN);
    let mut last = Vec::new();
    for key in &keys {
        let mut value = String::new();
        for id in &majority {
            value = format!("after, via node {id}");
            let put = cluster
                .node(*id)
                .request("PUT", &format!("/v1/keys/{key}"), value.as_bytes());
            let body = String::from_utf8_lossy(&put.body);
            assert!(
                matches!(put.status, 200 | 201),
                "{key} via node {id}: {} {body}",
                put.status
            );
        }
        last.push((key.clone(), value));
    }
    for key in &keys {
        assert_no_quorum(cluster.addr(old), "PUT", key, b"from the minority");
        assert_no_quorum(cluster.addr(old), "GET", key, b"");
        // The replica really is behind: a linearizable read that answered from it would be stale.
        let stale = cluster
            .node(old)
            .request("GET", &format!("/v1/keys/{key}?consistency=stale"), b"");
        assert_eq!((stale.status, &stale.body[..]), (200, &b"before"[..]), "{key}");
    }
    cluster.heal();
    let after_heal = cluster.wait_for_leaders(&NODE_IDS, &NODE_IDS);
    assert_ne!(after_heal[0], old, "the healed old leader took group 0 back");
    for group in cluster.groups(old) {
        assert_ne!(group["role"], "leader", "healed, the old leader still leads: {group}");
    }
    for (key, value) in &last {
        wait_for_value(
            cluster.addr(old),
            &format!("/v1/keys/{key}?consistency=stale"),
            value.as_bytes(),
            CATCH_UP_WITHIN,
        );
        for id in NODE_IDS {
            let got = cluster.node(id).request("GET", &format!("/v1/keys/{key}"), b"");
            assert_eq!(
                (got.status, &got.body[..]),
                (200, value.as_bytes()),
                "{key} on node {id}"
            );
        }
    }
}

impl Cluster {
    /// Cuts the links into node `id` only: it still reaches the others, they never reach it.
    fn cut_into(&self, id: u64) {
        let into = self.links.iter().filter(|link| link.to == id);
        for proxy in into.flat_map(|link| &link.proxies) {
            proxy.cut();
        }
    }

    /// Group `shard`'s (leader, term) as node `id` sees it.
    fn leader_and_term(&self, id: u64, shard: usize) -> (u64, u64) {
        let groups = self.groups(id);
        let group = &groups[shard];
        (group["leader"].as_u64().unwrap(), group["term"].as_u64().unwrap())
    }
}

// Goal: a one-way cut (nobody reaches the leader, it still reaches them) moves leadership to
// the majority once; the cut-off node, campaigning alone, disturbs the majority's leader and
// term neither during the cut (check-quorum's lease) nor when healed (pre-vote: its term did
// not climb), answers 503 within the bound meanwhile, and catches up.
#[test]
fn a_one_way_cut_moves_the_leader_once_and_the_majority_does_not_flap() {
    const STABLE_FOR: Duration = Duration::from_secs(5);
    let _serial = serial();
    let cluster = Cluster::start(false, "oneway");
    let old = cluster.wait_for_leaders(&NODE_IDS, &NODE_IDS)[0];
    let majority: Vec<u64> = NODE_IDS.into_iter().filter(|id| *id != old).collect();
    cluster.cut_into(old);
    cluster.wait_for_leaders(&majority, &majority);
    let settled: Vec<(u64, u64)> = majority.iter().map(|id| cluster.leader_and_term(*id, 0)).collect();
    let key = key_in(0, SHARDS, "oneway");
    let until = Instant::now() + STABLE_FOR;
    let mut value = String::new();
    for i in 0.. {
        if Instant::now() >= until {
            break;
        }
        value = format!("v{i}");
        let via = majority[i % majority.len()];
        let put = cluster
            .node(via)
            .request("PUT", &format!("/v1/keys/{key}"), value.as_bytes());
        assert!(
            matches!(put.status, 200 | 201),
            "PUT {i} via node {via}: {}",
            put.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let later: Vec<(u64, u64)> = majority.iter().map(|id| cluster.leader_and_term(*id, 0)).collect();
    assert_eq!(
        later, settled,
        "the majority's (leader, term) moved during the one-way cut"
    );
    assert_no_quorum(cluster.addr(old), "PUT", &key, b"from the cut-off node");
    cluster.heal();
    cluster.wait_for_leaders(&NODE_IDS, &NODE_IDS);
    let healed: Vec<(u64, u64)> = majority.iter().map(|id| cluster.leader_and_term(*id, 0)).collect();
    assert_eq!(
        healed, settled,
        "the healed node's return moved the majority's (leader, term)"
    );
    let stale = format!("/v1/keys/{key}?consistency=stale");
    wait_for_value(cluster.addr(old), &stale, value.as_bytes(), CATCH_UP_WITHIN);
}

/// A tiny deterministic generator (splitmix64), one per client.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Starts `CLIENTS` history clients, client c on node `c % 3 + 1`, issuing random gets, puts,
/// creates (`If-None-Match: *`) and deletes on `KEYS` keys until `stop` (or
/// `OPERATIONS_PER_CLIENT_MAX`).
fn start_clients(cluster: &Cluster, recorder: &Arc<Recorder>, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    (0..CLIENTS)
        .map(|client| {
            let addr = cluster.addr(NODE_IDS[client % NODE_IDS.len()]);
            let mut history_client = HistoryClient::new(addr, recorder);
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let mut rng = 0x13_0000 + client as u64;
                for i in 0..OPERATIONS_PER_CLIENT_MAX {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("lin-{}", next(&mut rng) % KEYS);
                    let value = format!("c{client}-{i}");
                    match next(&mut rng) % 20 {
                        0..=9 => history_client.get(&key),
                        10..=15 => history_client.put(&key, value.as_bytes()),
                        16..=17 => history_client.create(&key, value.as_bytes()),
                        _ => history_client.delete(&key),
                    }
                    let failed = history_client.last_failed();
                    std::thread::sleep(if failed { FAILURE_BACKOFF } else { PACING });
                }
            })
        })
        .collect()
}

/// Stops the clients and checks their history: linearizable, with at least `acked_min`
/// acknowledged writes and `reads_min` reads that saw a value (so it tested something).
/// Returns the history.
fn stop_and_check(
    clients: Vec<JoinHandle<()>>,
    stop: &AtomicBool,
    recorder: &Recorder,
    acked_min: usize,
    reads_min: usize,
) -> Vec<Operation> {
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let history = recorder.history();
    let count = |want: fn(&Output) -> bool| history.iter().filter(|op| want(&op.output)).count();
    let acked = count(|output| *output == Output::Done);
    let pending = count(|output| *output == Output::Pending);
    let reads = count(|output| matches!(output, Output::Value(Some(_))));
    let refused = count(|output| *output == Output::Refused);
    eprintln!(
        "history: {} operations, {acked} writes acknowledged, {pending} pending, {reads} reads saw a value, \
         {refused} creates refused",
        history.len()
    );
    assert!(
        refused > 0,
        "no create was refused: the conditional write went untested"
    );
    assert!(
        acked >= acked_min,
        "only {acked} writes acknowledged ({pending} pending)"
    );
    assert!(reads >= reads_min, "only {reads} reads saw a value");
    assert_eq!(
        check(&history),
        Verdict::Linearizable,
        "{} operations: {acked} writes acknowledged, {pending} pending, {reads} reads saw a value",
        history.len()
    );
    history
}

// Goal: a concurrent history on a few keys through all three nodes, while a leader is cut off
// and healed and then a node is SIGKILLed and restarted, is linearizable.
#[test]
fn a_history_through_a_partition_and_a_crash_is_linearizable() {
    let _serial = serial();
    let mut cluster = Cluster::start(true, "history");
    let leaders = cluster.wait_for_leaders(&NODE_IDS, &NODE_IDS);
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(&cluster, &recorder, &stop);
    std::thread::sleep(Duration::from_millis(1_500));
    cluster.isolate(leaders[0]);
    std::thread::sleep(Duration::from_secs(4));
    cluster.heal();
    let leaders = cluster.wait_for_leaders(&NODE_IDS, &NODE_IDS);
    std::thread::sleep(Duration::from_millis(1_500));
    let victim = leaders[1];
    cluster.kill(victim);
    std::thread::sleep(Duration::from_millis(1_500));
    cluster.restart(victim);
    let restarted_ns = recorder.now_ns();
    std::thread::sleep(Duration::from_secs(2));
    let history = stop_and_check(clients, &stop, &recorder, 40, 40);
    let pending = history.iter().filter(|op| op.output == Output::Pending).count();
    assert!(pending > 0, "no write was left pending: the faults never met a write");
    let late = history.iter().filter(|op| op.invoked_ns > restarted_ns).count();
    assert!(
        late >= CLIENTS,
        "only {late} operations after the restart: the clients stopped early"
    );
}

// Goal: with every peer link slow (delayed chunks) and lossy (connections dropped mid-stream),
// writes still commit and a concurrent history stays linearizable.
#[test]
fn slow_and_lossy_links_keep_writes_committing_and_linearizable() {
    let _serial = serial();
    let cluster = Cluster::start(false, "lossy");
    cluster.wait_for_leaders(&NODE_IDS, &NODE_IDS);
    for proxy in cluster.proxies() {
        proxy.delay(20);
        proxy.drop_probability(0.01);
    }
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(&cluster, &recorder, &stop);
    std::thread::sleep(Duration::from_secs(6));
    let dropped: u64 = cluster.proxies().map(Proxy::connections_dropped).sum();
    stop_and_check(clients, &stop, &recorder, 40, 40);
    assert!(
        dropped > 0,
        "no peer connection was dropped: the lossy path went untested"
    );
}

// Goal: a replica cut off from its group serves `?consistency=stale` reads from its own, old
// state, and the checker flags the history that contains one: the history tests above would
// fail if linearizable reads were answered that way.
#[test]
fn a_stale_read_from_a_cut_off_replica_is_flagged_by_the_checker() {
    let _serial = serial();
    let cluster = Cluster::start(false, "stale");
    let leader = cluster.wait_for_leaders(&NODE_IDS, &NODE_IDS)[0];
    let follower = NODE_IDS.into_iter().find(|id| *id != leader).unwrap();
    let key = key_in(0, SHARDS, "stale");
    let recorder = Recorder::new();
    let mut on_leader = HistoryClient::new(cluster.addr(leader), &recorder);
    let mut on_follower = HistoryClient::new(cluster.addr(follower), &recorder);
    on_leader.put(&key, b"v1");
    wait_for_value(
        cluster.addr(follower),
        &format!("/v1/keys/{key}?consistency=stale"),
        b"v1",
        CATCH_UP_WITHIN,
    );
    cluster.isolate(follower);
    on_leader.put(&key, b"v2");
    on_follower.get(&key); // linearizable: 503 within the bound, so not recorded
    on_follower.get_stale(&key);
    let history = recorder.history();
    let outputs: Vec<&Output> = history.iter().map(|op| &op.output).collect();
    assert_eq!(
        outputs,
        [&Output::Done, &Output::Done, &Output::Value(Some(b"v1".to_vec()))],
        "both writes acknowledged, the linearizable read refused, the stale read old"
    );
    match check(&history) {
        Verdict::Violation { key: flagged, .. } => assert_eq!(flagged, key.as_bytes()),
        other => panic!("a stale read after an acknowledged write passed the check: {other:?}"),
    }
    let linearizable: Vec<_> = history[..2].to_vec();
    assert_eq!(check(&linearizable), Verdict::Linearizable);
}

/// Runs `corekv serve` with `args` and waits (bounded) for it to exit: its status and stderr,
/// or `None` when it was still running (then it is killed).
fn run_to_exit(args: &[&str], within: Duration) -> Option<(std::process::ExitStatus, String)> {
    let mut child = Command::new(common::binary())
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
            return Some((status, stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

// Goal: in cluster mode a data dir is locked: a second process given the same --data-dir exits
// 1, naming the pid that holds it, before it touches the Raft log.
#[test]
fn a_second_member_process_on_the_same_data_dir_is_refused() {
    let dir = std::env::temp_dir().join(format!("corekv-faults-{}-lock", std::process::id()));
    let peers: Vec<String> = NODE_IDS
        .iter()
        .map(|id| format!("{id}={}", shard_port_listeners()[0].local_addr().unwrap()))
        .collect();
    let peers = peers.join(",");
    let data_dir = dir.display().to_string();
    let member = ["--node-id", "1", "--peers", &peers, "--data-dir", &data_dir];
    let first = Server::start(&member);
    let second: Vec<&str> = ["serve", "--addr", "127.0.0.1:0", "--shards", "2"]
        .into_iter()
        .chain(member)
        .collect();
    let (status, stderr) = run_to_exit(&second, Duration::from_secs(20)).expect("the second process kept running");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let wanted = format!("data dir in use by process {}", first.pid());
    assert!(stderr.contains(&wanted), "no `{wanted}` in:\n{stderr}");
    assert!(Path::new(&dir).join("LOCK").exists());
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Node `id`'s key count in shard `shard` and its expired counter, from `/v1/stats`.
fn shard_keys(cluster: &Cluster, id: u64, shard: usize) -> (u64, u64) {
    let stats = cluster.node(id).request("GET", "/v1/stats", b"").json();
    let shard = &stats["shards"][shard];
    (shard["keys"].as_u64().unwrap(), shard["expired"].as_u64().unwrap())
}

/// Polls until a stale read of `key` on `addr` answers `status`, or fails past `within`.
fn wait_for_status(addr: SocketAddr, key: &str, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = try_request(addr, "GET", &format!("/v1/keys/{key}?consistency=stale"), b"");
        if got.as_ref().is_some_and(|r| r.status == status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr}: {key} never answered {status}: {:?}",
            got.map(|r| r.status)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// TTL of the expiry test's keys, in ms: long enough to reach every node before it runs out.
const TTL_MS: u64 = 1_500;

// Goal: only the leader expires (issue #13). A key with a TTL reads 404 on every node after
// its deadline; a follower cut off from the leader hides it on stale reads but never deletes
// it on its own (its key count stays); healed, it applies the leader's expire entry and the
// key is gone there too, while a key rewritten without TTL after it expired survives.
#[test]
fn only_the_leader_expires_and_a_cut_off_follower_hides_without_deleting() {
    let _serial = serial();
    let cluster = Cluster::start(false, "ttl");
    let leader = cluster.wait_for_leaders(&NODE_IDS, &NODE_IDS)[0];
    let others: Vec<u64> = NODE_IDS.into_iter().filter(|id| *id != leader).collect();
    let (cut, other) = (others[0], others[1]);
    let keys = common::keys_on_shard("ttl", 0, SHARDS, 3);
    let (gone, rewritten, kept) = (&keys[0], &keys[1], &keys[2]);
    for key in [gone, rewritten] {
        let put = cluster
            .node(leader)
            .request("PUT", &format!("/v1/keys/{key}?ttl_ms={TTL_MS}"), b"v");
        assert_eq!(put.status, 201, "{}", put.error());
    }
    let written_at = Instant::now();
    assert_eq!(
        cluster
            .node(leader)
            .request("PUT", &format!("/v1/keys/{kept}"), b"v")
            .status,
        201
    );
    for id in NODE_IDS {
        wait_for_value(
            cluster.addr(id),
            &format!("/v1/keys/{kept}?consistency=stale"),
            b"v",
            CATCH_UP_WITHIN,
        );
    }
    assert!(
        written_at.elapsed() < Duration::from_millis(TTL_MS),
        "too slow to test a TTL"
    );
    for id in NODE_IDS {
        let got = cluster
            .node(id)
            .request("GET", &format!("/v1/keys/{gone}?consistency=stale"), b"");
        assert_eq!(got.status, 200, "node {id} holds {gone} before its deadline");
    }
    cluster.isolate(cut);
    let (keys_before, expired_before) = shard_keys(&cluster, cut, 0);
    assert_eq!(keys_before, 3);
    std::thread::sleep(Duration::from_millis(TTL_MS).saturating_sub(written_at.elapsed()));
    for id in NODE_IDS {
        wait_for_status(cluster.addr(id), gone, 404, CATCH_UP_WITHIN);
    }
    // The majority applied the leader's expire entries; the cut-off follower only hides.
    for id in [leader, other] {
        let deadline = Instant::now() + CATCH_UP_WITHIN;
        while shard_keys(&cluster, id, 0).0 != 1 {
            assert!(
                Instant::now() < deadline,
                "node {id} never expired: {:?}",
                shard_keys(&cluster, id, 0)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let put = cluster
        .node(other)
        .request("PUT", &format!("/v1/keys/{rewritten}"), b"again");
    assert_eq!(put.status, 201, "{}", put.error());
    // Several expiry ticks (EXPIRY_TICK_MS) later the cut-off follower still holds both.
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(
        shard_keys(&cluster, cut, 0),
        (keys_before, expired_before),
        "node {cut} deleted on its own"
    );
    for key in [gone, rewritten] {
        let got = cluster
            .node(cut)
            .request("GET", &format!("/v1/keys/{key}?consistency=stale"), b"");
        assert_eq!(got.status, 404, "node {cut} hides the expired {key}");
    }
    cluster.heal();
    wait_for_value(
        cluster.addr(cut),
        &format!("/v1/keys/{rewritten}?consistency=stale"),
        b"again",
        CATCH_UP_WITHIN,
    );
    let deadline = Instant::now() + CATCH_UP_WITHIN;
    while shard_keys(&cluster, cut, 0).0 != 2 {
        assert!(Instant::now() < deadline, "{:?}", shard_keys(&cluster, cut, 0));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, expired) = shard_keys(&cluster, cut, 0);
    assert_eq!(expired, expired_before + 2, "both went by the leader's expire entries");
    for id in NODE_IDS {
        wait_for_status(cluster.addr(id), gone, 404, CATCH_UP_WITHIN);
        let got = cluster.node(id).request("GET", &format!("/v1/keys/{rewritten}"), b"");
        assert_eq!((got.status, got.body), (200, b"again".to_vec()), "node {id}");
    }
}

/// Node `id`'s proposal count in group `shard`, from `/v1/cluster`.
fn proposals(cluster: &Cluster, id: u64, shard: usize) -> u64 {
    cluster.groups(id)[shard]["proposals"].as_u64().unwrap()
}

/// Peer link delay of the rewrite test, in ms: a write proposed just before the deadline
/// commits (append out, acknowledgement back) well after the leader's next expiry tick.
const SLOW_LINK_MS: u64 = 300;

// Goal: an expire entry is conditional on the version the leader saw. A key rewritten without
// TTL just before its deadline, on slow links, is still at its old version in the leader's
// store when the leader's tick finds it due, so the expire lands after the rewrite in the log:
// applied on every node, it must leave the rewrite alone.
#[test]
fn an_expire_decided_before_a_rewrite_applied_leaves_the_rewrite() {
    let _serial = serial();
    let cluster = Cluster::start(false, "rewrite");
    let leader = cluster.wait_for_leaders(&NODE_IDS, &NODE_IDS)[0];
    let key = &common::keys_on_shard("rewrite", 0, SHARDS, 1)[0];
    let path = format!("/v1/keys/{key}");
    let written_at = Instant::now();
    let put = cluster
        .node(leader)
        .request("PUT", &format!("{path}?ttl_ms={TTL_MS}"), b"v");
    assert_eq!(put.status, 201, "{}", put.error());
    for id in NODE_IDS {
        wait_for_value(
            cluster.addr(id),
            &format!("{path}?consistency=stale"),
            b"v",
            CATCH_UP_WITHIN,
        );
    }
    cluster.proxies().for_each(|proxy| proxy.delay(SLOW_LINK_MS));
    let before = proposals(&cluster, leader, 0);
    let rewrite_at = Duration::from_millis(TTL_MS - 100);
    assert!(written_at.elapsed() < rewrite_at, "too slow to test a TTL");
    std::thread::sleep(rewrite_at - written_at.elapsed());
    let rewrite = cluster.node(leader).request("PUT", &path, b"again");
    let committed_at = written_at.elapsed();
    assert_eq!(rewrite.status, 200, "{}", rewrite.error());
    assert!(
        committed_at > Duration::from_millis(TTL_MS + 200),
        "the rewrite committed at {committed_at:?}, before the leader could decide an expiry"
    );
    cluster.proxies().for_each(|proxy| proxy.delay(0));
    for id in NODE_IDS {
        wait_for_value(
            cluster.addr(id),
            &format!("{path}?consistency=stale"),
            b"again",
            CATCH_UP_WITHIN,
        );
    }
    let deadline = Instant::now() + CATCH_UP_WITHIN;
    while proposals(&cluster, leader, 0) < before + 2 {
        assert!(Instant::now() < deadline, "the leader never proposed the expire");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(proposals(&cluster, leader, 0), before + 2, "the rewrite and one expire");
    std::thread::sleep(Duration::from_millis(500));
    for id in NODE_IDS {
        let got = cluster
            .node(id)
            .request("GET", &format!("{path}?consistency=stale"), b"");
        assert_eq!((got.status, got.body), (200, b"again".to_vec()), "node {id}");
        assert_eq!(shard_keys(&cluster, id, 0), (1, 0), "node {id} expired nothing");
    }
}

impl Cluster {
    /// Waits until every group of node `id` reports `"voting"` equal to `voting`.
    fn wait_for_voting(&self, id: u64, voting: bool, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let groups = self.groups(id);
            if groups.len() == SHARDS && groups.iter().all(|g| g["voting"] == voting) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id}'s groups never reported voting: {voting} within {within:?}: {groups:?}\n{}\nall: {:?}",
                self.node(id).log(),
                NODE_IDS.map(|id| self.groups(id))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Node `id`'s abstention markers, `D/raft/shard-N.abstain`, that exist.
    fn abstention_markers(&self, id: u64) -> Vec<PathBuf> {
        let dir = self.data_dirs.as_ref().expect("a durable cluster")[id as usize - 1].join("raft");
        (0..SHARDS)
            .map(|shard| dir.join(format!("shard-{shard}.abstain")))
            .filter(|marker| marker.exists())
            .collect()
    }

    /// Waits until node `id` has no abstention marker left: a member starts voting in memory
    /// as it catches up, and then removes its markers on the blocking pool, so the files go a
    /// moment after `voting: true` is reported.
    fn wait_for_no_markers(&self, id: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let markers = self.abstention_markers(id);
            if markers.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} votes but kept its abstention markers {markers:?} for {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Cluster {
    /// Heals both directions of the links between nodes `a` and `b` only.
    fn heal_between(&self, a: u64, b: u64) {
        let between = self
            .links
            .iter()
            .filter(|link| (link.from, link.to) == (a, b) || (link.from, link.to) == (b, a));
        between.flat_map(|link| &link.proxies).for_each(Proxy::heal);
    }

    /// Moves leadership until node `id` leads some group, and returns that group's shard: while
    /// it leads none, group 0's leader is cut off until the others elect (bounded rounds).
    fn make_lead(&self, id: u64) -> usize {
        const ROUNDS_MAX: usize = 12;
        for _ in 0..ROUNDS_MAX {
            let leaders = self.wait_for_leaders(&NODE_IDS, &NODE_IDS);
            if let Some(shard) = leaders.iter().position(|leader| *leader == id) {
                return shard;
            }
            let others: Vec<u64> = NODE_IDS.into_iter().filter(|other| *other != leaders[0]).collect();
            self.isolate(leaders[0]);
            self.wait_for_leaders(&others, &others);
            self.heal();
        }
        panic!("node {id} led no group after {ROUNDS_MAX} rounds");
    }

    /// Waits until node `id` leads no group (cut off, it stepped down: check-quorum).
    fn wait_until_leading_nothing(&self, id: u64) {
        let deadline = Instant::now() + ELECTION_WITHIN;
        while self.groups(id).iter().any(|g| g["role"] == "leader") {
            assert!(Instant::now() < deadline, "node {id} never stepped down");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// How a wiped member meets the stale node 3 in [`wiped_member_meets_a_stale_one`].
#[derive(Clone, Copy, PartialEq)]
enum Stale {
    /// Node 3 stepped down: it campaigns, and asks the wiped member for its vote.
    Candidate,
    /// Node 3 was paused (SIGSTOP) while it led a group: it wakes up still leading it, and
    /// sends the wiped member its appends and heartbeats.
    Leader,
}

/// Keys (one per shard, value K) are committed by nodes 1 and 2 while node 3 is cut off; node
/// 2 is wiped and restarted while node 1 is cut off, so only the stale node 3 and the empty
/// node 2 can talk. Asserts that K is never lost: a linearizable GET through either answers
/// 503 or K (never 404), writes answer 503, node 2 never leads; healed, every node reads K and
/// node 2 votes again, its abstention markers removed.
fn wiped_member_meets_a_stale_one(stale: Stale, tag: &str) {
    /// How long the stale and the empty member are left alone: several election timeouts.
    const ALONE_FOR: Duration = Duration::from_secs(10);
    let _serial = serial();
    let mut cluster = Cluster::start(true, tag);
    cluster.wait_for_leaders(&NODE_IDS, &NODE_IDS);
    for id in NODE_IDS {
        // A brand-new cluster: every member started empty, elected, caught up and votes.
        cluster.wait_for_voting(id, true, CATCH_UP_WITHIN);
        cluster.wait_for_no_markers(id, MARKERS_REMOVED_WITHIN);
    }
    let led = (stale == Stale::Leader).then(|| cluster.make_lead(3));
    cluster.isolate(3);
    if led.is_some() {
        cluster.node(3).signal(libc::SIGSTOP);
    }
    cluster.wait_for_leaders(&[1, 2], &[1, 2]);
    let keys: Vec<String> = (0..SHARDS).map(|shard| key_in(shard, SHARDS, "committed")).collect();
    for key in &keys {
        let put = cluster.node(1).request("PUT", &format!("/v1/keys/{key}"), b"K");
        assert_eq!(put.status, 201, "{key}");
    }
    if led.is_none() {
        cluster.wait_until_leading_nothing(3);
        for key in &keys {
            let stale = cluster
                .node(3)
                .request("GET", &format!("/v1/keys/{key}?consistency=stale"), b"");
            assert_eq!(stale.status, 404, "node 3 was cut off: it must lack {key}");
        }
    }
    cluster.kill(2);
    std::fs::remove_dir_all(&cluster.data_dirs.as_ref().unwrap()[1]).unwrap();
    cluster.isolate(1);
    cluster.restart(2);
    cluster.wait_for_voting(2, false, CATCH_UP_WITHIN);
    assert_eq!(
        cluster.abstention_markers(2).len(),
        SHARDS,
        "abstaining is kept on disk"
    );
    cluster.heal_between(2, 3);
    if let Some(shard) = led {
        cluster.node(3).signal(libc::SIGCONT);
        let deadline = Instant::now() + CATCH_UP_WITHIN;
        while cluster.groups(3).get(shard).is_none_or(|g| g["role"] != "leader") {
            assert!(Instant::now() < deadline, "node 3 woke up not leading group {shard}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_alone_keep(&cluster, &keys, Instant::now() + ALONE_FOR);
    if let Some(shard) = led {
        // The path under test: node 2 answered the stale leader all along (so it did not step
        // down), yet helped it commit or confirm nothing.
        assert_eq!(
            cluster.groups(3)[shard]["role"],
            "leader",
            "node 3 stopped leading group {shard}"
        );
    }
    for key in &keys {
        for id in [2, 3] {
            assert_no_quorum(cluster.addr(id), "PUT", key, b"overwrite");
        }
    }
    cluster.wait_for_voting(2, false, CATCH_UP_WITHIN);
    cluster.heal();
    cluster.wait_for_leaders(&NODE_IDS, &NODE_IDS);
    cluster.wait_for_voting(2, true, CATCH_UP_WITHIN);
    cluster.wait_for_no_markers(2, MARKERS_REMOVED_WITHIN);
    for key in &keys {
        for id in NODE_IDS {
            wait_for_value(cluster.addr(id), &format!("/v1/keys/{key}"), b"K", CATCH_UP_WITHIN);
        }
    }
    let metrics = String::from_utf8_lossy(&cluster.node(2).request("GET", "/metrics", b"").body).into_owned();
    assert!(metrics.contains("corekv_raft_voting{shard=\"0\"} 1"), "{metrics}");
    let log = cluster.node(2).log();
    assert!(
        log.contains("does not vote for a candidate with a log"),
        "no abstention warning:\n{log}"
    );
    assert!(log.contains("this member votes again"), "no resumption logged:\n{log}");
}

/// Until `until`, with only nodes 2 and 3 talking: linearizable GETs of `keys` (value K)
/// through both answer 503 or K, never anything else, and node 2 never leads.
fn assert_alone_keep(cluster: &Cluster, keys: &[String], until: Instant) {
    let reads: Vec<(u64, SocketAddr, String)> = [2, 3]
        .into_iter()
        .flat_map(|id| {
            keys.iter()
                .map(|key| (id, cluster.addr(id), key.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    // Each reader: the statuses it got, up to and with the first that is neither 503 nor K.
    type Reader = JoinHandle<(u64, String, Vec<u16>, bool)>;
    let readers: Vec<Reader> = reads
        .into_iter()
        .map(|(id, addr, key)| {
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while Instant::now() < until {
                    let Some(got) = try_request(addr, "GET", &format!("/v1/keys/{key}"), b"") else {
                        continue;
                    };
                    statuses.push(got.status);
                    if got.status != 503 && (got.status, &got.body[..]) != (200, &b"K"[..]) {
                        return (id, key, statuses, false);
                    }
                }
                (id, key, statuses, true)
            })
        })
        .collect();
    let logs = || format!("node 2:\n{}\nnode 3:\n{}", cluster.node(2).log(), cluster.node(3).log());
    while Instant::now() < until {
        let roles: Vec<serde_json::Value> = cluster.groups(2).iter().map(|g| g["role"].clone()).collect();
        assert!(
            roles.iter().all(|role| role != "leader"),
            "the empty member leads: roles {roles:?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut answered = 0;
    for reader in readers {
        let (id, key, statuses, kept) = reader.join().unwrap();
        assert!(
            kept,
            "GET {key} via node {id} answered {statuses:?}: a committed write was lost\n{}",
            logs()
        );
        answered += statuses.len();
    }
    assert!(answered >= 4, "only {answered} linearizable reads answered");
}

// Goal: a wiped member does not vote for a stale candidate: K committed while node 3 was cut
// off is never lost when node 3 (stepped down, campaigning) can reach only the wiped node 2.
#[test]
fn a_wiped_member_does_not_vote_a_stale_candidate_in() {
    wiped_member_meets_a_stale_one(Stale::Candidate, "abstain-vote");
}

// Goal: a wiped member's acknowledgements do not let a stale leader (paused while it led, so
// it never stepped down) commit or serve reads: K committed meanwhile is never lost.
#[test]
fn a_wiped_member_does_not_count_for_a_stale_leader() {
    wiped_member_meets_a_stale_one(Stale::Leader, "abstain-leader");
}
