//! argv + environment → configuration → plan → rendered rules, through the public `run`, always
//! as a dry run: any input either renders or fails with an error, never a panic.
//!
//! Input: NUL-separated items; `KEY=VALUE` items whose key is upper case go to the environment,
//! the rest to argv (after the program name).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

/// Arguments and variables the target keeps away from the tool: the ones that would leave the
/// dry run (`--dry-run=false`, a `--` before the forced flag), open sockets and wait
/// (validation), or take a path the input chose, so that fuzzing never writes or opens a file
/// anywhere: `DRY_RUN_FILE_PATH`, `--report`/`ISTIO_IPTABLES_REPORT` (written even by a dry
/// run), `--resolv-conf` (a FIFO would hang), `--network-namespace`/`NETWORK_NAMESPACE`, and
/// the accepted-but-ignored `--log_target`/`--log_rotate` paths. These are every path-valued
/// row of the flag table (`src/cli.rs`); a new one belongs here. Matched on substrings, case
/// folded, so `--report=/x`, `ISTIO_IPTABLES_REPORT=/x` and the like are all dropped.
fn unsafe_for_a_dry_run(item: &str) -> bool {
    let lower = item.to_ascii_lowercase();
    ["dry", "validation", "resolv", "trace", "report", "namespace", "log_target", "log_rotate"]
        .iter()
        .any(|word| lower.contains(word))
        || item == "--"
        || (item.starts_with('-') && !item.starts_with("--") && item.contains('n'))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut argv = vec!["istio-iptables".to_string(), "--dry-run".to_string()];
    let mut env = BTreeMap::new();
    for item in text.split('\0') {
        if unsafe_for_a_dry_run(item) {
            continue;
        }
        match item.split_once('=') {
            Some((key, value))
                if !key.is_empty()
                    && key.bytes().all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit()) =>
            {
                env.insert(key.to_string(), value.to_string());
            }
            _ => argv.push(item.to_string()),
        }
    }
    let mut stdout = Vec::new();
    let _ = istio_iptables::run(argv, &env, &mut stdout);
});
