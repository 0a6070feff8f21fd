//! Capacity limits (reject and LRU), TTLs with active expiry, and the stats/metrics endpoints,
//! against the real server.

mod common;

use common::{Server, encode_request};
use std::time::{Duration, Instant};

fn put(server: &Server, key: &str, value: &[u8]) -> common::Response {
    server.request("PUT", &format!("/v1/keys/{key}"), value)
}

fn stats(server: &Server) -> serde_json::Value {
    let response = server.request("GET", "/v1/stats", b"");
    assert_eq!(response.status, 200);
    response.json()
}

fn total(stats: &serde_json::Value, field: &str) -> u64 {
    stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[field].as_u64().unwrap())
        .sum()
}

// Goal: in reject mode a new key past --max-keys gets 507 naming the limit, while replacing,
// updating, reading and deleting still work (one shard: the exact boundary).
#[test]
fn reject_mode_refuses_the_key_past_the_limit() {
    let server = Server::start(&["--shards", "1", "--max-keys", "3"]);
    for key in ["a", "b", "c"] {
        assert_eq!(put(&server, key, b"v").status, 201);
    }
    let refused = put(&server, "d", b"v");
    assert_eq!(refused.status, 507);
    assert!(refused.error().contains("--max-keys (3 keys)"), "{}", refused.error());
    assert_eq!(
        server.request("GET", "/v1/keys/d", b"").status,
        404,
        "nothing was stored"
    );
    assert_eq!(put(&server, "a", b"replaced").status, 200);
    assert_eq!(server.request("PATCH", "/v1/keys/b", b"updated").status, 200);
    assert_eq!(server.request("GET", "/v1/keys/a", b"").body, b"replaced");
    server.request("DELETE", "/v1/keys/c", b"");
    assert_eq!(put(&server, "d", b"v").status, 201, "room again after a delete");
}

// Goal: with several shards each enforces its share; the total is never exceeded, and it is
// reached no earlier than the fullest shard's share allows.
#[test]
fn reject_mode_with_several_shards_never_exceeds_the_total() {
    let server = Server::start(&["--shards", "3", "--max-keys", "30"]);
    let mut created = 0;
    let mut refused = 0;
    for i in 0..200 {
        match put(&server, &format!("key-{i}"), b"v").status {
            201 => created += 1,
            507 => refused += 1,
            other => panic!("status {other}"),
        }
    }
    assert_eq!(created, 30, "every shard filled its share of 10");
    assert_eq!(refused, 170);
    assert_eq!(stats(&server)["keys"].as_u64(), Some(30));
}

// Goal: --max-memory in reject mode refuses new keys once the accounted bytes would pass it.
#[test]
fn reject_mode_counts_memory() {
    let server = Server::start(&["--shards", "2", "--max-memory", "64KiB"]);
    let value = vec![b'm'; 1000];
    let mut first_refusal = None;
    for i in 0..200 {
        let response = put(&server, &format!("m{i}"), &value);
        if response.status == 507 {
            assert!(response.error().contains("--max-memory"), "{}", response.error());
            first_refusal.get_or_insert(i);
        }
    }
    let first = first_refusal.expect("the memory limit was never reached");
    assert!((40..=64).contains(&first), "refused from key {first}");
    let memory = stats(&server)["memory_bytes"].as_u64().unwrap();
    assert!(memory <= 64 * 1024, "{memory}");
}

// Goal: LRU mode evicts the least recently used key (a read counts as use) and keeps writing.
#[test]
fn lru_mode_evicts_the_least_recently_used() {
    let server = Server::start(&["--shards", "1", "--max-keys", "3", "--eviction", "lru"]);
    for key in ["a", "b", "c"] {
        assert_eq!(put(&server, key, b"v").status, 201);
    }
    assert_eq!(server.request("GET", "/v1/keys/a", b"").status, 200);
    assert_eq!(put(&server, "d", b"v").status, 201);
    assert_eq!(
        server.request("GET", "/v1/keys/b", b"").status,
        404,
        "b was least recently used"
    );
    for key in ["a", "c", "d"] {
        assert_eq!(
            server.request("GET", &format!("/v1/keys/{key}"), b"").status,
            200,
            "{key}"
        );
    }
    let stats = stats(&server);
    assert_eq!((stats["keys"].as_u64(), total(&stats, "evictions")), (Some(3), 1));
}

// Goal: LRU with several shards and a memory budget stays within budget under a stream of writes.
#[test]
fn lru_mode_with_several_shards_stays_within_budget() {
    let server = Server::start(&["--shards", "2", "--max-memory", "256KiB", "--eviction", "lru"]);
    let mut conn = server.connect();
    let value = vec![b'x'; 2000];
    let mut batch = Vec::new();
    for i in 0..1000 {
        batch.extend(encode_request("PUT", &format!("/v1/keys/lru-{i}"), &[], &value));
    }
    conn.send(&batch);
    for _ in 0..1000 {
        assert_eq!(conn.read().status, 201);
    }
    let stats = stats(&server);
    assert!(stats["memory_bytes"].as_u64().unwrap() <= 256 * 1024);
    assert!(total(&stats, "evictions") >= 800, "{stats}");
    assert_eq!(
        server.request("GET", "/v1/keys/lru-999", b"").body,
        value,
        "the newest key survives"
    );
}

// Goal: a TTL is reported in X-TTL-Ms, expired keys are never returned, a plain PUT clears the
// TTL and PATCH keeps it; a bad ttl_ms is 400.
#[test]
fn ttl_is_reported_enforced_cleared_and_kept() {
    let server = Server::start(&[]);
    assert_eq!(server.request("PUT", "/v1/keys/t?ttl_ms=400", b"v").status, 201);
    let got = server.request("GET", "/v1/keys/t", b"");
    let ttl: u64 = got.header("x-ttl-ms").expect("X-TTL-Ms").parse().unwrap();
    assert!(ttl <= 400 && ttl > 0, "{ttl}");
    assert_eq!(server.request("PUT", "/v1/keys/kept?ttl_ms=60000", b"v").status, 201);
    assert_eq!(server.request("PATCH", "/v1/keys/kept", b"w").status, 200);
    assert!(
        server.request("GET", "/v1/keys/kept", b"").header("x-ttl-ms").is_some(),
        "PATCH keeps the TTL"
    );
    assert_eq!(server.request("PUT", "/v1/keys/kept", b"x").status, 200);
    assert!(
        server.request("GET", "/v1/keys/kept", b"").header("x-ttl-ms").is_none(),
        "PUT clears the TTL"
    );
    let json = [("Content-Type", "application/json")];
    let post = server
        .connect()
        .request("POST", "/v1/keys/p?ttl_ms=400", &json, br#"{"value":"aGk="}"#);
    assert_eq!(post.status, 201);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        server.request("GET", "/v1/keys/t", b"").status,
        404,
        "expired keys are never returned"
    );
    assert_eq!(server.request("GET", "/v1/keys/p", b"").status, 404);
    assert_eq!(
        server.request("PATCH", "/v1/keys/t", b"v").status,
        404,
        "expired keys cannot be updated"
    );
    for bad in ["0", "-1", "abc", "1.5", ""] {
        let response = server.request("PUT", &format!("/v1/keys/bad?ttl_ms={bad}"), b"v");
        assert_eq!(response.status, 400, "ttl_ms={bad}");
        assert!(response.error().contains("ttl_ms"));
    }
}

// Goal: expired keys are reclaimed by each shard without any reads: key counts and memory fall.
#[test]
fn expiry_is_active_and_seen_in_the_stats() {
    let server = Server::start(&[]);
    let mut conn = server.connect();
    let mut batch = Vec::new();
    for i in 0..500 {
        batch.extend(encode_request(
            "PUT",
            // Long enough that none expires before the count below on a loaded machine.
            &format!("/v1/keys/e{i}?ttl_ms=2000"),
            &[],
            b"short-lived",
        ));
    }
    batch.extend(encode_request("PUT", "/v1/keys/forever", &[], b"v"));
    conn.send(&batch);
    for _ in 0..501 {
        assert_eq!(conn.read().status, 201);
    }
    let before = stats(&server);
    assert_eq!(before["keys"].as_u64(), Some(501));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = stats(&server);
        if now["keys"].as_u64() == Some(1) {
            assert_eq!(total(&now, "expired"), 500);
            assert_eq!(total(&now, "hits") + total(&now, "misses"), 0, "no reads were made");
            assert!(now["memory_bytes"].as_u64() < before["memory_bytes"].as_u64());
            break;
        }
        assert!(Instant::now() < deadline, "keys were not reclaimed: {now}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// Goal: /v1/stats has totals and per-shard numbers that follow the traffic.
#[test]
fn stats_report_every_shard() {
    let server = Server::start(&["--shards", "3"]);
    for i in 0..30 {
        put(&server, &format!("s{i}"), b"v");
    }
    for i in 0..40 {
        server.request("GET", &format!("/v1/keys/s{i}"), b"");
    }
    let stats = stats(&server);
    assert_eq!(stats["keys"].as_u64(), Some(30));
    let shards = stats["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    for (id, shard) in shards.iter().enumerate() {
        assert_eq!(shard["id"].as_u64(), Some(id as u64));
        for field in [
            "cpu",
            "keys",
            "memory_bytes",
            "hits",
            "misses",
            "evictions",
            "expired",
            "messages_sent",
        ] {
            assert!(shard[field].is_u64(), "shard {id} lacks {field}");
        }
        assert!(shard["requests"]["2xx"].is_u64() && shard["requests"]["4xx"].is_u64());
        assert!(shard["connections"].is_u64() && shard["messages_received"].is_u64());
    }
    assert_eq!((total(&stats, "hits"), total(&stats, "misses")), (30, 10));
    assert!(
        total(&stats, "messages_sent") > 0,
        "with 3 shards some requests crossed shards"
    );
    assert_eq!(total(&stats, "messages_sent"), total(&stats, "messages_received"));
    let responses: u64 = shards.iter().map(|s| s["requests"]["2xx"].as_u64().unwrap()).sum();
    assert!(responses >= 60, "{responses}");
}

// Goal: /metrics is valid Prometheus text: HELP and TYPE for each family, a shard label on
// every sample, numeric values, and numbers that agree with /v1/stats.
#[test]
fn metrics_parse_as_prometheus_text() {
    let server = Server::start(&[]);
    put(&server, "m", b"v");
    server.request("GET", "/v1/keys/m", b"");
    let response = server.request("GET", "/metrics", b"");
    assert_eq!(response.status, 200);
    assert!(response.header("content-type").unwrap().starts_with("text/plain"));
    let text = String::from_utf8(response.body).unwrap();
    let mut families = std::collections::HashMap::new();
    let mut keys_total = 0.0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            families
                .entry(rest.split(' ').next().unwrap().to_string())
                .or_insert((false, false))
                .0 = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap().to_string();
            assert!(matches!(parts.next(), Some("counter" | "gauge")), "{line}");
            families.entry(name).or_insert((false, false)).1 = true;
        } else {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
            let (name, labels) = series.split_once('{').expect("labels");
            assert!(labels.ends_with('}') && labels.contains("shard=\""), "{line}");
            assert!(name.starts_with("corekv_"), "{line}");
            assert_eq!(
                families.get(name),
                Some(&(true, true)),
                "{name} sample before its HELP/TYPE"
            );
            if name == "corekv_keys" {
                keys_total += value;
            }
        }
    }
    assert_eq!(keys_total, 1.0);
    assert!(families.contains_key("corekv_responses_total") && families.contains_key("corekv_hits_total"));
}

// Goal: --max-memory tracks the process's real growth: accounted bytes stay close to the RSS
// the data adds (the byte accounting, not a guess).
#[test]
fn accounted_memory_tracks_resident_memory() {
    let server = Server::start(&["--shards", "1"]);
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    };
    let before = rss();
    let mut conn = server.connect();
    let value = vec![b'r'; 100];
    for chunk in 0..40 {
        let mut batch = Vec::new();
        for i in 0..5000 {
            batch.extend(encode_request("PUT", &format!("/v1/keys/rss-{chunk}-{i}"), &[], &value));
        }
        conn.send(&batch);
        for _ in 0..5000 {
            assert_eq!(conn.read().status, 201);
        }
    }
    let grown = rss() - before;
    let accounted = stats(&server)["memory_bytes"].as_u64().unwrap();
    let ratio = grown as f64 / accounted as f64;
    eprintln!("200k keys: RSS grew {grown} bytes, accounted {accounted} bytes, ratio {ratio:.2}");
    assert!(
        (0.8..=1.5).contains(&ratio),
        "RSS grew {grown}, accounted {accounted} (ratio {ratio:.2})"
    );
}
