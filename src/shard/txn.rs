//! Atomic multi-key transactions across shards (`POST /v1/txn`, atomic bulk updates): compares,
//! then one of two branches of operations, all or nothing, while every shard keeps serving the
//! keys no transaction holds.
//!
//! Owns the protocol and each shard's [`LockTable`]. A transaction whose keys all live on one
//! shard, none of them locked, runs there at once, synchronously, like a batch
//! ([`answer_once`]). Otherwise its coordinator (the connection's shard) locks its keys in one
//! global order, by (owner shard, key bytes): each owner locks, in that order, as many of its
//! part as are free and says how far it got ([`answer_lock`]); the coordinator waits on the
//! first held key, keeping what it holds, and asks again. Because every transaction takes its
//! locks in the same order, no cycle of waits can form (no deadlock), and a transaction that
//! waits never loses what it holds (no livelock). When an owner has locked its whole part it
//! evaluates that part's compares (locked keys cannot change). Then the coordinator picks the
//! branch and sends each owner its operations, which it applies and releases ([`answer_finish`]).
//! Nothing is applied before every compare was checked, so there is nothing to roll back.
//!
//! With `--data-dir` each shard's part is logged as one group record of its keys' resulting
//! states (recovery replays it whole or not at all), and every reply waits until the part is
//! durable. The log's room is taken before anything applies: the one-shard path reserves it
//! (its only await), and on the locking path each owner holds it once it has locked its part
//! ([`answer_lock`], `ShardLog::hold`), so a full disk refuses the whole transaction before any
//! part applies, and a finish appends from its hold with no await between applying and
//! appending. One shard's part is crash-atomic; a transaction across shards is not (each
//! shard's log is durable on its own: see docs/ARCHITECTURE.md, Durability).
//!
//! Plain operations on a locked key wait until it is released (`ShardContext::answer_peer`,
//! `Dispatcher::must_wait`), so no reader sees a transaction half applied. Every wait is bounded:
//! `TXN_LOCK_WAIT_MS_MAX` for a transaction's locks, `TXN_LOCK_HOLD_MS_MAX` for how long a lock
//! is honoured. It never touches another shard's store or lock table: a shard's part runs on
//! that shard, through its messages.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use super::ShardId;
use super::context::{Logged, ShardContext};
use super::message::{Op, Outcome, Refusal, ShardMessage};
use super::store::Store;
use crate::clock;
use crate::config::Design;
use crate::error::Error;
use crate::limits::{
    SHARDS_MAX, STORAGE_RECORD_PAYLOAD_BYTES_MAX, TXN_LOCK_HOLD_MS_MAX, TXN_LOCK_WAIT_MS_MAX, TXN_LOCKS_PER_SHARD_MAX,
    TXN_RESULT_VALUE_BYTES_MAX, TXN_RETRY_PAUSE_US_MAX, TXN_RETRY_PAUSE_US_MIN,
};
use crate::storage::{self, Hold};
use crate::sync::oneshot;

/// A transaction's identity: a shard-local sequence number times `SHARDS_MAX` plus the
/// coordinating shard's id, unique in the process.
pub type TxnId = u64;

/// What a compare checks about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// The key exists (`true`) or does not (`false`).
    Exists(bool),
    /// The key exists with this version (its ETag).
    Version(u64),
    /// The key exists with exactly these bytes.
    Value(Box<[u8]>),
}

/// One compare of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Box<[u8]>,
    pub test: Test,
}

/// A transaction: `success` runs when every compare holds, `failure` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    /// Compares plus both branches' operations (what `TXN_OPS_MAX` bounds).
    pub fn op_count(&self) -> usize {
        self.compares.len() + self.success.len() + self.failure.len()
    }

    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        let compares = self.compares.iter().map(|compare| &*compare.key);
        compares.chain(self.success.iter().chain(&self.failure).map(Op::key))
    }
}

/// What a transaction did: which branch ran, one outcome per operation of it, and the indices
/// of the compares that did not hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnAnswer {
    pub succeeded: bool,
    pub results: Vec<Outcome<Box<[u8]>>>,
    pub failed: Vec<usize>,
}

/// What the one-shard fast path did with a transaction.
#[derive(Debug)]
pub enum Once {
    /// It ran (and, with a log, its writes are durable per `--fsync`).
    Done(TxnAnswer),
    /// One of its keys is locked: it comes back, to go through the locks.
    Locked(Box<Txn>),
    /// The log could not take its writes: nothing was applied (or, `LogFailed` after
    /// applying, the writes are not durable).
    Refused(Refusal),
}

/// One owner's answer to a lock request: how many of the keys sent it now holds for the
/// transaction (a prefix), and, once that is all of them, which of its compares failed, or
/// why its log could not promise room for the part's writes (then the transaction aborts).
#[derive(Debug, Default)]
pub struct LockReply {
    pub locked: usize,
    pub failed: Vec<usize>,
    pub refused: Option<Refusal>,
}

/// Why an owner did not apply its part of a finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfinished {
    /// It no longer held the transaction's locks (they lapsed): nothing applied.
    Lapsed,
    /// Its log failed: nothing applied, or (after applying) the writes are not durable.
    Refused(Refusal),
}

/// An owner's part of a transaction's finish: the outcomes of its operations with their
/// places in the branch (durable per `--fsync` when it is sent), or why it did not finish.
pub type FinishReply = Result<PartOutcomes, Unfinished>;

/// The outcomes of a part's operations, each with its place in the branch.
pub type PartOutcomes = Vec<(usize, Outcome<Box<[u8]>>)>;

/// The messages of the protocol, carried by [`ShardMessage::Txn`].
#[derive(Debug)]
pub enum TxnMessage {
    /// Run a one-shard transaction at once if none of its keys is locked; otherwise hand it back.
    Once {
        txn: Box<Txn>,
        reply: oneshot::Sender<Once>,
    },
    /// Lock these keys (sorted) in order, as far as they are free; once all are locked, hold
    /// `log_bytes` of log room for the part's writes (with `--data-dir`), then check the
    /// compares, each with its index in the transaction.
    Lock {
        id: TxnId,
        keys: Vec<Box<[u8]>>,
        compares: Vec<(usize, Compare)>,
        log_bytes: usize,
        reply: oneshot::Sender<LockReply>,
    },
    /// Apply these operations (each with its index in the branch), copying at most
    /// `value_bytes_max` of found values into the reply, then release the keys. No operations:
    /// an abort.
    Finish {
        id: TxnId,
        keys: Vec<Box<[u8]>>,
        ops: Vec<(usize, Op)>,
        value_bytes_max: usize,
        reply: oneshot::Sender<FinishReply>,
    },
}

/// A held lock: by which transaction, and until when it is honoured.
#[derive(Debug, Clone, Copy)]
struct Lock {
    id: TxnId,
    until_ms: u64,
}

/// One shard's key locks. Lives on its shard's thread only.
#[derive(Default)]
pub struct LockTable {
    locks: HashMap<Box<[u8]>, Lock, ahash::RandomState>,
}

impl LockTable {
    /// True when no key is locked (the plain operations' fast path: one compare).
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Keys locked now (lapsed locks not yet taken back included).
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// True when `key` is locked by a transaction whose lock is still honoured at `now_ms`.
    pub fn is_locked(&self, key: &[u8], now_ms: u64) -> bool {
        self.locks.get(key).is_some_and(|lock| lock.until_ms > now_ms)
    }

    /// Locks `keys` for `id` in their order, stopping at the first one another transaction
    /// holds (or when the table is full); returns how many of them `id` holds now. A lapsed
    /// lock is taken back. Keys `id` already holds count as locked.
    pub fn lock_in_order(&mut self, id: TxnId, keys: &[Box<[u8]>], now_ms: u64) -> usize {
        let until_ms = now_ms.saturating_add(TXN_LOCK_HOLD_MS_MAX);
        for (at, key) in keys.iter().enumerate() {
            let full = self.locks.len() >= TXN_LOCKS_PER_SHARD_MAX;
            match self.locks.get_mut(key) {
                Some(lock) if lock.id == id => {}
                Some(lock) if lock.until_ms > now_ms => return at,
                Some(lock) => {
                    crate::warn_limited!("took back a transaction lock held past {TXN_LOCK_HOLD_MS_MAX} ms");
                    *lock = Lock { id, until_ms };
                }
                None if full => return at,
                None => {
                    self.locks.insert(key.clone(), Lock { id, until_ms });
                }
            }
        }
        keys.len()
    }

    /// True when `id` holds every one of `keys` and the locks are still honoured.
    pub fn holds_all(&self, id: TxnId, keys: &[Box<[u8]>], now_ms: u64) -> bool {
        keys.iter().all(|key| {
            self.locks
                .get(key)
                .is_some_and(|lock| lock.id == id && lock.until_ms > now_ms)
        })
    }

    /// Releases whichever of `keys` `id` holds.
    pub fn release(&mut self, id: TxnId, keys: &[Box<[u8]>]) {
        for key in keys {
            if self.locks.get(key).is_some_and(|lock| lock.id == id) {
                self.locks.remove(key);
            }
        }
    }
}

/// What a shard keeps for transactions: its lock table, the log room held for the parts it
/// has locked, and its id sequence.
#[derive(Default)]
pub struct TxnState {
    pub locks: RefCell<LockTable>,
    /// Log room held for a locked part's writes, until its finish (or until its locks lapse:
    /// then the next lock request drops it). At most one per transaction locked here.
    holds: RefCell<HashMap<TxnId, HeldRoom, ahash::RandomState>>,
    sequence: Cell<u64>,
}

/// Log room held for one transaction's part, and until when it is honoured (its locks').
struct HeldRoom {
    hold: Hold,
    until_ms: u64,
}

impl TxnState {
    fn next_id(&self, shard: ShardId) -> TxnId {
        let sequence = self.sequence.get() + 1;
        self.sequence.set(sequence);
        sequence * SHARDS_MAX as u64 + shard as u64
    }

    /// True when some of `keys` is locked now.
    pub fn any_locked<'k>(&self, mut keys: impl Iterator<Item = &'k [u8]>) -> bool {
        let locks = self.locks.borrow();
        if locks.is_empty() {
            return false;
        }
        let now = clock::now_ms();
        keys.any(|key| locks.is_locked(key, now))
    }
}

/// Whether `compare` holds on `store` now (read without counting or touching recency).
fn holds(store: &Store, compare: &Compare) -> bool {
    match (&compare.test, store.peek(&compare.key)) {
        (Test::Exists(exists), found) => *exists == found.is_some(),
        (Test::Version(version), Some((.., current))) => *version == current,
        (Test::Value(value), Some((current, ..))) => **value == *current,
        (_, None) => false,
    }
}

/// The indices of the compares that do not hold on `store`.
fn failed_compares<'c>(store: &Store, compares: impl Iterator<Item = (usize, &'c Compare)>) -> Vec<usize> {
    compares
        .filter(|(_, compare)| !holds(store, compare))
        .map(|(at, _)| at)
        .collect()
}

/// Applies `ops` in order, copying found values until they pass `value_bytes_max`; a get past
/// it answers `Withheld` (its version only).
///
/// In the sharded design each op goes through [`ShardContext::apply_local`], so the key index
/// and the watchers see a transaction's writes like any other; the ops run one after another
/// with no await between them, so nothing else on this shard runs in between. With a log, the
/// resulting state of every key they changed is then appended as one group record (recovery
/// replays it whole or not at all), from `hold`'s room or else a `reserve` the caller made with
/// no await since. In the locked design (no log) the one store's write lock is taken once for
/// all of them.
fn apply_all(
    shard: &ShardContext,
    ops: impl IntoIterator<Item = (usize, Op)>,
    value_bytes_max: usize,
    hold: Option<Hold>,
) -> (PartOutcomes, Logged) {
    let mut budget = value_bytes_max;
    let mut owned = |outcome: Outcome<&[u8]>| match outcome {
        Outcome::Found { value, version, .. } if value.len() > budget => Outcome::Withheld { version },
        outcome => {
            if let Outcome::Found { value, .. } = &outcome {
                budget -= value.len();
            }
            outcome.to_owned()
        }
    };
    if shard.args.design == Design::Locked {
        let outcomes = shard
            .store
            .exclusive(|store| ops.into_iter().map(|(at, op)| (at, owned(store.apply(op)))).collect());
        return (outcomes, Logged::Nothing);
    }
    let log = shard.log();
    let mut changed: Vec<Box<[u8]>> = Vec::new();
    let outcomes = ops
        .into_iter()
        .map(|(at, op)| {
            let key: Option<Box<[u8]>> = (log.is_some() && op.is_write()).then(|| op.key().into());
            let mut change = false;
            let outcome = shard.apply_local(op, |outcome| {
                change = matches!(
                    outcome,
                    Outcome::Created { .. }
                        | Outcome::Replaced { .. }
                        | Outcome::Updated { .. }
                        | Outcome::Deleted(true)
                );
                owned(outcome)
            });
            changed.extend(key.filter(|_| change));
            (at, outcome)
        })
        .collect();
    let logged = match log {
        Some(log) if !changed.is_empty() => log_states(shard, &log, changed, hold),
        _ => Logged::Nothing,
    };
    (outcomes, logged)
}

/// Appends the current state of each of `changed` (a Set read back from the store, or a
/// Delete) as one group record. A key changed twice is logged once, with its final state,
/// which is no larger than its last write's [`Op::log_bytes`]: the group fits what was held.
fn log_states(
    shard: &ShardContext,
    log: &storage::ShardLog,
    mut changed: Vec<Box<[u8]>>,
    hold: Option<Hold>,
) -> Logged {
    changed.sort_unstable();
    changed.dedup();
    let mut members = Vec::new();
    let now_unix_ms = storage::now_unix_ms();
    for key in &changed {
        shard.store.peek(key, |current| match current {
            Some((value, ttl_ms, version)) => {
                let deadline = ttl_ms.map(|ttl| now_unix_ms.saturating_add(ttl));
                storage::encode_set(&mut members, key, value, deadline, version);
            }
            None => storage::encode(&mut members, storage::RecordKind::Delete, key, &[]),
        });
    }
    match log.append_group(&members, hold) {
        Ok(lsn) => Logged::At(lsn),
        Err(error) => Logged::Failed(error),
    }
}

/// The group-record bytes a part's writes need at most: the larger of its two branches'
/// (0 when neither writes).
fn part_log_bytes<'o>(success: impl Iterator<Item = &'o Op>, failure: impl Iterator<Item = &'o Op>) -> usize {
    let bytes = |ops: &mut dyn Iterator<Item = &'o Op>| ops.map(Op::log_bytes).sum::<usize>();
    let most = bytes(&mut { success }).max(bytes(&mut { failure }));
    if most == 0 { 0 } else { storage::group_bytes(most) }
}

/// Runs a transaction whose keys this shard owns, at once and with the store to itself, unless
/// one of them is locked (then it comes back, to go through the locks). In the locked design
/// every key is "owned" here, and this takes the one store's write lock once.
///
/// With a log, room for the larger branch's writes is reserved first (the only await); then
/// the compares, the branch and the append of its group record run with no await in between.
/// When the log cannot take them and the branch that runs writes, nothing is applied
/// ([`Once::Refused`]). The answer must not be sent before the returned [`Logged`] is durable.
pub async fn answer_once(shard: &ShardContext, txn: Box<Txn>) -> (Once, Logged) {
    let mut refused = None;
    if let Some(log) = shard.log() {
        let bytes = part_log_bytes(txn.success.iter(), txn.failure.iter());
        if bytes > 0
            && let Err(error) = log.reserve(bytes).await
        {
            refused = Some(Refusal::from_storage(&error));
        }
    }
    if shard.txn.any_locked(txn.keys()) {
        return (Once::Locked(txn), Logged::Nothing);
    }
    debug_assert!(
        txn.keys().all(|key| shard.owner(key) == shard.id),
        "a one-shard transaction ran on a shard that does not own its keys"
    );
    let txn = *txn;
    if shard.args.design == Design::Locked {
        return (Once::Done(answer_once_locked(shard, txn)), Logged::Nothing);
    }
    // Compares, then the branch, with no await in between: nothing else runs on this shard
    // meanwhile, and every write goes through the key index and the watchers.
    let failed = shard
        .store
        .exclusive(|store| failed_compares(store, txn.compares.iter().enumerate()));
    let succeeded = failed.is_empty();
    let branch = if succeeded { txn.success } else { txn.failure };
    if let Some(refusal) = refused.filter(|_| branch.iter().any(Op::is_write)) {
        return (Once::Refused(refusal), Logged::Nothing);
    }
    let (results, logged) = apply_all(shard, branch.into_iter().enumerate(), TXN_RESULT_VALUE_BYTES_MAX, None);
    let answer = TxnAnswer {
        succeeded,
        results: results.into_iter().map(|(_, outcome)| outcome).collect(),
        failed,
    };
    (Once::Done(answer), logged)
}

/// The locked design's one-shard transaction: compares and branch under one write lock.
fn answer_once_locked(shard: &ShardContext, txn: Txn) -> TxnAnswer {
    shard.store.exclusive(|store| {
        let failed = failed_compares(store, txn.compares.iter().enumerate());
        let succeeded = failed.is_empty();
        let branch = if succeeded { txn.success } else { txn.failure };
        let mut budget = TXN_RESULT_VALUE_BYTES_MAX;
        let results = branch
            .into_iter()
            .map(|op| match store.apply(op) {
                Outcome::Found { value, version, .. } if value.len() > budget => Outcome::Withheld { version },
                outcome => {
                    if let Outcome::Found { value, .. } = &outcome {
                        budget -= value.len();
                    }
                    outcome.to_owned()
                }
            })
            .collect();
        TxnAnswer {
            succeeded,
            results,
            failed,
        }
    })
}

/// Locks what it can of a transaction's part on this shard. Once all of it is locked: with a
/// log, holds `log_bytes` of room for the part's writes (so that its finish cannot meet a full
/// disk), then checks the part's compares (its keys are locked: they cannot change meanwhile).
pub async fn answer_lock(
    shard: &ShardContext,
    id: TxnId,
    keys: &[Box<[u8]>],
    compares: &[(usize, Compare)],
    log_bytes: usize,
) -> LockReply {
    let locked = shard.txn.locks.borrow_mut().lock_in_order(id, keys, clock::now_ms());
    if locked < keys.len() {
        return LockReply {
            locked,
            ..LockReply::default()
        };
    }
    if let Some(refused) = hold_room(shard, id, log_bytes).await {
        return LockReply {
            locked,
            refused: Some(refused),
            ..LockReply::default()
        };
    }
    let compares = compares.iter().map(|(at, compare)| (*at, compare));
    let failed = shard.store.exclusive(|store| failed_compares(store, compares));
    LockReply {
        locked,
        failed,
        refused: None,
    }
}

/// Holds `log_bytes` of this shard's log for transaction `id` (once; nothing without a log or
/// writes), first dropping the holds of transactions whose locks lapsed. The refusal when the
/// log cannot promise the room.
async fn hold_room(shard: &ShardContext, id: TxnId, log_bytes: usize) -> Option<Refusal> {
    let log = shard.log().filter(|_| log_bytes > 0)?;
    let now = clock::now_ms();
    shard.txn.holds.borrow_mut().retain(|_, held| held.until_ms > now);
    if shard.txn.holds.borrow().contains_key(&id) {
        return None;
    }
    match log.hold(log_bytes).await {
        Ok(hold) => {
            let until_ms = now.saturating_add(TXN_LOCK_HOLD_MS_MAX);
            shard.txn.holds.borrow_mut().insert(id, HeldRoom { hold, until_ms });
            None
        }
        Err(error) => Some(Refusal::from_storage(&error)),
    }
}

/// Applies a transaction's operations on this shard (their states appended as one group
/// record, from the room held at lock time) and releases its keys. Nothing is applied when its
/// locks lapsed meanwhile, or when the log failed. No operations: an abort. The reply must
/// not be sent before the returned [`Logged`] is durable.
pub async fn answer_finish(
    shard: &ShardContext,
    id: TxnId,
    keys: &[Box<[u8]>],
    ops: Vec<(usize, Op)>,
    value_bytes_max: usize,
) -> (FinishReply, Logged) {
    debug_assert!(ops.iter().all(|(_, op)| shard.owner(op.key()) == shard.id));
    let hold = shard.txn.holds.borrow_mut().remove(&id).map(|held| held.hold);
    let log = shard.log().filter(|_| ops.iter().any(|(_, op)| op.is_write()));
    let mut refused = None;
    if let Some(log) = &log {
        // The one await: a segment rotation must end before records can be appended.
        if let Err(error) = log.until_appendable().await {
            refused = Some(Refusal::from_storage(&error));
        } else if hold.is_none() {
            refused = Some(Refusal::LogFailed); // no room was held: never expected
        }
    }
    let held = shard.txn.locks.borrow().holds_all(id, keys, clock::now_ms());
    let finished = match refused {
        _ if ops.is_empty() => Ok((Vec::new(), Logged::Nothing)),
        _ if !held => Err(Unfinished::Lapsed),
        Some(refusal) => Err(Unfinished::Refused(refusal)),
        None => Ok(apply_all(shard, ops, value_bytes_max, hold)),
    };
    shard.txn.locks.borrow_mut().release(id, keys);
    match finished {
        Ok((outcomes, logged)) => (Ok(outcomes), logged),
        Err(unfinished) => (Err(unfinished), Logged::Nothing),
    }
}

/// Answers one protocol message from a peer. Lock requests and finishes may wait for log
/// room; a reply whose writes were logged is sent by a task of its own once they are durable
/// (so the peer's channel is not held up by an fsync).
pub async fn answer(shard: &Rc<ShardContext>, message: TxnMessage) {
    // The asking connection may be gone; its answer is dropped (a Finish has still run).
    match message {
        TxnMessage::Once { txn, reply } => {
            let (once, logged) = answer_once(shard, txn).await;
            reply_when_durable(shard, logged, reply, once, || Once::Refused(Refusal::LogFailed));
        }
        TxnMessage::Lock {
            id,
            keys,
            compares,
            log_bytes,
            reply,
        } => {
            let _ = reply.send(answer_lock(shard, id, &keys, &compares, log_bytes).await);
        }
        TxnMessage::Finish {
            id,
            keys,
            ops,
            value_bytes_max,
            reply,
        } => {
            let (finished, logged) = answer_finish(shard, id, &keys, ops, value_bytes_max).await;
            let failed = || Err(Unfinished::Refused(Refusal::LogFailed));
            reply_when_durable(shard, logged, reply, finished, failed);
        }
    }
}

/// Sends `answer` on `reply` once `logged` is durable (at once when nothing was logged), or
/// what `failed` makes when it never will be.
fn reply_when_durable<T: 'static>(
    shard: &ShardContext,
    logged: Logged,
    reply: oneshot::Sender<T>,
    answer: T,
    failed: impl FnOnce() -> T + 'static,
) {
    let Some(log) = shard.log().filter(|_| !matches!(logged, Logged::Nothing)) else {
        let _ = reply.send(answer);
        return;
    };
    glommio::spawn_local(async move {
        let answer = match logged.durable(Some(&log)).await {
            Ok(()) => answer,
            Err(_) => failed(),
        };
        let _ = reply.send(answer);
    })
    .detach();
}

/// Waits until what this shard logged for the coordinator's own part is durable.
async fn durable_here(shard: &ShardContext, logged: Logged) -> Result<(), Error> {
    let log = shard.log();
    logged.durable(log.as_deref()).await.map_err(|_| Error::LogFailed)
}

/// One owner's part: its keys in lock order, its compares, the log room its writes need at
/// most, and how many keys it holds.
struct Part {
    owner: ShardId,
    keys: Vec<Box<[u8]>>,
    compares: Vec<(usize, Compare)>,
    log_bytes: usize,
    locked: usize,
}

/// Splits a transaction's keys and compares by owner, each owner's keys sorted and unique;
/// parts in owner order. Together that is the global lock order.
fn parts(shard: &ShardContext, txn: &Txn) -> Vec<Part> {
    let mut parts: Vec<Part> = Vec::new();
    for key in txn.keys() {
        let owner = shard.owner(key);
        let part = match parts.iter_mut().position(|part| part.owner == owner) {
            Some(at) => &mut parts[at],
            None => {
                parts.push(Part {
                    owner,
                    keys: Vec::new(),
                    compares: Vec::new(),
                    log_bytes: 0,
                    locked: 0,
                });
                parts.last_mut().expect("just pushed")
            }
        };
        part.keys.push(Box::from(key));
    }
    for (at, compare) in txn.compares.iter().enumerate() {
        let owner = shard.owner(&compare.key);
        if let Some(part) = parts.iter_mut().find(|part| part.owner == owner) {
            part.compares.push((at, compare.clone()));
        }
    }
    for part in &mut parts {
        part.keys.sort_unstable();
        part.keys.dedup();
        let owned = |op: &&Op| shard.owner(op.key()) == part.owner;
        part.log_bytes = part_log_bytes(txn.success.iter().filter(owned), txn.failure.iter().filter(owned));
    }
    parts.sort_unstable_by_key(|part| part.owner);
    parts
}

const GONE: &str = "a shard taking part in the transaction did not answer (shutting down)";

/// Runs a transaction to its end from the connection's shard: at once on a lone owner when
/// it can, through the locks otherwise. With a log, it answers only once every part's writes
/// are durable (per `--fsync`).
pub async fn run(shard: &ShardContext, txn: Txn) -> Result<TxnAnswer, Error> {
    let mut txn = Box::new(txn);
    // A part is no larger than the whole: split only a transaction that could be too large.
    let record_bytes_max = storage::group_bytes(STORAGE_RECORD_PAYLOAD_BYTES_MAX);
    if shard.log().is_some() && part_log_bytes(txn.success.iter(), txn.failure.iter()) > record_bytes_max {
        check_group_sizes(&parts(shard, &txn))?;
    }
    let first = txn.keys().next().map_or(shard.id, |key| shard.owner(key));
    if txn.keys().all(|key| shard.owner(key) == first) {
        let once = if first == shard.id {
            let (once, logged) = answer_once(shard, txn).await;
            durable_here(shard, logged).await?;
            once
        } else {
            ask(shard, first, |reply| TxnMessage::Once { txn, reply }).await?
        };
        match once {
            Once::Done(answer) => return Ok(answer),
            Once::Refused(refusal) => return Err(refusal.into()),
            Once::Locked(back) => txn = back,
        }
    }
    run_locked(shard, *txn).await
}

/// 413 when one shard's part would not fit in one log record (only a transaction near the
/// body-size ceiling can get there).
fn check_group_sizes(parts: &[Part]) -> Result<(), Error> {
    let record_bytes_max = storage::group_bytes(STORAGE_RECORD_PAYLOAD_BYTES_MAX);
    match parts.iter().map(|part| part.log_bytes).max() {
        Some(size) if size > record_bytes_max => Err(Error::PayloadTooLarge {
            what: "one shard's part of the transaction, as a write-ahead log record",
            size: size as u64,
            limit: record_bytes_max as u64,
            flag: "--max-body-bytes",
        }),
        _ => Ok(()),
    }
}

/// The locking path: lock every part in order (waiting on held keys; each owner holds log room
/// for its part once it has locked it), then finish each.
async fn run_locked(shard: &ShardContext, txn: Txn) -> Result<TxnAnswer, Error> {
    let id = shard.txn.next_id(shard.id);
    let mut parts = parts(shard, &txn);
    let give_up_at = clock::now_ms() + TXN_LOCK_WAIT_MS_MAX;
    let mut failed = Vec::new();
    let mut attempts = 0u32;
    for at in 0..parts.len() {
        let mut pause_us = TXN_RETRY_PAUSE_US_MIN;
        loop {
            attempts += 1;
            let reply = lock_part(shard, id, &parts[at]).await;
            let reply = match reply {
                Ok(LockReply {
                    refused: Some(refusal), ..
                }) => Err(Error::from(refusal)),
                reply => reply,
            };
            let reply = match reply {
                Ok(reply) => reply,
                Err(error) => {
                    release(shard, id, &parts[..=at]).await;
                    return Err(error);
                }
            };
            let part = &mut parts[at];
            part.locked += reply.locked;
            if part.locked == part.keys.len() {
                failed.extend(reply.failed);
                break;
            }
            if clock::now_ms() >= give_up_at {
                release(shard, id, &parts[..=at]).await;
                return Err(Error::Contended { attempts });
            }
            glommio::timer::sleep(Duration::from_micros(pause_us)).await;
            pause_us = (pause_us * 2).min(TXN_RETRY_PAUSE_US_MAX);
        }
    }
    failed.sort_unstable();
    let succeeded = failed.is_empty();
    let branch = if succeeded { txn.success } else { txn.failure };
    let results = finish(shard, id, &parts, branch).await?;
    Ok(TxnAnswer {
        succeeded,
        results,
        failed,
    })
}

/// Asks a part's owner to lock the keys it does not hold yet.
async fn lock_part(shard: &ShardContext, id: TxnId, part: &Part) -> Result<LockReply, Error> {
    let keys = &part.keys[part.locked..];
    if part.owner == shard.id {
        return Ok(answer_lock(shard, id, keys, &part.compares, part.log_bytes).await);
    }
    ask(shard, part.owner, |reply| TxnMessage::Lock {
        id,
        keys: keys.to_vec(),
        compares: part.compares.clone(),
        log_bytes: part.log_bytes,
        reply,
    })
    .await
}

/// Releases the keys (and the log room) held in `parts` (an abort).
async fn release(shard: &ShardContext, id: TxnId, parts: &[Part]) {
    for part in parts {
        if part.owner == shard.id {
            let _ = answer_finish(shard, id, &part.keys, Vec::new(), 0).await;
        } else if let Ok(receiver) = send_finish(shard, id, part, Vec::new(), 0).await {
            let _ = receiver.await;
        }
    }
}

/// Sends every part's owner its operations of the branch (and the release), all at once, then
/// gathers the outcomes in branch order; each owner answers once its part is durable.
async fn finish(
    shard: &ShardContext,
    id: TxnId,
    parts: &[Part],
    branch: Vec<Op>,
) -> Result<Vec<Outcome<Box<[u8]>>>, Error> {
    let count = branch.len();
    let mut by_owner: Vec<Vec<(usize, Op)>> = parts.iter().map(|_| Vec::new()).collect();
    for (at, op) in branch.into_iter().enumerate() {
        let owner = shard.owner(op.key());
        // Every operation's key is in some part: parts cover all of the transaction's keys.
        if let Some(part) = parts.iter().position(|part| part.owner == owner) {
            by_owner[part].push((at, op));
        }
    }
    // Each owner may copy an equal share of the answer's value budget.
    let value_bytes_max = TXN_RESULT_VALUE_BYTES_MAX / parts.len().max(1);
    let mut pending = Vec::with_capacity(parts.len());
    let mut local = None;
    for (part, ops) in parts.iter().zip(by_owner) {
        if part.owner == shard.id {
            local = Some((part, ops));
        } else {
            pending.push(send_finish(shard, id, part, ops, value_bytes_max).await);
        }
    }
    let mut replies: Vec<Result<FinishReply, Error>> = Vec::with_capacity(parts.len());
    let mut logged_here = Logged::Nothing;
    if let Some((part, ops)) = local {
        let (reply, logged) = answer_finish(shard, id, &part.keys, ops, value_bytes_max).await;
        logged_here = logged;
        replies.push(Ok(reply));
    }
    for receiver in pending {
        let reply = match receiver {
            Ok(receiver) => receiver.await.map_err(|_| Error::Unavailable(GONE)),
            Err(error) => Err(error),
        };
        replies.push(reply);
    }
    let durable_here = durable_here(shard, logged_here).await;
    gather(count, replies, durable_here)
}

/// Puts the owners' outcomes in branch order; the first failure when some part did not finish.
fn gather(
    count: usize,
    replies: Vec<Result<FinishReply, Error>>,
    durable_here: Result<(), Error>,
) -> Result<Vec<Outcome<Box<[u8]>>>, Error> {
    let mut results: Vec<Option<Outcome<Box<[u8]>>>> = (0..count).map(|_| None).collect();
    let mut error = durable_here.err();
    for reply in replies {
        match reply {
            Ok(Ok(outcomes)) => outcomes
                .into_iter()
                .for_each(|(at, outcome)| results[at] = Some(outcome)),
            Ok(Err(Unfinished::Refused(_))) => {
                error.get_or_insert(Error::LogFailed);
            }
            Ok(Err(Unfinished::Lapsed)) | Err(_) => {
                error = Some(Error::Unavailable(
                    "the transaction outlived its locks or lost a shard while committing: it may be partly applied",
                ));
            }
        }
    }
    if let Some(error) = error {
        return Err(error);
    }
    results
        .into_iter()
        .map(|outcome| outcome.ok_or(Error::Unavailable("internal error: a transaction result is missing")))
        .collect()
}

/// Sends a remote part's owner its finish; the receiver yields its reply.
async fn send_finish(
    shard: &ShardContext,
    id: TxnId,
    part: &Part,
    ops: Vec<(usize, Op)>,
    value_bytes_max: usize,
) -> Result<oneshot::Receiver<FinishReply>, Error> {
    let (reply, receiver) = oneshot::channel();
    let message = TxnMessage::Finish {
        id,
        keys: part.keys.clone(),
        ops,
        value_bytes_max,
        reply,
    };
    shard
        .router
        .deliver(part.owner, ShardMessage::Txn(message))
        .await
        .map_err(|_| Error::Unavailable(GONE))?;
    Ok(receiver)
}

/// Sends `owner` the protocol message `message` builds around a reply slot, and waits for the
/// answer; an owner that is gone (its channel closed, or the slot dropped) is 503.
async fn ask<T>(
    shard: &ShardContext,
    owner: ShardId,
    message: impl FnOnce(oneshot::Sender<T>) -> TxnMessage,
) -> Result<T, Error> {
    let (reply, receiver) = oneshot::channel();
    shard
        .router
        .deliver(owner, ShardMessage::Txn(message(reply)))
        .await
        .map_err(|_| Error::Unavailable(GONE))?;
    receiver.await.map_err(|_| Error::Unavailable(GONE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<Box<[u8]>> {
        names.iter().map(|name| Box::from(name.as_bytes())).collect()
    }

    #[test]
    fn locks_are_taken_in_order_up_to_the_first_held_key() {
        // Goal: a transaction locks a prefix of its keys, stops at one another holds, keeps
        // what it has, and gets the rest once the holder releases.
        let mut table = LockTable::default();
        assert_eq!(table.lock_in_order(1, &keys(&["b"]), 0), 1);
        assert_eq!(table.lock_in_order(2, &keys(&["a", "b", "c"]), 0), 1, "stops at b");
        assert!(table.is_locked(b"a", 0) && table.is_locked(b"b", 0) && !table.is_locked(b"c", 0));
        assert_eq!(table.lock_in_order(2, &keys(&["b", "c"]), 0), 0, "b is still held");
        table.release(1, &keys(&["b"]));
        assert_eq!(table.lock_in_order(2, &keys(&["b", "c"]), 0), 2);
        assert!(table.holds_all(2, &keys(&["a", "b", "c"]), 0));
        table.release(1, &keys(&["a"]));
        assert!(
            table.is_locked(b"a", 0),
            "a release by another transaction changes nothing"
        );
        table.release(2, &keys(&["a", "b", "c"]));
        assert!(table.is_empty());
    }

    #[test]
    fn a_lapsed_lock_is_taken_back_and_its_holder_no_longer_holds_it() {
        // Goal: a lock held past TXN_LOCK_HOLD_MS_MAX stops counting and can be taken, and its
        // first holder then fails holds_all (its late commit is refused).
        let mut table = LockTable::default();
        assert_eq!(table.lock_in_order(1, &keys(&["k"]), 100), 1);
        let later = 100 + TXN_LOCK_HOLD_MS_MAX;
        assert!(!table.is_locked(b"k", later));
        assert_eq!(table.lock_in_order(2, &keys(&["k"]), later), 1);
        assert!(!table.holds_all(1, &keys(&["k"]), later));
        assert!(table.holds_all(2, &keys(&["k"]), later));
    }

    #[test]
    fn ordered_locking_never_deadlocks_two_transactions() {
        // Goal: two transactions wanting the same keys, both in the global order, interleave in
        // every way and one of them always gets all its keys (no cycle of waits).
        let all = keys(&["a", "b", "c", "d"]);
        for split in 0..=all.len() {
            let mut table = LockTable::default();
            let mut held = [0usize; 2];
            held[0] += table.lock_in_order(1, &all[..split], 0);
            held[1] += table.lock_in_order(2, &all, 0);
            held[0] += table.lock_in_order(1, &all[held[0]..], 0);
            assert!(held.contains(&all.len()), "split {split}: {held:?}");
        }
    }

    #[test]
    fn a_full_table_refuses_new_keys_but_not_held_ones() {
        // Goal: TXN_LOCKS_PER_SHARD_MAX bounds the table; a key the transaction holds still
        // counts as locked when the table is full.
        let mut table = LockTable::default();
        let many: Vec<Box<[u8]>> = (0..TXN_LOCKS_PER_SHARD_MAX)
            .map(|i| Box::from(&i.to_le_bytes()[..]))
            .collect();
        assert_eq!(table.lock_in_order(1, &many, 0), TXN_LOCKS_PER_SHARD_MAX);
        assert_eq!(table.lock_in_order(2, &keys(&["new"]), 0), 0);
        assert_eq!(table.lock_in_order(1, &many[..3], 0), 3);
        assert_eq!(table.len(), TXN_LOCKS_PER_SHARD_MAX);
    }

    #[test]
    fn ids_are_unique_per_shard_and_across_shards() {
        let (a, b) = (TxnState::default(), TxnState::default());
        let ids = [a.next_id(0), a.next_id(0), b.next_id(1), b.next_id(1)];
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), 4);
    }

    // Goal: with a log, a part locked on its owner holds log room that its finish uses after
    // other writers filled the segment meanwhile; the finish logs each changed key once, with
    // its final state, as one group that recovery reads back; the hold is gone afterwards.
    #[test]
    fn a_locked_part_holds_log_room_until_its_finish_logs_it_as_one_group() {
        use crate::shard::harness::{Layout, on_shards};
        use crate::shard::message::Record;
        use crate::storage::{self, Config, DataDir, FsyncPolicy, RecoveryStats, ShardLog};
        let root = storage::test_dir("txn-hold");
        let dir = DataDir::lock(&root).unwrap();
        let layout_1 = dir.layout_for(1).unwrap();
        let (open_layout, lock_path) = (layout_1.clone(), root.clone());
        drop(dir);
        let layout = Layout {
            cpus: vec![0],
            args: crate::config::ServeArgs::from_flags(&[]),
            gone: vec![],
        };
        on_shards(
            layout,
            |_| Store::default(),
            move |shard| async move {
                let _dir = DataDir::lock(&lock_path).unwrap();
                let config = Config {
                    buffer_bytes_max: 4096,
                    segment_bytes: 64 << 10,
                    ..Config::new(FsyncPolicy::Always)
                };
                let log = ShardLog::open(config, &open_layout, 0, &RecoveryStats::default())
                    .await
                    .unwrap();
                *shard.log.borrow_mut() = Some(Rc::new(log));
                let put = |key: &str, bytes: usize| Op::put(Record::new(key.as_bytes(), &vec![b'v'; bytes]), None);
                let ops = vec![(0, put("a", 20_000)), (1, put("b", 20_000)), (2, put("a", 10))];
                let log_bytes = part_log_bytes(ops.iter().map(|(_, op)| op), std::iter::empty());
                let id = shard.txn.next_id(shard.id);
                let keys = keys(&["a", "b"]);
                let reply = answer_lock(&shard, id, &keys, &[], log_bytes).await;
                assert_eq!((reply.locked, reply.refused), (2, None));
                let other = shard.log().unwrap();
                for i in 0..60 {
                    let key = format!("filler-{i}");
                    other.reserve(storage::set_bytes(key.len(), 1000)).await.unwrap();
                    other.append_set(key.as_bytes(), &[b'f'; 1000], None).unwrap();
                }
                let (reply, logged) = answer_finish(&shard, id, &keys, ops, 0).await;
                assert_eq!(reply.map(|outcomes| outcomes.len()), Ok(3));
                assert!(shard.txn.holds.borrow().is_empty() && shard.txn.locks.borrow().is_empty());
                logged.durable(shard.log().as_deref()).await.unwrap();
                drop(other);
                let log = shard.log.borrow_mut().take().unwrap();
                Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
            },
        );
        let recovered = storage::run_on_executor(move || async move {
            let dir = DataDir::lock(&root).unwrap();
            let mut states = Vec::new();
            storage::recover(
                &dir,
                &layout_1,
                0,
                |key| !key.starts_with(b"filler"),
                |replayed| {
                    if let storage::Replayed::Set { key, value, .. } = replayed {
                        states.push((key.to_vec(), value.len()));
                    }
                },
            )
            .await
            .unwrap();
            states
        });
        // Each key once, with its final state (a was written twice).
        let expected = vec![(b"a".to_vec(), 10), (b"b".to_vec(), 20_000)];
        assert_eq!(recovered, expected);
    }
}
