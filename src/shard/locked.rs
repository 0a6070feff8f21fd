//! The `--design locked` store: one [`Store`] behind one `RwLock`, read and written directly by
//! every executor. It exists to be measured against the thread-per-core design.
//!
//! Owns that lock and nothing else. Reads take the shared lock, writes the exclusive one; no
//! guard is ever held across an await.

use std::sync::RwLock;

use super::message::{Op, Outcome};
use super::store::Store;

/// One map shared by all executors.
#[derive(Default)]
pub struct LockedStore {
    inner: RwLock<Store>,
}

impl LockedStore {
    /// Executes `op` under the lock and hands its outcome to `f` while the lock is held (so a
    /// found value is copied out once, straight into the response).
    pub fn apply<R>(&self, op: Op, f: impl FnOnce(Outcome<&[u8]>) -> R) -> R {
        // A poisoned lock means a panic mid-operation on another thread; the store's own
        // operations leave it consistent at every step, so keep serving.
        match op {
            Op::Get(key) => {
                let store = self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner());
                f(store.get(&key).map_or(Outcome::Missing, Outcome::Found))
            }
            op => {
                let mut store = self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner());
                f(store.apply(op))
            }
        }
    }

    /// Runs `f` with shared access to the whole store (stats, tests).
    pub fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
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
                        store.apply(Op::Put(Record::new(key.as_bytes(), b"v")), |_| ());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(store.read(Store::len), 4000);
        let found = store.apply(Op::Get(Box::from(&b"3:999"[..])), |outcome| {
            outcome == Outcome::Found(&b"v"[..])
        });
        assert!(found);
    }
}
