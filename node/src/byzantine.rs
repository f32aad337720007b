//! A test-only Byzantine validator (issue 6 §2): the config key
//! `[testing] byzantine = [...]` makes this node attack the others over the
//! real network, besides taking part honestly. Never set it in production:
//! the node logs a warning at every start when it is set.
//!
//! Behaviours:
//! - `equivocate`: each tick, two notarize votes for the current view on two
//!   different made-up blocks, signed with the consensus key directly
//!   (bypassing the `Signer`, which forbids exactly this);
//! - `replay`: re-publishes consensus messages it received long ago;
//! - `malformed`: publishes garbage on both topics;
//! - `oversized`: sends sync requests four times the honest frame limit
//!   (this node's own limit is raised so the frame leaves);
//! - `history-flood`: asks every validator peer, over [`HISTORY_FLOOD`]
//!   streams, for the whole chain from height 1 (half of them) and for the
//!   block at this node's tip when the flood began, by digest (the other
//!   half), each asking again [`HISTORY_FLOOD_GAP`] after its last answer or
//!   refusal, for good.
//!
//! Honest validators must stay safe and live, refuse every such message, and
//! record the equivocations as evidence (`/v1/status` `evidence`, metric
//! `annal_evidence_total`); they answer the flood of history requests off
//! their loop, one run per peer at a time (`annal_history_requests_refused_total`).

use std::collections::{BTreeSet, VecDeque};

use annal_consensus::{signing_bytes, ChainId, Height, Message, ValidatorIndex, View, Vote, VoteKind};
use annal_ledger::codec;
use ed25519_dalek::{Signer as _, SigningKey};
use sha2::{Digest as _, Sha256};

use crate::net::{PeerId, Topic};
use crate::wire::{Envelope, SyncRequest};

/// The behaviours a test can turn on.
pub const BEHAVIOURS: [&str; 5] = ["equivocate", "replay", "malformed", "oversized", "history-flood"];

/// Streams `history-flood` keeps asking each peer on (the request protocol's default
/// `limits.sync_streams_max` lets a peer hold 32 open).
pub const HISTORY_FLOOD: usize = 32;
/// How long each of those streams waits after an answer or a refusal before asking again.
pub const HISTORY_FLOOD_GAP: std::time::Duration = std::time::Duration::from_millis(100);

pub struct Byzantine {
    behaviours: Vec<String>,
    key: SigningKey,
    index: u32,
    chain: ChainId,
    /// Consensus envelopes received, oldest first, to replay.
    heard: VecDeque<Vec<u8>>,
    counter: u64,
    oversized_bytes: usize,
    /// Peers `history-flood` floods already.
    flooded: BTreeSet<PeerId>,
}

impl Byzantine {
    /// `honest_limit`: the request frame limit honest validators keep.
    pub fn new(behaviours: Vec<String>, seed: [u8; 32], index: u32, chain: ChainId, honest_limit: usize) -> Byzantine {
        Byzantine {
            behaviours,
            key: SigningKey::from_bytes(&seed),
            index,
            chain,
            heard: VecDeque::new(),
            counter: 0,
            oversized_bytes: honest_limit * 4,
            flooded: BTreeSet::new(),
        }
    }

    fn does(&self, b: &str) -> bool {
        self.behaviours.iter().any(|x| x == b)
    }

    /// Remembers a consensus envelope to replay later.
    pub fn heard(&mut self, data: &[u8]) {
        if self.does("replay") {
            self.heard.push_back(data.to_vec());
            if self.heard.len() > 512 {
                self.heard.pop_front();
            }
        }
    }

    /// This tick's attacks, given the view the node is in and the height it would vote at.
    pub fn attacks(&mut self, view: u64, height: u64) -> Vec<(Topic, Vec<u8>)> {
        self.counter += 1;
        let mut out = Vec::new();
        // Junk and the rest go out on alternate ticks: gossipsub may pack one
        // tick's messages into one frame, and an oversized frame is refused whole.
        let junk_tick = self.counter.is_multiple_of(2);
        if self.does("equivocate") && !junk_tick {
            for fork in 0..2u8 {
                let digest: [u8; 32] = Sha256::digest([&self.counter.to_le_bytes()[..], &[fork]].concat()).into();
                let bytes = signing_bytes(VoteKind::Notarize, &self.chain, View(view), Height(height), &digest);
                let vote = Vote {
                    kind: VoteKind::Notarize,
                    view: View(view),
                    height: Height(height),
                    digest,
                    signer: ValidatorIndex(self.index),
                    signature: self.key.sign(&bytes).to_bytes(),
                };
                out.push(self.consensus(Message::Vote(vote).encode()));
            }
        }
        if self.does("replay") && !junk_tick && self.heard.len() > 64 {
            // Messages heard 64 or more envelopes ago, byte for byte.
            let old = self.heard[(self.counter as usize) % (self.heard.len() - 64)].clone();
            out.push((Topic::Consensus, old));
        }
        if self.does("malformed") && junk_tick {
            let junk: Vec<u8> = Sha256::digest(self.counter.to_le_bytes()).to_vec();
            out.push((Topic::Consensus, junk.clone()));
            out.push((Topic::Records, junk));
            // A well-formed envelope around a message that does not decode.
            out.push(self.consensus(vec![0xff; 40]));
        }
        out
    }

    /// An oversized sync request for this tick, if `oversized` is on: a frame
    /// far past every peer's request limit (this node's own limit is raised so
    /// it leaves). Receivers must refuse it at the frame and carry on.
    pub fn oversized_request(&self) -> Option<Vec<u8>> {
        (self.does("oversized") && self.counter.is_multiple_of(2)).then(|| vec![0xaa; self.oversized_bytes])
    }

    /// The peers among `connected` that `history-flood` should begin flooding now (each
    /// once), and the requests it keeps sending each, one per stream: the whole chain
    /// from height 1 (as much as an answer may hold), and the block `tip` by digest.
    pub fn history_flood(&mut self, connected: &[PeerId], tip: [u8; 32]) -> (Vec<PeerId>, Vec<Vec<u8>>) {
        if !self.does("history-flood") {
            return (vec![], vec![]);
        }
        let run = codec::encode(&SyncRequest::Blocks { from: 1, max: u32::MAX });
        let single = codec::encode(&SyncRequest::Block { digest: tip });
        let requests = (0..HISTORY_FLOOD).map(|i| if i % 2 == 0 { run.clone() } else { single.clone() }).collect();
        let new = connected.iter().filter(|p| self.flooded.insert(**p)).copied().collect();
        (new, requests)
    }

    fn consensus(&self, message: Vec<u8>) -> (Topic, Vec<u8>) {
        let env = Envelope::Consensus { seq: u64::MAX - self.counter * 8 - 1, message };
        (Topic::Consensus, codec::encode(&env))
    }
}
