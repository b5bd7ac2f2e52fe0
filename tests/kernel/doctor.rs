//! `istio-iptables doctor`: it leaves the namespace it examines exactly as it was (its probes
//! run in a throwaway namespace), so it cannot prime detection (istio #61019), and it reports
//! the backend that holds the rules.

use libtest_mimic::Trial;
use serde_json::Value;

use crate::apply_support::{istio_ok, pod, rules, sidecar_with, Choice};
use crate::support::{self, Backend, Netns, Ran};

pub fn tests() -> Vec<Trial> {
    kernel_tests![doctor_leaves_a_fresh_namespace_untouched, doctor_reports_legacy_rules]
}

fn doctor(ns: &Netns) -> Value {
    let out = support::run_istio_iptables(ns, &["doctor", "--output", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "doctor failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Everything netfilter shows in `ns`: both iptables variants and families, and nftables.
fn everything(ns: &Netns) -> Vec<String> {
    let mut all = Vec::new();
    for backend in [Backend::Legacy, Backend::Nft] {
        for ipv6 in [false, true] {
            all.extend(support::normalize_save(&support::iptables_save(ns, &backend.save(ipv6))));
        }
    }
    all.extend(support::nft_list_ruleset(ns).lines().map(str::to_string));
    all.extend(
        ns.exec_ok("cat", ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"]).lines().map(str::to_string),
    );
    all
}

fn doctor_leaves_a_fresh_namespace_untouched() -> Ran {
    Choice::Forced(Backend::Legacy).available()?;
    Choice::Detected.available()?;
    Choice::Native.available()?;
    let ns = pod("doctor");
    assert_eq!(everything(&ns), Vec::<String>::new(), "a fresh namespace");
    let report = doctor(&ns);
    assert_eq!(everything(&ns), Vec::<String>::new(), "doctor left something behind");

    let choice = &report["detection"]["families"][0]["choice"];
    assert_eq!(choice["program"], "iptables-nft", "{report:#}");
    assert_eq!(choice["evidence"], "nft chosen: the kernel lists no legacy table");
    // Its probes ran (elsewhere) and found what this kernel offers; the kernel tests need it all.
    let probes = report["probes"]["iptables"].as_array().expect("probes ran");
    assert!(probes.iter().any(|p| p["program"] == "iptables-legacy" && p["feature"] == "TPROXY"), "{report:#}");
    for probe in probes {
        assert_eq!(probe["result"]["usable"], true, "{probe:#}");
    }
    assert_eq!(report["probes"]["nftables_inet"]["usable"], true, "{report:#}");

    // A run after doctor detects exactly as in a namespace doctor never saw: nft.
    istio_ok(&ns, Choice::Detected, &sidecar_with(&[]));
    let reference = pod("doctor-reference");
    istio_ok(&reference, Choice::Detected, &sidecar_with(&[]));
    assert!(!rules(&ns, Backend::Nft, false).is_empty());
    assert_eq!(rules(&ns, Backend::Nft, false), rules(&reference, Backend::Nft, false));
    assert!(rules(&ns, Backend::Legacy, false).is_empty(), "legacy must stay empty");
    Ok(())
}

fn doctor_reports_legacy_rules() -> Ran {
    let choice = Choice::Forced(Backend::Legacy);
    choice.available()?;
    let ns = pod("doctor-legacy");
    istio_ok(&ns, choice, &sidecar_with(&[]));
    let before = everything(&ns);
    let report = doctor(&ns);
    assert_eq!(everything(&ns), before, "doctor changed the namespace");
    let detected = &report["detection"]["families"][0]["choice"];
    assert_eq!(detected["program"], "iptables-legacy", "{report:#}");
    assert_eq!(detected["evidence"], "legacy tables hold rules");
    let legacy = report["rules"].as_array().unwrap().iter().find(|h| h["program"] == "iptables-legacy").cloned();
    let planned = rules(&ns, Backend::Legacy, false).iter().filter(|l| l.contains(": -A ")).count();
    assert_eq!(legacy.map(|h| h["rules"].clone()), Some(Value::from(planned)), "{report:#}");
    Ok(())
}
