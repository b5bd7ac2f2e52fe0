//! The extension subcommands (`explain`, `check`, `doctor`). Upstream takes no positional
//! arguments, so a leading word is unambiguous; any other argv is a run, exactly as upstream's.

use std::ffi::OsString;

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
/// A word anywhere else (a flag's value) is left alone.
pub fn take(argv: &mut Vec<OsString>) -> Option<Subcommand> {
    let at = match argv.get(1).and_then(|a| a.to_str()) {
        Some("istio-iptables") => 2,
        _ => 1,
    };
    let subcommand = Subcommand::from_word(argv.get(at))?;
    argv.remove(at);
    Some(subcommand)
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
        assert_eq!(take(&mut args), Some(Subcommand::Explain));
        assert_eq!(args, argv(&["--to", "1.2.3.4:80"]));
        let mut args = argv(&["istio-iptables", "check", "-p", "1"]);
        assert_eq!(take(&mut args), Some(Subcommand::Check));
        assert_eq!(args, argv(&["istio-iptables", "-p", "1"]));
        let mut args = argv(&["doctor"]);
        assert_eq!(take(&mut args), Some(Subcommand::Doctor));
    }

    #[test]
    fn anything_else_is_a_run() {
        for args in [&["-p", "doctor"][..], &["istio-iptables", "-p", "1"], &[], &["istio-iptables"], &["Explain"]] {
            let mut taken = argv(args);
            assert_eq!(take(&mut taken), None, "{args:?}");
            assert_eq!(taken, argv(args), "argv untouched for {args:?}");
        }
    }
}
