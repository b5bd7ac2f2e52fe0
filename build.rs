//! Embeds the commit the binary is built from, for `--version`.
//!
//! `ISTIO_IPTABLES_COMMIT` in the build environment wins (a container build has no `.git`);
//! otherwise `git rev-parse --short HEAD`; otherwise `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ISTIO_IPTABLES_COMMIT");
    let commit = std::env::var("ISTIO_IPTABLES_COMMIT").ok().filter(|c| !c.is_empty()).or_else(git_commit);
    println!("cargo:rustc-env=ISTIO_IPTABLES_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
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
