//! The peer transport: shard `s` of a node listens on its peer port + `s` x
//! [`PEER_PORT_STRIDE_PER_SHARD`] and dials the same shard of every other member, so a group's
//! traffic never crosses shards. A connection carries frames one way, dialer to listener: a
//! handshake (node id, shard, shard count), answered by one status frame, then raft messages
//! and snapshot transfers' frames ([`super::codec`]), the dialer writing a snapshot's next
//! chunk only when no raft frame waits ([`super::transfer`]).
//!
//! Owns peer sockets and their frames. It never touches a store and never blocks the
//! executor; a peer that is slow or gone loses frames (bounded queues), never memory.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::LocalReceiver;
use glommio::net::{TcpListener, TcpStream};
use log::{debug, error, info};
use protobuf::Message as _;
use raft::eraftpb::Message;
use raft::eraftpb::MessageType;

use super::codec::{self, HANDSHAKE_BYTES, Handshake, PeerFrame};
use super::transfer::Lane;
use crate::limits::{
    PEER_CONNECTIONS_PER_SHARD_MAX, PEER_FRAME_BYTES_MAX, PEER_FRAME_READ_CHUNK_BYTES, PEER_HANDSHAKE_TIMEOUT_MS,
    PEER_PORT_STRIDE_PER_SHARD, PEER_RECONNECT_BACKOFF_MS,
};
use crate::shard::ShardId;
use crate::shard::context::ShardContext;

/// A refused handshake keeps its dialer away this much longer than a failed connection.
const REFUSED_BACKOFF_FACTOR: u64 = 25;

/// Where shard `shard` of the node whose peer address is `addr` listens.
pub fn shard_addr(addr: SocketAddr, shard: ShardId) -> Result<SocketAddr, String> {
    let port = u16::try_from(shard)
        .ok()
        .and_then(|shard| shard.checked_mul(PEER_PORT_STRIDE_PER_SHARD))
        .and_then(|offset| addr.port().checked_add(offset))
        .ok_or_else(|| {
            format!("peer address {addr}: shard {shard}'s port (+{PEER_PORT_STRIDE_PER_SHARD} per shard) is past 65535")
        })?;
    Ok(SocketAddr::new(addr.ip(), port))
}

/// Accepts peers' connections for this shard's group until the executor stops.
pub async fn listen_forever(shard: Rc<ShardContext>, addr: SocketAddr) {
    let listener = match TcpListener::bind(addr) {
        Ok(listener) => listener,
        Err(e) => {
            error!("shard {}: cannot listen for peers on {addr}: {e}", shard.id);
            shard.latches.shutdown.count_down();
            return;
        }
    };
    let open = Rc::new(std::cell::Cell::new(0usize));
    loop {
        match listener.accept().await {
            Ok(stream) if open.get() >= PEER_CONNECTIONS_PER_SHARD_MAX => {
                crate::warn_limited!(
                    "shard {}: {PEER_CONNECTIONS_PER_SHARD_MAX} peer connections already open; closing a new one",
                    shard.id
                );
                drop(stream);
            }
            Ok(stream) => {
                let (shard, open) = (Rc::clone(&shard), Rc::clone(&open));
                open.set(open.get() + 1);
                glommio::spawn_local(async move {
                    serve_peer(shard, stream).await;
                    open.set(open.get() - 1);
                })
                .detach();
            }
            Err(e) => {
                crate::warn_limited!("shard {}: peer accept failed: {e}", shard.id);
                glommio::timer::sleep(Duration::from_millis(PEER_RECONNECT_BACKOFF_MS)).await;
            }
        }
    }
}

/// Reads one peer's handshake, refuses a mismatch, then takes every frame it sends.
async fn serve_peer(shard: Rc<ShardContext>, mut stream: TcpStream) {
    let Some(group) = shard.replication.as_ref() else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(PEER_HANDSHAKE_TIMEOUT_MS)));
    let mut bytes = [0u8; HANDSHAKE_BYTES];
    if stream.read_exact(&mut bytes).await.is_err() {
        return;
    }
    let verdict = Handshake::decode(&bytes).and_then(|peer| {
        if peer.nr_shards as usize != shard.nr_shards {
            Err(format!(
                "node {} runs {} shards and this node runs {}: every node of a cluster must run \
                 the same shard count (--shards)",
                peer.node_id, peer.nr_shards, shard.nr_shards
            ))
        } else if peer.shard as usize != shard.id {
            Err(format!(
                "node {} dialed shard {} on shard {}'s port",
                peer.node_id, peer.shard, shard.id
            ))
        } else if !group.members().iter().any(|(id, _)| *id == peer.node_id) || peer.node_id == group.node_id() {
            Err(format!(
                "node {} is not a member of this cluster (--peers)",
                peer.node_id
            ))
        } else {
            Ok(peer)
        }
    });
    let answer = match &verdict {
        Ok(_) => Vec::new(),
        Err(why) => why.clone().into_bytes(),
    };
    if stream.write_all(&super::codec::frame(&answer)).await.is_err() {
        return;
    }
    let peer = match verdict {
        Ok(peer) => peer,
        Err(why) => {
            error!("shard {}: refused a peer: {why}", shard.id);
            return;
        }
    };
    debug!("shard {}: node {} connected", shard.id, peer.node_id);
    let _ = stream.set_read_timeout(None);
    let connection = group.open_connection();
    let mut payload = Vec::new();
    while read_frame(&mut stream, &mut payload).await.is_ok() {
        let taken = match codec::decode_frame(&payload) {
            Some(PeerFrame::Raft(bytes)) => match Message::parse_from_bytes(bytes) {
                // A snapshot comes only as a transfer: begin, then chunks.
                Ok(message) if message.from == peer.node_id && message.get_msg_type() != MessageType::MsgSnapshot => {
                    group.step(message);
                    Ok(())
                }
                _ => Err("a malformed raft message".to_string()),
            },
            Some(frame) => group.receive_snapshot(connection, peer.node_id, frame, shard.args.raft_snapshot_bytes_max),
            None => Err("a frame of an unknown kind".to_string()),
        };
        if let Err(why) = taken {
            // Rate-limited: a leader sends a refused snapshot again after each reconnect.
            crate::log_limited!(
                ::log::Level::Error,
                "shard {}: node {} sent {why}; closing",
                shard.id,
                peer.node_id
            );
            break;
        }
    }
    group.close_connection(connection);
}

/// Reads one length-prefixed frame into `payload`; refuses one past `PEER_FRAME_BYTES_MAX`.
/// The buffer grows only as bytes arrive (by `PEER_FRAME_READ_CHUNK_BYTES` at most ahead of
/// them), never from the declared length alone.
async fn read_frame(stream: &mut TcpStream, payload: &mut Vec<u8>) -> std::io::Result<()> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > PEER_FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("peer frame of {len} bytes is past the limit of {PEER_FRAME_BYTES_MAX}"),
        ));
    }
    payload.clear();
    while payload.len() < len {
        let have = payload.len();
        payload.resize(len.min(have + PEER_FRAME_READ_CHUNK_BYTES), 0);
        stream.read_exact(&mut payload[have..]).await?;
    }
    if payload.capacity() > 4 * PEER_FRAME_READ_CHUNK_BYTES && len <= PEER_FRAME_READ_CHUNK_BYTES {
        payload.shrink_to(PEER_FRAME_READ_CHUNK_BYTES);
    }
    Ok(())
}

/// Where and how [`dial_forever`] reaches one peer's shard.
pub struct Dialer {
    pub peer: u64,
    pub addr: SocketAddr,
    pub handshake: Handshake,
    /// Snapshot chunk size, in bytes (`--raft-snapshot-chunk-bytes`).
    pub chunk_bytes: usize,
}

/// Keeps a connection to one peer's shard and writes the frames queued for it, dialing again
/// after `PEER_RECONNECT_BACKOFF_MS` whenever it fails. Frames queued while it is down wait in
/// the bounded queue; past it the group drops them. A snapshot transfer on `lane` goes out one
/// chunk at a time whenever the queue is empty; a failed connection fails it.
pub async fn dial_forever(dialer: Dialer, outbox: LocalReceiver<Vec<u8>>, lane: Rc<Lane>) {
    let Dialer {
        peer,
        addr,
        handshake,
        chunk_bytes,
    } = dialer;
    let backoff = Duration::from_millis(PEER_RECONNECT_BACKOFF_MS);
    let mut was_connected = false;
    loop {
        let mut stream = match connect(addr, handshake).await {
            Ok(stream) => stream,
            Err(Refused(why)) => {
                error!(
                    "shard {}: node {peer} at {addr} refused this node: {why}",
                    handshake.shard
                );
                lane.failed();
                glommio::timer::sleep(backoff * REFUSED_BACKOFF_FACTOR as u32).await;
                continue;
            }
            Err(Failed(e)) => {
                if was_connected {
                    info!("shard {}: lost node {peer} at {addr}: {e}", handshake.shard);
                    was_connected = false;
                }
                lane.failed();
                glommio::timer::sleep(backoff).await;
                continue;
            }
        };
        if !was_connected {
            info!("shard {}: connected to node {peer} at {addr}", handshake.shard);
            was_connected = true;
        }
        if write_until_failed(&mut stream, &outbox, &lane, chunk_bytes)
            .await
            .is_err()
        {
            lane.failed();
        }
    }
}

/// Writes queued frames first, and a snapshot chunk only when none waits, until a write fails.
async fn write_until_failed(
    stream: &mut TcpStream,
    outbox: &LocalReceiver<Vec<u8>>,
    lane: &Lane,
    chunk_bytes: usize,
) -> std::io::Result<()> {
    loop {
        // `or` polls the queue first: a queued frame always goes before the next chunk.
        let frame = futures_lite::future::or(async { outbox.recv().await.map(Ok) }, async {
            lane.wait().await;
            Some(Err(()))
        })
        .await;
        match frame {
            Some(Ok(frame)) => stream.write_all(&frame).await?,
            Some(Err(())) => {
                if let Some(next) = lane.next_frame(chunk_bytes) {
                    stream.write_all(&next.frame).await?;
                    lane.written(next.transfer, next.written);
                    // A transfer on a fast link must not keep the shard's other tasks waiting.
                    glommio::yield_if_needed().await;
                }
            }
            // The group is gone (the executor stops): nothing more to write.
            None => std::future::pending::<()>().await,
        }
    }
}

enum DialError {
    /// The peer answered the handshake with a refusal.
    Refused(String),
    Failed(std::io::Error),
}
use DialError::{Failed, Refused};

async fn connect(addr: SocketAddr, handshake: Handshake) -> Result<TcpStream, DialError> {
    let timeout = Duration::from_millis(PEER_HANDSHAKE_TIMEOUT_MS);
    let mut stream = TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(|e| Failed(e.into()))?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(timeout));
    stream.write_all(&handshake.encode()).await.map_err(Failed)?;
    let mut answer = Vec::new();
    read_frame(&mut stream, &mut answer).await.map_err(Failed)?;
    if !answer.is_empty() {
        return Err(Refused(String::from_utf8_lossy(&answer).into_owned()));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ports_step_by_the_stride_and_stop_at_65535() {
        let addr: SocketAddr = "127.0.0.1:7101".parse().unwrap();
        assert_eq!(shard_addr(addr, 0).unwrap(), addr);
        assert_eq!(shard_addr(addr, 2).unwrap().port(), 7301);
        let high: SocketAddr = "127.0.0.1:65500".parse().unwrap();
        assert!(shard_addr(high, 1).unwrap_err().contains("past 65535"));
    }
}
