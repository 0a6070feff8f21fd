//! The command-line client: `corekv get | set | update | delete | bulk-update | ping | stats`.
//!
//! Owns the client's subcommands, their flags, and the exit code each outcome maps to. It talks
//! to a server only through the public HTTP API (`/v1/...`), one short-lived TCP connection per
//! command, exactly as curl would; it must never reach into the server's internals
//! (`crate::shard`, `crate::http`, `crate::api`), so it works against any corekv, local or remote.
//! It is synchronous: one request needs no async runtime.
//!
//! - `commands.rs`: what each subcommand sends and how it reads the answer.
//! - `http.rs`: the wire: connect, encode one request, parse one bounded response.
//! - `error.rs`: what can go wrong, the line printed for it, and its exit code.

mod commands;
mod error;
pub mod http;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

pub use error::{ClientError, Phase};

use crate::limits;

/// Exit code: the command did what was asked.
pub const EXIT_OK: i32 = 0;
/// Exit code: the key does not exist (`get`, `update`), or some keys did not (`bulk-update`).
pub const EXIT_NOT_FOUND: i32 = 1;
/// Exit code: bad arguments (clap's own code for usage errors) or an unusable input file.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: no connection: refused, unreachable, unresolvable, or lost mid-request.
pub const EXIT_CONNECT: i32 = 3;
/// Exit code: no progress within `--timeout-ms`.
pub const EXIT_TIMEOUT: i32 = 4;
/// Exit code: the server answered with an error status, an unexpected status, or a malformed
/// response.
pub const EXIT_SERVER: i32 = 5;
/// Exit code: reading stdin or an input file, or writing stdout, failed (e.g. a closed pipe).
pub const EXIT_LOCAL_IO: i32 = 6;

/// The exit codes as `--help` shows them. A unit test checks it against the constants above.
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0  success
  1  no such key (bulk-update: some keys were missing; they are named on stderr)
  2  usage error: bad arguments, or an input file that is not what the command needs
  3  cannot connect: refused, unreachable, unresolvable address, or connection lost
  4  timed out: no progress within --timeout-ms
  5  the server answered with an error, an unexpected status, or a malformed response
  6  local I/O error: reading stdin or FILE, or writing stdout (e.g. a closed pipe)";

/// How long to wait to connect and for each read or write, unless `--timeout-ms` says otherwise.
pub const TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Longest `--timeout-ms` accepted (a day): bounds how long a client can hang.
pub const TIMEOUT_MS_MAX: u64 = 86_400_000;
/// Largest value read from stdin (`VALUE` of `-`): no server accepts more.
pub const STDIN_VALUE_BYTES_MAX: u64 = limits::VALUE_BYTES_MAX_CEILING as u64;
/// Largest bulk-update file (or stdin) read: no server accepts a larger JSON body.
pub const BULK_FILE_BYTES_MAX: u64 = limits::JSON_BODY_BYTES_MAX_CEILING as u64;

/// The client's subcommands, flattened into the top-level `corekv` command beside `serve`.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Print a key's value to stdout, byte for byte (a newline is added only on a terminal).
    #[command(visible_alias = "read", after_help = EXIT_CODES_HELP)]
    Get(KeyArgs),
    /// Store a value under a key, creating it or replacing its value.
    #[command(visible_alias = "store", after_help = EXIT_CODES_HELP)]
    Set(SetArgs),
    /// Replace the value of an existing key; a missing key is an error and nothing is created.
    #[command(after_help = EXIT_CODES_HELP)]
    Update(UpdateArgs),
    /// Delete a key; succeeds whether or not the key existed.
    #[command(after_help = EXIT_CODES_HELP)]
    Delete(KeyArgs),
    /// Update many existing keys at once from a JSON array `[{"key": "...", "value": "..."}]`.
    #[command(after_help = EXIT_CODES_HELP)]
    BulkUpdate(BulkUpdateArgs),
    /// Check that the server answers; prints `pong`.
    #[command(after_help = EXIT_CODES_HELP)]
    Ping(ConnectionArgs),
    /// Print the server's statistics as pretty JSON.
    #[command(after_help = EXIT_CODES_HELP)]
    Stats(ConnectionArgs),
}

/// Where the server is and how long to wait for it; every subcommand takes these.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Server address, HOST:PORT (a name or an IP; IPv6 in brackets).
    #[arg(long, env = "COREKV_ADDR", default_value = limits::ADDR_DEFAULT, value_parser = parse_addr)]
    pub addr: String,

    /// Longest wait to connect, and for each read or write of the exchange, in ms.
    #[arg(long = "timeout-ms", default_value_t = TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=TIMEOUT_MS_MAX))]
    pub timeout_ms: u64,
}

/// The key, as a positional `KEY` or as `--key KEY` (seed 002's spelling): exactly one of them.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct KeyInput {
    /// The key (any bytes; the client percent-encodes it).
    #[arg(value_name = "KEY")]
    pub key: Option<OsString>,

    /// The key, as a flag instead of the positional KEY.
    #[arg(long = "key", value_name = "KEY")]
    pub key_flag: Option<OsString>,
}

/// The value, as a positional `VALUE` or as `--value VALUE`: exactly one of them.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ValueInput {
    /// The value; `-` reads it from stdin, byte for byte.
    #[arg(value_name = "VALUE", allow_hyphen_values = true)]
    pub value: Option<OsString>,

    /// The value, as a flag instead of the positional VALUE; `-` reads stdin.
    #[arg(long = "value", value_name = "VALUE", allow_hyphen_values = true)]
    pub value_flag: Option<OsString>,
}

/// Arguments of `get` and `delete`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// Which key.
    #[command(flatten)]
    pub key: KeyInput,
    /// Where the server is.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Arguments of `set`.
#[derive(Debug, Clone, clap::Args)]
pub struct SetArgs {
    /// Which key.
    #[command(flatten)]
    pub key: KeyInput,
    /// The value to store.
    #[command(flatten)]
    pub value: ValueInput,

    /// Expire the key this many ms after it is set.
    #[arg(long = "ttl-ms", value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl_ms: Option<u64>,

    /// Where the server is.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Arguments of `update`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpdateArgs {
    /// Which key.
    #[command(flatten)]
    pub key: KeyInput,
    /// The value to store.
    #[command(flatten)]
    pub value: ValueInput,
    /// Where the server is.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Arguments of `bulk-update`.
#[derive(Debug, Clone, clap::Args)]
pub struct BulkUpdateArgs {
    /// JSON file holding `[{"key": "...", "value": "..."}, ...]`; `-` reads stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Where the server is.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Runs one client command and returns the process exit code. Any failure is reported as one
/// `ERROR: ...` line on stderr; nothing here panics on bad input, a bad server or a closed pipe.
pub fn run(command: ClientCommand) -> i32 {
    match commands::execute(command) {
        Ok(()) => EXIT_OK,
        Err(error) => {
            // `eprintln!` would panic if stderr itself is closed; a lost report is the lesser harm.
            let _ = writeln!(std::io::stderr().lock(), "ERROR: {error}");
            error.exit_code()
        }
    }
}

/// Checks that `--addr` looks like `HOST:PORT`, so a typo is a usage error (exit 2) rather
/// than a failed lookup; whether the host resolves is found out when connecting.
fn parse_addr(text: &str) -> Result<String, String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}` is not HOST:PORT (e.g. {})", limits::ADDR_DEFAULT));
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("`{text}` has no host (e.g. {})", limits::ADDR_DEFAULT));
    }
    if port.parse::<u16>().is_err() {
        return Err(format!("`{port}` is not a port number (0-65535)"));
    }
    // The address also goes into the `Host` header, so it must not be able to break the request.
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{text:?} contains spaces or control characters"));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    /// A stand-in for `config::Cli`, flattening the client's subcommands the same way, so
    /// these tests exercise the real parsing without depending on the server's flags.
    #[derive(Debug, Parser)]
    #[command(name = "corekv")]
    struct Cli {
        #[command(subcommand)]
        command: ClientCommand,
    }

    fn parse(args: &[&str]) -> Result<ClientCommand, clap::Error> {
        let matches = Cli::command().try_get_matches_from(std::iter::once("corekv").chain(args.iter().copied()))?;
        Cli::from_arg_matches(&matches).map(|cli| cli.command)
    }

    fn usage_error(args: &[&str]) -> clap::Error {
        match parse(args) {
            Ok(command) => panic!("{args:?} parsed as {command:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seed_002_spellings_parse() {
        let ClientCommand::Set(set) = parse(&["store", "--key", "mykey", "--value", "myvalue"]).unwrap() else {
            panic!("store is not set")
        };
        assert_eq!(set.key.key_flag.as_deref(), Some("mykey".as_ref()));
        assert_eq!(set.value.value_flag.as_deref(), Some("myvalue".as_ref()));
        assert!(matches!(
            parse(&["read", "--key", "mykey"]).unwrap(),
            ClientCommand::Get(_)
        ));
        assert!(matches!(
            parse(&["delete", "--key", "mykey"]).unwrap(),
            ClientCommand::Delete(_)
        ));
    }

    #[test]
    fn positional_and_flag_forms_mix() {
        let ClientCommand::Set(set) = parse(&["set", "k", "v", "--ttl-ms", "10", "--addr", "h:1"]).unwrap() else {
            panic!("not set")
        };
        assert_eq!(set.key.key.as_deref(), Some("k".as_ref()));
        assert_eq!(set.value.value.as_deref(), Some("v".as_ref()));
        assert_eq!(set.ttl_ms, Some(10));
        assert_eq!(set.connection.addr, "h:1");
        let ClientCommand::Update(update) = parse(&["update", "k", "--value", "-"]).unwrap() else {
            panic!("not update")
        };
        assert_eq!(update.value.value_flag.as_deref(), Some("-".as_ref()));
        let ClientCommand::Set(set) = parse(&["set", "k", "-5"]).unwrap() else {
            panic!("not set")
        };
        assert_eq!(
            set.value.value.as_deref(),
            Some("-5".as_ref()),
            "a value may start with a hyphen"
        );
    }

    #[test]
    fn both_or_neither_key_forms_is_a_usage_error() {
        for args in [
            &["get"][..],
            &["get", "k", "--key", "k"],
            &["set", "k"],
            &["set", "--key", "k"],
            &["set", "k", "v", "--value", "v"],
            &["bulk-update"],
            &["get", "k", "extra"],
            &["set", "k", "v", "--ttl-ms", "0"],
            &["ping", "--timeout-ms", "0"],
            &["ping", "--addr", "no-port"],
            &["ping", "--addr", ":80"],
            &["ping", "--addr", "h:99999"],
            &["ping", "--addr", "h h:1"],
        ] {
            assert_eq!(usage_error(args).exit_code(), EXIT_USAGE, "{args:?}");
        }
    }

    #[test]
    fn connection_defaults_come_from_the_limits() {
        let ClientCommand::Ping(connection) = parse(&["ping"]).unwrap() else {
            panic!("not ping")
        };
        // COREKV_ADDR may be set in the environment running the tests; only check it when unset.
        if std::env::var_os("COREKV_ADDR").is_none() {
            assert_eq!(connection.addr, limits::ADDR_DEFAULT);
        }
        assert_eq!(connection.timeout_ms, TIMEOUT_MS_DEFAULT);
        assert_eq!(parse_addr("[::1]:7878").unwrap(), "[::1]:7878");
        assert_eq!(parse_addr("localhost:1").unwrap(), "localhost:1");
    }

    #[test]
    fn help_documents_every_exit_code() {
        for (code, words) in [
            (EXIT_OK, "success"),
            (EXIT_NOT_FOUND, "no such key"),
            (EXIT_USAGE, "usage error"),
            (EXIT_CONNECT, "cannot connect"),
            (EXIT_TIMEOUT, "timed out"),
            (EXIT_SERVER, "the server answered"),
            (EXIT_LOCAL_IO, "local I/O error"),
        ] {
            let line = format!("\n  {code}  {words}");
            assert!(EXIT_CODES_HELP.contains(&line), "missing {line:?}");
        }
        let help = usage_error(&["get", "--help"]).to_string();
        assert!(help.contains("Exit status:"), "{help}");
        assert!(help.contains("COREKV_ADDR"), "{help}");
    }
}
