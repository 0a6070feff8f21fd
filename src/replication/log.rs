//! A group's durable Raft log (`--data-dir D` with `--peers`): one append-only file per shard,
//! `D/raft/shard-N.log`, of CRC32C-checked records, each a raft-rs `Entry` or `HardState`.
//! Entries and the hard state of a `Ready` are written and `fdatasync`ed before the messages
//! that depend on them are sent; at start the file is read back into raft-rs's `MemStorage`.
//! A compaction ([`RaftLog::checkpoint`]) writes the group's snapshot beside it
//! (`shard-N.snap`, see [`super::snapshot`]) and then replaces the file with one holding only
//! the entries after the snapshot and the hard state, so the file stays bounded.
//!
//! Owns those two files only, through glommio's `BufferedFile` (io_uring: the executor never
//! blocks on it) and, for the rare whole-file replacements, glommio's blocking pool. It never
//! touches the store: the snapshot is restored and later entries replayed by the group.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{BufferedFile, OpenOptions};
use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, Snapshot};

use super::snapshot;

/// length of the payload (u32), CRC32C of kind + payload (u32), kind (u8).
const RECORD_HEADER_BYTES: usize = 9;
const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;

/// What a log file held: its entries (later ones replacing conflicting earlier ones, as raft
/// overwrote them; none at or before the snapshot's index), the last hard state, and the
/// snapshot beside it.
#[derive(Debug, Default, PartialEq)]
pub struct Recovered {
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<Snapshot>,
}

impl Recovered {
    /// Nothing at all: no entry, no snapshot, no hard state but the initial one (a new or
    /// wiped data dir).
    pub fn is_empty(&self) -> bool {
        let initial = |hs: &HardState| hs.term == 0 && hs.vote == 0 && hs.commit == 0;
        self.entries.is_empty() && self.snapshot.is_none() && self.hard_state.as_ref().is_none_or(initial)
    }
}

/// One group's log file, open for appending.
pub struct RaftLog {
    path: PathBuf,
    /// `shard-N.snap`, beside it.
    snapshot_path: PathBuf,
    /// Replaced by a checkpoint (never while a write is under way: the group's driver does
    /// both, one after the other), so it is cloned out before each await.
    file: RefCell<Rc<BufferedFile>>,
    /// Where the next record goes (the end of the last whole record).
    end: Cell<u64>,
}

/// `D/raft/shard-N.log`.
pub fn path_for(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join("raft").join(format!("shard-{shard}.log"))
}

impl RaftLog {
    /// `D/raft/shard-N.log`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating) shard `shard`'s log under `data_dir` and reads it back. A torn or
    /// corrupt tail (a crash mid-write) is cut off: everything before it was acknowledged.
    /// The snapshot beside it is read first; a torn or corrupt snapshot is refused (it was
    /// written whole, then renamed: damage there is not a crash's torn tail).
    pub async fn open(data_dir: &Path, shard: usize) -> Result<(RaftLog, Recovered), String> {
        let path = path_for(data_dir, shard);
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("raft log {}: {what}: {e}", path.display());
        if let Some(dir) = path.parent() {
            // Once per shard at start, before it serves: short blocking calls.
            std::fs::create_dir_all(dir).map_err(|e| fail("cannot create its directory", &e))?;
            // A checkpoint interrupted before its rename leaves a temporary file: never read.
            let _ = std::fs::remove_file(snapshot::temp_path(&path));
            let _ = std::fs::remove_file(snapshot::temp_path(&snapshot::path_for(data_dir, shard)));
        }
        let snapshot = snapshot::read_file(&snapshot::path_for(data_dir, shard))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .buffered_open(&path)
            .await
            .map_err(|e| fail("cannot open", &e))?;
        let size = file.file_size().await.map_err(|e| fail("cannot stat", &e))?;
        let bytes = file
            .read_at(0, size as usize)
            .await
            .map_err(|e| fail("cannot read", &e))?;
        let (mut recovered, whole) = decode(&bytes);
        if (whole as u64) < size {
            ::log::warn!(
                "raft log {}: {} bytes of torn or corrupt tail cut off",
                path.display(),
                size - whole as u64
            );
            file.truncate(whole as u64)
                .await
                .map_err(|e| fail("cannot truncate", &e))?;
        }
        if let Some(snapshot) = &snapshot {
            // The snapshot was written before the log was cut: entries it holds may remain.
            let index = snapshot.get_metadata().index;
            recovered.entries.retain(|entry| entry.index > index);
        }
        recovered.snapshot = snapshot;
        let log = RaftLog {
            path,
            snapshot_path: snapshot::path_for(data_dir, shard),
            file: RefCell::new(Rc::new(file)),
            end: Cell::new(whole as u64),
        };
        Ok((log, recovered))
    }

    /// Makes `snapshot` durable beside the log, then replaces the log with `entries` (those
    /// after the snapshot) and `hard_state`: first the snapshot (so a crash between the two
    /// finds the snapshot and the old, longer log), each by temporary file, `fdatasync` and
    /// rename. Costs a write of the snapshot and of the log's tail, on the blocking pool.
    pub async fn checkpoint(
        &self,
        snapshot: &Snapshot,
        entries: &[Entry],
        hard_state: &HardState,
    ) -> std::io::Result<()> {
        self.write_snapshot(snapshot).await?;
        self.replace_log(entries, hard_state).await
    }

    /// The first half of a checkpoint: writes `snapshot` durably as `shard-N.snap` (temporary
    /// file, fdatasync, rename, folder sync) on glommio's blocking pool. Safe to run while the
    /// group persists entries (it never touches the log file), and safe to crash after: the
    /// log's entries at or before the snapshot are skipped when it is read back. Never two at
    /// once (they would share the temporary file): the group keeps at most one in flight.
    pub fn write_snapshot(
        &self,
        snapshot: &Snapshot,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + 'static {
        let (snapshot, snapshot_path) = (snapshot.clone(), self.snapshot_path.clone());
        glommio::executor().spawn_blocking(move || snapshot::write_file(&snapshot_path, &snapshot))
    }

    /// The second half: replaces the log file by `entries` (those after the snapshot) and
    /// `hard_state`, durably, and appends there from now on.
    pub async fn replace_log(&self, entries: &[Entry], hard_state: &HardState) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for entry in entries {
            record(&mut bytes, KIND_ENTRY, &entry.write_to_bytes()?);
        }
        record(&mut bytes, KIND_HARD_STATE, &hard_state.write_to_bytes()?);
        let (len, path) = (bytes.len() as u64, self.path.clone());
        glommio::executor()
            .spawn_blocking(move || snapshot::replace_durably(&path, &[&bytes]))
            .await?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(&self.path)
            .await?;
        let old = self.file.replace(Rc::new(file));
        self.end.set(len);
        if let Ok(old) = Rc::try_unwrap(old) {
            let _ = old.close().await;
        }
        Ok(())
    }

    /// Appends `entries` and `hard_state` and waits until they are on disk (`fdatasync`).
    pub async fn persist(&self, entries: &[Entry], hard_state: Option<&HardState>) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        for entry in entries {
            record(&mut buffer, KIND_ENTRY, &entry.write_to_bytes()?);
        }
        if let Some(hard_state) = hard_state {
            record(&mut buffer, KIND_HARD_STATE, &hard_state.write_to_bytes()?);
        }
        if buffer.is_empty() {
            return Ok(());
        }
        let file = Rc::clone(&self.file.borrow());
        let mut at = self.end.get();
        while !buffer.is_empty() {
            let written = file.write_at(buffer.clone(), at).await?;
            if written == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "raft log write"));
            }
            buffer.drain(..written);
            at += written as u64;
        }
        file.fdatasync().await?;
        self.end.set(at);
        Ok(())
    }
}

fn record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let mut crc = crc32c::crc32c(&[kind]);
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// Reads records until the first torn or corrupt one; returns what they hold and the length
/// of the whole records.
fn decode(bytes: &[u8]) -> (Recovered, usize) {
    let mut recovered = Recovered::default();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + RECORD_HEADER_BYTES) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let kind = header[8];
        let Some(payload) = bytes.get(at + RECORD_HEADER_BYTES..at + RECORD_HEADER_BYTES + len) else {
            break;
        };
        if crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload) != crc {
            break;
        }
        match kind {
            KIND_ENTRY => match Entry::parse_from_bytes(payload) {
                Ok(entry) => {
                    // Raft overwrote a conflicting suffix from this index on.
                    let first = recovered.entries.first().map_or(entry.index, |e| e.index);
                    recovered.entries.truncate(entry.index.saturating_sub(first) as usize);
                    recovered.entries.push(entry);
                }
                Err(_) => break,
            },
            KIND_HARD_STATE => match HardState::parse_from_bytes(payload) {
                Ok(hard_state) => recovered.hard_state = Some(hard_state),
                Err(_) => break,
            },
            _ => break,
        }
        at += RECORD_HEADER_BYTES + len;
    }
    (recovered, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("{index}/{term}").into_bytes().into(),
            ..Entry::default()
        }
    }

    // Goal: a checkpoint leaves the snapshot beside a log that holds only the entries after
    // it; appends go on into the new file, and reopening gives snapshot, tail and hard state.
    // A corrupt snapshot file then refuses to open, naming the file.
    #[test]
    fn a_checkpoint_cuts_the_log_and_reopens_with_its_snapshot() {
        let dir = crate::storage::test_dir("raft_log_checkpoint");
        let hard = |commit| HardState {
            term: 1,
            commit,
            ..HardState::default()
        };
        let opened = dir.clone();
        let (size_before, size_after, recovered) = crate::storage::run_on_executor(move || async move {
            let (log, recovered) = RaftLog::open(&opened, 0).await.unwrap();
            assert_eq!(recovered, Recovered::default());
            let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1)).collect();
            log.persist(&entries, Some(&hard(10))).await.unwrap();
            let size_before = std::fs::metadata(path_for(&opened, 0)).unwrap().len();
            let mut snapshot = Snapshot::default();
            (snapshot.mut_metadata().index, snapshot.mut_metadata().term) = (8, 1);
            let mut state = snapshot::Encoder::new(5);
            state.add(b"k", b"v", None, 4);
            snapshot.data = state.finish().into();
            log.checkpoint(&snapshot, &entries[8..], &hard(10)).await.unwrap();
            let size_after = std::fs::metadata(path_for(&opened, 0)).unwrap().len();
            log.persist(&[entry(11, 1)], Some(&hard(11))).await.unwrap();
            drop(log);
            let (_, recovered) = RaftLog::open(&opened, 0).await.unwrap();
            (size_before, size_after, recovered)
        });
        assert!(size_after * 3 < size_before, "{size_after} of {size_before} bytes left");
        assert_eq!(recovered.snapshot.as_ref().map(|s| s.get_metadata().index), Some(8));
        let indices: Vec<u64> = recovered.entries.iter().map(|e| e.index).collect();
        assert_eq!(indices, vec![9, 10, 11]);
        assert_eq!(recovered.hard_state, Some(hard(11)));
        let snap = snapshot::path_for(&dir, 0);
        let mut bytes = std::fs::read(&snap).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&snap, &bytes).unwrap();
        let reopened = dir.clone();
        let error = crate::storage::run_on_executor(move || async move { RaftLog::open(&reopened, 0).await.err() });
        let error = error.expect("a corrupt snapshot is refused");
        assert!(error.contains("shard-0.snap") && error.contains("corrupt"), "{error}");
    }

    #[test]
    fn records_decode_with_overwrites_and_stop_at_a_torn_tail() {
        let mut bytes = Vec::new();
        for e in [entry(1, 1), entry(2, 1), entry(3, 1)] {
            record(&mut bytes, KIND_ENTRY, &e.write_to_bytes().unwrap());
        }
        let hard = HardState {
            term: 2,
            commit: 2,
            ..HardState::default()
        };
        record(&mut bytes, KIND_HARD_STATE, &hard.write_to_bytes().unwrap());
        // A new leader overwrote entry 3.
        record(&mut bytes, KIND_ENTRY, &entry(3, 2).write_to_bytes().unwrap());
        let whole = bytes.len();
        let (recovered, used) = decode(&bytes);
        assert_eq!(used, whole);
        assert_eq!(recovered.entries, vec![entry(1, 1), entry(2, 1), entry(3, 2)]);
        assert_eq!(recovered.hard_state, Some(hard));
        record(&mut bytes, KIND_ENTRY, &entry(4, 2).write_to_bytes().unwrap());
        for cut in whole + 1..bytes.len() {
            let (recovered, used) = decode(&bytes[..cut]);
            assert_eq!((used, recovered.entries.len()), (whole, 3), "cut at {cut}");
        }
        let mut corrupt = bytes.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert_eq!(decode(&corrupt).1, whole);
    }
}
