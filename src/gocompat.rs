//! Go value semantics: what upstream's pflag, `strconv`, `time` and `net/netip` accept, and the
//! exact error text they produce.
//!
//! Upstream parses every flag and env value with these Go functions. Matching their grammar keeps
//! us a drop-in replacement (the same inputs are accepted or rejected), and matching their error
//! text keeps logs and recorded failures identical.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Go `strconv.ParseBool`: accepts `1 t T TRUE true True 0 f F FALSE false False`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// How upstream applies an env value to a bool flag: pflag stores `false` on a parse error and
/// the error itself is discarded, so anything invalid (including `""`) means false.
pub fn env_bool(s: &str) -> bool {
    parse_go_bool(s).unwrap_or(false)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumError {
    Syntax,
    Range,
}

impl NumError {
    fn text(self) -> &'static str {
        match self {
            NumError::Syntax => "invalid syntax",
            NumError::Range => "value out of range",
        }
    }
}

/// `strconv.ParseUint(s, 0, 16)`. The error kind matters beyond the message: pflag stores the
/// value ParseUint returns alongside the error (0 for syntax, the maximum for range).
fn parse_uint16_base0(s: &str) -> Result<u16, NumError> {
    let bytes = s.as_bytes();
    // Go only looks for a letter prefix when at least one character follows it, so "0x" is
    // octal "x" (a syntax error) rather than an empty hex number.
    let (base, digits): (u16, &[u8]) = match bytes {
        [] => return Err(NumError::Syntax),
        [b'0', p, _, ..] if *p | 0x20 == b'b' => (2, &bytes[2..]),
        [b'0', p, _, ..] if *p | 0x20 == b'o' => (8, &bytes[2..]),
        [b'0', p, _, ..] if *p | 0x20 == b'x' => (16, &bytes[2..]),
        [b'0', rest @ ..] => (8, rest),
        _ => (10, bytes),
    };
    let mut value: u16 = 0;
    let mut saw_underscore = false;
    for &c in digits {
        let digit = match c {
            b'_' => {
                saw_underscore = true;
                continue;
            }
            b'0'..=b'9' => u16::from(c - b'0'),
            _ if (c | 0x20).is_ascii_lowercase() => u16::from((c | 0x20) - b'a') + 10,
            _ => return Err(NumError::Syntax),
        };
        if digit >= base {
            return Err(NumError::Syntax);
        }
        // Go reports range as soon as the running value overflows, even if a later character
        // would have been a syntax error ("70000x" is out of range, not invalid).
        value = value.checked_mul(base).and_then(|v| v.checked_add(digit)).ok_or(NumError::Range)?;
    }
    if saw_underscore && !underscores_ok(bytes) {
        return Err(NumError::Syntax);
    }
    Ok(value)
}

/// Go's rule for `_` in base-0 integer literals: it must sit between digits, or between a base
/// prefix and a digit. Only called once every other character is known to be a valid digit.
fn underscores_ok(s: &[u8]) -> bool {
    let (mut after_digit, body) = match s {
        [b'0', p, rest @ ..] if matches!(*p | 0x20, b'b' | b'o' | b'x') => (true, rest),
        _ => (false, s),
    };
    for &c in body {
        if c == b'_' {
            if !after_digit {
                return false;
            }
            after_digit = false;
        } else {
            after_digit = true;
        }
    }
    after_digit
}

/// pflag's uint16 parser (`strconv.ParseUint(s, 0, 16)`): decimal, `0x`/`0o`/`0b` prefixes,
/// leading-`0` octal, and Go's underscore digit separators. The error is Go's message, e.g.
/// `strconv.ParseUint: parsing "70000": value out of range`.
pub fn parse_go_u16(s: &str) -> Result<u16, String> {
    parse_uint16_base0(s).map_err(|e| format!("strconv.ParseUint: parsing {}: {}", go_quote(s), e.text()))
}

/// Env semantics for a uint16 flag (rules.md §1.3): upstream ignores the error but keeps the
/// value ParseUint returned with it, so a syntax error gives 0 and an out-of-range value 65535.
pub fn env_u16(s: &str) -> u16 {
    match parse_uint16_base0(s) {
        Ok(v) => v,
        Err(NumError::Syntax) => 0,
        Err(NumError::Range) => u16::MAX,
    }
}

/// Go durations are int64 nanoseconds; the parser allows magnitudes up to 2^63 so that the
/// most negative value can be written.
const DURATION_LIMIT: u64 = 1 << 63;

/// Go `time.ParseDuration`: a sign, then one or more `<decimal><unit>` terms with units
/// `ns us µs μs ms s m h`; a bare `0` is allowed. Errors carry Go's text, e.g.
/// `time: invalid duration "abc"`.
///
/// Go accepts negative durations; they are returned as [`Duration::ZERO`] because the only
/// duration setting (the probe timeout) treats a negative wait as no wait.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {}", time_quote(s));
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while let Some(&first) = rest.as_bytes().first() {
        if first != b'.' && !first.is_ascii_digit() {
            return Err(invalid());
        }
        let int_len = leading_digit_count(rest);
        let whole = parse_duration_int(&rest.as_bytes()[..int_len]).ok_or_else(invalid)?;
        rest = &rest[int_len..];

        let (mut fraction, mut scale, mut frac_len) = (0, 1.0, 0);
        if let Some(after_dot) = rest.strip_prefix('.') {
            frac_len = leading_digit_count(after_dot);
            (fraction, scale) = parse_duration_fraction(&after_dot.as_bytes()[..frac_len]);
            rest = &after_dot[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }

        let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", time_quote(s)));
        }
        let unit_name = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit = duration_unit_nanos(unit_name)
            .ok_or_else(|| format!("time: unknown unit {} in duration {}", time_quote(unit_name), time_quote(s)))?;

        if whole > DURATION_LIMIT / unit {
            return Err(invalid());
        }
        let mut term = whole * unit;
        if fraction > 0 {
            // Go computes the fractional part in float64 (nanosecond-accurate up to hours);
            // the same arithmetic gives the same rounding.
            term += (fraction as f64 * (unit as f64 / scale)) as u64;
            if term > DURATION_LIMIT {
                return Err(invalid());
            }
        }
        // Go's uint64 sum wraps silently when two terms of exactly 2^63 meet; keep that quirk
        // rather than reject an input upstream accepts.
        total = total.wrapping_add(term);
        if total > DURATION_LIMIT {
            return Err(invalid());
        }
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    if total >= DURATION_LIMIT {
        return Err(invalid());
    }
    Ok(Duration::from_nanos(total))
}

fn leading_digit_count(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// The integer part of a duration term; `None` once it exceeds 2^63 (Go: invalid duration).
fn parse_duration_int(digits: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for &c in digits {
        value = value.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    (value <= DURATION_LIMIT).then_some(value)
}

/// The fractional digits of a duration term as (numerator, 10^digits). Like Go, precision
/// beyond what fits is dropped instead of being an error.
fn parse_duration_fraction(digits: &[u8]) -> (u64, f64) {
    let mut value: u64 = 0;
    let mut scale = 1.0;
    for &c in digits {
        if value > (DURATION_LIMIT - 1) / 10 {
            break;
        }
        let next = value * 10 + u64::from(c - b'0');
        if next > DURATION_LIMIT {
            break;
        }
        value = next;
        scale *= 10.0;
    }
    (value, scale)
}

fn duration_unit_nanos(unit: &str) -> Option<u64> {
    match unit {
        "ns" => Some(1),
        // Go accepts both the micro sign (U+00B5) and the Greek mu (U+03BC).
        "us" | "\u{b5}s" | "\u{3bc}s" => Some(1_000),
        "ms" => Some(1_000_000),
        "s" => Some(1_000_000_000),
        "m" => Some(60 * 1_000_000_000),
        "h" => Some(3_600 * 1_000_000_000),
        _ => None,
    }
}

/// Env semantics for a duration flag: pflag stores 0 when parsing fails.
pub fn env_duration(s: &str) -> Duration {
    parse_go_duration(s).unwrap_or(Duration::ZERO)
}

/// Go `Duration.String()`: `0s`, `1.5s`, `300ms`, `1m30s`, `2h0m0s`; below one second the
/// largest of ns/µs/ms that keeps an integer part is used.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}{}\u{b5}s", nanos / 1_000, fraction_digits(nanos % 1_000, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}{}ms", nanos / 1_000_000, fraction_digits(nanos % 1_000_000, 6));
    }
    let seconds = format!("{}{}s", (nanos / 1_000_000_000) % 60, fraction_digits(nanos % 1_000_000_000, 9));
    let minutes = nanos / 60_000_000_000;
    if minutes == 0 {
        return seconds;
    }
    let hours = minutes / 60;
    if hours == 0 {
        return format!("{minutes}m{seconds}");
    }
    format!("{hours}h{}m{seconds}", minutes % 60)
}

/// `.ddd` with trailing zeros (and the dot, if nothing is left) removed.
fn fraction_digits(value: u128, width: usize) -> String {
    let padded = format!("{value:0width$}");
    let trimmed = padded.trim_end_matches('0');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!(".{trimmed}")
    }
}

/// Go `strconv.Quote`, which is what `%q` and the strconv/netip error messages use.
///
/// Go escapes runes that are not "printable" by its Unicode tables; Rust's std has no such
/// table, so control characters, non-ASCII spaces and the common invisible format characters
/// stand in for it. Every ASCII input is quoted exactly.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if u32::from(c) < 0x1_0000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    let invisible_format = matches!(
        c,
        '\u{ad}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{feff}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    );
    !c.is_control() && !c.is_whitespace() && !invisible_format
}

/// The `time` package's own quoting, which differs from `strconv.Quote`: every byte of a
/// non-ASCII or control character is written as `\xNN`.
fn time_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if !c.is_ascii() || u32::from(c) < 0x20 {
            let mut utf8 = [0; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// A `net/netip` ParseAddr failure, printed the way Go prints it.
#[derive(Debug)]
struct AddrError {
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
pub fn parse_go_addr(s: &str) -> Result<(IpAddr, Option<String>), String> {
    parse_addr(s).map_err(|e| e.to_string())
}

/// Go `netip.ParsePrefix`: split at the last `/`, parse the address (no zone allowed), then the
/// bit count (decimal, no sign, no leading zero). Host bits are kept, and an IPv4-mapped
/// address stays IPv6. The error is Go's message, e.g.
/// `netip.ParsePrefix("1.2.3.4/33"): prefix length out of range`.
pub fn parse_go_prefix(s: &str) -> Result<IpNet, String> {
    let fail = |msg: &str| format!("netip.ParsePrefix({}): {msg}", go_quote(s));
    let Some((addr_text, bits_text)) = s.rsplit_once('/') else {
        return Err(fail("no '/'"));
    };
    let (addr, zone) = parse_addr(addr_text).map_err(|e| fail(&e.to_string()))?;
    if zone.is_some() {
        return Err(fail("IPv6 zones cannot be present in a prefix"));
    }
    // Go runs Atoi, which would allow a sign and leading zeros, so it rejects a first
    // character outside 1-9 whenever more characters follow.
    let leading_ok = bits_text.len() <= 1 || matches!(bits_text.as_bytes()[0], b'1'..=b'9');
    let bits = leading_ok
        .then(|| bits_text.parse::<i64>().ok())
        .flatten()
        .ok_or_else(|| fail(&format!("bad bits after slash: {}", go_quote(bits_text))))?;
    let out_of_range = || fail("prefix length out of range");
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
    fn go_bool_accepts_exactly_strconv_set() {
        for s in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(s), Some(true), "{s}");
        }
        for s in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(s), Some(false), "{s}");
        }
        for s in ["", "yes", "tRUE", "on", " true", "2"] {
            assert_eq!(parse_go_bool(s), None, "{s:?}");
        }
    }

    #[test]
    fn env_bool_treats_invalid_as_false() {
        assert!(env_bool("True"));
        assert!(!env_bool("false"));
        assert!(!env_bool(""));
        assert!(!env_bool("yes"));
    }

    #[test]
    fn u16_accepts_go_base_prefixes() {
        let ok = [
            ("0", 0),
            ("15002", 15002),
            ("65535", 65535),
            ("0x3a9A", 0x3a9a),
            ("0X10", 16),
            ("0o17", 15),
            ("0O17", 15),
            ("0b101", 5),
            ("0B11", 3),
            ("017", 15),
            ("00", 0),
            ("1_000", 1000),
            ("0x_1f", 31),
            ("0_7", 7),
        ];
        for (s, want) in ok {
            assert_eq!(parse_go_u16(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn u16_syntax_errors_match_go() {
        for s in [
            "", "abc", "-1", "+1", " 1", "1 ", "08", "0x", "0b", "0b2", "0xg", "12a", "1__0", "_1", "1_", "0x_",
            "9\u{e9}",
        ] {
            assert_eq!(
                parse_go_u16(s),
                Err(format!("strconv.ParseUint: parsing {}: invalid syntax", go_quote(s))),
                "{s:?}"
            );
        }
        assert_eq!(parse_go_u16("x"), Err(r#"strconv.ParseUint: parsing "x": invalid syntax"#.to_owned()));
    }

    #[test]
    fn u16_range_errors_match_go() {
        assert_eq!(parse_go_u16("70000"), Err(r#"strconv.ParseUint: parsing "70000": value out of range"#.to_owned()));
        for s in ["65536", "0x10000", "999999999999999999999", "70000x"] {
            assert!(parse_go_u16(s).is_err_and(|e| e.ends_with("value out of range")), "{s}");
        }
    }

    #[test]
    fn env_u16_keeps_go_fallback_values() {
        assert_eq!(env_u16("0x10"), 16);
        assert_eq!(env_u16("abc"), 0);
        assert_eq!(env_u16(""), 0);
        assert_eq!(env_u16("70000"), 65535);
        assert_eq!(env_u16("1__0"), 0);
    }

    #[test]
    fn duration_accepts_go_syntax() {
        let ok = [
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("5s", Duration::from_secs(5)),
            ("+5s", Duration::from_secs(5)),
            ("1.5s", Duration::from_millis(1500)),
            ("300ms", Duration::from_millis(300)),
            ("1m30s", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            ("1h1m1s1ms1us1ns", Duration::new(3661, 1_001_001)),
            ("3\u{b5}s", Duration::from_micros(3)),
            ("3\u{3bc}s", Duration::from_micros(3)),
            (".5s", Duration::from_millis(500)),
            ("5.s", Duration::from_secs(5)),
            ("0s", Duration::ZERO),
            ("00s", Duration::ZERO),
            ("1.0000000001s", Duration::from_secs(1)),
            ("9223372036854775807ns", Duration::from_nanos(i64::MAX as u64)),
            (".9223372036854775809s", Duration::from_nanos(922_337_203)),
            (".12345678901234567890s", Duration::from_nanos(123_456_789)),
            ("9223372036854775808ns9223372036854775808ns", Duration::ZERO),
        ];
        for (s, want) in ok {
            assert_eq!(parse_go_duration(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn negative_durations_clamp_to_zero() {
        assert_eq!(parse_go_duration("-1s"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("-0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("-9223372036854775808ns"), Ok(Duration::ZERO));
    }

    #[test]
    fn duration_errors_match_go() {
        let cases = [
            ("", r#"time: invalid duration """#),
            ("-", r#"time: invalid duration "-""#),
            ("abc", r#"time: invalid duration "abc""#),
            ("s", r#"time: invalid duration "s""#),
            (".s", r#"time: invalid duration ".s""#),
            ("1s ", r#"time: unknown unit "s " in duration "1s ""#),
            ("1", r#"time: missing unit in duration "1""#),
            ("1s2", r#"time: missing unit in duration "1s2""#),
            ("1x", r#"time: unknown unit "x" in duration "1x""#),
            ("1S", r#"time: unknown unit "S" in duration "1S""#),
            ("9223372036854775808ns", r#"time: invalid duration "9223372036854775808ns""#),
            ("99999999999999999999s", r#"time: invalid duration "99999999999999999999s""#),
            ("2562048h", r#"time: invalid duration "2562048h""#),
            ("9223372036854775.9us", r#"time: invalid duration "9223372036854775.9us""#),
            ("2562047h2562047h", r#"time: invalid duration "2562047h2562047h""#),
            ("\u{e9}", r#"time: invalid duration "\xc3\xa9""#),
            ("1\u{e9}", r#"time: unknown unit "\xc3\xa9" in duration "1\xc3\xa9""#),
            ("\"\\\t", r#"time: invalid duration "\"\\\x09""#),
        ];
        for (s, want) in cases {
            assert_eq!(parse_go_duration(s), Err(want.to_owned()), "{s:?}");
        }
    }

    #[test]
    fn env_duration_falls_back_to_zero() {
        assert_eq!(env_duration("10s"), Duration::from_secs(10));
        assert_eq!(env_duration("bogus"), Duration::ZERO);
        assert_eq!(env_duration(""), Duration::ZERO);
    }

    #[test]
    fn duration_formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(999), "999ns"),
            (Duration::from_nanos(1_100), "1.1\u{b5}s"),
            (Duration::from_micros(2), "2\u{b5}s"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_nanos(1_500_001), "1.500001ms"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(7200), "2h0m0s"),
            (Duration::new(3661, 1), "1h1m1.000000001s"),
            (Duration::from_nanos(i64::MAX as u64), "2562047h47m16.854775807s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn go_quote_escapes_like_strconv() {
        assert_eq!(go_quote("abc"), r#""abc""#);
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\u{7}\u{8}\u{c}\n\r\t\u{b}"), r#""\a\b\f\n\r\t\v""#);
        assert_eq!(go_quote("\u{0}\u{1b}\u{7f}"), r#""\x00\x1b\x7f""#);
        assert_eq!(go_quote("caf\u{e9} \u{1F600}"), "\"caf\u{e9} \u{1F600}\"");
        assert_eq!(go_quote("\u{a0}\u{200b}\u{85}"), r#""\u00a0\u200b\u0085""#);
        assert_eq!(go_quote("\u{e0001}"), r#""\U000e0001""#);
    }

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
            assert_eq!(parse_go_prefix(s), Err(want.to_owned()), "{s}");
        }
    }

    #[test]
    fn prefix_bits_follow_go_rules() {
        let bad_bits = ["", "-1", "+8", "-", "+", "00", "8a", " 8", "99999999999999999999"];
        for bits in bad_bits {
            let s = format!("1.2.3.4/{bits}");
            assert_eq!(
                parse_go_prefix(&s),
                Err(format!("netip.ParsePrefix({}): bad bits after slash: {}", go_quote(&s), go_quote(bits))),
                "{s:?}"
            );
        }
        for s in ["::/129", "1.2.3.4/300", "1.2.3.4/9999999999"] {
            assert!(parse_go_prefix(s).is_err_and(|e| e.ends_with("prefix length out of range")), "{s}");
        }
        assert_eq!(parse_go_prefix("1.2.3.4/0").map(|n| n.prefix_len()), Ok(0));
        assert_eq!(parse_go_prefix("::/128").map(|n| n.prefix_len()), Ok(128));
    }

    #[test]
    fn prefix_splits_at_last_slash_and_reports_addr_errors() {
        assert_eq!(
            parse_go_prefix("1.2.3.4/8/8"),
            Err(r#"netip.ParsePrefix("1.2.3.4/8/8"): ParseAddr("1.2.3.4/8"): unexpected character (at "/8")"#
                .to_owned())
        );
        assert_eq!(
            parse_go_prefix("/24"),
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
            assert_eq!(parse_go_addr(s), Err(want.to_owned()), "{s}");
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
