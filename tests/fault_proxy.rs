//! The fault proxy the replication tests will put between nodes (tests/common/proxy.rs),
//! exercised against a tiny echo server: forwarding, cut and heal, delay, drop, its connection
//! bound and its shutdown.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::proxy::{CONNECTIONS_MAX, Proxy};

/// How long a test waits for something that must happen before failing instead of hanging.
const WAIT: Duration = Duration::from_secs(10);
/// How long silence must last to count as "nothing came back".
const SILENCE: Duration = Duration::from_millis(300);

/// Echoes every byte back on every connection; stops accepting when dropped.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || {
                            let mut buffer = [0u8; 4096];
                            while let Ok(n @ 1..) = stream.read(&mut buffer) {
                                if stream.write_all(&buffer[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Echo {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect through the proxy");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

/// Sends `message` and reads the same number of bytes back.
fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(message)?;
    let mut answer = vec![0u8; message.len()];
    stream.read_exact(&mut answer)?;
    Ok(answer)
}

/// True when the peer closed the connection (EOF or reset) within `WAIT`.
fn closed(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// True when nothing arrives for `SILENCE` and the connection stays open.
fn silent(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(SILENCE)).unwrap();
    let mut byte = [0u8; 1];
    let silent =
        matches!(stream.read(&mut byte), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
    stream.set_read_timeout(Some(WAIT)).unwrap();
    silent
}

#[test]
fn forwards_bytes_both_ways_including_a_stream_larger_than_its_buffers() {
    // Goal: what goes in comes back unchanged, also 1 MiB, far more than one chunk.
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut stream = connect(proxy.addr());
    assert_eq!(round_trip(&mut stream, b"hello").unwrap(), b"hello");
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = stream.try_clone().unwrap();
    let to_send = big.clone();
    let sender = std::thread::spawn(move || writer.write_all(&to_send).unwrap());
    let mut back = vec![0u8; big.len()];
    stream.read_exact(&mut back).unwrap();
    sender.join().unwrap();
    assert!(back == big, "the 1 MiB stream came back altered");
}

#[test]
fn cut_closes_open_connections_blackholes_new_ones_and_heal_restores() {
    // Goal: a cut ends open links, a dial during the cut is accepted but never answered, and
    // heal closes the blackholed link and forwards new ones again.
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut before = connect(proxy.addr());
    assert_eq!(round_trip(&mut before, b"a").unwrap(), b"a");
    proxy.cut();
    assert!(closed(&mut before), "an open connection survived the cut");
    let mut during = connect(proxy.addr());
    during.write_all(b"anyone there?").unwrap();
    assert!(silent(&mut during), "a connection made during the cut was answered");
    proxy.heal();
    assert!(closed(&mut during), "heal left the blackholed connection open");
    let mut after = connect(proxy.addr());
    assert_eq!(round_trip(&mut after, b"back").unwrap(), b"back");
}

#[test]
fn delay_holds_each_chunk_in_each_direction() {
    // Goal: with a 150 ms delay a round trip takes at least 300 ms (out and back), and
    // setting it back to 0 makes it fast again.
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut stream = connect(proxy.addr());
    proxy.delay(150);
    let started = Instant::now();
    assert_eq!(round_trip(&mut stream, b"slow").unwrap(), b"slow");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "delayed round trip took only {took:?}"
    );
    assert!(took < WAIT, "delayed round trip took {took:?}");
    proxy.delay(0);
    let started = Instant::now();
    assert_eq!(round_trip(&mut stream, b"fast").unwrap(), b"fast");
    // Generous for a loaded machine, still far below the 300 ms a leftover delay would cost.
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_dropped_chunk_closes_its_connection() {
    // Goal: at probability 1 the first chunk is not forwarded and the link closes; at 0.5 some
    // connections of a sequence survive and some do not (the seed makes it repeatable).
    let echo = Echo::start();
    let proxy = Proxy::start_with_seed(echo.addr, 7);
    proxy.drop_probability(1.0);
    let mut stream = connect(proxy.addr());
    stream.write_all(b"lost").unwrap();
    assert!(closed(&mut stream), "a dropped chunk left the connection open");
    assert_eq!(proxy.connections_dropped(), 1);

    proxy.drop_probability(0.5);
    let mut survived = 0;
    for _ in 0..20 {
        let mut stream = connect(proxy.addr());
        if round_trip(&mut stream, b"x").is_ok_and(|answer| answer == b"x") {
            survived += 1;
        }
    }
    let dropped = proxy.connections_dropped() - 1;
    assert!((1..20).contains(&survived), "{survived} of 20 survived at p = 0.5");
    assert_eq!(dropped, 20 - survived, "every failed round trip is a counted drop");
}

#[test]
fn connections_beyond_the_bound_are_closed_on_accept() {
    // Goal: the proxy never carries more than CONNECTIONS_MAX links; extra dials are closed.
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut held: Vec<TcpStream> = (0..CONNECTIONS_MAX).map(|_| connect(proxy.addr())).collect();
    for stream in &mut held {
        assert_eq!(round_trip(stream, b"k").unwrap(), b"k");
    }
    assert_eq!(proxy.connections_open(), CONNECTIONS_MAX);
    let mut extra = connect(proxy.addr());
    assert!(closed(&mut extra), "a connection past the bound was kept");
    assert_eq!(proxy.connections_refused(), 1);
    drop(held);
    // Once the held ones end, new connections are forwarded again.
    let deadline = Instant::now() + WAIT;
    while proxy.connections_open() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut again = connect(proxy.addr());
    assert_eq!(round_trip(&mut again, b"ok").unwrap(), b"ok");
}

#[test]
fn dropping_the_proxy_closes_its_connections_and_listener() {
    // Goal: shutdown is clean: open links see end of file, the port stops accepting, and drop
    // returns (it joins every thread, so a stuck pump would hang this test).
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let addr = proxy.addr();
    let mut stream = connect(addr);
    assert_eq!(round_trip(&mut stream, b"bye").unwrap(), b"bye");
    proxy.delay(5_000); // a pump asleep in a delay must wake up for the stop too
    stream.write_all(b"held").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    drop(proxy);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        started.elapsed()
    );
    assert!(closed(&mut stream), "a connection outlived its proxy");
    assert!(TcpStream::connect(addr).is_err(), "the proxy's port still accepts");
}
