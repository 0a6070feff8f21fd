//! Snapshot transfers between a group's members. raft-rs hands the leader one `MsgSnapshot`
//! holding the whole snapshot; it travels as a begin frame (the message with its snapshot's
//! data left out, the data's length and CRC32C: [`codec::SnapshotBegin`]) and then the data in
//! chunk frames of at most `--raft-snapshot-chunk-bytes` (`RAFT_SNAPSHOT_CHUNK_BYTES`, 1 MiB),
//! in order, on the connection that carries the group's raft messages to that peer. The
//! follower reassembles the data, checks its length, CRC32C and records, puts it back in the
//! message and steps the message into raft-rs whole, as if it had come in one frame.
//!
//! Sending ([`Lane`], one per peer): at most one transfer at a time; a newer snapshot for the
//! peer replaces the one under way. Chunks never wait in the peer's frame queue
//! (`PEER_QUEUE_FRAMES_MAX`): the dialer cuts the next one only when that queue is empty, so
//! heartbeats and appends wait at most one chunk's write, a transfer never fills the queue, and
//! it costs no memory beyond the snapshot the group already holds (the message shares its
//! bytes) and the one chunk being written. How it ended is reported to raft-rs by the group:
//! `Finish` once the last chunk is written, `Failure` when the connection fails first (raft-rs
//! keeps the follower paused in between, so it does not start the snapshot again meanwhile).
//!
//! Receiving ([`Inbound`], one per group): at most one transfer in progress, from whichever
//! connection began it last (a newer begin discards the one in progress); its data grows only
//! as chunks arrive, never past what the begin announced, which must be within
//! `--raft-snapshot-bytes-max`. A chunk out of order, empty, larger than
//! `RAFT_SNAPSHOT_CHUNK_BYTES` or past the announced length, a damaged whole, or an announced
//! length past the bound is refused: the transfer is discarded and the connection closed (the
//! leader's dialer then reports `Failure`, and raft-rs sends it again later). A chunk of a
//! transfer that is not the one in progress (superseded or never begun) is ignored, and a
//! connection that closes discards the transfer it was carrying.
//!
//! Owns the transfer state on both sides. It never does I/O, never touches a store and never
//! steps raft-rs itself.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use protobuf::Message as _;
use raft::SnapshotStatus;
use raft::eraftpb::{Message, MessageType};

use super::codec::{self, SnapshotBegin, SnapshotChunk};
use crate::limits::RAFT_SNAPSHOT_CHUNK_BYTES;

/// One peer's outgoing snapshot, shared by the group (which starts transfers and reports how
/// they ended to raft-rs) and the peer's dialer (which writes their frames).
pub struct Lane {
    state: RefCell<Outgoing>,
    /// Tells the dialer a transfer started (capacity 1: one wake-up is enough).
    start: LocalSender<()>,
    started: LocalReceiver<()>,
    /// The group driver's wake-up, poked when a transfer ends.
    driver: Rc<LocalSender<()>>,
}

#[derive(Default)]
struct Outgoing {
    sending: Option<Sending>,
    next_transfer: u64,
    /// How the latest transfer ended, until the group reports it to raft-rs.
    ended: Option<SnapshotStatus>,
}

struct Sending {
    transfer: u64,
    /// The `MsgSnapshot` as raft-rs made it, data included.
    message: Message,
    /// Data bytes written so far; `None` until the begin frame is written.
    written: Option<u64>,
}

/// The next frame of a lane's transfer, cut by [`Lane::next_frame`].
pub struct NextFrame {
    pub transfer: u64,
    /// Data bytes written once this frame is.
    pub written: u64,
    pub frame: Vec<u8>,
}

impl Lane {
    /// An idle lane; `driver` wakes the group's driver.
    pub fn new(driver: Rc<LocalSender<()>>) -> Lane {
        let (start, started) = local_channel::new_bounded(1);
        Lane {
            state: RefCell::new(Outgoing::default()),
            start,
            started,
            driver,
        }
    }

    /// Starts sending `message` (a `MsgSnapshot`), replacing a transfer of another snapshot
    /// under way; the same snapshot already under way goes on (false).
    pub fn start(&self, message: Message) -> bool {
        let mut state = self.state.borrow_mut();
        let index = message.get_snapshot().get_metadata().index;
        if state
            .sending
            .as_ref()
            .is_some_and(|s| s.message.get_snapshot().get_metadata().index == index)
        {
            return false;
        }
        let transfer = state.next_transfer;
        state.next_transfer += 1;
        state.sending = Some(Sending {
            transfer,
            message,
            written: None,
        });
        drop(state);
        let _ = self.start.try_send(());
        true
    }

    /// Waits until a transfer is under way.
    pub async fn wait(&self) {
        while self.state.borrow().sending.is_none() {
            self.started.recv().await;
        }
    }

    /// The transfer's next frame (its begin, then chunks of at most `chunk_bytes`), or `None`
    /// when none is under way. The lane moves on only once [`Lane::written`] says it was.
    pub fn next_frame(&self, chunk_bytes: usize) -> Option<NextFrame> {
        let state = self.state.borrow();
        let sending = state.sending.as_ref()?;
        let data = &sending.message.get_snapshot().data;
        let Some(written) = sending.written else {
            let mut bare = sending.message.clone();
            bare.mut_snapshot().data = Default::default();
            // A message raft-rs made always encodes; an empty one would be refused by the peer.
            let message = bare.write_to_bytes().unwrap_or_default();
            let begin = SnapshotBegin {
                transfer: sending.transfer,
                data_bytes: data.len() as u64,
                data_crc: crc32c::crc32c(data),
                message: &message,
            };
            return Some(NextFrame {
                transfer: sending.transfer,
                written: 0,
                frame: codec::snapshot_begin_frame(&begin),
            });
        };
        let from = written as usize;
        let to = data.len().min(from + chunk_bytes.clamp(1, RAFT_SNAPSHOT_CHUNK_BYTES));
        let chunk = SnapshotChunk {
            transfer: sending.transfer,
            offset: written,
            bytes: &data[from..to],
        };
        Some(NextFrame {
            transfer: sending.transfer,
            written: to as u64,
            frame: codec::snapshot_chunk_frame(&chunk),
        })
    }

    /// The dialer wrote `transfer`'s frame up to `written` data bytes; past the last one the
    /// transfer is finished and the group woken to report it.
    pub fn written(&self, transfer: u64, written: u64) {
        let mut state = self.state.borrow_mut();
        let Some(sending) = state.sending.as_mut().filter(|s| s.transfer == transfer) else {
            return; // replaced meanwhile
        };
        // Data is never empty (it holds its header), so the begin frame alone never finishes it.
        if sending.written.is_some() && written >= sending.message.get_snapshot().data.len() as u64 {
            state.sending = None;
            state.ended = Some(SnapshotStatus::Finish);
            drop(state);
            let _ = self.driver.try_send(());
        } else {
            sending.written = Some(written);
        }
    }

    /// The dialer's connection failed: the transfer under way (if any) failed with it.
    pub fn failed(&self) {
        let mut state = self.state.borrow_mut();
        if state.sending.take().is_some() {
            state.ended = Some(SnapshotStatus::Failure);
            drop(state);
            let _ = self.driver.try_send(());
        }
    }

    /// How the latest transfer ended, once.
    pub fn take_ended(&self) -> Option<SnapshotStatus> {
        self.state.borrow_mut().ended.take()
    }
}

/// Why a transfer was refused; its `Display` names sizes and offsets, never data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The begin frame's message is not a well-formed `MsgSnapshot` from this peer.
    Malformed(&'static str),
    /// The begin announced more data than `--raft-snapshot-bytes-max`.
    Oversize { data_bytes: u64, bytes_max: u64 },
    /// A chunk did not start where the data so far ends.
    OutOfOrder { offset: u64, expected: u64 },
    /// A chunk was empty or larger than `RAFT_SNAPSHOT_CHUNK_BYTES`.
    ChunkSize(usize),
    /// A chunk went past the length the begin announced.
    PastLength { data_bytes: u64 },
    /// The whole data did not match its CRC32C, or its records did not decode.
    Damaged(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(what) => write!(f, "a malformed snapshot begin frame ({what})"),
            Refusal::Oversize { data_bytes, bytes_max } => write!(
                f,
                "a snapshot of {data_bytes} bytes, past this node's --raft-snapshot-bytes-max of {bytes_max}"
            ),
            Refusal::OutOfOrder { offset, expected } => {
                write!(f, "a snapshot chunk at byte {offset} where byte {expected} was next")
            }
            Refusal::ChunkSize(len) => write!(
                f,
                "a snapshot chunk of {len} bytes (1 to {RAFT_SNAPSHOT_CHUNK_BYTES} allowed)"
            ),
            Refusal::PastLength { data_bytes } => {
                write!(f, "snapshot chunks past the {data_bytes} bytes announced")
            }
            Refusal::Damaged(why) => write!(f, "a damaged snapshot: {why}"),
        }
    }
}

/// The snapshot a group is receiving, if any.
#[derive(Default)]
pub struct Inbound {
    current: Option<Assembly>,
}

struct Assembly {
    /// The connection it arrives on, and the sender's number for it.
    connection: u64,
    transfer: u64,
    /// The `MsgSnapshot`, its data empty until complete.
    message: Message,
    data_bytes: u64,
    data_crc: u32,
    data: Vec<u8>,
}

impl Inbound {
    /// Opens a transfer from `peer` on `connection`, discarding the one in progress (a newer
    /// begin wins). Refused if its message is not a `MsgSnapshot` from `peer` with its data
    /// left out, or it announces more than `bytes_max` bytes.
    pub fn begin(
        &mut self,
        connection: u64,
        peer: u64,
        begin: &SnapshotBegin<'_>,
        bytes_max: u64,
    ) -> Result<(), Refusal> {
        self.current = None;
        let message = Message::parse_from_bytes(begin.message).map_err(|_| Refusal::Malformed("not protobuf"))?;
        if message.get_msg_type() != MessageType::MsgSnapshot || message.from != peer {
            return Err(Refusal::Malformed("not a MsgSnapshot from this peer"));
        }
        let snapshot = message.get_snapshot();
        if !snapshot.data.is_empty() || snapshot.get_metadata().index == 0 {
            return Err(Refusal::Malformed("data inline, or no index"));
        }
        if begin.data_bytes > bytes_max {
            return Err(Refusal::Oversize {
                data_bytes: begin.data_bytes,
                bytes_max,
            });
        }
        self.current = Some(Assembly {
            connection,
            transfer: begin.transfer,
            message,
            data_bytes: begin.data_bytes,
            data_crc: begin.data_crc,
            data: Vec::new(),
        });
        Ok(())
    }

    /// Adds a chunk that arrived on `connection`; returns the whole `MsgSnapshot` once its
    /// last chunk is in and checked. A chunk of another transfer than the one in progress is
    /// ignored; a refused one discards the transfer.
    pub fn chunk(&mut self, connection: u64, chunk: &SnapshotChunk<'_>) -> Result<Option<Message>, Refusal> {
        let Some(assembly) = self
            .current
            .as_mut()
            .filter(|a| a.connection == connection && a.transfer == chunk.transfer)
        else {
            return Ok(None);
        };
        let added = assembly.add(chunk);
        if added.is_err() || assembly.data.len() as u64 == assembly.data_bytes {
            // Refused, or complete: either way nothing stays in progress.
            let assembly = self.current.take().expect("matched just above");
            added?;
            return assembly.finish().map(Some);
        }
        Ok(None)
    }

    /// `connection` closed: the transfer it carried (if any) is discarded.
    pub fn closed(&mut self, connection: u64) {
        if self.current.as_ref().is_some_and(|a| a.connection == connection) {
            self.current = None;
        }
    }

    /// Bytes of data held by the transfer in progress (0 when none).
    pub fn bytes_held(&self) -> usize {
        self.current.as_ref().map_or(0, |a| a.data.capacity())
    }
}

impl Assembly {
    /// Appends a chunk's bytes, after checking where it starts and how long it is. The buffer
    /// at most doubles at a time and never passes the announced length.
    fn add(&mut self, chunk: &SnapshotChunk<'_>) -> Result<(), Refusal> {
        let have = self.data.len() as u64;
        if chunk.offset != have {
            return Err(Refusal::OutOfOrder {
                offset: chunk.offset,
                expected: have,
            });
        }
        let len = chunk.bytes.len();
        if len == 0 || len > RAFT_SNAPSHOT_CHUNK_BYTES {
            return Err(Refusal::ChunkSize(len));
        }
        if have + len as u64 > self.data_bytes {
            return Err(Refusal::PastLength {
                data_bytes: self.data_bytes,
            });
        }
        if self.data.capacity() - self.data.len() < len {
            // At most data_bytes, which the begin checked against the bound.
            let want = (self.data.len() * 2)
                .max(self.data.len() + len)
                .min(self.data_bytes as usize);
            self.data.reserve_exact(want - self.data.len());
        }
        self.data.extend_from_slice(chunk.bytes);
        Ok(())
    }

    /// The whole message, once its data matches its CRC32C and decodes as a snapshot.
    fn finish(mut self) -> Result<Message, Refusal> {
        if crc32c::crc32c(&self.data) != self.data_crc {
            return Err(Refusal::Damaged("its CRC32C does not match its bytes".into()));
        }
        super::snapshot::decode(&self.data, |_, _, _, _| {}).map_err(Refusal::Damaged)?;
        self.message.mut_snapshot().data = self.data.into();
        Ok(self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Snapshot;

    const PEER: u64 = 2;
    const MAX: u64 = 1 << 30;

    /// A snapshot's data of about `bytes` (valid records), and its `MsgSnapshot` from `PEER`.
    fn snapshot_message(bytes: usize, index: u64) -> Message {
        let mut encoder = super::super::snapshot::Encoder::new(9);
        let mut i = 0u32;
        while encoder.len() < bytes {
            encoder.add(&i.to_le_bytes(), &[i as u8; 1000], None, u64::from(i) + 1);
            i += 1;
        }
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = 3;
        snapshot.data = encoder.finish().into();
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        (message.from, message.to, message.term) = (PEER, 1, 3);
        message.set_snapshot(snapshot);
        message
    }

    /// Every frame a lane sends for `message`, in `chunk` bytes, as written.
    fn frames(message: &Message, chunk: usize) -> Vec<Vec<u8>> {
        let (driver, _woken) = local_channel::new_bounded(1);
        let lane = Lane::new(Rc::new(driver));
        assert!(lane.start(message.clone()));
        let mut out = Vec::new();
        while let Some(next) = lane.next_frame(chunk) {
            lane.written(next.transfer, next.written);
            out.push(next.frame);
        }
        assert_eq!(lane.take_ended(), Some(SnapshotStatus::Finish));
        out
    }

    /// Feeds frames (length-prefixed) into `inbound` as the transport would, on `connection`.
    fn feed(inbound: &mut Inbound, connection: u64, frame: &[u8]) -> Result<Option<Message>, Refusal> {
        match codec::decode_frame(&frame[4..]).expect("a frame") {
            codec::PeerFrame::SnapshotBegin(begin) => inbound.begin(connection, PEER, &begin, MAX).map(|()| None),
            codec::PeerFrame::SnapshotChunk(chunk) => inbound.chunk(connection, &chunk),
            codec::PeerFrame::Raft(_) => panic!("a lane sends no raft frame"),
        }
    }

    fn feed_all(inbound: &mut Inbound, connection: u64, frames: &[Vec<u8>]) -> Result<Option<Message>, Refusal> {
        let mut last = Ok(None);
        for frame in frames {
            last = feed(inbound, connection, frame);
            if last.is_err() {
                break;
            }
        }
        last
    }

    // Goal: a snapshot cut into many chunks (and one that fits in one) reassembles into the
    // very message raft-rs made, and each chunk stays within the chunk size.
    #[test]
    fn chunks_reassemble_into_the_message() {
        for (bytes, chunk) in [(300_000, 4096), (3000, RAFT_SNAPSHOT_CHUNK_BYTES)] {
            let message = snapshot_message(bytes, 50);
            let frames = frames(&message, chunk);
            let data_len = message.get_snapshot().data.len();
            assert_eq!(frames.len(), 1 + data_len.div_ceil(chunk));
            assert!(
                frames
                    .iter()
                    .all(|f| f.len() <= 4 + codec::SNAPSHOT_CHUNK_HEADER_BYTES + chunk.max(200))
            );
            let mut inbound = Inbound::default();
            let (last, rest) = frames.split_last().unwrap();
            assert_eq!(feed_all(&mut inbound, 1, rest), Ok(None));
            assert!(inbound.bytes_held() <= data_len);
            assert_eq!(feed(&mut inbound, 1, last), Ok(Some(message)));
            assert_eq!(inbound.bytes_held(), 0, "nothing stays once complete");
        }
    }

    // Goal: a chunk out of order, repeated, or cut short of its transfer, or chunks past the
    // announced length, are refused or never complete; a refusal discards the transfer.
    #[test]
    fn out_of_order_duplicate_truncated_and_overlong_transfers_are_refused() {
        let message = snapshot_message(40_000, 7);
        let frames = frames(&message, 4096);
        let mut inbound = Inbound::default();
        let mut swapped = frames.clone();
        swapped.swap(2, 3);
        let refused = feed_all(&mut inbound, 1, &swapped);
        assert!(matches!(refused, Err(Refusal::OutOfOrder { .. })), "{refused:?}");
        assert_eq!(inbound.bytes_held(), 0, "a refusal discards the transfer");
        let mut duplicate = frames.clone();
        duplicate.insert(3, frames[2].clone());
        let refused = feed_all(&mut inbound, 1, &duplicate);
        assert!(matches!(refused, Err(Refusal::OutOfOrder { .. })), "{refused:?}");
        // Truncated: everything but the last chunk, then the connection closes.
        assert_eq!(feed_all(&mut inbound, 1, &frames[..frames.len() - 1]), Ok(None));
        assert!(inbound.bytes_held() > 0);
        inbound.closed(2);
        assert!(inbound.bytes_held() > 0, "another connection's close leaves it");
        inbound.closed(1);
        assert_eq!(inbound.bytes_held(), 0);
        assert_eq!(feed(&mut inbound, 1, frames.last().unwrap()), Ok(None), "ignored after");
        // A last chunk longer than announced.
        let data = &message.get_snapshot().data;
        let mut long = frames[..frames.len() - 1].to_vec();
        let at = (frames.len() - 2) * 4096;
        let mut tail = data[at..].to_vec();
        tail.push(0);
        long.push(codec::snapshot_chunk_frame(&SnapshotChunk {
            transfer: 0,
            offset: at as u64,
            bytes: &tail,
        }));
        assert_eq!(
            feed_all(&mut inbound, 1, &long),
            Err(Refusal::PastLength {
                data_bytes: data.len() as u64
            })
        );
        // Empty and oversized chunks.
        for len in [0, RAFT_SNAPSHOT_CHUNK_BYTES + 1] {
            let bytes = vec![0; len];
            let chunk = codec::snapshot_chunk_frame(&SnapshotChunk {
                transfer: 0,
                offset: 0,
                bytes: &bytes,
            });
            let begun = feed(&mut inbound, 1, &frames[0]);
            assert_eq!(
                (begun, feed(&mut inbound, 1, &chunk)),
                (Ok(None), Err(Refusal::ChunkSize(len)))
            );
        }
    }

    // Goal: a begin announcing more than the bound is refused before any byte is held, and
    // endless chunks after it (or of a transfer never begun) are ignored and hold nothing.
    #[test]
    fn oversize_and_unbegun_transfers_hold_nothing() {
        let message = snapshot_message(20_000, 7);
        let frames = frames(&message, 4096);
        let mut inbound = Inbound::default();
        let codec::PeerFrame::SnapshotBegin(begin) = codec::decode_frame(&frames[0][4..]).unwrap() else {
            panic!("a begin first");
        };
        let small = begin.data_bytes - 1;
        assert_eq!(
            inbound.begin(1, PEER, &begin, small),
            Err(Refusal::Oversize {
                data_bytes: begin.data_bytes,
                bytes_max: small
            })
        );
        for _ in 0..1000 {
            for frame in &frames[1..] {
                assert_eq!(feed(&mut inbound, 1, frame), Ok(None));
            }
        }
        assert_eq!(inbound.bytes_held(), 0);
        let past = SnapshotBegin {
            data_bytes: u64::MAX,
            ..begin
        };
        assert!(matches!(
            inbound.begin(1, PEER, &past, MAX),
            Err(Refusal::Oversize { .. })
        ));
    }

    // Goal: a second transfer begun while the first is in progress (on the same connection
    // or another) replaces it: the first's later chunks are ignored, the second completes.
    #[test]
    fn an_interleaved_second_transfer_replaces_the_first() {
        let (first, second) = (snapshot_message(30_000, 7), snapshot_message(25_000, 9));
        let (one, mut two) = (frames(&first, 4096), frames(&second, 4096));
        for frame in two.iter_mut() {
            frame[5..13].copy_from_slice(&1u64.to_le_bytes()); // transfer 1, not 0
        }
        for connection in [1, 2] {
            let mut inbound = Inbound::default();
            assert_eq!(feed_all(&mut inbound, 1, &one[..3]), Ok(None));
            assert_eq!(feed(&mut inbound, connection, &two[0]), Ok(None));
            assert_eq!(feed_all(&mut inbound, 1, &one[3..]), Ok(None), "the first is gone");
            assert_eq!(feed_all(&mut inbound, connection, &two[1..]), Ok(Some(second.clone())));
        }
    }

    // Goal: damage is refused: a flipped data byte (CRC), a CRC that matches bytes that are
    // not a snapshot, a begin that is not a MsgSnapshot from this peer or carries its data.
    #[test]
    fn damaged_data_and_malformed_begins_are_refused() {
        let message = snapshot_message(10_000, 7);
        let mut flipped = frames(&message, 4096);
        let last = flipped[2].len() - 1;
        flipped[2][last] ^= 1;
        let refused = feed_all(&mut Inbound::default(), 1, &flipped);
        assert!(
            matches!(refused, Err(Refusal::Damaged(ref why)) if why.contains("CRC32C")),
            "{refused:?}"
        );
        let mut foreign = message.clone();
        foreign.mut_snapshot().data = vec![7u8; 5000].into();
        let refused = feed_all(&mut Inbound::default(), 1, &frames(&foreign, 4096));
        assert!(
            matches!(refused, Err(Refusal::Damaged(ref why)) if why.contains("raft snapshot data")),
            "{refused:?}"
        );
        let mut inline = message.clone();
        inline.set_msg_type(MessageType::MsgAppend);
        let mut other = message.clone();
        other.from = PEER + 1;
        for bad in [inline, other] {
            let bytes = bad.write_to_bytes().unwrap();
            let begin = SnapshotBegin {
                transfer: 0,
                data_bytes: 10,
                data_crc: 0,
                message: &bytes,
            };
            assert!(matches!(
                Inbound::default().begin(1, PEER, &begin, MAX),
                Err(Refusal::Malformed(_))
            ));
        }
        let whole = message.write_to_bytes().unwrap();
        let begin = SnapshotBegin {
            transfer: 0,
            data_bytes: 10,
            data_crc: 0,
            message: &whole,
        };
        assert!(matches!(
            Inbound::default().begin(1, PEER, &begin, MAX),
            Err(Refusal::Malformed(_))
        ));
    }

    // Goal: a lane sends one transfer at a time: the same snapshot again goes on where it is,
    // a newer one replaces it (written frames of the old one move nothing), and a failed
    // connection ends it as a failure, reported once.
    #[test]
    fn a_lane_replaces_or_keeps_transfers_and_reports_failures() {
        let (driver, _woken) = local_channel::new_bounded(1);
        let lane = Lane::new(Rc::new(driver));
        assert!(lane.next_frame(4096).is_none());
        let first = snapshot_message(20_000, 7);
        assert!(lane.start(first.clone()));
        let begin = lane.next_frame(4096).unwrap();
        lane.written(begin.transfer, begin.written);
        let chunk = lane.next_frame(4096).unwrap();
        assert!(!lane.start(first), "the same snapshot goes on");
        lane.written(chunk.transfer, chunk.written);
        assert_eq!(lane.next_frame(4096).unwrap().written, 8192);
        assert!(lane.start(snapshot_message(20_000, 9)));
        let fresh = lane.next_frame(4096).unwrap();
        assert_eq!((fresh.transfer, fresh.written), (1, 0), "a new begin");
        lane.written(chunk.transfer, 12288);
        assert_eq!(lane.next_frame(4096).unwrap().transfer, 1);
        lane.failed();
        assert!(lane.next_frame(4096).is_none());
        assert_eq!(lane.take_ended(), Some(SnapshotStatus::Failure));
        assert_eq!(lane.take_ended(), None);
        lane.failed();
        assert_eq!(lane.take_ended(), None, "no transfer, nothing to report");
    }
}
