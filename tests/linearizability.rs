//! The replication tests' pipeline, proven today on what exists: clients record a history
//! against real corekv servers (tests/common/history.rs), through the fault proxy, and the
//! linearizability checker judges it. One server must pass; two unreplicated servers posing as
//! a cluster must fail.

mod common;

use common::Server;
use common::history::{HistoryClient, Recorder};
use common::proxy::Proxy;
use corekv::check::linearizability::{Output, Verdict, check};

/// Client threads, operations each, and keys: small enough that the check is instant, large
/// enough that operations overlap on every key.
const CLIENTS: usize = 4;
const OPERATIONS_PER_CLIENT: usize = 150;
const KEYS: usize = 6;

/// A tiny deterministic generator (splitmix64), one per client.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn one_server_through_a_lossy_proxy_gives_a_linearizable_history() {
    // Goal: concurrent gets, puts and deletes on a few keys, some connections closed mid-request
    // by the proxy (their writes recorded as pending), check as linearizable.
    let server = Server::start(&[]);
    let proxy = Proxy::start_with_seed(server.addr, 13);
    proxy.drop_probability(0.02);
    let recorder = Recorder::new();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let mut history_client = HistoryClient::new(proxy.addr(), &recorder);
            std::thread::spawn(move || {
                let mut rng = 0x11_0000 + client as u64;
                for i in 0..OPERATIONS_PER_CLIENT {
                    let key = format!("lin-{}", next(&mut rng) % KEYS as u64);
                    match next(&mut rng) % 10 {
                        0..=4 => history_client.get(&key),
                        5..=8 => history_client.put(&key, format!("c{client}-{i}").as_bytes()),
                        _ => history_client.delete(&key),
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let history = recorder.history();
    let pending = history
        .iter()
        .filter(|operation| operation.output == Output::Pending)
        .count();
    let reads = history
        .iter()
        .filter(|operation| matches!(operation.output, Output::Value(Some(_))))
        .count();
    assert!(
        proxy.connections_dropped() > 0,
        "the proxy dropped nothing: the lossy path went untested"
    );
    assert!(reads > 50, "only {reads} reads saw a value: the history tests little");
    assert_eq!(
        check(&history),
        Verdict::Linearizable,
        "{} operations, {pending} pending",
        history.len()
    );
}

#[test]
fn two_unreplicated_servers_posing_as_a_cluster_are_caught() {
    // Goal: a write acknowledged by one node and then missed by a read on another (what a
    // broken replication would do) is a violation the pipeline reports, naming the key.
    let (a, b) = (Server::start(&[]), Server::start(&[]));
    let recorder = Recorder::new();
    let mut on_a = HistoryClient::new(a.addr, &recorder);
    let mut on_b = HistoryClient::new(b.addr, &recorder);
    on_a.put("split", b"v1");
    on_a.get("split");
    on_b.get("split");
    let history = recorder.history();
    assert_eq!(
        history.len(),
        3,
        "every operation was answered and recorded: {history:?}"
    );
    match check(&history) {
        Verdict::Violation { key, .. } => assert_eq!(key, b"split"),
        other => panic!("a stale read on the second node passed the check: {other:?}"),
    }
}
