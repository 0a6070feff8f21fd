//! The command line: every flag of `corekv serve` and the client's subcommands.
//!
//! Owns parsing and validation of user-supplied settings only; it never opens sockets or
//! starts executors. Defaults come from [`crate::limits`], so every limit has one name.

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};

use crate::limits;
pub use crate::shard::store::{Budget, Eviction};
use crate::storage::FsyncPolicy;

/// corekv: a thread-per-core, shared-nothing HTTP key-value server on io_uring.
#[derive(Debug, Parser)]
#[command(name = "corekv", version, about, propagate_version = true, after_help = crate::client::TOP_LEVEL_HELP)]
pub struct Cli {
    /// The client options given before the subcommand (refused before `serve`).
    #[command(flatten)]
    pub client: crate::client::GlobalArgs,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's command line like [`Parser::parse`] (a usage error prints clap's
    /// message and exits 2), and also refuses client options before `serve`.
    pub fn parse_command_line() -> Cli {
        Self::try_parse_command_line(std::env::args_os()).unwrap_or_else(|error| error.exit())
    }

    /// [`Cli::parse_command_line`] on `args`. A client option before `serve`
    /// (`corekv --addr H:P serve`) is an error rather than silently ignored: `serve` listens
    /// where `serve --addr` says, and would otherwise seem to take the other address.
    pub fn try_parse_command_line<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let mut command = Cli::command();
        let matches = command.try_get_matches_from_mut(args)?;
        if matches.subcommand_name() == Some("serve") {
            let given = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
            if let Some((_, flag)) = crate::client::GlobalArgs::FLAGS.iter().find(|(id, _)| given(id)) {
                return Err(command.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("{flag} before `serve` is a client option; serve's listen address is `corekv serve --addr HOST:PORT`"),
                ));
            }
        }
        Cli::from_arg_matches(&matches).map_err(|error| error.format(&mut command))
    }
}

/// `corekv serve` runs the server; every other subcommand is the HTTP client.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the key-value server.
    Serve(ServeArgs),
    /// Client subcommands (get, set, ...), talking to a running server over HTTP.
    #[command(flatten)]
    Client(crate::client::ClientCommand),
    /// Print a shell completion script: `source <(corekv completions bash)`.
    Completions(crate::client::CompletionsArgs),
}

/// How the store is laid out across threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Design {
    /// Thread-per-core: each shard owns a slice of the keyspace; requests are routed to owners.
    Sharded,
    /// One map behind a lock, read and written directly by every executor (for comparison).
    Locked,
}

/// Flags of `corekv serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address every shard listens on (SO_REUSEPORT). Port 0 picks a free port. Given after
    /// `serve` only; the client's `--addr` and COREKV_ADDR do not set it.
    #[arg(long, default_value = limits::ADDR_DEFAULT)]
    pub addr: SocketAddr,

    /// Number of shards (executors). Default: one per CPU in the process's affinity mask.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=limits::SHARDS_MAX as i64))]
    pub shards: Option<u16>,

    /// CPUs to pin shards to, e.g. `1`, `0-3`, `1,3`. Default: the process's affinity mask.
    #[arg(long, value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,

    /// Thread-per-core (`sharded`) or one locked map (`locked`).
    #[arg(long, value_enum, default_value_t = Design::Sharded)]
    pub design: Design,

    /// Longest key accepted, in bytes (after percent-decoding).
    #[arg(long = "max-key-bytes", default_value_t = limits::KEY_BYTES_MAX_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=limits::KEY_BYTES_MAX_CEILING as i64))]
    pub key_bytes_max: u32,

    /// Largest value accepted, in bytes.
    #[arg(long = "max-value-bytes", default_value_t = limits::VALUE_BYTES_MAX_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=limits::VALUE_BYTES_MAX_CEILING as i64))]
    pub value_bytes_max: u32,

    /// Largest JSON request body (bulk updates, base64 POST), in bytes.
    #[arg(long = "max-body-bytes", default_value_t = limits::JSON_BODY_BYTES_MAX_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=limits::JSON_BODY_BYTES_MAX_CEILING as i64))]
    pub json_body_bytes_max: u32,

    /// Open connections allowed per shard; past it a new connection gets 503 and is closed.
    #[arg(long = "max-connections", default_value_t = limits::CONNECTIONS_PER_SHARD_MAX_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=limits::CONNECTIONS_PER_SHARD_MAX_CEILING as i64))]
    pub connections_per_shard_max: u32,

    /// Time a client has to send a request's headers once it has started it, in ms (then 408).
    #[arg(long = "header-timeout-ms", default_value_t = limits::HEADER_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=limits::TIMEOUT_MS_CEILING))]
    pub header_timeout_ms: u64,

    /// Time a client has to send a request's body once the headers are in, in ms (then 408).
    #[arg(long = "body-timeout-ms", default_value_t = limits::BODY_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=limits::TIMEOUT_MS_CEILING))]
    pub body_timeout_ms: u64,

    /// An idle keep-alive connection is closed after this many ms.
    #[arg(long = "idle-timeout-ms", default_value_t = limits::IDLE_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=limits::TIMEOUT_MS_CEILING))]
    pub idle_timeout_ms: u64,

    /// On SIGTERM/SIGINT, requests in flight get this long to finish, in ms.
    #[arg(long = "shutdown-grace-ms", default_value_t = limits::SHUTDOWN_GRACE_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(0..=limits::TIMEOUT_MS_CEILING))]
    pub shutdown_grace_ms: u64,

    /// Most keys held in all (each shard enforces its share: limit / shards).
    #[arg(long = "max-keys", value_parser = clap::value_parser!(u64).range(0..=limits::KEYS_MAX_CEILING))]
    pub keys_max: Option<u64>,

    /// Most memory for keys, values and their bookkeeping, e.g. `64MiB`, `2GiB`, `1000000`
    /// (each shard enforces its share).
    #[arg(long = "max-memory", value_parser = parse_memory_size)]
    pub memory_bytes_max: Option<u64>,

    /// When full: `reject` new keys with 507, or evict the least recently used (`lru`).
    #[arg(long, value_enum, default_value_t = Eviction::Reject)]
    pub eviction: Eviction,

    /// Refuse every write with 405; reads work.
    #[arg(long = "read-only")]
    pub read_only: bool,

    /// Keep an ordered index of each shard's keys, so that prefix listing
    /// (`GET /v1/keys?prefix=`) works (without it, listing answers 501). It costs about 40 bytes
    /// of memory per key (11-byte keys) and 0.3 to 0.5 µs of CPU per PUT.
    #[arg(long = "key-index")]
    pub key_index: bool,

    /// Recent changes each shard keeps so a watcher can resume after a reconnect (`?from=`);
    /// 0 keeps none (every resume answers `compacted`). Also bounded by 4 MiB per shard.
    #[arg(long = "watch-history-changes", default_value_t = limits::WATCH_HISTORY_CHANGES_DEFAULT,
          value_parser = clap::value_parser!(u32).range(0..=limits::WATCH_HISTORY_CHANGES_CEILING as i64))]
    pub watch_history_changes: u32,

    /// Watchers each shard holds at most (a key watch counts on its key's shard, a prefix
    /// watch on every shard); past it a new watch answers 503.
    #[arg(long = "max-watchers", default_value_t = limits::WATCHERS_PER_SHARD_MAX as u32,
          value_parser = clap::value_parser!(u32).range(1..=limits::WATCHERS_PER_SHARD_CEILING as i64))]
    pub watchers_max: u32,

    /// This node's id in the cluster (`--peers`), 1 or more.
    #[arg(long = "node-id", requires = "peers", value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: Option<u64>,

    /// Every member's peer address, this node's included: `1=127.0.0.1:7101,2=...`. Shard `s`
    /// of a node takes peer traffic on that port + 100 x `s`. Each shard forms one Raft group
    /// with the same shard of the other nodes. Without it the server runs alone.
    #[arg(long, requires = "node_id", value_parser = crate::replication::parse_peers)]
    pub peers: Option<crate::replication::PeerList>,

    /// With `--peers`: entries each Raft group applies after its last snapshot before it
    /// snapshots its store and drops the log before it (disk and memory stay bounded).
    #[arg(long = "raft-snapshot-entries", default_value_t = limits::RAFT_SNAPSHOT_ENTRIES_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub raft_snapshot_entries: u64,

    /// With `--peers`: the largest Raft snapshot this node accepts from a leader, e.g. `4GiB`
    /// (it holds that much while the snapshot arrives); a larger one is refused and counted.
    #[arg(long = "raft-snapshot-bytes-max", default_value_t = limits::RAFT_SNAPSHOT_BYTES_MAX_DEFAULT,
          value_parser = parse_memory_size)]
    pub raft_snapshot_bytes_max: u64,

    /// Milliseconds a Raft snapshot's build waits after each chunk of keys (for tests: a small
    /// store built as slowly as a large one). 0 in production.
    #[arg(long = "raft-snapshot-build-delay-ms", hide = true, default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=limits::RAFT_SNAPSHOT_BUILD_DELAY_MS_MAX))]
    pub raft_snapshot_build_delay_ms: u64,

    /// Chunk size of the Raft snapshots this node sends, in bytes (for tests: small chunks
    /// make a small snapshot travel in many).
    #[arg(long = "raft-snapshot-chunk-bytes", hide = true, default_value_t = limits::RAFT_SNAPSHOT_CHUNK_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(limits::RAFT_SNAPSHOT_CHUNK_BYTES_MIN as u64..=limits::RAFT_SNAPSHOT_CHUNK_BYTES as u64))]
    pub raft_snapshot_chunk_bytes: usize,

    /// With `--peers`: vote and campaign at once although this member starts with no Raft
    /// state (by default it abstains until a leader has caught it up). UNSAFE: only for a
    /// group left leaderless because a majority of its members lost their state; writes only
    /// the lost members held are gone.
    #[arg(long = "raft-force-vote", requires = "peers")]
    pub raft_force_vote: bool,

    /// Load `<key> <value>` lines from this file before reporting ready.
    #[arg(long = "load", env = "KV_DATA_FILE_PATH", value_name = "FILE")]
    pub load: Option<std::path::PathBuf>,

    /// Keep the data on disk in DIR (a write-ahead log and snapshots per shard) and recover
    /// it at start-up. Without it the server keeps everything in memory only.
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// With --data-dir: when a write is answered. `always`: after its record is fdatasynced;
    /// `everysec`: once it reached the OS (fdatasync at least every second); `never`: once it
    /// reached the OS.
    #[arg(long, value_enum, default_value_t = FsyncPolicy::EverySec)]
    pub fsync: FsyncPolicy,

    /// With --data-dir: size each log segment is preallocated to, in bytes.
    #[arg(long = "log-segment-bytes", default_value_t = limits::STORAGE_SEGMENT_BYTES_DEFAULT,
          value_parser = clap::value_parser!(u64)
              .range(limits::STORAGE_SEGMENT_BYTES_MIN..=limits::STORAGE_SEGMENT_BYTES_CEILING))]
    pub log_segment_bytes: u64,

    /// With --data-dir: snapshot once the log since the last snapshot is this many times the
    /// live data...
    #[arg(long = "snapshot-log-ratio", default_value_t = limits::STORAGE_SNAPSHOT_LOG_RATIO_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=limits::STORAGE_SNAPSHOT_LOG_RATIO_CEILING))]
    pub snapshot_log_ratio: u64,

    /// ...and at least this many bytes.
    #[arg(long = "snapshot-floor-bytes", default_value_t = limits::STORAGE_SNAPSHOT_FLOOR_BYTES_DEFAULT,
          value_parser = clap::value_parser!(u64).range(0..=limits::STORAGE_SNAPSHOT_FLOOR_BYTES_CEILING))]
    pub snapshot_floor_bytes: u64,
    /// Require `Authorization: Bearer TOKEN`: one `TOKEN ROLE` per line, ROLE `read`, `write`
    /// (implies read) or `admin` (implies write, plus stats and metrics). Re-read on SIGHUP.
    /// `/v1/ping` and `/v1/readiness` stay open.
    #[arg(long = "auth-token-file", value_name = "FILE")]
    pub auth_token_file: Option<std::path::PathBuf>,

    /// With `--auth-token-file`: serve `/metrics` without a token (for a scraper).
    #[arg(long = "metrics-open", requires = "auth_token_file")]
    pub metrics_open: bool,
}

impl ServeArgs {
    /// `corekv serve` with these flags on top of the defaults, parsed by clap exactly as the
    /// command line is: the one way tests and benches build a `ServeArgs`, so a new flag
    /// cannot be forgotten in a hand-built copy. Panics when the flags do not parse (a bug in
    /// the caller's fixed flags), with clap's message.
    pub fn from_flags(flags: &[&str]) -> ServeArgs {
        let argv = ["corekv", "serve"].iter().chain(flags);
        match Cli::try_parse_from(argv)
            .unwrap_or_else(|error| panic!("serve {flags:?}: {error}"))
            .command
        {
            Command::Serve(args) => args,
            other => unreachable!("`corekv serve ...` parsed as {other:?}"),
        }
    }

    /// The log settings every shard's [`crate::storage::ShardLog`] gets.
    pub fn storage_config(&self) -> crate::storage::Config {
        crate::storage::Config {
            segment_bytes: self.log_segment_bytes,
            snapshot_log_ratio: self.snapshot_log_ratio,
            snapshot_floor_bytes: self.snapshot_floor_bytes,
            ..crate::storage::Config::new(self.fsync)
        }
    }

    /// Shard `id`'s share of the capacity limits: the totals split evenly, the remainder going
    /// to the first shards, so the shares add up to exactly the totals.
    pub fn budget_for(&self, id: usize, nr_shards: usize) -> Budget {
        let share = |total: u64| {
            let nr_shards = nr_shards as u64;
            total / nr_shards + u64::from((id as u64) < total % nr_shards)
        };
        Budget {
            keys_max: self.keys_max.map(share),
            memory_bytes_max: self.memory_bytes_max.map(share),
            eviction: self.eviction,
        }
    }
}

/// Parses a size: plain bytes, or a number with `KiB`/`MiB`/`GiB`/`TiB` (1024-based) or
/// `KB`/`MB`/`GB`/`TB` (1000-based), case-insensitive.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 64MiB, 2GiB, 1000000)"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use KiB, MiB, GiB, TiB, KB, MB, GB or bytes)"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses `--max-memory`: a size ([`parse_size`]) no larger than [`limits::MEMORY_BYTES_MAX_CEILING`].
fn parse_memory_size(text: &str) -> Result<u64, String> {
    let bytes = parse_size(text)?;
    if bytes > limits::MEMORY_BYTES_MAX_CEILING {
        return Err(format!(
            "`{text}` is {bytes} bytes; the range is 0..={} bytes (1 PiB)",
            limits::MEMORY_BYTES_MAX_CEILING
        ));
    }
    Ok(bytes)
}

/// A validated, de-duplicated list of CPU ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parses `1`, `0-3`, `1,3`, `0-1,4` into a sorted list of distinct CPU ids.
pub fn parse_cpu_list(text: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim) {
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{s}` is not a CPU number (expected e.g. `1`, `0-3`, `1,3`)"))
        };
        match part.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (parse(low)?, parse(high)?);
                if low > high {
                    return Err(format!("CPU range `{part}` runs backwards"));
                }
                if high - low >= limits::SHARDS_MAX {
                    return Err(format!("CPU range `{part}` is too large"));
                }
                cpus.extend(low..=high);
            }
            None => cpus.push(parse(part)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        return Err("the CPU list is empty".into());
    }
    Ok(CpuList(cpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_ranges_and_singles() {
        assert_eq!(parse_cpu_list("1").unwrap().0, vec![1]);
        assert_eq!(parse_cpu_list("0-3").unwrap().0, vec![0, 1, 2, 3]);
        assert_eq!(parse_cpu_list("3,1,1").unwrap().0, vec![1, 3]);
        assert_eq!(parse_cpu_list("0-1, 4").unwrap().0, vec![0, 1, 4]);
    }

    #[test]
    fn cpu_lists_reject_garbage() {
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("a").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("0-99999999").is_err());
        assert!(parse_cpu_list("1,,2").is_err());
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1000000"), Ok(1_000_000));
        assert_eq!(parse_size("5 kb"), Ok(5_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn budget_shares_add_up_to_the_totals() {
        let cli = Cli::try_parse_from(["corekv", "serve", "--max-keys", "10", "--max-memory", "1KiB"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve did not parse as Serve")
        };
        let shares: Vec<Budget> = (0..3).map(|id| args.budget_for(id, 3)).collect();
        assert_eq!(
            shares.iter().map(|b| b.keys_max.unwrap()).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(shares.iter().map(|b| b.memory_bytes_max.unwrap()).sum::<u64>(), 1024);
        assert_eq!(shares[0].eviction, Eviction::Reject);
    }

    #[test]
    fn client_options_before_serve_are_refused_and_serve_addr_is_serves() {
        let error = Cli::try_parse_command_line(["corekv", "--addr", "h:1", "serve"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("serve --addr"), "{error}");
        assert!(Cli::try_parse_command_line(["corekv", "--output", "json", "serve"]).is_err());
        let cli = Cli::try_parse_command_line(["corekv", "serve", "--addr", "127.0.0.1:9"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve did not parse as Serve")
        };
        assert_eq!(args.addr.to_string(), "127.0.0.1:9");
        let cli = Cli::try_parse_command_line(["corekv", "--addr", "h:1", "ping"]).unwrap();
        assert_eq!(cli.client.addr, "h:1");
    }

    #[test]
    fn from_flags_parses_over_the_defaults() {
        let args = ServeArgs::from_flags(&["--max-keys", "3", "--read-only"]);
        assert_eq!((args.keys_max, args.read_only), (Some(3), true));
        assert_eq!(args.key_bytes_max, limits::KEY_BYTES_MAX_DEFAULT);
        let bad = std::panic::catch_unwind(|| ServeArgs::from_flags(&["--shards", "0"]));
        assert!(bad.is_err(), "a flag clap refuses is not silently dropped");
    }

    #[test]
    fn serve_defaults_match_the_named_limits() {
        let cli = Cli::try_parse_from(["corekv", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve did not parse as Serve")
        };
        assert_eq!(args.addr.to_string(), limits::ADDR_DEFAULT);
        assert_eq!(args.key_bytes_max, 250);
        assert_eq!(args.value_bytes_max, 1 << 20);
        assert_eq!(args.design, Design::Sharded);
        assert!(Cli::try_parse_from(["corekv", "serve", "--shards", "0"]).is_err());
        assert!(Cli::try_parse_from(["corekv", "serve", "--max-key-bytes", "0"]).is_err());
    }

    #[test]
    fn numeric_serve_flags_have_ceilings() {
        let parse = |flag: &str, value: String| Cli::try_parse_from(["corekv", "serve", flag, value.as_str()]);
        let timeouts = [
            "--header-timeout-ms",
            "--body-timeout-ms",
            "--idle-timeout-ms",
            "--shutdown-grace-ms",
        ];
        for flag in timeouts {
            assert!(
                parse(flag, limits::TIMEOUT_MS_CEILING.to_string()).is_ok(),
                "{flag} at its ceiling"
            );
            assert!(
                parse(flag, (limits::TIMEOUT_MS_CEILING + 1).to_string()).is_err(),
                "{flag}"
            );
            assert!(parse(flag, u64::MAX.to_string()).is_err(), "{flag}");
        }
        let ceiling = limits::CONNECTIONS_PER_SHARD_MAX_CEILING;
        assert!(parse("--max-connections", ceiling.to_string()).is_ok());
        assert!(parse("--max-connections", (ceiling + 1).to_string()).is_err());
        assert!(parse("--max-keys", limits::KEYS_MAX_CEILING.to_string()).is_ok());
        assert!(parse("--max-keys", (limits::KEYS_MAX_CEILING + 1).to_string()).is_err());
        assert!(parse("--max-memory", "1024TiB".into()).is_ok());
        assert!(parse("--max-memory", "1025TiB".into()).is_err());
    }
}
