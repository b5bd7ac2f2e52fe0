//! The real binary applies rules in a throwaway pod namespace (an "app" namespace joined to a
//! "peer" over a veth pair), and real sockets show where connections land: listeners on 15001
//! and 15006 read `SO_ORIGINAL_DST` the way Envoy does.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use libtest_mimic::Trial;

use crate::apply_support::{self, istio_ok, rules, sidecar_with, Choice};
use crate::support::{self, Ran};
use crate::support::{
    connect_as, Backend, Client, Listener, Topology, TopologyOptions, UdpListener, APP_GID, APP_UID, PEER_ROUTED_V4,
    PEER_ROUTED_V6, PROXY_GID, PROXY_UID,
};

const OUTBOUND: u16 = 15001;
const INBOUND: u16 = 15006;
const HEALTH: u16 = 15021;
const DNS_AGENT: u16 = 15053;
const REMOTE: u16 = 8080;
const APP_PORT: u16 = 9080;

pub fn tests() -> Vec<Trial> {
    kernel_tests![
        redirect_sidecar: [legacy, nft, detected],
        outbound_exclusions: [legacy, nft, native],
        include_cidr_limits_capture: [detected, native],
        tproxy: [legacy, nft, native],
        ipv6_only_pod: [detected, native] => |choice| ipv6_capture(choice, TopologyOptions::ipv6_only(), &[]),
        dual_stack_pod: [legacy, nft, native] =>
            |choice| ipv6_capture(choice, TopologyOptions::dual_stack(), &[("--dual-stack", "")]),
        dns_capture: [detected, native],
        network_namespace_flag_is_entered: [nft, native],
    ]
}

fn any(ipv6: bool) -> IpAddr {
    if ipv6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    }
}

/// The app's outbound connection is captured on 15001 with its destination preserved.
fn assert_captured(net: &Topology, outbound: &Listener, uid: u32, gid: u32, dst: SocketAddr) {
    let exchange = connect_as(&net.app, uid, gid, dst).unwrap_or_else(|e| panic!("connect to {dst}: {e}"));
    assert_eq!(exchange.response, outbound.label(), "{uid}:{gid} → {dst} was not captured");
    assert_eq!(outbound.next().original_dst, Some(dst));
}

/// The connection reaches `listener` itself, un-NATed.
fn assert_direct(net: &Topology, listener: &Listener, uid: u32, gid: u32, dst: SocketAddr) {
    let exchange = connect_as(&net.app, uid, gid, dst).unwrap_or_else(|e| panic!("connect to {dst}: {e}"));
    assert_eq!(exchange.response, listener.label(), "{uid}:{gid} → {dst} did not go direct");
    assert_not_rewritten(&listener.next(), dst);
}

/// Where conntrack tracks a connection, SO_ORIGINAL_DST answers even without NAT; then it must
/// be the address the connection really reached.
fn assert_not_rewritten(accepted: &support::Accepted, dst: SocketAddr) {
    assert!(accepted.original_dst.is_none() || accepted.original_dst == Some(dst), "{accepted:?} for {dst}");
}

/// Issue 3 item 8, REDIRECT: the default sidecar argv on one backend.
fn redirect_sidecar(choice: Choice) -> Ran {
    choice.available()?;
    let net = Topology::new(TopologyOptions::ipv4());
    let (app, peer) = (net.app_ip(), net.peer_ip());
    let outbound = Listener::tcp(&net.app, any(false), OUTBOUND);
    let inbound = Listener::tcp(&net.app, any(false), INBOUND);
    let health = Listener::tcp(&net.app, any(false), HEALTH);
    let app_server = Listener::tcp(&net.app, any(false), APP_PORT);
    let remote = Listener::tcp(&net.peer, any(false), REMOTE);

    istio_ok(&net.app, choice, &sidecar_with(&[]));
    let saved = rules(&net.app, choice.backend(), false);
    assert!(saved.contains(&"nat: -A OUTPUT -j ISTIO_OUTPUT".to_string()), "{saved:#?}");
    let other = [Backend::Legacy, Backend::Nft].into_iter().find(|b| *b != choice.backend()).expect("two backends");
    assert!(!apply_support::has_any_rule(&net.app, other, false), "rules leaked into {other}");

    // Outbound: the app is captured, the proxy (by uid or by gid) is not.
    assert_captured(&net, &outbound, APP_UID, APP_GID, SocketAddr::new(peer, REMOTE));
    assert_direct(&net, &remote, PROXY_UID, APP_GID, SocketAddr::new(peer, REMOTE));
    assert_direct(&net, &remote, APP_UID, PROXY_GID, SocketAddr::new(peer, REMOTE));

    // Inbound: app ports land on 15006 with the original destination; 15021 is excluded.
    let incoming = Client::new(&net.peer).tcp((app, APP_PORT)).expect("inbound connect");
    assert_eq!(incoming.response, inbound.label());
    assert_eq!(inbound.next().original_dst, Some(SocketAddr::new(app, APP_PORT)));
    let probe = Client::new(&net.peer).tcp((app, HEALTH)).expect("health connect");
    assert_eq!(probe.response, health.label());
    assert_not_rewritten(&health.next(), SocketAddr::new(app, HEALTH));

    // Envoy's inbound passthrough (uid 1337 from 127.0.0.6) reaches the app; the same
    // connection from another source is sent back through inbound capture.
    let passthrough = Client::new(&net.app)
        .user(PROXY_UID, PROXY_GID)
        .source(Ipv4Addr::new(127, 0, 0, 6).into())
        .tcp((app, APP_PORT))
        .expect("passthrough connect");
    assert_eq!(passthrough.response, app_server.label());
    app_server.next();
    let looped = connect_as(&net.app, PROXY_UID, PROXY_GID, (app, APP_PORT)).expect("proxy to own pod ip");
    assert_eq!(looped.response, inbound.label());
    inbound.next();
    outbound.assert_idle(Duration::ZERO);
    Ok(())
}

/// `-x` and `-o` exclude a CIDR and a port from capture; everything else is still captured.
fn outbound_exclusions(choice: Choice) -> Ran {
    choice.available()?;
    let net = Topology::new(TopologyOptions::ipv4());
    let peer = net.peer_ip();
    // A second peer address, to be excluded by CIDR.
    let excluded_peer: IpAddr = Ipv4Addr::new(10, 248, 0, 3).into();
    net.peer.exec_ok("ip", ["addr", "add", "10.248.0.3/24", "dev", support::IFACE]);
    let outbound = Listener::tcp(&net.app, any(false), OUTBOUND);
    let remote = Listener::tcp(&net.peer, any(false), REMOTE);
    let other_port = Listener::tcp(&net.peer, any(false), REMOTE + 1);
    istio_ok(&net.app, choice, &sidecar_with(&[("-x", "10.248.0.3/32"), ("-o", "8081")]));

    assert_direct(&net, &remote, APP_UID, APP_GID, SocketAddr::new(excluded_peer, REMOTE));
    assert_captured(&net, &outbound, APP_UID, APP_GID, SocketAddr::new(peer, REMOTE));
    assert_direct(&net, &other_port, APP_UID, APP_GID, SocketAddr::new(peer, REMOTE + 1));
    Ok(())
}

/// `-i` limited to one CIDR: only destinations inside it are captured.
fn include_cidr_limits_capture(choice: Choice) -> Ran {
    choice.available()?;
    let net = Topology::new(TopologyOptions::ipv4());
    let outbound = Listener::tcp(&net.app, any(false), OUTBOUND);
    let remote = Listener::tcp(&net.peer, any(false), REMOTE);
    istio_ok(&net.app, choice, &sidecar_with(&[("-i", "10.248.1.0/24")]));
    assert_direct(&net, &remote, APP_UID, APP_GID, SocketAddr::new(net.peer_ip(), REMOTE));
    assert_captured(&net, &outbound, APP_UID, APP_GID, SocketAddr::new(PEER_ROUTED_V4.into(), REMOTE));
    Ok(())
}

/// TPROXY: inbound connections reach a transparent listener on 15006 that sees the original
/// destination as its own address, even one the pod does not own; the policy routing exists
/// once however often the binary runs.
fn tproxy(choice: Choice) -> Ran {
    choice.available()?;
    let net = Topology::new(TopologyOptions::ipv4());
    let inbound = Listener::tcp_transparent(&net.app, any(false), INBOUND);
    let args = sidecar_with(&[("-m", "TPROXY")]);
    istio_ok(&net.app, choice, &args);
    istio_ok(&net.app, choice, &args);

    for dst in [net.app_ip(), PEER_ROUTED_V4.into()] {
        let exchange = Client::new(&net.peer).tcp((dst, APP_PORT)).expect("inbound connect");
        assert_eq!(exchange.response, inbound.label());
        let accepted = inbound.next();
        assert_eq!(accepted.local, SocketAddr::new(dst, APP_PORT));
        assert_not_rewritten(&accepted, SocketAddr::new(dst, APP_PORT));
    }
    let rules = support::ip_rule_list(&net.app, false);
    assert_eq!(rules.matches("fwmark 0x539 lookup 133").count(), 1, "{rules}");
    let routes = support::ip_route_list(&net.app, false, "133");
    assert_eq!(routes.matches("local default dev lo").count(), 1, "{routes}");
    Ok(())
}

/// Outbound and inbound capture over IPv6, and `::6` on `lo`.
fn ipv6_capture(choice: Choice, options: TopologyOptions, extra: &[(&str, &str)]) -> Ran {
    choice.available()?;
    let net = Topology::new(options);
    let (app, peer) = (net.app_ip_v6(), net.peer_ip_v6());
    let outbound = Listener::tcp(&net.app, any(true), OUTBOUND);
    let inbound = Listener::tcp(&net.app, any(true), INBOUND);
    let remote = Listener::tcp(&net.peer, any(true), REMOTE);
    istio_ok(&net.app, choice, &sidecar_with(extra));

    assert_captured(&net, &outbound, APP_UID, APP_GID, SocketAddr::new(peer, REMOTE));
    assert_direct(&net, &remote, PROXY_UID, PROXY_GID, SocketAddr::new(peer, REMOTE));
    assert_captured(&net, &outbound, APP_UID, APP_GID, SocketAddr::new(PEER_ROUTED_V6.into(), REMOTE));
    let incoming = Client::new(&net.peer).tcp((app, APP_PORT)).expect("inbound v6 connect");
    assert_eq!(incoming.response, inbound.label());
    assert_eq!(inbound.next().original_dst, Some(SocketAddr::new(app, APP_PORT)));
    let addresses = net.app.exec_ok("ip", ["-6", "addr", "show", "dev", "lo"]);
    assert!(addresses.contains("inet6 ::6/128"), "{addresses}");
    Ok(())
}

/// `--redirect-dns` with a resolv.conf server: the app's UDP and TCP queries go to the agent
/// on 15053; the proxy's own queries reach the server.
fn dns_capture(choice: Choice) -> Ran {
    choice.available()?;
    let net = Topology::new(TopologyOptions::ipv4());
    let server = net.peer_ip();
    let mut resolv = tempfile::NamedTempFile::new().expect("temp resolv.conf");
    writeln!(resolv, "nameserver {server}").expect("write resolv.conf");
    let resolv_path = resolv.path().to_string_lossy().into_owned();
    let upstream_dns = UdpListener::bind(&net.peer, any(false), 53);
    // Like istio-agent: loopback, so answers match conntrack's reverse tuple.
    let agent_udp = UdpListener::bind(&net.app, Ipv4Addr::LOCALHOST.into(), DNS_AGENT);
    let agent_tcp = Listener::tcp(&net.app, any(false), DNS_AGENT);
    istio_ok(&net.app, choice, &sidecar_with(&[("--redirect-dns", ""), ("--resolv-conf", &resolv_path)]));

    // Only the arrival is asserted for UDP: the CT zone rules expect the agent to answer as
    // uid 1337, and these listeners run as root.
    let udp = |uid, gid| Client::new(&net.app).user(uid, gid).timeout(Duration::from_millis(300)).udp((server, 53));
    udp(APP_UID, APP_GID).expect("app UDP query");
    let query = agent_udp.next();
    assert_eq!(query.dst, Some(SocketAddr::from((Ipv4Addr::LOCALHOST, DNS_AGENT))));
    assert_eq!(query.payload, format!("hello from uid {APP_UID}").as_bytes());
    let tcp_query = connect_as(&net.app, APP_UID, APP_GID, (server, 53)).expect("app TCP query");
    assert_eq!(tcp_query.response, agent_tcp.label());
    assert_eq!(agent_tcp.next().original_dst, Some(SocketAddr::new(server, 53)));
    udp(PROXY_UID, PROXY_GID).expect("proxy UDP query");
    assert_eq!(upstream_dns.next().dst, Some(SocketAddr::new(server, 53)));
    agent_udp.assert_idle(Duration::ZERO);
    Ok(())
}

/// `--network-namespace` is entered: started in another throwaway namespace, the binary
/// programs the named one, and the one it started in stays empty.
fn network_namespace_flag_is_entered(choice: Choice) -> Ran {
    choice.available()?;
    let net = Topology::new(TopologyOptions::ipv4());
    let start = support::Netns::new("start");
    let outbound = Listener::tcp(&net.app, any(false), OUTBOUND);
    let path = net.app.path().to_string_lossy().into_owned();
    istio_ok(&start, choice, &sidecar_with(&[("--network-namespace", &path)]));
    assert_captured(&net, &outbound, APP_UID, APP_GID, SocketAddr::new(net.peer_ip(), REMOTE));
    assert!(!apply_support::has_any_rule(&start, Backend::Nft, false));
    assert!(!apply_support::has_any_rule(&start, Backend::Legacy, false));
    Ok(())
}
