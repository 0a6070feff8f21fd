//! A small `RUST_LOG`-style logger on stderr: `error`, `warn`, `info` (default), `debug`,
//! `trace` or `off`, optionally per target (`info,glommio=warn`).
//!
//! Owns log formatting only. Callers must never pass a value's bytes to a log macro: keys may
//! be logged, values never (seed 002's rule, kept here).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

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

#[cfg(test)]
mod tests {
    use super::*;

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
