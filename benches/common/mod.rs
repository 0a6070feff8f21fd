//! Two glommio executors joined by a channel mesh, as `corekv serve --shards 2` joins them
//! (`corekv::shard::harness`): each is a real `ShardContext` owning a preloaded store, and
//! answers the other's messages with the server's own `serve_peer`. Shard 0 runs the measured
//! client; the time it reports is taken inside it, so starting and stopping the executors is
//! not measured.

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use corekv::config::ServeArgs;
use corekv::shard::context::ShardContext;
use corekv::shard::harness::{Layout, on_shards};
use corekv::shard::message::Record;
use corekv::shard::store::Store;
use corekv::shard::{ShardId, shard_for};

/// Shards in the mesh.
pub const NR_SHARDS: usize = 2;
/// Keys in the preloaded keyspace, and the bytes of every value.
pub const KEYS_COUNT: usize = 10_000;
pub const VALUE_BYTES: usize = 64;

/// `key:0000000` ..: 11-byte keys, as the wrk and memory benchmarks use.
pub fn key(i: usize) -> String {
    format!("key:{i:07}")
}

/// The keys that `shard` owns among the first [`KEYS_COUNT`].
pub fn keys_owned_by(shard: ShardId) -> Vec<Box<[u8]>> {
    (0..KEYS_COUNT)
        .map(|i| key(i).into_bytes().into_boxed_slice())
        .filter(|key| shard_for(key, NR_SHARDS) == shard)
        .collect()
}

/// A store holding every key `shard` owns, each with a 64-byte value.
pub fn preloaded_store(shard: ShardId) -> Store {
    let mut store = Store::default();
    for key in keys_owned_by(shard) {
        store.put(Record::new(&key, &[b'v'; VALUE_BYTES]), None);
    }
    store
}

/// The CPU pairs worth measuring: both shards on one CPU, and (when there are two) one each.
pub fn placements() -> Vec<(&'static str, [usize; 2])> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let mut placements = vec![("same_cpu", [cpus - 1, cpus - 1])];
    if cpus >= 2 {
        placements.push(("two_cpus", [0, 1]));
    }
    placements
}

/// Starts two shards on `cpus`, each with its preloaded store serving the other, and runs
/// `client(shard)` on shard 0. Returns the duration the client reports.
pub fn on_two_shards<F, Fut>(cpus: [usize; 2], client: F) -> Duration
where
    F: FnOnce(Rc<ShardContext>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Duration>,
{
    let layout = Layout {
        cpus: cpus.to_vec(),
        args: ServeArgs::from_flags(&[]),
        gone: Vec::new(),
    };
    on_shards(layout, preloaded_store, client)
}
