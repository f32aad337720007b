//! Record state and the rules a record must pass to be applied.
//!
//! State is, per `(namespace, key)`, the version chain and its head (active or
//! revoked), and per submitter the last nonce used. `apply` checks one record
//! against the state as it stands after every earlier record of the block and
//! returns a typed error for each way the record can be wrong.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use bincode::{Decode, Encode};
use foldhash::{HashMap, HashMapExt};

use crate::block::ValidatorSet;
use crate::codec::{self, Canonical};
use crate::error::Error;
use crate::exec::Executed;
use crate::genesis::{Charter, Genesis, Params, Registry};
use crate::gov::{GovAction, GOV_NAMESPACE};
use crate::keys::PublicKey;
use crate::merkle::Hash;
use crate::record::{Encoded, Op, RecordId, RecordRef};
use crate::state_tree::{key_hash, LeafReader, Levels, MemoryTree, Prefetch, StateTreeReader};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Status {
    Active,
    Revoked,
}

/// The current head of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Head {
    pub id: RecordId,
    /// 1 for the first Publish, one more for each Amend or Revoke.
    pub version: u64,
    /// The head's index in the global log.
    pub index: u64,
    pub status: Status,
}

impl Canonical for Head {
    const KIND: &'static str = "head";
}

/// A key in record state: `(namespace, key)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StateKey {
    pub namespace: String,
    pub key: String,
}

/// Read access to committed state.
pub trait StateView {
    fn head(&self, key: &StateKey) -> Result<Option<Head>, Error>;
    fn last_nonce(&self, submitter: &PublicKey) -> Result<Option<u64>, Error>;
    /// Root of the authenticated state tree (`state_tree::EMPTY_ROOT` before any record).
    fn state_root(&self) -> Hash;
}

/// The rules of one chain at one height: its id, its limits and who may write where.
///
/// The fields are private and set once, by [`Rules::of`]: a field changed
/// afterwards would leave the fingerprint naming other rules, and records
/// marked under it would skip a check they now fail.
#[derive(Clone, Debug)]
pub struct Rules {
    chain_id: String,
    params: Params,
    registry: Registry,
    /// Hash of the charter these rules come from (the header of a block checked under them names it).
    charter_hash: Hash,
    /// Who may write governance records: the consensus keys of the validators in force.
    governors: BTreeSet<PublicKey>,
    /// These rules as one hash, of everything they are made from (chain id,
    /// charter hash, validator set hash): equal fingerprints, equal rules. Only
    /// compared on this node ([`Rules::check_encoded`]); never sent, stored or
    /// signed.
    fingerprint: Hash,
}

impl Rules {
    /// The rules of the first block.
    pub fn new(genesis: &Genesis) -> Self {
        Rules::of(&genesis.chain_id, &genesis.charter(), &genesis.validator_set())
    }

    /// The rules under `charter`, with `validators` governing.
    pub fn of(chain_id: &str, charter: &Charter, validators: &ValidatorSet) -> Self {
        use sha2::{Digest, Sha256};
        let charter_hash = charter.hash();
        let fingerprint = Sha256::new()
            .chain_update(b"annal/rules/v1")
            .chain_update((chain_id.len() as u64).to_be_bytes())
            .chain_update(chain_id)
            .chain_update(charter_hash)
            .chain_update(validators.hash())
            .finalize()
            .into();
        Rules {
            chain_id: chain_id.to_string(),
            params: charter.params.clone(),
            registry: Registry::new(charter),
            charter_hash,
            governors: validators.validators.iter().map(|v| v.consensus_key).collect(),
            fingerprint,
        }
    }

    /// The charter's parameters (limits, block interval).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Hash of the charter these rules come from.
    pub fn charter_hash(&self) -> Hash {
        self.charter_hash
    }

    /// These rules as one hash (see the field): for tests and diagnostics.
    pub fn fingerprint(&self) -> Hash {
        self.fingerprint
    }

    /// [`Rules::check_stateless`] for a record about to enter this node's
    /// pool; a record that passes is marked with these rules' fingerprint, so
    /// that executing it under the same rules need not check it again.
    pub fn check_and_mark(&self, e: &mut Encoded) -> Result<(), Error> {
        self.check_stateless(&e.fields())?;
        e.checked_under = Some(self.fingerprint);
        Ok(())
    }

    /// [`Rules::check_stateless`], unless this node already saw `e` pass it
    /// under rules with the same fingerprint. The check is a function of the
    /// record and the rules alone, and the rules of their chain id, charter
    /// and validator set, which the fingerprint hashes: the answer is the one
    /// given then. Under any other rules (governance changed them since) the
    /// record is checked again. Checking at entry and again at execution was
    /// ~2 % of a validator (docs/BENCHMARKS.md, session 19).
    pub fn check_encoded(&self, e: &Encoded) -> Result<(), Error> {
        if e.checked_under == Some(self.fingerprint) {
            return Ok(());
        }
        self.check_stateless(&e.fields())
    }

    /// The checks that need no state: chain id, sizes and shape, submitter, namespace grant.
    /// The signature is checked separately (once per node, in batches).
    pub fn check_stateless(&self, r: &RecordRef) -> Result<(), Error> {
        if r.chain_id != self.chain_id {
            return Err(Error::WrongChainId { expected: self.chain_id.clone(), got: r.chain_id.into() });
        }
        r.check_form(&self.params)?;
        self.writer(r)?;
        if r.namespace == GOV_NAMESPACE {
            GovAction::of_record(r, &self.params)?;
        }
        Ok(())
    }

    /// Who may write the record's namespace under these rules: the name of the
    /// submitter's agency when it owns the namespace, or [`GOV_NAMESPACE`] for a
    /// governance record by a validator in force. The offline verifier asks the
    /// same of the rules in force at a record's height.
    pub fn writer(&self, r: &RecordRef) -> Result<&str, Error> {
        if r.namespace == GOV_NAMESPACE {
            if !self.governors.contains(&r.submitter) {
                return Err(Error::Governance {
                    detail: format!("key {} is not the consensus key of a validator in force", r.submitter),
                });
            }
            return Ok(GOV_NAMESPACE);
        }
        let agency = self
            .registry
            .agency(&r.submitter)
            .ok_or_else(|| Error::UnknownSubmitter { submitter: r.submitter.to_hex() })?;
        if !agency.namespaces.iter().any(|n| n == r.namespace) {
            return Err(Error::NamespaceNotGranted { agency: agency.name.clone(), namespace: r.namespace.into() });
        }
        Ok(&agency.name)
    }
}

/// State changes made by the records of one block, on top of committed state.
pub struct Overlay<'a, V: StateView + LeafReader> {
    base: &'a V,
    /// The stored leaves of the block's keys, read at once (a key outside them is read alone).
    prefetch: &'a Prefetch,
    /// The keys' new heads, in the order each key was first changed: the state
    /// tree's changed leaves (sorted once, by [`Overlay::finish`]).
    heads: Vec<(Hash, Head)>,
    /// Where each changed key's head is in `heads`. Only looked up, never
    /// iterated: a B-tree over a block's ~4,000 keys, searched and grown once
    /// per record, was ~2 % of a validator at rate max (docs/BENCHMARKS.md, session 14).
    changed: HashMap<Hash, usize>,
    nonces: BTreeMap<PublicKey, u64>,
}

impl<'a, V: StateView + LeafReader> Overlay<'a, V> {
    pub fn new(base: &'a V, prefetch: &'a Prefetch) -> Self {
        Overlay { base, prefetch, heads: Vec::new(), changed: HashMap::new(), nonces: BTreeMap::new() }
    }

    /// The new heads sorted by key hash (each key once), and every submitter's last nonce.
    pub fn finish(self) -> (Vec<(Hash, Head)>, BTreeMap<PublicKey, u64>) {
        let mut heads = self.heads;
        heads.sort_unstable_by_key(|h| h.0);
        (heads, self.nonces)
    }

    fn head(&self, key_hash: &Hash) -> Result<Option<Head>, Error> {
        if let Some(&at) = self.changed.get(key_hash) {
            return Ok(Some(self.heads[at].1));
        }
        match self.prefetch.head(key_hash) {
            Some(stored) => Ok(stored),
            None => self.base.leaf(key_hash),
        }
    }

    fn last_nonce(&self, submitter: &PublicKey) -> Result<Option<u64>, Error> {
        match self.nonces.get(submitter) {
            Some(n) => Ok(Some(*n)),
            None => self.base.last_nonce(submitter),
        }
    }

    /// Applies a record whose signature has been verified and whose stateless
    /// checks passed, as log entry `index`; `key_hash` is its key's
    /// ([`key_hash_of`](crate::state_tree::key_hash_of), computed once by the caller, which reads the block's
    /// leaves by it). Returns the key's new head.
    pub fn apply(&mut self, r: &RecordRef, id: RecordId, index: u64, key_hash: &Hash) -> Result<Head, Error> {
        if let Some(last) = self.last_nonce(&r.submitter)? {
            if r.nonce <= last {
                return Err(Error::NonceNotIncreasing { submitter: r.submitter.to_hex(), last, got: r.nonce });
            }
        }
        let (namespace, key) = (|| r.namespace.to_string(), || r.key.to_string());
        let current = self.head(key_hash)?;
        let version = match (r.op, current) {
            (Op::Publish, None) => 1,
            (Op::Publish, Some(_)) => {
                return Err(Error::KeyExists { namespace: namespace(), key: key() });
            }
            (Op::Amend | Op::Revoke, None) => {
                return Err(Error::KeyNotFound { namespace: namespace(), key: key(), op: r.op.name() });
            }
            (Op::Amend | Op::Revoke, Some(head)) => {
                if head.status == Status::Revoked {
                    return Err(Error::KeyRevoked { namespace: namespace(), key: key(), head: head.id.to_hex() });
                }
                let supersedes = r.supersedes.expect("check_form requires supersedes on Amend and Revoke");
                if supersedes != head.id {
                    return Err(Error::SupersedesNotHead {
                        namespace: namespace(),
                        key: key(),
                        got: supersedes.to_hex(),
                        head: head.id.to_hex(),
                    });
                }
                head.version + 1
            }
        };
        if r.version != version {
            return Err(Error::VersionMismatch { namespace: namespace(), key: key(), got: r.version, want: version });
        }
        let status = if r.op == Op::Revoke { Status::Revoked } else { Status::Active };
        let head = Head { id, version, index, status };
        self.nonces.insert(r.submitter, r.nonce);
        match self.changed.entry(*key_hash) {
            Entry::Occupied(at) => self.heads[*at.get()].1 = head,
            Entry::Vacant(at) => {
                at.insert(self.heads.len());
                self.heads.push((*key_hash, head));
            }
        }
        Ok(head)
    }
}

/// State held in memory: for tests, the offline auditor's replay, and benchmarks.
#[derive(Default)]
pub struct MemoryState {
    pub nonces: BTreeMap<PublicKey, u64>,
    /// Record state: the heads, as the leaves of the state tree.
    pub tree: MemoryTree,
}

impl StateView for MemoryState {
    fn head(&self, key: &StateKey) -> Result<Option<Head>, Error> {
        self.tree.leaf(&key_hash(key))
    }

    fn last_nonce(&self, submitter: &PublicKey) -> Result<Option<u64>, Error> {
        Ok(self.nonces.get(submitter).copied())
    }

    fn state_root(&self) -> Hash {
        self.tree.root()
    }
}

impl LeafReader for MemoryState {
    fn leaves_in(&self, from: &Hash, to_inclusive: &Hash) -> Result<Vec<(Hash, Head)>, Error> {
        self.tree.leaves_in(from, to_inclusive)
    }
    fn leaf(&self, key_hash: &Hash) -> Result<Option<Head>, Error> {
        self.tree.leaf(key_hash)
    }
}

impl StateTreeReader for MemoryState {
    fn levels(&self) -> &Levels {
        self.tree.levels()
    }
}

impl MemoryState {
    /// Takes an executed block's changes into this state, as a commit would.
    pub fn absorb(&mut self, executed: &Executed) {
        self.nonces.extend(&executed.nonces);
        self.tree.apply(&executed.state);
    }
}

/// Length of a head's canonical encoding.
pub const HEAD_BYTES: usize = 53;

/// Encodes a head for storage.
pub fn encode_head(head: &Head) -> Vec<u8> {
    codec::encode(head)
}

/// The canonical encoding of a head (`encode_head`'s bytes) without allocating:
/// format, id, version and index (u64 LE), status (u32 LE). The state tree hashes
/// one per leaf.
pub fn head_bytes(head: &Head) -> [u8; HEAD_BYTES] {
    let mut out = [0u8; HEAD_BYTES];
    out[0] = codec::FORMAT_V1;
    out[1..33].copy_from_slice(&head.id.0);
    out[33..41].copy_from_slice(&head.version.to_le_bytes());
    out[41..49].copy_from_slice(&head.index.to_le_bytes());
    let status: u32 = match head.status {
        Status::Active => 0,
        Status::Revoked => 1,
    };
    out[49..].copy_from_slice(&status.to_le_bytes());
    out
}

/// Decodes a canonical head. The 53-byte form is read directly (the store
/// reads one per leaf it scans); anything else goes through the codec, which
/// names what is wrong.
pub fn decode_head(bytes: &[u8]) -> Result<Head, Error> {
    let status = |b: &[u8]| match u32::from_le_bytes(b.try_into().expect("4 bytes")) {
        0 => Some(Status::Active),
        1 => Some(Status::Revoked),
        _ => None,
    };
    if let (HEAD_BYTES, Some(&codec::FORMAT_V1)) = (bytes.len(), bytes.first()) {
        if let Some(status) = status(&bytes[49..]) {
            let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            let id = RecordId(bytes[1..33].try_into().expect("32 bytes"));
            return Ok(Head { id, version: u64_at(33), index: u64_at(41), status });
        }
    }
    codec::decode(bytes, 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn head_bytes_are_the_canonical_encoding_and_decode_agrees_with_the_codec() {
        // Goal: the allocation-free encoder and the direct decoder give exactly what the codec
        // gives, for heads and for arbitrary 53-byte inputs (valid or not).
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for i in 0..2000 {
            let head = Head {
                id: RecordId(rng.gen()),
                version: rng.gen(),
                index: rng.gen(),
                status: if i % 2 == 0 { Status::Active } else { Status::Revoked },
            };
            assert_eq!(head_bytes(&head).to_vec(), encode_head(&head));
            assert_eq!(decode_head(&head_bytes(&head)).unwrap(), head);
            let mut bytes = [0u8; HEAD_BYTES];
            rng.fill(&mut bytes[..]);
            bytes[0] = [codec::FORMAT_V1, 0, 2][i % 3];
            bytes[50..].fill(0);
            bytes[49] = [0, 1, 2][i / 3 % 3];
            let direct = decode_head(&bytes).ok();
            let via_codec = codec::decode::<Head>(&bytes, 64).ok();
            assert_eq!(direct, via_codec, "{}", hex::encode(bytes));
        }
    }
}
