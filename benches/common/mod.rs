//! Two glommio executors joined by a channel mesh, as `corekv serve --shards 2` joins them:
//! each owns a [`Store`] and answers the other's batches with [`serve_peer`]. Shard 0 runs the
//! measured client; the time it reports is taken inside it, so starting and stopping the
//! executors is not measured.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use corekv::limits::{CHANNEL_DEPTH_MESSAGES, IO_MEMORY_BYTES_PER_SHARD};
use corekv::shard::message::{Batch, Record};
use corekv::shard::router::{Router, serve_peer};
use corekv::shard::store::Store;
use corekv::shard::{ShardId, shard_for};
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

/// Starts two shards on `cpus`, each with its preloaded store serving the other, and runs
/// `client(store, router)` on shard 0. Returns the duration the client reports.
pub fn on_two_shards<F, Fut>(cpus: [usize; 2], client: F) -> Duration
where
    F: FnOnce(Rc<RefCell<Store>>, Router) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Duration>,
{
    let mesh = MeshBuilder::<Batch, _>::full(NR_SHARDS, CHANNEL_DEPTH_MESSAGES);
    let handles: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            let (mesh, client) = (mesh.clone(), client.clone());
            LocalExecutorBuilder::new(Placement::Fixed(cpu))
                // The server's per-shard size: two shards fit the 8 MiB RLIMIT_MEMLOCK.
                .io_memory(IO_MEMORY_BYTES_PER_SHARD)
                .spawn(move || async move {
                    // Both executors join the same mesh; joining cannot fail while both live.
                    let (senders, mut receivers) = mesh.join().await.unwrap();
                    // Peer ids follow executor ids, not spawn order: the role follows the id.
                    let id = senders.peer_id();
                    let store = Rc::new(RefCell::new(preloaded_store(id)));
                    let peers: Vec<_> = receivers
                        .streams()
                        .into_iter()
                        .map(|(_, receiver)| {
                            let store = Rc::clone(&store);
                            // THIN WRAPPER, kept on purpose: the server answers a peer with
                            // `ShardContext::answer_peer` (src/server.rs), which is private and
                            // needs a whole shard context. This is its core (each op on the
                            // local store, its outcome copied for the trip back) without the
                            // message counter; drop it once the server exposes a store-level
                            // `answer_peer`.
                            glommio::spawn_local(serve_peer(receiver, move |ops| {
                                let mut store = store.borrow_mut();
                                ops.into_iter().map(|op| store.apply(op).to_owned()).collect()
                            }))
                        })
                        .collect();
                    let router = Router::new(senders);
                    let elapsed = if id == 0 {
                        Some(client(Rc::clone(&store), router).await)
                    } else {
                        // Shard 1 only answers: closing its senders ends shard 0's server.
                        router.close();
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
