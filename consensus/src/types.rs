//! Protocol numbers and the consensus view of a block: plain, fixed-width, hashable.

use std::ops::Deref;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest: block hashes and payload digests.
pub type Digest = [u8; 32];

/// Identifies one chain; every signature commits to it so votes cannot cross chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainId(pub [u8; 32]);

/// A consensus view (round). Views only grow; view 0 is the anchor's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct View(pub u64);

/// A block height; the genesis or anchor block sits at its own height, children at +1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

/// A validator's position in its [`ValidatorSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValidatorIndex(pub u32);

impl View {
    pub fn next(self) -> View {
        View(self.0 + 1)
    }
}

impl Height {
    pub fn next(self) -> Height {
        Height(self.0 + 1)
    }
}

/// One validator: its key and its voting power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    pub key: VerifyingKey,
    pub power: u64,
}

/// The validators of one epoch, in index order. Supplied by the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    total_power: u64,
}

/// Most validators one set may hold; bounds the certificate bitmap (Spec §Limits).
pub const VALIDATORS_MAX: usize = 1024;

impl ValidatorSet {
    /// Builds a set. Panics on an empty set, a zero power, more than
    /// [`VALIDATORS_MAX`] members or a total power that overflows: the
    /// application supplies the set, so these are broken invariants.
    pub fn new(validators: Vec<Validator>) -> ValidatorSet {
        assert!(!validators.is_empty(), "a validator set needs a member");
        assert!(
            validators.len() <= VALIDATORS_MAX,
            "{} validators exceed the limit {VALIDATORS_MAX}",
            validators.len()
        );
        assert!(validators.iter().all(|v| v.power > 0), "every validator needs positive power");
        let total_power = validators
            .iter()
            .try_fold(0u64, |acc, v| acc.checked_add(v.power))
            .expect("total voting power overflows u64");
        ValidatorSet { validators, total_power }
    }

    pub fn len(&self) -> usize {
        self.validators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    pub fn total_power(&self) -> u64 {
        self.total_power
    }

    pub fn get(&self, index: ValidatorIndex) -> Option<&Validator> {
        self.validators.get(index.0 as usize)
    }

    pub fn iter(&self) -> impl Iterator<Item = (ValidatorIndex, &Validator)> {
        self.validators.iter().enumerate().map(|(i, v)| (ValidatorIndex(i as u32), v))
    }

    /// More than 2/3 of the total weighted power (Spec §Quorums).
    pub fn is_quorum(&self, power: u64) -> bool {
        3 * power as u128 > 2 * self.total_power as u128
    }

    /// The leader of `view`: round-robin over indices (Spec §Leaders).
    pub fn leader(&self, view: View) -> ValidatorIndex {
        ValidatorIndex((view.0 % self.validators.len() as u64) as u32)
    }
}

/// What consensus orders: a block extends `parent`, notarized in `parent_view`.
/// The payload is the application's and opaque here.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    pub height: Height,
    pub view: View,
    pub parent_view: View,
    pub parent: Digest,
    pub payload: Payload,
}

/// A block's payload, shared rather than copied: the core keeps a block in its round, in
/// its block store, in the queue to persist and in the proposal it broadcasts, and hands
/// it to the application to validate — at load each copy was a fresh ~600 KB buffer.
/// Compares and orders as its bytes; it never changes once made.
///
/// It carries its *content digest*, which a block's hash covers in place of the
/// bytes ([`Block::hash`]). `Payload::from(bytes)` takes [`raw_payload_digest`]; an
/// application whose payloads have a cheaper collision-resistant digest (the
/// node's is over its records' ids, which it holds already: hashing each
/// block's whole payload was ~1.5 % of a validator at rate max,
/// docs/BENCHMARKS.md, session 25) builds them with [`Payload::with_digest`] and
/// decodes them with the same function as [`Limits::payload_digest`](crate::Limits),
/// so every node computes it alike from the bytes. It is never read from the wire.
#[derive(Clone, Debug)]
pub struct Payload(Arc<PayloadBytes>);

#[derive(Debug)]
struct PayloadBytes {
    bytes: Vec<u8>,
    content: Digest,
}

/// `SHA-256(b"annal/payload/v1" || bytes)`: the content digest of a payload
/// made with `Payload::from`, and of any the application has no digest of its own for.
pub fn raw_payload_digest(bytes: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(b"annal/payload/v1");
    h.update(bytes);
    h.finalize().into()
}

impl Payload {
    /// `bytes` with the content digest the caller computed for them: it must be
    /// what the function it decodes payloads with ([`Limits::payload_digest`](crate::Limits))
    /// gives for these bytes, or its blocks hash differently on other nodes.
    pub fn with_digest(bytes: Vec<u8>, content: Digest) -> Payload {
        Payload(Arc::new(PayloadBytes { bytes, content }))
    }

    /// What a block's hash covers for this payload.
    pub fn content_digest(&self) -> Digest {
        self.0.content
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Payload {
        let content = raw_payload_digest(&bytes);
        Payload::with_digest(bytes, content)
    }
}

impl Default for Payload {
    fn default() -> Payload {
        Payload::from(Vec::new())
    }
}

impl Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0.bytes
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.0.bytes == other.0.bytes
    }
}

impl Eq for Payload {}

impl PartialOrd for Payload {
    fn partial_cmp(&self, other: &Payload) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Payload {
    fn cmp(&self, other: &Payload) -> std::cmp::Ordering {
        self.0.bytes.cmp(&other.0.bytes)
    }
}

impl std::hash::Hash for Payload {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.bytes.hash(state)
    }
}

impl Block {
    /// `SHA-256(b"annal/block/v2" || chain_id || height || view || parent_view
    /// || parent || content digest)`, integers little-endian: the payload
    /// enters by its content digest ([`Payload`]).
    pub fn hash(&self, chain_id: &ChainId) -> Digest {
        let mut h = Sha256::new();
        h.update(b"annal/block/v2");
        h.update(chain_id.0);
        h.update(self.height.0.to_le_bytes());
        h.update(self.view.0.to_le_bytes());
        h.update(self.parent_view.0.to_le_bytes());
        h.update(self.parent);
        h.update(self.payload.content_digest());
        h.finalize().into()
    }
}

/// The last block a node knows to be final: where a core starts and what it has committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub height: Height,
    pub view: View,
    pub digest: Digest,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(view: u64, payload: &Payload) -> Block {
        Block { height: Height(3), view: View(view), parent_view: View(2), parent: [1; 32], payload: payload.clone() }
    }

    #[test]
    fn a_block_hash_covers_every_header_field_and_the_payload_by_its_content_digest() {
        // Goal: changing any header field, the chain or the payload's bytes changes the hash;
        // equal bytes hash alike; a payload enters only through its content digest.
        let payload: Payload = (0..5_000u32).map(|i| i as u8).collect::<Vec<u8>>().into();
        assert_eq!(payload.content_digest(), raw_payload_digest(&payload));
        let (chain, other_chain) = (ChainId([9; 32]), ChainId([8; 32]));
        let a = block(5, &payload);
        let digest = a.hash(&chain);
        let mut other_bytes = payload.to_vec();
        other_bytes[4_999] ^= 1;
        for (b, c) in [
            (block(6, &payload), chain),
            (Block { parent: [2; 32], ..a.clone() }, chain),
            (Block { parent_view: View(1), ..a.clone() }, chain),
            (Block { height: Height(4), ..a.clone() }, chain),
            (a.clone(), other_chain),
            (block(5, &other_bytes.into()), chain),
        ] {
            assert_ne!(b.hash(&c), digest, "{b:?}");
        }
        let copy: Payload = payload.to_vec().into();
        assert_eq!(copy, payload);
        assert_eq!(block(5, &copy).hash(&chain), digest);
        // The same bytes under another content digest: another block.
        let other_digest = Payload::with_digest(payload.to_vec(), [7; 32]);
        assert_ne!(block(5, &other_digest).hash(&chain), digest);
    }
}
