//! `--native-nftables` applied for real, in namespaces these tests create and delete: real
//! traffic lands where the iptables backend sends it, reruns are exact, cleanup leaves nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Output;
use std::time::Duration;

use libtest_mimic::Trial;

use crate::support::{self, Ran};
use crate::support::{
    connect_as, send_udp_as, Client, Listener, Netns, Topology, TopologyOptions, UdpListener, APP_GID, APP_UID,
    PEER_ROUTED_V4, PEER_ROUTED_V6, PROXY_GID, PROXY_UID,
};

/// Enough to find `nft` and `ip`; nothing else from the test's environment leaks in.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const OUTBOUND_PORT: u16 = 15001;
const INBOUND_PORT: u16 = 15006;
const AGENT_DNS_PORT: u16 = 15053;
const STATUS_PORT: u16 = 15021;
const REMOTE_PORT: u16 = 80;
const APP_PORT: u16 = 8080;

pub fn tests() -> Vec<Trial> {
    kernel_tests![
        redirect_sidecar_captures_outbound_and_inbound,
        outbound_exclusions_and_limited_include_bypass_capture,
        tproxy_inbound_reaches_a_transparent_listener_v4 => || tproxy(false),
        tproxy_inbound_reaches_a_transparent_listener_v6 => || tproxy(true),
        ipv6_only_pod_captures_over_ipv6 => || ipv6_capture(TopologyOptions::ipv6_only(), &[]),
        dual_stack_pod_captures_over_ipv6 => || ipv6_capture(TopologyOptions::dual_stack(), &["--dual-stack"]),
        ipv6_traffic_is_left_alone_when_ipv6_is_off,
        dns_to_the_resolver_goes_to_the_agent,
        rerun_with_the_same_configuration_changes_nothing,
        changed_configuration_leaves_exactly_the_new_ruleset,
        cleanup_only_removes_every_istio_table_and_is_idempotent,
        failed_apply_keeps_the_previous_ruleset_and_reports_nft_stderr,
        missing_nft_says_what_to_install,
        dry_run_prints_and_applies_nothing,
        network_namespace_flag_programs_that_namespace,
    ]
}

/// The injected sidecar argv (the gid defaults to the uid, 1337).
fn sidecar() -> Vec<&'static str> {
    support::SIDECAR_ARGV.to_vec()
}

fn require_nft() -> Ran {
    support::require_programs(&["nft"])
}

/// One run of the binary inside `ns` with a clean environment plus `env`.
fn run(ns: &Netns, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = ns.command(support::binary_under_test());
    command.env_clear().env("PATH", PATH).envs(env.iter().copied()).arg("--native-nftables").args(args);
    command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

/// Like [`run`]; the run must succeed.
fn apply(ns: &Netns, args: &[&str], env: &[(&str, &str)]) {
    let output = run(ns, args, env);
    assert!(
        output.status.success(),
        "istio-iptables --native-nftables {args:?} failed ({})\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn args<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(extra).copied().collect()
}

/// The whole ruleset, counters included: a rerun must not even reset what it did not change
/// in a way that shows.
fn ruleset(ns: &Netns) -> String {
    support::nft_list_ruleset(ns)
}

/// The rules without counters, for namespaces where traffic (IPv6 neighbour discovery) may
/// tick them between two listings.
fn rules(ns: &Netns) -> String {
    ns.exec_ok("nft", ["-s", "list", "ruleset"])
}

fn any(ipv6: bool) -> IpAddr {
    if ipv6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    }
}

/// A namespace with only `lo`, for tests about the ruleset rather than traffic; IPv6 is given
/// explicitly since there is no address to detect it from.
fn bare_netns(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.loopback_up();
    ns
}

/// Outbound from the app is captured on 15001 with its destination recoverable; the proxy's
/// own traffic (by uid or by gid) goes out directly.
fn assert_outbound_captured(net: &Topology, outbound: &Listener, remote: &Listener, peer_ip: IpAddr) {
    let original = SocketAddr::new(peer_ip, REMOTE_PORT);
    let app = connect_as(&net.app, APP_UID, APP_GID, original).expect("app connect");
    assert_eq!(app.response, outbound.label(), "app traffic to {original} not captured");
    assert_eq!(outbound.next().original_dst, Some(original));

    for (uid, gid) in [(PROXY_UID, APP_GID), (APP_UID, PROXY_GID)] {
        let proxy = connect_as(&net.app, uid, gid, original).expect("proxy connect");
        assert_eq!(proxy.response, remote.label(), "traffic of {uid}:{gid} to {original} was captured");
        assert_eq!(remote.next().original_dst, None);
    }
}

/// Inbound to an app port lands on 15006 with its original destination.
fn assert_inbound_captured(net: &Topology, inbound: &Listener, app_ip: IpAddr) {
    let original = SocketAddr::new(app_ip, APP_PORT);
    let incoming = Client::new(&net.peer).tcp(original).expect("inbound connect");
    assert_eq!(incoming.response, inbound.label(), "inbound to {original} not captured");
    assert_eq!(inbound.next().original_dst, Some(original));
}

fn redirect_sidecar_captures_outbound_and_inbound() -> Ran {
    require_nft()?;
    let net = Topology::new(TopologyOptions::ipv4());
    let (app_ip, peer_ip) = (net.app_ip(), net.peer_ip());
    let outbound = Listener::tcp(&net.app, any(false), OUTBOUND_PORT);
    let inbound = Listener::tcp(&net.app, any(false), INBOUND_PORT);
    let status = Listener::tcp(&net.app, app_ip, STATUS_PORT);
    let app_server = Listener::tcp(&net.app, app_ip, APP_PORT);
    let remote = Listener::tcp(&net.peer, any(false), REMOTE_PORT);
    apply(&net.app, &sidecar(), &[]);

    assert_outbound_captured(&net, &outbound, &remote, peer_ip);
    assert_inbound_captured(&net, &inbound, app_ip);

    let excluded = Client::new(&net.peer).tcp((app_ip, STATUS_PORT)).expect("connect to excluded port");
    assert_eq!(excluded.response, status.label(), "excluded inbound port was captured");

    // The proxy calling the pod IP goes back through inbound capture, unless it comes from
    // the inbound passthrough source 127.0.0.6.
    let passthrough_source: IpAddr = Ipv4Addr::new(127, 0, 0, 6).into();
    let own_ip = SocketAddr::new(app_ip, APP_PORT);
    let from_proxy = connect_as(&net.app, PROXY_UID, PROXY_GID, own_ip).expect("proxy to pod IP");
    assert_eq!(from_proxy.response, inbound.label());
    assert_eq!(inbound.next().original_dst, Some(own_ip));
    let passthrough =
        Client::new(&net.app).user(PROXY_UID, PROXY_GID).source(passthrough_source).tcp(own_ip).expect("passthrough");
    assert_eq!(passthrough.response, app_server.label(), "traffic from 127.0.0.6 was captured");
    assert_eq!(app_server.next().peer.ip(), passthrough_source);

    outbound.assert_idle(Duration::ZERO);
    inbound.assert_idle(Duration::ZERO);
    Ok(())
}

fn outbound_exclusions_and_limited_include_bypass_capture() -> Ran {
    require_nft()?;
    let net = Topology::new(TopologyOptions::ipv4());
    let peer_ip = net.peer_ip();
    let outbound = Listener::tcp(&net.app, any(false), OUTBOUND_PORT);
    let remote = Listener::tcp(&net.peer, any(false), REMOTE_PORT);
    let excluded_port = 9090;
    let remote_excluded = Listener::tcp(&net.peer, any(false), excluded_port);
    let to_remote = |port: u16| connect_as(&net.app, APP_UID, APP_GID, (peer_ip, port)).expect("app connect").response;

    // Each configuration replaces the previous one in the same namespace.
    apply(&net.app, &args(&sidecar(), &["-o", "9090"]), &[]);
    assert_eq!(to_remote(excluded_port), remote_excluded.label(), "-o port was captured");
    assert_eq!(to_remote(REMOTE_PORT), outbound.label());
    assert_eq!(outbound.next().original_dst, Some(SocketAddr::new(peer_ip, REMOTE_PORT)));

    apply(&net.app, &args(&sidecar(), &["-x", &format!("{peer_ip}/32")]), &[]);
    assert_eq!(to_remote(REMOTE_PORT), remote.label(), "-x CIDR was captured");
    assert_eq!(to_remote(excluded_port), remote_excluded.label(), "-x CIDR was captured");

    apply(&net.app, &args(&sidecar(), &["-i", "10.248.1.0/24"]), &[]);
    assert_eq!(to_remote(REMOTE_PORT), remote.label(), "destination outside -i was captured");
    let included = SocketAddr::new(PEER_ROUTED_V4.into(), REMOTE_PORT);
    let captured = connect_as(&net.app, APP_UID, APP_GID, included).expect("app connect to -i range");
    assert_eq!(captured.response, outbound.label());
    assert_eq!(outbound.next().original_dst, Some(included));
    outbound.assert_idle(Duration::ZERO);
    Ok(())
}

fn tproxy(ipv6_only: bool) -> Ran {
    require_nft()?;
    let net = Topology::new(if ipv6_only { TopologyOptions::ipv6_only() } else { TopologyOptions::ipv4() });
    let inbound = Listener::tcp_transparent(&net.app, any(ipv6_only), INBOUND_PORT);
    let argv = ["-u", "1337", "-g", "1337", "-m", "TPROXY", "-i", "*", "-b", "*"];
    let first = run(&net.app, &argv, &[]);
    if !first.status.success() && String::from_utf8_lossy(&first.stderr).contains("tproxy") {
        return Err(support::skip(format!("nft tproxy unavailable: {}", String::from_utf8_lossy(&first.stderr))));
    }
    apply(&net.app, &argv, &[]);

    // Routes and rules exist once after two runs.
    let family = if ipv6_only { "-6" } else { "-4" };
    let policy = support::ip_rule_list(&net.app, ipv6_only);
    assert_eq!(policy.matches("fwmark 0x539 lookup 133").count(), 1, "{policy}");
    let table = net.app.exec_ok("ip", [family, "route", "show", "table", "133"]);
    assert_eq!(table.matches("local default dev lo").count(), 1, "{table}");

    // A destination the app does not own proves the policy route; the pod IP the hook.
    let foreign: IpAddr = if ipv6_only { PEER_ROUTED_V6.into() } else { PEER_ROUTED_V4.into() };
    for dst in [net.app_ip(), foreign] {
        let exchange = Client::new(&net.peer).tcp((dst, APP_PORT)).expect("inbound connect");
        assert_eq!(exchange.response, inbound.label(), "inbound to {dst} not intercepted");
        let accepted = inbound.next();
        assert_eq!(accepted.local, SocketAddr::new(dst, APP_PORT));
        assert_eq!(accepted.peer.ip(), net.peer_ip());
    }
    Ok(())
}

/// With IPv6 on (detected: first address IPv6, or `--dual-stack`), capture works over IPv6.
fn ipv6_capture(options: TopologyOptions, extra: &[&str]) -> Ran {
    require_nft()?;
    let net = Topology::new(options);
    let (app_v6, peer_v6) = (net.app_ip_v6(), net.peer_ip_v6());
    let outbound = Listener::tcp(&net.app, any(true), OUTBOUND_PORT);
    let inbound = Listener::tcp(&net.app, any(true), INBOUND_PORT);
    let remote = Listener::tcp(&net.peer, any(true), REMOTE_PORT);
    apply(&net.app, &args(&sidecar(), extra), &[]);
    assert!(rules(&net.app).contains("ip6 saddr ::6"), "IPv6 was not detected");
    assert_outbound_captured(&net, &outbound, &remote, peer_v6);
    assert_inbound_captured(&net, &inbound, app_v6);
    let lo = net.app.exec_ok("ip", ["-6", "addr", "show", "dev", "lo"]);
    assert!(lo.contains("inet6 ::6/128"), "{lo}");
    Ok(())
}

/// Upstream's rules without an address match IPv6 too, so with IPv6 off it redirects IPv6 to
/// ports Envoy may not listen on. Like the iptables backend (which leaves ip6tables alone),
/// IPv6 must flow untouched while IPv4 is captured.
fn ipv6_traffic_is_left_alone_when_ipv6_is_off() -> Ran {
    require_nft()?;
    let net = Topology::new(TopologyOptions::dual_stack());
    let (app_v6, peer_v6) = (net.app_ip_v6(), net.peer_ip_v6());
    let outbound_v4 = Listener::tcp(&net.app, any(false), OUTBOUND_PORT);
    let inbound_v4 = Listener::tcp(&net.app, any(false), INBOUND_PORT);
    let outbound_v6 = Listener::tcp(&net.app, any(true), OUTBOUND_PORT);
    let inbound_v6 = Listener::tcp(&net.app, any(true), INBOUND_PORT);
    let app_server_v6 = Listener::tcp(&net.app, app_v6, APP_PORT);
    let remote_v4 = Listener::tcp(&net.peer, any(false), REMOTE_PORT);
    let remote_v6 = Listener::tcp(&net.peer, any(true), REMOTE_PORT);
    // With listed inbound ports, the port match and the wildcard outbound jump carry no
    // address: upstream applies both to IPv6.
    let argv = args(&sidecar(), &["-b", "8080"]);
    apply(&net.app, &argv, &[("ENABLE_INBOUND_IPV6", "false")]);

    let app = connect_as(&net.app, APP_UID, APP_GID, (peer_v6, REMOTE_PORT)).expect("app connect over v6");
    assert_eq!(app.response, remote_v6.label(), "IPv6 outbound captured with IPv6 off");
    let incoming = Client::new(&net.peer).tcp((app_v6, APP_PORT)).expect("inbound over v6");
    assert_eq!(incoming.response, app_server_v6.label(), "IPv6 inbound captured with IPv6 off");
    outbound_v6.assert_idle(Duration::ZERO);
    inbound_v6.assert_idle(Duration::ZERO);

    assert_outbound_captured(&net, &outbound_v4, &remote_v4, net.peer_ip());
    assert_inbound_captured(&net, &inbound_v4, net.app_ip());
    Ok(())
}

fn dns_to_the_resolver_goes_to_the_agent() -> Ran {
    require_nft()?;
    let net = Topology::new(TopologyOptions::ipv4());
    let peer_ip = net.peer_ip();
    let resolv_conf = tempfile::NamedTempFile::new().expect("temp resolv.conf");
    std::fs::write(resolv_conf.path(), format!("nameserver {peer_ip}\n")).expect("write resolv.conf");
    let resolv_conf = resolv_conf.path().to_string_lossy().into_owned();
    let loopback: IpAddr = Ipv4Addr::LOCALHOST.into();
    // The agent binds loopback, the REDIRECT target for local traffic, so its answers match
    // conntrack's reverse tuple.
    let agent_udp = UdpListener::bind(&net.app, loopback, AGENT_DNS_PORT);
    let agent_tcp = Listener::tcp(&net.app, loopback, AGENT_DNS_PORT);
    let resolver_udp = UdpListener::bind(&net.peer, any(false), 53);
    apply(&net.app, &args(&sidecar(), &["--redirect-dns", "--resolv-conf", &resolv_conf]), &[]);
    assert!(rules(&net.app).contains("table inet istio-proxy-raw"));

    // Only the query is checked: the answer is un-NATed only if it leaves in the query's
    // conntrack zone, which the rules give to sockets of the proxy's uid, not to this listener.
    send_udp_as(&net.app, APP_UID, APP_GID, (peer_ip, 53)).expect("app UDP query");
    let query = agent_udp.next();
    assert_eq!(query.dst, Some(SocketAddr::new(loopback, AGENT_DNS_PORT)), "UDP DNS not captured");
    assert_eq!(query.payload, format!("hello from uid {APP_UID}").as_bytes());
    let tcp = connect_as(&net.app, APP_UID, APP_GID, (peer_ip, 53)).expect("app TCP query");
    assert_eq!(tcp.response, agent_tcp.label(), "TCP DNS not captured");
    assert_eq!(agent_tcp.next().original_dst, Some(SocketAddr::new(peer_ip, 53)));

    let upstream = send_udp_as(&net.app, PROXY_UID, PROXY_GID, (peer_ip, 53)).expect("agent's own query");
    assert_eq!(upstream.response.as_deref(), Some(resolver_udp.label()), "the agent's own query was captured");
    Ok(())
}

/// Configurations that between them use every table, both base chains of each, inserts,
/// IPv6 twins and DNS.
/// An argv and the environment it runs with.
type Configuration<'a> = (Vec<&'a str>, Vec<(&'static str, &'static str)>);

fn configurations(resolv_conf: &str) -> Vec<Configuration<'_>> {
    let v6 = vec![("ENABLE_INBOUND_IPV6", "true")];
    let v4 = vec![("ENABLE_INBOUND_IPV6", "false")];
    let dns = ["--redirect-dns", "--resolv-conf", resolv_conf];
    vec![
        (sidecar(), v4.clone()),
        (args(&sidecar(), &["-k", "eth1,eth2"]), v6.clone()),
        (args(&["-u", "3,4", "-g", "1,2", "-m", "TPROXY", "-b", "*", "-x", "1.1.0.0/16", "-c", "nic0"], &dns), v6),
        (args(&["-u", "1337", "-i", "10.0.0.0/8", "-b", "4000,5000", "--drop-invalid"], &dns), v4),
    ]
}

/// A resolv.conf with a server per family, and its path (the file lives as long as the guard).
fn dns_resolv_conf() -> (tempfile::NamedTempFile, String) {
    let file = tempfile::NamedTempFile::new().expect("temp resolv.conf");
    std::fs::write(file.path(), "nameserver 127.0.0.53\nnameserver ::127.0.0.53\n").expect("write resolv.conf");
    let path = file.path().to_string_lossy().into_owned();
    (file, path)
}

fn rerun_with_the_same_configuration_changes_nothing() -> Ran {
    require_nft()?;
    let (_guard, resolv_conf) = dns_resolv_conf();
    for (argv, env) in configurations(&resolv_conf) {
        let ns = bare_netns("rerun");
        apply(&ns, &argv, &env);
        let first = ruleset(&ns);
        assert!(first.contains("table inet istio-proxy-nat"), "{first}");
        apply(&ns, &argv, &env);
        assert_eq!(ruleset(&ns), first, "rerun of {argv:?} changed the ruleset");
    }
    Ok(())
}

/// A new configuration leaves exactly what it would leave in a fresh namespace: no table,
/// chain or rule of the old one (upstream keeps unused tables and emptied chains).
fn changed_configuration_leaves_exactly_the_new_ruleset() -> Ran {
    require_nft()?;
    let (_guard, resolv_conf) = dns_resolv_conf();
    let configurations = configurations(&resolv_conf);
    for (old_argv, old_env) in &configurations {
        for (new_argv, new_env) in &configurations {
            let fresh = bare_netns("fresh");
            apply(&fresh, new_argv, new_env);
            let changed = bare_netns("changed");
            apply(&changed, old_argv, old_env);
            apply(&changed, new_argv, new_env);
            assert_eq!(ruleset(&changed), ruleset(&fresh), "{old_argv:?} then {new_argv:?}");
        }
    }
    Ok(())
}

fn cleanup_only_removes_every_istio_table_and_is_idempotent() -> Ran {
    require_nft()?;
    let (_guard, resolv_conf) = dns_resolv_conf();
    let ns = bare_netns("cleanup");
    // Something that is not ours must survive.
    ns.exec_ok("nft", ["add table inet other"]);
    for (argv, env) in configurations(&resolv_conf) {
        apply(&ns, &argv, &env);
    }
    assert!(ruleset(&ns).contains("istio-proxy-mangle"));
    for _ in 0..2 {
        apply(&ns, &["--cleanup-only"], &[("ENABLE_INBOUND_IPV6", "false")]);
        assert_eq!(rules(&ns), "table inet other {\n}\n");
    }
    Ok(())
}

fn failed_apply_keeps_the_previous_ruleset_and_reports_nft_stderr() -> Ran {
    require_nft()?;
    let ns = bare_netns("failed");
    let env = [("ENABLE_INBOUND_IPV6", "false")];
    apply(&ns, &sidecar(), &env);
    let before = ruleset(&ns);
    // The `nft -f -` path: over netlink an unknown group fails before any program runs.
    let failing_env = [env[0], ("ISTIO_OUTBOUND_OWNER_GROUPS", "no-such-group-xyz"), ("ISTIO_NFT_APPLY", "nft")];
    let output = run(&ns, &sidecar(), &failing_env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nftables run failed: ") && stderr.contains("no-such-group-xyz"), "{stderr}");
    assert_eq!(ruleset(&ns), before, "a failed transaction changed the ruleset");
    Ok(())
}

fn missing_nft_says_what_to_install() -> Ran {
    support::require_root()?;
    let ns = bare_netns("nonft");
    // `env` sets the empty PATH after `ip netns exec` has been found and has run.
    let mut command = ns.command("/usr/bin/env");
    // Only the `nft -f -` fallback needs `nft`; netlink needs no program.
    command.env_clear().args(["PATH=/nonexistent", "ISTIO_NFT_APPLY=nft", "ENABLE_INBOUND_IPV6=false"]);
    command.arg(support::binary_under_test()).arg("--native-nftables");
    let output = command.args(["-u", "1337"]).output().expect("run istio-iptables");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the nft binary is missing in the sidecar container image"), "{stderr}");
    assert!(stderr.contains("install the nftables package"), "{stderr}");
    Ok(())
}

fn dry_run_prints_and_applies_nothing() -> Ran {
    require_nft()?;
    let ns = bare_netns("dryrun");
    let output = run(&ns, &args(&sidecar(), &["-n"]), &[("ENABLE_INBOUND_IPV6", "false")]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("add table inet istio-proxy-nat\n"));
    assert_eq!(rules(&ns), "");
    Ok(())
}

/// `--network-namespace` programs the named namespace, not the one the tool started in. The
/// tool starts in a scratch namespace so that a broken switch could not touch the host.
fn network_namespace_flag_programs_that_namespace() -> Ran {
    require_nft()?;
    let started_in = bare_netns("start");
    let target = bare_netns("target");
    let target_path = target.path().to_string_lossy().into_owned();
    apply(&started_in, &args(&sidecar(), &["--network-namespace", &target_path]), &[("ENABLE_INBOUND_IPV6", "true")]);
    assert!(rules(&target).contains("table inet istio-proxy-nat"));
    assert_eq!(rules(&started_in), "");
    let lo = target.exec_ok("ip", ["-6", "addr", "show", "dev", "lo"]);
    assert!(lo.contains("::6/128"), "::6 not added in the target namespace: {lo}");
    Ok(())
}
