//! Addresses and policy routing that the rules rely on (`apply.md` §4), over netlink:
//!
//! - `::6/128` on `lo` when IPv6 is on: the inbound passthrough source of IPv6 (`127.0.0.6`'s
//!   counterpart, already in 127/8 for IPv4);
//! - TPROXY with inbound ports: packets carrying the TPROXY mark are looked up in a table whose
//!   default route is `local` on `lo`, so they are delivered to the transparent listener
//!   whatever their destination.
//!
//! Unlike upstream, a rerun adds no second `ip rule` (the kernel accepts identical rules at new
//! priorities, so existing rules are listed first).

use std::net::Ipv6Addr;

use nix::errno::Errno;
use nix::libc;

use super::netlink::{self, Message, Socket};
use super::seam::Netfilter;
use crate::config::{Config, InboundPorts};
use crate::error::{Error, Result};
use crate::plan::Family;

/// `fib_rule_hdr.flags`: the rule matches when its selectors do not.
const FIB_RULE_INVERT: u32 = 0x2;
const FR_ACT_TO_TBL: u8 = 1;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const RTN_LOCAL: u8 = 2;
const RT_SCOPE_HOST: u8 = 254;
const RTPROT_BOOT: u8 = 3;
/// Tables above 255 do not fit the header byte; the attribute carries them.
const RT_TABLE_UNSPEC: u8 = 0;
/// `fib_rule_hdr` and `rtmsg` are both 12 bytes.
pub(super) const RULE_HEADER_LEN: usize = 12;

/// Why the address or routing could not be set up; each text follows `failed to configure
/// routes: ` in the error a person sees.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("failed to open a netlink socket: {0}")]
    Socket(#[source] Errno),
    #[error("failed to find 'lo' link: {0}")]
    Loopback(#[source] Errno),
    #[error("failed to add IPv6 inbound address: {0}")]
    Address(#[source] Errno),
    #[error("failed to list netlink rules: {0}")]
    ListRules(#[source] Errno),
    #[error("failed to configure netlink rule: {0}")]
    AddRule(#[source] Errno),
    #[error("failed to add route: {0}")]
    AddRoute(#[source] Errno),
    #[error("failed to delete netlink rule: {0}")]
    DeleteRule(#[source] Errno),
    #[error("failed to delete route: {0}")]
    DeleteRoute(#[source] Errno),
}

/// Configures the address and routes the configuration needs, through the seam.
///
/// Every run also removes the TPROXY policy routing this configuration does not need (upstream
/// never removes it): the `fwmark MARK lookup TABLE` rule and the table's `local default dev
/// lo` route, for the mark and table of this configuration (`-t`, `-r` or their defaults),
/// which is what proves them Istio's. So `--cleanup-only` and a reconcile from TPROXY leave
/// the routing of a fresh pod, and so does a plain rerun after a reconcile that was killed
/// between its last restore and its routes. Other rules and routes, the pod's own policy
/// routing, stay.
pub(crate) fn configure(config: &Config, netfilter: &dyn Netfilter) -> Result<()> {
    let tproxy = config.is_tproxy() && config.inbound_ports != InboundPorts::None;
    let mut wanted = Vec::new();
    if !config.cleanup_only {
        if config.enable_ipv6 {
            netfilter.add_loopback_passthrough_address().map_err(Error::Routes)?;
            tracing::info!("Added ::6 address on the loopback iface");
        }
        if tproxy {
            wanted.push(Family::V4);
            if config.enable_ipv6 {
                wanted.push(Family::V6);
            }
        }
        for family in &wanted {
            let (mark, table) = (config.tproxy_mark, config.tproxy_route_table);
            netfilter.ensure_mark_rule(*family, mark, table).map_err(Error::Routes)?;
            netfilter.add_local_default_route(*family, table).map_err(Error::Routes)?;
        }
    }
    for family in [Family::V4, Family::V6].into_iter().filter(|family| !wanted.contains(family)) {
        let (mark, table) = (config.tproxy_mark, config.tproxy_route_table);
        netfilter.remove_mark_rule(family, mark, table).map_err(Error::Routes)?;
        netfilter.remove_local_default_route(family, table).map_err(Error::Routes)?;
    }
    Ok(())
}

pub(super) fn address_family(family: Family) -> u8 {
    match family {
        Family::V4 => libc::AF_INET as u8,
        Family::V6 => libc::AF_INET6 as u8,
    }
}

fn open_with_loopback() -> Result<(Socket, u32), RouteError> {
    let socket = Socket::open().map_err(RouteError::Socket)?;
    let lo = nix::net::if_::if_nametoindex("lo").map_err(RouteError::Loopback)?;
    Ok((socket, lo))
}

/// `ip -6 addr add ::6/128 dev lo`; already present is fine.
pub(crate) fn netlink_add_passthrough_address() -> Result<(), RouteError> {
    let (mut socket, lo) = open_with_loopback()?;
    let address = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6).octets();
    let mut header = vec![libc::AF_INET6 as u8, 128, 0, 0];
    header.extend_from_slice(&lo.to_ne_bytes());
    let message = Message::new(&header).attr(IFA_LOCAL, &address).attr(IFA_ADDRESS, &address);
    match socket.create(netlink::RTM_NEWADDR, &message) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(RouteError::Address(e)),
    }
}

pub(super) fn rule_header(family: u8, table: u32) -> [u8; RULE_HEADER_LEN] {
    let table_byte = u8::try_from(table).unwrap_or(RT_TABLE_UNSPEC);
    [family, 0, 0, 0, table_byte, 0, 0, FR_ACT_TO_TBL, 0, 0, 0, 0]
}

/// `ip rule add fwmark MARK lookup TABLE`, unless an equivalent rule exists.
pub(crate) fn netlink_ensure_mark_rule(family: Family, mark: u32, table: u32) -> Result<(), RouteError> {
    let mut socket = Socket::open().map_err(RouteError::Socket)?;
    let family = address_family(family);
    let request = Message::new(&rule_header(family, 0));
    let rules = socket.dump(netlink::RTM_GETRULE, &request).map_err(RouteError::ListRules)?;
    let exists = rules.iter().filter(|r| r.kind == netlink::RTM_NEWRULE).any(|rule| is_mark_rule(rule, mark, table));
    if exists {
        return Ok(());
    }
    let message = Message::new(&rule_header(family, table)).attr_u32(FRA_FWMARK, mark).attr_u32(FRA_TABLE, table);
    match socket.create(netlink::RTM_NEWRULE, &message) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(RouteError::AddRule(e)),
    }
}

/// A rule that sends exactly `fwmark MARK` (full mask, no other selector) to `table`.
pub(super) fn is_mark_rule(rule: &netlink::Reply, mark: u32, table: u32) -> bool {
    let header = &rule.body;
    // fib_rule_hdr: family, dst_len, src_len, tos, table, 2 reserved, action, then u32 flags.
    if header.len() < RULE_HEADER_LEN
        || header[1] != 0
        || header[2] != 0
        || header[3] != 0
        || header[7] != FR_ACT_TO_TBL
    {
        return false;
    }
    let flags = u32::from_ne_bytes([header[8], header[9], header[10], header[11]]);
    if flags & FIB_RULE_INVERT != 0 {
        // `not fwmark M` is a different rule; ours must still be added.
        return false;
    }
    let (mut rule_mark, mut rule_mask, mut rule_table) = (None, u32::MAX, u32::from(header[4]));
    let mut other_selector = false;
    for (kind, data) in rule.attrs(RULE_HEADER_LEN) {
        match kind {
            FRA_FWMARK => rule_mark = netlink::read_u32(data),
            FRA_FWMASK => rule_mask = netlink::read_u32(data).unwrap_or(0),
            FRA_TABLE => rule_table = netlink::read_u32(data).unwrap_or(rule_table),
            // suppress_ifgroup / suppress_prefixlength: the kernel dumps -1 when they are unset.
            13 | 14 => other_selector |= netlink::read_u32(data) != Some(u32::MAX),
            // Anything else that narrows or redirects the rule: dst, src, iifname, goto, realms,
            // tunnel id, oifname, l3mdev, uid range, ip_proto, port ranges (dumped only when set).
            1 | 2 | 3 | 4 | 11 | 12 | 17 | 19 | 20 | 22 | 23 | 24 => other_selector = true,
            _ => {}
        }
    }
    rule_mark == Some(mark) && rule_mask == u32::MAX && rule_table == table && !other_selector
}

/// `ip [-6] route add local default dev lo table TABLE`; already present is fine.
pub(crate) fn netlink_add_local_default_route(family: Family, table: u32) -> Result<(), RouteError> {
    let (mut socket, lo) = open_with_loopback()?;
    match socket.create(netlink::RTM_NEWROUTE, &local_default_route(family, table, lo)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(RouteError::AddRoute(e)),
    }
}

fn local_default_route(family: Family, table: u32, lo: u32) -> Message {
    let family = address_family(family);
    let table_byte = u8::try_from(table).unwrap_or(RT_TABLE_UNSPEC);
    let header = [family, 0, 0, 0, table_byte, RTPROT_BOOT, RT_SCOPE_HOST, RTN_LOCAL, 0, 0, 0, 0];
    Message::new(&header).attr_u32(RTA_TABLE, table).attr_u32(RTA_OIF, lo)
}

/// Errors that mean "there is nothing of that family to remove": IPv6 off in the kernel.
fn family_absent(e: Errno) -> bool {
    matches!(e, Errno::EAFNOSUPPORT | Errno::EPROTONOSUPPORT)
}

/// `ip [-6] rule del` of every rule that is exactly `fwmark MARK lookup TABLE`; none is fine.
pub(crate) fn netlink_remove_mark_rule(family: Family, mark: u32, table: u32) -> Result<(), RouteError> {
    let mut socket = Socket::open().map_err(RouteError::Socket)?;
    let request = Message::new(&rule_header(address_family(family), 0));
    let rules = match socket.dump(netlink::RTM_GETRULE, &request) {
        Ok(rules) => rules,
        Err(e) if family_absent(e) => return Ok(()),
        Err(e) => return Err(RouteError::ListRules(e)),
    };
    for rule in rules.iter().filter(|r| r.kind == netlink::RTM_NEWRULE && is_mark_rule(r, mark, table)) {
        // The dumped rule, priority included, names exactly that rule (as `ip rule flush` does).
        match socket.request(netlink::RTM_DELRULE, &Message::new(&rule.body)) {
            Ok(()) | Err(Errno::ENOENT) => tracing::info!("Removed the TPROXY rule fwmark {mark} lookup {table}"),
            Err(e) => return Err(RouteError::DeleteRule(e)),
        }
    }
    Ok(())
}

/// `ip [-6] route del local default dev lo table TABLE`; absent is fine.
pub(crate) fn netlink_remove_local_default_route(family: Family, table: u32) -> Result<(), RouteError> {
    let (mut socket, lo) = open_with_loopback()?;
    match socket.request(netlink::RTM_DELROUTE, &local_default_route(family, table, lo)) {
        Ok(()) => {
            tracing::info!("Removed the TPROXY route local default dev lo table {table}");
            Ok(())
        }
        Err(Errno::ESRCH | Errno::ENOENT) => Ok(()),
        Err(e) if family_absent(e) => Ok(()),
        Err(e) => Err(RouteError::DeleteRoute(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{self, Parsed};
    use crate::exec::fake::{Call, FakeNetfilter};
    use crate::host::HostFacts;

    fn routes_of(argv: &[&str], ipv6: bool) -> Vec<String> {
        let env = [("ENABLE_INBOUND_IPV6".to_string(), ipv6.to_string())].into();
        let argv = ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-b", "*"].iter().chain(argv);
        let Ok(Parsed::Run(flags)) = cli::parse(argv.copied(), &env) else { panic!("flags parse") };
        let config = Config::build(&flags, &env, &HostFacts::default()).expect("config loads");
        let fake = FakeNetfilter::default();
        configure(&config, &fake).unwrap();
        fake.calls()
            .into_iter()
            .filter_map(|call| match call {
                Call::Route(text) => Some(text),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tproxy_routing_is_added_or_removed_as_the_configuration_says() {
        let add_v4 = ["ip rule add fwmark 1337 lookup 133", "ip route add local default dev lo table 133"];
        let del = |flag: &str| format!("ip {flag}rule del fwmark 1337 lookup 133");
        let del_route = |flag: &str| format!("ip {flag}route del local default dev lo table 133");
        // A run to REDIRECT, reconcile or not, removes both families' TPROXY routing (IPv6 may
        // have been on).
        for argv in [&["-m", "REDIRECT", "--reconcile"][..], &["-m", "REDIRECT"]] {
            assert_eq!(routes_of(argv, false), [del(""), del_route(""), del("-6 "), del_route("-6 ")], "{argv:?}");
        }
        // TPROXY keeps IPv4's, and removes IPv6's while IPv6 is off.
        let mut kept = add_v4.map(String::from).to_vec();
        kept.extend([del("-6 "), del_route("-6 ")]);
        assert_eq!(routes_of(&["-m", "TPROXY", "--reconcile"], false), kept);
        assert_eq!(routes_of(&["-m", "TPROXY"], false), kept);
        let both = [
            add_v4.to_vec(),
            vec!["ip -6 rule add fwmark 1337 lookup 133", "ip -6 route add local default dev lo table 133"],
        ];
        assert_eq!(routes_of(&["-m", "TPROXY"], true)[1..], both.concat(), "after ip -6 addr add ::6");
        // A cleanup of a TPROXY pod with its own mark and table adds nothing and removes those.
        let cleanup = routes_of(&["-m", "TPROXY", "-t", "7", "-r", "70", "--cleanup-only"], true);
        assert_eq!(
            cleanup,
            [
                "ip rule del fwmark 7 lookup 70",
                "ip route del local default dev lo table 70",
                "ip -6 rule del fwmark 7 lookup 70",
                "ip -6 route del local default dev lo table 70"
            ]
        );
    }

    /// A dumped rule has the same layout as a request body.
    fn rule(header: [u8; RULE_HEADER_LEN], attrs: &[(u16, u32)]) -> netlink::Reply {
        let message = attrs.iter().fold(Message::new(&header), |m, (kind, value)| m.attr_u32(*kind, *value));
        netlink::Reply { kind: netlink::RTM_NEWRULE, body: message.into_bytes() }
    }

    #[test]
    fn recognises_only_the_plain_mark_rule() {
        let ipv4 = libc::AF_INET as u8;
        assert!(is_mark_rule(&rule(rule_header(ipv4, 133), &[(FRA_FWMARK, 1337), (FRA_TABLE, 133)]), 1337, 133));
        assert!(!is_mark_rule(&rule(rule_header(ipv4, 133), &[(FRA_FWMARK, 1338), (FRA_TABLE, 133)]), 1337, 133));
        assert!(!is_mark_rule(&rule(rule_header(ipv4, 134), &[(FRA_FWMARK, 1337), (FRA_TABLE, 134)]), 1337, 133));
        let masked = [(FRA_FWMARK, 1337), (FRA_FWMASK, 0xff), (FRA_TABLE, 133)];
        assert!(!is_mark_rule(&rule(rule_header(ipv4, 133), &masked), 1337, 133));
        let with_iif = [(FRA_FWMARK, 1337), (FRA_TABLE, 133), (3, 0)];
        assert!(!is_mark_rule(&rule(rule_header(ipv4, 133), &with_iif), 1337, 133));
        let mut inverted = rule_header(ipv4, 133);
        inverted[8..12].copy_from_slice(&FIB_RULE_INVERT.to_ne_bytes());
        assert!(!is_mark_rule(&rule(inverted, &[(FRA_FWMARK, 1337), (FRA_TABLE, 133)]), 1337, 133));
        let suppressing = [(FRA_FWMARK, 1337), (FRA_TABLE, 133), (14, 0)];
        assert!(!is_mark_rule(&rule(rule_header(ipv4, 133), &suppressing), 1337, 133));
        let unset_suppress = [(FRA_FWMARK, 1337), (FRA_TABLE, 133), (14, u32::MAX), (13, u32::MAX)];
        assert!(is_mark_rule(&rule(rule_header(ipv4, 133), &unset_suppress), 1337, 133));
        // Large tables live only in the attribute.
        assert!(is_mark_rule(&rule(rule_header(ipv4, 5000), &[(FRA_FWMARK, 7), (FRA_TABLE, 5000)]), 7, 5000));
    }
}
