//! A prefix listing across every shard: one page per shard at a time, merged into one stream
//! of keys in byte order.
//!
//! Owns the k-way merge and when each shard is asked for its next page: only once the
//! listing has consumed the shard's previous one, so a listing holds at most one page per shard
//! ([`crate::limits::LIST_PAGE_KEYS_MAX`] keys, about [`crate::limits::LIST_PAGE_BYTES_MAX`]
//! bytes). This shard's page is read from its own index; the others' are asked over the mesh.
//! It never touches a socket or renders HTTP, and never holds a borrow of the store or index
//! across an await.

use std::collections::VecDeque;

use super::context::ShardContext;
use super::message::{ListQuery, Record};
use crate::error::Error;

/// One shard's part of the merge.
struct Source {
    /// The rest of the shard's current page, in byte order.
    items: VecDeque<Record>,
    /// Where to ask from next; `None` once the shard has said it is done.
    resume_after: Option<Box<[u8]>>,
    /// Whether a page must be asked for before this source has anything to say.
    needs_page: bool,
}

/// Keys with a prefix from every shard, in byte order.
pub struct Listing {
    prefix: Box<[u8]>,
    values: bool,
    sources: Vec<Source>,
}

const GONE: &str = "a shard did not answer the listing (shutting down)";

impl Listing {
    /// A listing of the keys that start with `prefix` and sort after `after`, across
    /// `nr_shards` shards; `values` fetches their values too.
    pub fn new(nr_shards: usize, prefix: Box<[u8]>, after: Option<Box<[u8]>>, values: bool) -> Listing {
        let sources = (0..nr_shards)
            .map(|_| Source {
                items: VecDeque::new(),
                resume_after: after.clone(),
                needs_page: true,
            })
            .collect();
        Listing {
            prefix,
            values,
            sources,
        }
    }

    /// The next key (with its value when asked) in byte order, `None` when every shard is
    /// done; an error when a shard did not answer.
    pub async fn next(&mut self, shard: &ShardContext) -> Result<Option<Record>, Error> {
        self.fetch_pages(shard).await?;
        let mut first: Option<usize> = None;
        for (at, source) in self.sources.iter().enumerate() {
            let Some(head) = source.items.front() else {
                continue;
            };
            if first.is_none_or(|best| head.key() < self.sources[best].items[0].key()) {
                first = Some(at);
            }
        }
        let Some(at) = first else {
            return Ok(None);
        };
        let source = &mut self.sources[at];
        let item = source.items.pop_front();
        // A shard that still has keys is asked again only once its page is used up.
        source.needs_page = source.items.is_empty() && source.resume_after.is_some();
        Ok(item)
    }

    /// Asks every source whose page is used up (and that is not done) for its next one, the
    /// remote ones all at once, and waits for the answers.
    async fn fetch_pages(&mut self, shard: &ShardContext) -> Result<(), Error> {
        loop {
            let mut pending = Vec::new();
            for (peer, source) in self.sources.iter_mut().enumerate() {
                if !source.needs_page {
                    continue;
                }
                let query = ListQuery {
                    prefix: self.prefix.clone(),
                    after: source.resume_after.take(),
                    values: self.values,
                };
                if peer == shard.id {
                    let page = shard.list_page(&query);
                    source.items = page.items.into();
                    source.resume_after = page.resume_after;
                    source.needs_page = source.items.is_empty() && source.resume_after.is_some();
                    continue;
                }
                shard.counters.count_message_sent();
                let receiver = shard
                    .router
                    .ask_list(peer, query)
                    .await
                    .map_err(|_| Error::Unavailable(GONE))?;
                pending.push((peer, receiver));
            }
            if pending.is_empty() {
                return Ok(());
            }
            for (peer, receiver) in pending {
                let page = receiver.await.map_err(|_| Error::Unavailable(GONE))?;
                let source = &mut self.sources[peer];
                source.items = page.items.into();
                source.resume_after = page.resume_after;
                // An empty page that can go on (only expired keys examined): ask again.
                source.needs_page = source.items.is_empty() && source.resume_after.is_some();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;
    use crate::limits::LIST_PAGE_KEYS_MAX;
    use crate::shard::harness::{Layout, on_shards};
    use crate::shard::shard_for;
    use crate::shard::store::Store;

    #[test]
    fn keys_from_every_shard_come_merged_in_byte_order() {
        let total = LIST_PAGE_KEYS_MAX * 3 + 11;
        let store = move |id| {
            let mut store = Store::default();
            for i in 0..total {
                let key = format!("p/{i:05}");
                if shard_for(key.as_bytes(), 2) == id {
                    store.put(Record::new(key.as_bytes(), b"v"), None);
                }
            }
            store.put(Record::new(b"q", b"v"), None);
            store
        };
        let layout = Layout {
            cpus: vec![0, 0],
            args: ServeArgs::from_flags(&["--key-index"]),
            gone: vec![],
        };
        let keys = on_shards(layout, store, |shard| async move {
            let mut listing = Listing::new(2, Box::from(&b"p/"[..]), Some(Box::from(&b"p/00004"[..])), true);
            let mut keys = Vec::new();
            while let Some(record) = listing.next(&shard).await.unwrap() {
                assert_eq!(record.value(), b"v");
                keys.push(String::from_utf8(record.key().to_vec()).unwrap());
            }
            keys
        });
        assert_eq!(keys.len(), total - 5, "every key after the cursor, once");
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "byte order across shards");
        assert_eq!(keys[0], "p/00005");
    }
}
