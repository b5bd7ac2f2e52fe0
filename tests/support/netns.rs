//! Named network namespaces that delete themselves.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

use super::sys;

/// Serialises `ip netns add/del` within the test binary: the first `add`
/// sets up the /run/netns mount point, and concurrent first-time setups can
/// stack bind mounts that hide each other's namespaces.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// A network namespace created with `ip netns add` (so it is visible to
/// `ip netns exec` and as `/run/netns/<name>`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace whose name contains `tag`, unique across parallel
    /// tests and concurrently running test binaries. Loopback is left down;
    /// see [`Netns::loopback_up`].
    pub fn new(tag: &str) -> Netns {
        Netns::try_new(tag).unwrap_or_else(|e| panic!("creating netns for `{tag}`: {e}"))
    }

    /// Fallible [`Netns::new`], used to probe for namespace support.
    pub fn try_new(tag: &str) -> Result<Netns, String> {
        let name = unique_name(tag);
        let output = {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            Command::new("ip").args(["netns", "add", &name]).output()
        };
        let output = output.map_err(|e| format!("running `ip netns add {name}`: {e}"))?;
        if !output.status.success() {
            return Err(describe("ip netns add", &[name.as_str()], &output));
        }
        Ok(Netns { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, e.g. for `--network-namespace`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip netns exec <name> <program>`; add arguments, stdin, env as needed.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `program args...` inside the namespace as root and returns its
    /// output whatever the exit status.
    pub fn exec<I, S>(&self, program: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.exec_with_stdin(program, args, "")
    }

    /// Like [`Netns::exec`], feeding `stdin` to the program.
    pub fn exec_with_stdin<I, S>(&self, program: &str, args: I, stdin: &str) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command(program);
        command.args(args);
        run_with_stdin(&mut command, stdin).unwrap_or_else(|e| panic!("running {command:?} in {}: {e}", self.name))
    }

    /// Runs a command that must succeed and returns its stdout; on failure
    /// panics with the command, status, stdout and stderr.
    pub fn exec_ok<I, S>(&self, program: &str, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let output = self.exec(program, &args);
        if !output.status.success() {
            let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
            panic!("in netns {}: {}", self.name, describe(program, &args, &output));
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A command that runs directly inside the namespace as `uid`/`gid`
    /// (no supplementary groups), e.g. a third-party client that must be
    /// seen by `-m owner`. Unlike [`Netns::command`] there is no `ip`
    /// wrapper, so the mount namespace is the host's.
    pub fn command_as(&self, uid: u32, gid: u32, program: impl AsRef<OsStr>) -> Command {
        let netns = self.open();
        let mut command = Command::new(program);
        // SAFETY: the hook only issues raw syscalls (setns, set*id), which
        // are async-signal-safe, and touches no locks or allocations.
        unsafe {
            command.pre_exec(move || {
                sys::enter_netns(netns.as_fd())?;
                sys::become_user_on_this_thread(uid, gid)
            });
        }
        command
    }

    /// Sets a `net.*` sysctl inside the namespace. /proc/sys/net resolves
    /// against the namespace of the thread opening it, so no `sysctl`
    /// program (procps) is needed.
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        self.run(|| fs::write(&path, value)).unwrap_or_else(|e| panic!("setting {key}={value} in {}: {e}", self.name));
    }

    /// Brings `lo` up; many kernel paths (REDIRECT to 127.0.0.1, TPROXY's
    /// `local default dev lo` route) silently fail with it down.
    pub fn loopback_up(&self) {
        self.exec_ok("ip", ["link", "set", "lo", "up"]);
    }

    /// Runs `f` on a fresh thread that has entered the namespace and returns
    /// its result. Sockets created by `f` stay in this namespace even when
    /// used from other threads afterwards.
    pub fn run<T, F>(&self, f: F) -> T
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        self.run_on_thread(None, f)
    }

    /// Like [`Netns::run`], but the thread first drops to `uid`/`gid`, so
    /// sockets `f` creates are owned by that user. Other threads of the
    /// test binary keep running as root.
    pub fn run_as<T, F>(&self, uid: u32, gid: u32, f: F) -> T
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        self.run_on_thread(Some((uid, gid)), f)
    }

    fn run_on_thread<T, F>(&self, user: Option<(u32, u32)>, f: F) -> T
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let netns = self.open();
        thread::scope(|scope| {
            let worker = scope.spawn(move || {
                sys::enter_netns(netns.as_fd()).unwrap_or_else(|e| panic!("setns into {}: {e}", self.name));
                if let Some((uid, gid)) = user {
                    sys::become_user_on_this_thread(uid, gid)
                        .unwrap_or_else(|e| panic!("switching thread to {uid}:{gid}: {e}"));
                }
                f()
            });
            worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn open(&self) -> OwnedFd {
        File::open(self.path()).unwrap_or_else(|e| panic!("opening {}: {e}", self.path().display())).into()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let deleted = Command::new("ip").args(["netns", "del", &self.name]).stdin(Stdio::null()).output();
        match deleted {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!("warning: {}", describe("ip netns del", &[self.name.as_str()], &output)),
            Err(e) => eprintln!("warning: running `ip netns del {}`: {e}", self.name),
        }
    }
}

/// `iit-<tag>-<pid>-<n>`: the pid separates concurrently running test
/// binaries, the counter separates tests within one binary.
fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let tag: String =
        tag.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(24).collect();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("iit-{tag}-{}-{n}", std::process::id())
}

fn run_with_stdin(command: &mut Command, stdin: &str) -> io::Result<Output> {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    // Feed stdin from another thread so a chatty program cannot deadlock
    // us on a full stdout pipe. Write errors (EPIPE when the program exits
    // early) surface through its exit status instead.
    let pipe = child.stdin.take();
    let input = stdin.to_owned();
    let writer = thread::spawn(move || {
        if let Some(mut pipe) = pipe {
            let _ = pipe.write_all(input.as_bytes());
        }
    });
    let output = child.wait_with_output();
    let _ = writer.join();
    output
}

/// Human-readable account of a finished command, for panic messages.
pub(crate) fn describe<S: AsRef<OsStr>>(program: &str, args: &[S], output: &Output) -> String {
    let mut text = format!("`{program}");
    for arg in args {
        let _ = write!(text, " {}", arg.as_ref().to_string_lossy());
    }
    let _ = write!(
        text,
        "` failed ({})\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    text
}
