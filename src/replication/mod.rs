//! Replication (`--peers`): shard `i` of every node forms Raft group `i`, driven by tikv's
//! raft-rs on that shard's executor. Writes are proposed to the group and answered once
//! committed by a majority and applied here; reads wait for a ReadIndex; a follower's
//! proposals and read requests travel to the leader inside raft-rs itself.
//!
//! Once `--raft-snapshot-entries` entries were applied since the last snapshot (and a log of a
//! quarter of the last snapshot: `Compaction::due`), a group snapshots its store at the
//! applied index ([`snapshot`]), keeps it in [`GroupStorage`] and drops the log before it
//! (with `--data-dir`, the snapshot is written beside the log file in the background, then
//! the file cut); a follower whose next entry is gone is sent the snapshot (`MsgSnapshot`, its
//! data in chunks: [`transfer`]) and replaces its store with it.
//!
//! Owns each group's consensus state ([`Group`]: the `RawNode`, its log, its snapshot, the
//! requests waiting on it), the peer transport ([`transport`]), the log entry format
//! ([`codec`]), the snapshot format ([`snapshot`]) and snapshot transfers ([`transfer`]). A
//! group lives on its shard's thread only (`RefCell`s, no locks of its own) and changes its
//! own shard's store only: committed operations through [`ShardContext::apply_local`], a
//! snapshot by replacing the store whole.
//! It never knows of HTTP: the dispatcher hands it a batch and gets a [`PeerReply`] back.
//!
//! Gaps (see docs/ARCHITECTURE.md): without `--data-dir` the Raft log is raft-rs's
//! `MemStorage` only (a restarted node rejoins empty and is caught up from the leader's log or
//! snapshot, abstaining from elections and commits until then: [`abstain`]); while a snapshot
//! is built the driver defers applying (writes wait; heartbeats and replication go on), and a
//! received one is restored in one synchronous step.
//!
//! Expiry and eviction are decided by the log (docs/ARCHITECTURE.md, "Expiry and eviction in
//! a cluster"): a put's TTL leaves the proposer as an absolute deadline ([`codec`]); in
//! cluster mode the store never expires on its own, and the leader's tick proposes expire
//! entries for the keys due on its clock (`Group::propose_expiries`), each removing a key
//! only if it still has the version the leader saw.

pub mod abstain;
pub mod codec;
pub mod log;
pub mod snapshot;
pub mod storage;
pub mod transfer;
pub mod transport;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType, HardState, Message, MessageType, Snapshot};
use raft::storage::MemStorage;
use raft::{Config, GetEntriesContext, RawNode, ReadState, SnapshotStatus, StateRole, Storage};

use self::abstain::{Abstention, Admit, Marker};
use self::codec::{PeerFrame, Proposer};
pub use self::storage::GroupStorage;
use self::storage::load_recovered;
use self::transfer::{Inbound, Lane};
use crate::error::Error;
use crate::limits::{
    EXPIRY_KEYS_PER_PROPOSAL_MAX, PEER_QUEUE_FRAMES_MAX, RAFT_ELECTION_TICKS, RAFT_ENTRY_OVERHEAD_BYTES,
    RAFT_HEARTBEAT_TICKS, RAFT_INFLIGHT_MESSAGES_MAX, RAFT_MESSAGE_BYTES_MAX, RAFT_SNAPSHOT_KEEP_ENTRIES_MAX,
    RAFT_SNAPSHOT_LOG_BYTES_MAX, RAFT_SNAPSHOT_LOG_FRACTION, RAFT_TICK_MS, REPLICATION_PENDING_PER_GROUP_MAX,
    REPLICATION_TIMEOUT_MS,
};
use crate::shard::context::ShardContext;
use crate::shard::message::{Op, Outcome, PeerReply};
use crate::shard::{ShardId, StoreHandle};
use crate::sync::oneshot;

/// `--peers`: every member's id and peer address, sorted by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerList(pub Vec<(u64, SocketAddr)>);

/// Parses `1=127.0.0.1:7101,2=127.0.0.1:7102`: ids 1 or more, each once.
pub fn parse_peers(text: &str) -> Result<PeerList, String> {
    let mut peers = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected ID=HOST:PORT, e.g. 1=127.0.0.1:7101"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id >= 1)
            .ok_or_else(|| format!("`{id}`: a node id is a whole number from 1"))?;
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{addr}`: expected HOST:PORT with a numeric address"))?;
        if peers.iter().any(|(other, _)| *other == id) {
            return Err(format!("node id {id} is listed twice"));
        }
        peers.push((id, addr));
    }
    peers.sort_unstable();
    Ok(PeerList(peers))
}

/// One group's state as `/v1/cluster` and `/metrics` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupStatus {
    pub node_id: u64,
    pub role: &'static str,
    /// The leader's node id, 0 when none is known.
    pub leader: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// The leader's view of each follower (empty on a follower).
    pub followers: Vec<FollowerLag>,
    /// Times this node started an election (campaigned) in this group.
    pub elections: u64,
    pub proposals: u64,
    /// Replicated requests answered 503 (no leader, or not committed in time).
    pub refused: u64,
    /// Writes this node proposed and applied, and their total time from proposal to apply.
    pub commits: u64,
    pub commit_latency_us_total: u64,
    /// Raft messages dropped because a peer's queue was full or it was unknown.
    pub messages_dropped: u64,
    /// The log index of this group's latest snapshot (0: none yet); the log before it is gone.
    pub snapshot_index: u64,
    /// Snapshots this node took of its store (compactions).
    pub snapshots_taken: u64,
    /// Snapshots this node (as leader) sent whole to a follower too far behind.
    pub snapshots_sent: u64,
    /// Snapshots this node received from a leader and restored its store from.
    pub snapshots_received: u64,
    /// Snapshot chunks this node received (of any transfer, kept or not).
    pub snapshot_chunks_received: u64,
    /// Snapshot transfers this node refused: malformed, out of order, damaged, or past
    /// `--raft-snapshot-bytes-max` (the connection is closed; the leader sends it again).
    pub snapshots_refused: u64,
    /// False while this member abstains from elections: it started with no Raft state and
    /// has not caught up with a leader yet ([`abstain`]).
    pub voting: bool,
}

/// How far one follower's log trails the leader's.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FollowerLag {
    pub node_id: u64,
    pub match_index: u64,
    /// Entries behind the leader's last index.
    pub lag: u64,
}

/// A request waiting for its entry to apply, or its read to be confirmed.
struct Waiter {
    reply: oneshot::Sender<PeerReply>,
    started: Instant,
}

/// A linearizable read: its operations, and the read index once the leader confirmed it.
struct PendingRead {
    ops: Vec<Op>,
    waiter: Waiter,
    index: Option<u64>,
}

#[derive(Default)]
struct Pending {
    next_seq: u64,
    proposals: HashMap<u64, Waiter>,
    reads: HashMap<u64, PendingRead>,
    /// Index of the last entry applied to the store.
    applied: u64,
    /// The expire entry this node proposed and has not yet applied: its sequence number,
    /// when it was proposed, and whether it was full (more keys may be due).
    expiring: Option<(u64, Instant, bool)>,
}

#[derive(Default)]
struct Metrics {
    elections: Cell<u64>,
    proposals: Cell<u64>,
    refused: Cell<u64>,
    commits: Cell<u64>,
    commit_latency_us_total: Cell<u64>,
    messages_dropped: Cell<u64>,
    snapshots_taken: Cell<u64>,
    snapshots_sent: Cell<u64>,
    snapshots_received: Cell<u64>,
    snapshot_chunks_received: Cell<u64>,
    snapshots_refused: Cell<u64>,
}

/// When the group next snapshots its store and compacts its log.
#[derive(Default)]
struct Compaction {
    /// The latest snapshot's index.
    index: u64,
    /// Entry payload bytes applied since it.
    bytes_since: u64,
    /// The latest snapshot's data bytes (0 before the first).
    snapshot_bytes: u64,
}

impl Compaction {
    /// True when the entries applied up to `applied` call for the next snapshot: at least
    /// `entries_max` of them or `RAFT_SNAPSHOT_LOG_BYTES_MAX` of payload, and a log of at
    /// least 1/`RAFT_SNAPSHOT_LOG_FRACTION` of the last snapshot.
    fn due(&self, applied: u64, entries_max: u64) -> bool {
        let entries = applied.saturating_sub(self.index);
        let log_bytes = self.bytes_since + entries * RAFT_ENTRY_OVERHEAD_BYTES;
        entries > 0
            && (entries >= entries_max || self.bytes_since >= RAFT_SNAPSHOT_LOG_BYTES_MAX)
            && log_bytes >= self.snapshot_bytes / RAFT_SNAPSHOT_LOG_FRACTION
    }
}

fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get() + by);
}

/// What a compaction carries from its start to its end.
struct Started {
    at: Instant,
    /// `Compaction::bytes_since` when it started (the bytes applied after it count on).
    bytes_before: u64,
    /// `--raft-snapshot-entries` (bounds the entries kept before the snapshot).
    entries_max: u64,
}

/// A snapshot being built at applied index `applied` ([`Group::poll_snapshot_build`]); the
/// task returns its data and how long the build ran (the time applies waited).
struct Building {
    applied: u64,
    started: Started,
    task: glommio::Task<(Vec<u8>, Duration)>,
}

/// A compaction waiting for its snapshot file ([`Group::poll_snapshot_write`]).
struct Writing {
    snapshot: Snapshot,
    started: Started,
    build_time: Duration,
    /// The write on glommio's blocking pool; awaited before it is dropped (the blocking
    /// thread would go on writing the file regardless).
    task: glommio::Task<std::io::Result<()>>,
}

/// What a `Ready` leaves to do once its entries and hard state are on disk.
struct TakenReady {
    entries: Vec<Entry>,
    hard_state: Option<raft::eraftpb::HardState>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,
    number: u64,
    leader: u64,
    /// A snapshot from the leader, already restored into the store: made durable instead of
    /// appending `entries` (the log is rewritten from `MemStorage`, which holds them).
    snapshot: Option<Snapshot>,
}

/// A dialer's work: the peer's id, its shard's address, the frames queued for it, and the
/// lane its snapshots go by.
type Inbox = (u64, SocketAddr, LocalReceiver<Vec<u8>>, Rc<Lane>);

/// One shard's Raft group on this node.
pub struct Group {
    shard: ShardId,
    nr_shards: usize,
    node_id: u64,
    incarnation: u64,
    peers: Vec<(u64, SocketAddr)>,
    raw: RefCell<RawNode<GroupStorage>>,
    /// `--data-dir`: where entries and the hard state are made durable before the messages
    /// that depend on them go out; without it the log lives in `MemStorage` only.
    log: Option<log::RaftLog>,
    pending: RefCell<Pending>,
    /// Frames to each other member, drained by its dialer ([`transport::dial_forever`]).
    outboxes: Vec<(u64, LocalSender<Vec<u8>>)>,
    /// Each other member's snapshot lane, written by the same dialer between frames.
    lanes: Vec<(u64, Rc<Lane>)>,
    /// The snapshot arriving from a leader, if any (one per group, whichever connection).
    inbound: RefCell<Inbound>,
    /// Numbers the peer connections this group accepts, so a transfer knows its own.
    connections: Cell<u64>,
    /// The dialers' ends, taken once when the group starts.
    inboxes: RefCell<Vec<Inbox>>,
    /// Wakes the driver to handle a `Ready` (capacity 1: one wake-up is enough); the lanes
    /// share it, to have a transfer's end reported.
    wake: Rc<LocalSender<()>>,
    woken: RefCell<Option<LocalReceiver<()>>>,
    metrics: Metrics,
    compaction: RefCell<Compaction>,
    /// The snapshot being built by its own task (at most one), while the driver goes on
    /// ticking, persisting and sending but defers applying.
    building: RefCell<Option<Building>>,
    /// Committed entries handed out by raft-rs while a snapshot is built, applied in order
    /// once it is (raft-rs lets applying lag committing: `advance_apply_to`). Bounded by what
    /// commits during one build, which the waiting requests bound
    /// (`REPLICATION_PENDING_PER_GROUP_MAX` per member).
    deferred: RefCell<Vec<Entry>>,
    /// The compaction whose snapshot file is being written in the background (at most one).
    writing: RefCell<Option<Writing>>,
    /// The snapshot read from disk at start, until [`Group::restore_recovered`] loads it.
    recovered_snapshot: RefCell<Option<Snapshot>>,
    /// Set when a full expire entry of this node's applied: propose the next at once.
    expire_again: Cell<bool>,
    /// Whether this member votes in the group, or abstains until caught up ([`abstain`]).
    abstention: RefCell<Abstention>,
}

impl Group {
    /// The group of shard `shard` on node `node_id`; `peers` lists every member.
    /// `durable`: the log opened under `--data-dir`, and what it held.
    pub fn new(
        shard: ShardId,
        nr_shards: usize,
        node_id: u64,
        peers: &PeerList,
        durable: Option<(log::RaftLog, log::Recovered)>,
    ) -> Result<Group, String> {
        if !peers.0.iter().any(|(id, _)| *id == node_id) {
            return Err(format!("--node-id {node_id} is not in --peers"));
        }
        for (_, addr) in &peers.0 {
            transport::shard_addr(*addr, nr_shards.saturating_sub(1))?;
        }
        let voters: Vec<u64> = peers.0.iter().map(|(id, _)| *id).collect();
        let storage = MemStorage::new_with_conf_state((voters, vec![]));
        let (log, snapshot, abstention) = match durable {
            Some((log, recovered)) => {
                let abstention = Self::abstention_at_start(shard, &log, recovered.is_empty())?;
                let snapshot =
                    load_recovered(&storage, recovered).map_err(|e| format!("shard {shard}: raft log: {e}"))?;
                (Some(log), snapshot, abstention)
            }
            // Memory only: every start is an empty one.
            None => (None, None, Abstention::abstaining(shard, None)),
        };
        let snapshot_index = snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
        let storage = GroupStorage {
            mem: storage,
            snapshot: RefCell::new(snapshot.clone().unwrap_or_default()),
        };
        let config = Config {
            id: node_id,
            election_tick: RAFT_ELECTION_TICKS,
            heartbeat_tick: RAFT_HEARTBEAT_TICKS,
            max_size_per_msg: RAFT_MESSAGE_BYTES_MAX,
            max_inflight_msgs: RAFT_INFLIGHT_MESSAGES_MAX,
            check_quorum: true,
            pre_vote: true,
            ..Config::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&config, storage, &logger).map_err(|e| format!("shard {shard}: raft: {e}"))?;
        let (wake, woken) = local_channel::new_bounded(1);
        let wake = Rc::new(wake);
        let (mut outboxes, mut lanes, mut inboxes) = (Vec::new(), Vec::new(), Vec::new());
        for &(id, addr) in peers.0.iter().filter(|(id, _)| *id != node_id) {
            let (sender, receiver) = local_channel::new_bounded(PEER_QUEUE_FRAMES_MAX);
            let lane = Rc::new(Lane::new(Rc::clone(&wake)));
            outboxes.push((id, sender));
            lanes.push((id, Rc::clone(&lane)));
            inboxes.push((id, transport::shard_addr(addr, shard)?, receiver, lane));
        }
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        Ok(Group {
            shard,
            nr_shards,
            node_id,
            incarnation,
            peers: peers.0.clone(),
            raw: RefCell::new(raw),
            log,
            pending: RefCell::new(Pending {
                applied: snapshot_index,
                ..Pending::default()
            }),
            outboxes,
            lanes,
            inbound: RefCell::new(Inbound::default()),
            connections: Cell::new(0),
            inboxes: RefCell::new(inboxes),
            wake,
            woken: RefCell::new(Some(woken)),
            metrics: Metrics::default(),
            compaction: RefCell::new(Compaction {
                index: snapshot_index,
                snapshot_bytes: snapshot.as_ref().map_or(0, |s| s.data.len() as u64),
                ..Compaction::default()
            }),
            building: RefCell::new(None),
            deferred: RefCell::new(Vec::new()),
            writing: RefCell::new(None),
            recovered_snapshot: RefCell::new(snapshot),
            expire_again: Cell::new(false),
            abstention: RefCell::new(abstention),
        })
    }

    /// With `--data-dir`: abstains if the log held nothing or its abstention marker is there
    /// (written now, durably, when the log is empty).
    fn abstention_at_start(shard: ShardId, log: &log::RaftLog, state_empty: bool) -> Result<Abstention, String> {
        let marker = Marker::beside(log.path());
        let abstaining = marker
            .decide(state_empty)
            .map_err(|e| format!("shard {shard}: raft abstention marker {}: {e}", marker.path().display()))?;
        Ok(if abstaining {
            Abstention::abstaining(shard, Some(marker))
        } else {
            Abstention::voting(shard)
        })
    }

    /// Restores the snapshot read from `--data-dir` at start into the shard's store (before
    /// the shard serves; the entries after it are replayed by raft-rs as it starts).
    pub fn restore_recovered(&self, shard: &ShardContext) -> Result<(), String> {
        let Some(snapshot) = self.recovered_snapshot.borrow_mut().take() else {
            return Ok(());
        };
        let restored = restore_store(shard, &snapshot)?;
        ::log::info!(
            "shard {}: restored the raft snapshot at index {} ({} keys)",
            self.shard,
            snapshot.get_metadata().index,
            restored.keys
        );
        Ok(())
    }

    /// Runs `ops` (one connection's batch for this shard, in order) through the group and
    /// answers on `reply`: a batch with a write is proposed as one log entry and answered
    /// when applied here; a batch of reads is answered once a ReadIndex confirms this node
    /// has applied everything committed before it arrived.
    pub fn submit(&self, ops: Vec<Op>, reply: oneshot::Sender<PeerReply>) {
        let waiter = Waiter {
            reply,
            started: Instant::now(),
        };
        let mut pending = self.pending.borrow_mut();
        if pending.proposals.len() + pending.reads.len() >= REPLICATION_PENDING_PER_GROUP_MAX {
            drop(pending);
            return self.refuse(waiter);
        }
        let seq = pending.next_seq;
        pending.next_seq += 1;
        let mut raw = self.raw.borrow_mut();
        if ops.iter().all(|op| matches!(op, Op::Get(_))) {
            raw.read_index(seq.to_le_bytes().to_vec());
            pending.reads.insert(
                seq,
                PendingRead {
                    ops,
                    waiter,
                    index: None,
                },
            );
        } else {
            let proposer = Proposer {
                node_id: self.node_id,
                incarnation: self.incarnation,
                seq,
            };
            bump(&self.metrics.proposals, 1);
            let entry = codec::encode_entry(proposer, &ops, crate::storage::now_unix_ms());
            match raw.propose(vec![], entry) {
                Ok(()) => {
                    pending.proposals.insert(seq, waiter);
                }
                // No leader known (an election is under way, or no majority is reachable).
                Err(_) => {
                    drop((raw, pending));
                    return self.refuse(waiter);
                }
            }
        }
        let _ = self.wake.try_send(());
    }

    fn refuse(&self, waiter: Waiter) {
        bump(&self.metrics.refused, 1);
        let _ = waiter.reply.send(PeerReply {
            refused: Some(Error::NoQuorum { shard: self.shard }),
            ..PeerReply::default()
        });
    }

    /// Steps a message a peer sent.
    pub fn step(&self, mut message: Message) {
        let mut raw = self.raw.borrow_mut();
        // A member that started empty drops vote requests and takes only committed entries
        // until caught up ([`abstain`]).
        if self.abstention.borrow_mut().admit(&mut message, raw.raft.term) == Admit::Drop {
            return;
        }
        // A node restarted with an empty log (MemStorage) hears heartbeats committing entries
        // it no longer has; raft-rs would panic. Clamped, the leader's next append is refused
        // and it sends the log again from where this node's ends.
        let last = raw.raft.raft_log.last_index();
        if message.get_msg_type() == MessageType::MsgHeartbeat && message.commit > last {
            message.commit = last;
        }
        // raft-rs refuses messages for another node or from an unknown one; they are dropped.
        let _ = raw.step(message);
        drop(raw);
        let _ = self.wake.try_send(());
    }

    /// This group's numbers.
    pub fn status(&self) -> GroupStatus {
        let raw = self.raw.borrow();
        let raft = &raw.raft;
        let last = raft.raft_log.last_index();
        let followers = if raft.state == StateRole::Leader {
            raft.prs()
                .iter()
                .filter(|(id, _)| **id != self.node_id)
                .map(|(id, progress)| FollowerLag {
                    node_id: *id,
                    match_index: progress.matched,
                    lag: last.saturating_sub(progress.matched),
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut followers = followers;
        followers.sort_by_key(|f| f.node_id);
        GroupStatus {
            node_id: self.node_id,
            role: match raft.state {
                StateRole::Leader => "leader",
                StateRole::Follower => "follower",
                StateRole::Candidate => "candidate",
                StateRole::PreCandidate => "pre-candidate",
            },
            leader: raft.leader_id,
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.pending.borrow().applied,
            followers,
            elections: self.metrics.elections.get(),
            proposals: self.metrics.proposals.get(),
            refused: self.metrics.refused.get(),
            commits: self.metrics.commits.get(),
            commit_latency_us_total: self.metrics.commit_latency_us_total.get(),
            messages_dropped: self.metrics.messages_dropped.get(),
            snapshot_index: self.compaction.borrow().index,
            snapshots_taken: self.metrics.snapshots_taken.get(),
            snapshots_sent: self.metrics.snapshots_sent.get(),
            snapshots_received: self.metrics.snapshots_received.get(),
            snapshot_chunks_received: self.metrics.snapshot_chunks_received.get(),
            snapshots_refused: self.metrics.snapshots_refused.get(),
            voting: self.abstention.borrow().is_voting(),
        }
    }

    /// One tick of raft-rs's clock, unless this member abstains and must not campaign; a
    /// leader with an abstaining follower proposes an empty entry now and then, so the
    /// follower sees the commit index advance ([`abstain`]).
    fn tick(&self) {
        let mut raw = self.raw.borrow_mut();
        let mut abstention = self.abstention.borrow_mut();
        let leading = raw.raft.state == StateRole::Leader;
        let log = &raw.raft.raft_log;
        let (log_empty, idle) = (log.last_index() == 0, log.last_index() == log.committed);
        if abstention.may_tick(leading, log_empty) {
            raw.tick();
        }
        if abstention.nudge_due(leading, idle) {
            // An empty entry: the apply path skips it. Refused only if leadership just moved.
            let _ = raw.propose(vec![], vec![]);
        }
    }

    /// While abstaining: checks whether this member has caught up (a leader counts its own
    /// commit index), and once it has, removes the marker on the blocking pool.
    async fn check_caught_up(&self) {
        let caught_up = {
            let raw = self.raw.borrow();
            let mut abstention = self.abstention.borrow_mut();
            if abstention.is_voting() {
                return;
            }
            if raw.raft.state == StateRole::Leader {
                abstention.heard_leader(raw.raft.term, raw.raft.raft_log.committed);
            }
            abstention.catch_up(self.pending.borrow().applied)
        };
        if caught_up {
            self.remove_marker().await;
        }
    }

    /// Removes the abstention marker of a member now voting (`--data-dir`). A failure is
    /// logged: the member would only abstain again after a restart.
    async fn remove_marker(&self) {
        let Some(marker) = self.abstention.borrow_mut().take_marker() else {
            return;
        };
        let path = marker.path().to_path_buf();
        if let Err(e) = glommio::executor().spawn_blocking(move || marker.remove()).await {
            ::log::warn!(
                "shard {}: cannot remove {} ({e}): a restart would abstain again until caught up",
                self.shard,
                path.display()
            );
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Every member: id and peer address (shard 0's port).
    pub fn members(&self) -> &[(u64, SocketAddr)] {
        &self.peers
    }

    /// Queues raft messages for their peers; a full queue drops them (raft resends). A
    /// snapshot message goes by the peer's lane instead ([`transfer`]): its end is reported to
    /// raft-rs by [`Group::report_transfers`] (`Finish` once written whole, `Failure` if the
    /// connection failed first); one for an unknown peer is reported failed at once.
    fn send(&self, raw: &mut RawNode<GroupStorage>, messages: Vec<Message>) {
        let abstention = self.abstention.borrow();
        for mut message in messages {
            abstention.outgoing(&mut message);
            if message.get_msg_type() == MessageType::MsgSnapshot {
                let to = message.to;
                match self.lanes.iter().find(|(id, _)| *id == to) {
                    Some((_, lane)) => {
                        lane.start(message);
                    }
                    None => {
                        bump(&self.metrics.messages_dropped, 1);
                        raw.report_snapshot(to, SnapshotStatus::Failure);
                    }
                }
                continue;
            }
            let outbox = self.outboxes.iter().find(|(id, _)| *id == message.to);
            let sent = match (outbox, message.write_to_bytes()) {
                (Some((_, outbox)), Ok(bytes)) => outbox.try_send(codec::raft_frame(&bytes)).is_ok(),
                _ => false,
            };
            if !sent {
                bump(&self.metrics.messages_dropped, 1);
            }
        }
    }

    /// Reports to raft-rs how each lane's latest snapshot transfer ended.
    fn report_transfers(&self) {
        for (peer, lane) in &self.lanes {
            if let Some(status) = lane.take_ended() {
                if status == SnapshotStatus::Finish {
                    bump(&self.metrics.snapshots_sent, 1);
                }
                self.raw.borrow_mut().report_snapshot(*peer, status);
            }
        }
    }

    /// A number for a peer connection this group accepted.
    pub fn open_connection(&self) -> u64 {
        self.connections.set(self.connections.get() + 1);
        self.connections.get()
    }

    /// A peer connection closed: the snapshot it was carrying (if any) is discarded.
    pub fn close_connection(&self, connection: u64) {
        self.inbound.borrow_mut().closed(connection);
    }

    /// Takes a snapshot frame that `peer` sent on `connection`; steps the whole `MsgSnapshot`
    /// once its last chunk is in. An error (a refused transfer, counted) closes the connection.
    pub fn receive_snapshot(
        &self,
        connection: u64,
        peer: u64,
        frame: PeerFrame<'_>,
        bytes_max: u64,
    ) -> Result<(), String> {
        let mut inbound = self.inbound.borrow_mut();
        let received = match frame {
            PeerFrame::SnapshotBegin(begin) => inbound.begin(connection, peer, &begin, bytes_max).map(|()| None),
            PeerFrame::SnapshotChunk(chunk) => {
                bump(&self.metrics.snapshot_chunks_received, 1);
                inbound.chunk(connection, &chunk)
            }
            PeerFrame::Raft(_) => return Err("a raft message where a snapshot frame was expected".into()),
        };
        drop(inbound);
        match received {
            Ok(Some(message)) => {
                self.step(message);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(refusal) => {
                bump(&self.metrics.snapshots_refused, 1);
                Err(refusal.to_string())
            }
        }
    }

    /// Handles one `Ready` with raft-rs's asynchronous-persistence protocol: send what may go
    /// before persisting, apply what is committed, hand the new entries and hard state to
    /// `MemStorage` and `advance_append_async`; then write and `fdatasync` them (`--data-dir`)
    /// and only then report them persisted and send the messages that depended on them (votes,
    /// append acknowledgements). Peers' messages and requests are stepped while the write is
    /// under way (raft-rs allows it after `advance_append_async`); the next `Ready` is taken
    /// only once this one is persisted, so Readies are persisted in order.
    async fn handle_ready(&self, shard: &ShardContext) -> Result<(), String> {
        let Some(taken) = self.take_ready(shard)? else {
            return Ok(());
        };
        let fail = |e: std::io::Error| format!("shard {}: cannot write the raft log: {e}", self.shard);
        match (&self.log, &taken.snapshot) {
            (Some(log), Some(snapshot)) => {
                self.abandon_compaction().await;
                let (entries, hard_state) = self.tail_after(snapshot.get_metadata().index);
                log.checkpoint(snapshot, &entries, &hard_state).await.map_err(fail)?;
            }
            (Some(log), None) => log
                .persist(&taken.entries, taken.hard_state.as_ref())
                .await
                .map_err(fail)?,
            (None, _) => {}
        }
        let mut raw = self.raw.borrow_mut();
        raw.on_persist_ready(taken.number);
        if taken.snapshot.is_some() {
            raw.advance_apply_to(self.pending.borrow().applied);
        }
        self.send(&mut raw, taken.persisted_messages);
        drop(raw);
        self.confirm_reads(taken.read_states);
        self.serve_reads(shard, taken.leader);
        // Persisting may have committed entries (the leader's own vote) or made more ready.
        let _ = self.wake.try_send(());
        Ok(())
    }

    /// The synchronous half of [`Group::handle_ready`]: everything up to the write. A
    /// snapshot from the leader is restored into the store here, before any later entry.
    fn take_ready(&self, shard: &ShardContext) -> Result<Option<TakenReady>, String> {
        let mut raw = self.raw.borrow_mut();
        if !raw.has_ready() {
            return Ok(None);
        }
        let mut ready = raw.ready();
        if let Some(soft) = ready.ss()
            && soft.raft_state == StateRole::Candidate
        {
            bump(&self.metrics.elections, 1);
        }
        let messages = ready.take_messages();
        self.send(&mut raw, messages);
        let snapshot = (ready.snapshot().get_metadata().index != 0).then(|| ready.snapshot().clone());
        if let Some(snapshot) = &snapshot {
            self.install(shard, &mut raw, snapshot)?;
        }
        let leader = raw.raft.leader_id;
        let committed = ready.take_committed_entries();
        if self.building.borrow().is_some() {
            self.deferred.borrow_mut().extend(committed);
        } else {
            self.apply(shard, committed, leader);
        }
        let entries = ready.take_entries();
        let hard_state = ready.hs().cloned();
        if !entries.is_empty() {
            // MemStorage only refuses entries that leave a gap, which raft-rs never hands out.
            let _ = raw.mut_store().mem.wl().append(&entries);
        }
        if let Some(hard_state) = &hard_state {
            raw.mut_store().mem.wl().set_hardstate(hard_state.clone());
        }
        let taken = TakenReady {
            persisted_messages: ready.take_persisted_messages(),
            read_states: ready.take_read_states(),
            number: ready.number(),
            entries,
            hard_state,
            leader,
            snapshot,
        };
        raw.advance_append_async(ready);
        // raft-rs keeps applied at or below persisted: a snapshot counts as applied only once
        // it is persisted (in `handle_ready`).
        if taken.snapshot.is_none() {
            raw.advance_apply_to(self.pending.borrow().applied);
        }
        Ok(Some(taken))
    }

    /// Restores a leader's snapshot: into `MemStorage` (its log before the snapshot is gone),
    /// then into the store (checked whole before the store is cleared). Costs one pass over
    /// the snapshot to check it and one to load it, synchronously (the transfer checked it
    /// once more as it completed).
    fn install(
        &self,
        shard: &ShardContext,
        raw: &mut RawNode<GroupStorage>,
        snapshot: &Snapshot,
    ) -> Result<(), String> {
        let index = snapshot.get_metadata().index;
        // A build of this node's own snapshot is void now (the store is replaced), and every
        // entry it deferred is at or before the leader's snapshot (raft-rs installs one only
        // past its commit index).
        drop(self.building.borrow_mut().take());
        self.deferred.borrow_mut().clear();
        raw.mut_store()
            .mem
            .wl()
            .apply_snapshot(snapshot.clone())
            .map_err(|e| format!("shard {}: the leader's snapshot at {index}: {e}", self.shard))?;
        *raw.store().snapshot.borrow_mut() = snapshot.clone();
        let restored = restore_store(shard, snapshot)?;
        self.pending.borrow_mut().applied = index;
        *self.compaction.borrow_mut() = Compaction {
            index,
            snapshot_bytes: snapshot.data.len() as u64,
            ..Compaction::default()
        };
        bump(&self.metrics.snapshots_received, 1);
        ::log::info!(
            "shard {}: restored the leader's snapshot at index {index} ({} keys)",
            self.shard,
            restored.keys
        );
        Ok(())
    }

    /// The entries after `index` and the hard state, as `MemStorage` holds them (what a
    /// checkpoint leaves in the log file).
    fn tail_after(&self, index: u64) -> (Vec<Entry>, HardState) {
        let raw = self.raw.borrow();
        let mem = &raw.store().mem;
        let last = mem.last_index().unwrap_or(index);
        let entries = if last > index {
            // MemStorage holds every entry after the snapshot (it only ever drops ones before).
            mem.entries(index + 1, last + 1, None, GetEntriesContext::empty(false))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        (entries, mem.rl().hard_state().clone())
    }

    /// Takes a snapshot of the store and compacts the log once [`Compaction::due`]: the
    /// snapshot is built by its own task in chunks while the driver, the store's only writer,
    /// defers applying (so it is exact at the applied index) but goes on ticking and
    /// replicating. With `--data-dir` its file is then written in the background while the
    /// group goes on ([`log::RaftLog::write_snapshot`]); a later call, once it
    /// is durable, cuts the log file and `MemStorage` ([`Group::finish_compaction`]). Any store
    /// size is snapshotted: it travels to a follower in chunks ([`transfer`]).
    async fn maybe_compact(&self, shard: &Rc<ShardContext>) -> Result<(), String> {
        if self.building.borrow().is_some() {
            return self.poll_snapshot_build(shard).await;
        }
        debug_assert!(
            self.deferred.borrow().is_empty(),
            "entries wait only while a build runs"
        );
        if self.writing.borrow().is_some() {
            return self.poll_snapshot_write().await;
        }
        let entries_max = shard.args.raft_snapshot_entries;
        let applied = self.pending.borrow().applied;
        let due = self.compaction.borrow().due(applied, entries_max);
        if !due || !matches!(shard.store, StoreHandle::Owned(_)) {
            return Ok(());
        }
        let (task_shard, wake) = (Rc::clone(shard), Rc::clone(&self.wake));
        let started = Instant::now();
        // glommio runs a task it spawns at once, up to its first yield; the build yields once
        // the task queue's time slice is used (glommio's 100 ms preemption timer), and the
        // driver runs in between: ticks, heartbeats and replication go on.
        let task = glommio::spawn_local(async move {
            let StoreHandle::Owned(store) = &task_shard.store else {
                unreachable!("checked before the task was spawned")
            };
            let building = Instant::now();
            let data = snapshot::build(store, task_shard.args.raft_snapshot_build_delay_ms).await;
            let _ = wake.try_send(()); // the driver takes it
            (data, building.elapsed())
        });
        let started = Started {
            at: started,
            bytes_before: self.compaction.borrow().bytes_since,
            entries_max,
        };
        *self.building.borrow_mut() = Some(Building { applied, started, task });
        Ok(())
    }

    /// Takes the snapshot being built once it is: applies the entries deferred meanwhile,
    /// then writes it (in the background) or, without `--data-dir`, makes it the group's.
    async fn poll_snapshot_build(&self, shard: &ShardContext) -> Result<(), String> {
        let mut building = self.building.borrow_mut().take().expect("checked by the caller");
        let Some((data, build_time)) = futures_lite::future::poll_once(&mut building.task).await else {
            *self.building.borrow_mut() = Some(building);
            return Ok(()); // still building: the group ticks, persists and sends meanwhile
        };
        debug_assert_eq!(
            self.pending.borrow().applied,
            building.applied,
            "nothing applies while a snapshot is built"
        );
        let snapshot = self.snapshot_at(building.applied, data)?;
        self.apply_deferred(shard);
        let Some(log) = &self.log else {
            self.finish_compaction(snapshot, building.started, build_time);
            return Ok(());
        };
        let wake = Rc::clone(&self.wake);
        let write = log.write_snapshot(&snapshot);
        let task = glommio::spawn_local(async move {
            let written = write.await;
            let _ = wake.try_send(()); // the driver finishes the compaction
            written
        });
        *self.writing.borrow_mut() = Some(Writing {
            snapshot,
            started: building.started,
            build_time,
            task,
        });
        Ok(())
    }

    /// Applies the entries committed while a snapshot was built, in order, and tells raft-rs.
    fn apply_deferred(&self, shard: &ShardContext) {
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        if deferred.is_empty() {
            return;
        }
        let leader = self.raw.borrow().raft.leader_id;
        self.apply(shard, deferred, leader);
        self.raw.borrow_mut().advance_apply_to(self.pending.borrow().applied);
        self.serve_reads(shard, leader);
        let _ = self.wake.try_send(()); // more may be ready now
    }

    /// Finishes the compaction whose snapshot file is being written, once it is durable: cuts
    /// the log file to the entries after it (those persisted meanwhile included), then drops
    /// them from `MemStorage` and offers the snapshot to followers.
    async fn poll_snapshot_write(&self) -> Result<(), String> {
        let mut writing = self.writing.borrow_mut().take().expect("checked by the caller");
        let Some(written) = futures_lite::future::poll_once(&mut writing.task).await else {
            *self.writing.borrow_mut() = Some(writing);
            return Ok(()); // still writing: the group goes on meanwhile
        };
        let fail = |e: std::io::Error| format!("shard {}: cannot write the raft snapshot: {e}", self.shard);
        let Writing {
            snapshot,
            started,
            build_time,
            ..
        } = writing;
        written.map_err(fail)?;
        if let Some(log) = &self.log {
            let (entries, hard_state) = self.tail_after(snapshot.get_metadata().index);
            log.replace_log(&entries, &hard_state).await.map_err(fail)?;
        }
        self.finish_compaction(snapshot, started, build_time);
        Ok(())
    }

    /// Waits for a snapshot file being written, and forgets its compaction: a leader's
    /// snapshot was installed instead, and its checkpoint must not race that write.
    async fn abandon_compaction(&self) {
        let writing = self.writing.borrow_mut().take();
        if let Some(writing) = writing {
            let _ = writing.task.await;
        }
    }

    /// Makes `snapshot` the group's: `MemStorage` keeps only the last few entries before it,
    /// followers far behind are sent it, and the next compaction counts from it.
    fn finish_compaction(&self, snapshot: Snapshot, started: Started, build_time: Duration) {
        let index = snapshot.get_metadata().index;
        let bytes = snapshot.data.len() as u64;
        let raw = self.raw.borrow();
        let keep = RAFT_SNAPSHOT_KEEP_ENTRIES_MAX.min(started.entries_max / 2);
        // The snapshot's entry itself stays, so MemStorage never runs empty (it would forget
        // where its log starts).
        let compact_to = (index + 1).saturating_sub(keep).min(index);
        // Compacting to an index at or before the first is a no-op, past the applied one
        // impossible (the snapshot is at an applied index), so MemStorage never refuses it.
        let _ = raw.store().mem.wl().compact(compact_to);
        *raw.store().snapshot.borrow_mut() = snapshot;
        let mut compaction = self.compaction.borrow_mut();
        *compaction = Compaction {
            index,
            bytes_since: compaction.bytes_since.saturating_sub(started.bytes_before),
            snapshot_bytes: bytes,
        };
        bump(&self.metrics.snapshots_taken, 1);
        ::log::debug!(
            "shard {}: snapshot at {index} ({bytes} bytes; built in {} ms while applies waited, made the group's {} ms after it started), log compacted to {compact_to}",
            self.shard,
            build_time.as_millis(),
            started.at.elapsed().as_millis()
        );
    }

    /// A snapshot of `data` at the applied index `index`, with its term and the members.
    fn snapshot_at(&self, index: u64, data: Vec<u8>) -> Result<Snapshot, String> {
        let raw = self.raw.borrow();
        let term = raw
            .raft
            .raft_log
            .term(index)
            .map_err(|e| format!("shard {}: no term for applied index {index}: {e}", self.shard))?;
        // MemStorage's initial state is its current one (hard state and members).
        let members = raw
            .store()
            .mem
            .initial_state()
            .map_err(|e| format!("shard {}: raft members: {e}", self.shard))?
            .conf_state;
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        (meta.index, meta.term) = (index, term);
        meta.set_conf_state(members);
        snapshot.data = data.into();
        Ok(snapshot)
    }

    /// Applies committed entries to the store, in order, and answers the requests this node
    /// proposed in them.
    fn apply(&self, shard: &ShardContext, entries: Vec<Entry>, leader: u64) {
        for entry in entries {
            self.pending.borrow_mut().applied = entry.index;
            self.compaction.borrow_mut().bytes_since += entry.data.len() as u64;
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                continue;
            }
            let Some((proposer, commands)) = codec::decode_entry(&entry.data) else {
                crate::log_limited!(
                    ::log::Level::Error,
                    "shard {}: entry {} is malformed; skipped",
                    self.shard,
                    entry.index
                );
                continue;
            };
            let outcomes: Vec<Outcome<Box<[u8]>>> = commands
                .into_iter()
                .map(|command| shard.apply_command(command, |outcome| outcome.to_owned()))
                .collect();
            if proposer.node_id != self.node_id || proposer.incarnation != self.incarnation {
                continue;
            }
            let mut pending = self.pending.borrow_mut();
            if let Some((seq, _, full)) = pending.expiring
                && seq == proposer.seq
            {
                pending.expiring = None;
                self.expire_again.set(full);
            }
            let waiter = pending.proposals.remove(&proposer.seq);
            drop(pending);
            if let Some(waiter) = waiter {
                bump(&self.metrics.commits, 1);
                bump(
                    &self.metrics.commit_latency_us_total,
                    waiter.started.elapsed().as_micros() as u64,
                );
                let _ = waiter.reply.send(PeerReply {
                    outcomes,
                    leader: Some(leader),
                    ..PeerReply::default()
                });
            }
        }
    }

    /// On the leader: proposes one expire entry for the keys due on its clock (at most
    /// `EXPIRY_KEYS_PER_PROPOSAL_MAX`, earliest first, each with the version it saw), unless
    /// its previous one has neither applied nor timed out (`REPLICATION_TIMEOUT_MS`). Called
    /// every tick, and at once after a full one applied. Replicas never expire on their own:
    /// this entry is how every one of them removes the same keys.
    fn propose_expiries(&self, shard: &ShardContext) {
        let StoreHandle::Owned(store) = &shard.store else {
            return;
        };
        let mut raw = self.raw.borrow_mut();
        let mut pending = self.pending.borrow_mut();
        let timeout = Duration::from_millis(REPLICATION_TIMEOUT_MS);
        if raw.raft.state != StateRole::Leader || pending.expiring.is_some_and(|(_, at, _)| at.elapsed() < timeout) {
            return;
        }
        let due = store.borrow_mut().due_for_expiry(EXPIRY_KEYS_PER_PROPOSAL_MAX);
        if due.is_empty() {
            pending.expiring = None;
            return;
        }
        let seq = pending.next_seq;
        pending.next_seq += 1;
        let proposer = Proposer {
            node_id: self.node_id,
            incarnation: self.incarnation,
            seq,
        };
        let full = due.len() == EXPIRY_KEYS_PER_PROPOSAL_MAX;
        // Refused only when this node stopped leading meanwhile: the next leader proposes.
        if raw.propose(vec![], codec::encode_expiry(proposer, &due)).is_ok() {
            pending.expiring = Some((seq, Instant::now(), full));
            bump(&self.metrics.proposals, 1);
            let _ = self.wake.try_send(());
        }
    }

    fn confirm_reads(&self, read_states: Vec<ReadState>) {
        let mut pending = self.pending.borrow_mut();
        for state in read_states {
            let Ok(seq) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) else {
                continue;
            };
            if let Some(read) = pending.reads.get_mut(&u64::from_le_bytes(seq)) {
                read.index = Some(state.index);
            }
        }
    }

    /// Answers the confirmed reads whose index this node has applied.
    fn serve_reads(&self, shard: &ShardContext, leader: u64) {
        let due: Vec<PendingRead> = {
            let mut pending = self.pending.borrow_mut();
            let applied = pending.applied;
            let seqs: Vec<u64> = pending
                .reads
                .iter()
                .filter(|(_, read)| read.index.is_some_and(|index| index <= applied))
                .map(|(seq, _)| *seq)
                .collect();
            seqs.iter().filter_map(|seq| pending.reads.remove(seq)).collect()
        };
        for read in due {
            let outcomes = read
                .ops
                .into_iter()
                .map(|op| shard.apply_local(op, |outcome| outcome.to_owned()))
                .collect();
            let _ = read.waiter.reply.send(PeerReply {
                outcomes,
                leader: Some(leader),
                ..PeerReply::default()
            });
        }
    }

    /// Answers 503 to every request older than `REPLICATION_TIMEOUT_MS`.
    fn expire_waiters(&self) {
        let limit = Duration::from_millis(REPLICATION_TIMEOUT_MS);
        let expired: Vec<Waiter> = {
            let mut pending = self.pending.borrow_mut();
            let old: Vec<u64> = pending
                .proposals
                .iter()
                .filter(|(_, waiter)| waiter.started.elapsed() >= limit)
                .map(|(seq, _)| *seq)
                .collect();
            let mut expired: Vec<Waiter> = old.iter().filter_map(|seq| pending.proposals.remove(seq)).collect();
            let old: Vec<u64> = pending
                .reads
                .iter()
                .filter(|(_, read)| read.waiter.started.elapsed() >= limit)
                .map(|(seq, _)| *seq)
                .collect();
            expired.extend(
                old.iter()
                    .filter_map(|seq| pending.reads.remove(seq))
                    .map(|read| read.waiter),
            );
            expired
        };
        for waiter in expired {
            self.refuse(waiter);
        }
    }
}

/// Drives this shard's group until the executor stops: the peer listener and dialers, a tick
/// every `RAFT_TICK_MS`, and a `Ready` handled whenever a request or message arrives.
pub async fn run(shard: Rc<ShardContext>) {
    let Some(group) = shard.replication.as_ref() else {
        return;
    };
    for (peer, addr, inbox, lane) in group.inboxes.borrow_mut().drain(..) {
        let handshake = codec::Handshake {
            node_id: group.node_id,
            shard: group.shard as u32,
            nr_shards: group.nr_shards as u32,
        };
        let dialer = transport::Dialer {
            peer,
            addr,
            handshake,
            chunk_bytes: shard.args.raft_snapshot_chunk_bytes,
        };
        glommio::spawn_local(transport::dial_forever(dialer, inbox, lane)).detach();
    }
    let own = group
        .peers
        .iter()
        .find(|(id, _)| *id == group.node_id)
        .map(|(_, addr)| *addr);
    match own.map(|addr| transport::shard_addr(addr, group.shard)) {
        Some(Ok(addr)) => {
            glommio::spawn_local(transport::listen_forever(Rc::clone(&shard), addr)).detach();
        }
        _ => ::log::error!("shard {}: no peer address for this node", group.shard),
    }
    let Some(woken) = group.woken.borrow_mut().take() else {
        return;
    };
    if shard.args.raft_force_vote && group.abstention.borrow_mut().force() {
        group.remove_marker().await;
    }
    let tick = Duration::from_millis(RAFT_TICK_MS);
    let mut last_tick = Instant::now();
    loop {
        let wait = tick.saturating_sub(last_tick.elapsed());
        futures_lite::future::or(
            async {
                woken.recv().await;
            },
            glommio::timer::sleep(wait),
        )
        .await;
        if last_tick.elapsed() >= tick {
            last_tick = Instant::now();
            group.tick();
            group.expire_waiters();
            group.propose_expiries(&shard);
        }
        if group.expire_again.replace(false) {
            group.propose_expiries(&shard);
        }
        group.report_transfers();
        let handled = match group.handle_ready(&shard).await {
            Ok(()) => group.maybe_compact(&shard).await,
            failed => failed,
        };
        if let Err(message) = handled {
            // A log that cannot be written cannot be trusted to vote or acknowledge: stop.
            ::log::error!("{message}; stopping");
            shard.latches.shutdown.count_down();
            return;
        }
        group.check_caught_up().await;
    }
}

/// Replaces the shard's store with a snapshot's keys, and rebuilds its key index if on.
fn restore_store(shard: &ShardContext, snapshot: &Snapshot) -> Result<snapshot::Restored, String> {
    let StoreHandle::Owned(store) = &shard.store else {
        return Err("raft snapshots need the sharded design".into());
    };
    let mut store = store.borrow_mut();
    let restored = snapshot::restore(&mut store, &snapshot.data)
        .map_err(|e| format!("shard {}: cannot restore the raft snapshot: {e}", shard.id))?;
    if shard.index.is_on() {
        shard.index.start(&mut store);
    }
    if restored.rejected > 0 {
        ::log::warn!(
            "shard {}: {} keys of the raft snapshot did not fit this node's --max-keys/--max-memory",
            shard.id,
            restored.rejected
        );
    }
    Ok(restored)
}

/// Adds `X-CoreKV-Leader: <node id>` after the status line of the response that starts at
/// `start` in `out`.
pub fn tag_leader(out: &mut Vec<u8>, start: usize, leader: u64) {
    let Some(line_end) = out[start..].windows(2).position(|w| w == b"\r\n") else {
        return;
    };
    let header = format!("X-CoreKV-Leader: {leader}\r\n");
    let at = start + line_end + 2;
    out.splice(at..at, header.into_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_header_follows_the_status_line() {
        let mut out = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nxHTTP/1.1 201 Created\r\n\r\n".to_vec();
        tag_leader(&mut out, 26, 3);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nxHTTP/1.1 201 Created\r\nX-CoreKV-Leader: 3\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn peer_lists_parse_and_refuse_garbage() {
        let peers = parse_peers("2=127.0.0.1:7102, 1=127.0.0.1:7101").unwrap();
        assert_eq!(
            peers.0,
            vec![
                (1, "127.0.0.1:7101".parse().unwrap()),
                (2, "127.0.0.1:7102".parse().unwrap())
            ]
        );
        for bad in [
            "",
            "1",
            "0=127.0.0.1:1",
            "x=127.0.0.1:1",
            "1=localhost",
            "1=127.0.0.1:1,1=127.0.0.1:2",
        ] {
            assert!(parse_peers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_node_missing_from_its_peers_is_refused() {
        let peers = parse_peers("1=127.0.0.1:7101,2=127.0.0.1:7102").unwrap();
        let error = Group::new(0, 2, 3, &peers, None).err().unwrap();
        assert!(error.contains("--node-id 3 is not in --peers"), "{error}");
    }

    // Goal: a group snapshots after --raft-snapshot-entries (or the payload bound), but a large
    // store only once the log since its last snapshot reaches a fraction of that snapshot, tiny
    // entries counted by their overhead too.
    #[test]
    fn compaction_waits_for_a_log_that_is_a_fraction_of_the_last_snapshot() {
        let small = Compaction {
            index: 100,
            bytes_since: 5_000,
            snapshot_bytes: 16 << 10,
        };
        assert!(!small.due(100, 10), "nothing applied since");
        assert!(!small.due(105, 10), "fewer entries than the bound");
        assert!(
            small.due(110, 10),
            "10 entries, and a log past a quarter of a 16 KiB snapshot"
        );
        let big = Compaction {
            snapshot_bytes: 1 << 30,
            ..small
        };
        assert!(!big.due(110, 10), "a 1 GiB store is not copied for 10 entries");
        let quarter = Compaction {
            bytes_since: (1 << 30) / RAFT_SNAPSHOT_LOG_FRACTION,
            ..big
        };
        assert!(
            quarter.due(110, 10),
            "a log of a quarter of the snapshot brings the next one"
        );
        let deletes = Compaction { bytes_since: 0, ..big };
        let entries = (1 << 30) / RAFT_SNAPSHOT_LOG_FRACTION / RAFT_ENTRY_OVERHEAD_BYTES;
        assert!(deletes.due(100 + entries, 10), "entries count by their overhead");
        assert!(!deletes.due(100 + entries - 1, 10));
        let first = Compaction::default();
        assert!(first.due(10, 10), "the first snapshot needs only the entry bound");
    }
}
