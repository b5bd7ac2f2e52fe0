//! Dry-run: the real flow over the recording fake, then what it issued printed. stdout carries
//! only the rules (each restore input a real run would feed, or the nft transaction);
//! `DRY_RUN_FILE_PATH` receives upstream's recording of the commands its stub would have run.
//!
//! The fake namespace is empty, as upstream's stub is, except under `--cleanup-only`: there it
//! holds the rules this configuration installs, so the output shows the removal a real run
//! performs on a pod set up with the same flags (an empty namespace has nothing to remove).
//! That namespace is scripted as the kernel's `-save` answer (`fake::installed_state`, written
//! by `render::save`), the kernel's stand-in.

use std::io::Write;
use std::path::Path;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::plan::{Family, Plan};
use crate::render::iptables::token_rules;
use crate::render::nft;

use super::fake::{installed_state, Call, FakeNetfilter};
use super::iptables::{self, Settings};
use super::nftables;

pub(super) fn run(config: &Config, plan: &Plan, stdout: &mut dyn Write) -> Result<()> {
    let fake = FakeNetfilter::default();
    let (printed, recorded) =
        if config.native_nftables { nftables_flow(config, plan, &fake)? } else { iptables_flow(config, plan, &fake)? };
    write_recording(config.dry_run_file.as_deref(), &recorded)?;
    stdout.write_all(printed.as_bytes()).map_err(Error::Stdout)?;
    tracing::info!("skipping configuring routes due to dry run mode");
    Ok(())
}

fn iptables_flow(config: &Config, plan: &Plan, fake: &FakeNetfilter) -> Result<(String, String)> {
    // Upstream's stub has fixed binary names whatever `--force-iptables-binary` says.
    let settings = Settings { forced_backend: None, ..Settings::of(config) };
    if config.cleanup_only {
        // The fake kernel's `-save` answer, written by the one `-save`-form writer; the flow
        // parses it as it would parse a real kernel's dump.
        for family in [Family::V4, Family::V6].into_iter().filter(|f| *f == Family::V4 || config.enable_ipv6) {
            fake.script_saves(family, &[&installed_state(&token_rules(plan, family))]);
        }
    }
    iptables::apply(settings, plan, fake)?;
    // The recording frames the restore inputs with upstream's state reads: both families before
    // (its verification reads IPv6 whatever IPv6 says), the planned ones after.
    let mut recorded = vec!["iptables-save".to_string(), "ip6tables-save".to_string()];
    let mut printed = String::new();
    for call in fake.calls() {
        if let Call::Restore { program, input } = call {
            printed.push_str(&format!("# {program} --noflush\n"));
            printed.push_str(&input);
            recorded.extend(input.lines().map(str::to_string));
        }
    }
    recorded.push("iptables-save".into());
    if config.enable_ipv6 {
        recorded.push("ip6tables-save".into());
    }
    Ok((printed, recorded.join("\n")))
}

fn nftables_flow(config: &Config, plan: &Plan, fake: &FakeNetfilter) -> Result<(String, String)> {
    // Upstream's transaction, as its dry-run prints it; a real run commits the hardened
    // `apply_transaction` (see README "Differences from upstream").
    let transaction = if config.cleanup_only { nft::cleanup_transaction() } else { nft::transaction(plan) };
    nftables::apply(fake, &transaction)?;
    let printed: String = fake
        .calls()
        .into_iter()
        .filter_map(|call| match call {
            Call::Nft { args, stdin } if args == "-f -" => stdin,
            _ => None,
        })
        .collect();
    tracing::info!("nftables rules (dry run, not applied):\n{printed} ");
    let recorded = printed.trim_end_matches('\n').to_string();
    Ok((printed, recorded))
}

/// Writes the recorded lines, each followed by a newline, replacing any earlier content.
fn write_recording(path: Option<&Path>, lines: &str) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let mut content = String::with_capacity(lines.len() + 1);
    content.push_str(lines);
    content.push('\n');
    std::fs::write(path, content).map_err(|source| Error::WriteFile { path: path.to_path_buf(), source })
}
