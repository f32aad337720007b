//! The invariants checked after every simulator step. A violation panics with the seed.

use std::collections::BTreeMap;

use crate::sim::CachedVerifier;
use crate::{
    conflicting, Block, Certificate, ChainId, Digest, Height, Message, ValidatorIndex, ValidatorSet, View, Vote,
    VoteKind,
};

/// Tracks what honest validators signed and finalized.
pub struct Checker {
    pub seed: u64,
    pub scenario: String,
    honest: Vec<bool>,
    /// The block the first honest node finalized at each height.
    finalized: BTreeMap<Height, Digest>,
    signed: BTreeMap<(ValidatorIndex, View), Vec<Vote>>,
    /// Its own cache: every signature in a finalization certificate is checked with ed25519 once.
    verifier: CachedVerifier,
}

impl Checker {
    pub fn new(seed: u64, scenario: String, honest: Vec<bool>) -> Checker {
        let verifier = CachedVerifier::default();
        Checker { seed, scenario, honest, finalized: BTreeMap::new(), signed: BTreeMap::new(), verifier }
    }

    pub fn fail(&self, what: String) -> ! {
        panic!("seed={} scenario={}: {what}\nreplay with SIM_SEED={}", self.seed, self.scenario, self.seed)
    }

    pub fn is_honest(&self, v: ValidatorIndex) -> bool {
        self.honest[v.0 as usize]
    }

    /// Invariant: no honest validator signs two conflicting messages.
    pub fn on_sent(&mut self, from: ValidatorIndex, m: &Message, chain_id: &ChainId) {
        if !self.is_honest(from) {
            return;
        }
        let vote = match m {
            Message::Vote(v) => v.clone(),
            Message::Propose(p) => Vote {
                kind: VoteKind::Propose,
                view: p.block.view,
                height: p.block.height,
                digest: p.block.hash(chain_id),
                signer: from,
                signature: p.signature,
            },
            _ => return,
        };
        let seen = self.signed.entry((from, vote.view)).or_default();
        if let Some(c) = seen.iter().find(|s| conflicting(s, &vote)) {
            let c = c.clone();
            self.fail(format!("honest validator {from:?} signed conflicting messages {c:?} and {vote:?}"));
        }
        if !seen.contains(&vote) {
            seen.push(vote);
        }
    }

    /// Invariants: agreement, and every finalized block carries a valid finalization certificate.
    pub fn on_finalized(
        &mut self,
        node: usize,
        block: &Block,
        cert: &Certificate,
        chain_id: &ChainId,
        set: &ValidatorSet,
    ) {
        let digest = block.hash(chain_id);
        if let Some(first) = self.finalized.get(&block.height) {
            if *first != digest {
                self.fail(format!(
                    "disagreement at height {:?}: node {node} finalized {digest:02x?}, another {first:02x?}",
                    block.height
                ));
            }
        } else {
            self.finalized.insert(block.height, digest);
        }
        if cert.kind != VoteKind::Finalize {
            self.fail(format!("node {node} finalized height {:?} with a {:?} certificate", block.height, cert.kind));
        }
        if let Err(e) = cert.verify(chain_id, set, &self.verifier) {
            self.fail(format!("node {node} finalized height {:?} with an invalid certificate: {e}", block.height));
        }
        let covers = if cert.height == block.height { cert.digest == digest } else { cert.height > block.height };
        if !covers {
            self.fail(format!(
                "node {node}: certificate {:?}/{:?} does not cover block at {:?}",
                cert.view, cert.height, block.height
            ));
        }
        if let Some(d) = self.finalized.get(&cert.height) {
            if *d != cert.digest {
                self.fail(format!(
                    "node {node}: certificate for height {:?} names a block other than the finalized one",
                    cert.height
                ));
            }
        }
    }

    /// Invariant: evidence only ever names faulty validators.
    pub fn on_evidence(&self, node: usize, first: &Vote, second: &Vote) {
        if self.is_honest(first.signer) {
            self.fail(format!(
                "node {node} produced evidence against honest validator {:?}: {first:?} / {second:?}",
                first.signer
            ));
        }
        if !conflicting(first, second) {
            self.fail(format!("node {node} produced evidence of non-conflicting votes {first:?} / {second:?}"));
        }
    }

    /// Invariant: honest peers never send anything a core rejects.
    pub fn on_rejected(&self, node: usize, from: ValidatorIndex, error: &crate::Error) {
        if self.is_honest(from) {
            self.fail(format!("node {node} rejected a message from honest validator {from:?}: {error}"));
        }
    }

    pub fn finalized_height(&self) -> Height {
        self.finalized.keys().next_back().copied().unwrap_or_default()
    }
}
