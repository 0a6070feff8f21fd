//! Ports for servers that must be told their port before they start: cluster members (whose
//! peers name them), peer ports, and a node restarted on the address it had.
//!
//! A port found by binding `127.0.0.1:0` and releasing it is not safe for that: between the
//! release and the server's own bind, any outgoing connection on the machine may be given the
//! same port as its local end by the kernel, and the server then fails with "Address already in
//! use" (seen in CI). So these ports come from below the kernel's ephemeral range, which the
//! kernel never hands out by itself, and from a per-process counter, so one test binary never
//! hands out the same port twice. Each is probed with a bind before it is returned, and held
//! as a listener until the caller drops it just before starting the server.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

use corekv::limits::PEER_PORT_STRIDE_PER_SHARD;

/// Lowest port handed out (above the well-known and registered ports most daemons use).
const RANGE_START: u32 = 10_000;
/// Used when `/proc/sys/net/ipv4/ip_local_port_range` cannot be read (Linux's default low end).
const DEFAULT_EPHEMERAL_LOW: u32 = 32_768;
/// The distance between a reservation's shard ports: a member's shard `s` takes peer traffic on
/// its base port + this × `s`.
const STRIDE: u32 = PEER_PORT_STRIDE_PER_SHARD as u32;
/// Ports a slot spans: slot `k` owns its base port and base + [`STRIDE`] × s for `s` below this.
/// One layout for every reservation, so two never overlap.
const SHARDS_PER_SLOT: u32 = 4;

/// The next slot this process hands out.
static NEXT_SLOT: AtomicU32 = AtomicU32::new(0);

/// The lowest port the kernel may choose by itself.
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_LOW)
}

/// Listeners on a port P and on P + `PEER_PORT_STRIDE_PER_SHARD` × s for s in 1..`shards`,
/// all below the ephemeral range and never handed out before by this process. Drop them just
/// before the server binds.
pub fn reserve(shards: u16) -> Vec<TcpListener> {
    let shards = u32::from(shards);
    assert!(
        shards <= SHARDS_PER_SLOT,
        "at most {SHARDS_PER_SLOT} shard ports per reservation"
    );
    let block = STRIDE * SHARDS_PER_SLOT;
    let blocks = ephemeral_low().saturating_sub(RANGE_START) / block;
    assert!(blocks > 0, "no room for ports below the ephemeral range");
    let slots = blocks * STRIDE;
    // Different processes (say two `cargo test` runs) start at different slots.
    let first = std::process::id().wrapping_mul(2_654_435_761) % slots;
    for _ in 0..slots {
        let slot = (first + NEXT_SLOT.fetch_add(1, Ordering::Relaxed)) % slots;
        let base = RANGE_START + (slot / STRIDE) * block + slot % STRIDE;
        let held: Option<Vec<TcpListener>> = (0..shards)
            .map(|s| u16::try_from(base + s * STRIDE).ok())
            .map(|port| TcpListener::bind(("127.0.0.1", port?)).ok())
            .collect();
        if let Some(held) = held {
            return held;
        }
    }
    panic!("every port below the ephemeral range is taken");
}

/// One port, as [`reserve`] gives them, held by the returned listener.
pub fn reserve_one() -> TcpListener {
    reserve(1).pop().expect("one listener")
}

/// True while some socket on this machine listens on `port` (IPv4, from `/proc/net/tcp`):
/// a killed server's listener can outlive its process briefly (its io_uring holds it until
/// the kernel tears the ring down).
pub fn is_listening(port: u16) -> bool {
    const LISTEN: &str = "0A";
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1).and_then(|addr| addr.rsplit(':').next());
        let port_matches = local_port.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port);
        port_matches && fields.get(3) == Some(&LISTEN)
    })
}
