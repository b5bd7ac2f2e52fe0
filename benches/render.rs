//! Rule plan + rendering cost for very large inputs (issue: 10,000 inbound ports and 10,000
//! CIDRs in under 100 ms, and no quadratic step: doubling the input at most doubles the time).
//! Run with `cargo bench --bench render`.

use std::collections::BTreeMap;

use istio_iptables::cli::{self, Parsed};
use istio_iptables::config::Config;
use istio_iptables::host::HostFacts;
use istio_iptables::plan::{Family, Plan};
use istio_iptables::render::{iptables, nft};

fn main() {
    divan::main();
}

/// A configuration with `n` inbound ports, `n` outbound include CIDRs (half v4, half v6) and
/// IPv6 on, so every per-item rule shape is rendered for both families.
fn large_config(n: usize) -> Config {
    let ports: Vec<String> = (0..n).map(|i| (1024 + i % 60_000).to_string()).collect();
    let cidrs: Vec<String> = (0..n)
        .map(|i| if i % 2 == 0 { format!("10.{}.{}.0/24", i / 256 % 256, i % 256) } else { format!("fd00:{i:x}::/64") })
        .collect();
    let env: BTreeMap<String, String> = [("ENABLE_INBOUND_IPV6".to_string(), "true".to_string())].into();
    let argv = ["istio-iptables", "--dry-run", "-u", "1337", "-b", &ports.join(","), "-i", &cidrs.join(",")];
    let Ok(Parsed::Run(flags)) = cli::parse(argv, &env) else { panic!("flags parse") };
    // IPv6 is forced and the uid given, so the configuration needs nothing from the host.
    Config::build(&flags, &env, &HostFacts::default()).expect("config loads")
}

#[divan::bench(args = [10_000, 20_000], sample_count = 20)]
fn iptables_restore_text(bencher: divan::Bencher, n: usize) {
    let config = large_config(n);
    bencher.bench(|| {
        let plan = Plan::build(&config);
        let v4 = iptables::restore_text(&plan, Family::V4);
        let v6 = iptables::restore_text(&plan, Family::V6);
        v4.len() + v6.len()
    });
}

#[divan::bench(args = [10_000, 20_000], sample_count = 20)]
fn nft_transaction(bencher: divan::Bencher, n: usize) {
    let config = large_config(n);
    bencher.bench(|| nft::transaction(&Plan::build(&config)).len());
}

#[divan::bench(args = [10_000, 20_000], sample_count = 20)]
fn parse_and_validate(bencher: divan::Bencher, n: usize) {
    bencher.bench(|| large_config(n).inbound_exclude_ports.len());
}
