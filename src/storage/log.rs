//! A shard's write-ahead log: appends into a bounded tail buffer, one writer task that flushes
//! it with group commit, segment rotation (into a spare segment made ahead of need), and the
//! fsync policy.
//!
//! How a segment is written follows the policy ([`SegmentFile`]): under `always` through
//! O_DIRECT (`DmaFile`, aligned blocks into a zero-filled spare, written by the writer task),
//! so that the fdatasync a write waits for has nothing left to copy; under `everysec` and
//! `never` by copying each record, as it is appended, into a shared mapping of a preallocated
//! spare ([`super::mapped`]): the page cache holds it at once (a process crash loses nothing),
//! with no system call and no wait for the device; the writer task then only fdatasyncs.
//!
//! Owns the shard's log segments and its spare (one folder, one executor: `!Send`,
//! `Rc`/`Cell`). It never touches the store, never blocks the executor (every write and sync
//! is an io_uring request through glommio), and never lets a record reach a segment before
//! the previous segment is fdatasynced.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::io::{BufferedFile, Directory, DmaFile, OpenOptions};

use super::mapped::Mapping;

use super::dir::{self, Layout};
use super::record::{self, Kind, MAGIC_LOG};
use super::{Config, FsyncPolicy, RecoveryStats, SnapshotWriter, StorageError, now_unix_ms};
use crate::limits::{STORAGE_EVERYSEC_SYNC_MS, STORAGE_WRITE_BYTES_MAX, STORAGE_ZERO_FILL_BYTES};
use crate::shard::ShardId;

/// Position just past a record in the shard's log, in bytes appended since [`ShardLog::open`];
/// [`ShardLog::durable`] waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Lsn(pub u64);

/// A shard's log counters, for `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Record bytes in the segments since the newest snapshot (what a snapshot would drop).
    pub log_bytes: u64,
    /// Segments on disk since the newest snapshot.
    pub segments: u64,
    /// Bytes handed to the OS (under `always` aligned writes, so partial blocks count again).
    pub written_bytes: u64,
    /// io_uring writes issued (`always`), or records copied into a mapped segment.
    pub writes: u64,
    /// fdatasyncs of log segments, and their total and longest latency in microseconds.
    pub fsyncs: u64,
    pub fsync_us_sum: u64,
    pub fsync_us_max: u64,
    /// Snapshots finished since open, and when the newest finished (unix ms).
    pub snapshots: u64,
    pub snapshot_finished_unix_ms: Option<u64>,
}

impl LogStats {
    /// Milliseconds since the newest snapshot finished, if one did since open.
    pub fn snapshot_age_ms(&self) -> Option<u64> {
        self.snapshot_finished_unix_ms.map(|t| now_unix_ms().saturating_sub(t))
    }
}

/// The write-ahead log of one shard; lives on that shard's executor.
pub struct ShardLog {
    pub(super) inner: Rc<Inner>,
}

/// Room in a shard's log promised by [`ShardLog::hold`]; given back when dropped.
pub struct Hold {
    inner: Rc<Inner>,
    bytes: usize,
}

impl Hold {
    /// The bytes promised.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let held = self.inner.held.get();
        debug_assert!(held >= self.bytes, "a hold gave back more than was held");
        self.inner.held.set(held.saturating_sub(self.bytes));
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").field("bytes", &self.bytes).finish()
    }
}

/// A log segment's open file, written the way the fsync policy wants.
pub(super) enum SegmentFile {
    /// `always`: O_DIRECT. A group's write reaches the device before its fdatasync starts, so
    /// the fdatasync (what the group's writers wait for) only flushes the device's cache, and
    /// the write of the next group overlaps it.
    Direct(DmaFile),
    /// `everysec` and `never`: a shared mapping of the file. An append is in the page cache
    /// as soon as it is copied in (the process may die then and lose nothing); the file is
    /// kept open for fdatasync and rename through io_uring.
    Mapped { file: BufferedFile, map: Mapping },
}

impl SegmentFile {
    async fn fdatasync(&self) -> glommio::Result<(), ()> {
        match self {
            SegmentFile::Direct(file) => file.fdatasync().await,
            SegmentFile::Mapped { file, .. } => file.fdatasync().await,
        }
    }

    async fn rename(&mut self, path: &Path) -> glommio::Result<(), ()> {
        match self {
            SegmentFile::Direct(file) => file.rename(path).await,
            SegmentFile::Mapped { file, .. } => file.rename(path).await,
        }
    }
}

/// The segment appends go to.
pub(super) struct Segment {
    pub(super) seq: u64,
    pub(super) file: Rc<SegmentFile>,
    /// Bytes preallocated; a record that would end past it goes to the next segment.
    capacity: u64,
    /// File offset just past the last appended record.
    appended: u64,
}

/// The next segment, created, preallocated and zero-filled in the background before the log
/// needs it (named `*.spare` until the log rotates into it).
struct Spare {
    seq: u64,
    file: SegmentFile,
    capacity: u64,
}

/// Wakers of the tasks waiting for some condition to change; they re-check when woken.
#[derive(Default)]
pub(super) struct Notify {
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    pub(super) fn notify_all(&self) {
        for waker in self.wakers.take() {
            waker.wake();
        }
    }

    pub(super) async fn wait_until(&self, mut ready: impl FnMut() -> bool) {
        poll_fn(|cx| {
            if ready() {
                Poll::Ready(())
            } else {
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

pub(super) struct Inner {
    pub(super) config: Config,
    pub(super) dir: PathBuf,
    /// Records appended but not yet taken by the writer; at most `config.buffer_bytes_max`
    /// (or one larger record alone).
    buffer: RefCell<Vec<u8>>,
    /// None until the first `reserve` allocates a segment (so a full disk at start-up only
    /// refuses writes).
    pub(super) segment: RefCell<Option<Segment>>,
    /// Sequence number the next segment gets.
    next_seq: Cell<u64>,
    /// The next segment once [`prepare_spare`] made it; rotation takes it.
    spare: RefCell<Option<Spare>>,
    /// Set while [`prepare_spare`] runs (rotation waits for it rather than race it).
    preparing: Cell<bool>,
    /// Set by the append that fills the current segment past half; the writer then starts
    /// making the spare (once per segment: a spare that cannot be made is retried by the
    /// rotation that needs it).
    spare_wanted: Cell<bool>,
    /// Segments since the newest snapshot, oldest first (deleted when a snapshot supersedes).
    pub(super) live_segments: RefCell<Vec<u64>>,
    /// Snapshots on disk (the newest, plus any a crash left behind).
    pub(super) live_snapshots: RefCell<Vec<u64>>,
    appended: Cell<Lsn>,
    written: Cell<Lsn>,
    synced: Cell<Lsn>,
    /// Set while a segment is being sealed and replaced: appends are refused, reserves wait.
    rotating: Cell<bool>,
    /// Bytes the latest successful `reserve` promised and appends have not used yet. Each
    /// reserve replaces it: a reservation holds only until the caller's next await, and every
    /// run of appends starts with its own reserve. Appends within it skip the buffer bound,
    /// so one batch larger than `buffer_bytes_max` is admitted whole.
    reserved: Cell<usize>,
    /// Bytes promised to live [`Hold`]s: counted against the current segment's room by every
    /// other reserve and append, and given to the next segment by a rotation, so a hold's
    /// records always fit where they will be appended, however many awaits later.
    held: Cell<usize>,
    pub(super) snapshotting: Cell<bool>,
    /// Set by the migration from older layouts: a snapshot is due regardless of size.
    pub(super) snapshot_due: Cell<bool>,
    /// The first write or sync error; from then on the log refuses everything.
    failed: RefCell<Option<StorageError>>,
    closing: Cell<bool>,
    writer_done: Cell<bool>,
    /// Wakes the writer (bytes appended, closing).
    doorbell: Notify,
    /// Wakes `durable` and `reserve` waiters (bytes written or synced, buffer taken, rotation done).
    progress: Notify,
    pub(super) stats: RefCell<LogStats>,
}

impl ShardLog {
    /// Whether the next segment is made (preallocated, zero-filled under `always`, synced) and
    /// waiting for rotation.
    #[cfg(test)]
    pub(super) fn has_spare(&self) -> bool {
        self.inner.spare.borrow().is_some()
    }

    /// Opens shard `shard_id`'s log in `layout` after [`super::recover`] returned `recovered`.
    /// Removes unfinished snapshots; the first segment is allocated by the first `reserve`.
    pub async fn open(
        config: Config,
        layout: &Layout,
        shard_id: ShardId,
        recovered: &RecoveryStats,
    ) -> Result<ShardLog, StorageError> {
        let root = layout.path.parent().expect("a layout lives in a data dir");
        dir::settle_io_probe(root).await?;
        let dir = layout.shard_dir(shard_id);
        let files = dir::list_shard_dir(&dir)?;
        for leftover in &files.leftovers {
            glommio::io::remove(leftover)
                .await
                .map_err(|e| StorageError::io(leftover, &e.into()))?;
        }
        let newest_snapshot = files.snapshots.last().copied().unwrap_or(0);
        let live: Vec<u64> = files
            .segments
            .iter()
            .copied()
            .filter(|&s| s >= newest_snapshot)
            .collect();
        let next_seq = files
            .segments
            .last()
            .copied()
            .max(files.snapshots.last().copied())
            .unwrap_or(0)
            + 1;
        let stats = LogStats {
            log_bytes: recovered.own_log_bytes,
            segments: live.len() as u64,
            ..LogStats::default()
        };
        let inner = Rc::new(Inner {
            config,
            dir,
            buffer: RefCell::new(Vec::new()),
            segment: RefCell::new(None),
            next_seq: Cell::new(next_seq),
            spare: RefCell::new(None),
            preparing: Cell::new(false),
            spare_wanted: Cell::new(false),
            live_segments: RefCell::new(live),
            live_snapshots: RefCell::new(files.snapshots),
            appended: Cell::new(Lsn(0)),
            written: Cell::new(Lsn(0)),
            synced: Cell::new(Lsn(0)),
            rotating: Cell::new(false),
            reserved: Cell::new(0),
            held: Cell::new(0),
            snapshotting: Cell::new(false),
            snapshot_due: Cell::new(recovered.read_older_layouts),
            failed: RefCell::new(None),
            closing: Cell::new(false),
            writer_done: Cell::new(false),
            doorbell: Notify::default(),
            progress: Notify::default(),
            stats: RefCell::new(stats),
        });
        glommio::spawn_local(writer(inner.clone())).detach();
        start_preparing_spare(&inner);
        Ok(ShardLog { inner })
    }

    /// Waits until `record_bytes` (one record, or a batch's records summed) can be appended
    /// without an `await`: room in the tail buffer and in the current segment (allocating
    /// the next one if needed). Fails with `NoSpace` (nothing to apply, retry later) or the
    /// log's I/O error.
    pub async fn reserve(&self, record_bytes: usize) -> Result<(), StorageError> {
        let inner = &*self.inner;
        loop {
            inner.check_failed()?;
            if inner.rotating.get() || !inner.buffer_has_room(record_bytes) {
                let ready =
                    || inner.failed.borrow().is_some() || !inner.rotating.get() && inner.buffer_has_room(record_bytes);
                inner.progress.wait_until(ready).await;
                continue;
            }
            if !inner.segment_has_room(record_bytes) {
                inner.rotate(record_bytes).await?;
                continue;
            }
            inner.reserved.set(record_bytes);
            return Ok(());
        }
    }

    /// Like [`ShardLog::reserve`], but the room stays promised across awaits until the
    /// returned [`Hold`] is given to [`ShardLog::append_group`] or dropped: what a transaction
    /// part's owner takes while it holds the part's locks, so that the commit, later, cannot
    /// meet a full disk. Fails with `NoSpace` or the log's I/O error, promising nothing.
    pub async fn hold(&self, record_bytes: usize) -> Result<Hold, StorageError> {
        let inner = &*self.inner;
        loop {
            inner.check_failed()?;
            if inner.rotating.get() {
                let ready = || inner.failed.borrow().is_some() || !inner.rotating.get();
                inner.progress.wait_until(ready).await;
                continue;
            }
            if !inner.segment_has_room(record_bytes) {
                inner.rotate(record_bytes).await?;
                continue;
            }
            inner.held.set(inner.held.get() + record_bytes);
            return Ok(Hold {
                inner: self.inner.clone(),
                bytes: record_bytes,
            });
        }
    }

    /// Waits until an append can run (no segment rotation under way); fails if the log failed.
    /// A holder awaits this, then applies and appends with no await in between.
    pub async fn until_appendable(&self) -> Result<(), StorageError> {
        let inner = &*self.inner;
        let ready = || inner.failed.borrow().is_some() || !inner.rotating.get();
        inner.progress.wait_until(ready).await;
        inner.check_failed()
    }

    /// Appends one group record holding `members` (records encoded by `storage::record`'s
    /// `encode`/`encode_set`): recovery replays all of them or, torn, none. Synchronous; the
    /// room comes from `hold` (which must cover the group) or else from a `reserve` made with
    /// no await since. Fails with `LogBusy` when there is no such room.
    pub fn append_group(&self, members: &[u8], hold: Option<Hold>) -> Result<Lsn, StorageError> {
        let bytes = record::group_bytes(members.len());
        if let Some(hold) = hold {
            if bytes > hold.bytes {
                return Err(StorageError::LogBusy);
            }
            drop(hold); // its room goes back to the segment, and this append takes it
            self.inner.reserved.set(self.inner.reserved.get() + bytes);
        }
        self.inner.append(bytes, |out| record::encode_group(out, members))
    }

    /// Appends a Set record. Synchronous; fails with `LogBusy` unless `reserve` made room.
    pub fn append_set(&self, key: &[u8], value: &[u8], expires_at_unix_ms: Option<u64>) -> Result<Lsn, StorageError> {
        self.append_set_versioned(key, value, expires_at_unix_ms, 0)
    }

    /// Appends a Set record carrying the key's version (see [`ShardLog::append_set`]).
    pub fn append_set_versioned(
        &self,
        key: &[u8],
        value: &[u8],
        expires_at_unix_ms: Option<u64>,
        version: u64,
    ) -> Result<Lsn, StorageError> {
        self.inner.append(record::set_bytes(key.len(), value.len()), |out| {
            record::encode_set(out, key, value, expires_at_unix_ms, version)
        })
    }

    /// Appends a Delete record (see [`ShardLog::append_set`]).
    pub fn append_delete(&self, key: &[u8]) -> Result<Lsn, StorageError> {
        self.inner.append(record::delete_bytes(key.len()), |out| {
            record::encode(out, Kind::Delete, key, &[])
        })
    }

    /// Appends an ExpireAt record: `None` removes the key's deadline.
    pub fn append_expire_at(&self, key: &[u8], expires_at_unix_ms: Option<u64>) -> Result<Lsn, StorageError> {
        let deadline = expires_at_unix_ms.unwrap_or(0).to_le_bytes();
        self.inner.append(record::expire_at_bytes(key.len()), |out| {
            record::encode(out, Kind::ExpireAt, key, &[&deadline])
        })
    }

    /// Resolves once the record ending at `lsn` is written to the OS (`everysec`, `never`) or
    /// fdatasynced (`always`); fails if the log failed before it got there.
    pub async fn durable(&self, lsn: Lsn) -> Result<(), StorageError> {
        let inner = &*self.inner;
        let reached = || match inner.config.fsync {
            FsyncPolicy::Always => inner.synced.get() >= lsn,
            FsyncPolicy::EverySec | FsyncPolicy::Never => inner.written.get() >= lsn,
        };
        inner
            .progress
            .wait_until(|| reached() || inner.failed.borrow().is_some())
            .await;
        if reached() { Ok(()) } else { inner.check_failed() }
    }

    /// The position just past the newest appended record.
    pub fn appended(&self) -> Lsn {
        self.inner.appended.get()
    }

    /// True when a snapshot should start: none is running, and the log since the newest
    /// snapshot exceeds `snapshot_log_ratio × live_bytes` and `snapshot_floor_bytes`, or the
    /// shard recovered from an older layout.
    pub fn should_snapshot(&self, live_bytes: u64) -> bool {
        let inner = &*self.inner;
        let threshold = inner
            .config
            .snapshot_floor_bytes
            .max(live_bytes.saturating_mul(inner.config.snapshot_log_ratio));
        !inner.snapshotting.get() && (inner.snapshot_due.get() || inner.stats.borrow().log_bytes > threshold)
    }

    /// Starts a snapshot: rotates to a fresh segment (the snapshot's sequence) and creates
    /// its temporary file. Feed it the store's entries, then `finish` it.
    pub async fn begin_snapshot(&self) -> Result<SnapshotWriter, StorageError> {
        let inner = &self.inner;
        if inner.snapshotting.replace(true) {
            return Err(StorageError::Layout("a snapshot is already being written".into()));
        }
        let begun = async {
            while inner.rotating.get() {
                inner.progress.wait_until(|| !inner.rotating.get()).await;
            }
            let log_bytes_before = inner.stats.borrow().log_bytes;
            inner.rotate(0).await?;
            let seq = inner.segment.borrow().as_ref().expect("rotate installed a segment").seq;
            SnapshotWriter::create(inner.clone(), seq, log_bytes_before).await
        };
        let result = begun.await;
        if result.is_err() {
            inner.snapshotting.set(false);
        }
        result
    }

    /// The log's counters.
    pub fn stats(&self) -> LogStats {
        self.inner.stats.borrow().clone()
    }

    /// Writes and syncs everything appended, then stops the writer.
    pub async fn close(self) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        drop(self);
        inner.progress.wait_until(|| inner.writer_done.get()).await;
        inner.check_failed()
    }
}

impl Drop for ShardLog {
    /// The writer goes on until everything appended is written and synced, then stops.
    fn drop(&mut self) {
        self.inner.closing.set(true);
        self.inner.doorbell.notify_all();
    }
}

impl Inner {
    fn check_failed(&self) -> Result<(), StorageError> {
        match &*self.failed.borrow() {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    fn buffer_has_room(&self, bytes: usize) -> bool {
        let buffered = self.buffer.borrow().len();
        buffered == 0 || buffered + bytes <= self.config.buffer_bytes_max
    }

    /// True when `bytes` fit in the current segment besides what holds promised.
    fn segment_has_room(&self, bytes: usize) -> bool {
        let segment = self.segment.borrow();
        let bytes = (bytes + self.held.get()) as u64;
        segment.as_ref().is_some_and(|s| s.appended + bytes <= s.capacity)
    }

    fn append(&self, bytes: usize, encode: impl FnOnce(&mut Vec<u8>)) -> Result<Lsn, StorageError> {
        self.check_failed()?;
        let reserved = self.reserved.get();
        let room = if bytes <= reserved && self.segment_has_room(bytes) {
            self.reserved.set(reserved - bytes);
            true
        } else {
            self.buffer_has_room(bytes) && self.segment_has_room(bytes)
        };
        if self.rotating.get() || !room {
            return Err(StorageError::LogBusy);
        }
        let mut buffer = self.buffer.borrow_mut();
        let before = buffer.len();
        encode(&mut buffer);
        debug_assert_eq!(buffer.len() - before, bytes);
        let mut segment = self.segment.borrow_mut();
        let segment = segment.as_mut().expect("segment_has_room saw a segment");
        let offset = segment.appended;
        segment.appended += bytes as u64;
        let mut stats = self.stats.borrow_mut();
        stats.log_bytes += bytes as u64;
        let lsn = Lsn(self.appended.get().0 + bytes as u64);
        self.appended.set(lsn);
        let half = segment.capacity / 2;
        if offset < half && segment.appended >= half {
            self.spare_wanted.set(true);
        }
        let SegmentFile::Mapped { map, .. } = &*segment.file else {
            drop(stats);
            self.doorbell.notify_all();
            return Ok(lsn);
        };
        // Into the page cache now: written (for `durable`) before the caller awaits anything.
        debug_assert_eq!(before, 0, "a mapped segment's appends never wait in the buffer");
        map.write_at(offset, &buffer[before..]);
        buffer.truncate(before);
        stats.writes += 1;
        stats.written_bytes += bytes as u64;
        let was_synced = self.synced.get() == self.written.get();
        self.written.set(lsn);
        drop(stats);
        // No one waits on `progress` for a mapped append (`durable` is ready at once), and the
        // writer needs waking only for something new to do: arm its sync timer, make the spare.
        if was_synced || self.spare_wanted.get() {
            self.doorbell.notify_all();
        }
        Ok(lsn)
    }

    /// Replaces the current segment by a new one with room for `record_bytes`: allocates it
    /// (on failure nothing changed), waits for the writer to drain the old one, fdatasyncs
    /// the old one, then switches. The new segment's header is its first record.
    pub(super) async fn rotate(self: &Inner, record_bytes: usize) -> Result<(), StorageError> {
        debug_assert!(!self.rotating.get());
        self.rotating.set(true);
        let result = self.rotate_inner(record_bytes).await;
        self.rotating.set(false);
        self.progress.notify_all();
        result
    }

    async fn rotate_inner(&self, record_bytes: usize) -> Result<(), StorageError> {
        let header_bytes = record::HEADER_BYTES + 16;
        let needed = (header_bytes + record_bytes + self.held.get()) as u64;
        let Spare { seq, file, capacity } = self.take_spare(needed).await?;
        let drained = || self.written.get() == self.appended.get() || self.failed.borrow().is_some();
        self.progress.wait_until(drained).await;
        self.check_failed()?;
        let old = self.segment.borrow_mut().take();
        if let Some(old) = old {
            self.sync(&old.file).await?;
            self.synced.set(self.written.get());
            // glommio closes a dropped file's fd in the background; a mapping is unmapped on
            // the blocking pool (the writer may still hold the file for a moment: then `Drop`).
            if let Ok(SegmentFile::Mapped { file, map }) = Rc::try_unwrap(old.file) {
                map.release_in_background();
                drop(file);
            }
        }
        self.segment.replace(Some(Segment {
            seq,
            file: Rc::new(file),
            capacity,
            appended: 0,
        }));
        self.live_segments.borrow_mut().push(seq);
        self.stats.borrow_mut().segments += 1;
        self.rotating.set(false);
        self.append(header_bytes, |out| record::encode_file_header(out, &MAGIC_LOG, seq))?;
        Ok(())
    }

    /// The next segment, with room for `needed` bytes, under its segment name: the spare when
    /// it is big enough, else one created now (a spare too small for an oversized record is
    /// removed and its sequence number reused).
    async fn take_spare(&self, needed: u64) -> Result<Spare, StorageError> {
        self.progress.wait_until(|| !self.preparing.get()).await;
        let mut spare = match self.spare.take() {
            Some(spare) if spare.capacity >= needed => spare,
            unfit => {
                let seq = match unfit {
                    Some(small) => {
                        let _ = glommio::io::remove(dir::spare_path(&self.dir, small.seq)).await;
                        small.seq
                    }
                    None => self.claim_seq(),
                };
                let capacity = self.config.segment_bytes.max(needed.next_multiple_of(4096));
                match create_spare(&self.dir, seq, capacity, self.config.fsync).await {
                    Ok(file) => Spare { seq, file, capacity },
                    Err(error) => {
                        self.release_seq(seq);
                        return Err(error);
                    }
                }
            }
        };
        let path = dir::segment_path(&self.dir, spare.seq);
        let io = |e: glommio::GlommioError<()>| StorageError::io(&path, &e.into());
        spare.file.rename(&path).await.map_err(io)?;
        sync_dir(&self.dir).await?;
        Ok(spare)
    }

    /// Takes the next segment sequence number.
    fn claim_seq(&self) -> u64 {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        seq
    }

    /// Gives back `seq`, claimed last, when its segment could not be made: recovery refuses
    /// a gap in the sequence (a missing segment).
    fn release_seq(&self, seq: u64) {
        debug_assert_eq!(self.next_seq.get(), seq + 1, "only the newest claim is given back");
        if self.next_seq.get() == seq + 1 {
            self.next_seq.set(seq);
        }
    }

    /// fdatasyncs `file`, counting it; a failure poisons the log.
    pub(super) async fn sync(&self, file: &SegmentFile) -> Result<(), StorageError> {
        let started = Instant::now();
        let result = file.fdatasync().await;
        let micros = started.elapsed().as_micros() as u64;
        let mut stats = self.stats.borrow_mut();
        stats.fsyncs += 1;
        stats.fsync_us_sum += micros;
        stats.fsync_us_max = stats.fsync_us_max.max(micros);
        drop(stats);
        result.map_err(|e| self.poison(StorageError::io(&self.dir, &e.into())))
    }

    /// Records the log's first failure, wakes every waiter with it, and returns it.
    fn poison(&self, error: StorageError) -> StorageError {
        log::error!("{error}: this shard's log refuses writes until restart");
        self.failed.borrow_mut().get_or_insert(error.clone());
        self.progress.notify_all();
        error
    }
}

/// Starts [`prepare_spare`] unless a spare exists or is being made, or the log is closing or
/// rotating (a rotation claims its own sequence number when it finds no spare).
fn start_preparing_spare(inner: &Rc<Inner>) {
    let busy = inner.preparing.get() || inner.rotating.get() || inner.closing.get();
    if busy || inner.spare.borrow().is_some() {
        return;
    }
    inner.preparing.set(true);
    glommio::spawn_local(prepare_spare(inner.clone())).detach();
}

/// Makes the next segment ahead of need, off the write path: rotation then only renames it.
/// A failure (a full disk) is not the log's failure: rotation tries again and reports it.
async fn prepare_spare(inner: Rc<Inner>) {
    let seq = inner.claim_seq();
    let capacity = inner.config.segment_bytes;
    match create_spare(&inner.dir, seq, capacity, inner.config.fsync).await {
        Ok(file) => {
            *inner.spare.borrow_mut() = Some(Spare { seq, file, capacity });
        }
        Err(error) => {
            inner.release_seq(seq);
            log::debug!("no spare log segment yet: {error}");
        }
    }
    inner.preparing.set(false);
    inner.progress.notify_all();
}

/// Creates spare segment `seq` (`*.spare`), opened the way `fsync` writes it, preallocated (so
/// a full disk refuses the rotation, never an append) and synced. Removes it on failure.
async fn create_spare(dir: &Path, seq: u64, capacity: u64, fsync: FsyncPolicy) -> Result<SegmentFile, StorageError> {
    match fsync {
        FsyncPolicy::Always => create_direct_spare(dir, seq, capacity).await.map(SegmentFile::Direct),
        FsyncPolicy::EverySec | FsyncPolicy::Never => create_mapped_spare(dir, seq, capacity).await,
    }
}

/// How a spare is opened: read-write, created new (a leftover of the same name is replaced).
fn spare_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(true);
    options
}

/// A spare for the page cache: preallocated only, then mapped. A store into a preallocated
/// (unwritten) block needs no read of it (the kernel knows it reads as zeros) and no new
/// allocation; writeback converts the extent, at the fdatasync, off the answer's path.
async fn create_mapped_spare(dir: &Path, seq: u64, capacity: u64) -> Result<SegmentFile, StorageError> {
    let path = dir::spare_path(dir, seq);
    let io = |e: glommio::GlommioError<()>| StorageError::io(&path, &e.into());
    let file = spare_options().buffered_open(&path).await.map_err(io)?;
    let allocated = async {
        file.pre_allocate(capacity, false).await.map_err(io)?;
        file.fdatasync().await.map_err(io)?;
        Mapping::new(&file, capacity, &path)
    };
    match allocated.await {
        Ok(map) => Ok(SegmentFile::Mapped { file, map }),
        Err(error) => {
            let _ = file.close().await;
            let _ = glommio::io::remove(&path).await;
            Err(error)
        }
    }
}

/// A spare for O_DIRECT: preallocated, then filled with zeros and synced, so every later
/// append overwrites written blocks — an O_DIRECT write into unwritten (merely fallocated)
/// blocks cannot be issued without blocking, so io_uring hands each one to a worker thread, a
/// context switch per write on the shard's CPU, and each fdatasync then commits the extent
/// conversion too.
async fn create_direct_spare(dir: &Path, seq: u64, capacity: u64) -> Result<DmaFile, StorageError> {
    let path = dir::spare_path(dir, seq);
    let io = |e: glommio::GlommioError<()>| StorageError::io(&path, &e.into());
    let file = spare_options().dma_open(&path).await.map_err(io)?;
    let allocated = async {
        file.pre_allocate(capacity, false).await.map_err(io)?;
        let mut at = 0;
        while at < capacity {
            let len = (capacity - at).min(STORAGE_ZERO_FILL_BYTES as u64) as usize;
            let mut zeros = file.alloc_dma_buffer(len);
            zeros.as_bytes_mut().fill(0);
            let wrote = file.write_at(zeros, at).await.map_err(io)?;
            if wrote != len {
                let message = format!("short write of zeros: {wrote} of {len} bytes");
                return Err(StorageError::Io {
                    file: path.clone(),
                    message,
                });
            }
            at += len as u64;
        }
        file.fdatasync().await.map_err(io)
    };
    match allocated.await {
        Ok(()) => Ok(file),
        Err(error) => {
            let _ = file.close().await;
            let _ = glommio::io::remove(&path).await;
            Err(error)
        }
    }
}

/// fdatasyncs a folder, so that the names created or renamed in it last.
async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let io = |e: glommio::GlommioError<()>| StorageError::io(dir, &e.into());
    let folder = Directory::open(dir).await.map_err(io)?;
    let synced = folder.sync().await.map_err(io);
    let _ = folder.close().await;
    synced
}

/// An fdatasync the writer started under `always` and has not seen finish: resolves to the
/// position it made durable, or `None` when it failed (the log is then poisoned).
type Syncing = Pin<Box<dyn Future<Output = Option<Lsn>>>>;

/// Starts fdatasyncing `file` up to `upto`, without waiting for it.
fn start_sync(inner: &Rc<Inner>, file: Rc<SegmentFile>, upto: Lsn) -> Syncing {
    let inner = inner.clone();
    Box::pin(async move { inner.sync(&file).await.ok().map(|()| upto) })
}

/// Records a finished [`Syncing`]; false when it failed. `synced` only moves forward: a
/// rotation may have synced further meanwhile.
fn finish_sync(inner: &Inner, synced: Option<Lsn>) -> bool {
    let Some(lsn) = synced else { return false };
    inner.synced.set(inner.synced.get().max(lsn));
    inner.progress.notify_all();
    true
}

/// The shard's one writer: takes everything appended since its last write, writes it (as
/// aligned blocks rewriting the partial last one under `always`, as the bytes themselves
/// otherwise), syncs per the policy, wakes waiters.
/// Under `always` the fdatasync of one group overlaps the write of the next (at most one of
/// each in flight): a group's waiters are answered when its own fdatasync ends, and that
/// fdatasync starts only after its write completed.
async fn writer(inner: Rc<Inner>) {
    let mut tail = Tail::default();
    let mut taken = Vec::new();
    let mut last_sync = Instant::now();
    let mut syncing: Option<Syncing> = None;
    let sync_every = Duration::from_millis(STORAGE_EVERYSEC_SYNC_MS);
    loop {
        if inner.spare_wanted.take() {
            start_preparing_spare(&inner);
        }
        let idle = || inner.buffer.borrow().is_empty();
        let unsynced = || inner.synced.get() < inner.written.get();
        if idle() && inner.failed.borrow().is_none() {
            if let Some(sync) = syncing.take() {
                // Nothing new to write: the sync in flight is all there is to finish.
                if !finish_sync(&inner, sync.await) {
                    break;
                }
                last_sync = Instant::now();
                continue;
            }
            if inner.closing.get() && !unsynced() {
                break;
            }
            let every_sec = inner.config.fsync == FsyncPolicy::EverySec;
            let timed = every_sec && unsynced();
            // A mapped segment is written by its appends, never here: they ring for the first
            // unsynced byte (arming the timer below). Any append rings for the next segment.
            let work = inner.doorbell.wait_until(|| {
                let arm = every_sec && !timed && unsynced();
                !idle() || inner.closing.get() || inner.spare_wanted.get() || arm
            });
            if timed {
                let due = sync_every.saturating_sub(last_sync.elapsed());
                futures_lite::future::or(work, glommio::timer::sleep(due)).await;
            } else {
                work.await;
            }
        }
        if inner.failed.borrow().is_some() {
            break;
        }
        if !idle() {
            std::mem::swap(&mut *inner.buffer.borrow_mut(), &mut taken);
            let end = inner.appended.get();
            let file = inner.segment.borrow().as_ref().map(|s| (s.seq, s.file.clone()));
            let (seq, file) = file.expect("bytes are appended only to a segment");
            inner.progress.notify_all(); // the buffer has room again
            let in_flight = syncing.take();
            let previous = async {
                match in_flight {
                    Some(sync) => Some(sync.await),
                    None => None,
                }
            };
            let (wrote, synced) = futures_lite::future::zip(tail.write(&inner, seq, &file, &mut taken), previous).await;
            if let Some(synced) = synced {
                if !finish_sync(&inner, synced) {
                    break;
                }
                last_sync = Instant::now();
            }
            if let Err(error) = wrote {
                inner.poison(error);
                break;
            }
            inner.written.set(end);
            if inner.config.fsync == FsyncPolicy::Always {
                syncing = Some(start_sync(&inner, file, end));
            }
            inner.progress.notify_all();
        }
        let sync_due = inner.config.fsync == FsyncPolicy::EverySec && last_sync.elapsed() >= sync_every;
        if syncing.is_none() && unsynced() && (sync_due || inner.closing.get() && idle()) {
            let written = inner.written.get();
            let file = inner.segment.borrow().as_ref().map(|s| s.file.clone());
            if let Some(file) = file
                && inner.sync(&file).await.is_err()
            {
                break;
            }
            inner.synced.set(written);
            last_sync = Instant::now();
            inner.progress.notify_all();
        }
    }
    inner.writer_done.set(true);
    inner.progress.notify_all();
}

/// Where the writer is in the segment being written. Under O_DIRECT, the partial last block:
/// every write starts with it, so writes stay aligned and the file stays a prefix of records
/// followed by zeros. (A mapped segment is written by its appends, never by the writer.)
#[derive(Default)]
struct Tail {
    seq: u64,
    /// File offset of the block the tail bytes start (aligned).
    offset: u64,
    bytes: Vec<u8>,
}

impl Tail {
    /// Writes `data` (what the writer took from the buffer; left empty) at the end of segment
    /// `seq`.
    async fn write(
        &mut self,
        inner: &Inner,
        seq: u64,
        file: &SegmentFile,
        data: &mut Vec<u8>,
    ) -> Result<(), StorageError> {
        if self.seq != seq {
            *self = Tail {
                seq,
                offset: 0,
                bytes: Vec::new(),
            };
        }
        let path = dir::segment_path(&inner.dir, seq);
        match file {
            SegmentFile::Direct(file) => self.write_direct(inner, &path, file, data).await?,
            // An append to a mapped segment copies itself in (`Inner::append`) and leaves the
            // buffer empty, so the writer never holds bytes for one: losing them silently
            // would be worse than stopping.
            SegmentFile::Mapped { .. } => assert!(data.is_empty(), "a mapped segment's bytes reached the writer"),
        }
        data.clear();
        Ok(())
    }

    async fn write_direct(
        &mut self,
        inner: &Inner,
        path: &Path,
        file: &DmaFile,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let align = file.alignment().max(4096) as usize;
        let mut from = 0;
        while from < data.len() {
            let take = (STORAGE_WRITE_BYTES_MAX - self.bytes.len()).min(data.len() - from);
            let len = self.bytes.len() + take;
            let aligned = len.next_multiple_of(align);
            let mut buffer = file.alloc_dma_buffer(aligned);
            let out = buffer.as_bytes_mut();
            out[..self.bytes.len()].copy_from_slice(&self.bytes);
            out[self.bytes.len()..len].copy_from_slice(&data[from..from + take]);
            out[len..].fill(0);
            let whole = len / align * align;
            let next_tail = out[whole..len].to_vec();
            let wrote = file.write_at(buffer, self.offset).await;
            let wrote = wrote.map_err(|e| StorageError::io(path, &e.into()))?;
            if wrote != aligned {
                let message = format!("short write: {wrote} of {aligned} bytes");
                return Err(StorageError::Io {
                    file: path.to_path_buf(),
                    message,
                });
            }
            let mut stats = inner.stats.borrow_mut();
            stats.writes += 1;
            stats.written_bytes += aligned as u64;
            self.offset += whole as u64;
            self.bytes = next_tail;
            from += take;
        }
        Ok(())
    }
}
