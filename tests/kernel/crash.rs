//! A kill at any line of any restore input leaves a state from which the rerun converges to
//! exactly the uninterrupted result, and no run exits 0 on a wrong state (issue 11, item 2).
//!
//! A wrapper named like the real `iptables-{legacy,nft}-restore` comes first on the binary's
//! `PATH`. For the run's writing restore (not the `-C` checks) it forwards only the first K
//! lines of its stdin to the real program, then SIGKILLs the binary (its parent), so every
//! table block committed within those lines stays and nothing after them happens: no
//! rollback, no guardrail removal. For every K from 1 to the number of lines of that input the
//! namespace is reset, set up again, interrupted at K, and rerun:
//!
//! - a first run (TPROXY, whose input commits mangle then nat) is rerun with the same argv;
//!   a half-applied first run of the same configuration is completed;
//! - a reconcile (TPROXY → REDIRECT and REDIRECT → TPROXY) is rerun first without
//!   `--reconcile` (which may refuse, exit 1, but must not exit 0 on a wrong state), then with
//!   the interrupted argv, which must converge;
//! - a `--cleanup-only` is rerun with the same argv.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use libtest_mimic::Trial;

use crate::apply_support::{pod, rules, sidecar_with, Choice};
use crate::support::{self, Netns, Ran};

pub fn tests() -> Vec<Trial> {
    kernel_tests![
        first_run: [legacy, nft] => |choice| interrupted(choice, Scenario::FirstRun),
        reconcile_tproxy_to_redirect: [legacy, nft] => |choice| interrupted(choice, Scenario::Reconcile { to_tproxy: false }),
        reconcile_redirect_to_tproxy: [legacy, nft] => |choice| interrupted(choice, Scenario::Reconcile { to_tproxy: true }),
        cleanup_only: [legacy, nft] => |choice| interrupted(choice, Scenario::CleanupOnly),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Scenario {
    FirstRun,
    Reconcile { to_tproxy: bool },
    CleanupOnly,
}

fn mode(tproxy: bool) -> Vec<String> {
    sidecar_with(&[("-m", if tproxy { "TPROXY" } else { "REDIRECT" })])
}

fn with(mut args: Vec<String>, flag: &str) -> Vec<String> {
    args.push(flag.to_string());
    args
}

impl Scenario {
    /// What the namespace holds before the interrupted run.
    fn setup(self) -> Option<Vec<String>> {
        match self {
            Scenario::FirstRun => None,
            Scenario::Reconcile { to_tproxy } => Some(mode(!to_tproxy)),
            Scenario::CleanupOnly => Some(mode(true)),
        }
    }

    /// The argv that is interrupted (and rerun).
    fn interrupted(self) -> Vec<String> {
        match self {
            Scenario::FirstRun => mode(true),
            Scenario::Reconcile { to_tproxy } => with(mode(to_tproxy), "--reconcile"),
            Scenario::CleanupOnly => with(mode(true), "--cleanup-only"),
        }
    }

    /// A rerun without `--reconcile` that is allowed to refuse (exit 1) but not to exit 0 on a
    /// wrong state, before the converging rerun.
    fn plain_rerun(self) -> Option<Vec<String>> {
        match self {
            Scenario::Reconcile { to_tproxy } => Some(mode(to_tproxy)),
            _ => None,
        }
    }
}

/// Writes the wrapper for `program` into `dir`.
fn wrapper(dir: &Path, program: &str) {
    let real = support::find_program(program).unwrap_or_else(|| panic!("{program} not installed"));
    let script = format!(
        r#"#!/bin/sh
input=$(mktemp)
cat > "$input"
if grep -q '^-C ' "$input" || [ -z "$CRASH_AFTER_LINES" ]; then
    [ -n "$CRASH_RECORD" ] && ! grep -q '^-C ' "$input" && cp "$input" "$CRASH_RECORD"
    {real} "$@" < "$input"
    status=$?
    rm -f "$input"
    exit $status
fi
head -n "$CRASH_AFTER_LINES" "$input" | {real} "$@"
rm -f "$input"
kill -9 $PPID
exit 1
"#,
        real = real.display()
    );
    let path = dir.join(program);
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct Harness {
    ns: Netns,
    choice: Choice,
    wrappers: tempfile::TempDir,
    record: PathBuf,
}

impl Harness {
    fn run(&self, args: &[String], crash_after: Option<usize>) -> Output {
        let Choice::Forced(backend) = self.choice else { panic!("crash tests force a backend") };
        let path = format!("{}:{}", self.wrappers.path().display(), std::env::var("PATH").unwrap_or_default());
        let mut command = self.ns.command(support::binary_under_test());
        command.args(args).args(["--force-iptables-binary", backend.name()]).env("PATH", path);
        command.env("CRASH_RECORD", &self.record);
        match crash_after {
            Some(lines) => command.env("CRASH_AFTER_LINES", lines.to_string()),
            None => command.env_remove("CRASH_AFTER_LINES"),
        };
        command.output().unwrap()
    }

    fn run_ok(&self, args: &[String]) {
        let out = self.run(args, None);
        assert!(out.status.success(), "{args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Everything this namespace can hold of a run, removed.
    fn reset(&self) {
        let backend = self.choice.backend();
        for table in ["filter", "nat", "mangle", "raw"] {
            self.ns.exec_ok(&backend.iptables(false), ["-t", table, "-F"]);
            self.ns.exec_ok(&backend.iptables(false), ["-t", table, "-X"]);
        }
        while self.ns.exec("ip", ["rule", "del", "fwmark", "1337", "lookup", "133"]).status.success() {}
        let _ = self.ns.exec("ip", ["route", "flush", "table", "133"]);
    }

    /// The state a run leaves, in the form two namespaces compare in (counters dropped), with
    /// the TPROXY policy routing.
    fn state(&self) -> (Vec<String>, String) {
        let routing = support::ip_rule_list(&self.ns, false);
        (rules(&self.ns, self.choice.backend(), false), routing)
    }
}

fn interrupted(choice: Choice, scenario: Scenario) -> Ran {
    choice.available()?;
    let wrappers = tempfile::tempdir().unwrap();
    let backend = choice.backend();
    wrapper(wrappers.path(), &backend.restore(false));
    let record = wrappers.path().join("input");
    let ns = pod("crash");
    ns.loopback_up();
    let harness = Harness { ns, choice, wrappers, record };
    let args = scenario.interrupted();

    // The uninterrupted result, and the restore input the interrupted run feeds.
    if let Some(setup) = scenario.setup() {
        harness.run_ok(&setup);
    }
    let _ = std::fs::remove_file(&harness.record);
    harness.run_ok(&args);
    let expected = harness.state();
    let input = std::fs::read_to_string(&harness.record).expect("the run fed a restore input");
    let lines = input.lines().count();
    assert!(lines > 3, "{input}");

    // The kills must reach states between the one before and the one after, or the test
    // would prove nothing.
    let mut intermediate = 0;
    for k in 1..=lines {
        harness.reset();
        if let Some(setup) = scenario.setup() {
            harness.run_ok(&setup);
        }
        let before = harness.state();
        let out = harness.run(&args, Some(k));
        // Killed, not failed: a run that exits on its own could take its own steps back.
        assert_eq!(
            out.status.signal(),
            Some(9),
            "K={k}: the interrupted run was not SIGKILLed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let left = harness.state();
        if left != before && left != expected {
            intermediate += 1;
        }
        let cut = input.lines().take(k).collect::<Vec<_>>().join("\n");
        if let Some(plain) = scenario.plain_rerun() {
            let out = harness.run(&plain, None);
            let log = String::from_utf8_lossy(&out.stderr);
            match out.status.code() {
                Some(0) => assert_eq!(
                    harness.state(),
                    expected,
                    "K={k}: a plain rerun exited 0 on a wrong state\n{cut}\n{log}"
                ),
                Some(1) => {}
                other => panic!("K={k}: plain rerun exited {other:?}\n{log}"),
            }
        }
        let out = harness.run(&args, None);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "K={k}: the rerun failed after the kill at\n{cut}\n{log}");
        assert_eq!(harness.state(), expected, "K={k}: the rerun did not converge after the kill at\n{cut}\n{log}");
    }
    assert!(intermediate > 0, "no kill left an intermediate state in {lines} lines:\n{input}");
    Ok(())
}
