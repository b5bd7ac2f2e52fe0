//! The two renderings of a trace: text for people, one JSON object for tools.

use std::fmt::Write as _;

use super::packet::{Direction, PacketSpec};
use super::ruleset::Backend;
use super::walk::{sock, Fate, Step, Trace};
use crate::plan::AGENT_DNS_PORT;

/// What the ports a connection can land on are for, to say the fate in plain words.
pub struct PortRoles {
    pub proxy_port: u16,
    pub inbound_capture_port: u16,
}

impl PortRoles {
    fn describe(&self, port: u16) -> &'static str {
        match port {
            p if p == self.proxy_port => " (Envoy's outbound listener)",
            p if p == self.inbound_capture_port => " (Envoy's inbound listener)",
            AGENT_DNS_PORT => " (istio-agent's DNS proxy)",
            _ => "",
        }
    }
}

pub fn verdict_name(fate: Fate) -> &'static str {
    match fate {
        Fate::Redirect(_) => "redirect",
        Fate::Tproxy(_) => "tproxy",
        Fate::Accept => "accept",
        Fate::Drop => "drop",
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Iptables => "iptables",
        Backend::Nftables => "nftables",
    }
}

fn family_name(spec: &PacketSpec) -> &'static str {
    if spec.to.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

pub fn text(spec: &PacketSpec, backend: Backend, trace: &Trace, roles: &PortRoles) -> String {
    let mut out = String::new();
    let proto = spec.proto.name();
    let from = match (spec.from, spec.from_port) {
        (Some(addr), Some(port)) => std::net::SocketAddr::new(addr, port).to_string(),
        (Some(addr), None) => addr.to_string(),
        (None, _) => "(unspecified source)".to_string(),
    };
    let who = match spec.direction {
        Direction::Outbound => format!("outbound, sent by uid {} gid {}", spec.uid, spec.gid),
        Direction::Inbound => "inbound".to_string(),
    };
    let _ = writeln!(out, "packet: {proto} {from} -> {}, {who}", spec.to);
    let _ = writeln!(
        out,
        "rules:  {} ({}), the first packet of a new connection",
        backend_name(backend),
        family_name(spec)
    );
    let width = trace
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Matched { table, chain, .. } => Some(table.len() + chain.len() + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    for step in &trace.steps {
        match step {
            Step::Hook { name, why } => {
                let _ = writeln!(out, "\n{name}: {why}");
            }
            Step::Matched { table, chain, rule } => {
                let place = format!("{table} {chain}");
                let _ = writeln!(out, "  {place:<width$}  {rule}");
            }
            Step::Note(note) => {
                let _ = writeln!(out, "  -> {note}");
            }
        }
    }
    if !trace.steps.iter().any(|s| matches!(s, Step::Matched { .. })) {
        let _ = writeln!(out, "  (no Istio rule matches)");
    }
    let original = spec.to;
    let fate = match trace.fate {
        Fate::Redirect(port) => {
            format!("redirected to local port {port}{}; SO_ORIGINAL_DST gives {original}", roles.describe(port))
        }
        Fate::Tproxy(port) => format!(
            "handed by TPROXY to the socket on port {port}{}, destination {original} unchanged",
            roles.describe(port)
        ),
        Fate::Accept => match (spec.direction, trace.last.iif.as_deref()) {
            (Direction::Outbound, Some("lo")) => format!("not captured: delivered locally to {}", sock(&trace.last)),
            (Direction::Outbound, _) => {
                format!("not captured: sent out {} to {}", trace.last.oif.as_deref().unwrap_or("?"), sock(&trace.last))
            }
            (Direction::Inbound, _) => format!("not captured: delivered to {}", sock(&trace.last)),
        },
        Fate::Drop => "dropped".to_string(),
    };
    let _ = writeln!(out, "\nverdict: {fate}");
    if let Some(zone) = trace.ct_zone {
        let _ = writeln!(out, "conntrack zone: {zone}");
    }
    out
}

pub fn json(spec: &PacketSpec, backend: Backend, trace: &Trace) -> String {
    let port = match trace.fate {
        Fate::Redirect(port) | Fate::Tproxy(port) => port.to_string(),
        Fate::Accept | Fate::Drop => "null".to_string(),
    };
    let zone = trace.ct_zone.map_or("null".to_string(), |z| z.to_string());
    let mut out = format!(
        "{{\"verdict\":\"{}\",\"port\":{port},\"ct_zone\":{zone},\"backend\":\"{}\",\"family\":\"{}\",\"path\":[",
        verdict_name(trace.fate),
        backend_name(backend),
        if spec.to.is_ipv4() { "ipv4" } else { "ipv6" },
    );
    let mut hook = "";
    let mut first = true;
    for step in &trace.steps {
        match step {
            Step::Hook { name, .. } => hook = name,
            Step::Matched { table, chain, rule } => {
                if !first {
                    out.push(',');
                }
                first = false;
                let _ = write!(
                    out,
                    "{{\"hook\":{},\"table\":{},\"chain\":{},\"rule\":{}}}",
                    json_string(hook),
                    json_string(table),
                    json_string(chain),
                    json_string(rule)
                );
            }
            Step::Note(_) => {}
        }
    }
    out.push_str("]}\n");
    out
}

/// A JSON string literal (RFC 8259: quote, backslash and control characters escaped).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_what_json_requires() {
        assert_eq!(json_string("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\u000a\\u0001é\"");
    }
}
