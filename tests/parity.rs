//! Byte-for-byte parity with upstream's own golden files, through `../shared/tools/parity`.
//! The shared folder is not part of the repository; without it this test says so and passes.

use std::path::Path;
use std::process::Command;

fn run_parity(kind: &str) {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let tool = shared.join("tools/parity");
    let cases = shared.join(format!("upstream/{kind}-cases.tsv"));
    if !tool.exists() || !cases.exists() {
        eprintln!("skipping {kind} parity: {} not found", cases.display());
        return;
    }
    let out = Command::new("bash")
        .arg(&tool)
        .arg(env!("CARGO_BIN_EXE_istio-iptables"))
        .arg(&cases)
        .arg(shared.join(format!("upstream/{kind}")))
        .output()
        .expect("run parity");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{kind} parity failed:\n{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn iptables_parity_with_upstream_goldens() {
    run_parity("iptables");
}

#[test]
fn nftables_parity_with_upstream_goldens() {
    run_parity("nftables");
}
