//! Golden tests: every file under `testdata/golden/` is one test — the arguments and
//! environment to run the real binary with, and what it must print. Every file under
//! `testdata/explain/` is one test too: a configuration and the packets `istio-iptables explain`
//! must describe, each with the text it must print. Adding a case means adding one file; see
//! `testdata/README.md` for both formats.
//!
//! Each case is a test named by its path without `.case` (explain cases with an `explain/`
//! prefix): `cargo test --test golden -- upstream/tproxy` runs the cases whose name contains that
//! (`--exact` for just one). `UPDATE_GOLDEN=1 cargo test --test golden [-- NAME]` rewrites the
//! expected sections from the current output (review the diff before committing).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};
use pretty_assertions::Comparison;

#[derive(Debug, Default)]
struct Case {
    header: Vec<String>,
    setup: Setup,
    exit: i32,
    stdout: String,
    recording: Option<String>,
    stderr_contains: Vec<String>,
}

/// What both kinds of case file say about the run: its arguments, environment and the
/// nameservers of its resolv.conf.
#[derive(Debug, Default)]
struct Setup {
    args: Vec<String>,
    env: Vec<(String, String)>,
    nameservers: Vec<String>,
}

impl Setup {
    /// Reads one header line: blank lines and `#` comments are skipped, `arg:`, `env:` and
    /// `nameserver:` are taken; any other `key: value` is returned for the caller.
    fn read<'a>(&mut self, line: &'a str) -> Option<(&'a str, &'a str)> {
        let line = line.trim_end_matches('\n');
        if line.starts_with('#') || line.trim().is_empty() {
            return None;
        }
        let (key, value) = line.split_once(": ").unwrap_or_else(|| (line.trim_end_matches(':'), ""));
        match key {
            "arg" => self.args.push(unescape(value)),
            "env" => {
                let (k, v) = value.split_once('=').expect("env: NAME=VALUE");
                self.env.push((k.to_string(), unescape(v)));
            }
            "nameserver" => self.nameservers.push(value.to_string()),
            _ => return Some((key, value)),
        }
        None
    }

    /// A resolv.conf in `dir` listing the case's nameservers.
    fn write_resolv_conf(&self, dir: &Path) -> PathBuf {
        let resolv = dir.join("resolv.conf");
        let lines: String = self.nameservers.iter().map(|s| format!("nameserver {s}\n")).collect();
        fs::write(&resolv, lines).expect("write resolv.conf");
        resolv
    }
}

/// An `arg:` or `env:` value with its escapes (`\n`, `\t`, `\r`, `\\`) resolved, so that a case
/// can pass a value with a control character in it (a line cannot hold a newline).
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            other => panic!("unknown escape \\{} in {value:?}", other.map(String::from).unwrap_or_default()),
        }
    }
    out
}

fn parse_case(path: &Path) -> Case {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut case = Case::default();
    let mut section: Option<&str> = None;
    for line in text.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("--- ") {
            section = Some(match name.trim_end() {
                "stdout" => "stdout",
                "recording" => {
                    case.recording = Some(String::new());
                    "recording"
                }
                other => panic!("{}: unknown section {other:?}", path.display()),
            });
            continue;
        }
        match section {
            Some("stdout") => case.stdout.push_str(line),
            Some(_) => case.recording.get_or_insert_with(String::new).push_str(line),
            None => {
                case.header.push(line.to_string());
                let Some((key, value)) = case.setup.read(line) else { continue };
                match key {
                    "exit" => case.exit = value.parse().expect("exit: N"),
                    "stderr" => case.stderr_contains.push(value.to_string()),
                    other => panic!("{}: unknown key {other:?}", path.display()),
                }
            }
        }
    }
    case
}

struct Outcome {
    exit: i32,
    stdout: String,
    stderr: String,
    recording: Option<String>,
}

/// Golden cases print rules; they must never apply them to the machine running the tests. Every
/// case is run with `--dry-run` first, and a case may not turn it off again.
fn assert_stays_dry(case: &Case, path: &Path) {
    let turns_off = |arg: &String| {
        ["--dry-run=", "-n="].iter().any(|p| arg.starts_with(p))
            && !arg.ends_with("=true")
            && !arg.ends_with("=1")
            && !arg.ends_with("=t")
    };
    assert!(!case.setup.args.iter().any(turns_off), "{}: a golden case must stay a dry run", path.display());
}

/// `--dry-run`, unless the case itself enables dry-run through `DRY_RUN` (to test that binding).
fn dry_run_flag(case: &Case) -> Option<&'static str> {
    let env_enables = case
        .setup
        .env
        .iter()
        .any(|(k, v)| k == "DRY_RUN" && ["1", "t", "T", "TRUE", "true", "True"].contains(&v.as_str()));
    (!env_enables).then_some("--dry-run")
}

fn run_case(case: &Case) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv = case.setup.write_resolv_conf(dir.path());
    let recording = dir.path().join("recording");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_istio-iptables"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DRY_RUN_FILE_PATH", &recording)
        .envs(case.setup.env.iter().map(|(k, v)| (k, v)))
        // First, so that a case can name another file (the last value wins).
        .arg("--resolv-conf")
        .arg(&resolv)
        .args(dry_run_flag(case))
        .args(&case.setup.args);
    let output = cmd.output().expect("run istio-iptables");
    Outcome {
        exit: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        recording: fs::read_to_string(&recording).ok(),
    }
}

/// Every `*.case` file under `root`, sorted.
fn case_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "case") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn rewrite(path: &Path, case: &Case, outcome: &Outcome) {
    let mut text: String = case.header.concat();
    text.push_str("--- stdout\n");
    text.push_str(&outcome.stdout);
    if case.recording.is_some() {
        text.push_str("--- recording\n");
        text.push_str(outcome.recording.as_deref().unwrap_or_default());
    }
    fs::write(path, text).expect("update golden");
}

/// Multi-line text that pretty_assertions diffs line by line (a `String`'s `Debug` is one
/// escaped line).
struct Text<'a>(&'a str);

impl std::fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Where the corpus lives; test names are paths relative to it.
fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden")
}

/// Where the explain corpus lives; its test names are `explain/` and the path relative to it.
fn explain_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/explain")
}

/// One case: run it, then rewrite it (`UPDATE_GOLDEN`) or compare. Every mismatch is reported,
/// each with a diff (`<` expected, `>` actual).
fn check_case(path: &Path) -> Result<(), Failed> {
    let case = parse_case(path);
    assert_stays_dry(&case, path);
    let outcome = run_case(&case);
    if std::env::var_os("UPDATE_GOLDEN").is_some() && outcome.exit == case.exit {
        rewrite(path, &case, &outcome);
        return Ok(());
    }
    let mut problems = String::new();
    if outcome.exit != case.exit {
        let _ = writeln!(problems, "exit code {} (expected {}); stderr:\n{}", outcome.exit, case.exit, outcome.stderr);
    }
    if outcome.stdout != case.stdout {
        let _ = writeln!(
            problems,
            "stdout differs (< expected, > actual):\n{}",
            Comparison::new(&Text(&case.stdout), &Text(&outcome.stdout))
        );
    }
    if let Some(expected) = &case.recording {
        let actual = outcome.recording.as_deref().unwrap_or_default();
        if outcome.recording.is_none() {
            let _ = writeln!(problems, "DRY_RUN_FILE_PATH was not written");
        } else if actual != expected {
            let _ = writeln!(
                problems,
                "DRY_RUN_FILE_PATH differs (< expected, > actual):\n{}",
                Comparison::new(&Text(expected), &Text(actual))
            );
        }
    }
    for needle in &case.stderr_contains {
        if !outcome.stderr.contains(needle.as_str()) {
            let _ = writeln!(problems, "stderr lacks {needle:?}:\n{}", outcome.stderr);
        }
    }
    if case.exit != 0 && outcome.recording.is_some() {
        let _ = writeln!(problems, "a failed run must not write DRY_RUN_FILE_PATH");
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.into())
    }
}

/// A configuration for `explain`: the run's `env:`, `arg:` and `nameserver:` lines, as in a
/// golden case, then packets, each a `--- explain: FLAGS…` line and the text explain prints.
#[derive(Debug, Default)]
struct ExplainCase {
    header: String,
    setup: Setup,
    packets: Vec<Packet>,
}

#[derive(Debug)]
struct Packet {
    /// The explain flags, whitespace-separated on the section line.
    flags: String,
    expected: String,
}

fn parse_explain_case(path: &Path) -> ExplainCase {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut case = ExplainCase::default();
    for line in text.split_inclusive('\n') {
        if let Some(flags) = line.strip_prefix("--- explain:") {
            case.packets.push(Packet { flags: flags.trim().to_string(), expected: String::new() });
            continue;
        }
        if let Some(packet) = case.packets.last_mut() {
            packet.expected.push_str(line);
            continue;
        }
        case.header.push_str(line);
        if let Some((other, _)) = case.setup.read(line) {
            panic!("{}: unknown key {other:?}", path.display());
        }
    }
    case
}

/// `istio-iptables explain` with the case's configuration and one packet's flags, in a clean
/// environment; `resolv` holds the case's nameservers.
fn run_explain(case: &ExplainCase, packet: &Packet, resolv: &Path) -> Outcome {
    let output = Command::new(env!("CARGO_BIN_EXE_istio-iptables"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(case.setup.env.iter().map(|(k, v)| (k, v)))
        .arg("explain")
        .arg("--resolv-conf")
        .arg(resolv)
        .args(&case.setup.args)
        .args(packet.flags.split_whitespace())
        .output()
        .expect("run istio-iptables explain");
    Outcome {
        exit: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        recording: None,
    }
}

/// One explain case: every packet must exit 0 and print exactly its expected text. With
/// `UPDATE_GOLDEN` the expected text is rewritten instead, when every packet exits 0.
fn check_explain_case(path: &Path) -> Result<(), Failed> {
    let case = parse_explain_case(path);
    if case.packets.is_empty() {
        return Err(format!("{}: no `--- explain:` section", path.display()).into());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv = case.setup.write_resolv_conf(dir.path());
    let mut problems = String::new();
    let mut rewritten = case.header.clone();
    let mut all_exited_0 = true;
    for packet in &case.packets {
        let outcome = run_explain(&case, packet, &resolv);
        let _ = write!(rewritten, "--- explain: {}\n{}", packet.flags, outcome.stdout);
        if outcome.exit != 0 {
            all_exited_0 = false;
            let _ = writeln!(
                problems,
                "[{}]: exit code {} (expected 0); stderr:\n{}",
                packet.flags, outcome.exit, outcome.stderr
            );
        } else if outcome.stdout != packet.expected {
            let _ = writeln!(
                problems,
                "[{}]: stdout differs (< expected, > actual):\n{}",
                packet.flags,
                Comparison::new(&Text(&packet.expected), &Text(&outcome.stdout))
            );
        }
    }
    if std::env::var_os("UPDATE_GOLDEN").is_some() && all_exited_0 {
        fs::write(path, rewritten).expect("update golden");
        return Ok(());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.into())
    }
}

/// A test that the corpus under `root` has at least `minimum` files, so that a lost folder
/// fails instead of running nothing.
fn corpus_is_complete(name: &str, root: &Path, count: usize, minimum: usize) -> Trial {
    let root = root.display().to_string();
    Trial::test(name, move || {
        if count >= minimum {
            Ok(())
        } else {
            Err(format!("expected at least {minimum} case files under {root}, found {count}").into())
        }
    })
}

fn main() {
    let root = golden_dir();
    let files = case_files(&root);
    let explain_root = explain_dir();
    let explain_files = case_files(&explain_root);
    let mut trials = vec![
        corpus_is_complete("corpus_is_complete", &root, files.len(), 40),
        // One explain case per upstream capture configuration.
        corpus_is_complete("explain_corpus_is_complete", &explain_root, explain_files.len(), 28),
    ];
    trials.extend(files.into_iter().map(|path| {
        let relative = path.strip_prefix(&root).unwrap_or(&path).with_extension("");
        Trial::test(relative.display().to_string(), move || check_case(&path))
    }));
    trials.extend(explain_files.into_iter().map(|path| {
        let relative = path.strip_prefix(&explain_root).unwrap_or(&path).with_extension("");
        Trial::test(format!("explain/{}", relative.display()), move || check_explain_case(&path))
    }));
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}
