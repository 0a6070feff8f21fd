//! Transactions (`POST /v1/txn`) and atomic bulk updates (issue #15.2) against the real server
//! with 2 shards, in both designs: etcd-shaped answers, compares on keys of both shards,
//! all-or-nothing under concurrency (a bank whose total never changes, seen whole by every
//! reader), 409/413/400.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Conn, Server, keys_on_both_shards, txn};
use corekv::limits::{TXN_OPS_MAX, TXN_RESULT_VALUE_BYTES_MAX};
use serde_json::{Value, json};

/// Runs each check against `--design sharded` and `--design locked`.
macro_rules! both_designs {
    ($($name:ident),* $(,)?) => {
        mod sharded { $( #[test] fn $name() { super::$name(&["--design", "sharded"]); } )* }
        mod locked { $( #[test] fn $name() { super::$name(&["--design", "locked"]); } )* }
    };
}

both_designs!(
    compares_pick_the_branch_and_results_follow_it,
    bank_transfers_across_shards_keep_the_total,
    atomic_bulk_update_is_all_or_nothing,
    limits_and_malformed_bodies_are_refused,
    a_pipelined_transaction_is_ordered_with_its_neighbours,
    plain_reads_never_see_a_transaction_half_applied,
);

// Goal: the issue's example runs its success branch when every compare holds (across both
// shards) and its failure branch otherwise, with etcd-shaped results.
fn compares_pick_the_branch_and_results_follow_it(design: &[&str]) {
    let server = Server::start(design);
    let mut conn = server.connect();
    let keys = keys_on_both_shards("t", 3);
    let (a, b, c) = (&keys[0], &keys[1], &keys[2]);
    for key in &keys {
        assert_eq!(conn.request("PUT", &format!("/v1/keys/{key}"), &[], b"x").status, 201);
    }
    let b_version = conn
        .request("GET", &format!("/v1/keys/{b}"), &[], b"")
        .header("etag")
        .unwrap()
        .to_string();
    let body = json!({
        "compare": [{"key": a, "exists": true}, {"key": b, "version": b_version}, {"key": c, "value": "x"}],
        "success": [{"op": "set", "key": a, "value": "1"}, {"op": "delete", "key": b}, {"op": "get", "key": c}],
        "failure": [{"op": "get", "key": a}]
    });
    let answer = txn(&mut conn, &body);
    assert_eq!(answer.status, 200);
    let answer = answer.json();
    assert_eq!(answer["succeeded"], true);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(
        (results[0]["key"].as_str(), &results[0]["created"]),
        (Some(a.as_str()), &json!(false))
    );
    assert_eq!(results[1]["deleted"], true);
    assert_eq!(
        (results[2]["value"].as_str(), results[2]["version"].is_string()),
        (Some("x"), true)
    );
    assert_eq!(conn.request("GET", &format!("/v1/keys/{a}"), &[], b"").body, b"1");
    assert_eq!(conn.request("GET", &format!("/v1/keys/{b}"), &[], b"").status, 404);

    // Now b is gone and its version stale: the failure branch runs and nothing is written.
    let again = txn(&mut conn, &body).json();
    assert_eq!(again["succeeded"], false);
    assert_eq!(
        again["results"],
        json!([{"key": a, "value": "1", "version": again["results"][0]["version"]}])
    );
    assert_eq!(conn.request("GET", &format!("/v1/keys/{c}"), &[], b"").body, b"x");
    let missing = txn(&mut conn, &json!({"success": [{"op": "get", "key": b}]})).json();
    assert_eq!(missing["results"], json!([{"key": b, "found": false}]));
    let binary = json!({"success": [{"op": "set", "key": b, "value_base64": "/wA="}, {"op": "get", "key": b}]});
    let binary = txn(&mut conn, &binary).json();
    assert_eq!(
        binary["results"][1]["value_base64"], "/wA=",
        "values that are not UTF-8 come back in base64"
    );
}

// Goal: 32 clients moving money between accounts on both shards with version-compared
// transactions, while readers sum every account in a read-only transaction: every sum is the
// starting total (no reader sees a transfer half applied) and so is the final one.
fn bank_transfers_across_shards_keep_the_total(design: &[&str]) {
    const ACCOUNTS: usize = 8;
    const START: i64 = 100;
    const WRITERS: usize = 32;
    const READERS: usize = 4;
    const TRANSFERS_EACH: usize = 15;
    let server = Server::start(design);
    let accounts = Arc::new(keys_on_both_shards("acct", ACCOUNTS));
    for key in accounts.iter() {
        assert_eq!(
            server
                .request("PUT", &format!("/v1/keys/{key}"), START.to_string().as_bytes())
                .status,
            201
        );
    }
    let total = START * ACCOUNTS as i64;
    let done = Arc::new(AtomicBool::new(false));
    let (addr, retries) = (server.addr, Arc::new(AtomicUsize::new(0)));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (accounts, done) = (Arc::clone(&accounts), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut conn = Conn::new(addr);
                let read_all =
                    json!({"success": accounts.iter().map(|k| json!({"op": "get", "key": k})).collect::<Vec<_>>()});
                let mut sums = 0;
                while !done.load(Ordering::Relaxed) || sums == 0 {
                    let answer = txn(&mut conn, &read_all);
                    if answer.status == 503 {
                        continue;
                    }
                    let results = answer.json()["results"].as_array().unwrap().clone();
                    let sum: i64 = results
                        .iter()
                        .map(|r| r["value"].as_str().unwrap().parse::<i64>().unwrap())
                        .sum();
                    assert_eq!(sum, total, "a reader saw a transfer half applied");
                    sums += 1;
                }
                sums
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (accounts, retries) = (Arc::clone(&accounts), Arc::clone(&retries));
            std::thread::spawn(move || {
                let mut conn = Conn::new(addr);
                for t in 0..TRANSFERS_EACH {
                    let from = &accounts[(w + t) % ACCOUNTS];
                    let to = &accounts[(w + t * 3 + 1) % ACCOUNTS];
                    if from == to {
                        continue;
                    }
                    transfer(&mut conn, from, to, &retries);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let sums: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    let finale: i64 = accounts
        .iter()
        .map(|k| {
            String::from_utf8(server.request("GET", &format!("/v1/keys/{k}"), b"").body)
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(finale, total);
    eprintln!(
        "{sums} whole sums read, {} transfers retried",
        retries.load(Ordering::Relaxed)
    );
}

/// Moves 1 from `from` to `to`: read both with their versions, then write both if neither
/// changed; again from the start when one did.
fn transfer(conn: &mut Conn, from: &str, to: &str, retries: &AtomicUsize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "a transfer never went through");
        let read = txn(
            conn,
            &json!({"success": [{"op": "get", "key": from}, {"op": "get", "key": to}]}),
        );
        if read.status == 503 {
            retries.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let read = read.json();
        let value = |i: usize| read["results"][i]["value"].as_str().unwrap().parse::<i64>().unwrap();
        let version = |i: usize| read["results"][i]["version"].clone();
        let write = json!({
            "compare": [{"key": from, "version": version(0)}, {"key": to, "version": version(1)}],
            "success": [{"op": "set", "key": from, "value": (value(0) - 1).to_string()},
                        {"op": "set", "key": to, "value": (value(1) + 1).to_string()}],
        });
        let answer = txn(conn, &write);
        match answer.status {
            200 if answer.json()["succeeded"] == true => return,
            200 | 503 => {
                retries.fetch_add(1, Ordering::Relaxed);
            }
            other => panic!("transfer answered {other}: {:?}", String::from_utf8_lossy(&answer.body)),
        }
    }
}

// Goal: an atomic bulk update with a missing key is 409 naming it and updates nothing (v1 and
// seed 000's route); with every key present it updates all of them.
fn atomic_bulk_update_is_all_or_nothing(design: &[&str]) {
    let server = Server::start(design);
    let mut conn = server.connect();
    let keys = keys_on_both_shards("bulk", 4);
    for key in &keys[..3] {
        assert_eq!(conn.request("PUT", &format!("/v1/keys/{key}"), &[], b"old").status, 201);
    }
    let items = |keys: &[String]| {
        json!(
            keys.iter()
                .map(|k| json!({"key": k, "value": "new"}))
                .collect::<Vec<_>>()
        )
        .to_string()
    };
    let refused = conn.request("PATCH", "/v1/keys?atomic=true", &[], items(&keys).as_bytes());
    assert_eq!(refused.status, 409);
    assert_eq!(refused.json()["missing"], json!([keys[3]]));
    let seed = conn.request("PATCH", "/updateBulk?atomic=true", &[], items(&keys).as_bytes());
    assert_eq!(seed.status, 409);
    for key in &keys[..3] {
        assert_eq!(
            conn.request("GET", &format!("/v1/keys/{key}"), &[], b"").body,
            b"old",
            "nothing updated"
        );
    }
    let done = conn.request("PATCH", "/v1/keys?atomic=true", &[], items(&keys[..3]).as_bytes());
    assert_eq!(done.status, 200);
    assert_eq!(done.json()["updated"], json!(keys[..3]));
    let seed = conn.request("PATCH", "/updateBulk?atomic=true", &[], items(&keys[..3]).as_bytes());
    assert_eq!((seed.status, seed.json()), (200, json!(keys[..3])));
    for key in &keys[..3] {
        assert_eq!(conn.request("GET", &format!("/v1/keys/{key}"), &[], b"").body, b"new");
    }
    assert_eq!(conn.request("PATCH", "/v1/keys?atomic=maybe", &[], b"[]").status, 400);
}

// Goal: too many operations is 413, malformed JSON 400 (with a JSON error), a GET of /v1/txn
// 405, and the server keeps answering after each.
fn limits_and_malformed_bodies_are_refused(design: &[&str]) {
    let server = Server::start(design);
    let many: Vec<Value> = (0..=TXN_OPS_MAX)
        .map(|i| json!({"op": "get", "key": format!("k{i}")}))
        .collect();
    let mut conn = server.connect();
    let too_many = txn(&mut conn, &json!({ "success": many }));
    assert_eq!(too_many.status, 413);
    assert!(too_many.error().contains("operations"), "{}", too_many.error());
    for bad in [
        &b"{"[..],
        b"[]",
        br#"{"success":[{"op":"set","key":"a"}]}"#,
        br#"{"compare":[{"key":"a","exists":1}]}"#,
    ] {
        let mut conn = server.connect();
        let response = conn.request("POST", "/v1/txn", &[], bad);
        assert_eq!(response.status, 400, "{}", String::from_utf8_lossy(bad));
        assert!(!response.error().is_empty());
    }
    let mut conn = server.connect();
    assert_eq!(conn.request("GET", "/v1/txn", &[], b"").status, 405);
    let bulk: Vec<Value> = (0..=TXN_OPS_MAX / 2)
        .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
        .collect();
    let response = conn.request("PATCH", "/v1/keys?atomic=true", &[], json!(bulk).to_string().as_bytes());
    assert_eq!(response.status, 413);
    assert_eq!(conn.request("GET", "/v1/ping", &[], b"").status, 200);

    // A body over --max-body-bytes is refused before it is read.
    let small = Server::start(&[design, &["--max-body-bytes", "4096"]].concat());
    let padded = json!({"success": [{"op": "set", "key": "k", "value": "x".repeat(5000)}]});
    let mut small_conn = small.connect();
    assert_eq!(txn(&mut small_conn, &padded).status, 413);

    // Ten gets of a 1 MiB value: the answer carries TXN_RESULT_VALUE_BYTES_MAX of values, and
    // the rest answer their version and an error instead.
    let big = vec![b'v'; 1 << 20];
    assert_eq!(conn.request("PUT", "/v1/keys/big", &[], &big).status, 201);
    let gets: Vec<Value> = (0..10).map(|_| json!({"op": "get", "key": "big"})).collect();
    let answer = txn(&mut conn, &json!({ "success": gets }));
    assert_eq!(answer.status, 200);
    let results = answer.json()["results"].as_array().unwrap().clone();
    let returned = results.iter().filter(|r| r["value"].is_string()).count();
    assert_eq!(returned, TXN_RESULT_VALUE_BYTES_MAX >> 20);
    assert!(results[9]["error"].as_str().unwrap().contains("not returned") && results[9]["version"].is_string());
}

// Goal: a transaction pipelined between plain requests sees the writes before it and is seen
// by the reads after it.
fn a_pipelined_transaction_is_ordered_with_its_neighbours(design: &[&str]) {
    let server = Server::start(design);
    let mut conn = server.connect();
    let keys = keys_on_both_shards("p", 2);
    let body =
        json!({"success": [{"op": "get", "key": keys[0]}, {"op": "set", "key": keys[1], "value": "t"}]}).to_string();
    let mut bytes = common::encode_request("PUT", &format!("/v1/keys/{}", keys[0]), &[], b"before");
    bytes.extend(common::encode_request("POST", "/v1/txn", &[], body.as_bytes()));
    bytes.extend(common::encode_request(
        "GET",
        &format!("/v1/keys/{}", keys[1]),
        &[],
        b"",
    ));
    conn.send(&bytes);
    assert_eq!(conn.read().status, 201);
    let answer = conn.read().json();
    assert_eq!(answer["results"][0]["value"], "before");
    assert_eq!(conn.read().body, b"t");
}

// Goal: one writer sets a key on each shard to the same rising number in each transaction;
// readers GET the two keys one after the other with plain requests. A plain read of a key in a
// transaction's commit window waits for it, so the key read second never shows an older
// transaction than the one read first.
fn plain_reads_never_see_a_transaction_half_applied(design: &[&str]) {
    const TRANSACTIONS: u64 = 1_200;
    let server = Server::start(design);
    let keys = Arc::new(keys_on_both_shards("pair", 2));
    for key in keys.iter() {
        assert_eq!(server.request("PUT", &format!("/v1/keys/{key}"), b"0").status, 201);
    }
    let (addr, done) = (server.addr, Arc::new(AtomicBool::new(false)));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (keys, done) = (Arc::clone(&keys), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut conn = Conn::new(addr);
                let (first, second) = if r % 2 == 0 {
                    (&keys[0], &keys[1])
                } else {
                    (&keys[1], &keys[0])
                };
                let mut read = |key: &str| -> u64 {
                    let body = conn.request("GET", &format!("/v1/keys/{key}"), &[], b"").body;
                    String::from_utf8(body).unwrap().parse().unwrap()
                };
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) {
                    let (a, b) = (read(first), read(second));
                    assert!(
                        b >= a,
                        "read {first}={a} then {second}={b}: a transaction seen half applied"
                    );
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let mut conn = server.connect();
    for n in 1..=TRANSACTIONS {
        let value = n.to_string();
        let body = json!({"success": [{"op": "set", "key": keys[0], "value": value}, {"op": "set", "key": keys[1], "value": value}]});
        assert_eq!(txn(&mut conn, &body).status, 200);
    }
    done.store(true, Ordering::Relaxed);
    let reads: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
}
