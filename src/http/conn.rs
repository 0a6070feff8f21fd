//! One connection's life: read, parse every complete request in the buffer into plans, hand
//! their operations to the [`Dispatcher`], then render every response in request order and
//! write the batch at once.
//!
//! Owns the socket, its buffers and its deadlines. Where an operation runs, and how replies
//! from other shards are bounded, is the dispatcher's business; what a route means is
//! [`crate::api`]'s. Every buffer here is bounded: the read buffer grows only as bytes arrive
//! (at most about twice what has arrived, never from a declared length), the write buffer is
//! flushed past `WRITE_BUFFER_FLUSH_BYTES`, and at most `PIPELINE_REQUESTS_MAX` requests are
//! parsed per batch. With `--data-dir`, nothing is written out before the writes it
//! acknowledges are durable ([`Connection::flush`]).

use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
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
/// Plans and outcome slots an idle connection keeps room for (more after a deep pipeline are
/// given back).
const IDLE_PLANS_KEEP: usize = 16;

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
pub async fn serve(stream: TcpStream, shard: Rc<ShardContext>, registry: Rc<Registry>) {
    let registered = registry.register(stream.as_raw_fd(), &shard);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(WRITE_TIMEOUT_MS)));
    let mut connection = Connection::new(stream, shard, registered);
    if let Err(e) = connection.run().await {
        debug!("connection ended: {e}");
    }
}

/// The read side's bytes: `data[start..end]` is unparsed input.
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
    /// The connection's entry in its shard's registry: its read deadline lives there.
    registered: Registration,
    input: ReadBuffer,
    output: Vec<u8>,
    clock: RequestClock,
    /// How far parsing got with the partial request at the start of `input` (reset by
    /// `request::parse` when a request completes), so each read's parse scans only new bytes.
    framing: request::BodyProgress,
    // Reused across batches so a steady connection allocates nothing for bookkeeping.
    plans: Vec<Plan>,
    /// How many outcomes each plan reads, in plan order.
    outcome_counts: Vec<usize>,
    dispatcher: Dispatcher,
}

impl Connection {
    fn new(stream: TcpStream, shard: Rc<ShardContext>, registered: Registration) -> Connection {
        let nr_shards = shard.nr_shards;
        Connection {
            stream,
            shard,
            registered,
            input: ReadBuffer {
                data: vec![0; CONNECTION_IDLE_BUFFER_BYTES_MIN],
                start: 0,
                end: 0,
                peak: 0,
            },
            output: Vec::new(),
            clock: RequestClock::default(),
            framing: request::BodyProgress::default(),
            plans: Vec::new(),
            outcome_counts: Vec::new(),
            dispatcher: Dispatcher::new(nr_shards),
        }
    }

    async fn run(&mut self) -> io::Result<()> {
        loop {
            let (need, closing) = self.parse_batch();
            if !self.plans.is_empty() {
                self.clock = RequestClock::default();
                // Once shutdown has begun, this batch is the connection's last.
                let closing = closing || self.registered.stopping();
                self.answer_batch(closing).await?;
                if closing {
                    return self.finish().await;
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
            tokens: shard.auth.as_ref().map(|auth| auth.current()),
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
                    let plan = api::plan(request, &context);
                    // A transaction is alone in its batch: it runs after every request before
                    // it and before every one after it. One later in the buffer is parsed again
                    // for the next batch.
                    let txn = matches!(plan.ops, api::Ops::Txn(_));
                    if txn && !self.plans.is_empty() {
                        break;
                    }
                    consumed += used;
                    closing = plan.closes();
                    // A listing reads many keys: it must not see writes pipelined after it,
                    // which this batch would run first. It ends the batch.
                    let streams = plan.streams();
                    self.plans.push(plan);
                    if streams || txn {
                        break;
                    }
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

    /// Before waiting for a next request that may be long in coming: keep only
    /// `CONNECTION_IDLE_BUFFER_BYTES` of read buffer, and give back the write buffer and any
    /// bookkeeping a deep pipeline grew.
    fn shrink_for_idle(&mut self) {
        self.input.shrink_when_empty();
        if self.output.capacity() > CONNECTION_IDLE_BUFFER_BYTES {
            self.output = Vec::new();
        }
        if self.plans.capacity() > IDLE_PLANS_KEEP {
            self.plans = Vec::new();
            self.outcome_counts = Vec::new();
            self.dispatcher.shrink();
        }
    }

    /// Reads more input under the deadline of the current phase. Returns false on a clean end
    /// (peer closed, idle timeout, shutdown); answers 408 when a started request times out.
    ///
    /// The deadline is enforced by the shard's sweeper ([`Registry::sweep_forever`]), which
    /// ends the read with `shutdown(SHUT_RD)`: a read arms no timer and reads no clock.
    async fn read_more(&mut self, need: Need) -> io::Result<bool> {
        let now = self.registered.coarse_now_ms();
        self.registered.set_mid_request(matches!(need, Need::Body { .. }));
        if self.input.filled().is_empty() {
            self.shrink_for_idle();
        }
        let args = &self.shard.args;
        let (deadline_ms, phase, limit_ms) = if self.input.filled().is_empty() {
            (now.saturating_add(args.idle_timeout_ms), None, args.idle_timeout_ms)
        } else if let Need::Head = need {
            let started = *self.clock.started.get_or_insert(now);
            (
                started.saturating_add(args.header_timeout_ms),
                Some("headers"),
                args.header_timeout_ms,
            )
        } else {
            let started = *self.clock.body_started.get_or_insert(now);
            (
                started.saturating_add(args.body_timeout_ms),
                Some("body"),
                args.body_timeout_ms,
            )
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
                    self.clock.started = Some(self.registered.coarse_now_ms());
                }
                self.input.end += bytes;
                self.input.peak = self.input.peak.max(self.input.end - self.input.start);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs the batch's operations on their owners and writes every response, in order.
    /// `closing`: the batch's last response says `Connection: close`.
    async fn answer_batch(&mut self, closing: bool) -> io::Result<()> {
        let shard = Rc::clone(&self.shard);
        self.dispatcher.set_stale(self.plans.iter().all(|plan| plan.stale));
        for plan in &mut self.plans {
            let ops = std::mem::replace(&mut plan.ops, api::Ops::None);
            self.outcome_counts.push(self.dispatcher.push(&shard, ops));
        }
        self.dispatcher.send(&shard).await;
        let plans = std::mem::take(&mut self.plans);
        let counts = std::mem::take(&mut self.outcome_counts);
        let last = plans.len() - 1;
        for (at, (plan, &count)) in plans.iter().zip(&counts).enumerate() {
            // An owner's reply reached its byte budget: write what is rendered, then fetch the
            // rest (the client's reading speed now paces this connection).
            while self.dispatcher.must_resume(count) {
                self.flush().await?;
                self.dispatcher.resume(&shard).await;
            }
            // A key of this request is in a transaction's commit window: wait for it to end.
            while self.dispatcher.must_wait(&shard, count) {
                glommio::timer::sleep(Duration::from_micros(TXN_RETRY_PAUSE_US_MAX)).await;
            }
            let keep_alive = !(plan.closes() || closing && at == last);
            // A listing or a watch streams: what is rendered goes out first, then it writes by
            // itself (a watch is always the batch's last: its plan closes the connection).
            if let api::Render::List(spec) = &plan.render {
                self.flush().await?;
                let status = stream::list(&shard, spec, keep_alive, &mut self.stream, &mut self.output).await?;
                shard.counters.count_response(status);
                continue;
            }
            if let api::Render::Watch(spec) = &plan.render {
                self.flush().await?;
                let status = stream::watch(&shard, spec, &mut self.stream, &mut self.output).await?;
                shard.counters.count_response(status);
                continue;
            }
            let start = self.output.len();
            let status = plan.render(&mut self.dispatcher.outcomes(&shard), keep_alive, &mut self.output);
            if count > 0
                && let Some(leader) = self.dispatcher.leader()
            {
                crate::replication::tag_leader(&mut self.output, start, leader);
            }
            shard.counters.count_response(status);
            if self.output.len() >= WRITE_BUFFER_FLUSH_BYTES {
                self.flush().await?;
                // The flush awaited: other tasks may have used the log room the rest of the
                // batch's local writes had reserved.
                self.dispatcher.reserve_local_writes(&shard).await;
            }
        }
        self.plans = plans;
        self.plans.clear();
        self.outcome_counts = counts;
        self.outcome_counts.clear();
        self.dispatcher.clear();
        self.flush().await
    }

    /// Writes out the rendered responses, once every write they acknowledge is durable
    /// (`--data-dir`): an answer never leaves before its log record is written or synced, per
    /// `--fsync`. When the log failed, the connection closes without those answers.
    async fn flush(&mut self) -> io::Result<()> {
        let logged = self.dispatcher.take_logged();
        if let Err(e) = logged.durable(self.shard.log().as_deref()).await {
            warn_limited!("closing a connection unanswered: its writes will never be durable: {e}");
            self.output.clear();
            return Err(io::Error::other(e.to_string()));
        }
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
            if self.output.capacity() > WRITE_BUFFER_KEEP_BYTES {
                self.output = Vec::new();
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
