//! Typed values for every setting that ends up inside a rule. Each type can only be built by
//! parsing, and the parsers accept nothing that could change a rule's meaning: no whitespace,
//! quotes, `#`, newlines or control characters survive into the plan.
//!
//! Every parser takes the name of the setting it reads (a long flag or an environment variable),
//! so that errors name it together with the offending value.

use std::fmt;

use crate::error::{Error, Result};

/// Splits a comma list as upstream does (empty items dropped) but also trims spaces around each
/// item: upstream copies `" 80"` verbatim into the rule, which only ever produced broken scripts.
pub fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(trim_spaces).filter(|item| !item.is_empty())
}

/// Items of a comma list, refusing a value made only of spaces: trimming it to nothing would
/// silently turn a mistake into a different configuration (no proxy uid, no capture).
pub fn list_items<'a>(setting: &str, raw: &'a str) -> Result<Vec<&'a str>> {
    if !raw.is_empty() && trim_spaces(raw).is_empty() {
        return Err(Error::invalid(setting, raw, "the value is blank"));
    }
    Ok(split_list(raw).collect())
}

/// Trims space characters only: a tab or newline is never harmless padding, so it stays in the
/// value and is rejected by the parser.
pub fn trim_spaces(raw: &str) -> &str {
    raw.trim_matches(' ')
}

/// A single TCP/UDP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port(pub u16);

impl Port {
    pub fn parse(setting: &str, raw: &str) -> Result<Self> {
        parse_port_number(trim_spaces(raw))
            .map(Port)
            .ok_or_else(|| Error::invalid(setting, raw, "expected a port number from 0 to 65535"))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn parse_port_number(raw: &str) -> Option<u16> {
    if raw.is_empty() || raw.len() > 5 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

impl From<Port> for PortSpec {
    fn from(port: Port) -> Self {
        PortSpec::Single(port.0)
    }
}

/// A port or an inclusive port range, as a list item of a port flag accepts (`N` or `N:M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSpec {
    Single(u16),
    Range(u16, u16),
}

impl PortSpec {
    pub fn parse(setting: &str, raw: &str) -> Result<Self> {
        let bad = || Error::invalid(setting, raw, "expected a port (N) or a port range (N:M) within 0-65535");
        match raw.split_once(':') {
            None => parse_port_number(raw).map(PortSpec::Single).ok_or_else(bad),
            Some((low, high)) => {
                // iptables reads an open end as 0 or 65535.
                let low = if low.is_empty() && !high.is_empty() { Some(0) } else { parse_port_number(low) };
                let high = if high.is_empty() && low.is_some() { Some(u16::MAX) } else { parse_port_number(high) };
                let (low, high) = (low.ok_or_else(bad)?, high.ok_or_else(bad)?);
                if low > high {
                    return Err(Error::invalid(setting, raw, "the first port of a range must not exceed the last"));
                }
                Ok(PortSpec::Range(low, high))
            }
        }
    }

    /// A comma list of ports; items are trimmed and empty items dropped.
    pub fn parse_list(setting: &str, raw: &str) -> Result<Vec<Self>> {
        list_items(setting, raw)?.into_iter().map(|item| Self::parse(setting, item)).collect()
    }

    /// The iptables spelling (`N` or `N:M`).
    pub fn iptables(&self) -> String {
        match self {
            PortSpec::Single(port) => port.to_string(),
            PortSpec::Range(low, high) => format!("{low}:{high}"),
        }
    }

    /// The nft spelling (`N` or `N-M`).
    pub fn nft(&self) -> String {
        match self {
            PortSpec::Single(port) => port.to_string(),
            PortSpec::Range(low, high) => format!("{low}-{high}"),
        }
    }
}

/// The inbound port selection. Upstream distinguishes an empty string (no inbound capture) from
/// a list that merely splits to nothing (`,`): the latter still installs the PREROUTING jump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    None,
    All,
    Listed(Vec<PortSpec>),
}

impl InboundPorts {
    pub fn parse(setting: &str, raw: &str) -> Result<Self> {
        match trim_spaces(raw) {
            "" if !raw.is_empty() => Err(Error::invalid(setting, raw, "the value is blank")),
            "" => Ok(InboundPorts::None),
            "*" => Ok(InboundPorts::All),
            _ => PortSpec::parse_list(setting, raw).map(InboundPorts::Listed),
        }
    }
}

/// A network interface name: what the kernel accepts (1-15 bytes, not `.`/`..`, no `/`, `:` or
/// whitespace), further limited to characters that are safe unquoted in both iptables-restore
/// and nft scripts. A trailing `+` (iptables' prefix wildcard) is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceName(String);

impl IfaceName {
    pub fn parse(setting: &str, raw: &str) -> Result<Self> {
        let stem = raw.strip_suffix('+').unwrap_or(raw);
        let valid_chars = stem.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if raw.is_empty() || raw.len() > 15 || stem.is_empty() || !valid_chars || stem == "." || stem == ".." {
            return Err(Error::invalid(
                setting,
                raw,
                "expected an interface name of at most 15 characters from A-Z a-z 0-9 _ - . (optionally ending in +)",
            ));
        }
        Ok(IfaceName(raw.to_string()))
    }

    pub fn parse_list(setting: &str, raw: &str) -> Result<Vec<Self>> {
        list_items(setting, raw)?.into_iter().map(|item| Self::parse(setting, item)).collect()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user or group: a numeric id, or a name as shadow-utils allows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerId(String);

impl OwnerId {
    pub fn parse(setting: &str, raw: &str) -> Result<Self> {
        if raw.bytes().all(|b| b.is_ascii_digit()) && !raw.is_empty() {
            return raw
                .parse::<u32>()
                .map(|_| OwnerId(raw.to_string()))
                .map_err(|_| Error::invalid(setting, raw, "numeric ids must fit in 32 bits"));
        }
        let name = raw.strip_suffix('$').unwrap_or(raw);
        let mut bytes = name.bytes();
        let valid_first = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        let valid_rest = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid_first || !valid_rest || raw.len() > 32 {
            return Err(Error::invalid(
                setting,
                raw,
                "expected a numeric id or a user/group name (A-Z a-z 0-9 _ - ., at most 32 characters)",
            ));
        }
        Ok(OwnerId(raw.to_string()))
    }

    pub fn parse_list(setting: &str, raw: &str) -> Result<Vec<Self>> {
        list_items(setting, raw)?.into_iter().map(|item| Self::parse(setting, item)).collect()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A packet mark or a routing table number: decimal, or hexadecimal with `0x` (as iptables
/// accepts marks), 32 bits.
pub fn parse_u32(setting: &str, raw: &str) -> Result<u32> {
    let trimmed = trim_spaces(raw);
    let (digits, radix) = match trimmed.strip_prefix("0x").or_else(|| trimmed.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (trimmed, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(Error::invalid(setting, raw, "expected a decimal or 0x-prefixed hexadecimal number"));
    }
    u32::from_str_radix(digits, radix)
        .map_err(|_| Error::invalid(setting, raw, "expected a number that fits in 32 bits"))
}

/// A TPROXY packet mark: a 32-bit number the kernel can match, so not 0 (`--set-mark 0` marks
/// nothing, and `ip rule fwmark 0` matches every packet).
pub fn parse_mark(setting: &str, raw: &str) -> Result<u32> {
    match parse_u32(setting, raw)? {
        0 => Err(Error::invalid(setting, raw, "a packet mark must not be 0")),
        mark => Ok(mark),
    }
}

/// Routing tables the kernel reserves: `default`, `main`, `local` (rt_names in iproute2).
const RESERVED_ROUTE_TABLES: [(u32, &str); 3] = [(253, "default"), (254, "main"), (255, "local")];

/// A TPROXY policy-routing table: 1 to 2^32-1 (`ip rule` takes any of them), except 0, for which
/// the kernel allocates a fresh table on every run, and the reserved tables, whose routes the
/// TPROXY `local default dev lo` route would replace.
pub fn parse_route_table(setting: &str, raw: &str) -> Result<u32> {
    match parse_u32(setting, raw)? {
        0 => Err(Error::invalid(setting, raw, "a route table must not be 0 (the kernel would pick a new table)")),
        table if RESERVED_ROUTE_TABLES.iter().any(|(id, _)| *id == table) => {
            Err(Error::invalid(setting, raw, "the route tables 253 (default), 254 (main) and 255 (local) are reserved"))
        }
        table => Ok(table),
    }
}

/// The interception mode text as upstream compares it: exactly `TPROXY`, or anything else
/// (REDIRECT, with a warning unless empty or `REDIRECT`). Whitespace, quotes, `#` and control
/// characters are rejected, as in every other value: `"TPROXY "` is a mistake, not REDIRECT.
pub fn check_mode_text(setting: &str, raw: &str) -> Result<()> {
    let forbidden = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '`' | '#');
    if raw.chars().any(forbidden) {
        return Err(Error::invalid(
            setting,
            raw,
            "expected REDIRECT or TPROXY (whitespace, quotes, # and control characters are not allowed)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_trims_and_drops_empty_items() {
        assert_eq!(split_list(" 80, 443 ,,").collect::<Vec<_>>(), ["80", "443"]);
        assert_eq!(split_list(",").count(), 0);
        assert_eq!(split_list("").count(), 0);
        assert_eq!(split_list("eth0\n,\t80").collect::<Vec<_>>(), ["eth0\n", "\t80"]);
    }

    #[test]
    fn ports_and_ranges() {
        assert_eq!(PortSpec::parse("f", "80").unwrap(), PortSpec::Single(80));
        assert_eq!(PortSpec::parse("f", "0").unwrap(), PortSpec::Single(0));
        assert_eq!(PortSpec::parse("f", "1000:2000").unwrap().iptables(), "1000:2000");
        assert_eq!(PortSpec::parse("f", "1000:2000").unwrap().nft(), "1000-2000");
        assert_eq!(PortSpec::parse("f", "1024:").unwrap(), PortSpec::Range(1024, 65535));
        assert_eq!(PortSpec::parse("f", ":1024").unwrap(), PortSpec::Range(0, 1024));
        for bad in ["65536", "-1", ":", "2:1", "80 ", "8o", "1-2", "+80", "99999999999", "http", "1:2:3"] {
            assert!(PortSpec::parse("f", bad).is_err(), "{bad}");
        }
        assert_eq!(Port::parse("f", "15001").unwrap().0, 15001);
        assert!(Port::parse("f", "").is_err());
    }

    #[test]
    fn inbound_ports_keep_the_empty_vs_comma_distinction() {
        assert_eq!(InboundPorts::parse("f", "").unwrap(), InboundPorts::None);
        assert_eq!(InboundPorts::parse("f", "*").unwrap(), InboundPorts::All);
        assert_eq!(InboundPorts::parse("f", ",").unwrap(), InboundPorts::Listed(vec![]));
        assert!(InboundPorts::parse("f", "  ").is_err());
        assert!(PortSpec::parse_list("f", " ").is_err());
        assert!(InboundPorts::parse("f", "*,80").is_err());
    }

    #[test]
    fn interface_names() {
        for good in ["eth0", "not-istio-nic", "veth+", "a.b", "en_p1s0"] {
            assert!(IfaceName::parse("f", good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "eth 0", "a/b", "a:b", "sixteen-chars-xx", "+", "e\"th", "eth#", "eth\n"] {
            assert!(IfaceName::parse("f", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn owners() {
        for good in ["1337", "java", "ftp", "_apt", "istio-proxy", "user$", "0"] {
            assert!(OwnerId::parse("f", good).is_ok(), "{good}");
        }
        for bad in ["", "-root", "a b", "4294967296", "x;y", "name#", "$"] {
            assert!(OwnerId::parse("f", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn marks() {
        assert_eq!(parse_u32("f", "1337").unwrap(), 1337);
        assert_eq!(parse_u32("f", "0x539").unwrap(), 1337);
        for bad in ["", "0x", "0xg", "-1", "4294967296", "1 2", "main"] {
            assert!(parse_u32("f", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn marks_and_route_tables_stay_in_the_kernel_usable_range() {
        assert_eq!(parse_mark("f", "0x539").unwrap(), 1337);
        assert_eq!(parse_mark("f", "4294967295").unwrap(), u32::MAX);
        for zero in ["0", "0x0", "00"] {
            let err = parse_mark("-t", zero).unwrap_err().to_string();
            assert_eq!(err, format!("invalid value \"{zero}\" for -t: a packet mark must not be 0"));
        }
        for good in ["1", "133", "252", "256", "0xffffffff"] {
            assert!(parse_route_table("f", good).is_ok(), "{good}");
        }
        for bad in ["0", "253", "254", "255", "0xfe", "4294967296", "main"] {
            assert!(parse_route_table("f", bad).is_err(), "{bad}");
        }
        assert!(parse_route_table("-r", "254").unwrap_err().to_string().contains("254 (main)"));
    }

    #[test]
    fn mode_text_rejects_what_no_value_may_contain() {
        for ok in ["", "REDIRECT", "TPROXY", "tproxy", "bogus"] {
            assert!(check_mode_text("-m", ok).is_ok(), "{ok:?}");
        }
        for bad in ["TPROXY ", " TPROXY", "TP\tROXY", "TPROXY\n", "\"TPROXY\"", "TPROXY#", "\u{7f}"] {
            let err = check_mode_text("-m", bad).unwrap_err();
            assert_eq!(err.exit_code(), 1);
            assert!(err.to_string().starts_with(&format!("invalid value {bad:?} for -m: ")), "{err}");
        }
    }

    #[test]
    fn error_names_setting_and_value() {
        let err = PortSpec::parse("--istio-inbound-ports", "80;").unwrap_err().to_string();
        assert!(err.contains("--istio-inbound-ports") && err.contains("\"80;\""), "{err}");
    }
}
