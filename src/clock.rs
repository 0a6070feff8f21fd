//! The one clock TTLs are measured on: milliseconds since the process started, monotonic, the
//! same on every shard.
//!
//! Owns time for expiry only; it never sleeps or schedules.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call in this process; starts at 1, so 0 can mean "never".
pub fn now_ms() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_millis() as u64 + 1
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_moves_forward_and_never_reads_zero() {
        let first = super::now_ms();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let second = super::now_ms();
        assert!(first >= 1 && second >= first + 2);
    }
}
