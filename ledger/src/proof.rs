//! Proof bundles: everything an auditor needs to check a record offline,
//! holding nothing but the genesis file.
//!
//! A bundle (JSON, `docs/PROOFS.md` documents it field by field) carries the
//! record's canonical bytes; the record's block header with its signed
//! checkpoint (the certificate, as a C2SP signed note); the record's place in
//! that block (`records_root`) and in the global log (`log_root`); the chain
//! of certified validator-set changes from genesis; and optionally a state
//! proof, as of a later certified block, that says whether the record is
//! still the current version of its key.
//!
//! `verify` runs every check in a fixed order and stops at the first that
//! fails, naming it (`Check`) in words an auditor understands.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::block::{Header, ValidatorSet};
use crate::codec;
use crate::error::Error;
use crate::genesis::{Charter, Genesis, Params, CHARTER_BYTES_MAX, RECORD_BYTES_CAP};
use crate::merkle::{self, Hash};
use crate::note::{Checkpoint, SignedNote};
use crate::record::{Body, RecordId, SignedRecord};
use crate::state::{Head, Rules, StateKey, Status};
use crate::state_tree::StateProof;

/// The format line of a version-1 bundle.
pub const BUNDLE_FORMAT: &str = "annal-proof-bundle/v1";
/// The largest bundle read, in bytes (a chain of many validator-set changes is the bulk).
pub const BUNDLE_BYTES_MAX: usize = 16 << 20;
/// The most validator-set changes a bundle may carry.
pub const SET_CHANGES_MAX: usize = 10_000;

/// Which check of a bundle failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Format,
    ChainId,
    RecordBytes,
    RecordView,
    RecordSignature,
    Submitter,
    Charter,
    HeaderBytes,
    SetChain,
    ValidatorSet,
    Checkpoint,
    BlockInclusion,
    LogInclusion,
    Document,
    Status,
    Consistency,
}

impl Check {
    /// What the check establishes, for the auditor.
    pub fn describe(self) -> &'static str {
        match self {
            Check::Format => "the bundle is a version-1 Annal proof bundle",
            Check::ChainId => "the bundle is for the chain of this genesis file",
            Check::RecordBytes => "the record bytes are a well-formed record",
            Check::RecordView => "the decoded view shows what the record bytes say",
            Check::RecordSignature => "the record is signed by its submitter",
            Check::Submitter => {
                "the submitter is an officer of the agency that owns the namespace (or, for governance, a validator) \
                 at the record's height"
            }
            Check::Charter => {
                "the agencies and keys the bundle carries are the ones the record's certified block names"
            }
            Check::HeaderBytes => "the block header is well formed",
            Check::SetChain => "each validator-set change was certified by the set before it, starting from genesis",
            Check::ValidatorSet => "the block names the validator set in force at its height",
            Check::Checkpoint => "more than 2/3 of that set's voting power signed the block's checkpoint",
            Check::BlockInclusion => "the record is in the certified block",
            Check::LogInclusion => "the record is at its index in the certified global log",
            Check::Document => "the document matches the digest the record anchors",
            Check::Status => "the state proof shows the key's current version",
            Check::Consistency => "the newer log extends the older one (RFC 6962 consistency)",
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

fn fail(check: Check, detail: impl Into<String>) -> Error {
    Error::Proof { check, detail: detail.into() }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always `annal-proof-bundle/v1`.
    pub format: String,
    pub chain_id: String,
    pub record: RecordPart,
    /// The record's index in the global log.
    pub index: u64,
    /// The block that committed the record.
    pub block: CertifiedBlock,
    /// The record's position among the block's records, and how many the block holds.
    pub block_position: u64,
    pub block_records: u64,
    /// RFC 6962 path from the record id to the header's `records_root` (base64 hashes).
    pub block_path: Vec<String>,
    /// RFC 6962 path from the record id to the header's `log_root` at `log_size` (base64 hashes).
    pub log_path: Vec<String>,
    /// Certified validator-set changes from genesis up to the highest block in the bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_changes: Vec<SetChange>,
    /// The charter in force at the record's block (canonical bytes, base64),
    /// when governance changed it from genesis's; the block's header names its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charter: Option<String>,
    /// Whether the record is still current, as of a later certified block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusPart>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordPart {
    /// The signed record's canonical bytes, base64.
    pub bytes: String,
    /// The same record, decoded for people; `verify` checks it matches the bytes.
    pub decoded: RecordView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordView {
    pub id: String,
    pub namespace: String,
    pub key: String,
    pub op: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    pub submitter: String,
    pub nonce: u64,
    pub body: BodyView,
    #[serde(default, deserialize_with = "unique_keys", skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// A JSON object of strings, refused if it names a key twice: serde keeps the
/// last value, while a person reading the file sees the first, so a view could
/// show one value and still compare equal to the record's (which has the other).
fn unique_keys<'de, D: serde::Deserializer<'de>>(de: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Unique;
    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of strings")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!("the metadata key {key:?} is given twice")));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    de.deserialize_map(Unique)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum BodyView {
    /// An inline body: its size and SHA-256 (the bytes are in `record.bytes`).
    Inline {
        size: u64,
        sha256: String,
    },
    Document {
        sha256: String,
        size: u64,
        media_type: String,
    },
}

impl RecordView {
    pub fn of(record: &SignedRecord, id: &RecordId) -> Self {
        let r = &record.record;
        RecordView {
            id: id.to_hex(),
            namespace: r.namespace.clone(),
            key: r.key.clone(),
            op: r.op.name().to_string(),
            version: r.version,
            supersedes: r.supersedes.map(|s| s.to_hex()),
            submitter: r.submitter.to_hex(),
            nonce: r.nonce,
            body: match &r.body {
                Body::Inline(bytes) => {
                    use sha2::Digest;
                    BodyView::Inline { size: bytes.len() as u64, sha256: hex::encode(sha2::Sha256::digest(bytes)) }
                }
                Body::Document(a) => {
                    BodyView::Document { sha256: hex::encode(a.sha256), size: a.size, media_type: a.media_type.clone() }
                }
            },
            metadata: r.metadata.clone(),
        }
    }
}

/// A header with its signed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertifiedBlock {
    /// Canonical header bytes, base64.
    pub header: String,
    /// The certificate as a C2SP signed note over the header's checkpoint.
    pub checkpoint: String,
}

/// A block that changed the validator set, and the set it handed over to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetChange {
    pub block: CertifiedBlock,
    /// Canonical bytes of the next validator set, base64.
    pub next_set: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusPart {
    pub block: CertifiedBlock,
    /// Canonical state proof for the record's key against `block`'s `state_root`, base64.
    pub state_proof: String,
}

/// What a valid bundle proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub record: SignedRecord,
    pub id: RecordId,
    pub index: u64,
    pub agency: String,
    pub header: Header,
    /// Power that signed the record's checkpoint, of the total.
    pub power: u64,
    pub total_power: u64,
    pub signers: usize,
    pub status: Option<CurrentStatus>,
}

/// The key's state at the status block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentStatus {
    pub height: u64,
    pub time_ms: u64,
    /// The key's head there: this record (current or revoked by it), or a later one.
    pub head: Head,
}

impl CurrentStatus {
    /// Words for the auditor: current, superseded, or revoked.
    pub fn describe(&self, id: &RecordId) -> String {
        match (self.head.id == *id, self.head.status) {
            (true, Status::Active) => format!("current as of height {}", self.height),
            (true, Status::Revoked) => format!("this revocation is current as of height {}", self.height),
            (false, Status::Active) => {
                format!("superseded by {} (version {}) as of height {}", self.head.id, self.head.version, self.height)
            }
            (false, Status::Revoked) => {
                format!("revoked at index {} by {} as of height {}", self.head.index, self.head.id, self.height)
            }
        }
    }
}

pub fn b64_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

/// Pretty JSON with a final newline: how bundles and consistency proofs are written.
fn to_json_text<T: Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("proof types serialise");
    s.push('\n');
    s
}

/// Parses a bundle or consistency proof of at most `BUNDLE_BYTES_MAX` bytes.
fn from_json_text<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Error> {
    if text.len() > BUNDLE_BYTES_MAX {
        return Err(fail(Check::Format, format!("{} bytes is over the limit of {BUNDLE_BYTES_MAX}", text.len())));
    }
    serde_json::from_str(text).map_err(|e| fail(Check::Format, e.to_string()))
}

impl Bundle {
    pub fn to_json(&self) -> String {
        to_json_text(self)
    }

    pub fn from_json(text: &str) -> Result<Self, Error> {
        from_json_text(text)
    }

    /// The C2SP tlog-proof (c2sp.org/tlog-proof@v1) of the record's inclusion:
    /// standard transparency tooling checks it with the validators' verifier keys.
    ///
    /// Its lines are the bundle's own, so they are held to their form first:
    /// at most 64 path hashes, each the base64 of 32 bytes, and a checkpoint
    /// that parses as a signed note. Anything else (a line break smuggled into a
    /// hash, say) is refused rather than written out. The signatures and the
    /// path are not verified here: `verify` does that, and so does the tooling.
    pub fn to_tlog_proof(&self) -> Result<String, Error> {
        check_inclusion(&self.log_path, Check::LogInclusion, |_| Ok(()))?;
        SignedNote::parse(&self.block.checkpoint).map_err(|e| fail(Check::Checkpoint, e.to_string()))?;
        let mut s = format!("c2sp.org/tlog-proof@v1\nindex {}\n", self.index);
        for h in &self.log_path {
            s.push_str(h);
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.block.checkpoint);
        Ok(s)
    }
}

/// Checks a bundle against `genesis` (and, with `document`, the anchored file).
/// Every check runs in a fixed order; the first failure is returned.
pub fn verify(bundle: &Bundle, genesis: &Genesis, document: Option<&[u8]>) -> Result<Verified, Error> {
    check_envelope((&bundle.format, BUNDLE_FORMAT), &bundle.chain_id, genesis)?;

    // The record itself.
    let bytes = decode_b64(&bundle.record.bytes, Check::RecordBytes, "record bytes")?;
    // Decoded at the largest size any charter allows; the size rule of the charter in force is checked below.
    let record =
        SignedRecord::from_bytes_max(&bytes, RECORD_BYTES_CAP).map_err(|e| fail(Check::RecordBytes, e.to_string()))?;
    let id = SignedRecord::id_of_bytes(&bytes);
    if record.record.chain_id != genesis.chain_id {
        return Err(fail(Check::ChainId, format!("the record is signed for chain {:?}", record.record.chain_id)));
    }
    if bundle.record.decoded != RecordView::of(&record, &id) {
        return Err(fail(
            Check::RecordView,
            "the decoded view differs from the record bytes; trust the bytes, not the view",
        ));
    }
    record.verify_signature().map_err(|e| fail(Check::RecordSignature, e.to_string()))?;

    // The record's block, certified by the set in force at its height.
    let header = decode_header(&bundle.block.header)?;
    let mut sets = SetWalk::new(genesis, &bundle.set_changes)?;
    let set = sets.at(header.height.0)?;
    let (power, signers) = check_certified(&header, &bundle.block.checkpoint, &set, &genesis.chain_id)?;

    // The submitter, judged by the charter (or validator set) in force at that height.
    let charter = match &bundle.charter {
        None => genesis.charter(),
        Some(b64) => {
            let bytes = decode_b64(b64, Check::Charter, "charter bytes")?;
            codec::decode(&bytes, CHARTER_BYTES_MAX).map_err(|e| fail(Check::Charter, e.to_string()))?
        }
    };
    if charter.hash() != header.charter_hash {
        return Err(fail(
            Check::Charter,
            format!(
                "height {} names charter {}; the bundle carries {}",
                header.height.0,
                hex::encode(header.charter_hash),
                hex::encode(charter.hash())
            ),
        ));
    }
    let agency = check_submitter(&record, &charter, &set, header.height.0)?;
    check_form(&bytes, &record, &charter.params, header.height.0)?;

    // Where the record sits.
    check_inclusion(&bundle.block_path, Check::BlockInclusion, |path| {
        if bundle.block_position >= bundle.block_records || bundle.block_records > header.log_size {
            return Err(fail(
                Check::BlockInclusion,
                format!(
                    "position {} of {} records is impossible in a log of {}",
                    bundle.block_position, bundle.block_records, header.log_size
                ),
            ));
        }
        if bundle.index != header.log_size - bundle.block_records + bundle.block_position {
            return Err(fail(
                Check::BlockInclusion,
                format!(
                    "index {} is not position {} of the block's {} records, which end at log size {}",
                    bundle.index, bundle.block_position, bundle.block_records, header.log_size
                ),
            ));
        }
        Ok(merkle::verify_inclusion(&id.0, bundle.block_position, bundle.block_records, path, &header.records_root)?)
    })?;
    check_inclusion(&bundle.log_path, Check::LogInclusion, |path| {
        Ok(merkle::verify_inclusion(&id.0, bundle.index, header.log_size, path, &header.log_root)?)
    })?;

    if let Some(doc) = document {
        check_document(&record, doc)?;
    }

    let status = match &bundle.status {
        None => None,
        Some(part) => Some(check_status(part, &record, &header, &mut sets, &genesis.chain_id)?),
    };
    if !sets.all_used() {
        return Err(fail(Check::SetChain, "the bundle carries validator-set changes past its highest block"));
    }
    Ok(Verified {
        agency,
        record,
        id,
        index: bundle.index,
        total_power: set.total_power(),
        header,
        power,
        signers,
        status,
    })
}

/// Whether the record's submitter could write its namespace at `height`:
/// an officer of the agency owning it, or for governance records a validator
/// in force. Returns the agency's name (`annal.gov` for governance).
fn check_submitter(record: &SignedRecord, charter: &Charter, set: &ValidatorSet, height: u64) -> Result<String, Error> {
    let rules = Rules::of(&record.record.chain_id, charter, set);
    rules
        .writer(&record.record.fields())
        .map(str::to_string)
        .map_err(|e| fail(Check::Submitter, format!("at height {height}: {e}")))
}

/// The record's size and shape under the limits of the charter in force at
/// `height`, as the nodes held it: its encoding within `record_bytes_max` (they
/// decode no longer record) and its fields within the rest (`Record::check_form`).
/// A block certified by a set that skipped these does not pass for well formed.
fn check_form(bytes: &[u8], record: &SignedRecord, params: &Params, height: u64) -> Result<(), Error> {
    if bytes.len() > params.record_bytes_max {
        return Err(fail(
            Check::RecordBytes,
            format!(
                "the record is {} bytes; the charter in force at height {height} allows {} (record_bytes_max)",
                bytes.len(),
                params.record_bytes_max
            ),
        ));
    }
    record.record.check_form(params).map_err(|e| fail(Check::RecordBytes, format!("at height {height}: {e}")))
}

/// The first two checks of every proof file: its format line and its chain.
fn check_envelope((format, want): (&str, &str), chain_id: &str, genesis: &Genesis) -> Result<(), Error> {
    if format != want {
        return Err(fail(Check::Format, format!("format is {format:?}; this verifier reads {want:?}")));
    }
    if chain_id != genesis.chain_id {
        return Err(fail(Check::ChainId, format!("the proof is for {chain_id:?}, genesis is {:?}", genesis.chain_id)));
    }
    Ok(())
}

fn decode_b64(s: &str, check: Check, what: &str) -> Result<Vec<u8>, Error> {
    B64.decode(s).map_err(|e| fail(check, format!("{what} are not base64: {e}")))
}

fn decode_header(b64: &str) -> Result<Header, Error> {
    let bytes = decode_b64(b64, Check::HeaderBytes, "header bytes")?;
    Header::from_bytes(&bytes).map_err(|e| fail(Check::HeaderBytes, e.to_string()))
}

/// Checks that `header` names `set` and that the signed checkpoint is over
/// exactly this header and carries more than 2/3 of `set`'s power.
fn check_certified(header: &Header, note: &str, set: &ValidatorSet, chain_id: &str) -> Result<(u64, usize), Error> {
    if header.chain_id != chain_id {
        return Err(fail(Check::HeaderBytes, format!("header is for chain {:?}", header.chain_id)));
    }
    if header.validators_hash != set.hash() {
        return Err(fail(
            Check::ValidatorSet,
            format!(
                "height {} names validator set {}, but the set in force there is {}",
                header.height.0,
                hex::encode(header.validators_hash),
                hex::encode(set.hash())
            ),
        ));
    }
    let signed = SignedNote::parse(note).map_err(|e| fail(Check::Checkpoint, e.to_string()))?;
    let checkpoint: Checkpoint =
        set.verify_checkpoint(chain_id, &signed).map_err(|e| fail(Check::Checkpoint, e.to_string()))?;
    if checkpoint != header.checkpoint() {
        return Err(fail(
            Check::Checkpoint,
            format!("the signed checkpoint is for another block or log than height {}", header.height.0),
        ));
    }
    let keys = set.verifier_keys();
    let signers = signed.verify(&keys).map_err(|e| fail(Check::Checkpoint, e.to_string()))?;
    let power = signers.iter().map(|&i| set.validators[i].power).sum();
    Ok((power, signers.len()))
}

fn check_inclusion(
    path: &[String],
    check: Check,
    verify: impl FnOnce(&[Hash]) -> Result<(), Error>,
) -> Result<(), Error> {
    if path.len() > 64 {
        return Err(fail(check, format!("path has {} hashes; no tree needs more than 64", path.len())));
    }
    let hashes = path
        .iter()
        .map(|h| crate::note::decode_hash_b64(h, "path hash"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(check, e.to_string()))?;
    verify(&hashes).map_err(|e| match e {
        Error::Proof { .. } => e,
        other => fail(check, other.to_string()),
    })
}

fn check_document(record: &SignedRecord, doc: &[u8]) -> Result<(), Error> {
    use sha2::Digest;
    check_document_digest(record, doc.len() as u64, Some(&sha2::Sha256::digest(doc).into()))
}

/// Checks a document of `size` bytes with SHA-256 `sha256` against what
/// `record` anchors; without `sha256`, only its size (a file of another
/// size fails before anyone reads it).
pub fn check_document_digest(record: &SignedRecord, size: u64, sha256: Option<&Hash>) -> Result<(), Error> {
    let Body::Document(anchor) = &record.record.body else {
        return Err(fail(Check::Document, "the record has an inline body, not a document anchor"));
    };
    if size != anchor.size || sha256.is_some_and(|d| *d != anchor.sha256) {
        let digest = sha256.map_or("not computed".to_string(), hex::encode);
        return Err(fail(
            Check::Document,
            format!(
                "the file has {size} bytes and SHA-256 {digest}; the record anchors {} bytes with SHA-256 {}",
                anchor.size,
                hex::encode(anchor.sha256)
            ),
        ));
    }
    Ok(())
}

fn check_status(
    part: &StatusPart,
    record: &SignedRecord,
    block: &Header,
    sets: &mut SetWalk,
    chain_id: &str,
) -> Result<CurrentStatus, Error> {
    // The status block is checked as the record's block is; its failures say
    // which block they are about (a bad signature here is not the record's).
    let header = decode_header(&part.block.header).map_err(|e| said_of(e, "the status block, not the record's"))?;
    if header.height < block.height {
        return Err(fail(
            Check::Status,
            format!("status is as of height {}, before the record's block {}", header.height.0, block.height.0),
        ));
    }
    let at = header.height.0;
    let set = sets
        .at(at)
        .map_err(|e| said_of(e, &format!("a validator-set change on the way to the status block at height {at}")))?;
    check_certified(&header, &part.block.checkpoint, &set, chain_id)
        .map_err(|e| said_of(e, &format!("the status block at height {at}, not the record's")))?;
    let bytes = decode_b64(&part.state_proof, Check::Status, "state proof bytes")?;
    let proof = StateProof::from_bytes(&bytes).map_err(|e| fail(Check::Status, e.to_string()))?;
    let key = StateKey { namespace: record.record.namespace.clone(), key: record.record.key.clone() };
    let head =
        proof.verify(&header.state_root, &key).map_err(|e| fail(Check::Status, e.to_string()))?.ok_or_else(|| {
            fail(Check::Status, format!("the state proof says {}/{} has no record", key.namespace, key.key))
        })?;
    if head.version < record.record.version {
        return Err(fail(
            Check::Status,
            format!("the key's head is version {}, older than this record's {}", head.version, record.record.version),
        ));
    }
    Ok(CurrentStatus { height: header.height.0, time_ms: header.time_ms, head })
}

/// A proof failure `e` with `what` it is about put before its detail; other errors as they are.
fn said_of(e: Error, what: &str) -> Error {
    match e {
        Error::Proof { check, detail } => Error::Proof { check, detail: format!("{what}: {detail}") },
        other => other,
    }
}

/// The format line of a version-1 consistency proof.
pub const CONSISTENCY_FORMAT: &str = "annal-consistency/v1";

/// Proof that the log at a later certified block extends the log at an earlier one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consistency {
    /// Always `annal-consistency/v1`.
    pub format: String,
    pub chain_id: String,
    pub old: CertifiedBlock,
    pub new: CertifiedBlock,
    /// RFC 6962 consistency proof from the old log size to the new (base64 hashes).
    pub path: Vec<String>,
    /// Certified validator-set changes from genesis up to the new block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_changes: Vec<SetChange>,
}

impl Consistency {
    pub fn to_json(&self) -> String {
        to_json_text(self)
    }

    pub fn from_json(text: &str) -> Result<Self, Error> {
        from_json_text(text)
    }
}

/// Checks a consistency proof against `genesis`; when the auditor holds the old
/// checkpoint (`held`, a signed note), also that the proof starts from it.
/// Returns the old and new checkpoints.
pub fn verify_consistency(
    proof: &Consistency,
    genesis: &Genesis,
    held: Option<&str>,
) -> Result<(Checkpoint, Checkpoint), Error> {
    check_envelope((&proof.format, CONSISTENCY_FORMAT), &proof.chain_id, genesis)?;
    let old = decode_header(&proof.old.header).map_err(|e| said_of(e, "the old block"))?;
    let new = decode_header(&proof.new.header).map_err(|e| said_of(e, "the new block"))?;
    if old.height > new.height {
        return Err(fail(
            Check::Consistency,
            format!("old height {} is above new height {}", old.height.0, new.height.0),
        ));
    }
    let mut sets = SetWalk::new(genesis, &proof.set_changes)?;
    let at = |which: &str, h: &Header| format!("the {which} block at height {}", h.height.0);
    let old_set = sets.at(old.height.0).map_err(|e| said_of(e, &format!("the way to {}", at("old", &old))))?;
    check_certified(&old, &proof.old.checkpoint, &old_set, &genesis.chain_id)
        .map_err(|e| said_of(e, &at("old", &old)))?;
    let new_set = sets.at(new.height.0).map_err(|e| said_of(e, &format!("the way to {}", at("new", &new))))?;
    check_certified(&new, &proof.new.checkpoint, &new_set, &genesis.chain_id)
        .map_err(|e| said_of(e, &at("new", &new)))?;
    if !sets.all_used() {
        return Err(fail(Check::SetChain, "the proof carries validator-set changes past its new block"));
    }
    if let Some(held) = held {
        let held = SignedNote::parse(held).map_err(|e| fail(Check::Checkpoint, format!("the held checkpoint: {e}")))?;
        if held.text != old.checkpoint().to_text() {
            return Err(fail(Check::Consistency, "the proof starts from another checkpoint than the one held"));
        }
    }
    check_inclusion(&proof.path, Check::Consistency, |path| {
        Ok(merkle::verify_consistency(old.log_size, new.log_size, path, &old.log_root, &new.log_root)?)
    })?;
    Ok((old.checkpoint(), new.checkpoint()))
}

/// How a verified block stands to a checkpoint the auditor holds ([`tie_to_held`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldTie {
    /// The held checkpoint is the block's own.
    Same,
    /// The held checkpoint is later: its log contains the block's log.
    Contains { height: u64, size: u64 },
    /// The held checkpoint is earlier: the block's log extends it.
    Extended { height: u64, size: u64 },
}

/// Ties the verified block `header` (a bundle's, as [`verify`] returns it) to the
/// checkpoint the auditor holds (`held`, a signed note saved earlier): the held
/// checkpoint must be the block's own, or `consistency` must prove, under
/// `genesis`, that one of the two logs extends the other, starting or ending at
/// exactly these two checkpoints. A record older than the held checkpoint is
/// then in the held log, so no alternative history certified by a former
/// validator set can pass; a newer record's log extends the held one, which
/// rules out histories that fork at or below the held checkpoint (sets that
/// left office before it), not a fork certified later by a set that left
/// after it.
pub fn tie_to_held(
    header: &Header,
    held: &str,
    consistency: Option<&Consistency>,
    genesis: &Genesis,
) -> Result<HeldTie, Error> {
    let note = SignedNote::parse(held).map_err(|e| fail(Check::Consistency, format!("the held checkpoint: {e}")))?;
    let held_at = Checkpoint::parse(&note.text)
        .map_err(|e| fail(Check::Consistency, format!("the held checkpoint: {e}")))?
        .block
        .height;
    let own = header.checkpoint().to_text();
    let h = header.height.0;
    if held_at == h {
        return if note.text == own {
            Ok(HeldTie::Same)
        } else {
            Err(fail(
                Check::Consistency,
                format!(
                    "the held checkpoint is another block at height {h} than the record's: the two histories differ"
                ),
            ))
        };
    }
    tie_inputs_fit(h, held_at, consistency).map_err(|e| fail(Check::Consistency, e))?;
    let proof = consistency.expect("tie_inputs_fit asks for a proof between two heights");
    let (old, new) = verify_consistency(proof, genesis, None)?;
    let (earlier, later) = if held_at < h { (&note.text, &own) } else { (&own, &note.text) };
    if old.to_text() != *earlier || new.to_text() != *later {
        return Err(fail(
            Check::Consistency,
            format!(
                "the consistency proof from height {} to {} is between other blocks than the record's ({h}) and the \
                 held checkpoint ({held_at}): the histories differ",
                old.block.height, new.block.height
            ),
        ));
    }
    Ok(if held_at < h {
        HeldTie::Extended { height: old.block.height, size: old.size }
    } else {
        HeldTie::Contains { height: new.block.height, size: new.size }
    })
}

/// Whether `consistency` is what a tie between a block at height `at` and a checkpoint
/// held at `held_at` needs, by heights alone (before anything is verified): none when
/// they are equal, else one from the lower height to the higher. Ends whose height
/// cannot be read are left to the proof's own checks. The error says what is missing.
pub fn tie_inputs_fit(at: u64, held_at: u64, consistency: Option<&Consistency>) -> Result<(), String> {
    if at == held_at {
        return Ok(());
    }
    let (low, high) = (at.min(held_at), at.max(held_at));
    let Some(p) = consistency else {
        return Err(format!(
            "the held checkpoint is at height {held_at} and the record's block at {at}: a consistency proof between \
             the two is needed (give --consistency: annal prove --held CHECKPOINT --consistency FILE saves one; \
             GET /v1/consistency?from={low}&to={high})"
        ));
    };
    let height = |note: &str| Some(Checkpoint::parse(&SignedNote::parse(note).ok()?.text).ok()?.block.height);
    match (height(&p.old.checkpoint), height(&p.new.checkpoint)) {
        (Some(old), Some(new)) if (old, new) != (low, high) => Err(format!(
            "the consistency proof runs from height {old} to {new}, not between the record's block ({at}) and the \
             held checkpoint ({held_at})"
        )),
        _ => Ok(()),
    }
}

/// Walks the certified validator-set changes from the genesis set, in height order.
struct SetWalk<'a> {
    changes: &'a [SetChange],
    /// The set in force after `next` changes have been applied.
    current: ValidatorSet,
    /// Height of the last change applied (the current set certifies heights above it).
    since: u64,
    next: usize,
    chain_id: String,
}

impl<'a> SetWalk<'a> {
    fn new(genesis: &Genesis, changes: &'a [SetChange]) -> Result<Self, Error> {
        if changes.len() > SET_CHANGES_MAX {
            return Err(fail(
                Check::SetChain,
                format!("{} changes is over the limit of {SET_CHANGES_MAX}", changes.len()),
            ));
        }
        Ok(SetWalk { changes, current: genesis.validator_set(), since: 0, next: 0, chain_id: genesis.chain_id.clone() })
    }

    /// The set that certifies `height`, applying every change below it.
    /// Heights must be asked in increasing order.
    fn at(&mut self, height: u64) -> Result<ValidatorSet, Error> {
        assert!(height > self.since || self.next == 0, "heights are asked in order");
        while let Some(change) = self.changes.get(self.next) {
            let which = self.next;
            let header = decode_header(&change.block.header)
                .map_err(|e| fail(Check::SetChain, format!("set_changes[{which}]'s header: {e}")))?;
            if header.height.0 >= height {
                break;
            }
            if header.height.0 <= self.since && self.next > 0 {
                return Err(fail(Check::SetChain, format!("change at height {} is out of order", header.height.0)));
            }
            check_certified(&header, &change.block.checkpoint, &self.current, &self.chain_id)
                .map_err(|e| fail(Check::SetChain, format!("change at height {}: {e}", header.height.0)))?;
            let named = |e: Error| said_of(e, &format!("set_changes[{which}] (height {})", header.height.0));
            let bytes = decode_b64(&change.next_set, Check::SetChain, "next set bytes").map_err(named)?;
            let next: ValidatorSet =
                codec::decode(&bytes, 1 << 20).map_err(|e| named(fail(Check::SetChain, format!("next set: {e}"))))?;
            next.check_bounds()
                .map_err(|e| fail(Check::SetChain, format!("the set announced at height {}: {e}", header.height.0)))?;
            if next.hash() != header.next_validators_hash || header.next_validators_hash == header.validators_hash {
                return Err(fail(
                    Check::SetChain,
                    format!("the block at height {} does not announce this set as its next", header.height.0),
                ));
            }
            self.current = next;
            self.since = header.height.0;
            self.next += 1;
        }
        Ok(self.current.clone())
    }

    fn all_used(&self) -> bool {
        self.next == self.changes.len()
    }
}

/// Building bundles from a node's store.
#[cfg(feature = "store")]
mod build {
    use super::*;
    use crate::block::Height;
    use crate::merkle::MemoryNodes;
    use crate::store::Store;

    fn store_err(store: &Store, detail: String) -> Error {
        Error::Store { path: store.path().display().to_string(), detail }
    }

    /// The validator set that certifies `height`: the genesis set, changed by every change below it.
    pub fn set_at(store: &Store, genesis: &Genesis, height: Height) -> Result<ValidatorSet, Error> {
        Ok(store.set_in_force(height)?.unwrap_or_else(|| genesis.validator_set()))
    }

    /// The header of `height` with its certificate as a signed checkpoint.
    pub fn certified_block(
        store: &Store,
        genesis: &Genesis,
        height: Height,
    ) -> Result<(Header, CertifiedBlock), Error> {
        let header =
            store.header(height)?.ok_or_else(|| store_err(store, format!("no header at height {}", height.0)))?;
        let cert = store.certificate(height)?.ok_or(Error::NotCertified { height: height.0 })?;
        let set = set_at(store, genesis, height)?;
        let block = CertifiedBlock {
            header: B64.encode(header.to_bytes()),
            checkpoint: cert.to_note(&header, &set).to_string(),
        };
        Ok((header, block))
    }

    /// The certified validator-set changes below `height`, as a bundle carries them.
    fn set_changes_below(store: &Store, genesis: &Genesis, height: Height) -> Result<Vec<SetChange>, Error> {
        // Each change is certified by the set before it: genesis's for the first.
        let mut set = genesis.validator_set();
        let mut out = Vec::new();
        for (h, cert, next) in store.set_changes(Height(height.0.saturating_sub(1)))? {
            let block =
                CertifiedBlock { header: B64.encode(h.to_bytes()), checkpoint: cert.to_note(&h, &set).to_string() };
            out.push(SetChange { block, next_set: B64.encode(codec::encode(&next)) });
            set = next;
        }
        Ok(out)
    }

    /// The consistency proof from the log at height `from` to the log at height `to`.
    pub fn consistency(store: &Store, genesis: &Genesis, from: Height, to: Height) -> Result<Consistency, Error> {
        if from > to {
            return Err(store_err(store, format!("from height {} is above to height {}", from.0, to.0)));
        }
        let (old_header, old) = certified_block(store, genesis, from)?;
        let (new_header, new) = certified_block(store, genesis, to)?;
        let path = store.consistency_proof(old_header.log_size, new_header.log_size)?;
        Ok(Consistency {
            format: CONSISTENCY_FORMAT.into(),
            chain_id: genesis.chain_id.clone(),
            old,
            new,
            path: b64_hashes(&path),
            set_changes: set_changes_below(store, genesis, to)?,
        })
    }

    /// The proof bundle of record `id`, with a status proof as of the tip when
    /// `with_status`; the tip must then be certified ([`bundle_parts`] for a
    /// caller that can wait for its certificate).
    pub fn bundle(store: &Store, genesis: &Genesis, id: &RecordId, with_status: bool) -> Result<Bundle, Error> {
        let (mut bundle, pinned) = bundle_parts(store, genesis, id, with_status)?;
        if let Some(pinned) = pinned {
            attach_status(store, genesis, &mut bundle, pinned)?;
        }
        Ok(bundle)
    }

    /// A state proof for a bundle's record's key, taken at the tip at `height`
    /// ([`bundle_parts`]) and still to be joined with that block's certificate
    /// ([`attach_status`]). State proofs are served as of the tip only (ADR
    /// 0003); under load the tip moves on before its certificate is collected,
    /// so a status proof that asked for a certified tip would rarely be served.
    #[derive(Clone, Debug)]
    pub struct PinnedStatus {
        pub height: Height,
        state_proof: String,
    }

    /// Record `id`'s bundle without its status, and, when `with_status`, the
    /// state proof of its key at the tip, both read from one view of `store`.
    pub fn bundle_parts(
        store: &Store,
        genesis: &Genesis,
        id: &RecordId,
        with_status: bool,
    ) -> Result<(Bundle, Option<PinnedStatus>), Error> {
        let index = store.index_of(id)?.ok_or_else(|| store_err(store, format!("no record with id {id}")))?;
        let height = store.height_of_index(index)?;
        let (header, block) = certified_block(store, genesis, height)?;
        let first = store.first_index(height)?;
        // The block's records in one read (its span in a segment), the proven one among them.
        let records = store.records_in(first, header.log_size)?;
        let position = index - first;
        let bytes = &records[position as usize];
        let record = SignedRecord::from_bytes_max(bytes, RECORD_BYTES_CAP)?;
        let leaves: Vec<Hash> = records.iter().map(|b| merkle::leaf_hash(b)).collect();
        let block_path = merkle::inclusion_proof(&MemoryNodes::from_leaves(&leaves), position, leaves.len() as u64)
            .map_err(|e| store_err(store, e.to_string()))?;
        let log_path = store.inclusion_proof(index, header.log_size)?;
        let pinned = if with_status {
            let key = StateKey { namespace: record.record.namespace.clone(), key: record.record.key.clone() };
            let state_proof = B64.encode(store.state_proof(&key)?.to_bytes());
            Some(PinnedStatus { height: store.tip().height, state_proof })
        } else {
            None
        };
        let charter = store.charter_at(height)?.map(|c| B64.encode(codec::encode(&c)));
        let bundle = Bundle {
            format: BUNDLE_FORMAT.into(),
            chain_id: genesis.chain_id.clone(),
            record: RecordPart { bytes: B64.encode(bytes), decoded: RecordView::of(&record, id) },
            index,
            block,
            block_position: position,
            block_records: leaves.len() as u64,
            block_path: b64_hashes(&block_path),
            log_path: b64_hashes(&log_path),
            // The walk up to the status block when there is one (set by `attach_status`).
            set_changes: if with_status { Vec::new() } else { set_changes_below(store, genesis, height)? },
            charter,
            status: None,
        };
        Ok((bundle, pinned))
    }

    /// Joins a status proof pinned at `pinned.height` to `bundle`, with that
    /// block's certificate, which must have arrived by now (else
    /// [`Error::NotCertified`]), and the set changes up to it.
    pub fn attach_status(
        store: &Store,
        genesis: &Genesis,
        bundle: &mut Bundle,
        pinned: PinnedStatus,
    ) -> Result<(), Error> {
        let (_, block) = certified_block(store, genesis, pinned.height)?;
        bundle.set_changes = set_changes_below(store, genesis, pinned.height)?;
        bundle.status = Some(StatusPart { block, state_proof: pinned.state_proof });
        Ok(())
    }
}

#[cfg(feature = "store")]
pub use build::{attach_status, bundle, bundle_parts, certified_block, consistency, set_at, PinnedStatus};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesis::Params;
    use crate::keys::SecretKey;
    use crate::record::{Op, Record};

    /// Goal: a decoded view naming a metadata key twice is refused (serde would keep the
    /// second value, which may match the record, while a reader sees the first).
    #[test]
    fn a_view_with_a_metadata_key_twice_is_refused() {
        let view = |metadata: &str| {
            format!(
                r#"{{"id": "00", "namespace": "n", "key": "k", "op": "publish", "version": 1, "submitter": "00",
                    "nonce": 1, "body": {{"inline": {{"size": 0, "sha256": "00"}}}}, "metadata": {metadata}}}"#
            )
        };
        let read: RecordView = serde_json::from_str(&view(r#"{"basis": "Act 12", "court": "high"}"#)).unwrap();
        assert_eq!(read.metadata.len(), 2);
        let e = serde_json::from_str::<RecordView>(&view(r#"{"basis": "Act 99 (forged)", "basis": "Act 12"}"#))
            .unwrap_err();
        assert!(e.to_string().contains("the metadata key \"basis\" is given twice"), "{e}");
    }

    /// Goal (PROOFS.md step 9, session 23): the verifier holds the record to the
    /// limits of the charter in force at its height as the nodes do: its fields
    /// (it did) and its whole encoding's `record_bytes_max` (it did not).
    #[test]
    fn a_record_past_the_charter_limits_is_refused() {
        let officer = SecretKey::from_seed([21; 32]);
        let params = Params { body_bytes_max: 1000, record_bytes_max: 600, ..Params::default() };
        let record = |body: usize| {
            Record {
                chain_id: "annal-test".into(),
                namespace: "land".into(),
                key: "parcel/1".into(),
                op: Op::Publish,
                body: Body::Inline(vec![7; body]),
                metadata: BTreeMap::new(),
                supersedes: None,
                version: 1,
                submitter: officer.public(),
                nonce: 1,
            }
            .sign(&officer)
        };
        let check = |params: &Params, body: usize| {
            let r = record(body);
            check_form(&r.to_bytes(), &r, params, 9)
        };
        let refused = |params: &Params, body: usize| match check(params, body) {
            Err(Error::Proof { check: Check::RecordBytes, detail }) => detail,
            other => panic!("a record past the charter's limits passed: {other:?}"),
        };
        let fits = (0..1000).rev().find(|&n| record(n).to_bytes().len() <= 600).unwrap();
        check(&params, fits).expect("a record of exactly record_bytes_max");
        let detail = refused(&params, fits + 1);
        assert!(detail.contains("at height 9 allows 600 (record_bytes_max)"), "{detail}");
        let roomy = Params { body_bytes_max: 1000, ..Params::default() };
        check(&roomy, 1000).expect("a body of exactly body_bytes_max");
        let detail = refused(&roomy, 1001);
        assert!(detail.contains("at height 9") && detail.contains("body"), "{detail}");
    }
}
