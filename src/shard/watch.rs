//! One shard's watchers (`GET /v1/watch/{key}`, `GET /v1/watch?prefix=`) and its recent
//! changes, kept for watchers that resume after a reconnect.
//!
//! Owns the shard's change sequence number (`seq`: +1 for every set, delete, expiry and
//! eviction of a key this shard owns), a bounded history of recent changes
//! (`--watch-history-changes`, and [`WATCH_HISTORY_BYTES_MAX`]), and the watchers registered
//! here: key watchers on the key's owner, prefix watchers on every shard. A change is offered
//! to each matching watcher's bounded channel with `try_send` — a writer never waits: a watcher
//! whose channel is full, or that has more than [`WATCH_QUEUE_BYTES_MAX`] queued, is dropped
//! (its connection then sends a final `dropped` event). It never touches the store and lives
//! on its shard's thread only; the channels are the only thing other threads see.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use glommio::channels::local_channel::LocalSender;
use glommio::channels::shared_channel::ConnectedSender;

use super::message::{Change, ChangeKind, Record, WatchStart, WatchTarget};
use super::store::Removal;
use crate::limits::{WATCH_HISTORY_BYTES_MAX, WATCH_HISTORY_VALUE_BYTES_MAX, WATCH_QUEUE_BYTES_MAX};
use crate::sync::shim::{Arc, AtomicBool, AtomicUsize, Ordering};

/// Watchers a shard holds before its first sweep for ended connections.
const WATCH_SWEEP_WATCHERS_MIN: usize = 1024;

/// What a watcher's two ends share: the bytes queued between them, and whether the shard
/// dropped it for falling behind (so its connection can say so).
#[derive(Debug, Default)]
pub struct WatchShared {
    /// Bytes of the changes in the channel: added by the shard, taken off by the connection.
    pub queued_bytes: AtomicUsize,
    pub dropped: AtomicBool,
    /// Set by the connection when its watch ends, so registries can forget a watcher of a key
    /// that never changes again (see [`Watch::register`]'s sweep).
    pub gone: AtomicBool,
}

/// The sending end of a watcher's channel: on this shard, or towards another shard's
/// connection.
pub enum WatchSender {
    Local(LocalSender<Arc<Change>>),
    Remote(ConnectedSender<Arc<Change>>),
}

impl WatchSender {
    fn try_send(&self, change: Arc<Change>) -> bool {
        match self {
            WatchSender::Local(sender) => sender.try_send(change).is_ok(),
            WatchSender::Remote(sender) => sender.try_send(change).is_ok(),
        }
    }
}

struct Watcher {
    sender: WatchSender,
    shared: Arc<WatchShared>,
}

impl Watcher {
    /// Offers a change; false when the watcher must go (it fell behind, or its connection
    /// went away). A watcher that fell behind is marked dropped first.
    fn offer(&self, change: &Arc<Change>) -> bool {
        let bytes = change.bytes();
        let queued = self.shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        if queued > 0 && queued + bytes > WATCH_QUEUE_BYTES_MAX || !self.sender.try_send(Arc::clone(change)) {
            self.shared.dropped.store(true, Ordering::Release);
            return false;
        }
        true
    }
}

#[derive(Default)]
struct State {
    /// The last change's number (0: none yet).
    seq: u64,
    history: VecDeque<Arc<Change>>,
    history_bytes: usize,
    /// Changes kept for resuming watchers (0: none, every resume is `compacted`).
    history_changes_max: usize,
    keys: hashbrown::HashMap<Box<[u8]>, Vec<Watcher>>,
    prefixes: Vec<(Box<[u8]>, Watcher)>,
    watchers: usize,
    /// `--max-watchers` (default [`crate::limits::WATCHERS_PER_SHARD_MAX`]).
    watchers_max: usize,
    /// The next registration sweeps out watchers whose connection has gone once `watchers`
    /// reaches this (doubling, so sweeping costs O(1) per registration on average).
    sweep_at: usize,
}

impl State {
    fn matches(&self, key: &[u8]) -> bool {
        self.keys.contains_key(key) || self.prefixes.iter().any(|(prefix, _)| key.starts_with(prefix))
    }

    /// Forgets the watchers whose connection has ended.
    fn sweep(&mut self) {
        let live = |watcher: &Watcher| !watcher.shared.gone.load(Ordering::Acquire);
        self.keys.retain(|_, watchers| {
            watchers.retain(live);
            !watchers.is_empty()
        });
        self.prefixes.retain(|(_, watcher)| live(watcher));
        self.watchers = self.keys.values().map(Vec::len).sum::<usize>() + self.prefixes.len();
        self.sweep_at = (2 * self.watchers).max(WATCH_SWEEP_WATCHERS_MIN);
    }

    /// The oldest change a watcher resuming after `from` would need is retained.
    fn can_resume_after(&self, from: u64) -> bool {
        match self.history.front() {
            _ if from >= self.seq => true,
            Some(oldest) => oldest.seq <= from + 1,
            None => false,
        }
    }
}

/// One shard's watchers and change history. Off (records nothing) until started.
#[derive(Default)]
pub struct Watch {
    state: RefCell<State>,
    on: Cell<bool>,
}

impl Watch {
    /// Starts numbering changes, keeping the last `history_changes_max` of them.
    /// Turns change numbering on, keeping `history_changes_max` changes for resumes and
    /// holding at most `watchers_max` watchers (`--max-watchers`).
    pub fn start(&self, history_changes_max: usize, watchers_max: usize) {
        let mut state = self.state.borrow_mut();
        state.history_changes_max = history_changes_max;
        state.watchers_max = watchers_max;
        drop(state);
        self.on.set(true);
    }

    pub fn is_on(&self) -> bool {
        self.on.get()
    }

    /// The last change's number.
    pub fn seq(&self) -> u64 {
        self.state.borrow().seq
    }

    /// Watchers registered here.
    pub fn watchers(&self) -> usize {
        self.state.borrow().watchers
    }

    /// True when a change of `key` must be built (it is kept, or someone watches it).
    pub fn wants(&self, key: &[u8]) -> bool {
        let state = self.state.borrow();
        self.on.get() && (state.history_changes_max > 0 || state.matches(key))
    }

    /// A key this shard owns was set (created, replaced or updated) to `value`, at `version`.
    pub fn set(&self, key: &[u8], value: &[u8], version: u64) {
        self.record(ChangeKind::Set, key, value, version);
    }

    /// A key left the store.
    pub fn removed(&self, record: &Record, cause: Removal) {
        let kind = match cause {
            Removal::Deleted => ChangeKind::Delete,
            Removal::Expired => ChangeKind::Expired,
            Removal::Evicted => ChangeKind::Evicted,
        };
        self.record(kind, record.key(), b"", 0);
    }

    fn record(&self, kind: ChangeKind, key: &[u8], value: &[u8], version: u64) {
        if !self.on.get() {
            return;
        }
        let mut state = self.state.borrow_mut();
        state.seq += 1;
        let watched = state.matches(key);
        if state.history_changes_max == 0 && !watched {
            return;
        }
        let value_omitted = !watched && value.len() > WATCH_HISTORY_VALUE_BYTES_MAX;
        let change = Arc::new(Change {
            seq: state.seq,
            kind,
            record: Record::new(key, if value_omitted { b"" } else { value }),
            value_omitted,
            version,
            at: watched.then(std::time::Instant::now),
        });
        if state.history_changes_max > 0 {
            state.history_bytes += change.bytes();
            state.history.push_back(Arc::clone(&change));
            while state.history.len() > state.history_changes_max || state.history_bytes > WATCH_HISTORY_BYTES_MAX {
                // The loop runs only while the history holds something.
                let Some(oldest) = state.history.pop_front() else { break };
                state.history_bytes -= oldest.bytes();
            }
        }
        deliver(&mut state, &change);
    }

    /// Registers a watcher; on a resume (`from`), first replays the retained changes after
    /// it that match. `Compacted` when they are no longer all retained (then nothing is
    /// registered), `Refused` past `--max-watchers`.
    pub fn register(
        &self,
        target: WatchTarget,
        from: Option<u64>,
        sender: WatchSender,
        shared: Arc<WatchShared>,
    ) -> WatchStart {
        let mut state = self.state.borrow_mut();
        if state.watchers >= state.sweep_at.max(WATCH_SWEEP_WATCHERS_MIN) || state.watchers >= state.watchers_max {
            state.sweep();
        }
        if state.watchers >= state.watchers_max {
            return WatchStart::Refused("too many watchers on this shard (--max-watchers)");
        }
        let watcher = Watcher { sender, shared };
        if let Some(from) = from {
            if from > state.seq || !state.can_resume_after(from) {
                let oldest_seq = state.history.front().map_or(state.seq + 1, |c| c.seq);
                return WatchStart::Compacted { oldest_seq };
            }
            for change in state
                .history
                .iter()
                .filter(|c| c.seq > from && target.matches(c.record.key()))
            {
                if !watcher.offer(change) {
                    return WatchStart::Refused("the changes to replay overflow a watcher's queue");
                }
            }
        }
        let seq = state.seq;
        state.watchers += 1;
        match target {
            WatchTarget::Key(key) => state.keys.entry(key).or_default().push(watcher),
            WatchTarget::Prefix(prefix) => state.prefixes.push((prefix, watcher)),
        }
        WatchStart::Started { seq }
    }
}

/// Offers `change` to every watcher of its key, dropping those that must go.
fn deliver(state: &mut State, change: &Arc<Change>) {
    let key = change.record.key();
    let mut gone = 0;
    if let Some(watchers) = state.keys.get_mut(key) {
        let before = watchers.len();
        watchers.retain(|watcher| watcher.offer(change));
        gone += before - watchers.len();
        if watchers.is_empty() {
            state.keys.remove(key);
        }
    }
    if !state.prefixes.is_empty() {
        let before = state.prefixes.len();
        state
            .prefixes
            .retain(|(prefix, watcher)| !key.starts_with(prefix) || watcher.offer(change));
        gone += before - state.prefixes.len();
    }
    state.watchers -= gone;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::WATCHERS_PER_SHARD_MAX;
    use glommio::LocalExecutor;
    use glommio::channels::local_channel;

    fn key(text: &str) -> WatchTarget {
        WatchTarget::Key(text.as_bytes().into())
    }

    #[test]
    fn changes_reach_matching_watchers_in_order_and_resume_from_history() {
        LocalExecutor::default().run(async {
            let watch = Watch::default();
            watch.start(4, WATCHERS_PER_SHARD_MAX);
            let (sender, receiver) = local_channel::new_bounded(16);
            let shared = Arc::new(WatchShared::default());
            let started = watch.register(key("k"), None, WatchSender::Local(sender), shared);
            assert_eq!(started, WatchStart::Started { seq: 0 });
            watch.set(b"k", b"1", 7);
            watch.set(b"other", b"x", 8);
            watch.removed(&Record::new(b"k", b""), Removal::Expired);
            let first = receiver.recv().await.unwrap();
            let second = receiver.recv().await.unwrap();
            assert_eq!(
                (first.seq, first.kind, first.record.value(), first.version),
                (1, ChangeKind::Set, &b"1"[..], 7)
            );
            assert_eq!((second.seq, second.kind), (3, ChangeKind::Expired));
            // A large value nobody watches is kept without it.
            watch.set(b"big", &vec![0u8; WATCH_HISTORY_VALUE_BYTES_MAX + 1], 9);
            assert!(watch.state.borrow().history.back().unwrap().value_omitted);
            // Resume after seq 1 of a prefix: changes 2 to 4 are replayed.
            let (sender, receiver) = local_channel::new_bounded(16);
            let target = WatchTarget::Prefix(Box::from(&b""[..]));
            let started = watch.register(target, Some(1), WatchSender::Local(sender), Arc::default());
            assert_eq!(started, WatchStart::Started { seq: 4 });
            assert_eq!(receiver.recv().await.unwrap().seq, 2);
            assert_eq!(receiver.recv().await.unwrap().seq, 3);
            assert_eq!(receiver.recv().await.unwrap().record.value(), b"");
            for _ in 0..4 {
                watch.set(b"x", b"", 1);
            }
            let (sender, _receiver) = local_channel::new_bounded(16);
            let compacted = watch.register(key("k"), Some(2), WatchSender::Local(sender), Arc::default());
            assert_eq!(compacted, WatchStart::Compacted { oldest_seq: 5 });
            let (sender, _receiver) = local_channel::new_bounded(16);
            let unknown = watch.register(key("k"), Some(99), WatchSender::Local(sender), Arc::default());
            assert!(matches!(unknown, WatchStart::Compacted { .. }), "a seq from the future");
        });
    }

    #[test]
    fn watchers_whose_connection_ended_are_swept_out() {
        LocalExecutor::default().run(async {
            let watch = Watch::default();
            watch.start(0, WATCHERS_PER_SHARD_MAX);
            let mut receivers = Vec::new();
            for i in 0..WATCH_SWEEP_WATCHERS_MIN + 10 {
                let (sender, receiver) = local_channel::new_bounded(1);
                let shared = Arc::new(WatchShared::default());
                shared.gone.store(i % 2 == 0, Ordering::Release);
                let target = key(&format!("k{i}"));
                assert!(matches!(
                    watch.register(target, None, WatchSender::Local(sender), shared),
                    WatchStart::Started { .. }
                ));
                receivers.push(receiver);
            }
            let watchers = watch.watchers();
            assert!(
                watchers < WATCH_SWEEP_WATCHERS_MIN,
                "the gone half was forgotten: {watchers}"
            );
        });
    }

    #[test]
    fn a_full_watcher_is_dropped_and_writers_go_on() {
        LocalExecutor::default().run(async {
            let watch = Watch::default();
            watch.start(0, WATCHERS_PER_SHARD_MAX);
            let (sender, receiver) = local_channel::new_bounded(2);
            let shared = Arc::new(WatchShared::default());
            watch.register(key("k"), None, WatchSender::Local(sender), Arc::clone(&shared));
            for i in 0..10u8 {
                watch.set(b"k", &[i], u64::from(i) + 1);
            }
            assert!(shared.dropped.load(Ordering::Acquire));
            assert_eq!(watch.watchers(), 0, "the registry let it go");
            assert_eq!(watch.seq(), 10);
            assert_eq!(receiver.recv().await.unwrap().seq, 1);
            assert_eq!(receiver.recv().await.unwrap().seq, 2);
            assert!(receiver.recv().await.is_none(), "its channel is closed");
        });
    }
}
