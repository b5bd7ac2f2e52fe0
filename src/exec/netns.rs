//! `--network-namespace PATH`: the process moves into that namespace before it reads addresses
//! or touches rules and routes. Upstream only uses the path as a lock name and programs the
//! namespace it was started in; a CLI that names a namespace should act on it.

use std::fs::File;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use crate::error::{Error, Result};

/// Enters the network namespace behind `path` (e.g. `/var/run/netns/<pod>` or
/// `/proc/<pid>/ns/net`). Child processes started afterwards (iptables) inherit it.
///
/// Must run while the process is single-threaded: setns moves only the calling thread.
pub fn enter(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|source| Error::NetnsOpen { path: path.to_path_buf(), source })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| Error::NetnsEnter { path: path.to_path_buf(), source })
}
