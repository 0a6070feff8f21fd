//! HTTP framing: parsing requests out of a read buffer and encoding responses into a write
//! buffer, one request at a time and as a batch of 16 pipelined requests (what one read of a
//! pipelining client delivers). No sockets: this is the user-space share of a request's cost.
//!
//! `parse` is [`corekv::http::request::parse`] alone; `parse_plan` adds [`corekv::api::plan`]
//! (routing, key decoding and checks, building the store operation), which is everything the
//! connection loop does to a request before it touches a store.

use std::hint::black_box;
use std::time::Duration;

use corekv::api::{self, Context, Render};
use corekv::config::ServeArgs;
use corekv::http::request::{self, Parsed};
use corekv::http::response;
use corekv::shard::message::Outcome;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Requests in a pipelined batch (the wrk benchmark's depth).
const PIPELINE_DEPTH: usize = 16;
/// Bytes of a value (the wrk benchmark's size).
const VALUE_BYTES: usize = 64;

/// Builds the `i`th request of a kind.
type MakeRequest = fn(usize) -> Vec<u8>;

/// A GET as wrk sends it.
fn get_request(i: usize) -> Vec<u8> {
    format!("GET /v1/keys/key:{i:07} HTTP/1.1\r\nHost: 127.0.0.1:7878\r\n\r\n").into_bytes()
}

/// A PUT of a 64-byte value as wrk sends it.
fn put_request(i: usize) -> Vec<u8> {
    let mut raw =
        format!("PUT /v1/keys/key:{i:07} HTTP/1.1\r\nHost: 127.0.0.1:7878\r\nContent-Length: {VALUE_BYTES}\r\n\r\n")
            .into_bytes();
    raw.extend_from_slice(&[b'v'; VALUE_BYTES]);
    raw
}

/// Parses every request in `buf`; with `plan`, also plans each. Returns the count.
fn parse_all(buf: &[u8], args: &ServeArgs, plan: bool) -> usize {
    let context = Context {
        args,
        ready: true,
        ready_shards: (1, 1),
        tokens: None,
    };
    let mut consumed = 0;
    let mut count = 0;
    let mut progress = request::BodyProgress::default();
    while consumed < buf.len() {
        match request::parse(&buf[consumed..], &mut progress, |head| api::body_limit(head, args)) {
            Parsed::Complete(parsed, used) => {
                consumed += used;
                count += 1;
                if plan {
                    black_box(api::plan(parsed, &context));
                } else {
                    black_box(parsed);
                }
            }
            other => panic!("the bench's requests are complete and valid: {other:?}"),
        }
    }
    count
}

fn bench_parse(c: &mut Criterion) {
    let args = ServeArgs::from_flags(&[]);
    let mut group = c.benchmark_group("http/parse");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    let cases: [(&str, MakeRequest); 2] = [("get", get_request), ("put", put_request)];
    for (name, make) in cases {
        let single = make(42);
        let batch: Vec<u8> = (0..PIPELINE_DEPTH).flat_map(make).collect();
        for (plan, what) in [(false, "parse"), (true, "parse_plan")] {
            group.throughput(Throughput::Elements(1));
            group.bench_function(BenchmarkId::new(format!("{what}/{name}"), "single"), |b| {
                b.iter(|| parse_all(black_box(&single), &args, plan))
            });
            group.throughput(Throughput::Elements(PIPELINE_DEPTH as u64));
            group.bench_function(BenchmarkId::new(format!("{what}/{name}"), "pipelined16"), |b| {
                b.iter(|| parse_all(black_box(&batch), &args, plan))
            });
        }
    }
    group.finish();
}

/// Encodes `count` responses into `out` as the connection loop does.
fn encode(out: &mut Vec<u8>, count: usize, render: &Render, outcome: &Outcome<&[u8]>) {
    out.clear();
    for _ in 0..count {
        black_box(api::render_one(render, outcome.clone(), true, out));
    }
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("http/encode");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    let value = [b'v'; VALUE_BYTES];
    let get = (
        Render::Value { head: false },
        Outcome::Found {
            value: &value[..],
            ttl_ms: None,
            version: 1,
        },
    );
    let put = (Render::Write, Outcome::Replaced { version: 2 });
    let mut out = Vec::with_capacity(16 << 10);
    for (name, (render, outcome)) in [("get_200", get), ("put_200", put)] {
        for (depth, label) in [(1, "single"), (PIPELINE_DEPTH, "pipelined16")] {
            group.throughput(Throughput::Elements(depth as u64));
            group.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter(|| {
                    encode(&mut out, depth, &render, black_box(&outcome));
                    black_box(out.len())
                })
            });
        }
    }
    // The lowest level on its own: a status line and headers, then the body.
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("response_full", "single"), |b| {
        b.iter(|| {
            out.clear();
            response::full(&mut out, 200, response::OCTET_STREAM, &value, true, &[]);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_parse, bench_encode);
criterion_main!(benches);
