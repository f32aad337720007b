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
use crate::wire::{signing_bytes, Certificate, Limits, Message, Vote, VoteKind};

/// The highest view in which this validator signed each kind of message, the
/// block of its last notarize and finalize (so a restarted validator can re-send
/// those votes: re-signing identical bytes conflicts with nothing), and the
/// certificate its last finalize rests on. View 0 means "never" (no validator
/// signs in the anchor's view 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SafetyState {
    pub proposed: View,
    pub notarized: View,
    pub notarized_block: (Height, Digest),
    pub nullified: View,
    pub finalized: View,
    pub finalized_block: (Height, Digest),
    /// The notarization (or finalization) of `finalized_block` in view `finalized` that
    /// this validator saw before it sent `finalize`. It decides nothing about what may be
    /// signed; it is kept for liveness (Spec R10): S3 forbids this validator to nullify
    /// that view ever again, so after a crash it must still be able to prove the view
    /// certified, or no certificate for the view may ever form again.
    pub finalized_justification: Option<Certificate>,
}

impl SafetyState {
    /// Length of the fixed part of [`SafetyState::encode`]; the justification follows it.
    pub const FIXED_BYTES: usize = 112;

    /// Little-endian u64s and raw digests, in field order: proposed, notarized,
    /// notarized height, notarized digest, nullified, finalized, finalized height,
    /// finalized digest (112 bytes); then, if present, the justification in its wire
    /// encoding ([`Message::Certificate`], tag included).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::FIXED_BYTES);
        b.extend_from_slice(&self.proposed.0.to_le_bytes());
        b.extend_from_slice(&self.notarized.0.to_le_bytes());
        b.extend_from_slice(&self.notarized_block.0 .0.to_le_bytes());
        b.extend_from_slice(&self.notarized_block.1);
        b.extend_from_slice(&self.nullified.0.to_le_bytes());
        b.extend_from_slice(&self.finalized.0.to_le_bytes());
        b.extend_from_slice(&self.finalized_block.0 .0.to_le_bytes());
        b.extend_from_slice(&self.finalized_block.1);
        if let Some(c) = &self.finalized_justification {
            b.extend_from_slice(&Message::Certificate(c.clone()).encode());
        }
        b
    }

    /// Decodes [`SafetyState::encode`]; a state of exactly 112 bytes has no justification.
    pub fn decode(bytes: &[u8]) -> Result<SafetyState, Error> {
        if bytes.len() < Self::FIXED_BYTES {
            return Err(Error::SafetyStateLength { got: bytes.len(), want: Self::FIXED_BYTES });
        }
        let u = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let d = |at: usize| -> Digest { bytes[at..at + 32].try_into().expect("32 bytes") };
        let mut state = SafetyState {
            proposed: View(u(0)),
            notarized: View(u(8)),
            notarized_block: (Height(u(16)), d(24)),
            nullified: View(u(56)),
            finalized: View(u(64)),
            finalized_block: (Height(u(72)), d(80)),
            finalized_justification: None,
        };
        let rest = &bytes[Self::FIXED_BYTES..];
        if !rest.is_empty() {
            let c = match Message::decode(rest, &Limits::default())? {
                Message::Certificate(c) => c,
                _ => return Err(Error::NonCanonical { field: "safety state justification" }),
            };
            let justifies = matches!(c.kind, VoteKind::Notarize | VoteKind::Finalize)
                && (c.view, c.height, c.digest) == (state.finalized, state.finalized_block.0, state.finalized_block.1);
            if !justifies {
                return Err(Error::SafetyStateJustification {
                    kind: c.kind.name(),
                    view: c.view,
                    height: c.height,
                    finalized: state.finalized,
                });
            }
            state.finalized_justification = Some(c);
        }
        Ok(state)
    }

    /// The highest view this validator signed anything in.
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

    pub fn state(&self) -> &SafetyState {
        &self.state
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
            self.state.notarized_block = (height, digest);
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
    /// `justification` is the notarization (or finalization) of the block being finalized;
    /// the state keeps it with the vote (see [`SafetyState::finalized_justification`]).
    pub(crate) fn finalize(&mut self, justification: &Certificate) -> Option<Vote> {
        let (view, height, digest) = (justification.view, justification.height, justification.digest);
        assert!(
            matches!(justification.kind, VoteKind::Notarize | VoteKind::Finalize),
            "a finalize rests on a notarization or finalization, not a {} certificate",
            justification.kind.name()
        );
        (view > self.state.finalized && view > self.state.nullified).then(|| {
            self.state.finalized = view;
            self.state.finalized_block = (height, digest);
            self.state.finalized_justification = Some(justification.clone());
            self.sign(VoteKind::Finalize, view, height, digest)
        })
    }

    /// The last notarize and finalize again, for re-sending (Spec R10): the same
    /// subjects, so the same bytes and signatures; they conflict with nothing.
    pub(crate) fn last_votes(&self) -> [Option<Vote>; 2] {
        let st = &self.state;
        let (nh, nd) = st.notarized_block;
        let (fh, fd) = st.finalized_block;
        [
            (st.notarized > View(0)).then(|| self.sign(VoteKind::Notarize, st.notarized, nh, nd)),
            (st.finalized > View(0)).then(|| self.sign(VoteKind::Finalize, st.finalized, fh, fd)),
        ]
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

    /// A notarization to finalize on; the signer keeps it and does not check its signatures.
    fn notarization(view: u64, height: u64, digest: Digest) -> Certificate {
        let kind = VoteKind::Notarize;
        Certificate {
            kind,
            view: View(view),
            height: Height(height),
            digest,
            signers: vec![1],
            signatures: vec![[7; 64]],
        }
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
        assert!(s.finalize(&notarization(5, 1, [1; 32])).is_some());
        assert!(s.nullify(View(5)).is_none());
        assert!(s.nullify(View(6)).is_some());
        assert!(s.nullify(View(6)).is_some(), "re-signing the same nullify is allowed");
        assert!(s.finalize(&notarization(6, 2, [1; 32])).is_none());
        assert!(s.nullify(View(9)).is_some() && s.nullify(View(7)).is_some(), "nullifies never conflict");
        assert!(s.finalize(&notarization(7, 3, [1; 32])).is_none(), "finalize stays above every nullified view");
        assert!(s.notarize(View(6), Height(2), [1; 32]).is_none(), "no notarize after nullify");
    }

    /// Goal: a signer restored from persisted state refuses everything the old one could have signed.
    #[test]
    fn restored_signer_cannot_conflict() {
        let mut s = signer(SafetyState::default());
        let sent = [
            s.propose(View(2), Height(1), [1; 32]).unwrap(),
            s.notarize(View(2), Height(1), [1; 32]).unwrap(),
            s.finalize(&notarization(2, 1, [1; 32])).unwrap(),
            s.nullify(View(3)).unwrap(),
        ];
        let bytes = s.state().encode();
        let mut r = signer(SafetyState::decode(&bytes).unwrap());
        let attempts = [
            r.propose(View(2), Height(1), [9; 32]),
            r.notarize(View(2), Height(1), [9; 32]),
            r.finalize(&notarization(2, 1, [9; 32])),
            r.finalize(&notarization(3, 2, [9; 32])),
            r.notarize(View(3), Height(2), [9; 32]),
        ];
        for (a, b) in attempts.iter().flatten().flat_map(|a| sent.iter().map(move |b| (a, b))) {
            assert!(!conflicting(a, b), "{a:?} conflicts with {b:?}");
        }
        assert!(attempts.iter().all(Option::is_none));
        assert_eq!(r.state().view(), View(3));
        assert_eq!(
            r.last_votes(),
            [Some(sent[1].clone()), Some(sent[2].clone())],
            "the last votes re-sign to the same bytes"
        );
    }

    /// Goal: the safety state codec round-trips with and without a justification, reads a
    /// 112-byte state as one without, and rejects a byte less, a byte more and a justification
    /// for another view or block.
    #[test]
    fn safety_state_codec() {
        let mut st = SafetyState {
            proposed: View(1),
            notarized: View(2),
            notarized_block: (Height(5), [6; 32]),
            nullified: View(3),
            finalized: View(4),
            finalized_block: (Height(7), [8; 32]),
            finalized_justification: None,
        };
        assert_eq!(st.encode().len(), SafetyState::FIXED_BYTES);
        assert_eq!(SafetyState::decode(&st.encode()), Ok(st.clone()));
        assert_eq!(SafetyState::decode(&st.encode()[..111]), Err(Error::SafetyStateLength { got: 111, want: 112 }));
        st.finalized_justification = Some(notarization(4, 7, [8; 32]));
        assert_eq!(SafetyState::decode(&st.encode()), Ok(st.clone()));
        let mut long = st.encode();
        long.push(0);
        assert_eq!(SafetyState::decode(&long), Err(Error::TrailingBytes { kind: "certificate", extra: 1 }));
        let mut other = st.clone();
        other.finalized_justification = Some(notarization(4, 7, [9; 32]));
        assert!(matches!(SafetyState::decode(&other.encode()), Err(Error::SafetyStateJustification { .. })));
    }
}
