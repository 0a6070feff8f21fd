//! A group's raft-rs storage: `MemStorage` (entries, hard state, members) with the group's
//! latest snapshot beside it, which raft-rs 0.7's `MemStorage` cannot hold (its own snapshot
//! carries no data), and the loading of what `--data-dir` held into it at start.
//!
//! Owns that in-memory state only; the group's driver changes it (appends, compaction,
//! installed snapshots), raft-rs reads it. It never does I/O and never touches a store.

use std::cell::RefCell;

use raft::eraftpb::{Entry, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use super::log;

/// raft-rs's `MemStorage` (entries, hard state, members) with the group's latest snapshot,
/// which `MemStorage` cannot hold: raft-rs reads it here when a follower needs it.
pub struct GroupStorage {
    pub mem: MemStorage,
    /// The latest snapshot (empty, index 0, before the first).
    pub snapshot: RefCell<Snapshot>,
}

impl Storage for GroupStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        self.mem.term(index)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    /// The latest snapshot; "temporarily unavailable" (raft-rs tries again later) before the
    /// first, or when raft-rs asks for a newer one than this group has taken.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let snapshot = self.snapshot.borrow();
        let index = snapshot.get_metadata().index;
        if index == 0 || index < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(snapshot.clone())
    }
}

/// Loads what `--data-dir` held into `MemStorage`: the snapshot (where its log starts), the
/// entries after it, the hard state. Returns the snapshot, for the store.
pub fn load_recovered(storage: &MemStorage, recovered: log::Recovered) -> Result<Option<Snapshot>, String> {
    let mut core = storage.wl();
    let snapshot_index = recovered.snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
    if let Some(snapshot) = &recovered.snapshot {
        core.apply_snapshot(snapshot.clone()).map_err(|e| e.to_string())?;
    }
    // MemStorage panics on a gap; the file never has one, unless damaged.
    if let Some(first) = recovered.entries.first()
        && first.index != snapshot_index + 1
    {
        return Err(format!(
            "its entries start at {} but its snapshot ends at {snapshot_index}",
            first.index
        ));
    }
    core.append(&recovered.entries).map_err(|e| e.to_string())?;
    if let Some(mut hard_state) = recovered.hard_state {
        // A crash between writing a leader's snapshot and cutting the log leaves the older
        // hard state: it may lag the snapshot's commit and term. raft-rs panics on a commit
        // past the log, which only a damaged file could hold.
        let meta = recovered.snapshot.as_ref().map(|s| s.get_metadata());
        if let Some(meta) = meta.filter(|meta| meta.term > hard_state.term) {
            (hard_state.term, hard_state.vote) = (meta.term, 0);
        }
        let last = recovered.entries.last().map_or(snapshot_index, |e| e.index);
        hard_state.commit = hard_state.commit.clamp(snapshot_index, last);
        core.set_hardstate(hard_state);
    }
    Ok(recovered.snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::HardState;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }

    fn snapshot_at(index: u64, term: u64) -> Snapshot {
        let mut snapshot = Snapshot::default();
        (snapshot.mut_metadata().index, snapshot.mut_metadata().term) = (index, term);
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        snapshot
    }

    // Goal: a snapshot and its tail load into MemStorage where the log starts after it; an
    // older hard state is raised to the snapshot's term and commit; a gap is refused, not a
    // panic.
    #[test]
    fn recovered_snapshots_and_tails_load_and_gaps_are_refused() {
        let storage = MemStorage::new_with_conf_state((vec![1, 2, 3], vec![]));
        let recovered = log::Recovered {
            entries: vec![entry(11, 3), entry(12, 3)],
            hard_state: Some(HardState {
                term: 2,
                vote: 1,
                commit: 4,
                ..HardState::default()
            }),
            snapshot: Some(snapshot_at(10, 3)),
        };
        assert_eq!(load_recovered(&storage, recovered).unwrap(), Some(snapshot_at(10, 3)));
        assert_eq!((storage.first_index(), storage.last_index()), (Ok(11), Ok(12)));
        assert_eq!(storage.term(10), Ok(3));
        let state = storage.initial_state().unwrap();
        assert_eq!(
            (state.hard_state.term, state.hard_state.vote, state.hard_state.commit),
            (3, 0, 10)
        );
        let gap = log::Recovered {
            entries: vec![entry(13, 3)],
            snapshot: Some(snapshot_at(10, 3)),
            ..log::Recovered::default()
        };
        let storage = MemStorage::new_with_conf_state((vec![1, 2, 3], vec![]));
        assert!(load_recovered(&storage, gap).unwrap_err().contains("start at 13"));
    }

    // Goal: raft-rs is told "temporarily unavailable" before the first snapshot and when it
    // asks for a newer one, and gets the snapshot otherwise.
    #[test]
    fn the_storage_answers_with_its_snapshot() {
        let storage = GroupStorage {
            mem: MemStorage::new_with_conf_state((vec![1], vec![])),
            snapshot: RefCell::new(Snapshot::default()),
        };
        let unavailable = Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        assert_eq!(storage.snapshot(0, 2), unavailable);
        *storage.snapshot.borrow_mut() = snapshot_at(7, 1);
        assert_eq!(storage.snapshot(0, 2), Ok(snapshot_at(7, 1)));
        assert_eq!(storage.snapshot(8, 2), unavailable);
    }
}
