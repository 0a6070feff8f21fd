//! The command-line client: `corekv get | set | update | delete | bulk-update | list | watch |
//! ping | stats`,
//! and `corekv completions`.
//!
//! Owns the client's subcommands, their flags (the client options `--addr`, `--timeout-ms`,
//! `--token`, `--output` go before or after the subcommand, with `COREKV_*` variables), the
//! output formats, and the exit code each outcome maps to. It talks
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

/// The exit codes as `--help` shows them, as a literal so that [`TOP_LEVEL_HELP`] can include it.
macro_rules! exit_codes_help {
    () => {
        "\
Exit status:
  0  success
  1  no such key (bulk-update: some keys were missing; they are named on stderr)
  2  usage error: bad arguments, or an input file that is not what the command needs
  3  cannot connect: refused, unreachable, unresolvable address, or connection lost
  4  timed out: no progress within --timeout-ms
  5  the server answered with an error, an unexpected status, or a malformed response
  6  local I/O error: reading stdin or FILE, or writing stdout (e.g. a closed pipe)"
    };
}

/// The exit codes as `--help` shows them. A unit test checks it against the constants above.
pub const EXIT_CODES_HELP: &str = exit_codes_help!();

/// What `corekv --help` shows after the options: where the client flags go, why `serve --addr`
/// is another flag, and the exit codes.
pub const TOP_LEVEL_HELP: &str = concat!(
    "\
Client options (--addr, --timeout-ms, --token, --output) go before or after a client
subcommand: `corekv --addr HOST:PORT get k` and `corekv get k --addr HOST:PORT` are the same;
after the subcommand wins. Each falls back to its environment variable, then its default.
They name the server the client talks to. `corekv serve --addr` is another flag, given after
`serve` only: the address the server listens on. COREKV_ADDR is never read by `serve`, and a
client option before `serve` is refused rather than ignored.

Values are bytes: `-` as VALUE (or bulk-update FILE) reads standard input, as curl does.
With --output json every client command prints one JSON document on stdout, also on failure
(`{\"error\": ..., \"exit_code\": N}`); usage errors (exit 2) are clap's message on stderr.

",
    exit_codes_help!()
);

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
    /// List keys that start with PREFIX in byte order, one per line (paging through cursors;
    /// the server needs `--key-index`).
    #[command(after_help = EXIT_CODES_HELP)]
    List(ListArgs),
    /// Print every change to KEY (or to the keys under --prefix) as it happens, until
    /// interrupted: `ID<TAB>EVENT<TAB>KEY[<TAB>VALUE]` per line (one JSON object per line with
    /// --output json). `--from ID` resumes after an event's ID.
    #[command(after_help = EXIT_CODES_HELP)]
    Watch(WatchArgs),
    /// Check that the server answers; prints `pong`.
    #[command(after_help = EXIT_CODES_HELP)]
    Ping(ConnectionArgs),
    /// Print the server's statistics as pretty JSON.
    #[command(after_help = EXIT_CODES_HELP)]
    Stats(ConnectionArgs),
    /// A cluster's state (servers started with `--peers`).
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// `corekv cluster ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Print the members and each shard group's leader, term, commit and applied index and
    /// (from its leader) each follower's lag, as pretty JSON, as the node asked sees them.
    #[command(after_help = EXIT_CODES_HELP)]
    Status(ConnectionArgs),
}

impl ClientCommand {
    /// The client options given after this subcommand.
    pub fn connection(&self) -> &ConnectionArgs {
        match self {
            ClientCommand::Get(args) | ClientCommand::Delete(args) => &args.connection,
            ClientCommand::Set(args) => &args.connection,
            ClientCommand::Update(args) => &args.connection,
            ClientCommand::BulkUpdate(args) => &args.connection,
            ClientCommand::List(args) => &args.connection,
            ClientCommand::Watch(args) => &args.connection,
            ClientCommand::Ping(connection)
            | ClientCommand::Stats(connection)
            | ClientCommand::Cluster(ClusterCommand::Status(connection)) => connection,
        }
    }
}

/// How a client command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people: the value's bytes, `pong`, pretty JSON for stats and bulk-update.
    Text,
    /// For scripts: one JSON document on stdout per command, failures included.
    Json,
}

/// The client options given before the subcommand (`corekv --addr HOST:PORT get k`), each
/// falling back to its environment variable and then its default. [`ConnectionArgs`], after
/// the subcommand, overrides them.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Client options (before or after a client subcommand)")]
pub struct GlobalArgs {
    /// Server the client commands talk to, HOST:PORT (a name or an IP; IPv6 in brackets).
    /// Not `serve`'s listen address: that is `corekv serve --addr`.
    #[arg(long, env = "COREKV_ADDR", default_value = limits::ADDR_DEFAULT, value_parser = parse_addr,
          value_name = "HOST:PORT")]
    pub addr: String,

    /// Longest wait to connect, and for each read or write of the exchange, in ms.
    #[arg(long = "timeout-ms", env = "COREKV_TIMEOUT_MS", default_value_t = TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=TIMEOUT_MS_MAX), value_name = "MS")]
    pub timeout_ms: u64,

    /// Send `Authorization: Bearer TOKEN` with every request. Its value is never printed.
    #[arg(long, env = "COREKV_TOKEN", hide_env_values = true, value_parser = parse_token, value_name = "TOKEN")]
    pub token: Option<String>,

    /// `text` for people, `json` for scripts (one JSON document on stdout).
    #[arg(long, env = "COREKV_OUTPUT", value_enum, default_value_t = Output::Text, value_name = "FORMAT")]
    pub output: Output,
}

impl GlobalArgs {
    /// The arg ids and flags of these options, to refuse them before `serve` (see
    /// [`crate::config::Cli::try_parse_command_line`]).
    pub const FLAGS: [(&'static str, &'static str); 4] = [
        ("addr", "--addr"),
        ("timeout_ms", "--timeout-ms"),
        ("token", "--token"),
        ("output", "--output"),
    ];

    /// These options with the ones given after the subcommand laid over them.
    pub fn with(&self, after: &ConnectionArgs) -> Settings {
        Settings {
            addr: after.addr.clone().unwrap_or_else(|| self.addr.clone()),
            timeout_ms: after.timeout_ms.unwrap_or(self.timeout_ms),
            token: after.token.clone().or_else(|| self.token.clone()),
            output: after.output.unwrap_or(self.output),
        }
    }
}

/// The client options given after the subcommand (`corekv get k --addr HOST:PORT`). Each one
/// given wins over the same option before the subcommand and over its environment variable.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Client options (also accepted before the subcommand)")]
pub struct ConnectionArgs {
    /// Server address, HOST:PORT [env: COREKV_ADDR] [default: 127.0.0.1:7878].
    #[arg(long, value_parser = parse_addr, value_name = "HOST:PORT")]
    pub addr: Option<String>,

    /// Longest wait to connect, and for each read or write, in ms [env: COREKV_TIMEOUT_MS]
    /// [default: 5000].
    #[arg(long = "timeout-ms", value_parser = clap::value_parser!(u64).range(1..=TIMEOUT_MS_MAX), value_name = "MS")]
    pub timeout_ms: Option<u64>,

    /// Send `Authorization: Bearer TOKEN` [env: COREKV_TOKEN].
    #[arg(long, value_parser = parse_token, value_name = "TOKEN")]
    pub token: Option<String>,

    /// `text` or `json` [env: COREKV_OUTPUT] [default: text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub output: Option<Output>,
}

/// Where the server is, how long to wait, what to send and how to print: the client options
/// after the command line, the environment and the defaults are laid over each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `HOST:PORT` of the server.
    pub addr: String,
    /// Bound on connecting and on each read or write.
    pub timeout_ms: u64,
    /// Bearer token for the `Authorization` header, when given.
    pub token: Option<String>,
    /// How results are printed.
    pub output: Output,
}

/// Arguments of `corekv completions`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
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

    /// Write only if the key's current version is V (its ETag, as `get --output json` prints
    /// it); otherwise fail with the server's 412 and change nothing.
    #[arg(long = "if-version", value_name = "V", conflicts_with = "create_only")]
    pub if_version: Option<String>,

    /// Write only if the key does not exist yet (412 otherwise).
    #[arg(long = "create-only")]
    pub create_only: bool,

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

/// Arguments of `list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Only keys that start with these bytes (default: every key).
    #[arg(value_name = "PREFIX")]
    pub prefix: Option<OsString>,

    /// Print each key's value after it, separated by a tab.
    #[arg(long)]
    pub values: bool,

    /// Print at most this many keys.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// Where the server is.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Arguments of `watch`.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "watched", required = true, multiple = false, args = ["key", "prefix"])]
pub struct WatchArgs {
    /// The key to watch.
    #[arg(value_name = "KEY")]
    pub key: Option<OsString>,

    /// Watch every key that starts with PREFIX instead.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<OsString>,

    /// Resume after this event ID (printed first on every line).
    #[arg(long, value_name = "ID")]
    pub from: Option<String>,

    /// Where the server is.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Runs one client command with the options before it (`global`) and returns the process exit
/// code. Any failure is reported as one `ERROR: ...` line on stderr (and, with `--output json`,
/// as `{"error": ..., "exit_code": N}` on stdout unless the command already printed its
/// document); nothing here panics on bad input, a bad server or a closed pipe.
pub fn run(global: &GlobalArgs, command: ClientCommand) -> i32 {
    let settings = global.with(command.connection());
    let mut printer = commands::Printer::new(settings.output);
    match commands::execute(command, &settings, &mut printer) {
        Ok(()) => EXIT_OK,
        Err(error) => {
            // `eprintln!` would panic if stderr itself is closed; a lost report is the lesser harm.
            let _ = writeln!(std::io::stderr().lock(), "ERROR: {error}");
            if settings.output == Output::Json && !printer.printed() {
                let document = serde_json::json!({"error": error.to_string(), "exit_code": error.exit_code()});
                // Already failing: a closed stdout cannot make it worse, so its error is dropped.
                let _ = printer.json(&document);
            }
            error.exit_code()
        }
    }
}

/// `corekv completions SHELL`: the completion script for `command` (the whole `corekv` CLI)
/// on stdout. Returns the exit code.
pub fn completions(shell: clap_complete::Shell, mut command: clap::Command) -> i32 {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "corekv", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Ok(()) => EXIT_OK,
        Err(error) => {
            let _ = writeln!(std::io::stderr().lock(), "ERROR: {}", ClientError::Output(error));
            EXIT_LOCAL_IO
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

/// Checks a bearer token: visible ASCII only, so it cannot break or forge a header line.
fn parse_token(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("the token is empty".into());
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        // The token itself is not echoed: it is a secret.
        return Err("the token holds spaces, control characters or non-ASCII bytes".into());
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
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        command: ClientCommand,
    }

    fn parse_both(args: &[&str]) -> Result<(GlobalArgs, ClientCommand), clap::Error> {
        let matches = Cli::command().try_get_matches_from(std::iter::once("corekv").chain(args.iter().copied()))?;
        Cli::from_arg_matches(&matches).map(|cli| (cli.global, cli.command))
    }

    fn parse(args: &[&str]) -> Result<ClientCommand, clap::Error> {
        parse_both(args).map(|(_, command)| command)
    }

    /// The settings a command line resolves to (with whatever COREKV_* the environment holds).
    fn settings(args: &[&str]) -> Settings {
        let (global, command) = parse_both(args).unwrap();
        global.with(command.connection())
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
        assert_eq!(set.connection.addr.as_deref(), Some("h:1"));
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
        let defaults = settings(&["ping"]);
        // COREKV_* may be set in the environment running the tests; only check them when unset.
        if std::env::var_os("COREKV_ADDR").is_none() {
            assert_eq!(defaults.addr, limits::ADDR_DEFAULT);
        }
        if std::env::var_os("COREKV_TIMEOUT_MS").is_none() {
            assert_eq!(defaults.timeout_ms, TIMEOUT_MS_DEFAULT);
        }
        assert_eq!(parse_addr("[::1]:7878").unwrap(), "[::1]:7878");
        assert_eq!(parse_addr("localhost:1").unwrap(), "localhost:1");
    }

    #[test]
    fn client_options_go_before_or_after_the_subcommand_and_after_wins() {
        let before = settings(&[
            "--addr",
            "a:1",
            "--timeout-ms",
            "7",
            "--token",
            "t",
            "--output",
            "json",
            "get",
            "k",
        ]);
        let after = settings(&[
            "get",
            "k",
            "--addr",
            "a:1",
            "--timeout-ms",
            "7",
            "--token",
            "t",
            "--output",
            "json",
        ]);
        assert_eq!(before, after);
        assert_eq!(
            before,
            Settings {
                addr: "a:1".into(),
                timeout_ms: 7,
                token: Some("t".into()),
                output: Output::Json,
            }
        );
        let both = settings(&["--addr", "a:1", "--token", "t", "ping", "--addr", "b:2"]);
        assert_eq!((both.addr.as_str(), both.token.as_deref()), ("b:2", Some("t")));
        for args in [
            &["--token", "", "ping"][..],
            &["--token", "a b", "ping"],
            &["ping", "--token", "a\nb"],
            &["--output", "xml", "ping"],
            &["--addr", "no-port", "ping"],
        ] {
            assert_eq!(usage_error(args).exit_code(), EXIT_USAGE, "{args:?}");
        }
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
        assert!(TOP_LEVEL_HELP.ends_with(EXIT_CODES_HELP));
    }
}
