//! What can go wrong in a client command, the one line a person reads for it, and its exit code.
//!
//! Owns the mapping from failure to exit code ([`ClientError::exit_code`]) and to text
//! ([`Display`](fmt::Display)). It never prints anything itself and never decides what a
//! command does; [`super::run`] prints the line, once, as `ERROR: <line>`.

use std::fmt;
use std::io;

use super::{EXIT_CONNECT, EXIT_LOCAL_IO, EXIT_NOT_FOUND, EXIT_SERVER, EXIT_TIMEOUT, EXIT_USAGE};

/// Where in a request an I/O failure happened, for the message only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opening the TCP connection.
    Connecting,
    /// Writing the request head and body.
    Sending,
    /// Reading the response.
    Receiving,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connecting => "connecting",
            Phase::Sending => "sending the request",
            Phase::Receiving => "waiting for the response",
        })
    }
}

/// Every way a client command can fail. Each variant is one exit code.
#[derive(Debug)]
pub enum ClientError {
    /// The key does not exist (for `bulk-update`: these keys did not). Holds the keys as
    /// printable text; empty when the server said "some missing" without naming them.
    NotFound(Vec<String>),
    /// The command line asks for something that cannot be sent (clap rejects the rest before
    /// the client runs), or an input file is not what the command needs.
    Usage(String),
    /// Reading an input (a `-` value from stdin, a bulk-update file) failed.
    Input {
        /// What was being read, e.g. "standard input" or "`file.json`".
        what: String,
        /// Why.
        source: io::Error,
    },
    /// Writing the answer to stdout failed, typically a closed pipe (`corekv get k | head -c1`).
    Output(io::Error),
    /// `--addr` names no reachable address.
    Resolve {
        /// The `--addr` as given.
        addr: String,
        /// Why resolution failed.
        source: io::Error,
    },
    /// No connection could be opened (refused, unreachable, ...).
    Connect {
        /// The `--addr` as given.
        addr: String,
        /// The last connection attempt's error.
        source: io::Error,
    },
    /// The connection broke after it was opened.
    ConnectionLost {
        /// The `--addr` as given.
        addr: String,
        /// What the client was doing when it broke.
        phase: Phase,
        /// Why.
        source: io::Error,
    },
    /// Nothing happened within `--timeout-ms`.
    Timeout {
        /// The `--addr` as given.
        addr: String,
        /// The `--timeout-ms` in force.
        timeout_ms: u64,
        /// What the client was waiting for.
        phase: Phase,
    },
    /// The server answered with an error status (other than "no such key") or a status the
    /// command does not expect. `message` is the server's own `{"error": ...}` text when it
    /// sent one.
    Server {
        /// The HTTP status.
        status: u16,
        /// The line to print.
        message: String,
    },
    /// What came back is not a well-formed (or not a bounded) HTTP response, or its body is
    /// not the JSON the API promises.
    BadResponse {
        /// The `--addr` as given.
        addr: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl ClientError {
    /// The process exit code for this failure (see [`super::EXIT_CODES_HELP`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::NotFound(_) => EXIT_NOT_FOUND,
            ClientError::Usage(_) => EXIT_USAGE,
            ClientError::Input { .. } | ClientError::Output(_) => EXIT_LOCAL_IO,
            ClientError::Resolve { .. } | ClientError::Connect { .. } | ClientError::ConnectionLost { .. } => {
                EXIT_CONNECT
            }
            ClientError::Timeout { .. } => EXIT_TIMEOUT,
            ClientError::Server { .. } | ClientError::BadResponse { .. } => EXIT_SERVER,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Seed 002's exact wording, which scripts written against it may match on.
            ClientError::NotFound(keys) => match keys.as_slice() {
                [] => write!(f, "some keys were not found"),
                [key] => write!(f, "no key `{key}` found"),
                keys => {
                    write!(f, "no keys ")?;
                    for (index, key) in keys.iter().enumerate() {
                        let separator = if index == 0 { "" } else { ", " };
                        write!(f, "{separator}`{key}`")?;
                    }
                    write!(f, " found")
                }
            },
            ClientError::Usage(message) => f.write_str(message),
            ClientError::Input { what, source } => write!(f, "cannot read {what}: {source}"),
            ClientError::Output(source) if source.kind() == io::ErrorKind::BrokenPipe => {
                write!(f, "standard output was closed before all of the answer was written")
            }
            ClientError::Output(source) => write!(f, "cannot write to standard output: {source}"),
            ClientError::Resolve { addr, source } => write!(f, "cannot resolve `{addr}`: {source}"),
            ClientError::Connect { addr, source } if source.kind() == io::ErrorKind::ConnectionRefused => {
                write!(
                    f,
                    "cannot connect to {addr}: connection refused (is `corekv serve` running there?)"
                )
            }
            ClientError::Connect { addr, source } => {
                write!(f, "cannot connect to {addr}: {source}")
            }
            ClientError::ConnectionLost { addr, phase, source } => {
                write!(f, "connection to {addr} lost while {phase}: {source}")
            }
            ClientError::Timeout {
                addr,
                timeout_ms,
                phase,
            } => {
                write!(
                    f,
                    "no progress from {addr} for {timeout_ms} ms while {phase} (see --timeout-ms)"
                )
            }
            ClientError::Server { message, .. } => f.write_str(message),
            ClientError::BadResponse { addr, reason } => {
                write!(f, "malformed response from {addr}: {reason}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// Turns key bytes into text fit for a one-line message: invalid UTF-8 becomes U+FFFD and
/// control characters are escaped, so a key can never break the line or drive the terminal.
pub fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error(kind: io::ErrorKind) -> io::Error {
        io::Error::from(kind)
    }

    #[test]
    fn every_variant_maps_to_its_documented_exit_code() {
        let addr = || "127.0.0.1:1".to_string();
        let cases = [
            (ClientError::NotFound(vec!["k".into()]), 1),
            (ClientError::Usage("bad".into()), 2),
            (
                ClientError::Connect {
                    addr: addr(),
                    source: io_error(io::ErrorKind::ConnectionRefused),
                },
                3,
            ),
            (
                ClientError::Resolve {
                    addr: addr(),
                    source: io_error(io::ErrorKind::NotFound),
                },
                3,
            ),
            (
                ClientError::ConnectionLost {
                    addr: addr(),
                    phase: Phase::Receiving,
                    source: io_error(io::ErrorKind::ConnectionReset),
                },
                3,
            ),
            (
                ClientError::Timeout {
                    addr: addr(),
                    timeout_ms: 5,
                    phase: Phase::Connecting,
                },
                4,
            ),
            (
                ClientError::Server {
                    status: 400,
                    message: "bad key".into(),
                },
                5,
            ),
            (
                ClientError::BadResponse {
                    addr: addr(),
                    reason: "garbage".into(),
                },
                5,
            ),
            (
                ClientError::Input {
                    what: "standard input".into(),
                    source: io_error(io::ErrorKind::Other),
                },
                6,
            ),
            (ClientError::Output(io_error(io::ErrorKind::BrokenPipe)), 6),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code(), code, "{error:?}");
        }
    }

    #[test]
    fn messages_are_one_line_and_match_seed_002() {
        assert_eq!(
            ClientError::NotFound(vec!["mykey".into()]).to_string(),
            "no key `mykey` found"
        );
        assert_eq!(
            ClientError::NotFound(vec!["a".into(), "b".into()]).to_string(),
            "no keys `a`, `b` found"
        );
        assert_eq!(ClientError::NotFound(vec![]).to_string(), "some keys were not found");
        let refused = ClientError::Connect {
            addr: "127.0.0.1:1".into(),
            source: io_error(io::ErrorKind::ConnectionRefused),
        };
        assert!(refused.to_string().contains("connection refused"));
        let timeout = ClientError::Timeout {
            addr: "h:1".into(),
            timeout_ms: 250,
            phase: Phase::Receiving,
        };
        assert_eq!(
            timeout.to_string(),
            "no progress from h:1 for 250 ms while waiting for the response (see --timeout-ms)"
        );
        assert!(
            !ClientError::Output(io_error(io::ErrorKind::BrokenPipe))
                .to_string()
                .contains('\n')
        );
    }

    #[test]
    fn printable_escapes_control_characters_and_bad_utf8() {
        assert_eq!(printable(b"plain key"), "plain key");
        assert_eq!(printable(b"a\nb\x1b[2J"), "a\\nb\\u{1b}[2J");
        assert_eq!(printable(b"\xff"), "\u{fffd}");
        assert_eq!(printable("caf\u{e9}".as_bytes()), "caf\u{e9}");
    }
}
