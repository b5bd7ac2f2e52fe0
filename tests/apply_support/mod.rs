//! Running the real binary (not a dry run) inside test namespaces, and reading back what it
//! did. Shared by the kernel apply tests; builds on `tests/support`.

use std::process::Output;

use crate::support::{self, Backend, Netns, Ran};

/// The sidecar argv with some flags replaced (`("-m", "TPROXY")`) or added (`("--reconcile", "")`
/// for a bool flag, `("--resolv-conf", "/x")`, always a long flag).
pub fn sidecar_with(changes: &[(&str, &str)]) -> Vec<String> {
    let mut args: Vec<String> =
        support::sidecar_argv_with(&["--log_output_level=default:info"]).iter().map(|s| s.to_string()).collect();
    for (flag, value) in changes {
        match args.iter().position(|a| a == flag) {
            Some(at) => args[at + 1] = value.to_string(),
            None if value.is_empty() => args.push(flag.to_string()),
            // `--flag=value`: a separate `false` would be a positional argument to a bool flag.
            None => args.push(format!("{flag}={value}")),
        }
    }
    args
}

/// Which backend the binary programs in a test: the `legacy`, `nft`, `detected` and `native`
/// of the kernel tests' per-backend lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// `--force-iptables-binary legacy|nft`.
    Forced(Backend),
    /// Auto-detection; on a fresh namespace that means nft.
    Detected,
    /// `--native-nftables`: an nft transaction, no iptables at all.
    Native,
}

impl Choice {
    /// The iptables backend whose `-save` shows the rules. Tests that read `-save` output do
    /// not list `native`, which has none.
    pub fn backend(self) -> Backend {
        match self {
            Choice::Forced(backend) => backend,
            Choice::Detected => Backend::Nft,
            Choice::Native => panic!("--native-nftables has no iptables backend; this test cannot run on `native`"),
        }
    }

    /// Root, `ip` and the programs this choice runs are installed (a [`support::Skip`]
    /// otherwise).
    pub fn available(self) -> Ran {
        if self == Choice::Native {
            return support::require_programs(&["nft"]);
        }
        let backend = self.backend();
        let programs = [backend.save(false), backend.restore(false), backend.save(true), backend.restore(true)];
        let programs: Vec<&str> = programs.iter().map(String::as_str).collect();
        support::require_programs(&programs)
    }
}

/// Runs the binary for real in `ns` with `args` (plus the forced backend or
/// `--native-nftables`, if any).
pub fn istio(ns: &Netns, choice: Choice, args: &[String]) -> Output {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    match choice {
        Choice::Forced(backend) => all.extend(["--force-iptables-binary", backend.name()]),
        Choice::Native => all.push("--native-nftables"),
        Choice::Detected => {}
    }
    support::run_istio_iptables(ns, &all)
}

/// Like [`istio`], panicking with the log unless it exits 0. Returns the log.
pub fn istio_ok(ns: &Netns, choice: Choice, args: &[String]) -> String {
    let out = istio(ns, choice, args);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "istio-iptables {args:?} failed ({}):\n{log}", out.status);
    log
}

/// `-save` reduced to what a configuration decides: per table, non-built-in chain headers and
/// rule lines (`nat: -A OUTPUT -j ISTIO_OUTPUT`), in dump order. Empty tables, counters and
/// comments are dropped, so two namespaces with the same rules compare equal.
pub fn rules(ns: &Netns, backend: Backend, ipv6: bool) -> Vec<String> {
    let saved = support::iptables_save(ns, &backend.save(ipv6));
    let mut table = String::new();
    let mut out = Vec::new();
    for line in saved.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = name.to_string();
        } else if line.starts_with("-A ") {
            out.push(format!("{table}: {line}"));
        } else if let Some(header) = line.strip_prefix(':') {
            let chain = header.split(' ').next().unwrap_or_default();
            let built_in = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"].contains(&chain);
            if !built_in {
                out.push(format!("{table}: :{chain}"));
            }
        }
    }
    out
}

/// The lines of [`rules`] that are Istio's: ISTIO chains, their rules and jumps into them.
pub fn istio_leftovers(ns: &Netns, backend: Backend, ipv6: bool) -> Vec<String> {
    rules(ns, backend, ipv6).into_iter().filter(|line| line.contains("ISTIO")).collect()
}

/// Whether a `-save` holds any rule at all.
pub fn has_any_rule(ns: &Netns, backend: Backend, ipv6: bool) -> bool {
    rules(ns, backend, ipv6).iter().any(|line| line.contains(": -A "))
}

/// A pod namespace as upstream's tests make it: only `lo`, with one non-loopback address so
/// that IPv6 detection has something to decide on.
pub fn pod(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.exec_ok("ip", ["addr", "add", "240.240.240.240/32", "dev", "lo"]);
    ns
}

/// Runs `<backend iptables> args` in `ns` and requires success.
pub fn iptables(ns: &Netns, backend: Backend, ipv6: bool, args: &[&str]) {
    ns.exec_ok(&backend.iptables(ipv6), args);
}
