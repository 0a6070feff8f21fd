//! The process's dealings with the kernel outside io_uring: sockets (the port-0 placeholder,
//! who else listens on a port, `shutdown(SHUT_RD)`, the fd-exhaustion refusal), rlimits,
//! shutdown signals, and the io_uring pre-flight probe.
//!
//! Owns every system call the server makes by hand, through socket2, rlimit and nix (the crates
//! glommio already builds); the io_uring probe is the one raw `libc::syscall` left. It never
//! touches a shard, a store or a request: callers decide what a failure means.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{Shutdown, SockFlag, accept4};
use rlimit::Resource;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::limits::LISTEN_BACKLOG_CONNECTIONS;

/// Asks the kernel for a tiny io_uring and closes it at once: Ok when io_uring can be used.
/// The error is the raw errno (ENOSYS: no io_uring; EPERM: seccomp or the sysctl forbids it).
pub fn probe_io_uring() -> io::Result<()> {
    // io_uring_params is 120 bytes on every Linux ABI; zeroed asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup(entries, params) reads and writes only the 120-byte
    // `struct io_uring_params` that `params` points to, which lives until the call returns.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall just returned this fd to us, open and owned by nothing else.
    drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    Ok(())
}

/// The soft RLIMIT_MEMLOCK in bytes; None when unlimited or unreadable.
pub fn memlock_limit_bytes() -> Option<u64> {
    match Resource::MEMLOCK.get() {
        Ok((soft, _)) if soft != rlimit::INFINITY => Some(soft),
        _ => None,
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let (soft, hard) = Resource::NOFILE.get()?;
    if soft < hard {
        Resource::NOFILE.set(hard, hard)?;
    }
    Ok(Resource::NOFILE.get()?.0)
}

/// For port 0, binds a SO_REUSEPORT placeholder socket on a kernel-chosen free port, so every
/// shard can bind that same port; the caller drops it once all shards listen. Any other port
/// is returned as it is, with no placeholder.
pub fn reserve_port(addr: SocketAddr) -> io::Result<(SocketAddr, Option<Socket>)> {
    if addr.port() != 0 {
        return Ok((addr, None));
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.bind(&SockAddr::from(addr))?;
    let port = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("the placeholder socket has no IP address"))?
        .port();
    Ok((SocketAddr::new(addr.ip(), port), Some(socket)))
}

/// A shard's listening socket: glommio's listener, plus its descriptor (glommio's
/// `TcpListener` does not lend it out) for the fd-exhaustion refusal ([`ReserveFd`]).
pub struct Listener {
    glommio: glommio::net::TcpListener,
    /// The descriptor `glommio` owns; valid for as long as `glommio` lives.
    fd: RawFd,
}

impl Listener {
    /// Binds `addr` with SO_REUSEPORT and listens, as glommio's `TcpListener::bind` does, so
    /// every shard shares the port. Must run on a glommio executor.
    pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_port(true)?;
        socket.bind(&SockAddr::from(addr))?;
        socket.listen(LISTEN_BACKLOG_CONNECTIONS)?;
        let fd = socket.into_raw_fd();
        // SAFETY: `fd` is a bound, listening TCP socket that `into_raw_fd` just released to us;
        // glommio's listener becomes its only owner (and closes it when dropped).
        let glommio = unsafe { <glommio::net::TcpListener as FromRawFd>::from_raw_fd(fd) };
        Ok(Listener { glommio, fd })
    }

    /// The glommio listener, to accept on.
    pub fn glommio(&self) -> &glommio::net::TcpListener {
        &self.glommio
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `self.glommio` owns `self.fd` and keeps it open for as long as `self` lives,
        // which outlasts the returned borrow.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

/// Counts the TCP sockets in LISTEN state, in any process of this network namespace, that
/// would take connections for `addr`: the same port, and the same IP or either one a wildcard.
/// Read from `/proc/net/tcp` and `/proc/net/tcp6`; a missing table counts as empty.
pub fn listeners_on(addr: SocketAddr) -> io::Result<usize> {
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        count += text
            .lines()
            .skip(1)
            .filter_map(parse_listener)
            .filter(|listener| overlaps(*listener, addr))
            .count();
    }
    Ok(count)
}

/// The local address of one `/proc/net/tcp{,6}` line, when that socket is listening.
fn parse_listener(line: &str) -> Option<SocketAddr> {
    const TCP_LISTEN: &str = "0A";
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    let state = fields.nth(1)?;
    if state != TCP_LISTEN {
        return None;
    }
    let (ip, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The kernel prints the address as 32-bit words in host byte order.
    let word = |i: usize| {
        u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
            .ok()
            .map(u32::to_ne_bytes)
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                octets[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// True when a listener on `listener` would take connections meant for `addr`.
fn overlaps(listener: SocketAddr, addr: SocketAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let (a, b) = (canonical(listener.ip()), canonical(addr.ip()));
    listener.port() == addr.port() && (a == b || a.is_unspecified() || b.is_unspecified())
}

/// SIGINT and SIGTERM (and SIGHUP when asked), blocked in every thread and read from a
/// signalfd on the main thread.
pub struct ShutdownSignals {
    fd: SignalFd,
}

/// A signal the main thread acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// SIGINT or SIGTERM (its name): drain and stop.
    Shutdown(&'static str),
    /// SIGHUP: re-read the files that are re-read (`--auth-token-file`).
    Reload,
}

impl ShutdownSignals {
    fn set(reload: bool) -> SigSet {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        if reload {
            set.add(Signal::SIGHUP);
        }
        set
    }

    /// Blocks SIGINT and SIGTERM in the calling thread (threads started later inherit the
    /// mask, so only [`ShutdownSignals::wait`] ever sees them) and opens their signalfd. With
    /// `reload`, SIGHUP too; without it SIGHUP keeps its default action (it ends the process).
    pub fn block(reload: bool) -> io::Result<ShutdownSignals> {
        let set = Self::set(reload);
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(ShutdownSignals { fd })
    }

    /// Waits up to `timeout` for a signal of the set; returns it when one arrived.
    pub fn wait(&mut self, timeout: Duration) -> Option<Received> {
        let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(&self.fd, PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, timeout_ms), Ok(ready) if ready > 0) {
            return None;
        }
        let info = self.fd.read_signal().ok()??;
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGINT) => Some(Received::Shutdown("SIGINT")),
            Ok(Signal::SIGTERM) => Some(Received::Shutdown("SIGTERM")),
            Ok(Signal::SIGHUP) => Some(Received::Reload),
            _ => None,
        }
    }
}

/// Ends the pending and future reads of a connected socket (`shutdown(SHUT_RD)`): a read in
/// flight returns end-of-file. Errors (the peer already gone) are of no interest and ignored.
pub fn shutdown_read(fd: RawFd) {
    let _ = nix::sys::socket::shutdown(fd, Shutdown::Read);
}

/// True for the accept errors that mean "out of file descriptors" (per process or system).
pub fn is_fd_exhaustion(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::EMFILE | libc::ENFILE))
}

/// A file descriptor held in reserve, so that a shard out of descriptors can still answer a
/// waiting client with an error instead of leaving it unanswered.
pub struct ReserveFd {
    file: Option<File>,
}

impl ReserveFd {
    /// Opens the reserve (`/dev/null`); when that fails, [`ReserveFd::refuse_waiting`] tries
    /// again.
    pub fn open() -> ReserveFd {
        ReserveFd {
            file: File::open("/dev/null").ok(),
        }
    }

    /// Frees the reserve, then accepts each connection already waiting on `listener` (at most
    /// `connections_max`), writes `response` to it and closes it; reopens the reserve after.
    /// Returns how many connections were answered.
    ///
    /// Another shard may take the freed descriptor first; then nothing is answered this time,
    /// and the reserve is reopened on a later call once a descriptor is free again.
    pub fn refuse_waiting(&mut self, listener: &impl AsFd, response: &[u8], connections_max: usize) -> usize {
        self.file = None;
        let mut answered = 0;
        while answered < connections_max && connection_waiting(listener) {
            let Some(stream) = accept_nonblocking(listener) else {
                break;
            };
            answer_and_close(stream, response);
            answered += 1;
        }
        self.file = File::open("/dev/null").ok();
        answered
    }
}

/// True when `listener` has a connection ready to accept (never blocks).
fn connection_waiting(listener: &impl AsFd) -> bool {
    let mut fds = [PollFd::new(listener, PollFlags::POLLIN)];
    matches!(poll(&mut fds, 0), Ok(ready) if ready > 0)
}

/// Accepts one waiting connection as a non-blocking socket.
///
/// Descriptors are shared by every thread: another shard's accept may hold the one just freed
/// for a moment (io_uring takes a descriptor before it finds nothing to accept and gives it
/// back), so EMFILE/ENFILE is retried a few times before giving up.
fn accept_nonblocking(listener: &impl AsFd) -> Option<TcpStream> {
    const ATTEMPTS: usize = 4;
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let mut accepted = accept4(listener.as_fd().as_raw_fd(), flags);
    for _ in 1..ATTEMPTS {
        match accepted {
            Err(errno) if is_fd_exhaustion(Some(errno as i32)) => {
                std::thread::yield_now();
                accepted = accept4(listener.as_fd().as_raw_fd(), flags);
            }
            _ => break,
        }
    }
    let fd = accepted.ok()?;
    // SAFETY: accept4 just returned this descriptor: open, and owned by nothing else.
    Some(TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Writes `response` (small enough for an empty socket buffer, so one non-blocking write
/// takes it), ends the write side, discards what the client already sent (closing with unread
/// input would reset the connection and could destroy the response), and closes.
fn answer_and_close(mut stream: TcpStream, response: &[u8]) {
    let _ = stream.write_all(response);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut discard = [0u8; 4096];
    while matches!(stream.read(&mut discard), Ok(read) if read > 0) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_is_reserved_and_other_ports_pass_through() {
        let (addr, socket) = reserve_port("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(addr.port(), 0);
        assert!(socket.is_some());
        let (same, none) = reserve_port(addr).unwrap();
        assert_eq!((same, none.is_none()), (addr, true));
    }

    #[test]
    fn proc_lines_parse_into_listening_addresses() {
        let v4 = "   0: 0100007F:1ED2 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 1 1";
        let v4_addr = parse_listener(v4).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(v4_addr, "127.0.0.1:7890".parse().unwrap());
        }
        let established = v4.replace(" 0A ", " 01 ");
        assert_eq!(parse_listener(&established), None);
        let v6 = "   0: 00000000000000000000000000000000:1ED2 00000000000000000000000000000000:0000 0A 0 0 0";
        assert_eq!(parse_listener(v6).unwrap(), "[::]:7890".parse().unwrap());
        assert_eq!(parse_listener("garbage"), None);
        assert_eq!(parse_listener("0: zz:1 0:0 0A"), None);
    }

    #[test]
    fn wildcards_and_mapped_addresses_overlap() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(at("0.0.0.0:80"), at("127.0.0.1:80")));
        assert!(overlaps(at("127.0.0.1:80"), at("0.0.0.0:80")));
        assert!(overlaps(at("[::]:80"), at("127.0.0.1:80")));
        assert!(overlaps(at("[::ffff:127.0.0.1]:80"), at("127.0.0.1:80")));
        assert!(!overlaps(at("127.0.0.1:81"), at("127.0.0.1:80")));
        assert!(!overlaps(at("127.0.0.2:80"), at("127.0.0.1:80")));
    }

    #[test]
    fn a_listener_is_seen_and_counted() {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = first.local_addr().unwrap();
        assert_eq!(listeners_on(addr).unwrap(), 1);
        drop(first);
        assert_eq!(listeners_on(addr).unwrap(), 0);
    }

    #[test]
    fn a_waiting_connection_is_answered_and_closed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut reserve = ReserveFd::open();
        assert_eq!(reserve.refuse_waiting(&listener, b"no\n", 8), 0, "nothing waits yet");
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(reserve.refuse_waiting(&listener, b"no\n", 8), 1);
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "no\n");
        assert!(reserve.file.is_some(), "the reserve is reopened");
    }

    #[test]
    fn shutdown_read_ends_a_pending_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        shutdown_read(server.as_raw_fd());
        assert_eq!(server.read(&mut [0u8; 8]).unwrap(), 0, "end-of-file, not a timeout");
    }

    #[test]
    fn limits_are_readable_and_fd_exhaustion_is_recognised() {
        assert!(raise_nofile_limit().unwrap() >= 16);
        let _ = memlock_limit_bytes();
        assert!(is_fd_exhaustion(Some(libc::EMFILE)) && is_fd_exhaustion(Some(libc::ENFILE)));
        assert!(!is_fd_exhaustion(Some(libc::ECONNABORTED)) && !is_fd_exhaustion(None));
    }
}
