//! TPROXY policy routing is recognised exactly: only a plain `fwmark M lookup T` rule counts as
//! already configured, so look-alike rules a pod may have cannot stop ours from being added.
//! Runs the real binary in throwaway namespaces; needs root.

use libtest_mimic::Trial;

use crate::apply_support::{istio_ok, sidecar_with, Choice};
use crate::support::{self, Ran, Topology, TopologyOptions};

pub fn tests() -> Vec<Trial> {
    kernel_tests![look_alike_rules_do_not_count_as_the_tproxy_rule: [nft]]
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
