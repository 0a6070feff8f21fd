//! The map one shard owns: a `hashbrown` table of [`Record`]s hashed with `ahash`.
//!
//! Owns the data and nothing else: no locks, no atomics, no I/O. Exactly one thread touches a
//! given store (its shard's, or the `locked` design's lock holder); it must never be shared.

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use super::message::{Op, Outcome, Record};

/// A shard's keys and values.
pub struct Store {
    /// Records keyed by their key's bytes; the hash is recomputed from the key on resize, so an
    /// entry costs only the `Record` (pointer, length, key length).
    table: HashTable<Record>,
    /// Process-local hasher for the table (not [`super::key_hash`]: this one needs no stability).
    hasher: ahash::RandomState,
    /// Sum of key and value bytes held.
    data_bytes: usize,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store {
            table: HashTable::new(),
            hasher: ahash::RandomState::new(),
            data_bytes: 0,
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes of keys and values held (without table overhead).
    pub fn data_bytes(&self) -> usize {
        self.data_bytes
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let hash = self.hasher.hash_one(key);
        self.table.find(hash, |record| record.key() == key).map(Record::value)
    }

    /// Inserts or replaces; returns true when the key is new.
    pub fn put(&mut self, record: Record) -> bool {
        let hash = self.hasher.hash_one(record.key());
        let hasher = &self.hasher;
        self.data_bytes += record.data_len();
        match self
            .table
            .entry(hash, |r| r.key() == record.key(), |r| hasher.hash_one(r.key()))
        {
            Entry::Occupied(mut occupied) => {
                let old = std::mem::replace(occupied.get_mut(), record);
                self.data_bytes -= old.data_len();
                false
            }
            Entry::Vacant(vacant) => {
                vacant.insert(record);
                true
            }
        }
    }

    /// Replaces the value of an existing key; returns false (and stores nothing) when absent.
    pub fn update(&mut self, record: Record) -> bool {
        let hash = self.hasher.hash_one(record.key());
        match self.table.find_mut(hash, |r| r.key() == record.key()) {
            Some(slot) => {
                self.data_bytes = self.data_bytes - slot.data_len() + record.data_len();
                *slot = record;
                true
            }
            None => false,
        }
    }

    /// Removes `key`; returns whether it was present.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        let hash = self.hasher.hash_one(key);
        match self.table.find_entry(hash, |r| r.key() == key) {
            Ok(occupied) => {
                let (old, _) = occupied.remove();
                self.data_bytes -= old.data_len();
                true
            }
            Err(_) => false,
        }
    }

    /// Executes one operation; a found value is borrowed from the store.
    pub fn apply(&mut self, op: Op) -> Outcome<&[u8]> {
        match op {
            Op::Get(key) => match self.get(&key) {
                Some(value) => Outcome::Found(value),
                None => Outcome::Missing,
            },
            Op::Put(record) => {
                if self.put(record) {
                    Outcome::Created
                } else {
                    Outcome::Replaced
                }
            }
            Op::Update(record) => {
                if self.update(record) {
                    Outcome::Updated
                } else {
                    Outcome::Missing
                }
            }
            Op::Delete(key) => Outcome::Deleted(self.delete(&key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_update_delete_round_trip() {
        let mut store = Store::new();
        assert!(store.put(Record::new(b"k", b"one")));
        assert!(!store.put(Record::new(b"k", b"two")), "second put replaces");
        assert_eq!(store.get(b"k"), Some(&b"two"[..]));
        assert!(store.update(Record::new(b"k", b"three")));
        assert_eq!(store.get(b"k"), Some(&b"three"[..]));
        assert!(!store.update(Record::new(b"absent", b"x")), "update never creates");
        assert_eq!(store.get(b"absent"), None);
        assert!(store.delete(b"k"));
        assert!(!store.delete(b"k"), "delete is idempotent");
        assert!(store.is_empty());
        assert_eq!(store.data_bytes(), 0);
    }

    #[test]
    fn data_bytes_follow_every_write() {
        let mut store = Store::new();
        store.put(Record::new(b"ab", b"1234"));
        assert_eq!(store.data_bytes(), 6);
        store.put(Record::new(b"ab", b"1"));
        assert_eq!(store.data_bytes(), 3);
        store.update(Record::new(b"ab", b"12345678"));
        assert_eq!(store.data_bytes(), 10);
        store.put(Record::new(b"c", b""));
        assert_eq!((store.len(), store.data_bytes()), (2, 11));
    }

    #[test]
    fn many_keys_survive_resizes() {
        let mut store = Store::new();
        for i in 0..10_000u32 {
            store.put(Record::new(&i.to_le_bytes(), &i.to_be_bytes()));
        }
        for i in 0..10_000u32 {
            assert_eq!(store.get(&i.to_le_bytes()), Some(&i.to_be_bytes()[..]));
        }
    }

    #[test]
    fn apply_reports_each_outcome() {
        let mut store = Store::new();
        assert_eq!(store.apply(Op::Get(Box::from(&b"k"[..]))), Outcome::Missing);
        assert_eq!(store.apply(Op::Put(Record::new(b"k", b"v"))), Outcome::Created);
        assert_eq!(store.apply(Op::Put(Record::new(b"k", b"w"))), Outcome::Replaced);
        assert_eq!(store.apply(Op::Update(Record::new(b"k", b"x"))), Outcome::Updated);
        assert_eq!(store.apply(Op::Get(Box::from(&b"k"[..]))), Outcome::Found(&b"x"[..]));
        assert_eq!(store.apply(Op::Delete(Box::from(&b"k"[..]))), Outcome::Deleted(true));
        assert_eq!(store.apply(Op::Update(Record::new(b"k", b"y"))), Outcome::Missing);
    }
}
