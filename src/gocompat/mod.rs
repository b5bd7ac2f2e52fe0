//! Go value semantics: what upstream's pflag, `strconv`, `time` and `net/netip` accept, and the
//! exact error text they produce.
//!
//! Upstream parses every flag and env value with these Go functions. Matching their grammar keeps
//! us a drop-in replacement (the same inputs are accepted or rejected), and matching their error
//! text keeps logs and recorded failures identical.

mod duration;
mod netip;
mod quote;

pub use duration::{env_duration, format_go_duration, parse_go_duration, DurationError};
pub use netip::{is_loopback_prefix_addr, parse_go_addr, parse_go_prefix, AddrError, PrefixError};
pub use quote::{go_quote, json_quote};

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
pub fn parse_go_u16(s: &str) -> Result<u16, ParseUintError> {
    parse_uint16_base0(s).map_err(|kind| ParseUintError { input: s.to_owned(), kind })
}

/// A `strconv.ParseUint` failure, printed with Go's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseUintError {
    input: String,
    kind: NumError,
}

impl std::fmt::Display for ParseUintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "strconv.ParseUint: parsing {}: {}", go_quote(&self.input), self.kind.text())
    }
}

impl std::error::Error for ParseUintError {}

/// A `strconv.ParseBool` failure. The input is quoted as Rust's `{:?}` does, which is what
/// this project has always printed (identical to Go's `%q` for printable input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("strconv.ParseBool: parsing {input:?}: invalid syntax")]
pub struct ParseBoolError {
    pub input: String,
}

/// A `strconv.ParseInt` failure (pflag int flags), quoted like [`ParseBoolError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("strconv.ParseInt: parsing {input:?}: invalid syntax")]
pub struct ParseIntError {
    pub input: String,
}

/// Env semantics for a uint16 flag (upstream `pkg/flag/flag.go` with pflag): upstream ignores the error but keeps the
/// value ParseUint returned with it, so a syntax error gives 0 and an out-of-range value 65535.
pub fn env_u16(s: &str) -> u16 {
    match parse_uint16_base0(s) {
        Ok(v) => v,
        Err(NumError::Syntax) => 0,
        Err(NumError::Range) => u16::MAX,
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
                parse_go_u16(s).map_err(|e| e.to_string()),
                Err(format!("strconv.ParseUint: parsing {}: invalid syntax", go_quote(s))),
                "{s:?}"
            );
        }
        assert_eq!(
            parse_go_u16("x").map_err(|e| e.to_string()),
            Err(r#"strconv.ParseUint: parsing "x": invalid syntax"#.to_owned())
        );
    }

    #[test]
    fn u16_range_errors_match_go() {
        assert_eq!(
            parse_go_u16("70000").map_err(|e| e.to_string()),
            Err(r#"strconv.ParseUint: parsing "70000": value out of range"#.to_owned())
        );
        for s in ["65536", "0x10000", "999999999999999999999", "70000x"] {
            assert!(parse_go_u16(s).is_err_and(|e| e.to_string().ends_with("value out of range")), "{s}");
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
}
