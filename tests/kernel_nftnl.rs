//! The netlink path of `--native-nftables` (the default; `ISTIO_NFT_APPLY=nft` selects `nft -f -`)
//! against the reference: for each configuration, one fresh namespace gets the ruleset from
//! `nft -f -` and another from netlink, and both must list identically, rule for rule and in
//! bytecode (`nft --debug=netlink list ruleset`). Also: unchanged reruns touch nothing, a refused
//! batch leaves the previous ruleset in place, and the netlink path runs no program at all.
//!
//! Needs root, `ip` and `nft`; skipped otherwise unless ISTIO_IPTABLES_KERNEL_TESTS=require.

mod support;

use std::fs;
use std::path::Path;
use std::process::Output;

use support::Netns;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A configuration: arguments, environment, resolv.conf nameservers.
#[derive(Debug, Clone, Default)]
struct Setup {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    nameservers: Vec<String>,
}

/// The command line of an upstream nftables golden case, without its `--dry-run`.
fn parse_case(path: &Path) -> Setup {
    let text = fs::read_to_string(path).unwrap();
    let mut setup = Setup { name: path.file_stem().unwrap().to_string_lossy().into_owned(), ..Setup::default() };
    for line in text.lines() {
        if line.starts_with("--- ") {
            break;
        }
        let Some((key, value)) = line.split_once(": ") else { continue };
        match key {
            "arg" if value != "--dry-run" => setup.args.push(value.to_string()),
            "env" => {
                let (k, v) = value.split_once('=').unwrap();
                setup.env.push((k.to_string(), v.to_string()));
            }
            "nameserver" => setup.nameservers.push(value.to_string()),
            _ => {}
        }
    }
    if !setup.env.iter().any(|(k, _)| k == "ENABLE_INBOUND_IPV6") {
        setup.env.push(("ENABLE_INBOUND_IPV6".into(), "false".into()));
    }
    setup
}

fn upstream_cases() -> Vec<Setup> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden/nftables");
    let mut paths: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.retain(|p| p.extension().is_some_and(|e| e == "case"));
    paths.sort();
    paths.iter().map(|p| parse_case(p)).collect()
}

/// Runs the binary in `ns` with `mode` as `ISTIO_NFT_APPLY` (None: unset) and `path` as `PATH`.
fn run_in(ns: &Netns, setup: &Setup, mode: Option<&str>, path: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    fs::write(&resolv, setup.nameservers.iter().map(|s| format!("nameserver {s}\n")).collect::<String>()).unwrap();
    let mut command = ns.command(support::binary_under_test());
    command.env_clear().env("PATH", path);
    for (k, v) in &setup.env {
        command.env(k, v);
    }
    if let Some(mode) = mode {
        command.env("ISTIO_NFT_APPLY", mode);
    }
    command.arg("--resolv-conf").arg(&resolv).args(&setup.args);
    command.output().unwrap()
}

fn run(ns: &Netns, setup: &Setup, mode: Option<&str>) -> Output {
    run_in(ns, setup, mode, PATH)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `nft --debug=netlink list ruleset` without what differs between two equal rulesets built by
/// different batches: rule handles and the numbers the kernel gave anonymous sets.
fn bytecode(ns: &Netns) -> String {
    let text = ns.exec_ok("nft", ["--debug=netlink", "list", "ruleset"]);
    normalize(&text)
}

fn normalize(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = anonymize_sets(line);
        // "inet <table> <chain> <handle> [<previous handle>]" headers of rule bytecode.
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if tokens.first() == Some(&"inet") && tokens.len() > 3 && tokens[3..].iter().all(|t| t.parse::<u64>().is_ok()) {
            out.push_str(&tokens[..3].join(" "));
        } else {
            out.push_str(&line);
        }
        out.push('\n');
    }
    out
}

fn anonymize_sets(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("__set") {
        out.push_str(&rest[..at + 5]);
        rest = rest[at + 5..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Applies `setup` with `nft -f -` and over netlink in two fresh namespaces and compares.
/// Returns false when the reference run itself fails (then netlink must fail too).
fn compare(setup: &Setup) -> bool {
    let reference = Netns::new("nftref");
    let native = Netns::new("nftnl");
    // TPROXY route setup needs a running loopback.
    reference.loopback_up();
    native.loopback_up();
    let by_nft = run(&reference, setup, Some("nft"));
    let by_netlink = run(&native, setup, None);
    if !by_nft.status.success() {
        assert!(
            !by_netlink.status.success(),
            "{}: nft refused it but netlink applied it\n--- nft stderr ---\n{}",
            setup.name,
            stderr(&by_nft)
        );
        assert_eq!(by_netlink.status.code(), Some(1), "{}: {}", setup.name, stderr(&by_netlink));
        assert_eq!(reference.exec_ok("nft", ["list", "ruleset"]), "", "{}", setup.name);
        assert_eq!(native.exec_ok("nft", ["list", "ruleset"]), "", "{}", setup.name);
        return false;
    }
    assert!(by_netlink.status.success(), "{}: netlink apply failed\n{}", setup.name, stderr(&by_netlink));
    pretty_assertions::assert_eq!(bytecode(&reference), bytecode(&native), "{}: bytecode differs", setup.name);
    pretty_assertions::assert_eq!(
        normalize(&reference.exec_ok("nft", ["list", "ruleset"])),
        normalize(&native.exec_ok("nft", ["list", "ruleset"])),
        "{}: listing differs",
        setup.name
    );
    true
}

fn kernel_ready() -> bool {
    support::require_programs_or_skip(&["nft", "ip"])
}

#[test]
fn upstream_cases_commit_over_netlink_exactly_what_nft_writes() {
    if !kernel_ready() {
        return;
    }
    let mut compared = 0;
    let mut refused = Vec::new();
    for setup in upstream_cases() {
        if compare(&setup) {
            compared += 1;
        } else {
            refused.push(setup.name.clone());
        }
    }
    eprintln!("compared {compared} upstream cases; refused by both (unknown owner names): {refused:?}");
    assert!(compared >= 20, "only {compared} cases applied");
}
