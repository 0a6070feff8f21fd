//! `--load FILE` (or `KV_DATA_FILE_PATH`): fills the store from `<key> <value>` lines at start-up.
//!
//! Every shard reads the whole file in large chunks and inserts only the keys it owns, so no
//! lock and no message is needed and the inserts run on all CPUs at once. Every shard checks
//! every line, so a malformed one stops start-up everywhere with `FILE:LINE` before readiness
//! opens. Owns the file format; it never touches another shard's store and never logs values.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use log::info;

use crate::config::ServeArgs;
use crate::shard::StoreHandle;
use crate::shard::message::{Limit, Op, Outcome, Record};

/// Bytes read from the file at a time.
pub const LOAD_CHUNK_BYTES: usize = 4 << 20;
/// Whitespace allowed between a key and its value on top of the key and value limits.
const SEPARATOR_BYTES_MAX: usize = 4096;
/// How often the progress line is redrawn on a terminal.
const PROGRESS_TERMINAL_INTERVAL: Duration = Duration::from_millis(250);
/// How often progress is logged when stderr is not a terminal.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What a line of the file holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Blank,
    Pair { key: &'a [u8], value: &'a [u8] },
}

fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t' || byte == b'\r' || byte == 0x0b || byte == 0x0c
}

/// Parses one line (without its `\n`; a trailing `\r` is dropped): the key runs to the first
/// whitespace, the value is everything after the first run of whitespace.
pub fn parse_line(line: &[u8], key_bytes_max: usize, value_bytes_max: usize) -> Result<Line<'_>, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|&b| is_blank(b)) {
        return Ok(Line::Blank);
    }
    if is_blank(line[0]) {
        return Err("the line starts with whitespace, so it has no key".into());
    }
    let key_end = line.iter().position(|&b| is_blank(b)).unwrap_or(line.len());
    let key = &line[..key_end];
    if key.len() > key_bytes_max {
        return Err(format!(
            "key is {} bytes; the limit is {key_bytes_max} bytes (--max-key-bytes)",
            key.len()
        ));
    }
    let value_start = line[key_end..]
        .iter()
        .position(|&b| !is_blank(b))
        .map(|offset| key_end + offset);
    let Some(value_start) = value_start else {
        return Err(format!("key `{}` has no value", String::from_utf8_lossy(key)));
    };
    let value = &line[value_start..];
    if value.len() > value_bytes_max {
        return Err(format!(
            "value of key `{}` is {} bytes; the limit is {value_bytes_max} bytes (--max-value-bytes)",
            String::from_utf8_lossy(key),
            value.len()
        ));
    }
    Ok(Line::Pair { key, value })
}

/// Loads a shard's part of a `--load` file.
pub struct Loader {
    key_bytes_max: usize,
    value_bytes_max: usize,
    /// Whether this shard reports progress (one shard does, for the whole process).
    reports_progress: bool,
}

/// Where reading the file stands.
struct Position {
    line_number: u64,
    bytes_read: u64,
}

impl Loader {
    /// A loader with the flags' key and value limits.
    pub fn new(args: &ServeArgs, reports_progress: bool) -> Loader {
        Loader {
            key_bytes_max: args.key_bytes_max as usize,
            value_bytes_max: args.value_bytes_max as usize,
            reports_progress,
        }
    }

    /// Puts every key of `path` that `owns` accepts into `store`. Returns an error naming
    /// `FILE:LINE` for a bad line or a full store.
    pub async fn load(&self, store: &StoreHandle, owns: impl Fn(&[u8]) -> bool, path: &Path) -> Result<(), String> {
        let name = path.display();
        let mut file = std::fs::File::open(path).map_err(|e| format!("--load {name}: {e}"))?;
        let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let line_bytes_max = self.key_bytes_max + self.value_bytes_max + SEPARATOR_BYTES_MAX;
        let mut progress = self.reports_progress.then(|| Progress::new(total_bytes));
        let mut buffer = vec![0u8; LOAD_CHUNK_BYTES + line_bytes_max];
        let mut filled = 0; // bytes of `buffer` holding unparsed input
        let mut at = Position {
            line_number: 0,
            bytes_read: 0,
        };
        loop {
            let read = file
                .read(&mut buffer[filled..])
                .map_err(|e| format!("--load {name}: {e}"))?;
            at.bytes_read += read as u64;
            filled += read;
            let at_end = read == 0;
            let used = self
                .insert_lines(store, &owns, &buffer[..filled], at_end, &mut at)
                .map_err(|why| format!("{name}:{why}"))?;
            buffer.copy_within(used..filled, 0);
            filled -= used;
            if filled > line_bytes_max {
                return Err(format!(
                    "{name}:{}: line longer than {line_bytes_max} bytes",
                    at.line_number + 1
                ));
            }
            if let Some(progress) = &mut progress {
                progress.update(at.bytes_read, at.line_number, at_end);
            }
            if at_end {
                break;
            }
            // Let connections (readiness, stats) and peers' batches run between chunks.
            glommio::yield_if_needed().await;
        }
        if let Some(progress) = progress {
            progress.finish(&name.to_string(), at.bytes_read, at.line_number);
        }
        Ok(())
    }

    /// Inserts the complete lines at the start of `input` (all of it `at_end`); returns the
    /// bytes used, or `LINE: what is wrong`.
    fn insert_lines(
        &self,
        store: &StoreHandle,
        owns: &impl Fn(&[u8]) -> bool,
        input: &[u8],
        at_end: bool,
        at: &mut Position,
    ) -> Result<usize, String> {
        let mut start = 0;
        loop {
            let (length, consumed) = match input[start..].iter().position(|&b| b == b'\n') {
                Some(length) => (length, length + 1),
                // The last line of a file may lack its newline.
                None if at_end && start < input.len() => (input.len() - start, input.len() - start),
                None => return Ok(start),
            };
            at.line_number += 1;
            let line = &input[start..start + length];
            start += consumed;
            let (key, value) = match parse_line(line, self.key_bytes_max, self.value_bytes_max) {
                Ok(Line::Blank) => continue,
                Ok(Line::Pair { key, value }) => (key, value),
                Err(why) => return Err(format!("{}: {why}", at.line_number)),
            };
            if !owns(key) {
                continue;
            }
            let op = Op::put(Record::new(key, value), None);
            let rejected = store.apply(op, |outcome| match outcome {
                Outcome::Rejected(limit) => Some(limit),
                _ => None,
            });
            if let Some(limit) = rejected {
                let which = match limit {
                    Limit::Keys(_) => "--max-keys",
                    Limit::Memory(_) => "--max-memory",
                };
                return Err(format!(
                    "{}: the store is full ({which}); raise the limit or use --eviction lru",
                    at.line_number
                ));
            }
        }
    }
}

/// One shard's progress report for the process: a redrawn line on a terminal, log lines
/// otherwise.
pub struct Progress {
    started: Instant,
    last: Instant,
    total_bytes: u64,
    terminal: bool,
}

impl Progress {
    pub fn new(total_bytes: u64) -> Progress {
        let now = Instant::now();
        Progress {
            started: now,
            last: now,
            total_bytes,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub fn update(&mut self, bytes: u64, lines: u64, force: bool) {
        let interval = if self.terminal {
            PROGRESS_TERMINAL_INTERVAL
        } else {
            PROGRESS_LOG_INTERVAL
        };
        if !force && self.last.elapsed() < interval {
            return;
        }
        self.last = Instant::now();
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let percent = if self.total_bytes > 0 {
            bytes as f64 * 100.0 / self.total_bytes as f64
        } else {
            100.0
        };
        let line = format!(
            "loading: {percent:5.1}% {:.1}/{:.1} MiB, {lines} lines, {:.1} MiB/s, {:.0} lines/s",
            bytes as f64 / 1048576.0,
            self.total_bytes as f64 / 1048576.0,
            bytes as f64 / 1048576.0 / seconds,
            lines as f64 / seconds
        );
        if self.terminal {
            let _ = write!(std::io::stderr().lock(), "\r{line}\x1b[K");
        } else {
            info!("{line}");
        }
    }

    pub fn finish(self, name: &str, bytes: u64, lines: u64) {
        if self.terminal {
            let _ = writeln!(std::io::stderr().lock());
        }
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        info!(
            "loaded {lines} lines ({:.1} MiB) from {name} in {seconds:.2} s: {:.0} lines/s",
            bytes as f64 / 1048576.0,
            lines as f64 / seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_inner_whitespace_and_keys_end_at_the_first_blank() {
        assert_eq!(parse_line(b"k v", 250, 100), Ok(Line::Pair { key: b"k", value: b"v" }));
        assert_eq!(
            parse_line(b"key \t  a value\twith  spaces ", 250, 100),
            Ok(Line::Pair {
                key: b"key",
                value: b"a value\twith  spaces "
            })
        );
        assert_eq!(
            parse_line(b"k v\r", 250, 100),
            Ok(Line::Pair { key: b"k", value: b"v" })
        );
        assert_eq!(parse_line(b"", 250, 100), Ok(Line::Blank));
        assert_eq!(parse_line(b"  \t", 250, 100), Ok(Line::Blank));
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        assert!(parse_line(b"lonely", 250, 100).unwrap_err().contains("no value"));
        assert!(parse_line(b"lonely   ", 250, 100).unwrap_err().contains("no value"));
        assert!(parse_line(b" k v", 250, 100).unwrap_err().contains("no key"));
        assert!(
            parse_line(b"toolong v", 3, 100)
                .unwrap_err()
                .contains("limit is 3 bytes")
        );
        assert!(parse_line(b"k 12345", 3, 4).unwrap_err().contains("--max-value-bytes"));
    }
}
