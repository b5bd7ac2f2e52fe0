//! The extension subcommands (`explain`, `check`, `doctor`), and the argv splitting they share.
//! Upstream takes no positional arguments, so a leading word is unambiguous. Upstream ignores
//! positionals, but a bare word in the subcommand's place is refused here: a misspelt read-only
//! subcommand (`chek`) must not turn into a run that programs the namespace.

use std::ffi::OsString;

use crate::cli::{Kind, FLAGS};
use crate::error::UsageError;

/// The subcommand words, for suggestions.
const WORDS: [&str; 3] = ["explain", "check", "doctor"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subcommand {
    /// Follow a packet through the rules a run would install.
    Explain,
    /// Compare the namespace's live Istio rules with this configuration's (exit 3 on drift).
    Check,
    /// Report what the namespace and kernel offer.
    Doctor,
}

impl Subcommand {
    fn from_word(word: Option<&OsString>) -> Option<Subcommand> {
        match word.and_then(|w| w.to_str()) {
            Some("explain") => Some(Subcommand::Explain),
            Some("check") => Some(Subcommand::Check),
            Some("doctor") => Some(Subcommand::Doctor),
            _ => None,
        }
    }
}

/// Takes the subcommand word out of `argv` (program name first): right after the program
/// name, or after a leading `istio-iptables` word (the form the injected container passes).
/// Any other non-empty word there is refused (a typo of a subcommand would otherwise be a run);
/// a flag, an empty argument, or a word anywhere else (a flag's value, a positional after a
/// flag such as `--drop-invalid false`) is left to the run's parser, which ignores positionals.
pub fn take(argv: &mut Vec<OsString>) -> Result<Option<Subcommand>, UsageError> {
    let at = match argv.get(1).and_then(|a| a.to_str()) {
        Some("istio-iptables") => 2,
        _ => 1,
    };
    let Some(word) = argv.get(at) else { return Ok(None) };
    if let Some(subcommand) = Subcommand::from_word(Some(word)) {
        argv.remove(at);
        return Ok(Some(subcommand));
    }
    let text = word.to_string_lossy();
    if text.is_empty() || text.starts_with('-') {
        return Ok(None);
    }
    let suggestion = WORDS.into_iter().find(|known| edit_distance(&text, known) <= 2);
    Err(UsageError::UnknownCommand { word: text.into_owned(), suggestion })
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// A subcommand's own flag as found in argv: its name, and its value (`None` when the flag
/// came last, with no value after it).
pub type OwnFlag = (&'static str, Option<String>);

/// Splits argv (program name first, subcommand word removed) into the run's argv and the
/// subcommand's own long flags (`--name value` or `--name=value`, names from `own`), in the
/// order given. A run flag whose value is the next argument keeps it, even if the value looks
/// like an own flag; `--` ends the splitting, everything after it goes to the run.
pub fn split_own_flags(argv: Vec<OsString>, own: &[&'static str]) -> (Vec<OsString>, Vec<OwnFlag>) {
    let mut run = Vec::with_capacity(argv.len());
    let mut found = Vec::new();
    let mut args = argv.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy().into_owned();
        if text == "--" {
            run.push(arg);
            run.extend(args.by_ref());
            break;
        }
        if let Some((flag, attached)) = own_flag(&text, own) {
            let value = attached.or_else(|| args.next().map(|v| v.to_string_lossy().into_owned()));
            found.push((flag, value));
            continue;
        }
        let takes_next = run_flag_takes_next_value(&text);
        run.push(arg);
        if takes_next {
            run.extend(args.next());
        }
    }
    (run, found)
}

fn own_flag(arg: &str, own: &[&'static str]) -> Option<(&'static str, Option<String>)> {
    let body = arg.strip_prefix("--")?;
    let (name, value) = match body.split_once('=') {
        Some((name, value)) => (name, Some(value.to_string())),
        None => (body, None),
    };
    own.iter().find(|flag| **flag == name).map(|flag| (*flag, value))
}

/// Whether a run-flag token (`--envoy-port`, `-p`, `-np`) leaves its value to the next argument.
fn run_flag_takes_next_value(arg: &str) -> bool {
    let takes_value = |kind: Kind| !matches!(kind, Kind::Bool | Kind::OptionalBool);
    if let Some(long) = arg.strip_prefix("--") {
        return !long.contains('=') && FLAGS.iter().any(|d| d.long == long && takes_value(d.kind));
    }
    let Some(shorts) = arg.strip_prefix('-') else {
        return false;
    };
    for (at, short) in shorts.char_indices() {
        match FLAGS.iter().find(|d| d.short == Some(short)) {
            Some(def) if takes_value(def.kind) => return at + short.len_utf8() == shorts.len(),
            Some(_) => continue,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("x").chain(args.iter().copied()).map(OsString::from).collect()
    }

    #[test]
    fn a_leading_word_selects_a_subcommand_and_is_removed() {
        let mut args = argv(&["explain", "--to", "1.2.3.4:80"]);
        assert_eq!(take(&mut args).unwrap(), Some(Subcommand::Explain));
        assert_eq!(args, argv(&["--to", "1.2.3.4:80"]));
        let mut args = argv(&["istio-iptables", "check", "-p", "1"]);
        assert_eq!(take(&mut args).unwrap(), Some(Subcommand::Check));
        assert_eq!(args, argv(&["istio-iptables", "-p", "1"]));
        let mut args = argv(&["doctor"]);
        assert_eq!(take(&mut args).unwrap(), Some(Subcommand::Doctor));
    }

    #[test]
    fn flags_and_later_words_are_a_run() {
        let runs: [&[&str]; 6] = [
            &["-p", "doctor"],
            &["istio-iptables", "-p", "1"],
            &[],
            &["istio-iptables"],
            &["--drop-invalid", "false"],
            &["", "-p", "1"],
        ];
        for args in runs {
            let mut taken = argv(args);
            assert_eq!(take(&mut taken).unwrap(), None, "{args:?}");
            assert_eq!(taken, argv(args), "argv untouched for {args:?}");
        }
    }

    #[test]
    fn a_bare_word_in_the_subcommand_place_is_refused_with_a_suggestion() {
        let refused = |args: &[&str]| crate::Error::from(take(&mut argv(args)).unwrap_err());
        let err = refused(&["istio-iptables", "chek", "-p", "1"]);
        assert_eq!(err.exit_code(), 255);
        assert_eq!(err.to_string(), "unknown command \"chek\" (did you mean check?)");
        assert_eq!(refused(&["Explain"]).to_string(), "unknown command \"Explain\" (did you mean explain?)");
        assert_eq!(refused(&["docter"]).to_string(), "unknown command \"docter\" (did you mean doctor?)");
        assert_eq!(refused(&["foo", "-p", "1"]).to_string(), "unknown command \"foo\"");
        assert_eq!(refused(&["istio-iptables", "istio-iptables"]).to_string(), "unknown command \"istio-iptables\"");
    }

    #[test]
    fn own_flags_are_taken_out_and_run_flags_keep_their_values() {
        let (run, own) = split_own_flags(
            argv(&["-p", "--output", "--output=json", "-np", "--output", "-z", "1", "--output"]),
            &["output"],
        );
        assert_eq!(run, argv(&["-p", "--output", "-np", "--output", "-z", "1"]));
        assert_eq!(own, vec![("output", Some("json".to_string())), ("output", None)]);
    }
}
