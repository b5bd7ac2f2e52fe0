//! Kernel test harness shared by the integration tests that exercise real
//! netfilter rules.
//!
//! Everything happens inside network namespaces created (and deleted, even on
//! panic) by this module: the host namespace's rules, routes and addresses are
//! never touched. The building blocks are:
//!
//! * [`Netns`]: a named namespace (`ip netns add`) with helpers to run commands
//!   or Rust closures inside it;
//! * [`Topology`]: an "app" and a "peer" namespace joined by a veth pair;
//! * [`Listener`] / [`UdpListener`]: sockets that record what they receive,
//!   including `SO_ORIGINAL_DST` and transparent-proxy local addresses;
//! * [`Client`]: connections / datagrams sent as a chosen uid/gid;
//! * netfilter inspection helpers ([`Backend`], [`iptables_save`], ...).
//!
//! Tests return [`Ran`] and start with their prerequisites: `support::require_root()?;`.

// A toolkit for the kernel test modules (`tests/kernel/`): some helpers (transparent UDP
// listeners, counter-free `-save` comparison, ...) are there for the next test that needs them.
#![allow(dead_code, unused_imports)]

mod client;
mod listener;
mod netfilter;
mod netns;
#[path = "../common/sidecar_argv.rs"]
mod sidecar_argv;
mod sys;
mod topology;

use std::env;
use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

pub use client::{connect_as, send_udp_as, Client, TcpExchange, UdpExchange};
pub use listener::{Accepted, Datagram, Listener, UdpListener};
pub use netfilter::{
    ip_route_list, ip_rule_list, iptables_restore, iptables_save, nft_list_ruleset, normalize_save, Backend,
};
pub use netns::Netns;
pub use sidecar_argv::{sidecar_argv_with, SIDECAR_ARGV};
pub use topology::{Topology, TopologyOptions, IFACE, PEER_ROUTED_V4, PEER_ROUTED_V6};

/// Environment variable controlling what happens when prerequisites are
/// missing: `require` (set by CI) turns a skip into a failure.
pub const KERNEL_TESTS_ENV: &str = "ISTIO_IPTABLES_KERNEL_TESTS";

/// Default bound for anything that waits on the kernel (connects, records).
pub const WAIT: Duration = Duration::from_secs(3);

/// The well-known Istio identities used throughout the tests.
pub const PROXY_UID: u32 = 1337;
pub const PROXY_GID: u32 = 1337;
pub const APP_UID: u32 = 1000;
pub const APP_GID: u32 = 1000;

/// Environment variable naming another `istio-iptables` to test instead of
/// the one Cargo built, e.g. Istio's Go binary for differential runs.
pub const BINARY_ENV: &str = "ISTIO_IPTABLES_BIN";

/// The `istio-iptables` under test: `$ISTIO_IPTABLES_BIN`, else the binary
/// Cargo built for this test run.
pub fn binary_under_test() -> PathBuf {
    env::var_os(BINARY_ENV).map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_istio-iptables")), PathBuf::from)
}

/// Runs `ip netns exec <ns> istio-iptables <args>` and returns its output
/// whatever the exit status.
pub fn run_istio_iptables(ns: &Netns, args: &[&str]) -> Output {
    let mut command = ns.command(binary_under_test());
    command.args(args);
    command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

/// Why a kernel test could not run. The kernel test runner reports it as `ignored (<reason>)`
/// instead of a pass; see [`skip`].
#[derive(Debug)]
pub struct Skip(pub String);

/// What a kernel test returns: `Ok(())` when it ran (its assertions panic), `Err(Skip)` when
/// its prerequisites are missing.
pub type Ran = Result<(), Skip>;

/// Kernel tests can run here (root, working `ip netns`); checked once per test binary.
pub fn require_root() -> Ran {
    kernel_support().map_err(skip)
}

/// Like [`require_root`], and every program in `programs` is installed (e.g.
/// `iptables-nft-restore`).
pub fn require_programs(programs: &[&str]) -> Ran {
    require_root()?;
    match programs.iter().find(|p| find_program(p).is_none()) {
        None => Ok(()),
        Some(missing) => Err(skip(format!("program `{missing}` not found"))),
    }
}

/// The [`Skip`] for `reason`, or a panic (a failed test) when
/// `ISTIO_IPTABLES_KERNEL_TESTS=require`. Also for test-specific prerequisites, such as a
/// netfilter extension the kernel lacks: `return Err(support::skip(...))`.
pub fn skip(reason: impl Into<String>) -> Skip {
    let reason = reason.into();
    if env::var(KERNEL_TESTS_ENV).as_deref() == Ok("require") {
        panic!("kernel test prerequisites missing ({KERNEL_TESTS_ENV}=require): {reason}");
    }
    Skip(reason)
}

/// Looks a program up in `PATH`, plus the sbin directories that are often
/// missing from a non-login `PATH` but hold `ip` and `iptables`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Checked once per test binary: creating a namespace is the only reliable
/// test (containers may be root without CAP_SYS_ADMIN, or lack /run/netns).
fn kernel_support() -> Result<(), &'static str> {
    static SUPPORT: OnceLock<Result<(), String>> = OnceLock::new();
    SUPPORT
        .get_or_init(|| {
            if !nix::unistd::geteuid().is_root() {
                return Err("not running as root".to_owned());
            }
            if find_program("ip").is_none() {
                return Err("`ip` (iproute2) not found".to_owned());
            }
            Netns::try_new("probe").map(drop).map_err(|e| format!("`ip netns add` does not work here: {e}"))
        })
        .as_ref()
        .map_err(String::as_str)
        .copied()
}
