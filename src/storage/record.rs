//! The byte layout of one log or snapshot record: encoding into a buffer, and checked decoding.
//!
//! Owns the format only (see the table in [`super`]); it never does I/O and never decides what
//! a bad record means for recovery (that is [`super::recover`]'s job).

use crate::limits::STORAGE_RECORD_PAYLOAD_BYTES_MAX;

/// Bytes before a record's payload: crc32c u32, payload_len u32, kind u8, 3 zero bytes, key_len u32.
pub const HEADER_BYTES: usize = 16;
/// Magic in the payload of the header record that opens every log segment.
pub const MAGIC_LOG: [u8; 8] = *b"CKVWAL01";
/// Magic in the payload of the header record that opens every snapshot.
pub const MAGIC_SNAPSHOT: [u8; 8] = *b"CKVSNP01";

/// What a record says. The discriminants are the on-disk `kind` byte: never renumber them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// `key` now holds `value`, with an optional deadline.
    Set = 1,
    /// `key` is gone.
    Delete = 2,
    /// `key`'s deadline changes (0 = no deadline); a no-op if the key does not exist.
    ExpireAt = 3,
    /// Opens every file: payload is the 8-byte magic, then u64 LE sequence number.
    FileHeader = 4,
    /// Closes every snapshot: payload is the u64 LE count of Set records before it.
    SnapshotEnd = 5,
    /// As `Set`, with the key's u64 version between the deadline and the value (what every
    /// Set is written as since the version field came; `Set` still reads, as version 0).
    SetVersioned = 6,
    /// A group of records that recovery applies whole or not at all (one shard's part of a
    /// transaction): an empty key, and the member records as the payload, one length and one
    /// CRC32C over all of them. Each member is an ordinary Set, SetVersioned, Delete or
    /// ExpireAt record except that its crc field is sealed with `GROUP_MEMBER_CRC_XOR`, so a
    /// member never decodes as a record of its own (a torn group reads as one torn record).
    Group = 7,
}

/// XORed into a group member's CRC32C, so the bytes of a torn group hold no record that
/// recovery could mistake for a whole one after the cut.
pub const GROUP_MEMBER_CRC_XOR: u32 = 0x4752_5550; // "PURG" little-endian: any nonzero value

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Set,
            2 => Kind::Delete,
            3 => Kind::ExpireAt,
            4 => Kind::FileHeader,
            5 => Kind::SnapshotEnd,
            6 => Kind::SetVersioned,
            7 => Kind::Group,
            _ => return None,
        })
    }
}

/// A record decoded in place from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: Kind,
    /// The key (empty for FileHeader and SnapshotEnd).
    pub key: &'a [u8],
    /// Set: the deadline (unix ms, 0 = none) then the value. ExpireAt: the deadline.
    /// FileHeader: magic then sequence. SnapshotEnd: the count.
    pub body: &'a [u8],
}

impl Record<'_> {
    /// The leading u64 LE of the body (the deadline, the sequence's magic-less tail, the count).
    pub fn body_u64_at(&self, at: usize) -> u64 {
        let bytes: [u8; 8] = self.body[at..at + 8]
            .try_into()
            .expect("decode checked the body length of every kind that carries a u64");
        u64::from_le_bytes(bytes)
    }
}

/// Why the bytes at an offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Fewer bytes remain than the header, or than the header says the record needs.
    Short,
    /// Sixteen zero bytes where a header should be: the end of the written part of a file.
    Zeros,
    /// The header is impossible (unknown kind, lengths out of range, nonzero reserved bytes).
    Header(&'static str),
    /// The checksum does not match the bytes.
    Checksum,
}

/// Encoded length of a Set record (as written: `SetVersioned`).
pub fn set_bytes(key_len: usize, value_len: usize) -> usize {
    HEADER_BYTES + key_len + 16 + value_len
}

/// Encoded length of a Delete record.
pub fn delete_bytes(key_len: usize) -> usize {
    HEADER_BYTES + key_len
}

/// Encoded length of an ExpireAt record.
pub fn expire_at_bytes(key_len: usize) -> usize {
    HEADER_BYTES + key_len + 8
}

/// Encoded length of a group whose members take `members_bytes` (see `encode_group`).
pub fn group_bytes(members_bytes: usize) -> usize {
    HEADER_BYTES + members_bytes
}

/// Appends one group record to `out` holding `members`: records encoded by [`encode`] or
/// [`encode_set`] into a scratch buffer, re-sealed here as members (their CRC XORed with
/// [`GROUP_MEMBER_CRC_XOR`]). Members must be Set, SetVersioned, Delete or ExpireAt records.
pub fn encode_group(out: &mut Vec<u8>, members: &[u8]) {
    let start = out.len();
    encode(out, Kind::Group, b"", &[members]);
    let mut at = start + HEADER_BYTES;
    while at < out.len() {
        let (member, len) = decode(&out[at..]).expect("encode_group is given whole records");
        debug_assert!(matches!(
            member.kind,
            Kind::Set | Kind::SetVersioned | Kind::Delete | Kind::ExpireAt
        ));
        let crc = u32::from_le_bytes(out[at..at + 4].try_into().expect("4 bytes")) ^ GROUP_MEMBER_CRC_XOR;
        out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        at += len;
    }
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The members of a group record's body, in order; an error for bytes that are not a whole
/// sequence of member records (the group's own CRC held, so that is a writer's bug or
/// deliberate damage, never a torn write).
pub fn members<'a>(group: &Record<'a>) -> impl Iterator<Item = Result<Record<'a>, Bad>> + 'a {
    let mut rest = group.body;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match decode_sealed(rest, GROUP_MEMBER_CRC_XOR) {
            Ok((member, len)) => {
                rest = &rest[len..];
                Some(Ok(member))
            }
            Err(bad) => {
                rest = &[];
                Some(Err(bad))
            }
        }
    })
}

/// Appends one record to `out`. `parts` are the body's pieces after the key, concatenated.
pub fn encode(out: &mut Vec<u8>, kind: Kind, key: &[u8], parts: &[&[u8]]) {
    let payload_len = key.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    assert!(
        payload_len <= STORAGE_RECORD_PAYLOAD_BYTES_MAX,
        "record payload over the limit"
    );
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[kind as u8, 0, 0, 0]);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    for part in parts {
        out.extend_from_slice(part);
    }
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len() - start, HEADER_BYTES + payload_len);
}

/// Appends a Set record (kind `SetVersioned`); `expires_at_unix_ms` of `None` is stored as 0.
pub fn encode_set(out: &mut Vec<u8>, key: &[u8], value: &[u8], expires_at_unix_ms: Option<u64>, version: u64) {
    let deadline = expires_at_unix_ms.unwrap_or(0).to_le_bytes();
    encode(
        out,
        Kind::SetVersioned,
        key,
        &[&deadline, &version.to_le_bytes(), value],
    );
}

/// Byte offset of the value in a Set record's body, and the record's version.
pub fn set_value_at_and_version(rec: &Record<'_>) -> (usize, u64) {
    match rec.kind {
        Kind::SetVersioned => (16, rec.body_u64_at(8)),
        _ => (8, 0),
    }
}

/// Appends a file-header record carrying `magic` and the file's sequence number.
pub fn encode_file_header(out: &mut Vec<u8>, magic: &[u8; 8], seq: u64) {
    encode(out, Kind::FileHeader, b"", &[magic, &seq.to_le_bytes()]);
}

/// Decodes the record at the start of `bytes`; returns it and its encoded length.
pub fn decode(bytes: &[u8]) -> Result<(Record<'_>, usize), Bad> {
    decode_sealed(bytes, 0)
}

/// As [`decode`], for a record whose stored CRC32C is XORed with `crc_xor` (0 for a record of
/// its own, [`GROUP_MEMBER_CRC_XOR`] for a group member).
fn decode_sealed(bytes: &[u8], crc_xor: u32) -> Result<(Record<'_>, usize), Bad> {
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        return Err(Bad::Short);
    };
    if header.iter().all(|&b| b == 0) {
        return Err(Bad::Zeros);
    }
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let (crc, payload_len, key_len) = (word(0), word(4) as usize, word(12) as usize);
    let kind = Kind::from_byte(header[8]).ok_or(Bad::Header("unknown record kind"))?;
    if header[9..12] != [0, 0, 0] {
        return Err(Bad::Header("nonzero reserved bytes"));
    }
    if payload_len > STORAGE_RECORD_PAYLOAD_BYTES_MAX {
        return Err(Bad::Header("payload length over the limit"));
    }
    if key_len > payload_len {
        return Err(Bad::Header("key longer than the payload"));
    }
    let body_len = payload_len - key_len;
    let body_ok = match kind {
        Kind::Set => body_len >= 8,
        Kind::SetVersioned => body_len >= 16,
        Kind::Delete => body_len == 0,
        Kind::ExpireAt | Kind::SnapshotEnd => body_len == 8,
        Kind::FileHeader => body_len == 16,
        Kind::Group => key_len == 0 && body_len >= HEADER_BYTES,
    };
    if !body_ok {
        return Err(Bad::Header("body length wrong for the record kind"));
    }
    let total = HEADER_BYTES + payload_len;
    let Some(record) = bytes.get(..total) else {
        return Err(Bad::Short);
    };
    if crc32c::crc32c(&record[4..]) != crc ^ crc_xor {
        return Err(Bad::Checksum);
    }
    let key = &record[HEADER_BYTES..HEADER_BYTES + key_len];
    let body = &record[HEADER_BYTES + key_len..];
    Ok((Record { kind, key, body }, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_reports_its_length() {
        let mut out = Vec::new();
        encode_set(&mut out, b"k", b"value", Some(7), 3);
        assert_eq!(out.len(), set_bytes(1, 5));
        encode(&mut out, Kind::Delete, b"key", &[]);
        encode(&mut out, Kind::ExpireAt, b"key", &[&9u64.to_le_bytes()]);
        encode_file_header(&mut out, &MAGIC_LOG, 42);
        let (set, n) = decode(&out).unwrap();
        assert_eq!(
            (
                set.kind,
                set.key,
                set.body_u64_at(0),
                set_value_at_and_version(&set),
                &set.body[16..]
            ),
            (Kind::SetVersioned, &b"k"[..], 7, (16, 3), &b"value"[..])
        );
        let (delete, m) = decode(&out[n..]).unwrap();
        assert_eq!(
            (delete.kind, delete.key, m),
            (Kind::Delete, &b"key"[..], delete_bytes(3))
        );
        let (expire, e) = decode(&out[n + m..]).unwrap();
        assert_eq!(
            (expire.kind, expire.body_u64_at(0), e),
            (Kind::ExpireAt, 9, expire_at_bytes(3))
        );
        let (header, _) = decode(&out[n + m + e..]).unwrap();
        assert_eq!(
            (header.kind, &header.body[..8], header.body_u64_at(8)),
            (Kind::FileHeader, &MAGIC_LOG[..], 42)
        );
    }

    // Goal: a Set written before the version field (kind 1) still reads, as version 0.
    #[test]
    fn an_unversioned_set_reads_as_version_zero() {
        let mut out = Vec::new();
        encode(&mut out, Kind::Set, b"k", &[&5u64.to_le_bytes(), b"old"]);
        let (set, _) = decode(&out).unwrap();
        let (value_at, version) = set_value_at_and_version(&set);
        assert_eq!(
            (set.body_u64_at(0), &set.body[value_at..], version),
            (5, &b"old"[..], 0)
        );
    }

    #[test]
    fn damaged_bytes_are_told_apart() {
        let mut out = Vec::new();
        encode_set(&mut out, b"key", b"value", None, 0);
        assert_eq!(decode(&[0; 32]), Err(Bad::Zeros));
        assert_eq!(decode(&out[..HEADER_BYTES - 1]), Err(Bad::Short));
        assert_eq!(decode(&out[..out.len() - 1]), Err(Bad::Short));
        for bit in 0..out.len() * 8 {
            let mut flipped = out.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&flipped).is_err(), "flipping bit {bit} went unnoticed");
        }
        let mut bad_kind = out.clone();
        bad_kind[8] = 99;
        assert_eq!(decode(&bad_kind), Err(Bad::Header("unknown record kind")));
    }

    fn two_members() -> Vec<u8> {
        let mut members = Vec::new();
        encode_set(&mut members, b"a", b"one", None, 7);
        encode(&mut members, Kind::Delete, b"b", &[]);
        members
    }

    // Goal: a group reads back as its members, in order, with their contents.
    #[test]
    fn a_group_round_trips_its_members() {
        let inner = two_members();
        let mut out = Vec::new();
        encode_group(&mut out, &inner);
        assert_eq!(out.len(), group_bytes(inner.len()));
        let (group, len) = decode(&out).unwrap();
        assert_eq!((group.kind, group.key, len), (Kind::Group, &b""[..], out.len()));
        let read: Vec<Record<'_>> = members(&group).collect::<Result<_, _>>().unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(
            (read[0].kind, read[0].key, set_value_at_and_version(&read[0])),
            (Kind::SetVersioned, &b"a"[..], (16, 7))
        );
        assert_eq!((read[1].kind, read[1].key), (Kind::Delete, &b"b"[..]));
    }

    // Goal: no byte range of a group decodes as a record of its own except the whole group, so
    // a torn group never looks like whole records (recovery's search for a record after damage
    // finds none), and every cut or flipped bit inside it is caught.
    #[test]
    fn a_groups_members_never_decode_alone_and_every_cut_is_short() {
        let mut out = Vec::new();
        encode_group(&mut out, &two_members());
        for at in 1..out.len() {
            assert!(
                decode(&out[at..]).is_err(),
                "a record decodes at offset {at} inside a group"
            );
        }
        for cut in 0..out.len() {
            assert!(decode(&out[..cut]).is_err(), "a group cut at {cut} decoded");
        }
        for bit in 0..out.len() * 8 {
            let mut flipped = out.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&flipped).is_err(),
                "flipping bit {bit} of a group went unnoticed"
            );
        }
        // A group whose members are not whole records (sealed the plain way) fails member by member.
        let mut plain = Vec::new();
        encode(&mut plain, Kind::Group, b"", &[&two_members()]);
        let (group, _) = decode(&plain).unwrap();
        assert!(members(&group).next().unwrap().is_err());
    }
}
