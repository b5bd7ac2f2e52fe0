//! Running the netfilter programs: what both backends need from a child process.
//!
//! Every program gets a deadline (`--command-timeout`, default [`DEFAULT_COMMAND_TIMEOUT`]): a restore that hangs (a stuck xtables
//! lock holder, a wedged kernel module load) would otherwise keep the pod in `Init` forever.
//! Past it the child is killed with SIGKILL, reaped, and the caller gets an error of kind
//! [`ErrorKind::TimedOut`] carrying a [`CommandTimedOut`].

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, ExitStatus, Output};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// How long one program may run. Generous: restoring a ruleset of tens of thousands of rules
/// takes seconds, not a minute, while a pod stuck in `Init` is noticed well before this.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The payload of the [`ErrorKind::TimedOut`] error a program past its deadline yields.
#[derive(Debug)]
pub struct CommandTimedOut {
    pub timeout: Duration,
    /// How the killed child ended (normally by SIGKILL).
    pub status: ExitStatus,
}

impl std::fmt::Display for CommandTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "did not finish within {} and was killed ({}; set --command-timeout or ISTIO_IPTABLES_COMMAND_TIMEOUT to allow longer)",
            crate::gocompat::format_go_duration(self.timeout),
            self.status
        )
    }
}

impl std::error::Error for CommandTimedOut {}

/// Writes `stdin` (if any) to a spawned child and collects its output, within `timeout`
/// (zero: [`DEFAULT_COMMAND_TIMEOUT`]). See [`feed_and_wait_with_deadline`].
pub(crate) fn feed_and_wait(child: Child, stdin: Option<&str>, timeout: Duration) -> std::io::Result<Output> {
    let timeout = if timeout.is_zero() { DEFAULT_COMMAND_TIMEOUT } else { timeout };
    feed_and_wait_with_deadline(child, stdin, timeout)
}

/// Writes `stdin` (if any) to a spawned child and collects its output; past `timeout` the child
/// is killed (SIGKILL), reaped, and a [`CommandTimedOut`] error returned.
///
/// One thread multiplexes the three pipes with poll(2), so a program that writes before it has
/// read everything cannot deadlock against us on full pipes, and nothing is left blocked in a
/// read or write after a kill (a grandchild still holding a pipe cannot stall us either). A write
/// error (the program exited early) is left to show in its exit status.
pub(crate) fn feed_and_wait_with_deadline(
    mut child: Child,
    stdin: Option<&str>,
    timeout: Duration,
) -> std::io::Result<Output> {
    let deadline = Instant::now() + timeout;
    let mut input = stdin.map(str::as_bytes).unwrap_or_default();
    let mut stdin_pipe = child.stdin.take();
    if input.is_empty() {
        stdin_pipe = None; // closed: the program sees end of input at once
    }
    let mut stdout_pipe = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());

    while stdin_pipe.is_some() || stdout_pipe.is_some() || stderr_pipe.is_some() {
        let Some(remaining) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
            return Err(kill_after_timeout(child, timeout));
        };
        // Capped so that a long deadline still fits poll's millisecond argument.
        let wait = PollTimeout::try_from(remaining.min(Duration::from_secs(10))).unwrap_or(PollTimeout::MAX);
        let (stdin_ready, stdout_ready, stderr_ready) = {
            let mut fds = Vec::with_capacity(3);
            let out = PollFlags::POLLIN;
            if let Some(pipe) = &stdin_pipe {
                fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLOUT));
            }
            if let Some(pipe) = &stdout_pipe {
                fds.push(PollFd::new(pipe.as_fd(), out));
            }
            if let Some(pipe) = &stderr_pipe {
                fds.push(PollFd::new(pipe.as_fd(), out));
            }
            match poll(&mut fds, wait) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let mut ready = fds.iter().map(|fd| fd.revents().is_some_and(|r| !r.is_empty()));
            (
                stdin_pipe.is_some() && ready.next().unwrap_or(false),
                stdout_pipe.is_some() && ready.next().unwrap_or(false),
                stderr_pipe.is_some() && ready.next().unwrap_or(false),
            )
        };
        if stdin_ready {
            if let Some(pipe) = &mut stdin_pipe {
                // With POLLOUT set, a pipe takes PIPE_BUF (4096) bytes without blocking.
                let chunk = &input[..input.len().min(4096)];
                match pipe.write(chunk) {
                    Ok(written) => input = &input[written..],
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => input = &[], // the reader is gone; its exit status tells why
                }
                if input.is_empty() {
                    stdin_pipe = None;
                }
            }
        }
        if stdout_ready && drain(&mut stdout_pipe, &mut stdout)? {
            stdout_pipe = None;
        }
        if stderr_ready && drain(&mut stderr_pipe, &mut stderr)? {
            stderr_pipe = None;
        }
    }

    // Both output pipes are closed: the program is exiting (or left a grandchild behind); reap it
    // within what is left of the deadline.
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Output { status, stdout, stderr });
        }
        if Instant::now() >= deadline {
            return Err(kill_after_timeout(child, timeout));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One read from a pipe poll reported ready; true once it reached end of file.
fn drain<R: Read>(pipe: &mut Option<R>, into: &mut Vec<u8>) -> std::io::Result<bool> {
    let Some(reader) = pipe else { return Ok(true) };
    let mut buffer = [0u8; 16 * 1024];
    match reader.read(&mut buffer) {
        Ok(0) => Ok(true),
        Ok(n) => {
            into.extend_from_slice(&buffer[..n]);
            Ok(false)
        }
        Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

fn kill_after_timeout(mut child: Child, timeout: Duration) -> std::io::Error {
    // kill fails only if the child was already reaped, which cannot have happened here.
    let _ = child.kill();
    match child.wait() {
        Ok(status) => std::io::Error::new(ErrorKind::TimedOut, CommandTimedOut { timeout, status }),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    fn spawn(program: &str, args: &[&str]) -> Child {
        Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_program_past_its_deadline_is_killed_and_reaped() {
        let child = spawn("sleep", &["10"]);
        let pid = child.id();
        let started = Instant::now();
        let err = feed_and_wait_with_deadline(child, None, Duration::from_millis(200)).unwrap_err();
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(3), "{elapsed:?}");
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        let timed_out = err.get_ref().and_then(|e| e.downcast_ref::<CommandTimedOut>()).unwrap();
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(timed_out.status.signal(), Some(9));
        assert!(err.to_string().contains("did not finish within 200ms"), "{err}");
        // Reaped: no zombie is left under that pid.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_program_that_closes_its_output_but_keeps_running_is_still_killed() {
        let child = spawn("sh", &["-c", "exec >/dev/null 2>&1; sleep 10"]);
        let err = feed_and_wait_with_deadline(child, None, Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
    }

    #[test]
    fn a_fast_programs_output_and_status_are_intact() {
        let child = spawn("sh", &["-c", "echo out; echo err >&2; exit 3"]);
        let output = feed_and_wait_with_deadline(child, None, Duration::from_secs(10)).unwrap();
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, b"err\n");
        assert_eq!(output.status.code(), Some(3));
    }

    #[test]
    fn a_large_input_is_fed_whole_while_output_is_drained() {
        // 8 MiB through `cat`: both directions far beyond a pipe's capacity at once.
        let input: String = (0..8 * 1024 * 1024 / 16).map(|i| format!("{i:015}\n")).collect();
        let child = spawn("cat", &[]);
        let output = feed_and_wait_with_deadline(child, Some(&input), Duration::from_secs(30)).unwrap();
        assert!(output.status.success());
        assert_eq!(output.stdout.len(), input.len());
        assert!(output.stdout == input.as_bytes());
    }

    #[test]
    fn a_program_that_stops_reading_early_reports_its_own_status() {
        let input = "x".repeat(1024 * 1024);
        let child = spawn("sh", &["-c", "head -c 10 >/dev/null; exit 4"]);
        let output = feed_and_wait_with_deadline(child, Some(&input), Duration::from_secs(10)).unwrap();
        assert_eq!(output.status.code(), Some(4));
    }
}
