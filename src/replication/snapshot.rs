//! A group's snapshots: its shard's store at an applied log index, so the log before it can
//! be dropped, a far-behind follower can be sent the state instead of the log, and a
//! restarted node restores the state, then replays only the entries after it.
//!
//! The snapshot's data (raft-rs `Snapshot::data`) is a run of src/storage/record records, the
//! WAL snapshots' own encoding: a file header (magic [`MAGIC_DATA`], the store's next version),
//! one versioned Set per live key (its absolute deadline in unix ms, so it means the same on
//! every node's clock), then a SnapshotEnd with the count. Every record carries its CRC32C.
//! On disk (`D/raft/shard-N.snap`) a file wraps it: magic [`MAGIC_FILE`], the lengths of the
//! metadata (index, term, members: protobuf) and of the data, one CRC32C over both, then both.
//!
//! Owns the encoding, the restore into a store, and the snapshot file. It never touches the
//! Raft log or another shard's store; it never holds a store borrow across an await.

use std::cell::RefCell;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{Snapshot, SnapshotMetadata};

use crate::limits::STORAGE_SNAPSHOT_CHUNK_KEYS;
use crate::shard::message::Record;
use crate::shard::store::Store;
use crate::storage::{self, record};

/// Opens a snapshot's data: "corekv raft state", version 1.
pub const MAGIC_DATA: [u8; 8] = *b"CKVRST01";
/// Opens a snapshot file: "corekv raft snapshot file", version 1.
pub const MAGIC_FILE: [u8; 8] = *b"CKVRSF01";
/// magic, metadata length (u32), data length (u64), CRC32C of metadata + data (u32).
const FILE_HEADER_BYTES: usize = 8 + 4 + 8 + 4;

/// `D/raft/shard-N.snap`.
pub fn path_for(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join("raft").join(format!("shard-{shard}.snap"))
}

/// Builds a snapshot's data from a store's live keys.
pub struct Encoder {
    out: Vec<u8>,
    keys: u64,
}

impl Encoder {
    /// An empty snapshot of a store whose next write gets version `next_version`.
    pub fn new(next_version: u64) -> Encoder {
        let mut out = Vec::new();
        record::encode_file_header(&mut out, &MAGIC_DATA, next_version);
        Encoder { out, keys: 0 }
    }

    /// Adds one key; `expires_at_unix_ms` is its absolute deadline on the wall clock.
    pub fn add(&mut self, key: &[u8], value: &[u8], expires_at_unix_ms: Option<u64>, version: u64) {
        record::encode_set(&mut self.out, key, value, expires_at_unix_ms, version);
        self.keys += 1;
    }

    /// Bytes encoded so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// True before the first key.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// The data, closed by its count.
    pub fn finish(mut self) -> Vec<u8> {
        record::encode(
            &mut self.out,
            record::Kind::SnapshotEnd,
            b"",
            &[&self.keys.to_le_bytes()],
        );
        self.out
    }
}

/// Encodes `store` as it is now, `STORAGE_SNAPSHOT_CHUNK_KEYS` keys at a time, yielding to
/// the executor between chunks. The caller guarantees nothing writes the store meanwhile (the
/// group's driver, the only writer, defers applying until the build ends; in cluster mode
/// reads change nothing), so the snapshot is exact. Keys go least recently used first, so a
/// replica restored from it holds them in the leader's LRU order and evicts what the leader
/// evicts; expired keys not yet removed by an expire entry are included (they count on the
/// leader too). Any size: it travels to a follower in chunks (`replication::transfer`).
/// `delay_ms_per_chunk` (0 but in tests: the hidden `--raft-snapshot-build-delay-ms`) makes a
/// small store's build as slow as a large one's.
pub async fn build(store: &RefCell<Store>, delay_ms_per_chunk: u64) -> Vec<u8> {
    let mut encoder = Encoder::new(store.borrow().next_version());
    let mut cursor = None;
    loop {
        // One reading of both clocks per chunk converts every deadline to unix time.
        let (mono, unix) = (crate::clock::now_ms(), storage::now_unix_ms());
        let next =
            store
                .borrow()
                .scan_oldest_first(cursor, STORAGE_SNAPSHOT_CHUNK_KEYS, |key, value, deadline, version| {
                    let deadline = deadline.map(|d| (unix + d).saturating_sub(mono));
                    encoder.add(key, value, deadline, version);
                });
        if next.is_none() {
            break;
        }
        cursor = next;
        if delay_ms_per_chunk > 0 {
            glommio::timer::sleep(std::time::Duration::from_millis(delay_ms_per_chunk)).await;
        } else {
            glommio::yield_if_needed().await;
        }
    }
    encoder.finish()
}

/// Reads a snapshot's data, handing each key to `f` (key, value, unix deadline, version);
/// returns the next version and the key count. Anything malformed is an error naming where.
pub fn decode(data: &[u8], mut f: impl FnMut(&[u8], &[u8], Option<u64>, u64)) -> Result<(u64, u64), String> {
    let fail = |at: usize, what: &dyn std::fmt::Display| format!("raft snapshot data at byte {at}: {what}");
    let bad = |at: usize, bad: record::Bad| fail(at, &format!("{bad:?}"));
    let (header, mut at) = record::decode(data).map_err(|b| bad(0, b))?;
    if header.kind != record::Kind::FileHeader || header.body[..8] != MAGIC_DATA {
        return Err(fail(0, &"not a corekv raft snapshot (bad magic)"));
    }
    let next_version = header.body_u64_at(8);
    let mut keys = 0u64;
    loop {
        let (rec, len) = record::decode(&data[at..]).map_err(|b| bad(at, b))?;
        match rec.kind {
            record::Kind::SetVersioned | record::Kind::Set => {
                let (value_at, version) = record::set_value_at_and_version(&rec);
                let deadline = Some(rec.body_u64_at(0)).filter(|d| *d != 0);
                f(rec.key, &rec.body[value_at..], deadline, version);
                keys += 1;
            }
            record::Kind::SnapshotEnd if rec.body_u64_at(0) == keys && at + len == data.len() => {
                return Ok((next_version, keys));
            }
            record::Kind::SnapshotEnd => {
                return Err(fail(
                    at,
                    &format!("end says {} keys, {keys} read, or bytes follow", rec.body_u64_at(0)),
                ));
            }
            kind => return Err(fail(at, &format!("unexpected {kind:?} record"))),
        }
        at += len;
    }
}

/// What a restore loaded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub keys: u64,
    /// Keys this store's own budget refused (`--max-keys`/`--max-memory` lower than the leader's).
    pub rejected: u64,
}

/// Replaces `store`'s contents with a snapshot's: checked whole first (a bad snapshot leaves
/// the store as it was), then cleared and loaded, deadlines moved onto this node's clock.
/// Synchronous: costs one pass to check and one to load, each proportional to the snapshot.
pub fn restore(store: &mut Store, data: &[u8]) -> Result<Restored, String> {
    decode(data, |_, _, _, _| {})?;
    store.clear();
    let mut restored = Restored::default();
    let (next_version, _) = decode(data, |key, value, deadline, version| {
        let deadline = deadline.map(storage::unix_to_mono_ms);
        restored.keys += 1;
        let outcome = store.set_with_version(Record::new(key, value), deadline, version);
        if matches!(outcome, crate::shard::message::Outcome::Rejected(_)) {
            restored.rejected += 1;
        }
    })?;
    store.raise_next_version(next_version);
    Ok(restored)
}

/// A snapshot file's bytes: header, metadata, data (the data is borrowed, not copied, by the
/// writer: see [`write_file`]).
fn file_header(meta: &[u8], data: &[u8]) -> [u8; FILE_HEADER_BYTES] {
    let mut header = [0u8; FILE_HEADER_BYTES];
    header[..8].copy_from_slice(&MAGIC_FILE);
    header[8..12].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    header[12..20].copy_from_slice(&(data.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(meta), data);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Reads a snapshot file's bytes back; a torn, corrupt or foreign file is an error saying so.
pub fn from_file_bytes(bytes: &[u8]) -> Result<Snapshot, String> {
    let Some(header) = bytes.get(..FILE_HEADER_BYTES) else {
        return Err(format!("torn: {} bytes, shorter than its header", bytes.len()));
    };
    if header[..8] != MAGIC_FILE {
        return Err("not a corekv raft snapshot file (bad magic)".into());
    }
    let meta_len = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
    let data_len = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(header[20..24].try_into().expect("4 bytes"));
    let want = (FILE_HEADER_BYTES + meta_len) as u64 + data_len;
    if bytes.len() as u64 != want {
        return Err(format!("torn: {} bytes where its header says {want}", bytes.len()));
    }
    let (meta, data) = bytes[FILE_HEADER_BYTES..].split_at(meta_len);
    if crc32c::crc32c_append(crc32c::crc32c(meta), data) != crc {
        return Err("corrupt: its checksum does not match its bytes".into());
    }
    let metadata = SnapshotMetadata::parse_from_bytes(meta).map_err(|e| format!("corrupt metadata: {e}"))?;
    decode(data, |_, _, _, _| {})?;
    let mut snapshot = Snapshot::default();
    snapshot.set_metadata(metadata);
    snapshot.data = data.to_vec().into();
    Ok(snapshot)
}

/// Reads `path`; `Ok(None)` when there is none. Start-up only (a blocking read).
pub fn read_file(path: &Path) -> Result<Option<Snapshot>, String> {
    match std::fs::read(path) {
        Ok(bytes) => from_file_bytes(&bytes).map(Some).map_err(|why| {
            format!(
                "raft snapshot {}: {why}; move it away (and the raft log beside it) to rejoin empty",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("raft snapshot {}: cannot read: {e}", path.display())),
    }
}

/// Writes `snapshot` to `path` durably (blocking: run it off the executor).
pub fn write_file(path: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    let meta = snapshot.get_metadata().write_to_bytes()?;
    let data = &snapshot.data[..];
    replace_durably(path, &[&file_header(&meta, data), &meta, data])
}

/// Where [`replace_durably`] writes `path`'s next version before the rename: `path` + `.tmp`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Replaces `path` with `parts` concatenated, so that a crash leaves the old file or the new
/// one whole: a temporary file beside it, `fdatasync`, rename, then the directory synced.
/// Blocking: run it off the executor.
pub fn replace_durably(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let temp = temp_path(path);
    let mut file = std::fs::File::create(&temp)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.sync_data()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut encoder = Encoder::new(42);
        encoder.add(b"a", b"1", None, 3);
        encoder.add(b"b", b"", Some(4_000_000_000_000), 7);
        encoder.finish()
    }

    fn snapshot_of(data: Vec<u8>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 9;
        snapshot.mut_metadata().term = 2;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        snapshot.data = data.into();
        snapshot
    }

    // Goal: a snapshot's data round-trips its keys, deadlines, versions and next version, and
    // any cut or flipped byte is refused.
    #[test]
    fn data_round_trips_and_refuses_damage() {
        let data = sample();
        let mut seen = Vec::new();
        let decoded = decode(&data, |k, v, d, ver| seen.push((k.to_vec(), v.to_vec(), d, ver)));
        assert_eq!(decoded, Ok((42, 2)));
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), b"1".to_vec(), None, 3),
                (b"b".to_vec(), vec![], Some(4_000_000_000_000), 7)
            ]
        );
        for cut in 0..data.len() {
            assert!(decode(&data[..cut], |_, _, _, _| {}).is_err(), "cut at {cut}");
        }
        for byte in 0..data.len() {
            let mut flipped = data.clone();
            flipped[byte] ^= 0x10;
            assert!(decode(&flipped, |_, _, _, _| {}).is_err(), "flipped byte {byte}");
        }
        let mut wal = Vec::new();
        record::encode_file_header(&mut wal, &record::MAGIC_SNAPSHOT, 1);
        assert!(decode(&wal, |_, _, _, _| {}).unwrap_err().contains("bad magic"));
    }

    // Goal: a restore replaces the store's keys (old ones gone), keeps versions, keeps a
    // future deadline as a TTL on this clock and drops a past one, and numbers the next write
    // after the snapshot's next version.
    #[test]
    fn a_restore_replaces_the_store() {
        let mut store = Store::default();
        store.set_with_version(Record::new(b"old", b"x"), None, 100);
        assert_eq!(restore(&mut store, &sample()), Ok(Restored { keys: 2, rejected: 0 }));
        assert_eq!(store.len(), 2);
        assert_eq!(store.peek(b"a").unwrap().1, None);
        assert!(store.peek(b"b").unwrap().1.is_some(), "b's future deadline is kept");
        let mut past = Encoder::new(1);
        past.add(b"gone", b"v", Some(1), 1);
        let mut other = Store::default();
        restore(&mut other, &past.finish()).unwrap();
        assert!(other.peek(b"gone").is_none(), "a deadline already past drops the key");
        assert!(store.peek(b"old").is_none());
        assert_eq!(store.version_of(b"a"), Some(3));
        assert_eq!(store.version_of(b"b"), Some(7));
        assert_eq!(store.next_version(), 42);
        let mut bad = sample();
        bad[20] ^= 1;
        assert!(restore(&mut store, &bad).is_err());
        assert_eq!(store.len(), 2, "a refused snapshot leaves the store as it was");
    }

    // Goal: a snapshot file round-trips, and a torn, corrupt or foreign one is refused with
    // an error that says which.
    #[test]
    fn snapshot_files_round_trip_and_refuse_torn_or_corrupt_ones() {
        let dir = storage::test_dir("raft_snapshot_files");
        let path = dir.join("shard-0.snap");
        let snapshot = snapshot_of(sample());
        write_file(&path, &snapshot).unwrap();
        assert_eq!(read_file(&path).unwrap(), Some(snapshot));
        assert_eq!(read_file(&dir.join("none.snap")), Ok(None));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let torn = read_file(&path).unwrap_err();
        assert!(torn.contains("torn") && torn.contains("shard-0.snap"), "{torn}");
        let mut corrupt = bytes.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        std::fs::write(&path, &corrupt).unwrap();
        assert!(read_file(&path).unwrap_err().contains("corrupt"));
        assert!(
            from_file_bytes(b"CKVWAL01 and more bytes here")
                .unwrap_err()
                .contains("bad magic")
        );
        assert!(from_file_bytes(&bytes[..5]).unwrap_err().contains("torn"));
    }
}
