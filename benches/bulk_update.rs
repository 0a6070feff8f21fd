//! A 100-key bulk update (`PATCH /v1/keys`) whose keys fall on both shards, end to end from the
//! request's bytes to the response's: parse, plan, execute, render. `sharded` executes as the
//! connection loop does with two shards (the local half in place, the other half sent to its
//! owner as one batch, then awaited); `locked` executes every update under the `--design
//! locked` store's write lock, as that design does. `no_store` parses, plans and renders only,
//! so that what the store costs in each design is the difference.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{KEYS_COUNT, VALUE_BYTES, key, on_two_shards, placements};
use corekv::api::{self, Context, Ops, Plan, Render};
use corekv::config::ServeArgs;
use corekv::http::request::{self, Parsed};
use corekv::shard::dispatch::{Dispatcher, Outcomes};
use corekv::shard::locked::LockedStore;
use corekv::shard::message::{Op, Outcome, Record};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Keys updated by one request.
const BULK_KEYS: usize = 100;

/// The raw `PATCH /v1/keys` request updating 100 existing keys spread over the keyspace.
fn bulk_request() -> Vec<u8> {
    let value = "w".repeat(VALUE_BYTES);
    let items: Vec<String> = (0..BULK_KEYS)
        .map(|i| format!(r#"{{"key":"{}","value":"{value}"}}"#, key(i * 97 % KEYS_COUNT)))
        .collect();
    let body = format!("[{}]", items.join(","));
    let mut raw = format!(
        "PATCH /v1/keys HTTP/1.1\r\nHost: 127.0.0.1:7878\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body.as_bytes());
    raw
}

/// Parses and plans the request: its update operations and the keys for the response.
fn plan(raw: &[u8], args: &ServeArgs) -> (Vec<Op>, Vec<String>) {
    let context = Context {
        args,
        ready: true,
        ready_shards: (1, 1),
        tokens: None,
    };
    let Parsed::Complete(parsed, _) = request::parse(raw, &mut request::BodyProgress::default(), |head| {
        api::body_limit(head, args)
    }) else {
        panic!("the bench's request is complete and valid")
    };
    match api::plan(parsed, &context) {
        Plan {
            ops: Ops::Many(ops),
            render: Render::BulkUpdate { keys, .. },
            ..
        } => (ops, keys),
        other => panic!("a bulk update plans as one: {other:?}"),
    }
}

/// `iters` bulk updates on shard 0 of two, dispatched as the connection loop does: the local
/// half in place, the remote half batched to shard 1.
fn sharded(cpus: [usize; 2], iters: u64) -> Duration {
    on_two_shards(cpus, move |shard| async move {
        let (raw, args) = (bulk_request(), ServeArgs::from_flags(&[]));
        let mut out = Vec::with_capacity(8 << 10);
        let mut dispatcher = Dispatcher::new(shard.nr_shards);
        let start = Instant::now();
        for _ in 0..iters {
            let (ops, keys) = plan(&raw, &args);
            let count = dispatcher.push(&shard, Ops::Many(ops));
            dispatcher.send(&shard).await;
            let updated: Vec<bool> = {
                let mut outcomes = dispatcher.outcomes(&shard);
                (0..count)
                    .map(|_| outcomes.next(|outcome| matches!(outcome, Ok(Outcome::Updated { .. }))))
                    .collect()
            };
            dispatcher.clear();
            debug_assert!(updated.iter().all(|&u| u), "every key exists");
            out.clear();
            api::render_bulk(&keys, &updated, false, true, &mut out);
            black_box(out.len());
        }
        let elapsed = start.elapsed();
        shard.router.close();
        elapsed
    })
}

fn bench_bulk_update(c: &mut Criterion) {
    let (raw, args) = (bulk_request(), ServeArgs::from_flags(&[]));
    let mut group = c.benchmark_group("bulk_update_100");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(15)
        .throughput(Throughput::Elements(1));

    let locked = LockedStore::default();
    for i in 0..KEYS_COUNT {
        locked.apply(
            Op::put(Record::new(key(i).as_bytes(), &[b'v'; VALUE_BYTES]), None),
            |_| (),
        );
    }
    let mut out = Vec::with_capacity(8 << 10);
    group.bench_function("locked", |b| {
        b.iter(|| {
            let (ops, keys) = plan(&raw, &args);
            let updated: Vec<bool> = ops
                .into_iter()
                .map(|op| locked.apply(op, |outcome| matches!(outcome, Outcome::Updated { .. })))
                .collect();
            out.clear();
            api::render_bulk(&keys, &updated, false, true, &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("no_store", |b| {
        b.iter(|| {
            let (ops, keys) = plan(&raw, &args);
            let updated = vec![true; ops.len()];
            drop(black_box(ops));
            out.clear();
            api::render_bulk(&keys, &updated, false, true, &mut out);
            black_box(out.len())
        })
    });
    for (placement, cpus) in placements() {
        group.bench_function(BenchmarkId::new("sharded", placement), |b| {
            b.iter_custom(|iters| sharded(cpus, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_bulk_update);
criterion_main!(benches);
