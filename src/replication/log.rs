//! A group's durable Raft log (`--data-dir D` with `--peers`): one append-only file per shard,
//! `D/raft/shard-N.log`, of CRC32C-checked records, each a raft-rs `Entry` or `HardState`.
//! Entries and the hard state of a `Ready` are written and `fdatasync`ed before the messages
//! that depend on them are sent; at start the file is read back into raft-rs's `MemStorage`.
//!
//! Owns that file only, through glommio's `BufferedFile` (io_uring: the executor never blocks
//! on it). It never touches the store: committed entries are replayed into it by raft-rs.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, OpenOptions};
use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};

/// length of the payload (u32), CRC32C of kind + payload (u32), kind (u8).
const RECORD_HEADER_BYTES: usize = 9;
const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;

/// What a log file held: its entries (later ones replacing conflicting earlier ones, as raft
/// overwrote them) and the last hard state.
#[derive(Debug, Default, PartialEq)]
pub struct Recovered {
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
}

/// One group's log file, open for appending.
pub struct RaftLog {
    file: BufferedFile,
    /// Where the next record goes (the end of the last whole record).
    end: Cell<u64>,
}

/// `D/raft/shard-N.log`.
pub fn path_for(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join("raft").join(format!("shard-{shard}.log"))
}

impl RaftLog {
    /// Opens (creating) shard `shard`'s log under `data_dir` and reads it back. A torn or
    /// corrupt tail (a crash mid-write) is cut off: everything before it was acknowledged.
    pub async fn open(data_dir: &Path, shard: usize) -> Result<(RaftLog, Recovered), String> {
        let path = path_for(data_dir, shard);
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("raft log {}: {what}: {e}", path.display());
        if let Some(dir) = path.parent() {
            // Once per shard at start, before it serves: a short blocking call.
            std::fs::create_dir_all(dir).map_err(|e| fail("cannot create its directory", &e))?;
        }
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
        let (recovered, whole) = decode(&bytes);
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
        let log = RaftLog {
            file,
            end: Cell::new(whole as u64),
        };
        Ok((log, recovered))
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
        let mut at = self.end.get();
        while !buffer.is_empty() {
            let written = self.file.write_at(buffer.clone(), at).await?;
            if written == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "raft log write"));
            }
            buffer.drain(..written);
            at += written as u64;
        }
        self.file.fdatasync().await?;
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
