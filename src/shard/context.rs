//! What one shard's tasks share: its identity, its flags, the store it executes on, its end of
//! the mesh, the process-wide latches and its counters.
//!
//! Owns the shard's state and the answers it gives peers (their key batches and stats
//! requests). It lives on its shard's thread only (`Rc`, plain `Cell`s) and never hands a
//! reference to its store to another thread; it knows nothing of HTTP or sockets.

use std::cell::Cell;

use super::message::{Op, Outcome, PeerReply, RequestsByClass, ShardStats};
use super::router::Router;
use super::{ShardId, StoreHandle};
use crate::config::{Design, ServeArgs};
use crate::limits::PEER_REPLY_VALUE_BYTES_MAX;
use crate::sync::latch::Latch;
use crate::sync::oneshot;
use crate::sync::shim;

/// Latches every shard shares with the main thread.
#[derive(Clone)]
pub struct Latches {
    /// Opens when every shard is serving.
    pub ready: shim::Arc<Latch>,
    /// Opens on SIGTERM/SIGINT or when a shard fails: stop accepting, finish, exit.
    pub shutdown: shim::Arc<Latch>,
    /// Opens when every shard's thread has finished.
    pub exited: shim::Arc<Latch>,
}

impl Latches {
    /// Latches for `nr_shards` shards: none ready, no shutdown, none exited.
    pub fn new(nr_shards: usize) -> Latches {
        Latches {
            ready: shim::Arc::new(Latch::new(nr_shards)),
            shutdown: shim::Arc::new(Latch::new(1)),
            exited: shim::Arc::new(Latch::new(nr_shards)),
        }
    }
}

/// A shard's counters. Plain cells: only the shard's own thread updates them; other shards
/// read them by sending a stats request.
#[derive(Default)]
pub struct Counters {
    requests: Cell<RequestsByClass>,
    messages_sent: Cell<u64>,
    messages_received: Cell<u64>,
    /// Open connections on this shard (kept by the connection registry).
    connections: Cell<u64>,
}

impl Counters {
    /// Counts one response by its status class.
    pub fn count_response(&self, status: u16) {
        let mut requests = self.requests.get();
        match status / 100 {
            1 => requests.informational += 1,
            2 => requests.success += 1,
            3 => requests.redirection += 1,
            4 => requests.client_error += 1,
            _ => requests.server_error += 1,
        }
        self.requests.set(requests);
    }

    /// Counts one batch sent to another shard.
    pub fn count_message_sent(&self) {
        self.messages_sent.set(self.messages_sent.get() + 1);
    }

    fn count_message_received(&self) {
        self.messages_received.set(self.messages_received.get() + 1);
    }

    /// Counts a connection opened (`+1`) or closed (`-1`).
    pub fn count_connection(&self, opened: bool) {
        let open = self.connections.get();
        debug_assert!(opened || open > 0, "a connection closed that never opened");
        self.connections
            .set(if opened { open + 1 } else { open.saturating_sub(1) });
    }

    /// Open connections on this shard.
    pub fn open_connections(&self) -> u64 {
        self.connections.get()
    }
}

/// Everything one shard's tasks share. Lives on that shard's thread only (`Rc`).
pub struct ShardContext {
    pub id: ShardId,
    pub nr_shards: usize,
    /// The CPU the shard is pinned to.
    pub cpu: usize,
    pub args: ServeArgs,
    /// Where this shard's local operations run.
    pub store: StoreHandle,
    /// The mesh: key operations to their owners (sharded design), stats to every shard (both).
    pub router: Router,
    pub latches: Latches,
    pub counters: Counters,
    /// This shard's Raft group (`--peers`): writes and linearizable reads run through it.
    pub replication: Option<crate::replication::Group>,
}

impl ShardContext {
    /// The shard whose store holds `key`: its owner in the sharded design, this shard in the
    /// locked one (every executor reaches the one store directly).
    pub fn owner(&self, key: &[u8]) -> ShardId {
        match self.args.design {
            Design::Sharded => self.router.owner(key),
            Design::Locked => self.id,
        }
    }

    /// Executes an operation on this shard, handing its outcome to `f`.
    pub fn apply_local<R>(&self, op: Op, f: impl FnOnce(Outcome<&[u8]>) -> R) -> R {
        debug_assert_eq!(
            self.owner(op.key()),
            self.id,
            "an operation ran on a shard that does not own its key"
        );
        self.store.apply(op, f)
    }

    /// Answers one batch from another shard, in order. Found values are copied into the reply
    /// until they pass [`PEER_REPLY_VALUE_BYTES_MAX`]; the operations after that point are
    /// handed back unexecuted (`deferred`), and the asker sends them again once it has written
    /// what it has. The first operation always runs, so every batch makes progress.
    pub fn answer_peer(&self, ops: Vec<Op>) -> PeerReply {
        self.counters.count_message_received();
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut value_bytes = 0usize;
        let mut ops = ops.into_iter();
        for op in ops.by_ref() {
            let outcome = self.apply_local(op, |outcome| outcome.to_owned());
            if let Outcome::Found { value, .. } = &outcome {
                value_bytes += value.len();
            }
            outcomes.push(outcome);
            if value_bytes >= PEER_REPLY_VALUE_BYTES_MAX {
                break;
            }
        }
        PeerReply {
            outcomes,
            deferred: ops.collect(),
            ..PeerReply::default()
        }
    }

    /// This shard's numbers. In the locked design the one store's numbers are reported by
    /// shard 0 only, so that sums over shards stay right.
    pub fn stats(&self) -> ShardStats {
        let mut stats = ShardStats {
            id: self.id,
            cpu: self.cpu,
            ..ShardStats::default()
        };
        if self.args.design == Design::Sharded || self.id == 0 {
            self.store.fill_stats(&mut stats);
        }
        stats.requests = self.counters.requests.get();
        stats.messages_sent = self.counters.messages_sent.get();
        stats.messages_received = self.counters.messages_received.get();
        stats.connections = self.counters.open_connections();
        stats.replication = self.replication.as_ref().map(|group| group.status());
        stats
    }

    /// Runs a batch through this shard's Raft group, answering on `reply`; without one (no
    /// `--peers`), runs it here at once.
    pub fn replicate(&self, ops: Vec<Op>, reply: oneshot::Sender<PeerReply>) {
        match &self.replication {
            Some(group) => group.submit(ops, reply),
            None => {
                let _ = reply.send(self.answer_peer(ops));
            }
        }
    }

    /// Answers a peer's stats request.
    pub fn answer_stats(&self) -> ShardStats {
        self.counters.count_message_received();
        self.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_by_class_and_connections_never_go_negative() {
        let counters = Counters::default();
        for status in [100, 200, 201, 304, 404, 413, 503] {
            counters.count_response(status);
        }
        let requests = counters.requests.get();
        assert_eq!(
            (
                requests.informational,
                requests.success,
                requests.redirection,
                requests.client_error,
                requests.server_error
            ),
            (1, 2, 1, 2, 1)
        );
        counters.count_connection(true);
        counters.count_connection(true);
        counters.count_connection(false);
        assert_eq!(counters.open_connections(), 1);
    }
}
