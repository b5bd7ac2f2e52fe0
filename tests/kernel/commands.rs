//! Which iptables processes a run starts, seen through logging wrappers on PATH: the process
//! budget of issue 3 item 9 (≤ 4 on a fresh pod, ≤ 3 on a rerun with nothing to change; here 1
//! and 2) and the
//! lock arguments (`--wait=30` for legacy, the pod-scoped `XTABLES_LOCKFILE` in CNI mode).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use libtest_mimic::Trial;

use crate::apply_support::{self, pod, sidecar_with, Choice};
use crate::support::{self, Backend, Netns, Ran};

pub fn tests() -> Vec<Trial> {
    kernel_tests![
        fresh_apply_and_noop_rerun_stay_within_the_process_budget,
        cni_mode_locks_legacy_writes_per_pod,
        failed_ipv6_reconcile_rolls_back_ipv4_and_disarms_guardrails,
    ]
}

/// A PATH directory where every iptables program is a script that appends
/// `<name> <args> lock=<XTABLES_LOCKFILE>` to `calls`, and whether it sees an empty
/// `/etc/nsswitch.conf` to `nss`, and then runs the real one.
struct Wrappers {
    dir: tempfile::TempDir,
}

impl Wrappers {
    fn new() -> Wrappers {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("calls");
        fs::write(&log, "").expect("create call log");
        for family in ["iptables", "ip6tables"] {
            for variant in ["-legacy", "-nft", ""] {
                for suffix in ["", "-save", "-restore"] {
                    let name = format!("{family}{variant}{suffix}");
                    let Some(real) = support::find_program(&name) else { continue };
                    let script = format!(
                        "#!/bin/sh\necho \"{name} $* lock=${{XTABLES_LOCKFILE:-}}\" >> '{log}'\n\
                         if [ -s /etc/nsswitch.conf ]; then echo full; else echo empty; fi >> '{nss}'\n\
                         exec '{real}' \"$@\"\n",
                        log = log.display(),
                        nss = dir.path().join("nss").display(),
                        real = real.display()
                    );
                    let path = dir.path().join(&name);
                    fs::write(&path, script).expect("write wrapper");
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod wrapper");
                }
            }
        }
        Wrappers { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The calls logged so far, one per started process.
    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("calls")).expect("read call log").lines().map(String::from).collect()
    }

    /// Runs the binary in `ns` with the wrappers first on PATH; returns the calls it made.
    fn run(&self, ns: &Netns, args: &[String]) -> Vec<String> {
        let before = self.calls().len();
        let path = format!("{}:{}", self.path().display(), std::env::var("PATH").unwrap_or_default());
        let binary: PathBuf = support::binary_under_test();
        // `env` inside the namespace: `ip` itself is looked up with the normal PATH.
        let out = ns.command("env").arg(format!("PATH={path}")).arg(binary).args(args).output().expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        self.calls().split_off(before)
    }
}

fn fresh_apply_and_noop_rerun_stay_within_the_process_budget() -> Ran {
    Choice::Detected.available()?;
    let wrappers = Wrappers::new();
    let ns = pod("budget");
    let args = sidecar_with(&[]);
    let first = wrappers.run(&ns, &args);
    // Nothing to read on a fresh pod (no legacy table, no nf_tables table), and the final state
    // is what the restore put into the empty tables: one process.
    assert_eq!(first, vec!["iptables-nft-restore --noflush lock="]);
    // The state only: it is compared with the plan in memory (no `-C` restore), and the final
    // state is the one just read.
    let rerun = wrappers.run(&ns, &args);
    assert_eq!(rerun, vec!["iptables-nft-save  lock="]);
    Ok(())
}

/// `--cni-mode`: legacy writes take the pod's lock (its namespace file) and every command runs
/// with an empty `/etc/nsswitch.conf`, as upstream's sandbox does.
fn cni_mode_locks_legacy_writes_per_pod() -> Ran {
    let choice = Choice::Forced(Backend::Legacy);
    choice.available()?;
    let wrappers = Wrappers::new();
    let ns = pod("cnilock");
    let netns_path = ns.path().to_string_lossy().into_owned();
    let args = sidecar_with(&[
        ("--cni-mode", ""),
        ("--network-namespace", &netns_path),
        ("--force-iptables-binary", "legacy"),
    ]);
    let calls = wrappers.run(&ns, &args);
    let restore = calls.iter().find(|c| c.starts_with("iptables-legacy-restore")).expect("a restore ran");
    assert_eq!(restore, &format!("iptables-legacy-restore --noflush --wait=30 lock={netns_path}"));
    // Reads take no lock.
    assert!(calls.iter().filter(|c| c.starts_with("iptables-legacy-save")).all(|c| c.ends_with("lock=")), "{calls:#?}");
    // Every command ran where name lookups cannot reach the node's NSS services (the machine's
    // own nsswitch.conf is not empty: Debian ships one).
    let nss = fs::read_to_string(wrappers.path().join("nss")).expect("nss log");
    assert!(!nss.is_empty() && nss.lines().all(|line| line == "empty"), "{nss}");
    assert!(fs::metadata("/etc/nsswitch.conf").is_ok_and(|m| m.len() > 0), "the sandbox was not put to the test");
    Ok(())
}

/// An IPv6 restore that commits its first block (the guardrails) and then fails, as a restore
/// can when a later table is refused. Other inputs (checks, rollbacks) pass through.
fn failing_ip6tables_restore(dir: &Path) {
    let real = support::find_program("ip6tables-nft-restore").expect("ip6tables-nft-restore installed");
    let script = format!(
        "#!/bin/sh\ninput=$(cat)\n\
         case \"$input\" in *'-N ISTIO'*) ;; *) printf '%s\\n' \"$input\" | exec '{real}' \"$@\" ;; esac\n\
         printf '%s\\n' \"$input\" | awk '{{print}} /^COMMIT$/{{exit}}' | '{real}' \"$@\" || exit 1\n\
         echo 'ip6tables-nft-restore: line 9 failed: injected failure' >&2\nexit 1\n",
        real = real.display()
    );
    let path = dir.join("ip6tables-nft-restore");
    fs::write(&path, script).expect("write failing wrapper");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod failing wrapper");
}

/// A reconcile whose IPv6 restore fails after IPv4 succeeded: the guardrails armed for IPv6 are
/// removed, neither family keeps any Istio rule (all or nothing: the init container fails and
/// its retry starts from a clean pod), and the error names the IPv6 step.
fn failed_ipv6_reconcile_rolls_back_ipv4_and_disarms_guardrails() -> Ran {
    let choice = Choice::Forced(Backend::Nft);
    choice.available()?;
    let ns = pod("v6fail");
    let dual = |extra: &[(&str, &str)]| {
        let mut changes = vec![("--enable-inbound-ipv6", "true"), ("--force-iptables-binary", "nft")];
        changes.extend_from_slice(extra);
        sidecar_with(&changes)
    };
    apply_support::istio_ok(&ns, Choice::Detected, &dual(&[]));

    let dir = tempfile::tempdir().expect("temp dir");
    failing_ip6tables_restore(dir.path());
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    let out = ns
        .command("env")
        .arg(format!("PATH={path}"))
        .arg(support::binary_under_test())
        .args(dual(&[("-b", "9080"), ("--reconcile", "")]))
        .output()
        .expect("run");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("restore of the IPv6 rules failed") && log.contains("injected failure"), "{log}");
    for ipv6 in [false, true] {
        let filter: Vec<String> =
            apply_support::rules(&ns, Backend::Nft, ipv6).into_iter().filter(|r| r.contains("-j DROP")).collect();
        assert_eq!(filter, Vec::<String>::new(), "guardrails left armed (IPv6: {ipv6})");
    }
    for ipv6 in [false, true] {
        assert_eq!(apply_support::istio_leftovers(&ns, Backend::Nft, ipv6), Vec::<String>::new(), "IPv6: {ipv6}");
    }
    Ok(())
}
