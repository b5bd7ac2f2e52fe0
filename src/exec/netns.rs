//! `--network-namespace`: move this process into the pod's network namespace.
//!
//! Placeholder for the `apply` branch's implementation (same signature), which replaces this
//! file when merged.

use std::fs::File;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use crate::error::{Error, Result};

/// Enters the network namespace bound at `path` (e.g. `/var/run/netns/<name>`). The tool is
/// single-threaded when this runs, so the whole process and every command it spawns afterwards
/// (nft, iptables-restore) act in that namespace.
pub fn enter(path: &Path) -> Result<()> {
    let fail = |err: String| Error::Apply(format!("failed to enter network namespace {}: {err}", path.display()));
    let file = File::open(path).map_err(|err| fail(err.to_string()))?;
    setns(file, CloneFlags::CLONE_NEWNET).map_err(|err| fail(err.to_string()))
}
