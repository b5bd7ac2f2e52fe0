//! The fixed addresses several rule groups share: the loopback range each family exempts, and the
//! source Envoy uses for inbound passthrough connections.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::Family;
use crate::config::Config;

/// The loopback range per family: the configurable IPv4 CIDR, and always `::1/128` for IPv6.
pub(super) fn loopback(config: &Config, family: Family) -> IpNet {
    match family {
        Family::V4 => IpNet::V4(config.loopback_cidr),
        Family::V6 => IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
    }
}

/// Source address Envoy uses for inbound passthrough connections (never captured again):
/// `127.0.0.6/32` and `::6/128`.
pub(super) fn inbound_passthrough_source(family: Family) -> IpNet {
    match family {
        Family::V4 => IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 6), 32)),
        Family::V6 => IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6), 128)),
    }
}
