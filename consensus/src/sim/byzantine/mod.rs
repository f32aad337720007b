//! Byzantine validators, one behaviour per file. Each wraps an honest core:
//! it sees the core's inputs and rewrites its outputs, signing whatever it
//! likes with the raw key (bypassing [`crate::Signer`]).

use ed25519_dalek::{Signer as _, SigningKey};

use crate::sim::rng::Rng;
use crate::{
    signing_bytes, ChainId, Digest, Height, Input, Message, Output, ValidatorIndex, ValidatorSet, View, Vote, VoteKind,
};

mod double_voter;
mod equivocator;
mod garbage;
mod invalid_blocks;
mod replayer;
mod silent;
pub mod twins;

pub use double_voter::DoubleVoter;
pub use equivocator::Equivocator;
pub use garbage::Garbage;
pub use invalid_blocks::InvalidBlocks;
pub use replayer::Replayer;
pub use silent::Silent;

/// What a behaviour may use and do.
pub struct Ctx<'a> {
    pub rng: &'a mut Rng,
    pub key: &'a SigningKey,
    pub chain_id: ChainId,
    pub me: ValidatorIndex,
    pub validators: &'a ValidatorSet,
    /// Raw bytes to send: to one validator, or to all when `None`.
    pub raw: Vec<(Option<ValidatorIndex>, Vec<u8>)>,
}

impl Ctx<'_> {
    /// Signs anything, conflicting or not.
    pub fn sign(&self, kind: VoteKind, view: View, height: Height, digest: Digest) -> Vote {
        let signature = self.key.sign(&signing_bytes(kind, &self.chain_id, view, height, &digest)).to_bytes();
        Vote { kind, view, height, digest, signer: self.me, signature }
    }

    /// Sends `a` to a random half of the other validators and `b` to the rest.
    pub fn split(&mut self, a: &Message, b: &Message) {
        let (a, b) = (a.encode(), b.encode());
        for (i, _) in self.validators.iter() {
            if i != self.me {
                let m = if self.rng.chance(500_000) { a.clone() } else { b.clone() };
                self.raw.push((Some(i), m));
            }
        }
    }

    pub fn random_peer(&mut self) -> ValidatorIndex {
        ValidatorIndex(self.rng.range(0, self.validators.len() as u64 - 1) as u32)
    }
}

/// A Byzantine strategy.
pub trait Behaviour: Send {
    fn name(&self) -> &'static str;
    fn on_input(&mut self, _ctx: &mut Ctx, _input: &Input) {}
    /// Rewrites the honest core's outputs; may also push raw bytes to `ctx.raw`.
    fn on_outputs(&mut self, ctx: &mut Ctx, outputs: Vec<Output>) -> Vec<Output>;
}

/// The behaviours a scenario can pick by name; twins are set up by the simulator itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Equivocator,
    DoubleVoter,
    Silent,
    Replayer,
    Garbage,
    InvalidBlocks,
    Twins,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Equivocator,
        Kind::DoubleVoter,
        Kind::Silent,
        Kind::Replayer,
        Kind::Garbage,
        Kind::InvalidBlocks,
        Kind::Twins,
    ];

    /// The behaviour, or `None` for twins (two honest cores sharing one key, see [`twins`]).
    pub fn build(self) -> Option<Box<dyn Behaviour>> {
        match self {
            Kind::Equivocator => Some(Box::new(Equivocator)),
            Kind::DoubleVoter => Some(Box::new(DoubleVoter)),
            Kind::Silent => Some(Box::new(Silent)),
            Kind::Replayer => Some(Box::new(Replayer::default())),
            Kind::Garbage => Some(Box::new(Garbage)),
            Kind::InvalidBlocks => Some(Box::new(InvalidBlocks)),
            Kind::Twins => None,
        }
    }
}
