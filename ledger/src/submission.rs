//! A record submission as the node's HTTP API takes it (docs/API.md "Records"):
//! the JSON bodies of `POST /v1/records` and `POST /v1/records/batch`, their
//! base64 records, the binary batch body, and a submitted record's bytes to an
//! [`Encoded`] record.
//!
//! Everything here is a pure function of the request's bytes. The node does
//! the rest of admission (stateless rules, nonce against committed state,
//! signature, mempool) and maps each error to its status and code: a body that
//! is not the JSON or the binary batch, or a record that is not base64 or does not decode is
//! `malformed`, a batch over its limit `too_large`, a record over the chain's
//! size limit `refused`. It lives in the ledger, not the node, so the fuzzer
//! (`fuzz/`, target `api_body`) reaches it without building RocksDB.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::codec::ListBreak;
use crate::genesis::Params;
use crate::record::Encoded;
use crate::Error;

/// `POST /v1/records`: `{"record": "<base64 of the signed record's canonical bytes>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitBody {
    pub record: String,
}

/// `POST /v1/records/batch`: `{"records": ["<base64>", …]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchBody {
    pub records: Vec<String>,
}

/// A request body read as the JSON of `T` (a [`SubmitBody`]; a batch is read by [`BatchBody::from_json`]).
/// Unknown fields are ignored; a missing or repeated one is an error.
pub fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::BodyNotJson { detail: e.to_string() })
}

impl SubmitBody {
    /// The record's bytes, still to be decoded ([`decode_record`]).
    pub fn record_bytes(&self) -> Result<Vec<u8>, Error> {
        base64_record(&self.record, || "record".to_string())
    }
}

impl BatchBody {
    /// Reads a JSON batch body, refusing one of more than `records_max` records
    /// (the node's `limits.api_batch_records_max`) as soon as the parse reaches
    /// record `records_max + 1`: a body of 16 MiB of `"",` would otherwise
    /// become millions of strings (8 times its size) before it could be counted.
    /// Unknown fields are ignored; a missing or repeated `records` is an error.
    pub fn from_json(body: &[u8], records_max: usize) -> Result<BatchBody, Error> {
        let over = std::cell::Cell::new(false);
        let mut de = serde_json::Deserializer::from_slice(body);
        let read = BatchSeed { records_max, over: &over }.deserialize(&mut de).and_then(|b| de.end().map(|()| b));
        read.map_err(|e| match over.get() {
            true => Error::BatchTooLarge { records: None, max: records_max },
            false => Error::BodyNotJson { detail: e.to_string() },
        })
    }

    /// Each record's bytes, in order, one result per record; one that is not
    /// base64 is named by its position (`records[i]`).
    pub fn record_bytes(&self) -> Vec<Result<Vec<u8>, Error>> {
        self.records.iter().enumerate().map(|(i, text)| base64_record(text, || format!("records[{i}]"))).collect()
    }
}

/// [`BatchBody::from_json`]'s reader: the body's map, its `records` counted as they are read.
struct BatchSeed<'a> {
    records_max: usize,
    /// Set when the parse stopped at the limit (the error it returns is then serde's).
    over: &'a std::cell::Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = BatchBody;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<BatchBody, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = BatchBody;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map with the field `records`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BatchBody, A::Error> {
        let mut records = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key != "records" {
                map.next_value::<IgnoredAny>()?;
            } else if records.is_some() {
                return Err(de::Error::duplicate_field("records"));
            } else {
                records = Some(map.next_value_seed(RecordsSeed { records_max: self.records_max, over: self.over })?);
            }
        }
        Ok(BatchBody { records: records.ok_or_else(|| de::Error::missing_field("records"))? })
    }
}

/// The `records` list, refused at its `records_max + 1`st entry.
struct RecordsSeed<'a> {
    records_max: usize,
    over: &'a std::cell::Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_> {
    type Value = Vec<String>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Vec<String>, D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut records = Vec::new();
        while let Some(text) = seq.next_element::<String>()? {
            if records.len() == self.records_max {
                self.over.set(true);
                return Err(de::Error::custom(format!("more than {} records", self.records_max)));
            }
            records.push(text);
        }
        Ok(records)
    }
}

/// The media type of a binary `POST /v1/records/batch` body ([`binary_batch`]).
pub const BINARY_BATCH_MEDIA_TYPE: &str = "application/octet-stream";

/// Whether a `Content-Type` value names [`BINARY_BATCH_MEDIA_TYPE`]
/// (parameters after `;` ignored, case-insensitive).
pub fn is_binary_batch(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case(BINARY_BATCH_MEDIA_TYPE)
}

/// A binary batch body: the canonical encoding of the list of the records'
/// canonical encodings, `0x01 ‖ u64 LE count ‖ (u64 LE length ‖ record) × count`
/// (docs/API.md). An importer sends this instead of the JSON body: nothing to
/// base64 (a third larger) or to write and scan as JSON, on either side.
pub fn encode_batch<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let records: Vec<&[u8]> = records.into_iter().collect();
    let mut out = vec![crate::codec::FORMAT_V1];
    crate::codec::put_byte_strings(&mut out, records.iter().copied());
    out
}

/// Reads a binary batch body ([`encode_batch`]): each record's bytes, in
/// order, still to be decoded ([`decode_record`]). The count is checked
/// against `records_max` before any record is read; a body that is not
/// exactly the layout is refused whole, naming where it breaks (its framing
/// is the envelope: past a bad length nothing after it can be trusted).
pub fn binary_batch(body: &[u8], records_max: usize) -> Result<Vec<Vec<u8>>, Error> {
    let broken = |detail: String| Error::BatchNotBinary { detail };
    let Some((&format, rest)) = body.split_first() else {
        return Err(broken("the format byte needs 1 bytes, 0 are left".into()));
    };
    if format != crate::codec::FORMAT_V1 {
        return Err(broken(format!("the format byte is {format}; this node reads {}", crate::codec::FORMAT_V1)));
    }
    let Some((count, rest)) = rest.split_first_chunk::<8>() else {
        return Err(broken(format!("the record count needs 8 bytes, {} are left", rest.len())));
    };
    let count = u64::from_le_bytes(*count);
    if count > records_max as u64 {
        let records = usize::try_from(count).unwrap_or(usize::MAX);
        return Err(Error::BatchTooLarge { records: Some(records), max: records_max });
    }
    let records = crate::codec::byte_strings(rest, count).map_err(|at| {
        broken(match at {
            ListBreak::Length { index, left } => {
                format!("the length of records[{index}] needs 8 bytes, {left} are left")
            }
            ListBreak::Item { index, needed, left } => {
                format!("records[{index}] needs {needed} bytes, {left} are left")
            }
            ListBreak::Trailing { extra } => format!("{extra} bytes follow the last of its {count} records"),
        })
    })?;
    Ok(records.into_iter().map(<[u8]>::to_vec).collect())
}

/// A submitted record's bytes to the record: first the chain's size limit
/// ([`Error::RecordTooLarge`]), then strict canonical decoding.
pub fn decode_record(bytes: Vec<u8>, params: &Params) -> Result<Encoded, Error> {
    if bytes.len() > params.record_bytes_max {
        return Err(Error::RecordTooLarge { size: bytes.len(), max: params.record_bytes_max });
    }
    Encoded::decode(bytes, params)
}

/// Standard base64 with padding; `field` names the text in the error.
fn base64_record(text: &str, field: impl FnOnce() -> String) -> Result<Vec<u8>, Error> {
    B64.decode(text).map_err(|e| Error::RecordNotBase64 { field: field(), detail: e.to_string() })
}
