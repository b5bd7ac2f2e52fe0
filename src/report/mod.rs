//! `--report PATH` (env `ISTIO_IPTABLES_REPORT`): one JSON object describing a run, written
//! after it whether it succeeded or not. Pointed at `/dev/termination-log`, Kubernetes shows it
//! in `kubectl describe pod`.
//!
//! Everything in it comes from typed values: the configuration, the plan (rule counts and the
//! hash of its rendered rules) and the journal the exec layer keeps while it runs
//! (`exec::journal`: backend and evidence, action, programs, warnings). No log text is parsed.
//! The fields are documented in README ("Run report").

mod file;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::cli::{Flags, Source};
use crate::config::Config;
use crate::error::Error;
use crate::exec::journal::{Action, IptablesChoice, Journal};
use crate::gocompat::json_quote;
use crate::plan::{Family, Plan};
use crate::render::{iptables, nft};

pub use file::write_report;

/// How the backend was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// One entry per family the run detected (or was forced to).
    Iptables(Vec<IptablesChoice>),
    /// `--native-nftables`: over netlink, or with `nft -f -` (`ISTIO_NFT_APPLY=nft`).
    Nftables { with_nft_binary: bool },
    /// A dry-run of the iptables flow: upstream's stub names, nothing detected.
    IptablesDryRun,
}

/// The IPv6 decision and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6 {
    pub enabled: bool,
    pub reason: String,
}

/// The rules this configuration installs, counted and hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `(family, table) -> rules`, IPv6 only when enabled.
    pub counts: BTreeMap<(&'static str, &'static str), usize>,
    /// Hex SHA-256 of [`Rules::hashed`].
    pub sha256: String,
    /// What was hashed, in words.
    pub hashed: &'static str,
}

/// The error that ended a failed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub exit_code: u8,
}

/// One run, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub version: &'static str,
    pub commit: &'static str,
    pub action: Action,
    pub backend: Option<Backend>,
    pub ipv6: Option<Ipv6>,
    pub rules: Option<Rules>,
    pub journal: Journal,
    pub duration: Duration,
    pub error: Option<Failure>,
}

const HASHED_IPTABLES: &str =
    "the iptables-restore inputs of the plan, IPv4 then IPv6 (when enabled), as a dry-run prints them without its '# ' lines";
const HASHED_NFTABLES: &str = "the nft transaction of the plan, as a dry-run prints it";

impl RunReport {
    /// The report of a run that ended with `result`; `config` is `None` when the run failed
    /// before its configuration was built.
    pub fn new(
        flags: &Flags,
        config: Option<&Config>,
        result: &Result<(), Error>,
        journal: Journal,
        duration: Duration,
    ) -> RunReport {
        let action = match (result, config) {
            (Err(_), _) => Action::Failed,
            (Ok(()), Some(config)) if config.dry_run && !config.skip_rule_apply => Action::DryRun,
            // Validation alone (`--skip-rule-apply`) changes nothing.
            (Ok(()), _) => journal.action.unwrap_or(Action::Unchanged),
        };
        let touches_rules = config.is_some_and(|c| !c.skip_rule_apply);
        let backend = config.filter(|_| touches_rules).and_then(|config| {
            if config.native_nftables {
                Some(Backend::Nftables { with_nft_binary: config.nft_apply_with_binary })
            } else if config.dry_run {
                Some(Backend::IptablesDryRun)
            } else {
                (!journal.iptables.is_empty()).then(|| Backend::Iptables(journal.iptables.clone()))
            }
        });
        let rules =
            config.filter(|c| touches_rules && !c.cleanup_only).map(|config| rules(config, &Plan::build(config)));
        RunReport {
            version: env!("CARGO_PKG_VERSION"),
            commit: option_env!("ISTIO_IPTABLES_COMMIT").unwrap_or("unknown"),
            action,
            backend,
            ipv6: config.map(|config| ipv6(flags, config)),
            rules,
            journal,
            duration,
            error: result.as_ref().err().map(|e| Failure { message: e.to_string(), exit_code: e.exit_code() }),
        }
    }

    /// The report as one JSON object (pretty-printed, a newline at the end).
    pub fn to_json(&self) -> String {
        let mut fields: Vec<(&str, String)> = vec![
            ("version", json_quote(self.version)),
            ("commit", json_quote(self.commit)),
            ("action", json_quote(self.action.as_str())),
            ("backend", self.backend.as_ref().map_or_else(null, backend_json)),
            ("ipv6", self.ipv6.as_ref().map_or_else(null, ipv6_json)),
            ("rules", self.rules.as_ref().map_or_else(null, rules_json)),
        ];
        let commands: Vec<String> = self
            .journal
            .subprocesses
            .iter()
            .map(|p| {
                let args: Vec<String> = p.args.iter().map(|a| json_quote(a)).collect();
                format!("{{\"program\": {}, \"args\": [{}]}}", json_quote(&p.program), args.join(", "))
            })
            .collect();
        fields.push((
            "subprocesses",
            format!("{{\"count\": {}, \"commands\": {}}}", commands.len(), list(&commands, "    ")),
        ));
        fields.push(("duration_ms", format!("{:.3}", self.duration.as_secs_f64() * 1000.0)));
        let warnings: Vec<String> = self.journal.warnings.iter().map(|w| json_quote(w)).collect();
        fields.push(("warnings", list(&warnings, "    ")));
        let error = self.error.as_ref().map_or_else(null, |e| {
            format!("{{\"message\": {}, \"exit_code\": {}}}", json_quote(&e.message), e.exit_code)
        });
        fields.push(("error", error));
        let body: Vec<String> = fields.into_iter().map(|(key, value)| format!("  \"{key}\": {value}")).collect();
        format!("{{\n{}\n}}\n", body.join(",\n"))
    }
}

fn null() -> String {
    "null".to_string()
}

/// A JSON array, one item per line when it has any.
fn list(items: &[String], indent: &str) -> String {
    if items.is_empty() {
        return "[]".to_string();
    }
    let inner: Vec<String> = items.iter().map(|item| format!("{indent}{item}")).collect();
    format!("[\n{}\n{}]", inner.join(",\n"), &indent[2..])
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

fn backend_json(backend: &Backend) -> String {
    match backend {
        Backend::Iptables(families) => {
            let entries: Vec<String> = families
                .iter()
                .map(|c| {
                    format!(
                        "{{\"family\": \"{}\", \"program\": {}, \"variant\": \"{}\", \"evidence\": {}}}",
                        family_name(c.family),
                        json_quote(&c.program),
                        c.variant,
                        json_quote(c.evidence.describe())
                    )
                })
                .collect();
            format!("{{\"kind\": \"iptables\", \"families\": [{}]}}", entries.join(", "))
        }
        Backend::IptablesDryRun => {
            "{\"kind\": \"iptables\", \"families\": [], \"evidence\": \"dry-run: nothing detected, upstream's stub program names\"}"
                .to_string()
        }
        Backend::Nftables { with_nft_binary } => {
            let (via, evidence) = if *with_nft_binary {
                ("nft", "--native-nftables with ISTIO_NFT_APPLY=nft: nft -f -")
            } else {
                ("netlink", "--native-nftables: committed over netlink")
            };
            format!("{{\"kind\": \"nftables\", \"via\": \"{via}\", \"evidence\": \"{evidence}\"}}")
        }
    }
}

fn ipv6_json(ipv6: &Ipv6) -> String {
    format!("{{\"enabled\": {}, \"reason\": {}}}", ipv6.enabled, json_quote(&ipv6.reason))
}

fn rules_json(rules: &Rules) -> String {
    let counts: Vec<String> = rules
        .counts
        .iter()
        .map(|((family, table), n)| format!("{{\"family\": \"{family}\", \"table\": \"{table}\", \"rules\": {n}}}"))
        .collect();
    let total: usize = rules.counts.values().sum();
    format!(
        "{{\"total\": {total}, \"counts\": [{}], \"sha256\": \"{}\", \"hashed\": {}}}",
        counts.join(", "),
        rules.sha256,
        json_quote(rules.hashed)
    )
}

/// Why IPv6 is on or off: the flag or variable that forced it, or the address that decided.
pub fn ipv6(flags: &Flags, config: &Config) -> Ipv6 {
    let reason = match (&flags.enable_inbound_ipv6.source, config.host_ip) {
        (Source::CommandLine, _) => "forced by --enable-inbound-ipv6".to_string(),
        (Source::Env(name), _) => format!("forced by {name}"),
        (Source::Default, Some(ip)) if config.dual_stack && config.enable_ipv6 && ip.is_ipv4() => {
            "detected: dual stack and the namespace has an IPv6 address".to_string()
        }
        (Source::Default, Some(ip)) => {
            let kind = if ip.is_ipv6() { "IPv6" } else { "IPv4" };
            format!("detected: the first usable interface address, {ip}, is {kind}")
        }
        (Source::Default, None) => "detected".to_string(),
    };
    Ipv6 { enabled: config.enable_ipv6, reason }
}

/// The plan's rules per family and table, and the SHA-256 of its rendered text.
pub fn rules(config: &Config, plan: &Plan) -> Rules {
    let families: &[Family] = if config.enable_ipv6 { &[Family::V4, Family::V6] } else { &[Family::V4] };
    let mut counts = BTreeMap::new();
    for &family in families {
        for rule in plan.rules_for(family) {
            *counts.entry((family_name(family), rule.table.iptables_name())).or_insert(0) += 1;
        }
    }
    let (text, hashed) = if config.native_nftables {
        (nft::transaction(plan), HASHED_NFTABLES)
    } else {
        let mut text = String::new();
        for &family in families {
            text.push_str(&iptables::restore_input(&iptables::token_rules(plan, family)).render());
        }
        (text, HASHED_IPTABLES)
    };
    let mut sha256 = String::with_capacity(64);
    for byte in Sha256::digest(text.as_bytes()) {
        let _ = write!(sha256, "{byte:02x}");
    }
    Rules { counts, sha256, hashed }
}

#[cfg(test)]
mod tests;
