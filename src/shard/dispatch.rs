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

use super::ShardId;
use super::context::ShardContext;
use super::message::{Op, Outcome, PeerReply, ShardStats};
use crate::error::Error;

/// The store operations of one request.
#[derive(Debug)]
pub enum Ops {
    None,
    One(Op),
    Many(Vec<Op>),
    /// The numbers of every shard, this one included, in shard order.
    Stats,
}

/// Reads the outcomes of one request's operations, in the order they were pushed.
pub trait Outcomes {
    /// Hands the next operation's outcome to `f` (an error when its owner did not answer).
    fn next<R>(&mut self, f: impl FnOnce(Result<Outcome<&[u8]>, Error>) -> R) -> R;
    /// The stats of every shard, in shard order (a request made with [`Ops::Stats`]).
    fn stats(&mut self) -> Result<Vec<ShardStats>, Error>;
}

/// Where an operation's outcome comes from.
enum Slot {
    /// Runs here when read.
    Local(Op),
    /// The `index`-th operation sent to `owner` since the dispatcher was last cleared.
    Remote { owner: ShardId, index: usize },
    /// The gathered stats.
    Stats,
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
        }
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
    }

    /// The outcomes of the next request, read on `shard`.
    pub fn outcomes<'a>(&'a mut self, shard: &'a ShardContext) -> impl Outcomes + 'a {
        Reader {
            dispatcher: self,
            shard,
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
            state.error = None;
        }
        self.stats = None;
        self.wants_stats = false;
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
            Some(Slot::Local(op)) => self.shard.apply_local(op, |outcome| f(Ok(outcome))),
            Some(Slot::Remote { owner, index }) => {
                let state = &mut self.dispatcher.owners[owner];
                match index.checked_sub(state.base).and_then(|at| state.outcomes.get_mut(at)) {
                    // Taken out so its value is freed as soon as it is rendered.
                    Some(outcome) => {
                        let outcome = std::mem::replace(outcome, Outcome::Missing);
                        f(Ok(outcome.map(|value| &**value)))
                    }
                    None => {
                        debug_assert!(state.gone, "an outcome was read before its owner answered");
                        f(Err(state.error.clone().unwrap_or(Error::Unavailable(GONE))))
                    }
                }
            }
            Some(Slot::Stats) | None => f(Err(Error::Unavailable("internal error: outcome out of order"))),
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
                    .next(|outcome| outcome.map(|o| o.map(|v| v.to_vec()))),
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
                    pushed += dispatcher.push(&shard, Ops::One(Op::Put { record, ttl_ms: None }));
                    pushed += dispatcher.push(&shard, Ops::One(Op::Get(key.clone().into())));
                }
                pushed += dispatcher.push(
                    &shard,
                    Ops::Many(keys.iter().map(|k| Op::Delete(k.clone().into())).collect()),
                );
                dispatcher.send(&shard).await;
                read_all(&mut dispatcher, &shard, pushed).await
            },
        );
        let mut expected = Vec::new();
        for i in 0..3 {
            expected.push(Ok(Outcome::Created));
            expected.push(Ok(Outcome::Found {
                value: format!("v{i}").into_bytes(),
                ttl_ms: None,
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
                pushed += dispatcher.push(&shard, Ops::One(Op::Put { record, ttl_ms: None }));
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
                    ttl_ms: None
                })
            );
        }
        assert_eq!(
            rest,
            &[
                Ok(Outcome::Replaced),
                Ok(Outcome::Found {
                    value: b"small".to_vec(),
                    ttl_ms: None
                })
            ]
        );
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
}
