//! The `--design locked` store: one [`Store`] behind one `RwLock`, read and written directly by
//! every executor. It exists to be measured against the thread-per-core design.
//!
//! Owns that lock and the counters reads update under the shared lock. Reads take the shared
//! lock (the exclusive one in LRU mode, where a read reorders the LRU list), writes the
//! exclusive one; no guard is ever held across an await.

use std::sync::RwLock;

use super::message::{Op, Outcome, ShardStats};
use super::store::{Budget, Eviction, Store};
use crate::sync::counter::Counter;

/// One map shared by all executors.
pub struct LockedStore {
    inner: RwLock<Store>,
    /// Reads under the shared lock cannot count inside the store; they count here.
    hits: Counter,
    misses: Counter,
    /// True in LRU mode: every read takes the exclusive lock.
    reads_reorder: bool,
}

impl Default for LockedStore {
    fn default() -> Self {
        LockedStore::new(Budget::UNLIMITED)
    }
}

impl LockedStore {
    /// An empty store with the whole budget.
    pub fn new(budget: Budget) -> LockedStore {
        LockedStore {
            inner: RwLock::new(Store::new(budget)),
            hits: Counter::default(),
            misses: Counter::default(),
            reads_reorder: budget.eviction == Eviction::Lru,
        }
    }

    /// Executes `op` under the lock and hands its outcome to `f` while the lock is held (so a
    /// found value is copied out once, straight into the response).
    pub fn apply<R>(&self, op: Op, f: impl FnOnce(Outcome<&[u8]>) -> R) -> R {
        // A poisoned lock means a panic mid-operation on another thread; the store's own
        // operations leave it consistent at every step, so keep serving.
        match op {
            Op::Get(key) if !self.reads_reorder => {
                let store = self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner());
                let outcome = match store.peek(&key) {
                    Some((value, ttl_ms, version)) => {
                        self.hits.add(1);
                        Outcome::Found { value, ttl_ms, version }
                    }
                    None => {
                        self.misses.add(1);
                        Outcome::Missing
                    }
                };
                f(outcome)
            }
            op => {
                let mut store = self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner());
                f(store.apply(op))
            }
        }
    }

    /// Runs `f` under the exclusive lock, taken once (a transaction's compares and writes).
    pub fn exclusive<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut store)
    }

    /// Reclaims at most `keys_max` expired keys under the exclusive lock.
    pub fn expire(&self, keys_max: usize) -> usize {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .expire(keys_max)
    }

    /// The store's [`Store::after_expiry_tick`], under the exclusive lock.
    pub fn after_expiry_tick(&self) -> bool {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .after_expiry_tick()
    }

    /// The store's numbers, with the reads counted outside it.
    pub fn fill_stats(&self, stats: &mut ShardStats) {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .fill_stats(stats);
        stats.hits += self.hits.get() as u64;
        stats.misses += self.misses.get() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::message::Record;
    use std::sync::Arc;

    #[test]
    fn writers_on_many_threads_all_land() {
        let store = Arc::new(LockedStore::default());
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..1000u32 {
                        let key = format!("{t}:{i}");
                        store.apply(Op::put(Record::new(key.as_bytes(), b"v"), None), |_| ());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let found = store.apply(Op::Get(Box::from(&b"3:999"[..])), |outcome| {
            matches!(
                outcome,
                Outcome::Found {
                    value: b"v",
                    ttl_ms: None,
                    ..
                }
            )
        });
        assert!(found);
        store.apply(Op::Get(Box::from(&b"nope"[..])), |_| ());
        let mut stats = ShardStats::default();
        store.fill_stats(&mut stats);
        assert_eq!((stats.keys, stats.hits, stats.misses), (4000, 1, 1));
    }
}
