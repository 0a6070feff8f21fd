//! One shard's durability while it runs (`--data-dir`): recovering its keys into its store
//! before it reports ready, opening its log, writing snapshots while it serves, removing the
//! layout a shard-count change superseded, and closing the log at shutdown.
//!
//! Owns the glue between [`crate::storage`] and this shard's store. It never touches another
//! shard's store or folder, never holds a store borrow across an await, and never blocks the
//! executor on the file system (the old layout's removal runs on glommio's blocking pool).
//!
//! What is logged is each write's *resulting state* ([`ShardContext::apply_logged`]), so
//! replay is idempotent. TTL expiry and LRU evictions are not logged: recovery drops keys
//! whose deadline has passed, and after a restart the LRU holds the most recently *written*
//! keys that fit the budget (replay order), not the most recently read.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use log::{info, warn};

use super::context::ShardContext;
use super::message::{Outcome, Record};
use super::store::Store;
use super::{StoreHandle, shard_for};
use crate::limits::{STORAGE_SNAPSHOT_CHECK_MS, STORAGE_SNAPSHOT_CHUNK_KEYS, STORAGE_WRITE_BYTES_MAX};
use crate::storage::{self, DataDir, Layout, Replayed, ShardLog, StorageError};
use crate::warn_limited;

/// The locked data dir and the layout this run writes; shared by every shard.
pub struct Durability {
    pub dir: DataDir,
    pub layout: Layout,
    /// Older layouts remain (the shard count changed): removed once every shard snapshotted.
    superseded: AtomicBool,
}

impl Durability {
    /// Locks `dir` and picks the layout for `nr_shards` (start-up thread, before executors).
    pub fn open(dir: &std::path::Path, nr_shards: usize) -> Result<Durability, StorageError> {
        let dir = DataDir::lock(dir)?;
        let layout = dir.layout_for(nr_shards)?;
        let superseded = dir.layouts()?.len() > 1;
        if superseded {
            info!(
                "{}: the shard count changed; every shard reads the older layouts and writes a snapshot",
                dir.path().display()
            );
        }
        Ok(Durability {
            dir,
            layout,
            superseded: AtomicBool::new(superseded),
        })
    }
}

/// Replays this shard's keys into its store, then opens its log. Corruption fails with
/// `FILE:OFFSET: what is wrong`; a torn tail was cut off with a warning.
pub async fn recover_shard(shard: &ShardContext, durability: &Durability) -> Result<(), String> {
    let StoreHandle::Owned(store) = &shard.store else {
        return Err("--data-dir is not supported with --design locked".into());
    };
    let (id, nr_shards) = (shard.id, shard.nr_shards);
    let mut progress = (id == 0).then(|| crate::load::Progress::new(dir_bytes(durability.dir.path())));
    let full: Cell<Option<&'static str>> = Cell::new(None);
    // Records applied and their approximate bytes, for the progress line.
    let seen = Cell::new((0u64, 0u64));
    let sink = |replayed: Replayed<'_>| {
        let bytes = replay(&mut store.borrow_mut(), replayed, &full);
        let (records, total) = seen.get();
        seen.set((records + 1, total + bytes));
    };
    let keep = |key: &[u8]| shard_for(key, nr_shards) == id;
    let recovering = storage::recover(&durability.dir, &durability.layout, id, keep, sink);
    let report = async {
        // Redraws the progress line while recovery runs (recovery yields on every read).
        let Some(progress) = progress.as_mut() else {
            return std::future::pending::<()>().await;
        };
        loop {
            glommio::timer::sleep(Duration::from_millis(200)).await;
            let (records, bytes) = seen.get();
            progress.update(bytes, records, false);
        }
    };
    let recovered = futures_lite::future::or(async { Some(recovering.await) }, async {
        report.await;
        None
    })
    .await
    .expect("the progress report never ends first");
    let recovered = recovered.map_err(|e| e.to_string())?;
    if let Some(flag) = full.get() {
        return Err(format!(
            "recovering {}: the store is full ({flag}); raise the limit or use --eviction lru",
            durability.layout.shard_dir(id).display()
        ));
    }
    if let Some(progress) = progress.filter(|_| seen.get().0 > 0) {
        let (records, bytes) = seen.get();
        progress.finish(&durability.dir.path().display().to_string(), bytes, records);
    }
    info!(
        "shard {id}: recovered {} records ({} kept, {} files) in {} ms",
        recovered.records,
        recovered.records_applied,
        recovered.files,
        recovered.elapsed_us / 1000
    );
    let log = ShardLog::open(shard.args.storage_config(), &durability.layout, id, &recovered)
        .await
        .map_err(|e| e.to_string())?;
    *shard.log.borrow_mut() = Some(Rc::new(log));
    *shard.recovered.borrow_mut() = recovered;
    Ok(())
}

/// Applies one replayed record to the store, deadlines converted to its monotonic clock (one
/// already past removes the key). Returns the record's approximate size for progress.
fn replay(store: &mut Store, replayed: Replayed<'_>, full: &Cell<Option<&'static str>>) -> u64 {
    // Version 0: a record written before versions were kept; the store gives it a fresh one.
    let set = |store: &mut Store, key: &[u8], value: &[u8], deadline: Option<u64>, version: u64| {
        let record = Record::new(key, value);
        let deadline = deadline.map(storage::unix_to_mono_ms);
        let outcome = match version {
            0 => store.set_with_deadline(record, deadline),
            version => store.set_with_version(record, deadline, version),
        };
        if let Outcome::Rejected(limit) = outcome {
            full.set(Some(match limit {
                super::message::Limit::Keys(_) => "--max-keys",
                super::message::Limit::Memory(_) => "--max-memory",
            }));
        }
    };
    match replayed {
        Replayed::Set {
            key,
            value,
            expires_at_unix_ms,
            version,
        } => {
            set(store, key, value, expires_at_unix_ms, version);
            (key.len() + value.len() + 32) as u64
        }
        Replayed::Delete { key } => {
            store.delete(key);
            (key.len() + 16) as u64
        }
        Replayed::ExpireAt {
            key,
            expires_at_unix_ms,
        } => {
            let current = store.peek(key).map(|(value, _, version)| (value.to_vec(), version));
            if let Some((value, version)) = current {
                set(store, key, &value, expires_at_unix_ms, version);
            }
            (key.len() + 24) as u64
        }
    }
}

/// Bytes of every file under `dir` (for the progress line's total); blocking, start-up only.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Every `STORAGE_SNAPSHOT_CHECK_MS`, writes a snapshot when the log asks for one; on shard 0,
/// also removes the superseded layout once every shard has snapshotted. Ends at shutdown.
pub async fn snapshot_forever(shard: Rc<ShardContext>, durability: Arc<Durability>) {
    while !shard.latches.shutdown.is_open() {
        glommio::timer::sleep(Duration::from_millis(STORAGE_SNAPSHOT_CHECK_MS)).await;
        let Some(log) = shard.log() else {
            return;
        };
        let StoreHandle::Owned(store) = &shard.store else {
            return;
        };
        let live_bytes = store.borrow().memory_bytes() as u64;
        if log.should_snapshot(live_bytes) {
            match write_snapshot(store, &log).await {
                Ok(keys) => info!("shard {}: snapshot written ({keys} keys)", shard.id),
                // Rate-limited: a full disk or a failed log fails every check until it is fixed.
                Err(e) => warn_limited!("shard {}: snapshot failed (retried later): {e}", shard.id),
            }
        }
        drop(log);
        if shard.id == 0 && durability.superseded.load(Ordering::Relaxed) {
            remove_superseded(&durability).await;
        }
    }
}

/// Writes a snapshot now (after `--load`, before the shard reports ready).
pub async fn snapshot_now(shard: &ShardContext) -> Result<(), String> {
    let (Some(log), StoreHandle::Owned(store)) = (shard.log(), &shard.store) else {
        return Ok(());
    };
    let keys = write_snapshot(store, &log)
        .await
        .map_err(|e| format!("snapshot after --load: {e}"))?;
    info!("shard {}: snapshot of the loaded keys written ({keys} keys)", shard.id);
    Ok(())
}

/// Writes one fuzzy snapshot of the store in chunks of `STORAGE_SNAPSHOT_CHUNK_KEYS`, yielding
/// between chunks so requests go on (the log since its start makes it exact). Returns the keys.
async fn write_snapshot(store: &RefCell<Store>, log: &ShardLog) -> Result<u64, StorageError> {
    let mut writer = log.begin_snapshot().await?;
    let mut cursor = Some(0);
    let mut keys = 0u64;
    while let Some(at) = cursor {
        // One reading of both clocks per chunk converts every deadline to unix time.
        let (mono, unix) = (crate::clock::now_ms(), storage::now_unix_ms());
        cursor = store
            .borrow()
            .scan_from(at, STORAGE_SNAPSHOT_CHUNK_KEYS, |key, value, deadline, version| {
                writer.add_versioned(key, value, deadline.map(|d| (unix + d).saturating_sub(mono)), version);
                keys += 1;
            });
        if writer.buffered_bytes() >= STORAGE_WRITE_BYTES_MAX {
            writer.flush().await?;
        }
        glommio::yield_if_needed().await;
    }
    writer.finish().await?;
    Ok(keys)
}

/// Removes the layouts older than this run's once every shard of it has a snapshot (off the
/// executor: blocking file-system calls).
async fn remove_superseded(durability: &Arc<Durability>) {
    let shared = Arc::clone(durability);
    let removed = glommio::executor()
        .spawn_blocking(move || shared.dir.remove_superseded(&shared.layout))
        .await;
    match removed {
        Ok(count) => {
            durability.superseded.store(false, Ordering::Relaxed);
            info!(
                "removed {count} superseded layouts from {}",
                durability.dir.path().display()
            );
        }
        // Not every shard has its first snapshot yet: try again on the next check.
        Err(StorageError::Layout(_)) => {}
        Err(e) => warn_limited!("removing superseded layouts: {e}"),
    }
}

/// Closes this shard's log at shutdown, after its connections and peers are done: everything
/// appended is written and synced.
pub async fn close(shard: &ShardContext) {
    let Some(mut log) = shard.log.borrow_mut().take() else {
        return;
    };
    // A peer's reply task may still hold the log for a moment (until its durable resolves).
    let deadline = std::time::Instant::now() + Duration::from_millis(shard.args.shutdown_grace_ms);
    let log = loop {
        match Rc::try_unwrap(log) {
            Ok(log) => break log,
            Err(shared) if std::time::Instant::now() < deadline => {
                log = shared;
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            // Dropping the last handle later still writes and syncs what was appended.
            Err(_) => return warn!("shard {}: the log is still in use at exit", shard.id),
        }
    };
    if let Err(e) = log.close().await {
        warn!("shard {}: closing the log: {e}", shard.id);
    }
}
