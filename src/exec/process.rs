//! Running the netfilter programs: what both backends need from a child process.

use std::io::Write as _;
use std::process::{Child, Output};

/// Writes `stdin` (if any) to a spawned child and collects its output. The input is written from
/// a second thread while this one drains stdout and stderr, so a program that writes before it
/// has read everything cannot deadlock against us on full pipes. A write error (the program
/// exited early) is left to show in its exit status.
pub(crate) fn feed_and_wait(mut child: Child, stdin: Option<&str>) -> std::io::Result<Output> {
    std::thread::scope(|scope| {
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            scope.spawn(move || {
                let _ = pipe.write_all(input.as_bytes());
            });
        }
        child.wait_with_output()
    })
}
