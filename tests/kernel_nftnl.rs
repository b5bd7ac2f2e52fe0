//! The netlink path of `--native-nftables` (the default; `ISTIO_NFT_APPLY=nft` selects `nft -f -`)
//! against the reference: for each configuration, one fresh namespace gets the ruleset from
//! `nft -f -` and another from netlink, and both must list identically, rule for rule and in
//! bytecode (`nft --debug=netlink list ruleset`). Also: unchanged reruns touch nothing, a refused
//! batch leaves the previous ruleset in place, and the netlink path runs no program at all.
//!
//! Needs root, `ip` and `nft`; skipped otherwise unless ISTIO_IPTABLES_KERNEL_TESTS=require.

mod support;

use std::fs;
use std::path::Path;
use std::process::Output;

use support::Netns;

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

fn kernel_ready() -> bool {
    support::require_programs_or_skip(&["nft", "ip"])
}

#[test]
fn upstream_cases_commit_over_netlink_exactly_what_nft_writes() {
    if !kernel_ready() {
        return;
    }
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

#[test]
fn an_unchanged_rerun_touches_nothing_and_a_changed_one_replaces_the_tables() {
    if !kernel_ready() {
        return;
    }
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

#[test]
fn a_refused_batch_changes_nothing_and_names_the_refused_message() {
    if !kernel_ready() {
        return;
    }
    let ns = Netns::new("nlatomic");
    ns.loopback_up();
    // No DNS capture: the raw table is not ours.
    apply_ok(&ns, &sidecar("old", &[]));
    let before = ns.exec_ok("nft", ["-a", "list", "ruleset"]);
    assert!(before.contains("istio-proxy-nat"));
    let owned = OwnedTable::create(&ns, "istio-proxy-raw");

    // The batch deletes nat and mangle before it reaches the raw table, which it may not touch.
    let output = run(&ns, &sidecar("new", &["--redirect-dns"]), None);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("the kernel refused the nftables batch, nothing was changed: add table inet istio-proxy-raw"),
        "{text}"
    );
    assert!(text.contains("CAP_NET_ADMIN") || text.contains("Operation not permitted"), "{text}");
    let after = ns.exec_ok("nft", ["-a", "list", "ruleset"]);
    drop(owned);
    let after_without_owned: String = after.split("table inet istio-proxy-raw").next().unwrap_or_default().to_string();
    pretty_assertions::assert_eq!(before, after_without_owned, "the old tables did not survive the refused batch");
}
