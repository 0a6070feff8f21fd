//! The bytes replication puts on the wire and in the Raft log: a log entry's batch of store
//! operations, the peer handshake, and the length-prefixed frames that carry raft-rs messages.
//!
//! Owns encoding and decoding only. It never performs I/O and never touches a store; a decoder
//! refuses anything malformed (an error, never a panic).

use crate::shard::message::{Condition, Op, Record};

/// Opens every peer connection: "corekv raft".
pub const HANDSHAKE_MAGIC: [u8; 4] = *b"CKVR";
/// The peer protocol's version; a peer speaking another is refused.
pub const PROTOCOL_VERSION: u32 = 1;
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
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

const TAG_GET: u8 = 1;
const TAG_PUT: u8 = 2;
const TAG_PUT_TTL: u8 = 3;
const TAG_UPDATE: u8 = 4;
const TAG_DELETE: u8 = 5;

/// A log entry: who proposed it, then its operations in order.
pub fn encode_entry(proposer: Proposer, ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + ops.iter().map(|op| 16 + op.key().len()).sum::<usize>());
    out.extend_from_slice(&proposer.node_id.to_le_bytes());
    out.extend_from_slice(&proposer.incarnation.to_le_bytes());
    out.extend_from_slice(&proposer.seq.to_le_bytes());
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
                record_bytes(&mut out, TAG_PUT_TTL, record);
                out.extend_from_slice(&ttl_ms.to_le_bytes());
                condition
            }
        };
        out.extend_from_slice(&condition.to_word().to_le_bytes());
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
pub fn decode_entry(data: &[u8]) -> Option<(Proposer, Vec<Op>)> {
    let mut reader = Reader { bytes: data };
    let proposer = Proposer {
        node_id: reader.u64()?,
        incarnation: reader.u64()?,
        seq: reader.u64()?,
    };
    let mut ops = Vec::new();
    while let Some(&tag) = reader.bytes.first() {
        reader.bytes = &reader.bytes[1..];
        let key = reader.slice()?;
        let op = match tag {
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
        ops.push(op);
    }
    Some((proposer, ops))
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

    #[test]
    fn entries_round_trip_every_operation_in_order() {
        let proposer = Proposer {
            node_id: 2,
            incarnation: 99,
            seq: 7,
        };
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
        ];
        let data = encode_entry(proposer, &ops);
        assert_eq!(decode_entry(&data), Some((proposer, ops)));
    }

    #[test]
    fn malformed_entries_and_handshakes_are_refused() {
        let data = encode_entry(
            Proposer {
                node_id: 1,
                incarnation: 1,
                seq: 1,
            },
            &[Op::update(Record::new(b"key", b"value"))],
        );
        for cut in 0..data.len() {
            if cut != 24 {
                assert_eq!(decode_entry(&data[..cut]), None, "cut at {cut}");
            }
        }
        let mut bad_tag = data.clone();
        bad_tag[24] = 42;
        assert_eq!(decode_entry(&bad_tag), None);
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
    }
}
