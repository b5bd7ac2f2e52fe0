//! Byte-for-byte parity with upstream's own golden files, through `../shared/tools/parity`.
//!
//! The shared folder is not part of the repository. Without it both tests are reported as
//! `ignored (<reason>)`; with `ISTIO_IPTABLES_PARITY=require` (set by CI) they fail instead.

use std::path::Path;
use std::process::Command;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// Environment variable that turns a missing `../shared` into a failure.
const PARITY_ENV: &str = "ISTIO_IPTABLES_PARITY";

fn run_parity(kind: &str) -> Result<Completion, Failed> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let tool = shared.join("tools/parity");
    let cases = shared.join(format!("upstream/{kind}-cases.tsv"));
    if let Some(missing) = [&tool, &cases].into_iter().find(|path| !path.exists()) {
        let reason = format!("{} not found", missing.display());
        if std::env::var(PARITY_ENV).as_deref() == Ok("require") {
            return Err(format!("{reason} ({PARITY_ENV}=require)").into());
        }
        return Ok(Completion::ignored_with(reason));
    }
    let out = Command::new("bash")
        .arg(&tool)
        .arg(env!("CARGO_BIN_EXE_istio-iptables"))
        .arg(&cases)
        .arg(shared.join(format!("upstream/{kind}")))
        .output()
        .map_err(|e| format!("running {}: {e}", tool.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{kind} parity failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    if !stdout.contains(" 0 failed") {
        return Err(format!("{kind} parity did not report 0 failed:\n{stdout}").into());
    }
    Ok(Completion::Completed)
}

fn main() {
    let trials = ["iptables", "nftables"]
        .map(|kind| Trial::ignorable_test(format!("{kind}_parity_with_upstream_goldens"), move || run_parity(kind)));
    libtest_mimic::run(&Arguments::from_args(), trials.into()).exit();
}
