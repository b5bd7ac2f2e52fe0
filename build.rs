//! Embeds the commit the binary is built from, for `--version` (`ISTIO_IPTABLES_COMMIT`).
//!
//! A value already in the build environment wins (a container build has no `.git`); otherwise
//! `git rev-parse --short HEAD`; otherwise nothing is set and `--version` says `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ISTIO_IPTABLES_COMMIT");
    if std::env::var_os("ISTIO_IPTABLES_COMMIT").is_some() {
        return;
    }
    if let Some(commit) = git_commit() {
        println!("cargo:rustc-env=ISTIO_IPTABLES_COMMIT={commit}");
    }
}

fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        let output = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        output.status.success().then(|| text.trim().to_string())
    };
    // Rebuild when HEAD moves (a commit, a checkout); in a worktree these live under .git/worktrees.
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    git(&["rev-parse", "--short", "HEAD"]).filter(|commit| !commit.is_empty())
}
