//! A proposer of invalid blocks: as leader it replaces its block with one the
//! application rejects, or one with a wrong height or an unknown parent.

use super::{Behaviour, Ctx};
use crate::sim::INVALID_PAYLOAD_PREFIX;
use crate::{Block, Height, Message, Output, Proposal, VoteKind};

pub struct InvalidBlocks;

impl Behaviour for InvalidBlocks {
    fn name(&self) -> &'static str {
        "invalid-blocks"
    }

    fn on_outputs(&mut self, ctx: &mut Ctx, outputs: Vec<Output>) -> Vec<Output> {
        let mut kept = Vec::new();
        for o in outputs {
            match &o {
                Output::Broadcast(Message::Propose(p)) => {
                    let mut bad = p.block.clone();
                    match ctx.rng.range(0, 2) {
                        0 => bad.payload = [INVALID_PAYLOAD_PREFIX, &ctx.rng.bytes(4)].concat().into(),
                        1 => bad.height = Height(bad.height.0 + 1),
                        _ => bad = Block { parent: ctx.rng.bytes(32).try_into().expect("32 bytes"), ..bad },
                    }
                    let digest = bad.hash(&ctx.chain_id);
                    let signature = ctx.sign(VoteKind::Propose, bad.view, bad.height, digest).signature;
                    ctx.raw.push((None, Message::Propose(Proposal { block: bad.clone(), signature }).encode()));
                    let vote = ctx.sign(VoteKind::Notarize, bad.view, bad.height, digest);
                    ctx.raw.push((None, Message::Vote(vote).encode()));
                }
                // Its own notarize of the honest block it replaced stays unsent.
                Output::Broadcast(Message::Vote(v))
                    if v.kind == VoteKind::Notarize && ctx.validators.leader(v.view) == ctx.me => {}
                _ => kept.push(o),
            }
        }
        kept
    }
}
