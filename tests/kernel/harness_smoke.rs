//! Proves the kernel test harness (tests/support) against hand-written
//! rules, independently of the istio-iptables binary: if these fail, the
//! harness or the machine is at fault, not the rules generator.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use libtest_mimic::Trial;

use crate::apply_support::Choice;
use crate::support::{self, Ran};
use crate::support::{
    connect_as, send_udp_as, Backend, Client, Listener, Netns, Topology, TopologyOptions, UdpListener, APP_GID,
    APP_UID, PEER_ROUTED_V4, PEER_ROUTED_V6, PROXY_GID, PROXY_UID,
};

const OUTBOUND_PORT: u16 = 15001;
const INBOUND_PORT: u16 = 15006;
const DNS_PORT: u16 = 15053;
const REMOTE_PORT: u16 = 8080;
const APP_PORT: u16 = 9080;

pub fn tests() -> Vec<Trial> {
    kernel_tests![
        netns_is_deleted_on_drop,
        run_as_switches_only_the_worker_thread,
        command_as_runs_in_the_namespace_as_the_user,
        redirect_capture_v4: [legacy, nft] => |choice: Choice| redirect_capture(choice.backend(), false),
        redirect_capture_v6: [legacy, nft] => |choice: Choice| redirect_capture(choice.backend(), true),
        dns_capture_v4: [legacy, nft] => |choice: Choice| dns_capture(choice.backend(), false),
        dns_capture_v6: [nft] => |choice: Choice| dns_capture(choice.backend(), true),
        tproxy_capture_v4: [legacy, nft] => |choice: Choice| tproxy_capture(choice.backend(), false),
        tproxy_capture_v6: [nft] => |choice: Choice| tproxy_capture(choice.backend(), true),
        client_can_bind_a_source_address,
        refused_connections_are_reported,
        connect_timeouts_are_reported,
        dual_stack_topology_reaches_the_peer_over_both_families,
    ]
}

/// Sidecar-style capture: everything the app (not the proxy) sends goes to
/// 15001, inbound traffic to the app port goes to 15006.
const REDIRECT_RULES: &str = "\
*nat
-A PREROUTING -p tcp --dport 9080 -j REDIRECT --to-ports 15006
-A OUTPUT -p tcp -m owner ! --uid-owner 1337 -j REDIRECT --to-ports 15001
COMMIT
";

const DNS_RULES: &str = "\
*nat
-A OUTPUT -p udp --dport 53 -m owner ! --uid-owner 1337 -j REDIRECT --to-ports 15053
COMMIT
";

const TPROXY_RULES: &str = "\
*mangle
-A PREROUTING -p tcp --dport 9080 -j TPROXY --on-port 15006 --tproxy-mark 1337/0xffffffff
COMMIT
";

fn unspecified(ipv6: bool) -> IpAddr {
    if ipv6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    }
}

fn topology(ipv6: bool) -> Topology {
    Topology::new(if ipv6 { TopologyOptions::ipv6_only() } else { TopologyOptions::ipv4() })
}

fn require(backend: Backend, ipv6: bool) -> Ran {
    support::require_programs(&[&backend.restore(ipv6), &backend.save(ipv6)])
}

fn restore(ns: &Netns, backend: Backend, ipv6: bool, script: &str) {
    support::iptables_restore(ns, &backend.restore(ipv6), script).unwrap_or_else(|e| panic!("{e}"));
}

fn netns_is_deleted_on_drop() -> Ran {
    support::require_root()?;
    let ns = Netns::new("drop");
    let name = ns.name().to_owned();
    assert!(ns.path().exists());
    drop(ns);
    let listed = std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(!listed.lines().any(|line| line.split_whitespace().next() == Some(&name)), "{listed}");
    Ok(())
}

fn run_as_switches_only_the_worker_thread() -> Ran {
    support::require_root()?;
    let ns = Netns::new("creds");
    let (uid, gid, groups) = ns.run_as(APP_UID, APP_GID, || {
        (nix::unistd::getuid(), nix::unistd::getgid(), nix::unistd::getgroups().expect("getgroups"))
    });
    assert_eq!((uid.as_raw(), gid.as_raw()), (APP_UID, APP_GID));
    assert!(groups.is_empty(), "supplementary groups kept: {groups:?}");
    assert!(nix::unistd::getuid().is_root(), "the test thread must stay root");
    Ok(())
}

fn command_as_runs_in_the_namespace_as_the_user() -> Ran {
    support::require_root()?;
    let net = topology(false);
    let run = |program: &str, args: &[&str]| {
        let output = net.app.command_as(APP_UID, APP_GID, program).args(args).output().expect("spawn");
        assert!(output.status.success(), "{program}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(run("id", &["-u"]), APP_UID.to_string());
    assert_eq!(run("id", &["-G"]), APP_GID.to_string(), "only the primary group");
    assert!(run("ip", &["-4", "-br", "addr"]).contains("10.248.0.1/24"), "not inside the app netns");
    Ok(())
}

fn redirect_capture(backend: Backend, ipv6: bool) -> Ran {
    require(backend, ipv6)?;
    let net = topology(ipv6);
    let (app_ip, peer_ip) = (net.app_ip(), net.peer_ip());
    let any = unspecified(ipv6);
    let remote = Listener::tcp(&net.peer, any, REMOTE_PORT);
    let outbound = Listener::tcp(&net.app, any, OUTBOUND_PORT);
    let inbound = Listener::tcp(&net.app, any, INBOUND_PORT);
    restore(&net.app, backend, ipv6, REDIRECT_RULES);

    let saved = support::iptables_save(&net.app, &backend.save(ipv6));
    assert!(saved.contains("--to-ports 15001"), "{saved}");

    // The app's traffic is captured, and the proxy can recover where it
    // was going.
    let app = connect_as(&net.app, APP_UID, APP_GID, (peer_ip, REMOTE_PORT)).expect("app connect");
    assert_eq!(app.response, outbound.label());
    assert_eq!(app.peer, SocketAddr::new(peer_ip, REMOTE_PORT), "client sees the original peer");
    let captured = outbound.next();
    assert_eq!(captured.original_dst, Some(SocketAddr::new(peer_ip, REMOTE_PORT)));
    assert_eq!(captured.peer.ip(), app_ip);
    assert_eq!(captured.payload, format!("hello from uid {APP_UID}").as_bytes());

    // The proxy's own traffic is not.
    let proxy = connect_as(&net.app, PROXY_UID, PROXY_GID, (peer_ip, REMOTE_PORT)).expect("proxy connect");
    assert_eq!(proxy.response, remote.label());
    let direct = remote.next();
    assert_eq!(direct.peer.ip(), app_ip);
    assert_eq!(direct.original_dst, None);

    // Inbound connections to the app port land on the inbound listener.
    let incoming = Client::new(&net.peer).tcp((app_ip, APP_PORT)).expect("inbound connect");
    assert_eq!(incoming.response, inbound.label());
    let accepted = inbound.next();
    assert_eq!(accepted.original_dst, Some(SocketAddr::new(app_ip, APP_PORT)));
    assert_eq!(accepted.peer.ip(), peer_ip);
    outbound.assert_idle(Duration::ZERO);
    Ok(())
}

fn dns_capture(backend: Backend, ipv6: bool) -> Ran {
    require(backend, ipv6)?;
    let net = topology(ipv6);
    let peer_ip = net.peer_ip();
    let loopback: IpAddr = if ipv6 { Ipv6Addr::LOCALHOST.into() } else { Ipv4Addr::LOCALHOST.into() };
    let resolver = UdpListener::bind(&net.peer, unspecified(ipv6), 53);
    // Like istio-agent, bind loopback rather than the wildcard: a wildcard
    // socket answers from the routing-chosen source (the pod IP), which does
    // not match conntrack's reverse tuple, so the client never sees it.
    let agent = UdpListener::bind(&net.app, loopback, DNS_PORT);
    restore(&net.app, backend, ipv6, DNS_RULES);

    // Conntrack rewrites the answer's source back to the resolver, so the
    // connected client socket accepts it.
    let app = send_udp_as(&net.app, APP_UID, APP_GID, (peer_ip, 53)).expect("app query");
    assert_eq!(app.response.as_deref(), Some(agent.label()));
    let query = agent.next();
    assert_eq!(query.payload, format!("hello from uid {APP_UID}").as_bytes());
    // Locally generated packets are REDIRECTed to the loopback address.
    assert_eq!(query.dst, Some(SocketAddr::new(loopback, DNS_PORT)));

    let proxy = send_udp_as(&net.app, PROXY_UID, PROXY_GID, (peer_ip, 53)).expect("proxy query");
    assert_eq!(proxy.response.as_deref(), Some(resolver.label()));
    assert_eq!(resolver.next().dst, Some(SocketAddr::new(peer_ip, 53)));
    Ok(())
}

/// TPROXY delivers to a transparent listener without rewriting the
/// destination, so even a destination the app does not own shows up as the
/// accepted socket's local address.
fn tproxy_capture(backend: Backend, ipv6: bool) -> Ran {
    require(backend, ipv6)?;
    let net = topology(ipv6);
    let family = if ipv6 { "-6" } else { "-4" };
    let inbound = Listener::tcp_transparent(&net.app, unspecified(ipv6), INBOUND_PORT);
    if let Err(e) = support::iptables_restore(&net.app, &backend.restore(ipv6), TPROXY_RULES) {
        return Err(support::skip(format!("TPROXY unavailable: {e}")));
    }
    // Marked packets are routed to the local stack whatever their
    // destination.
    net.app.exec_ok("ip", [family, "rule", "add", "fwmark", "1337", "lookup", "133"]);
    net.app.exec_ok("ip", [family, "route", "add", "local", "default", "dev", "lo", "table", "133"]);
    assert!(support::ip_rule_list(&net.app, ipv6).contains("lookup 133"));

    let foreign: IpAddr = if ipv6 { PEER_ROUTED_V6.into() } else { PEER_ROUTED_V4.into() };
    for dst in [net.app_ip(), foreign] {
        let exchange = Client::new(&net.peer).tcp((dst, APP_PORT)).expect("inbound connect");
        assert_eq!(exchange.response, inbound.label());
        let accepted = inbound.next();
        assert_eq!(accepted.local, SocketAddr::new(dst, APP_PORT));
        assert_eq!(accepted.peer.ip(), net.peer_ip());
        assert_eq!(accepted.original_dst, None, "TPROXY does not NAT");
    }
    Ok(())
}

/// Envoy's inbound passthrough connects to the app from 127.0.0.6.
fn client_can_bind_a_source_address() -> Ran {
    support::require_root()?;
    let net = topology(false);
    let app_ip = net.app_ip();
    let server = Listener::tcp(&net.app, app_ip, APP_PORT);
    let source: IpAddr = Ipv4Addr::new(127, 0, 0, 6).into();
    let exchange = Client::new(&net.app)
        .user(PROXY_UID, PROXY_GID)
        .source(source)
        .tcp((app_ip, APP_PORT))
        .expect("connect from 127.0.0.6");
    assert_eq!(exchange.local.ip(), source);
    assert_eq!(server.next().peer.ip(), source);
    Ok(())
}

fn refused_connections_are_reported() -> Ran {
    support::require_root()?;
    let net = topology(false);
    let error =
        connect_as(&net.app, APP_UID, APP_GID, (net.peer_ip(), REMOTE_PORT)).expect_err("nothing listens on the peer");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused, "{error}");
    Ok(())
}

fn connect_timeouts_are_reported() -> Ran {
    require(Backend::Nft, false)?;
    let net = topology(false);
    let drop_rules = "*filter\n-A INPUT -p tcp --dport 8080 -j DROP\nCOMMIT\n";
    restore(&net.peer, Backend::Nft, false, drop_rules);
    let error = Client::new(&net.app)
        .timeout(Duration::from_millis(300))
        .tcp((net.peer_ip(), REMOTE_PORT))
        .expect_err("the peer drops SYNs");
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
    Ok(())
}

fn dual_stack_topology_reaches_the_peer_over_both_families() -> Ran {
    support::require_root()?;
    let net = Topology::new(TopologyOptions::dual_stack());
    for (listen, dst) in [(unspecified(false), net.peer_ip()), (unspecified(true), net.peer_ip_v6())] {
        let server = Listener::tcp(&net.peer, listen, REMOTE_PORT);
        let exchange = connect_as(&net.app, APP_UID, APP_GID, (dst, REMOTE_PORT)).expect("connect");
        assert_eq!(exchange.response, server.label());
        assert_eq!(server.next().local, SocketAddr::new(dst, REMOTE_PORT));
    }
    Ok(())
}
