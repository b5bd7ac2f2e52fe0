//! One run at a time per network namespace.
//!
//! Two runs against the same pod (an init container and a rerun, or a CNI plugin on the host)
//! that interleave their read-state → restore → rollback steps can wipe or duplicate each
//! other's rules. Upstream serializes only runs that share a filesystem (an xtables lock file).
//! The lock here lives in the target network namespace itself: an abstract unix socket named
//! [`LOCK_NAME`], bound in that namespace. Abstract socket names are per network namespace, so
//! runs in different namespaces never contend, every process that can program the namespace
//! can see the lock whatever its mount namespace, and the kernel releases it when its holder
//! exits or is killed: no stale lock file survives a SIGKILL.

use std::io::ErrorKind;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The abstract socket name (shown by `ss -xa` as `@istio-iptables.lock`).
pub const LOCK_NAME: &str = "istio-iptables.lock";

/// How a person lengthens the wait, for messages.
const LOCK_TIMEOUT_SETTING: &str = "--lock-timeout or ISTIO_IPTABLES_LOCK_TIMEOUT";

/// How long a run waits for another run in the same namespace to finish. A run takes well under
/// a second normally and each program it runs has its own deadline; 30 s covers a slow run
/// without leaving a pod in `Init` for long behind a wedged one.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

const FIRST_RETRY: Duration = Duration::from_millis(5);
const LONGEST_RETRY: Duration = Duration::from_millis(200);

/// The held lock; dropping it (or the process ending in any way) releases it.
#[derive(Debug)]
pub struct NetnsLock {
    socket: UnixDatagram,
}

/// Takes the lock of the network namespace the calling thread is in, waiting up to `timeout`
/// for a current holder to finish. `namespace` names the namespace in messages (the
/// `--network-namespace` path, or empty for the one the tool was started in).
pub fn acquire(namespace: &str, timeout: Duration) -> Result<NetnsLock> {
    let address =
        SocketAddr::from_abstract_name(LOCK_NAME).map_err(|source| Error::LockAddress { name: LOCK_NAME, source })?;
    let started = Instant::now();
    let mut retry = FIRST_RETRY;
    let mut logged = false;
    loop {
        match UnixDatagram::bind_addr(&address) {
            Ok(socket) => {
                if logged {
                    tracing::info!("took the lock of {} after {:?}", describe(namespace), started.elapsed());
                }
                return Ok(NetnsLock { socket });
            }
            Err(e) if e.kind() == ErrorKind::AddrInUse => {}
            Err(e) => return Err(Error::LockBind { name: LOCK_NAME, namespace: describe(namespace), source: e }),
        }
        let waited = started.elapsed();
        if waited >= timeout {
            let holder = holder().unwrap_or_else(|| "another run".to_string());
            return Err(Error::LockTimeout {
                holder,
                name: LOCK_NAME,
                namespace: describe(namespace),
                waited: crate::gocompat::format_go_duration(timeout),
                env: LOCK_TIMEOUT_SETTING,
            });
        }
        if !logged {
            tracing::info!("waiting for another run to release the lock of {}", describe(namespace));
            logged = true;
        }
        std::thread::sleep(retry.min(timeout - waited));
        retry = (retry * 2).min(LONGEST_RETRY);
    }
}

/// "network namespace /var/run/netns/pod (net:[4026532…])": the path the user gave and the
/// kernel's identity for it, which is what `lsns`/`ip netns identify` show.
fn describe(namespace: &str) -> String {
    let identity = std::fs::read_link("/proc/thread-self/ns/net").map(|p| p.display().to_string()).ok();
    match (namespace.is_empty(), identity) {
        (false, Some(id)) => format!("network namespace {namespace} ({id})"),
        (false, None) => format!("network namespace {namespace}"),
        (true, Some(id)) => format!("the current network namespace ({id})"),
        (true, None) => "the current network namespace".to_string(),
    }
}

/// "pid 1234 (istio-iptables)": the process holding the lock, when this one can see it. The
/// socket's inode comes from this namespace's `/proc/…/net/unix`; the holder is whoever has a
/// descriptor on it. A holder in another pid namespace (another container of the pod) or hidden
/// by `/proc` permissions is not found, and the message falls back to "another run".
fn holder() -> Option<String> {
    let table = std::fs::read_to_string("/proc/thread-self/net/unix").ok()?;
    let path = format!("@{LOCK_NAME}");
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(7) == Some(&path.as_str())).then(|| fields.get(6).map(|inode| inode.to_string())).flatten()
    })?;
    let target = format!("socket:[{inode}]");
    for process in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = process.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else { continue };
        let holds =
            fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == &*target));
        if holds {
            let command = std::fs::read_to_string(process.path().join("comm")).unwrap_or_default();
            return Some(format!("pid {pid} ({})", command.trim()));
        }
    }
    None
}

impl From<NetnsLock> for std::os::fd::OwnedFd {
    /// Hands the held lock to someone else (e.g. a child process's stdin): it stays held as long
    /// as any copy of the descriptor is open.
    fn from(lock: NetnsLock) -> Self {
        lock.socket.into()
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use nix::sched::{unshare, CloneFlags};

    use super::*;

    /// Runs `body` on a thread of its own, in a fresh network namespace (root only; the caller
    /// skips visibly otherwise).
    fn in_fresh_netns<T: Send>(body: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
                    body()
                })
                .join()
                .expect("netns thread panicked")
        })
    }

    fn root_or_skip(test: &str) -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            eprintln!("SKIPPED {test}: needs root for unshare(CLONE_NEWNET)");
        }
        root
    }

    #[test]
    fn a_second_run_in_the_same_namespace_waits_then_gives_up() {
        if !root_or_skip("a_second_run_in_the_same_namespace_waits_then_gives_up") {
            return;
        }
        in_fresh_netns(|| {
            let _held = acquire("/var/run/netns/pod", DEFAULT_LOCK_TIMEOUT).unwrap();
            let started = Instant::now();
            let err = acquire("/var/run/netns/pod", Duration::from_millis(300)).unwrap_err();
            let waited = started.elapsed();
            assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(2), "{waited:?}");
            assert_eq!(err.exit_code(), crate::error::exit_code::FAILURE);
            let text = err.to_string();
            assert!(text.contains("network namespace /var/run/netns/pod (net:["), "{text}");
            assert!(text.contains("gave up after 300ms"), "{text}");
            // The holder is this very process.
            assert!(text.starts_with(&format!("pid {} (", std::process::id())), "{text}");
        });
    }

    #[test]
    fn a_waiting_run_proceeds_once_the_holder_releases() {
        if !root_or_skip("a_waiting_run_proceeds_once_the_holder_releases") {
            return;
        }
        in_fresh_netns(|| {
            let held = acquire("", DEFAULT_LOCK_TIMEOUT).unwrap();
            std::thread::scope(|scope| {
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_millis(150));
                    drop(held);
                });
                // The waiter stays on this thread: only it is in the fresh namespace.
                let started = Instant::now();
                acquire("", Duration::from_secs(5)).unwrap();
                assert!(started.elapsed() >= Duration::from_millis(100));
            });
        });
    }

    #[test]
    fn the_kernel_releases_the_lock_when_its_holder_dies() {
        if !root_or_skip("the_kernel_releases_the_lock_when_its_holder_dies") {
            return;
        }
        in_fresh_netns(|| {
            // The lock handed to another process, which then holds it alone.
            let lock = acquire("", DEFAULT_LOCK_TIMEOUT).unwrap();
            let mut holder =
                Command::new("sleep").arg("30").stdin(Stdio::from(std::os::fd::OwnedFd::from(lock))).spawn().unwrap();
            let err = acquire("", Duration::from_millis(100)).expect_err("the holder process should hold it");
            assert!(err.to_string().starts_with(&format!("pid {} (sleep)", holder.id())), "{err}");
            holder.kill().unwrap();
            holder.wait().unwrap();
            acquire("", Duration::from_millis(500)).expect("released when its holder was killed");
        });
    }

    #[test]
    fn runs_in_different_namespaces_do_not_contend() {
        if !root_or_skip("runs_in_different_namespaces_do_not_contend") {
            return;
        }
        let first = in_fresh_netns(|| acquire("a", DEFAULT_LOCK_TIMEOUT).unwrap());
        // `first` is still held (its socket lives on in the first namespace).
        in_fresh_netns(|| {
            acquire("b", Duration::from_millis(50)).expect("another namespace has a lock of its own");
        });
        drop(first);
    }
}
