//! Reruns, reconcile, cleanup and backend detection against real kernel state, including
//! upstream's namespace tests (`apply.md` §8.2–8.5), with the real binary in throwaway
//! namespaces.

use std::path::Path;

use libtest_mimic::Trial;

use crate::apply_support::{
    has_any_rule, iptables, istio, istio_leftovers, istio_ok, pod, rules, sidecar_with, Choice,
};
use crate::support::{self, Backend, Netns, Ran};

pub fn tests() -> Vec<Trial> {
    kernel_tests![
        same_argv_twice: [legacy, nft, detected],
        reconcile_converges: [legacy, nft, detected],
        changed_argv_without_reconcile: [legacy, nft],
        cleanup_only: [legacy, nft],
        equivalent_rerun: [legacy, nft],
        unequal_rerun: [legacy, nft],
        mixed_foreign_ipv6_rule_ipv6_off => || mixed_state(Choice::Detected, false, false),
        mixed_foreign_ipv6_rule_ipv6_on => || mixed_state(Choice::Detected, false, true),
        mixed_istio_ipv6_chain_ipv6_off => || mixed_state(Choice::Detected, true, false),
        mixed_istio_ipv6_chain_ipv6_on_rolls_back_ipv4: [legacy, nft] => |choice| mixed_state(choice, true, true),
        ipv6_not_available,
        detection_is_not_self_priming,
        detection_follows_real_legacy_rules_only,
        tproxy_routes_are_idempotent_for_both_families,
        detection_happens_in_the_entered_namespace,
        pods_own_rules_survive: [legacy, nft],
        tproxy_kube_virt_is_removed: [legacy, nft],
        reconcile_sees_built_in_chain_changes: [legacy, nft],
        ipv6_off_removes_ipv6_rules: [legacy, nft, detected],
    ]
}

/// The rules a fresh pod gets for `args`: what a converged rerun must equal.
fn fresh_rules(choice: Choice, args: &[String], ipv6: bool) -> Vec<String> {
    let reference = pod("reference");
    istio_ok(&reference, choice, args);
    rules(&reference, choice.backend(), ipv6)
}

fn failed(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(1), "expected exit 1:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Same argv twice: exit 0, nothing changed, and the second run knows it.
fn same_argv_twice(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod("twice");
    let args = sidecar_with(&[]);
    istio_ok(&ns, choice, &args);
    let first = rules(&ns, choice.backend(), false);
    let log = istio_ok(&ns, choice, &args);
    assert!(log.contains("Found compatible residues of old iptables rules/chains, reconciliation not needed"), "{log}");
    assert!(!log.contains("Running iptables restore"), "a no-op rerun restored something:\n{log}");
    assert_eq!(rules(&ns, choice.backend(), false), first);
    Ok(())
}

/// A different earlier configuration (TPROXY with DNS capture and an excluded interface), then
/// the default sidecar with `--reconcile`: exactly the rules a fresh pod gets, nothing left
/// over (upstream keeps the mangle chains, raw DNS chains and mark rules forever) except the
/// earlier interface exclusion, which cannot be told apart from the pod's own `-i eth9 -j
/// RETURN` and so stays (a documented limitation).
fn reconcile_converges(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod("reconcile");
    let earlier = sidecar_with(&[("-m", "TPROXY"), ("-c", "eth9"), ("--redirect-dns", ""), ("--capture-all-dns", "")]);
    istio_ok(&ns, choice, &earlier);
    assert!(rules(&ns, choice.backend(), false).iter().any(|r| r.starts_with("mangle: :ISTIO_TPROXY")));
    let now = sidecar_with(&[]);
    let mut reconcile = now.clone();
    reconcile.push("--reconcile".into());
    let log = istio_ok(&ns, choice, &reconcile);
    assert!(log.contains("Setting up guardrails") && log.contains("Removing guardrails"), "{log}");
    let (exclusions, rest): (Vec<String>, Vec<String>) =
        rules(&ns, choice.backend(), false).into_iter().partition(|r| r.contains("eth9"));
    assert_eq!(rest, fresh_rules(choice, &now, false));
    assert_eq!(
        sorted(exclusions),
        [
            "mangle: -A OUTPUT -o eth9 -j RETURN",
            "mangle: -A PREROUTING -i eth9 -j RETURN",
            "nat: -A OUTPUT -o eth9 -j RETURN",
            "nat: -A PREROUTING -i eth9 -j RETURN",
        ]
    );
    // And it is stable: the next reconcile has nothing to do.
    let log = istio_ok(&ns, choice, &reconcile);
    assert!(!log.contains("Running iptables restore"), "{log}");
    Ok(())
}

/// Changed argv without `--reconcile`: upstream's outcome, exit 1 on the existing chains; the
/// earlier rules stay exactly as they were.
fn changed_argv_without_reconcile(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod("changed");
    istio_ok(&ns, choice, &sidecar_with(&[]));
    let before = rules(&ns, choice.backend(), false);
    let log = failed(&istio(&ns, choice, &sidecar_with(&[("-b", "9080")])));
    assert!(log.contains("reconcile is recommended but no-reconcile flag is set"), "{log}");
    assert!(log.contains("restore of the IPv4 rules failed") && log.contains("line "), "{log}");
    assert_eq!(rules(&ns, choice.backend(), false), before);
    Ok(())
}

/// `--cleanup-only`, even with a configuration other than the applied one, leaves no ISTIO
/// chain or jump in any table, and keeps foreign rules.
fn cleanup_only(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod("cleanup");
    let backend = choice.backend();
    iptables(&ns, backend, false, &["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "123", "-j", "ACCEPT"]);
    istio_ok(&ns, choice, &sidecar_with(&[("-m", "TPROXY"), ("--redirect-dns", ""), ("--capture-all-dns", "")]));
    istio_ok(&ns, choice, &sidecar_with(&[("--cleanup-only", "")]));
    assert_eq!(istio_leftovers(&ns, backend, false), Vec::<String>::new());
    assert_eq!(
        rules(&ns, backend, false).into_iter().filter(|r| r.contains("-A ")).collect::<Vec<_>>(),
        vec!["nat: -A OUTPUT -p tcp -m tcp --dport 123 -j ACCEPT".to_string()]
    );
    Ok(())
}

/// Upstream's `TestIdempotentEquivalentRerun` (§8.2).
fn equivalent_rerun(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod("equivalent");
    let args = sidecar_with(&[]);
    istio_ok(&ns, choice, &args);
    istio_ok(&ns, choice, &args);
    let mut forced = args.clone();
    forced.push("--force-apply".into());
    failed(&istio(&ns, choice, &forced));
    let mut cleanup = args.clone();
    cleanup.push("--cleanup-only".into());
    istio_ok(&ns, choice, &cleanup);
    assert!(!has_any_rule(&ns, choice.backend(), false), "{:#?}", rules(&ns, choice.backend(), false));
    Ok(())
}

/// Upstream's `TestIdempotentUnequaledRerun` (§8.3).
fn unequal_rerun(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod("unequal");
    let backend = choice.backend();
    let args = sidecar_with(&[]);
    istio_ok(&ns, choice, &args);
    let foreign = ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "123", "-j", "ACCEPT"];
    iptables(&ns, backend, false, &foreign);
    let log = istio_ok(&ns, choice, &args);
    assert!(log.contains("Found compatible residues"), "foreign rules in a built-in chain are tolerated:\n{log}");
    iptables(&ns, backend, false, &["-t", "nat", "-A", "ISTIO_INBOUND", "-p", "tcp", "--dport", "123", "-j", "ACCEPT"]);
    failed(&istio(&ns, choice, &args));
    let mut reconcile = args.clone();
    reconcile.push("--reconcile".into());
    istio_ok(&ns, choice, &reconcile);
    let mut expected = fresh_rules(choice, &args, false);
    let after = rules(&ns, backend, false);
    assert!(after.contains(&"nat: -A OUTPUT -p tcp -m tcp --dport 123 -j ACCEPT".to_string()), "{after:#?}");
    expected.push("nat: -A OUTPUT -p tcp -m tcp --dport 123 -j ACCEPT".into());
    let (mut sorted_after, mut sorted_expected) = (after, expected);
    sorted_after.sort();
    sorted_expected.sort();
    assert_eq!(sorted_after, sorted_expected);
    let mut cleanup = args.clone();
    cleanup.push("--cleanup-only".into());
    istio_ok(&ns, choice, &cleanup);
    assert_eq!(istio_leftovers(&ns, backend, false), Vec::<String>::new());
    ns.exec_ok(&backend.iptables(false), ["-t", "nat", "-D", "OUTPUT", "-p", "tcp", "--dport", "123", "-j", "ACCEPT"]);
    assert!(!has_any_rule(&ns, backend, false));
    Ok(())
}

/// Upstream's `TestMixedIPv4Ipv6State` (§8.4): pre-existing IPv6 state, IPv6 on or off.
fn mixed_state(choice: Choice, istio_chain: bool, ipv6: bool) -> Ran {
    choice.available()?;
    let ns = pod("mixed");
    let backend = choice.backend();
    if istio_chain {
        iptables(&ns, backend, true, &["-t", "nat", "-N", "ISTIO_INBOUND"]);
        iptables(
            &ns,
            backend,
            true,
            &["-t", "nat", "-A", "ISTIO_INBOUND", "-p", "udp", "--dport", "123", "-j", "RETURN"],
        );
    } else {
        iptables(&ns, backend, true, &["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "123", "-j", "ACCEPT"]);
    }
    let v6_before = rules(&ns, backend, true);
    let args = sidecar_with(&[("--enable-inbound-ipv6", if ipv6 { "true" } else { "false" })]);
    let out = istio(&ns, choice, &args);
    if istio_chain && ipv6 {
        // The IPv6 restore hits the existing chain after IPv4 succeeded. Upstream leaves the
        // IPv4 rules in place (a half-captured pod); this run takes them back out.
        let log = failed(&out);
        assert!(log.contains("restore of the IPv6 rules failed"), "{log}");
        assert!(log.contains("Rolling back the IPv4 changes"), "{log}");
        assert_eq!(istio_leftovers(&ns, backend, false), Vec::<String>::new());
        assert!(!has_any_rule(&ns, backend, false), "{:#?}", rules(&ns, backend, false));
        assert_eq!(rules(&ns, backend, true), v6_before);
    } else {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!istio_leftovers(&ns, backend, false).is_empty());
        let v6 = rules(&ns, backend, true);
        if ipv6 {
            assert!(v6.iter().any(|r| r.contains("-j ISTIO_OUTPUT")), "{v6:#?}");
        } else {
            assert_eq!(v6, v6_before, "IPv6 state is not touched while IPv6 is off");
        }
    }
    Ok(())
}

/// A directory of links to the iptables programs, without any ip6tables: §8.5's "IPv6 not
/// available".
fn path_without_ip6tables(dir: &Path) -> String {
    for backend in Backend::ALL {
        for program in [backend.iptables(false), backend.save(false), backend.restore(false)] {
            let real = support::find_program(&program).unwrap_or_else(|| panic!("{program} not installed"));
            std::os::unix::fs::symlink(real, dir.join(&program)).expect("link");
        }
    }
    dir.to_string_lossy().into_owned()
}

/// Upstream's `TestIPv6NotAvailable` (§8.5): without ip6tables, IPv4-only pods are fine and
/// IPv6 pods fail before touching anything.
fn ipv6_not_available() -> Ran {
    Choice::Detected.available()?;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = path_without_ip6tables(dir.path());
    let ns = pod("noip6");
    let run = |ipv6: &str| {
        // `env` inside the namespace: `ip` itself still needs the normal PATH.
        let mut command = ns.command("env");
        command.arg(format!("PATH={path}")).arg(support::binary_under_test());
        command.args(sidecar_with(&[("--enable-inbound-ipv6", ipv6)]));
        command.output().expect("run")
    };
    let out = run("true");
    let log = failed(&out);
    assert!(log.contains("ip6tables"), "{log}");
    assert!(!has_any_rule(&ns, Backend::Nft, false), "nothing is applied when IPv6 detection fails");
    let out = run("false");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(has_any_rule(&ns, Backend::Nft, false));
    // Reconcile and cleanup with IPv6 off look for IPv6 leftovers, and go on without ip6tables.
    for flag in ["--reconcile", "--cleanup-only"] {
        let mut command = ns.command("env");
        command.arg(format!("PATH={path}")).arg(support::binary_under_test());
        command.args(sidecar_with(&[("--enable-inbound-ipv6", "false"), (flag, "")]));
        let out = command.output().expect("run");
        assert!(out.status.success(), "{flag}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(!has_any_rule(&ns, Backend::Nft, false));
    Ok(())
}

/// Detection never writes: after two detected runs on a fresh pod, legacy has no table at
/// all (upstream's probe leaves an empty legacy `nat` that makes the rerun pick legacy).
fn detection_is_not_self_priming() -> Ran {
    Choice::Detected.available()?;
    let ns = pod("priming");
    let args = sidecar_with(&[]);
    istio_ok(&ns, Choice::Detected, &args);
    istio_ok(&ns, Choice::Detected, &args);
    let legacy = support::iptables_save(&ns, &Backend::Legacy.save(false));
    assert!(!legacy.contains('*'), "legacy tables were created:\n{legacy}");
    assert!(!istio_leftovers(&ns, Backend::Nft, false).is_empty());
    Ok(())
}

/// Existing legacy rules make detection pick legacy; an empty legacy table (what upstream's
/// own probe leaves behind) does not.
fn detection_follows_real_legacy_rules_only() -> Ran {
    Choice::Forced(Backend::Legacy).available()?;
    Choice::Detected.available()?;
    let primed = pod("primed");
    iptables(&primed, Backend::Legacy, false, &["-t", "nat", "-A", "INPUT", "-p", "255", "-j", "RETURN"]);
    iptables(&primed, Backend::Legacy, false, &["-t", "nat", "-D", "INPUT", "-p", "255", "-j", "RETURN"]);
    istio_ok(&primed, Choice::Detected, &sidecar_with(&[]));
    assert!(!istio_leftovers(&primed, Backend::Nft, false).is_empty());
    assert!(!has_any_rule(&primed, Backend::Legacy, false));

    let legacy = pod("legacy");
    iptables(&legacy, Backend::Legacy, false, &["-A", "INPUT", "-p", "tcp", "--dport", "9999", "-j", "ACCEPT"]);
    istio_ok(&legacy, Choice::Detected, &sidecar_with(&[]));
    assert!(!istio_leftovers(&legacy, Backend::Legacy, false).is_empty());
    assert!(!has_any_rule(&legacy, Backend::Nft, false));
    let log = istio_ok(&legacy, Choice::Detected, &sidecar_with(&[]));
    assert!(log.contains("Found compatible residues"), "{log}");
    Ok(())
}

/// TPROXY routing for both families exists once after two runs (upstream adds a second
/// `ip rule` on every rerun), and `::6` is on `lo`.
fn tproxy_routes_are_idempotent_for_both_families() -> Ran {
    Choice::Detected.available()?;
    let ns = pod("routes");
    // The kernel refuses routes through a device that is down; pods have `lo` up.
    ns.loopback_up();
    let args = sidecar_with(&[("-m", "TPROXY"), ("--enable-inbound-ipv6", "true")]);
    istio_ok(&ns, Choice::Detected, &args);
    istio_ok(&ns, Choice::Detected, &args);
    for ipv6 in [false, true] {
        let rules = support::ip_rule_list(&ns, ipv6);
        assert_eq!(rules.matches("fwmark 0x539 lookup 133").count(), 1, "{rules}");
        let routes = support::ip_route_list(&ns, ipv6, "133");
        assert_eq!(routes.matches("local default dev lo").count(), 1, "{routes}");
    }
    let addresses = ns.exec_ok("ip", ["-6", "addr", "show", "dev", "lo"]);
    assert_eq!(addresses.matches("inet6 ::6/128").count(), 1, "{addresses}");
    Ok(())
}

/// With `--network-namespace`, detection looks at the named namespace (its legacy rules), not
/// at the one the binary started in.
fn detection_happens_in_the_entered_namespace() -> Ran {
    Choice::Forced(Backend::Legacy).available()?;
    Choice::Detected.available()?;
    let start = Netns::new("start");
    let target = pod("target");
    iptables(&target, Backend::Legacy, false, &["-A", "INPUT", "-p", "tcp", "--dport", "9999", "-j", "ACCEPT"]);
    let path = target.path().to_string_lossy().into_owned();
    istio_ok(&start, Choice::Detected, &sidecar_with(&[("--network-namespace", &path)]));
    assert!(!istio_leftovers(&target, Backend::Legacy, false).is_empty());
    assert!(!has_any_rule(&target, Backend::Nft, false));
    assert!(!has_any_rule(&start, Backend::Legacy, false) && !has_any_rule(&start, Backend::Nft, false));
    Ok(())
}

/// A pod with a v4 and a v6 address, `lo` up (the kernel refuses TPROXY's IPv6 route through a
/// device that is down).
fn dual_stack_pod(tag: &str) -> Netns {
    let ns = pod(tag);
    ns.loopback_up();
    ns.exec_ok("ip", ["-6", "addr", "add", "fd00::5/128", "dev", "lo", "nodad"]);
    ns
}

fn with_flag(args: &[String], flag: &str) -> Vec<String> {
    let mut args = args.to_vec();
    args.push(flag.into());
    args
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

/// The pod's own rules that look like Istio's (interface RETURNs, a mark RETURN on `lo`) and an
/// ordinary filter rule survive a sidecar run, a `--reconcile` to TPROXY with kube-virt and
/// `--cleanup-only`: only rules provably Istio's are removed.
fn pods_own_rules_survive(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod("own");
    let backend = choice.backend();
    let own: [(&str, &[&str]); 5] = [
        ("nat", &["-A", "PREROUTING", "-i", "eth1", "-j", "RETURN"]),
        ("nat", &["-A", "PREROUTING", "-i", "eth2", "-j", "RETURN"]),
        ("nat", &["-A", "OUTPUT", "-o", "eth1", "-j", "RETURN"]),
        ("mangle", &["-A", "OUTPUT", "-o", "lo", "-p", "tcp", "-m", "mark", "--mark", "7", "-j", "RETURN"]),
        ("filter", &["-A", "INPUT", "-p", "tcp", "--dport", "9999", "-j", "ACCEPT"]),
    ];
    for (table, rule) in own {
        let mut args = vec!["-t", table];
        args.extend(rule);
        iptables(&ns, backend, false, &args);
    }
    let own_rules = rules(&ns, backend, false);
    assert_eq!(own_rules.len(), 5, "{own_rules:#?}");
    let check = |expected_istio: Vec<String>| {
        let (istio, others): (Vec<String>, Vec<String>) =
            rules(&ns, backend, false).into_iter().partition(|r| !own_rules.contains(r));
        assert_eq!(sorted(others), sorted(own_rules.clone()), "the pod's own rules changed");
        assert_eq!(sorted(istio), sorted(expected_istio));
    };
    let sidecar = sidecar_with(&[]);
    istio_ok(&ns, choice, &sidecar);
    check(fresh_rules(choice, &sidecar, false));
    let tproxy = sidecar_with(&[("-m", "TPROXY"), ("--kube-virt-interfaces", "veth0"), ("-i", "10.0.0.0/8")]);
    istio_ok(&ns, choice, &with_flag(&tproxy, "--reconcile"));
    check(fresh_rules(choice, &tproxy, false));
    istio_ok(&ns, choice, &with_flag(&sidecar, "--cleanup-only"));
    check(Vec::new());
    Ok(())
}

/// TPROXY with a kube-virt interface, both families: `--cleanup-only` with another
/// configuration leaves nothing (the kube-virt RETURN goes with its ISTIO_REDIRECT jump), and a
/// `--reconcile` to the plain sidecar gives exactly a fresh pod's rules.
fn tproxy_kube_virt_is_removed(choice: Choice) -> Ran {
    choice.available()?;
    let backend = choice.backend();
    let ipv6 = ("--enable-inbound-ipv6", "true");
    let kube_virt =
        sidecar_with(&[("-m", "TPROXY"), ("--kube-virt-interfaces", "veth0"), ("-i", "10.0.0.0/8,fd00::/8"), ipv6]);
    let plain = sidecar_with(&[ipv6]);

    let ns = dual_stack_pod("kubevirt");
    istio_ok(&ns, choice, &kube_virt);
    for v6 in [false, true] {
        assert!(
            rules(&ns, backend, v6).iter().any(|r| r.contains("-i veth0 -j RETURN")),
            "{:#?}",
            rules(&ns, backend, v6)
        );
    }
    istio_ok(&ns, choice, &with_flag(&plain, "--cleanup-only"));
    for v6 in [false, true] {
        assert!(!has_any_rule(&ns, backend, v6), "{:#?}", rules(&ns, backend, v6));
    }

    istio_ok(&ns, choice, &kube_virt);
    istio_ok(&ns, choice, &with_flag(&plain, "--reconcile"));
    let reference = dual_stack_pod("reference");
    istio_ok(&reference, choice, &plain);
    for v6 in [false, true] {
        assert_eq!(rules(&ns, backend, v6), rules(&reference, backend, v6), "IPv6: {v6}");
    }
    Ok(())
}

/// A change only in built-in-chain rules (the kube-virt jump and RETURN go, the ISTIO chains
/// stay the same) is a delta for `--reconcile`: the `-C` checks alone find every planned rule.
fn reconcile_sees_built_in_chain_changes(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod("builtin");
    let backend = choice.backend();
    istio_ok(&ns, choice, &sidecar_with(&[("-m", "TPROXY"), ("-b", "8080"), ("--kube-virt-interfaces", "veth0")]));
    let now = sidecar_with(&[("-m", "TPROXY"), ("-b", "8080")]);
    let log = istio_ok(&ns, choice, &with_flag(&now, "--reconcile"));
    assert!(log.contains("Found residues of old iptables rules/chains, reconciliation is recommended"), "{log}");
    assert_eq!(rules(&ns, backend, false), fresh_rules(choice, &now, false));
    // Converged: the next reconcile changes nothing.
    let log = istio_ok(&ns, choice, &with_flag(&now, "--reconcile"));
    assert!(!log.contains("Running iptables restore"), "{log}");
    Ok(())
}

/// An IPv6-on run, then `--reconcile` or `--cleanup-only` with IPv6 off: the IPv6 rules go too
/// (upstream does not read IPv6 state while IPv6 is off, so they stay there forever).
fn ipv6_off_removes_ipv6_rules(choice: Choice) -> Ran {
    choice.available()?;
    let backend = choice.backend();
    let ns = dual_stack_pod("v6off");
    let on = sidecar_with(&[("--enable-inbound-ipv6", "true")]);
    let off = sidecar_with(&[("--enable-inbound-ipv6", "false")]);
    istio_ok(&ns, choice, &on);
    assert!(!istio_leftovers(&ns, backend, true).is_empty());
    istio_ok(&ns, choice, &with_flag(&off, "--reconcile"));
    assert!(!has_any_rule(&ns, backend, true), "{:#?}", rules(&ns, backend, true));
    assert_eq!(rules(&ns, backend, false), fresh_rules(choice, &off, false));

    istio_ok(&ns, choice, &with_flag(&on, "--reconcile"));
    assert!(!istio_leftovers(&ns, backend, true).is_empty());
    istio_ok(&ns, choice, &with_flag(&off, "--cleanup-only"));
    for v6 in [false, true] {
        assert!(!has_any_rule(&ns, backend, v6), "{:#?}", rules(&ns, backend, v6));
    }
    Ok(())
}
