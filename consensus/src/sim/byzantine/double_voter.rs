//! A double voter: every notarize and finalize it sends is shadowed by a
//! conflicting one for a random block, and every nullify by a finalize of the same view.

use super::{Behaviour, Ctx};
use crate::{Message, Output, VoteKind};

pub struct DoubleVoter;

impl Behaviour for DoubleVoter {
    fn name(&self) -> &'static str {
        "double-voter"
    }

    fn on_outputs(&mut self, ctx: &mut Ctx, outputs: Vec<Output>) -> Vec<Output> {
        let mut kept = Vec::new();
        for o in outputs {
            if let Output::Broadcast(Message::Vote(v)) = &o {
                let shadow = match v.kind {
                    VoteKind::Nullify => ctx.sign(VoteKind::Finalize, v.view, v.height, [7; 32]),
                    kind => {
                        let digest = ctx.rng.bytes(32).try_into().expect("32 bytes");
                        ctx.sign(kind, v.view, v.height, digest)
                    }
                };
                ctx.split(&Message::Vote(v.clone()), &Message::Vote(shadow));
                continue;
            }
            kept.push(o);
        }
        kept
    }
}
