//! The HTTP API's submission bodies: what they accept, the exact words of each
//! refusal (the node sends them as the error detail), and every limit one over.

mod common;

use annal_ledger::genesis::Params;
use annal_ledger::record::Op;
use annal_ledger::submission::{self, BatchBody, SubmitBody};
use annal_ledger::Error;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;

#[test]
fn a_submit_body_gives_back_the_signed_record() {
    // Goal: {"record": base64} decodes to the record's canonical bytes and the record itself; unknown fields are ignored.
    let r = signed(21, "land-titles", "parcel/1", Op::Publish, None, 1, 1);
    let json = format!(r#"{{"record": "{}", "note": "ignored"}}"#, B64.encode(r.to_bytes()));
    let body: SubmitBody = submission::from_json(json.as_bytes()).unwrap();
    let bytes = body.record_bytes().unwrap();
    assert_eq!(bytes, r.to_bytes());
    assert_eq!(submission::decode_record(bytes, &Params::default()).unwrap().to_signed(), r);
}

#[test]
fn bodies_that_are_not_the_json_name_the_problem() {
    // Goal: truncated JSON, a missing field and a repeated field are BodyNotJson with serde's reason in the words the API sends.
    let cases: [(&[u8], &str); 4] = [
        (b"{\"record\": ", "the body is not the JSON this route takes: EOF while parsing a value at line 1 column 11"),
        (
            br#"{"records": "x"}"#,
            "the body is not the JSON this route takes: missing field `record` at line 1 column 16",
        ),
        (br#"{"record": "", "record": ""}"#, "the body is not the JSON this route takes: duplicate field `record`"),
        (b"\xff", "the body is not the JSON this route takes: expected value at line 1 column 1"),
    ];
    for (body, want) in cases {
        let e = submission::from_json::<SubmitBody>(body).unwrap_err();
        assert!(matches!(e, Error::BodyNotJson { .. }), "{e:?}");
        assert!(e.to_string().starts_with(want), "{body:?}: {e}");
    }
    let batch_cases: [(&[u8], &str); 5] = [
        (br#"{"records": "x"}"#, "invalid type: string \"x\", expected a sequence"),
        (br#"{"other": 1}"#, "missing field `records`"),
        (br#"{"records": [], "records": []}"#, "duplicate field `records`"),
        (br#"{"records": []} x"#, "trailing characters"),
        (br#"["AQI="]"#, "expected a map with the field `records`"),
    ];
    for (body, want) in batch_cases {
        let e = BatchBody::from_json(body, 10).unwrap_err();
        assert!(matches!(e, Error::BodyNotJson { .. }), "{e:?}");
        assert!(e.to_string().contains(want), "{body:?}: {e}");
    }
    let read = BatchBody::from_json(br#"{"note": {"a": [1]}, "records": ["AQI=", ""]}"#, 10).unwrap();
    assert_eq!(read, BatchBody { records: vec!["AQI=".into(), String::new()] }, "unknown fields are ignored");
}

#[test]
fn base64_must_be_standard_with_padding_and_is_named_by_position() {
    // Goal: unpadded, URL-safe and non-canonical base64 are refused, naming `record` or `records[i]`; good entries still decode.
    let submit = |text: &str| SubmitBody { record: text.into() }.record_bytes();
    assert_eq!(submit("AQI=").unwrap(), [1, 2]);
    for bad in ["AQI", "_-8=", "AQJ=", "not base64!"] {
        let e = submit(bad).unwrap_err();
        assert!(e.to_string().starts_with("record is not standard base64 with padding: "), "{bad}: {e}");
    }
    let batch = BatchBody { records: vec!["AQI=".into(), "%%".into(), String::new()] };
    let decoded = batch.record_bytes();
    assert_eq!(decoded.len(), 3);
    assert_eq!(decoded[0].as_ref().unwrap(), &[1, 2]);
    let e = decoded[1].as_ref().unwrap_err();
    assert!(e.to_string().starts_with("records[1] is not standard base64 with padding: "), "{e}");
    assert_eq!(decoded[2].as_ref().unwrap(), &Vec::<u8>::new(), "empty text is zero bytes, refused later by decoding");
}

#[test]
fn a_batch_one_over_its_limit_is_refused_before_the_rest_is_read() {
    // Goal: records_max records are read; one more is BatchTooLarge naming the limit's setting, and
    // the parse stops there: what follows the extra record (here not even JSON) is never read.
    let body = |n: usize| serde_json::to_vec(&BatchBody { records: vec!["AQI=".to_string(); n] }).unwrap();
    assert_eq!(BatchBody::from_json(&body(3), 3).unwrap().records.len(), 3);
    assert_eq!(BatchBody::from_json(&body(0), 0).unwrap().records.len(), 0);
    let e = BatchBody::from_json(&body(4), 3).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the batch holds more than 3 records; this node takes at most 3 (limits.api_batch_records_max)"
    );
    let cut = br#"{"records": ["", "", "", "", %%%"#;
    assert!(matches!(BatchBody::from_json(cut, 3), Err(Error::BatchTooLarge { records: None, max: 3 })));
    assert!(matches!(BatchBody::from_json(cut, 4), Err(Error::BodyNotJson { .. })), "within the limit it reads on");
}

#[test]
fn a_record_one_byte_over_the_chain_limit_is_too_large_before_decoding() {
    // Goal: record_bytes_max bytes reach the decoder (and fail there as junk); one byte more is RecordTooLarge.
    let params = Params { record_bytes_max: 64, ..Params::default() };
    let e = submission::decode_record(vec![0; 64], &params).unwrap_err();
    assert!(matches!(e, Error::UnknownFormat { .. }), "{e:?}");
    let e = submission::decode_record(vec![0; 65], &params).unwrap_err();
    assert_eq!(e.to_string(), "record is 65 bytes; the chain's limit is 64");
    let r = signed(21, "land-titles", "parcel/1", Op::Publish, None, 1, 1).to_bytes();
    let exact = Params { record_bytes_max: r.len(), ..Params::default() };
    submission::decode_record(r.clone(), &exact).expect("a record of exactly the limit decodes");
    let under = Params { record_bytes_max: r.len() - 1, ..Params::default() };
    assert!(matches!(submission::decode_record(r.clone(), &under), Err(Error::RecordTooLarge { .. })));
    let e = submission::decode_record(Vec::new(), &params).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e:?}");
}

#[test]
fn a_binary_batch_gives_back_its_records_and_is_the_canonical_list() {
    // Goal: encode_batch writes 0x01 ‖ u64 LE count ‖ (u64 LE length ‖ bytes)*, which is the
    // canonical encoding of the list of byte strings, and binary_batch reads back exactly the records.
    let records: Vec<Vec<u8>> = (1..=3)
        .map(|n| signed(21, "land-titles", &format!("parcel/{n}"), Op::Publish, None, n, n).to_bytes())
        .collect();
    let body = submission::encode_batch(records.iter().map(|r| r.as_slice()));
    let mut want = vec![1u8];
    want.extend_from_slice(&3u64.to_le_bytes());
    for r in &records {
        want.extend_from_slice(&(r.len() as u64).to_le_bytes());
        want.extend_from_slice(r);
    }
    assert_eq!(body, want);
    assert_eq!(submission::binary_batch(&body, 3).unwrap(), records);
    let empty = submission::encode_batch([]);
    assert_eq!(empty, [1, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(submission::binary_batch(&empty, 0).unwrap().is_empty());
    assert!(submission::is_binary_batch("application/octet-stream"));
    assert!(submission::is_binary_batch("Application/Octet-Stream; charset=binary"));
    assert!(!submission::is_binary_batch("application/json"));
    assert!(!submission::is_binary_batch("application/octet-streamx"));
}

#[test]
fn a_binary_batch_that_breaks_its_framing_is_refused_whole_naming_where() {
    // Goal: every truncation, a wrong format byte, a trailing byte, a length past the end
    // and a count over the limit each get their own words; no prefix of a good body passes.
    let records = [b"abc".to_vec(), b"defgh".to_vec()];
    let body = submission::encode_batch(records.iter().map(|r| r.as_slice()));
    for cut in 0..body.len() {
        let e = submission::binary_batch(&body[..cut], 2).unwrap_err();
        assert!(matches!(e, Error::BatchNotBinary { .. }), "cut at {cut}: {e:?}");
    }
    let said = |b: &[u8], max: usize| submission::binary_batch(b, max).unwrap_err().to_string();
    let prefix = "the body is not a binary record batch (docs/API.md): ";
    assert_eq!(said(&body[..0], 2), format!("{prefix}the format byte needs 1 bytes, 0 are left"));
    assert_eq!(said(&body[..5], 2), format!("{prefix}the record count needs 8 bytes, 4 are left"));
    assert_eq!(said(&body[..17], 2), format!("{prefix}records[0] needs 3 bytes, 0 are left"));
    assert_eq!(said(&body[..22], 2), format!("{prefix}the length of records[1] needs 8 bytes, 2 are left"));
    let mut wrong = body.clone();
    wrong[0] = 2;
    assert_eq!(said(&wrong, 2), format!("{prefix}the format byte is 2; this node reads 1"));
    let mut trailing = body.clone();
    trailing.push(0);
    assert_eq!(said(&trailing, 2), format!("{prefix}1 bytes follow the last of its 2 records"));
    let mut long = body.clone();
    long[9..17].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = said(&long, 2);
    assert!(e.starts_with(&format!("{prefix}records[0] needs {} bytes", usize::MAX)), "{e}");
    // One over the limit: refused on the count, before any record is read.
    assert_eq!(said(&body, 1), "the batch holds 2 records; this node takes at most 1 (limits.api_batch_records_max)");
    let mut huge = body.clone();
    huge[1..9].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(submission::binary_batch(&huge, 2), Err(Error::BatchTooLarge { max: 2, .. })));
}
