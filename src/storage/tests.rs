//! Module tests for storage: real glommio executors, real files under target/storage-tests,
//! every recovered state compared with a plain model of what was acknowledged.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::*;
use crate::shard::shard_for;

/// Key → (value, deadline in unix ms): what recovery must reproduce.
type Model = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

/// A deterministic xorshift generator, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Applies a write the way a store does: a deadline already past removes the key.
fn apply(model: &mut Model, replayed: Replayed<'_>) {
    let past = |deadline: Option<u64>| deadline.is_some_and(|d| d <= now_unix_ms());
    match replayed {
        Replayed::Set {
            key,
            expires_at_unix_ms,
            ..
        }
        | Replayed::ExpireAt {
            key,
            expires_at_unix_ms,
        } if past(expires_at_unix_ms) => {
            model.remove(key);
        }
        Replayed::Set {
            key,
            value,
            expires_at_unix_ms,
            ..
        } => {
            model.insert(key.to_vec(), (value.to_vec(), expires_at_unix_ms));
        }
        Replayed::Delete { key } => {
            model.remove(key);
        }
        Replayed::ExpireAt {
            key,
            expires_at_unix_ms,
        } => {
            if let Some(entry) = model.get_mut(key) {
                entry.1 = expires_at_unix_ms;
            }
        }
    }
}

/// One random write: a set (sometimes with a deadline, sometimes one already past), a delete
/// or an expire-at; logged, applied to `model`, and its Lsn returned.
async fn random_write(log: &ShardLog, model: &RefCell<Model>, rng: &mut Rng, keys: u64) -> Lsn {
    let key = format!("key-{}", rng.below(keys)).into_bytes();
    let now = now_unix_ms();
    let deadline = match rng.below(6) {
        0 => Some(now + 3_600_000),
        1 => Some(now.saturating_sub(1_000)), // already expired: must not come back
        _ => None,
    };
    let choice = rng.below(10);
    let (bytes, op): (usize, u8) = match choice {
        0..=6 => (record::set_bytes(key.len(), 64), 0),
        7 | 8 => (record::delete_bytes(key.len()), 1),
        _ => (record::expire_at_bytes(key.len()), 2),
    };
    log.reserve(bytes).await.expect("room in the log");
    let model = &mut *model.borrow_mut(); // after the await: the store is never borrowed across one
    match op {
        0 => {
            let value = vec![b'a' + rng.below(26) as u8; 64];
            let lsn = log.append_set(&key, &value, deadline).unwrap();
            apply(
                model,
                Replayed::Set {
                    key: &key,
                    value: &value,
                    expires_at_unix_ms: deadline,
                    version: 0,
                },
            );
            lsn
        }
        1 => {
            let lsn = log.append_delete(&key).unwrap();
            model.remove(&key);
            lsn
        }
        _ => {
            let lsn = log.append_expire_at(&key, deadline).unwrap();
            apply(
                model,
                Replayed::ExpireAt {
                    key: &key,
                    expires_at_unix_ms: deadline,
                },
            );
            lsn
        }
    }
}

/// The model as recovery should see it: keys whose deadline passed are gone.
fn live(model: &Model) -> Model {
    let now = now_unix_ms();
    model
        .iter()
        .filter(|(_, (_, d))| d.is_none_or(|d| d > now))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

async fn recover_model(
    dir: &DataDir,
    layout: &Layout,
    shard_id: usize,
) -> Result<(Model, RecoveryStats), StorageError> {
    let mut model = Model::new();
    let n = layout.nr_shards;
    let stats = recover(
        dir,
        layout,
        shard_id,
        |k| shard_for(k, n) == shard_id,
        |r| apply(&mut model, r),
    )
    .await?;
    Ok((model, stats))
}

fn small_config(fsync: FsyncPolicy) -> Config {
    Config {
        segment_bytes: 64 << 10,
        ..Config::new(fsync)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "LOCK" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn every_policy_recovers_exactly_what_was_acknowledged_across_segments() {
    for fsync in [FsyncPolicy::Always, FsyncPolicy::EverySec, FsyncPolicy::Never] {
        let root = test_dir(&format!("round-trip-{fsync:?}"));
        run_on_executor(move || async move {
            let dir = DataDir::lock(&root).unwrap();
            let layout = dir.layout_for(1).unwrap();
            let model = RefCell::new(Model::new());
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            for round in 0..3 {
                let (recovered, stats) = recover_model(&dir, &layout, 0).await.unwrap();
                assert_eq!(recovered, live(&model.borrow()), "{fsync:?} round {round}");
                assert!(stats.torn_tails.is_empty());
                let log = ShardLog::open(small_config(fsync), &layout, 0, &stats).await.unwrap();
                let mut last = Lsn(0);
                for _ in 0..3_000 {
                    last = random_write(&log, &model, &mut rng, 500).await;
                }
                log.durable(last).await.unwrap();
                // What a kill -9 right now leaves: recovery sees every acknowledged write.
                let (now_on_disk, _) = recover_model(&dir, &layout, 0).await.unwrap();
                assert_eq!(
                    now_on_disk,
                    live(&model.borrow()),
                    "{fsync:?} before close, round {round}"
                );
                let stats = log.stats();
                assert!(stats.segments > 3, "small segments rotate: {stats:?}");
                if fsync == FsyncPolicy::Always {
                    assert!(stats.fsyncs > 0);
                }
                log.close().await.unwrap();
            }
        });
    }
}

#[test]
fn concurrent_writers_under_always_share_fdatasyncs() {
    let root = test_dir("group-commit");
    run_on_executor(move || async move {
        let dir = DataDir::lock(&root).unwrap();
        let layout = dir.layout_for(1).unwrap();
        let stats = recover_model(&dir, &layout, 0).await.unwrap().1;
        let log = Rc::new(
            ShardLog::open(Config::new(FsyncPolicy::Always), &layout, 0, &stats)
                .await
                .unwrap(),
        );
        let writers = 400;
        let tasks: Vec<_> = (0..writers)
            .map(|i| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let key = format!("key-{i}");
                    log.reserve(record::set_bytes(key.len(), 8)).await.unwrap();
                    let lsn = log.append_set(key.as_bytes(), b"12345678", None).unwrap();
                    log.durable(lsn).await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let stats = log.stats();
        assert!(
            stats.fsyncs * 10 < writers,
            "{writers} writers took {} fdatasyncs",
            stats.fsyncs
        );
        let (recovered, _) = recover_model(&dir, &layout, 0).await.unwrap();
        assert_eq!(recovered.len(), writers as usize);
    });
}

/// Writes `count` sets of key-i into one segment and closes; returns the folder, the segment
/// and each record's end offset in it.
async fn write_one_segment(dir: &DataDir, count: usize) -> (Layout, PathBuf, Vec<u64>) {
    let layout = dir.layout_for(1).unwrap();
    let stats = recover_model(dir, &layout, 0).await.unwrap().1;
    let log = ShardLog::open(small_config(FsyncPolicy::Never), &layout, 0, &stats)
        .await
        .unwrap();
    let mut ends = Vec::new();
    for i in 0..count {
        let key = format!("key-{i}");
        let value = vec![b'v'; 10 + i % 50];
        log.reserve(record::set_bytes(key.len(), value.len())).await.unwrap();
        ends.push(log.append_set(key.as_bytes(), &value, None).unwrap().0);
    }
    log.close().await.unwrap();
    let segment = dir::segment_path(&layout.shard_dir(0), 1);
    (layout, segment, ends)
}

#[test]
fn a_torn_tail_is_cut_at_its_first_bad_byte_and_never_replayed() {
    let root = test_dir("torn-source");
    let base = root.clone();
    run_on_executor(move || async move {
        let dir = DataDir::lock(&root).unwrap();
        let (_, segment, ends) = write_one_segment(&dir, 40).await;
        drop(dir);
        let original = std::fs::read(&segment).unwrap();
        let first = ends[ends.len() - 4] - 3; // inside the fourth-last record .. past the end
        for (case, cut) in (first..*ends.last().unwrap() + 2).enumerate() {
            let copy = base.with_file_name(format!("torn-copy-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&copy);
            copy_dir(&base, &copy);
            let copy_segment = copy.join(segment.strip_prefix(&base).unwrap());
            let mut bytes = original.clone();
            if case % 2 == 0 {
                bytes.truncate(cut as usize); // a short file
            } else {
                bytes[cut as usize..].fill(0); // never-written preallocated blocks
            }
            std::fs::write(&copy_segment, &bytes).unwrap();
            let dir = DataDir::lock(&copy).unwrap();
            let layout = dir.layouts().unwrap().pop().unwrap();
            let (model, stats) = recover_model(&dir, &layout, 0).await.unwrap();
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            assert_eq!(model.len(), whole, "cut at {cut}");
            let boundary = ends.get(whole.wrapping_sub(1)).copied().unwrap_or(0);
            if boundary == cut || cut > *ends.last().unwrap() {
                assert!(stats.torn_tails.is_empty(), "cut at {cut} is a clean end: {stats:?}");
            } else {
                assert_eq!(
                    stats.torn_tails,
                    vec![TornTail {
                        file: copy_segment.clone(),
                        offset: boundary
                    }]
                );
            }
            let (again, stats) = recover_model(&dir, &layout, 0).await.unwrap();
            assert_eq!((again, stats.torn_tails), (model, vec![]), "the cut is made on disk");
        }
    });
}

#[test]
fn a_flipped_bit_is_corruption_in_the_middle_and_a_torn_tail_at_the_end() {
    let root = test_dir("flip");
    run_on_executor(move || async move {
        let dir = DataDir::lock(&root).unwrap();
        let (layout, segment, ends) = write_one_segment(&dir, 200).await;
        let original = std::fs::read(&segment).unwrap();
        for record_index in [0, 57, 150, 197] {
            let mut bytes = original.clone();
            let start = ends[record_index]; // the flipped record's first byte
            let flip_at = (ends[record_index] + ends[record_index + 1]) / 2;
            bytes[flip_at as usize] ^= 0x10;
            std::fs::write(&segment, &bytes).unwrap();
            let error = recover_model(&dir, &layout, 0).await.unwrap_err();
            let StorageError::Corrupt { file, offset, .. } = &error else {
                panic!("{error}")
            };
            assert_eq!((file, *offset), (&segment, start), "{error}");
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("{}:{start}: ", segment.display()))
            );
        }
        let mut bytes = original.clone();
        let last_start = ends[ends.len() - 2];
        bytes[last_start as usize + 20] ^= 0x01;
        std::fs::write(&segment, &bytes).unwrap();
        let (model, stats) = recover_model(&dir, &layout, 0).await.unwrap();
        assert_eq!(model.len(), ends.len() - 1);
        assert_eq!(
            stats.torn_tails,
            vec![TornTail {
                file: segment.clone(),
                offset: last_start
            }]
        );
    });
}

#[test]
fn a_snapshot_taken_in_chunks_while_writes_race_recovers_exactly() {
    let root = test_dir("fuzzy-snapshot");
    run_on_executor(move || async move {
        let dir = DataDir::lock(&root).unwrap();
        let layout = dir.layout_for(1).unwrap();
        let stats = recover_model(&dir, &layout, 0).await.unwrap().1;
        let log = Rc::new(
            ShardLog::open(small_config(FsyncPolicy::EverySec), &layout, 0, &stats)
                .await
                .unwrap(),
        );
        let model = Rc::new(RefCell::new(Model::new()));
        let mut rng = Rng(7);
        for _ in 0..4_000 {
            random_write(&log, &model, &mut rng, 1_000).await;
        }
        let segments_before = log.stats().segments;
        assert!(!log.should_snapshot(0), "below the floor");
        let racing = {
            let (log, model) = (log.clone(), model.clone());
            glommio::spawn_local(async move {
                let mut rng = Rng(11);
                let mut last = Lsn(0);
                for _ in 0..4_000 {
                    last = random_write(&log, &model, &mut rng, 1_000).await;
                    glommio::yield_if_needed().await;
                }
                last
            })
        };
        let mut snapshot = log.begin_snapshot().await.unwrap();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let chunk: Vec<_> = {
                let model = model.borrow();
                let from = cursor
                    .clone()
                    .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
                model
                    .range((from, std::ops::Bound::Unbounded))
                    .take(50)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            let Some((last_key, _)) = chunk.last() else { break };
            cursor = Some(last_key.clone());
            for (key, (value, deadline)) in &chunk {
                snapshot.add(key, value, *deadline);
            }
            snapshot.flush().await.unwrap();
            glommio::yield_if_needed().await;
        }
        let seq = snapshot.seq();
        snapshot.finish().await.unwrap();
        let last = racing.await;
        log.durable(last).await.unwrap();
        let files = dir::list_shard_dir(&layout.shard_dir(0)).unwrap();
        assert_eq!(files.snapshots, vec![seq]);
        assert!(
            files.segments.iter().all(|&s| s >= seq),
            "superseded segments deleted: {files:?}"
        );
        assert!(log.stats().segments < segments_before + files.segments.len() as u64);
        assert_eq!(log.stats().snapshots, 1);
        let (recovered, _) = recover_model(&dir, &layout, 0).await.unwrap();
        assert_eq!(recovered, live(&model.borrow()));
    });
}

/// Writes `model` as `nr_shards` shards' logs, each key to its owner; closes them.
async fn write_sharded(dir: &DataDir, nr_shards: usize, rounds: usize, model: &mut Model) -> Layout {
    let layout = dir.layout_for(nr_shards).unwrap();
    let mut logs = Vec::new();
    for shard_id in 0..nr_shards {
        let stats = recover_model(dir, &layout, shard_id).await.unwrap().1;
        logs.push(
            ShardLog::open(small_config(FsyncPolicy::Never), &layout, shard_id, &stats)
                .await
                .unwrap(),
        );
    }
    let mut rng = Rng(99 + rounds as u64);
    for _ in 0..rounds {
        let key = format!("k{}", rng.below(300)).into_bytes();
        let log = &logs[shard_for(&key, nr_shards)];
        if rng.below(4) == 0 {
            log.reserve(record::delete_bytes(key.len())).await.unwrap();
            log.append_delete(&key).unwrap();
            model.remove(&key);
        } else {
            let value = rng.next().to_le_bytes().to_vec();
            log.reserve(record::set_bytes(key.len(), 8)).await.unwrap();
            log.append_set(&key, &value, None).unwrap();
            model.insert(key, (value, None));
        }
    }
    for log in logs {
        log.close().await.unwrap();
    }
    layout
}

/// Recovers every shard of a `nr_shards` layout; asserts each key lands in exactly one shard,
/// its owner, and returns the union.
async fn recover_all(dir: &DataDir, nr_shards: usize) -> (Layout, Vec<Model>, Model) {
    let layout = dir.layout_for(nr_shards).unwrap();
    let mut shards = Vec::new();
    let mut union = Model::new();
    for shard_id in 0..nr_shards {
        let (model, _) = recover_model(dir, &layout, shard_id).await.unwrap();
        for (key, value) in &model {
            assert_eq!(shard_for(key, nr_shards), shard_id);
            assert!(
                union.insert(key.clone(), value.clone()).is_none(),
                "a key in two shards"
            );
        }
        shards.push(model);
    }
    (layout, shards, union)
}

#[test]
fn a_shard_count_change_gives_every_key_to_exactly_one_new_shard() {
    for new_count in [3, 1] {
        let root = test_dir(&format!("reshard-{new_count}"));
        run_on_executor(move || async move {
            let dir = DataDir::lock(&root).unwrap();
            let mut model = Model::new();
            write_sharded(&dir, 2, 3_000, &mut model).await;
            let (layout, shards, union) = recover_all(&dir, new_count).await;
            assert_eq!(union, model);
            // Shard 0 deletes a key the old layout still holds, then snapshots (dropping the
            // segment with the delete); a crash before the other shards snapshot must not bring
            // the key back: its snapshot is the whole truth for shard 0's keys.
            let stats = recover_model(&dir, &layout, 0).await.unwrap().1;
            assert!(stats.read_older_layouts);
            let log = ShardLog::open(small_config(FsyncPolicy::Always), &layout, 0, &stats)
                .await
                .unwrap();
            assert!(log.should_snapshot(u64::MAX / 4), "a migrated shard snapshots at once");
            let victim = shards[0].keys().next().unwrap().clone();
            log.reserve(record::delete_bytes(victim.len())).await.unwrap();
            let lsn = log.append_delete(&victim).unwrap();
            log.durable(lsn).await.unwrap();
            model.remove(&victim);
            let mut snapshot = log.begin_snapshot().await.unwrap();
            for (key, (value, deadline)) in shards[0].iter().filter(|(k, _)| **k != victim) {
                snapshot.add(key, value, *deadline);
            }
            snapshot.finish().await.unwrap();
            assert!(!log.should_snapshot(0));
            log.close().await.unwrap();
            if new_count == 3 {
                // Crash mid-migration, restart with 1 shard: three layouts on disk, and the
                // middle one's snapshot hides the oldest one's copy of its keys.
                let chained = root.with_file_name(format!("reshard-chain-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&chained);
                copy_dir(&root, &chained);
                let chained = DataDir::lock(&chained).unwrap();
                let (_, _, union) = recover_all(&chained, 1).await;
                assert_eq!(union, model, "2 -> 3 (partial) -> 1 shards");
                assert_eq!(chained.layouts().unwrap().len(), 3);
            }
            let removed = dir.remove_superseded(&layout);
            if new_count > 1 {
                assert!(removed.is_err(), "shards 1.. have no snapshot yet: {removed:?}");
            } else {
                assert_eq!(removed.unwrap(), 1);
            }
            let (_, _, union) = recover_all(&dir, new_count).await;
            assert_eq!(union, model, "after shard 0's snapshot and a delete");
            for shard_id in 1..new_count {
                let stats = recover_model(&dir, &layout, shard_id).await.unwrap().1;
                let log = ShardLog::open(small_config(FsyncPolicy::Never), &layout, shard_id, &stats)
                    .await
                    .unwrap();
                let mut snapshot = log.begin_snapshot().await.unwrap();
                let (shard_model, _) = recover_model(&dir, &layout, shard_id).await.unwrap();
                for (key, (value, deadline)) in &shard_model {
                    snapshot.add(key, value, *deadline);
                }
                snapshot.finish().await.unwrap();
                log.close().await.unwrap();
            }
            if new_count > 1 {
                assert_eq!(dir.remove_superseded(&layout).unwrap(), 1);
            }
            assert_eq!(dir.layouts().unwrap(), vec![layout.clone()]);
            let (_, _, union) = recover_all(&dir, new_count).await;
            assert_eq!(union, model, "after the old layout is gone");
        });
    }
}

#[test]
fn damaged_snapshots_and_missing_segments_stop_recovery() {
    let root = test_dir("bad-snapshot");
    run_on_executor(move || async move {
        let dir = DataDir::lock(&root).unwrap();
        let mut model = Model::new();
        let layout = write_sharded(&dir, 1, 500, &mut model).await;
        let stats = recover_model(&dir, &layout, 0).await.unwrap().1;
        let log = ShardLog::open(small_config(FsyncPolicy::Never), &layout, 0, &stats)
            .await
            .unwrap();
        let mut snapshot = log.begin_snapshot().await.unwrap();
        for (key, (value, deadline)) in &model {
            snapshot.add(key, value, *deadline);
        }
        let seq = snapshot.seq();
        snapshot.finish().await.unwrap();
        for i in 0..6_000u32 {
            let key = format!("late-{i}");
            log.reserve(record::set_bytes(key.len(), 4)).await.unwrap();
            log.append_set(key.as_bytes(), &i.to_le_bytes(), None).unwrap();
            model.insert(key.into_bytes(), (i.to_le_bytes().to_vec(), None));
        }
        log.close().await.unwrap();
        assert_eq!(recover_model(&dir, &layout, 0).await.unwrap().0, model);
        let shard_dir = layout.shard_dir(0);
        let snap = dir::snapshot_path(&shard_dir, seq);
        let good = std::fs::read(&snap).unwrap();
        let mut cut = good.clone();
        let end = good.iter().rposition(|&b| b != 0).unwrap();
        cut.truncate(end - 10);
        std::fs::write(&snap, &cut).unwrap();
        let error = recover_model(&dir, &layout, 0).await.unwrap_err();
        assert!(
            matches!(&error, StorageError::Corrupt { file, .. } if *file == snap),
            "{error}"
        );
        std::fs::write(&snap, &good).unwrap();
        let files = dir::list_shard_dir(&shard_dir).unwrap();
        assert!(files.segments.len() >= 3, "{files:?}");
        let middle = dir::segment_path(&shard_dir, files.segments[1]);
        std::fs::remove_file(&middle).unwrap();
        let error = recover_model(&dir, &layout, 0).await.unwrap_err();
        assert!(
            matches!(&error, StorageError::Corrupt { file, .. } if *file == middle),
            "{error}"
        );
    });
}

#[test]
fn a_full_disk_refuses_writes_before_applying_them_and_recovers_when_space_returns() {
    let root = test_dir("full-disk");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&root)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!("SKIPPED: cannot mount a 4 MiB tmpfs (needs root)");
        return;
    }
    let filler = root.join("filler");
    std::fs::write(&filler, vec![1u8; 2 << 20]).unwrap();
    let data = root.join("data");
    let outcome = std::panic::catch_unwind(|| {
        run_on_executor(move || async move {
            let dir = DataDir::lock(&data).unwrap();
            let layout = dir.layout_for(1).unwrap();
            let stats = recover_model(&dir, &layout, 0).await.unwrap().1;
            let config = Config {
                segment_bytes: 256 << 10,
                ..Config::new(FsyncPolicy::Always)
            };
            let log = ShardLog::open(config, &layout, 0, &stats).await.unwrap();
            let mut model = Model::new();
            let value = vec![7u8; 1000];
            let mut refused = 0;
            for i in 0..20_000u32 {
                let key = format!("key-{i}");
                match log.reserve(record::set_bytes(key.len(), value.len())).await {
                    Ok(()) => {
                        let lsn = log.append_set(key.as_bytes(), &value, None).unwrap();
                        model.insert(key.into_bytes(), (value.clone(), None));
                        log.durable(lsn).await.unwrap();
                    }
                    Err(StorageError::NoSpace { .. }) => {
                        refused += 1;
                        if refused == 3 {
                            std::fs::remove_file(&filler).unwrap(); // space returns
                        }
                        if refused > 3 && model.len() > 2_500 {
                            break;
                        }
                    }
                    Err(other) => panic!("{other}"),
                }
            }
            assert!(refused >= 3, "the disk never filled");
            let acknowledged = model.len();
            assert!(
                acknowledged > 2_500,
                "writes resumed after space returned: {acknowledged}"
            );
            drop(log);
            let (recovered, _) = recover_model(&dir, &layout, 0).await.unwrap();
            assert_eq!(recovered, model);
        })
    });
    let unmount = |lazy: bool| {
        let mut command = std::process::Command::new("umount");
        command.args(lazy.then_some("-l")).arg(&root);
        command.status().is_ok_and(|s| s.success())
    };
    assert!(unmount(false) || unmount(true), "umount {}", root.display());
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn recovery_throughput_is_printed() {
    // Goal: report records/s replayed from the page cache (a figure, not an assertion).
    let root = test_dir("throughput");
    run_on_executor(move || async move {
        let dir = DataDir::lock(&root).unwrap();
        let layout = dir.layout_for(1).unwrap();
        let stats = recover_model(&dir, &layout, 0).await.unwrap().1;
        let log = ShardLog::open(Config::new(FsyncPolicy::Never), &layout, 0, &stats)
            .await
            .unwrap();
        let count = 300_000u32;
        for i in 0..count {
            let key = format!("key-{i:08}");
            log.reserve(record::set_bytes(key.len(), 16)).await.unwrap();
            log.append_set(key.as_bytes(), &[b'v'; 16], None).unwrap();
        }
        log.close().await.unwrap();
        let mut seen = 0u64;
        let stats = recover(&dir, &layout, 0, |_| true, |_| seen += 1).await.unwrap();
        assert_eq!(seen, u64::from(count));
        let per_second = stats.records as f64 / (stats.elapsed_us.max(1) as f64 / 1e6);
        println!(
            "recovery: {} records, {} bytes in {} us: {per_second:.0} records/s",
            stats.records, stats.bytes, stats.elapsed_us
        );
    });
}

#[test]
fn errors_name_their_cause_and_map_to_507_or_503() {
    let corrupt = StorageError::Corrupt {
        file: "/d/log-1.wal".into(),
        offset: 4096,
        what: "record fails its CRC32C".into(),
    };
    assert_eq!(corrupt.to_string(), "/d/log-1.wal:4096: record fails its CRC32C");
    let full = StorageError::io(Path::new("/d/x"), &std::io::Error::from_raw_os_error(libc::ENOSPC));
    assert_eq!(
        (full.status(), full.clone()),
        (507, StorageError::NoSpace { file: "/d/x".into() })
    );
    let eio = StorageError::io(Path::new("/d/x"), &std::io::Error::from_raw_os_error(libc::EIO));
    assert_eq!(eio.status(), 503);
    assert_eq!(StorageError::LogBusy.status(), 503);
}

#[test]
fn deadlines_convert_between_the_monotonic_and_the_wall_clock() {
    let mono_in_a_minute = crate::clock::now_ms() + 60_000;
    let unix = mono_to_unix_ms(mono_in_a_minute);
    assert!(unix.abs_diff(now_unix_ms() + 60_000) <= 5, "{unix}");
    assert!(unix_to_mono_ms(unix).abs_diff(mono_in_a_minute) <= 5);
    assert_eq!(unix_to_mono_ms(1), 1, "a deadline long past is already expired");
}

#[test]
fn an_append_without_reserve_is_refused_not_lost() {
    let root = test_dir("busy");
    run_on_executor(move || async move {
        let dir = DataDir::lock(&root).unwrap();
        let layout = dir.layout_for(1).unwrap();
        let stats = recover_model(&dir, &layout, 0).await.unwrap().1;
        // `always`: its appends wait in the buffer for the writer (a mapped segment's appends
        // copy themselves in, so the buffer bound never binds there).
        let config = Config {
            buffer_bytes_max: 1024,
            ..small_config(FsyncPolicy::Always)
        };
        let log = ShardLog::open(config, &layout, 0, &stats).await.unwrap();
        assert_eq!(log.append_delete(b"k"), Err(StorageError::LogBusy), "no segment yet");
        log.reserve(record::set_bytes(1, 600)).await.unwrap();
        let lsn = log.append_set(b"k", &[1; 600], None).unwrap();
        assert_eq!(
            log.append_set(b"j", &[1; 600], None),
            Err(StorageError::LogBusy),
            "buffer bound"
        );
        log.reserve(record::set_bytes(1, 600)).await.unwrap();
        let second = log.append_set(b"j", &[2; 600], None).unwrap();
        assert!(second > lsn);
        // One reservation for a batch larger than the buffer bound admits the whole batch.
        log.reserve(2 * record::set_bytes(1, 600)).await.unwrap();
        log.append_set(b"a", &[3; 600], None).unwrap();
        let fourth = log.append_set(b"b", &[4; 600], None).unwrap();
        assert_eq!(
            log.append_delete(b"c"),
            Err(StorageError::LogBusy),
            "past the reservation"
        );
        log.durable(fourth).await.unwrap();
        log.close().await.unwrap();
        assert_eq!(recover_model(&dir, &layout, 0).await.unwrap().0.len(), 4);
    });
}

/// The spare segments (`*.spare`) in a shard folder, with their sizes.
fn spares(folder: &Path) -> Vec<(PathBuf, u64)> {
    let mut found: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "spare"))
        .map(|path| {
            let size = std::fs::metadata(&path).unwrap().len();
            (path, size)
        })
        .collect();
    found.sort();
    found
}

// Goal: the next segment is made ahead of need as a zero-filled `*.spare` (never read by
// recovery), rotation renames it into place without a gap in the sequence, and a spare left
// behind by a stop is deleted at the next open.
#[test]
fn the_next_segment_is_zero_filled_ahead_and_renamed_at_rotation() {
    let root = test_dir("spare");
    run_on_executor(move || async move {
        let dir = DataDir::lock(&root).unwrap();
        let layout = dir.layout_for(1).unwrap();
        let folder = layout.shard_dir(0);
        let stats = recover_model(&dir, &layout, 0).await.unwrap().1;
        let config = small_config(FsyncPolicy::Always);
        let capacity = config.segment_bytes;
        let log = ShardLog::open(config.clone(), &layout, 0, &stats).await.unwrap();
        let mut model = Model::new();
        let mut write = async |i: u32| {
            let key = format!("key-{i:04}");
            log.reserve(record::set_bytes(key.len(), 100)).await.unwrap();
            let lsn = log.append_set(key.as_bytes(), &[i as u8; 100], None).unwrap();
            log.durable(lsn).await.unwrap();
            model.insert(key.into_bytes(), (vec![i as u8; 100], None));
        };
        // Past half of the first segment, its successor is prepared.
        let half = capacity as usize / 2 / record::set_bytes(8, 100) + 1;
        for i in 0..half as u32 {
            write(i).await;
        }
        // The file appears before its zeros are written and synced: wait for the log to hold
        // it as made (reading it earlier raced the zero fill, as a CI run found).
        for _ in 0..500 {
            if log.has_spare() {
                break;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(log.has_spare(), "a spare once half the segment is written");
        let made = spares(&folder);
        assert_eq!(made.len(), 1, "one spare once half the segment is written");
        assert_eq!(made[0].1, capacity, "the spare is as large as a segment");
        let bytes = std::fs::read(&made[0].0).unwrap();
        assert!(bytes.iter().all(|&b| b == 0), "the spare holds only zeros");
        // Written zeros, not merely fallocated blocks (which read as zeros too): no extent
        // may be flagged unwritten (`filefrag` from e2fsprogs, where it and FIEMAP exist).
        match std::process::Command::new("filefrag")
            .arg("-v")
            .arg(&made[0].0)
            .output()
        {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(!text.contains("unwritten"), "the spare has unwritten extents:\n{text}");
            }
            _ => println!("filefrag -v unavailable here: extent flags not checked"),
        }
        // Writing on through several rotations leaves every segment in sequence.
        for i in half as u32..(4 * half) as u32 {
            write(i).await;
        }
        let files = dir::list_shard_dir(&folder).unwrap();
        assert!(files.segments.len() >= 2, "{files:?}");
        let expected: Vec<u64> = (files.segments[0]..files.segments[0] + files.segments.len() as u64).collect();
        assert_eq!(files.segments, expected, "no gap in the segment sequence");
        log.close().await.unwrap();
        assert_eq!(recover_model(&dir, &layout, 0).await.unwrap().0, model);
        // A leftover spare is removed when the log opens again.
        let left = spares(&folder);
        let stats = recover_model(&dir, &layout, 0).await.unwrap().1;
        let log = ShardLog::open(config, &layout, 0, &stats).await.unwrap();
        for (path, _) in &left {
            assert!(!path.exists(), "{} was not removed", path.display());
        }
        log.close().await.unwrap();
        assert_eq!(recover_model(&dir, &layout, 0).await.unwrap().0, model);
    });
}

/// Members per group in the group tests.
const GROUP_MEMBERS: usize = 5;

/// Writes 10 plain sets, then `groups` groups of [`GROUP_MEMBERS`] sets (keys `g<j>-<m>`)
/// into one segment; returns the layout, the segment and each group's (start, end) offsets.
async fn write_groups(dir: &DataDir, groups: usize) -> (Layout, PathBuf, Vec<(u64, u64)>) {
    let layout = dir.layout_for(1).unwrap();
    let stats = recover_model(dir, &layout, 0).await.unwrap().1;
    let log = ShardLog::open(small_config(FsyncPolicy::Never), &layout, 0, &stats)
        .await
        .unwrap();
    for i in 0..10 {
        let key = format!("plain-{i}");
        log.reserve(record::set_bytes(key.len(), 20)).await.unwrap();
        log.append_set(key.as_bytes(), &[b'p'; 20], None).unwrap();
    }
    let mut spans = Vec::new();
    for group in 0..groups {
        let mut members = Vec::new();
        for member in 0..GROUP_MEMBERS {
            let key = format!("g{group}-{member}");
            record::encode_set(&mut members, key.as_bytes(), &vec![b'v'; 7 + member * 3], None, 9);
        }
        if group % 2 == 1 {
            record::encode(&mut members, record::Kind::Delete, b"plain-0", &[]);
        }
        let start = log.appended().0;
        log.reserve(record::group_bytes(members.len())).await.unwrap();
        let end = log.append_group(&members, None).unwrap().0;
        spans.push((start, end));
    }
    log.close().await.unwrap();
    let segment = dir::segment_path(&layout.shard_dir(0), 1);
    (layout, segment, spans)
}

/// How many of group `group`'s keys `model` holds.
fn group_keys_present(model: &Model, group: usize) -> usize {
    (0..GROUP_MEMBERS)
        .filter(|member| model.contains_key(format!("g{group}-{member}").as_bytes()))
        .count()
}

#[test]
fn a_group_cut_anywhere_at_the_tail_is_cut_off_whole_and_never_half_replayed() {
    // Goal: cutting the last segment at every offset inside its last two groups (as a short
    // file and as zeroed blocks) recovers every whole group and no member of a torn one, and
    // reports the torn tail at the torn group's first byte.
    let root = test_dir("torn-group");
    let base = root.clone();
    run_on_executor(move || async move {
        let dir = DataDir::lock(&root).unwrap();
        let (_, segment, spans) = write_groups(&dir, 3).await;
        drop(dir);
        let original = std::fs::read(&segment).unwrap();
        let (first, last) = (spans[1].0 - 2, spans[2].1 + 2);
        for (case, cut) in (first..last).enumerate() {
            let copy = base.with_file_name(format!("torn-group-copy-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&copy);
            copy_dir(&base, &copy);
            let copy_segment = copy.join(segment.strip_prefix(&base).unwrap());
            let mut bytes = original.clone();
            if case % 2 == 0 {
                bytes.truncate(cut as usize);
            } else {
                bytes[cut as usize..].fill(0);
            }
            std::fs::write(&copy_segment, &bytes).unwrap();
            let dir = DataDir::lock(&copy).unwrap();
            let layout = dir.layouts().unwrap().pop().unwrap();
            let (model, stats) = recover_model(&dir, &layout, 0).await.unwrap();
            for (group, &(start, end)) in spans.iter().enumerate() {
                let present = group_keys_present(&model, group);
                let whole = end <= cut;
                assert_eq!(
                    present,
                    if whole { GROUP_MEMBERS } else { 0 },
                    "cut at {cut}, group {group}"
                );
                if start < cut && cut < end {
                    let torn = vec![TornTail {
                        file: copy_segment.clone(),
                        offset: start,
                    }];
                    assert_eq!(stats.torn_tails, torn, "cut at {cut}");
                }
            }
            // Group 1 deletes plain-0: it is gone exactly when group 1 is whole.
            assert_eq!(model.contains_key(&b"plain-0"[..]), spans[1].1 > cut, "cut at {cut}");
            let (again, stats) = recover_model(&dir, &layout, 0).await.unwrap();
            assert_eq!((again, stats.torn_tails), (model, vec![]), "the cut is made on disk");
        }
    });
}

#[test]
fn a_damaged_group_before_the_tail_stops_recovery() {
    // Goal: a bit flipped inside a group that has a whole record after it is corruption
    // (start-up stops naming the group's offset), not a torn tail.
    let root = test_dir("flip-group");
    run_on_executor(move || async move {
        let dir = DataDir::lock(&root).unwrap();
        let (layout, segment, spans) = write_groups(&dir, 3).await;
        let original = std::fs::read(&segment).unwrap();
        for at in [spans[1].0 + 2, spans[1].0 + 40, spans[1].1 - 1] {
            let mut bytes = original.clone();
            bytes[at as usize] ^= 0x04;
            std::fs::write(&segment, &bytes).unwrap();
            let error = recover_model(&dir, &layout, 0).await.unwrap_err();
            let StorageError::Corrupt { file, offset, .. } = &error else {
                panic!("{error}")
            };
            assert_eq!((file, *offset), (&segment, spans[1].0), "flip at {at}: {error}");
        }
    });
}

#[test]
fn a_hold_keeps_its_room_across_awaits_and_rotations() {
    // Goal: room promised by a hold is still there after other writers filled the segment
    // (forcing rotations) and after awaits; a hold dropped unused gives its room back.
    let root = test_dir("hold");
    run_on_executor(move || async move {
        let dir = DataDir::lock(&root).unwrap();
        let layout = dir.layout_for(1).unwrap();
        let stats = recover_model(&dir, &layout, 0).await.unwrap().1;
        let log = ShardLog::open(small_config(FsyncPolicy::Never), &layout, 0, &stats)
            .await
            .unwrap();
        let mut members = Vec::new();
        record::encode_set(&mut members, b"held", &[b'h'; 40_000], None, 1);
        let hold = log.hold(record::group_bytes(members.len())).await.unwrap();
        let unused = log.hold(30_000).await.unwrap();
        drop(unused);
        let mut last = Lsn(0);
        let mut before_rotation = None;
        for i in 0..200 {
            let key = format!("filler-{i}");
            log.reserve(record::set_bytes(key.len(), 1000)).await.unwrap();
            if log.stats().segments > 1 && before_rotation.is_none() {
                before_rotation = Some(i);
            }
            last = log.append_set(key.as_bytes(), &[b'f'; 1000], None).unwrap();
            glommio::yield_if_needed().await;
        }
        // The first 64 KiB segment had room for the held 40 KB plus ~23 fillers, not ~60.
        let before_rotation = before_rotation.expect("the fillers rotated the 64 KiB segment");
        let filler_bytes = record::set_bytes("filler-00".len(), 1000);
        let room_besides_hold = (64 << 10) - record::group_bytes(members.len());
        assert!(
            before_rotation * filler_bytes <= room_besides_hold,
            "{before_rotation} fillers fit beside the hold"
        );
        log.until_appendable().await.unwrap();
        let group = log.append_group(&members, Some(hold)).unwrap();
        assert!(group > last);
        log.durable(group).await.unwrap();
        log.close().await.unwrap();
        let (model, _) = recover_model(&dir, &layout, 0).await.unwrap();
        assert_eq!(model.len(), 201);
        assert_eq!(model[&b"held"[..]].0.len(), 40_000);
    });
}

// Goal: under `everysec` an append is in the page cache the moment it returns (another reader
// of the file sees it before any fdatasync, so a kill -9 cannot lose it) and `durable` is
// ready without waiting; with no further appends the writer still fdatasyncs within the
// second; and the next segment is made once the mapped one is half full.
#[test]
fn a_mapped_segment_holds_each_append_at_once_and_is_synced_within_the_second() {
    let root = test_dir("mapped");
    run_on_executor(move || async move {
        let dir = DataDir::lock(&root).unwrap();
        let layout = dir.layout_for(1).unwrap();
        let stats = recover_model(&dir, &layout, 0).await.unwrap().1;
        let config = small_config(FsyncPolicy::EverySec);
        let capacity = config.segment_bytes;
        let log = ShardLog::open(config, &layout, 0, &stats).await.unwrap();
        log.reserve(record::set_bytes(9, 100)).await.unwrap();
        let lsn = log.append_set(b"first-key", &[7; 100], None).unwrap();
        let durable = futures_lite::future::poll_once(log.durable(lsn)).await;
        assert_eq!(
            durable,
            Some(Ok(())),
            "durable at once: the record is already in the page cache"
        );
        let bytes = std::fs::read(dir::segment_path(&layout.shard_dir(0), 1)).unwrap();
        let (header, at) = record::decode(&bytes).unwrap();
        assert_eq!(header.kind, record::Kind::FileHeader);
        let (rec, _) = record::decode(&bytes[at..]).expect("the record, read through the page cache");
        assert_eq!((rec.kind, rec.key), (record::Kind::SetVersioned, &b"first-key"[..]));
        let fsyncs = log.stats().fsyncs;
        for _ in 0..300 {
            if log.stats().fsyncs > fsyncs {
                break;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(log.stats().fsyncs > fsyncs, "no fdatasync within 3 s of an append");
        let half = capacity as usize / 2 / record::set_bytes(8, 100) + 1;
        for i in 0..half as u32 {
            let key = format!("key-{i:04}");
            log.reserve(record::set_bytes(key.len(), 100)).await.unwrap();
            log.append_set(key.as_bytes(), &[1; 100], None).unwrap();
        }
        for _ in 0..500 {
            if log.has_spare() {
                break;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(log.has_spare(), "a spare once half the mapped segment is written");
        log.close().await.unwrap();
        assert_eq!(recover_model(&dir, &layout, 0).await.unwrap().0.len(), half + 1);
    });
}
