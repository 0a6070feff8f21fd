//! Responses too long to buffer: a prefix listing streamed as a chunked body, one bounded
//! chunk at a time, as the shards' pages arrive; and a watch, an event stream that lasts as
//! long as the connection.
//!
//! Owns writing those responses to the socket [`super::conn`] hands over once the batch's
//! earlier responses are written. What the parameters and the body mean is
//! [`crate::api::list`]'s; which shard answers which page is [`crate::shard::listing`]'s. It
//! holds at most one chunk (`LIST_CHUNK_BYTES`, plus one item) besides the listing's pages,
//! and one event besides a watcher's bounded channels (`WATCH_QUEUE_EVENTS_MAX` changes, about
//! `WATCH_QUEUE_BYTES_MAX` bytes, per source).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures_lite::{AsyncWriteExt, future};
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::channels::shared_channel::{self, ConnectedReceiver};
use glommio::net::TcpStream;

use crate::api::list::{ListBody, ListSpec};
use crate::api::render_error;
use crate::api::watch::{self, WatchSpec};
use crate::error::Error;
use crate::http::response;
use crate::limits::{LIST_CHUNK_BYTES, WATCH_HEARTBEAT_MS, WATCH_QUEUE_BYTES_MAX, WATCH_QUEUE_EVENTS_MAX};
use crate::shard::ShardId;
use crate::shard::context::ShardContext;
use crate::shard::listing::Listing;
use crate::shard::message::{Change, WatchRequest, WatchStart, WatchTarget};
use crate::shard::watch::{WatchSender, WatchShared};
use crate::sync::oneshot;
use crate::sync::shim::{Arc, Ordering};

/// Streams the listing `spec` asks for; returns its status. `out` is the connection's
/// (empty) write buffer. A shard that stops answering before the head is written gets a 503;
/// after it, the response is cut short (no last chunk) and the connection ends with an error,
/// so a client never mistakes a partial listing for a whole one.
pub async fn list(
    shard: &ShardContext,
    spec: &ListSpec,
    keep_alive: bool,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
) -> io::Result<u16> {
    debug_assert!(out.is_empty(), "earlier responses are written before a stream starts");
    let mut listing = Listing::new(shard.nr_shards, spec.prefix.clone(), spec.after.clone(), spec.values);
    let mut next = match listing.next(shard).await {
        Ok(first) => first,
        Err(error) => {
            let status = render_error(out, &error, keep_alive);
            stream.write_all(out).await?;
            out.clear();
            return Ok(status);
        }
    };
    response::chunked_head(out, 200, response::JSON, keep_alive);
    let mut body = ListBody::new(spec.values);
    let mut chunk = Vec::with_capacity(LIST_CHUNK_BYTES + LIST_CHUNK_BYTES / 4);
    body.open(&mut chunk);
    let mut last = None;
    while let Some(record) = next.take() {
        if spec.limit.is_some_and(|limit| body.items() >= limit) {
            next = Some(record);
            break;
        }
        body.item(&mut chunk, record.key(), record.value());
        last = Some(record);
        if chunk.len() >= LIST_CHUNK_BYTES {
            response::chunk(out, &chunk);
            chunk.clear();
            stream.write_all(out).await?;
            out.clear();
        }
        next = listing
            .next(shard)
            .await
            .map_err(|error| io::Error::other(format!("listing cut short: {error}")))?;
    }
    // More keys remain only when the limit stopped the listing with one in hand.
    let cursor = next
        .is_some()
        .then(|| last.as_ref().map(|record| record.key()))
        .flatten();
    body.close(&mut chunk, cursor);
    response::chunk(out, &chunk);
    out.extend_from_slice(response::LAST_CHUNK);
    stream.write_all(out).await?;
    out.clear();
    Ok(200)
}

/// Where one source's changes arrive: this shard's registry, or another shard's.
enum Changes {
    Local(LocalReceiver<Arc<Change>>),
    Remote(ConnectedReceiver<Arc<Change>>),
}

impl Changes {
    async fn recv(self, source: usize) -> (usize, Option<Arc<Change>>, Changes) {
        let change = match &self {
            Changes::Local(receiver) => receiver.recv().await,
            Changes::Remote(receiver) => receiver.recv().await,
        };
        (source, change, self)
    }
}

type Pending = Pin<Box<dyn Future<Output = (usize, Option<Arc<Change>>, Changes)>>>;

/// What woke a watch.
enum Wake {
    Change(usize, Option<Arc<Change>>, Changes),
    Heartbeat,
    Shutdown,
}

/// Streams the changes `spec` watches as Server-Sent Events until the client goes, the shard
/// drops the watcher for falling behind (a last `dropped` event), or shutdown; returns its
/// status. Registers on the key's owner, or on every shard for a prefix; a resume point no
/// longer retained answers a last `compacted` event. The connection closes afterwards.
pub async fn watch(
    shard: &ShardContext,
    spec: &WatchSpec,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
) -> io::Result<u16> {
    let shared = Arc::new(WatchShared::default());
    // However this ends (an error included), the registries may forget the watcher.
    let _gone = Gone(Arc::clone(&shared));
    let owners: Vec<ShardId> = match &spec.target {
        WatchTarget::Key(key) => vec![shard.owner(key)],
        WatchTarget::Prefix(_) => (0..shard.nr_shards).collect(),
    };
    let mut sources = Vec::with_capacity(owners.len());
    let mut seqs = Vec::with_capacity(owners.len());
    let mut compacted = None;
    for (at, &owner) in owners.iter().enumerate() {
        let from = spec.from.as_ref().map(|from| from[at]);
        let (changes, start) = register(shard, owner, &spec.target, from, &shared).await;
        match start {
            WatchStart::Started { seq } => seqs.push(from.unwrap_or(seq)),
            WatchStart::Compacted { oldest_seq } => {
                compacted = Some(oldest_seq);
                seqs.push(0);
            }
            WatchStart::Refused(why) => {
                let status = render_error(out, &Error::Unavailable(why), false);
                stream.write_all(out).await?;
                out.clear();
                return Ok(status);
            }
        }
        sources.push(changes);
    }
    watch::head(out);
    if let Some(oldest_seq) = compacted {
        let why = "the changes after this resume point are no longer retained: re-read, then watch again";
        watch::last(out, "compacted", why, Some(("oldest_seq", oldest_seq)));
        stream.write_all(out).await?;
        out.clear();
        return Ok(200);
    }
    watch::ready(out, &seqs);
    stream.write_all(out).await?;
    out.clear();
    let prefix = matches!(spec.target, WatchTarget::Prefix(_)).then_some(&owners[..]);
    stream_changes(shard, sources, prefix, seqs, &shared, stream, out).await
}

/// Writes each change as it arrives from `sources` (whose shards `prefix` names, for a prefix
/// watch), heartbeats while idle, and the last event when the watch ends.
async fn stream_changes(
    shard: &ShardContext,
    sources: Vec<Changes>,
    prefix: Option<&[ShardId]>,
    mut seqs: Vec<u64>,
    shared: &WatchShared,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
) -> io::Result<u16> {
    let mut pending: Vec<Pending> = sources
        .into_iter()
        .enumerate()
        .map(|(at, changes)| Box::pin(changes.recv(at)) as Pending)
        .collect();
    // Changes taken from their sources but not written yet: at most one per source (a
    // source is asked again only once its change is written).
    let mut held: Vec<Wake> = Vec::new();
    loop {
        let wake = match oldest_held(&mut pending, &mut held).await {
            Some(wake) => wake,
            None => {
                let wake = future::or(
                    future::or(next_change(&mut pending), async {
                        glommio::timer::sleep(Duration::from_millis(WATCH_HEARTBEAT_MS)).await;
                        Wake::Heartbeat
                    }),
                    async {
                        shard.latches.shutdown.wait().await;
                        Wake::Shutdown
                    },
                )
                .await;
                if let Wake::Change(..) = wake {
                    // Written once the other sources were looked at: see `oldest_held`.
                    held.push(wake);
                    continue;
                }
                wake
            }
        };
        match wake {
            Wake::Change(at, Some(change), changes) => {
                pending.push(Box::pin(changes.recv(at)));
                shared.queued_bytes.fetch_sub(change.bytes(), Ordering::Relaxed);
                seqs[at] = change.seq;
                watch::change(out, &change, prefix.map(|owners| owners[at]), &seqs);
            }
            Wake::Change(..) => {
                if shared.dropped.load(Ordering::Acquire) {
                    let why = format!(
                        "this watcher fell behind (more than {WATCH_QUEUE_EVENTS_MAX} changes or \
                         {WATCH_QUEUE_BYTES_MAX} bytes queued) and was dropped: re-read, then watch again"
                    );
                    watch::last(out, "dropped", &why, None);
                }
                // Otherwise a shard stopped (shutting down): the stream just ends.
                stream.write_all(out).await?;
                out.clear();
                return Ok(200);
            }
            Wake::Heartbeat => out.extend_from_slice(watch::HEARTBEAT),
            Wake::Shutdown => {
                watch::last(out, "shutdown", "the server is shutting down", None);
                stream.write_all(out).await?;
                out.clear();
                return Ok(200);
            }
        }
        stream.write_all(out).await?;
        out.clear();
    }
}

/// Marks a watch's shared state `gone` when dropped.
struct Gone(Arc<WatchShared>);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.gone.store(true, Ordering::Release);
    }
}

/// The next change from any source (the one that answered is taken out of `pending`).
async fn next_change(pending: &mut Vec<Pending>) -> Wake {
    future::poll_fn(|cx| {
        for at in 0..pending.len() {
            if let Poll::Ready((source, change, changes)) = pending[at].as_mut().poll(cx) {
                drop(pending.swap_remove(at));
                return Poll::Ready(Wake::Change(source, change, changes));
            }
        }
        Poll::Pending
    })
    .await
}

/// Takes every change its source already has (without waiting) into `held`, then hands out
/// the oldest held one by its owner's clock; a source that ended comes out only after every
/// held change. For a prefix watch this keeps one client's writes in their order across
/// shards: a change it made after another was acknowledged is already queued behind it.
/// `None` when nothing is held.
async fn oldest_held(pending: &mut Vec<Pending>, held: &mut Vec<Wake>) -> Option<Wake> {
    if held.is_empty() {
        return None;
    }
    let mut at = 0;
    while at < pending.len() {
        match future::poll_once(&mut pending[at]).await {
            Some((source, change, changes)) => {
                drop(pending.swap_remove(at));
                held.push(Wake::Change(source, change, changes));
            }
            None => at += 1,
        }
    }
    // Changes oldest first (one without a time, replayed from the history, before any live
    // one), then the sources that ended.
    let order = |wake: &Wake| match wake {
        Wake::Change(_, Some(change), _) => (false, change.at),
        _ => (true, None),
    };
    let oldest = (0..held.len()).min_by_key(|&at| order(&held[at]))?;
    Some(held.swap_remove(oldest))
}

/// Registers a watcher of `target` on `owner`, with a channel to this connection.
async fn register(
    shard: &ShardContext,
    owner: ShardId,
    target: &WatchTarget,
    from: Option<u64>,
    shared: &Arc<WatchShared>,
) -> (Changes, WatchStart) {
    if owner == shard.id {
        let (sender, receiver) = local_channel::new_bounded(WATCH_QUEUE_EVENTS_MAX);
        let start = shard
            .watch
            .register(target.clone(), from, WatchSender::Local(sender), Arc::clone(shared));
        return (Changes::Local(receiver), start);
    }
    let (sender, receiver) = shared_channel::new_bounded(WATCH_QUEUE_EVENTS_MAX);
    let (reply, answer) = oneshot::channel();
    let request = WatchRequest {
        target: target.clone(),
        from,
        sender,
        shared: Arc::clone(shared),
        reply,
    };
    shard.counters.count_message_sent();
    let gone = WatchStart::Refused("a shard did not answer the watch (shutting down)");
    if shard.router.ask_watch(owner, request).await.is_err() {
        // The request (and its sender) came back dropped: connecting would not wait.
        return (Changes::Remote(receiver.connect().await), gone);
    }
    let receiver = receiver.connect().await;
    let start = answer.await.unwrap_or(gone);
    (Changes::Remote(receiver), start)
}
