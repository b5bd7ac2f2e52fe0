//! `--run-validation` against a real kernel (apply.md §5): in a namespace carrying the default
//! sidecar rules, the validator run as the proxy uid/gid passes within a second; without the
//! rules, or as another user, it fails with exit 126 once `--probe-timeout` has passed.
//!
//! Most tests restore the rules from the binary's own `--dry-run` output by hand, so they depend
//! on the rule engine but not on the apply stage. The `istio_init_then_istio_validation_*` tests
//! run the injected pair end to end: real apply as root, then validation as 1337.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use libtest_mimic::Trial;

use crate::apply_support::Choice;
use crate::support::{self, Backend, Netns, Ran, PROXY_GID, PROXY_UID};

pub fn tests() -> Vec<Trial> {
    kernel_tests![
        passes_within_a_second_with_sidecar_rules_v4: [legacy, nft] =>
            |choice: Choice| passes_with_sidecar_rules(Family::V4, choice.backend()),
        passes_within_a_second_with_sidecar_rules_v6: [legacy, nft] =>
            |choice: Choice| passes_with_sidecar_rules(Family::V6, choice.backend()),
        fails_with_126_after_the_timeout_without_rules_v4 => || fails_without_rules(Family::V4),
        fails_with_126_after_the_timeout_without_rules_v6 => || fails_without_rules(Family::V6),
        probe_timeout_comes_from_the_environment_too,
        only_the_proxy_user_is_redirected,
        validation_follows_the_rule_stage,
        taken_proxy_ports_fail_at_once,
        skip_rule_apply_still_needs_a_pod_address,
        restore_sections_split_at_headers,
        istio_init_then_istio_validation_v4 => || init_then_validate(Family::V4, &[]),
        istio_init_then_istio_validation_v6 => || init_then_validate(Family::V6, &[]),
        istio_init_then_istio_validation_tproxy,
    ]
}

const BINARY: &str = env!("CARGO_BIN_EXE_istio-iptables");

/// Istio's injected `istio-init` argv (apply.md §7.1), after the image entrypoint.
fn sidecar_args() -> Vec<&'static str> {
    let mut args = vec!["istio-iptables"];
    args.extend(support::sidecar_argv_with(&["--log_output_level=default:info"]));
    args
}

/// What the CNI-mode `istio-validation` container adds (apply.md §7.3).
const VALIDATION_ARGS: &[&str] = &["--run-validation", "--skip-rule-apply"];

const FAILURE_START: &str = "iptables validation failed; workload is not ready for Istio.";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Family {
    V4,
    V6,
}

/// A namespace that looks like a pod to the validator: `lo` up and a non-loopback address, so
/// that config loading finds a host IP of the wanted family. For IPv6 it also carries `::6` on
/// `lo`, which the CNI plugin (or the apply stage) adds in a real pod.
fn pod_netns(family: Family) -> Netns {
    let ns = Netns::new(&format!("validation-{family:?}"));
    ns.loopback_up();
    match family {
        // The address upstream's own namespace tests use.
        Family::V4 => ns.exec_ok("ip", ["addr", "add", "240.240.240.240/32", "dev", "lo"]),
        Family::V6 => {
            ns.exec_ok("ip", ["-6", "addr", "add", "fd00::5/128", "dev", "lo", "nodad"]);
            ns.exec_ok("ip", ["-6", "addr", "add", "::6/128", "dev", "lo", "nodad"])
        }
    };
    ns
}

fn backend_or_skip(backend: Backend) -> Ran {
    support::require_programs(&[&backend.restore(false), &backend.restore(true)])
}

/// Prints the default sidecar rules with `--dry-run` inside `ns` (so IPv6 is detected from
/// the namespace's addresses) and restores each family's section with `backend`.
fn apply_sidecar_rules(ns: &Netns, backend: Backend) {
    let output = ns.command(BINARY).args(sidecar_args()).arg("--dry-run").env_clear().output().expect("run dry-run");
    assert!(output.status.success(), "dry-run failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).expect("utf-8 rules");
    let sections = restore_sections(&stdout);
    assert!(!sections.is_empty(), "no restore sections in:\n{stdout}");
    for (ipv6, script) in sections {
        support::iptables_restore(ns, &backend.restore(ipv6), &script).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Splits dry-run stdout at its `# iptables-restore --noflush` / `# ip6tables-restore --noflush`
/// headers into (is IPv6, restore script).
fn restore_sections(stdout: &str) -> Vec<(bool, String)> {
    let mut sections: Vec<(bool, String)> = Vec::new();
    for line in stdout.lines() {
        if let Some(program) = line.strip_prefix("# ").and_then(|l| l.strip_suffix("-restore --noflush")) {
            sections.push((program == "ip6tables", String::new()));
        } else if let Some((_, script)) = sections.last_mut() {
            script.push_str(line);
            script.push('\n');
        }
    }
    sections
}

/// The finished validator run and how long it took.
struct Run {
    output: Output,
    elapsed: Duration,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    fn logs(&self) -> String {
        format!("{}{}", String::from_utf8_lossy(&self.output.stderr), String::from_utf8_lossy(&self.output.stdout))
    }
}

fn timed(mut command: Command) -> Run {
    let started = Instant::now();
    let output = command.env_clear().output().expect("run istio-iptables");
    Run { output, elapsed: started.elapsed() }
}

/// The `istio-validation` container: the injected argv plus validation flags, as uid/gid 1337.
fn validate_as_proxy(ns: &Netns, extra: &[&str]) -> Run {
    let mut command = ns.command_as(PROXY_UID, PROXY_GID, BINARY);
    command.args(sidecar_args()).args(VALIDATION_ARGS).args(extra);
    timed(command)
}

fn assert_passes_quickly(run: &Run) {
    let logs = run.logs();
    assert_eq!(run.code(), Some(0), "{logs}");
    assert!(run.elapsed < Duration::from_secs(1), "took {:?}\n{logs}", run.elapsed);
    assert!(logs.contains("Validation passed, iptables rules established"), "{logs}");
    assert!(logs.contains(": 15002\n") || logs.contains(": 15002\r"), "original port logged:\n{logs}");
}

fn assert_fails_after(run: &Run, timeout: Duration) {
    let logs = run.logs();
    assert_eq!(run.code(), Some(126), "{logs}");
    assert!(run.elapsed >= timeout, "gave up after {:?}, before the {timeout:?} timeout\n{logs}", run.elapsed);
    assert!(run.elapsed < timeout + Duration::from_secs(2), "took {:?}\n{logs}", run.elapsed);
    assert!(logs.contains(FAILURE_START), "{logs}");
    assert!(!logs.contains("Validation passed"), "{logs}");
}

fn passes_with_sidecar_rules(family: Family, backend: Backend) -> Ran {
    backend_or_skip(backend)?;
    let ns = pod_netns(family);
    apply_sidecar_rules(&ns, backend);
    let run = validate_as_proxy(&ns, &[]);
    assert_passes_quickly(&run);
    let (listen, target) = match family {
        Family::V4 => ("127.0.0.1", "127.0.0.6:15002"),
        Family::V6 => ("[::1]", "[::6]:15002"),
    };
    let logs = run.logs();
    assert!(logs.contains(&format!("Listening on {listen}:15001")), "{logs}");
    assert!(logs.contains(&format!("Listening on {listen}:15006")), "{logs}");
    assert!(logs.contains(&format!("Local addr {listen}:15006")), "redirected to the inbound port:\n{logs}");
    assert!(!logs.contains(&format!("Error connecting to {target}")), "{logs}");
    Ok(())
}

fn fails_without_rules(family: Family) -> Ran {
    support::require_root()?;
    let ns = pod_netns(family);
    let timeout = Duration::from_secs(2);
    let run = validate_as_proxy(&ns, &["--probe-timeout=2s"]);
    assert_fails_after(&run, timeout);
    let target = if family == Family::V4 { "127.0.0.6:15002" } else { "[::6]:15002" };
    let logs = run.logs();
    assert!(logs.contains(&format!("Error connecting to {target}")), "{logs}");
    assert!(logs.contains("connection refused"), "{logs}");
    // Upstream does not log a timeout separately; only the failure message tells.
    assert!(!logs.contains("Validation failed:"), "{logs}");
    Ok(())
}

fn probe_timeout_comes_from_the_environment_too() -> Ran {
    support::require_root()?;
    let ns = pod_netns(Family::V4);
    let mut command = ns.command_as(PROXY_UID, PROXY_GID, BINARY);
    command.args(sidecar_args()).args(VALIDATION_ARGS);
    let started = Instant::now();
    let output = command.env_clear().env("PROBE_TIMEOUT", "1s").output().expect("run istio-iptables");
    let run = Run { output, elapsed: started.elapsed() };
    assert_fails_after(&run, Duration::from_secs(1));
    Ok(())
}

fn only_the_proxy_user_is_redirected() -> Ran {
    backend_or_skip(Backend::Nft)?;
    let ns = pod_netns(Family::V4);
    apply_sidecar_rules(&ns, Backend::Nft);
    // As root (the istio-init container's user) the owner match does not apply.
    let mut command = ns.command(BINARY);
    command.args(sidecar_args()).args(VALIDATION_ARGS).arg("--probe-timeout=1s");
    assert_fails_after(&timed(command), Duration::from_secs(1));
    // The proxy gid alone is not enough: `-o lo -m owner ! --uid-owner 1337 -j RETURN` comes
    // before the --gid-owner redirect, so any other uid leaves the chain first.
    let mut command = ns.command_as(4242, PROXY_GID, BINARY);
    command.args(sidecar_args()).args(VALIDATION_ARGS).arg("--probe-timeout=1s");
    assert_fails_after(&timed(command), Duration::from_secs(1));
    // The proxy uid with any gid is.
    let mut command = ns.command_as(PROXY_UID, 4242, BINARY);
    command.args(sidecar_args()).args(VALIDATION_ARGS);
    assert_passes_quickly(&timed(command));
    Ok(())
}

fn validation_follows_the_rule_stage() -> Ran {
    backend_or_skip(Backend::Nft)?;
    let ns = pod_netns(Family::V4);
    apply_sidecar_rules(&ns, Backend::Nft);
    // Without --skip-rule-apply the rule stage runs first (here in dry-run, which prints the
    // rules), then the validator.
    let mut command = ns.command_as(PROXY_UID, PROXY_GID, BINARY);
    command.args(sidecar_args()).args(["--dry-run", "--run-validation"]);
    let run = timed(command);
    assert_passes_quickly(&run);
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert!(stdout.starts_with("# iptables-restore --noflush\n"), "{stdout}");
    Ok(())
}

fn taken_proxy_ports_fail_at_once() -> Ran {
    support::require_root()?;
    let ns = pod_netns(Family::V4);
    // Root-owned listeners without SO_REUSEPORT: uid 1337 cannot share their ports.
    let _taken: Vec<TcpListener> =
        ns.run(|| ["127.0.0.1:15001", "127.0.0.1:15006"].map(|addr| TcpListener::bind(addr).expect("bind")).into());
    let run = validate_as_proxy(&ns, &[]);
    let logs = run.logs();
    assert_eq!(run.code(), Some(126), "{logs}");
    assert!(run.elapsed < Duration::from_secs(1), "did not wait for the 5s timeout: {:?}", run.elapsed);
    assert!(logs.contains("Error on listening: listen tcp 127.0.0.1:15001: bind: address already in use"), "{logs}");
    assert!(logs.contains("Validation failed: no listener available: 127.0.0.1:15001,127.0.0.1:15006"), "{logs}");
    assert!(logs.contains(FAILURE_START), "{logs}");
    Ok(())
}

fn skip_rule_apply_still_needs_a_pod_address() -> Ran {
    support::require_root()?;
    let ns = Netns::new("validation-noaddr");
    ns.loopback_up();
    let run = validate_as_proxy(&ns, &[]);
    let logs = run.logs();
    assert_eq!(run.code(), Some(1), "{logs}");
    assert!(logs.contains("no valid local IP address found"), "{logs}");
    Ok(())
}

fn restore_sections_split_at_headers() -> Ran {
    let stdout = "# iptables-restore --noflush\n* nat\nCOMMIT\n# ip6tables-restore --noflush\n* nat\n-N X\nCOMMIT\n";
    assert_eq!(
        restore_sections(stdout),
        vec![(false, "* nat\nCOMMIT\n".to_string()), (true, "* nat\n-N X\nCOMMIT\n".to_string())]
    );
    Ok(())
}

/// The injected pair end to end: `istio-init` applies the rules for real (as root, inside the
/// test namespace), then `istio-validation` checks them as the proxy user.
fn init_then_validate(family: Family, extra_init_args: &[&str]) -> Ran {
    support::require_programs(&["iptables", "ip6tables"])?;
    let ns = Netns::new(&format!("init-validate-{family:?}"));
    ns.loopback_up();
    // No `::6` here: the rule stage adds it for IPv6 pods.
    match family {
        Family::V4 => ns.exec_ok("ip", ["addr", "add", "240.240.240.240/32", "dev", "lo"]),
        Family::V6 => ns.exec_ok("ip", ["-6", "addr", "add", "fd00::5/128", "dev", "lo", "nodad"]),
    };
    let mut init = ns.command(BINARY);
    init.args(sidecar_args()).args(extra_init_args).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let init = init.output().expect("run istio-init");
    let init_logs = String::from_utf8_lossy(&init.stderr);
    assert!(init.status.success(), "istio-init failed:\n{init_logs}");
    assert_passes_quickly(&validate_as_proxy(&ns, &[]));
    Ok(())
}

fn istio_init_then_istio_validation_tproxy() -> Ran {
    // pflag semantics: the later -m wins, as in the injected TPROXY argv (apply.md §7.2).
    init_then_validate(Family::V4, &["-m", "TPROXY"])
}
