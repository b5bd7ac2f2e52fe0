//! The in-memory rerun verdict against real iptables: every golden configuration
//! (`testdata/golden/upstream/` and the argv of `testdata/golden/nftables/`) is applied for real,
//! then run again; the rerun must find every planned rule in its one `-save` (the debug line
//! "rules verified in memory"), with no `-C` fallback and no restore. This is what proves the
//! `-save` forms the binary renders from the plan (`src/render/save.rs`) on legacy and nft.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use libtest_mimic::Trial;

use crate::apply_support::{pod, Choice};
use crate::support::{self, Netns, Ran};

pub fn tests() -> Vec<Trial> {
    kernel_tests![every_golden_configuration: [legacy, nft]]
}

/// A golden case's configuration: its argv (without `--dry-run` and `--native-nftables`), its
/// environment and its resolv.conf nameservers.
struct Configuration {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    nameservers: Vec<String>,
}

fn configurations() -> Vec<Configuration> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden");
    let mut found = Vec::new();
    for dir in ["upstream", "nftables"] {
        let mut paths: Vec<PathBuf> = fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|entry| entry.expect("dir entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "case"))
            .collect();
        paths.sort();
        found.extend(paths.iter().filter_map(|path| parse(path, dir)));
    }
    found
}

/// Reads the header of a case file; `None` for a case that expects a failure.
fn parse(path: &Path, dir: &str) -> Option<Configuration> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let mut config = Configuration { name: format!("{dir}/{stem}"), args: vec![], env: vec![], nameservers: vec![] };
    for line in text.lines().take_while(|line| !line.starts_with("--- ")) {
        let Some((key, value)) = line.split_once(": ") else { continue };
        match key {
            "arg" if value == "--dry-run" || value == "--native-nftables" => {}
            "arg" => config.args.push(value.to_string()),
            "env" => {
                let (name, value) = value.split_once('=').expect("env: NAME=VALUE");
                config.env.push((name.to_string(), value.to_string()));
            }
            "nameserver" => config.nameservers.push(value.to_string()),
            "exit" if value != "0" => return None,
            _ => {}
        }
    }
    Some(config)
}

fn run(ns: &Netns, choice: Choice, config: &Configuration, resolv: &Path) -> Output {
    let mut command = ns.command(support::binary_under_test());
    command.envs(config.env.iter().map(|(k, v)| (k, v))).arg("--resolv-conf").arg(resolv).args(&config.args).args([
        "--force-iptables-binary",
        choice.backend().name(),
        "--log_output_level=default:debug",
    ]);
    command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

/// Owner names that this machine's passwd/group do not have make iptables itself refuse the
/// rule (`Bad value for "--gid-owner"`); such a configuration cannot be applied here at all.
fn unknown_owner_name(stderr: &str) -> bool {
    stderr.contains("Bad value for \"--gid-owner\"") || stderr.contains("Bad value for \"--uid-owner\"")
}

fn every_golden_configuration(choice: Choice) -> Ran {
    choice.available()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut verified, mut not_applicable) = (0, Vec::new());
    for config in configurations() {
        let resolv = dir.path().join("resolv.conf");
        let lines: String = config.nameservers.iter().map(|s| format!("nameserver {s}\n")).collect();
        fs::write(&resolv, lines).expect("write resolv.conf");
        let ns = pod("verdict");
        ns.loopback_up();
        // IPv6 is decided from the pod's addresses, as in a real pod.
        ns.exec_ok("ip", ["addr", "add", "fd00::1/128", "dev", "lo"]);
        let first = run(&ns, choice, &config, &resolv);
        let first_log = String::from_utf8_lossy(&first.stderr);
        if !first.status.success() && unknown_owner_name(&first_log) {
            not_applicable.push(config.name.clone());
            continue;
        }
        assert!(first.status.success(), "{}: first apply failed:\n{first_log}", config.name);
        let rerun = run(&ns, choice, &config, &resolv);
        let log = String::from_utf8_lossy(&rerun.stderr);
        assert!(rerun.status.success(), "{}: rerun failed:\n{log}", config.name);
        assert!(log.contains("IPv4 rules verified in memory"), "{}: no in-memory verdict:\n{log}", config.name);
        assert!(!log.contains("not verified in memory"), "{}: fell back to -C:\n{log}", config.name);
        assert!(!log.contains("Running iptables restore"), "{}: an identical rerun restored:\n{log}", config.name);
        let ipv6 = first_log.contains("ip6tables")
            || config.env.iter().any(|(k, v)| k == "ENABLE_INBOUND_IPV6" && v == "true");
        if ipv6 {
            assert!(
                log.contains("IPv6 rules verified in memory"),
                "{}: no IPv6 in-memory verdict:\n{log}",
                config.name
            );
        }
        verified += 1;
    }
    // Only the owner-name cases may be left out, and most configurations must have run.
    assert!(not_applicable.iter().all(|name| name.contains("owner-groups")), "{not_applicable:?}");
    assert!(verified >= 40, "only {verified} configurations verified; not applicable: {not_applicable:?}");
    Ok(())
}
