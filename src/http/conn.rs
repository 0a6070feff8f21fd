//! One connection's life: read, parse every complete request in the buffer, dispatch their
//! operations (local ones in place, remote ones batched one message per owner), then answer the
//! whole batch in request order with one write.
//!
//! Owns the socket, its buffers and its deadlines. It never keeps a borrow of the local store
//! across an await, and never sends more than one batch per owner per read, so a task awaits at
//! most `nr_shards - 1` replies at once (glommio counts waker clones in an `i16`).

use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use log::debug;

use crate::api::{self, Context, Ops, Plan, Render};
use crate::error::Error;
use crate::http::request::{self, Need, Parsed};
use crate::http::response;
use crate::limits::{PIPELINE_REQUESTS_MAX, READ_CHUNK_BYTES, WRITE_BUFFER_FLUSH_BYTES, WRITE_TIMEOUT_MS};
use crate::server::{ConnectionGuard, ShardContext};
use crate::shard::ShardId;
use crate::shard::message::{Op, Outcome, Replies, ShardStats};

/// A buffer larger than this is given back once it is empty (after a large body).
const READ_BUFFER_KEEP_BYTES: usize = 4 * READ_CHUNK_BYTES;
/// After the last response of a closing connection, how long its further input is drained
/// before the socket closes, in ms, and how much of it at most.
const LINGER_MS: u64 = 500;
const LINGER_DISCARD_BYTES_MAX: usize = 1 << 20;
/// A write buffer larger than this is given back after it is flushed.
const WRITE_BUFFER_KEEP_BYTES: usize = 4 * READ_CHUNK_BYTES;

/// Answers a connection over the shard's limit with 503 and closes it.
pub async fn refuse(mut stream: TcpStream, limit: usize) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(WRITE_TIMEOUT_MS)));
    let mut out = Vec::new();
    let why = Error::Unavailable("too many open connections on this shard (--max-connections)");
    response::error(&mut out, &why, false);
    debug!("refused a connection: {limit} already open on this shard");
    let _ = stream.write_all(&out).await;
}

/// Serves one accepted connection until it closes, errs or times out.
pub async fn serve(stream: TcpStream, shard: Rc<ShardContext>) {
    let registered = shard.register_connection(stream.as_raw_fd());
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(WRITE_TIMEOUT_MS)));
    let mut connection = Connection::new(stream, shard, registered);
    if let Err(e) = connection.run().await {
        debug!("connection ended: {e}");
    }
}

/// Cuts the body off the response that starts at `start` (HEAD keeps the headers, including
/// the Content-Length a GET would have had).
fn drop_body(output: &mut Vec<u8>, start: usize) {
    if let Some(end) = output[start..].windows(4).position(|w| w == b"\r\n\r\n") {
        output.truncate(start + end + 4);
    }
}

/// Where an operation runs: here, or at another owner (index into that owner's batch).
enum Slot {
    Local(Op),
    Remote { owner: ShardId, index: usize },
}

/// The read side's bytes: `data[start..end]` is unparsed input.
struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuffer {
    fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn consume(&mut self, bytes: usize) {
        self.start += bytes;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.data.len() > READ_BUFFER_KEEP_BYTES {
                self.data = vec![0; READ_CHUNK_BYTES];
            }
        }
    }

    /// Free space to read into, enough for a request of `total_bytes` when that is known.
    fn spare(&mut self, total_bytes: Option<usize>) -> &mut [u8] {
        let wanted = total_bytes
            .unwrap_or(0)
            .max(self.end - self.start + READ_CHUNK_BYTES / 2);
        if self.data.len() - self.start < wanted || self.data.len() - self.end < READ_CHUNK_BYTES / 4 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.data.len() < wanted || self.data.len() - self.end < READ_CHUNK_BYTES / 4 {
                let size = wanted.max(self.end + READ_CHUNK_BYTES);
                self.data.resize(size, 0);
            }
        }
        &mut self.data[self.end..]
    }
}

/// Per-request timing in the shard's coarse milliseconds, reset whenever a request completes.
#[derive(Default)]
struct RequestClock {
    /// When the first byte of the current request arrived.
    started: Option<u64>,
    /// When its head was complete and its body began.
    body_started: Option<u64>,
    /// Whether `100 Continue` was sent for it.
    continue_sent: bool,
}

struct Connection {
    stream: TcpStream,
    shard: Rc<ShardContext>,
    /// The connection's entry in its shard's registry: its read deadline lives there.
    registered: ConnectionGuard,
    input: ReadBuffer,
    output: Vec<u8>,
    clock: RequestClock,
    /// How far parsing got with the partial request at the start of `input` (reset by
    /// `request::parse` when a request completes), so each read's parse scans only new bytes.
    framing: request::BodyProgress,
    // Reused across batches so a steady connection allocates nothing for bookkeeping.
    plans: Vec<Plan>,
    slots: Vec<Slot>,
    outbound: Vec<Vec<Op>>,
    replies: Vec<Option<Replies>>,
}

impl Connection {
    fn new(stream: TcpStream, shard: Rc<ShardContext>, registered: ConnectionGuard) -> Connection {
        let nr_shards = shard.nr_shards;
        Connection {
            stream,
            shard,
            registered,
            input: ReadBuffer {
                data: vec![0; READ_CHUNK_BYTES],
                start: 0,
                end: 0,
            },
            output: Vec::with_capacity(READ_CHUNK_BYTES),
            clock: RequestClock::default(),
            framing: request::BodyProgress::default(),
            plans: Vec::new(),
            slots: Vec::new(),
            outbound: (0..nr_shards).map(|_| Vec::new()).collect(),
            replies: (0..nr_shards).map(|_| None).collect(),
        }
    }

    async fn run(&mut self) -> io::Result<()> {
        loop {
            let (need, closing) = self.parse_batch();
            if !self.plans.is_empty() {
                self.clock = RequestClock::default();
                self.answer_batch().await?;
                if closing || self.shard.latches.shutdown.is_open() {
                    return self.finish().await;
                }
                if !self.input.filled().is_empty() {
                    self.clock.started = Some(self.shard.coarse_now_ms());
                }
                continue;
            }
            if let Need::Body {
                expect_continue: true, ..
            } = need
                && !self.clock.continue_sent
            {
                self.clock.continue_sent = true;
                self.stream.write_all(response::CONTINUE).await?;
            }
            if !self.read_more(need).await? {
                return Ok(());
            }
        }
    }

    /// Parses every complete request in the buffer (up to the pipeline limit) into plans.
    /// Returns what the buffer needs next and whether the connection closes after this batch.
    fn parse_batch(&mut self) -> (Need, bool) {
        let shard = &self.shard;
        // Counting ready shards takes the latch's lock: only done while not ready.
        let ready = shard.latches.ready.is_open();
        let serving = if ready {
            shard.nr_shards
        } else {
            shard.nr_shards - shard.latches.ready.remaining()
        };
        let context = Context {
            args: &shard.args,
            ready,
            ready_shards: (serving, shard.nr_shards),
        };
        let mut consumed = 0;
        let mut need = Need::Head;
        let mut closing = false;
        while self.plans.len() < PIPELINE_REQUESTS_MAX && !closing {
            let filled = &self.input.filled()[consumed..];
            if filled.is_empty() {
                break;
            }
            match request::parse(filled, &mut self.framing, |head| api::body_limit(head, &shard.args)) {
                Parsed::Complete(request, used) => {
                    consumed += used;
                    let plan = api::plan(request, &context);
                    closing = plan.closes();
                    self.plans.push(plan);
                }
                Parsed::Incomplete(Need::Head) => {
                    if let Some(error) = request::head_overflow(filled) {
                        self.plans.push(Plan::error(error, false));
                        closing = true;
                    }
                    break;
                }
                Parsed::Incomplete(body_need) => {
                    need = body_need;
                    break;
                }
                Parsed::Invalid(error) => {
                    self.plans.push(Plan::error(error, false));
                    closing = true;
                }
            }
        }
        self.input.consume(consumed);
        (need, closing)
    }

    /// Reads more input under the deadline of the current phase. Returns false on a clean end
    /// (peer closed, idle timeout, shutdown); answers 408 when a started request times out.
    ///
    /// The deadline is enforced by the shard's sweeper (`server::sweep_forever`), which ends the
    /// read with `shutdown(SHUT_RD)`: a read arms no timer and reads no clock.
    async fn read_more(&mut self, need: Need) -> io::Result<bool> {
        let args = &self.shard.args;
        let now = self.shard.coarse_now_ms();
        let (deadline_ms, phase, limit_ms) = if self.input.filled().is_empty() {
            (now + args.idle_timeout_ms, None, args.idle_timeout_ms)
        } else if let Need::Head = need {
            let started = *self.clock.started.get_or_insert(now);
            (
                started + args.header_timeout_ms,
                Some("headers"),
                args.header_timeout_ms,
            )
        } else {
            let started = *self.clock.body_started.get_or_insert(now);
            (started + args.body_timeout_ms, Some("body"), args.body_timeout_ms)
        };
        let total_bytes = match need {
            Need::Body { total_bytes, .. } => total_bytes,
            Need::Head => None,
        };
        let read = if deadline_ms <= now {
            Ok(0)
        } else {
            self.registered.set_read_deadline(deadline_ms);
            let spare = self.input.spare(total_bytes);
            let read = self.stream.read(spare).await;
            self.registered.set_read_deadline(0);
            read
        };
        let timed_out = deadline_ms <= now || self.registered.deadline_passed();
        match read {
            Ok(0) if timed_out => {
                if let Some(phase) = phase {
                    self.output.clear();
                    let status = api::render_error(&mut self.output, &Error::RequestTimeout { phase, limit_ms }, false);
                    self.shard.counters.count_response(status);
                    debug!("closing a connection: request {phase} timed out");
                    let _ = self.finish().await;
                }
                Ok(false)
            }
            Ok(0) => Ok(false),
            Ok(bytes) => {
                if self.input.filled().is_empty() {
                    self.clock.started = Some(self.shard.coarse_now_ms());
                }
                self.input.end += bytes;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs the batch's operations on their owners and writes every response, in order.
    async fn answer_batch(&mut self) -> io::Result<()> {
        let shard = Rc::clone(&self.shard);
        self.dispatch(&shard).await;
        let mut slots = std::mem::take(&mut self.slots).into_iter();
        let plans = std::mem::take(&mut self.plans);
        for plan in &plans {
            let keep_alive = !plan.closes();
            let response_start = self.output.len();
            let status = match &plan.render {
                Render::Error(_) | Render::Json(..) => api::render_now(&plan.render, keep_alive, &mut self.output),
                Render::BulkUpdate { keys, keys_only } => {
                    let updated: Vec<bool> = slots
                        .by_ref()
                        .take(keys.len())
                        .map(|slot| self.with_outcome(&shard, slot, |outcome| matches!(outcome, Ok(Outcome::Updated))))
                        .collect();
                    api::render_bulk(keys, &updated, *keys_only, keep_alive, &mut self.output)
                }
                Render::Stats { prometheus } => {
                    let stats: Vec<ShardStats> = slots
                        .by_ref()
                        .take(shard.nr_shards)
                        .filter_map(|slot| {
                            self.with_outcome(&shard, slot, |outcome| match outcome {
                                Ok(Outcome::Stats(stats)) => Some(*stats),
                                _ => None,
                            })
                        })
                        .collect();
                    api::admin::render_stats(&stats, *prometheus, keep_alive, &mut self.output)
                }
                render => match slots.next() {
                    Some(slot) => {
                        let mut output = std::mem::take(&mut self.output);
                        let status = self.with_outcome(&shard, slot, |outcome| match outcome {
                            Ok(outcome) => api::render_one(render, outcome, keep_alive, &mut output),
                            Err(error) => api::render_error(&mut output, &error, keep_alive),
                        });
                        self.output = output;
                        status
                    }
                    None => api::render_error(&mut self.output, &Error::Unavailable("internal error"), false),
                },
            };
            if plan.head {
                drop_body(&mut self.output, response_start);
            }
            shard.counters.count_response(status);
            if self.output.len() >= WRITE_BUFFER_FLUSH_BYTES {
                self.flush().await?;
            }
        }
        self.plans = plans;
        self.plans.clear();
        self.slots = slots.collect();
        self.slots.clear();
        for reply in &mut self.replies {
            *reply = None;
        }
        self.flush().await
    }

    /// Moves every operation into a slot: local ones stay here, remote ones go to their owner
    /// in one batch per owner, whose replies are awaited before rendering.
    async fn dispatch(&mut self, shard: &ShardContext) {
        for plan in &mut self.plans {
            let mut place = |owner: ShardId, op: Op| {
                if owner == shard.id {
                    Slot::Local(op)
                } else {
                    let batch = &mut self.outbound[owner];
                    batch.push(op);
                    Slot::Remote {
                        owner,
                        index: batch.len() - 1,
                    }
                }
            };
            match std::mem::replace(&mut plan.ops, Ops::None) {
                Ops::None => {}
                Ops::One(op) => self.slots.push(place(shard.owner(op.key()), op)),
                Ops::Many(ops) => {
                    for op in ops {
                        let slot = place(shard.owner(op.key()), op);
                        self.slots.push(slot);
                    }
                }
                Ops::EveryShard => {
                    for owner in 0..shard.nr_shards {
                        let slot = place(owner, Op::Stats);
                        self.slots.push(slot);
                    }
                }
            }
        }
        let mut pending = Vec::new();
        for owner in 0..shard.nr_shards {
            if !self.outbound[owner].is_empty() {
                let ops = std::mem::take(&mut self.outbound[owner]);
                shard.counters.count_message_sent();
                if let Ok(receiver) = shard.router.send(owner, ops).await {
                    pending.push((owner, receiver));
                }
            }
        }
        for (owner, receiver) in pending {
            self.replies[owner] = receiver.await.ok();
        }
    }

    /// Hands the outcome of one slot to `f`: executed now on this shard (a found value is
    /// borrowed in place), or read from its owner's reply.
    fn with_outcome<R>(
        &self,
        shard: &ShardContext,
        slot: Slot,
        f: impl FnOnce(Result<Outcome<&[u8]>, Error>) -> R,
    ) -> R {
        match slot {
            Slot::Local(op) => shard.apply_local(op, |outcome| f(Ok(outcome))),
            Slot::Remote { owner, index } => {
                match self.replies[owner].as_ref().and_then(|replies| replies.get(index)) {
                    Some(outcome) => f(Ok(outcome.map(|value| &**value))),
                    None => f(Err(Error::Unavailable(
                        "the shard owning this key did not answer (shutting down)",
                    ))),
                }
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
            if self.output.capacity() > WRITE_BUFFER_KEEP_BYTES {
                self.output = Vec::with_capacity(READ_CHUNK_BYTES);
            }
        }
        Ok(())
    }

    /// Ends the connection after its last response: flush, then close the write side.
    ///
    /// Then it reads and discards what the client still sends, briefly: closing a socket with
    /// unread input makes the kernel send RST, which can destroy the response before the client
    /// has read it (a 413 or 431 sent while the request's rest is still arriving).
    async fn finish(&mut self) -> io::Result<()> {
        self.flush().await?;
        let _ = self.stream.shutdown(std::net::Shutdown::Write).await;
        let deadline = Instant::now() + Duration::from_millis(LINGER_MS);
        let mut discarded = 0;
        while discarded < LINGER_DISCARD_BYTES_MAX {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() || self.stream.set_read_timeout(Some(remaining)).is_err() {
                break;
            }
            self.input.start = 0;
            self.input.end = 0;
            match self.stream.read(self.input.spare(None)).await {
                Ok(0) | Err(_) => break,
                Ok(read) => discarded += read,
            }
        }
        Ok(())
    }
}
