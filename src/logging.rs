//! A small `RUST_LOG`-style logger on stderr: `error`, `warn`, `info` (default), `debug`,
//! `trace` or `off`, optionally per target (`info,glommio=warn`).
//!
//! Owns log formatting and rate limiting only. Callers must never pass a value's bytes to a log
//! macro: keys may be logged, values never (seed 002's rule, kept here). A line a client can
//! cause again and again (per request, per connection, per failed accept) goes through
//! [`log_limited!`] / [`warn_limited!`], so no client can flood the log.

use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

use crate::clock;
use crate::limits::{LOG_LINES_PER_WINDOW_MAX, LOG_RATE_WINDOW_MS};

struct Logger {
    default: LevelFilter,
    /// `(target prefix, level)` overrides, longest prefix first.
    targets: Vec<(String, LevelFilter)>,
}

impl Logger {
    fn level_for(&self, target: &str) -> LevelFilter {
        self.targets
            .iter()
            .find(|(prefix, _)| target.starts_with(prefix.as_str()))
            .map_or(self.default, |(_, level)| *level)
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level_for(metadata.target())
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let (secs, millis) = (now.as_secs(), now.subsec_millis());
        let (hour, minute, second) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let thread = std::thread::current();
        let line = format!(
            "{hour:02}:{minute:02}:{second:02}.{millis:03}Z {:<5} [{}] {}\n",
            record.level(),
            thread.name().unwrap_or("main"),
            record.args()
        );
        // One write per line so lines from different shards never interleave mid-line.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Parses a `RUST_LOG` value into a default level and per-target overrides.
fn parse_spec(spec: &str) -> (LevelFilter, Vec<(String, LevelFilter)>) {
    let mut default = LevelFilter::Info;
    let mut targets = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((target, level)) => {
                if let Ok(level) = level.trim().parse() {
                    targets.push((target.trim().to_string(), level));
                }
            }
            None => {
                if let Ok(level) = part.parse() {
                    default = level;
                }
            }
        }
    }
    targets.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    (default, targets)
}

/// Installs the logger from `RUST_LOG` (default `info`). Safe to call more than once.
pub fn init() {
    let (default, targets) = parse_spec(&std::env::var("RUST_LOG").unwrap_or_default());
    let max = targets
        .iter()
        .map(|(_, level)| *level)
        .chain([default])
        .max()
        .unwrap_or(default);
    if log::set_boxed_logger(Box::new(Logger { default, targets })).is_ok() {
        log::set_max_level(max);
    }
}

/// One call site's log budget: at most [`LOG_LINES_PER_WINDOW_MAX`] lines per
/// [`LOG_RATE_WINDOW_MS`], across all shards; the rest are counted, and the count is reported
/// on the next line let through. Used by [`log_limited!`], one `static` per call site.
pub struct RateLimit {
    state: Mutex<RateState>,
}

struct RateState {
    /// When the current window began, in [`clock::now_ms`] milliseconds (0: none yet).
    window_start_ms: u64,
    /// Lines let through in the current window.
    lines: u32,
    /// Lines held back since the last one let through.
    suppressed: u64,
}

impl RateLimit {
    pub const fn new() -> RateLimit {
        RateLimit {
            state: Mutex::new(RateState {
                window_start_ms: 0,
                lines: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(suppressed)` when a line may be logged now, with how many similar lines were held
    /// back since the last one; `None` when this one must be held back.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(clock::now_ms())
    }

    fn admit_at(&self, now_ms: u64) -> Option<u64> {
        // A panic while holding this lock cannot leave the counters inconsistent.
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.window_start_ms == 0 || now_ms.saturating_sub(state.window_start_ms) >= LOG_RATE_WINDOW_MS {
            state.window_start_ms = now_ms.max(1);
            state.lines = 0;
        }
        if state.lines < LOG_LINES_PER_WINDOW_MAX {
            state.lines += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit::new()
    }
}

/// `log::log!` with a per-call-site [`RateLimit`]: `log_limited!(log::Level::Warn, "...", ...)`.
#[macro_export]
macro_rules! log_limited {
    ($level:expr, $($arg:tt)+) => {{
        static LIMIT: $crate::logging::RateLimit = $crate::logging::RateLimit::new();
        if ::log::log_enabled!($level) {
            match LIMIT.admit() {
                Some(0) => ::log::log!($level, $($arg)+),
                Some(suppressed) => ::log::log!(
                    $level,
                    "{} ({suppressed} similar messages suppressed)",
                    format_args!($($arg)+)
                ),
                None => {}
            }
        }
    }};
}

/// `log::warn!` with a per-call-site [`RateLimit`] (see [`log_limited!`]).
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => { $crate::log_limited!(::log::Level::Warn, $($arg)+) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_lets_a_few_lines_through_per_window_and_counts_the_rest() {
        let limit = RateLimit::new();
        let max = LOG_LINES_PER_WINDOW_MAX as usize;
        let admitted = (0..max + 10).filter(|_| limit.admit_at(1_000).is_some()).count();
        assert_eq!(admitted, max);
        assert_eq!(
            limit.admit_at(1_000 + LOG_RATE_WINDOW_MS - 1),
            None,
            "still the same window"
        );
        assert_eq!(
            limit.admit_at(1_000 + LOG_RATE_WINDOW_MS),
            Some(11),
            "the next window reports what was held back"
        );
        assert_eq!(limit.admit_at(1_000 + LOG_RATE_WINDOW_MS), Some(0));
    }

    #[test]
    fn the_limited_macros_compile_at_any_level() {
        for _ in 0..3 {
            crate::warn_limited!("limited {}", 1);
            crate::log_limited!(log::Level::Debug, "limited {}", 2);
        }
    }

    #[test]
    fn spec_sets_default_and_per_target_levels() {
        let (default, targets) = parse_spec("warn, glommio=error ,corekv::http=debug");
        assert_eq!(default, LevelFilter::Warn);
        let logger = Logger { default, targets };
        assert_eq!(logger.level_for("glommio::reactor"), LevelFilter::Error);
        assert_eq!(logger.level_for("corekv::http::conn"), LevelFilter::Debug);
        assert_eq!(logger.level_for("corekv::server"), LevelFilter::Warn);
    }

    #[test]
    fn empty_or_garbage_spec_means_info() {
        assert_eq!(parse_spec("").0, LevelFilter::Info);
        assert_eq!(parse_spec("loud").0, LevelFilter::Info);
        assert_eq!(parse_spec("off").0, LevelFilter::Off);
    }
}
