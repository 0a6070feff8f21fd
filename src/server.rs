//! Start-up and shutdown: pre-flight checks, one pinned glommio executor per shard, the
//! channel mesh between them, listeners, readiness and a graceful stop on SIGTERM/SIGINT.
//!
//! Owns threads, CPUs and signals. It never parses HTTP and never touches a store's contents;
//! each shard's work is in [`run_shard`], which hands connections to [`crate::http::conn`].

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use log::{debug, error, info, warn};

use crate::config::{Design, ServeArgs};
use crate::http::registry::Registry;
use crate::limits::{
    CHANNEL_DEPTH_MESSAGES, EXPIRY_KEYS_PER_STEP_MAX, EXPIRY_TICK_MS, IO_MEMORY_BYTES_MIN, IO_MEMORY_BYTES_PER_SHARD,
};
use crate::shard::context::{Counters, Latches, ShardContext};
use crate::shard::locked::LockedStore;
use crate::shard::message::ShardMessage;
use crate::shard::router::{Router, serve_peer};
use crate::shard::store::Store;
use crate::shard::{ShardId, StoreHandle};

/// How often a draining shard checks whether its connections have finished.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(5);
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
pub fn run(args: ServeArgs) -> Result<(), String> {
    preflight_io_uring()?;
    let allowed = affinity_cpus()?;
    let cpus = match &args.cpus {
        Some(list) => {
            if let Some(cpu) = list.0.iter().find(|cpu| !allowed.contains(cpu)) {
                return Err(format!(
                    "--cpus: CPU {cpu} is not available to this process (allowed: {allowed:?})"
                ));
            }
            list.0.clone()
        }
        None => allowed,
    };
    let nr_shards = args.shards.map_or(cpus.len(), usize::from);
    if nr_shards > cpus.len() {
        warn!(
            "{nr_shards} shards on {} CPUs: shards share CPUs round-robin",
            cpus.len()
        );
    }
    let io_memory = io_memory_for(nr_shards);
    let (addr, reservation) = reserve_port(args.addr)?;
    block_shutdown_signals();

    let latches = Latches::new(nr_shards);
    let mesh = MeshBuilder::<ShardMessage, _>::full(nr_shards, CHANNEL_DEPTH_MESSAGES);
    let locked = (args.design == Design::Locked).then(|| Arc::new(LockedStore::new(args.budget_for(0, 1))));
    let mut handles = Vec::with_capacity(nr_shards);
    for id in 0..nr_shards {
        let cpu = cpus[id % cpus.len()];
        let setup = ShardSetup {
            id,
            nr_shards,
            cpu,
            addr,
            args: ServeArgs { addr, ..args.clone() },
            latches: latches.clone(),
            mesh: mesh.clone(),
            locked: locked.clone(),
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

    let mut reservation = reservation;
    let mut announced = false;
    while !latches.exited.is_open() {
        if !announced && latches.ready.is_open() {
            info!(
                "listening on http://{addr} with {nr_shards} shards ({:?} design) on CPUs {cpus:?}",
                args.design
            );
            // Every shard has bound the port now; the placeholder socket can go.
            reservation.take();
            announced = true;
        }
        if let Some(signal) = wait_for_signal(SIGNAL_POLL_INTERVAL) {
            if !latches.shutdown.is_open() {
                info!("received {signal}: draining connections and stopping");
            }
            latches.shutdown.count_down();
        }
    }

    let mut failures = Vec::new();
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
}

/// One shard's life: bind, join the mesh, load its part of `--load`, serve until shutdown,
/// drain, leave the mesh.
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
    } = setup;
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let joined = future::or(async { Some(mesh.join().await) }, async {
        latches.shutdown.wait().await;
        None
    })
    .await;
    let Some(Ok((senders, mut receivers))) = joined else {
        return Err("stopped before every shard joined the mesh".into());
    };
    let store = match locked {
        Some(store) => StoreHandle::Locked(store),
        None => StoreHandle::Owned(RefCell::new(Store::new(args.budget_for(id, nr_shards)))),
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
        let loader = crate::load::Loader::new(&shard.args, id == 0);
        loader.load(&shard.store, |key| shard.owner(key) == id, &path).await?;
    }
    if shard.args.design == Design::Sharded || id == 0 {
        glommio::spawn_local(expire_forever(Rc::clone(&shard))).detach();
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
    debug!("shard {id} stopped");
    Ok(())
}

/// Reclaims expired keys every `EXPIRY_TICK_MS`, in bounded steps so requests never wait long.
async fn expire_forever(shard: Rc<ShardContext>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(EXPIRY_TICK_MS)).await;
        while shard.store.expire(EXPIRY_KEYS_PER_STEP_MAX) == EXPIRY_KEYS_PER_STEP_MAX {
            futures_lite::future::yield_now().await;
        }
        shard.store.after_expiry_tick();
    }
}

async fn accept_until_shutdown(listener: &TcpListener, shard: &Rc<ShardContext>, registry: &Rc<Registry>) {
    let limit = shard.args.connections_per_shard_max as usize;
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
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
            Some(Err(e)) => {
                warn!("accept failed: {e}");
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
    let deadline = Instant::now() + Duration::from_millis(shard.args.shutdown_grace_ms);
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
    // io_uring_params is 120 bytes on every Linux ABI; zeroed asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes only `params`, which is large enough.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: the syscall just returned this fd to us; nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        return Ok(());
    }
    let errno = std::io::Error::last_os_error();
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
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return IO_MEMORY_BYTES_PER_SHARD;
    }
    let share = (limit.rlim_cur as usize / (3 * nr_shards + 1)) & !4095;
    if share < IO_MEMORY_BYTES_MIN {
        warn!(
            "RLIMIT_MEMLOCK is {} KiB: too small for registered io_uring buffers for {nr_shards} shards; \
             running without them (raise it with `ulimit -l` or --ulimit memlock)",
            limit.rlim_cur / 1024
        );
        return IO_MEMORY_BYTES_MIN;
    }
    share.min(IO_MEMORY_BYTES_PER_SHARD)
}

/// For port 0, binds a SO_REUSEPORT placeholder socket so every shard can bind the same
/// kernel-chosen port; it is dropped once all shards listen.
fn reserve_port(addr: SocketAddr) -> Result<(SocketAddr, Option<OwnedFd>), String> {
    if addr.port() != 0 {
        return Ok((addr, None));
    }
    let fail = |what: &str| {
        format!(
            "cannot reserve a port on {addr}: {what}: {}",
            std::io::Error::last_os_error()
        )
    };
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(fail("socket"));
    }
    // SAFETY: fd was just created by us.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: valid fd, and a pointer to an int of the size passed.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            4,
        )
    };
    if set != 0 {
        return Err(fail("SO_REUSEPORT"));
    }
    let (storage, len) = socket_addr_to_raw(addr);
    // SAFETY: storage holds a sockaddr of `len` bytes for this family.
    if unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(fail("bind"));
    }
    let mut bound: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut bound_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname writes at most bound_len bytes into bound.
    if unsafe { libc::getsockname(fd, (&mut bound as *mut libc::sockaddr_storage).cast(), &mut bound_len) } != 0 {
        return Err(fail("getsockname"));
    }
    // Both sockaddr_in and sockaddr_in6 keep the port at the same offset, in network order.
    // SAFETY: the kernel filled a sockaddr_in/in6, both at least 4 bytes long.
    let port =
        u16::from_be(unsafe { (*(&bound as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()).sin_port });
    Ok((SocketAddr::new(addr.ip(), port), Some(socket)))
}

fn socket_addr_to_raw(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let raw = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), raw) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let raw = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and suitably aligned.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), raw) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn shutdown_signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in this thread before the shards start, so every shard thread
/// inherits the mask and only [`wait_for_signal`] on the main thread ever sees them.
fn block_shutdown_signals() {
    let set = shutdown_signal_set();
    // SAFETY: changes only this thread's signal mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits up to `timeout` for SIGINT or SIGTERM; returns its name when one arrived.
fn wait_for_signal(timeout: Duration) -> Option<&'static str> {
    let set = shutdown_signal_set();
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // SAFETY: sigtimedwait reads the set and timeout we own; no siginfo is requested.
    match unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) } {
        libc::SIGINT => Some("SIGINT"),
        libc::SIGTERM => Some("SIGTERM"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_is_reserved_and_shareable() {
        let (addr, socket) = reserve_port("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(addr.port(), 0);
        assert!(socket.is_some());
        let (same, none) = reserve_port(addr).unwrap();
        assert_eq!((same, none.is_none()), (addr, true));
    }

    #[test]
    fn io_memory_fits_the_memlock_limit() {
        let per_shard = io_memory_for(2);
        assert!((IO_MEMORY_BYTES_MIN..=IO_MEMORY_BYTES_PER_SHARD).contains(&per_shard));
        assert_eq!(per_shard % 4096, 0);
    }
}
