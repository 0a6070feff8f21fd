//! A TCP fault proxy for partition tests (issue #13): listens on 127.0.0.1 port 0, forwards
//! every connection to one target address, and lets the test cut, delay or drop the link.
//! Self-contained (std only, plain threads); it never talks to anything but its target.
//!
//! Put one proxy on each directed link between nodes (node A dials B's proxy, which forwards to
//! B) and a partition is `cut()` on the links that cross it.
//!
//! What the controls mean, for TCP:
//! - [`Proxy::cut`]: every open connection is shut down both ways at once, and connections
//!   accepted while cut are *blackholed*: accepted (a connect succeeds, as it would to a host
//!   whose replies vanish), read and discarded, never forwarded, never answered. The dialer sees
//!   silence and must time out on its own, as in a real partition.
//! - [`Proxy::heal`]: forwards new connections again and closes the blackholed ones (their bytes
//!   were thrown away, so their streams cannot continue); dialers reconnect.
//! - [`Proxy::delay`]: each chunk read in either direction is written on `ms` milliseconds after
//!   it arrived. A direction holds one chunk at a time, so a slow link pushes back on its sender
//!   through TCP instead of queueing: latency, not an unbounded buffer.
//! - [`Proxy::drop_probability`]: TCP cannot lose bytes in the middle of a stream without
//!   corrupting it, so "dropping" a chunk means: with probability `p` per chunk, that chunk is
//!   not forwarded and its connection is closed both ways at that point. To a Raft transport
//!   this is a lost message (or several) and a reconnect.
//!
//! Bounds: at most [`CONNECTIONS_MAX`] connections at once (more are closed on accept), and
//! [`CHUNK_BYTES`] of buffer per direction per connection. Dropping the proxy closes its
//! listener and every connection and joins every thread it started.
#![allow(dead_code)] // each test binary uses a different part of this helper

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections a proxy carries at once; one accepted beyond this is closed at once.
pub const CONNECTIONS_MAX: usize = 64;
/// Buffer per direction per connection: the most a proxy holds for one direction of a link.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// The longest delay a test may set; a longer one is a test bug.
pub const DELAY_MS_MAX: u64 = 10_000;
/// How long dialing the target may take before the client's connection is closed.
const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// How often the accept loop looks for a stop request, and the slice a delayed chunk sleeps in.
const POLL_MS: u64 = 5;
/// `drop_probability` is kept in parts per million so it fits an atomic.
const PARTS_PER_MILLION: u32 = 1_000_000;

/// A running proxy; stops (listener, connections, threads) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

/// What the proxy's threads share with the test's handle.
struct Shared {
    target: SocketAddr,
    /// True between `cut()` and `heal()`.
    cut: AtomicBool,
    delay_ms: AtomicU64,
    /// Chance, in parts per million, that a chunk is dropped (its connection closed).
    drop_ppm: AtomicU32,
    /// Set once, by `Drop`: every loop ends.
    stopping: AtomicBool,
    /// xorshift64 state for the drop decisions, seeded by the test for repeatable runs.
    rng: Mutex<u64>,
    /// The connections accepted and not yet reaped.
    links: Mutex<Vec<Link>>,
    /// Connections closed by a drop decision.
    dropped: AtomicU64,
    /// Connections closed on accept because `CONNECTIONS_MAX` were open.
    refused: AtomicU64,
}

/// One accepted connection: the client side, the target side (none when blackholed), and the
/// threads that move its bytes.
struct Link {
    client: TcpStream,
    upstream: Option<TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

impl Link {
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(upstream) = &self.upstream {
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }

    fn finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }
}

impl Proxy {
    /// Starts a proxy to `target` with a fixed seed for its drop decisions.
    pub fn start(target: SocketAddr) -> Proxy {
        Self::start_with_seed(target, 0x0013_FA17)
    }

    /// Starts a proxy to `target`; `seed` makes its drop decisions repeatable.
    pub fn start_with_seed(target: SocketAddr, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        Self::start_on(listener, target, seed)
    }

    /// Starts a proxy to `target` on a listener the test bound itself (a chosen port, e.g. the
    /// peer port of one shard, which must sit at a fixed stride from another); `seed` as above.
    pub fn start_on(listener: TcpListener, target: SocketAddr, seed: u64) -> Proxy {
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            target,
            cut: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            drop_ppm: AtomicU32::new(0),
            stopping: AtomicBool::new(false),
            rng: Mutex::new(seed | 1), // xorshift must not start at zero
            links: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let for_thread = Arc::clone(&shared);
        let accept_thread = std::thread::spawn(move || accept_loop(listener, for_thread));
        Proxy {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Partitions the link: closes every connection and blackholes new ones until `heal()`.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        for link in self.shared.links.lock().unwrap().iter() {
            link.close();
        }
    }

    /// Ends a partition: forwards new connections again, closes the blackholed ones.
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
        for link in self.shared.links.lock().unwrap().iter() {
            if link.upstream.is_none() {
                link.close();
            }
        }
    }

    /// Holds every chunk `ms` milliseconds before forwarding it (0: no delay).
    pub fn delay(&self, ms: u64) {
        assert!(ms <= DELAY_MS_MAX, "a delay of {ms} ms is over DELAY_MS_MAX");
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Drops each chunk with probability `p` (0.0 ..= 1.0), closing its connection.
    pub fn drop_probability(&self, p: f64) {
        assert!((0.0..=1.0).contains(&p), "drop probability {p} is not in 0..=1");
        let ppm = (p * f64::from(PARTS_PER_MILLION)).round() as u32;
        self.shared.drop_ppm.store(ppm, Ordering::SeqCst);
    }

    /// Connections closed by a drop decision so far.
    pub fn connections_dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Connections closed on accept because `CONNECTIONS_MAX` were open.
    pub fn connections_refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections open now (forwarded or blackholed).
    pub fn connections_open(&self) -> usize {
        let links = self.shared.links.lock().unwrap();
        links.iter().filter(|link| !link.finished()).count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts until the proxy stops, then closes every connection and joins their threads.
fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stopping.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => admit(client, &shared),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                reap(&shared);
                std::thread::sleep(Duration::from_millis(POLL_MS));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(POLL_MS)),
        }
    }
    drop(listener);
    let links = std::mem::take(&mut *shared.links.lock().unwrap());
    for link in &links {
        link.close();
    }
    for link in links {
        for thread in link.threads {
            let _ = thread.join();
        }
    }
}

/// Joins the threads of connections that have ended, so the list stays bounded.
fn reap(shared: &Shared) {
    let mut links = shared.links.lock().unwrap();
    let (done, open): (Vec<Link>, Vec<Link>) = links.drain(..).partition(Link::finished);
    *links = open;
    drop(links);
    for link in done {
        for thread in link.threads {
            let _ = thread.join();
        }
    }
}

/// Takes one accepted connection: refuses it past the bound, blackholes it while cut,
/// otherwise dials the target and starts a pump each way.
fn admit(client: TcpStream, shared: &Arc<Shared>) {
    reap(shared);
    if shared.links.lock().unwrap().len() >= CONNECTIONS_MAX {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let _ = client.set_nonblocking(false);
    let _ = client.set_nodelay(true);
    if shared.cut.load(Ordering::SeqCst) {
        let Ok(reader) = client.try_clone() else { return };
        let thread = std::thread::spawn(move || discard(reader));
        let link = Link {
            client,
            upstream: None,
            threads: vec![thread],
        };
        push_link(shared, link);
        return;
    }
    let timeout = Duration::from_millis(CONNECT_TIMEOUT_MS);
    let Ok(upstream) = TcpStream::connect_timeout(&shared.target, timeout) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = upstream.set_nodelay(true);
    let clones = (
        client.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
        upstream.try_clone(),
    );
    let (Ok(client_read), Ok(client_write), Ok(upstream_read), Ok(upstream_write)) = clones else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (a, b) = (Arc::clone(shared), Arc::clone(shared));
    let threads = vec![
        std::thread::spawn(move || pump(client_read, upstream_write, &a)),
        std::thread::spawn(move || pump(upstream_read, client_write, &b)),
    ];
    let link = Link {
        client,
        upstream: Some(upstream),
        threads,
    };
    push_link(shared, link);
}

/// Adds a link, then closes it if a `cut()` or `heal()` ran while it was being set up and so
/// did not see it: a forwarded link made as a cut began, or a blackholed one as a heal began.
/// (Each control sets its flag before walking the locked list, and this checks the flag with
/// the list locked, so either the control sees the link or the link sees the flag.)
fn push_link(shared: &Shared, link: Link) {
    let mut links = shared.links.lock().unwrap();
    let blackholed = link.upstream.is_none();
    if shared.cut.load(Ordering::SeqCst) != blackholed {
        link.close();
    }
    links.push(link);
}

/// A blackholed connection: read and throw away until it is closed.
fn discard(mut from: TcpStream) {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    while matches!(from.read(&mut buffer), Ok(n) if n > 0) {}
}

/// Moves one direction's bytes, a chunk at a time, applying the delay and drop controls. On
/// end of file it passes the half-close on; on any error, drop or stop it closes both ways.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(_) => break,
        };
        let arrived = Instant::now();
        if shared.should_drop() {
            shared.dropped.fetch_add(1, Ordering::SeqCst);
            break;
        }
        let delay = Duration::from_millis(shared.delay_ms.load(Ordering::SeqCst));
        if !shared.wait_until(arrived + delay) || to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Shared {
    /// Draws one drop decision.
    fn should_drop(&self) -> bool {
        let ppm = self.drop_ppm.load(Ordering::SeqCst);
        if ppm == 0 {
            return false;
        }
        let mut state = self.rng.lock().unwrap();
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state % u64::from(PARTS_PER_MILLION)) < u64::from(ppm)
    }

    /// Sleeps until `deadline` in short slices; false if the proxy stops or is cut meanwhile.
    fn wait_until(&self, deadline: Instant) -> bool {
        loop {
            if self.stopping.load(Ordering::SeqCst) || self.cut.load(Ordering::SeqCst) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(POLL_MS)));
        }
    }
}
