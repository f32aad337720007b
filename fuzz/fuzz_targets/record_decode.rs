//! Signed records from bytes (`SignedRecord::from_bytes`, default genesis
//! params), then everything that runs on a decoded record before any state:
//! `check_form`, `id`, `verify_signature`. Decoding is strict, so whatever
//! decodes must encode back to exactly the input.
#![no_main]

use std::sync::LazyLock;

use annal_ledger::genesis::Params;
use annal_ledger::record::SignedRecord;
use libfuzzer_sys::fuzz_target;

static PARAMS: LazyLock<Params> = LazyLock::new(Params::default);

fuzz_target!(|data: &[u8]| {
    let Ok(record) = SignedRecord::from_bytes(data, &PARAMS) else {
        return;
    };
    assert_eq!(record.to_bytes(), data, "a decoded record encodes to other bytes than its input");
    assert_eq!(record.id(), SignedRecord::id_of_bytes(data), "the id is not the leaf hash of the input");
    let _ = record.record.check_form(&PARAMS);
    let _ = record.verify_signature();
});
