//! A shard's record memory: each key's record (its metadata, key and value) packed into one
//! slot of a size-classed page and named by a 32-bit [`Handle`], which is all the hash table
//! holds per key.
//!
//! Owns the pages, the slots' byte layout, the free lists of slots and pages, and the few
//! records too big for a slot (kept whole as a [`Record`], the slot pointing at it). It never
//! hashes, never reads a clock and never decides what to keep or evict: [`super::store::Store`]
//! does, and is its only user. Safe code only: a page is a `Box<[u8]>`, a slot a range of it.
//!
//! # Layout of a live slot
//!
//! | bytes | field |
//! |---|---|
//! | 1 | flags: `LIVE`, `DEADLINE` (a deadline follows), `LARGE` (the data is elsewhere) |
//! | 2 | key length (`u16`; keys are at most `KEY_BYTES_MAX_CEILING`) |
//! | 4 | value length (`u32`) |
//! | 8 | version (the ETag) |
//! | 8, only with `DEADLINE` | deadline, on the store's clock |
//! | 8, only in a slab with links | LRU links: previous and next handle |
//! | rest | key then value, or with `LARGE` the `u32` index of their [`Record`] |
//!
//! Numbers are little-endian and unaligned (a slot starts wherever its class puts it). A free
//! slot has flags 0 and, in bytes 1..3, the next free slot of its page.

use super::message::Record;
use crate::limits::KEY_BYTES_MAX_CEILING;

/// Names a slot: its page in the high bits, its slot in the page in the low `SLOT_BITS`.
pub type Handle = u32;
/// "No slot": the end of a list. Never a real handle (pages stay below `PAGES_MAX`).
pub const NIL: Handle = u32::MAX;

/// Bytes of one page (every size class carves the same pages).
pub const PAGE_BYTES: usize = 16 << 10;
/// The smallest slot: a header and a one-byte key.
const SLOT_BYTES_MIN: usize = 16;
/// Bits of a handle that name the slot within its page (a page has at most 1024 slots).
const SLOT_BITS: u32 = (PAGE_BYTES / SLOT_BYTES_MIN).trailing_zeros();
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
/// The largest slot; a record that needs more is kept whole, its slot holding an index.
pub const SLOT_BYTES_MAX: usize = 1024;
/// Most pages a slab may hold: 4 Mi pages of 16 KiB, 64 GiB per shard.
pub const PAGES_MAX: usize = (1 << (32 - SLOT_BITS)) - 1;
/// Fixed header: flags, key length, value length, version.
pub const HEADER_BYTES: usize = 15;
/// A deadline, when the key has a TTL.
const DEADLINE_BYTES: usize = 8;
/// LRU links (two handles), in a slab made with links (LRU eviction on).
const LINKS_BYTES: usize = 8;
/// What a `LARGE` slot holds in place of key and value: the index of its `Record`.
const LARGE_INDEX_BYTES: usize = 4;
/// Accounted per large record besides its own allocation: its entry in `Slab::large`.
pub const LARGE_ENTRY_BYTES: usize = std::mem::size_of::<Record>();

const LIVE: u8 = 1;
const DEADLINE: u8 = 2;
const LARGE: u8 = 4;
/// "No slot" within a page.
const NO_SLOT: u16 = u16::MAX;

const _: () = assert!(SLOT_BYTES_MIN > HEADER_BYTES, "a slot holds a header and a key byte");
const _: () = assert!(PAGE_BYTES / SLOT_BYTES_MIN <= 1 << SLOT_BITS);
const _: () = assert!((PAGE_BYTES / SLOT_BYTES_MIN) < NO_SLOT as usize);
const _: () = assert!(KEY_BYTES_MAX_CEILING <= u16::MAX as u32, "key lengths are kept in u16");
const _: () = assert!(
    HEADER_BYTES + DEADLINE_BYTES + LINKS_BYTES + LARGE_INDEX_BYTES <= SLOT_BYTES_MAX,
    "a large record's slot fits a class"
);

/// Slot sizes: 4-byte steps to 256 bytes (records of small keys and values, the common case,
/// waste at most 3 bytes), then 16-byte steps to 512, then 32-byte steps to `SLOT_BYTES_MAX`.
const CLASSES: usize = 61 + 16 + 16;
const CLASS_BYTES: [u16; CLASSES] = class_bytes();
/// The class of a slot of `n` bytes, indexed by `n.div_ceil(4)`.
const CLASS_OF_QUARTERS: [u8; SLOT_BYTES_MAX / 4 + 1] = class_of_quarters();

const fn class_bytes() -> [u16; CLASSES] {
    let mut bytes = [0u16; CLASSES];
    let (mut class, mut size, mut step) = (0, SLOT_BYTES_MIN, 4);
    while class < CLASSES {
        bytes[class] = size as u16;
        if size == 256 {
            step = 16;
        } else if size == 512 {
            step = 32;
        }
        size += step;
        class += 1;
    }
    assert!(bytes[CLASSES - 1] as usize == SLOT_BYTES_MAX);
    bytes
}

const fn class_of_quarters() -> [u8; SLOT_BYTES_MAX / 4 + 1] {
    let mut classes = [0u8; SLOT_BYTES_MAX / 4 + 1];
    let (mut quarters, mut class) = (0, 0);
    while quarters < classes.len() {
        while (CLASS_BYTES[class] as usize) < quarters * 4 {
            class += 1;
        }
        classes[quarters] = class as u8;
        quarters += 1;
    }
    classes
}

/// The class of the smallest slot of at least `need` bytes (`need <= SLOT_BYTES_MAX`).
fn class_of(need: usize) -> usize {
    CLASS_OF_QUARTERS[need.div_ceil(4)] as usize
}

/// One page: `bytes` carved into slots of one class.
struct Page {
    /// `PAGE_BYTES` bytes, or none while the page's id is unused.
    bytes: Box<[u8]>,
    /// The slot size of this page's class (0 while unused).
    slot_bytes: u32,
    class: u8,
    /// Slots of this page that are live.
    live: u16,
    /// Slots handed out at least once; the ones above are untouched.
    carved: u16,
    /// The page's first free slot below `carved`, or `NO_SLOT`.
    free_head: u16,
    /// Neighbours in the class's list of pages with room.
    prev: u32,
    next: u32,
}

/// A size class: its pages with a free slot, as a list.
#[derive(Clone, Copy)]
struct Class {
    room_head: u32,
    pages: u32,
}

/// The slots and pages of one store.
pub struct Slab {
    pages: Vec<Page>,
    /// Ids of unused pages, to reuse before growing `pages`.
    free_pages: Vec<u32>,
    classes: [Class; CLASSES],
    /// Records too big for a slot, by the index their slot holds (an empty record when free).
    large: Vec<Record>,
    free_large: Vec<u32>,
    /// Whether records carry LRU links.
    links: bool,
    /// Cluster mode: a large record accounts the chunk glibc nominally hands out for its
    /// length, not its real one, so accounting is a function of the replicated keys alone.
    nominal_large: bool,
    /// Live slots.
    live: usize,
    /// Most pages: `PAGES_MAX`, lower only in tests.
    pub(super) pages_max: usize,
}

/// How a record will be laid out: its slot's size, and whether its data lives elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub slot_bytes: usize,
    pub large: bool,
}

impl Slab {
    /// An empty slab; `links`: records carry LRU links.
    pub fn new(links: bool) -> Slab {
        Slab {
            pages: Vec::new(),
            free_pages: Vec::new(),
            classes: [Class {
                room_head: NIL,
                pages: 0,
            }; CLASSES],
            large: Vec::new(),
            free_large: Vec::new(),
            links,
            nominal_large: false,
            live: 0,
            pages_max: PAGES_MAX,
        }
    }

    /// Makes large records account their nominal chunk ([`nominal_chunk_bytes`]) rather than
    /// what malloc really handed out, which differs from process to process (cluster mode).
    pub fn set_nominal_large(&mut self, on: bool) {
        debug_assert!(
            self.large.iter().all(|r| r.data_len() == 0),
            "set before any large record"
        );
        self.nominal_large = on;
    }

    /// Bytes a large record's own allocation accounts.
    pub fn large_bytes(&self, record: &Record) -> usize {
        if self.nominal_large {
            nominal_chunk_bytes(record.data_len())
        } else {
            record.allocated_bytes()
        }
    }

    /// Live slots.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no slot is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Bytes of pages held (slots live or free).
    pub fn page_bytes(&self) -> usize {
        (self.pages.len() - self.free_pages.len()) * PAGE_BYTES
    }

    #[inline(always)]
    fn data_offset(&self, flags: u8) -> usize {
        HEADER_BYTES + if flags & DEADLINE != 0 { DEADLINE_BYTES } else { 0 } + if self.links { LINKS_BYTES } else { 0 }
    }

    /// The slot a record of `data_bytes` (key plus value) takes, with or without a deadline.
    pub fn shape(&self, data_bytes: usize, deadline: bool) -> Shape {
        let meta = self.data_offset(if deadline { DEADLINE } else { 0 });
        let inline = meta + data_bytes;
        let (need, large) = if inline <= SLOT_BYTES_MAX {
            (inline, false)
        } else {
            (meta + LARGE_INDEX_BYTES, true)
        };
        Shape {
            slot_bytes: CLASS_BYTES[class_of(need)] as usize,
            large,
        }
    }

    /// Whether a slot of `shape` can be had (a free one, or a new page within `pages_max`).
    pub fn has_room(&self, shape: Shape) -> bool {
        self.classes[class_of(shape.slot_bytes)].room_head != NIL
            || !self.free_pages.is_empty()
            || self.pages.len() < self.pages_max
    }

    /// A free slot of `shape`'s class (flags 0); the caller made sure there is room.
    pub fn allocate(&mut self, shape: Shape) -> Handle {
        let class = class_of(shape.slot_bytes);
        if self.classes[class].room_head == NIL {
            self.add_page(class);
        }
        let page_id = self.classes[class].room_head;
        let page = &mut self.pages[page_id as usize];
        let slot = if page.free_head != NO_SLOT {
            let slot = page.free_head;
            let at = slot as usize * page.slot_bytes as usize;
            page.free_head = u16::from_le_bytes([page.bytes[at + 1], page.bytes[at + 2]]);
            slot
        } else {
            page.carved += 1;
            page.carved - 1
        };
        page.live += 1;
        let full = page.free_head == NO_SLOT && page.carved as usize == PAGE_BYTES / page.slot_bytes as usize;
        if full {
            self.unlink_page(page_id);
        }
        self.live += 1;
        (page_id << SLOT_BITS) | u32::from(slot)
    }

    fn add_page(&mut self, class: usize) {
        let id = match self.free_pages.pop() {
            Some(id) => id,
            None => {
                assert!(self.pages.len() < self.pages_max, "callers check has_room first");
                self.pages.push(Page {
                    bytes: Box::default(),
                    slot_bytes: 0,
                    class: 0,
                    live: 0,
                    carved: 0,
                    free_head: NO_SLOT,
                    prev: NIL,
                    next: NIL,
                });
                (self.pages.len() - 1) as u32
            }
        };
        let page = &mut self.pages[id as usize];
        page.bytes = vec![0u8; PAGE_BYTES].into_boxed_slice();
        (page.slot_bytes, page.class) = (u32::from(CLASS_BYTES[class]), class as u8);
        (page.live, page.carved, page.free_head) = (0, 0, NO_SLOT);
        self.classes[class].pages += 1;
        self.link_page(id);
    }

    /// Puts a page at the head of its class's list of pages with room.
    fn link_page(&mut self, id: u32) {
        let class = self.pages[id as usize].class as usize;
        let head = self.classes[class].room_head;
        (self.pages[id as usize].prev, self.pages[id as usize].next) = (NIL, head);
        if head != NIL {
            self.pages[head as usize].prev = id;
        }
        self.classes[class].room_head = id;
    }

    fn unlink_page(&mut self, id: u32) {
        let (class, prev, next) = {
            let page = &self.pages[id as usize];
            (page.class as usize, page.prev, page.next)
        };
        if prev != NIL {
            self.pages[prev as usize].next = next;
        } else {
            self.classes[class].room_head = next;
        }
        if next != NIL {
            self.pages[next as usize].prev = prev;
        }
        (self.pages[id as usize].prev, self.pages[id as usize].next) = (NIL, NIL);
    }

    /// Frees a live slot; returns its large record when `keep` (dropped otherwise). A page
    /// left empty is given back (to the allocator), unless it is its class's only page.
    pub fn free(&mut self, handle: Handle, keep: bool) -> Option<Record> {
        let large = self.take_large(handle);
        let (page_id, slot) = split(handle);
        let page = &mut self.pages[page_id];
        let at = slot * page.slot_bytes as usize;
        debug_assert!(page.bytes[at] & LIVE != 0, "freeing a free slot");
        page.bytes[at] = 0;
        page.bytes[at + 1..at + 3].copy_from_slice(&page.free_head.to_le_bytes());
        page.free_head = slot as u16;
        let was_full = page.prev == NIL && self.classes[page.class as usize].room_head != page_id as u32;
        page.live -= 1;
        let (empty, class) = (page.live == 0, page.class as usize);
        self.live -= 1;
        if was_full {
            self.link_page(page_id as u32);
        }
        if empty && self.classes[class].pages > 1 {
            self.unlink_page(page_id as u32);
            let page = &mut self.pages[page_id];
            (page.bytes, page.slot_bytes, page.carved) = (Box::default(), 0, 0);
            page.free_head = NO_SLOT;
            self.classes[class].pages -= 1;
            self.free_pages.push(page_id as u32);
        }
        large.filter(|_| keep)
    }

    /// Frees a live slot and returns its record: the large one itself, or a copy of an
    /// inline one (for whoever tracks removals).
    pub fn free_into_record(&mut self, handle: Handle) -> Record {
        let copy = (self.slot(handle)[0] & LARGE == 0).then(|| {
            let (key, value) = self.key_value(handle);
            Record::new(key, value)
        });
        let large = self.free(handle, true);
        copy.or(large).expect("a slot's data is inline or large")
    }

    /// The size of a live slot (its class's).
    pub fn slot_bytes(&self, handle: Handle) -> usize {
        self.pages[split(handle).0].slot_bytes as usize
    }

    /// Takes a live slot's large record out (its index freed), if it has one.
    fn take_large(&mut self, handle: Handle) -> Option<Record> {
        let slot = self.slot(handle);
        if slot[0] & LARGE == 0 {
            return None;
        }
        let at = self.data_offset(slot[0]);
        let index = u32::from_le_bytes(slot[at..at + 4].try_into().expect("4 bytes"));
        self.free_large.push(index);
        Some(std::mem::replace(&mut self.large[index as usize], Record::empty()))
    }

    #[inline(always)]
    fn slot(&self, handle: Handle) -> &[u8] {
        let (page_id, slot) = split(handle);
        let page = &self.pages[page_id];
        let size = page.slot_bytes as usize;
        &page.bytes[slot * size..][..size]
    }

    fn slot_mut(&mut self, handle: Handle) -> &mut [u8] {
        let (page_id, slot) = split(handle);
        let page = &mut self.pages[page_id];
        let size = page.slot_bytes as usize;
        &mut page.bytes[slot * size..(slot + 1) * size]
    }

    /// Whether `handle` names a live slot (any handle may be asked: stale expiry entries).
    pub fn is_live(&self, handle: Handle) -> bool {
        let (page_id, slot) = split(handle);
        self.pages
            .get(page_id)
            .is_some_and(|page| slot < page.carved as usize && page.bytes[slot * page.slot_bytes as usize] & LIVE != 0)
    }

    /// Writes `record` into a slot from [`Slab::allocate`], or over a live one of the same
    /// class (keeping its LRU links; its old large record is dropped). `deadline` 0: none.
    pub fn write(&mut self, handle: Handle, shape: Shape, record: Record, version: u64, deadline: u64) {
        let old = self.slot(handle)[0];
        let links = (old & LIVE != 0 && self.links).then(|| self.links_of(handle));
        if old & LARGE != 0 {
            drop(self.take_large(handle));
        }
        debug_assert_eq!(shape, self.shape(record.data_len(), deadline != 0));
        debug_assert_eq!(
            shape.slot_bytes,
            self.slot(handle).len(),
            "a record is written to its class"
        );
        let mut flags = LIVE | if deadline != 0 { DEADLINE } else { 0 };
        if shape.large {
            flags |= LARGE;
        }
        let at = self.data_offset(flags);
        let large_index = shape.large.then(|| self.keep_large(&record));
        let slot = self.slot_mut(handle);
        slot[0] = flags;
        slot[1..3].copy_from_slice(&(record.key().len() as u16).to_le_bytes());
        slot[3..7].copy_from_slice(&(record.value().len() as u32).to_le_bytes());
        slot[7..15].copy_from_slice(&version.to_le_bytes());
        if deadline != 0 {
            slot[15..23].copy_from_slice(&deadline.to_le_bytes());
        }
        match large_index {
            Some(index) => slot[at..at + 4].copy_from_slice(&index.to_le_bytes()),
            None => slot[at..at + record.data_len()].copy_from_slice(record.as_bytes()),
        }
        let (prev, next) = links.unwrap_or((NIL, NIL));
        if self.links {
            self.set_prev(handle, prev);
            self.set_next(handle, next);
        }
        if let Some(index) = large_index {
            self.large[index as usize] = record;
        }
    }

    /// A free index in `large` for `record` (stored there by the caller).
    fn keep_large(&mut self, record: &Record) -> u32 {
        debug_assert!(record.data_len() > 0);
        match self.free_large.pop() {
            Some(index) => index,
            None => {
                self.large.push(Record::empty());
                (self.large.len() - 1) as u32
            }
        }
    }

    /// A live slot, to read several of its fields for one lookup of its page.
    #[inline(always)]
    pub fn view(&self, handle: Handle) -> View<'_> {
        let slot = self.slot(handle);
        View {
            slot,
            data_at: self.data_offset(slot[0]),
            large: &self.large,
        }
    }

    /// Key and value of a live slot.
    #[inline]
    pub fn key_value(&self, handle: Handle) -> (&[u8], &[u8]) {
        self.view(handle).key_value()
    }

    /// The key of a live slot (what every probe of the table compares: the lean path).
    #[inline(always)]
    pub fn key(&self, handle: Handle) -> &[u8] {
        let slot = self.slot(handle);
        let flags = slot[0];
        let key_len = usize::from(u16::from_le_bytes([slot[1], slot[2]]));
        let at = self.data_offset(flags);
        if flags & LARGE != 0 {
            return self.view(handle).key_value().0;
        }
        &slot[at..at + key_len]
    }

    /// The version of a live slot.
    pub fn version(&self, handle: Handle) -> u64 {
        self.view(handle).version()
    }

    /// The deadline of a live slot; 0 when it has none.
    #[inline(always)]
    pub fn deadline(&self, handle: Handle) -> u64 {
        self.view(handle).deadline()
    }

    /// Bytes a live slot accounts: the slot, and a large record's allocation and entry.
    pub fn entry_bytes(&self, handle: Handle) -> usize {
        let slot = self.slot(handle);
        if slot[0] & LARGE == 0 {
            return slot.len();
        }
        let at = self.data_offset(slot[0]);
        let index = u32::from_le_bytes(slot[at..at + 4].try_into().expect("4 bytes"));
        slot.len() + self.large_bytes(&self.large[index as usize]) + LARGE_ENTRY_BYTES
    }

    fn links_at(&self, handle: Handle) -> usize {
        debug_assert!(self.links, "a slab without links");
        HEADER_BYTES
            + if self.slot(handle)[0] & DEADLINE != 0 {
                DEADLINE_BYTES
            } else {
                0
            }
    }

    /// LRU links (previous, next) of a live slot, in a slab with links.
    pub fn links_of(&self, handle: Handle) -> (Handle, Handle) {
        let at = self.links_at(handle);
        let slot = self.slot(handle);
        let word = |at: usize| u32::from_le_bytes(slot[at..at + 4].try_into().expect("4 bytes"));
        (word(at), word(at + 4))
    }

    pub fn set_prev(&mut self, handle: Handle, prev: Handle) {
        let at = self.links_at(handle);
        self.slot_mut(handle)[at..at + 4].copy_from_slice(&prev.to_le_bytes());
    }

    pub fn set_next(&mut self, handle: Handle, next: Handle) {
        let at = self.links_at(handle) + 4;
        self.slot_mut(handle)[at..at + 4].copy_from_slice(&next.to_le_bytes());
    }

    /// Calls `f` on live slots in handle order from `cursor`, examining at most `max_slots`
    /// slots (an unused page counts as one); returns where to go on, or `None` at the end.
    pub fn scan(&self, cursor: Handle, max_slots: usize, mut f: impl FnMut(Handle)) -> Option<Handle> {
        let (mut page_id, mut slot) = split(cursor);
        let mut examined = 0;
        while page_id < self.pages.len() && examined < max_slots.max(1) {
            let page = &self.pages[page_id];
            if slot < page.carved as usize {
                if page.bytes[slot * page.slot_bytes as usize] & LIVE != 0 {
                    f(((page_id as u32) << SLOT_BITS) | slot as u32);
                }
                slot += 1;
            }
            if slot >= page.carved as usize {
                (page_id, slot) = (page_id + 1, 0);
            }
            examined += 1;
        }
        (page_id < self.pages.len()).then_some(((page_id as u32) << SLOT_BITS) | slot as u32)
    }

    /// Every live slot, in handle order.
    pub fn handles(&self) -> impl Iterator<Item = Handle> + '_ {
        self.pages.iter().enumerate().flat_map(|(page_id, page)| {
            (0..page.carved as usize)
                .filter(|&slot| page.bytes[slot * page.slot_bytes as usize] & LIVE != 0)
                .map(move |slot| ((page_id as u32) << SLOT_BITS) | slot as u32)
        })
    }

    /// Checks pages, free lists and large records; panics on the first broken invariant.
    pub fn check(&self) {
        let mut live = 0;
        let mut large_refs = vec![0u8; self.large.len()];
        let mut room = vec![false; self.pages.len()];
        for class in 0..CLASSES {
            let (mut prev, mut id, mut pages) = (NIL, self.classes[class].room_head, 0);
            while id != NIL {
                let page = &self.pages[id as usize];
                assert!(!room[id as usize], "a page listed twice for room");
                room[id as usize] = true;
                assert_eq!(
                    (page.class as usize, page.prev),
                    (class, prev),
                    "room list of class {class}"
                );
                (prev, id, pages) = (id, page.next, pages + 1);
            }
            assert!(pages <= self.classes[class].pages);
        }
        let mut class_pages = [0u32; CLASSES];
        for (id, page) in self.pages.iter().enumerate() {
            if page.bytes.is_empty() {
                assert!(
                    self.free_pages.contains(&(id as u32)) && !room[id],
                    "an unused page is free"
                );
                continue;
            }
            class_pages[page.class as usize] += 1;
            let slots = PAGE_BYTES / page.slot_bytes as usize;
            assert_eq!(page.slot_bytes, u32::from(CLASS_BYTES[page.class as usize]));
            let mut free = vec![false; page.carved as usize];
            let mut slot = page.free_head;
            while slot != NO_SLOT {
                let at = slot as usize * page.slot_bytes as usize;
                assert!(slot < page.carved && !free[slot as usize], "page {id}: free list");
                assert_eq!(page.bytes[at], 0, "a free slot is marked free");
                free[slot as usize] = true;
                slot = u16::from_le_bytes([page.bytes[at + 1], page.bytes[at + 2]]);
            }
            let page_live = (0..page.carved as usize).filter(|&s| !free[s]).count();
            for s in (0..page.carved as usize).filter(|&s| !free[s]) {
                let handle = ((id as u32) << SLOT_BITS) | s as u32;
                assert!(self.is_live(handle), "slot {s} of page {id} neither live nor free");
                let flags = self.slot(handle)[0];
                if flags & LARGE != 0 {
                    let at = self.data_offset(flags);
                    let index = u32::from_le_bytes(self.slot(handle)[at..at + 4].try_into().unwrap());
                    large_refs[index as usize] += 1;
                }
            }
            assert_eq!(page_live, page.live as usize, "page {id}: live count");
            assert_eq!(
                room[id],
                page_live < slots,
                "page {id}: listed for room iff it has room"
            );
            assert!(
                page_live > 0 || self.classes[page.class as usize].pages == 1,
                "empty page kept"
            );
            live += page_live;
        }
        for (class, &pages) in class_pages.iter().enumerate() {
            assert_eq!(pages, self.classes[class].pages, "pages of class {class}");
        }
        assert_eq!(live, self.live, "live slots");
        for &index in &self.free_large {
            assert_eq!(large_refs[index as usize], 0, "a free large index is referenced");
            assert_eq!(self.large[index as usize].data_len(), 0, "a free large entry is empty");
            large_refs[index as usize] = 2;
        }
        assert!(
            large_refs.iter().all(|&refs| refs == 1 || refs == 2),
            "every large record is held once"
        );
    }
}

/// A live slot's bytes, and where its data starts.
#[derive(Clone, Copy)]
pub struct View<'a> {
    slot: &'a [u8],
    data_at: usize,
    large: &'a [Record],
}

impl<'a> View<'a> {
    /// Key and value.
    #[inline(always)]
    pub fn key_value(self) -> (&'a [u8], &'a [u8]) {
        let slot = self.slot;
        let key_len = usize::from(u16::from_le_bytes([slot[1], slot[2]]));
        let value_len = u32::from_le_bytes([slot[3], slot[4], slot[5], slot[6]]) as usize;
        let at = self.data_at;
        let data = if slot[0] & LARGE != 0 {
            let index = u32::from_le_bytes(slot[at..at + 4].try_into().expect("4 bytes"));
            self.large[index as usize].as_bytes()
        } else {
            &slot[at..at + key_len + value_len]
        };
        data.split_at(key_len)
    }

    /// The version (the ETag).
    #[inline(always)]
    pub fn version(self) -> u64 {
        u64::from_le_bytes(self.slot[7..15].try_into().expect("8 bytes"))
    }

    /// The deadline; 0 when it has none.
    #[inline(always)]
    pub fn deadline(self) -> u64 {
        if self.slot[0] & DEADLINE == 0 {
            return 0;
        }
        u64::from_le_bytes(self.slot[15..23].try_into().expect("8 bytes"))
    }
}

fn split(handle: Handle) -> (usize, usize) {
    ((handle >> SLOT_BITS) as usize, (handle & SLOT_MASK) as usize)
}

/// The chunk glibc malloc nominally hands out for `len` bytes (16-byte granules, a 32-byte
/// minimum, its 8-byte header included), 0 for none: [`Record::allocated_bytes`] when no
/// remainder is left unsplit.
pub fn nominal_chunk_bytes(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    ((len + 8 + 15) & !15).max(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_size_with_little_waste() {
        // Goal: every slot need maps to the smallest class at least that big, and small
        // records waste at most 3 bytes.
        for need in SLOT_BYTES_MIN..=SLOT_BYTES_MAX {
            let class = class_of(need);
            assert!(CLASS_BYTES[class] as usize >= need, "{need}");
            assert!(class == 0 || (CLASS_BYTES[class - 1] as usize) < need, "{need}");
            if need <= 256 {
                assert!(CLASS_BYTES[class] as usize - need <= 3, "{need}");
            }
        }
    }

    #[test]
    fn the_memory_benchmarks_record_takes_92_bytes() {
        // Goal: an 11-byte key with a 64-byte value (scripts/memory.sh) fits a 92-byte slot;
        // growing the header is a deliberate change (docs/BENCHMARKS.md, "Memory per key").
        assert_eq!(Slab::new(false).shape(75, false).slot_bytes, 92);
        assert_eq!(Slab::new(true).shape(75, false).slot_bytes, 100);
        assert_eq!(Slab::new(false).shape(75, true).slot_bytes, 100);
    }

    #[test]
    fn slots_round_trip_and_empty_pages_go_back() {
        // Goal: records read back as written (inline and large), freed slots are reused, and
        // a page left empty is dropped unless it is its class's last.
        let mut slab = Slab::new(true);
        let shape = slab.shape(20, false);
        let handles: Vec<Handle> = (0..2000u32)
            .map(|i| {
                let handle = slab.allocate(shape);
                slab.write(
                    handle,
                    shape,
                    Record::new(format!("key{i:05}").as_bytes(), &[7u8; 12]),
                    u64::from(i) + 1,
                    0,
                );
                handle
            })
            .collect();
        slab.check();
        let pages = slab.page_bytes();
        assert!(pages >= 2 * PAGE_BYTES);
        for (i, &handle) in handles.iter().enumerate() {
            assert_eq!(
                slab.key_value(handle),
                (format!("key{i:05}").as_bytes(), &[7u8; 12][..])
            );
            assert_eq!((slab.version(handle), slab.deadline(handle)), (i as u64 + 1, 0));
        }
        let big = vec![9u8; 5000];
        let large = slab.shape(big.len() + 3, true);
        assert!(large.large);
        let handle = slab.allocate(large);
        slab.write(handle, large, Record::new(b"big", &big), 5, 77);
        assert_eq!(slab.key_value(handle), (&b"big"[..], &big[..]));
        assert_eq!(slab.deadline(handle), 77);
        assert!(slab.entry_bytes(handle) > 5000);
        slab.check();
        assert_eq!(slab.free(handle, true).map(|r| r.data_len()), Some(5003));
        for &handle in &handles {
            slab.free(handle, false);
        }
        slab.check();
        assert_eq!(slab.len(), 0);
        assert_eq!(slab.page_bytes(), 2 * PAGE_BYTES, "one page kept per class used");
        assert!(!slab.is_live(handles[0]) && !slab.is_live(NIL));
    }
}
