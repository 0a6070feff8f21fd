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
//! Plain operations on a locked key wait until it is released (`ShardContext::answer_peer`,
//! `Dispatcher::must_wait`), so no reader sees a transaction half applied. Every wait is bounded:
//! `TXN_LOCK_WAIT_MS_MAX` for a transaction's locks, `TXN_LOCK_HOLD_MS_MAX` for how long a lock
//! is honoured. It never touches another shard's store or lock table: a shard's part runs on
//! that shard, through its messages.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use super::ShardId;
use super::context::ShardContext;
use super::message::{Op, Outcome, ShardMessage};
use super::store::Store;
use crate::clock;
use crate::config::Design;
use crate::error::Error;
use crate::limits::{
    SHARDS_MAX, TXN_LOCK_HOLD_MS_MAX, TXN_LOCK_WAIT_MS_MAX, TXN_LOCKS_PER_SHARD_MAX, TXN_RESULT_VALUE_BYTES_MAX,
    TXN_RETRY_PAUSE_US_MAX, TXN_RETRY_PAUSE_US_MIN,
};
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

/// One owner's answer to a lock request: how many of the keys sent it now holds for the
/// transaction (a prefix), and, once that is all of them, which of its compares failed.
#[derive(Debug, Default)]
pub struct LockReply {
    pub locked: usize,
    pub failed: Vec<usize>,
}

/// An owner's part of a transaction's finish: the outcomes of its operations with their
/// places in the branch, or `None` when it no longer held the transaction's locks.
pub type FinishReply = Option<Vec<(usize, Outcome<Box<[u8]>>)>>;

/// The messages of the protocol, carried by [`ShardMessage::Txn`].
#[derive(Debug)]
pub enum TxnMessage {
    /// Run a one-shard transaction at once if none of its keys is locked; otherwise hand it back.
    Once {
        txn: Box<Txn>,
        reply: oneshot::Sender<Result<TxnAnswer, Box<Txn>>>,
    },
    /// Lock these keys (sorted) in order, as far as they are free; then check the compares,
    /// each with its index in the transaction.
    Lock {
        id: TxnId,
        keys: Vec<Box<[u8]>>,
        compares: Vec<(usize, Compare)>,
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

/// What a shard keeps for transactions: its lock table and its id sequence.
#[derive(Default)]
pub struct TxnState {
    pub locks: RefCell<LockTable>,
    sequence: Cell<u64>,
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
/// with no await between them, so nothing else on this shard runs in between. In the locked
/// design the one store's write lock is taken once for all of them.
fn apply_all(
    shard: &ShardContext,
    ops: impl IntoIterator<Item = (usize, Op)>,
    value_bytes_max: usize,
) -> Vec<(usize, Outcome<Box<[u8]>>)> {
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
    match shard.args.design {
        Design::Sharded => ops
            .into_iter()
            .map(|(at, op)| (at, shard.apply_local(op, &mut owned)))
            .collect(),
        Design::Locked => shard
            .store
            .exclusive(|store| ops.into_iter().map(|(at, op)| (at, owned(store.apply(op)))).collect()),
    }
}

/// Runs a transaction whose keys this shard owns, at once and with the store to itself, unless
/// one of them is locked (then it comes back, to go through the locks). In the locked design
/// every key is "owned" here, and this takes the one store's write lock once.
pub fn answer_once(shard: &ShardContext, txn: Box<Txn>) -> Result<TxnAnswer, Box<Txn>> {
    if shard.txn.any_locked(txn.keys()) {
        return Err(txn);
    }
    debug_assert!(
        txn.keys().all(|key| shard.owner(key) == shard.id),
        "a one-shard transaction ran on a shard that does not own its keys"
    );
    let txn = *txn;
    if shard.args.design == Design::Locked {
        // Every executor reaches the one store: compares and branch under one write lock.
        return Ok(shard.store.exclusive(|store| {
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
        }));
    }
    // Compares, then the branch, with no await in between: nothing else runs on this shard
    // meanwhile, and every write goes through the key index and the watchers.
    let failed = shard
        .store
        .exclusive(|store| failed_compares(store, txn.compares.iter().enumerate()));
    let succeeded = failed.is_empty();
    let branch = if succeeded { txn.success } else { txn.failure };
    let results = apply_all(shard, branch.into_iter().enumerate(), TXN_RESULT_VALUE_BYTES_MAX);
    Ok(TxnAnswer {
        succeeded,
        results: results.into_iter().map(|(_, outcome)| outcome).collect(),
        failed,
    })
}

/// Locks what it can of a transaction's part on this shard; checks the part's compares once
/// all of it is locked.
pub fn answer_lock(shard: &ShardContext, id: TxnId, keys: &[Box<[u8]>], compares: &[(usize, Compare)]) -> LockReply {
    let locked = shard.txn.locks.borrow_mut().lock_in_order(id, keys, clock::now_ms());
    let failed = if locked == keys.len() {
        let compares = compares.iter().map(|(at, compare)| (*at, compare));
        shard.store.exclusive(|store| failed_compares(store, compares))
    } else {
        Vec::new()
    };
    LockReply { locked, failed }
}

/// Applies a transaction's operations on this shard and releases its keys; `None` (nothing
/// applied) when its locks lapsed meanwhile.
pub fn answer_finish(
    shard: &ShardContext,
    id: TxnId,
    keys: &[Box<[u8]>],
    ops: Vec<(usize, Op)>,
    value_bytes_max: usize,
) -> FinishReply {
    debug_assert!(ops.iter().all(|(_, op)| shard.owner(op.key()) == shard.id));
    let held = shard.txn.locks.borrow().holds_all(id, keys, clock::now_ms());
    let outcomes = (held || ops.is_empty()).then(|| apply_all(shard, ops, value_bytes_max));
    shard.txn.locks.borrow_mut().release(id, keys);
    outcomes
}

/// Answers one protocol message from a peer.
pub fn answer(shard: &ShardContext, message: TxnMessage) {
    // The asking connection may be gone; its answer is dropped (a Finish has still run).
    match message {
        TxnMessage::Once { txn, reply } => {
            let _ = reply.send(answer_once(shard, txn));
        }
        TxnMessage::Lock {
            id,
            keys,
            compares,
            reply,
        } => {
            let _ = reply.send(answer_lock(shard, id, &keys, &compares));
        }
        TxnMessage::Finish {
            id,
            keys,
            ops,
            value_bytes_max,
            reply,
        } => {
            let _ = reply.send(answer_finish(shard, id, &keys, ops, value_bytes_max));
        }
    }
}

/// One owner's part: its keys in lock order, its compares, and how many keys it holds.
struct Part {
    owner: ShardId,
    keys: Vec<Box<[u8]>>,
    compares: Vec<(usize, Compare)>,
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
    }
    parts.sort_unstable_by_key(|part| part.owner);
    parts
}

const GONE: &str = "a shard taking part in the transaction did not answer (shutting down)";

/// Runs a transaction to its end from the connection's shard: at once on a lone owner when
/// it can, through the locks otherwise.
pub async fn run(shard: &ShardContext, txn: Txn) -> Result<TxnAnswer, Error> {
    let mut txn = Box::new(txn);
    let first = txn.keys().next().map_or(shard.id, |key| shard.owner(key));
    if txn.keys().all(|key| shard.owner(key) == first) {
        let once = if first == shard.id {
            answer_once(shard, txn)
        } else {
            ask(shard, first, |reply| TxnMessage::Once { txn, reply }).await?
        };
        match once {
            Ok(answer) => return Ok(answer),
            Err(back) => txn = back,
        }
    }
    run_locked(shard, *txn).await
}

/// The locking path: lock every part in order (waiting on held keys), then finish each.
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
            let reply = match lock_part(shard, id, &parts[at]).await {
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
        return Ok(answer_lock(shard, id, keys, &part.compares));
    }
    ask(shard, part.owner, |reply| TxnMessage::Lock {
        id,
        keys: keys.to_vec(),
        compares: part.compares.clone(),
        reply,
    })
    .await
}

/// Releases the keys held in `parts` (an abort).
async fn release(shard: &ShardContext, id: TxnId, parts: &[Part]) {
    for part in parts {
        let _ = finish_part(shard, id, part, Vec::new(), 0).await;
    }
}

/// Sends every part's owner its operations of the branch (and the release); gathers the
/// outcomes in branch order.
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
    let mut results: Vec<Option<Outcome<Box<[u8]>>>> = (0..count).map(|_| None).collect();
    let mut lapsed = false;
    // Each owner may copy an equal share of the answer's value budget.
    let value_bytes_max = TXN_RESULT_VALUE_BYTES_MAX / parts.len().max(1);
    for (part, ops) in parts.iter().zip(by_owner) {
        match finish_part(shard, id, part, ops, value_bytes_max).await {
            Ok(Some(outcomes)) => outcomes
                .into_iter()
                .for_each(|(at, outcome)| results[at] = Some(outcome)),
            Ok(None) => lapsed = true,
            Err(_) => lapsed = true,
        }
    }
    if lapsed {
        return Err(Error::Unavailable(
            "the transaction outlived its locks or lost a shard while committing: it may be partly applied",
        ));
    }
    results
        .into_iter()
        .map(|outcome| outcome.ok_or(Error::Unavailable("internal error: a transaction result is missing")))
        .collect()
}

async fn finish_part(
    shard: &ShardContext,
    id: TxnId,
    part: &Part,
    ops: Vec<(usize, Op)>,
    value_bytes_max: usize,
) -> Result<FinishReply, Error> {
    if part.owner == shard.id {
        return Ok(answer_finish(shard, id, &part.keys, ops, value_bytes_max));
    }
    ask(shard, part.owner, |reply| TxnMessage::Finish {
        id,
        keys: part.keys.clone(),
        ops,
        value_bytes_max,
        reply,
    })
    .await
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
}
