//! One connection's life: read, parse every complete request in the buffer into plans, hand
//! their operations to the [`Dispatcher`], then render every response in request order and
//! write the batch at once.
//!
//! Owns the socket, its buffers and its deadlines, and the shard's [`Pool`] of what
//! connections hold only while bytes are in flight. Where an operation runs, and how replies
//! from other shards are bounded, is the dispatcher's business; what a route means is
//! [`crate::api`]'s. Every buffer here is bounded: the read buffer grows only as bytes arrive
//! (at most about twice what has arrived, never from a declared length), the write buffer is
//! flushed past `WRITE_BUFFER_FLUSH_BYTES`, and at most `PIPELINE_REQUESTS_MAX` requests are
//! parsed per batch. With `--data-dir`, nothing is written out before the writes it
//! acknowledges are durable ([`Connection::flush`]).
//!
//! An idle connection (nothing buffered, its read pending) holds only its socket, its
//! registration and a small future: no read or write buffer, no batch bookkeeping, no room in
//! its future for the states of a busy one ([`Connection::run`]). Issue 14: about 0.7 KiB of
//! RSS each (docs/BENCHMARKS.md, Idle connections).

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use log::debug;

use crate::warn_limited;

use crate::api::{self, Context, Plan};
use crate::error::Error;
use crate::http::registry::{Registration, Registry};
use crate::http::request::{self, Need, Parsed};
use crate::http::response;
use crate::http::stream;
use crate::limits::{
    CONNECTION_IDLE_BUFFER_BYTES, CONNECTION_IDLE_BUFFER_BYTES_MIN, PIPELINE_REQUESTS_MAX, READ_CHUNK_BYTES,
    TXN_RETRY_PAUSE_US_MAX, WRITE_BUFFER_FLUSH_BYTES, WRITE_TIMEOUT_MS,
};
use crate::shard::context::ShardContext;
use crate::shard::dispatch::Dispatcher;

/// After the last response of a closing connection, how long its further input is drained
/// before the socket closes, in ms, and how much of it at most.
const LINGER_MS: u64 = 500;
const LINGER_DISCARD_BYTES_MAX: usize = 1 << 20;
/// A write buffer larger than this is given back after it is flushed.
const WRITE_BUFFER_KEEP_BYTES: usize = 4 * READ_CHUNK_BYTES;
/// Plans and outcome slots a pooled [`Batch`] keeps room for (more after a deep pipeline are
/// given back).
const IDLE_PLANS_KEEP: usize = 16;
/// Batches a shard's [`Pool`] keeps for its next busy connections (about as many as are busy
/// at once); one given back past it is freed.
const POOL_BATCHES_MAX: usize = 64;

/// Answers a connection over the shard's limit with 503 and closes it.
pub async fn refuse(mut stream: TcpStream, limit: usize) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(WRITE_TIMEOUT_MS)));
    let mut out = Vec::new();
    let why = Error::Unavailable("too many open connections on this shard (--max-connections)");
    response::error(&mut out, &why, false);
    debug!("refused a connection: {limit} already open on this shard");
    let _ = stream.write_all(&out).await;
}

/// Registers one accepted connection, and returns the task that serves it until it closes,
/// errs or times out. Not an `async fn`: the task's future then holds the connection alone, not
/// also the arguments it was made from.
pub fn serve(stream: TcpStream, shard: Rc<ShardContext>, registry: Rc<Registry>) -> impl Future<Output = ()> {
    let registered = registry.register(stream.as_raw_fd(), &shard);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(WRITE_TIMEOUT_MS)));
    let mut connection = Connection::new(stream, shard, registered);
    async move {
        if let Err(e) = connection.run().await {
            debug!("connection ended: {e}");
        }
    }
}

/// What one shard's connections borrow only while they have bytes in flight, so that an idle
/// connection holds none of it. Lives in the shard's [`Registry`], on the shard's thread.
pub struct Pool {
    /// What an idle connection's read lands in: borrowed only within one synchronous poll of
    /// the read, and copied out into the connection's own buffer before the poll returns.
    scratch: RefCell<Box<[u8]>>,
    /// Batches given back by connections that went idle, for the next to become busy. Boxed
    /// because a connection holds its batch by pointer: inline, it would widen every task's
    /// future, idle ones included.
    #[allow(clippy::vec_box)]
    batches: RefCell<Vec<Box<Batch>>>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            scratch: RefCell::new(vec![0; READ_CHUNK_BYTES].into_boxed_slice()),
            batches: RefCell::new(Vec::new()),
        }
    }
}

impl Pool {
    fn take(&self, nr_shards: usize) -> Box<Batch> {
        let pooled = self.batches.borrow_mut().pop();
        pooled.unwrap_or_else(|| Box::new(Batch::new(nr_shards)))
    }

    /// Takes back the batch of a connection that went idle (its batch answered, every
    /// response written).
    fn give_back(&self, mut batch: Box<Batch>) {
        debug_assert!(batch.plans.is_empty() && batch.outcome_counts.is_empty() && batch.output.is_empty());
        batch.shrink();
        let mut batches = self.batches.borrow_mut();
        if batches.len() < POOL_BATCHES_MAX {
            batches.push(batch);
        }
    }
}

/// What a connection needs only while it has requests in flight: taken from the shard's
/// [`Pool`] when a request's first bytes arrive, given back when it goes idle.
struct Batch {
    /// Rendered responses not yet written.
    output: Vec<u8>,
    /// How far parsing got with the partial request at the start of the input (reset by
    /// `request::parse` when a request completes), so each read's parse scans only new bytes.
    framing: request::BodyProgress,
    // Reused across batches so a steady connection allocates nothing for bookkeeping.
    plans: Vec<Plan>,
    /// How many outcomes each plan reads, in plan order.
    outcome_counts: Vec<usize>,
    dispatcher: Dispatcher,
}

impl Batch {
    fn new(nr_shards: usize) -> Batch {
        Batch {
            output: Vec::new(),
            framing: request::BodyProgress::default(),
            plans: Vec::new(),
            outcome_counts: Vec::new(),
            dispatcher: Dispatcher::new(nr_shards),
        }
    }

    /// Gives back a write buffer or bookkeeping a large response or deep pipeline grew, and
    /// forgets any framing (an empty input holds no partial request).
    fn shrink(&mut self) {
        self.framing = request::BodyProgress::default();
        if self.output.capacity() > CONNECTION_IDLE_BUFFER_BYTES {
            self.output = Vec::new();
        }
        if self.plans.capacity() > IDLE_PLANS_KEEP {
            self.plans = Vec::new();
            self.outcome_counts = Vec::new();
            self.dispatcher.shrink();
        }
    }
}

/// How a connection's busy spell ended.
enum Then {
    /// Every buffered request is answered: wait idle for the next.
    Idle,
    /// The connection is done.
    Close,
}

/// The read side's bytes: `data[start..end]` is unparsed input. Empty (no allocation) while
/// the connection is idle.
struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// Most bytes it held since it last shrank: sizes it for the connection's next requests.
    peak: usize,
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
        }
    }

    /// Once the buffer is empty, gives back all but twice what the last requests took (within
    /// `CONNECTION_IDLE_BUFFER_BYTES_MIN..=CONNECTION_IDLE_BUFFER_BYTES`).
    fn shrink_when_empty(&mut self) {
        let keep = (2 * self.peak).clamp(CONNECTION_IDLE_BUFFER_BYTES_MIN, CONNECTION_IDLE_BUFFER_BYTES);
        self.peak = 0;
        if self.start == self.end && self.data.len() > keep {
            self.data = vec![0; keep];
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes `bytes` (the first of the next request, read into the shard's scratch) the
    /// buffer's content, in a buffer just large enough (at least
    /// `CONNECTION_IDLE_BUFFER_BYTES_MIN`).
    fn fill_from(&mut self, bytes: &[u8]) {
        let len = bytes.len().max(CONNECTION_IDLE_BUFFER_BYTES_MIN);
        let mut data = Vec::with_capacity(len);
        data.extend_from_slice(bytes);
        data.resize(len, 0);
        self.data = data;
        self.start = 0;
        self.end = bytes.len();
    }

    /// Free space to read into. The buffer grows only as bytes arrive: by at most what it
    /// already holds (doubling), and by no more than the rest of a request whose total size
    /// (`total_bytes`, head plus declared body) is known. A declared length alone never
    /// reserves memory.
    fn spare(&mut self, total_bytes: Option<usize>) -> &mut [u8] {
        // Grow (or compact) once less than a quarter of the buffer is free.
        let free_min = self.data.len() / 4;
        if self.data.len() - self.end < free_min && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.data.len() - self.end < free_min.max(1) {
            let mut step = self
                .end
                .clamp(CONNECTION_IDLE_BUFFER_BYTES_MIN, READ_CHUNK_BYTES.max(self.end));
            if let Some(rest) = total_bytes.and_then(|total| total.checked_sub(self.end)) {
                step = step.min(rest.max(CONNECTION_IDLE_BUFFER_BYTES_MIN));
            }
            self.data.resize(self.end + step, 0);
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
    /// The connection's entry in its shard's registry: its read deadline lives there, and the
    /// shard's [`Pool`].
    registered: Registration,
    input: ReadBuffer,
    clock: RequestClock,
}

impl Connection {
    fn new(stream: TcpStream, shard: Rc<ShardContext>, registered: Registration) -> Connection {
        Connection {
            stream,
            shard,
            registered,
            input: ReadBuffer {
                data: Vec::new(),
                start: 0,
                end: 0,
                peak: 0,
            },
            clock: RequestClock::default(),
        }
    }

    /// Alternates idle waits and busy spells until the connection ends.
    ///
    /// A busy spell runs boxed, with a [`Batch`] from the shard's pool: the states of parsing,
    /// dispatching and writing (kilobytes of future) exist only while bytes are in flight, and
    /// an idle connection's future has room for its wait alone.
    async fn run(&mut self) -> io::Result<()> {
        loop {
            if self.input.filled().is_empty() && !self.wait_idle().await? {
                return Ok(());
            }
            let mut batch = self.registered.pool().take(self.shard.nr_shards);
            match Box::pin(self.serve_busy(&mut batch)).await? {
                Then::Idle => self.registered.pool().give_back(batch),
                Then::Close => return Ok(()),
            }
        }
    }

    /// Answers requests while input is buffered: returns `Idle` once all of it is answered.
    async fn serve_busy(&mut self, batch: &mut Batch) -> io::Result<Then> {
        loop {
            if self.input.filled().is_empty() {
                return Ok(Then::Idle);
            }
            let (need, closing) = self.parse_batch(batch);
            if !batch.plans.is_empty() {
                self.clock = RequestClock::default();
                // Once shutdown has begun, this batch is the connection's last.
                let closing = closing || self.registered.stopping();
                self.answer_batch(batch, closing).await?;
                if closing {
                    self.finish(batch).await?;
                    return Ok(Then::Close);
                }
                if !self.input.filled().is_empty() {
                    self.clock.started = Some(self.registered.coarse_now_ms());
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
            if !self.read_more(need, batch).await? {
                return Ok(Then::Close);
            }
        }
    }

    /// Parses every complete request in the buffer (up to the pipeline limit) into plans.
    /// Returns what the buffer needs next and whether the connection closes after this batch.
    fn parse_batch(&mut self, batch: &mut Batch) -> (Need, bool) {
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
            tokens: shard.auth.as_ref().map(|auth| auth.current()),
        };
        let mut consumed = 0;
        let mut need = Need::Head;
        let mut closing = false;
        while batch.plans.len() < PIPELINE_REQUESTS_MAX && !closing {
            let filled = &self.input.filled()[consumed..];
            if filled.is_empty() {
                break;
            }
            match request::parse(filled, &mut batch.framing, |head| api::body_limit(head, &shard.args)) {
                Parsed::Complete(request, used) => {
                    let plan = api::plan(request, &context);
                    // A transaction is alone in its batch: it runs after every request before
                    // it and before every one after it. One later in the buffer is parsed again
                    // for the next batch.
                    let txn = matches!(plan.ops, api::Ops::Txn(_));
                    if txn && !batch.plans.is_empty() {
                        break;
                    }
                    consumed += used;
                    closing = plan.closes();
                    // A listing reads many keys: it must not see writes pipelined after it,
                    // which this batch would run first. It ends the batch.
                    let streams = plan.streams();
                    batch.plans.push(plan);
                    if streams || txn {
                        break;
                    }
                }
                Parsed::Incomplete(Need::Head) => {
                    if let Some(error) = request::head_overflow(filled) {
                        batch.plans.push(Plan::error(error, false));
                        closing = true;
                    }
                    break;
                }
                Parsed::Incomplete(body_need) => {
                    need = body_need;
                    break;
                }
                Parsed::Invalid(error) => {
                    batch.plans.push(Plan::error(error, false));
                    closing = true;
                }
            }
        }
        self.input.consume(consumed);
        (need, closing)
    }

    /// Waits for the next request's first bytes, idle: the read buffer is given back (to at
    /// most `CONNECTION_IDLE_BUFFER_BYTES`, and entirely once the read is pending), and what
    /// arrives is read through the shard's scratch buffer. Returns false on a clean end (peer
    /// closed, idle timeout, shutdown).
    ///
    /// The deadline is enforced by the shard's sweeper ([`Registry::sweep_forever`]), which
    /// ends the read with `shutdown(SHUT_RD)`: a read arms no timer and reads no clock.
    async fn wait_idle(&mut self) -> io::Result<bool> {
        debug_assert!(self.input.filled().is_empty());
        self.registered.set_mid_request(false);
        self.input.shrink_when_empty();
        let now = self.registered.coarse_now_ms();
        let deadline_ms = now.saturating_add(self.shard.args.idle_timeout_ms);
        if deadline_ms <= now {
            return Ok(false);
        }
        self.registered.set_read_deadline(deadline_ms);
        let read = poll_fn(|cx| self.poll_read_idle(cx)).await;
        self.registered.set_read_deadline(0);
        if read? == 0 {
            return Ok(false);
        }
        self.clock.started = Some(self.registered.coarse_now_ms());
        self.input.peak = self.input.peak.max(self.input.end);
        Ok(true)
    }

    /// One poll of an idle read. Bytes already waiting go straight into the connection's own
    /// buffer; once the read is pending that buffer is freed, and later polls read into the
    /// shard's scratch (which glommio's readiness-based read fills only within the poll) and
    /// copy what came into a new buffer sized to it.
    fn poll_read_idle(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<usize>> {
        if !self.input.data.is_empty() {
            let read = Pin::new(&mut self.stream).poll_read(cx, &mut self.input.data);
            if let Poll::Ready(Ok(bytes)) = read {
                self.input.start = 0;
                self.input.end = bytes;
            } else if read.is_pending() {
                self.input.data = Vec::new();
            }
            return read;
        }
        let mut scratch = self.registered.pool().scratch.borrow_mut();
        let read = ready!(Pin::new(&mut self.stream).poll_read(cx, &mut scratch));
        if let Ok(bytes) = read {
            self.input.fill_from(&scratch[..bytes]);
        }
        Poll::Ready(read)
    }

    /// Reads more of a started request under the deadline of its phase (headers, then body).
    /// Returns false on a clean end (peer closed, shutdown); answers 408 when it times out.
    async fn read_more(&mut self, need: Need, batch: &mut Batch) -> io::Result<bool> {
        debug_assert!(!self.input.filled().is_empty(), "an empty buffer waits idle");
        let now = self.registered.coarse_now_ms();
        self.registered.set_mid_request(matches!(need, Need::Body { .. }));
        let args = &self.shard.args;
        let (deadline_ms, phase, limit_ms, total_bytes) = match need {
            Need::Head => {
                let started = *self.clock.started.get_or_insert(now);
                let deadline_ms = started.saturating_add(args.header_timeout_ms);
                (deadline_ms, "headers", args.header_timeout_ms, None)
            }
            Need::Body { total_bytes, .. } => {
                let started = *self.clock.body_started.get_or_insert(now);
                let deadline_ms = started.saturating_add(args.body_timeout_ms);
                (deadline_ms, "body", args.body_timeout_ms, total_bytes)
            }
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
                batch.output.clear();
                let status = api::render_error(&mut batch.output, &Error::RequestTimeout { phase, limit_ms }, false);
                self.shard.counters.count_response(status);
                debug!("closing a connection: request {phase} timed out");
                let _ = self.finish(batch).await;
                Ok(false)
            }
            Ok(0) => Ok(false),
            Ok(bytes) => {
                self.input.end += bytes;
                self.input.peak = self.input.peak.max(self.input.end - self.input.start);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs the batch's operations on their owners and writes every response, in order.
    /// `closing`: the batch's last response says `Connection: close`.
    async fn answer_batch(&mut self, batch: &mut Batch, closing: bool) -> io::Result<()> {
        let shard = Rc::clone(&self.shard);
        batch.dispatcher.set_stale(batch.plans.iter().all(|plan| plan.stale));
        for plan in &mut batch.plans {
            let ops = std::mem::replace(&mut plan.ops, api::Ops::None);
            batch.outcome_counts.push(batch.dispatcher.push(&shard, ops));
        }
        batch.dispatcher.send(&shard).await;
        let plans = std::mem::take(&mut batch.plans);
        let counts = std::mem::take(&mut batch.outcome_counts);
        let last = plans.len() - 1;
        for (at, (plan, &count)) in plans.iter().zip(&counts).enumerate() {
            // An owner's reply reached its byte budget: write what is rendered, then fetch the
            // rest (the client's reading speed now paces this connection).
            while batch.dispatcher.must_resume(count) {
                self.flush(batch).await?;
                batch.dispatcher.resume(&shard).await;
            }
            // A key of this request is in a transaction's commit window: wait for it to end.
            while batch.dispatcher.must_wait(&shard, count) {
                glommio::timer::sleep(Duration::from_micros(TXN_RETRY_PAUSE_US_MAX)).await;
            }
            let keep_alive = !(plan.closes() || closing && at == last);
            // A listing or a watch streams: what is rendered goes out first, then it writes by
            // itself (a watch is always the batch's last: its plan closes the connection).
            if let api::Render::List(spec) = &plan.render {
                self.flush(batch).await?;
                let status = stream::list(&shard, spec, keep_alive, &mut self.stream, &mut batch.output).await?;
                shard.counters.count_response(status);
                continue;
            }
            if let api::Render::Watch(spec) = &plan.render {
                self.flush(batch).await?;
                let status = stream::watch(&shard, spec, &mut self.stream, &mut batch.output).await?;
                shard.counters.count_response(status);
                continue;
            }
            let start = batch.output.len();
            let status = plan.render(&mut batch.dispatcher.outcomes(&shard), keep_alive, &mut batch.output);
            if count > 0
                && let Some(leader) = batch.dispatcher.leader()
            {
                crate::replication::tag_leader(&mut batch.output, start, leader);
            }
            shard.counters.count_response(status);
            if batch.output.len() >= WRITE_BUFFER_FLUSH_BYTES {
                self.flush(batch).await?;
                // The flush awaited: other tasks may have used the log room the rest of the
                // batch's local writes had reserved.
                batch.dispatcher.reserve_local_writes(&shard).await;
            }
        }
        batch.plans = plans;
        batch.plans.clear();
        batch.outcome_counts = counts;
        batch.outcome_counts.clear();
        batch.dispatcher.clear();
        self.flush(batch).await
    }

    /// Writes out the rendered responses, once every write they acknowledge is durable
    /// (`--data-dir`): an answer never leaves before its log record is written or synced, per
    /// `--fsync`. When the log failed, the connection closes without those answers.
    async fn flush(&mut self, batch: &mut Batch) -> io::Result<()> {
        let logged = batch.dispatcher.take_logged();
        if let Err(e) = logged.durable(self.shard.log().as_deref()).await {
            warn_limited!("closing a connection unanswered: its writes will never be durable: {e}");
            batch.output.clear();
            return Err(io::Error::other(e.to_string()));
        }
        if !batch.output.is_empty() {
            self.stream.write_all(&batch.output).await?;
            batch.output.clear();
            if batch.output.capacity() > WRITE_BUFFER_KEEP_BYTES {
                batch.output = Vec::new();
            }
        }
        Ok(())
    }

    /// Ends the connection after its last response: flush, then close the write side.
    ///
    /// Then it reads and discards what the client still sends, briefly: closing a socket with
    /// unread input makes the kernel send RST, which can destroy the response before the client
    /// has read it (a 413 or 431 sent while the request's rest is still arriving).
    async fn finish(&mut self, batch: &mut Batch) -> io::Result<()> {
        self.flush(batch).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Size of what `f` returns (for an `async fn`, its future), without calling it.
    fn returned_bytes<A, B, C, R>(_: &impl Fn(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn an_idle_connections_task_has_no_room_for_a_busy_one() {
        // 2.6 KiB when the busy states were inline (debug build); 312 bytes now.
        let idle = returned_bytes(&serve);
        assert!(idle <= 512, "the connection task's future is {idle} bytes");
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_small_batches() {
        let pool = Pool::default();
        let mut batches: Vec<Box<Batch>> = (0..POOL_BATCHES_MAX + 5).map(|_| pool.take(2)).collect();
        batches[0].plans.reserve(IDLE_PLANS_KEEP * 4);
        batches[1].output.reserve(CONNECTION_IDLE_BUFFER_BYTES * 2);
        for batch in batches {
            pool.give_back(batch);
        }
        let pooled = pool.batches.borrow();
        assert_eq!(pooled.len(), POOL_BATCHES_MAX);
        assert!(pooled.iter().all(|batch| batch.plans.capacity() <= IDLE_PLANS_KEEP));
        assert!(
            pooled
                .iter()
                .all(|batch| batch.output.capacity() <= CONNECTION_IDLE_BUFFER_BYTES)
        );
    }

    #[test]
    fn a_read_buffer_filled_after_idle_is_sized_to_what_came() {
        let mut input = ReadBuffer {
            data: Vec::new(),
            start: 0,
            end: 0,
            peak: 0,
        };
        input.shrink_when_empty();
        assert_eq!(input.data.capacity(), 0, "an idle buffer holds nothing");
        input.fill_from(b"GET / HTTP/1.1\r\n");
        assert_eq!(input.filled(), b"GET / HTTP/1.1\r\n");
        assert_eq!(input.data.len(), CONNECTION_IDLE_BUFFER_BYTES_MIN);
        let big = vec![b'x'; READ_CHUNK_BYTES];
        input.fill_from(&big);
        assert_eq!(input.filled(), &big[..]);
        assert!(input.data.capacity() < 2 * READ_CHUNK_BYTES);
        input.consume(READ_CHUNK_BYTES);
        assert!(!input.spare(None).is_empty(), "room to read into once more is needed");
    }
}
