//! Reading TPROXY's policy routing back, for `check`: whether the `ip rule fwmark MARK lookup
//! TABLE` and the `local default dev lo table TABLE` route that `routes::configure` adds are
//! there. Read-only (netlink dumps); the rule is recognised exactly as the apply recognises it
//! before adding one (`routes::is_mark_rule`).

use nix::errno::Errno;

use super::netlink::{self, Message, Socket};
use super::routes::{address_family, is_mark_rule, rule_header, RULE_HEADER_LEN};
use crate::plan::Family;

const RTM_GETROUTE: u16 = 26;
const RTM_NEWROUTE: u16 = netlink::RTM_NEWROUTE;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const RTN_LOCAL: u8 = 2;

/// What a family holds of TPROXY's routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TproxyRouting {
    /// `from all fwmark MARK lookup TABLE`.
    pub mark_rule: bool,
    /// `local default dev lo table TABLE`.
    pub local_route: bool,
}

/// Why the routing could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RouteReadError {
    #[error("failed to open a netlink socket: {0}")]
    Socket(#[source] Errno),
    #[error("failed to list policy routing rules: {0}")]
    Rules(#[source] Errno),
    #[error("failed to list routes: {0}")]
    Routes(#[source] Errno),
}

/// Reads `family`'s TPROXY rule and route for `mark` and `table`.
pub(crate) fn read(family: Family, mark: u32, table: u32) -> Result<TproxyRouting, RouteReadError> {
    let mut socket = Socket::open().map_err(RouteReadError::Socket)?;
    let af = address_family(family);
    let rules = socket.dump(netlink::RTM_GETRULE, &Message::new(&rule_header(af, 0))).map_err(RouteReadError::Rules)?;
    let mark_rule = rules.iter().filter(|r| r.kind == netlink::RTM_NEWRULE).any(|rule| is_mark_rule(rule, mark, table));
    let header = [af, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let routes = socket.dump(RTM_GETROUTE, &Message::new(&header)).map_err(RouteReadError::Routes)?;
    // No `lo` (it always exists in a network namespace) means no route through it.
    let lo = nix::net::if_::if_nametoindex("lo").ok();
    let local_route = routes.iter().filter(|r| r.kind == RTM_NEWROUTE).any(|route| is_local_default(route, table, lo));
    Ok(TproxyRouting { mark_rule, local_route })
}

/// `local default dev lo` in `table`: a local route with no destination prefix out of `lo`.
fn is_local_default(route: &netlink::Reply, table: u32, lo: Option<u32>) -> bool {
    let header = &route.body;
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    if header.len() < RULE_HEADER_LEN || header[1] != 0 || header[7] != RTN_LOCAL {
        return false;
    }
    let (mut route_table, mut oif) = (u32::from(header[4]), None);
    for (kind, data) in route.attrs(RULE_HEADER_LEN) {
        match kind {
            RTA_TABLE => route_table = netlink::read_u32(data).unwrap_or(route_table),
            RTA_OIF => oif = netlink::read_u32(data),
            _ => {}
        }
    }
    route_table == table && oif.is_some() && oif == lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::libc;

    fn route(kind_byte: u8, dst_len: u8, table: u32, oif: u32) -> netlink::Reply {
        let header = [libc::AF_INET as u8, dst_len, 0, 0, 0, 3, 254, kind_byte, 0, 0, 0, 0];
        let message = Message::new(&header).attr_u32(RTA_TABLE, table).attr_u32(RTA_OIF, oif);
        netlink::Reply { kind: RTM_NEWROUTE, body: message.into_bytes() }
    }

    #[test]
    fn only_the_local_default_route_via_lo_in_the_table_counts() {
        assert!(is_local_default(&route(RTN_LOCAL, 0, 133, 1), 133, Some(1)));
        assert!(!is_local_default(&route(RTN_LOCAL, 0, 134, 1), 133, Some(1)), "another table");
        assert!(!is_local_default(&route(RTN_LOCAL, 8, 133, 1), 133, Some(1)), "not the default route");
        assert!(!is_local_default(&route(1, 0, 133, 1), 133, Some(1)), "a unicast route");
        assert!(!is_local_default(&route(RTN_LOCAL, 0, 133, 2), 133, Some(1)), "not via lo");
    }
}
