//! Routes operations to the shard that owns their key, over glommio's channel mesh.
//!
//! Owns the sending half of the mesh (one bounded channel to every other shard) and the task
//! that answers messages arriving from peers. It never executes a peer's operation anywhere but
//! on the store of the shard it runs on, and never shares that store.

use std::rc::Rc;

use glommio::channels::channel_mesh::Senders;
use glommio::channels::shared_channel::ConnectedReceiver;

use super::context::{Logged, ShardContext};
use super::message::{
    Batch, ListPage, ListQuery, ListRequest, Op, PeerReply, Refusal, ShardMessage, ShardStats, WatchRequest,
};
use super::watch::WatchSender;
use super::{ShardId, shard_for};
use crate::sync::oneshot;

/// A shard's view of the mesh: where each key lives, and how to reach its owner.
pub struct Router {
    id: ShardId,
    nr_shards: usize,
    senders: Senders<ShardMessage>,
}

/// The owner did not answer: its channel is closed (it is shutting down or has failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerGone;

impl Router {
    /// Wraps this shard's senders from the joined mesh.
    pub fn new(senders: Senders<ShardMessage>) -> Router {
        Router {
            id: senders.peer_id(),
            nr_shards: senders.nr_consumers(),
            senders,
        }
    }

    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// Number of shards in the mesh.
    pub fn nr_shards(&self) -> usize {
        self.nr_shards
    }

    /// The shard that owns `key`.
    pub fn owner(&self, key: &[u8]) -> ShardId {
        shard_for(key, self.nr_shards)
    }

    /// Sends `ops` to `owner` as one batch; the returned receiver yields its [`PeerReply`].
    /// Waits (without blocking the shard) while the owner's channel is full.
    pub async fn send(&self, owner: ShardId, ops: Vec<Op>) -> Result<oneshot::Receiver<PeerReply>, OwnerGone> {
        debug_assert_ne!(owner, self.id, "local operations never travel the mesh");
        let (reply, receiver) = oneshot::channel();
        self.deliver(owner, ShardMessage::Batch(Batch { ops, reply })).await?;
        Ok(receiver)
    }

    /// Sends `ops` to `owner` to run through its Raft group (`--peers`).
    pub async fn send_replicated(
        &self,
        owner: ShardId,
        ops: Vec<Op>,
    ) -> Result<oneshot::Receiver<PeerReply>, OwnerGone> {
        debug_assert_ne!(owner, self.id, "local operations never travel the mesh");
        let (reply, receiver) = oneshot::channel();
        self.deliver(owner, ShardMessage::Replicate(Batch { ops, reply }))
            .await?;
        Ok(receiver)
    }

    /// Asks `peer` for its numbers.
    pub async fn ask_stats(&self, peer: ShardId) -> Result<oneshot::Receiver<ShardStats>, OwnerGone> {
        debug_assert_ne!(peer, self.id, "a shard reads its own stats directly");
        let (reply, receiver) = oneshot::channel();
        self.deliver(peer, ShardMessage::Stats(reply)).await?;
        Ok(receiver)
    }

    /// Asks `peer` for its next page of a listing.
    pub async fn ask_list(&self, peer: ShardId, query: ListQuery) -> Result<oneshot::Receiver<ListPage>, OwnerGone> {
        debug_assert_ne!(peer, self.id, "a shard reads its own index directly");
        let (reply, receiver) = oneshot::channel();
        self.deliver(peer, ShardMessage::List(ListRequest { query, reply }))
            .await?;
        Ok(receiver)
    }

    /// Asks `peer` to register a watcher (its changes go into the request's channel).
    pub async fn ask_watch(&self, peer: ShardId, request: WatchRequest) -> Result<(), OwnerGone> {
        debug_assert_ne!(peer, self.id, "a shard registers its own watchers directly");
        self.deliver(peer, ShardMessage::Watch(request)).await
    }

    /// Sends any message to `peer`, waiting while its channel is full.
    pub async fn deliver(&self, peer: ShardId, message: ShardMessage) -> Result<(), OwnerGone> {
        debug_assert_ne!(peer, self.id, "a shard's own messages never travel the mesh");
        self.senders.send_to(peer, message).await.map_err(|_| OwnerGone)
    }

    /// Closes every channel this shard sends on: each peer's serving task for this shard ends
    /// once it has answered what is already queued.
    pub fn close(&self) {
        self.senders.close();
    }
}

/// Answers the messages one peer sends, in order, until that peer closes its channel.
///
/// A batch whose writes were logged is answered by a small task of its own once they are
/// durable, so this loop goes on to the next batch meanwhile: the channel is never held up
/// by an fsync, and group commit gathers the writes of many batches (and connections) into one.
/// Such tasks are bounded by the peer's connections: each waits for its reply before it sends
/// its next batch.
pub async fn serve_peer(receiver: ConnectedReceiver<ShardMessage>, shard: &Rc<ShardContext>) {
    while let Some(message) = receiver.recv().await {
        // The asking connection may have gone away (closed, timed out); its answer is dropped.
        match message {
            ShardMessage::Batch(batch) => {
                let (mut answer, logged) = shard.answer_peer(batch.ops).await;
                let Some(log) = shard.log().filter(|_| !matches!(logged, Logged::Nothing)) else {
                    let _ = batch.reply.send(answer);
                    continue;
                };
                glommio::spawn_local(async move {
                    if logged.durable(Some(&log)).await.is_err() {
                        answer.refuse_writes(Refusal::LogFailed);
                    }
                    let _ = batch.reply.send(answer);
                })
                .detach();
            }
            ShardMessage::Replicate(batch) => shard.replicate(batch.ops, batch.reply),
            ShardMessage::Stats(reply) => {
                let _ = reply.send(shard.answer_stats());
            }
            ShardMessage::Watch(request) => register_watcher(request, shard),
            ShardMessage::List(request) => {
                shard.counters.count_message_received();
                let _ = request.reply.send(shard.list_page(&request.query));
            }
            ShardMessage::Txn(message) => {
                shard.counters.count_message_received();
                super::txn::answer(shard, message).await;
            }
        }
    }
}

/// Registers a peer's watcher. Connecting its channel waits for the asking connection to
/// connect its end, so it runs as a task of its own: the peer's other messages never wait.
fn register_watcher(request: WatchRequest, shard: &Rc<ShardContext>) {
    shard.counters.count_message_received();
    let shard = Rc::clone(shard);
    glommio::spawn_local(async move {
        let WatchRequest {
            target,
            from,
            sender,
            shared,
            reply,
        } = request;
        let sender = WatchSender::Remote(sender.connect().await);
        // The asker may have gone meanwhile: its end is then closed, and the first change
        // offered drops the watcher.
        let _ = reply.send(shard.watch.register(target, from, sender, shared));
    })
    .detach();
}
