//! `istio-iptables explain` on the command line; its output per configuration is golden-tested
//! (`testdata/explain/`, run by `tests/golden.rs`).

use std::process::Command;

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

/// Without the `explain` word the same argv is a plain run (here a dry run printing rules), with
/// or without the leading `istio-iptables` word.
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
