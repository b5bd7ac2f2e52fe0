//! Golden tests of `istio-iptables explain` text output: every file under `testdata/explain/` is
//! one configuration (the run's `env:`, `arg:` and `nameserver:` lines, as in
//! `testdata/golden/`) followed by packets to explain, each a `--- explain: FLAGS…` line and the
//! text the binary must print for it. Adding a packet is adding a section; adding a
//! configuration is adding a file. `UPDATE_GOLDEN=1 cargo test --test explain_golden` rewrites
//! the expected text from the current output (read the diff before committing).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pretty_assertions::assert_eq;

#[derive(Debug, Default)]
struct Case {
    header: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    nameservers: Vec<String>,
    packets: Vec<Packet>,
}

#[derive(Debug)]
struct Packet {
    /// The explain flags, whitespace-separated on the section line.
    flags: String,
    expected: String,
}

fn parse_case(path: &Path) -> Case {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut case = Case::default();
    for line in text.split_inclusive('\n') {
        if let Some(flags) = line.strip_prefix("--- explain:") {
            case.packets.push(Packet { flags: flags.trim().to_string(), expected: String::new() });
            continue;
        }
        if let Some(packet) = case.packets.last_mut() {
            packet.expected.push_str(line);
            continue;
        }
        case.header.push_str(line);
        let line = line.trim_end_matches('\n');
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, value) = line.split_once(": ").unwrap_or_else(|| (line.trim_end_matches(':'), ""));
        match key {
            "arg" => case.args.push(value.to_string()),
            "env" => {
                let (k, v) = value.split_once('=').expect("env: NAME=VALUE");
                case.env.push((k.to_string(), v.to_string()));
            }
            "nameserver" => case.nameservers.push(value.to_string()),
            other => panic!("{}: unknown key {other:?}", path.display()),
        }
    }
    case
}

struct Outcome {
    exit: i32,
    stdout: String,
    stderr: String,
}

fn explain(case: &Case, packet: &Packet, resolv: &Path) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_istio-iptables"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(case.env.iter().map(|(k, v)| (k, v)))
        .arg("explain")
        .arg("--resolv-conf")
        .arg(resolv)
        .args(&case.args)
        .args(packet.flags.split_whitespace());
    let output = cmd.output().expect("run istio-iptables explain");
    Outcome {
        exit: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn case_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/explain");
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("read testdata/explain") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "case") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn explain_golden_cases() {
    let files = case_files();
    assert!(files.len() >= 28, "expected a case per upstream configuration, found {}", files.len());
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for path in &files {
        let case = parse_case(path);
        assert!(!case.packets.is_empty(), "{}: no `--- explain:` section", path.display());
        let dir = tempfile::tempdir().expect("tempdir");
        let resolv = dir.path().join("resolv.conf");
        let lines: String = case.nameservers.iter().map(|s| format!("nameserver {s}\n")).collect();
        fs::write(&resolv, lines).expect("write resolv.conf");
        let mut rewritten = case.header.clone();
        for packet in &case.packets {
            let outcome = explain(&case, packet, &resolv);
            let name = format!("{} [{}]", path.display(), packet.flags);
            assert_eq!(outcome.exit, 0, "{name}: exit status; stderr:\n{}", outcome.stderr);
            rewritten.push_str(&format!("--- explain: {}\n{}", packet.flags, outcome.stdout));
            if !update && outcome.stdout != packet.expected {
                failures.push((name, packet.expected.clone(), outcome.stdout));
            }
        }
        if update {
            fs::write(path, rewritten).expect("update golden");
        }
    }
    if let Some((name, expected, actual)) = failures.first() {
        let names: Vec<&str> = failures.iter().map(|(n, _, _)| n.as_str()).collect();
        eprintln!("{} explain golden sections differ:\n  {}", failures.len(), names.join("\n  "));
        assert_eq!(expected, actual, "{name} (UPDATE_GOLDEN=1 rewrites the expected text)");
    }
}

/// A bad packet description is an error naming the flag, exit 1, with nothing on stdout.
#[test]
fn bad_packet_descriptions_exit_1_naming_the_flag() {
    let cases: [(&[&str], &str); 5] = [
        (&["--to", "10.0.0.1:80"], "--direction"),
        (&["--direction", "outbound"], "--to"),
        (&["--direction", "outbound", "--to", "10.0.0.1"], "--to"),
        (&["--direction", "inbound", "--to", "10.0.0.1:80", "--uid", "5"], "--uid"),
        (&["--direction", "inbound", "--to", "10.0.0.1:80", "--output", "xml"], "--output"),
    ];
    for (flags, named) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_istio-iptables"))
            .env_clear()
            .args(["explain", "--enable-inbound-ipv6=false"])
            .args(flags)
            .output()
            .expect("run istio-iptables explain");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{flags:?}: {stderr}");
        assert!(stderr.contains(&format!("for {named}:")), "{flags:?} should name {named}: {stderr}");
        assert!(output.stdout.is_empty(), "{flags:?}");
    }
}

/// Without the `explain` word the same argv is a plain run (here a dry run printing rules).
#[test]
fn a_plain_run_is_unchanged_by_the_subcommand() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_istio-iptables")).env_clear().args(args).output().expect("run istio-iptables")
    };
    let plain = run(&["--dry-run", "--enable-inbound-ipv6=false", "-p", "15001"]);
    let worded = run(&["istio-iptables", "--dry-run", "--enable-inbound-ipv6=false", "-p", "15001"]);
    assert!(plain.status.success());
    assert_eq!(String::from_utf8_lossy(&plain.stdout), String::from_utf8_lossy(&worded.stdout));
    assert!(String::from_utf8_lossy(&plain.stdout).contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"));
}
