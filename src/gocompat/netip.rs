//! Go `net/netip`: `ParseAddr` (with zones) and `ParsePrefix`, host bits kept, Go's error text.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::go_quote;

/// A `net/netip` ParseAddr failure, printed the way Go prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrError {
    input: String,
    msg: &'static str,
    /// The unparsed rest of the input where parsing stopped; Go omits it when empty.
    at: String,
}

impl AddrError {
    fn new(input: &str, msg: &'static str, at: &str) -> Self {
        AddrError { input: input.to_owned(), msg, at: at.to_owned() }
    }
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParseAddr({}): {}", go_quote(&self.input), self.msg)?;
        if !self.at.is_empty() {
            write!(f, " (at {})", go_quote(&self.at))?;
        }
        Ok(())
    }
}

impl std::error::Error for AddrError {}

/// A `net/netip` ParsePrefix failure, printed the way Go prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixError {
    input: String,
    reason: PrefixErrorReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PrefixErrorReason {
    NoSlash,
    Addr(AddrError),
    Zone,
    BadBits(String),
    OutOfRange,
}

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "netip.ParsePrefix({}): ", go_quote(&self.input))?;
        match &self.reason {
            PrefixErrorReason::NoSlash => f.write_str("no '/'"),
            PrefixErrorReason::Addr(err) => err.fmt(f),
            PrefixErrorReason::Zone => f.write_str("IPv6 zones cannot be present in a prefix"),
            PrefixErrorReason::BadBits(bits) => write!(f, "bad bits after slash: {}", go_quote(bits)),
            PrefixErrorReason::OutOfRange => f.write_str("prefix length out of range"),
        }
    }
}

impl std::error::Error for PrefixError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.reason {
            PrefixErrorReason::Addr(err) => Some(err),
            _ => None,
        }
    }
}

fn parse_addr(s: &str) -> Result<(IpAddr, Option<String>), AddrError> {
    // Go picks the family from whichever of these it meets first.
    match s.bytes().find(|b| matches!(b, b'.' | b':' | b'%')) {
        Some(b'.') => parse_ipv4(s, s).map(|a| (IpAddr::V4(a), None)),
        Some(b':') => parse_ipv6(s).map(|(a, zone)| (IpAddr::V6(a), zone)),
        Some(_) => Err(AddrError::new(s, "missing IPv6 address", "")),
        None => Err(AddrError::new(s, "unable to parse IP", "")),
    }
}

/// Parses dotted-quad `text`, which is `input` itself or the embedded tail of an IPv6 address;
/// errors name the whole `input` as Go does.
fn parse_ipv4(input: &str, text: &str) -> Result<Ipv4Addr, AddrError> {
    let bytes = text.as_bytes();
    let mut octets = [0u8; 4];
    let mut pos = 0;
    let mut value: u8 = 0;
    let mut digit_count = 0;
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                if digit_count == 1 && value == 0 {
                    return Err(AddrError::new(input, "IPv4 field has octet with leading zero", ""));
                }
                value = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(c - b'0'))
                    .ok_or_else(|| AddrError::new(input, "IPv4 field has value >255", ""))?;
                digit_count += 1;
            }
            b'.' => {
                if i == 0 || i == bytes.len() - 1 || bytes[i - 1] == b'.' {
                    return Err(AddrError::new(input, "IPv4 field must have at least one digit", &text[i..]));
                }
                if pos == 3 {
                    return Err(AddrError::new(input, "IPv4 address too long", ""));
                }
                octets[pos] = value;
                pos += 1;
                value = 0;
                digit_count = 0;
            }
            _ => {
                return Err(AddrError::new(input, "unexpected character", &text[i..]));
            }
        }
    }
    if pos < 3 {
        return Err(AddrError::new(input, "IPv4 address too short", ""));
    }
    octets[3] = value;
    Ok(Ipv4Addr::from(octets))
}

fn parse_ipv6(input: &str) -> Result<(Ipv6Addr, Option<String>), AddrError> {
    let err = |msg, at: &str| AddrError::new(input, msg, at);
    let (mut s, zone) = match input.split_once('%') {
        Some((_, "")) => return Err(err("zone must be a non-empty string", "")),
        Some((addr, zone)) => (addr, Some(zone.to_owned())),
        None => (input, None),
    };

    let mut ip = [0u8; 16];
    let mut ellipsis: Option<usize> = None;
    if let Some(rest) = s.strip_prefix("::") {
        ellipsis = Some(0);
        s = rest;
        if s.is_empty() {
            return Ok((Ipv6Addr::UNSPECIFIED, zone));
        }
    }

    let mut i = 0;
    while i < 16 {
        let bytes = s.as_bytes();
        let mut group: u16 = 0;
        let mut len = 0;
        while let Some(digit) = bytes.get(len).and_then(|&b| char::from(b).to_digit(16)) {
            if len == 4 {
                return Err(err("each group must have 4 or less digits", s));
            }
            group = group << 4 | digit as u16;
            len += 1;
        }
        if len == 0 {
            return Err(err("each colon-separated field must have at least one digit", s));
        }

        if bytes.get(len) == Some(&b'.') {
            if ellipsis.is_none() && i != 12 {
                return Err(err("embedded IPv4 address must replace the final 2 fields of the address", s));
            }
            if i + 4 > 16 {
                return Err(err("too many hex fields to fit an embedded IPv4 at the end of the address", s));
            }
            let v4 = parse_ipv4(input, s)?;
            ip[i..i + 4].copy_from_slice(&v4.octets());
            s = "";
            i += 4;
            break;
        }

        ip[i..i + 2].copy_from_slice(&group.to_be_bytes());
        i += 2;

        s = &s[len..];
        if s.is_empty() {
            break;
        }
        if !s.starts_with(':') {
            return Err(err("unexpected character, want colon", s));
        }
        if s.len() == 1 {
            return Err(err("colon must be followed by more characters", s));
        }
        s = &s[1..];
        if s.starts_with(':') {
            if ellipsis.is_some() {
                return Err(err("multiple :: in address", s));
            }
            ellipsis = Some(i);
            s = &s[1..];
            if s.is_empty() {
                break;
            }
        }
    }

    if !s.is_empty() {
        return Err(err("trailing garbage after address", s));
    }
    match ellipsis {
        Some(at) if i < 16 => {
            let gap = 16 - i;
            ip.copy_within(at..i, at + gap);
            ip[at..at + gap].fill(0);
        }
        Some(_) => return Err(err("the :: must expand to at least one field of zeros", "")),
        None if i < 16 => return Err(err("address string too short", "")),
        None => {}
    }
    Ok((Ipv6Addr::from(ip), zone))
}

/// Go `netip.ParseAddr`, also returning the IPv6 zone (`fe80::1%eth0` gives `Some("eth0")`).
/// An IPv4 address never has a zone: a `%` there is an unexpected character. The error is Go's
/// message, e.g. `ParseAddr("foo"): unable to parse IP`.
pub fn parse_go_addr(s: &str) -> Result<(IpAddr, Option<String>), AddrError> {
    parse_addr(s)
}

/// Go `netip.ParsePrefix`: split at the last `/`, parse the address (no zone allowed), then the
/// bit count (decimal, no sign, no leading zero). Host bits are kept, and an IPv4-mapped
/// address stays IPv6. The error is Go's message, e.g.
/// `netip.ParsePrefix("1.2.3.4/33"): prefix length out of range`.
pub fn parse_go_prefix(s: &str) -> Result<IpNet, PrefixError> {
    let fail = |reason| PrefixError { input: s.to_owned(), reason };
    let Some((addr_text, bits_text)) = s.rsplit_once('/') else {
        return Err(fail(PrefixErrorReason::NoSlash));
    };
    let (addr, zone) = parse_addr(addr_text).map_err(|e| fail(PrefixErrorReason::Addr(e)))?;
    if zone.is_some() {
        return Err(fail(PrefixErrorReason::Zone));
    }
    // Go runs Atoi, which would allow a sign and leading zeros, so it rejects a first
    // character outside 1-9 whenever more characters follow.
    let leading_ok = bits_text.len() <= 1 || matches!(bits_text.as_bytes()[0], b'1'..=b'9');
    let bits = leading_ok
        .then(|| bits_text.parse::<i64>().ok())
        .flatten()
        .ok_or_else(|| fail(PrefixErrorReason::BadBits(bits_text.to_owned())))?;
    let out_of_range = || fail(PrefixErrorReason::OutOfRange);
    let bits = u8::try_from(bits).map_err(|_| out_of_range())?;
    match addr {
        IpAddr::V4(a) => Ipv4Net::new(a, bits).map(IpNet::V4),
        IpAddr::V6(a) => Ipv6Net::new(a, bits).map(IpNet::V6),
    }
    .map_err(|_| out_of_range())
}

/// Upstream's `HasLoopBackIP` test on a parsed prefix: Go's `Addr.IsLoopback` on the (unmasked)
/// address. IPv4 means 127/8; IPv6 means `::1`, and, because current Go unmaps IPv4-mapped
/// addresses first, also `::ffff:127.x.y.z`.
pub fn is_loopback_prefix_addr(net: &IpNet) -> bool {
    match net.addr().to_canonical() {
        IpAddr::V4(a) => a.octets()[0] == 127,
        IpAddr::V6(a) => a == Ipv6Addr::LOCALHOST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn prefix_errors_from_spec_are_exact() {
        let cases = [
            ("10.0.0.0", r#"netip.ParsePrefix("10.0.0.0"): no '/'"#),
            ("1.2.3/8", r#"netip.ParsePrefix("1.2.3/8"): ParseAddr("1.2.3"): IPv4 address too short"#),
            ("1.2.3.4/33", r#"netip.ParsePrefix("1.2.3.4/33"): prefix length out of range"#),
            ("1.2.3.4/08", r#"netip.ParsePrefix("1.2.3.4/08"): bad bits after slash: "08""#),
            ("fe80::1%eth0/64", r#"netip.ParsePrefix("fe80::1%eth0/64"): IPv6 zones cannot be present in a prefix"#),
        ];
        for (s, want) in cases {
            assert_eq!(parse_go_prefix(s).map_err(|e| e.to_string()), Err(want.to_owned()), "{s}");
        }
    }

    #[test]
    fn prefix_bits_follow_go_rules() {
        let bad_bits = ["", "-1", "+8", "-", "+", "00", "8a", " 8", "99999999999999999999"];
        for bits in bad_bits {
            let s = format!("1.2.3.4/{bits}");
            assert_eq!(
                parse_go_prefix(&s).map_err(|e| e.to_string()),
                Err(format!("netip.ParsePrefix({}): bad bits after slash: {}", go_quote(&s), go_quote(bits))),
                "{s:?}"
            );
        }
        for s in ["::/129", "1.2.3.4/300", "1.2.3.4/9999999999"] {
            assert!(parse_go_prefix(s).is_err_and(|e| e.to_string().ends_with("prefix length out of range")), "{s}");
        }
        assert_eq!(parse_go_prefix("1.2.3.4/0").map(|n| n.prefix_len()), Ok(0));
        assert_eq!(parse_go_prefix("::/128").map(|n| n.prefix_len()), Ok(128));
    }

    #[test]
    fn prefix_splits_at_last_slash_and_reports_addr_errors() {
        assert_eq!(
            parse_go_prefix("1.2.3.4/8/8").map_err(|e| e.to_string()),
            Err(r#"netip.ParsePrefix("1.2.3.4/8/8"): ParseAddr("1.2.3.4/8"): unexpected character (at "/8")"#
                .to_owned())
        );
        assert_eq!(
            parse_go_prefix("/24").map_err(|e| e.to_string()),
            Err(r#"netip.ParsePrefix("/24"): ParseAddr(""): unable to parse IP"#.to_owned())
        );
    }

    #[test]
    fn prefix_keeps_host_bits_and_canonicalises() {
        let cases = [
            ("10.1.2.3/8", "10.1.2.3/8"),
            ("127.0.0.1/8", "127.0.0.1/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:DB8:0:0::1/64", "2001:db8::1/64"),
            ("::ffff:1.2.3.4/120", "::ffff:1.2.3.4/120"),
            ("::127.0.0.53/128", "::7f00:35/128"),
        ];
        for (s, want) in cases {
            assert_eq!(parse_go_prefix(s).map(|n| n.to_string()), Ok(want.to_owned()), "{s}");
        }
        assert!(matches!(parse_go_prefix("::ffff:1.2.3.4/120"), Ok(IpNet::V6(_))));
        assert!(matches!(parse_go_prefix("1.2.3.4/32"), Ok(IpNet::V4(_))));
    }

    /// Golden parity relies on Rust printing IPv6 exactly as Go's `Addr.String()` does.
    #[test]
    fn ipv6_display_matches_go_canonical_form() {
        let cases = [
            ("::127.0.0.53", "::7f00:35"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
            ("FE80:0000:0000:0000:0000:0000:0000:0001", "fe80::1"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
            ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
            ("1:0:0:2:0:0:0:4", "1:0:0:2::4"),
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
        ];
        for (s, want) in cases {
            let (addr, _) = parse_go_addr(s).unwrap();
            assert_eq!(addr.to_string(), want, "{s}");
        }
    }

    #[test]
    fn addr_parses_zones_and_families() {
        assert_eq!(parse_go_addr("fe80::1%eth0"), Ok(("fe80::1".parse().unwrap(), Some("eth0".to_owned()))));
        assert_eq!(parse_go_addr("::%lo"), Ok(("::".parse().unwrap(), Some("lo".to_owned()))));
        assert_eq!(parse_go_addr("10.0.0.1"), Ok(("10.0.0.1".parse().unwrap(), None)));
        assert_eq!(parse_go_addr("1:2:3:4:5:6:1.2.3.4"), Ok(("1:2:3:4:5:6:102:304".parse().unwrap(), None)));
        assert_eq!(parse_go_addr("::1.2.3.4%z"), Ok(("::102:304".parse().unwrap(), Some("z".to_owned()))));
        assert_eq!(parse_go_addr("1::"), Ok(("1::".parse().unwrap(), None)));
        assert_eq!(parse_go_addr("1:2:3:4:5:6:7:8"), Ok(("1:2:3:4:5:6:7:8".parse().unwrap(), None)));
        assert_eq!(parse_go_addr("0.0.0.0"), Ok(("0.0.0.0".parse().unwrap(), None)));
        assert_eq!(parse_go_addr("255.255.255.255"), Ok(("255.255.255.255".parse().unwrap(), None)));
    }

    #[test]
    fn addr_errors_match_go() {
        let cases = [
            ("", r#"ParseAddr(""): unable to parse IP"#),
            ("foo", r#"ParseAddr("foo"): unable to parse IP"#),
            ("%eth0", r#"ParseAddr("%eth0"): missing IPv6 address"#),
            ("1.2.3", r#"ParseAddr("1.2.3"): IPv4 address too short"#),
            ("1.2.3.4.5", r#"ParseAddr("1.2.3.4.5"): IPv4 address too long"#),
            ("01.2.3.4", r#"ParseAddr("01.2.3.4"): IPv4 field has octet with leading zero"#),
            ("1.2.3.256", r#"ParseAddr("1.2.3.256"): IPv4 field has value >255"#),
            ("1.2.3.300", r#"ParseAddr("1.2.3.300"): IPv4 field has value >255"#),
            (".1.2.3", r#"ParseAddr(".1.2.3"): IPv4 field must have at least one digit (at ".1.2.3")"#),
            ("1.2.3.", r#"ParseAddr("1.2.3."): IPv4 field must have at least one digit (at ".")"#),
            ("1..2.3", r#"ParseAddr("1..2.3"): IPv4 field must have at least one digit (at ".2.3")"#),
            ("1.2.3.a", r#"ParseAddr("1.2.3.a"): unexpected character (at "a")"#),
            ("1.2.3.4%eth0", r#"ParseAddr("1.2.3.4%eth0"): unexpected character (at "%eth0")"#),
            ("fe80::1%", r#"ParseAddr("fe80::1%"): zone must be a non-empty string"#),
            ("12345::", r#"ParseAddr("12345::"): each group must have 4 or less digits (at "12345::")"#),
            ("::gggg", r#"ParseAddr("::gggg"): each colon-separated field must have at least one digit (at "gggg")"#),
            (":1", r#"ParseAddr(":1"): each colon-separated field must have at least one digit (at ":1")"#),
            (
                "1:2:1.2.3.4",
                r#"ParseAddr("1:2:1.2.3.4"): embedded IPv4 address must replace the final 2 fields of the address (at "1.2.3.4")"#,
            ),
            (
                "::1:2:3:4:5:6:7:1.2.3.4",
                r#"ParseAddr("::1:2:3:4:5:6:7:1.2.3.4"): too many hex fields to fit an embedded IPv4 at the end of the address (at "1.2.3.4")"#,
            ),
            ("::ffff:1.2.3.04", r#"ParseAddr("::ffff:1.2.3.04"): IPv4 field has octet with leading zero"#),
            ("::ffff:1.2..4%z", r#"ParseAddr("::ffff:1.2..4%z"): IPv4 field must have at least one digit (at ".4")"#),
            ("1:2x", r#"ParseAddr("1:2x"): unexpected character, want colon (at "x")"#),
            ("1:2:", r#"ParseAddr("1:2:"): colon must be followed by more characters (at ":")"#),
            ("1::2::3", r#"ParseAddr("1::2::3"): multiple :: in address (at ":3")"#),
            ("1:2:3:4:5:6:7:8:9", r#"ParseAddr("1:2:3:4:5:6:7:8:9"): trailing garbage after address (at "9")"#),
            ("1:2:3", r#"ParseAddr("1:2:3"): address string too short"#),
            (
                "1:2:3:4:5:6:7:8::",
                r#"ParseAddr("1:2:3:4:5:6:7:8::"): the :: must expand to at least one field of zeros"#,
            ),
            ("1:2:3:4::5:6:7:8", r#"ParseAddr("1:2:3:4::5:6:7:8"): the :: must expand to at least one field of zeros"#),
        ];
        for (s, want) in cases {
            assert_eq!(parse_go_addr(s).map_err(|e| e.to_string()), Err(want.to_owned()), "{s}");
        }
    }

    #[test]
    fn loopback_follows_go_is_loopback() {
        let check = |s: &str| is_loopback_prefix_addr(&parse_go_prefix(s).unwrap());
        assert!(check("127.0.0.1/32"));
        assert!(check("127.1.2.3/32"));
        assert!(check("127.0.0.0/8"));
        assert!(!check("0.0.0.0/0"));
        assert!(!check("128.0.0.1/32"));
        assert!(check("::1/128"));
        assert!(!check("::/0"));
        assert!(!check("::2/128"));
        assert!(check("::ffff:127.0.0.1/104"));
        assert!(!check("::ffff:10.0.0.1/104"));
        assert!(!check("::127.0.0.1/128"));
    }
}
