//! Recovery: replays a shard's snapshot and log segments (and, after a shard-count change,
//! every older layout's files) into a sink, checking every record.
//!
//! Owns the rules for what a damaged file means (torn tail or corruption, see [`super`]). It
//! never applies anything itself: the caller's sink does, so nothing half-recovered is served
//! as long as the caller stops start-up on an error. It truncates only files of the shard's
//! own folder in the target layout, never another shard's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use glommio::io::{DmaFile, OpenOptions};

use super::dir::{self, DataDir, Layout, ShardFiles};
use super::record::{self, Bad, Kind, MAGIC_LOG, MAGIC_SNAPSHOT, Record};
use super::{StorageError, now_unix_ms};
use crate::limits::STORAGE_READ_CHUNK_BYTES;
use crate::shard::{ShardId, shard_for};

/// One state change replayed from disk, borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed<'a> {
    /// `key` holds `value`; the deadline (if any) is still in the future.
    Set {
        key: &'a [u8],
        value: &'a [u8],
        expires_at_unix_ms: Option<u64>,
        /// The key's version (0 when written before versions, or by a server without them).
        version: u64,
    },
    /// `key` is gone (deleted, or its deadline passed, maybe while the server was down).
    Delete { key: &'a [u8] },
    /// `key`'s deadline is now this (`None`: no deadline); a no-op if the key does not exist.
    ExpireAt {
        key: &'a [u8],
        expires_at_unix_ms: Option<u64>,
    },
}

/// A torn last record that recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    /// Where the file now ends: the first byte of the torn record.
    pub offset: u64,
}

/// What recovery read, and what [`super::ShardLog::open`] needs to go on from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Records decoded (file headers included), whether kept or not.
    pub records: u64,
    /// Records handed to the sink (the keys `keep` accepted).
    pub records_applied: u64,
    /// Bytes of records decoded.
    pub bytes: u64,
    /// Files read.
    pub files: u64,
    /// Wall time recovery took, in microseconds.
    pub elapsed_us: u64,
    /// Torn tails cut off (each also logged as a warning).
    pub torn_tails: Vec<TornTail>,
    /// Record bytes in the shard's own segments since its newest snapshot: the log a
    /// snapshot would make redundant.
    pub own_log_bytes: u64,
    /// True when keys came from an older layout: the shard should snapshot soon, so that
    /// [`DataDir::remove_superseded`] can drop the old files.
    pub read_older_layouts: bool,
}

/// Replays into `sink`, oldest first, everything shard `shard_id` of `target` owns: older
/// layouts' files (only for keys `keep` accepts, and only while the shard has no snapshot of
/// its own), then its own folder. `keep` must accept only keys that
/// `shard_for(key, target.nr_shards) == shard_id`. On error, discard whatever the sink built.
pub async fn recover(
    dir: &DataDir,
    target: &Layout,
    shard_id: ShardId,
    keep: impl Fn(&[u8]) -> bool,
    mut sink: impl FnMut(Replayed<'_>),
) -> Result<RecoveryStats, StorageError> {
    let started = Instant::now();
    dir::settle_io_probe(dir.path()).await?;
    let layouts = dir.layouts()?;
    let Some(target_index) = layouts.iter().position(|l| l == target) else {
        return Err(StorageError::Layout(format!(
            "{} does not exist",
            target.path.display()
        )));
    };
    if target_index + 1 != layouts.len() {
        return Err(StorageError::Layout("the target layout must be the newest".into()));
    }
    let mut reader = Reader {
        stats: RecoveryStats::default(),
        now_unix_ms: now_unix_ms(),
    };
    let own_dir = target.shard_dir(shard_id);
    let own = dir::list_shard_dir(&own_dir)?;
    if own.snapshots.is_empty() {
        // A layout's snapshots, per shard: a newer snapshot is the whole truth for its keys.
        let mut snapshotted: Vec<Vec<bool>> = Vec::new();
        for layout in &layouts[..target_index] {
            let flags = (0..layout.nr_shards)
                .map(|i| dir::list_shard_dir(&layout.shard_dir(i)).map(|f| !f.snapshots.is_empty()))
                .collect::<Result<_, _>>()?;
            snapshotted.push(flags);
        }
        for (index, layout) in layouts[..target_index].iter().enumerate() {
            let newer = &layouts[index + 1..target_index];
            let superseded = |key: &[u8]| {
                newer
                    .iter()
                    .zip(&snapshotted[index + 1..])
                    .any(|(l, snaps)| snaps[shard_for(key, l.nr_shards)])
            };
            let filter = |key: &[u8]| keep(key) && !superseded(key);
            for i in 0..layout.nr_shards {
                let shard_dir = layout.shard_dir(i);
                let files = dir::list_shard_dir(&shard_dir)?;
                reader.stats.read_older_layouts |= !files.segments.is_empty() || !files.snapshots.is_empty();
                reader
                    .replay_shard(&shard_dir, &files, false, &filter, &mut sink)
                    .await?;
            }
        }
    }
    let own_bytes = reader.replay_shard(&own_dir, &own, true, &keep, &mut sink).await?;
    reader.stats.own_log_bytes = own_bytes;
    reader.stats.elapsed_us = started.elapsed().as_micros() as u64;
    Ok(reader.stats)
}

/// Where a file's records stop, and why.
enum End {
    /// The file ended after a whole record.
    Clean,
    /// At `offset`, bytes that are not a record.
    Bad { offset: u64, why: Bad },
}

struct Reader {
    stats: RecoveryStats,
    /// Deadlines at or before this are already past.
    now_unix_ms: u64,
}

impl Reader {
    /// Replays one shard folder (newest snapshot, then its segments); returns the record
    /// bytes of those segments. `own`: the target layout's folder of this shard, whose torn
    /// tail is truncated on disk.
    async fn replay_shard(
        &mut self,
        shard_dir: &Path,
        files: &ShardFiles,
        own: bool,
        keep: &dyn Fn(&[u8]) -> bool,
        sink: &mut dyn FnMut(Replayed<'_>),
    ) -> Result<u64, StorageError> {
        let mut first_seq = 1;
        if let Some(&snapshot) = files.snapshots.last() {
            let path = dir::snapshot_path(shard_dir, snapshot);
            self.replay_file(&path, snapshot, true, false, keep, sink).await?;
            first_seq = snapshot;
        }
        let segments: Vec<u64> = files.segments.iter().copied().filter(|&s| s >= first_seq).collect();
        let mut log_bytes = 0;
        for (index, &seq) in segments.iter().enumerate() {
            let path = dir::segment_path(shard_dir, seq);
            if seq != first_seq + index as u64 {
                let missing = dir::segment_path(shard_dir, first_seq + index as u64);
                return Err(StorageError::Corrupt {
                    file: missing,
                    offset: 0,
                    what: "log segment missing: the segments after it cannot be trusted".into(),
                });
            }
            let newest = index + 1 == segments.len();
            let file_bytes = self.replay_file(&path, seq, false, newest, keep, sink).await?;
            log_bytes += file_bytes;
            if newest && own {
                self.trim_own_tail(&path, file_bytes).await?;
            }
        }
        Ok(log_bytes)
    }

    /// Replays one file; returns its record bytes. `newest`: a torn tail is allowed.
    async fn replay_file(
        &mut self,
        path: &Path,
        seq: u64,
        snapshot: bool,
        newest: bool,
        keep: &dyn Fn(&[u8]) -> bool,
        sink: &mut dyn FnMut(Replayed<'_>),
    ) -> Result<u64, StorageError> {
        let file = DmaFile::open(path)
            .await
            .map_err(|e| StorageError::io(path, &e.into()))?;
        let size = file.file_size().await.map_err(|e| StorageError::io(path, &e.into()))?;
        self.stats.files += 1;
        let mut state = FileState {
            path,
            seq,
            snapshot,
            sets: 0,
            ended: false,
            bytes: 0,
        };
        let mut window: Vec<u8> = Vec::with_capacity(2 * STORAGE_READ_CHUNK_BYTES);
        let (mut window_offset, mut read_offset) = (0u64, 0u64);
        let end = loop {
            let chunk = file.read_at_aligned(read_offset, STORAGE_READ_CHUNK_BYTES).await;
            let chunk = chunk.map_err(|e| StorageError::io(path, &e.into()))?;
            read_offset += chunk.len() as u64;
            window.extend_from_slice(&chunk);
            let at_eof = chunk.is_empty() || read_offset >= size;
            let mut cursor = 0;
            let stop = loop {
                match record::decode(&window[cursor..]) {
                    Ok((rec, len)) => {
                        self.apply(&mut state, window_offset + cursor as u64, rec, keep, sink)?;
                        self.stats.bytes += len as u64;
                        state.bytes += len as u64;
                        cursor += len;
                        if state.ended {
                            break Some(End::Clean);
                        }
                    }
                    Err(Bad::Short) if !at_eof => break None,
                    // Fewer than a header's bytes of preallocated zeros end the segment.
                    Err(Bad::Short) if window[cursor..].iter().all(|&b| b == 0) => {
                        break Some(End::Bad {
                            offset: window_offset + cursor as u64,
                            why: Bad::Zeros,
                        });
                    }
                    Err(_) if cursor == window.len() && at_eof => break Some(End::Clean),
                    Err(why) => {
                        break Some(End::Bad {
                            offset: window_offset + cursor as u64,
                            why,
                        });
                    }
                }
            };
            window.drain(..cursor);
            window_offset += cursor as u64;
            if let Some(end) = stop {
                break end;
            }
        };
        if let End::Bad { offset, why } = end {
            self.judge_stop(&file, &state, offset, why, size, newest).await?;
        } else if snapshot && !state.ended {
            return Err(corrupt(path, window_offset, "snapshot ends before its end record"));
        }
        let _ = file.close().await;
        Ok(state.bytes)
    }

    /// Decides whether records stopping at `offset` is a clean end, a torn tail or corruption.
    async fn judge_stop(
        &mut self,
        file: &DmaFile,
        state: &FileState<'_>,
        offset: u64,
        why: Bad,
        size: u64,
        newest: bool,
    ) -> Result<(), StorageError> {
        let path = state.path;
        let rest = read_all_from(file, path, offset, size).await?;
        if let Some(at) = find_record(&rest) {
            let what = format!(
                "{}, yet a valid record starts at offset {}",
                describe(why),
                offset + at as u64
            );
            return Err(corrupt(path, offset, &what));
        }
        if state.snapshot {
            // A snapshot is renamed into place only once whole: it has no torn tail.
            return Err(corrupt(path, offset, &format!("snapshot: {}", describe(why))));
        }
        if matches!(why, Bad::Zeros) && rest.iter().all(|&b| b == 0) {
            return Ok(()); // the written part ends here; preallocated zeros follow
        }
        if !newest {
            let nonzero = rest.iter().position(|&b| b != 0).map_or(0, |at| offset + at as u64);
            let what = format!(
                "{} in a segment that was synced whole (nonzero bytes at {nonzero})",
                describe(why)
            );
            return Err(corrupt(path, offset, &what));
        }
        log::warn!(
            "{}:{offset}: torn last record ({}); recovery cuts the log here",
            path.display(),
            describe(why)
        );
        self.stats.torn_tails.push(TornTail {
            file: path.to_path_buf(),
            offset,
        });
        Ok(())
    }

    /// Checks one record's place in its file and hands it (filtered) to the sink.
    fn apply(
        &mut self,
        state: &mut FileState<'_>,
        offset: u64,
        rec: Record<'_>,
        keep: &dyn Fn(&[u8]) -> bool,
        sink: &mut dyn FnMut(Replayed<'_>),
    ) -> Result<(), StorageError> {
        self.stats.records += 1;
        let path = state.path;
        if offset == 0 {
            let magic = if state.snapshot { &MAGIC_SNAPSHOT } else { &MAGIC_LOG };
            if rec.kind != Kind::FileHeader || &rec.body[..8] != magic {
                return Err(corrupt(path, 0, "file does not start with its header record"));
            }
            if rec.body_u64_at(8) != state.seq {
                return Err(corrupt(path, 0, "header's sequence number differs from the file name"));
            }
            return Ok(());
        }
        match rec.kind {
            Kind::SnapshotEnd if state.snapshot => {
                if rec.body_u64_at(0) != state.sets {
                    return Err(corrupt(
                        path,
                        offset,
                        "snapshot's record count differs from its end record",
                    ));
                }
                state.ended = true;
                Ok(())
            }
            Kind::Group if !state.snapshot => self.apply_group(state, offset, rec, keep, sink),
            _ => self.apply_change(state, offset, rec, keep, sink),
        }
    }

    /// Replays a group's members. Its CRC32C covered all of them and was checked before this
    /// runs, so a group is replayed whole or (torn, failing its CRC) not at all.
    fn apply_group(
        &mut self,
        state: &mut FileState<'_>,
        offset: u64,
        rec: Record<'_>,
        keep: &dyn Fn(&[u8]) -> bool,
        sink: &mut dyn FnMut(Replayed<'_>),
    ) -> Result<(), StorageError> {
        // Every member is checked before the first is replayed.
        for member in record::members(&rec) {
            match member.map(|member| member.kind) {
                Ok(Kind::Set | Kind::SetVersioned | Kind::Delete | Kind::ExpireAt) => {}
                Ok(_) => return Err(corrupt(state.path, offset, "a group holds a record kind it must not")),
                Err(_) => {
                    let what = "a group's checksum holds but its members are not whole records";
                    return Err(corrupt(state.path, offset, what));
                }
            }
        }
        for member in record::members(&rec).flatten() {
            self.stats.records += 1;
            self.apply_change(state, offset, member, keep, sink)?;
        }
        Ok(())
    }

    /// Hands one Set, Delete or ExpireAt record (filtered) to the sink.
    fn apply_change(
        &mut self,
        state: &mut FileState<'_>,
        offset: u64,
        rec: Record<'_>,
        keep: &dyn Fn(&[u8]) -> bool,
        sink: &mut dyn FnMut(Replayed<'_>),
    ) -> Result<(), StorageError> {
        let deadline = |at: usize| Some(rec.body_u64_at(at)).filter(|&d| d != 0);
        let replayed = match rec.kind {
            Kind::Set | Kind::SetVersioned => {
                state.sets += 1;
                let (value_at, version) = record::set_value_at_and_version(&rec);
                match deadline(0) {
                    Some(d) if d <= self.now_unix_ms => Replayed::Delete { key: rec.key },
                    expires_at_unix_ms => Replayed::Set {
                        key: rec.key,
                        value: &rec.body[value_at..],
                        expires_at_unix_ms,
                        version,
                    },
                }
            }
            Kind::Delete if !state.snapshot => Replayed::Delete { key: rec.key },
            Kind::ExpireAt if !state.snapshot => match deadline(0) {
                Some(d) if d <= self.now_unix_ms => Replayed::Delete { key: rec.key },
                expires_at_unix_ms => Replayed::ExpireAt {
                    key: rec.key,
                    expires_at_unix_ms,
                },
            },
            _ => return Err(corrupt(state.path, offset, "record kind does not belong in this file")),
        };
        if keep(rec.key) {
            self.stats.records_applied += 1;
            sink(replayed);
        }
        Ok(())
    }

    /// Cuts the shard's own newest segment after its last good record, so that it no longer
    /// ends in a torn record (or preallocated zeros) once a newer segment follows it.
    async fn trim_own_tail(&mut self, path: &Path, record_bytes: u64) -> Result<(), StorageError> {
        let io = |e: glommio::GlommioError<()>| StorageError::io(path, &e.into());
        let file = OpenOptions::new().write(true).dma_open(path).await.map_err(io)?;
        if file.file_size().await.map_err(io)? > record_bytes {
            file.truncate(record_bytes).await.map_err(io)?;
            file.fdatasync().await.map_err(io)?;
        }
        let _ = file.close().await;
        Ok(())
    }
}

/// Per-file progress of [`Reader::replay_file`].
struct FileState<'a> {
    path: &'a Path,
    seq: u64,
    snapshot: bool,
    /// Set records seen (a snapshot's end record must agree).
    sets: u64,
    /// The snapshot's end record was read: anything after it is padding.
    ended: bool,
    /// Bytes of good records.
    bytes: u64,
}

fn corrupt(path: &Path, offset: u64, what: &str) -> StorageError {
    StorageError::Corrupt {
        file: path.to_path_buf(),
        offset,
        what: what.to_string(),
    }
}

fn describe(why: Bad) -> String {
    match why {
        Bad::Short => "record cut short".into(),
        Bad::Zeros => "zeros where a record should be".into(),
        Bad::Header(what) => format!("bad record header: {what}"),
        Bad::Checksum => "record fails its CRC32C".into(),
    }
}

/// Every byte of `file` from `offset` on (only on the error path, and bounded by one file).
/// Aligned reads only: glommio 0.9's unaligned `read_at` returns up to `offset % 512` bytes
/// past the end of the file when the read comes up short (stale buffer memory).
async fn read_all_from(file: &DmaFile, path: &Path, offset: u64, size: u64) -> Result<Vec<u8>, StorageError> {
    let mut rest = Vec::with_capacity(size.saturating_sub(offset) as usize);
    let mut at = offset / 4096 * 4096;
    while at < size {
        let read = file.read_at_aligned(at, STORAGE_READ_CHUNK_BYTES).await;
        let read = read.map_err(|e| StorageError::io(path, &e.into()))?;
        if read.is_empty() {
            break;
        }
        let skip = offset.saturating_sub(at).min(read.len() as u64) as usize;
        rest.extend_from_slice(&read[skip..]);
        at += read.len() as u64;
    }
    rest.truncate(size.saturating_sub(offset) as usize);
    Ok(rest)
}

/// The first offset after 0 in `bytes` where a whole valid record starts (damage in the
/// middle of a file, rather than a torn tail, has one). A random match needs the kind byte,
/// zero reserved bytes, sane lengths and a CRC32C hit: about one chance in 2^50 per offset.
fn find_record(bytes: &[u8]) -> Option<usize> {
    (1..bytes.len().saturating_sub(record::HEADER_BYTES - 1)).find(|&at| {
        let header = &bytes[at..at + record::HEADER_BYTES];
        (1..=7).contains(&header[8]) && header[9..12] == [0, 0, 0] && record::decode(&bytes[at..]).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_found_after_damage_but_not_in_zeros_or_noise() {
        let mut bytes = vec![0u8; 100];
        assert_eq!(find_record(&bytes), None);
        bytes
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i * 37 % 251) as u8);
        assert_eq!(find_record(&bytes), None);
        let at = bytes.len();
        record::encode(&mut bytes, Kind::Delete, b"key", &[]);
        bytes.extend_from_slice(&[0; 64]);
        assert_eq!(find_record(&bytes), Some(at));
    }
}
