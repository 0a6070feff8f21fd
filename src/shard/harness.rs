//! Real shards without HTTP: glommio executors joined by the channel mesh as `corekv serve`
//! joins them, each a [`ShardContext`] answering its peers with the server's own
//! [`serve_peer`], and a client task on shard 0. For unit tests and benches, never the server.
//!
//! Owns nothing but the set-up and tear-down of such a mesh; it never opens a socket.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

use super::context::{Counters, Latches, ShardContext};
use super::message::ShardMessage;
use super::router::{Router, serve_peer};
use super::store::Store;
use super::{ShardId, StoreHandle};
use crate::config::ServeArgs;
use crate::limits::{CHANNEL_DEPTH_MESSAGES, IO_MEMORY_BYTES_MIN};

/// io_uring buffer memory per executor: a few executors' rings must fit an 8 MiB
/// RLIMIT_MEMLOCK beside a test server's.
const IO_MEMORY_BYTES: usize = 4 * IO_MEMORY_BYTES_MIN;

/// How a mesh is laid out.
pub struct Layout {
    /// The CPU of each shard (its length is the shard count).
    pub cpus: Vec<usize>,
    /// The flags every shard sees.
    pub args: ServeArgs,
    /// Shards after 0 that drop every message unanswered (an owner that went away mid-batch).
    pub gone: Vec<ShardId>,
}

/// Runs `client(shard 0)` on shard 0 of a mesh laid out as `layout`, each shard's store built
/// by `store(id)`, and returns what the client returns. The other shards answer their peers
/// until shard 0 has finished.
pub fn on_shards<S, F, Fut, T>(layout: Layout, store: S, client: F) -> T
where
    S: Fn(ShardId) -> Store + Clone + Send + 'static,
    F: FnOnce(Rc<ShardContext>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let nr_shards = layout.cpus.len();
    let mesh = MeshBuilder::<ShardMessage, _>::full(nr_shards, CHANNEL_DEPTH_MESSAGES);
    let handles: Vec<_> = layout
        .cpus
        .iter()
        .map(|&cpu| {
            let (mesh, client, store) = (mesh.clone(), client.clone(), store.clone());
            let (args, gone) = (layout.args.clone(), layout.gone.clone());
            LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .io_memory(IO_MEMORY_BYTES)
                .spawn(move || async move {
                    // Every executor joins the same mesh; joining cannot fail while all live.
                    let (senders, mut receivers) = mesh.join().await.unwrap();
                    // Peer ids follow executor ids, not spawn order: the role follows the id.
                    let id = senders.peer_id();
                    let shard = Rc::new(ShardContext {
                        id,
                        nr_shards,
                        cpu,
                        args,
                        store: StoreHandle::Owned(RefCell::new(store(id))),
                        router: Router::new(senders),
                        latches: Latches::new(nr_shards),
                        counters: Counters::default(),
                        log: Default::default(),
                        recovered: Default::default(),
                        auth: None,
                        index: Default::default(),
                        watch: Default::default(),
                        txn: Default::default(),
                        replication: None,
                    });
                    shard.start_change_tracking();
                    let drops = gone.contains(&id);
                    let peers: Vec<_> = receivers
                        .streams()
                        .into_iter()
                        .map(|(_, receiver)| {
                            let shard = Rc::clone(&shard);
                            glommio::spawn_local(async move {
                                if drops {
                                    // Dropping a message drops its reply slot: the asker sees
                                    // the owner gone.
                                    while receiver.recv().await.is_some() {}
                                } else {
                                    serve_peer(receiver, &shard).await
                                }
                            })
                        })
                        .collect();
                    let answer = if id == 0 {
                        Some(client(Rc::clone(&shard)).await)
                    } else {
                        None
                    };
                    // Closing every shard's senders ends every peer-serving task.
                    shard.router.close();
                    for peer in peers {
                        peer.await;
                    }
                    answer
                })
                // Starting an executor fails only when the machine cannot run glommio at all.
                .expect("cannot start a glommio executor (io_uring, RLIMIT_MEMLOCK?)")
        })
        .collect();
    handles
        .into_iter()
        .filter_map(|handle| handle.join().expect("a shard of the harness failed"))
        .next()
        .expect("shard 0 reports its answer")
}
