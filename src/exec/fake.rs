//! The recording fake of the netfilter seam: answers from a script, changes nothing, and keeps
//! every call. A dry-run is the real flow over this fake (as upstream's dry-run is its stub
//! dependency); the unit tests script kernel states and failures with it.
//!
//! The fake stands in for the kernel, whose `-save` output is text the flow must parse; so the
//! fake answers `save()` with text. That text is written from typed rules by the project's one
//! `-save`-form writer (`render::save`), never by hand here: the fake's scripted `-save`
//! answers are the kernel's stand-in, and the only text of the project's own that is parsed.

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::error::Result;
use crate::nftnl::{NftnlError, Outcome as NftOutcome};
use crate::plan::{Family, Plan};
use crate::render::iptables::TokenRule;
use crate::render::save::Dump;

use super::iptables::{CommandError, Tool, Variant};
use super::routes::RouteError;
use super::seam::{Netfilter, ProgramOutput};

/// One thing the flow asked of the seam, in the words of the command a real run would start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    /// `<program>-save`.
    Save { program: String },
    /// `<program>-restore --noflush` with `input`.
    Restore { program: String, input: String },
    /// `<program>-save --version`.
    SaveVersion { program: String },
    /// `nft args` with `stdin`.
    Nft { args: String, stdin: Option<String> },
    /// A netlink nf_tables batch that replaces the istio tables with the plan's.
    NftablesCommit,
    /// A netlink nf_tables batch that deletes the istio tables.
    NftablesDelete,
    /// An address, policy rule or route, as `ip` would spell it.
    Route(String),
}

/// Per family, what the fake kernel holds and which writes it refuses.
#[derive(Debug, Default)]
struct FamilyScript {
    /// `-save` outputs, returned in turn; the last one stays.
    saves: VecDeque<String>,
    /// The restores that fail, counted from 0 within this family, with iptables' stderr.
    failing_restores: Vec<(usize, String)>,
    restores: usize,
}

#[derive(Debug)]
pub(crate) struct FakeNetfilter {
    families: RefCell<[FamilyScript; 2]>,
    /// The programs `installed` knows: upstream's stub names by default.
    programs: Vec<String>,
    nft_commit_failure: RefCell<Option<String>>,
    calls: RefCell<Vec<Call>>,
    /// `check`'s view of TPROXY routing: present instead of missing.
    routing_installed: std::cell::Cell<bool>,
}

impl Default for FakeNetfilter {
    /// An empty namespace with upstream's dry-run binaries: `iptables`, `ip6tables` and their
    /// `-save` / `-restore`.
    fn default() -> Self {
        let programs = ["iptables", "ip6tables"]
            .iter()
            .flat_map(|base| [base.to_string(), format!("{base}-save"), format!("{base}-restore")])
            .collect();
        FakeNetfilter {
            families: RefCell::default(),
            programs,
            nft_commit_failure: RefCell::default(),
            calls: RefCell::default(),
            routing_installed: std::cell::Cell::default(),
        }
    }
}

fn slot(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl FakeNetfilter {
    /// The family's `-save` answers from now on, in turn (the last one stays).
    pub(crate) fn script_saves(&self, family: Family, saves: &[&str]) {
        self.families.borrow_mut()[slot(family)].saves = saves.iter().map(|s| s.to_string()).collect();
    }

    #[cfg(test)]
    /// Makes the family's `nth` restore (from 0) fail with `stderr`.
    pub(crate) fn fail_restore(&self, family: Family, nth: usize, stderr: &str) {
        self.families.borrow_mut()[slot(family)].failing_restores.push((nth, stderr.to_string()));
    }

    #[cfg(test)]
    /// TPROXY's mark rule and local route are there (`check`).
    pub(crate) fn install_routing(&self) {
        self.routing_installed.set(true);
    }

    #[cfg(test)]
    pub(crate) fn fail_nft_commit(&self, stderr: &str) {
        *self.nft_commit_failure.borrow_mut() = Some(stderr.to_string());
    }

    /// Everything asked so far, in order.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    fn record(&self, call: Call) {
        self.calls.borrow_mut().push(call);
    }

    fn not_installed(program: &str) -> CommandError {
        CommandError {
            command: program.to_string(),
            spawn: Some(std::io::Error::from(std::io::ErrorKind::NotFound)),
            status: None,
            stderr: String::new(),
        }
    }

    fn route(&self, text: String) -> Result<(), RouteError> {
        self.record(Call::Route(text));
        Ok(())
    }
}

impl Netfilter for FakeNetfilter {
    fn save(&self, tool: &Tool) -> Result<String, CommandError> {
        let program = tool.save_program();
        if !self.installed(&program) {
            return Err(Self::not_installed(&program));
        }
        self.record(Call::Save { program });
        let mut families = self.families.borrow_mut();
        let saves = &mut families[slot(tool.family)].saves;
        let saved = if saves.len() > 1 { saves.pop_front() } else { saves.front().cloned() };
        Ok(saved.unwrap_or_default())
    }

    fn restore(&self, tool: &Tool, input: &str) -> Result<(), CommandError> {
        let program = tool.restore_program();
        if !self.installed(&program) {
            return Err(Self::not_installed(&program));
        }
        self.record(Call::Restore { program: program.clone(), input: input.to_string() });
        let mut families = self.families.borrow_mut();
        let script = &mut families[slot(tool.family)];
        let nth = script.restores;
        script.restores += 1;
        match script.failing_restores.iter().find(|(at, _)| *at == nth) {
            Some((_, stderr)) => {
                use std::os::unix::process::ExitStatusExt;
                Err(CommandError {
                    command: format!("{program} --noflush"),
                    spawn: None,
                    status: Some(std::process::ExitStatus::from_raw(1 << 8)),
                    stderr: stderr.clone(),
                })
            }
            None => Ok(()),
        }
    }

    fn save_version(&self, tool: &Tool) -> Result<String, CommandError> {
        let program = tool.save_program();
        self.record(Call::SaveVersion { program: program.clone() });
        Ok(format!("{program} v1.8.9 (nf_tables)\n"))
    }

    fn lists_no_tables(&self, family: Family, _variant: Variant) -> bool {
        let families = self.families.borrow();
        families[slot(family)].saves.front().map_or(true, |saved| !saved.lines().any(|l| l.starts_with('*')))
    }

    fn installed(&self, program: &str) -> bool {
        self.programs.iter().any(|p| p == program)
    }

    fn nftables_commit(&self, _plan: &Plan) -> Result<NftOutcome, NftnlError> {
        self.record(Call::NftablesCommit);
        Ok(NftOutcome::Replaced)
    }

    fn nftables_delete(&self) -> Result<(), NftnlError> {
        self.record(Call::NftablesDelete);
        Ok(())
    }

    /// The fake holds no nftables tables; `check` over it is tested through iptables.
    fn nftables_differences(&self, _plan: &Plan) -> Result<Vec<super::check::Drift>, NftnlError> {
        Ok(Vec::new())
    }

    fn nft(&self, args: &[&str], stdin: Option<&str>) -> Result<ProgramOutput> {
        self.record(Call::Nft { args: args.join(" "), stdin: stdin.map(str::to_string) });
        let ok = |stdout: &str| ProgramOutput {
            success: true,
            status: "exit status: 0".into(),
            stdout: stdout.into(),
            stderr: String::new(),
        };
        match args {
            ["--version"] => Ok(ok("nftables v1.0.6 (Lester Gooch #5)\n")),
            ["-f", "-"] => match self.nft_commit_failure.borrow().clone() {
                Some(stderr) => {
                    Ok(ProgramOutput { success: false, status: "exit status: 1".into(), stdout: String::new(), stderr })
                }
                None => Ok(ok("")),
            },
            _ => Ok(ok("")),
        }
    }

    fn add_loopback_passthrough_address(&self) -> Result<(), RouteError> {
        self.route("ip -6 addr add ::6/128 dev lo".into())
    }

    fn ensure_mark_rule(&self, family: Family, mark: u32, table: u32) -> Result<(), RouteError> {
        self.route(format!("ip {}rule add fwmark {mark} lookup {table}", ip_flag(family)))
    }

    fn add_local_default_route(&self, family: Family, table: u32) -> Result<(), RouteError> {
        self.route(format!("ip {}route add local default dev lo table {table}", ip_flag(family)))
    }

    fn remove_mark_rule(&self, family: Family, mark: u32, table: u32) -> Result<(), RouteError> {
        self.route(format!("ip {}rule del fwmark {mark} lookup {table}", ip_flag(family)))
    }

    fn remove_local_default_route(&self, family: Family, table: u32) -> Result<(), RouteError> {
        self.route(format!("ip {}route del local default dev lo table {table}", ip_flag(family)))
    }

    /// The routing the fake namespace holds: none, unless a test installed it.
    fn tproxy_routing(
        &self,
        _family: Family,
        _mark: u32,
        _table: u32,
    ) -> Result<super::route_state::TproxyRouting, super::route_state::RouteReadError> {
        let present = self.routing_installed.get();
        Ok(super::route_state::TproxyRouting { mark_rule: present, local_route: present })
    }
}

/// The fake kernel's `-save` answer after `rules` were applied to an empty namespace, written
/// by the one `-save`-form writer ([`Dump::render`]). The flow reads it back through its
/// `-save` parser, as it reads a real kernel's dump: the fake's scripted `-save` answers are
/// the kernel's stand-in, the one place text this project wrote is parsed.
pub(crate) fn installed_state(rules: &[TokenRule]) -> String {
    Dump::after_restore(rules).render()
}

fn ip_flag(family: Family) -> &'static str {
    match family {
        Family::V4 => "",
        Family::V6 => "-6 ",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Position, Table};

    #[test]
    fn installed_state_holds_inserts_where_the_kernel_puts_them() {
        let rule = |chain, position, args: &str| TokenRule {
            table: Table::Nat,
            chain,
            position,
            args: args.split(' ').map(String::from).collect(),
        };
        let state = installed_state(&[
            rule("PREROUTING", Position::Append, "-p tcp -j ISTIO_INBOUND"),
            rule("PREROUTING", Position::Insert(1), "-i eth1 -j RETURN"),
        ]);
        assert_eq!(
            state,
            "*nat\n:ISTIO_INBOUND - [0:0]\n-A PREROUTING -i eth1 -j RETURN\n-A PREROUTING -p tcp -j ISTIO_INBOUND\nCOMMIT\n"
        );
    }

    #[test]
    fn saves_are_answered_in_turn_and_the_last_one_stays() {
        let fake = FakeNetfilter::default();
        let tool = Tool { family: Family::V4, program: "iptables".into(), variant: Variant::Nft, version: None };
        fake.script_saves(Family::V4, &["one", "two"]);
        let answers: Vec<String> = (0..3).map(|_| fake.save(&tool).unwrap()).collect();
        assert_eq!(answers, ["one", "two", "two"]);
        let legacy = Tool { program: "iptables-legacy".into(), ..tool };
        assert!(fake.save(&legacy).is_err(), "only upstream's stub binaries are installed");
    }
}
