//! The bytes replication puts on the wire and in the Raft log: a log entry's batch of store
//! commands, the peer handshake, and the length-prefixed frames that carry raft-rs messages.
//!
//! A frame on a peer connection after the handshake is a u32 LE length, then a kind byte:
//!
//! | kind | frame | fields after the kind |
//! |---|---|---|
//! | 1 | raft message | the raft-rs `Message` (protobuf) |
//! | 2 | snapshot begin | transfer id (u64), data length (u64), CRC32C of the data (u32), the `MsgSnapshot` with its data left out (protobuf) |
//! | 3 | snapshot chunk | transfer id (u64), offset of these bytes in the data (u64), the bytes |
//!
//! (`replication::transfer` says how a snapshot's frames follow each other.)
//!
//! An entry is the proposer (node id, incarnation, sequence: u64 LE each), then its commands,
//! each a tag byte, the key (u32 LE length, bytes) and the tag's fields:
//!
//! | tag | command | fields after the key |
//! |---|---|---|
//! | 1 | read | — |
//! | 2 | put, no TTL | value (u32 length, bytes), condition (u64) |
//! | 3 | put, *relative* TTL: written only by builds before issue #13, still read | value, ttl ms (u64), condition |
//! | 4 | update | value, condition |
//! | 5 | delete | condition |
//! | 6 | put until an absolute deadline | value, deadline in unix ms (u64), condition |
//! | 7 | expire (the leader's conditional delete) | the version it saw expire (u64) |
//!
//! A TTL is turned into its deadline once, by the proposer ([`encode_entry`]), so every
//! replica applies the same one (tag 6). A tag-3 entry a previous build left in a Raft log on
//! disk still decodes, as the relative TTL it was, and applies as that build applied it (from
//! the moment it applies). Peers of a build that writes tags 6 and 7 speak
//! [`PROTOCOL_VERSION`] 2, so a previous build (1) is refused at the handshake rather than
//! skipping entries it cannot read.
//!
//! Owns encoding and decoding only. It never performs I/O and never touches a store; a decoder
//! refuses anything malformed (an error, never a panic).

use crate::shard::message::{Condition, Op, Record};

/// One command of a committed entry, as every replica applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A store operation applied as it reads: a read, a put without TTL, an update, a delete,
    /// or (from a previous build's log only) a put with a TTL relative to when it applies.
    Op(Op),
    /// A put whose TTL the proposer turned into a wall-clock deadline.
    PutUntil {
        record: Record,
        expires_at_unix_ms: u64,
        condition: Condition,
    },
    /// The leader saw `key` at `version` expire: remove it if it still has that version (a
    /// key written since survives).
    Expire { key: Box<[u8]>, version: u64 },
}

/// Opens every peer connection: "corekv raft".
pub const HANDSHAKE_MAGIC: [u8; 4] = *b"CKVR";
/// The peer protocol's version; a peer speaking another is refused. 2: entries carry absolute
/// deadlines and expire commands (issue #13). 3: frames open with a kind, and a snapshot's data
/// travels in chunk frames beside its `MsgSnapshot` (issue #13).
pub const PROTOCOL_VERSION: u32 = 3;
/// magic, version, node id, shard id, shard count.
pub const HANDSHAKE_BYTES: usize = 4 + 4 + 8 + 4 + 4;

/// Who proposed a log entry, so that node alone answers the client that asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposer {
    pub node_id: u64,
    /// Distinguishes this process's proposals from an earlier run's, replayed from the log.
    pub incarnation: u64,
    pub seq: u64,
}

/// What a connecting peer says first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub node_id: u64,
    pub shard: u32,
    pub nr_shards: u32,
}

impl Handshake {
    /// The handshake's bytes.
    pub fn encode(&self) -> [u8; HANDSHAKE_BYTES] {
        let mut out = [0u8; HANDSHAKE_BYTES];
        out[..4].copy_from_slice(&HANDSHAKE_MAGIC);
        out[4..8].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.node_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.shard.to_le_bytes());
        out[20..24].copy_from_slice(&self.nr_shards.to_le_bytes());
        out
    }

    /// Reads a handshake; an error says why it is refused.
    pub fn decode(bytes: &[u8; HANDSHAKE_BYTES]) -> Result<Handshake, String> {
        if bytes[..4] != HANDSHAKE_MAGIC {
            return Err("not a corekv peer (bad handshake magic)".into());
        }
        let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if version != PROTOCOL_VERSION {
            return Err(format!(
                "peer speaks protocol version {version}, this node {PROTOCOL_VERSION}"
            ));
        }
        let mut reader = Reader { bytes: &bytes[8..] };
        // The lengths were checked by the array type.
        Ok(Handshake {
            node_id: reader.u64().unwrap_or_default(),
            shard: reader.u32().unwrap_or_default(),
            nr_shards: reader.u32().unwrap_or_default(),
        })
    }
}

/// Prepends a frame's length (u32, little-endian) to its payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    frame_of(&[payload])
}

/// One frame whose payload is `parts` concatenated.
fn frame_of(parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

const FRAME_RAFT: u8 = 1;
const FRAME_SNAPSHOT_BEGIN: u8 = 2;
const FRAME_SNAPSHOT_CHUNK: u8 = 3;
/// A snapshot chunk frame's payload before its bytes: kind, transfer id, offset.
pub const SNAPSHOT_CHUNK_HEADER_BYTES: usize = 1 + 8 + 8;

/// A peer frame's payload, read by [`decode_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerFrame<'a> {
    /// A raft-rs message (protobuf).
    Raft(&'a [u8]),
    /// A snapshot transfer opens: its `MsgSnapshot`, data left out, and what the data will be.
    SnapshotBegin(SnapshotBegin<'a>),
    /// The next bytes of the transfer's data.
    SnapshotChunk(SnapshotChunk<'a>),
}

/// Opens a snapshot transfer (frame kind 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotBegin<'a> {
    /// The sender's number for this transfer; its chunks carry it.
    pub transfer: u64,
    /// Bytes of data the chunks will carry in all.
    pub data_bytes: u64,
    /// CRC32C of the whole data.
    pub data_crc: u32,
    /// The `MsgSnapshot` (protobuf), its snapshot's data empty.
    pub message: &'a [u8],
}

/// Part of a snapshot transfer's data (frame kind 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotChunk<'a> {
    pub transfer: u64,
    /// Where `bytes` start in the data.
    pub offset: u64,
    pub bytes: &'a [u8],
}

/// A raft message's frame.
pub fn raft_frame(message: &[u8]) -> Vec<u8> {
    frame_of(&[&[FRAME_RAFT], message])
}

/// A snapshot begin frame.
pub fn snapshot_begin_frame(begin: &SnapshotBegin<'_>) -> Vec<u8> {
    frame_of(&[
        &[FRAME_SNAPSHOT_BEGIN],
        &begin.transfer.to_le_bytes(),
        &begin.data_bytes.to_le_bytes(),
        &begin.data_crc.to_le_bytes(),
        begin.message,
    ])
}

/// A snapshot chunk frame.
pub fn snapshot_chunk_frame(chunk: &SnapshotChunk<'_>) -> Vec<u8> {
    frame_of(&[
        &[FRAME_SNAPSHOT_CHUNK],
        &chunk.transfer.to_le_bytes(),
        &chunk.offset.to_le_bytes(),
        chunk.bytes,
    ])
}

/// Reads a peer frame's payload; `None` when its kind is unknown or its header cut short.
pub fn decode_frame(payload: &[u8]) -> Option<PeerFrame<'_>> {
    let (&kind, rest) = payload.split_first()?;
    let mut reader = Reader { bytes: rest };
    match kind {
        FRAME_RAFT => Some(PeerFrame::Raft(rest)),
        FRAME_SNAPSHOT_BEGIN => Some(PeerFrame::SnapshotBegin(SnapshotBegin {
            transfer: reader.u64()?,
            data_bytes: reader.u64()?,
            data_crc: reader.u32()?,
            message: reader.bytes,
        })),
        FRAME_SNAPSHOT_CHUNK => Some(PeerFrame::SnapshotChunk(SnapshotChunk {
            transfer: reader.u64()?,
            offset: reader.u64()?,
            bytes: reader.bytes,
        })),
        _ => None,
    }
}

const TAG_GET: u8 = 1;
const TAG_PUT: u8 = 2;
const TAG_PUT_TTL: u8 = 3;
const TAG_UPDATE: u8 = 4;
const TAG_DELETE: u8 = 5;
const TAG_PUT_UNTIL: u8 = 6;
const TAG_EXPIRE: u8 = 7;

fn proposer_bytes(proposer: Proposer, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + capacity);
    out.extend_from_slice(&proposer.node_id.to_le_bytes());
    out.extend_from_slice(&proposer.incarnation.to_le_bytes());
    out.extend_from_slice(&proposer.seq.to_le_bytes());
    out
}

/// A log entry: who proposed it, then its operations in order. A put's TTL becomes the
/// deadline `now_unix_ms + ttl` here, once, for every replica.
pub fn encode_entry(proposer: Proposer, ops: &[Op], now_unix_ms: u64) -> Vec<u8> {
    let mut out = proposer_bytes(proposer, ops.iter().map(|op| 16 + op.key().len()).sum::<usize>());
    for op in ops {
        // A write's condition follows it, so every replica evaluates it alike when it applies.
        let condition = match op {
            Op::Get(key) => {
                bytes(&mut out, TAG_GET, key);
                continue;
            }
            Op::Delete { key, condition } => {
                bytes(&mut out, TAG_DELETE, key);
                condition
            }
            Op::Update { record, condition } => {
                record_bytes(&mut out, TAG_UPDATE, record);
                condition
            }
            Op::Put {
                record,
                ttl_ms: None,
                condition,
            } => {
                record_bytes(&mut out, TAG_PUT, record);
                condition
            }
            Op::Put {
                record,
                ttl_ms: Some(ttl_ms),
                condition,
            } => {
                // At least 1 ms, as a single node's store counts it.
                let deadline = now_unix_ms.saturating_add((*ttl_ms).max(1));
                record_bytes(&mut out, TAG_PUT_UNTIL, record);
                out.extend_from_slice(&deadline.to_le_bytes());
                condition
            }
        };
        out.extend_from_slice(&condition.to_word().to_le_bytes());
    }
    out
}

/// The leader's expire entry: each key with the version it saw expire.
pub fn encode_expiry(proposer: Proposer, keys: &[(Box<[u8]>, u64)]) -> Vec<u8> {
    let mut out = proposer_bytes(proposer, keys.iter().map(|(key, _)| 13 + key.len()).sum::<usize>());
    for (key, version) in keys {
        bytes(&mut out, TAG_EXPIRE, key);
        out.extend_from_slice(&version.to_le_bytes());
    }
    out
}

fn bytes(out: &mut Vec<u8>, tag: u8, key: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
}

fn record_bytes(out: &mut Vec<u8>, tag: u8, record: &Record) {
    bytes(out, tag, record.key());
    out.extend_from_slice(&(record.value().len() as u32).to_le_bytes());
    out.extend_from_slice(record.value());
}

/// Reads a log entry back; `None` when it is malformed.
pub fn decode_entry(data: &[u8]) -> Option<(Proposer, Vec<Command>)> {
    let mut reader = Reader { bytes: data };
    let proposer = Proposer {
        node_id: reader.u64()?,
        incarnation: reader.u64()?,
        seq: reader.u64()?,
    };
    let mut commands = Vec::new();
    while let Some(&tag) = reader.bytes.first() {
        reader.bytes = &reader.bytes[1..];
        let key = reader.slice()?;
        let op = match tag {
            TAG_PUT_UNTIL => {
                let record = Record::new(key, reader.slice()?);
                commands.push(Command::PutUntil {
                    record,
                    expires_at_unix_ms: reader.u64()?,
                    condition: Condition::from_word(reader.u64()?),
                });
                continue;
            }
            TAG_EXPIRE => {
                commands.push(Command::Expire {
                    key: key.into(),
                    version: reader.u64()?,
                });
                continue;
            }
            TAG_GET => Op::Get(key.into()),
            TAG_DELETE => Op::Delete {
                key: key.into(),
                condition: Condition::from_word(reader.u64()?),
            },
            TAG_UPDATE => {
                let record = Record::new(key, reader.slice()?);
                Op::Update {
                    record,
                    condition: Condition::from_word(reader.u64()?),
                }
            }
            TAG_PUT => {
                let record = Record::new(key, reader.slice()?);
                Op::Put {
                    record,
                    ttl_ms: None,
                    condition: Condition::from_word(reader.u64()?),
                }
            }
            // A previous build's relative TTL (see the module's table).
            TAG_PUT_TTL => {
                let record = Record::new(key, reader.slice()?);
                let ttl_ms = Some(reader.u64()?);
                Op::Put {
                    record,
                    ttl_ms,
                    condition: Condition::from_word(reader.u64()?),
                }
            }
            _ => return None,
        };
        commands.push(Command::Op(op));
    }
    Some((proposer, commands))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < len {
            return None;
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }

    fn slice(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROPOSER: Proposer = Proposer {
        node_id: 2,
        incarnation: 99,
        seq: 7,
    };

    #[test]
    fn entries_round_trip_every_operation_in_order() {
        // Goal: every command survives the log in order, and a TTL leaves as the deadline the
        // proposer computed (now + ttl), not as the TTL.
        let ops = vec![
            Op::put(Record::new(b"a", b"1"), None),
            Op::Put {
                record: Record::new(b"b", b""),
                ttl_ms: Some(500),
                condition: Condition::IF_ABSENT,
            },
            Op::Get(b"a".to_vec().into()),
            Op::Update {
                record: Record::new(b"a", b"2"),
                condition: Condition::if_version(7),
            },
            Op::Delete {
                key: b"b".to_vec().into(),
                condition: Condition::IF_EXISTS,
            },
            Op::put(Record::new(b"c", b"3"), Some(0)),
        ];
        let data = encode_entry(PROPOSER, &ops, 1_000_000);
        let (proposer, commands) = decode_entry(&data).unwrap();
        assert_eq!(proposer, PROPOSER);
        let want = vec![
            Command::Op(ops[0].clone()),
            Command::PutUntil {
                record: Record::new(b"b", b""),
                expires_at_unix_ms: 1_000_500,
                condition: Condition::IF_ABSENT,
            },
            Command::Op(ops[2].clone()),
            Command::Op(ops[3].clone()),
            Command::Op(ops[4].clone()),
            Command::PutUntil {
                record: Record::new(b"c", b"3"),
                expires_at_unix_ms: 1_000_001,
                condition: Condition::NONE,
            },
        ];
        assert_eq!(commands, want);
        // The same ops proposed later carry a later deadline: it is fixed at proposal.
        let later = decode_entry(&encode_entry(PROPOSER, &ops, 2_000_000)).unwrap().1;
        assert!(matches!(
            later[1],
            Command::PutUntil {
                expires_at_unix_ms: 2_000_500,
                ..
            }
        ));
    }

    #[test]
    fn expire_entries_round_trip() {
        let keys: Vec<(Box<[u8]>, u64)> = vec![(b"x".to_vec().into(), 5), (b"".to_vec().into(), u64::MAX)];
        let (proposer, commands) = decode_entry(&encode_expiry(PROPOSER, &keys)).unwrap();
        assert_eq!(proposer, PROPOSER);
        let want: Vec<Command> = keys
            .iter()
            .map(|(key, version)| Command::Expire {
                key: key.clone(),
                version: *version,
            })
            .collect();
        assert_eq!(commands, want);
        assert_eq!(decode_entry(&encode_expiry(PROPOSER, &[])).unwrap().1, vec![]);
    }

    #[test]
    fn a_previous_builds_relative_ttl_entry_still_reads() {
        // Goal: a Raft log written before issue #13 (tag 3: value, relative ttl, condition)
        // decodes as the relative TTL it was, byte for byte as that build wrote it.
        let mut data = Vec::new();
        for word in [1u64, 2, 3] {
            data.extend_from_slice(&word.to_le_bytes());
        }
        data.push(3);
        data.extend_from_slice(&1u32.to_le_bytes());
        data.push(b'k');
        data.extend_from_slice(&2u32.to_le_bytes());
        data.extend_from_slice(b"vv");
        data.extend_from_slice(&750u64.to_le_bytes());
        data.extend_from_slice(&Condition::NONE.to_word().to_le_bytes());
        let (_, commands) = decode_entry(&data).unwrap();
        assert_eq!(
            commands,
            vec![Command::Op(Op::put(Record::new(b"k", b"vv"), Some(750)))]
        );
    }

    #[test]
    fn malformed_entries_and_handshakes_are_refused() {
        let proposer = Proposer {
            node_id: 1,
            incarnation: 1,
            seq: 1,
        };
        let entries = [
            encode_entry(proposer, &[Op::update(Record::new(b"key", b"value"))], 0),
            encode_entry(proposer, &[Op::put(Record::new(b"key", b"value"), Some(9))], 0),
            encode_expiry(proposer, &[(b"key".to_vec().into(), 3)]),
        ];
        for data in entries {
            for cut in 0..data.len() {
                if cut != 24 {
                    assert_eq!(decode_entry(&data[..cut]), None, "cut at {cut}");
                }
            }
            let mut bad_tag = data.clone();
            bad_tag[24] = 42;
            assert_eq!(decode_entry(&bad_tag), None);
        }
        let handshake = Handshake {
            node_id: 3,
            shard: 1,
            nr_shards: 2,
        };
        assert_eq!(Handshake::decode(&handshake.encode()), Ok(handshake));
        let mut bad = handshake.encode();
        bad[0] = b'X';
        assert!(Handshake::decode(&bad).is_err());
        let mut newer = handshake.encode();
        newer[4] = 9;
        assert!(Handshake::decode(&newer).unwrap_err().contains("version 9"));
        let mut previous = handshake.encode();
        previous[4] = 1;
        assert!(
            Handshake::decode(&previous).unwrap_err().contains("version 1"),
            "a build that cannot read deadlines and expiries is refused"
        );
        previous[4] = 2;
        assert!(
            Handshake::decode(&previous).unwrap_err().contains("version 2"),
            "a build that sends a snapshot in one frame is refused"
        );
    }

    // Goal: each frame kind round-trips after its length, and an unknown kind or a header cut
    // short is refused (a chunk's or a message's bytes may be empty).
    #[test]
    fn frames_round_trip_and_refuse_unknown_kinds_and_short_headers() {
        let begin = SnapshotBegin {
            transfer: 7,
            data_bytes: 1 << 40,
            data_crc: 0xdead_beef,
            message: b"meta",
        };
        let chunk = SnapshotChunk {
            transfer: 7,
            offset: 3,
            bytes: b"abc",
        };
        let cases = [
            (raft_frame(b"msg"), PeerFrame::Raft(b"msg")),
            (snapshot_begin_frame(&begin), PeerFrame::SnapshotBegin(begin)),
            (snapshot_chunk_frame(&chunk), PeerFrame::SnapshotChunk(chunk)),
        ];
        for (frame, want) in cases {
            let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(len, frame.len() - 4);
            let payload = &frame[4..];
            assert_eq!(decode_frame(payload), Some(want));
            let header = match want {
                PeerFrame::Raft(_) => 1,
                PeerFrame::SnapshotBegin(_) => 21,
                PeerFrame::SnapshotChunk(_) => SNAPSHOT_CHUNK_HEADER_BYTES,
            };
            for cut in 0..header {
                assert_eq!(decode_frame(&payload[..cut]), None, "cut at {cut}");
            }
            let mut unknown = payload.to_vec();
            unknown[0] = 9;
            assert_eq!(decode_frame(&unknown), None);
        }
    }
}
