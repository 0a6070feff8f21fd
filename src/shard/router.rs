//! Routes operations to the shard that owns their key, over glommio's channel mesh.
//!
//! Owns the sending half of the mesh (one bounded channel to every other shard) and the task
//! that answers messages arriving from peers. It never executes a peer's operation anywhere but
//! on the store of the shard it runs on, and never shares that store.

use glommio::channels::channel_mesh::Senders;
use glommio::channels::shared_channel::ConnectedReceiver;

use super::context::ShardContext;
use super::message::{Batch, Op, PeerReply, ShardMessage, ShardStats};
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

    async fn deliver(&self, peer: ShardId, message: ShardMessage) -> Result<(), OwnerGone> {
        self.senders.send_to(peer, message).await.map_err(|_| OwnerGone)
    }

    /// Closes every channel this shard sends on: each peer's serving task for this shard ends
    /// once it has answered what is already queued.
    pub fn close(&self) {
        self.senders.close();
    }
}

/// Answers the messages one peer sends, in order, until that peer closes its channel.
pub async fn serve_peer(receiver: ConnectedReceiver<ShardMessage>, shard: &ShardContext) {
    while let Some(message) = receiver.recv().await {
        // The asking connection may have gone away (closed, timed out); its answer is dropped.
        match message {
            ShardMessage::Batch(batch) => {
                let _ = batch.reply.send(shard.answer_peer(batch.ops));
            }
            ShardMessage::Replicate(batch) => shard.replicate(batch.ops, batch.reply),
            ShardMessage::Stats(reply) => {
                let _ = reply.send(shard.answer_stats());
            }
        }
    }
}
