//! A replayer: behaves honestly but also re-sends old messages it received or sent, to random peers.

use super::{Behaviour, Ctx};
use crate::{Input, Message, Output};

/// Most messages remembered for replay.
const REMEMBERED_MAX: usize = 256;

#[derive(Default)]
pub struct Replayer {
    seen: Vec<Vec<u8>>,
}

impl Replayer {
    fn remember(&mut self, ctx: &mut Ctx, m: &Message) {
        let bytes = m.encode();
        if self.seen.len() < REMEMBERED_MAX {
            self.seen.push(bytes);
        } else {
            let i = ctx.rng.range(0, REMEMBERED_MAX as u64 - 1) as usize;
            self.seen[i] = bytes;
        }
    }
}

impl Behaviour for Replayer {
    fn name(&self) -> &'static str {
        "replayer"
    }

    fn on_input(&mut self, ctx: &mut Ctx, input: &Input) {
        if let Input::Message { message, .. } = input {
            if ctx.rng.chance(200_000) {
                self.remember(ctx, message);
            }
        }
    }

    fn on_outputs(&mut self, ctx: &mut Ctx, outputs: Vec<Output>) -> Vec<Output> {
        for o in &outputs {
            if let Output::Broadcast(m) = o {
                self.remember(ctx, m);
            }
        }
        if !self.seen.is_empty() && ctx.rng.chance(300_000) {
            for _ in 0..3 {
                let m = ctx.rng.pick(&self.seen).clone();
                let to = ctx.random_peer();
                ctx.raw.push((Some(to), m));
            }
        }
        outputs
    }
}
