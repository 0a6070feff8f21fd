//! The cross-shard round trip: shard 0 sends GETs for keys that shard 1 owns over the channel
//! mesh ([`Router::send`]) and awaits the reply ([`serve_peer`] on shard 1), one operation per
//! batch and 16 per batch (a pipelined read's worth). Measured with both shards on one CPU
//! (each hop is a switch between executor threads) and, where there are two CPUs, one each.
//!
//! Each is measured with one round trip in flight (shard 0 waits for every reply, so both
//! executors go to sleep and are woken for every hop: the latency of an idle pair) and with 64
//! in flight (the amortised cost when the shards are busy, as under the wrk benchmark's 64
//! connections). This is what a request for a key owned by another shard costs on top of the
//! local lookup.
//!
//! [`Router::send`]: corekv::shard::router::Router::send
//! [`serve_peer`]: corekv::shard::router::serve_peer

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{keys_owned_by, on_two_shards, placements};
use corekv::shard::message::Op;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Operations per batch in the batched case (the wrk benchmark's pipeline depth).
const BATCH_OPS: usize = 16;
/// Round trips in flight at once in the loaded case (the wrk benchmark's connection count).
const IN_FLIGHT: usize = 64;

/// `iters` round trips of `batch_ops` GETs each, from shard 0 to shard 1, issued by `in_flight`
/// tasks at once (each awaiting its own reply, like connections do).
fn round_trips(cpus: [usize; 2], batch_ops: usize, in_flight: usize, iters: u64) -> Duration {
    on_two_shards(cpus, move |shard| async move {
        let keys = Rc::new(keys_owned_by(1));
        let per_task = iters.div_ceil(in_flight as u64);
        let start = Instant::now();
        let tasks: Vec<_> = (0..in_flight)
            .map(|task| {
                let (keys, shard) = (Rc::clone(&keys), Rc::clone(&shard));
                glommio::spawn_local(async move {
                    let mut next = task * 131;
                    for _ in 0..per_task {
                        let ops: Vec<Op> = (0..batch_ops)
                            .map(|_| {
                                next = (next + 7) % keys.len();
                                Op::Get(keys[next].clone())
                            })
                            .collect();
                        // Shard 1 answers until shard 0 closes its channel, after every task.
                        let reply = shard.router.send(1, ops).await.expect("shard 1 is serving");
                        black_box(reply.await.expect("shard 1 answers every batch"));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        // Scaled back to `iters` when the tasks rounded the count up.
        let elapsed = start
            .elapsed()
            .mul_f64(iters as f64 / (per_task * in_flight as u64) as f64);
        shard.router.close();
        elapsed
    })
}

fn bench_cross_shard(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_shard");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(15);
    for (placement, cpus) in placements() {
        for (batch_ops, batch) in [(1, "single"), (BATCH_OPS, "batch16")] {
            for (in_flight, load) in [(1, ""), (IN_FLIGHT, "_64_in_flight")] {
                group.throughput(Throughput::Elements(batch_ops as u64));
                group.bench_function(BenchmarkId::new(format!("{batch}{load}"), placement), |b| {
                    b.iter_custom(|iters| round_trips(cpus, batch_ops, in_flight, iters))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_cross_shard);
criterion_main!(benches);
