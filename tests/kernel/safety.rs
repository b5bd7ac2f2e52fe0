//! Crash-, race- and input-safety (issue 11) with the real binary in throwaway namespaces:
//! concurrent runs on one pod serialize on the namespace lock and leave exactly one copy of the
//! plan; nft reads interface names literally; unbounded or blocking inputs fail fast.

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use libtest_mimic::Trial;

use crate::apply_support::{self, pod, rules, sidecar_with, Choice};
use crate::support::{self, Backend, Netns, Ran};

pub fn tests() -> Vec<Trial> {
    kernel_tests![
        concurrent_first_runs_converge: [legacy, nft, native],
        concurrent_reconciles_converge: [legacy, nft, native],
        a_run_waits_for_the_lock_holder_and_gives_up_with_a_clear_error,
        a_hanging_restore_is_killed_at_the_deadline,
        nft_interface_names_are_applied_literally,
        nft_keywords_as_interface_names_are_applied_literally,
        missing_net_raw_is_named_before_legacy_changes_anything,
        an_endless_resolv_conf_fails_fast,
        a_fifo_as_resolv_conf_fails_fast,
        an_oversized_resolv_conf_fails_fast,
    ]
}

/// Runs released at the same moment on one pod.
const CONCURRENT_RUNS: usize = 8;
/// Fresh pods per backend; the races the lock closes showed up in about half of the trials.
const ROUNDS: usize = 10;

/// `base` plus the flags that select `choice`'s backend (`--force-iptables-binary` or
/// `--native-nftables`); the concurrency tests run the binary without `apply_support::istio`.
fn with_backend(choice: Choice, base: &[String]) -> Vec<String> {
    let mut args = base.to_vec();
    match choice {
        Choice::Forced(backend) => args.extend(["--force-iptables-binary".into(), backend.name().into()]),
        Choice::Native => args.push("--native-nftables".into()),
        Choice::Detected => {}
    }
    args
}

/// What the pod's netfilter state looks like, reduced to what a configuration decides.
fn state(choice: Choice, ns: &Netns) -> Vec<String> {
    match choice {
        Choice::Native => ns.exec_ok("nft", ["-s", "list", "ruleset"]).lines().map(str::to_string).collect(),
        _ => rules(ns, choice.backend(), false),
    }
}

fn run(ns: &Netns, args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    support::run_istio_iptables(ns, &args)
}

/// `CONCURRENT_RUNS` runs of `args` on `ns`, each started the moment all threads are ready.
fn released_together(ns: &Netns, args: &[String]) -> Vec<Output> {
    let barrier = Arc::new(Barrier::new(CONCURRENT_RUNS));
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..CONCURRENT_RUNS)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || {
                    barrier.wait();
                    run(ns, args)
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().expect("run thread panicked")).collect()
    })
}

/// Eight first runs at once on a fresh pod, `ROUNDS` times: every run exits 0 and the pod ends
/// with exactly the rules one run gives it (no wipe by another run's rollback, no duplicates).
fn concurrent_first_runs_converge(choice: Choice) -> Ran {
    choice.available()?;
    let args = with_backend(choice, &sidecar_with(&[]));
    let reference = pod("reference");
    let out = run(&reference, &args);
    assert!(out.status.success(), "reference run failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let expected = state(choice, &reference);
    assert!(expected.iter().any(|line| line.contains("15001")), "the reference has no capture: {expected:#?}");

    for round in 0..ROUNDS {
        let ns = pod("together");
        for (i, out) in released_together(&ns, &args).iter().enumerate() {
            assert!(
                out.status.success(),
                "{choice:?} round {round}: run {i} exited {}:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        pretty_assertions::assert_eq!(state(choice, &ns), expected, "{choice:?} round {round}");
    }
    Ok(())
}

/// A TPROXY pod, then eight `--reconcile` runs to REDIRECT at once, `ROUNDS` times: every run
/// exits 0 and the rules are exactly a fresh REDIRECT pod's (no wipe, no leftover guardrails).
fn concurrent_reconciles_converge(choice: Choice) -> Ran {
    choice.available()?;
    let earlier = with_backend(choice, &sidecar_with(&[("-m", "TPROXY")]));
    let now = with_backend(choice, &sidecar_with(&[]));
    let mut reconcile = now.clone();
    reconcile.push("--reconcile".into());
    let reference = pod("reference");
    assert!(run(&reference, &now).status.success());
    let expected = state(choice, &reference);

    for round in 0..ROUNDS {
        let ns = pod("reconcile");
        let out = run(&ns, &earlier);
        assert!(out.status.success(), "TPROXY run failed:\n{}", String::from_utf8_lossy(&out.stderr));
        for (i, out) in released_together(&ns, &reconcile).iter().enumerate() {
            assert!(
                out.status.success(),
                "{choice:?} round {round}: reconcile {i} exited {}:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        pretty_assertions::assert_eq!(state(choice, &ns), expected, "{choice:?} round {round}");
    }
    Ok(())
}

/// Holds the namespace lock of `ns` from this process, as another run would, until dropped.
fn hold_lock(ns: &Netns) -> UnixDatagram {
    let path = ns.path();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(&path).expect("open the namespace");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                let address = SocketAddr::from_abstract_name("istio-iptables.lock").expect("address");
                UnixDatagram::bind_addr(&address).expect("bind the lock socket")
            })
            .join()
            .expect("lock thread panicked")
    })
}

fn a_run_waits_for_the_lock_holder_and_gives_up_with_a_clear_error() -> Ran {
    let legacy = Choice::Forced(Backend::Legacy);
    legacy.available()?;
    let ns = pod("held");
    let held = hold_lock(&ns);
    let args = with_backend(legacy, &sidecar_with(&[]));
    let started = Instant::now();
    let out = Command::new(support::binary_under_test())
        .args(&args)
        .arg(format!("--network-namespace={}", ns.path().display()))
        .env("ISTIO_IPTABLES_LOCK_TIMEOUT", "1s")
        .output()
        .expect("run the binary");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(10), "{took:?}");
    assert!(stderr.contains(&format!("network namespace {}", ns.path().display())), "{stderr}");
    assert!(stderr.contains("gave up after 1s"), "{stderr}");
    assert!(stderr.contains(&format!("pid {} (", std::process::id())), "the holder (this test) is not named: {stderr}");
    assert!(rules(&ns, Backend::Legacy, false).is_empty(), "a run without the lock changed the pod");

    // A dry run and --skip-rule-apply take no lock; once released, a real run goes ahead.
    for flag in ["--dry-run", "--skip-rule-apply"] {
        let mut unlocked = args.clone();
        unlocked.push(flag.into());
        let started = Instant::now();
        let out = run(&ns, &unlocked);
        assert!(out.status.success(), "{flag}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(started.elapsed() < Duration::from_secs(5), "{flag} waited for the lock");
    }
    drop(held);
    let out = run(&ns, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// A restore that hangs is killed at the command deadline: the run fails (exit 1) within seconds,
/// says why, and leaves no Istio rule behind, instead of keeping the pod in `Init` forever.
fn a_hanging_restore_is_killed_at_the_deadline() -> Ran {
    use std::os::unix::fs::PermissionsExt as _;
    let choice = Choice::Forced(Backend::Nft);
    choice.available()?;
    let ns = pod("hang");
    let dir = tempfile::tempdir().expect("temp dir");
    let real = support::find_program("iptables-nft-restore").expect("iptables-nft-restore installed");
    // Hangs on any input that touches Istio's chains; everything else passes through.
    let script = format!(
        "#!/bin/sh\ninput=$(cat)\ncase \"$input\" in *ISTIO*) exec sleep 60 ;; esac\n\
         printf '%s\\n' \"$input\" | exec '{}' \"$@\"\n",
        real.display()
    );
    let wrapper = dir.path().join("iptables-nft-restore");
    std::fs::write(&wrapper, script).expect("write wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod wrapper");

    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    let started = Instant::now();
    let out = ns
        .command("env")
        .arg(format!("PATH={path}"))
        .arg("ISTIO_IPTABLES_COMMAND_TIMEOUT=1s")
        .arg(support::binary_under_test())
        .args(with_backend(choice, &sidecar_with(&[])))
        .output()
        .expect("run");
    let took = started.elapsed();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(took < Duration::from_secs(15), "{took:?}\n{log}");
    assert!(log.contains("did not finish within 1s and was killed"), "{log}");
    assert_eq!(apply_support::istio_leftovers(&ns, Backend::Nft, false), Vec::<String>::new());
    Ok(())
}

/// `-c` names nft would misread (`010` as 8, `0x10` as 16, `accept` as a verdict) and the
/// iptables wildcard, applied with `--native-nftables` and listed back literally.
fn nft_interface_names_are_applied_literally() -> Ran {
    Choice::Native.available()?;
    let ns = pod("ifnames");
    let args = with_backend(Choice::Native, &sidecar_with(&[("-c", "010,0x10,accept,eth+,meta")]));
    let out = run(&ns, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = ns.exec_ok("nft", ["-s", "list", "ruleset"]);
    for name in ["\"010\"", "\"0x10\"", "\"accept\"", "\"eth*\"", "\"meta\""] {
        assert!(listed.contains(&format!("iifname {name} ")), "no iifname {name} in:\n{listed}");
    }
    for misread in ["\"8\"", "\"16\""] {
        assert!(!listed.contains(&format!("iifname {misread}")), "iifname {misread} in:\n{listed}");
    }
    // The rerun sees its own rules: nothing to change, exit 0.
    let rerun = run(&ns, &args);
    assert!(rerun.status.success(), "{}", String::from_utf8_lossy(&rerun.stderr));
    Ok(())
}

/// Every word of the renderer's nft keyword list (`src/render/nft_keywords.txt`) as a `-c`
/// interface name, applied through `nft -f -` (`ISTIO_NFT_APPLY=nft`) and listed back literally,
/// so a keyword missing from the list can never pass again. Words longer than an interface name
/// can be are refused by the configuration before anything is rendered.
fn nft_keywords_as_interface_names_are_applied_literally() -> Ran {
    Choice::Native.available()?;
    let words: Vec<&str> = include_str!("../../src/render/nft_keywords.txt")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert!(words.len() > 380, "{}", words.len());
    let (names, too_long): (Vec<&str>, Vec<&str>) = words.iter().partition(|word| word.len() <= 15);
    let ns = pod("nftkw");
    let args = with_backend(Choice::Native, &sidecar_with(&[("-c", &names.join(","))]));
    let out = ns
        .command(support::binary_under_test())
        .args(&args)
        .env("ISTIO_NFT_APPLY", "nft")
        .output()
        .expect("run istio-iptables");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = ns.exec_ok("nft", ["-s", "list", "ruleset"]);
    let missing: Vec<&&str> = names.iter().filter(|name| !listed.contains(&format!("iifname \"{name}\" "))).collect();
    assert!(missing.is_empty(), "not applied literally: {missing:?}\n{listed}");
    for word in too_long {
        let mut args = with_backend(Choice::Native, &sidecar_with(&[("-c", word)]));
        args.push("--dry-run".into());
        let out = run(&ns, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{word}: {stderr}");
        assert!(stderr.contains("at most 15 characters"), "{word}: {stderr}");
    }
    Ok(())
}

/// iptables-legacy without CAP_NET_RAW: `-save` works, every change fails with "unable to
/// initialize table 'nat'". The run names the capability and the fix instead, changing nothing.
fn missing_net_raw_is_named_before_legacy_changes_anything() -> Ran {
    support::require_programs(&["setpriv"])?;
    let legacy = Choice::Forced(Backend::Legacy);
    legacy.available()?;
    let ns = pod("noraw");
    let args = with_backend(legacy, &sidecar_with(&[]));
    let out = ns
        .command("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-net_raw", "--"])
        .arg(support::binary_under_test())
        .args(&args)
        .output()
        .expect("run setpriv");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("missing CAP_NET_RAW (iptables-legacy"), "{log}");
    assert!(log.contains("capabilities: add: [NET_ADMIN, NET_RAW]"), "{log}");
    assert!(!log.contains("initialize table"), "{log}");
    assert_eq!(rules(&ns, Backend::Legacy, false), Vec::<String>::new());
    // With the capability the same run applies: the check is not a false alarm.
    let out = run(&ns, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!rules(&ns, Backend::Legacy, false).is_empty());
    Ok(())
}

/// Runs a dry run with DNS capture reading `resolv_conf`, in at most 1 GiB of address space and
/// killed after 10 s; returns its output and how long it took.
fn dry_run_with_resolv_conf(resolv_conf: &str) -> (Output, Duration) {
    let binary = support::binary_under_test();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576; exec \"$0\" \"$@\"")
        .arg(binary)
        .args(sidecar_with(&[("--redirect-dns", ""), ("--resolv-conf", resolv_conf)]))
        .arg("--dry-run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("reading {resolv_conf} as resolv.conf did not finish within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().expect("output"), started.elapsed())
}

/// The dry run exits 1 within 3 s, its error names `resolv_conf` and says `reason`, its read
/// stayed bounded, and it printed no rules.
fn assert_fails_fast_naming(resolv_conf: &str, reason: &str) {
    let (out, took) = dry_run_with_resolv_conf(resolv_conf);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("failed to load {resolv_conf}: {reason}")), "not named with why: {stderr}");
    // The address-space limit above only protects this machine: an unbounded read that hits it
    // fails with "out of memory", which a pod's cgroup limit would turn into an OOM kill instead.
    assert!(!stderr.to_ascii_lowercase().contains("out of memory"), "the read was not bounded: {stderr}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(out.stdout.is_empty(), "rules printed after a failed read");
}

/// A dry run needs no privileges; these are here with the other unbounded-input checks.
fn an_endless_resolv_conf_fails_fast() -> Ran {
    assert_fails_fast_naming("/dev/zero", "not a regular file (a character device)");
    Ok(())
}

fn a_fifo_as_resolv_conf_fails_fast() -> Ran {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("resolv.conf");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    assert_fails_fast_naming(fifo.to_str().expect("utf-8 path"), "not a regular file (a FIFO)");
    Ok(())
}

/// A regular file over the 1 MiB cap for host files (sparse: 1 GiB long, no disk used) is
/// refused after reading at most the cap.
fn an_oversized_resolv_conf_fails_fast() -> Ran {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("resolv.conf");
    std::fs::File::create(&big).and_then(|file| file.set_len(1 << 30)).expect("sparse resolv.conf");
    assert_fails_fast_naming(big.to_str().expect("utf-8 path"), "larger than the 1048576-byte limit");
    Ok(())
}
