//! TPROXY policy routing is recognised exactly: only a plain `fwmark M lookup T` rule counts as
//! already configured, so look-alike rules a pod may have cannot stop ours from being added;
//! `--cleanup-only` and `--reconcile` remove exactly ours (this configuration's mark and table),
//! for IPv4 and IPv6, and keep the pod's own policy routing.
//! Runs the real binary in throwaway namespaces; needs root.

use libtest_mimic::Trial;

use crate::apply_support::{istio_ok, pod, sidecar_with, Choice};
use crate::support::{self, Netns, Ran, Topology, TopologyOptions};

pub fn tests() -> Vec<Trial> {
    kernel_tests![
        look_alike_rules_do_not_count_as_the_tproxy_rule: [nft],
        cleanup_only_removes_tproxy_routing: [legacy, nft, native],
        reconcile_to_redirect_leaves_the_routing_of_a_fresh_pod: [legacy, nft, native],
        reconcile_to_another_mark_keeps_the_old_marks_rule: [nft],
    ]
}

/// A pod with `lo` up (the kernel refuses routes through a device that is down) and the pod's
/// own policy routing: a rule and a local route in a table of its own, and a route in table 133.
fn pod_with_own_routing(tag: &str) -> Netns {
    let ns = pod(tag);
    ns.loopback_up();
    ns.exec_ok("ip", ["rule", "add", "fwmark", "7", "lookup", "70"]);
    ns.exec_ok("ip", ["route", "add", "local", "default", "dev", "lo", "table", "70"]);
    ns.exec_ok("ip", ["route", "add", "10.9.0.0/16", "dev", "lo", "table", "133"]);
    ns
}

/// The pod's own routing from [`pod_with_own_routing`] is all still there.
fn assert_pods_routing_stays(ns: &Netns) {
    let rules = support::ip_rule_list(ns, false);
    assert!(rules.contains("from all fwmark 0x7 lookup 70"), "{rules}");
    assert!(support::ip_route_list(ns, false, "70").contains("local default dev lo"));
    assert!(support::ip_route_list(ns, false, "133").contains("10.9.0.0/16 dev lo"));
}

fn tproxy_routing_count(ns: &Netns, ipv6: bool) -> (usize, usize) {
    let rules = support::ip_rule_list(ns, ipv6).matches("fwmark 0x539 lookup 133").count();
    let routes = support::ip_route_list(ns, ipv6, "133").matches("local default dev lo").count();
    (rules, routes)
}

fn cleanup_only_removes_tproxy_routing(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod_with_own_routing("rt-cleanup");
    let tproxy = sidecar_with(&[("-m", "TPROXY"), ("--enable-inbound-ipv6", "true")]);
    istio_ok(&ns, choice, &tproxy);
    for ipv6 in [false, true] {
        assert_eq!(tproxy_routing_count(&ns, ipv6), (1, 1), "ipv6={ipv6}: TPROXY routing installed");
    }
    let mut cleanup = tproxy.clone();
    cleanup.push("--cleanup-only".into());
    istio_ok(&ns, choice, &cleanup);
    for ipv6 in [false, true] {
        assert_eq!(tproxy_routing_count(&ns, ipv6), (0, 0), "ipv6={ipv6}: TPROXY routing left");
    }
    assert_pods_routing_stays(&ns);
    // Again: nothing to remove is fine.
    istio_ok(&ns, choice, &cleanup);
    Ok(())
}

fn reconcile_to_redirect_leaves_the_routing_of_a_fresh_pod(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod_with_own_routing("rt-reconcile");
    istio_ok(&ns, choice, &sidecar_with(&[("-m", "TPROXY")]));
    assert_eq!(tproxy_routing_count(&ns, false), (1, 1));
    let redirect = sidecar_with(&[("--reconcile", "")]);
    istio_ok(&ns, choice, &redirect);
    let fresh = pod_with_own_routing("rt-fresh");
    istio_ok(&fresh, choice, &redirect);
    for ipv6 in [false, true] {
        assert_eq!(support::ip_rule_list(&ns, ipv6), support::ip_rule_list(&fresh, ipv6), "ipv6={ipv6}");
    }
    assert_eq!(support::ip_route_list(&ns, false, "133"), support::ip_route_list(&fresh, false, "133"));
    assert_pods_routing_stays(&ns);
    Ok(())
}

/// Only this configuration's mark and table prove a rule Istio's: a reconcile to `-t 1338 -r 134`
/// adds those and cannot know that 1337/133 were Istio's (a documented limitation).
fn reconcile_to_another_mark_keeps_the_old_marks_rule(choice: Choice) -> Ran {
    choice.available()?;
    let ns = pod_with_own_routing("rt-mark");
    istio_ok(&ns, choice, &sidecar_with(&[("-m", "TPROXY")]));
    istio_ok(&ns, choice, &sidecar_with(&[("-m", "TPROXY"), ("-t", "1338"), ("-r", "134"), ("--reconcile", "")]));
    let rules = support::ip_rule_list(&ns, false);
    assert!(rules.contains("fwmark 0x53a lookup 134"), "{rules}");
    assert_eq!(tproxy_routing_count(&ns, false), (1, 1), "{rules}");
    Ok(())
}

/// `ip rule` lines that send mark 1337 (0x539) to table 133, without `not` or other selectors.
fn plain_mark_rules(rules: &str) -> usize {
    rules
        .lines()
        .filter(|line| line.split_once(':').is_some_and(|(_, rule)| rule.trim() == "from all fwmark 0x539 lookup 133"))
        .count()
}

fn look_alike_rules_do_not_count_as_the_tproxy_rule(choice: Choice) -> Ran {
    choice.available()?;
    let net = Topology::new(TopologyOptions::ipv4());
    for look_alike in [
        &["not", "fwmark", "1337", "lookup", "133"][..],
        &["fwmark", "1337", "lookup", "133", "suppress_prefixlength", "0"],
    ] {
        net.app.exec_ok("ip", ["rule", "add"].iter().chain(look_alike.iter()).copied().collect::<Vec<_>>());
    }
    assert_eq!(plain_mark_rules(&support::ip_rule_list(&net.app, false)), 0);
    let tproxy = sidecar_with(&[("-m", "TPROXY")]);
    istio_ok(&net.app, choice, &tproxy);
    istio_ok(&net.app, choice, &tproxy);
    let rules = support::ip_rule_list(&net.app, false);
    assert_eq!(plain_mark_rules(&rules), 1, "exactly one real TPROXY rule after two runs:\n{rules}");
    assert!(rules.contains("not from all fwmark 0x539 lookup 133"), "the pod's own rule stays:\n{rules}");
    Ok(())
}
