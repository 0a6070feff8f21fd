//! Start-up checks against the real binary: a blocked io_uring (as under Docker's default
//! seccomp profile) and bad CPU lists fail at once with a message naming the cause and the fix.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

/// `io_uring_setup`'s syscall number: 425 on every architecture (the unified syscall table).
const SYS_IO_URING_SETUP: u32 = 425;

/// Installs a seccomp filter in the child that fails `io_uring_setup` with EPERM and allows
/// everything else: what Docker's default profile does to io_uring.
fn block_io_uring(command: &mut Command) {
    // SAFETY: runs in the forked child before exec; prctl only changes this process's own
    // seccomp state and reads the filter, which lives on this stack frame until prctl returns.
    unsafe {
        command.pre_exec(|| {
            use libc::{
                BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO,
            };
            const LOAD_SYSCALL_NR: u16 = (BPF_LD | BPF_W | BPF_ABS) as u16;
            const JUMP_IF_EQUAL: u16 = (BPF_JMP | BPF_JEQ | BPF_K) as u16;
            const RETURN: u16 = (BPF_RET | BPF_K) as u16;
            let filter = [
                libc::sock_filter {
                    code: LOAD_SYSCALL_NR,
                    jt: 0,
                    jf: 0,
                    k: 0,
                }, // seccomp_data.nr
                libc::sock_filter {
                    code: JUMP_IF_EQUAL,
                    jt: 0,
                    jf: 1,
                    k: SYS_IO_URING_SETUP,
                },
                libc::sock_filter {
                    code: RETURN,
                    jt: 0,
                    jf: 0,
                    k: SECCOMP_RET_ERRNO | libc::EPERM as u32,
                },
                libc::sock_filter {
                    code: RETURN,
                    jt: 0,
                    jf: 0,
                    k: SECCOMP_RET_ALLOW,
                },
            ];
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut _,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program as *const _) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn serve(extra: &[&str], blocked: bool) -> Output {
    let mut command = Command::new(common::binary());
    command
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(extra)
        .stdin(Stdio::null());
    if blocked {
        block_io_uring(&mut command);
    }
    command.output().expect("run corekv")
}

// Goal: with io_uring blocked by seccomp, corekv exits 1 at once naming seccomp and the fix,
// instead of glommio's panic about the kernel being older than 5.8.
#[test]
fn blocked_io_uring_is_reported_with_its_cause_and_fix() {
    let output = serve(&["--shards", "2"], true);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("io_uring is blocked (EPERM)"), "{stderr}");
    assert!(stderr.contains("seccomp"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.contains("Romulus"),
        "glommio's misleading panic leaked: {stderr}"
    );
}

// Goal: CPUs outside the process's affinity mask are refused with the allowed list.
#[test]
fn cpus_outside_the_affinity_mask_are_refused() {
    let output = serve(&["--cpus", "4095"], false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CPU 4095 is not available to this process"), "{stderr}");
    let output = serve(&["--cpus", "3-1"], false);
    assert_eq!(output.status.code(), Some(2), "a malformed list is a usage error");
}

// Goal: a port already in use fails start-up with the address in the message.
#[test]
fn a_port_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = format!("127.0.0.1:{}", taken.local_addr().unwrap().port());
    let output = Command::new(common::binary())
        .args(["serve", "--addr", &busy, "--shards", "2"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {busy}")), "{stderr}");
}
