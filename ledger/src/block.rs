//! Blocks: the header every validator agrees on, its certificate, and validator sets.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::{self, Canonical};
use crate::error::Error;
use crate::genesis::Validator;
use crate::keys::{SecretKey, Signature};
use crate::merkle::Hash;
use crate::note::{self, BlockRef, Checkpoint, NoteSignature, SignedNote, VerifierKey};

/// Block height; the genesis state is height 0 and the first block is height 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize)]
pub struct Height(pub u64);

/// Consensus view (round) in which a block was proposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize)]
pub struct View(pub u64);

/// The block header. Block hash = SHA-256 of its canonical encoding.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Header {
    pub chain_id: String,
    pub height: Height,
    pub view: View,
    /// Hash of the previous header; for height 1, the genesis hash.
    pub parent: Hash,
    /// BFT time in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Index of the proposer in the block's validator set.
    pub proposer: u32,
    /// RFC 6962 root of this block's record ids, in block order.
    pub records_root: Hash,
    /// Size of the global log after this block.
    pub log_size: u64,
    /// RFC 6962 root of the global log after this block.
    pub log_root: Hash,
    /// Commitment to record state after this block (see docs/PROOFS.md).
    pub state_root: Hash,
    /// Hash of the validator set that certifies this block.
    pub validators_hash: Hash,
    /// Hash of the validator set that certifies the next block.
    pub next_validators_hash: Hash,
    /// Hash of the charter (agencies, their namespaces and keys, parameters)
    /// this block's records were checked under (`genesis::Charter`).
    pub charter_hash: Hash,
}

impl Canonical for Header {
    const KIND: &'static str = "header";
}

/// The largest header encoding read (a chain id is at most 64 bytes).
pub const HEADER_BYTES_MAX: usize = 512;

impl Header {
    pub fn hash(&self) -> Hash {
        Sha256::digest(codec::encode(self)).into()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        codec::decode(bytes, HEADER_BYTES_MAX)
    }
}

/// The validators that certify a block, in index order.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ValidatorSet {
    pub validators: Vec<Validator>,
}

impl Canonical for ValidatorSet {
    const KIND: &'static str = "validator set";
}

impl ValidatorSet {
    pub fn hash(&self) -> Hash {
        Sha256::digest(codec::encode(self)).into()
    }

    pub fn total_power(&self) -> u64 {
        self.validators.iter().map(|v| v.power).sum()
    }

    /// The bounds a genesis set satisfies (checked at genesis load): at least one
    /// member, every power positive, a total of at most `u64::MAX / 4` so quorum
    /// arithmetic cannot overflow. A set read from elsewhere (a bundle's change
    /// chain) must pass this before its powers are summed.
    pub fn check_bounds(&self) -> Result<(), String> {
        if self.validators.is_empty() {
            return Err("the set has no validators".into());
        }
        let mut total = 0u64;
        for v in &self.validators {
            if v.power == 0 {
                return Err(format!("validator {:?} has power 0", v.name));
            }
            total = match total.checked_add(v.power) {
                Some(t) if t <= u64::MAX / 4 => t,
                _ => return Err(format!("the total power overflows the limit {}", u64::MAX / 4)),
            };
        }
        Ok(())
    }

    /// True when `power` is more than 2/3 of the set's total.
    pub fn is_quorum(&self, power: u64) -> bool {
        // Totals are bounded at genesis to u64::MAX / 4, so 3 * power cannot overflow.
        3 * (power as u128) > 2 * (self.total_power() as u128)
    }
}

/// Finality certificate: signatures of more than 2/3 of the block's validator
/// power over `(chain_id, height, view, block_hash)` — concretely, C2SP note
/// signatures over the header's checkpoint text (`Header::checkpoint`), which
/// names the chain, the log size and root, the height, the view and the hash.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Certificate {
    pub height: Height,
    pub view: View,
    pub block_hash: Hash,
    /// Bit `i` (byte `i / 8`, least significant bit first) is set when validator `i` signed.
    pub signers: Vec<u8>,
    /// One signature per set bit, in validator index order.
    pub signatures: Vec<Signature>,
}

impl Canonical for Certificate {
    const KIND: &'static str = "certificate";
}

impl Header {
    /// The checkpoint this header's validators sign: the log after this block, and the block itself.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            origin: note::origin(&self.chain_id),
            size: self.log_size,
            root: self.log_root,
            block: BlockRef { height: self.height.0, view: self.view.0, hash: self.hash() },
        }
    }
}

impl Certificate {
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        codec::decode(bytes, 64 + 8 + 8 + 32 + VALIDATORS_BITMAP_MAX + 8 + 64 * crate::genesis::VALIDATORS_MAX)
    }

    /// Builds a certificate from `(validator index, key)` pairs (tests, benchmarks and the node).
    pub fn sign(header: &Header, set: &ValidatorSet, signers: &[(usize, &SecretKey)]) -> Self {
        let checkpoint = header.checkpoint();
        let mut bitmap = vec![0u8; set.validators.len().div_ceil(8)];
        let mut sorted: Vec<_> = signers.to_vec();
        sorted.sort_by_key(|(i, _)| *i);
        let mut signatures = Vec::with_capacity(sorted.len());
        for (i, key) in sorted {
            bitmap[i / 8] |= 1 << (i % 8);
            signatures.push(key.sign_checkpoint(&checkpoint));
        }
        Certificate {
            height: header.height,
            view: header.view,
            block_hash: checkpoint.block.hash,
            signers: bitmap,
            signatures,
        }
    }

    /// Checks that this certificate finalizes `header` with more than 2/3 of `set`'s power.
    pub fn verify(&self, header: &Header, set: &ValidatorSet) -> Result<(), Error> {
        let height = header.height.0;
        let bad = |detail: String| Err(Error::Block { height, detail });
        if self.height != header.height || self.view != header.view || self.block_hash != header.hash() {
            return bad("certificate is for another block (height, view or block hash differ)".into());
        }
        let n = set.validators.len();
        if self.signers.len() != n.div_ceil(8) {
            return bad(format!(
                "signer bitmap has {} bytes; a set of {n} needs {}",
                self.signers.len(),
                n.div_ceil(8)
            ));
        }
        let signer_indices: Vec<usize> =
            (0..self.signers.len() * 8).filter(|i| self.signers[i / 8] & (1 << (i % 8)) != 0).collect();
        if let Some(&i) = signer_indices.iter().find(|&&i| i >= n) {
            return bad(format!("signer bitmap names validator {i}, but the set has {n}"));
        }
        if signer_indices.len() != self.signatures.len() {
            return bad(format!(
                "{} signers in the bitmap but {} signatures",
                signer_indices.len(),
                self.signatures.len()
            ));
        }
        let checkpoint = header.checkpoint();
        let mut power = 0u64;
        for (&i, sig) in signer_indices.iter().zip(&self.signatures) {
            let v = &set.validators[i];
            if !v.consensus_key.verify_checkpoint(&checkpoint, sig) {
                return bad(format!("signature of validator {i} ({}) does not verify", v.name));
            }
            power += v.power;
        }
        if !set.is_quorum(power) {
            return Err(Error::QuorumNotReached { height, power, total: set.total_power() });
        }
        Ok(())
    }

    /// The certificate as a C2SP signed checkpoint: one note signature line per signer.
    pub fn to_note(&self, header: &Header, set: &ValidatorSet) -> SignedNote {
        let signers = (0..self.signers.len() * 8).filter(|i| self.signers[i / 8] & (1 << (i % 8)) != 0);
        let signatures = signers
            .zip(&self.signatures)
            .filter_map(|(i, sig)| set.validators.get(i).map(|v| (v, sig)))
            .map(|(v, sig)| NoteSignature {
                name: v.name.clone(),
                key_id: note::key_id(&v.name, &v.consensus_key),
                signature: sig.0.to_vec(),
            })
            .collect();
        SignedNote { text: header.checkpoint().to_text(), signatures }
    }
}

impl ValidatorSet {
    /// Each validator's C2SP note verifier key, in index order.
    pub fn verifier_keys(&self) -> Vec<VerifierKey> {
        self.validators.iter().map(|v| VerifierKey { name: v.name.clone(), key: v.consensus_key }).collect()
    }

    /// Verifies a signed checkpoint against this set: every signature by a
    /// member must verify, and the members who signed must hold more than 2/3
    /// of the power. Returns the checkpoint.
    pub fn verify_checkpoint(&self, chain_id: &str, signed: &SignedNote) -> Result<Checkpoint, Error> {
        let checkpoint = Checkpoint::parse(&signed.text)?;
        if checkpoint.origin != note::origin(chain_id) {
            return Err(Error::Note {
                detail: format!("origin {:?} is not this chain's {:?}", checkpoint.origin, note::origin(chain_id)),
            });
        }
        let signers = signed.verify(&self.verifier_keys())?;
        let power = signers.iter().map(|&i| self.validators[i].power).sum();
        if !self.is_quorum(power) {
            return Err(Error::QuorumNotReached { height: checkpoint.block.height, power, total: self.total_power() });
        }
        Ok(checkpoint)
    }
}

const VALIDATORS_BITMAP_MAX: usize = crate::genesis::VALIDATORS_MAX / 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    fn set(powers: &[u64]) -> ValidatorSet {
        ValidatorSet {
            validators: powers
                .iter()
                .enumerate()
                .map(|(i, &power)| Validator {
                    name: format!("v{i}"),
                    consensus_key: SecretKey::from_seed([i as u8 + 1; 32]).public(),
                    p2p_key: SecretKey::from_seed([i as u8 + 50; 32]).public(),
                    power,
                })
                .collect(),
        }
    }

    /// Goal: a set with no member, a zero power or a total past u64::MAX / 4 is refused before summing.
    #[test]
    fn set_bounds_refuse_empty_zero_and_overflowing_sets() {
        assert_eq!(set(&[1, 2, 3]).check_bounds(), Ok(()));
        assert_eq!(set(&[u64::MAX / 4]).check_bounds(), Ok(()));
        assert!(set(&[]).check_bounds().is_err());
        assert!(set(&[1, 0]).check_bounds().unwrap_err().contains("power 0"));
        assert!(set(&[u64::MAX / 4, 1]).check_bounds().unwrap_err().contains("overflows"));
        assert!(set(&[u64::MAX, u64::MAX]).check_bounds().unwrap_err().contains("overflows"));
    }
}
