//! `doctor`'s findings as text for people, or as one JSON object.

use std::fmt::Write as _;

use crate::exec::iptables::Variant;
use crate::exec::CommandError;
use crate::gocompat::json_quote;
use crate::plan::Family;

use super::{Detection, Findings};

fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

fn variant_name(variant: Variant) -> &'static str {
    match variant {
        Variant::Legacy => "legacy",
        Variant::Nft => "nft",
    }
}

fn verdict(failure: &Option<String>) -> String {
    match failure {
        None => "usable".to_string(),
        Some(why) => format!("NOT usable: {}", why.trim()),
    }
}

pub fn text(findings: &Findings) -> String {
    let mut out = String::from("iptables programs:\n");
    for p in &findings.programs {
        let state = match (&p.version, p.save_and_restore) {
            (None, _) => "not installed".to_string(),
            (Some(version), true) => format!("{version} (with -save and -restore)"),
            (Some(version), false) => format!("{version} (-save or -restore missing)"),
        };
        let _ = writeln!(out, "  {:<18} {state}", p.name);
    }
    out.push_str("\nrules in this namespace:\n");
    for h in &findings.holdings {
        let state = match &h.rules {
            Ok(0) => "none".to_string(),
            Ok(n) => format!("{n} rules"),
            Err(why) => format!("cannot read: {}", why.xtables_text().trim()),
        };
        let _ = writeln!(out, "  {:<18} {state}", h.program);
    }
    out.push_str("\na run would use:\n");
    match &findings.detection {
        Detection::NativeNftables => out.push_str("  native nftables (--native-nftables), committed over netlink\n"),
        Detection::Iptables(families) => {
            for (family, choice) in families {
                let state = match choice {
                    Ok(c) => format!("{} ({})", c.program, c.evidence.describe()),
                    Err(why) => format!("no working iptables: {why}"),
                };
                let _ = writeln!(out, "  {:<18} {state}", family_name(*family));
            }
        }
    }
    out.push_str("\nIPv6:\n");
    match &findings.ipv6 {
        Ok(ipv6) => {
            let on = if ipv6.enabled { "on" } else { "off" };
            let _ = writeln!(out, "  rules              {on} ({})", ipv6.reason);
        }
        Err(why) => {
            let _ = writeln!(out, "  rules              undecided: {why}");
        }
    }
    if let Some(disabled) = findings.ipv6_disabled_by_sysctl {
        let _ =
            writeln!(out, "  kernel             {}", if disabled { "disabled (disable_ipv6=1)" } else { "enabled" });
    }
    out.push_str("\nkernel features (probed in a throwaway network namespace):\n");
    match &findings.probes {
        Err(why) => {
            let _ = writeln!(out, "  not probed: {why}");
        }
        Ok(probes) => {
            for p in &probes.iptables {
                let _ = writeln!(out, "  {:<18} {:<16} {}", p.program, p.feature, verdict(&p.failure));
            }
            let inet = match &probes.nftables_inet {
                None => "not probed: the configuration does not load".to_string(),
                Some(failure) => verdict(&failure.as_ref().map(ToString::to_string)),
            };
            let _ = writeln!(out, "  {:<18} {:<16} {inet}", "nf_tables", "inet ruleset");
        }
    }
    out
}

/// A finding's JSON value, or `{"error": …}` with the failure as Display words it.
fn result_json(result: Result<String, impl std::fmt::Display>) -> String {
    match result {
        Ok(value) => value,
        Err(why) => format!("{{\"error\": {}}}", json_quote(why.to_string().trim())),
    }
}

fn failure_json(failure: &Option<String>) -> String {
    match failure {
        None => "{\"usable\": true, \"error\": null}".to_string(),
        Some(why) => format!("{{\"usable\": false, \"error\": {}}}", json_quote(why.trim())),
    }
}

pub fn json(findings: &Findings) -> String {
    let programs: Vec<String> = findings
        .programs
        .iter()
        .map(|p| {
            format!(
                "{{\"program\": \"{}\", \"family\": \"{}\", \"variant\": \"{}\", \"installed\": {}, \"save_and_restore\": {}, \"version\": {}}}",
                p.name,
                family_name(p.family),
                variant_name(p.variant),
                p.version.is_some(),
                p.save_and_restore,
                p.version.as_deref().map_or_else(|| "null".to_string(), json_quote)
            )
        })
        .collect();
    let holdings: Vec<String> = findings
        .holdings
        .iter()
        .map(|h| {
            let rules = result_json(h.rules.as_ref().map(ToString::to_string).map_err(CommandError::xtables_text));
            format!("{{\"program\": \"{}\", \"family\": \"{}\", \"rules\": {rules}}}", h.program, family_name(h.family))
        })
        .collect();
    let detection = match &findings.detection {
        Detection::NativeNftables => "{\"kind\": \"nftables\", \"families\": []}".to_string(),
        Detection::Iptables(families) => {
            let entries: Vec<String> = families
                .iter()
                .map(|(family, choice)| {
                    let choice = result_json(choice.as_ref().map(|c| {
                        format!(
                            "{{\"program\": {}, \"variant\": \"{}\", \"evidence\": {}}}",
                            json_quote(&c.program),
                            c.variant,
                            json_quote(c.evidence.describe())
                        )
                    }));
                    format!("{{\"family\": \"{}\", \"choice\": {choice}}}", family_name(*family))
                })
                .collect();
            format!("{{\"kind\": \"iptables\", \"families\": [{}]}}", entries.join(", "))
        }
    };
    let ipv6 = result_json(
        findings
            .ipv6
            .as_ref()
            .map(|i| format!("{{\"enabled\": {}, \"reason\": {}}}", i.enabled, json_quote(&i.reason))),
    );
    let sysctl = findings.ipv6_disabled_by_sysctl.map_or_else(|| "null".to_string(), |d| d.to_string());
    let probes = result_json(findings.probes.as_ref().map(|probes| {
        let features: Vec<String> = probes
            .iptables
            .iter()
            .map(|p| {
                format!(
                    "{{\"program\": \"{}\", \"family\": \"{}\", \"feature\": \"{}\", \"result\": {}}}",
                    p.program,
                    family_name(p.family),
                    p.feature,
                    failure_json(&p.failure)
                )
            })
            .collect();
        let inet = probes
            .nftables_inet
            .as_ref()
            .map_or_else(|| "null".to_string(), |failure| failure_json(&failure.as_ref().map(ToString::to_string)));
        format!("{{\"iptables\": [\n    {}\n  ], \"nftables_inet\": {inet}}}", features.join(",\n    "))
    }));
    format!(
        "{{\n  \"programs\": [{}],\n  \"rules\": [{}],\n  \"detection\": {detection},\n  \"ipv6\": {ipv6},\n  \"ipv6_disabled_by_sysctl\": {sysctl},\n  \"probes\": {probes}\n}}\n",
        programs.join(", "),
        holdings.join(", ")
    )
}
