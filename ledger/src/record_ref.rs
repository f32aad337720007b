//! A signed record read in place from its canonical bytes.
//!
//! [`parse`] makes one pass over the bytes and checks all that
//! `codec::decode` checks of a [`SignedRecord`] (format byte, size limit,
//! every length against what is left, UTF-8, enum and option tags, metadata
//! keys in strictly ascending order, no trailing byte), returning where each
//! field lies. [`RecordRef`] borrows the fields from there. The node keeps
//! records this way from admission to commit: decoding each into owned
//! strings, body and map and encoding it again to compare was ~4.5 % of a
//! validator at rate max, and freeing those parts ~1.8 % more
//! (docs/BENCHMARKS.md, session 23). The owned [`SignedRecord`] is built
//! from the same parse ([`SignedRecord::from_bytes`]), so the ledger reads
//! records one way, and `ledger/tests/encoding.rs` and the fuzz target
//! `record_decode` hold that way to bincode's answer on mutated encodings.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::codec::{self, FORMAT_V1};
use crate::error::Error;
use crate::genesis::{Params, RECORD_BYTES_CAP};
use crate::keys::{PublicKey, Signature};
use crate::merkle::Hash;
use crate::record::{check_name, check_size, check_text, Body, DocumentAnchor, Op, Record, RecordId, SignedRecord};

const KIND: &str = "signed record";

/// Where each field of a signed record lies in its canonical bytes.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    chain_id: Range<usize>,
    namespace: Range<usize>,
    key: Range<usize>,
    op: Op,
    body: BodyAt,
    /// The metadata entries' bytes (after the count), and the count.
    metadata: Range<usize>,
    metadata_entries: usize,
    supersedes: Option<RecordId>,
    version: u64,
    submitter: PublicKey,
    nonce: u64,
    signature: Signature,
}

#[derive(Clone, Debug)]
enum BodyAt {
    Inline(Range<usize>),
    Document { sha256: Hash, size: u64, media_type: Range<usize> },
}

// bincode reserves 48 bytes per metadata entry (a `(String, String)`) before
// reading them, and counts every byte read, against `codec`'s claim limit: at
// `RECORD_BYTES_CAP` (each entry at least 16 bytes) it never refuses a record
// that this parser takes, so the two agree on every record up to the cap.
const _: () = assert!(48 * (RECORD_BYTES_CAP / 16) + RECORD_BYTES_CAP <= codec::DECODE_CLAIM_MAX);

/// Checks that `bytes` are the canonical encoding of a signed record of at
/// most `bytes_max` bytes (and never more than [`RECORD_BYTES_CAP`], the most
/// any charter allows), and says where its fields lie. Errors are those
/// `codec::decode` gives, in its order: too long, empty, unknown format, a
/// malformed field, trailing bytes, and last a non-canonical form (metadata
/// keys out of order or repeated, which bincode would decode and encode back
/// differently).
pub(crate) fn parse(bytes: &[u8], bytes_max: usize) -> Result<Layout, Error> {
    parse_within(bytes, bytes_max.min(RECORD_BYTES_CAP))
}

/// [`parse`] without the cap: for bytes this process encoded from a record.
pub(crate) fn parse_within(bytes: &[u8], bytes_max: usize) -> Result<Layout, Error> {
    if bytes.len() > bytes_max {
        return Err(Error::TooLong { kind: KIND, len: bytes.len(), max: bytes_max });
    }
    let Some(&format) = bytes.first() else {
        return Err(Error::Empty { kind: KIND });
    };
    if format != FORMAT_V1 {
        return Err(Error::UnknownFormat { kind: KIND, format });
    }
    let mut r = Reader { bytes, at: 1 };
    let chain_id = r.text("chain_id")?;
    let namespace = r.text("namespace")?;
    let key = r.text("key")?;
    let op = match r.u32("op")? {
        0 => Op::Publish,
        1 => Op::Amend,
        2 => Op::Revoke,
        other => return Err(malformed(format!("op has no variant {other}"))),
    };
    let body = match r.u32("body")? {
        0 => BodyAt::Inline(r.bytes("the inline body")?),
        1 => BodyAt::Document {
            sha256: r.array("the document's sha256")?,
            size: r.u64("the document's size")?,
            media_type: r.text("the document's media type")?,
        },
        other => return Err(malformed(format!("body has no variant {other}"))),
    };
    let metadata_entries = r.len("the metadata's count")?;
    let metadata_start = r.at;
    let mut sorted = true;
    let mut previous: Option<Range<usize>> = None;
    for _ in 0..metadata_entries {
        let k = r.text("a metadata key")?;
        r.text("a metadata value")?;
        sorted &= previous.is_none_or(|p| bytes[p] < bytes[k.clone()]);
        previous = Some(k);
    }
    let metadata = metadata_start..r.at;
    let supersedes = match r.u8("supersedes")? {
        0 => None,
        1 => Some(RecordId(r.array("supersedes")?)),
        other => return Err(malformed(format!("supersedes has option tag {other}"))),
    };
    let version = r.u64("version")?;
    let submitter = PublicKey(r.array("submitter")?);
    let nonce = r.u64("nonce")?;
    let signature = Signature(r.array("signature")?);
    if r.at != bytes.len() {
        return Err(Error::TrailingBytes { kind: KIND, trailing: bytes.len() - r.at });
    }
    if !sorted {
        return Err(Error::NonCanonical { kind: KIND });
    }
    Ok(Layout {
        chain_id,
        namespace,
        key,
        op,
        body,
        metadata,
        metadata_entries,
        supersedes,
        version,
        submitter,
        nonce,
        signature,
    })
}

fn malformed(detail: String) -> Error {
    Error::Malformed { kind: KIND, detail }
}

/// Reads fixed-width little-endian fields and `u64`-length-prefixed ones.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<Range<usize>, Error> {
        let left = self.bytes.len() - self.at;
        if n > left {
            return Err(malformed(format!("{what} needs {n} bytes, {left} are left")));
        }
        self.at += n;
        Ok(self.at - n..self.at)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Error> {
        let at = self.take(N, what)?;
        Ok(self.bytes[at].try_into().expect("N bytes"))
    }

    fn u8(&mut self, what: &str) -> Result<u8, Error> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A length prefix, which must not claim more than the bytes left (each
    /// counted item takes at least one byte).
    fn len(&mut self, what: &str) -> Result<usize, Error> {
        let n = self.u64(what)?;
        let left = self.bytes.len() - self.at;
        match usize::try_from(n) {
            Ok(n) if n <= left => Ok(n),
            _ => Err(malformed(format!("{what} is {n}, {left} bytes are left"))),
        }
    }

    fn bytes(&mut self, what: &str) -> Result<Range<usize>, Error> {
        let n = self.len(what)?;
        self.take(n, what)
    }

    fn text(&mut self, what: &str) -> Result<Range<usize>, Error> {
        let at = self.bytes(what)?;
        if let Err(e) = std::str::from_utf8(&self.bytes[at.clone()]) {
            return Err(malformed(format!("{what} is not UTF-8: {e}")));
        }
        Ok(at)
    }
}

/// Text at `at` in bytes that [`parse`] checked (it found UTF-8 there).
fn parsed_text(bytes: &[u8], at: Range<usize>) -> &str {
    std::str::from_utf8(&bytes[at]).expect("checked when parsed")
}

/// A record's fields, borrowed from its canonical bytes ([`Layout`]) or from
/// an owned [`Record`] ([`Record::fields`]): what the rules, execution and
/// governance read.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    pub chain_id: &'a str,
    pub namespace: &'a str,
    pub key: &'a str,
    pub op: Op,
    pub body: BodyRef<'a>,
    pub metadata: MetadataRef<'a>,
    pub supersedes: Option<RecordId>,
    pub version: u64,
    pub submitter: PublicKey,
    pub nonce: u64,
}

#[derive(Clone, Copy, Debug)]
pub enum BodyRef<'a> {
    Inline(&'a [u8]),
    Document { sha256: Hash, size: u64, media_type: &'a str },
}

/// Metadata entries in key order: an owned record's map, or the entries'
/// canonical bytes (checked by [`parse`]).
#[derive(Clone, Copy, Debug)]
pub enum MetadataRef<'a> {
    Map(&'a BTreeMap<String, String>),
    Encoded(EncodedEntries<'a>),
}

/// Metadata entries as a parsed record's bytes hold them: made only by
/// parsing, so reading them back cannot fail.
#[derive(Clone, Copy, Debug)]
pub struct EncodedEntries<'a> {
    entries: usize,
    bytes: &'a [u8],
}

impl<'a> MetadataRef<'a> {
    pub fn len(&self) -> usize {
        match self {
            MetadataRef::Map(map) => map.len(),
            MetadataRef::Encoded(e) => e.entries,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let (map, encoded) = match *self {
            MetadataRef::Map(map) => (Some(map.iter().map(|(k, v)| (k.as_str(), v.as_str()))), None),
            MetadataRef::Encoded(EncodedEntries { entries, bytes }) => {
                let mut r = Reader { bytes, at: 0 };
                let mut text = move || parsed_text(bytes, r.bytes("metadata").expect("checked when parsed"));
                (None, Some((0..entries).map(move |_| (text(), text()))))
            }
        };
        map.into_iter().flatten().chain(encoded.into_iter().flatten())
    }
}

impl RecordRef<'_> {
    /// Checks the parts of a record that need no ledger state: sizes against the
    /// genesis limits, and the shape of names.
    pub fn check_form(&self, params: &Params) -> Result<(), Error> {
        check_name("namespace", self.namespace, params.namespace_bytes_max)?;
        check_text("key", self.key, params.key_bytes_max)?;
        match self.body {
            BodyRef::Inline(bytes) => check_size("body", bytes.len(), params.body_bytes_max)?,
            BodyRef::Document { media_type, .. } => check_text("media type", media_type, params.media_type_bytes_max)?,
        }
        check_size("metadata entries", self.metadata.len(), params.metadata_entries_max)?;
        let mut metadata_bytes = 0;
        for (k, v) in self.metadata.iter() {
            check_text("metadata key", k, params.metadata_bytes_max)?;
            metadata_bytes += k.len() + v.len();
        }
        check_size("metadata", metadata_bytes, params.metadata_bytes_max)?;
        match (self.op, &self.supersedes) {
            (Op::Publish, Some(_)) => {
                Err(Error::SupersedesOnPublish { namespace: self.namespace.into(), key: self.key.into() })
            }
            (Op::Amend | Op::Revoke, None) => Err(Error::SupersedesMissing {
                namespace: self.namespace.into(),
                key: self.key.into(),
                op: self.op.name(),
            }),
            _ => Ok(()),
        }
    }

    /// The owned record.
    pub fn to_record(&self) -> Record {
        Record {
            chain_id: self.chain_id.into(),
            namespace: self.namespace.into(),
            key: self.key.into(),
            op: self.op,
            body: match self.body {
                BodyRef::Inline(bytes) => Body::Inline(bytes.to_vec()),
                BodyRef::Document { sha256, size, media_type } => {
                    Body::Document(DocumentAnchor { sha256, size, media_type: media_type.into() })
                }
            },
            metadata: self.metadata.iter().map(|(k, v)| (k.into(), v.into())).collect(),
            supersedes: self.supersedes,
            version: self.version,
            submitter: self.submitter,
            nonce: self.nonce,
        }
    }
}

impl Layout {
    /// The fields of `bytes`, which must be the bytes this layout was parsed from.
    pub(crate) fn fields<'a>(&self, bytes: &'a [u8]) -> RecordRef<'a> {
        let text = |at: &Range<usize>| parsed_text(bytes, at.clone());
        RecordRef {
            chain_id: text(&self.chain_id),
            namespace: text(&self.namespace),
            key: text(&self.key),
            op: self.op,
            body: match &self.body {
                BodyAt::Inline(at) => BodyRef::Inline(&bytes[at.clone()]),
                BodyAt::Document { sha256, size, media_type } => {
                    BodyRef::Document { sha256: *sha256, size: *size, media_type: text(media_type) }
                }
            },
            metadata: MetadataRef::Encoded(EncodedEntries {
                entries: self.metadata_entries,
                bytes: &bytes[self.metadata.clone()],
            }),
            supersedes: self.supersedes,
            version: self.version,
            submitter: self.submitter,
            nonce: self.nonce,
        }
    }

    /// The chain id alone (the batch signature check needs nothing else).
    pub(crate) fn chain_id<'a>(&self, bytes: &'a [u8]) -> &'a str {
        parsed_text(bytes, self.chain_id.clone())
    }

    pub(crate) fn submitter(&self) -> &PublicKey {
        &self.submitter
    }

    pub(crate) fn nonce(&self) -> u64 {
        self.nonce
    }

    pub(crate) fn signature(&self) -> &Signature {
        &self.signature
    }
}

impl SignedRecord {
    /// The owned record of canonical bytes parsed into `layout`.
    pub(crate) fn from_layout(bytes: &[u8], layout: &Layout) -> SignedRecord {
        SignedRecord { record: layout.fields(bytes).to_record(), signature: layout.signature }
    }
}
