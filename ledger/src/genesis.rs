//! Genesis: the chain's founding document and its trust root.
//!
//! The genesis file is JSON (documented field by field in `genesis/README.md`).
//! Loading it checks every field and refuses unknown ones. The SHA-256 of its
//! canonical encoding (see `codec`) is the chain's trust root: two files that
//! differ only in whitespace or field order have the same hash, and an auditor
//! who holds a file with that hash holds the chain's founding keys.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::block::ValidatorSet;
use crate::codec::{self, Canonical};
use crate::error::Error;
use crate::keys::PublicKey;
use crate::merkle::Hash;
use crate::record::check_name;

/// The largest genesis file read, in bytes.
pub const GENESIS_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// The most validators a set may hold (the certificate bitmap and proof sizes assume it).
pub const VALIDATORS_MAX: usize = 1024;
const NAME_BYTES_MAX: usize = 64;
/// The largest `record_bytes_max` a chain may set.
pub const RECORD_BYTES_CAP: usize = 16 << 20;
/// The largest `block_bytes_max` a chain may set (a block travels in one message).
pub const BLOCK_BYTES_CAP: usize = 256 << 20;
/// The largest `block_records_max` a chain may set.
pub const BLOCK_RECORDS_CAP: usize = 1 << 20;
/// Namespaces the chain keeps for itself (`annal.gov`, governance); no agency may own one.
pub const RESERVED_PREFIX: &str = "annal.";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: String,
    /// Milliseconds since the Unix epoch; the first block's BFT time is after it.
    pub genesis_time_ms: u64,
    pub validators: Vec<Validator>,
    pub agencies: Vec<Agency>,
    pub params: Params,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields)]
pub struct Validator {
    pub name: String,
    /// Signs votes and certificates.
    pub consensus_key: PublicKey,
    /// The ed25519 key of the node's libp2p identity; only these peers may connect.
    pub p2p_key: PublicKey,
    pub power: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields)]
pub struct Agency {
    pub name: String,
    /// Keys of the officers who may submit records for this agency.
    pub submitter_keys: Vec<PublicKey>,
    /// The namespaces this agency owns; no two agencies share one.
    pub namespaces: Vec<String>,
}

/// Chain parameters and the limits every node enforces on input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Largest signed record, in canonical bytes.
    pub record_bytes_max: usize,
    /// Largest inline body.
    pub body_bytes_max: usize,
    pub namespace_bytes_max: usize,
    pub key_bytes_max: usize,
    pub media_type_bytes_max: usize,
    pub metadata_entries_max: usize,
    /// Sum of the lengths of every metadata key and value.
    pub metadata_bytes_max: usize,
    /// A block is cut at this many records ...
    pub block_records_max: usize,
    /// ... or this many record bytes ...
    pub block_bytes_max: usize,
    /// ... or when this much time has passed since the previous block.
    pub block_interval_ms: u64,
    /// The first consensus view timeout; it backs off from there.
    pub view_timeout_ms: u64,
    /// Heights per consensus epoch. A validator-set change takes effect at
    /// the first height of an epoch (heights `k * epoch_blocks + 1`); fixed for
    /// the chain's life (ADR 0006). Absent in a genesis file: 256.
    #[serde(default = "default_epoch_blocks")]
    pub epoch_blocks: u64,
}

fn default_epoch_blocks() -> u64 {
    256
}

impl Params {
    /// The epoch that height `height` (at least 1) belongs to; epoch 0 holds heights 1 to `epoch_blocks`.
    pub fn epoch_of(&self, height: u64) -> u64 {
        height.saturating_sub(1) / self.epoch_blocks
    }

    /// The last height of epoch `epoch`.
    pub fn epoch_end(&self, epoch: u64) -> u64 {
        (epoch + 1).saturating_mul(self.epoch_blocks)
    }

    /// The first epoch start (`k * epoch_blocks + 1`) at or above `height`.
    pub fn epoch_start_from(&self, height: u64) -> u64 {
        let height = height.max(1);
        if (height - 1).is_multiple_of(self.epoch_blocks) {
            height
        } else {
            self.epoch_end(self.epoch_of(height)) + 1
        }
    }
}

impl Default for Params {
    fn default() -> Self {
        Params {
            record_bytes_max: 96 * 1024,
            body_bytes_max: 64 * 1024,
            namespace_bytes_max: 64,
            key_bytes_max: 256,
            media_type_bytes_max: 128,
            metadata_entries_max: 32,
            metadata_bytes_max: 8 * 1024,
            block_records_max: 2000,
            block_bytes_max: 8 * 1024 * 1024,
            block_interval_ms: 200,
            view_timeout_ms: 1000,
            epoch_blocks: default_epoch_blocks(),
        }
    }
}

impl Canonical for Genesis {
    const KIND: &'static str = "genesis";
}

impl Genesis {
    /// Reads and validates a genesis file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let err = |detail: String| Error::Genesis { detail: format!("{}: {detail}", path.display()) };
        let bytes = crate::read_file_max(path, GENESIS_BYTES_MAX).map_err(|e| err(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|e| err(format!("not UTF-8: {e}")))?;
        Self::from_json(&text).map_err(|e| err(e.to_string()))
    }

    pub fn from_json(text: &str) -> Result<Self, Error> {
        let genesis: Genesis = serde_json::from_str(text).map_err(|e| Error::Genesis { detail: e.to_string() })?;
        genesis.validate()?;
        Ok(genesis)
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("genesis serialises");
        s.push('\n');
        s
    }

    /// The chain's trust root: SHA-256 of the canonical encoding.
    pub fn hash(&self) -> Hash {
        Sha256::digest(codec::encode(self)).into()
    }

    pub fn validator_set(&self) -> ValidatorSet {
        ValidatorSet { validators: self.validators.clone() }
    }

    /// The agencies and parameters the chain starts with.
    pub fn charter(&self) -> Charter {
        Charter { agencies: self.agencies.clone(), params: self.params.clone() }
    }

    /// Checks every rule a genesis must satisfy; the message names the offending entry.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |detail: String| Err(Error::Genesis { detail });
        check_name("chain_id", &self.chain_id, NAME_BYTES_MAX).or_else(|e| bad(e.to_string()))?;
        if self.validators.is_empty() {
            return bad("no validators: a chain needs at least one".into());
        }
        if self.validators.len() > VALIDATORS_MAX {
            return bad(format!("{} validators is over the limit of {VALIDATORS_MAX}", self.validators.len()));
        }
        let mut names = BTreeSet::new();
        let mut keys = BTreeSet::new();
        let mut total: u64 = 0;
        for (i, v) in self.validators.iter().enumerate() {
            let at = format!("validators[{i}] ({:?})", v.name);
            if v.name.len() > NAME_BYTES_MAX || crate::note::check_key_name(&v.name).is_err() {
                return bad(format!(
                    "{at}: a name is 1 to {NAME_BYTES_MAX} bytes with no whitespace, '+' or control character \
                     (it names the validator's checkpoint signatures)"
                ));
            }
            if !names.insert(v.name.as_str()) {
                return bad(format!("{at}: duplicate validator name"));
            }
            check_key(&v.consensus_key)
                .or_else(|why| bad(format!("{at}: consensus_key {}: {why}", v.consensus_key)))?;
            check_key(&v.p2p_key).or_else(|why| bad(format!("{at}: p2p_key {}: {why}", v.p2p_key)))?;
            if !keys.insert(v.consensus_key) {
                return bad(format!("{at}: consensus_key {} appears twice", v.consensus_key));
            }
            if !keys.insert(v.p2p_key) {
                return bad(format!("{at}: p2p_key {} appears twice", v.p2p_key));
            }
            if v.power == 0 {
                return bad(format!("{at}: power is 0; every validator needs power of at least 1"));
            }
            // Quorum arithmetic multiplies power by 3: keep the total well inside u64.
            total = match total.checked_add(v.power) {
                Some(t) if t <= u64::MAX / 4 => t,
                _ => return bad(format!("{at}: total voting power overflows (the limit is {})", u64::MAX / 4)),
            };
        }
        let mut agency_names = BTreeSet::new();
        let mut namespaces = BTreeMap::new();
        let mut submitters = BTreeSet::new();
        for (i, a) in self.agencies.iter().enumerate() {
            let at = format!("agencies[{i}] ({:?})", a.name);
            if a.name.is_empty() || a.name.len() > NAME_BYTES_MAX {
                return bad(format!("{at}: a name is 1 to {NAME_BYTES_MAX} bytes"));
            }
            if !agency_names.insert(a.name.as_str()) {
                return bad(format!("{at}: duplicate agency name"));
            }
            for key in &a.submitter_keys {
                check_key(key).or_else(|why| bad(format!("{at}: submitter key {key}: {why}")))?;
                if keys.contains(key) || !submitters.insert(*key) {
                    return bad(format!("{at}: submitter key {key} appears twice in genesis"));
                }
            }
            for ns in &a.namespaces {
                check_name("namespace", ns, self.params.namespace_bytes_max).or_else(|e| bad(format!("{at}: {e}")))?;
                if ns == crate::gov::GOV_NAMESPACE || ns.starts_with(RESERVED_PREFIX) {
                    return bad(format!(
                        "{at}: namespace {ns:?} is reserved for the chain (names starting {RESERVED_PREFIX:?})"
                    ));
                }
                if let Some(owner) = namespaces.insert(ns.as_str(), a.name.as_str()) {
                    return bad(format!("{at}: namespace {ns:?} is already granted to agency {owner:?}"));
                }
            }
        }
        self.params.validate()
    }
}

/// Refuses a public key that is not a valid ed25519 point, or is of small
/// order (anyone could forge "signatures" under it; strict verification
/// refuses them, so such a key could never sign).
fn check_key(key: &PublicKey) -> Result<(), String> {
    match ed25519_dalek::VerifyingKey::from_bytes(&key.0) {
        Err(_) => Err("is not a valid ed25519 public key".into()),
        Ok(vk) if vk.is_weak() => Err("is a weak (small-order) ed25519 key".into()),
        Ok(_) => Ok(()),
    }
}

impl Params {
    fn validate(&self) -> Result<(), Error> {
        let bad = |detail: String| Err(Error::Genesis { detail: format!("params: {detail}") });
        let fields = [
            ("record_bytes_max", self.record_bytes_max),
            ("body_bytes_max", self.body_bytes_max),
            ("namespace_bytes_max", self.namespace_bytes_max),
            ("key_bytes_max", self.key_bytes_max),
            ("media_type_bytes_max", self.media_type_bytes_max),
            ("metadata_bytes_max", self.metadata_bytes_max),
            ("block_records_max", self.block_records_max),
            ("block_bytes_max", self.block_bytes_max),
        ];
        for (name, value) in fields {
            if value == 0 {
                return bad(format!("{name} is 0"));
            }
        }
        if self.record_bytes_max > RECORD_BYTES_CAP {
            return bad(format!("record_bytes_max {} is over {RECORD_BYTES_CAP}", self.record_bytes_max));
        }
        if self.block_bytes_max > BLOCK_BYTES_CAP || self.block_records_max > BLOCK_RECORDS_CAP {
            return bad(format!(
                "block_bytes_max {} and block_records_max {} are at most {BLOCK_BYTES_CAP} and {BLOCK_RECORDS_CAP}",
                self.block_bytes_max, self.block_records_max
            ));
        }
        // Summed without overflow: a genesis file or a governance proposal may hold any number.
        let inline_max = [self.body_bytes_max, self.metadata_bytes_max, self.key_bytes_max, self.namespace_bytes_max]
            .into_iter()
            .fold(0usize, usize::saturating_add);
        if inline_max > self.record_bytes_max {
            return bad(format!(
                "record_bytes_max {} cannot hold a record at the other limits ({inline_max} bytes of body, metadata, key and namespace)",
                self.record_bytes_max
            ));
        }
        if self.block_bytes_max < self.record_bytes_max {
            return bad(format!(
                "block_bytes_max {} is smaller than record_bytes_max {}",
                self.block_bytes_max, self.record_bytes_max
            ));
        }
        if self.namespace_bytes_max > 255 || self.key_bytes_max > 4096 {
            return bad("namespace_bytes_max is at most 255 and key_bytes_max at most 4096".into());
        }
        if self.namespace_bytes_max < crate::gov::GOV_NAMESPACE.len()
            || self.key_bytes_max < crate::gov::GOV_KEY_BYTES_MAX
        {
            return bad(format!(
                "namespace_bytes_max is at least {} and key_bytes_max at least {}, so governance records fit",
                crate::gov::GOV_NAMESPACE.len(),
                crate::gov::GOV_KEY_BYTES_MAX
            ));
        }
        if self.block_interval_ms == 0 || self.view_timeout_ms == 0 {
            return bad("block_interval_ms and view_timeout_ms must be above 0".into());
        }
        if self.epoch_blocks == 0 || self.epoch_blocks > 1 << 32 {
            return bad(format!("epoch_blocks {} is not between 1 and 2^32", self.epoch_blocks));
        }
        Ok(())
    }
}

/// The agencies (their namespaces and submitter keys) and the parameters in
/// force at a height. Genesis sets the first; governance changes it
/// (`gov`). Each header commits to the charter its records were checked
/// under (`Header::charter_hash`), so a proof can show which keys were valid
/// at the record's height.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Charter {
    pub agencies: Vec<Agency>,
    pub params: Params,
}

impl Canonical for Charter {
    const KIND: &'static str = "charter";
}

/// The largest charter encoding read (a bundle carries one).
pub const CHARTER_BYTES_MAX: usize = 4 << 20;

impl Charter {
    pub fn hash(&self) -> Hash {
        Sha256::digest(codec::encode(self)).into()
    }
}

/// Who may write where, indexed for the record checks.
#[derive(Clone, Debug)]
pub struct Registry {
    agency_of_submitter: BTreeMap<PublicKey, usize>,
    agencies: Vec<Agency>,
}

impl Registry {
    pub fn new(charter: &Charter) -> Self {
        let mut agency_of_submitter = BTreeMap::new();
        for (i, a) in charter.agencies.iter().enumerate() {
            for key in &a.submitter_keys {
                agency_of_submitter.insert(*key, i);
            }
        }
        Registry { agency_of_submitter, agencies: charter.agencies.clone() }
    }

    /// The agency a submitter key belongs to.
    pub fn agency(&self, submitter: &PublicKey) -> Option<&Agency> {
        self.agency_of_submitter.get(submitter).map(|&i| &self.agencies[i])
    }
}
