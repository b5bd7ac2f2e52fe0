//! Go's quoting styles: `strconv.Quote` (pflag, strconv and netip errors), the `time` package's
//! own, and the JSON string of a log line. The first and last share one escaper.

/// How a string is escaped inside double quotes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum QuoteStyle {
    /// Go `strconv.Quote`.
    Go,
    /// A JSON string as Istio's logger (zap) writes it: `\n`, `\r`, `\t`, other control
    /// characters as `\u00XX`, everything else verbatim.
    Json,
}

/// Go `strconv.Quote`, which is what `%q` and the strconv/netip error messages use.
///
/// Go escapes runes that are not "printable" by its Unicode tables; Rust's std has no such
/// table, so control characters, non-ASCII spaces and the common invisible format characters
/// stand in for it. Every ASCII input is quoted exactly.
pub fn go_quote(s: &str) -> String {
    quote(s, QuoteStyle::Go)
}

/// A JSON string literal, for `--log_as_json` log lines.
pub fn json_quote(s: &str) -> String {
    quote(s, QuoteStyle::Json)
}

fn quote(s: &str, style: QuoteStyle) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match (c, style) {
            ('"', _) => out.push_str("\\\""),
            ('\\', _) => out.push_str("\\\\"),
            ('\n', _) => out.push_str("\\n"),
            ('\r', _) => out.push_str("\\r"),
            ('\t', _) => out.push_str("\\t"),
            (c, QuoteStyle::Json) if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            (c, QuoteStyle::Json) => out.push(c),
            ('\u{7}', QuoteStyle::Go) => out.push_str("\\a"),
            ('\u{8}', QuoteStyle::Go) => out.push_str("\\b"),
            ('\u{c}', QuoteStyle::Go) => out.push_str("\\f"),
            ('\u{b}', QuoteStyle::Go) => out.push_str("\\v"),
            (c, QuoteStyle::Go) if is_go_printable(c) => out.push(c),
            (c, QuoteStyle::Go) if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            (c, QuoteStyle::Go) if u32::from(c) < 0x1_0000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            (c, QuoteStyle::Go) => out.push_str(&format!("\\U{:08x}", u32::from(c))),
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
pub(super) fn time_quote(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
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
    fn json_quote_escapes_like_zap() {
        assert_eq!(json_quote("a\"b\n\\"), "\"a\\\"b\\n\\\\\"");
        assert_eq!(json_quote("\u{1}\t\u{7f}caf\u{e9}"), "\"\\u0001\\t\u{7f}caf\u{e9}\"");
    }
}
