//! Signed records from bytes (`SignedRecord::from_bytes`, default genesis
//! params), then everything that runs on a decoded record before any state:
//! `check_form`, `id`, `verify_signature`. Decoding is strict, so whatever
//! decodes must encode back to exactly the input. The record parser
//! (`record_ref::parse`, which `from_bytes` and the node's `Encoded` use) must
//! give bincode's answer: the same record, or an error of the same kind.
#![no_main]

use std::sync::LazyLock;

use annal_ledger::codec;
use annal_ledger::genesis::Params;
use annal_ledger::record::{Encoded, SignedRecord};
use libfuzzer_sys::fuzz_target;

static PARAMS: LazyLock<Params> = LazyLock::new(Params::default);

fuzz_target!(|data: &[u8]| {
    let parsed = SignedRecord::from_bytes(data, &PARAMS);
    match (&parsed, codec::decode::<SignedRecord>(data, PARAMS.record_bytes_max)) {
        (Ok(p), Ok(b)) => assert_eq!(*p, b, "the parser and bincode decode different records"),
        (Err(p), Err(b)) => assert_eq!(
            std::mem::discriminant(p),
            std::mem::discriminant(&b),
            "the parser and bincode refuse differently: {p} / {b}"
        ),
        (p, b) => panic!("the parser says {p:?}, bincode says {b:?}"),
    }
    let Ok(record) = parsed else {
        return;
    };
    assert_eq!(record.to_bytes(), data, "a decoded record encodes to other bytes than its input");
    assert_eq!(record.id(), SignedRecord::id_of_bytes(data), "the id is not the leaf hash of the input");
    let encoded = Encoded::decode(data.to_vec(), &PARAMS).expect("decodes as the owned record did");
    assert_eq!(encoded.fields().to_record(), record.record, "the fields read in place differ");
    assert_eq!(record.record.check_form(&PARAMS).is_ok(), encoded.fields().check_form(&PARAMS).is_ok());
    let _ = record.verify_signature();
});
