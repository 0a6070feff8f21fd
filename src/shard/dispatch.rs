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
}

/// One connection's operations in flight. Reused batch after batch: a steady connection
/// allocates nothing here once its vectors have grown.
pub struct Dispatcher {
    slots: VecDeque<Slot>,
    owners: Vec<Owner>,
    stats: Option<Result<Vec<ShardStats>, Error>>,
    wants_stats: bool,
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
        }
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
        if owner == shard.id {
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
        let mut pending = Vec::new();
        for (owner, state) in self.owners.iter_mut().enumerate() {
            if state.outbound.is_empty() {
                continue;
            }
            let ops = std::mem::take(&mut state.outbound);
            state.sent += ops.len();
            shard.counters.count_message_sent();
            match shard.router.send(owner, ops).await {
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
        let state = &mut self.owners[owner];
        let Some(reply) = reply else {
            state.gone = true;
            return;
        };
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
        }
        self.stats = None;
        self.wants_stats = false;
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
                        f(Err(Error::Unavailable(GONE)))
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
