//! Writing a shard's snapshot: entries fed in chunks by the shard's store scan, written in
//! aligned blocks to a temporary file, then made durable and renamed into place, and only then
//! the log segments and snapshots it supersedes deleted.
//!
//! Owns one snapshot file at a time per shard. It never reads the store itself (the shard
//! feeds it, yielding between chunks) and never deletes a file before its replacement is
//! durable.

use std::path::PathBuf;
use std::rc::Rc;

use glommio::io::{Directory, DmaFile, OpenOptions};

use super::dir;
use super::log::Inner;
use super::record::{self, Kind, MAGIC_SNAPSHOT};
use super::{StorageError, now_unix_ms};
use crate::limits::STORAGE_WRITE_BYTES_MAX;

/// A snapshot being written; from [`super::ShardLog::begin_snapshot`]. Dropping it unfinished
/// abandons it (its temporary file is removed).
pub struct SnapshotWriter {
    log: Rc<Inner>,
    /// The snapshot's sequence: the log segment that began with it. Recovery reads this
    /// snapshot, then segments `seq..`.
    seq: u64,
    /// `log_bytes` when the snapshot began: the part of the log this snapshot makes redundant.
    log_bytes_before: u64,
    file: Option<DmaFile>,
    tmp_path: PathBuf,
    /// Encoded records not yet written; they start at file offset `offset` (aligned).
    buffer: Vec<u8>,
    offset: u64,
    /// Set records added (the end record carries the count).
    sets: u64,
    finished: bool,
}

impl SnapshotWriter {
    pub(super) async fn create(
        log: Rc<Inner>,
        seq: u64,
        log_bytes_before: u64,
    ) -> Result<SnapshotWriter, StorageError> {
        let tmp_path = dir::snapshot_tmp_path(&log.dir, seq);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&tmp_path)
            .await
            .map_err(|e| StorageError::io(&tmp_path, &e.into()))?;
        let mut buffer = Vec::with_capacity(2 * STORAGE_WRITE_BYTES_MAX);
        record::encode_file_header(&mut buffer, &MAGIC_SNAPSHOT, seq);
        Ok(SnapshotWriter {
            log,
            seq,
            log_bytes_before,
            file: Some(file),
            tmp_path,
            buffer,
            offset: 0,
            sets: 0,
            finished: false,
        })
    }

    /// The snapshot's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Adds one entry (buffered; call [`SnapshotWriter::flush`] between chunks).
    pub fn add(&mut self, key: &[u8], value: &[u8], expires_at_unix_ms: Option<u64>) {
        self.add_versioned(key, value, expires_at_unix_ms, 0);
    }

    /// Adds one entry with the key's version.
    pub fn add_versioned(&mut self, key: &[u8], value: &[u8], expires_at_unix_ms: Option<u64>, version: u64) {
        record::encode_set(&mut self.buffer, key, value, expires_at_unix_ms, version);
        self.sets += 1;
    }

    /// Bytes added but not yet written.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Writes every whole aligned block buffered so far (the partial last block stays).
    pub async fn flush(&mut self) -> Result<(), StorageError> {
        self.write_blocks(false).await
    }

    /// Ends the snapshot: end record, write, fdatasync, rename into place, fsync the folder;
    /// then deletes the segments and snapshots it supersedes.
    pub async fn finish(mut self) -> Result<(), StorageError> {
        record::encode(&mut self.buffer, Kind::SnapshotEnd, b"", &[&self.sets.to_le_bytes()]);
        self.write_blocks(true).await?;
        let file = self.file.take().expect("the file is open until finish");
        let io = |e: glommio::GlommioError<()>| StorageError::io(&self.tmp_path, &e.into());
        file.fdatasync().await.map_err(io)?;
        file.close().await.map_err(io)?;
        let final_path = dir::snapshot_path(&self.log.dir, self.seq);
        glommio::io::rename(&self.tmp_path, &final_path).await.map_err(io)?;
        self.finished = true;
        let folder_io = |e: glommio::GlommioError<()>| StorageError::io(&self.log.dir, &e.into());
        let folder = Directory::open(&self.log.dir).await.map_err(folder_io)?;
        folder.sync().await.map_err(folder_io)?;
        let _ = folder.close().await;
        self.remove_superseded().await
    }

    async fn remove_superseded(&mut self) -> Result<(), StorageError> {
        let log = &self.log;
        let old_segments: Vec<u64> = log
            .live_segments
            .borrow()
            .iter()
            .copied()
            .filter(|&s| s < self.seq)
            .collect();
        let old_snapshots: Vec<u64> = log
            .live_snapshots
            .borrow()
            .iter()
            .copied()
            .filter(|&s| s < self.seq)
            .collect();
        log.live_segments.borrow_mut().retain(|&s| s >= self.seq);
        *log.live_snapshots.borrow_mut() = vec![self.seq];
        {
            let mut stats = log.stats.borrow_mut();
            stats.log_bytes -= self.log_bytes_before.min(stats.log_bytes);
            stats.segments = log.live_segments.borrow().len() as u64;
            stats.snapshots += 1;
            stats.snapshot_finished_unix_ms = Some(now_unix_ms());
        }
        log.snapshot_due.set(false);
        let paths = old_segments
            .iter()
            .map(|&s| dir::segment_path(&log.dir, s))
            .chain(old_snapshots.iter().map(|&s| dir::snapshot_path(&log.dir, s)));
        for path in paths {
            glommio::io::remove(&path)
                .await
                .map_err(|e| StorageError::io(&path, &e.into()))?;
        }
        Ok(())
    }

    /// Writes the buffer's whole blocks, or with `all` everything (the last block zero-padded).
    async fn write_blocks(&mut self, all: bool) -> Result<(), StorageError> {
        let file = self.file.as_ref().expect("the file is open until finish");
        let align = file.alignment().max(4096) as usize;
        let mut from = 0;
        loop {
            let left = self.buffer.len() - from;
            let take = if all {
                left.min(STORAGE_WRITE_BYTES_MAX)
            } else {
                (left / align * align).min(STORAGE_WRITE_BYTES_MAX)
            };
            if take == 0 {
                break;
            }
            let aligned = take.next_multiple_of(align);
            let mut dma = file.alloc_dma_buffer(aligned);
            dma.as_bytes_mut()[..take].copy_from_slice(&self.buffer[from..from + take]);
            dma.as_bytes_mut()[take..].fill(0);
            let wrote = file.write_at(dma, self.offset).await;
            let wrote = wrote.map_err(|e| StorageError::io(&self.tmp_path, &e.into()))?;
            if wrote != aligned {
                let message = format!("short write: {wrote} of {aligned} bytes");
                return Err(StorageError::Io {
                    file: self.tmp_path.clone(),
                    message,
                });
            }
            self.offset += aligned as u64;
            from += take;
        }
        self.buffer.drain(..from);
        Ok(())
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        self.log.snapshotting.set(false);
        if !self.finished {
            let path = self.tmp_path.clone();
            glommio::spawn_local(async move {
                let _ = glommio::io::remove(&path).await;
            })
            .detach();
        }
    }
}
