//! `--report PATH` on the real binary: the JSON object a dry-run and a failed run leave behind;
//! and `doctor`'s own argument check.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::sidecar_argv::sidecar_argv_with;

fn tool() -> Command {
    let mut cmd = Command::cargo_bin("istio-iptables").expect("binary");
    cmd.env_clear().env("ENABLE_INBOUND_IPV6", "false");
    cmd
}

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("the report was written");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The dry-run's stdout without the comment lines naming each restore program.
fn rules_of(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout).lines().filter(|l| !l.starts_with("# ")).map(|l| format!("{l}\n")).collect()
}

#[test]
fn a_dry_run_reports_its_rules_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let output = tool().args(sidecar_argv_with(&["--dry-run", "--report"])).arg(&path).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let report = read_report(&path);
    assert_eq!(report["action"], "dry-run");
    assert_eq!(report["error"], Value::Null);
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(report["ipv6"]["enabled"], false);
    assert_eq!(report["ipv6"]["reason"], "forced by ENABLE_INBOUND_IPV6");
    assert_eq!(report["backend"]["kind"], "iptables");
    assert_eq!(report["subprocesses"]["count"], 0, "a dry-run runs no program");
    assert_eq!(report["rules"]["sha256"], sha256_hex(&rules_of(&output.stdout)), "the hash is of the printed rules");
    let printed_rules =
        rules_of(&output.stdout).lines().filter(|l| l.starts_with("-A ") || l.starts_with("-I ")).count();
    assert_eq!(report["rules"]["total"], printed_rules);
    assert!(report["duration_ms"].as_f64().unwrap() >= 0.0);
}

#[test]
fn a_native_nftables_dry_run_hashes_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let output = tool()
        .args(sidecar_argv_with(&["--dry-run", "--native-nftables"]))
        .env("ISTIO_IPTABLES_REPORT", &path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report = read_report(&path);
    assert_eq!(report["backend"]["kind"], "nftables");
    assert_eq!(report["backend"]["via"], "netlink");
    assert_eq!(report["rules"]["sha256"], sha256_hex(&String::from_utf8_lossy(&output.stdout)));
}

#[test]
fn a_bad_value_fails_with_exit_code_1_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    tool().args(sidecar_argv_with(&["--dry-run", "-b", "80 -j ACCEPT", "--report"])).arg(&path).assert().code(1);
    let report = read_report(&path);
    assert_eq!(report["action"], "failed");
    assert_eq!(report["error"]["exit_code"], 1);
    let message = report["error"]["message"].as_str().unwrap();
    assert!(message.contains("invalid value \"80 -j ACCEPT\" for --istio-inbound-ports"), "{message}");
    assert_eq!(report["rules"], Value::Null);
}

#[test]
fn warnings_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    // An unknown interception mode falls back to REDIRECT with upstream's warning.
    tool().args(sidecar_argv_with(&["--dry-run", "-m", "BOGUS", "--report"])).arg(&path).assert().success();
    let warnings = read_report(&path)["warnings"].clone();
    assert_eq!(warnings.as_array().map(Vec::len), Some(1), "{warnings}");
}

#[test]
fn a_report_that_cannot_be_written_is_a_warning() {
    let output = tool()
        .args(sidecar_argv_with(&["--dry-run", "--report", "/nonexistent-directory/report.json"]))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("could not write the run report to /nonexistent-directory/report.json"), "{stderr}");
}

#[test]
fn the_report_can_go_to_a_pipe() {
    // /dev/stdout is not a regular file here (a pipe): written directly, after the rules.
    let output = tool().args(sidecar_argv_with(&["--dry-run", "--report", "/dev/stdout"])).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json_at = stdout.find("{\n").expect("the report follows the rules");
    let report: Value = serde_json::from_str(&stdout[json_at..]).unwrap();
    assert_eq!(report["action"], "dry-run");
}

#[test]
fn doctor_rejects_an_unknown_output_format() {
    let output = tool().args(["doctor", "--output", "yaml"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid value \"yaml\" for --output: expected text or json"), "{stderr}");
}

#[test]
fn a_report_to_redirected_stdout_follows_the_rules() {
    // `--report /dev/stdout > file`: the report is added after the rules, which stay.
    let dir = tempfile::tempdir().unwrap();
    let captured = dir.path().join("stdout.txt");
    let file = std::fs::File::create(&captured).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_istio-iptables"))
        .env_clear()
        .env("ENABLE_INBOUND_IPV6", "false")
        .args(sidecar_argv_with(&["--dry-run", "--report", "/dev/stdout"]))
        .stdout(file)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let stdout = std::fs::read_to_string(&captured).unwrap();
    assert!(stdout.starts_with("# iptables-restore --noflush\n"), "{stdout}");
    let json_at = stdout.find("{\n").expect("the report follows the rules");
    let report: Value = serde_json::from_str(&stdout[json_at..]).unwrap();
    assert_eq!(report["rules"]["sha256"], sha256_hex(&rules_of(&stdout.as_bytes()[..json_at])));
    assert!(std::fs::symlink_metadata("/dev/stdout").map(|m| m.file_type().is_symlink()).unwrap_or(true));
}
