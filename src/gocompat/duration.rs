//! Go `time.ParseDuration` and `Duration.String`.

use std::time::Duration;

use super::quote::time_quote;

/// A `time.ParseDuration` failure, printed with Go's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    input: String,
    kind: DurationErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DurationErrorKind {
    Invalid,
    MissingUnit,
    UnknownUnit(String),
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let input = time_quote(&self.input);
        match &self.kind {
            DurationErrorKind::Invalid => write!(f, "time: invalid duration {input}"),
            DurationErrorKind::MissingUnit => write!(f, "time: missing unit in duration {input}"),
            DurationErrorKind::UnknownUnit(unit) => {
                write!(f, "time: unknown unit {} in duration {input}", time_quote(unit))
            }
        }
    }
}

impl std::error::Error for DurationError {}

/// Go durations are int64 nanoseconds; the parser allows magnitudes up to 2^63 so that the
/// most negative value can be written.
const DURATION_LIMIT: u64 = 1 << 63;

/// Go `time.ParseDuration`: a sign, then one or more `<decimal><unit>` terms with units
/// `ns us µs μs ms s m h`; a bare `0` is allowed. Errors carry Go's text, e.g.
/// `time: invalid duration "abc"`.
///
/// Go accepts negative durations; they are returned as [`Duration::ZERO`]: upstream's probe
/// timeout treats a negative wait as no wait, and the configuration refuses a zero deadline
/// (`--command-timeout`, `--lock-timeout`, see `crate::cli::Deadline`).
pub fn parse_go_duration(s: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError { input: s.to_owned(), kind: DurationErrorKind::Invalid };
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
            return Err(DurationError { input: s.to_owned(), kind: DurationErrorKind::MissingUnit });
        }
        let unit_name = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit = duration_unit_nanos(unit_name).ok_or_else(|| DurationError {
            input: s.to_owned(),
            kind: DurationErrorKind::UnknownUnit(unit_name.to_owned()),
        })?;

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

#[cfg(test)]
mod tests {
    use super::*;
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
            assert_eq!(parse_go_duration(s).map_err(|e| e.to_string()), Err(want.to_owned()), "{s:?}");
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
}
