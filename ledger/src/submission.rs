//! A record submission as the node's HTTP API takes it (docs/API.md "Records"):
//! the JSON bodies of `POST /v1/records` and `POST /v1/records/batch`, their
//! base64 records, and a submitted record's bytes to an [`Encoded`] record.
//!
//! Everything here is a pure function of the request's bytes. The node does
//! the rest of admission (stateless rules, nonce against committed state,
//! signature, mempool) and maps each error to its status and code: a body that
//! is not the JSON or a record that is not base64 or does not decode is
//! `malformed`, a batch over its limit `too_large`, a record over the chain's
//! size limit `refused`. It lives in the ledger, not the node, so the fuzzer
//! (`fuzz/`, target `api_body`) reaches it without building RocksDB.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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

/// A request body read as the JSON of `T` (a [`SubmitBody`] or a [`BatchBody`]).
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
    /// Refuses a batch of more than `records_max` records (the node's `limits.api_batch_records_max`).
    pub fn check_count(&self, records_max: usize) -> Result<(), Error> {
        if self.records.len() > records_max {
            return Err(Error::BatchTooLarge { records: self.records.len(), max: records_max });
        }
        Ok(())
    }

    /// Each record's bytes, in order, one result per record; one that is not
    /// base64 is named by its position (`records[i]`).
    pub fn record_bytes(&self) -> Vec<Result<Vec<u8>, Error>> {
        self.records.iter().enumerate().map(|(i, text)| base64_record(text, || format!("records[{i}]"))).collect()
    }
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
