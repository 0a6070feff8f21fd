//! Responses too long to buffer: a prefix listing streamed as a chunked body, one bounded
//! chunk at a time, as the shards' pages arrive.
//!
//! Owns writing those responses to the socket [`super::conn`] hands over once the batch's
//! earlier responses are written. What the parameters and the body mean is
//! [`crate::api::list`]'s; which shard answers which page is [`crate::shard::listing`]'s. It
//! holds at most one chunk (`LIST_CHUNK_BYTES`, plus one item) besides the listing's pages.

use std::io;

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use crate::api::list::{ListBody, ListSpec};
use crate::api::render_error;
use crate::http::response;
use crate::limits::LIST_CHUNK_BYTES;
use crate::shard::context::ShardContext;
use crate::shard::listing::Listing;

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
