//! Start-up and shutdown: pre-flight checks, one pinned glommio executor per shard, the
//! channel mesh between them, listeners, readiness and a graceful stop on SIGTERM/SIGINT.
//!
//! Owns threads, CPUs and signals. It never parses HTTP and never touches a store's contents;
//! each shard's work is in [`run_shard`], which hands connections to [`crate::http::conn`].

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use log::{debug, error, info, warn};

use crate::api::auth::{Published, ShardTokens, Tokens};
use crate::config::{Design, ServeArgs};
use crate::error::Error;
use crate::http::registry::Registry;
use crate::limits::{
    CHANNEL_DEPTH_MESSAGES, EXPIRY_KEYS_PER_STEP_MAX, EXPIRY_TICK_MS, FD_EXHAUSTION_REFUSALS_PER_PASS_MAX,
    FDS_PER_PROCESS_HEADROOM, FDS_PER_SHARD_HEADROOM, IO_MEMORY_BYTES_MIN, IO_MEMORY_BYTES_PER_SHARD,
};
use crate::os::{self, Listener, Received, ReserveFd, ShutdownSignals};
use crate::shard::context::{Counters, Latches, ShardContext};
use crate::shard::durability::{self, Durability};
use crate::shard::locked::LockedStore;
use crate::shard::message::ShardMessage;
use crate::shard::router::{Router, serve_peer};
use crate::shard::store::Store;
use crate::shard::{ShardId, StoreHandle};
use crate::warn_limited;

/// How often a draining shard checks whether its connections have finished.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// How often a shard's executor wakes while it joins the mesh (see `run_shard`).
const MESH_JOIN_TICK: Duration = Duration::from_millis(10);
/// How often the main thread wakes to check on the shards while waiting for a signal.
const SIGNAL_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Pause after an accept error that is about resources (EMFILE, ENFILE, ENOBUFS, ENOMEM).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Counts a shard's thread as exited, and stops the others, however it ends (even by panic).
struct ExitGuard {
    latches: Latches,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.latches.shutdown.count_down();
        self.latches.exited.count_down();
    }
}

/// `corekv serve`: runs until SIGTERM/SIGINT; returns the process exit code.
pub fn main(args: ServeArgs) -> i32 {
    crate::logging::init();
    match run(args) {
        Ok(()) => 0,
        Err(message) => {
            error!("{message}");
            1
        }
    }
}

/// Starts every shard and blocks until they have all stopped.
pub fn run(mut args: ServeArgs) -> Result<(), String> {
    preflight_io_uring()?;
    args.data_dir = args.data_dir.as_deref().map(absolute_data_dir).transpose()?;
    let cpus = shard_cpus(&args)?;
    let nr_shards = args.shards.map_or(cpus.len(), usize::from);
    if nr_shards > cpus.len() {
        warn!(
            "{nr_shards} shards on {} CPUs: shards share CPUs round-robin",
            cpus.len()
        );
    }
    check_fd_limit(nr_shards, args.connections_per_shard_max);
    let (addr, reservation) = reserve_port(args.addr)?;
    refuse_if_in_use(addr, 0)?;
    let durability = open_data_dir(&args, nr_shards)?;
    let _raft_dir_lock = lock_raft_dir(&args)?;
    let auth = load_tokens(&args)?;
    let mut signals =
        ShutdownSignals::block(auth.is_some()).map_err(|e| format!("cannot block SIGINT/SIGTERM: {e}"))?;
    let latches = Latches::new(nr_shards);
    let args = ServeArgs { addr, ..args };
    let handles = spawn_shards(&args, &cpus, nr_shards, &latches, durability, auth.as_ref());
    let mut failures = supervise(
        &args,
        &cpus,
        nr_shards,
        &latches,
        reservation,
        &mut signals,
        auth.as_deref(),
    );
    for (id, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => failures.push(format!("shard {id}: {message}")),
            Err(e) => failures.push(format!("shard {id} failed: {e}")),
        }
    }
    if failures.is_empty() {
        info!("stopped");
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// With `--data-dir`: locks it (naming the pid that holds it otherwise) and picks the layout
/// for `nr_shards`, on the main thread before any executor starts. In cluster mode (`--peers`)
/// each shard's Raft log is its durability instead (`replication::log`), and no write-ahead
/// log is opened: a write is applied from the Raft log, never twice.
fn open_data_dir(args: &ServeArgs, nr_shards: usize) -> Result<Option<Arc<Durability>>, String> {
    let Some(dir) = &args.data_dir else {
        return Ok(None);
    };
    if args.peers.is_some() {
        return Ok(None);
    }
    if args.design == Design::Locked {
        return Err(
            "--data-dir is not supported with --design locked (a benchmark contender only): \
             run the sharded design"
                .into(),
        );
    }
    let durability = Durability::open(dir, nr_shards).map_err(|e| e.to_string())?;
    info!(
        "data dir {} (--fsync {}), layout {}",
        dir.display(),
        format!("{:?}", args.fsync).to_lowercase(),
        durability.layout.path.display()
    );
    Ok(Some(Arc::new(durability)))
}

/// `--data-dir` as an absolute path, created if missing. glommio opens files relative to no
/// directory (`openat(-1, ..)`), so a relative path would fail every log write with EBADF.
fn absolute_data_dir(dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("--data-dir {}: {e}", dir.display()))?;
    std::fs::canonicalize(dir).map_err(|e| format!("--data-dir {}: {e}", dir.display()))
}

/// With `--peers --data-dir D`: takes D's lock (the one a lone `--data-dir` takes, naming the
/// holder's pid when it is taken), held until the server stops, so two processes never share
/// one Raft log.
fn lock_raft_dir(args: &ServeArgs) -> Result<Option<crate::storage::DataDir>, String> {
    match (&args.peers, &args.data_dir) {
        (Some(_), Some(dir)) => crate::storage::DataDir::lock(dir).map(Some).map_err(|e| e.to_string()),
        _ => Ok(None),
    }
}

/// `--auth-token-file`, read once at start (a bad file stops start-up).
fn load_tokens(args: &ServeArgs) -> Result<Option<Arc<Published>>, String> {
    let Some(path) = &args.auth_token_file else {
        return Ok(None);
    };
    let tokens = Tokens::load(path)?;
    if tokens.is_empty() {
        warn!(
            "--auth-token-file {}: no tokens: every guarded route answers 401",
            path.display()
        );
    }
    info!("access control on: {} tokens from {}", tokens.len(), path.display());
    Ok(Some(Published::new(tokens)))
}

/// SIGHUP: re-reads `--auth-token-file`; a bad file keeps the tokens in force.
fn reload_tokens(args: &ServeArgs, auth: Option<&Published>) {
    let (Some(path), Some(auth)) = (&args.auth_token_file, auth) else {
        return;
    };
    match Tokens::load(path) {
        Ok(tokens) => {
            info!("SIGHUP: {} tokens from {}", tokens.len(), path.display());
            auth.replace(tokens);
        }
        Err(message) => warn!("SIGHUP: {message}; the previous tokens stay in force"),
    }
}

/// The CPUs shards are pinned to: `--cpus`, which must lie in the affinity mask, or the mask.
fn shard_cpus(args: &ServeArgs) -> Result<Vec<usize>, String> {
    let allowed = affinity_cpus()?;
    match &args.cpus {
        Some(list) => {
            if let Some(cpu) = list.0.iter().find(|cpu| !allowed.contains(cpu)) {
                return Err(format!(
                    "--cpus: CPU {cpu} is not available to this process (allowed: {allowed:?})"
                ));
            }
            Ok(list.0.clone())
        }
        None => Ok(allowed),
    }
}

type ShardHandle = glommio::ExecutorJoinHandle<Result<(), String>>;

/// Starts one pinned executor per shard, joined by one mesh. Stops at the first that cannot
/// start, after opening `shutdown` so the ones already running stop too.
fn spawn_shards(
    args: &ServeArgs,
    cpus: &[usize],
    nr_shards: usize,
    latches: &Latches,
    durability: Option<Arc<Durability>>,
    auth: Option<&Arc<Published>>,
) -> Vec<ShardHandle> {
    let io_memory = io_memory_for(nr_shards);
    let mesh = MeshBuilder::<ShardMessage, _>::full(nr_shards, CHANNEL_DEPTH_MESSAGES);
    let locked = (args.design == Design::Locked).then(|| Arc::new(LockedStore::new(args.budget_for(0, 1))));
    let mut handles = Vec::with_capacity(nr_shards);
    for id in 0..nr_shards {
        let cpu = cpus[id % cpus.len()];
        let setup = ShardSetup {
            id,
            nr_shards,
            cpu,
            addr: args.addr,
            args: args.clone(),
            latches: latches.clone(),
            mesh: mesh.clone(),
            locked: locked.clone(),
            durability: durability.clone(),
            auth: auth.cloned(),
        };
        // The guard lives in the closure glommio runs on the new thread, so it also drops (and
        // the main thread learns of it) when glommio fails to build the executor before our
        // future ever runs.
        let exit = ExitGuard {
            latches: latches.clone(),
        };
        let spawned = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{id}"))
            .io_memory(io_memory)
            .spawn(move || {
                let exit = exit;
                async move {
                    let _exit = exit;
                    run_shard(setup).await
                }
            });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                latches.shutdown.count_down();
                // This shard's own count came from its guard, dropped with the closure.
                for _ in id + 1..nr_shards {
                    latches.exited.count_down();
                }
                error!("could not start shard {id} on CPU {cpu}: {e}");
                break;
            }
        }
    }
    handles
}

/// The main thread's watch until every shard has exited: announce readiness (once no other
/// server shares the port), turn SIGINT/SIGTERM into `shutdown` and SIGHUP into a reload of
/// `--auth-token-file`. Returns start-up failures.
fn supervise(
    args: &ServeArgs,
    cpus: &[usize],
    nr_shards: usize,
    latches: &Latches,
    mut reservation: Option<socket2::Socket>,
    signals: &mut ShutdownSignals,
    auth: Option<&Published>,
) -> Vec<String> {
    let mut announced = false;
    let mut failures = Vec::new();
    while !latches.exited.is_open() {
        if !announced && latches.ready.is_open() {
            // Every shard has bound the port now; the placeholder socket can go.
            reservation.take();
            announced = true;
            match refuse_if_in_use(args.addr, nr_shards) {
                Ok(()) => info!(
                    "listening on http://{} with {nr_shards} shards ({:?} design) on CPUs {cpus:?}",
                    args.addr, args.design
                ),
                Err(message) => {
                    failures.push(message);
                    latches.shutdown.count_down();
                }
            }
        }
        match signals.wait(SIGNAL_POLL_INTERVAL) {
            Some(Received::Shutdown(signal)) => {
                if !latches.shutdown.is_open() {
                    info!("received {signal}: draining connections and stopping");
                }
                latches.shutdown.count_down();
            }
            Some(Received::Reload) => reload_tokens(args, auth),
            None => {}
        }
    }
    failures
}

/// What a shard's thread needs to start.
struct ShardSetup {
    id: ShardId,
    nr_shards: usize,
    cpu: usize,
    addr: SocketAddr,
    args: ServeArgs,
    latches: Latches,
    mesh: MeshBuilder<ShardMessage, glommio::channels::channel_mesh::Full>,
    locked: Option<Arc<LockedStore>>,
    /// The data dir (`--data-dir`), shared by every shard.
    durability: Option<Arc<Durability>>,
    /// With `--auth-token-file`: the table the main thread publishes.
    auth: Option<Arc<Published>>,
}

/// One shard's life: bind, join the mesh, recover its keys (`--data-dir`), load its part of
/// `--load`, serve until shutdown, drain, leave the mesh, close its log.
async fn run_shard(setup: ShardSetup) -> Result<(), String> {
    let ShardSetup {
        id,
        nr_shards,
        cpu,
        addr,
        args,
        latches,
        mesh,
        locked,
        durability,
        auth,
    } = setup;
    let listener = Listener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    // glommio's shared channels wake a sleeping executor through an eventfd, and a wake-up that
    // races the executor going to sleep can be lost: seen here as 1 start in 24 hanging in the
    // mesh handshake, both executors asleep. A timer that keeps the executor waking while it
    // joins makes it look at its channels again; it is dropped (cancelled) once joined.
    let ticker = glommio::spawn_local(async {
        loop {
            glommio::timer::sleep(MESH_JOIN_TICK).await;
        }
    });
    let joined = future::or(async { Some(mesh.join().await) }, async {
        latches.shutdown.wait().await;
        None
    })
    .await;
    drop(ticker);
    let Some(Ok((senders, mut receivers))) = joined else {
        return Err("stopped before every shard joined the mesh".into());
    };
    let replication = match (&args.peers, args.node_id) {
        (Some(_), _) if args.design == Design::Locked => {
            return Err("--peers replicates the sharded design only (not --design locked)".into());
        }
        (Some(peers), Some(node_id)) => {
            let durable = match &args.data_dir {
                Some(dir) => Some(crate::replication::log::RaftLog::open(dir, id).await?),
                None => None,
            };
            Some(crate::replication::Group::new(id, nr_shards, node_id, peers, durable)?)
        }
        _ => None,
    };
    let store = match locked {
        Some(store) => StoreHandle::Locked(store),
        None => {
            let mut store = Store::new(args.budget_for(id, nr_shards));
            // In cluster mode the Raft log decides expiry, eviction and accounting.
            store.set_replicated(replication.is_some());
            StoreHandle::Owned(RefCell::new(store))
        }
    };
    let shard = Rc::new(ShardContext {
        id,
        nr_shards,
        cpu,
        args,
        store,
        router: Router::new(senders),
        latches: latches.clone(),
        counters: Counters::default(),
        log: RefCell::new(None),
        recovered: RefCell::default(),
        auth: auth.map(ShardTokens::new),
        index: Default::default(),
        watch: Default::default(),
        txn: Default::default(),
        replication,
    });
    let peer_tasks: Vec<_> = receivers
        .streams()
        .into_iter()
        .map(|(_peer, receiver)| {
            let shard = Rc::clone(&shard);
            glommio::spawn_local(async move { serve_peer(receiver, &shard).await })
        })
        .collect();
    if let Some(path) = shard.args.load.clone()
        && (shard.args.design == Design::Sharded || id == 0)
    {
        if let Some(durability) = &durability {
            durability::recover_shard(&shard, durability).await?;
        }
        let loader = crate::load::Loader::new(&shard.args, id == 0);
        loader.load(&shard.store, |key| shard.owner(key) == id, &path).await?;
        if durability.is_some() {
            // Loaded keys bypass the log: a snapshot before ready makes them durable, so a
            // restart without --load keeps them.
            durability::snapshot_now(&shard).await?;
        }
    } else if let Some(durability) = &durability {
        durability::recover_shard(&shard, durability).await?;
    }
    if let Some(durability) = &durability {
        glommio::spawn_local(durability::snapshot_forever(Rc::clone(&shard), Arc::clone(durability))).detach();
    }
    if let Some(group) = &shard.replication {
        // The raft snapshot from --data-dir, before the shard serves (its log tail replays later).
        group.restore_recovered(&shard)?;
    }
    shard.start_change_tracking();
    if shard.args.design == Design::Sharded || id == 0 {
        glommio::spawn_local(expire_forever(Rc::clone(&shard))).detach();
    }
    if shard.replication.is_some() {
        glommio::spawn_local(crate::replication::run(Rc::clone(&shard))).detach();
    }
    let registry = Rc::new(Registry::default());
    glommio::spawn_local(Rc::clone(&registry).sweep_forever()).detach();
    latches.ready.count_down();
    debug!("shard {id} serving on CPU {cpu}");

    accept_until_shutdown(&listener, &shard, &registry).await;
    drop(listener);
    drain(&shard, &registry).await;
    shard.router.close();
    for task in peer_tasks {
        task.await;
    }
    durability::close(&shard).await;
    debug!("shard {id} stopped");
    Ok(())
}

/// Reclaims expired keys every `EXPIRY_TICK_MS`, in bounded steps so requests never wait long.
async fn expire_forever(shard: Rc<ShardContext>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(EXPIRY_TICK_MS)).await;
        while shard.expire(EXPIRY_KEYS_PER_STEP_MAX) == EXPIRY_KEYS_PER_STEP_MAX {
            futures_lite::future::yield_now().await;
        }
        shard.store.after_expiry_tick();
    }
}

/// Accepts connections until shutdown: each is served, or refused with 503 past
/// `--max-connections`. Out of file descriptors, it answers waiting clients with 503 through
/// its reserve descriptor rather than leaving them unanswered.
async fn accept_until_shutdown(listener: &Listener, shard: &Rc<ShardContext>, registry: &Rc<Registry>) {
    let limit = shard.args.connections_per_shard_max as usize;
    let mut reserve = ReserveFd::open();
    let mut out_of_fds = Vec::new();
    let why = Error::Unavailable("the server is out of file descriptors (RLIMIT_NOFILE); try again later");
    crate::http::response::error(&mut out_of_fds, &why, false);
    loop {
        let accepted = future::or(async { Some(listener.glommio().accept().await) }, async {
            shard.latches.shutdown.wait().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                if registry.len() >= limit {
                    glommio::spawn_local(crate::http::conn::refuse(stream, limit)).detach();
                } else {
                    let serve = crate::http::conn::serve(stream, Rc::clone(shard), Rc::clone(registry));
                    glommio::spawn_local(serve).detach();
                }
            }
            Some(Err(e)) if os::is_fd_exhaustion(e.raw_os_error()) => {
                let answered = reserve.refuse_waiting(listener, &out_of_fds, FD_EXHAUSTION_REFUSALS_PER_PASS_MAX);
                warn_limited!(
                    "shard {}: accept failed: {e}; answered {answered} waiting connections with 503 \
                     (raise `ulimit -n` or lower --max-connections)",
                    shard.id
                );
                glommio::timer::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
            Some(Err(e)) => {
                warn_limited!("shard {}: accept failed: {e}", shard.id);
                glommio::timer::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// Lets connections finish the requests they have begun, for at most `--shutdown-grace-ms`:
/// idle ones close at once; one whose request head has arrived reads its body, answers with
/// `Connection: close`, and closes.
async fn drain(shard: &ShardContext, registry: &Registry) {
    registry.stop_reading_idle();
    let grace = Duration::from_millis(shard.args.shutdown_grace_ms);
    let deadline = Instant::now().checked_add(grace).unwrap_or_else(Instant::now);
    while !registry.is_empty() && Instant::now() < deadline {
        glommio::timer::sleep(DRAIN_POLL_INTERVAL).await;
        // Connections that finished a request since, or were accepted just before the
        // listener closed.
        registry.stop_reading_idle();
    }
    let left = registry.len();
    if left > 0 {
        warn!(
            "shard {}: {left} connections still open after the grace period; closing them",
            shard.id
        );
    }
}

/// Fails with a clear message where io_uring cannot be used, instead of glommio's misleading
/// "kernel should be at least 5.8" panic (Docker's default seccomp profile blocks io_uring).
fn preflight_io_uring() -> Result<(), String> {
    if std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").is_ok_and(|v| v.trim() == "2") {
        return Err(
            "io_uring is disabled on this machine (sysctl kernel.io_uring_disabled=2); \
                    corekv needs it: set kernel.io_uring_disabled=0"
                .into(),
        );
    }
    let Err(errno) = os::probe_io_uring() else {
        return Ok(());
    };
    Err(match errno.raw_os_error() {
        Some(libc::ENOSYS) => "io_uring is not available: the kernel lacks it (Linux 5.8 or later is needed)".into(),
        Some(libc::EPERM) => "io_uring is blocked (EPERM): a seccomp profile forbids it (Docker's default does) \
                              or kernel.io_uring_disabled restricts it. Run the container with a seccomp \
                              profile that allows io_uring_setup/io_uring_enter/io_uring_register \
                              (e.g. --security-opt seccomp=unconfined)"
            .into(),
        _ => format!("io_uring could not be set up: {errno} (check RLIMIT_MEMLOCK and the kernel)"),
    })
}

/// The CPUs in this process's affinity mask (respects taskset, cgroups and containers).
fn affinity_cpus() -> Result<Vec<usize>, String> {
    let cores = core_affinity::get_core_ids().ok_or("cannot read the process's CPU affinity mask")?;
    let cpus: Vec<usize> = cores.into_iter().map(|core| core.id).collect();
    if cpus.is_empty() {
        return Err("the process's CPU affinity mask is empty".into());
    }
    Ok(cpus)
}

/// io_uring buffer memory per executor, sized to fit RLIMIT_MEMLOCK: glommio registers it with
/// each of its three rings, and registrations count against the limit for unprivileged users.
fn io_memory_for(nr_shards: usize) -> usize {
    let Some(limit_bytes) = os::memlock_limit_bytes() else {
        return IO_MEMORY_BYTES_PER_SHARD;
    };
    let share = (usize::try_from(limit_bytes).unwrap_or(usize::MAX) / (3 * nr_shards + 1)) & !4095;
    if share < IO_MEMORY_BYTES_MIN {
        warn!(
            "RLIMIT_MEMLOCK is {} KiB: too small for registered io_uring buffers for {nr_shards} shards; \
             running without them (raise it with `ulimit -l` or --ulimit memlock)",
            limit_bytes / 1024
        );
        return IO_MEMORY_BYTES_MIN;
    }
    share.min(IO_MEMORY_BYTES_PER_SHARD)
}

/// For port 0, binds a SO_REUSEPORT placeholder socket so every shard can bind the same
/// kernel-chosen port ([`os::reserve_port`]); it is dropped once all shards listen.
fn reserve_port(addr: SocketAddr) -> Result<(SocketAddr, Option<socket2::Socket>), String> {
    os::reserve_port(addr).map_err(|e| format!("cannot reserve a port on {addr}: {e}"))
}

/// Fails when sockets other than this process's `own` listeners take connections for `addr`.
///
/// Every shard binds with SO_REUSEPORT, which would let a second server on the same port (same
/// user) start silently and take half the connections, so the kernel's own bind check cannot
/// catch it. A probe socket bound without SO_REUSEPORT cannot either: it also collides with the
/// TIME_WAIT remains of this port's last run, so restarts would fail for a minute. Instead the
/// listening sockets of the network namespace are counted (`/proc/net/tcp{,6}`): before the
/// shards bind (`own` = 0: any listener means the port is taken), and again once they all
/// listen (`own` = shards). For port 0 the kernel chose a port no socket used, so both checks
/// pass unless someone binds it on purpose.
///
/// Residual window: two servers started at the same moment both pass the first check; the
/// second check then sees both, and whichever checks after the other bound fails (both may),
/// so the two never share the port unnoticed. Without `/proc` the checks are skipped.
fn refuse_if_in_use(addr: SocketAddr, own: usize) -> Result<(), String> {
    match os::listeners_on(addr) {
        Ok(listening) if listening > own => Err(format!(
            "cannot listen on {addr}: address {addr} is already in use (another process listens on it)"
        )),
        Ok(_) => Ok(()),
        Err(e) => {
            warn!("cannot check whether another process listens on {addr}: {e}");
            Ok(())
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, and warns once when `--max-connections`
/// on every shard, plus what shards and the process need besides, would not fit in it.
fn check_fd_limit(nr_shards: usize, connections_per_shard_max: u32) {
    let limit = match os::raise_nofile_limit() {
        Ok(limit) => limit,
        Err(e) => {
            warn!("cannot read or raise RLIMIT_NOFILE: {e}");
            return;
        }
    };
    let shards = nr_shards as u64;
    let needed = shards * (u64::from(connections_per_shard_max) + FDS_PER_SHARD_HEADROOM) + FDS_PER_PROCESS_HEADROOM;
    if needed > limit {
        warn!(
            "RLIMIT_NOFILE is {limit} file descriptors, but {nr_shards} shards x --max-connections \
             {connections_per_shard_max} need about {needed}: past the limit, new connections get 503 \
             (raise `ulimit -n` or lower --max-connections)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_refused_and_own_listeners_are_not() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let refused = refuse_if_in_use(addr, 0).unwrap_err();
        assert!(
            refused.contains(&format!("address {addr} is already in use")),
            "{refused}"
        );
        assert_eq!(refuse_if_in_use(addr, 1), Ok(()));
        drop(taken);
        assert_eq!(refuse_if_in_use(addr, 0), Ok(()));
    }

    #[test]
    fn io_memory_fits_the_memlock_limit() {
        let per_shard = io_memory_for(2);
        assert!((IO_MEMORY_BYTES_MIN..=IO_MEMORY_BYTES_PER_SHARD).contains(&per_shard));
        assert_eq!(per_shard % 4096, 0);
    }
}
