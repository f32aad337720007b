//! Twins: one validator key run by two otherwise honest nodes. Each node keeps
//! its own safety state, so together they propose, notarize and finalize
//! conflicting blocks — the equivocation an operator causes by starting a
//! backup validator while the primary still runs. There is no output
//! rewriting: the simulator starts [`nodes`] nodes for the validator.

use super::Kind;

/// How many nodes run a validator with this behaviour: two for twins, else one.
pub fn nodes(kind: Option<Kind>) -> usize {
    if kind == Some(Kind::Twins) {
        2
    } else {
        1
    }
}
