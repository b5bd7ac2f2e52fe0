use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::cli::{self, Parsed};
use crate::exec::journal::{Evidence, Subprocess};
use crate::host::HostFacts;

fn flags(args: &[&str], env: &BTreeMap<String, String>) -> Flags {
    let argv = ["istio-iptables", "-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "*"]
        .into_iter()
        .chain(args.iter().copied());
    let Ok(Parsed::Run(flags)) = cli::parse(argv, env) else { panic!("flags parse") };
    *flags
}

fn config(flags: &Flags, env: &BTreeMap<String, String>) -> Config {
    let host = HostFacts { interface_addresses: vec!["10.1.1.1".parse().unwrap()], ..Default::default() };
    Config::build(flags, env, &host).unwrap()
}

fn parsed(report: &RunReport) -> Value {
    let text = report.to_json();
    assert!(text.ends_with("}\n"), "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn an_applied_iptables_run_serialises_every_field() {
    let env = BTreeMap::new();
    let flags = flags(&[], &env);
    let config = config(&flags, &env);
    let journal = Journal {
        iptables: vec![IptablesChoice {
            family: Family::V4,
            program: "iptables-nft".into(),
            variant: "nft",
            evidence: Evidence::LegacyHasNoRules,
        }],
        nftables_tables_existed: false,
        action: Some(Action::Applied),
        subprocesses: vec![Subprocess { program: "iptables-nft-restore".into(), args: vec!["--noflush".into()] }],
        warnings: vec!["a \"quoted\"\nwarning".into()],
    };
    let report = RunReport::new(&flags, Some(&config), &Ok(()), journal, Duration::from_micros(1500));
    let json = parsed(&report);
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert!(json["commit"].is_string());
    assert_eq!(json["action"], "applied");
    assert_eq!(json["backend"]["kind"], "iptables");
    assert_eq!(json["backend"]["families"][0]["program"], "iptables-nft");
    assert_eq!(json["backend"]["families"][0]["evidence"], "nft chosen: no legacy rules");
    assert_eq!(json["ipv6"]["enabled"], false);
    assert_eq!(json["ipv6"]["reason"], "detected: the first usable interface address, 10.1.1.1, is IPv4");
    let plan = Plan::build(&config);
    let planned = iptables::token_rules(&plan, Family::V4);
    assert_eq!(json["rules"]["total"], planned.len());
    let nat = planned.iter().filter(|r| r.table.iptables_name() == "nat").count();
    let counts = json["rules"]["counts"].as_array().unwrap();
    assert!(counts.contains(&serde_json::json!({"family": "ipv4", "table": "nat", "rules": nat})), "{counts:?}");
    assert!(counts.iter().all(|c| c["family"] == "ipv4"), "IPv6 is off: {counts:?}");
    assert_eq!(json["rules"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(json["subprocesses"]["count"], 1);
    assert_eq!(json["subprocesses"]["commands"][0]["args"][0], "--noflush");
    assert_eq!(json["duration_ms"], 1.5);
    assert_eq!(json["warnings"][0], "a \"quoted\"\nwarning");
    assert_eq!(json["error"], Value::Null);
}

#[test]
fn a_failed_run_carries_its_error_and_exit_code() {
    let env = BTreeMap::new();
    let flags = flags(&["-b", "80 -j ACCEPT"], &env);
    let error = Config::build(&flags, &env, &HostFacts::default()).map(drop);
    let report = RunReport::new(&flags, None, &error, Journal::default(), Duration::ZERO);
    let json = parsed(&report);
    assert_eq!(json["action"], "failed");
    assert_eq!(json["error"]["exit_code"], 1);
    assert!(json["error"]["message"].as_str().unwrap().contains("--istio-inbound-ports"), "{json}");
    for field in ["backend", "ipv6", "rules"] {
        assert_eq!(json[field], Value::Null, "{field}: nothing is known before the configuration");
    }
    assert_eq!(json["subprocesses"], serde_json::json!({"count": 0, "commands": []}));
}

#[test]
fn ipv6_reason_names_what_forced_it() {
    let env: BTreeMap<String, String> = [("ENABLE_INBOUND_IPV6".to_string(), "true".to_string())].into();
    let from_env = flags(&[], &env);
    assert_eq!(
        ipv6(&from_env, &config(&from_env, &env)),
        Ipv6 { enabled: true, reason: "forced by ENABLE_INBOUND_IPV6".into() }
    );
    let none = BTreeMap::new();
    let from_flag = flags(&["--enable-inbound-ipv6=false"], &none);
    assert_eq!(ipv6(&from_flag, &config(&from_flag, &none)).reason, "forced by --enable-inbound-ipv6");
}

#[test]
fn the_hash_covers_the_rendered_rules_of_the_backend() {
    let env = BTreeMap::new();
    let base = flags(&["--enable-inbound-ipv6=true"], &env);
    let config = config(&base, &env);
    let plan = Plan::build(&config);
    let text: String = [Family::V4, Family::V6]
        .into_iter()
        .map(|f| iptables::restore_input(&iptables::token_rules(&plan, f)).render())
        .collect();
    let expected: String = Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let summary = rules(&config, &plan);
    assert_eq!(summary.sha256, expected);
    assert!(summary.counts.contains_key(&("ipv6", "nat")));
    let nft_flags = flags(&["--enable-inbound-ipv6=true", "--native-nftables"], &env);
    let nft_config = self::config(&nft_flags, &env);
    let nft_summary = rules(&nft_config, &Plan::build(&nft_config));
    let expected: String =
        Sha256::digest(nft::transaction(&plan).as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(nft_summary.sha256, expected);
    assert_ne!(nft_summary.sha256, summary.sha256);
    assert_eq!(nft_summary.counts, summary.counts, "counted from the one plan");
}

#[test]
fn sha256_is_the_standard_digest() {
    let hex: String = Sha256::digest(b"abc").iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
