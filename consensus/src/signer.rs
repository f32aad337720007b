//! The only holder of the signing key, and the "may I sign this?" rules (Spec §Safety rules).
//!
//! Every signature the core makes goes through [`Signer`], which checks the
//! request against [`SafetyState`] and advances the state *before* signing.
//! The core emits the new state as `Output::PersistSafety` ahead of any
//! message carrying the signature, so a restart from the persisted state can
//! never sign something that conflicts with what was sent.

use ed25519_dalek::{Signer as _, SigningKey};

use crate::error::Error;
use crate::types::{ChainId, Digest, Height, ValidatorIndex, View};
use crate::wire::{signing_bytes, Vote, VoteKind};

/// The highest view in which this validator signed each kind of message.
/// View 0 means "never" (no validator signs in the anchor's view 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SafetyState {
    pub proposed: View,
    pub notarized: View,
    pub nullified: View,
    pub finalized: View,
}

impl SafetyState {
    /// Length of [`SafetyState::encode`].
    pub const BYTES: usize = 32;

    /// Four little-endian u64: proposed, notarized, nullified, finalized.
    pub fn encode(&self) -> [u8; Self::BYTES] {
        let mut b = [0; Self::BYTES];
        for (i, v) in [self.proposed, self.notarized, self.nullified, self.finalized].iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.0.to_le_bytes());
        }
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<SafetyState, Error> {
        if bytes.len() != Self::BYTES {
            return Err(Error::SafetyStateLength { got: bytes.len(), want: Self::BYTES });
        }
        let v = |i: usize| View(u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes")));
        Ok(SafetyState { proposed: v(0), notarized: v(1), nullified: v(2), finalized: v(3) })
    }

    /// The view a restarted validator resumes in: the highest it signed in.
    pub fn view(&self) -> View {
        self.proposed.max(self.notarized).max(self.nullified).max(self.finalized)
    }
}

/// Owns the signing key; signs only what [`SafetyState`] allows.
pub struct Signer {
    key: SigningKey,
    index: ValidatorIndex,
    chain_id: ChainId,
    state: SafetyState,
}

impl Signer {
    /// `state` must be the last state the host persisted (or the default for a new validator).
    pub fn new(key: SigningKey, index: ValidatorIndex, chain_id: ChainId, state: SafetyState) -> Signer {
        Signer { key, index, chain_id, state }
    }

    pub fn state(&self) -> SafetyState {
        self.state
    }

    pub fn index(&self) -> ValidatorIndex {
        self.index
    }

    /// Rule S1: at most one proposal per view; views only grow.
    pub(crate) fn propose(&mut self, view: View, height: Height, digest: Digest) -> Option<Vote> {
        (view > self.state.proposed).then(|| {
            self.state.proposed = view;
            self.sign(VoteKind::Propose, view, height, digest)
        })
    }

    /// Rule S2: at most one notarize per view, and none after nullifying that view.
    pub(crate) fn notarize(&mut self, view: View, height: Height, digest: Digest) -> Option<Vote> {
        (view > self.state.notarized && view > self.state.nullified).then(|| {
            self.state.notarized = view;
            self.sign(VoteKind::Notarize, view, height, digest)
        })
    }

    /// Rule S3: nullify a view only if no finalize was signed in it or later.
    /// Nullifies never conflict with each other, so an older view may be nullified
    /// after a newer one (a restarted validator re-enters the view after its anchor).
    pub(crate) fn nullify(&mut self, view: View) -> Option<Vote> {
        (view > self.state.finalized).then(|| {
            self.state.nullified = self.state.nullified.max(view);
            self.sign(VoteKind::Nullify, view, Height(0), [0; 32])
        })
    }

    /// Rule S4: at most one finalize per view, and only in a view above every nullified one.
    pub(crate) fn finalize(&mut self, view: View, height: Height, digest: Digest) -> Option<Vote> {
        (view > self.state.finalized && view > self.state.nullified).then(|| {
            self.state.finalized = view;
            self.sign(VoteKind::Finalize, view, height, digest)
        })
    }

    fn sign(&self, kind: VoteKind, view: View, height: Height, digest: Digest) -> Vote {
        let bytes = signing_bytes(kind, &self.chain_id, view, height, &digest);
        let signature = self.key.sign(&bytes).to_bytes();
        Vote { kind, view, height, digest, signer: self.index, signature }
    }
}

/// Two votes conflict when one honest validator would never sign both (Spec §Evidence):
/// two proposals, notarizes or finalizes in one view for different blocks, or a
/// nullify and a finalize in one view.
pub fn conflicting(a: &Vote, b: &Vote) -> bool {
    use VoteKind::*;
    if a.signer != b.signer || a.view != b.view {
        return false;
    }
    match (a.kind, b.kind) {
        (Propose, Propose) | (Notarize, Notarize) | (Finalize, Finalize) => {
            (a.height, a.digest) != (b.height, b.digest)
        }
        (Nullify, Finalize) | (Finalize, Nullify) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(state: SafetyState) -> Signer {
        Signer::new(SigningKey::from_bytes(&[1; 32]), ValidatorIndex(0), ChainId([0; 32]), state)
    }

    /// Goal: a second notarize in one view is refused, whatever the block.
    #[test]
    fn one_notarize_per_view() {
        let mut s = signer(SafetyState::default());
        assert!(s.notarize(View(3), Height(1), [1; 32]).is_some());
        assert!(s.notarize(View(3), Height(1), [2; 32]).is_none());
        assert!(s.notarize(View(2), Height(1), [2; 32]).is_none());
        assert!(s.notarize(View(4), Height(2), [2; 32]).is_some());
    }

    /// Goal: nullify and finalize never both happen in one view, in either order.
    #[test]
    fn nullify_and_finalize_exclude_each_other() {
        let mut s = signer(SafetyState::default());
        assert!(s.finalize(View(5), Height(1), [1; 32]).is_some());
        assert!(s.nullify(View(5)).is_none());
        assert!(s.nullify(View(6)).is_some());
        assert!(s.nullify(View(6)).is_some(), "re-signing the same nullify is allowed");
        assert!(s.finalize(View(6), Height(2), [1; 32]).is_none());
        assert!(s.nullify(View(9)).is_some() && s.nullify(View(7)).is_some(), "nullifies never conflict");
        assert!(s.finalize(View(7), Height(3), [1; 32]).is_none(), "finalize stays above every nullified view");
        assert!(s.notarize(View(6), Height(2), [1; 32]).is_none(), "no notarize after nullify");
    }

    /// Goal: a signer restored from persisted state refuses everything the old one could have signed.
    #[test]
    fn restored_signer_cannot_conflict() {
        let mut s = signer(SafetyState::default());
        let sent = [
            s.propose(View(2), Height(1), [1; 32]).unwrap(),
            s.notarize(View(2), Height(1), [1; 32]).unwrap(),
            s.finalize(View(2), Height(1), [1; 32]).unwrap(),
            s.nullify(View(3)).unwrap(),
        ];
        let bytes = s.state().encode();
        let mut r = signer(SafetyState::decode(&bytes).unwrap());
        let attempts = [
            r.propose(View(2), Height(1), [9; 32]),
            r.notarize(View(2), Height(1), [9; 32]),
            r.finalize(View(2), Height(1), [9; 32]),
            r.finalize(View(3), Height(2), [9; 32]),
            r.notarize(View(3), Height(2), [9; 32]),
        ];
        for (a, b) in attempts.iter().flatten().flat_map(|a| sent.iter().map(move |b| (a, b))) {
            assert!(!conflicting(a, b), "{a:?} conflicts with {b:?}");
        }
        assert!(attempts.iter().all(Option::is_none));
        assert_eq!(r.state().view(), View(3));
    }

    /// Goal: the safety state codec round-trips and rejects one byte more.
    #[test]
    fn safety_state_codec() {
        let st = SafetyState { proposed: View(1), notarized: View(2), nullified: View(3), finalized: View(4) };
        assert_eq!(SafetyState::decode(&st.encode()), Ok(st));
        let mut long = st.encode().to_vec();
        long.push(0);
        assert_eq!(SafetyState::decode(&long), Err(Error::SafetyStateLength { got: 33, want: 32 }));
    }
}
