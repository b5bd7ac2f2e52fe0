//! The bad-input corpus (`testdata/bad-input.tsv`): values upstream would copy verbatim into the
//! rules. Each must fail with exit 1 and an error naming the setting and value, print nothing on
//! stdout, and leave `DRY_RUN_FILE_PATH` unwritten.

use std::path::Path;
use std::process::Command;

struct Entry {
    setting: String,
    value: String,
    expected: Option<String>,
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r")
}

fn corpus() -> Vec<Entry> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/bad-input.tsv");
    let text = std::fs::read_to_string(path).expect("read bad-input.tsv");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let mut fields = line.splitn(3, '\t');
            let setting = fields.next().unwrap_or_default().to_string();
            let value = unescape(fields.next().expect("setting<TAB>value"));
            let expected = fields.next().map(unescape);
            Entry { setting, value, expected }
        })
        .collect()
}

/// The error quotes the whole value, or the offending item of a comma list.
fn quotes_value(stderr: &str, value: &str) -> bool {
    std::iter::once(value)
        .chain(value.split(',').map(|item| item.trim_matches(' ')))
        .any(|candidate| stderr.contains(&format!("{candidate:?}")))
}

#[test]
fn every_bad_value_is_rejected_before_anything_is_written() {
    let entries = corpus();
    assert!(entries.len() >= 40, "corpus too small: {}", entries.len());
    let mut failures = Vec::new();
    for entry in &entries {
        let dir = tempfile::tempdir().expect("tempdir");
        let recording = dir.path().join("recording");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_istio-iptables"));
        cmd.env_clear().env("ENABLE_INBOUND_IPV6", "false").env("DRY_RUN_FILE_PATH", &recording).args([
            "--dry-run",
            "--resolv-conf",
            "/dev/null",
        ]);
        // TPROXY with every inbound port uses the mark, the route table and the exclude ports, so a
        // bad value in any of them matters. Set through the
        // environment so that an entry for the same setting (env or flag) takes precedence.
        cmd.env("ISTIO_INBOUND_INTERCEPTION_MODE", "TPROXY").env("ISTIO_INBOUND_PORTS", "*");
        match entry.setting.strip_prefix("env:") {
            Some(name) => {
                cmd.env(name, &entry.value);
            }
            None => {
                cmd.arg(format!("{}={}", entry.setting, entry.value));
            }
        }
        let out = cmd.output().expect("run istio-iptables");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = entry.setting.trim_start_matches("env:");
        let expected = entry.expected.clone().unwrap_or_else(|| name.to_string());
        let problems: Vec<&str> = [
            (out.status.code() != Some(1), "exit code is not 1"),
            (!out.stdout.is_empty(), "stdout is not empty"),
            (recording.exists(), "DRY_RUN_FILE_PATH was written"),
            (!stderr.contains(&expected), "stderr does not name the setting"),
            (entry.expected.is_none() && !quotes_value(&stderr, &entry.value), "stderr does not quote the value"),
        ]
        .into_iter()
        .filter_map(|(bad, what)| bad.then_some(what))
        .collect();
        if !problems.is_empty() {
            failures.push(format!(
                "{} = {:?}: {} (exit {:?}, stderr: {stderr})",
                entry.setting,
                entry.value,
                problems.join(", "),
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{} bad input(s) not handled:\n{}", failures.len(), failures.join("\n"));
}
