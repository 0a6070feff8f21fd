//! One shard's ordered index of its live keys, for prefix listings (`GET /v1/keys?prefix=`).
//!
//! Owns a `BTreeSet` of the shard's keys, kept beside the store (never inside it):
//! [`super::context::ShardContext::apply_local`] inserts a key a write created and removes the
//! keys the store reports through [`Store::take_removals`] (deletes, TTL expiry, LRU eviction).
//! It answers one bounded page at a time ([`KeyIndex::page`]), so no request ever sorts the
//! table or copies more than a page. It never changes the store, and lives on its shard's
//! thread only. It is on only with `--key-index`, and never in the `locked` design.
//!
//! Cost: 24 bytes per key in the tree's nodes (keys up to 22 bytes inline, longer ones in an
//! allocation of their own) plus the B-tree's node overhead; on every PUT one key copy, and a
//! tree insert when it creates. See `scripts/list_bench.py` for the measured bytes per key
//! and CPU per PUT: too much to be on by default.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::ops::Bound;

use super::message::{ListPage, ListQuery, Record};
use super::store::{Removal, Store};
use crate::limits::{LIST_PAGE_BYTES_MAX, LIST_PAGE_KEYS_MAX};

/// Keys a page may examine (live or expired but not yet reclaimed) before it stops and says
/// where to resume, so a run of expired keys cannot make one page unbounded work.
const LIST_PAGE_KEYS_EXAMINED_MAX: usize = 4 * LIST_PAGE_KEYS_MAX;

/// Bytes of a key stored inside its tree slot, without an allocation of its own.
const INLINE_KEY_BYTES_MAX: usize = 22;

/// A key as the index holds it: inline when short (most keys), else in its own allocation.
/// 24 bytes in the tree's node either way; a short key saves the 16-byte pointer's malloc
/// chunk (32 bytes or more) a `Box<[u8]>` would cost.
#[derive(Clone)]
enum IndexKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY_BYTES_MAX] },
    Boxed(Box<[u8]>),
}

const _: () = assert!(std::mem::size_of::<IndexKey>() == 24);

impl IndexKey {
    fn new(key: &[u8]) -> IndexKey {
        if key.len() <= INLINE_KEY_BYTES_MAX {
            let mut bytes = [0u8; INLINE_KEY_BYTES_MAX];
            bytes[..key.len()].copy_from_slice(key);
            IndexKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            IndexKey::Boxed(key.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            IndexKey::Inline { len, bytes } => &bytes[..*len as usize],
            IndexKey::Boxed(key) => key,
        }
    }
}

// Ordered, compared and borrowed as the key's bytes, so the tree is in byte order and can be
// searched with a `&[u8]`.
impl std::borrow::Borrow<[u8]> for IndexKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for IndexKey {
    fn eq(&self, other: &IndexKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for IndexKey {}

impl PartialOrd for IndexKey {
    fn partial_cmp(&self, other: &IndexKey) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IndexKey {
    fn cmp(&self, other: &IndexKey) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

/// A shard's live keys in byte order, or nothing when the index is off.
#[derive(Default)]
pub struct KeyIndex {
    /// `None` while off (before [`KeyIndex::start`], without `--key-index`, in the locked design).
    keys: RefCell<Option<BTreeSet<IndexKey>>>,
    /// Reused between operations: the records the store removed during the last one.
    removed: RefCell<Vec<(Record, Removal)>>,
    /// Whether the index is on (a `Cell` so the hot path checks it without a borrow).
    on: Cell<bool>,
}

impl KeyIndex {
    /// Whether the index is kept (listing is answered).
    pub fn is_on(&self) -> bool {
        self.on.get()
    }

    /// Turns the index on, filled from the store's live keys (after `--load`, or a recovery),
    /// and makes the store report its removals from now on.
    pub fn start(&self, store: &mut Store) {
        let mut keys = BTreeSet::new();
        let mut cursor = Some(0);
        while let Some(from) = cursor {
            cursor = store.scan_from(from, 4096, |key, _, _, _| {
                keys.insert(IndexKey::new(key));
            });
        }
        store.track_removals(true);
        *self.keys.borrow_mut() = Some(keys);
        self.on.set(true);
    }

    /// Records a key a write created.
    pub fn insert(&self, key: &[u8]) {
        if let Some(keys) = self.keys.borrow_mut().as_mut() {
            keys.insert(IndexKey::new(key));
        }
    }

    /// Takes the store's removals since the last call out of the index, and hands each to
    /// `f` (the record and why it went) before it is dropped.
    pub fn take_removals(&self, store: &mut Store, mut f: impl FnMut(&Record, Removal)) {
        let mut removed = self.removed.borrow_mut();
        store.take_removals(&mut removed);
        if removed.is_empty() {
            return;
        }
        let mut keys = self.keys.borrow_mut();
        for (record, cause) in removed.drain(..) {
            // A key already expired when the index was built was never in it.
            if let Some(keys) = keys.as_mut() {
                keys.remove(record.key());
            }
            f(&record, cause);
        }
    }

    /// Keys indexed (live, and expired ones the store has not reclaimed yet).
    pub fn len(&self) -> usize {
        self.keys.borrow().as_ref().map_or(0, BTreeSet::len)
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One page of the keys that start with `query.prefix` and sort after `query.after`: at
    /// most `LIST_PAGE_KEYS_MAX` keys and about `LIST_PAGE_BYTES_MAX` bytes (the first item
    /// always goes in), with their values when asked. Keys whose TTL has passed are skipped.
    pub fn page(&self, store: &Store, query: &ListQuery) -> ListPage {
        let keys = self.keys.borrow();
        let Some(keys) = keys.as_ref() else {
            return ListPage::default();
        };
        let prefix = &*query.prefix;
        let start = match &query.after {
            Some(after) if **after >= *prefix => Bound::Excluded(&**after),
            _ => Bound::Included(prefix),
        };
        let mut page = ListPage::default();
        let (mut bytes, mut examined) = (0usize, 0usize);
        let mut last_examined: Option<&[u8]> = None;
        for key in keys.range::<[u8], _>((start, Bound::Unbounded)).map(IndexKey::as_bytes) {
            if !key.starts_with(prefix) {
                return page;
            }
            let full = page.items.len() >= LIST_PAGE_KEYS_MAX || bytes >= LIST_PAGE_BYTES_MAX;
            if let Some(last) = last_examined
                && (full || examined >= LIST_PAGE_KEYS_EXAMINED_MAX)
            {
                page.resume_after = Some(last.into());
                return page;
            }
            examined += 1;
            last_examined = Some(key);
            let Some((value, _ttl, _version)) = store.peek(key) else {
                continue;
            };
            let value = if query.values { value } else { b"" };
            bytes += key.len() + value.len();
            page.items.push(Record::new(key, value));
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::message::Op;

    fn query(prefix: &str, after: Option<&str>, values: bool) -> ListQuery {
        ListQuery {
            prefix: prefix.as_bytes().into(),
            after: after.map(|a| a.as_bytes().into()),
            values,
        }
    }

    fn keys(page: &ListPage) -> Vec<String> {
        page.items
            .iter()
            .map(|r| String::from_utf8_lossy(r.key()).into_owned())
            .collect()
    }

    /// Applies an op the way a shard does (`ShardContext::apply_local`): the store's removals
    /// first (a PUT may reclaim its own expired key before creating it again), then the key
    /// the op created.
    fn apply(index: &KeyIndex, store: &mut Store, op: Op) {
        let key: Box<[u8]> = op.key().into();
        let created = matches!(store.apply(op), crate::shard::message::Outcome::Created { .. });
        index.take_removals(store, |_, _| {});
        if created {
            index.insert(&key);
        }
    }

    #[test]
    fn pages_follow_byte_order_and_stop_at_the_prefix() {
        let mut store = Store::default();
        let index = KeyIndex::default();
        assert!(!index.is_on());
        assert_eq!(index.page(&store, &query("", None, false)).items.len(), 0);
        for key in ["b", "a/2", "a/10", "a/1", "c", "a"] {
            store.put(Record::new(key.as_bytes(), b"v"), None);
        }
        index.start(&mut store);
        assert!(index.is_on());
        let page = index.page(&store, &query("a/", None, false));
        assert_eq!(keys(&page), ["a/1", "a/10", "a/2"]);
        assert_eq!(page.resume_after, None);
        assert_eq!(page.items[0].value(), b"", "no values unless asked");
        let page = index.page(&store, &query("a/", Some("a/1"), true));
        assert_eq!(keys(&page), ["a/10", "a/2"]);
        assert_eq!(page.items[0].value(), b"v");
        assert_eq!(keys(&index.page(&store, &query("a/", Some("0"), false))).len(), 3);
        assert!(index.page(&store, &query("zz", None, false)).items.is_empty());
        apply(&index, &mut store, Op::delete(&Box::from(&b"a/10"[..])));
        apply(&index, &mut store, Op::put(Record::new(b"a/3", b"v"), None));
        assert_eq!(
            keys(&index.page(&store, &query("a/", None, false))),
            ["a/1", "a/2", "a/3"]
        );
        assert_eq!(index.len(), store.len());
    }

    #[test]
    fn short_and_long_keys_sort_together_in_byte_order() {
        let long = "a/".repeat(INLINE_KEY_BYTES_MAX);
        let mut keys: Vec<IndexKey> = ["a/b", &long, "a/", "a/a/a/a/a/a/a/a/a/a/a/b", "", "\u{ff}"]
            .iter()
            .map(|k| IndexKey::new(k.as_bytes()))
            .collect();
        assert!(matches!(IndexKey::new(long.as_bytes()), IndexKey::Boxed(_)));
        assert!(matches!(
            IndexKey::new(&[7; INLINE_KEY_BYTES_MAX]),
            IndexKey::Inline { .. }
        ));
        keys.sort();
        let mut bytes: Vec<&[u8]> = keys.iter().map(IndexKey::as_bytes).collect();
        let sorted = bytes.clone();
        bytes.sort();
        assert_eq!(sorted, bytes);
        assert!(IndexKey::new(b"xy") == IndexKey::new(b"xy"));
    }

    #[test]
    fn a_page_is_bounded_and_says_where_to_resume() {
        let mut store = Store::default();
        let index = KeyIndex::default();
        index.start(&mut store);
        let total = LIST_PAGE_KEYS_MAX * 2 + 7;
        for i in 0..total {
            apply(
                &index,
                &mut store,
                Op::put(Record::new(format!("k{i:06}").as_bytes(), b"v"), None),
            );
        }
        let (mut seen, mut after) = (Vec::new(), None::<String>);
        loop {
            let page = index.page(&store, &query("k", after.as_deref(), false));
            assert!(page.items.len() <= LIST_PAGE_KEYS_MAX);
            seen.extend(keys(&page));
            match page.resume_after {
                Some(key) => after = Some(String::from_utf8(key.into()).unwrap()),
                None => break,
            }
        }
        assert_eq!(seen.len(), total);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, no repeats");
        let big = vec![b'x'; LIST_PAGE_BYTES_MAX / 2];
        for key in ["v1", "v2", "v3"] {
            apply(&index, &mut store, Op::put(Record::new(key.as_bytes(), &big), None));
        }
        let page = index.page(&store, &query("v", None, true));
        assert_eq!(keys(&page), ["v1", "v2"], "stops once past the byte bound");
        assert_eq!(page.resume_after.as_deref(), Some(&b"v2"[..]));
    }

    #[test]
    fn evictions_and_expiry_leave_the_index() {
        let budget = crate::shard::store::Budget {
            keys_max: Some(2),
            memory_bytes_max: None,
            eviction: crate::shard::store::Eviction::Lru,
        };
        let mut store = Store::new(budget);
        let index = KeyIndex::default();
        index.start(&mut store);
        let mut causes = Vec::new();
        for key in ["a", "b", "c"] {
            let op = Op::put(Record::new(key.as_bytes(), b"v"), None);
            let created = matches!(store.apply(op), crate::shard::message::Outcome::Created { .. });
            assert!(created);
            index.insert(key.as_bytes());
            index.take_removals(&mut store, |record, cause| causes.push((record.key().to_vec(), cause)));
        }
        assert_eq!(causes, [(b"a".to_vec(), Removal::Evicted)]);
        assert_eq!(keys(&index.page(&store, &query("", None, false))), ["b", "c"]);
        assert_eq!(index.len(), 2);
    }

    thread_local! {
        static NOW_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
    }

    fn test_clock() -> u64 {
        NOW_MS.with(std::cell::Cell::get)
    }

    #[test]
    fn the_index_follows_the_store_through_random_churn() {
        // Puts (some with TTLs), updates, deletes, reads (lazy expiry), active expiry and LRU
        // evictions: after every step the index holds exactly the store's keys.
        let budget = crate::shard::store::Budget {
            keys_max: Some(60),
            memory_bytes_max: None,
            eviction: crate::shard::store::Eviction::Lru,
        };
        let mut store = Store::with_clock(budget, test_clock);
        let index = KeyIndex::default();
        index.start(&mut store);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..20_000 {
            let key = format!("k{}", next() % 100).into_bytes();
            let op = match next() % 6 {
                0 | 1 => Op::put(Record::new(&key, b"v"), (next() % 3 == 0).then_some(1 + next() % 50)),
                2 => Op::update(Record::new(&key, b"w")),
                3 => Op::delete(&key),
                4 => Op::Get(key.into()),
                _ => {
                    NOW_MS.with(|now| now.set(now.get() + next() % 20));
                    store.expire(1 + (next() % 10) as usize);
                    index.take_removals(&mut store, |_, _| {});
                    continue;
                }
            };
            apply(&index, &mut store, op);
            assert_eq!(index.len(), store.len(), "one entry per key the store holds");
            let page = index.page(&store, &query("", None, false));
            let mut live = Vec::new();
            let mut cursor = Some(0);
            while let Some(from) = cursor {
                cursor = store.scan_from(from, 4096, |key, _, _, _| live.push(key.to_vec()));
            }
            live.sort();
            let listed: Vec<Vec<u8>> = page.items.iter().map(|r| r.key().to_vec()).collect();
            assert_eq!(listed, live, "a listing shows exactly the live keys");
        }
    }
}
