//! The keyspace's partitioning and everything a shard owns.
//!
//! A shard is one glommio executor pinned to one CPU. It owns a [`store::Store`] that no
//! other thread ever touches: other shards reach it only by sending a [`message::Batch`] over
//! the channel mesh ([`router`]). [`context`] holds what a shard's tasks share;
//! [`dispatch`] runs a connection's operations here or at their owners; [`index`], [`listing`]
//! and [`watch`] answer prefix listings and watches beside the store. This module must never hand out a reference to a store
//! across threads, and must never wrap one in a lock (the `--design locked` comparison keeps
//! its own lock in [`locked`]).

pub mod context;
pub mod dispatch;
pub mod durability;
#[doc(hidden)]
pub mod harness;
pub mod index;
pub mod listing;
pub mod locked;
pub mod message;
pub mod router;
pub mod slab;
pub mod store;
pub mod txn;
pub mod watch;

use std::cell::RefCell;
use std::sync::Arc;

/// Index of a shard, `0..nr_shards`.
pub type ShardId = usize;

/// The store a shard's connections execute local operations on (`--design`).
// One per shard, built once and never moved: boxing the large variant would only add a hop.
#[allow(clippy::large_enum_variant)]
pub enum StoreHandle {
    /// Thread-per-core: this shard's own store, touched by this thread only.
    Owned(RefCell<store::Store>),
    /// One locked store shared by every executor.
    Locked(Arc<locked::LockedStore>),
}

impl StoreHandle {
    /// Executes a key operation here and hands its outcome to `f` (a found value is borrowed
    /// in place, so it is copied once, by `f`). No borrow or lock outlives the call.
    pub fn apply<R>(&self, op: message::Op, f: impl FnOnce(message::Outcome<&[u8]>) -> R) -> R {
        match self {
            StoreHandle::Owned(store) => f(store.borrow_mut().apply(op)),
            StoreHandle::Locked(store) => store.apply(op, f),
        }
    }

    /// Hands `key`'s current value and remaining TTL (absent or expired: `None`) to `f`,
    /// without counting a read or touching recency; no borrow outlives the call.
    pub fn peek<R>(&self, key: &[u8], f: impl FnOnce(Option<(&[u8], Option<u64>, u64)>) -> R) -> R {
        match self {
            StoreHandle::Owned(store) => f(store.borrow().peek(key)),
            // Not reached with a log (--data-dir is refused with --design locked); a read
            // under the lock, which counts a hit or miss.
            StoreHandle::Locked(store) => store.apply(message::Op::Get(key.into()), |outcome| match outcome {
                message::Outcome::Found { value, ttl_ms, version } => f(Some((value, ttl_ms, version))),
                _ => f(None),
            }),
        }
    }

    /// Runs `f` with the store to itself: nothing else reads or writes it until `f` returns
    /// (the shard's thread in the sharded design, the exclusive lock in the locked one). A
    /// transaction's steps run so.
    pub fn exclusive<R>(&self, f: impl FnOnce(&mut store::Store) -> R) -> R {
        match self {
            StoreHandle::Owned(store) => f(&mut store.borrow_mut()),
            StoreHandle::Locked(store) => store.exclusive(f),
        }
    }

    /// Reclaims at most `keys_max` expired keys; returns how many.
    pub fn expire(&self, keys_max: usize) -> usize {
        match self {
            StoreHandle::Owned(store) => store.borrow_mut().expire(keys_max),
            StoreHandle::Locked(store) => store.expire(keys_max),
        }
    }

    /// Gives freed memory back to the OS when worthwhile (see `Store::after_expiry_tick`);
    /// called once per expiry tick.
    pub fn after_expiry_tick(&self) -> bool {
        match self {
            StoreHandle::Owned(store) => store.borrow_mut().after_expiry_tick(),
            StoreHandle::Locked(store) => store.after_expiry_tick(),
        }
    }

    /// Fills the store's part of a shard's stats.
    pub fn fill_stats(&self, stats: &mut message::ShardStats) {
        match self {
            StoreHandle::Owned(store) => store.borrow().fill_stats(stats),
            StoreHandle::Locked(store) => store.fill_stats(stats),
        }
    }
}

/// A stable 64-bit hash of a key: FNV-1a over the bytes, then a murmur3 finaliser so that the
/// high bits (used by [`shard_for`]) are well mixed.
///
/// Stable across processes, restarts, machines and crate versions (unlike `ahash`, whose output
/// may change between releases), because logs and files are replayed by it.
pub fn key_hash(key: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The shard that owns `key`, in `0..nr_shards` (Lemire's multiply-shift reduction: no division).
pub fn shard_for(key: &[u8], nr_shards: usize) -> ShardId {
    debug_assert!(nr_shards > 0);
    ((u128::from(key_hash(key)) * nr_shards as u128) >> 64) as ShardId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_stable_across_builds() {
        // Pinned values: a change here re-partitions every deployed keyspace. Don't.
        assert_eq!(key_hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(shard_for(b"mykey", 1), 0);
        let pinned: Vec<ShardId> = [&b"a"[..], b"b", b"mykey", b"user:42", b"a/b/c"]
            .iter()
            .map(|k| shard_for(k, 8))
            .collect();
        assert_eq!(pinned, PINNED_SHARDS_OF_8);
    }

    /// `shard_for(k, 8)` for the keys above, recorded when the hash was chosen.
    const PINNED_SHARDS_OF_8: [ShardId; 5] = [4, 3, 3, 4, 1];

    #[test]
    fn keys_spread_evenly_over_shards() {
        for nr_shards in [2usize, 3, 8] {
            let mut counts = vec![0usize; nr_shards];
            let total = 60_000;
            for i in 0..total {
                counts[shard_for(format!("key:{i}").as_bytes(), nr_shards)] += 1;
            }
            let expected = total / nr_shards;
            for count in counts {
                assert!(count.abs_diff(expected) < expected / 20, "{count} vs {expected}");
            }
        }
    }
}
