//! The netlink path of `--native-nftables` (the default; `ISTIO_NFT_APPLY=nft` selects `nft -f -`)
//! against the reference: for each configuration, one fresh namespace gets the ruleset from
//! `nft -f -` and another from netlink, and both must list identically, rule for rule and in
//! bytecode (`nft --debug=netlink list ruleset`). Also: unchanged reruns touch nothing, a refused
//! batch leaves the previous ruleset in place, and the netlink path runs no program at all.
//!
//! `NFTNL_SEED` / `NFTNL_CONFIGS` replay or resize the random configurations.

use std::fs;
use std::path::Path;
use std::process::Output;

use libtest_mimic::Trial;

use crate::support::{self, Netns, Ran};

pub fn tests() -> Vec<Trial> {
    kernel_tests![
        upstream_cases_commit_over_netlink_exactly_what_nft_writes,
        an_unchanged_rerun_touches_nothing_and_a_changed_one_replaces_the_tables,
        a_refused_batch_changes_nothing_and_names_the_refused_message,
        random_configurations_commit_over_netlink_exactly_what_nft_writes,
        the_netlink_path_runs_no_program_on_a_first_run_or_a_rerun,
        an_unknown_group_fails_before_anything_is_committed,
        the_nft_fallback_still_says_what_to_install_when_nft_is_missing,
    ]
}

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
        let last_line = |output: &Output| stderr(output).lines().last().unwrap_or_default().to_string();
        eprintln!(
            "{}: refused by nft: {}\n  and by netlink: {}",
            setup.name,
            last_line(&by_nft),
            last_line(&by_netlink)
        );
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

/// Root, `ip` and `nft` (the reference path and the listings).
fn kernel_ready() -> Ran {
    support::require_programs(&["nft", "ip"])
}

fn upstream_cases_commit_over_netlink_exactly_what_nft_writes() -> Ran {
    kernel_ready()?;
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
    Ok(())
}

fn setup(name: &str, args: &[&str], env: &[(&str, &str)]) -> Setup {
    let mut setup = Setup { name: name.to_string(), ..Setup::default() };
    setup.args = std::iter::once("--native-nftables").chain(args.iter().copied()).map(String::from).collect();
    setup.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    setup.nameservers = vec!["127.0.0.53".into()];
    setup
}

fn sidecar(name: &str, extra: &[&str]) -> Setup {
    setup(name, &support::sidecar_argv_with(extra), &[("ENABLE_INBOUND_IPV6", "false")])
}

fn apply_ok(ns: &Netns, setup: &Setup) -> String {
    let output = run(ns, setup, None);
    assert!(output.status.success(), "{}: {}", setup.name, stderr(&output));
    stderr(&output)
}

fn an_unchanged_rerun_touches_nothing_and_a_changed_one_replaces_the_tables() -> Ran {
    kernel_ready()?;
    let ns = Netns::new("nlrerun");
    ns.loopback_up();
    let first = sidecar("first", &["--redirect-dns"]);
    apply_ok(&ns, &first);
    // Traffic through the output chains so the counters are not all zero.
    let closed: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let _refused = support::Client::new(&ns).timeout(std::time::Duration::from_millis(500)).tcp(closed);
    let before = ns.exec_ok("nft", ["-a", "list", "ruleset"]);
    assert!(before.contains("istio-proxy-raw") && !before.contains("counter packets 0 bytes 0 jump istio-output\n"));
    let log = apply_ok(&ns, &first);
    assert!(log.contains("already in place"), "{log}");
    // Same handles and the same counters: nothing was replaced.
    pretty_assertions::assert_eq!(before, ns.exec_ok("nft", ["-a", "list", "ruleset"]));

    // Anything changed in an istio table (an extra rule, a base chain's policy) is replaced.
    let rules_before = ns.exec_ok("nft", ["-s", "list", "ruleset"]);
    for tamper in [
        "add rule inet istio-proxy-nat istio-output counter accept",
        "add chain inet istio-proxy-raw output { type filter hook output priority -300 ; policy drop ; }",
    ] {
        ns.exec_ok("nft", [tamper]);
        let log = apply_ok(&ns, &first);
        assert!(!log.contains("already in place"), "{tamper}: {log}");
        pretty_assertions::assert_eq!(rules_before, ns.exec_ok("nft", ["-s", "list", "ruleset"]), "{tamper}");
    }

    let second = sidecar("second", &[]);
    let log = apply_ok(&ns, &second);
    assert!(!log.contains("already in place"), "{log}");
    let after = ns.exec_ok("nft", ["list", "ruleset"]);
    assert!(!after.contains("istio-proxy-raw"), "the DNS table of the old configuration survived:\n{after}");
    let reference = Netns::new("nlrerunref");
    reference.loopback_up();
    assert!(run(&reference, &second, Some("nft")).status.success());
    pretty_assertions::assert_eq!(
        normalize(&reference.exec_ok("nft", ["-s", "list", "ruleset"])),
        normalize(&ns.exec_ok("nft", ["-s", "list", "ruleset"]))
    );

    let cleanup = sidecar("cleanup", &["--cleanup-only"]);
    apply_ok(&ns, &cleanup);
    assert_eq!(ns.exec_ok("nft", ["list", "ruleset"]), "");
    Ok(())
}

/// A table created with `NFT_TABLE_F_OWNER` by a socket the test holds open: only that socket
/// may change it, so a batch touching it is refused by the kernel (EPERM) at that message.
struct OwnedTable {
    _socket: std::os::fd::OwnedFd,
}

impl OwnedTable {
    fn create(ns: &Netns, name: &str) -> OwnedTable {
        use nix::sys::socket::{
            bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
        };
        use std::os::fd::AsFd;
        use std::os::fd::AsRawFd;
        let netns = std::fs::File::open(ns.path()).unwrap();
        // A socket stays in the namespace it was created in; only this thread enters it.
        let socket = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns only reads the fd, which outlives this call.
                    let rc = unsafe { nix::libc::setns(netns.as_fd().as_raw_fd(), nix::libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    let fd = socket(
                        AddressFamily::Netlink,
                        SockType::Raw,
                        SockFlag::SOCK_CLOEXEC,
                        SockProtocol::NetlinkNetFilter,
                    )
                    .unwrap();
                    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).unwrap();
                    fd
                })
                .join()
                .unwrap()
        });
        let mut packet = Vec::new();
        let message = |out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res: u16, attrs: &[u8]| {
            let len = 16 + 4 + attrs.len();
            out.extend_from_slice(&(len as u32).to_ne_bytes());
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend_from_slice(&(flags | 1).to_ne_bytes());
            out.extend_from_slice(&seq.to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes());
            out.extend_from_slice(&[family, 0]);
            out.extend_from_slice(&res.to_be_bytes());
            out.extend_from_slice(attrs);
        };
        let mut attrs = Vec::new();
        let mut name_bytes = name.as_bytes().to_vec();
        name_bytes.push(0);
        attrs.extend_from_slice(&((4 + name_bytes.len()) as u16).to_ne_bytes());
        attrs.extend_from_slice(&1u16.to_ne_bytes());
        attrs.extend_from_slice(&name_bytes);
        attrs.resize((attrs.len() + 3) & !3, 0);
        attrs.extend_from_slice(&8u16.to_ne_bytes());
        attrs.extend_from_slice(&2u16.to_ne_bytes());
        attrs.extend_from_slice(&2u32.to_be_bytes()); // NFT_TABLE_F_OWNER
        message(&mut packet, 0x10, 0, 1, 0, 10, &[]);
        message(&mut packet, 10 << 8, 0x400 | 0x4, 2, 1, 0, &attrs);
        message(&mut packet, 0x11, 0, 3, 0, 10, &[]);
        send(socket.as_raw_fd(), &packet, MsgFlags::empty()).unwrap();
        let mut buffer = vec![0u8; 8192];
        let len = recv(socket.as_raw_fd(), &mut buffer, MsgFlags::empty()).unwrap();
        assert!(len >= 20 && buffer[16..20] == [0, 0, 0, 0], "creating the owned table failed: {:?}", &buffer[..len]);
        OwnedTable { _socket: socket }
    }
}

fn a_refused_batch_changes_nothing_and_names_the_refused_message() -> Ran {
    kernel_ready()?;
    let ns = Netns::new("nlatomic");
    ns.loopback_up();
    // No DNS capture: the raw table is not ours.
    apply_ok(&ns, &sidecar("old", &[]));
    let before = ns.exec_ok("nft", ["-a", "list", "ruleset"]);
    assert!(before.contains("istio-proxy-nat"));
    let owned = OwnedTable::create(&ns, "istio-proxy-raw");

    // The batch deletes nat and mangle before it reaches the raw table, which it may not delete.
    let output = run(&ns, &sidecar("new", &["--redirect-dns"]), None);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("the kernel refused the nftables batch, nothing was changed: delete table inet istio-proxy-raw"),
        "{text}"
    );
    assert!(text.contains("CAP_NET_ADMIN") || text.contains("Operation not permitted"), "{text}");
    let after = ns.exec_ok("nft", ["-a", "list", "ruleset"]);
    drop(owned);
    let after_without_owned: String = after.split("table inet istio-proxy-raw").next().unwrap_or_default().to_string();
    pretty_assertions::assert_eq!(before, after_without_owned, "the old tables did not survive the refused batch");
    Ok(())
}

/// xorshift64*: a small, seedable generator, so a failing configuration can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn port(&mut self) -> String {
        self.pick(&["0", "22", "53", "80", "443", "8080", "15001", "15006", "15008", "15020", "65535"]).to_string()
    }

    fn port_item(&mut self) -> String {
        if self.chance(25) {
            let low = self.below(60000) as u16;
            let high = low.saturating_add(self.below(5000) as u16);
            format!("{low}:{high}")
        } else {
            self.port()
        }
    }

    fn list(&mut self, max: u64, mut item: impl FnMut(&mut Rng) -> String) -> String {
        let n = 1 + self.below(max);
        (0..n).map(|_| item(self)).collect::<Vec<_>>().join(",")
    }

    fn cidr(&mut self, v6_percent: u64) -> String {
        if self.chance(v6_percent) {
            let prefix = self.pick(&["0", "8", "32", "48", "64", "63", "100", "127", "128"]);
            let address = self.pick(&["::", "fd00::", "2001:db8::", "fd00:1:2:3::", "::1"]);
            let address = if prefix == "0" { "::" } else { address };
            format!("{address}/{prefix}")
        } else {
            let prefix = self.below(33);
            let address = u32::try_from(self.next() >> 32).unwrap();
            // Now and then with host bits set, which the parser accepts as upstream does.
            let mask = if prefix == 0 || self.chance(15) { u32::MAX } else { u32::MAX << (32 - prefix) };
            format!("{}/{prefix}", std::net::Ipv4Addr::from(address & mask))
        }
    }

    fn iface(&mut self) -> String {
        self.pick(&["eth0", "eth1", "net1", "veth-a.1", "cni_0", "x"]).to_string()
    }

    fn owner(&mut self) -> String {
        self.pick(&["0", "1", "1337", "4242", "root", "daemon", "bin"]).to_string()
    }

    fn group(&mut self) -> String {
        self.pick(&["0", "3", "1337", "888", "root", "daemon", "adm"]).to_string()
    }
}

/// A random configuration that the argument parser accepts.
fn random_setup(rng: &mut Rng, index: usize) -> Setup {
    let mut args: Vec<String> = vec!["--native-nftables".into()];
    let flag = |args: &mut Vec<String>, name: &str, value: String| {
        args.push(name.to_string());
        args.push(value);
    };
    flag(&mut args, "-p", rng.port());
    flag(&mut args, "-z", rng.port());
    if rng.chance(30) {
        flag(&mut args, "-e", rng.port());
    }
    flag(&mut args, "-u", rng.list(2, Rng::owner));
    if rng.chance(50) {
        flag(&mut args, "-g", rng.list(2, Rng::group));
    }
    if rng.chance(35) {
        flag(&mut args, "-m", "TPROXY".into());
    }
    let inbound = match rng.below(4) {
        0 => String::new(),
        1 => "*".into(),
        _ => rng.list(3, Rng::port_item),
    };
    flag(&mut args, "-b", inbound);
    if rng.chance(50) {
        flag(&mut args, "-d", rng.list(3, Rng::port_item));
    }
    let v6 = if rng.chance(50) { 30 } else { 0 };
    let include = match rng.below(4) {
        0 => String::new(),
        1 => "*".into(),
        _ => rng.list(3, |r| r.cidr(v6)),
    };
    flag(&mut args, "-i", include);
    if rng.chance(50) {
        flag(&mut args, "-x", rng.list(3, |r| r.cidr(v6)));
    }
    if rng.chance(30) {
        flag(&mut args, "-q", rng.list(3, Rng::port_item));
    }
    if rng.chance(30) {
        flag(&mut args, "-o", rng.list(3, Rng::port_item));
    }
    if rng.chance(30) {
        flag(&mut args, "-c", rng.list(2, Rng::iface));
    }
    if rng.chance(30) {
        flag(&mut args, "-k", rng.list(2, Rng::iface));
    }
    if rng.chance(20) {
        flag(&mut args, "-t", (1 + rng.below(100_000)).to_string());
    }
    for (percent, name) in [(50, "--redirect-dns"), (25, "--capture-all-dns"), (30, "--drop-invalid")] {
        if rng.chance(percent) {
            args.push(name.into());
        }
    }
    let mut env = vec![("ENABLE_INBOUND_IPV6".to_string(), rng.pick(&["true", "false"]).to_string())];
    if rng.chance(25) {
        env.push(("ISTIO_OUTBOUND_OWNER_GROUPS".into(), rng.list(2, Rng::group)));
    } else if rng.chance(25) {
        env.push(("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE".into(), rng.list(3, Rng::group)));
    }
    if rng.chance(20) {
        env.push((
            "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR".into(),
            rng.pick(&["127.0.0.1/8", "127.0.0.1/32", "127.0.0.0/16"]).into(),
        ));
    }
    let nameservers = (0..rng.below(3))
        .map(|_| rng.pick(&["127.0.0.53", "10.96.0.10", "::1", "fd00::10", "8.8.8.8"]).to_string())
        .collect();
    Setup { name: format!("random #{index}"), args, env, nameservers }
}

fn random_configurations_commit_over_netlink_exactly_what_nft_writes() -> Ran {
    kernel_ready()?;
    let seed = std::env::var("NFTNL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    let count: usize = std::env::var("NFTNL_CONFIGS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    eprintln!("random configurations: seed {seed} (replay with NFTNL_SEED={seed}), {count} configurations");
    let mut rng = Rng(seed);
    let mut compared = 0;
    for index in 0..count {
        let setup = random_setup(&mut rng, index);
        eprintln!("{}: args {:?} env {:?} nameservers {:?}", setup.name, setup.args, setup.env, setup.nameservers);
        if compare(&setup) {
            compared += 1;
        }
    }
    eprintln!("compared {compared} of {count} random configurations (the rest were refused by both paths)");
    assert!(compared * 10 >= count * 9, "too many configurations refused: only {compared} of {count} applied");
    Ok(())
}

/// Processes and threads the binary starts, from `strace -f` of one run in `ns`.
fn spawned_under_strace(ns: &Netns, setup: &Setup) -> (Vec<String>, Output) {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    // Absolute paths: the run itself gets a PATH with nothing on it.
    let mut command = std::process::Command::new(support::find_program("ip").unwrap());
    command.args(["netns", "exec", ns.name()]).arg(support::find_program("strace").unwrap());
    command.env_clear().env("PATH", "/nonexistent");
    for (k, v) in &setup.env {
        command.env(k, v);
    }
    command
        .args(["-f", "-qq", "-e", "trace=execve,execveat,fork,vfork,clone,clone3", "-o"])
        .arg(&trace)
        .arg(support::binary_under_test())
        .args(&setup.args);
    let output = command.output().unwrap();
    let calls = fs::read_to_string(&trace).unwrap_or_default();
    assert!(calls.lines().next().is_some_and(|l| l.contains("execve(")), "no trace of the run: {calls:?}");
    // The one execve of the binary itself is expected; anything else is a spawned process.
    let spawned = calls
        .lines()
        .filter(|line| !line.contains("exited with") && !line.contains("+++"))
        .skip(1)
        .map(String::from)
        .collect();
    (spawned, output)
}

fn the_netlink_path_runs_no_program_on_a_first_run_or_a_rerun() -> Ran {
    kernel_ready()?;
    support::require_programs(&["strace"])?;
    let ns = Netns::new("nlstrace");
    ns.loopback_up();
    let setup =
        setup("tproxy sidecar", &support::sidecar_argv_with(&["-m", "TPROXY"]), &[("ENABLE_INBOUND_IPV6", "true")]);
    for run in ["first run", "rerun"] {
        let (spawned, output) = spawned_under_strace(&ns, &setup);
        assert!(output.status.success(), "{run}: {}", stderr(&output));
        assert_eq!(spawned, Vec::<String>::new(), "{run} started processes or threads");
    }
    assert!(ns.exec_ok("nft", ["list", "ruleset"]).contains("tproxy ip to :15006"));
    Ok(())
}

fn an_unknown_group_fails_before_anything_is_committed() -> Ran {
    kernel_ready()?;
    let ns = Netns::new("nlgroup");
    apply_ok(&ns, &sidecar("before", &[]));
    let before = ns.exec_ok("nft", ["-a", "list", "ruleset"]);
    let mut bad = sidecar("unknown group", &[]);
    bad.env.push(("ISTIO_OUTBOUND_OWNER_GROUPS".into(), "no-such-group-xyz".into()));
    let output = run(&ns, &bad, None);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("group \"no-such-group-xyz\" is not listed in /etc/group"), "{}", stderr(&output));
    pretty_assertions::assert_eq!(before, ns.exec_ok("nft", ["-a", "list", "ruleset"]));
    Ok(())
}

fn the_nft_fallback_still_says_what_to_install_when_nft_is_missing() -> Ran {
    kernel_ready()?;
    let ns = Netns::new("nlnonft");
    let mut command = std::process::Command::new(support::find_program("ip").unwrap());
    command.args(["netns", "exec", ns.name()]).arg(support::binary_under_test());
    command.env_clear().env("PATH", "/nonexistent").env("ENABLE_INBOUND_IPV6", "false");
    let without_fallback = command.args(["--native-nftables", "-u", "1337"]).output().unwrap();
    assert!(without_fallback.status.success(), "{}", stderr(&without_fallback));
    let with_fallback = command.env("ISTIO_NFT_APPLY", "nft").output().unwrap();
    assert_eq!(with_fallback.status.code(), Some(1));
    assert!(stderr(&with_fallback).contains("the nft binary is missing in the sidecar container image"));
    Ok(())
}
