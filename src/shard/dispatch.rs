//! Runs a batch of requests' store operations where their keys live, and hands their outcomes
//! back in request order.
//!
//! Owns "here or at another owner": an operation whose key this shard owns stays here and runs
//! when its outcome is read (a found value is then copied once, straight into the response);
//! the others go to their owner, one batch per owner per round. An owner answers at most
//! [`crate::limits::PEER_REPLY_VALUE_BYTES_MAX`] of values per reply and hands back the rest
//! unexecuted; [`Dispatcher::must_resume`] tells the caller to write out what it has and
//! [`Dispatcher::resume`] fetches the next part, so a connection never holds more than about
//! one budget per owner of other shards' values. Stats travel as their own message.
//!
//! It never touches a socket, never parses or renders HTTP, and never keeps a borrow of the
//! store across an await. A connection has at most `nr_shards - 1` replies pending at once
//! (glommio counts waker clones in an `i16`).

use std::collections::VecDeque;
use std::time::Duration;

use super::ShardId;
use super::context::{Logged, ShardContext};
use super::message::{Op, Outcome, PeerReply, Refusal, ShardStats};
use super::txn::{self, Txn, TxnAnswer};
use crate::error::Error;
use crate::limits::TXN_RETRY_PAUSE_US_MAX;

/// The store operations of one request.
#[derive(Debug)]
pub enum Ops {
    None,
    One(Op),
    Many(Vec<Op>),
    /// The numbers of every shard, this one included, in shard order.
    Stats,
    /// A transaction, run by this connection's shard as its coordinator ([`txn::run`]). A
    /// request with one is alone in its batch (`http::conn` sees to it), so it is ordered
    /// after every request before it and before every one after it.
    Txn(Box<Txn>),
}

/// Reads the outcomes of one request's operations, in the order they were pushed.
pub trait Outcomes {
    /// Hands the next operation's outcome to `f` (an error when its owner did not answer).
    fn next<R>(&mut self, f: impl FnOnce(Result<Outcome<&[u8]>, Error>) -> R) -> R;
    /// The stats of every shard, in shard order (a request made with [`Ops::Stats`]).
    fn stats(&mut self) -> Result<Vec<ShardStats>, Error>;
    /// What the transaction did (a request made with [`Ops::Txn`]).
    fn txn(&mut self) -> Result<TxnAnswer, Error>;
}

/// Where an operation's outcome comes from.
enum Slot {
    /// Runs here when read.
    Local(Op),
    /// The `index`-th operation sent to `owner` since the dispatcher was last cleared.
    Remote { owner: ShardId, index: usize },
    /// The gathered stats.
    Stats,
    /// A local write the log could not reserve room for: answered with the refusal, never run.
    Refused(Refusal),
    /// The transaction's answer.
    Txn,
}

/// What one owner has answered so far in this batch.
#[derive(Default)]
struct Owner {
    /// Operations gathered for the next round.
    outbound: Vec<Op>,
    /// Index (among all operations sent to this owner) of `outcomes[0]`.
    base: usize,
    outcomes: Vec<Outcome<Box<[u8]>>>,
    /// Operations the owner handed back unexecuted, to send in the next round.
    deferred: Vec<Op>,
    /// Operations sent to it so far (the next one's index).
    sent: usize,
    /// The owner's channel is closed: its operations answer 503.
    gone: bool,
    /// Its last reply stopped at a key a transaction holds.
    blocked: bool,
    /// Why the owner could not run them, when it said (`--peers`: no quorum).
    error: Option<Error>,
}

/// One connection's operations in flight. Reused batch after batch: a steady connection
/// allocates nothing here once its vectors have grown.
pub struct Dispatcher {
    slots: VecDeque<Slot>,
    owners: Vec<Owner>,
    stats: Option<Result<Vec<ShardStats>, Error>>,
    wants_stats: bool,
    /// What the local writes rendered since the last [`Dispatcher::take_logged`] appended:
    /// their answers must not leave before it is durable.
    logged: Logged,
    /// The batch's transaction, until `send` runs it; then its answer.
    txn: Option<Box<Txn>>,
    txn_answer: Option<Result<TxnAnswer, Error>>,
    /// `--peers`: this batch may be answered from this node's replicas as they are (every
    /// request in it asked for `consistency=stale`), without its groups.
    stale: bool,
    /// `--peers`: the leader named by the last replicated reply of this batch.
    leader: Option<u64>,
}

const GONE: &str = "the shard owning this key did not answer (shutting down)";

impl Dispatcher {
    /// A dispatcher for a shard among `nr_shards`.
    pub fn new(nr_shards: usize) -> Dispatcher {
        Dispatcher {
            slots: VecDeque::new(),
            owners: (0..nr_shards).map(|_| Owner::default()).collect(),
            stats: None,
            wants_stats: false,
            logged: Logged::Nothing,
            txn: None,
            txn_answer: None,
            stale: false,
            leader: None,
        }
    }

    /// Lets this batch (set before its first push) be answered from this node's replicas as
    /// they are, without going through their Raft groups.
    pub fn set_stale(&mut self, stale: bool) {
        self.stale = stale;
    }

    /// The node that led the group answering this batch's replicated operations (the last
    /// one to answer, when several did).
    pub fn leader(&self) -> Option<u64> {
        self.leader
    }

    /// True when this batch's operations go through their shards' Raft groups.
    fn replicated(&self, shard: &ShardContext) -> bool {
        shard.replication.is_some() && !self.stale
    }

    /// Places one request's operations; returns how many outcomes it will read.
    pub fn push(&mut self, shard: &ShardContext, ops: Ops) -> usize {
        match ops {
            Ops::None => 0,
            Ops::One(op) => {
                self.push_op(shard, op);
                1
            }
            Ops::Many(ops) => {
                let count = ops.len();
                for op in ops {
                    self.push_op(shard, op);
                }
                count
            }
            Ops::Stats => {
                self.wants_stats = true;
                self.slots.push_back(Slot::Stats);
                1
            }
            Ops::Txn(txn) => {
                debug_assert!(self.txn.is_none(), "one transaction per batch");
                self.txn = Some(txn);
                self.slots.push_back(Slot::Txn);
                1
            }
        }
    }

    /// True when one of the next `count` operations runs here on a key a transaction holds:
    /// pause, then ask again (nothing awaits between a `false` and the rendering, so the key
    /// cannot be locked in between).
    pub fn must_wait(&self, shard: &ShardContext, count: usize) -> bool {
        let local = self.slots.iter().take(count).filter_map(|slot| match slot {
            Slot::Local(op) => Some(op.key()),
            _ => None,
        });
        shard.txn.any_locked(local)
    }

    fn push_op(&mut self, shard: &ShardContext, op: Op) {
        let owner = shard.owner(op.key());
        if owner == shard.id && !self.replicated(shard) {
            self.slots.push_back(Slot::Local(op));
            return;
        }
        let state = &mut self.owners[owner];
        let index = state.sent + state.outbound.len();
        state.outbound.push(op);
        self.slots.push_back(Slot::Remote { owner, index });
    }

    /// Sends every owner its batch (and every peer a stats request, when asked) and waits for
    /// all the answers.
    pub async fn send(&mut self, shard: &ShardContext) {
        if let Some(txn) = self.txn.take() {
            // Boxed: a transaction's future (locks, log holds, durable waits) is large, and
            // inline it would enlarge every connection's task, idle ones included.
            self.txn_answer = Some(Box::pin(txn::run(shard, *txn)).await);
        }
        let replicated = self.replicated(shard);
        let mut pending = Vec::new();
        for (owner, state) in self.owners.iter_mut().enumerate() {
            if state.outbound.is_empty() {
                continue;
            }
            let ops = std::mem::take(&mut state.outbound);
            state.sent += ops.len();
            shard.counters.count_message_sent();
            let sent = if !replicated {
                shard.router.send(owner, ops).await
            } else if owner == shard.id {
                let (reply, receiver) = crate::sync::oneshot::channel();
                shard.replicate(ops, reply);
                Ok(receiver)
            } else {
                shard.router.send_replicated(owner, ops).await
            };
            match sent {
                Ok(receiver) => pending.push((owner, receiver)),
                Err(_) => state.gone = true,
            }
        }
        if self.wants_stats {
            self.stats = Some(gather_stats(shard).await);
        }
        for (owner, receiver) in pending {
            let reply = receiver.await;
            self.take_reply(owner, reply.ok());
        }
        self.reserve_local_writes(shard).await;
    }

    /// Reserves log room for every local write not yet run, as the last await before they
    /// run at render time (so nothing else can take the room meanwhile). When the log cannot
    /// take them, they answer the refusal and never run. [`Dispatcher::send`] and
    /// [`Dispatcher::resume`] end with it; a caller that awaits anything else between rendering
    /// two outcomes (a flush) must call it again before rendering on.
    pub async fn reserve_local_writes(&mut self, shard: &ShardContext) {
        let Some(log) = shard.log() else {
            return;
        };
        let bytes: usize = self
            .slots
            .iter()
            .map(|slot| match slot {
                Slot::Local(op) => op.log_bytes(),
                _ => 0,
            })
            .sum();
        if bytes == 0 {
            return;
        }
        if let Err(error) = log.reserve(bytes).await {
            let refusal = Refusal::from_storage(&error);
            for slot in &mut self.slots {
                if matches!(slot, Slot::Local(op) if op.is_write()) {
                    *slot = Slot::Refused(refusal);
                }
            }
        }
    }

    /// What the local writes rendered since the last call appended (see [`Logged::durable`]):
    /// the caller waits for it before writing their answers out.
    pub fn take_logged(&mut self) -> Logged {
        std::mem::replace(&mut self.logged, Logged::Nothing)
    }

    /// True when one of the next `count` outcomes was handed back unexecuted: write out what
    /// is rendered so far, then call [`Dispatcher::resume`].
    pub fn must_resume(&self, count: usize) -> bool {
        self.slots.iter().take(count).any(|slot| match slot {
            Slot::Remote { owner, index } => {
                let state = &self.owners[*owner];
                !state.gone && *index >= state.base + state.outcomes.len()
            }
            _ => false,
        })
    }

    /// Sends every owner the operations it handed back, and waits for the answers.
    pub async fn resume(&mut self, shard: &ShardContext) {
        if self.owners.iter().any(|state| state.blocked) {
            glommio::timer::sleep(Duration::from_micros(TXN_RETRY_PAUSE_US_MAX)).await;
        }
        for state in &mut self.owners {
            debug_assert!(
                state.outbound.is_empty(),
                "resume after send, never between push and send"
            );
            state.outbound = std::mem::take(&mut state.deferred);
        }
        self.wants_stats = false;
        self.send(shard).await;
    }

    /// Records an owner's reply (`None`: it went away before answering).
    fn take_reply(&mut self, owner: ShardId, reply: Option<PeerReply>) {
        if let Some(Some(leader)) = reply.as_ref().map(|reply| reply.leader) {
            self.leader = Some(leader);
        }
        let state = &mut self.owners[owner];
        let Some(reply) = reply else {
            state.gone = true;
            return;
        };
        if let Some(error) = reply.refused {
            state.gone = true;
            state.error = Some(error);
            return;
        }
        // Outcomes already read are dropped; any not yet read stay in front of the new ones.
        let read = self.slots.iter().find_map(|slot| match slot {
            Slot::Remote { owner: o, index } if *o == owner => Some(*index),
            _ => None,
        });
        let keep_from = read.unwrap_or(state.base + state.outcomes.len()).max(state.base);
        state.outcomes.drain(..keep_from - state.base);
        state.base = keep_from;
        state.outcomes.extend(reply.outcomes);
        // The owner ran a prefix of what it was sent; the rest comes back to be sent again.
        state.sent -= reply.deferred.len();
        state.deferred = reply.deferred;
        state.blocked = reply.blocked;
    }

    /// The outcomes of the next request, read on `shard`.
    pub fn outcomes<'a>(&'a mut self, shard: &'a ShardContext) -> impl Outcomes + 'a {
        Reader {
            dispatcher: self,
            shard,
        }
    }

    /// Gives back the room a deep pipeline grew (between batches, for an idle connection).
    pub fn shrink(&mut self) {
        debug_assert!(self.slots.is_empty(), "shrink between batches only");
        self.slots = VecDeque::new();
        for state in &mut self.owners {
            *state = Owner::default();
        }
    }

    /// Forgets the batch: every reply's values are freed, nothing is pending.
    pub fn clear(&mut self) {
        debug_assert!(
            self.slots.is_empty(),
            "every outcome of a batch is read before the next"
        );
        self.slots.clear();
        for state in &mut self.owners {
            state.outbound.clear();
            state.outcomes.clear();
            state.deferred.clear();
            state.base = 0;
            state.sent = 0;
            state.gone = false;
            state.blocked = false;
            state.error = None;
        }
        self.stats = None;
        self.wants_stats = false;
        self.txn = None;
        self.txn_answer = None;
        self.stale = false;
        self.leader = None;
    }
}

/// Every shard's stats in shard order: this one's read here, the others' asked over the mesh.
async fn gather_stats(shard: &ShardContext) -> Result<Vec<ShardStats>, Error> {
    let mut pending = Vec::with_capacity(shard.nr_shards);
    for peer in 0..shard.nr_shards {
        if peer == shard.id {
            continue;
        }
        shard.counters.count_message_sent();
        pending.push(shard.router.ask_stats(peer).await);
    }
    let mut stats = Vec::with_capacity(shard.nr_shards);
    let mut pending = pending.into_iter();
    for peer in 0..shard.nr_shards {
        if peer == shard.id {
            stats.push(shard.stats());
            continue;
        }
        // The iterator holds exactly one entry per peer.
        let answer = match pending.next() {
            Some(Ok(receiver)) => receiver.await.ok(),
            _ => None,
        };
        stats.push(answer.ok_or(Error::Unavailable(
            "a shard did not answer the stats request (shutting down)",
        ))?);
    }
    Ok(stats)
}

struct Reader<'a> {
    dispatcher: &'a mut Dispatcher,
    shard: &'a ShardContext,
}

impl Outcomes for Reader<'_> {
    fn next<R>(&mut self, f: impl FnOnce(Result<Outcome<&[u8]>, Error>) -> R) -> R {
        match self.dispatcher.slots.pop_front() {
            Some(Slot::Local(op)) => {
                let (answer, logged) = self.shard.apply_logged(op, |outcome| f(Ok(outcome)));
                let before = std::mem::replace(&mut self.dispatcher.logged, Logged::Nothing);
                self.dispatcher.logged = before.then(logged);
                answer
            }
            Some(Slot::Refused(refusal)) => f(Err(Error::from(refusal))),
            Some(Slot::Remote { owner, index }) => {
                let state = &mut self.dispatcher.owners[owner];
                match index.checked_sub(state.base).and_then(|at| state.outcomes.get_mut(at)) {
                    // Taken out so its value is freed as soon as it is rendered.
                    Some(outcome) => match std::mem::replace(outcome, Outcome::Missing) {
                        Outcome::Refused(refusal) => f(Err(Error::from(refusal))),
                        outcome => f(Ok(outcome.map(|value| &**value))),
                    },
                    None => {
                        debug_assert!(state.gone, "an outcome was read before its owner answered");
                        f(Err(state.error.clone().unwrap_or(Error::Unavailable(GONE))))
                    }
                }
            }
            Some(Slot::Stats | Slot::Txn) | None => f(Err(Error::Unavailable("internal error: outcome out of order"))),
        }
    }

    fn stats(&mut self) -> Result<Vec<ShardStats>, Error> {
        match self.dispatcher.slots.pop_front() {
            Some(Slot::Stats) => self
                .dispatcher
                .stats
                .take()
                .unwrap_or(Err(Error::Unavailable("internal error: stats were not gathered"))),
            _ => Err(Error::Unavailable("internal error: outcome out of order")),
        }
    }

    fn txn(&mut self) -> Result<TxnAnswer, Error> {
        match self.dispatcher.slots.pop_front() {
            Some(Slot::Txn) => self
                .dispatcher
                .txn_answer
                .take()
                .unwrap_or(Err(Error::Unavailable("internal error: the transaction did not run"))),
            _ => Err(Error::Unavailable("internal error: outcome out of order")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;
    use crate::limits::PEER_REPLY_VALUE_BYTES_MAX;
    use crate::shard::harness::{Layout, on_shards};
    use crate::shard::message::Record;
    use crate::shard::shard_for;
    use crate::shard::store::Store;

    fn layout(nr_shards: usize, gone: Vec<ShardId>) -> Layout {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Layout {
            cpus: (0..nr_shards).map(|id| id % cpus).collect(),
            args: ServeArgs::from_flags(&[]),
            gone,
        }
    }

    /// A key that shard `owner` of `nr_shards` owns.
    fn key_on(owner: ShardId, nr_shards: usize, tag: &str) -> Vec<u8> {
        (0..)
            .map(|i| format!("{tag}{i}").into_bytes())
            .find(|key| shard_for(key, nr_shards) == owner)
            .unwrap()
    }

    /// Reads `count` outcomes as owned values, resuming whenever the dispatcher asks.
    async fn read_all(
        dispatcher: &mut Dispatcher,
        shard: &ShardContext,
        count: usize,
    ) -> Vec<Result<Outcome<Vec<u8>>, Error>> {
        let mut outcomes = Vec::new();
        for _ in 0..count {
            while dispatcher.must_resume(1) {
                dispatcher.resume(shard).await;
            }
            outcomes.push(
                dispatcher
                    .outcomes(shard)
                    .next(|outcome| outcome.map(|o| o.map(|v| v.to_vec()).without_versions())),
            );
        }
        dispatcher.clear();
        outcomes
    }

    // Goal: operations on three shards come back in the order they were pushed, each having
    // seen the writes pushed before it.
    #[test]
    fn outcomes_come_back_in_push_order_across_owners() {
        let got = on_shards(
            layout(3, vec![]),
            |_| Store::default(),
            |shard| async move {
                let mut dispatcher = Dispatcher::new(shard.nr_shards);
                let keys: Vec<Vec<u8>> = (0..3).map(|owner| key_on(owner, 3, "k")).collect();
                let mut pushed = 0;
                for (i, key) in keys.iter().enumerate() {
                    let record = Record::new(key, format!("v{i}").as_bytes());
                    pushed += dispatcher.push(&shard, Ops::One(Op::put(record, None)));
                    pushed += dispatcher.push(&shard, Ops::One(Op::Get(key.clone().into())));
                }
                pushed += dispatcher.push(&shard, Ops::Many(keys.iter().map(|k| Op::delete(k)).collect()));
                dispatcher.send(&shard).await;
                read_all(&mut dispatcher, &shard, pushed).await
            },
        );
        let mut expected = Vec::new();
        for i in 0..3 {
            expected.push(Ok(Outcome::Created { version: 0 }));
            expected.push(Ok(Outcome::Found {
                value: format!("v{i}").into_bytes(),
                ttl_ms: None,
                version: 0,
            }));
        }
        expected.extend((0..3).map(|_| Ok(Outcome::Deleted(true))));
        assert_eq!(got, expected);
    }

    // Goal: past the reply budget an owner hands operations back, and resuming runs them in
    // order: every value is right and a write after the cut is seen by the read after it.
    #[test]
    fn a_reply_over_budget_is_resumed_in_order() {
        const VALUE_BYTES: usize = 300 << 10;
        let remote = key_on(1, 2, "big");
        let preload = remote.clone();
        let got = on_shards(
            layout(2, vec![]),
            move |id| {
                let mut store = Store::default();
                if id == 1 {
                    store.put(Record::new(&preload, &vec![b'a'; VALUE_BYTES]), None);
                }
                store
            },
            move |shard| async move {
                let mut dispatcher = Dispatcher::new(shard.nr_shards);
                let mut pushed = 0;
                let gets = 2 * PEER_REPLY_VALUE_BYTES_MAX / VALUE_BYTES + 2;
                for _ in 0..gets {
                    pushed += dispatcher.push(&shard, Ops::One(Op::Get(remote.clone().into())));
                }
                let record = Record::new(&remote, b"small");
                pushed += dispatcher.push(&shard, Ops::One(Op::put(record, None)));
                pushed += dispatcher.push(&shard, Ops::One(Op::Get(remote.clone().into())));
                dispatcher.send(&shard).await;
                assert!(dispatcher.must_resume(pushed), "the first reply stopped at the budget");
                read_all(&mut dispatcher, &shard, pushed).await
            },
        );
        let (values, rest) = got.split_at(got.len() - 2);
        for outcome in values {
            assert_eq!(
                outcome,
                &Ok(Outcome::Found {
                    value: vec![b'a'; VALUE_BYTES],
                    ttl_ms: None,
                    version: 0,
                })
            );
        }
        assert_eq!(
            rest,
            &[
                Ok(Outcome::Replaced { version: 0 }),
                Ok(Outcome::Found {
                    value: b"small".to_vec(),
                    ttl_ms: None,
                    version: 0,
                })
            ]
        );
    }

    // Goal: a plain operation on a key a transaction holds does not run until the lock is
    // released, whether the key is local (must_wait) or remote (the owner hands it back
    // blocked), and then runs in order.
    #[test]
    fn plain_operations_wait_for_a_transactions_locks() {
        use crate::shard::txn::{TxnMessage, answer_lock};
        use crate::sync::oneshot;
        let got = on_shards(
            layout(2, vec![]),
            |_| Store::default(),
            |shard| async move {
                let local: Box<[u8]> = key_on(0, 2, "here").into();
                let remote: Box<[u8]> = key_on(1, 2, "there").into();
                let id = 42;
                assert_eq!(
                    answer_lock(&shard, id, std::slice::from_ref(&local), &[], 0)
                        .await
                        .locked,
                    1
                );
                let (reply, receiver) = oneshot::channel();
                let lock = TxnMessage::Lock {
                    id,
                    keys: vec![remote.clone()],
                    compares: vec![],
                    log_bytes: 0,
                    reply,
                };
                shard
                    .router
                    .deliver(1, crate::shard::message::ShardMessage::Txn(lock))
                    .await
                    .unwrap();
                assert_eq!(receiver.await.unwrap().locked, 1);

                let mut dispatcher = Dispatcher::new(shard.nr_shards);
                let record = Record::new(&remote, b"v");
                let mut pushed = dispatcher.push(&shard, Ops::One(Op::put(record, None)));
                pushed += dispatcher.push(&shard, Ops::One(Op::Get(local.clone())));
                dispatcher.send(&shard).await;
                let blocked = (dispatcher.must_resume(1), dispatcher.must_wait(&shard, pushed));
                let _ = crate::shard::txn::answer_finish(&shard, id, std::slice::from_ref(&local), vec![], 0).await;
                let waits_after_release = dispatcher.must_wait(&shard, pushed);
                let (reply, receiver) = oneshot::channel();
                let finish = TxnMessage::Finish {
                    id,
                    keys: vec![remote.clone()],
                    ops: vec![],
                    value_bytes_max: 0,
                    reply,
                };
                shard
                    .router
                    .deliver(1, crate::shard::message::ShardMessage::Txn(finish))
                    .await
                    .unwrap();
                assert!(receiver.await.unwrap().is_ok(), "the release finishes");
                let outcomes = read_all(&mut dispatcher, &shard, pushed).await;
                (blocked, waits_after_release, outcomes)
            },
        );
        assert_eq!(got.0, (true, true), "both operations wait while their keys are locked");
        assert!(!got.1);
        assert_eq!(got.2, vec![Ok(Outcome::Created { version: 0 }), Ok(Outcome::Missing)]);
    }

    // Goal: stats come from every shard in shard order; an owner that is gone answers 503
    // instead of a wrong outcome.
    #[test]
    fn stats_cover_every_shard_and_a_gone_owner_is_unavailable() {
        let stats = on_shards(
            layout(3, vec![]),
            |_| Store::default(),
            |shard| async move {
                let mut dispatcher = Dispatcher::new(shard.nr_shards);
                assert_eq!(dispatcher.push(&shard, Ops::Stats), 1);
                dispatcher.send(&shard).await;
                let stats = dispatcher.outcomes(&shard).stats();
                dispatcher.clear();
                stats
            },
        );
        let ids: Vec<usize> = stats.unwrap().iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![0, 1, 2]);

        let got = on_shards(
            layout(2, vec![1]),
            |_| Store::default(),
            |shard| async move {
                let mut dispatcher = Dispatcher::new(shard.nr_shards);
                let remote = key_on(1, 2, "gone");
                let local = key_on(0, 2, "here");
                let mut pushed = dispatcher.push(&shard, Ops::One(Op::Get(remote.into())));
                pushed += dispatcher.push(&shard, Ops::One(Op::Get(local.into())));
                pushed += dispatcher.push(&shard, Ops::Stats);
                dispatcher.send(&shard).await;
                let mut reader = dispatcher.outcomes(&shard);
                let outcomes: Vec<_> = (0..pushed - 1)
                    .map(|_| reader.next(|outcome| outcome.map(|o| o.map(|v| v.to_vec()))))
                    .collect();
                let stats = reader.stats().map(|_| ());
                drop(reader);
                dispatcher.clear();
                (outcomes, stats)
            },
        );
        assert_eq!(got.0[0], Err(Error::Unavailable(GONE)));
        assert_eq!(got.0[1], Ok(Outcome::Missing));
        assert!(matches!(got.1, Err(Error::Unavailable(_))));
    }

    // Goal: a batch of local writes larger than the log's buffer bound is reserved whole and
    // logged whole, even when another task uses the log between two of its renders (the
    // caller re-reserves after its await); every write is recovered afterwards.
    #[test]
    fn local_writes_are_reserved_and_logged_across_an_await() {
        use crate::storage::{self, Config, DataDir, FsyncPolicy, RecoveryStats, ShardLog};
        use std::rc::Rc;
        let root = storage::test_dir("dispatch-log");
        let dir = DataDir::lock(&root).unwrap();
        let layout_1 = dir.layout_for(1).unwrap();
        let (open_layout, lock_path) = (layout_1.clone(), root.clone());
        drop(dir);
        let failed = on_shards(
            layout(1, vec![]),
            |_| Store::default(),
            move |shard| async move {
                let _dir = DataDir::lock(&lock_path).unwrap();
                let config = Config {
                    buffer_bytes_max: 4096,
                    segment_bytes: 1 << 20,
                    ..Config::new(FsyncPolicy::Always)
                };
                let log = ShardLog::open(config, &open_layout, 0, &RecoveryStats::default())
                    .await
                    .unwrap();
                *shard.log.borrow_mut() = Some(Rc::new(log));
                let mut dispatcher = Dispatcher::new(1);
                for i in 0..20 {
                    let record = Record::new(format!("k{i}").as_bytes(), &[b'v'; 1000]);
                    dispatcher.push(&shard, Ops::One(Op::put(record, None)));
                }
                dispatcher.send(&shard).await;
                let mut failed = 0;
                for i in 0..20 {
                    if i == 10 {
                        // Another connection takes the log's room meanwhile.
                        let other = shard.log().unwrap();
                        other.reserve(storage::set_bytes(5, 3000)).await.unwrap();
                        other.append_set(b"other", &[b'o'; 3000], None).unwrap();
                        dispatcher.reserve_local_writes(&shard).await;
                    }
                    let ok = dispatcher
                        .outcomes(&shard)
                        .next(|o| matches!(o, Ok(Outcome::Created { .. })));
                    failed += usize::from(!ok);
                }
                dispatcher.clear();
                let logged = dispatcher.take_logged();
                let log = shard.log().unwrap();
                logged.durable(Some(&log)).await.map_err(|e| e.to_string())?;
                drop(log);
                let log = shard.log.borrow_mut().take().unwrap();
                Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
                Ok::<usize, String>(failed)
            },
        );
        assert_eq!(failed, Ok(0));
        let recovered = storage::run_on_executor(move || async move {
            let dir = DataDir::lock(&root).unwrap();
            let mut keys = 0;
            storage::recover(&dir, &layout_1, 0, |_| true, |_| keys += 1)
                .await
                .unwrap();
            keys
        });
        assert_eq!(recovered, 21, "every write of the batch, and the other connection's");
    }
}
