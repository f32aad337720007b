//! Signature checks and certificates: assembling one from votes and verifying one
//! against a validator set (Spec §Quorums, §Certificates).

use ed25519_dalek::{Signature, VerifyingKey};

use crate::error::Error;
use crate::types::{ChainId, Digest, Height, ValidatorIndex, ValidatorSet, View};
use crate::wire::{signing_bytes, Certificate, Vote, VoteKind};

/// Checks one ed25519 signature. The core calls nothing else to verify, so a
/// host may cache results; the simulator shares one cache across nodes.
pub trait Verifier: Send {
    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> bool;
}

/// Strict ed25519 verification (rejects small-order keys and malleable signatures).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ed25519Verifier;

impl Verifier for Ed25519Verifier {
    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> bool {
        key.verify_strict(message, &Signature::from_bytes(signature)).is_ok()
    }
}

/// The vote a proposal's signature is (Spec R2): `view`'s leader proposing
/// `digest` at `height`. [`verify_vote`] checks it like any other.
pub fn proposal_vote(set: &ValidatorSet, view: View, height: Height, digest: Digest, signature: [u8; 64]) -> Vote {
    Vote { kind: VoteKind::Propose, view, height, digest, signer: set.leader(view), signature }
}

/// Checks a vote's signer and signature.
pub fn verify_vote(vote: &Vote, chain_id: &ChainId, set: &ValidatorSet, verifier: &dyn Verifier) -> Result<(), Error> {
    let validator =
        set.get(vote.signer).ok_or(Error::SignerOutOfRange { signer: vote.signer, validators: set.len() })?;
    let bytes = signing_bytes(vote.kind, chain_id, vote.view, vote.height, &vote.digest);
    if verifier.verify(&validator.key, &bytes, &vote.signature) {
        Ok(())
    } else {
        Err(Error::BadSignature { signer: vote.signer, kind: vote.kind.name(), view: vote.view })
    }
}

impl Certificate {
    /// The signers named by the bitmap, in increasing order.
    pub fn signer_indices(&self) -> Vec<ValidatorIndex> {
        let mut out = Vec::new();
        for (byte_index, byte) in self.signers.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    out.push(ValidatorIndex((byte_index * 8 + bit) as u32));
                }
            }
        }
        out
    }

    /// Builds a certificate from votes on one subject; `votes` must be sorted by signer
    /// and all carry the same `(kind, view, height, digest)`.
    pub fn assemble<'a>(set: &ValidatorSet, votes: impl Iterator<Item = &'a Vote>) -> Option<Certificate> {
        let mut signers = vec![0u8; set.len().div_ceil(8)];
        let mut signatures = Vec::new();
        let mut first: Option<&Vote> = None;
        for v in votes {
            let f = *first.get_or_insert(v);
            assert!(
                (v.kind, v.view, v.height, v.digest) == (f.kind, f.view, f.height, f.digest),
                "votes on two subjects"
            );
            let i = v.signer.0 as usize;
            signers[i / 8] |= 1 << (i % 8);
            signatures.push(v.signature);
        }
        let f = first?;
        Some(Certificate { kind: f.kind, view: f.view, height: f.height, digest: f.digest, signers, signatures })
    }

    /// Verifies that more than 2/3 of `set`'s weighted power signed this
    /// certificate's subject under `chain_id` (Spec §Certificates). This is the
    /// check a node runs on a stored finalization certificate.
    pub fn verify(&self, chain_id: &ChainId, set: &ValidatorSet, verifier: &dyn Verifier) -> Result<(), Error> {
        let want = set.len().div_ceil(8);
        if self.signers.len() != want {
            return Err(Error::BitmapLength { got: self.signers.len(), want, validators: set.len() });
        }
        let signers = self.signer_indices();
        if signers.len() != self.signatures.len() {
            return Err(Error::SignatureCount { got: self.signatures.len(), want: signers.len() });
        }
        let mut power = 0u64;
        for s in &signers {
            let v = set.get(*s).ok_or(Error::SignerOutOfRange { signer: *s, validators: set.len() })?;
            power += v.power;
        }
        if !set.is_quorum(power) {
            return Err(Error::QuorumNotReached {
                view: self.view,
                height: self.height,
                power,
                total: set.total_power(),
            });
        }
        let bytes = signing_bytes(self.kind, chain_id, self.view, self.height, &self.digest);
        for (s, sig) in signers.iter().zip(&self.signatures) {
            let key = &set.get(*s).expect("checked above").key;
            if !verifier.verify(key, &bytes, sig) {
                return Err(Error::BadSignature { signer: *s, kind: self.kind.name(), view: self.view });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::{SafetyState, Signer};
    use crate::types::{Height, Validator, View};
    use crate::wire::VoteKind;
    use ed25519_dalek::SigningKey;

    fn setup(powers: &[u64]) -> (ValidatorSet, Vec<Signer>) {
        let keys: Vec<SigningKey> = (0..powers.len()).map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32])).collect();
        let set = ValidatorSet::new(
            keys.iter().zip(powers).map(|(k, &power)| Validator { key: k.verifying_key(), power }).collect(),
        );
        let signers = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| Signer::new(k, ValidatorIndex(i as u32), ChainId([1; 32]), SafetyState::default()))
            .collect();
        (set, signers)
    }

    fn finalize_cert(set: &ValidatorSet, signers: &mut [Signer], who: &[usize]) -> Certificate {
        let notarization = Certificate {
            kind: VoteKind::Notarize,
            view: View(1),
            height: Height(1),
            digest: [5; 32],
            signers: Vec::new(),
            signatures: Vec::new(),
        };
        let votes: Vec<Vote> = who.iter().map(|&i| signers[i].finalize(&notarization).unwrap()).collect();
        Certificate::assemble(set, votes.iter()).unwrap()
    }

    /// Goal: quorum is more than 2/3 of weighted power, not of heads.
    #[test]
    fn weighted_quorum() {
        let (set, mut signers) = setup(&[5, 1, 1, 1]);
        let chain = ChainId([1; 32]);
        let heavy = finalize_cert(&set, &mut signers, &[0, 1]); // 6 of 8 > 2/3
        assert_eq!(heavy.verify(&chain, &set, &Ed25519Verifier), Ok(()));
        let (set, mut signers) = setup(&[5, 1, 1, 1]);
        let light = finalize_cert(&set, &mut signers, &[1, 2, 3]); // 3 of 8
        assert!(matches!(
            light.verify(&chain, &set, &Ed25519Verifier),
            Err(Error::QuorumNotReached { power: 3, total: 8, .. })
        ));
        let (set, _) = setup(&[1, 1, 1]);
        assert!(!set.is_quorum(2) && set.is_quorum(3));
    }

    /// Goal: a flipped signature, a wrong chain, a missing signature or a wrong bitmap length fail verification.
    #[test]
    fn tampered_certificates_fail() {
        let (set, mut signers) = setup(&[1, 1, 1, 1]);
        let chain = ChainId([1; 32]);
        let good = finalize_cert(&set, &mut signers, &[0, 1, 3]);
        assert_eq!(good.verify(&chain, &set, &Ed25519Verifier), Ok(()));
        assert!(good.verify(&ChainId([2; 32]), &set, &Ed25519Verifier).is_err());
        let mut bad = good.clone();
        bad.signatures[1][0] ^= 1;
        assert!(matches!(
            bad.verify(&chain, &set, &Ed25519Verifier),
            Err(Error::BadSignature { signer: ValidatorIndex(1), .. })
        ));
        let mut bad = good.clone();
        bad.signatures.pop();
        assert!(matches!(bad.verify(&chain, &set, &Ed25519Verifier), Err(Error::SignatureCount { .. })));
        let mut bad = good.clone();
        bad.signers.push(0);
        assert!(matches!(bad.verify(&chain, &set, &Ed25519Verifier), Err(Error::BitmapLength { .. })));
        let mut bad = good;
        bad.height = Height(2);
        assert!(bad.verify(&chain, &set, &Ed25519Verifier).is_err());
    }
}
