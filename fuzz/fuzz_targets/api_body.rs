//! The node API's request bodies (`annal_ledger::submission`), read as
//! the node reads them: the input as a `POST /v1/records` body, as a JSON
//! `POST /v1/records/batch` body (`BatchBody::from_json`, which stops at its
//! record limit) and as a binary one
//! (`binary_batch`, which must give back exactly the body), the base64 of each record
//! (`record_bytes`), then `decode_record`
//! (the fixture genesis's params with a small record size limit) and, on a
//! decoded record, what admission runs before any state:
//! `Rules::check_stateless` (fixture genesis) and `verify_signature`.
//!
//! Nothing may panic. A parsed body survives a JSON round trip; base64 that
//! decodes encodes back to its text; a decoded record is within the chain's
//! size limit and encodes to exactly its bytes; every refusal is the error the
//! API would send, naming the field (`record`, `records[i]`) or the limit.
#![no_main]

use std::sync::LazyLock;

use annal_fuzz::{API_BATCH_RECORDS_MAX, API_RECORD_BYTES_MAX, FIXTURE};
use annal_ledger::genesis::Params;
use annal_ledger::record::SignedRecord;
use annal_ledger::state::Rules;
use annal_ledger::submission::{self, BatchBody, SubmitBody};
use annal_ledger::Error;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use libfuzzer_sys::fuzz_target;

static PARAMS: LazyLock<Params> =
    LazyLock::new(|| Params { record_bytes_max: API_RECORD_BYTES_MAX, ..FIXTURE.params.clone() });
static RULES: LazyLock<Rules> = LazyLock::new(|| Rules::new(&FIXTURE));

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = submission::from_json::<SubmitBody>(data) {
        let json = serde_json::to_vec(&body).expect("a submit body writes as JSON");
        assert_eq!(submission::from_json::<SubmitBody>(&json).ok(), Some(body.clone()), "submit body round trip");
        check_text("record", &body.record, body.record_bytes());
    }
    match BatchBody::from_json(data, API_BATCH_RECORDS_MAX) {
        Ok(body) => {
            assert!(body.records.len() <= API_BATCH_RECORDS_MAX, "a batch over the limit passed");
            let json = serde_json::to_vec(&body).expect("a batch body writes as JSON");
            assert_eq!(BatchBody::from_json(&json, API_BATCH_RECORDS_MAX).ok(), Some(body.clone()), "batch round trip");
            if let Some(fewer) = body.records.len().checked_sub(1) {
                let e = BatchBody::from_json(data, fewer).unwrap_err();
                assert!(matches!(e, Error::BatchTooLarge { records: None, .. }), "one over a lower limit: {e:?}");
            }
            let decoded = body.record_bytes();
            assert_eq!(decoded.len(), body.records.len(), "one result per record");
            for (i, (text, d)) in body.records.iter().zip(decoded).enumerate() {
                check_text(&format!("records[{i}]"), text, d);
            }
        }
        Err(Error::BatchTooLarge { records: None, max }) => assert_eq!(max, API_BATCH_RECORDS_MAX),
        Err(Error::BodyNotJson { .. }) => {}
        Err(e) => panic!("a JSON batch refused with {e:?}"),
    }
    match submission::binary_batch(data, API_BATCH_RECORDS_MAX) {
        Ok(records) => {
            assert!(records.len() <= API_BATCH_RECORDS_MAX, "a binary batch over the limit passed");
            let again = submission::encode_batch(records.iter().map(|r| r.as_slice()));
            assert_eq!(again, data, "a binary batch read is not the body it was read from");
            records.iter().for_each(|r| check_record(r));
        }
        Err(Error::BatchTooLarge { records, max }) => {
            let records = records.expect("a binary batch declares its count");
            assert_eq!(max, API_BATCH_RECORDS_MAX);
            assert!(records > max, "a binary batch within the limit was refused");
            assert_eq!(
                u64::from_le_bytes(data[1..9].try_into().unwrap()),
                records as u64,
                "the count refused is not the body's"
            );
        }
        Err(e @ Error::BatchNotBinary { .. }) => {
            assert!(e.to_string().starts_with("the body is not a binary record batch"), "{e}");
        }
        Err(e) => panic!("a binary batch refused with {e:?}"),
    }
});

/// One record's base64 `text` and what `record_bytes` made of it.
fn check_text(field: &str, text: &str, decoded: Result<Vec<u8>, Error>) {
    match decoded {
        Ok(bytes) => {
            assert_eq!(B64.encode(&bytes), text, "{field}: base64 that decodes must encode back to its text");
            check_record(&bytes);
        }
        Err(e @ Error::RecordNotBase64 { .. }) => {
            let prefix = format!("{field} is not standard base64 with padding: ");
            assert!(e.to_string().starts_with(&prefix), "{field}: refusal names another field: {e}");
        }
        Err(e) => panic!("{field}: base64 refused with {e:?}"),
    }
}

fn check_record(bytes: &[u8]) {
    let max = PARAMS.record_bytes_max;
    match submission::decode_record(bytes.to_vec(), &PARAMS) {
        Ok(record) => {
            assert!(bytes.len() <= max, "a record of {} bytes decoded; the limit is {max}", bytes.len());
            let owned = record.to_signed();
            assert_eq!(owned.to_bytes(), bytes, "a decoded record encodes to other bytes than its input");
            assert_eq!(record.id, SignedRecord::id_of_bytes(bytes), "the id is not the leaf hash of the input");
            assert_eq!(owned.id(), record.id, "the id is not the leaf hash of the input");
            let _ = RULES.check_stateless(&record.fields());
            let _ = annal_ledger::exec::bad_signatures(std::slice::from_ref(&record));
        }
        Err(Error::RecordTooLarge { size, max: said }) => {
            assert_eq!((size, said), (bytes.len(), max), "the size refusal names other numbers");
            assert!(size > max, "a record within the limit was refused as too large");
        }
        Err(_) => assert!(bytes.len() <= max, "a record over the limit got past the size check"),
    }
}
