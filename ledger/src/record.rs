//! The record: what an agency officer signs and the ledger appends.
//!
//! A record publishes, amends or revokes one `(namespace, key)`. Its body is
//! either inline bytes or an anchor to a document the agency keeps (the
//! document's SHA-256, size and media type). The submitter signs the
//! canonical bytes of the unsigned record under the domain `annal/record/v1`;
//! the record id is the RFC 6962 leaf hash of the canonical bytes of the
//! signed record, so the id is also the record's leaf in the global log.

use std::collections::BTreeMap;
use std::fmt;

use bincode::{Decode, Encode};

use crate::codec::{self, Canonical};
use crate::error::Error;
use crate::genesis::Params;
use crate::keys::{Domain, PublicKey, SecretKey, Signature};
use crate::merkle::{self, Hash};
pub use crate::record_ref::RecordRef;
use crate::record_ref::{self, BodyRef, Layout, MetadataRef};

/// A record id: the RFC 6962 leaf hash of the signed record's canonical bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Encode, Decode)]
pub struct RecordId(pub Hash);

/// Hash maps (a node's pool, a block's ids at execution) hash an id by its
/// first 8 bytes only: an id is a SHA-256 output, so those are as good a key
/// as all 32, and the keyed SipHash of std's maps does one round instead of
/// five (admission, proposals and commits hash each id several times;
/// docs/BENCHMARKS.md, session 17). Ids that share 8 bytes would have to be
/// found by grinding SHA-256, and still only collide with each other.
impl std::hash::Hash for RecordId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes")));
    }
}

impl RecordId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Result<Self, Error> {
        Ok(RecordId(crate::keys::hex_array(s, "record id")?))
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({})", self.to_hex())
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Op {
    /// The first version of a key.
    Publish,
    /// A new version of a key; `supersedes` names the current head.
    Amend,
    /// Ends a key; `supersedes` names the current head, the body gives the reason.
    Revoke,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Publish => "publish",
            Op::Amend => "amend",
            Op::Revoke => "revoke",
        }
    }
}

/// A file the agency keeps, pinned by its digest.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct DocumentAnchor {
    pub sha256: Hash,
    pub size: u64,
    pub media_type: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Body {
    Inline(Vec<u8>),
    Document(DocumentAnchor),
}

/// The unsigned record. Its canonical bytes are what the submitter signs.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Record {
    pub chain_id: String,
    pub namespace: String,
    pub key: String,
    pub op: Op,
    pub body: Body,
    /// Legal basis, reference numbers and the like; ordered by key.
    pub metadata: BTreeMap<String, String>,
    pub supersedes: Option<RecordId>,
    /// The key's version this record makes: 1 for Publish, the head's version + 1 otherwise.
    /// Signed, so a proof of the record alone says which version it is.
    pub version: u64,
    pub submitter: PublicKey,
    /// Strictly increasing per submitter: a replayed record is refused.
    pub nonce: u64,
}

impl Canonical for Record {
    const KIND: &'static str = "record";
}

/// A record with its submitter's signature: the ledger's transaction.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SignedRecord {
    pub record: Record,
    pub signature: Signature,
}

impl Canonical for SignedRecord {
    const KIND: &'static str = "signed record";
}

impl Record {
    /// Signs the record with `key`; the record's `submitter` must be `key`'s public key.
    pub fn sign(self, key: &SecretKey) -> SignedRecord {
        assert_eq!(self.submitter, key.public(), "a record is signed by its submitter");
        let signature = key.sign(Domain::Record, &self.chain_id, &codec::encode(&self));
        SignedRecord { record: self, signature }
    }

    /// Checks the parts of a record that need no ledger state: sizes against the
    /// genesis limits, and the shape of names ([`RecordRef::check_form`]).
    pub fn check_form(&self, params: &Params) -> Result<(), Error> {
        self.fields().check_form(params)
    }

    /// The record's fields, borrowed.
    pub fn fields(&self) -> RecordRef<'_> {
        let body = match &self.body {
            Body::Inline(bytes) => BodyRef::Inline(bytes),
            Body::Document(d) => BodyRef::Document { sha256: d.sha256, size: d.size, media_type: &d.media_type },
        };
        RecordRef {
            chain_id: &self.chain_id,
            namespace: &self.namespace,
            key: &self.key,
            op: self.op,
            body,
            metadata: MetadataRef::Map(&self.metadata),
            supersedes: self.supersedes,
            version: self.version,
            submitter: self.submitter,
            nonce: self.nonce,
        }
    }
}

impl SignedRecord {
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes canonical bytes (refusing any over `params.record_bytes_max`).
    pub fn from_bytes(bytes: &[u8], params: &Params) -> Result<Self, Error> {
        Self::from_bytes_max(bytes, params.record_bytes_max)
    }

    /// Decodes canonical bytes of at most `bytes_max` bytes (never more than
    /// `genesis::RECORD_BYTES_CAP`) with the record parser
    /// ([`record_ref::parse`]), which the ledger and node use for signed
    /// records in place of `codec::decode` (it gives the same answers).
    pub fn from_bytes_max(bytes: &[u8], bytes_max: usize) -> Result<Self, Error> {
        Ok(Self::from_layout(bytes, &record_ref::parse(bytes, bytes_max)?))
    }

    /// The record id of these canonical bytes.
    pub fn id_of_bytes(bytes: &[u8]) -> RecordId {
        RecordId(merkle::leaf_hash(bytes))
    }

    pub fn id(&self) -> RecordId {
        Self::id_of_bytes(&self.to_bytes())
    }

    /// Checks the submitter's signature (one at a time; blocks verify in batches).
    pub fn verify_signature(&self) -> Result<(), Error> {
        let r = &self.record;
        if r.submitter.verify(Domain::Record, &r.chain_id, &codec::encode(r), &self.signature) {
            Ok(())
        } else {
            Err(Error::BadSignature { submitter: r.submitter.to_hex() })
        }
    }
}

/// A signed record's canonical bytes, checked once and read in place, with its id.
///
/// What the node passes from mempool entry to commit, so that no record is
/// decoded, re-encoded or hashed again on the way (each of those costs as
/// much as a small part of a signature check, per record, per node), and
/// none of its fields is copied out of the bytes ([`RecordRef`]).
#[derive(Clone, Debug)]
pub struct Encoded {
    bytes: Vec<u8>,
    layout: Layout,
    pub id: RecordId,
    /// The fingerprint of the rules this node saw the record pass
    /// `check_stateless` under (`Rules::check_and_mark`); `None` until then.
    pub(crate) checked_under: Option<crate::merkle::Hash>,
}

/// The same record: the same canonical bytes (whatever this node checked of it).
impl PartialEq for Encoded {
    fn eq(&self, other: &Encoded) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Encoded {}

impl Encoded {
    /// Checks canonical bytes (refusing any over `params.record_bytes_max`)
    /// and hashes their id.
    pub fn decode(bytes: Vec<u8>, params: &Params) -> Result<Encoded, Error> {
        Self::decode_max(bytes, params.record_bytes_max)
    }

    /// [`Encoded::decode`] with a size limit of `bytes_max` bytes (never more
    /// than `genesis::RECORD_BYTES_CAP`).
    pub fn decode_max(bytes: Vec<u8>, bytes_max: usize) -> Result<Encoded, Error> {
        let layout = record_ref::parse(&bytes, bytes_max)?;
        let id = SignedRecord::id_of_bytes(&bytes);
        Ok(Encoded { bytes, layout, id, checked_under: None })
    }

    /// The canonical bytes of the signed record.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The record's fields, read from its bytes.
    pub fn fields(&self) -> RecordRef<'_> {
        self.layout.fields(&self.bytes)
    }

    pub fn chain_id(&self) -> &str {
        self.layout.chain_id(&self.bytes)
    }

    pub fn submitter(&self) -> &PublicKey {
        self.layout.submitter()
    }

    pub fn nonce(&self) -> u64 {
        self.layout.nonce()
    }

    pub fn signature(&self) -> &Signature {
        self.layout.signature()
    }

    /// The owned signed record (for answers and tools; the node's path reads [`Encoded::fields`]).
    pub fn to_signed(&self) -> SignedRecord {
        SignedRecord::from_layout(&self.bytes, &self.layout)
    }

    /// The canonical bytes of the unsigned record: what the submitter signed
    /// (the signed encoding is these bytes followed by the 64 signature bytes).
    pub fn signed_part(&self) -> &[u8] {
        &self.bytes[..self.bytes.len() - SIGNATURE_BYTES]
    }
}

impl From<SignedRecord> for Encoded {
    fn from(record: SignedRecord) -> Encoded {
        let bytes = record.to_bytes();
        let layout = record_ref::parse_within(&bytes, usize::MAX).expect("an encoded record parses");
        let id = SignedRecord::id_of_bytes(&bytes);
        Encoded { bytes, layout, id, checked_under: None }
    }
}

/// The length of an ed25519 signature, which ends a signed record's encoding.
pub(crate) const SIGNATURE_BYTES: usize = 64;

pub(crate) fn check_size(field: &'static str, size: usize, max: usize) -> Result<(), Error> {
    if size > max {
        return Err(Error::RecordLimit { field, size, max });
    }
    Ok(())
}

/// Free text (keys, media types): non-empty, bounded, no control characters.
pub(crate) fn check_text(field: &'static str, s: &str, max: usize) -> Result<(), Error> {
    check_size(field, s.len(), max)?;
    if s.is_empty() {
        return Err(Error::RecordField { field, detail: "is empty".into() });
    }
    if has_control(s) {
        let c = s.chars().find(|c| c.is_control()).expect("has_control found one");
        return Err(Error::RecordField { field, detail: format!("contains control character {c:?}") });
    }
    Ok(())
}

/// Whether `s` holds a control character (`char::is_control`: U+0000–U+001F
/// and U+007F–U+009F), read as bytes: in UTF-8 those are the bytes below 0x20,
/// 0x7F, and the lead byte 0xC2 followed by 0x80–0x9F. Decoding every
/// character instead was most of the record's form check, which runs at
/// admission and again at execution (docs/BENCHMARKS.md, session 18).
fn has_control(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &c)| c < 0x20 || c == 0x7f || (c == 0xc2 && b.get(i + 1).is_some_and(|n| *n < 0xa0)))
}

/// Names (namespaces, chain ids): lowercase ASCII letters, digits, `.`, `_`, `-`.
pub fn check_name(field: &'static str, s: &str, max: usize) -> Result<(), Error> {
    check_size(field, s.len(), max)?;
    if s.is_empty() {
        return Err(Error::RecordField { field, detail: "is empty".into() });
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::RecordField {
            field,
            detail: format!("{s:?} contains {c:?}; use lowercase letters, digits, '.', '_' or '-'"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::has_control;

    #[test]
    fn control_characters_are_found_by_bytes_as_by_chars() {
        // Goal: the byte scan agrees with `char::is_control` on every character, alone and between others.
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            for s in [c.to_string(), format!("a{c}"), format!("{c}\u{a0}"), format!("é{c}ü")] {
                assert_eq!(has_control(&s), s.chars().any(|c| c.is_control()), "{s:?}");
            }
        }
    }
}
