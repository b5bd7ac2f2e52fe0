//! Differential test of `istio-iptables explain` against the kernel: random valid
//! configurations (seeded; the seed is printed) are applied for real in a fresh pod namespace
//! joined to a peer over a veth pair, then for each of ~25 flows `explain --output json` says
//! where the connection goes and real sockets show where it went: which listener answered, and
//! its `SO_ORIGINAL_DST` (REDIRECT) or local address (TPROXY); the pod's conntrack table shows
//! the connection's zone. Every disagreement is reported with the configuration, the flow and
//! both answers; there must be none.
//!
//! `KERNEL_EXPLAIN_SEED=N` replays a run.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libtest_mimic::Trial;

use crate::apply_support::Choice;
use crate::support::{self, Backend, Client, Listener, Netns, Ran, Topology, TopologyOptions, UdpListener};

pub fn tests() -> Vec<Trial> {
    kernel_tests![explain_agrees_with_the_kernel: [legacy, nft, native]]
}

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const OUTBOUND: u16 = 15001;
const INBOUND: u16 = 15006;
const TUNNEL: u16 = 15008;
const HEALTH: u16 = 15021;
const AGENT_DNS: u16 = 15053;
const APP: (u32, u32) = (1000, 1000);
const PROXY: (u32, u32) = (1337, 1337);
const PROXY_UID_ONLY: (u32, u32) = (1337, 1000);
const PROXY_GID_ONLY: (u32, u32) = (1000, 1337);
const OTHER_GROUP: (u32, u32) = (1000, 2000);
/// How long a flow may take; every flow that is not dropped is answered by a listener.
const FLOW_TIMEOUT: Duration = Duration::from_secs(2);
/// Issue 10 asks for at least 10 random configurations per run: 10 on each backend.
const CONFIGS_PER_ENGINE: usize = 10;

/// The flags that make the run (and explain) install `choice`'s rule set.
fn backend_flags(choice: Choice) -> &'static [&'static str] {
    match choice {
        Choice::Forced(Backend::Legacy) => &["--force-iptables-binary", "legacy"],
        Choice::Forced(Backend::Nft) => &["--force-iptables-binary", "nft"],
        Choice::Native => &["--native-nftables"],
        Choice::Detected => &[],
    }
}

/// Mixed into the seed so that each backend gets its own configurations from one seed.
fn seed_salt(choice: Choice) -> u64 {
    match choice {
        Choice::Forced(Backend::Legacy) => 0,
        Choice::Forced(Backend::Nft) => 1,
        Choice::Native => 2,
        Choice::Detected => 3,
    }
}

/// splitmix64: small, seedable, good enough to pick configurations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn seed() -> u64 {
    std::env::var("KERNEL_EXPLAIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64))
}

/// One configuration: the run's argv and environment (explain gets exactly the same).
#[derive(Debug)]
struct Scenario {
    tproxy: bool,
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

fn random_scenario(rng: &mut Rng, choice: Choice, tproxy: bool, resolv: &str) -> Scenario {
    let mode = if tproxy { "TPROXY" } else { "REDIRECT" };
    let mut argv: Vec<String> =
        ["-p", "15001", "-z", "15006", "-u", "1337", "-g", "1337", "-m", mode].iter().map(|s| s.to_string()).collect();
    let mut flag = |name: &str, value: &str| {
        argv.push(name.to_string());
        argv.push(value.to_string());
    };
    flag("-b", rng.pick(&["*", "*", "9080", "9080,9443"]));
    flag("-d", rng.pick(&["15021", "15021,9443", "15090,15021,15020"]));
    flag("-i", rng.pick(&["*", "*", "10.248.0.0/24", "10.248.0.0/24,fd00:248::/64", "192.168.0.0/16"]));
    flag("-x", rng.pick(&["", "", "10.248.0.2/32", "fd00:248::2/128"]));
    flag("-q", rng.pick(&["", "", "443"]));
    flag("-o", rng.pick(&["", "", "443", "80"]));
    flag("--resolv-conf", resolv);
    if rng.chance(60) {
        argv.push("--redirect-dns".to_string());
        if rng.chance(50) {
            argv.push("--capture-all-dns".to_string());
        }
    }
    argv.extend(backend_flags(choice).iter().map(|s| s.to_string()));
    let mut env = vec![("ENABLE_INBOUND_IPV6".to_string(), rng.pick(&["true", "true", "false"]).to_string())];
    match rng.next() % 4 {
        0 => env.push(("ISTIO_OUTBOUND_OWNER_GROUPS".to_string(), "1000".to_string())),
        1 => env.push(("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE".to_string(), "2000".to_string())),
        _ => {}
    }
    Scenario { tproxy, argv, env }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

/// A flow: outbound from the pod as a user (over `lo` when to one of its own addresses), or
/// inbound from the peer.
#[derive(Debug, Clone, Copy)]
struct Flow {
    outbound_as: Option<(u32, u32)>,
    proto: Proto,
    dst: SocketAddr,
}

fn flows(net: &Topology) -> Vec<Flow> {
    let (app4, app6) = (IpAddr::V4(net.app_v4.expect("v4")), net.app_ip_v6());
    let (peer4, peer6) = (IpAddr::V4(net.peer_v4.expect("v4")), net.peer_ip_v6());
    let (lo4, lo6) = (IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST));
    let out = |who, proto, ip, port| Flow { outbound_as: Some(who), proto, dst: SocketAddr::new(ip, port) };
    let inb = |ip, port| Flow { outbound_as: None, proto: Proto::Tcp, dst: SocketAddr::new(ip, port) };
    vec![
        out(APP, Proto::Tcp, peer4, 80),
        out(APP, Proto::Tcp, peer4, 443),
        out(APP, Proto::Tcp, peer6, 80),
        out(PROXY_UID_ONLY, Proto::Tcp, peer4, 80),
        out(PROXY_GID_ONLY, Proto::Tcp, peer4, 80),
        out(OTHER_GROUP, Proto::Tcp, peer4, 80),
        out(OTHER_GROUP, Proto::Tcp, peer6, 443),
        out(APP, Proto::Tcp, lo4, 8080),
        out(APP, Proto::Tcp, lo6, 8080),
        out(APP, Proto::Tcp, app4, 8080),
        out(APP, Proto::Tcp, app6, 8080),
        out(PROXY, Proto::Tcp, app4, 9080),
        out(PROXY, Proto::Tcp, app6, 9080),
        out(PROXY, Proto::Tcp, app4, TUNNEL),
        out(APP, Proto::Udp, peer4, 53),
        out(APP, Proto::Udp, peer6, 53),
        out(PROXY, Proto::Udp, peer4, 53),
        out(APP, Proto::Tcp, peer4, 53),
        inb(app4, 9080),
        inb(app4, 9443),
        inb(app4, HEALTH),
        inb(app4, TUNNEL),
        inb(app4, 8080),
        inb(app6, 9080),
        inb(app6, HEALTH),
    ]
}

enum Socket {
    Tcp(Listener),
    Udp(UdpListener),
}

/// Every socket a flow can land on, found by the label it answers with.
struct Listeners {
    app: Vec<(Proto, u16, Socket)>,
    peer: Vec<(Proto, u16, Socket)>,
}

impl Listeners {
    fn start(net: &Topology, tproxy: bool) -> Listeners {
        let wild = [IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)];
        let mut app = Vec::new();
        for port in [OUTBOUND, INBOUND, TUNNEL, HEALTH, AGENT_DNS, 8080, 9080, 9443] {
            for ip in wild {
                let socket = if port == INBOUND && tproxy {
                    Listener::tcp_transparent(&net.app, ip, port)
                } else {
                    Listener::tcp(&net.app, ip, port)
                };
                app.push((Proto::Tcp, port, Socket::Tcp(socket)));
            }
        }
        // Bound where REDIRECT at OUTPUT sends datagrams, as istio-agent's DNS proxy is, so
        // its answers get back to the client through conntrack's reverse NAT.
        for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
            app.push((Proto::Udp, AGENT_DNS, Socket::Udp(UdpListener::bind(&net.app, ip, AGENT_DNS))));
        }
        let mut peer = Vec::new();
        for ip in wild {
            for port in [80, 443, 53] {
                peer.push((Proto::Tcp, port, Socket::Tcp(Listener::tcp(&net.peer, ip, port))));
            }
            peer.push((Proto::Udp, 53, Socket::Udp(UdpListener::bind(&net.peer, ip, 53))));
        }
        Listeners { app, peer }
    }

    /// The socket of `side` for `proto`/`port` in the family of `dst` (sockets are v6-only).
    fn find(&self, app_side: bool, proto: Proto, port: u16, dst: SocketAddr) -> Option<&Socket> {
        let side = if app_side { &self.app } else { &self.peer };
        side.iter()
            .filter(|(p, n, _)| *p == proto && *n == port)
            .map(|(_, _, s)| s)
            .find(|s| local_addr(s).is_ipv4() == dst.is_ipv4())
    }

    fn by_label(&self, label: &str) -> Option<&Socket> {
        self.app.iter().chain(&self.peer).map(|(_, _, s)| s).find(|s| label_of(s) == label)
    }
}

fn local_addr(socket: &Socket) -> SocketAddr {
    match socket {
        Socket::Tcp(l) => l.local_addr(),
        Socket::Udp(l) => l.local_addr(),
    }
}

fn label_of(socket: &Socket) -> &str {
    match socket {
        Socket::Tcp(l) => l.label(),
        Socket::Udp(l) => l.label(),
    }
}

/// What explain said, from its JSON.
#[derive(Debug, PartialEq, Eq)]
struct Prediction {
    verdict: String,
    port: Option<u16>,
    ct_zone: Option<u16>,
}

fn json_field<'a>(json: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\":");
    let start = json.find(&key).unwrap_or_else(|| panic!("no {name} in {json}")) + key.len();
    let rest = &json[start..];
    rest[..rest.find([',', '}']).unwrap_or(rest.len())].trim_matches('"')
}

fn run_binary(ns: &Netns, scenario: &Scenario, leading: &[&str], extra: &[String]) -> Output {
    let mut command = ns.command(support::binary_under_test());
    command
        .env_clear()
        .env("PATH", PATH)
        .envs(scenario.env.iter().map(|(k, v)| (k, v)))
        .args(leading)
        .args(&scenario.argv)
        .args(extra);
    command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

fn explain(net: &Topology, scenario: &Scenario, flow: &Flow) -> (Prediction, String) {
    let mut args = vec!["--direction".to_string()];
    match flow.outbound_as {
        Some((uid, gid)) => {
            args.extend(["outbound".into(), "--uid".into(), uid.to_string(), "--gid".into(), gid.to_string()]);
            let own = [net.app_v4.map(IpAddr::V4), Some(net.app_ip_v6())].contains(&Some(flow.dst.ip()));
            if own {
                args.extend(["--out-interface".into(), "lo".into(), "--from".into(), flow.dst.ip().to_string()]);
            }
        }
        None => {
            let from = if flow.dst.is_ipv4() { IpAddr::V4(net.peer_v4.expect("v4")) } else { net.peer_ip_v6() };
            args.extend(["inbound".into(), "--from".into(), from.to_string()]);
        }
    }
    let proto = if flow.proto == Proto::Tcp { "tcp" } else { "udp" };
    args.extend([
        "--to".into(),
        flow.dst.to_string(),
        "--protocol".into(),
        proto.into(),
        "--output".into(),
        "json".into(),
    ]);
    let output = run_binary(&net.app, scenario, &["explain"], &args);
    let json = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "explain {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    let port = json_field(&json, "port");
    let prediction = Prediction {
        verdict: json_field(&json, "verdict").to_string(),
        port: port.parse().ok(),
        ct_zone: json_field(&json, "ct_zone").parse().ok(),
    };
    (prediction, json)
}

/// Where the kernel sent a flow: the listener that answered, and what it saw.
#[derive(Debug)]
struct Landing {
    label: String,
    /// The client socket's port: with the destination port it finds the conntrack entry.
    client_port: u16,
    /// TCP only: the accepted socket's local address and SO_ORIGINAL_DST.
    local: Option<SocketAddr>,
    original_dst: Option<SocketAddr>,
}

fn kernel(net: &Topology, listeners: &Listeners, flow: &Flow) -> Result<Landing, String> {
    let client = match flow.outbound_as {
        Some((uid, gid)) => Client::new(&net.app).user(uid, gid),
        None => Client::new(&net.peer),
    }
    .timeout(FLOW_TIMEOUT);
    let (label, client_port) = match flow.proto {
        Proto::Tcp => {
            let exchange = client.tcp(flow.dst).map_err(|e| format!("no connection ({e})"))?;
            (exchange.response, exchange.local.port())
        }
        Proto::Udp => {
            let exchange = client.udp(flow.dst).map_err(|e| format!("no datagram ({e})"))?;
            let client_port = exchange.local.port();
            match exchange.response {
                Some(label) => (label, client_port),
                // The agent's answer only gets back through conntrack when it is sent as the
                // proxy user (the zone rules match its uid); the harness listener is root, so
                // the datagram it recorded says where the query landed.
                None => return udp_recipient(listeners, client_port).ok_or_else(|| "no datagram arrived".to_string()),
            }
        }
    };
    match listeners.by_label(&label) {
        Some(Socket::Tcp(listener)) => {
            let accepted = listener.next();
            Ok(Landing { label, client_port, local: Some(accepted.local), original_dst: accepted.original_dst })
        }
        Some(Socket::Udp(listener)) => {
            listener.next();
            Ok(Landing { label, client_port, local: None, original_dst: None })
        }
        None => Err(format!("unknown answer {label:?}")),
    }
}

/// The UDP listener that recorded a datagram (the client already waited for it).
fn udp_recipient(listeners: &Listeners, client_port: u16) -> Option<Landing> {
    listeners.app.iter().chain(&listeners.peer).find_map(|(_, _, socket)| match socket {
        Socket::Udp(listener) => listener.next_within(Duration::from_millis(10)).map(|_| Landing {
            label: listener.label().to_string(),
            client_port,
            local: None,
            original_dst: None,
        }),
        Socket::Tcp(_) => None,
    })
}

/// The conntrack zone of the connection from `client_port` to `dport`, read from the pod
/// namespace's `/proc/…/net/nf_conntrack` (`zone=N`; absent or 0 for the default zone). A
/// family no rule asks conntrack for is not tracked in the namespace at all: no entry, no zone.
fn conntrack_zone(ns: &Netns, client_port: u16, dport: u16) -> Result<Option<u16>, String> {
    // thread-self: /proc/self/net is the namespace of the main thread, not of this one.
    let table = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/nf_conntrack"))
        .map_err(|e| format!("reading nf_conntrack: {e}"))?;
    let (sport, dport) = (client_port.to_string(), dport.to_string());
    for line in table.lines() {
        // The first sport=/dport= pair is the original direction.
        let first = |key: &str| line.split_whitespace().find_map(|word| word.strip_prefix(key));
        if first("sport=") == Some(sport.as_str()) && first("dport=") == Some(dport.as_str()) {
            // Zone 0 is the default zone: explain's null.
            return Ok(first("zone=").and_then(|zone| zone.parse().ok()).filter(|zone| *zone != 0));
        }
    }
    Ok(None)
}

/// Whether the kernel's landing is the one explain predicted.
fn agrees(
    net: &Topology,
    listeners: &Listeners,
    flow: &Flow,
    prediction: &Prediction,
    landing: &Result<Landing, String>,
) -> bool {
    let own = |ip: IpAddr| ip.is_loopback() || Some(ip) == net.app_v4.map(IpAddr::V4) || ip == net.app_ip_v6();
    let socket = match (prediction.verdict.as_str(), prediction.port) {
        ("redirect" | "tproxy", Some(port)) => listeners.find(true, flow.proto, port, flow.dst),
        ("accept", None) => listeners.find(own(flow.dst.ip()), flow.proto, flow.dst.port(), flow.dst),
        ("drop", None) => return landing.is_err(),
        _ => None,
    };
    let (Some(socket), Ok(landing)) = (socket, landing) else {
        return false;
    };
    if label_of(socket) != landing.label {
        return false;
    }
    if flow.proto == Proto::Udp {
        return true;
    }
    match prediction.verdict.as_str() {
        // The proxy reads the destination back with SO_ORIGINAL_DST.
        "redirect" => landing.original_dst == Some(flow.dst),
        // A transparent socket is the destination itself.
        "tproxy" => landing.local == Some(flow.dst),
        // Untouched: tracked connections answer SO_ORIGINAL_DST with the same address.
        _ => landing.local == Some(flow.dst) && [None, Some(flow.dst)].contains(&landing.original_dst),
    }
}

fn explain_agrees_with_the_kernel(choice: Choice) -> Ran {
    choice.available()?;
    let seed = seed();
    eprintln!("kernel_explain {choice:?}: seed {seed} (replay with KERNEL_EXPLAIN_SEED={seed})");
    let mut rng = Rng(seed ^ seed_salt(choice));
    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    let mut zones: BTreeMap<String, usize> = BTreeMap::new();
    let mut disagreements = Vec::new();
    let mut checked = 0;
    for index in 0..CONFIGS_PER_ENGINE {
        let dir = tempfile::tempdir().expect("tempdir");
        let resolv = dir.path().join("resolv.conf");
        let net = Topology::new(TopologyOptions::dual_stack());
        let servers = format!("nameserver {}\nnameserver {}\n", net.peer_v4.expect("v4"), net.peer_ip_v6());
        std::fs::write(&resolv, servers).expect("write resolv.conf");
        let scenario = random_scenario(&mut rng, choice, index % 2 == 1, &resolv.to_string_lossy());
        eprintln!("  config {index}: {:?} {}", scenario.env, scenario.argv.join(" "));
        let run = run_binary(&net.app, &scenario, &[], &[]);
        assert!(run.status.success(), "run {scenario:?} failed:\n{}", String::from_utf8_lossy(&run.stderr));
        let listeners = Listeners::start(&net, scenario.tproxy);
        for flow in flows(&net) {
            let (prediction, json) = explain(&net, &scenario, &flow);
            let landing = kernel(&net, &listeners, &flow);
            checked += 1;
            *verdicts.entry(prediction.verdict.clone()).or_default() += 1;
            // A connection that got through has a conntrack entry in the zone explain named.
            let zone = landing.as_ref().ok().map(|l| conntrack_zone(&net.app, l.client_port, flow.dst.port()));
            let zone_agrees = zone.as_ref().map_or(true, |zone| *zone == Ok(prediction.ct_zone));
            *zones.entry(format!("{:?}", prediction.ct_zone)).or_default() += 1;
            if !agrees(&net, &listeners, &flow, &prediction, &landing) || !zone_agrees {
                disagreements.push(format!(
                    "config {index} {:?} {}\n    flow {flow:?}\n    explain {json}    kernel  {landing:?}, zone {zone:?}",
                    scenario.env,
                    scenario.argv.join(" ")
                ));
            }
        }
    }
    eprintln!(
        "kernel_explain {choice:?}: {checked} flows {verdicts:?} zones {zones:?}, {} disagreements",
        disagreements.len()
    );
    assert!(
        disagreements.is_empty(),
        "seed {seed}: {} of {checked} flows disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    Ok(())
}
