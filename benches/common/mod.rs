//! Two glommio executors joined by a channel mesh, as `corekv serve --shards 2` joins them:
//! each is a real [`ShardContext`] owning a preloaded store, and answers the other's messages
//! with the server's own [`serve_peer`]. Shard 0 runs the measured client; the time it reports
//! is taken inside it, so starting and stopping the executors is not measured.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use clap::Parser;
use corekv::config::{Cli, Command, ServeArgs};
use corekv::limits::{CHANNEL_DEPTH_MESSAGES, IO_MEMORY_BYTES_PER_SHARD};
use corekv::shard::context::{Counters, Latches, ShardContext};
use corekv::shard::message::{Record, ShardMessage};
use corekv::shard::router::{Router, serve_peer};
use corekv::shard::store::Store;
use corekv::shard::{ShardId, StoreHandle, shard_for};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

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

/// `corekv serve`'s default flags.
pub fn serve_args() -> ServeArgs {
    // The default flags always parse.
    match Cli::try_parse_from(["corekv", "serve"]).unwrap().command {
        Command::Serve(args) => args,
        _ => unreachable!("`serve` parses as Serve"),
    }
}

/// Starts two shards on `cpus`, each with its preloaded store serving the other, and runs
/// `client(shard)` on shard 0. Returns the duration the client reports.
pub fn on_two_shards<F, Fut>(cpus: [usize; 2], client: F) -> Duration
where
    F: FnOnce(Rc<ShardContext>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Duration>,
{
    let mesh = MeshBuilder::<ShardMessage, _>::full(NR_SHARDS, CHANNEL_DEPTH_MESSAGES);
    let handles: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            let (mesh, client) = (mesh.clone(), client.clone());
            LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .io_memory(IO_MEMORY_BYTES_PER_SHARD)
                .spawn(move || async move {
                    // Both executors join the same mesh; joining cannot fail while both live.
                    let (senders, mut receivers) = mesh.join().await.unwrap();
                    // Peer ids follow executor ids, not spawn order: the role follows the id.
                    let id = senders.peer_id();
                    let shard = Rc::new(ShardContext {
                        id,
                        nr_shards: NR_SHARDS,
                        cpu,
                        args: serve_args(),
                        store: StoreHandle::Owned(RefCell::new(preloaded_store(id))),
                        router: Router::new(senders),
                        latches: Latches::new(NR_SHARDS),
                        counters: Counters::default(),
                    });
                    let peers: Vec<_> = receivers
                        .streams()
                        .into_iter()
                        .map(|(_, receiver)| {
                            let shard = Rc::clone(&shard);
                            glommio::spawn_local(async move { serve_peer(receiver, &shard).await })
                        })
                        .collect();
                    let elapsed = if id == 0 {
                        Some(client(Rc::clone(&shard)).await)
                    } else {
                        // Shard 1 only answers: closing its senders ends shard 0's server.
                        shard.router.close();
                        None
                    };
                    for peer in peers {
                        peer.await;
                    }
                    elapsed
                })
                // Starting an executor fails only when the machine cannot run glommio at all.
                .expect("cannot start a glommio executor (io_uring, RLIMIT_MEMLOCK?)")
        })
        .collect();
    handles
        .into_iter()
        .filter_map(|handle| handle.join().expect("a shard of the bench failed"))
        .next()
        .expect("shard 0 reports its time")
}
