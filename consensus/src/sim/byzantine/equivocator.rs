//! An equivocating leader: in its views it sends one block to half the
//! validators and a different block to the other half, notarizing both.

use super::{Behaviour, Ctx};
use crate::{Block, Message, Output, Proposal, VoteKind};

pub struct Equivocator;

impl Behaviour for Equivocator {
    fn name(&self) -> &'static str {
        "equivocator"
    }

    fn on_outputs(&mut self, ctx: &mut Ctx, outputs: Vec<Output>) -> Vec<Output> {
        let mut kept = Vec::new();
        for o in outputs {
            let Output::Broadcast(Message::Propose(p)) = &o else {
                kept.push(o);
                continue;
            };
            let twin = Block { payload: ctx.rng.bytes(8).into(), ..p.block.clone() };
            let digest = twin.hash(&ctx.chain_id);
            let signature = ctx.sign(VoteKind::Propose, twin.view, twin.height, digest).signature;
            let other = Message::Propose(Proposal { block: twin.clone(), signature });
            ctx.split(&o_message(&o), &other);
            let vote = ctx.sign(VoteKind::Notarize, twin.view, twin.height, digest);
            ctx.raw.push((None, Message::Vote(vote).encode()));
        }
        kept
    }
}

fn o_message(o: &Output) -> Message {
    match o {
        Output::Broadcast(m) => m.clone(),
        _ => unreachable!("only broadcasts are split"),
    }
}
