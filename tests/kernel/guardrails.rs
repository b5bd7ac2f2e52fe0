//! Guardrails and honest errors against the real kernel: a pod's own default-deny, which looks
//! exactly like upstream's guardrails, survives a TPROXY → REDIRECT reconcile and a cleanup;
//! the guardrail a reconcile arms is the tool's own chain, `ISTIO_GUARDRAIL`; a leftover of it in
//! any shape (chain, rules, jumps) is drift that `check` reports and every run removes; a
//! missing `CAP_NET_ADMIN` is named once, with the fix; a hanging restore is killed at
//! `--command-timeout`.

use libtest_mimic::Trial;

use crate::apply_support::{iptables, istio, istio_ok, pod, rules, sidecar_with, Choice};
use crate::support::{self, Ran};

pub fn tests() -> Vec<Trial> {
    kernel_tests![
        pods_default_deny_survives_reconcile_and_cleanup: [legacy, nft],
        leftover_guardrail_in_any_shape_is_drift_every_run_removes: [legacy, nft],
        missing_net_admin_is_named_once_with_the_fix,
        hanging_restore_is_killed_at_the_command_timeout_flag,
    ]
}

fn with_flag(args: &[String], flag: &str) -> Vec<String> {
    let mut args = args.to_vec();
    args.push(flag.to_string());
    args
}

fn pods_default_deny_survives_reconcile_and_cleanup(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod("deny");
    let backend = choice.backend();
    let tproxy = sidecar_with(&[("-m", "TPROXY")]);
    istio_ok(&ns, choice, &tproxy);
    // Added after the sidecar, as a pod's own policy would be.
    iptables(&ns, backend, false, &["-A", "INPUT", "-p", "tcp", "-j", "DROP"]);
    iptables(&ns, backend, false, &["-A", "OUTPUT", "-p", "udp", "-j", "DROP"]);
    let deny = ["filter: -A INPUT -p tcp -j DROP".to_string(), "filter: -A OUTPUT -p udp -j DROP".to_string()];
    let filter = |ns| rules(ns, backend, false).into_iter().filter(|r| r.starts_with("filter: ")).collect::<Vec<_>>();
    let log = istio_ok(&ns, choice, &with_flag(&sidecar_with(&[]), "--reconcile"));
    for armed in ["-N ISTIO_GUARDRAIL", "-A ISTIO_GUARDRAIL -p tcp -j DROP", "-I INPUT 1 -j ISTIO_GUARDRAIL"] {
        assert!(log.lines().any(|line| line == armed), "{armed} missing:\n{log}");
    }
    assert_eq!(filter(&ns), deny, "after the reconcile");
    istio_ok(&ns, choice, &with_flag(&sidecar_with(&[]), "--cleanup-only"));
    assert_eq!(filter(&ns), deny, "after the cleanup");
    assert!(rules(&ns, backend, false).iter().all(|r| !r.contains("ISTIO")), "cleanup left Istio rules");
    Ok(())
}

/// Shapes of the guardrail a killed run can leave, as `iptables` commands after the rules: the
/// blocks that arm and disarm it are atomic, so only the full one is reachable by a kill, but
/// nothing about the shape is assumed.
const LEFTOVER_SHAPES: [&[&[&str]]; 5] = [
    &[&["-N", "ISTIO_GUARDRAIL"]],
    &[&["-N", "ISTIO_GUARDRAIL"], &["-A", "ISTIO_GUARDRAIL", "-p", "tcp", "-j", "DROP"]],
    &[
        &["-N", "ISTIO_GUARDRAIL"],
        &["-A", "ISTIO_GUARDRAIL", "-p", "tcp", "-j", "DROP"],
        &["-A", "ISTIO_GUARDRAIL", "-p", "udp", "-j", "DROP"],
    ],
    &[&["-N", "ISTIO_GUARDRAIL"], &["-I", "OUTPUT", "1", "-j", "ISTIO_GUARDRAIL"]],
    &[
        &["-N", "ISTIO_GUARDRAIL"],
        &["-A", "ISTIO_GUARDRAIL", "-p", "tcp", "-j", "DROP"],
        &["-A", "ISTIO_GUARDRAIL", "-p", "udp", "-j", "DROP"],
        &["-I", "INPUT", "1", "-j", "ISTIO_GUARDRAIL"],
        &["-I", "FORWARD", "1", "-j", "ISTIO_GUARDRAIL"],
        &["-I", "OUTPUT", "1", "-j", "ISTIO_GUARDRAIL"],
    ],
];

/// Over an applied pod with its own default-deny: each leftover shape is reported by `check`
/// (exit 3), and a plain rerun, a `--reconcile` and a `--cleanup-only` each exit 0 having
/// removed it, the pod's DROP kept, and (but for the cleanup) the rules exactly a fresh pod's.
fn leftover_guardrail_in_any_shape_is_drift_every_run_removes(choice: Choice) -> Ran {
    choice.available()?;
    let backend = choice.backend();
    let args = sidecar_with(&[]);
    let reference = pod("guardref");
    istio_ok(&reference, choice, &args);
    let fresh = rules(&reference, backend, false);
    let deny = "filter: -A INPUT -p tcp -j DROP".to_string();
    for (index, shape) in LEFTOVER_SHAPES.iter().enumerate() {
        for flag in [None, Some("--reconcile"), Some("--cleanup-only")] {
            let ns = pod("leftover");
            istio_ok(&ns, choice, &args);
            iptables(&ns, backend, false, &["-A", "INPUT", "-p", "tcp", "-j", "DROP"]);
            for command in shape.iter() {
                iptables(&ns, backend, false, command);
            }
            let mut check_args = vec!["check".to_string()];
            check_args.extend(args.iter().cloned());
            let out = istio(&ns, choice, &check_args);
            let report = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(3), "shape {index}: check:\n{report}");
            assert!(report.contains("ISTIO_GUARDRAIL"), "shape {index}: check:\n{report}");
            let run = flag.map_or_else(|| args.clone(), |flag| with_flag(&args, flag));
            let log = istio_ok(&ns, choice, &run);
            let left = rules(&ns, backend, false);
            assert!(
                left.iter().all(|rule| !rule.contains("ISTIO_GUARDRAIL")),
                "shape {index} {flag:?}: {left:#?}\n{log}"
            );
            let mut expected = if flag == Some("--cleanup-only") { Vec::new() } else { fresh.clone() };
            expected.push(deny.clone());
            let mut sorted = left.clone();
            sorted.sort();
            expected.sort();
            assert_eq!(sorted, expected, "shape {index} {flag:?}:\n{log}");
        }
    }
    Ok(())
}

fn missing_net_admin_is_named_once_with_the_fix() -> Ran {
    support::require_programs(&["setpriv"])?;
    Choice::Detected.available()?;
    let ns = pod("nocap");
    let mut command = ns.command("setpriv");
    command.args(["--inh-caps=-all", "--bounding-set=-net_admin", "--"]).arg(support::binary_under_test());
    command.args(sidecar_with(&[]));
    let out = command.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert_eq!(log.lines().filter(|line| line.contains("CAP_NET_ADMIN")).count(), 1, "reported once:\n{log}");
    assert!(log.contains("missing CAP_NET_ADMIN") && log.contains("capabilities: add: [NET_ADMIN, NET_RAW]"), "{log}");
    assert!(!log.contains("no working kernel support"), "{log}");
    // Nothing was attempted.
    assert!(rules(&ns, support::Backend::Nft, false).is_empty());
    // The same run with the capability works: the check is not a false alarm.
    let out = istio(&ns, Choice::Detected, &sidecar_with(&[]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn hanging_restore_is_killed_at_the_command_timeout_flag() -> Ran {
    Choice::Forced(support::Backend::Nft).available()?;
    let ns = pod("hang");
    let dir = tempfile::tempdir().unwrap();
    let restore = dir.path().join("iptables-nft-restore");
    std::fs::write(&restore, "#!/bin/sh\nexec sleep 30\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&restore, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut command = ns.command(support::binary_under_test());
    command.args(sidecar_with(&[("--command-timeout", "1s")])).args(["--force-iptables-binary", "nft"]);
    // The flag wins over the environment.
    command.env("ISTIO_IPTABLES_COMMAND_TIMEOUT", "25s");
    command.env("PATH", format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default()));
    let started = std::time::Instant::now();
    let out = command.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "took {:?}", started.elapsed());
    assert!(log.contains("did not finish within 1s") && log.contains("--command-timeout"), "{log}");
    Ok(())
}
