//! Outbound CIDR lists and the IPv4 loopback CIDR, parsed with Go's `netip` rules so that the
//! accepted inputs and the printed form (host bits kept, RFC 5952) match upstream.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::values::{list_items, trim_spaces};
use crate::error::{ConfigError, Error, Result};
use crate::gocompat;

/// A list of prefixes split by family, in input order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrLists {
    pub v4: Vec<Ipv4Net>,
    pub v6: Vec<Ipv6Net>,
}

impl CidrLists {
    pub fn parse(setting: &str, raw: &str) -> Result<Self> {
        let mut lists = CidrLists::default();
        for item in list_items(setting, raw)? {
            match gocompat::parse_go_prefix(item).map_err(|reason| Error::invalid(setting, item, reason))? {
                IpNet::V4(net) => lists.v4.push(net),
                IpNet::V6(net) => lists.v6.push(net),
            }
        }
        Ok(lists)
    }

    /// Upstream's HasLoopBackIP: any address in 127/8 (also IPv4-mapped), or exactly ::1.
    pub fn has_loopback(&self) -> bool {
        let v4 = self.v4.iter().map(|n| IpNet::V4(*n));
        v4.chain(self.v6.iter().map(|n| IpNet::V6(*n))).any(|n| gocompat::is_loopback_prefix_addr(&n))
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// The outbound include list: `*` captures every destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundCidrs {
    All,
    Only(CidrLists),
}

impl OutboundCidrs {
    pub fn parse(setting: &str, raw: &str) -> Result<Self> {
        if trim_spaces(raw) == "*" {
            return Ok(OutboundCidrs::All);
        }
        CidrLists::parse(setting, raw).map(OutboundCidrs::Only)
    }

    pub fn has_loopback(&self) -> bool {
        match self {
            OutboundCidrs::All => false,
            OutboundCidrs::Only(lists) => lists.has_loopback(),
        }
    }
}

/// The outbound exclude list; upstream rejects `*` here with its own message.
pub fn parse_exclude(setting: &str, raw: &str) -> Result<CidrLists> {
    if trim_spaces(raw) == "*" {
        return Err(ConfigError::ExcludeWildcard.into());
    }
    CidrLists::parse(setting, raw)
}

/// `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`, with upstream's checks and messages.
pub fn parse_loopback(raw: &str) -> Result<Ipv4Net> {
    let net = gocompat::parse_go_prefix(raw)
        .map_err(|source| ConfigError::LoopbackCidrSyntax { raw: raw.to_string(), source: Box::new(source) })?;
    let net = match net {
        IpNet::V4(net) if net.addr().is_loopback() => net,
        other => return Err(ConfigError::LoopbackCidrNotLoopback { raw: raw.to_string(), found: other.addr() }.into()),
    };
    if !(8..=32).contains(&net.prefix_len()) {
        return Err(ConfigError::LoopbackCidrMask { raw: raw.to_string(), prefix_len: net.prefix_len() }.into());
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_by_family_and_keep_host_bits() {
        let lists = CidrLists::parse("f", "10.1.2.3/8, 2001:DB8::/32,::ffff:1.2.3.4/128").unwrap();
        assert_eq!(lists.v4.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.1.2.3/8"]);
        assert_eq!(
            lists.v6.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["2001:db8::/32", "::ffff:1.2.3.4/128"]
        );
        assert!(!lists.has_loopback());
    }

    #[test]
    fn loopback_detection_is_per_address() {
        assert!(CidrLists::parse("f", "127.1.2.3/32").unwrap().has_loopback());
        assert!(CidrLists::parse("f", "::1/128").unwrap().has_loopback());
        assert!(!CidrLists::parse("f", "0.0.0.0/0").unwrap().has_loopback());
        assert!(!CidrLists::parse("f", "::2/127").unwrap().has_loopback());
        // Go's IsLoopback unmaps IPv4-mapped addresses first.
        assert!(CidrLists::parse("f", "::ffff:127.0.0.1/104").unwrap().has_loopback());
    }

    #[test]
    fn bad_prefixes_name_the_setting_and_keep_go_wording() {
        let err = CidrLists::parse("--istio-service-cidr", "10.0.0.0").unwrap_err().to_string();
        assert!(err.contains("--istio-service-cidr") && err.contains("no '/'"), "{err}");
        assert_eq!(parse_exclude("-x", "*").unwrap_err().to_string(), "invalid value for OUTBOUND_IP_RANGES_EXCLUDE");
    }

    #[test]
    fn loopback_cidr_checks() {
        assert_eq!(parse_loopback("127.0.0.1/8").unwrap().to_string(), "127.0.0.1/8");
        assert_eq!(
            parse_loopback("10.0.0.1/32").unwrap_err().to_string(),
            "expected valid IPv4 loopback address in CIDR 10.0.0.1/32; found 10.0.0.1"
        );
        assert_eq!(
            parse_loopback("127.0.0.1/7").unwrap_err().to_string(),
            "expected CIDR 127.0.0.1/7 to have mask in range [8, 32]; found 7"
        );
        assert!(parse_loopback("").unwrap_err().to_string().starts_with("failed to parse CIDR : "));
    }
}
