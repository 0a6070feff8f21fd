//! What one shard's tasks share: its identity, its flags, the store it executes on, its end of
//! the mesh, the process-wide latches and its counters.
//!
//! Owns the shard's state and the answers it gives peers (their key batches and stats
//! requests). It lives on its shard's thread only (`Rc`, plain `Cell`s) and never hands a
//! reference to its store to another thread; it knows nothing of HTTP or sockets.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::index::KeyIndex;
use super::message::{ListPage, ListQuery, Op, Outcome, PeerReply, Refusal, RequestsByClass, ShardStats, StorageStats};
use super::router::Router;
use super::store::Store;
use super::txn::TxnState;
use super::watch::Watch;
use super::{ShardId, StoreHandle};
use crate::config::{Design, ServeArgs};
use crate::limits::PEER_REPLY_VALUE_BYTES_MAX;
use crate::replication::codec::Command;
use crate::storage::{Lsn, RecoveryStats, ShardLog, StorageError};
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

    /// Counts one message received from another shard.
    pub fn count_message_received(&self) {
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
    /// The shard's write-ahead log (`--data-dir`), once recovery has opened it; taken out to
    /// be closed at shutdown.
    pub log: RefCell<Option<Rc<ShardLog>>>,
    /// What this shard's start-up recovery read, for stats.
    pub recovered: RefCell<RecoveryStats>,
    /// With `--auth-token-file`: this shard's copy of the token table, refreshed on SIGHUP.
    pub auth: Option<crate::api::auth::ShardTokens>,
    /// The shard's keys in order, for prefix listings (off until
    /// [`ShardContext::start_change_tracking`]).
    pub index: KeyIndex,
    /// The watchers registered here and the recent changes they may resume from.
    pub watch: Watch,
    /// The transaction locks on this shard's keys, and its transaction ids.
    pub txn: TxnState,
    /// This shard's Raft group (`--peers`): writes and linearizable reads run through it.
    pub replication: Option<crate::replication::Group>,
}

/// A write applied here whose log record the answer must wait for.
pub enum Logged {
    /// Nothing to wait for: a read, an unchanged key, or no `--data-dir`.
    Nothing,
    /// Wait for [`ShardLog::durable`] of this position before answering.
    At(Lsn),
    /// The append failed (the log is poisoned): the write is applied but will never be durable.
    Failed(StorageError),
}

impl ShardContext {
    /// The shard's log, when it runs with `--data-dir` and has recovered.
    pub fn log(&self) -> Option<Rc<ShardLog>> {
        self.log.borrow().clone()
    }

    /// Executes an operation on this shard like [`ShardContext::apply_local`] and, with a log,
    /// appends the key's resulting state when a write changed it: the value and deadline read
    /// back from the store (a Set), or a Delete. The caller reserved the record's bytes
    /// ([`Op::log_bytes`]) with no await since, so the append cannot find the log busy.
    /// A refused write (507 capacity) and an unchanged key log nothing.
    pub fn apply_logged<R>(&self, op: Op, f: impl FnOnce(Outcome<&[u8]>) -> R) -> (R, Logged) {
        let log = if op.is_write() { self.log() } else { None };
        let Some(log) = log else {
            return (self.apply_local(op, f), Logged::Nothing);
        };
        let key: Box<[u8]> = op.key().into();
        let (answer, changed) = self.apply_local(op, |outcome| {
            let changed = matches!(
                outcome,
                Outcome::Created { .. } | Outcome::Replaced { .. } | Outcome::Updated { .. } | Outcome::Deleted(true)
            );
            (f(outcome), changed)
        });
        if !changed {
            return (answer, Logged::Nothing);
        }
        let appended = self.store.peek(&key, |current| match current {
            Some((value, ttl_ms, version)) => {
                let deadline = ttl_ms.map(|ttl| crate::storage::now_unix_ms().saturating_add(ttl));
                log.append_set_versioned(&key, value, deadline, version)
            }
            None => log.append_delete(&key),
        });
        match appended {
            Ok(lsn) => (answer, Logged::At(lsn)),
            Err(error) => (answer, Logged::Failed(error)),
        }
    }

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
        let StoreHandle::Owned(_) = &self.store else {
            return self.store.apply(op, f);
        };
        if !self.index.is_on() && !self.watch.is_on() {
            return self.store.apply(op, f);
        }
        // The op moves into the store: a write's key is copied first, for the index (when it
        // creates) and the watchers (when someone wants its changes).
        let key: Option<Box<[u8]>> = match &op {
            Op::Put { .. } => Some(op.key().into()),
            Op::Update { .. } if self.watch.wants(op.key()) => Some(op.key().into()),
            _ => None,
        };
        self.tracked(key, |store| store.apply(op), f)
    }

    /// Applies one command of a committed Raft entry, like [`ShardContext::apply_local`]: a
    /// put with the proposer's deadline (moved onto this node's clock), or the leader's
    /// conditional expire (`Deleted(whether it removed the key)`).
    pub fn apply_command<R>(&self, command: Command, f: impl FnOnce(Outcome<&[u8]>) -> R) -> R {
        match command {
            Command::Op(op) => self.apply_local(op, f),
            Command::PutUntil {
                record,
                expires_at_unix_ms,
                condition,
            } => {
                debug_assert_eq!(self.owner(record.key()), self.id, "a command for another shard");
                let deadline = crate::storage::unix_to_mono_ms(expires_at_unix_ms);
                let key = Some(record.key().into());
                self.tracked(key, |store| store.put_until_if(record, deadline, condition), f)
            }
            Command::Expire { key, version } => {
                debug_assert_eq!(self.owner(&key), self.id, "a command for another shard");
                self.tracked(None, |store| Outcome::Deleted(store.expire_version(&key, version)), f)
            }
        }
    }

    /// Runs `write` on the store, then tells the key index and the watchers what it changed:
    /// the records it removed, and `key` (a put's or watched update's) if it set or created
    /// it.
    fn tracked<R>(
        &self,
        key: Option<Box<[u8]>>,
        write: impl FnOnce(&mut Store) -> Outcome<&[u8]>,
        f: impl FnOnce(Outcome<&[u8]>) -> R,
    ) -> R {
        let StoreHandle::Owned(store) = &self.store else {
            return self.store.exclusive(|store| f(write(store)));
        };
        if !self.index.is_on() && !self.watch.is_on() {
            return f(write(&mut store.borrow_mut()));
        }
        let (answer, created, set) = {
            let mut store = store.borrow_mut();
            let outcome = write(&mut store);
            let created = matches!(outcome, Outcome::Created { .. });
            let set = matches!(
                outcome,
                Outcome::Created { .. } | Outcome::Replaced { .. } | Outcome::Updated { .. }
            );
            (f(outcome), created, set)
        };
        let mut store = store.borrow_mut();
        self.index
            .take_removals(&mut store, |record, cause| self.watch.removed(record, cause));
        if let Some(key) = key {
            if set
                && self.watch.wants(&key)
                && let Some((value, _, version)) = store.peek(&key)
            {
                self.watch.set(&key, value, version);
            }
            if created {
                self.index.insert(&key);
            }
        }
        answer
    }

    /// Turns on, as the flags and the design allow, the key index (filled from the store as it
    /// is now) and change numbering for watchers. Call it once, after `--load` or a recovery
    /// filled the store: changes made before are neither indexed twice nor watched.
    pub fn start_change_tracking(&self) {
        if self.args.design != Design::Sharded {
            return;
        }
        let StoreHandle::Owned(store) = &self.store else {
            return;
        };
        let mut store = store.borrow_mut();
        if self.args.key_index {
            self.index.start(&mut store);
        }
        store.track_removals(true);
        self.watch.start(
            self.args.watch_history_changes as usize,
            self.args.watchers_max as usize,
        );
    }

    /// Reclaims at most `keys_max` expired keys (and takes them out of the index); returns
    /// how many. None in cluster mode: there only the leader's expire entries remove keys.
    pub fn expire(&self, keys_max: usize) -> usize {
        let expired = self.store.expire(keys_max);
        if let (StoreHandle::Owned(store), true) = (&self.store, self.watch.is_on()) {
            self.index.take_removals(&mut store.borrow_mut(), |record, cause| {
                self.watch.removed(record, cause)
            });
        }
        expired
    }

    /// This shard's next page of a listing (empty when the index is off).
    pub fn list_page(&self, query: &ListQuery) -> ListPage {
        match &self.store {
            StoreHandle::Owned(store) => self.index.page(&store.borrow(), query),
            StoreHandle::Locked(_) => ListPage::default(),
        }
    }

    /// Answers one batch from another shard, in order. Found values are copied into the reply
    /// until they pass [`PEER_REPLY_VALUE_BYTES_MAX`]; the operations after that point are
    /// handed back unexecuted (`deferred`), and the asker sends them again once it has written
    /// what it has. The first operation runs unless its key is locked by a transaction: an
    /// operation on a locked key and the ones after it come back `blocked`, to be sent again
    /// after a pause (so no one reads or writes a key in a transaction's commit window).
    ///
    /// With a log, room for every write's record is reserved first (if that fails, the writes
    /// answer [`Outcome::Refused`] unapplied and the reads still run); then the batch runs
    /// without an await. The reply must not be sent before [`ShardLog::durable`] of the
    /// returned position (see [`crate::shard::router::serve_peer`]).
    pub async fn answer_peer(&self, ops: Vec<Op>) -> (PeerReply, Logged) {
        self.counters.count_message_received();
        let mut refused = None;
        if let Some(log) = self.log() {
            let bytes: usize = ops.iter().map(Op::log_bytes).sum();
            if bytes > 0
                && let Err(error) = log.reserve(bytes).await
            {
                refused = Some(Refusal::from_storage(&error));
            }
        }
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut value_bytes = 0usize;
        let mut logged = Logged::Nothing;
        let mut ops = ops.into_iter().peekable();
        let mut blocked = false;
        while let Some(op) = ops.next_if(|op| {
            blocked = self.txn.any_locked(std::iter::once(op.key()));
            !blocked
        }) {
            if let Some(refusal) = refused.filter(|_| op.is_write()) {
                outcomes.push(Outcome::Refused(refusal));
                continue;
            }
            let (outcome, this) = self.apply_logged(op, |outcome| outcome.to_owned());
            logged = logged.then(this);
            if let Outcome::Found { value, .. } = &outcome {
                value_bytes += value.len();
            }
            outcomes.push(outcome);
            if value_bytes >= PEER_REPLY_VALUE_BYTES_MAX {
                break;
            }
        }
        let reply = PeerReply {
            outcomes,
            deferred: ops.collect(),
            blocked,
            ..PeerReply::default()
        };
        (reply, logged)
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
        if let Some(log) = self.log() {
            stats.storage = storage_stats(&log, &self.recovered.borrow());
        }
        stats.replication = self.replication.as_ref().map(|group| group.status());
        stats
    }

    /// Runs a batch through this shard's Raft group, answering on `reply`. Only called in
    /// cluster mode (`--peers`); without a group the reply is dropped, which the asker reads as
    /// the owner gone (503).
    pub fn replicate(&self, ops: Vec<Op>, reply: oneshot::Sender<PeerReply>) {
        match &self.replication {
            Some(group) => group.submit(ops, reply),
            None => drop(reply),
        }
    }

    /// Answers a peer's stats request.
    pub fn answer_stats(&self) -> ShardStats {
        self.counters.count_message_received();
        self.stats()
    }
}

impl Logged {
    /// The later of two writes' waits: the newest position, or the first failure.
    pub fn then(self, next: Logged) -> Logged {
        match (self, next) {
            (Logged::Failed(error), _) | (_, Logged::Failed(error)) => Logged::Failed(error),
            (Logged::At(a), Logged::At(b)) => Logged::At(a.max(b)),
            (Logged::At(lsn), Logged::Nothing) | (Logged::Nothing, Logged::At(lsn)) => Logged::At(lsn),
            (Logged::Nothing, Logged::Nothing) => Logged::Nothing,
        }
    }

    /// Waits until what was logged is durable (per `--fsync`); the error when it never will be.
    pub async fn durable(&self, log: Option<&ShardLog>) -> Result<(), StorageError> {
        match (self, log) {
            (Logged::Failed(error), _) => Err(error.clone()),
            (Logged::At(lsn), Some(log)) => log.durable(*lsn).await,
            _ => Ok(()),
        }
    }
}

/// A log's numbers and the recovery's, as `/stats` shows them.
fn storage_stats(log: &ShardLog, recovered: &RecoveryStats) -> StorageStats {
    let stats = log.stats();
    StorageStats {
        log_bytes: stats.log_bytes,
        segments: stats.segments,
        snapshot_age_ms: stats.snapshot_age_ms(),
        snapshots: stats.snapshots,
        writes: stats.writes,
        written_bytes: stats.written_bytes,
        fsyncs: stats.fsyncs,
        fsync_us_sum: stats.fsync_us_sum,
        fsync_us_max: stats.fsync_us_max,
        recovery_us: recovered.elapsed_us,
        recovery_records: recovered.records,
        recovery_records_applied: recovered.records_applied,
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

    // Goal: a connection waits for its newest write, and one failed append poisons the wait.
    #[test]
    fn logged_keeps_the_newest_position_and_the_first_failure() {
        let at = |n| Logged::At(Lsn(n));
        let Logged::At(lsn) = at(5).then(Logged::Nothing).then(at(9)).then(at(7)) else {
            panic!("a position")
        };
        assert_eq!(lsn, Lsn(9));
        assert!(matches!(Logged::Nothing.then(Logged::Nothing), Logged::Nothing));
        let failed = at(3).then(Logged::Failed(StorageError::LogBusy)).then(at(11));
        assert!(matches!(failed, Logged::Failed(StorageError::LogBusy)));
    }
}
