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
    /// Per validator identity (a key; its index may differ from epoch to epoch).
    honest: Vec<bool>,
    /// The block the first honest node finalized at each height.
    finalized: BTreeMap<Height, Digest>,
    /// Blocks past an epoch's last height that a finalization names (never committed), by epoch.
    finalized_past_end: BTreeMap<(u64, Height), Digest>,
    /// What each honest identity signed, by epoch and view (each epoch signs under its own chain id).
    signed: BTreeMap<(u64, usize, View), Vec<Vote>>,
    /// Its own cache: every signature in a finalization certificate is checked with ed25519 once.
    verifier: CachedVerifier,
}

impl Checker {
    pub fn new(seed: u64, scenario: String, honest: Vec<bool>) -> Checker {
        let verifier = CachedVerifier::default();
        Checker {
            seed,
            scenario,
            honest,
            finalized: BTreeMap::new(),
            finalized_past_end: BTreeMap::new(),
            signed: BTreeMap::new(),
            verifier,
        }
    }

    pub fn fail(&self, what: String) -> ! {
        panic!("seed={} scenario={}: {what}\nreplay with SIM_SEED={}", self.seed, self.scenario, self.seed)
    }

    /// Whether validator identity `identity` is honest.
    pub fn is_honest(&self, identity: usize) -> bool {
        self.honest[identity]
    }

    /// Invariant: no honest validator signs two conflicting messages within an epoch.
    /// `from` is the identity that signed, `index` its index in `epoch`'s set.
    pub fn on_sent(&mut self, epoch: u64, from: usize, index: ValidatorIndex, m: &Message, chain_id: &ChainId) {
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
                signer: index,
                signature: p.signature,
            },
            _ => return,
        };
        let seen = self.signed.entry((epoch, from, vote.view)).or_default();
        if let Some(c) = seen.iter().find(|s| conflicting(s, &vote)) {
            let c = c.clone();
            self.fail(format!(
                "honest validator {from} (index {index:?}) signed conflicting messages in epoch {epoch}: {c:?} and {vote:?}"
            ));
        }
        if !seen.contains(&vote) {
            seen.push(vote);
        }
    }

    /// Invariants: agreement across epochs, and every finalized block carries a finalization
    /// certificate valid under its epoch's set and chain id. `last` is the epoch's last height:
    /// a certificate above it names an empty block that only carries finality back (Spec §Epochs).
    #[allow(clippy::too_many_arguments)]
    pub fn on_finalized(
        &mut self,
        node: usize,
        block: &Block,
        cert: &Certificate,
        epoch: u64,
        last: Height,
        chain_id: &ChainId,
        set: &ValidatorSet,
    ) {
        if block.height > last {
            self.fail(format!(
                "node {node} committed height {:?}, past its epoch's last height {last:?}",
                block.height
            ));
        }
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
        let named = *if cert.height > last {
            self.finalized_past_end.entry((epoch, cert.height)).or_insert(cert.digest)
        } else {
            self.finalized.entry(cert.height).or_insert(cert.digest)
        };
        if named != cert.digest {
            self.fail(format!(
                "node {node}: certificate for height {:?} names a block other than the finalized one",
                cert.height
            ));
        }
    }

    /// Invariant: evidence only ever names faulty validators (`signer` is the identity of `first.signer`).
    pub fn on_evidence(&self, node: usize, signer: usize, first: &Vote, second: &Vote) {
        if self.is_honest(signer) {
            self.fail(format!(
                "node {node} produced evidence against honest validator {signer} (index {:?}): {first:?} / {second:?}",
                first.signer
            ));
        }
        if !conflicting(first, second) {
            self.fail(format!("node {node} produced evidence of non-conflicting votes {first:?} / {second:?}"));
        }
    }

    /// Invariant: honest peers never send anything a core of their epoch rejects (`from` is an identity).
    pub fn on_rejected(&self, node: usize, from: usize, error: &crate::Error) {
        if self.is_honest(from) {
            self.fail(format!("node {node} rejected a message from honest validator {from}: {error}"));
        }
    }

    pub fn finalized_height(&self) -> Height {
        self.finalized.keys().next_back().copied().unwrap_or_default()
    }
}
