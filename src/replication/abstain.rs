//! Abstention: a member that starts a group with no Raft state (memory-only, or an empty or
//! wiped `D/raft`) may have acknowledged entries in an earlier life that it no longer holds,
//! and has forgotten its term. Taking part at once, it could help a candidate that lacks a
//! committed entry win, or a stale leader (cut off, not yet stepped down) commit or confirm a
//! read: the entry would be lost. So it abstains until a leader has provably caught it up:
//!
//! - it drops vote and pre-vote requests (and `MsgTimeoutNow`) from candidates whose log is
//!   not empty, and once it holds entries itself it is not ticked (so it never campaigns);
//! - it takes from a leader's append only the entries at or before the commit index that
//!   append carries (the rest come again once committed), so its acknowledgements never help a
//!   leader commit an entry, and its heartbeat answers confirm no read: whatever a leader
//!   commits while this member watches, a majority of the *other* members acknowledged in the
//!   leader's term;
//! - it votes again once a leader of term T, after its first append to this member, told it
//!   a higher commit index c (the leader committed, in term T, with a majority of the others,
//!   so no newer term had committed anything: that majority would have refused term T), and
//!   it has applied c: every entry committed before, by anyone, is then in its log again. A
//!   leader with such a follower proposes an empty entry now and then (`nudge_due`), so this
//!   happens in an idle cluster too.
//!
//! A brand-new cluster is all empty members: a candidate with an empty log is answered, a
//! member with an empty log campaigns, and an append from a leader that has committed nothing
//! (commit index 0) is taken whole, so the first leader commits its first entry and everyone
//! catches up. The price: a majority of empty members (a new cluster, or a majority
//! that lost its state) may elect among themselves (docs/ARCHITECTURE.md).
//!
//! With `--data-dir` the fact is kept on disk ([`Marker`], `D/raft/shard-N.abstain`), so a
//! member that crashes while catching up (it holds some entries, not all it acknowledged)
//! comes back abstaining. Owns those rules and that file only; it never steps raft-rs itself.

use std::io;
use std::path::{Path, PathBuf};

use raft::eraftpb::{Message, MessageType};

use crate::limits::RAFT_ABSTAIN_NUDGE_TICKS;

/// The context an abstaining member puts on its append acknowledgements (raft-rs leaves that
/// field unused there), so the leader knows to nudge it.
pub const ABSTAINING_CONTEXT: &[u8] = b"corekv:abstaining";

/// What [`Abstention::admit`] decides for a peer's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Step,
    Drop,
}

/// The leader whose commit index this member watches advance: its term, the commit index its
/// first append told, and the highest one since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watch {
    term: u64,
    first: u64,
    latest: u64,
}

/// One group's abstention: whether this member votes, and what it waits for if not; on a
/// leader, whether a follower abstains.
#[derive(Debug)]
pub struct Abstention {
    shard: usize,
    /// `false` from an empty start until caught up.
    voting: bool,
    /// The highest term's leader, as its appends told (`None` before one was heard).
    watch: Option<Watch>,
    /// `--data-dir`: the file that says this group is abstaining, until it is removed.
    marker: Option<Marker>,
    /// Vote requests dropped while abstaining (for the logs).
    votes_dropped: u64,
    /// Leader side: a follower acknowledged as abstaining since the last nudge.
    follower_abstains: bool,
    ticks_since_nudge: usize,
}

impl Abstention {
    /// A group that votes from the start (it has its Raft state).
    pub fn voting(shard: usize) -> Abstention {
        Abstention {
            shard,
            voting: true,
            watch: None,
            marker: None,
            votes_dropped: 0,
            follower_abstains: false,
            ticks_since_nudge: 0,
        }
    }

    /// A group that starts with no Raft state (or crashed while catching up): logged at WARN
    /// once, with what an operator can do if it never catches up.
    pub fn abstaining(shard: usize, marker: Option<Marker>) -> Abstention {
        ::log::warn!(
            "shard {shard}: this member starts with no raft state (or had not caught up before it stopped), so it \
             does not vote for a candidate with a log, campaign, or count towards a commit until a leader has \
             caught it up. If a majority of the members lost their state, the group stays leaderless: restart \
             the member with the most entries with --raft-force-vote (writes only the lost members held are gone)"
        );
        Abstention {
            voting: false,
            marker,
            ..Abstention::voting(shard)
        }
    }

    pub fn is_voting(&self) -> bool {
        self.voting
    }

    /// Decides on `message` before raft-rs steps it at `current_term`: while abstaining, a
    /// vote or pre-vote request from a candidate with a log, or a `MsgTimeoutNow`, is dropped
    /// (logged, rate-limited); a leader's append loses its entries past its commit index (but
    /// for a leader that committed nothing) and is noted for that index. On a leader, an
    /// abstaining follower's acknowledgement is noted for [`Abstention::nudge_due`].
    pub fn admit(&mut self, message: &mut Message, current_term: u64) -> Admit {
        let kind = message.get_msg_type();
        if kind == MessageType::MsgAppendResponse && message.context.as_ref() == ABSTAINING_CONTEXT {
            self.follower_abstains = true;
        }
        if self.voting {
            return Admit::Step;
        }
        let from_leader = message.term >= current_term;
        match kind {
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                if message.index > 0 || message.log_term > 0 =>
            {
                self.votes_dropped += 1;
                crate::warn_limited!(
                    "shard {}: dropped a vote request from node {} (term {}): this member abstains until caught up \
                     ({} dropped)",
                    self.shard,
                    message.from,
                    message.term,
                    self.votes_dropped
                );
                return Admit::Drop;
            }
            MessageType::MsgTimeoutNow => return Admit::Drop,
            MessageType::MsgAppend if from_leader => {
                let commit = message.commit;
                if commit > 0 {
                    // Entries are consecutive: this keeps a prefix.
                    message.entries.retain(|entry| entry.index <= commit);
                }
                self.heard_leader(message.term, commit);
            }
            _ => {}
        }
        Admit::Step
    }

    /// Notes a leader's commit index `commit` in `term` (from its append, or this member's
    /// own when it leads): the first of the highest term is the one to see advance.
    pub fn heard_leader(&mut self, term: u64, commit: u64) {
        match &mut self.watch {
            _ if self.voting => {}
            Some(watch) if watch.term == term => watch.latest = watch.latest.max(commit),
            Some(watch) if watch.term > term => {}
            _ => {
                self.watch = Some(Watch {
                    term,
                    first: commit,
                    latest: commit,
                })
            }
        }
    }

    /// Rewrites a message this member sends while abstaining: an append acknowledgement is
    /// tagged [`ABSTAINING_CONTEXT`] (for the leader's nudges); a heartbeat answer loses its
    /// read context, so it confirms no read.
    pub fn outgoing(&self, message: &mut Message) {
        if self.voting {
            return;
        }
        match message.get_msg_type() {
            MessageType::MsgAppendResponse => message.context = ABSTAINING_CONTEXT.to_vec().into(),
            MessageType::MsgHeartbeatResponse => message.context = Default::default(),
            _ => {}
        }
    }

    /// Whether raft-rs may be ticked: always when voting or leading; while abstaining only
    /// while the log is empty (a follower holding entries must not campaign, and a follower
    /// needs ticks for nothing else).
    pub fn may_tick(&self, leading: bool, log_empty: bool) -> bool {
        self.voting || leading || log_empty
    }

    /// Called every tick: true when the leader should propose an empty entry so an abstaining
    /// follower (or itself) sees its commit index advance: at most every
    /// `RAFT_ABSTAIN_NUDGE_TICKS`, and only when `idle` (every entry of its log committed), so
    /// a leader without a quorum piles up no more than one.
    pub fn nudge_due(&mut self, leading: bool, idle: bool) -> bool {
        self.ticks_since_nudge = self.ticks_since_nudge.saturating_add(1);
        let wanted = self.follower_abstains || !self.voting;
        if !leading || !idle || !wanted || self.ticks_since_nudge < RAFT_ABSTAIN_NUDGE_TICKS {
            return false;
        }
        self.ticks_since_nudge = 0;
        self.follower_abstains = false;
        true
    }

    /// Checks the catch-up rule against the applied index; true once, when the member starts
    /// voting again (logged at INFO). The marker, if any, is then for the caller to remove
    /// ([`Abstention::take_marker`]).
    pub fn catch_up(&mut self, applied: u64) -> bool {
        let Some(watch) = self.watch.filter(|_| !self.voting) else {
            return false;
        };
        if watch.latest <= watch.first || applied < watch.latest {
            return false;
        }
        self.voting = true;
        ::log::info!(
            "shard {}: caught up with the leader of term {} (applied index {applied}; its commit index went from \
             {} to {} meanwhile): this member votes again",
            self.shard,
            watch.term,
            watch.first,
            watch.latest
        );
        true
    }

    /// `--raft-force-vote`: votes at once (logged at WARN); true if it was abstaining.
    pub fn force(&mut self) -> bool {
        if self.voting {
            return false;
        }
        self.voting = true;
        ::log::warn!(
            "shard {}: --raft-force-vote: this member votes and campaigns at once, although it has not caught up",
            self.shard
        );
        true
    }

    /// The marker file, once voting (to remove it); never while abstaining.
    pub fn take_marker(&mut self) -> Option<Marker> {
        if self.voting { self.marker.take() } else { None }
    }
}

/// `D/raft/shard-N.abstain`: present while the group abstains, so a crash keeps it abstaining.
#[derive(Debug)]
pub struct Marker {
    path: PathBuf,
}

impl Marker {
    /// The marker beside the log file `D/raft/shard-N.log`.
    pub fn beside(log_path: &Path) -> Marker {
        Marker {
            path: log_path.with_extension("abstain"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// At start: whether the group abstains: its Raft state is empty (then the marker is
    /// written and made durable, file and directory, before the member acknowledges anything)
    /// or the marker is there (it stopped while catching up). Short blocking calls, once per
    /// shard at start, like the log's own opening.
    pub fn decide(&self, state_empty: bool) -> io::Result<bool> {
        if self.path.exists() {
            return Ok(true);
        }
        if !state_empty {
            return Ok(false);
        }
        super::snapshot::replace_durably(&self.path, &[b"abstaining until caught up with a leader\n"])?;
        Ok(true)
    }

    /// Removes the marker and syncs its directory (a crash after this comes back voting). A
    /// removal lost to a crash only makes the member abstain again: safe.
    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Entry;

    fn message(kind: MessageType, from: u64, term: u64) -> Message {
        let mut message = Message::default();
        message.set_msg_type(kind);
        (message.from, message.to, message.term) = (from, 2, term);
        message
    }

    fn vote(kind: MessageType, index: u64, log_term: u64) -> Message {
        let mut vote = message(kind, 3, 5);
        (vote.index, vote.log_term) = (index, log_term);
        vote
    }

    /// An append from `from` in `term` carrying `commit` and the entries `entries` (by index).
    fn append(from: u64, term: u64, commit: u64, entries: std::ops::Range<u64>) -> Message {
        let mut append = message(MessageType::MsgAppend, from, term);
        append.commit = commit;
        append.index = entries.start.saturating_sub(1);
        append.entries = entries
            .map(|index| Entry {
                index,
                term,
                ..Entry::default()
            })
            .collect();
        append
    }

    fn indexes(message: &Message) -> Vec<u64> {
        message.entries.iter().map(|entry| entry.index).collect()
    }

    #[test]
    fn an_abstaining_member_drops_votes_for_candidates_with_a_log_only() {
        let mut abstention = Abstention::abstaining(0, None);
        for kind in [MessageType::MsgRequestVote, MessageType::MsgRequestPreVote] {
            assert_eq!(abstention.admit(&mut vote(kind, 7, 2), 0), Admit::Drop, "{kind:?}");
            assert_eq!(
                abstention.admit(&mut vote(kind, 0, 0), 0),
                Admit::Step,
                "{kind:?} empty"
            );
        }
        assert_eq!(
            abstention.admit(&mut vote(MessageType::MsgTimeoutNow, 0, 0), 0),
            Admit::Drop
        );
        for kind in [MessageType::MsgRequestVoteResponse, MessageType::MsgAppendResponse] {
            assert_eq!(abstention.admit(&mut vote(kind, 7, 2), 0), Admit::Step, "{kind:?}");
        }
        let mut voting = Abstention::voting(0);
        assert_eq!(
            voting.admit(&mut vote(MessageType::MsgRequestVote, 7, 2), 0),
            Admit::Step
        );
        assert_eq!(
            voting.admit(&mut vote(MessageType::MsgTimeoutNow, 0, 0), 0),
            Admit::Step
        );
    }

    #[test]
    fn an_abstaining_member_is_ticked_only_while_its_log_is_empty_or_it_leads() {
        let abstention = Abstention::abstaining(0, None);
        assert!(
            abstention.may_tick(false, true),
            "an empty log campaigns: first election"
        );
        assert!(
            !abstention.may_tick(false, false),
            "holding entries, it must not campaign"
        );
        assert!(abstention.may_tick(true, false), "a leader heartbeats");
        assert!(Abstention::voting(0).may_tick(false, false));
    }

    #[test]
    fn it_takes_only_committed_entries_so_it_never_helps_a_leader_commit() {
        let mut abstention = Abstention::abstaining(0, None);
        let mut first = append(3, 4, 20, 18..26);
        assert_eq!(abstention.admit(&mut first, 0), Admit::Step);
        assert_eq!(
            indexes(&first),
            (18..=20).collect::<Vec<_>>(),
            "only up to the commit index"
        );
        let mut past = append(3, 4, 20, 21..26);
        abstention.admit(&mut past, 4);
        assert!(past.entries.is_empty(), "nothing past it: sent again once committed");
        let mut voting = Abstention::voting(0);
        let mut whole = append(3, 4, 20, 18..26);
        voting.admit(&mut whole, 4);
        assert_eq!(whole.entries.len(), 8);
    }

    #[test]
    fn its_acknowledgements_are_tagged_and_its_heartbeat_answers_confirm_no_read() {
        let abstention = Abstention::abstaining(0, None);
        let mut ack = message(MessageType::MsgAppendResponse, 2, 4);
        (ack.to, ack.index) = (3, 20);
        abstention.outgoing(&mut ack);
        assert_eq!((ack.index, ack.context.as_ref()), (20, ABSTAINING_CONTEXT));
        let mut heartbeat = message(MessageType::MsgHeartbeatResponse, 2, 4);
        heartbeat.context = b"read 7".to_vec().into();
        abstention.outgoing(&mut heartbeat);
        assert!(heartbeat.context.is_empty(), "no read confirmed");
        let voting = Abstention::voting(0);
        let mut heartbeat = message(MessageType::MsgHeartbeatResponse, 2, 4);
        heartbeat.context = b"read 7".to_vec().into();
        voting.outgoing(&mut heartbeat);
        assert_eq!(heartbeat.context.as_ref(), b"read 7");
    }

    #[test]
    fn a_leader_that_committed_nothing_is_taken_whole() {
        // A brand-new cluster: the first leader's first entry needs these acknowledgements.
        let mut abstention = Abstention::abstaining(0, None);
        let mut first = append(1, 1, 0, 1..2);
        abstention.admit(&mut first, 0);
        assert_eq!(indexes(&first), vec![1]);
        let mut next = append(1, 1, 1, 2..4);
        abstention.admit(&mut next, 1);
        assert!(next.entries.is_empty(), "once it has committed, only committed entries");
        assert!(
            abstention.catch_up(1),
            "its commit index went from 0 to 1: new cluster caught up"
        );
    }

    #[test]
    fn it_votes_again_once_the_leaders_commit_index_advanced_and_it_applied_it() {
        let mut abstention = Abstention::abstaining(0, None);
        assert!(!abstention.catch_up(100), "no leader heard: nothing to catch up with");
        abstention.admit(&mut append(1, 4, 20, 1..21), 0);
        assert!(
            !abstention.catch_up(20),
            "a stale leader would tell the same: the commit index must advance"
        );
        let mut heartbeat = message(MessageType::MsgHeartbeat, 1, 4);
        heartbeat.commit = 30;
        abstention.admit(&mut heartbeat, 4);
        assert!(
            !abstention.catch_up(30),
            "a heartbeat's commit index is only a lower bound"
        );
        abstention.admit(&mut append(1, 4, 22, 21..23), 4);
        assert!(!abstention.catch_up(21), "not applied yet");
        assert!(!abstention.is_voting());
        assert!(abstention.catch_up(22));
        assert!(abstention.is_voting());
        assert!(!abstention.catch_up(30), "the change is reported once");
        assert_eq!(
            abstention.admit(&mut vote(MessageType::MsgRequestVote, 7, 2), 4),
            Admit::Step
        );
        let mut whole = append(1, 4, 22, 23..30);
        abstention.admit(&mut whole, 4);
        assert_eq!(whole.entries.len(), 7, "voting: appends taken whole");
    }

    #[test]
    fn a_newer_leader_restarts_the_watch_and_an_older_one_is_ignored() {
        let mut abstention = Abstention::abstaining(0, None);
        abstention.admit(&mut append(3, 4, 20, 0..0), 0);
        abstention.admit(&mut append(1, 6, 30, 0..0), 4);
        abstention.admit(&mut append(3, 4, 40, 0..0), 6);
        abstention.heard_leader(4, 50);
        assert!(!abstention.catch_up(50), "term 4 is older than the watched term 6");
        abstention.admit(&mut append(1, 6, 31, 0..0), 6);
        assert!(abstention.catch_up(31));
    }

    #[test]
    fn a_stale_leaders_message_is_no_evidence() {
        let mut abstention = Abstention::abstaining(0, None);
        abstention.admit(&mut append(3, 3, 20, 0..0), 5);
        abstention.admit(&mut append(3, 3, 21, 0..0), 5);
        assert!(!abstention.catch_up(21), "raft-rs ignores term 3 < 5");
    }

    #[test]
    fn a_leader_nudges_an_abstaining_follower_now_and_then_while_idle() {
        let mut leader = Abstention::voting(0);
        assert!((0..20).all(|_| !leader.nudge_due(true, true)), "nobody abstains");
        let mut tagged = message(MessageType::MsgAppendResponse, 2, 4);
        tagged.context = ABSTAINING_CONTEXT.to_vec().into();
        assert_eq!(leader.admit(&mut tagged, 4), Admit::Step);
        assert!(!leader.nudge_due(false, true), "not leading");
        assert!(!leader.nudge_due(true, false), "entries not committed yet: no pile-up");
        let due = (0..RAFT_ABSTAIN_NUDGE_TICKS)
            .filter(|_| leader.nudge_due(true, true))
            .count();
        assert_eq!(due, 1);
        assert!(
            (0..20).all(|_| !leader.nudge_due(true, true)),
            "until a follower abstains again"
        );
        let mut alone = Abstention::abstaining(0, None);
        let due = (0..RAFT_ABSTAIN_NUDGE_TICKS * 2)
            .filter(|_| alone.nudge_due(true, true))
            .count();
        assert_eq!(due, 2, "an abstaining leader nudges itself");
    }

    #[test]
    fn force_votes_at_once_and_hands_the_marker_back() {
        let dir = std::env::temp_dir().join(format!("corekv-abstain-force-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = Marker::beside(&dir.join("shard-0.log"));
        let mut abstention = Abstention::abstaining(0, Some(marker));
        assert!(abstention.take_marker().is_none(), "kept while abstaining");
        assert!(abstention.force());
        assert!(abstention.is_voting());
        assert!(!abstention.force());
        assert!(abstention.take_marker().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_marker_keeps_a_member_abstaining_across_a_crash_until_removed() {
        let dir = std::env::temp_dir().join(format!("corekv-abstain-marker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = Marker::beside(&dir.join("shard-1.log"));
        assert_eq!(marker.path(), dir.join("shard-1.abstain"));
        assert!(!marker.decide(false).unwrap(), "state and no marker: votes");
        assert!(!marker.path().exists());
        assert!(marker.decide(true).unwrap(), "empty state: abstains");
        assert!(marker.path().exists(), "written before anything is acknowledged");
        assert!(
            marker.decide(false).unwrap(),
            "entries but the marker: crashed while catching up"
        );
        marker.remove().unwrap();
        assert!(!marker.path().exists());
        assert!(!marker.decide(false).unwrap(), "caught up and restarted: votes");
        marker.remove().unwrap(); // removing twice is harmless
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
