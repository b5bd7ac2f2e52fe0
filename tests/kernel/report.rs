//! `--report` after real runs: the action each run took (applied, unchanged, reconciled,
//! cleaned-up), the backend and its evidence, the programs spawned, and the hash of the rules,
//! on every backend.

use std::path::Path;

use libtest_mimic::Trial;
use serde_json::Value;

use crate::apply_support::{istio_ok, pod, sidecar_with, Choice};
use crate::support::{self, Netns, Ran};

pub fn tests() -> Vec<Trial> {
    kernel_tests![
        each_action_is_reported: [legacy, nft, detected, native],
        a_failed_apply_is_reported,
    ]
}

/// Runs the binary in `ns` with `--report` and returns the report.
fn run_reported(ns: &Netns, choice: Choice, args: &[String], dir: &Path) -> Value {
    let path = dir.join("report.json");
    let mut args = args.to_vec();
    args.extend(["--report".to_string(), path.display().to_string()]);
    istio_ok(ns, choice, &args);
    let text = std::fs::read_to_string(&path).expect("the report was written");
    std::fs::remove_file(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The hash a dry-run of the same argv reports: the plan's rules, whatever the backend found.
fn dry_run_hash(ns: &Netns, choice: Choice, args: &[String], dir: &Path) -> Value {
    let mut dry = args.to_vec();
    dry.push("--dry-run".to_string());
    run_reported(ns, choice, &dry, dir)["rules"]["sha256"].clone()
}

fn each_action_is_reported(choice: Choice) -> Ran {
    choice.available()?;
    let dir = tempfile::tempdir().unwrap();
    let ns = pod("report");
    let args = sidecar_with(&[]);

    let first = run_reported(&ns, choice, &args, dir.path());
    assert_eq!(first["action"], "applied", "{first:#}");
    assert_eq!(first["error"], Value::Null);
    assert_eq!(first["rules"]["sha256"], dry_run_hash(&ns, choice, &args, dir.path()), "{first:#}");
    let backend = &first["backend"];
    match choice {
        Choice::Native => {
            assert_eq!(backend["kind"], "nftables", "{backend:#}");
            assert_eq!(backend["via"], "netlink");
            assert_eq!(first["subprocesses"]["count"], 0, "netlink needs no program: {first:#}");
        }
        Choice::Forced(forced) => {
            assert_eq!(backend["families"][0]["evidence"], "forced by --force-iptables-binary", "{backend:#}");
            assert_eq!(backend["families"][0]["variant"], forced.name());
            let programs = first["subprocesses"]["commands"].as_array().unwrap();
            assert!(!programs.is_empty(), "{first:#}");
            assert_eq!(first["subprocesses"]["count"], programs.len());
        }
        Choice::Detected => {
            assert_eq!(backend["families"][0]["program"], "iptables-nft", "{backend:#}");
            assert_eq!(backend["families"][0]["evidence"], "nft chosen: the kernel lists no legacy table");
            // A fresh pod: detection runs nothing, the restore is the only program.
            let programs = &first["subprocesses"]["commands"];
            assert_eq!(programs.as_array().map(Vec::len), Some(1), "{first:#}");
            assert_eq!(programs[0]["program"], "iptables-nft-restore");
        }
    }

    let second = run_reported(&ns, choice, &args, dir.path());
    assert_eq!(second["action"], "unchanged", "{second:#}");
    assert_eq!(second["rules"]["sha256"], first["rules"]["sha256"]);

    let changed = sidecar_with(&[("-p", "15999"), ("--reconcile", "")]);
    let third = run_reported(&ns, choice, &changed, dir.path());
    assert_eq!(third["action"], "reconciled", "{third:#}");
    assert_ne!(third["rules"]["sha256"], first["rules"]["sha256"], "another configuration, other rules");

    let cleanup = sidecar_with(&[("--cleanup-only", "")]);
    let fourth = run_reported(&ns, choice, &cleanup, dir.path());
    assert_eq!(fourth["action"], "cleaned-up", "{fourth:#}");
    assert_eq!(fourth["rules"], Value::Null, "a cleanup installs no rules");
    Ok(())
}

/// A restore the kernel refuses: the report says failed, with the run's exit code and error.
fn a_failed_apply_is_reported() -> Ran {
    let choice = Choice::Forced(support::Backend::Nft);
    choice.available()?;
    let dir = tempfile::tempdir().unwrap();
    let ns = pod("report-fail");
    // An ISTIO chain that differs, without --reconcile: upstream's "Chain already exists" failure.
    ns.exec_ok("iptables-nft", ["-t", "nat", "-N", "ISTIO_INBOUND"]);
    ns.exec_ok("iptables-nft", ["-t", "nat", "-A", "ISTIO_INBOUND", "-p", "udp", "-j", "RETURN"]);
    let path = dir.path().join("report.json");
    let mut args = sidecar_with(&[("--force-iptables-binary", "nft")]);
    args.extend(["--report".to_string(), path.display().to_string()]);
    let all: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = support::run_istio_iptables(&ns, &all);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(report["action"], "failed", "{report:#}");
    assert_eq!(report["error"]["exit_code"], 1);
    assert!(report["error"]["message"].as_str().unwrap().contains("restore of the IPv4 rules failed"), "{report:#}");
    assert_eq!(report["backend"]["families"][0]["program"], "iptables-nft");
    Ok(())
}
