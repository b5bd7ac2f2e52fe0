//! Dry-run: print what would be applied, never run a command. stdout carries only the rules;
//! `DRY_RUN_FILE_PATH` receives upstream's recording of the commands it would have run.

use std::io::Write;
use std::path::Path;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::plan::{Family, Plan};
use crate::render::{iptables, nft};

const FAMILIES: [(Family, &str); 2] = [(Family::V4, "iptables"), (Family::V6, "ip6tables")];

pub(super) fn iptables(config: &Config, plan: &Plan, stdout: &mut dyn Write) -> Result<()> {
    let families: Vec<(Family, &str)> =
        FAMILIES.into_iter().filter(|(family, _)| *family == Family::V4 || config.enable_ipv6).collect();
    // State verification reads both families whatever IPv6 says; the recording shows it.
    let mut recorded: Vec<String> = vec!["iptables-save".into(), "ip6tables-save".into()];
    let mut printed = String::new();
    for (family, binary) in &families {
        let rules = iptables::token_rules(plan, *family);
        if config.cleanup_only {
            let commands = iptables::cleanup_commands(&rules);
            printed.push_str(&format!("# {binary} commands (--cleanup-only)\n"));
            for command in commands {
                let line = format!("{binary} {command}");
                printed.push_str(&line);
                printed.push('\n');
                recorded.push(line);
            }
        } else {
            let text = iptables::render_restore(&rules);
            tracing::info!("Running iptables restore with: {binary}-restore and the following input:\n{}", text.trim());
            printed.push_str(&format!("# {binary}-restore --noflush\n"));
            printed.push_str(&text);
            recorded.extend(text.lines().map(str::to_string));
        }
    }
    for (_, binary) in &families {
        recorded.push(format!("{binary}-save"));
    }
    write_recording(config.dry_run_file.as_deref(), &recorded.join("\n"))?;
    stdout.write_all(printed.as_bytes()).map_err(Error::Stdout)?;
    for (family, _) in &families {
        let label = if *family == Family::V4 { "IPv4" } else { "IPv6" };
        tracing::info!("Final iptables state ({label}):\n");
    }
    tracing::info!("skipping configuring routes due to dry run mode");
    Ok(())
}

pub(super) fn nftables(config: &Config, plan: &Plan, stdout: &mut dyn Write) -> Result<()> {
    let text = if config.cleanup_only { nft::cleanup_transaction() } else { nft::transaction(plan) };
    write_recording(config.dry_run_file.as_deref(), text.trim_end_matches('\n'))?;
    stdout.write_all(text.as_bytes()).map_err(Error::Stdout)?;
    tracing::info!("nftables rules (dry run, not applied):\n{text} ");
    tracing::info!("skipping configuring routes due to dry run mode");
    Ok(())
}

/// Writes the recorded lines, each followed by a newline, replacing any earlier content.
fn write_recording(path: Option<&Path>, lines: &str) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let mut content = String::with_capacity(lines.len() + 1);
    content.push_str(lines);
    content.push('\n');
    std::fs::write(path, content).map_err(|source| Error::WriteFile { path: path.to_path_buf(), source })
}
