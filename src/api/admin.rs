//! Operators' routes: `GET /v1/stats` (JSON) and `GET /metrics` (Prometheus text), both
//! gathered from every shard by one `Stats` operation each, and `GET /v1/openapi.json`, the
//! API document (`docs/openapi.yaml`, turned into JSON at build time by `build.rs`).
//!
//! Owns these routes and the two formats. Like all of [`crate::api`], it never touches a store
//! or a socket: the numbers arrive as outcomes.

use std::fmt::Write;

use super::{Ops, Render};
use crate::error::Error;
use crate::http::request::{Method, Request};
use crate::http::response;
use crate::shard::message::ShardStats;

/// The OpenAPI 3.1 document of every route, as JSON.
pub const OPENAPI_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

/// Plans an admin request; `None` when the path is not an admin route.
pub fn route(request: &Request<'_>) -> Option<Result<(Ops, Render), Error>> {
    let prometheus = match request.head.path {
        "/v1/stats" => false,
        "/metrics" => true,
        "/v1/openapi.json" => {
            return Some(match request.head.method {
                Method::Get | Method::Head => Ok((Ops::None, Render::Static(response::JSON, OPENAPI_JSON.as_bytes()))),
                _ => Err(Error::MethodNotAllowed { allow: "GET, HEAD" }),
            });
        }
        _ => return None,
    };
    Some(match request.head.method {
        Method::Get | Method::Head => Ok((Ops::Stats, Render::Stats { prometheus })),
        _ => Err(Error::MethodNotAllowed { allow: "GET, HEAD" }),
    })
}

/// Plans `GET /v1/cluster`: 404 on a node running without `--peers`.
pub fn route_cluster(request: &Request<'_>, args: &crate::config::ServeArgs) -> Option<Result<(Ops, Render), Error>> {
    if request.head.path != "/v1/cluster" {
        return None;
    }
    let Some(peers) = &args.peers else {
        return Some(Err(Error::RouteNotFound));
    };
    let nodes = peers.0.iter().map(|(id, addr)| (*id, addr.to_string())).collect();
    Some(match request.head.method {
        Method::Get | Method::Head => Ok((Ops::Stats, Render::Cluster { nodes })),
        _ => Err(Error::MethodNotAllowed { allow: "GET, HEAD" }),
    })
}

/// Writes `/v1/cluster`: this node, the members, and each group's leader, term, commit and
/// applied index and (on its leader) each follower's lag; returns its status.
pub fn render_cluster(nodes: &[(u64, String)], shards: &[ShardStats], keep_alive: bool, out: &mut Vec<u8>) -> u16 {
    let groups: Vec<serde_json::Value> = shards
        .iter()
        .filter_map(|shard| {
            let status = shard.replication.as_ref()?;
            let mut group = serde_json::to_value(status).ok()?;
            group["shard"] = serde_json::json!(shard.id);
            Some(group)
        })
        .collect();
    let node_id = shards
        .iter()
        .find_map(|shard| shard.replication.as_ref().map(|s| s.node_id));
    let body = serde_json::json!({
        "node_id": node_id,
        "nodes": nodes.iter().map(|(id, addr)| serde_json::json!({"id": id, "peer_addr": addr})).collect::<Vec<_>>(),
        "groups": groups,
    });
    response::json(out, 200, &body, keep_alive);
    200
}

/// Writes the stats response from every shard's numbers; returns its status.
pub fn render_stats(shards: &[ShardStats], prometheus: bool, keep_alive: bool, out: &mut Vec<u8>) -> u16 {
    if prometheus {
        let text = prometheus_text(shards);
        response::full(out, 200, "text/plain; version=0.0.4", text.as_bytes(), keep_alive, &[]);
    } else {
        let body = serde_json::json!({
            "keys": shards.iter().map(|s| s.keys).sum::<u64>(),
            "memory_bytes": shards.iter().map(|s| s.memory_bytes).sum::<u64>(),
            "shards": shards,
        });
        response::json(out, 200, &body, keep_alive);
    }
    200
}

/// One metric: its name, help, type and how to read it from a shard.
struct Metric {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    value: fn(&ShardStats) -> u64,
}

const METRICS: &[Metric] = &[
    Metric {
        name: "keys",
        help: "Keys held.",
        kind: "gauge",
        value: |s| s.keys,
    },
    Metric {
        name: "memory_bytes",
        help: "Bytes accounted for keys, values and their bookkeeping.",
        kind: "gauge",
        value: |s| s.memory_bytes,
    },
    Metric {
        name: "hits_total",
        help: "Reads that found their key.",
        kind: "counter",
        value: |s| s.hits,
    },
    Metric {
        name: "misses_total",
        help: "Reads that did not find their key.",
        kind: "counter",
        value: |s| s.misses,
    },
    Metric {
        name: "evictions_total",
        help: "Keys evicted to stay within the capacity budget (LRU mode).",
        kind: "counter",
        value: |s| s.evictions,
    },
    Metric {
        name: "expired_total",
        help: "Keys removed because their TTL passed.",
        kind: "counter",
        value: |s| s.expired,
    },
    Metric {
        name: "messages_sent_total",
        help: "Batches sent to other shards.",
        kind: "counter",
        value: |s| s.messages_sent,
    },
    Metric {
        name: "messages_received_total",
        help: "Batches received from other shards.",
        kind: "counter",
        value: |s| s.messages_received,
    },
    Metric {
        name: "connections",
        help: "Open client connections.",
        kind: "gauge",
        value: |s| s.connections,
    },
    Metric {
        name: "log_bytes",
        help: "Write-ahead log bytes since the newest snapshot (--data-dir).",
        kind: "gauge",
        value: |s| s.storage.log_bytes,
    },
    Metric {
        name: "log_segments",
        help: "Write-ahead log segments since the newest snapshot.",
        kind: "gauge",
        value: |s| s.storage.segments,
    },
    Metric {
        name: "snapshot_age_ms",
        help: "Milliseconds since the newest snapshot finished (0: none since start-up).",
        kind: "gauge",
        value: |s| s.storage.snapshot_age_ms.unwrap_or(0),
    },
    Metric {
        name: "snapshots_total",
        help: "Snapshots written since start-up.",
        kind: "counter",
        value: |s| s.storage.snapshots,
    },
    Metric {
        name: "log_writes_total",
        help: "Writes of log bytes to the OS (group commit: one per flush).",
        kind: "counter",
        value: |s| s.storage.writes,
    },
    Metric {
        name: "log_written_bytes_total",
        help: "Log bytes written to the OS.",
        kind: "counter",
        value: |s| s.storage.written_bytes,
    },
    Metric {
        name: "fsyncs_total",
        help: "fdatasyncs of log segments.",
        kind: "counter",
        value: |s| s.storage.fsyncs,
    },
    Metric {
        name: "fsync_us_sum",
        help: "Total fdatasync latency, in microseconds.",
        kind: "counter",
        value: |s| s.storage.fsync_us_sum,
    },
    Metric {
        name: "fsync_us_max",
        help: "Longest fdatasync, in microseconds.",
        kind: "gauge",
        value: |s| s.storage.fsync_us_max,
    },
    Metric {
        name: "recovery_us",
        help: "How long start-up recovery took, in microseconds.",
        kind: "gauge",
        value: |s| s.storage.recovery_us,
    },
    Metric {
        name: "recovery_records",
        help: "Records start-up recovery read.",
        kind: "gauge",
        value: |s| s.storage.recovery_records,
    },
];

/// The Prometheus text exposition (format 0.0.4) of every shard's numbers.
pub fn prometheus_text(shards: &[ShardStats]) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    for metric in METRICS {
        let _ = writeln!(text, "# HELP corekv_{} {}", metric.name, metric.help);
        let _ = writeln!(text, "# TYPE corekv_{} {}", metric.name, metric.kind);
        for shard in shards {
            let _ = writeln!(
                text,
                "corekv_{}{{shard=\"{}\"}} {}",
                metric.name,
                shard.id,
                (metric.value)(shard)
            );
        }
    }
    let _ = writeln!(text, "# HELP corekv_responses_total Responses sent, by status class.");
    let _ = writeln!(text, "# TYPE corekv_responses_total counter");
    for shard in shards {
        let r = &shard.requests;
        for (class, count) in [
            ("1xx", r.informational),
            ("2xx", r.success),
            ("3xx", r.redirection),
            ("4xx", r.client_error),
            ("5xx", r.server_error),
        ] {
            let _ = writeln!(
                text,
                "corekv_responses_total{{shard=\"{}\",class=\"{class}\"}} {count}",
                shard.id
            );
        }
    }
    replication_text(shards, &mut text);
    text
}

/// Replication's metrics (`--peers`), one series per shard's group; nothing when alone.
fn replication_text(shards: &[ShardStats], text: &mut String) {
    type Read = fn(&crate::replication::GroupStatus) -> u64;
    let metrics: [(&str, &str, &str, Read); 16] = [
        ("raft_term", "The group's current term.", "gauge", |g| g.term),
        (
            "raft_leader",
            "The group's leader (node id, 0 when none).",
            "gauge",
            |g| g.leader,
        ),
        ("raft_commit_index", "Last committed log index.", "gauge", |g| {
            g.commit_index
        }),
        (
            "raft_applied_index",
            "Last log index applied to the store.",
            "gauge",
            |g| g.applied_index,
        ),
        ("raft_elections_total", "Elections this node started.", "counter", |g| {
            g.elections
        }),
        ("raft_proposals_total", "Writes this node proposed.", "counter", |g| {
            g.proposals
        }),
        (
            "raft_refused_total",
            "Replicated requests answered 503 (no quorum).",
            "counter",
            |g| g.refused,
        ),
        (
            "raft_commit_latency_us_total",
            "Total time from proposal to apply of this node's writes, in microseconds (divide by raft_commits_total).",
            "counter",
            |g| g.commit_latency_us_total,
        ),
        (
            "raft_commits_total",
            "Writes this node proposed and applied.",
            "counter",
            |g| g.commits,
        ),
        (
            "raft_snapshot_index",
            "Log index of the group's latest snapshot (the log before it is compacted).",
            "gauge",
            |g| g.snapshot_index,
        ),
        (
            "raft_snapshots_taken_total",
            "Snapshots this node took of its store.",
            "counter",
            |g| g.snapshots_taken,
        ),
        (
            "raft_snapshots_sent_total",
            "Snapshots sent to followers too far behind.",
            "counter",
            |g| g.snapshots_sent,
        ),
        (
            "raft_snapshots_received_total",
            "Snapshots received from a leader and restored.",
            "counter",
            |g| g.snapshots_received,
        ),
        (
            "raft_snapshot_chunks_received_total",
            "Snapshot chunks received from a leader.",
            "counter",
            |g| g.snapshot_chunks_received,
        ),
        (
            "raft_snapshots_refused_total",
            "Snapshot transfers refused: malformed, out of order, damaged, or past --raft-snapshot-bytes-max.",
            "counter",
            |g| g.snapshots_refused,
        ),
        (
            "raft_voting",
            "1 when this member votes in the group, 0 while it abstains until caught up (it started with no raft state).",
            "gauge",
            |g| u64::from(g.voting),
        ),
    ];
    if shards.iter().all(|shard| shard.replication.is_none()) {
        return;
    }
    for (name, help, kind, read) in metrics {
        let _ = writeln!(text, "# HELP corekv_{name} {help}");
        let _ = writeln!(text, "# TYPE corekv_{name} {kind}");
        for shard in shards {
            if let Some(group) = &shard.replication {
                let _ = writeln!(text, "corekv_{name}{{shard=\"{}\"}} {}", shard.id, read(group));
            }
        }
    }
    let _ = writeln!(
        text,
        "# HELP corekv_raft_follower_lag_entries Entries a follower trails the leader (on the leader)."
    );
    let _ = writeln!(text, "# TYPE corekv_raft_follower_lag_entries gauge");
    for shard in shards {
        for follower in shard.replication.iter().flat_map(|group| &group.followers) {
            let _ = writeln!(
                text,
                "corekv_raft_follower_lag_entries{{shard=\"{}\",node=\"{}\"}} {}",
                shard.id, follower.node_id, follower.lag
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_help_type_and_a_shard_label_for_every_sample() {
        let shards = [
            ShardStats {
                id: 0,
                keys: 3,
                ..Default::default()
            },
            ShardStats {
                id: 1,
                hits: 9,
                ..Default::default()
            },
        ];
        let text = prometheus_text(&shards);
        assert!(text.contains("# TYPE corekv_keys gauge\ncorekv_keys{shard=\"0\"} 3\ncorekv_keys{shard=\"1\"} 0\n"));
        assert!(text.contains("corekv_hits_total{shard=\"1\"} 9\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(series.starts_with("corekv_") && series.contains("shard=\""), "{line}");
            value.parse::<u64>().unwrap();
        }
    }

    #[test]
    fn the_openapi_document_is_json_and_names_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/v1/keys/{key}",
            "/v1/keys",
            "/v1/ping",
            "/v1/readiness",
            "/v1/stats",
            "/metrics",
            "/v1/openapi.json",
            "/set",
            "/get",
            "/update",
            "/updateBulk",
            "/delete",
            "/keys/{key}",
            "/{key}",
            "/{key}/{ttl_ms}",
            "/v1/txn",
            "/v1/watch/{key}",
            "/v1/watch",
            "/v1/cluster",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is not documented");
        }
        let unauthorized = &doc["components"]["responses"]["Unauthorized"];
        assert!(unauthorized["headers"]["WWW-Authenticate"].is_object());
    }

    #[test]
    fn the_openapi_document_has_versions_transactions_listing_watch_and_cluster() {
        // Goal: the routes and headers those features added stay documented with their statuses.
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let operation = |path: &str, method: &str| {
            let operation = &doc["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} is not documented");
            operation
        };
        let statuses = |path: &str, method: &str| operation(path, method)["responses"].clone();
        assert!(operation("/v1/keys", "get")["responses"]["501"].is_object());
        for path in ["/v1/watch/{key}", "/v1/watch"] {
            assert!(statuses(path, "get")["200"]["$ref"] == "#/components/responses/EventStream");
        }
        let responses = &doc["components"]["responses"];
        assert!(responses["EventStream"]["content"]["text/event-stream"].is_object());
        for response in [
            "Value",
            "ValueHead",
            "Created",
            "Replaced",
            "CreatedOrReplaced",
            "Updated",
        ] {
            let etag = &responses[response]["headers"]["ETag"];
            assert_eq!(etag["$ref"], "#/components/headers/ETag", "{response} has no ETag");
        }
        assert_eq!(doc["components"]["headers"]["ETag"]["required"], true);
        for method in ["put", "post", "patch", "delete"] {
            let names: Vec<&str> = (operation("/v1/keys/{key}", method)["parameters"].as_array().unwrap())
                .iter()
                .filter_map(|p| p["$ref"].as_str())
                .collect();
            assert!(
                names.contains(&"#/components/parameters/IfMatch")
                    && names.contains(&"#/components/parameters/IfNoneMatch"),
                "{method} /v1/keys/{{key}} takes no conditions: {names:?}"
            );
            assert!(statuses("/v1/keys/{key}", method)["412"].is_object(), "{method}");
        }
        for (path, method, status) in [
            ("/v1/txn", "post", "501"),
            ("/v1/txn", "post", "413"),
            ("/v1/keys", "patch", "409"),
            ("/v1/keys", "patch", "501"),
            ("/updateBulk", "patch", "409"),
            ("/v1/cluster", "get", "404"),
            ("/v1/cluster", "get", "200"),
            ("/v1/txn", "post", "401"),
            ("/v1/watch", "get", "403"),
        ] {
            assert!(
                statuses(path, method)[status].is_object(),
                "{method} {path} lacks {status}"
            );
        }
        assert!(doc["components"]["headers"]["XCoreKVLeader"].is_object());
    }

    #[test]
    fn stats_json_sums_the_shards() {
        let shards = [
            ShardStats {
                keys: 2,
                memory_bytes: 10,
                ..Default::default()
            },
            ShardStats {
                keys: 5,
                memory_bytes: 1,
                ..Default::default()
            },
        ];
        let mut out = Vec::new();
        render_stats(&shards, false, true, &mut out);
        let body = &out[out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            (json["keys"].as_u64(), json["memory_bytes"].as_u64()),
            (Some(7), Some(11))
        );
        assert_eq!(json["shards"].as_array().unwrap().len(), 2);
        assert!(json["shards"][0]["requests"]["2xx"].is_u64());
    }
}
