//! The canonical encoding: one byte layout for everything that is hashed or signed.
//!
//! Every encoded value is `FORMAT_V1 || bincode(value)` with bincode pinned at
//! `=2.0.1` and one configuration: little-endian, fixed-width integers, and a
//! byte limit. Sequences and strings carry a `u64` length prefix, `Option` a
//! one-byte tag, enums a `u32` variant index, fixed arrays no prefix. Maps are
//! `BTreeMap`s, so entries are always in key order.
//!
//! Decoding is strict: the leading format byte must be known, the input must
//! not exceed the caller's limit, no byte may trail the value, and re-encoding
//! the decoded value must give back the input exactly. The last rule means no
//! value has two encodings (an unsorted or duplicated map, for example, is
//! refused), so a hash or a signature over the bytes is a hash or a signature
//! over the value. `docs/PROOFS.md` writes the layout out byte by byte.
//!
//! Signed records, read on every node's hot path, are decoded by the record
//! parser instead (`record_ref::parse`), which checks these rules without
//! re-encoding and gives the same answers up to `RECORD_BYTES_CAP`.

use bincode::config::{self, Configuration, Fixint, LittleEndian, NoLimit};

use crate::error::Error;

/// The leading byte of every canonical encoding in this version of the format.
pub const FORMAT_V1: u8 = 1;

type Config = Configuration<LittleEndian, Fixint, NoLimit>;

const CONFIG: Config = config::standard().with_little_endian().with_fixed_int_encoding();

/// The most bytes one decode may claim (read, or reserve for what a length
/// prefix announces) before bincode refuses the input.
pub const DECODE_CLAIM_MAX: usize = 64 * 1024 * 1024;

/// What a value is, for error messages ("record", "header", ...).
pub trait Canonical: bincode::Encode + bincode::Decode<()> {
    const KIND: &'static str;
    /// Whether every byte string this type decodes from (whole, no trailing
    /// bytes) is the one its value encodes to, so [`decode`] need not encode
    /// the value again to compare. True only of types made of fixed-width
    /// integers and byte vectors, which fixed-int encoding writes one way;
    /// strings, enums, options, booleans and maps keep the check.
    const ONE_FORM: bool = false;
}

/// Encodes `value` as `FORMAT_V1 || bincode(value)`.
pub fn encode<T: Canonical>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_into(value, &mut out);
    out
}

/// Appends the canonical encoding of `value` to `out`.
pub fn encode_into<T: Canonical>(value: &T, out: &mut Vec<u8>) {
    out.push(FORMAT_V1);
    bincode::encode_into_std_write(value, out, CONFIG).expect("encoding into a Vec cannot fail");
}

/// Where a run of length-prefixed byte strings stops being one ([`byte_strings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListBreak {
    /// Item `index`'s `u64` length needs 8 bytes; `left` remain.
    Length { index: usize, left: usize },
    /// Item `index` claims `needed` bytes; `left` remain.
    Item { index: usize, needed: usize, left: usize },
    /// `extra` bytes follow the last item.
    Trailing { extra: usize },
}

/// `bytes` as exactly `count` byte strings, each `u64 LE length ‖ bytes`
/// (how the canonical encoding writes the items of a list of byte vectors),
/// borrowed in place; nothing may follow the last. The binary record batch
/// and the node's block body read their records with it.
pub fn byte_strings(bytes: &[u8], count: u64) -> Result<Vec<&[u8]>, ListBreak> {
    // Each item takes its eight bytes of length at least: no more room is reserved than could be filled.
    let mut items = Vec::with_capacity(count.min((bytes.len() / 8) as u64) as usize);
    let mut rest = bytes;
    for index in 0..usize::try_from(count).unwrap_or(usize::MAX) {
        let Some((length, tail)) = rest.split_first_chunk::<8>() else {
            return Err(ListBreak::Length { index, left: rest.len() });
        };
        let needed = usize::try_from(u64::from_le_bytes(*length)).unwrap_or(usize::MAX);
        if tail.len() < needed {
            return Err(ListBreak::Item { index, needed, left: tail.len() });
        }
        let (item, tail) = tail.split_at(needed);
        items.push(item);
        rest = tail;
    }
    match rest.len() {
        0 => Ok(items),
        extra => Err(ListBreak::Trailing { extra }),
    }
}

/// Appends `items` as the canonical encoding writes a list of byte vectors,
/// `u64 LE count ‖ (u64 LE length ‖ bytes) × count`: the count, then what
/// [`byte_strings`] reads back.
pub fn put_byte_strings<'a>(out: &mut Vec<u8>, items: impl ExactSizeIterator<Item = &'a [u8]> + Clone) {
    out.reserve(8 + items.clone().map(|item| 8 + item.len()).sum::<usize>());
    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
    for item in items {
        out.extend_from_slice(&(item.len() as u64).to_le_bytes());
        out.extend_from_slice(item);
    }
}

/// Decodes a canonical encoding of at most `bytes_max` bytes, refusing
/// unknown formats, trailing bytes and non-canonical forms.
pub fn decode<T: Canonical>(bytes: &[u8], bytes_max: usize) -> Result<T, Error> {
    let kind = T::KIND;
    if bytes.len() > bytes_max {
        return Err(Error::TooLong { kind, len: bytes.len(), max: bytes_max });
    }
    let Some((&format, body)) = bytes.split_first() else {
        return Err(Error::Empty { kind });
    };
    if format != FORMAT_V1 {
        return Err(Error::UnknownFormat { kind, format });
    }
    // The limit bounds every allocation a length prefix can ask for.
    let limited = CONFIG.with_limit::<DECODE_CLAIM_MAX>();
    let (value, read): (T, usize) =
        bincode::decode_from_slice(body, limited).map_err(|e| Error::Malformed { kind, detail: e.to_string() })?;
    if read != body.len() {
        return Err(Error::TrailingBytes { kind, trailing: body.len() - read });
    }
    if !T::ONE_FORM {
        let mut again = Vec::with_capacity(bytes.len());
        encode_into(&value, &mut again);
        if again != bytes {
            return Err(Error::NonCanonical { kind });
        }
    }
    Ok(value)
}
