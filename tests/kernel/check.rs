//! `istio-iptables check` against real rules: 0 right after a run, 3 with a diff after a rule is
//! deleted, inserted or changed by hand, 0 again after a rerun; the pod's own rules never count.

use libtest_mimic::Trial;

use crate::apply_support::{istio, istio_ok, pod, sidecar_with, Choice};
use crate::support::{Netns, Ran};

pub fn tests() -> Vec<Trial> {
    kernel_tests![
        drift_is_found_and_a_rerun_repairs_it: [legacy, nft, native],
        pods_own_rules_do_not_count: [legacy, nft],
        works_with_network_namespace: [legacy, native],
        tproxy_routing_is_compared: [nft, native],
    ]
}

/// `check` with the run's argv; (exit code, stdout).
fn check(ns: &Netns, choice: Choice, args: &[String]) -> (i32, String) {
    let mut all = vec!["check".to_string()];
    all.extend(args.iter().cloned());
    let out = istio(ns, choice, &all);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn assert_matches(ns: &Netns, choice: Choice, args: &[String], when: &str) {
    let (code, stdout) = check(ns, choice, args);
    assert_eq!((code, stdout.as_str()), (0, ""), "{when}: check should find no drift");
}

fn assert_drift(ns: &Netns, choice: Choice, args: &[String], when: &str, wanted: &str) {
    let (code, stdout) = check(ns, choice, args);
    assert_eq!(code, 3, "{when}: check should exit 3:\n{stdout}");
    assert!(stdout.contains(wanted), "{when}: expected {wanted:?} in:\n{stdout}");
}

/// A hand edit of the live rules, in the backend's own tool.
fn edit(ns: &Netns, choice: Choice, iptables_args: &[&str], nft_args: &[&str]) {
    match choice {
        Choice::Native => ns.exec_ok("nft", nft_args),
        _ => ns.exec_ok(&choice.backend().iptables(false), iptables_args),
    };
}

/// The handle of the first rule of a chain of the nat istio table (table and chain lines,
/// which end in `{ # handle N`, are not rules).
fn first_rule_handle(ns: &Netns, chain: &str) -> String {
    let listing = ns.exec_ok("nft", ["-a", "list", "chain", "inet", "istio-proxy-nat", chain]);
    let handle = listing
        .lines()
        .filter(|line| !line.contains('{'))
        .find_map(|line| line.split("# handle ").nth(1))
        .map(|handle| handle.trim().to_string());
    handle.unwrap_or_else(|| panic!("no rule handle in:\n{listing}"))
}

fn drift_is_found_and_a_rerun_repairs_it(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod("check");
    let args = sidecar_with(&[]);
    istio_ok(&ns, choice, &args);
    assert_matches(&ns, choice, &args, "right after a run");

    // Deleted by hand.
    if choice == Choice::Native {
        let handle = first_rule_handle(&ns, "istio-output");
        edit(&ns, choice, &[], &["delete", "rule", "inet", "istio-proxy-nat", "istio-output", "handle", &handle]);
    } else {
        edit(&ns, choice, &["-t", "nat", "-D", "ISTIO_OUTPUT", "-d", "127.0.0.1/32", "-j", "RETURN"], &[]);
    }
    assert_drift(&ns, choice, &args, "after a deletion", "missing: ");
    // A plain rerun converges on native (it replaces the tables); the iptables backends see a
    // delta against a residue, which the decision table repairs only with --reconcile.
    let rerun = if choice == Choice::Native { args.clone() } else { sidecar_with(&[("--reconcile", "")]) };
    istio_ok(&ns, choice, &rerun);
    assert_matches(&ns, choice, &args, "after a rerun that repaired the deletion");

    // Inserted by hand.
    edit(
        &ns,
        choice,
        &["-t", "nat", "-I", "ISTIO_OUTPUT", "1", "-d", "10.9.0.0/16", "-j", "RETURN"],
        &["insert", "rule", "inet", "istio-proxy-nat", "istio-output", "ip", "daddr", "10.9.0.0/16", "return"],
    );
    let wanted =
        if choice == Choice::Native { "changed: " } else { "extra:   -A ISTIO_OUTPUT -d 10.9.0.0/16 -j RETURN" };
    assert_drift(&ns, choice, &args, "after an insertion", wanted);
    istio_ok(&ns, choice, &rerun);
    assert_matches(&ns, choice, &args, "after a rerun that repaired the insertion");

    // Changed by hand: the redirect's port.
    if choice == Choice::Native {
        let handle = first_rule_handle(&ns, "istio-redirect");
        let replace = ["replace", "rule", "inet", "istio-proxy-nat", "istio-redirect", "handle", &handle];
        let rule = ["meta", "l4proto", "tcp", "counter", "redirect", "to", ":15002"];
        let all: Vec<&str> = replace.iter().chain(&rule).copied().collect();
        ns.exec_ok("nft", all);
    } else {
        let cmd = ["-t", "nat", "-R", "ISTIO_REDIRECT", "1", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15002"];
        edit(&ns, choice, &cmd, &[]);
    }
    assert_drift(&ns, choice, &args, "after a change", "changed: ");
    istio_ok(&ns, choice, &rerun);
    assert_matches(&ns, choice, &args, "after a rerun that repaired the change");
    Ok(())
}

fn pods_own_rules_do_not_count(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod("check-own");
    let args = sidecar_with(&[]);
    edit(&ns, choice, &["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "123", "-j", "ACCEPT"], &[]);
    edit(&ns, choice, &["-A", "INPUT", "-p", "tcp", "-j", "DROP"], &[]);
    istio_ok(&ns, choice, &args);
    assert_matches(&ns, choice, &args, "with the pod's own rules beside Istio's");
    // Nothing applied for another configuration: its rules are missing, the pod's are not extra.
    let other = sidecar_with(&[("-m", "TPROXY")]);
    let (code, stdout) = check(&ns, choice, &other);
    assert_eq!(code, 3, "{stdout}");
    assert!(
        !stdout.contains("--dport 123") && !stdout.contains("-j DROP"),
        "the pod's rules are not Istio's:\n{stdout}"
    );
    Ok(())
}

fn works_with_network_namespace(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod("check-netns");
    let mut args = sidecar_with(&[]);
    istio_ok(&ns, choice, &args);
    args.extend(["--network-namespace".to_string(), ns.path().display().to_string()]);
    // Started in the host namespace: only what it enters is read.
    let mut all = vec!["check".to_string()];
    all.extend(args.iter().cloned());
    match choice {
        Choice::Native => all.push("--native-nftables".into()),
        _ => all.extend(["--force-iptables-binary".into(), choice.backend().name().into()]),
    }
    let out = std::process::Command::new(crate::support::binary_under_test()).args(&all).output().expect("run check");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn tproxy_routing_is_compared(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod("check-routes");
    ns.loopback_up();
    let args = sidecar_with(&[("-m", "TPROXY")]);
    istio_ok(&ns, choice, &args);
    assert_matches(&ns, choice, &args, "right after a TPROXY run");
    ns.exec_ok("ip", ["rule", "del", "fwmark", "0x539", "lookup", "133"]);
    assert_drift(
        &ns,
        choice,
        &args,
        "after the mark rule was deleted",
        "IPv4 routing:\n  missing: from all fwmark 0x539 lookup 133",
    );
    ns.exec_ok("ip", ["route", "del", "local", "default", "dev", "lo", "table", "133"]);
    assert_drift(&ns, choice, &args, "after the local route was deleted", "missing: local default dev lo table 133");
    istio_ok(&ns, choice, &args);
    assert_matches(&ns, choice, &args, "after a rerun put the routing back");
    Ok(())
}
