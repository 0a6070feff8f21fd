//! The data directory: its lock, its layouts (one per shard count it was written with), and the
//! names of the files in a shard's folder.
//!
//! Owns paths and the directory tree. These calls use blocking `std::fs`: they run at start-up
//! before any shard serves, or (for [`DataDir::remove_superseded`]) off the executor. It never
//! reads or writes a record.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::StorageError;
use crate::shard::ShardId;

/// Name of the lock file at the root of a data dir; it holds the owner's pid.
pub const LOCK_FILE: &str = "LOCK";

/// A data dir this process holds the lock on. Dropping it releases the lock.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    /// Kept open for the flock's lifetime: the kernel drops the lock when the fd closes,
    /// including when the process dies, so a crash never leaves a stale lock behind.
    _lock: File,
}

/// One generation of the layout: the files written by a run with `nr_shards` shards, in
/// `DIR/layout-<generation>-shards-<nr_shards>/shard-<i>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Increases by one each time the shard count changes; orders layouts oldest first.
    pub generation: u64,
    pub nr_shards: usize,
    pub path: PathBuf,
}

impl Layout {
    /// The folder shard `shard_id` of this layout writes.
    pub fn shard_dir(&self, shard_id: ShardId) -> PathBuf {
        self.path.join(format!("shard-{shard_id}"))
    }
}

impl DataDir {
    /// Creates `dir` if needed and takes its lock, or fails naming the pid that holds it.
    pub fn lock(dir: impl AsRef<Path>) -> Result<DataDir, StorageError> {
        let root = dir.as_ref().to_path_buf();
        fs::create_dir_all(&root).map_err(|e| StorageError::io(&root, &e))?;
        let lock_path = root.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| StorageError::io(&lock_path, &e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StorageError::Locked {
                    dir: root,
                    pid: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(StorageError::io(&lock_path, &e)),
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_data());
        written.map_err(|e| StorageError::io(&lock_path, &e))?;
        Ok(DataDir { root, _lock: file })
    }

    /// The data dir's root.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Every layout on disk, oldest generation first.
    pub fn layouts(&self) -> Result<Vec<Layout>, StorageError> {
        let entries = fs::read_dir(&self.root).map_err(|e| StorageError::io(&self.root, &e))?;
        let mut layouts = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io(&self.root, &e))?;
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("layout-")) else {
                continue;
            };
            let parsed = rest
                .split_once("-shards-")
                .and_then(|(g, n)| Some((g.parse().ok()?, n.parse().ok()?)));
            match parsed {
                Some((generation, nr_shards)) if nr_shards > 0 => layouts.push(Layout {
                    generation,
                    nr_shards,
                    path: entry.path(),
                }),
                _ => {
                    return Err(StorageError::Corrupt {
                        file: entry.path(),
                        offset: 0,
                        what: "not a layout folder name (layout-<generation>-shards-<n>)".into(),
                    });
                }
            }
        }
        layouts.sort_by_key(|layout| layout.generation);
        Ok(layouts)
    }

    /// The layout a run with `nr_shards` shards writes: the newest one if it has that shard
    /// count, else a new generation (created, with its shard folders, and made durable).
    pub fn layout_for(&self, nr_shards: usize) -> Result<Layout, StorageError> {
        assert!(nr_shards > 0, "a layout has at least one shard");
        let layouts = self.layouts()?;
        let layout = match layouts.last() {
            Some(newest) if newest.nr_shards == nr_shards => newest.clone(),
            newest => {
                let generation = newest.map_or(1, |l| l.generation + 1);
                let path = self.root.join(format!("layout-{generation}-shards-{nr_shards}"));
                Layout {
                    generation,
                    nr_shards,
                    path,
                }
            }
        };
        for shard_id in 0..nr_shards {
            let dir = layout.shard_dir(shard_id);
            fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, &e))?;
        }
        sync_dir(&layout.path)?;
        sync_dir(&self.root)?;
        Ok(layout)
    }

    /// Removes every layout older than `target`, once each of `target`'s shards has a
    /// snapshot (so nothing is read from the old files any more); returns how many it removed.
    /// Blocking: call it from a start-up thread or `glommio::executor().spawn_blocking`.
    pub fn remove_superseded(&self, target: &Layout) -> Result<usize, StorageError> {
        for shard_id in 0..target.nr_shards {
            let dir = target.shard_dir(shard_id);
            if list_shard_dir(&dir)?.snapshots.is_empty() {
                return Err(StorageError::Layout(format!(
                    "{} has no snapshot yet: the older layouts are still needed",
                    dir.display()
                )));
            }
        }
        let mut removed = 0;
        for layout in self.layouts()? {
            if layout.generation < target.generation {
                fs::remove_dir_all(&layout.path).map_err(|e| StorageError::io(&layout.path, &e))?;
                removed += 1;
            }
        }
        sync_dir(&self.root)?;
        Ok(removed)
    }
}

/// Settles glommio's per-executor, per-device probe for io_uring polled I/O (IOPOLL) on a file
/// that holds data. glommio probes with a read at offset 0 of the first `DmaFile` an executor
/// opens on a device; on an empty file (a fresh segment) that read succeeds without touching
/// the device, so glommio wrongly enables polling and every later read fails with EOPNOTSUPP
/// on devices without poll queues (virtio, most cloud disks). The lock file is never empty.
pub async fn settle_io_probe(root: &Path) -> Result<(), StorageError> {
    let lock_path = root.join(LOCK_FILE);
    let file = glommio::io::DmaFile::open(&lock_path).await;
    let file = file.map_err(|e| StorageError::io(&lock_path, &e.into()))?;
    let _ = file.close().await;
    Ok(())
}

/// The files in one shard folder, each list in increasing sequence.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ShardFiles {
    /// Sequence numbers of complete snapshots (`snap-<seq>.snap`).
    pub snapshots: Vec<u64>,
    /// Sequence numbers of log segments (`log-<seq>.wal`).
    pub segments: Vec<u64>,
    /// Unfinished snapshots (`*.tmp`) and unused spare segments (`*.spare`) left by a crash
    /// or a stop: never read, safe to delete.
    pub leftovers: Vec<PathBuf>,
}

/// Path of log segment `seq` in `dir`.
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("log-{seq:020}.wal"))
}

/// Path of log segment `seq` while it is a spare: created and zero-filled ahead of need, it
/// takes its segment name only when the log rotates into it, so a crash never leaves an
/// empty segment after the one being written.
pub fn spare_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("log-{seq:020}.spare"))
}

/// Path of the complete snapshot `seq` in `dir`.
pub fn snapshot_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snap-{seq:020}.snap"))
}

/// Path of snapshot `seq` while it is being written.
pub fn snapshot_tmp_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snap-{seq:020}.tmp"))
}

/// Lists a shard folder; a name it does not know is corruption (someone else's file).
pub fn list_shard_dir(dir: &Path) -> Result<ShardFiles, StorageError> {
    let mut files = ShardFiles::default();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(StorageError::io(dir, &e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, &e))?;
        let name = entry.file_name();
        let name = name.to_str().unwrap_or("");
        let seq_of = |prefix: &str, suffix: &str| name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse::<u64>().ok();
        if let Some(seq) = seq_of("log-", ".wal") {
            files.segments.push(seq);
        } else if let Some(seq) = seq_of("snap-", ".snap") {
            files.snapshots.push(seq);
        } else if seq_of("snap-", ".tmp").is_some() || seq_of("log-", ".spare").is_some() {
            files.leftovers.push(entry.path());
        } else {
            return Err(StorageError::Corrupt {
                file: entry.path(),
                offset: 0,
                what: "unknown file in a shard folder".into(),
            });
        }
    }
    files.snapshots.sort_unstable();
    files.segments.sort_unstable();
    Ok(files)
}

/// fsyncs a directory so the names created or removed in it survive a power loss.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_dir;

    #[test]
    fn a_second_lock_fails_naming_the_holder_pid_and_drop_releases_it() {
        let root = test_dir("lock");
        let held = DataDir::lock(&root).unwrap();
        let second = DataDir::lock(&root).unwrap_err();
        assert_eq!(
            second,
            StorageError::Locked {
                dir: root.clone(),
                pid: Some(std::process::id())
            }
        );
        assert!(second.to_string().contains(&std::process::id().to_string()));
        drop(held);
        DataDir::lock(&root).expect("the lock is free once its holder is dropped");
    }

    #[test]
    fn layouts_get_a_new_generation_only_when_the_shard_count_changes() {
        let root = test_dir("layouts");
        let dir = DataDir::lock(&root).unwrap();
        let two = dir.layout_for(2).unwrap();
        assert_eq!((two.generation, two.nr_shards), (1, 2));
        assert_eq!(dir.layout_for(2).unwrap(), two);
        let three = dir.layout_for(3).unwrap();
        assert_eq!((three.generation, three.nr_shards), (2, 3));
        assert!(three.shard_dir(2).is_dir());
        assert_eq!(dir.layouts().unwrap(), vec![two, three.clone()]);
        let refused = dir.remove_superseded(&three).unwrap_err();
        assert!(matches!(refused, StorageError::Layout(_)), "{refused}");
        for shard_id in 0..3 {
            File::create(snapshot_path(&three.shard_dir(shard_id), 1)).unwrap();
        }
        assert_eq!(dir.remove_superseded(&three).unwrap(), 1);
        assert_eq!(dir.layouts().unwrap(), vec![three]);
    }

    #[test]
    fn shard_folders_list_in_sequence_order_and_refuse_strangers() {
        let root = test_dir("list");
        for seq in [10, 2, 1] {
            File::create(segment_path(&root, seq)).unwrap();
        }
        File::create(snapshot_path(&root, 2)).unwrap();
        File::create(snapshot_tmp_path(&root, 10)).unwrap();
        File::create(spare_path(&root, 11)).unwrap();
        let files = list_shard_dir(&root).unwrap();
        assert_eq!(
            (files.segments, files.snapshots, files.leftovers.len()),
            (vec![1, 2, 10], vec![2], 2)
        );
        File::create(root.join("notes.txt")).unwrap();
        assert!(matches!(list_shard_dir(&root), Err(StorageError::Corrupt { .. })));
    }
}
