//! Durability (issue #12): each shard's write-ahead log and snapshots on disk, and recovery.
//!
//! Owns the data directory and every byte in it. A [`ShardLog`] lives on its shard's executor
//! and writes only that shard's folder; nothing here is shared between shards, and nothing here
//! ever touches a store: the shard applies what [`recover`] replays, and hands the log what it
//! applied. It never blocks an executor on disk I/O (glommio's io_uring files do the reads,
//! O_DIRECT writes and syncs; `everysec`/`never` segments take their records as copies into a
//! shared mapping, `mapped`; only start-up and [`DataDir::remove_superseded`] use `std::fs`).
//!
//! # On-disk format
//!
//! ## Files
//! ```text
//! DIR/LOCK                                   flock'ed by the running process; holds its pid
//! DIR/layout-<G>-shards-<N>/shard-<i>/       one folder per shard i of a run with N shards
//!     log-<seq:020>.wal                      log segments, seq = 1, 2, 3, ... with no gaps
//!     snap-<seq:020>.snap                    a complete snapshot: the state before segment seq
//!     snap-<seq:020>.tmp                     a snapshot being written (ignored, removed later)
//! ```
//! `G` (the generation) grows by one whenever the shard count changes; every shard of a new
//! layout reads the files of all older layouts, keeping the keys it owns
//! ([`crate::shard::shard_for`]), and the older layouts are removed
//! ([`DataDir::remove_superseded`]) only once every new shard has written a snapshot.
//!
//! ## Records
//! Log segments and snapshots are sequences of records, little-endian:
//! ```text
//! offset size field
//!      0    4 crc32c       CRC32C (Castagnoli) of bytes 4 .. 16 + payload_len
//!      4    4 payload_len  bytes after the 16-byte header (<= 1 GiB)
//!      8    1 kind         1 Set, 2 Delete, 3 ExpireAt, 4 FileHeader, 5 SnapshotEnd,
//!                          6 SetVersioned, 7 Group
//!      9    3 reserved     zero
//!     12    4 key_len      <= payload_len
//!     16    …  payload     key, then by kind:
//!                           Set         u64 expires_at_unix_ms (0 = none), value
//!                           SetVersioned u64 expires_at_unix_ms, u64 version, value
//!                           Delete      nothing
//!                           ExpireAt    u64 expires_at_unix_ms (0 = remove the deadline)
//!                           FileHeader  8-byte magic "CKVWAL01" or "CKVSNP01", u64 seq
//!                           SnapshotEnd u64 count of Set records in the snapshot
//!                           Group       (empty key) member records back to back
//! ```
//! A Group (one shard's part of a transaction) holds Set, SetVersioned, Delete and ExpireAt
//! records laid out as above, except that each member's crc32c is XORed with
//! `0x47525550`: one length and one CRC32C cover the whole group, so recovery replays all of
//! its members or none, and no member ever decodes as a record of its own (a group cut short
//! or damaged at the tail reads as one torn record, and is cut off whole). Groups appear only
//! in log segments, never in snapshots.
//! Every file opens with a FileHeader whose seq matches its name. A snapshot holds only Set
//! (or SetVersioned) records and ends with SnapshotEnd. Format change (issue #12 wiring):
//! every Set, in logs and snapshots, is now written as SetVersioned, carrying the key's u64
//! version (0 until versions exist) so versions persist without another format change; a
//! kind-1 Set still reads, as version 0, and [`Replayed::Set`] carries the version. Deadlines are wall-clock unix milliseconds, so a key that
//! expired while the server was down stays gone ([`unix_to_mono_ms`] converts on the way in).
//!
//! A segment is preallocated (`fallocate`) to its full size before it takes records (as a
//! `*.spare`, in the background), and under `always` also filled with zeros (see
//! `log::create_direct_spare` for why), so it reads as zeros past the last record: sixteen
//! zero bytes where a header should be mark the end of its records. Under `always` writes are
//! O_DIRECT where the file system allows (not tmpfs): the writer rewrites the partial last
//! block each time, padded with zeros; under `everysec`/`never` each record is copied into
//! the mapped segment at its offset. Either way a file is always a prefix of records followed
//! by zeros.
//!
//! ## Ordering of acknowledgement and sync
//! 1. The shard calls [`ShardLog::reserve`] (waits for buffer room; at a full segment, seals
//!    it and allocates the next; fails with [`StorageError::NoSpace`] before anything is
//!    applied), then applies the write in memory and appends its record (synchronous, no
//!    `await` in between, so log order is apply order). A transaction's part that must await
//!    between taking room and applying (it holds locks across shards) takes it with
//!    [`ShardLog::hold`] instead: the room stays promised across awaits and rotations until
//!    the `Hold` is used by [`ShardLog::append_group`] or dropped.
//! 2. It awaits [`ShardLog::durable`] before answering. Under `always` one writer task per
//!    shard takes every byte appended since its last write and issues one aligned io_uring
//!    write (group commit), then one fdatasync, after which `durable` resolves (a power loss
//!    loses nothing acknowledged). Under `everysec` and `never` the append itself copied the
//!    record into the page cache, so `durable` is ready at once (a kill -9 loses nothing
//!    acknowledged); under `everysec` the writer fdatasyncs at least every
//!    [`crate::limits::STORAGE_EVERYSEC_SYNC_MS`].
//! 3. A segment is fdatasynced before any byte goes to the next one, and a new segment is
//!    created, preallocated (zero-filled under `always`), synced, renamed from `*.spare` to its segment name
//!    and its directory synced before it takes records; so only the newest segment of a shard
//!    can end in a torn record (a spare is never read: start-up deletes it).
//! 4. A snapshot starts by rotating to a fresh segment `seq`; its entries are scanned from the
//!    store in chunks while writes go on (to segment `seq`), written to `snap-<seq>.tmp`,
//!    fdatasynced, renamed to `snap-<seq>.snap`, and the folder fsynced; only then are the
//!    segments and snapshots before `seq` deleted.
//!
//! ## Recovery
//! A shard of layout L replays, oldest first: every older layout's files (each of its shard
//! folders: newest snapshot, then the segments from its seq on), keeping a key only if `keep`
//! accepts it and no newer layout's owning shard has a snapshot (a snapshot is the whole truth
//! for its keys); then its own folder the same way. Replaying a Set or Delete twice gives the
//! same state, so a fuzzy snapshot plus the log since its start is exact. A record that ends
//! early or fails its CRC at the end of a shard's newest segment (nothing valid after it) is a
//! torn tail: it is cut off (the file is truncated there, in the shard's own folder) with a
//! warning naming the file and offset. Anything else wrong stops start-up with
//! `FILE:OFFSET: what is wrong` ([`StorageError::Corrupt`]).
//!
//! ## Failures
//! A full disk can only be met when a segment is allocated, in `reserve`, before the write is
//! applied: the write is answered 507 and not applied; reads go on, and a later `reserve`
//! tries the allocation again, so writes resume when space returns. The residual case: a
//! write or fdatasync that fails anyway (EIO, or ENOSPC on a file system whose preallocation
//! is not a promise, such as a copy-on-write one) comes after the records were applied in
//! memory. The log is then poisoned: those writes and every later one are answered 503 with
//! the error, reads keep working, and the shard needs a restart, which recovers what reached
//! the disk. Memory may thus briefly hold writes that were answered 503 and are not on disk.

mod dir;
mod log;
mod mapped;
pub(crate) mod record;
mod recover;
mod snapshot;

pub use dir::{DataDir, Layout};
pub use log::{Hold, LogStats, Lsn, ShardLog};
/// Record kinds, for building a group's members with [`encode`].
pub use record::Kind as RecordKind;
/// Encoded sizes of records, for [`ShardLog::reserve`].
pub use record::{delete_bytes, encode, encode_set, expire_at_bytes, group_bytes, set_bytes};
pub use recover::{RecoveryStats, Replayed, TornTail, recover};
pub use snapshot::SnapshotWriter;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::limits;

/// When an acknowledged write is on stable storage (`--fsync`, like Redis `appendfsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncPolicy {
    /// Answer a write after its record is fdatasynced (group commit: one sync per flush).
    Always,
    /// Answer once the record reached the OS; fdatasync at least once a second.
    #[value(name = "everysec")]
    EverySec,
    /// Answer once the record reached the OS; the kernel syncs when it likes.
    Never,
}

/// How a shard's log behaves; the same for every shard.
#[derive(Debug, Clone)]
pub struct Config {
    pub fsync: FsyncPolicy,
    /// Size each log segment is preallocated to, in bytes (larger for a record that needs it).
    pub segment_bytes: u64,
    /// Snapshot once the log since the last snapshot exceeds this multiple of live data...
    pub snapshot_log_ratio: u64,
    /// ...and this many bytes.
    pub snapshot_floor_bytes: u64,
    /// Appended-but-unwritten bytes past which [`ShardLog::reserve`] waits.
    pub buffer_bytes_max: usize,
}

impl Config {
    /// The defaults from [`crate::limits`] with the given policy.
    pub fn new(fsync: FsyncPolicy) -> Config {
        Config {
            fsync,
            segment_bytes: limits::STORAGE_SEGMENT_BYTES_DEFAULT,
            snapshot_log_ratio: limits::STORAGE_SNAPSHOT_LOG_RATIO_DEFAULT,
            snapshot_floor_bytes: limits::STORAGE_SNAPSHOT_FLOOR_BYTES_DEFAULT,
            buffer_bytes_max: limits::STORAGE_LOG_BUFFER_BYTES_MAX,
        }
    }
}

/// What can go wrong with the data dir. `Clone` so one I/O failure can answer every waiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// Another process holds the data dir's lock.
    Locked { dir: PathBuf, pid: Option<u32> },
    /// No room for a new log segment (or snapshot): the write was not applied.
    NoSpace { file: PathBuf },
    /// The append needs [`ShardLog::reserve`] first (buffer full, segment full, or rotating).
    LogBusy,
    /// A read, write or sync failed.
    Io { file: PathBuf, message: String },
    /// A file is damaged somewhere other than a torn tail: start-up must stop.
    Corrupt { file: PathBuf, offset: u64, what: String },
    /// The layouts are not in the state a call needs.
    Layout(String),
}

impl StorageError {
    /// An I/O error on `file`; ENOSPC and EDQUOT become [`StorageError::NoSpace`].
    pub fn io(file: &Path, error: &std::io::Error) -> StorageError {
        use std::io::ErrorKind::{QuotaExceeded, StorageFull};
        let full = matches!(error.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
            || matches!(error.kind(), StorageFull | QuotaExceeded);
        if full {
            return StorageError::NoSpace { file: file.into() };
        }
        StorageError::Io {
            file: file.into(),
            message: error.to_string(),
        }
    }

    /// The HTTP status a write refused with this error gets: 507 for a full disk, else 503.
    pub fn status(&self) -> u16 {
        match self {
            StorageError::NoSpace { .. } => 507,
            _ => 503,
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Locked { dir, pid: Some(pid) } => {
                write!(f, "{}: data dir in use by process {pid}", dir.display())
            }
            StorageError::Locked { dir, pid: None } => {
                write!(f, "{}: data dir in use by another process", dir.display())
            }
            StorageError::NoSpace { file } => {
                write!(f, "{}: no space left on the device: write not applied", file.display())
            }
            StorageError::LogBusy => write!(f, "the log is busy: reserve room before appending"),
            StorageError::Io { file, message } => write!(f, "{}: {message}", file.display()),
            StorageError::Corrupt { file, offset, what } => {
                write!(f, "{}:{offset}: {what}", file.display())
            }
            StorageError::Layout(what) => write!(f, "data dir layout: {what}"),
        }
    }
}

impl std::error::Error for StorageError {}

/// Wall-clock milliseconds since the unix epoch.
pub fn now_unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    since.as_millis() as u64
}

/// The wall-clock deadline of a deadline on [`crate::clock::now_ms`]'s clock.
pub fn mono_to_unix_ms(deadline_mono_ms: u64) -> u64 {
    let (mono, unix) = (crate::clock::now_ms(), now_unix_ms());
    (unix + deadline_mono_ms).saturating_sub(mono)
}

/// The [`crate::clock::now_ms`] deadline of a wall-clock deadline; a past deadline maps to
/// 1 (the clock's first tick), which is already expired.
pub fn unix_to_mono_ms(deadline_unix_ms: u64) -> u64 {
    let (mono, unix) = (crate::clock::now_ms(), now_unix_ms());
    (mono + deadline_unix_ms).saturating_sub(unix).max(1)
}

/// A fresh empty folder for one test under target/, named after it.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/storage-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `f` on a real glommio executor with a small io_memory pool (RLIMIT_MEMLOCK is small).
#[cfg(test)]
pub(crate) fn run_on_executor<T, F>(f: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 << 10)
        .spawn(move || async move { f().await })
        .expect("an executor starts")
        .join()
        .expect("the executor's future does not panic")
}

#[cfg(test)]
mod tests;
