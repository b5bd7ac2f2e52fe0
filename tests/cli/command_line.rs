//! The command-line surface, on the real binary: help, version, errors and exit codes, where
//! output goes, and how flags and the environment combine.

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;

use crate::sidecar_argv::sidecar_argv_with;

/// The injected sidecar argv as a dry-run.
fn sidecar() -> Vec<&'static str> {
    sidecar_argv_with(&["--dry-run"])
}

/// The binary with a clean environment and IPv6 forced off, so no host state leaks in.
fn tool() -> Command {
    let mut cmd = Command::cargo_bin("istio-iptables").expect("binary");
    cmd.env_clear().env("ENABLE_INBOUND_IPV6", "false");
    cmd
}

#[test]
fn help_lists_every_flag_and_exits_zero() {
    let assert = tool().arg("--help").assert().success().stderr("");
    let help = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    for def in istio_iptables::cli::FLAGS {
        assert!(help.contains(&format!("--{}", def.long)), "--help lacks --{}", def.long);
    }
    tool().arg("-h").assert().success().stdout(contains("--istio-inbound-ports"));
}

#[test]
fn version_is_printed() {
    tool().arg("--version").assert().success().stdout(contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn unknown_flags_exit_255_with_pflag_wording() {
    tool().arg("--foo").assert().code(255).stdout("").stderr(contains("Error: unknown flag: --foo"));
    tool().arg("-y").assert().code(255).stderr(contains("unknown shorthand flag: 'y' in -y"));
    tool().arg("--iptables-trace-logging").assert().code(255);
}

#[test]
fn a_misspelt_subcommand_exits_255_instead_of_running() {
    // --dry-run: were the word ignored (upstream), this would run, and must not touch the host.
    let mut misspelt = vec!["istio-iptables", "chek"];
    misspelt.extend(sidecar());
    tool()
        .args(&misspelt)
        .assert()
        .code(255)
        .stdout("")
        .stderr(contains("unknown command \"chek\" (did you mean check?)"));
    tool().args(["foo", "--dry-run"]).assert().code(255).stdout("").stderr(contains("unknown command \"foo\""));
    // The injected form, with its leading word, still runs; so does a positional after a flag.
    let mut injected = vec!["istio-iptables"];
    injected.extend(sidecar());
    tool().args(&injected).assert().success().stdout(contains("ISTIO_OUTPUT"));
    tool().args(["--dry-run", "--drop-invalid", "false"]).assert().success();
}

#[test]
fn unparsable_typed_values_exit_255() {
    tool().arg("--dry-run=yes").assert().code(255).stderr(contains("invalid argument \"yes\""));
    tool().arg("--probe-timeout=abc").assert().code(255);
    tool().arg("--iptables-probe-port=70000").assert().code(255).stderr(contains("out of range"));
    tool().arg("--envoy-port").assert().code(255).stderr(contains("flag needs an argument"));
    tool()
        .args(["--dry-run", "--log_output_level=default:bogus"])
        .assert()
        .code(255)
        .stderr(contains("invalid output level 'bogus'"));
}

#[test]
fn configuration_errors_exit_1_with_nothing_on_stdout() {
    tool()
        .args(["--dry-run", "-u", "1", "-x", "*"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains("invalid value for OUTBOUND_IP_RANGES_EXCLUDE"));
    tool()
        .args(["--dry-run", "-u", "1", "--force-iptables-binary=legacyy"])
        .assert()
        .code(1)
        .stderr(contains("invalid FORCE_IPTABLES_BINARY value \"legacyy\""));
}

#[test]
fn dry_run_prints_only_rules_on_stdout_and_logs_on_stderr() {
    let assert = tool().args(["istio-iptables"]).args(sidecar()).assert().success();
    let out = assert.get_output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("# iptables-restore --noflush\n* nat\n"), "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with('#') || l.starts_with('*') || l.starts_with('-') || l == "COMMIT"));
    assert!(!stdout.contains("ip6tables"), "IPv6 is off");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\tinfo\tIstio config:"), "{stderr}");
}

#[test]
fn ipv6_script_follows_the_ipv4_one_when_enabled() {
    tool().env("ENABLE_INBOUND_IPV6", "true").args(sidecar()).assert().success().stdout(
        contains("COMMIT\n# ip6tables-restore --noflush\n* nat\n")
            .and(contains("-A ISTIO_OUTPUT -d ::1/128 -j RETURN")),
    );
}

#[test]
fn json_logs_with_log_as_json() {
    let assert = tool().args(sidecar()).arg("--log_as_json").assert().success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.lines().all(|l| l.starts_with("{\"level\":\"") && l.ends_with('}')), "{stderr}");
    tool().args(sidecar()).arg("--log_output_level=default:none").assert().success().stderr("");
}

#[test]
fn flag_beats_env_and_additional_env_beats_derived_env() {
    const NO_Z: [&str; 5] = ["--dry-run", "-u", "1337", "-b", "*"];
    tool().env("INBOUND_CAPTURE_PORT", "16006").args(NO_Z).assert().success().stdout(contains("--to-ports 16006"));
    tool()
        .env("INBOUND_CAPTURE_PORT", "16006")
        .args(NO_Z)
        .args(["-z", "17006"])
        .assert()
        .success()
        .stdout(contains("--to-ports 17006").and(contains("16006").not()));
    tool()
        .env("DROP_INVALID", "true")
        .env("INVALID_DROP", "false")
        .args(sidecar())
        .assert()
        .success()
        .stdout(contains("ISTIO_DROP").not());
    tool().env("INVALID_DROP", "true").args(sidecar()).assert().success().stdout(contains("-j ISTIO_DROP"));
}

#[test]
fn recording_file_is_truncated_and_ends_with_a_newline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("recording");
    std::fs::write(&path, "x".repeat(100_000)).expect("prefill");
    tool().env("DRY_RUN_FILE_PATH", &path).args(sidecar()).assert().success();
    let text = std::fs::read_to_string(&path).expect("recording");
    assert!(text.starts_with("iptables-save\nip6tables-save\n* nat\n"), "{text}");
    assert!(text.ends_with("COMMIT\niptables-save\n"), "{text}");
    assert!(!text.contains('x'));
}

#[test]
fn skip_rule_apply_generates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("recording");
    tool().env("DRY_RUN_FILE_PATH", &path).args(sidecar()).arg("--skip-rule-apply").assert().success().stdout("");
    assert!(!path.exists());
}

#[test]
fn native_nftables_dry_run_prints_the_transaction() {
    tool()
        .args(sidecar())
        .arg("--native-nftables")
        .assert()
        .success()
        .stdout(contains("add table inet istio-proxy-nat\nflush table inet istio-proxy-nat\n"));
    tool()
        .args(sidecar())
        .args(["--native-nftables", "--cleanup-only"])
        .assert()
        .success()
        .stdout("add table inet istio-proxy-nat\ndelete table inet istio-proxy-nat\nadd table inet istio-proxy-mangle\ndelete table inet istio-proxy-mangle\nadd table inet istio-proxy-raw\ndelete table inet istio-proxy-raw\n");
}

#[test]
fn short_flag_forms_are_equivalent() {
    let with = |args: &[&str]| {
        let out = tool().args(["--dry-run", "-u", "1"]).args(args).output().expect("run");
        assert!(out.status.success());
        out.stdout
    };
    let expected = with(&["--envoy-port", "1234"]);
    assert!(String::from_utf8_lossy(&expected).contains("--to-ports 1234"));
    for form in [&["--envoy-port=1234"][..], &["-p", "1234"], &["-p1234"], &["-p=1234"]] {
        assert_eq!(with(form), expected, "{form:?}");
    }
}

#[test]
fn resolv_conf_in_another_encoding_is_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, b"# G\xe9n\xe9r\xe9\nnameserver 10.0.0.10\n").expect("write");
    tool()
        .args(["--dry-run", "-u", "1337", "--redirect-dns", "--resolv-conf"])
        .arg(&resolv)
        .assert()
        .success()
        .stdout(contains("-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -d 10.0.0.10/32 -j REDIRECT --to-ports 15053"));
}
