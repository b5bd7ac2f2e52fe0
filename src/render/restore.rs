//! An iptables-restore input as data, and its one renderer.
//!
//! Everything the project feeds to `iptables-restore` (the plan's rules, the `-C` checks, a
//! cleanup, guardrails, a rollback) is built as a [`RestoreInput`]: table blocks of typed
//! [`Op`]s. Only [`RestoreInput::render`] turns it into text, and nothing parses that text back;
//! the flow reasons about what it wrote with the ops themselves.

use std::fmt::Write as _;

use crate::plan::{Position, Table};

/// One line of a restore input. `spec` is a rule's match and target tokens, space-separated
/// (as `-save` prints them, or as the plan renders them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `-N CHAIN`
    NewChain(String),
    /// `-A CHAIN SPEC` or `-I CHAIN N SPEC`
    Add { chain: String, position: Position, spec: String },
    /// `-D CHAIN SPEC`: the first rule of the chain that matches.
    Delete { chain: String, spec: String },
    /// `-C CHAIN SPEC`: fails the input unless the rule exists.
    Check { chain: String, spec: String },
    /// `-F CHAIN`
    Flush(String),
    /// `-X CHAIN`
    DeleteChain(String),
}

impl Op {
    /// The chain the op acts on.
    pub fn chain(&self) -> &str {
        match self {
            Op::NewChain(chain) | Op::Flush(chain) | Op::DeleteChain(chain) => chain,
            Op::Add { chain, .. } | Op::Delete { chain, .. } | Op::Check { chain, .. } => chain,
        }
    }

    /// The op as one restore line, without its newline (as `iptables -S` lists a rule).
    pub fn line(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out.truncate(out.trim_end_matches('\n').len());
        out
    }

    fn write(&self, out: &mut String) {
        let (verb, chain, spec) = match self {
            Op::NewChain(chain) => ("-N", chain, ""),
            Op::Add { chain, position: Position::Append, spec } => ("-A", chain, spec.as_str()),
            Op::Add { chain, position: Position::Insert(at), spec } => {
                let _ = write!(out, "-I {chain} {at}");
                if !spec.is_empty() {
                    out.push(' ');
                    out.push_str(spec);
                }
                out.push('\n');
                return;
            }
            Op::Delete { chain, spec } => ("-D", chain, spec.as_str()),
            Op::Check { chain, spec } => ("-C", chain, spec.as_str()),
            Op::Flush(chain) => ("-F", chain, ""),
            Op::DeleteChain(chain) => ("-X", chain, ""),
        };
        out.push_str(verb);
        out.push(' ');
        out.push_str(chain);
        if !spec.is_empty() {
            out.push(' ');
            out.push_str(spec);
        }
        out.push('\n');
    }
}

/// Table blocks, each committed atomically by `iptables-restore`, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreInput {
    blocks: Vec<(Table, Vec<Op>)>,
}

impl RestoreInput {
    /// The ops of `table`'s first block, created at the end when there is none.
    pub fn table(&mut self, table: Table) -> &mut Vec<Op> {
        let index = match self.blocks.iter().position(|(t, _)| *t == table) {
            Some(index) => index,
            None => {
                self.blocks.push((table, Vec::new()));
                self.blocks.len() - 1
            }
        };
        &mut self.blocks[index].1
    }

    /// Appends a block of its own, committed separately (guardrails before and after the rest).
    pub fn push_block(&mut self, table: Table, ops: Vec<Op>) {
        if !ops.is_empty() {
            self.blocks.push((table, ops));
        }
    }

    /// The blocks in order (a table may have more than one).
    pub fn blocks(&self) -> impl Iterator<Item = (Table, &[Op])> {
        self.blocks.iter().map(|(table, ops)| (*table, ops.as_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.iter().all(|(_, ops)| ops.is_empty())
    }

    /// The restore text: `* table`, the ops, `COMMIT` per non-empty block.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (table, ops) in self.blocks.iter().filter(|(_, ops)| !ops.is_empty()) {
            out.push_str("* ");
            out.push_str(table.iptables_name());
            out.push('\n');
            for op in ops {
                op.write(&mut out);
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

/// The table an iptables name stands for, among the four the project writes.
pub fn table_named(name: &str) -> Option<Table> {
    [Table::Filter, Table::Mangle, Table::Nat, Table::Raw].into_iter().find(|table| table.iptables_name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_op_as_iptables_restore_reads_it() {
        let mut input = RestoreInput::default();
        let add = |position, spec: &str| Op::Add { chain: "OUTPUT".into(), position, spec: spec.into() };
        input.table(Table::Nat).extend([
            Op::NewChain("ISTIO_X".into()),
            add(Position::Append, "-j ISTIO_X"),
            add(Position::Insert(1), "-p tcp -j RETURN"),
            Op::Check { chain: "ISTIO_X".into(), spec: "-j RETURN".into() },
            Op::Delete { chain: "OUTPUT".into(), spec: "-j ISTIO_X".into() },
            Op::Flush("ISTIO_X".into()),
            Op::DeleteChain("ISTIO_X".into()),
        ]);
        input.push_block(Table::Filter, vec![add(Position::Insert(1), "-p udp -j DROP")]);
        input.push_block(Table::Raw, Vec::new());
        assert_eq!(
            input.render(),
            "* nat\n-N ISTIO_X\n-A OUTPUT -j ISTIO_X\n-I OUTPUT 1 -p tcp -j RETURN\n-C ISTIO_X -j RETURN\n\
             -D OUTPUT -j ISTIO_X\n-F ISTIO_X\n-X ISTIO_X\nCOMMIT\n* filter\n-I OUTPUT 1 -p udp -j DROP\nCOMMIT\n"
        );
        assert!(RestoreInput::default().is_empty());
        assert_eq!(table_named("mangle"), Some(Table::Mangle));
        assert_eq!(table_named("security"), None);
    }
}
