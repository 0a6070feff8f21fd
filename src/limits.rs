//! Every limit and default in one place, with its unit in its name.
//!
//! Owns numbers only. Flags in [`crate::config`] take their defaults from here; the
//! compile-time asserts at the end keep related limits consistent.

/// Where `corekv serve` listens unless `--addr` says otherwise; the client's default target too.
pub const ADDR_DEFAULT: &str = "127.0.0.1:7878";

/// Most shards one process runs (and widest `--cpus` range accepted).
pub const SHARDS_MAX: usize = 1024;

/// Default longest key, in bytes after percent-decoding (seed 002's documented limit).
pub const KEY_BYTES_MAX_DEFAULT: u32 = 250;
/// Highest `--max-key-bytes` accepted: keys live in the request line, bounded by the header limit.
pub const KEY_BYTES_MAX_CEILING: u32 = 4096;

/// Default largest value, in bytes (1 MiB, seed 002's documented limit).
pub const VALUE_BYTES_MAX_DEFAULT: u32 = 1 << 20;
/// Highest `--max-value-bytes` accepted (a whole value is buffered in memory per request).
pub const VALUE_BYTES_MAX_CEILING: u32 = 512 << 20;

/// Default largest JSON body (bulk update, base64 POST), in bytes: room for a base64 1 MiB value.
pub const JSON_BODY_BYTES_MAX_DEFAULT: u32 = 8 << 20;
/// Highest `--max-body-bytes` accepted.
pub const JSON_BODY_BYTES_MAX_CEILING: u32 = 1 << 30;

/// Items one bulk update may carry.
pub const BULK_ITEMS_MAX: usize = 100_000;

/// Tokens one `--auth-token-file` may hold (each request compares against all of them).
pub const AUTH_TOKENS_MAX: usize = 1_000;

/// Default open connections per shard.
pub const CONNECTIONS_PER_SHARD_MAX_DEFAULT: u32 = 10_000;
/// Highest `--max-connections` accepted (each open connection holds at least a read buffer).
pub const CONNECTIONS_PER_SHARD_MAX_CEILING: u32 = 1_000_000;

/// Connections the kernel queues per shard's listener before the shard accepts them (glommio's
/// own `TcpListener::bind` uses the same).
pub const LISTEN_BACKLOG_CONNECTIONS: i32 = 1024;

/// File descriptors each shard needs besides its connections: its listener, glommio's three
/// rings and their eventfds and timers, and the reserve descriptor kept for refusing
/// connections when the process runs out (see `os::ReserveFd`).
pub const FDS_PER_SHARD_HEADROOM: u64 = 16;
/// File descriptors the process needs besides the shards': stdio, the signalfd, the port
/// placeholder, the `--load` file, `/proc` reads.
pub const FDS_PER_PROCESS_HEADROOM: u64 = 32;
/// Most waiting connections one shard answers with 503 per pass when out of descriptors.
pub const FD_EXHAUSTION_REFUSALS_PER_PASS_MAX: usize = 64;

/// Highest `--header-timeout-ms`, `--body-timeout-ms`, `--idle-timeout-ms` and
/// `--shutdown-grace-ms` accepted, in ms (24 h): larger values are surely mistakes, and this
/// bound keeps every deadline (`now + timeout`) far from overflowing.
pub const TIMEOUT_MS_CEILING: u64 = 24 * 3600 * 1000;
/// Highest `--max-keys` accepted (2^40, about 10^12 keys).
pub const KEYS_MAX_CEILING: u64 = 1 << 40;
/// Highest `--max-memory` accepted, in bytes (1 PiB).
pub const MEMORY_BYTES_MAX_CEILING: u64 = 1 << 50;

/// Default time to send a request's headers, once started, in ms.
pub const HEADER_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default time to send a request's body, once the headers are in, in ms.
pub const BODY_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default time an idle keep-alive connection stays open, in ms.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// How often each shard checks connections' read deadlines, in ms: header, body and idle
/// timeouts fire up to this much late, and reads need no timer of their own.
pub const TIMEOUT_SWEEP_MS: u64 = 50;
/// Time a client has to take a response off the socket before the connection is dropped, in ms.
pub const WRITE_TIMEOUT_MS: u64 = 30_000;
/// Default time for in-flight requests to finish after SIGTERM/SIGINT, in ms.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 5_000;

/// Largest request head (request line and headers), in bytes; past it the answer is 431.
pub const HEADER_BYTES_MAX: usize = 16 << 10;
/// Most headers in one request; past it the answer is 431.
pub const HEADERS_COUNT_MAX: usize = 64;
/// Longest chunk-size line of a chunked request body (hex size, extensions and CRLF), in bytes;
/// past it the answer is 400 and the connection closes. Extensions carry nothing corekv uses.
pub const CHUNK_LINE_BYTES_MAX: usize = 4096;
/// Bytes of chunked framing (size lines, extensions, CRLFs, trailers) a chunked body may carry
/// on top of its route's limit on data: every framing byte counts toward limit + this, so a
/// value of exactly `--max-value-bytes` can still be uploaded chunked (curl -T sends 64 KiB
/// chunks: about 8 bytes of framing each), while framing can never grow without bound.
pub const CHUNK_FRAMING_BYTES_MAX: u64 = 64 << 10;
/// Most chunks one chunked request body may have; past it the answer is 400 and the connection
/// closes. (Every byte of a chunked body, framing included, also counts toward its route's body
/// limit, so this bounds only the per-chunk work of tiny chunks.)
pub const CHUNKS_PER_BODY_MAX: usize = 4096;
/// Largest trailer section after a chunked request body's last chunk, in bytes; past it the
/// answer is 431 and the connection closes.
pub const CHUNK_TRAILER_BYTES_MAX: usize = HEADER_BYTES_MAX;
/// Bytes asked of the socket per read when the buffer has no better size in mind.
pub const READ_CHUNK_BYTES: usize = 16 << 10;
/// Most bytes of buffer an idle keep-alive connection keeps: before it waits for its next
/// request its read buffer shrinks to twice what its last requests took (at least
/// `CONNECTION_IDLE_BUFFER_BYTES_MIN`, at most this), and a write buffer or bookkeeping larger
/// than that is given back. 16 pipelined GETs fit without growing it.
pub const CONNECTION_IDLE_BUFFER_BYTES: usize = 2 << 10;
/// Smallest read buffer a connection keeps, and the one it starts with (a GET or a small PUT
/// fits).
pub const CONNECTION_IDLE_BUFFER_BYTES_MIN: usize = 512;
/// Most pipelined requests answered as one batch (one write); the rest wait for the next batch.
pub const PIPELINE_REQUESTS_MAX: usize = 256;
/// Response bytes buffered before a batch is flushed early (bounds memory for big GETs).
pub const WRITE_BUFFER_FLUSH_BYTES: usize = 4 << 20;
/// Bytes of found values one shard copies into one reply to another shard's connection; the
/// operations after that point are handed back unexecuted and sent again once the connection
/// has written what it has (backpressure). The first operation of a batch always runs, so one
/// reply holds at most this plus one value.
pub const PEER_REPLY_VALUE_BYTES_MAX: usize = 1 << 20;

/// Most keys one shard puts in one page of a prefix listing (`GET /v1/keys?prefix=`): a
/// listing connection holds at most one page per shard at a time.
pub const LIST_PAGE_KEYS_MAX: usize = 1_000;
/// Bytes of keys and values one shard puts in one listing page; the first item always goes in,
/// so a page holds at most this plus one key and value.
pub const LIST_PAGE_BYTES_MAX: usize = 256 << 10;
/// A listing's response is written as one HTTP chunk each time this many bytes are rendered.
pub const LIST_CHUNK_BYTES: usize = 64 << 10;
/// Largest `limit` a listing request may ask for (no `limit`: the whole listing, streamed).
pub const LIST_LIMIT_MAX: u64 = 1 << 40;

/// Changes a watcher's channel holds (`GET /v1/watch/...`) before the watcher is dropped.
pub const WATCH_QUEUE_EVENTS_MAX: usize = 256;
/// Bytes of changes (keys, values, bookkeeping) queued for one watcher before it is dropped
/// (the first change always fits).
pub const WATCH_QUEUE_BYTES_MAX: usize = 1 << 20;
/// Default `--watch-history-changes`: recent changes each shard keeps for resuming watchers.
pub const WATCH_HISTORY_CHANGES_DEFAULT: u32 = 1024;
/// Highest `--watch-history-changes` accepted.
pub const WATCH_HISTORY_CHANGES_CEILING: u32 = 1 << 20;
/// Bytes of recent changes each shard keeps at most, whatever `--watch-history-changes` says.
pub const WATCH_HISTORY_BYTES_MAX: usize = 4 << 20;
/// Largest value the history keeps with a change nobody watches at the time (a larger one is
/// kept without its value, so a big write costs no copy unless someone watches it).
pub const WATCH_HISTORY_VALUE_BYTES_MAX: usize = 4 << 10;
/// Watchers registered on one shard (key watchers it owns, plus every prefix watcher).
pub const WATCHERS_PER_SHARD_MAX: usize = 100_000;
/// Highest `--max-watchers` accepted.
pub const WATCHERS_PER_SHARD_CEILING: u32 = 1 << 20;
/// A watch stream with nothing to say sends a comment this often, in ms, so proxies keep it
/// and a vanished client is noticed.
pub const WATCH_HEARTBEAT_MS: u64 = 15_000;

/// How often each shard reclaims expired keys without being asked, in ms (Redis: 10 Hz).
pub const EXPIRY_TICK_MS: u64 = 100;
/// Most expired keys reclaimed in one step; past it the shard yields to requests, then goes on.
pub const EXPIRY_KEYS_PER_STEP_MAX: usize = 2_000;
/// Most expired keys a write examines (pending-expiry entries, live or stale) to make room for
/// itself in reject mode. A write that still does not fit is refused (507) even if more expired
/// keys wait: the active expiry (`EXPIRY_KEYS_PER_STEP_MAX` per step) reclaims them within a
/// tick or so, and the write succeeds again. It keeps one request from paying for a backlog.
pub const EXPIRY_KEYS_PER_WRITE_MAX: usize = 256;
/// Most keys one expire entry of a Raft group's leader names (`--peers`: only the leader
/// expires, by proposing them). It proposes one per `RAFT_TICK_MS`, and the next at once after
/// a full one applied.
pub const EXPIRY_KEYS_PER_PROPOSAL_MAX: usize = 128;
/// Longest TTL accepted, in ms (10 years): larger values are surely mistakes.
pub const TTL_MS_MAX: u64 = 10 * 365 * 24 * 3600 * 1000;

/// Most keys one shard's store holds. Nodes are indexed by `u32`, and the two highest values
/// mark "no node" and "free node"; a write that would need one more node is refused (507).
pub const KEYS_PER_SHARD_MAX: u32 = u32::MAX - 1;

/// Bytes a shard's store must have freed (keys deleted, expired or evicted) since its last trim
/// before its expiry tick asks the allocator to give free memory back to the OS.
pub const MEMORY_TRIM_FREED_BYTES_MIN: usize = 8 << 20;
/// Shortest time between two such trims on one shard, in ms (each costs a walk of the heap).
pub const MEMORY_TRIM_INTERVAL_MS_MIN: u64 = 1_000;
/// Lines one rate-limited log call site may write per window ([`LOG_RATE_WINDOW_MS`]); the rest
/// are counted and reported as "(N similar messages suppressed)" (see `logging::RateLimit`).
pub const LOG_LINES_PER_WINDOW_MAX: u32 = 5;
/// Length of a rate-limited log call site's window, in ms.
pub const LOG_RATE_WINDOW_MS: u64 = 10_000;

/// Most operations in one transaction (`POST /v1/txn`): compares plus both branches' operations
/// (413 past it). An atomic bulk update counts two per item (a compare and an update). Each one
/// may lock a key and copy a value into the answer, so this bounds a transaction's locks, its
/// messages and its answer (at most this many values).
pub const TXN_OPS_MAX: usize = 1_000;
/// Bytes of values one transaction's answer carries (its gets' values, over all shards); a get
/// past it answers its version and an error instead of its value. Keeps a transaction of
/// `TXN_OPS_MAX` gets of large values from building a gigabyte answer.
pub const TXN_RESULT_VALUE_BYTES_MAX: usize = 4 << 20;
/// Most keys one shard's transaction lock table holds at once; a transaction that would lock
/// more waits for room like for a locked key.
pub const TXN_LOCKS_PER_SHARD_MAX: usize = 100_000;
/// Longest a transaction waits for its keys' locks, in ms, before it gives up (503) and
/// releases the ones it holds.
pub const TXN_LOCK_WAIT_MS_MAX: u64 = 2_000;
/// Longest a transaction lock is honoured, in ms: past it the owning shard takes the lock back
/// (a coordinator that never finishes must not leave keys locked forever), and that
/// transaction's late commit on that shard is refused (503). Far above the wait limit plus a
/// commit's round trip, so a live coordinator never meets it.
pub const TXN_LOCK_HOLD_MS_MAX: u64 = 10_000;
/// First and longest pause between two tries of a key a transaction holds (a plain operation
/// on a locked key, or a transaction's lock), in µs; the pause doubles from the first to the
/// longest.
pub const TXN_RETRY_PAUSE_US_MIN: u64 = 20;
pub const TXN_RETRY_PAUSE_US_MAX: u64 = 1_000;

/// Messages queued per shard-to-shard channel before senders wait.
pub const CHANNEL_DEPTH_MESSAGES: usize = 1024;

/// io_uring registered-buffer memory per executor, in bytes. Sized so that
/// `shards * IO_MEMORY_BYTES_PER_SHARD` stays under an 8 MiB RLIMIT_MEMLOCK for small shard
/// counts; the server scales it down further to fit the real limit (see `server::io_memory_for`).
pub const IO_MEMORY_BYTES_PER_SHARD: usize = 1 << 20;
/// Smallest io_memory glommio accepts (it rounds up to this).
pub const IO_MEMORY_BYTES_MIN: usize = 64 << 10;

/// Largest payload (key, deadline and value) of one log or snapshot record, in bytes. The
/// on-disk length field is a u32; this keeps recovery from believing a damaged length.
pub const STORAGE_RECORD_PAYLOAD_BYTES_MAX: usize = 1 << 30;
/// Default size of one preallocated log segment, in bytes (`storage::Config::segment_bytes`).
pub const STORAGE_SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Log bytes a shard may hold appended but not yet handed to the OS; past it
/// `ShardLog::reserve` waits for the writer (a single larger record is admitted alone).
pub const STORAGE_LOG_BUFFER_BYTES_MAX: usize = 4 << 20;
/// Largest single io_uring write of log or snapshot bytes: small enough that its aligned DMA
/// buffer usually comes from the executor's registered io_memory pool.
pub const STORAGE_WRITE_BYTES_MAX: usize = 256 << 10;
/// Bytes of zeros per io_uring write when a spare `always` log segment is filled ahead of need
/// (so that O_DIRECT appends overwrite written blocks and are never punted to io_uring's worker
/// threads; `everysec`/`never` segments are mapped and only preallocated).
pub const STORAGE_ZERO_FILL_BYTES: usize = STORAGE_WRITE_BYTES_MAX;
/// Bytes read per io_uring read during recovery.
pub const STORAGE_READ_CHUNK_BYTES: usize = 256 << 10;
/// Longest time between fdatasyncs of written log bytes under `--fsync everysec`, in ms.
pub const STORAGE_EVERYSEC_SYNC_MS: u64 = 1_000;
/// Default snapshot trigger: the log since the last snapshot exceeds this multiple of live data.
pub const STORAGE_SNAPSHOT_LOG_RATIO_DEFAULT: u64 = 2;
/// Default snapshot trigger floor: no snapshot while the log is smaller than this, in bytes.
pub const STORAGE_SNAPSHOT_FLOOR_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest and largest `--log-segment-bytes`, in bytes.
pub const STORAGE_SEGMENT_BYTES_MIN: u64 = 64 << 10;
pub const STORAGE_SEGMENT_BYTES_CEILING: u64 = 4 << 30;
/// Largest `--snapshot-log-ratio`.
pub const STORAGE_SNAPSHOT_LOG_RATIO_CEILING: u64 = 1_000;
/// Largest `--snapshot-floor-bytes`, in bytes.
pub const STORAGE_SNAPSHOT_FLOOR_BYTES_CEILING: u64 = 1 << 40;
/// How often each shard asks its log whether a snapshot is due, in ms.
pub const STORAGE_SNAPSHOT_CHECK_MS: u64 = 200;
/// Keys a snapshot copies from the store per step before it writes and yields.
pub const STORAGE_SNAPSHOT_CHUNK_KEYS: usize = 1_024;

const _: () = assert!(
    KEY_BYTES_MAX_CEILING as usize * 3 < HEADER_BYTES_MAX,
    "a %-encoded key must fit in the head"
);
const _: () = assert!(KEY_BYTES_MAX_DEFAULT <= KEY_BYTES_MAX_CEILING);
const _: () = assert!(VALUE_BYTES_MAX_DEFAULT <= VALUE_BYTES_MAX_CEILING);
const _: () = assert!(
    (VALUE_BYTES_MAX_DEFAULT as usize).div_ceil(3) * 4 + 1024 <= JSON_BODY_BYTES_MAX_DEFAULT as usize,
    "a base64 POST of the largest default value must fit in the default JSON body limit"
);
// Replication (`--peers`, src/replication): one Raft group per shard.
/// How often each shard ticks its Raft group, in ms.
pub const RAFT_TICK_MS: u64 = 100;
/// Ticks without a leader's heartbeat before a follower campaigns (randomised up to twice it).
pub const RAFT_ELECTION_TICKS: usize = 10;
/// Ticks between a leader's heartbeats.
pub const RAFT_HEARTBEAT_TICKS: usize = 1;
/// A leader with a follower that abstains (it started with no Raft state) proposes an empty
/// entry at most this often, in ticks, and only while every entry of its log is committed, so
/// the follower sees the commit index advance without it and may vote again
/// (`replication::abstain`).
pub const RAFT_ABSTAIN_NUDGE_TICKS: usize = 5;
/// Largest batch of entries in one append message, in bytes.
pub const RAFT_MESSAGE_BYTES_MAX: u64 = 1 << 20;
/// Append messages in flight to one follower before the leader waits for acknowledgements.
pub const RAFT_INFLIGHT_MESSAGES_MAX: usize = 256;
/// A replicated write or linearizable read not committed (or confirmed) within this many ms
/// answers 503 "no quorum for shard N".
pub const REPLICATION_TIMEOUT_MS: u64 = 3_000;
/// Replicated requests (writes and linearizable reads) waiting in one group at once; past it
/// a request answers 503 at once.
pub const REPLICATION_PENDING_PER_GROUP_MAX: usize = 4_096;
/// Frames queued for one peer (per shard); past it raft messages are dropped (raft resends).
pub const PEER_QUEUE_FRAMES_MAX: usize = 1_024;
/// Largest frame a peer may send, in bytes (an append message of `RAFT_MESSAGE_BYTES_MAX`
/// plus one entry of the largest batch a connection can send).
pub const PEER_FRAME_BYTES_MAX: usize = 64 << 20;
/// Shard `s` of a node listens for its peers on the node's peer port + `s` times this.
pub const PEER_PORT_STRIDE_PER_SHARD: u16 = 100;
/// Peer connections one shard accepts at once (its members need one each); past it a new
/// one is closed at once.
pub const PEER_CONNECTIONS_PER_SHARD_MAX: usize = 64;
/// A peer frame's buffer grows by at most this much ahead of the bytes that have arrived.
pub const PEER_FRAME_READ_CHUNK_BYTES: usize = 64 << 10;
/// Pause before dialing a peer again after a failed connection, in ms.
pub const PEER_RECONNECT_BACKOFF_MS: u64 = 200;
/// Time a peer has to complete the connection handshake, in ms.
pub const PEER_HANDSHAKE_TIMEOUT_MS: u64 = 2_000;

/// Entries a group applies after its last snapshot before it takes the next one and drops
/// the log before it (`--raft-snapshot-entries`); a node further behind gets the snapshot.
pub const RAFT_SNAPSHOT_ENTRIES_DEFAULT: u64 = 10_000;
/// Entry bytes (their payloads) a group applies after its last snapshot before it takes the
/// next one, whatever the entry count: bounds the log on disk and in memory.
pub const RAFT_SNAPSHOT_LOG_BYTES_MAX: u64 = 32 << 20;
/// ...but only once the log since the last snapshot (payloads plus `RAFT_ENTRY_OVERHEAD_BYTES`
/// per entry) reaches 1/`RAFT_SNAPSHOT_LOG_FRACTION` of that snapshot's bytes: a large store
/// is not copied whole every few thousand writes. Snapshot work then stays within this many
/// bytes copied per byte of log, and the log held in memory within this fraction of the store
/// (or the two bounds above, whichever is larger).
pub const RAFT_SNAPSHOT_LOG_FRACTION: u64 = 4;
/// What one entry held in the in-memory raft log costs beyond its payload (the `Entry`, its
/// buffers' headers), in bytes: counted toward `RAFT_SNAPSHOT_LOG_FRACTION`, so a run of tiny
/// entries (deletes) still brings the next snapshot.
pub const RAFT_ENTRY_OVERHEAD_BYTES: u64 = 64;
/// Largest `--raft-snapshot-build-delay-ms` (a hidden test flag), in milliseconds.
pub const RAFT_SNAPSHOT_BUILD_DELAY_MS_MAX: u64 = 10_000;
/// Entries before the snapshot's index kept in memory after a compaction (at most half of
/// the entry bound), so a follower a little behind is sent entries, not the whole snapshot.
pub const RAFT_SNAPSHOT_KEEP_ENTRIES_MAX: u64 = 1_000;
/// A snapshot's data travels to a follower in chunks of at most this many bytes, each its own
/// peer frame (`replication::transfer`); a receiver refuses a larger chunk.
pub const RAFT_SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Smallest chunk `--raft-snapshot-chunk-bytes` (hidden, for tests) may set, in bytes.
pub const RAFT_SNAPSHOT_CHUNK_BYTES_MIN: usize = 4 << 10;
/// Largest snapshot a follower accepts from a leader by default (`--raft-snapshot-bytes-max`),
/// in bytes of data: it holds that much while the chunks arrive. A leader snapshots its store
/// whatever its size; a follower refuses (and counts) a snapshot announced past its bound.
pub const RAFT_SNAPSHOT_BYTES_MAX_DEFAULT: u64 = 4 << 30;

const _: () = assert!(RAFT_HEARTBEAT_TICKS < RAFT_ELECTION_TICKS);
const _: () = assert!(
    REPLICATION_TIMEOUT_MS > 2 * RAFT_ELECTION_TICKS as u64 * RAFT_TICK_MS,
    "a write made during one election still commits before it times out"
);
const _: () = assert!(PEER_FRAME_BYTES_MAX as u64 > 2 * RAFT_MESSAGE_BYTES_MAX);
const _: () = assert!(
    RAFT_SNAPSHOT_CHUNK_BYTES + 64 <= PEER_FRAME_BYTES_MAX,
    "a snapshot chunk and its header fit in one peer frame"
);
const _: () = assert!(RAFT_SNAPSHOT_CHUNK_BYTES_MIN <= RAFT_SNAPSHOT_CHUNK_BYTES);
const _: () = assert!(
    RAFT_SNAPSHOT_BYTES_MAX_DEFAULT <= MEMORY_BYTES_MAX_CEILING,
    "the default snapshot bound is a size --max-memory could hold"
);

const _: () = assert!(READ_CHUNK_BYTES <= HEADER_BYTES_MAX);
const _: () = assert!(CONNECTION_IDLE_BUFFER_BYTES_MIN <= CONNECTION_IDLE_BUFFER_BYTES);
const _: () = assert!(CONNECTION_IDLE_BUFFER_BYTES <= READ_CHUNK_BYTES);
const _: () = assert!(
    PEER_REPLY_VALUE_BYTES_MAX <= WRITE_BUFFER_FLUSH_BYTES,
    "a peer's reply fits in what a connection buffers before it writes"
);
const _: () = assert!(
    CHUNK_LINE_BYTES_MAX < READ_CHUNK_BYTES,
    "a chunk-size line fits in one read"
);
const _: () = assert!(IO_MEMORY_BYTES_PER_SHARD >= IO_MEMORY_BYTES_MIN);
const _: () = assert!(EXPIRY_KEYS_PER_WRITE_MAX <= EXPIRY_KEYS_PER_STEP_MAX);
const _: () = assert!(
    EXPIRY_KEYS_PER_PROPOSAL_MAX * (KEY_BYTES_MAX_CEILING as usize + 13) + 24 <= RAFT_MESSAGE_BYTES_MAX as usize,
    "an expire entry of the longest keys fits in one append message"
);
const _: () = assert!(MEMORY_TRIM_INTERVAL_MS_MIN >= EXPIRY_TICK_MS);
const _: () = assert!(CONNECTIONS_PER_SHARD_MAX_DEFAULT <= CONNECTIONS_PER_SHARD_MAX_CEILING);
const _: () = assert!(
    HEADER_TIMEOUT_MS_DEFAULT <= TIMEOUT_MS_CEILING
        && BODY_TIMEOUT_MS_DEFAULT <= TIMEOUT_MS_CEILING
        && IDLE_TIMEOUT_MS_DEFAULT <= TIMEOUT_MS_CEILING
        && SHUTDOWN_GRACE_MS_DEFAULT <= TIMEOUT_MS_CEILING
);
const _: () = assert!(
    TIMEOUT_MS_CEILING.checked_mul(1 << 20).is_some(),
    "a deadline (coarse now + two timeouts) stays far below u64::MAX for ages of uptime"
);
const _: () = assert!(
    VALUE_BYTES_MAX_CEILING as usize + KEY_BYTES_MAX_CEILING as usize + 8 <= STORAGE_RECORD_PAYLOAD_BYTES_MAX,
    "the largest key and value must fit in one log record"
);
const _: () = assert!(STORAGE_RECORD_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(STORAGE_WRITE_BYTES_MAX.is_multiple_of(4096) && STORAGE_READ_CHUNK_BYTES.is_multiple_of(4096));
const _: () = assert!(STORAGE_WRITE_BYTES_MAX <= IO_MEMORY_BYTES_MIN * 4);
const _: () = assert!(
    STORAGE_SEGMENT_BYTES_MIN <= STORAGE_SEGMENT_BYTES_DEFAULT
        && STORAGE_SEGMENT_BYTES_DEFAULT <= STORAGE_SEGMENT_BYTES_CEILING
        && STORAGE_SNAPSHOT_LOG_RATIO_DEFAULT <= STORAGE_SNAPSHOT_LOG_RATIO_CEILING
        && STORAGE_SNAPSHOT_FLOOR_BYTES_DEFAULT <= STORAGE_SNAPSHOT_FLOOR_BYTES_CEILING
);
const _: () = assert!(
    LIST_PAGE_BYTES_MAX <= WRITE_BUFFER_FLUSH_BYTES && LIST_CHUNK_BYTES <= WRITE_BUFFER_FLUSH_BYTES,
    "a listing page and a listing chunk fit in what a connection buffers"
);
const _: () = assert!(
    TXN_LOCK_WAIT_MS_MAX * 2 < TXN_LOCK_HOLD_MS_MAX,
    "a live coordinator finishes long before its locks can be taken back"
);
const _: () = assert!(
    TXN_OPS_MAX <= TXN_LOCKS_PER_SHARD_MAX,
    "one transaction fits in a lock table"
);
const _: () = assert!(TXN_RETRY_PAUSE_US_MIN <= TXN_RETRY_PAUSE_US_MAX);
