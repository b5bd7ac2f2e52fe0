//! IPv6 detection from real interface addresses (no `ENABLE_INBOUND_IPV6`), in throwaway
//! namespaces. Dry-run only: nothing is applied.

use libtest_mimic::Trial;

use crate::support::{self, Netns, Ran, Topology, TopologyOptions};

pub fn tests() -> Vec<Trial> {
    kernel_tests![
        only_loopback_is_upstreams_error_even_in_dry_run,
        ipv4_pod_gets_ipv4_rules_only,
        ipv6_only_pod_gets_ipv6_rules,
        dual_stack_pod_needs_dual_stack_flag_for_ipv6,
    ]
}

fn dry_run(ns: &Netns, extra: &[&str]) -> std::process::Output {
    dry_run_with_env(ns, &[], extra)
}

/// Runs a dry-run in the namespace with only PATH and `env` set, so nothing leaks in.
fn dry_run_with_env(ns: &Netns, env: &[(&str, &str)], extra: &[&str]) -> std::process::Output {
    let mut cmd = ns.command(support::binary_under_test());
    cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).envs(env.iter().copied());
    cmd.args(["--dry-run", "-u", "1337", "--log_output_level=default:error"]).args(extra);
    cmd.output().expect("run istio-iptables in the namespace")
}

fn has_ipv6_script(out: &std::process::Output) -> bool {
    String::from_utf8_lossy(&out.stdout).contains("# ip6tables-restore --noflush")
}

fn only_loopback_is_upstreams_error_even_in_dry_run() -> Ran {
    support::require_root()?;
    let ns = Netns::new("detect-lo");
    ns.loopback_up();
    let out = dry_run(&ns, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no valid local IP address found"));
    // The extension bypasses detection.
    let forced = dry_run_with_env(&ns, &[("ENABLE_INBOUND_IPV6", "false")], &[]);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    Ok(())
}

fn ipv4_pod_gets_ipv4_rules_only() -> Ran {
    support::require_root()?;
    let topo = Topology::new(TopologyOptions::ipv4());
    let out = dry_run(&topo.app, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!has_ipv6_script(&out));
    Ok(())
}

fn ipv6_only_pod_gets_ipv6_rules() -> Ran {
    support::require_root()?;
    let topo = Topology::new(TopologyOptions::ipv6_only());
    let out = dry_run(&topo.app, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(has_ipv6_script(&out));
    Ok(())
}

fn dual_stack_pod_needs_dual_stack_flag_for_ipv6() -> Ran {
    support::require_root()?;
    let topo = Topology::new(TopologyOptions::dual_stack());
    // The IPv4 address is listed first, so without --dual-stack upstream decides "IPv4 only".
    assert!(!has_ipv6_script(&dry_run(&topo.app, &[])));
    assert!(has_ipv6_script(&dry_run(&topo.app, &["--dual-stack"])));
    assert!(has_ipv6_script(&dry_run_with_env(&topo.app, &[("ISTIO_DUAL_STACK", "true")], &[])));
    Ok(())
}
