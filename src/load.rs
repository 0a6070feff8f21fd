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

use crate::config::Design;
use crate::server::ShardContext;
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

/// Loads this shard's keys from `path`. Returns an error naming `FILE:LINE` for a bad line.
pub async fn load_shard(shard: &ShardContext, path: &Path) -> Result<(), String> {
    if shard.args.design == Design::Locked && shard.id != 0 {
        return Ok(()); // one store: shard 0 loads it all
    }
    let name = path.display();
    let mut file = std::fs::File::open(path).map_err(|e| format!("--load {name}: {e}"))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let key_max = shard.args.key_bytes_max as usize;
    let value_max = shard.args.value_bytes_max as usize;
    let line_bytes_max = key_max + value_max + SEPARATOR_BYTES_MAX;
    let mut progress = (shard.id == 0).then(|| Progress::new(total_bytes));

    let mut buffer = vec![0u8; LOAD_CHUNK_BYTES + line_bytes_max];
    let mut filled = 0; // bytes of `buffer` holding unparsed input
    let mut line_number = 0u64;
    let mut bytes_read = 0u64;
    let mut mine = 0u64;
    loop {
        let read = file
            .read(&mut buffer[filled..])
            .map_err(|e| format!("--load {name}: {e}"))?;
        bytes_read += read as u64;
        filled += read;
        let at_end = read == 0;
        let mut start = 0;
        loop {
            let (length, consumed) = match buffer[start..filled].iter().position(|&b| b == b'\n') {
                Some(length) => (length, length + 1),
                // The last line of a file may lack its newline.
                None if at_end && start < filled => (filled - start, filled - start),
                None => break,
            };
            line_number += 1;
            let line = &buffer[start..start + length];
            start += consumed;
            let (key, value) = match parse_line(line, key_max, value_max) {
                Ok(Line::Blank) => continue,
                Ok(Line::Pair { key, value }) => (key, value),
                Err(why) => return Err(format!("{name}:{line_number}: {why}")),
            };
            if shard.owner(key) != shard.id {
                continue;
            }
            mine += 1;
            let op = Op::Put {
                record: Record::new(key, value),
                ttl_ms: None,
            };
            if let Some(limit) = shard.apply_local(op, |outcome| match outcome {
                Outcome::Rejected(limit) => Some(limit),
                _ => None,
            }) {
                let which = match limit {
                    Limit::Keys(_) => "--max-keys",
                    Limit::Memory(_) => "--max-memory",
                };
                return Err(format!(
                    "{name}:{line_number}: the store is full ({which}); raise the limit or use --eviction lru"
                ));
            }
        }
        buffer.copy_within(start..filled, 0);
        filled -= start;
        if filled > line_bytes_max {
            return Err(format!(
                "{name}:{}: line longer than {line_bytes_max} bytes",
                line_number + 1
            ));
        }
        if let Some(progress) = &mut progress {
            progress.update(bytes_read, line_number, at_end);
        }
        if at_end {
            break;
        }
        // Let connections (readiness, stats) and peers' batches run between chunks.
        glommio::yield_if_needed().await;
    }
    if let Some(progress) = progress {
        progress.finish(&name.to_string(), bytes_read, line_number);
    }
    log::debug!("shard {} loaded {mine} keys from {name}", shard.id);
    Ok(())
}

/// Shard 0's progress report: a redrawn line on a terminal, log lines otherwise.
struct Progress {
    started: Instant,
    last: Instant,
    total_bytes: u64,
    terminal: bool,
}

impl Progress {
    fn new(total_bytes: u64) -> Progress {
        let now = Instant::now();
        Progress {
            started: now,
            last: now,
            total_bytes,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, bytes: u64, lines: u64, force: bool) {
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

    fn finish(self, name: &str, bytes: u64, lines: u64) {
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
