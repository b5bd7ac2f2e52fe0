use std::collections::BTreeMap;

use super::packet::{parse, split_argv};
use super::*;

/// The injected sidecar argv (REDIRECT, every inbound port but the agent's, every destination).
const SIDECAR: [&str; 14] =
    ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "*", "-d", "15090,15021,15020"];

/// An IPv4-only pod with no passwd file: nothing is read from this machine.
fn pod_host() -> crate::host::HostFacts {
    crate::host::HostFacts { interface_addresses: vec!["10.1.1.1".parse().unwrap()], ..Default::default() }
}

fn config(extra: &[&str]) -> Config {
    let argv = ["x"].iter().chain(SIDECAR.iter()).chain(extra.iter()).copied();
    let env = BTreeMap::new();
    let Parsed::Run(flags) = cli::parse(argv, &env).unwrap() else { panic!("not a run") };
    Config::build(&flags, &env, &pod_host()).unwrap()
}

fn packet(args: &[&str]) -> PacketSpec {
    let argv: Vec<OsString> = ["x"].iter().chain(args.iter()).map(OsString::from).collect();
    let (_, values) = split_argv(argv).unwrap();
    parse(&values).unwrap().packet
}

/// Explains `args` against the sidecar configuration plus `extra` run flags.
fn trace(extra: &[&str], args: &[&str]) -> Trace {
    let mut flags = vec!["--enable-inbound-ipv6=false"];
    flags.extend_from_slice(extra);
    explain(&config(&flags), &packet(args)).1
}

fn rules(trace: &Trace) -> Vec<String> {
    trace
        .steps
        .iter()
        .filter_map(|s| match s {
            walk::Step::Matched { table, chain, rule } => Some(format!("{table} {chain}: {rule}")),
            _ => None,
        })
        .collect()
}

const APP: [&str; 4] = ["--uid", "1000", "--gid", "1000"];

fn outbound(to: &str, who: &[&str]) -> Vec<String> {
    let mut args = vec!["--direction", "outbound", "--to", to];
    args.extend_from_slice(who);
    args.into_iter().map(String::from).collect()
}

fn run_trace(extra: &[&str], args: &[String]) -> Trace {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    trace(extra, &args)
}

#[test]
fn an_apps_outbound_connection_is_redirected_to_the_outbound_listener() {
    let t = run_trace(&[], &outbound("10.96.0.1:80", &APP));
    assert_eq!(t.fate, Fate::Redirect(15001));
    assert_eq!(
        rules(&t),
        [
            "nat OUTPUT: -A OUTPUT -j ISTIO_OUTPUT",
            "nat ISTIO_OUTPUT: -A ISTIO_OUTPUT -j ISTIO_REDIRECT",
            "nat ISTIO_REDIRECT: -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        ]
    );
    assert_eq!(t.last.dst, IpAddr::from(Ipv4Addr::LOCALHOST), "REDIRECT at OUTPUT goes to loopback");
}

#[test]
fn the_proxys_own_traffic_by_uid_or_gid_goes_out_unchanged() {
    for who in [&["--uid", "1337", "--gid", "1000"], &["--uid", "1000", "--gid", "1337"]] {
        let t = run_trace(&[], &outbound("10.96.0.1:80", who));
        assert_eq!(t.fate, Fate::Accept, "{who:?}");
        assert_eq!(t.last.oif.as_deref(), Some("eth0"));
    }
}

#[test]
fn loopback_destinations_are_not_captured_but_the_proxy_to_its_pod_ip_goes_inbound() {
    let t = run_trace(&[], &outbound("127.0.0.1:8080", &APP));
    assert_eq!(t.fate, Fate::Accept);
    // The app's loopback traffic leaves the chain at the not-the-proxy rule.
    assert_eq!(
        rules(&t).last().unwrap(),
        "nat ISTIO_OUTPUT: -A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN"
    );
    let t = run_trace(&["-i", "10.0.0.0/8,127.0.0.1/32"], &outbound("127.0.0.1:8080", &APP));
    assert_eq!(
        t.fate,
        Fate::Accept,
        "a loopback include range drops the not-the-proxy rule, the destination rule returns"
    );
    assert_eq!(rules(&t).last().unwrap(), "nat ISTIO_OUTPUT: -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN");

    let via_lo = ["--out-interface", "lo"];
    let app = [&APP[..], &via_lo[..]].concat();
    let t = run_trace(&[], &outbound("10.0.0.5:8080", &app));
    assert_eq!(t.fate, Fate::Accept, "the app calling its own pod IP is not captured");
    assert!(rules(&t).iter().any(|r| r.contains("! --uid-owner 1337 -j RETURN")), "{:?}", rules(&t));

    let proxy = ["--uid", "1337", "--gid", "1337", "--out-interface", "lo"];
    let t = run_trace(&[], &outbound("10.0.0.5:8080", &proxy));
    assert_eq!(t.fate, Fate::Redirect(15006));
    // The looped-back packet meets PREROUTING again, but not the nat table.
    assert!(t.steps.iter().any(|s| matches!(s, walk::Step::Hook { name: "PREROUTING", .. })));
    assert!(!rules(&t).iter().any(|r| r.starts_with("nat PREROUTING")));
}

#[test]
fn inbound_ports_are_captured_except_the_excluded_ones() {
    let t = trace(&[], &["--direction", "inbound", "--to", "10.0.0.5:8080", "--from", "10.0.0.9"]);
    assert_eq!(t.fate, Fate::Redirect(15006));
    assert_eq!(
        rules(&t),
        [
            "nat PREROUTING: -A PREROUTING -p tcp -j ISTIO_INBOUND",
            "nat ISTIO_INBOUND: -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
            "nat ISTIO_IN_REDIRECT: -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        ]
    );
    let t = trace(&[], &["--direction", "inbound", "--to", "10.0.0.5:15021"]);
    assert_eq!(t.fate, Fate::Accept);
    let t = trace(&[], &["--direction", "inbound", "--to", "10.0.0.5:15008"]);
    assert_eq!(t.fate, Fate::Accept, "the tunnel port is never captured");
    let t = trace(&[], &["--direction", "inbound", "--to", "10.0.0.5:8080", "--protocol", "udp"]);
    assert_eq!(t.fate, Fate::Accept);
}

#[test]
fn tproxy_hands_inbound_connections_to_the_inbound_listener_and_marks_them() {
    let t = trace(&["-m", "TPROXY"], &["--direction", "inbound", "--to", "10.0.0.5:8080"]);
    assert_eq!(t.fate, Fate::Tproxy(15006));
    assert_eq!(t.last.mark, 1337);
    let last = rules(&t).pop().unwrap();
    assert_eq!(
        last,
        "mangle ISTIO_TPROXY: -A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006"
    );
    let t = trace(&["-m", "TPROXY"], &["--direction", "inbound", "--to", "10.0.0.5:15021"]);
    assert_eq!(t.fate, Fate::Accept);
}

#[test]
fn tproxy_marks_the_proxys_loopback_connection_for_the_inbound_chain() {
    let proxy = ["--uid", "1337", "--gid", "1337", "--out-interface", "lo"];
    let t = run_trace(&["-m", "TPROXY"], &outbound("10.0.0.5:8080", &proxy));
    assert_eq!(t.fate, Fate::Redirect(15006), "nat sends it inbound first");
    assert_eq!(t.last.mark, 1338);
}

#[test]
fn dns_is_redirected_to_the_agent_in_its_conntrack_zone() {
    let dns = ["--redirect-dns", "--capture-all-dns"];
    let udp = [&APP[..], &["--protocol", "udp"][..]].concat();
    let t = run_trace(&dns, &outbound("10.0.0.10:53", &udp));
    assert_eq!((t.fate, t.ct_zone), (Fate::Redirect(15053), Some(2)));
    let proxy = ["--uid", "1337", "--gid", "1337", "--protocol", "udp"];
    let t = run_trace(&dns, &outbound("10.0.0.10:53", &proxy));
    assert_eq!((t.fate, t.ct_zone), (Fate::Accept, Some(1)));
    let t = run_trace(&dns, &outbound("10.0.0.10:53", &APP));
    assert_eq!((t.fate, t.ct_zone), (Fate::Redirect(15053), None), "DNS over TCP");
    let t = run_trace(&[], &outbound("10.0.0.10:53", &udp));
    assert_eq!((t.fate, t.ct_zone), (Fate::Accept, None), "UDP is not captured without DNS capture");
}

#[test]
fn include_and_exclude_lists_decide_outbound_capture() {
    let lists = ["-i", "10.96.0.0/12", "-x", "10.96.5.0/24", "-q", "9000", "-o", "22"];
    assert_eq!(run_trace(&lists, &outbound("10.96.0.1:80", &APP)).fate, Fate::Redirect(15001));
    assert_eq!(run_trace(&lists, &outbound("10.96.5.1:80", &APP)).fate, Fate::Accept);
    assert_eq!(run_trace(&lists, &outbound("192.168.0.1:80", &APP)).fate, Fate::Accept);
    assert_eq!(run_trace(&lists, &outbound("192.168.0.1:9000", &APP)).fate, Fate::Redirect(15001));
    assert_eq!(run_trace(&lists, &outbound("10.96.0.1:22", &APP)).fate, Fate::Accept);
}

#[test]
fn native_nftables_shows_nft_rules_and_guards_ipv6_when_it_is_off() {
    let t = run_trace(&["--native-nftables"], &outbound("10.96.0.1:80", &APP));
    assert_eq!(t.fate, Fate::Redirect(15001));
    assert_eq!(
        rules(&t),
        [
            "istio-proxy-nat output: counter jump istio-output",
            "istio-proxy-nat istio-output: counter jump istio-redirect",
            "istio-proxy-nat istio-redirect: meta l4proto tcp counter redirect to :15001",
        ]
    );
    let t = run_trace(&["--native-nftables"], &outbound("[fd00::1]:80", &APP));
    assert_eq!(t.fate, Fate::Accept);
    assert_eq!(rules(&t), ["istio-proxy-nat output: meta nfproto ipv6 counter return"]);
}

#[test]
fn ipv6_follows_the_ipv6_decision() {
    let args = outbound("[fd00::1]:80", &APP);
    assert_eq!(run_trace(&[], &args).fate, Fate::Accept, "no ip6tables rules when IPv6 is off");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let on = explain(&config(&["--enable-inbound-ipv6=true"]), &packet(&args)).1;
    assert_eq!(on.fate, Fate::Redirect(15001));
    assert_eq!(on.last.dst, IpAddr::from(Ipv6Addr::LOCALHOST));
}

#[test]
fn excluded_interfaces_and_owner_groups_are_honoured() {
    let t = run_trace(&["-c", "eth+"], &outbound("10.96.0.1:80", &APP));
    assert_eq!(t.fate, Fate::Accept);
    assert_eq!(rules(&t)[0], "nat OUTPUT: -A OUTPUT -o eth+ -j RETURN");
    let env = BTreeMap::from([("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE".to_string(), "1000".to_string())]);
    let argv = ["x"].iter().chain(SIDECAR.iter()).chain(["--enable-inbound-ipv6=false"].iter()).copied();
    let Parsed::Run(flags) = cli::parse(argv, &env).unwrap() else { panic!() };
    let config = Config::build(&flags, &env, &pod_host()).unwrap();
    let args = outbound("10.96.0.1:80", &APP);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(explain(&config, &packet(&args)).1.fate, Fate::Accept);
    let other = packet(&["--direction", "outbound", "--to", "10.96.0.1:80", "--gid", "7"]);
    assert_eq!(explain(&config, &other).1.fate, Fate::Redirect(15001));
}

#[test]
fn json_carries_the_verdict_port_zone_and_path() {
    let spec = packet(&["--direction", "outbound", "--to", "10.96.0.1:80", "--uid", "1000"]);
    let (backend, t) = explain(&config(&["--enable-inbound-ipv6=false"]), &spec);
    let json = output::json(&spec, backend, &t);
    assert!(
        json.starts_with(
            "{\"verdict\":\"redirect\",\"port\":15001,\"ct_zone\":null,\"backend\":\"iptables\",\"family\":\"ipv4\",\"path\":[{\"hook\":\"OUTPUT\",\"table\":\"nat\",\"chain\":\"OUTPUT\",\"rule\":\"-A OUTPUT -j ISTIO_OUTPUT\"},"
        ),
        "{json}"
    );
    assert!(json.ends_with("]}\n"));
}

#[test]
fn inserted_rules_sit_where_their_positions_put_them_in_each_backend() {
    let config = config(&["-m", "TPROXY", "--enable-inbound-ipv6=true"]);
    let plan = Plan::build(&config);
    let texts = |backend, family| -> Vec<String> {
        let rules = ruleset::Ruleset::build(&plan, backend, family);
        rules
            .chain(crate::plan::Table::Mangle, crate::plan::Chain::IstioInbound)
            .iter()
            .map(|e| e.text.clone())
            .collect()
    };
    let v4 = texts(Backend::Iptables, crate::plan::Family::V4);
    assert_eq!(
        v4[..3],
        [
            "-A ISTIO_INBOUND -p tcp -m mark --mark 1337 -j RETURN",
            "-A ISTIO_INBOUND -p tcp -s 127.0.0.6/32 -i lo -j RETURN",
            "-A ISTIO_INBOUND -p tcp -i lo -m mark ! --mark 1338 -j RETURN",
        ]
    );
    // One inet table holds both families, so the v6 insert shifts the later one.
    let nft = texts(Backend::Nftables, crate::plan::Family::V4);
    assert_eq!(
        nft[..4],
        [
            "meta l4proto tcp mark 1337 counter return",
            "iifname lo meta l4proto tcp ip6 saddr ::6/128 counter return",
            "iifname lo meta l4proto tcp mark != 1338 counter return",
            "iifname lo meta l4proto tcp ip saddr 127.0.0.6/32 counter return",
        ]
    );
}
