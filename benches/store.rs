//! Store operations (get, put, a 90/10 mix) on four ways of holding a keyspace in memory:
//! the owned shard map ([`corekv::shard::store::Store`], one per thread, each owning the keys
//! `shard_for` gives it), a plain unlocked `HashMap` per thread with the same keys (the
//! baseline for `Store::get`), `Mutex<HashMap>`, `RwLock<HashMap>` and `DashMap`, at every thread
//! count from 1 to the machine's CPUs.
//!
//! Every variant hashes with `ahash`, so the comparison is of the concurrency scheme and the
//! entry layout, not of the hash function. The owned maps see only their own keys: routing a
//! key to its owner is the cross-shard hop, measured in `benches/cross_shard.rs`.
//!
//! One iteration is one operation on every thread; the reported throughput is operations per
//! second summed over the threads. Threads are started once per sample and released together
//! by a barrier; the clock runs from the first one's start to the last one's end.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex, RwLock};
use std::time::{Duration, Instant};

use corekv::shard::message::Record;
use corekv::shard::shard_for;
use corekv::shard::store::Store;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dashmap::DashMap;

/// Keys in the preloaded keyspace (the wrk benchmark's default).
const KEYS_COUNT: usize = 10_000;
/// Bytes of every value.
const VALUE_BYTES: usize = 64;
/// Out of 100 operations of the mixed workload, how many are reads.
const MIX_READS_PERCENT: u64 = 90;

type Hasher = ahash::RandomState;
type Map = HashMap<Box<[u8]>, Box<[u8]>, Hasher>;

#[derive(Clone, Copy, Debug)]
enum Workload {
    Get,
    Put,
    Mix,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Get => "get",
            Workload::Put => "put",
            Workload::Mix => "mix_90_10",
        }
    }
}

/// The keys `key:0000000` .. (11 bytes, as in the memory benchmark).
fn keys() -> Vec<Vec<u8>> {
    (0..KEYS_COUNT).map(|i| format!("key:{i:07}").into_bytes()).collect()
}

/// A small, fast generator of key indexes (xorshift64*), one per thread.
struct Picker(u64);

impl Picker {
    fn new(seed: usize) -> Picker {
        Picker(0x9e37_79b9_7f4a_7c15 ^ (seed as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// What one thread does per iteration, given a key and whether it is a read.
trait Contender: Send + Sync + 'static {
    /// One thread's state (its own map for the owned design).
    type Local: Send;
    fn local(&self, thread: usize, threads: usize, keys: &[Vec<u8>]) -> Self::Local;
    /// The keys this thread may touch.
    fn keys_of(&self, thread: usize, threads: usize, keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let _ = (thread, threads);
        keys.to_vec()
    }
    fn get(&self, local: &mut Self::Local, key: &[u8]) -> usize;
    fn put(&self, local: &mut Self::Local, key: &[u8], value: &[u8]);
}

/// The owned shard map: each thread owns the store of its own keys, with no lock at all.
struct Owned;

impl Contender for Owned {
    type Local = Store;

    fn local(&self, thread: usize, threads: usize, keys: &[Vec<u8>]) -> Store {
        let mut store = Store::default();
        for key in self.keys_of(thread, threads, keys) {
            store.put(Record::new(&key, &[b'v'; VALUE_BYTES]), None);
        }
        store
    }

    fn keys_of(&self, thread: usize, threads: usize, keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
        keys.iter()
            .filter(|key| shard_for(key, threads) == thread)
            .cloned()
            .collect()
    }

    fn get(&self, store: &mut Store, key: &[u8]) -> usize {
        // `get` (not `peek`): a read bumps the key in the LRU list, as a server read does.
        store.get(key).map_or(0, |(value, ..)| value.len())
    }

    fn put(&self, store: &mut Store, key: &[u8], value: &[u8]) {
        black_box(store.put(Record::new(key, value), None));
    }
}

/// A plain, unlocked `HashMap` per thread holding the same keys as the owned store: the
/// baseline issue #14 states `Store::get`'s goal against (≤ 1.2× its time).
struct Plain;

impl Contender for Plain {
    type Local = Map;

    fn local(&self, thread: usize, threads: usize, keys: &[Vec<u8>]) -> Map {
        loaded_map(&self.keys_of(thread, threads, keys))
    }

    fn keys_of(&self, thread: usize, threads: usize, keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
        Owned.keys_of(thread, threads, keys)
    }

    fn get(&self, map: &mut Map, key: &[u8]) -> usize {
        map.get(key).map_or(0, |value| value.len())
    }

    fn put(&self, map: &mut Map, key: &[u8], value: &[u8]) {
        map.insert(key.into(), value.into());
    }
}

fn loaded_map(keys: &[Vec<u8>]) -> Map {
    let mut map = Map::with_hasher(Hasher::new());
    for key in keys {
        map.insert(key.as_slice().into(), vec![b'v'; VALUE_BYTES].into());
    }
    map
}

struct Locked(Mutex<Map>);

impl Contender for Locked {
    type Local = ();

    fn local(&self, _: usize, _: usize, _: &[Vec<u8>]) {}

    fn get(&self, _: &mut (), key: &[u8]) -> usize {
        // A poisoned lock only follows a panic in this bench, which already failed it.
        let map = self.0.lock().unwrap();
        map.get(key).map_or(0, |value| value.len())
    }

    fn put(&self, _: &mut (), key: &[u8], value: &[u8]) {
        let (key, value): (Box<[u8]>, Box<[u8]>) = (key.into(), value.into());
        self.0.lock().unwrap().insert(key, value);
    }
}

struct ReadWriteLocked(RwLock<Map>);

impl Contender for ReadWriteLocked {
    type Local = ();

    fn local(&self, _: usize, _: usize, _: &[Vec<u8>]) {}

    fn get(&self, _: &mut (), key: &[u8]) -> usize {
        let map = self.0.read().unwrap();
        map.get(key).map_or(0, |value| value.len())
    }

    fn put(&self, _: &mut (), key: &[u8], value: &[u8]) {
        let (key, value): (Box<[u8]>, Box<[u8]>) = (key.into(), value.into());
        self.0.write().unwrap().insert(key, value);
    }
}

struct Dash(DashMap<Box<[u8]>, Box<[u8]>, Hasher>);

impl Contender for Dash {
    type Local = ();

    fn local(&self, _: usize, _: usize, _: &[Vec<u8>]) {}

    fn get(&self, _: &mut (), key: &[u8]) -> usize {
        self.0.get(key).map_or(0, |value| value.len())
    }

    fn put(&self, _: &mut (), key: &[u8], value: &[u8]) {
        self.0.insert(key.into(), value.into());
    }
}

/// Runs `iters` operations on each of `threads` threads at once; returns the wall time.
fn run<C: Contender>(contender: &Arc<C>, workload: Workload, threads: usize, iters: u64) -> Duration {
    let keys = Arc::new(keys());
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (contender, keys, barrier) = (Arc::clone(contender), Arc::clone(&keys), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut local = contender.local(thread, threads, &keys);
                let mine = contender.keys_of(thread, threads, &keys);
                let value = [b'w'; VALUE_BYTES];
                let mut picker = Picker::new(thread);
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    let key = &mine[picker.below(mine.len())];
                    let read = match workload {
                        Workload::Get => true,
                        Workload::Put => false,
                        Workload::Mix => picker.next() % 100 < MIX_READS_PERCENT,
                    };
                    if read {
                        black_box(contender.get(&mut local, black_box(key)));
                    } else {
                        contender.put(&mut local, black_box(key), &value);
                    }
                }
                (start, Instant::now())
            })
        })
        .collect();
    barrier.wait();
    // Each thread reads its own clock: on a loaded machine a thread may be done before this
    // one is scheduled past the barrier, which made a main-thread start read zero time.
    let spans: Vec<(Instant, Instant)> = handles
        .into_iter()
        // A thread panics only if the bench itself is broken.
        .map(|handle| handle.join().unwrap())
        .collect();
    let start = spans.iter().map(|span| span.0).min();
    let end = spans.iter().map(|span| span.1).max();
    start.zip(end).map_or(Duration::ZERO, |(start, end)| end - start)
}

fn bench_store(c: &mut Criterion) {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let keys = keys();
    let owned = Arc::new(Owned);
    let plain = Arc::new(Plain);
    let mutex = Arc::new(Locked(Mutex::new(loaded_map(&keys))));
    let rwlock = Arc::new(ReadWriteLocked(RwLock::new(loaded_map(&keys))));
    let dash = Arc::new(Dash({
        let map = DashMap::with_hasher(Hasher::new());
        for key in &keys {
            map.insert(key.as_slice().into(), vec![b'v'; VALUE_BYTES].into());
        }
        map
    }));
    for workload in [Workload::Get, Workload::Put, Workload::Mix] {
        let mut group = c.benchmark_group(format!("store/{}", workload.name()));
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20);
        for threads in 1..=cpus {
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_with_input(BenchmarkId::new("owned", threads), &threads, |b, &t| {
                b.iter_custom(|iters| run(&owned, workload, t, iters))
            });
            group.bench_with_input(BenchmarkId::new("hashmap", threads), &threads, |b, &t| {
                b.iter_custom(|iters| run(&plain, workload, t, iters))
            });
            group.bench_with_input(BenchmarkId::new("mutex", threads), &threads, |b, &t| {
                b.iter_custom(|iters| run(&mutex, workload, t, iters))
            });
            group.bench_with_input(BenchmarkId::new("rwlock", threads), &threads, |b, &t| {
                b.iter_custom(|iters| run(&rwlock, workload, t, iters))
            });
            group.bench_with_input(BenchmarkId::new("dashmap", threads), &threads, |b, &t| {
                b.iter_custom(|iters| run(&dash, workload, t, iters))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
