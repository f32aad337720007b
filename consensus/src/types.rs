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
/// Compares, orders and hashes as its bytes; it never changes once made.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Payload(Arc<Vec<u8>>);

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Payload {
        Payload(Arc::new(bytes))
    }
}

impl Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Block {
    /// `SHA-256(b"annal/block/v1" || chain_id || canonical bytes)`.
    pub fn hash(&self, chain_id: &ChainId) -> Digest {
        let mut h = Sha256::new();
        h.update(b"annal/block/v1");
        h.update(chain_id.0);
        h.update(self.height.0.to_le_bytes());
        h.update(self.view.0.to_le_bytes());
        h.update(self.parent_view.0.to_le_bytes());
        h.update(self.parent);
        h.update((self.payload.len() as u32).to_le_bytes());
        h.update(&self.payload[..]);
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
