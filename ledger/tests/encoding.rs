//! The canonical encoding: pinned bytes for a record, a header and a certificate,
//! and every way a decoder must refuse bytes.

mod common;

use annal_ledger::block::{Certificate, Header};
use annal_ledger::codec;
use annal_ledger::genesis::Params;
use annal_ledger::record::{Body, DocumentAnchor, Encoded, Op, RecordId, SignedRecord};
use annal_ledger::Error;
use common::*;

/// A record with every field set: a document anchor, two metadata entries, supersedes.
fn sample_record() -> SignedRecord {
    let mut r = record(21, "land-titles", "parcel/0042", Op::Amend, Some(RecordId([0xab; 32])), 3, 7);
    r.body = Body::Document(DocumentAnchor { sha256: [0xcd; 32], size: 123_456, media_type: "application/pdf".into() });
    r.metadata =
        [("basis".to_string(), "Act 12 s.3".to_string()), ("ref".to_string(), "LR-2026-0042".to_string())].into();
    r.sign(&key(21))
}

const GOLDEN_RECORD: &str = concat!(
    "010a00000000000000616e6e616c2d746573740b000000000000006c616e642d7469746c65730b000000000000007061",
    "7263656c2f303034320100000001000000cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
    "cd40e20100000000000f000000000000006170706c69636174696f6e2f70646602000000000000000500000000000000",
    "62617369730a0000000000000041637420313220732e3303000000000000007265660c000000000000004c522d323032",
    "362d3030343201abababababababababababababababababababababababababababababababab0300000000000000d5",
    "4207da194977dcf46adbfec2bc2e75b52d5a8a42184fedfdc00024f0e3e8da0700000000000000d7b7314e57defed8ba",
    "af3606bdd71aee0af98fa5814244fc18c8e4e7309fe2f97e326447e082d3f6a9e9434f10d1d3f53255941a71155746c8",
    "a3857c125b8c0c",
);
const GOLDEN_HEADER: &str = concat!(
    "010a00000000000000616e6e616c2d746573742a000000000000002d0000000000000001010101010101010101010101",
    "0101010101010101010101010101010101010140ca99b69a010000020000000202020202020202020202020202020202",
    "020202020202020202020202020202921000000000000003030303030303030303030303030303030303030303030303",
    "030303030303030404040404040404040404040404040404040404040404040404040404040404050505050505050505",
    "050505050505050505050505050505050505050505050506060606060606060606060606060606060606060606060606",
    "060606060606060707070707070707070707070707070707070707070707070707070707070707",
);
const GOLDEN_CERTIFICATE: &str = concat!(
    "012a000000000000002d00000000000000ea730bec8c24a0667e7aff194fbfff230fb2c612955f6ab486f9fe4e118c55",
    "d001000000000000000d0300000000000000b8b855d0feee40038173046aef8d254792ca7b1aed160b9d3d5124987c68",
    "08b9e20459659b0ac208566516849f44355d10f7eecb5fef0820f7213621f45036098f70def84cd438cb4da55cfed607",
    "4e28e083acc5592ce60d3551a2cfaf16e87ace4e95e468d0267c80a4566d2e7d3b56d56b4003863d60dd1e15db958b45",
    "0f0b1d490b9102d9a51616a9b7d0a48b62de655d21ae8a23e576ed1b03503deb9e24058444d31992ef637a0974de5c5d",
    "126f738b218bd59321062b622210ae49670c",
);

#[test]
fn golden_bytes_are_pinned() {
    // Goal: an accidental change to the format of a record, header or certificate fails the build.
    let record = hex::encode(sample_record().to_bytes());
    let header = hex::encode(sample_header().to_bytes());
    let set = genesis().validator_set();
    let (k1, k3, k4) = (key(1), key(3), key(4));
    let cert = hex::encode(Certificate::sign(&sample_header(), &set, &[(0, &k1), (2, &k3), (3, &k4)]).to_bytes());
    // Shown only when the test fails: the new bytes, for a deliberate format change.
    println!("record {record}\nheader {header}\ncertificate {cert}");
    assert_eq!(record, GOLDEN_RECORD, "record encoding changed");
    assert_eq!(header, GOLDEN_HEADER, "header encoding changed");
    assert_eq!(cert, GOLDEN_CERTIFICATE, "certificate encoding changed");
}

#[test]
fn record_layout_matches_docs() {
    // Goal: the bytes follow the layout docs/PROOFS.md writes out (format byte, u64 LE lengths, u32 LE variants).
    let bytes = sample_record().to_bytes();
    assert_eq!(bytes[0], codec::FORMAT_V1);
    assert_eq!(&bytes[1..9], &10u64.to_le_bytes(), "chain id length");
    assert_eq!(&bytes[9..19], CHAIN.as_bytes());
    let sig = &bytes[bytes.len() - 64..];
    assert_eq!(sig, sample_record().signature.0.as_slice(), "signature is last");
}

#[test]
fn round_trip_and_id() {
    // Goal: decoding canonical bytes gives the value back, and the id is the RFC 6962 leaf hash of those bytes.
    let r = sample_record();
    let bytes = r.to_bytes();
    let back = SignedRecord::from_bytes(&bytes, &Params::default()).unwrap();
    assert_eq!(back, r);
    back.verify_signature().unwrap();
    let mut leaf_input = vec![0u8];
    leaf_input.extend_from_slice(&bytes);
    use sha2::Digest;
    let want: [u8; 32] = sha2::Sha256::digest(&leaf_input).into();
    assert_eq!(r.id().0, want);
}

#[test]
fn trailing_bytes_are_refused() {
    // Goal: a valid encoding followed by one more byte is refused as TrailingBytes.
    let mut bytes = sample_record().to_bytes();
    bytes.push(0);
    let err = SignedRecord::from_bytes(&bytes, &Params::default()).unwrap_err();
    assert!(matches!(err, Error::TrailingBytes { trailing: 1, .. }), "{err:?}");
}

#[test]
fn over_long_input_is_refused_before_decoding() {
    // Goal: one byte over the record limit is refused as TooLong; at the limit it is read.
    let bytes = sample_record().to_bytes();
    let params = Params { record_bytes_max: bytes.len(), ..Params::default() };
    SignedRecord::from_bytes(&bytes, &params).unwrap();
    let params = Params { record_bytes_max: bytes.len() - 1, ..Params::default() };
    let err = SignedRecord::from_bytes(&bytes, &params).unwrap_err();
    assert!(matches!(err, Error::TooLong { .. }), "{err:?}");
}

#[test]
fn truncated_input_is_refused_at_every_length() {
    // Goal: every strict prefix of a valid record is refused with an error, never a panic.
    let bytes = sample_record().to_bytes();
    for n in 0..bytes.len() {
        assert!(SignedRecord::from_bytes(&bytes[..n], &Params::default()).is_err(), "prefix of {n} bytes accepted");
    }
}

#[test]
fn unknown_format_version_is_refused() {
    // Goal: a record in a format this build does not know is refused as UnknownFormat.
    let mut bytes = sample_record().to_bytes();
    bytes[0] = 2;
    let err = SignedRecord::from_bytes(&bytes, &Params::default()).unwrap_err();
    assert!(matches!(err, Error::UnknownFormat { format: 2, .. }), "{err:?}");
}

/// `sample_record()`'s bytes with its two metadata entries in the wrong order (the same length).
fn sample_with_metadata_swapped() -> Vec<u8> {
    let bytes = sample_record().to_bytes();
    let basis = b"\x05\x00\x00\x00\x00\x00\x00\x00basis\x0a\x00\x00\x00\x00\x00\x00\x00Act 12 s.3";
    let reference = b"\x03\x00\x00\x00\x00\x00\x00\x00ref\x0c\x00\x00\x00\x00\x00\x00\x00LR-2026-0042";
    let at = bytes.windows(basis.len()).position(|w| w == basis).expect("basis entry present");
    let mut swapped = bytes[..at].to_vec();
    swapped.extend_from_slice(reference);
    swapped.extend_from_slice(basis);
    swapped.extend_from_slice(&bytes[at + basis.len() + reference.len()..]);
    assert_eq!(swapped.len(), bytes.len());
    swapped
}

/// Where the `supersedes` option tag lies in a signed record that has one:
/// before supersedes, version, submitter, nonce and signature.
fn supersedes_tag_at(bytes: &[u8]) -> usize {
    bytes.len() - 64 - 8 - 32 - 8 - 32 - 1
}

#[test]
fn unsorted_metadata_is_refused_as_non_canonical() {
    // Goal: metadata entries out of key order decode but do not re-encode to the same bytes: NonCanonical.
    let swapped = sample_with_metadata_swapped();
    let err = SignedRecord::from_bytes(&swapped, &Params::default()).unwrap_err();
    assert!(matches!(err, Error::NonCanonical { .. }), "{err:?}");
    // A key given twice: bincode's map keeps one entry, so it would re-encode shorter.
    let mut r = record(21, "land-titles", "parcel/1", Op::Publish, None, 1, 1);
    r.metadata = [("k1".to_string(), "v".to_string()), ("k2".to_string(), "v".to_string())].into();
    let mut twice = r.sign(&key(21)).to_bytes();
    let k2 = twice.windows(2).position(|w| w == b"k2").expect("k2 present");
    twice[k2 + 1] = b'1';
    let err = SignedRecord::from_bytes(&twice, &Params::default()).unwrap_err();
    assert!(matches!(err, Error::NonCanonical { .. }), "{err:?}");
    assert!(matches!(codec::decode::<SignedRecord>(&twice, 1 << 20), Err(Error::NonCanonical { .. })));
}

#[test]
fn invalid_tags_are_refused() {
    // Goal: an Option tag of 2, an unknown enum variant and a bad UTF-8 string are malformed.
    let bytes = sample_record().to_bytes();
    let some_at = supersedes_tag_at(&bytes);
    assert_eq!(bytes[some_at], 1, "supersedes tag");
    let mut bad = bytes.clone();
    bad[some_at] = 2;
    assert!(matches!(SignedRecord::from_bytes(&bad, &Params::default()), Err(Error::Malformed { .. })));
    let op_at = 1 + 8 + 10 + 8 + 11 + 8 + 11;
    let mut bad = bytes.clone();
    bad[op_at] = 3;
    assert!(matches!(SignedRecord::from_bytes(&bad, &Params::default()), Err(Error::Malformed { .. })));
    let mut bad = bytes.clone();
    bad[9] = 0xff;
    assert!(matches!(SignedRecord::from_bytes(&bad, &Params::default()), Err(Error::Malformed { .. })));
}

#[test]
fn huge_length_prefix_is_refused_without_allocating() {
    // Goal: a length prefix claiming 2^63 bytes is an error, not an allocation or a panic.
    let mut bytes = sample_record().to_bytes();
    bytes[1..9].copy_from_slice(&(1u64 << 63).to_le_bytes());
    assert!(SignedRecord::from_bytes(&bytes, &Params::default()).is_err());
}

#[test]
fn header_and_certificate_round_trip_and_refuse_trailing_bytes() {
    // Goal: headers and certificates decode back to themselves and refuse trailing bytes.
    let h = sample_header();
    assert_eq!(Header::from_bytes(&h.to_bytes()).unwrap(), h);
    let mut long = h.to_bytes();
    long.push(9);
    assert!(matches!(Header::from_bytes(&long), Err(Error::TrailingBytes { .. })));
    let set = genesis().validator_set();
    let (k1, k2, k3) = (key(1), key(2), key(3));
    let c = Certificate::sign(&h, &set, &[(0, &k1), (1, &k2), (2, &k3)]);
    assert_eq!(Certificate::from_bytes(&c.to_bytes()).unwrap(), c);
    let mut long = c.to_bytes();
    long.push(9);
    assert!(matches!(Certificate::from_bytes(&long), Err(Error::TrailingBytes { .. })));
}

/// Records of every shape the parser reads: document and inline bodies, no,
/// one and several metadata entries (one key a prefix of the next, non-ASCII
/// text), with and without `supersedes`.
fn record_shapes() -> Vec<SignedRecord> {
    let mut inline = record(22, "land-titles", "parcel/é/1", Op::Publish, None, 1, 1);
    inline.body = Body::Inline(vec![0x5a; 40]);
    let mut empty = record(22, "land-titles", "p", Op::Revoke, Some(RecordId([1; 32])), 2, u64::MAX);
    empty.body = Body::Inline(Vec::new());
    empty.metadata = [("a".to_string(), String::new())].into();
    let mut prefixes = record(31, "companies", "reg/7", Op::Publish, None, 1, 9);
    prefixes.metadata = [("ab", "x"), ("a", "ü"), ("b", "€"), ("abc", "")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vec![sample_record(), inline.sign(&key(22)), empty.sign(&key(22)), prefixes.sign(&key(31))]
}

/// The record parser's answer and bincode's on the same bytes: the same
/// record, or errors of the same kind.
fn assert_parsers_agree(bytes: &[u8], what: &str) {
    let cap = annal_ledger::genesis::RECORD_BYTES_CAP;
    let parsed = SignedRecord::from_bytes_max(bytes, cap);
    let bincode = codec::decode::<SignedRecord>(bytes, cap);
    match (&parsed, &bincode) {
        (Ok(p), Ok(b)) => {
            assert_eq!(p, b, "{what}");
            let e = Encoded::decode_max(bytes.to_vec(), cap).expect("parsed once, parses again");
            assert_eq!(e.fields().to_record(), b.record, "{what}: the fields read in place");
            assert_eq!((e.submitter(), e.nonce(), e.signature()), (&b.record.submitter, b.record.nonce, &b.signature));
            assert_eq!(e.to_signed(), *b, "{what}");
            assert_eq!(e.id, b.id(), "{what}");
        }
        (Err(p @ Error::Malformed { .. }), Err(b)) => {
            assert!(matches!(b, Error::Malformed { .. }), "{what}: {p} / {b}")
        }
        // Every other refusal names the same numbers (trailing bytes, lengths, the format byte).
        (Err(p), Err(b)) => assert_eq!(p.to_string(), b.to_string(), "{what}"),
        _ => panic!("{what}: the parser says {parsed:?}, bincode says {bincode:?}"),
    }
}

#[test]
fn the_record_parser_agrees_with_bincode_on_mutated_encodings() {
    // Goal: the one-pass parser that replaced bincode for records accepts exactly what
    // bincode's strict decode accepts (the same record) and refuses the rest with the
    // same kind of error: every byte changed six ways, every truncation, a byte
    // inserted everywhere, and seeded random multi-byte changes, on every shape.
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let mut accepted_mutants = 0;
    for (n, r) in record_shapes().iter().enumerate() {
        let bytes = r.to_bytes();
        assert_parsers_agree(&bytes, &format!("shape {n}"));
        for at in 0..bytes.len() {
            for value in [0x00, 0x01, 0x02, 0xff, bytes[at] ^ 0x01, bytes[at] ^ 0x80] {
                let mut m = bytes.clone();
                m[at] = value;
                accepted_mutants += usize::from(SignedRecord::from_bytes_max(&m, usize::MAX).is_ok());
                assert_parsers_agree(&m, &format!("shape {n}, byte {at} set to {value:#x}"));
            }
            assert_parsers_agree(&bytes[..at], &format!("shape {n} cut to {at} bytes"));
            let mut m = bytes.clone();
            m.insert(at, 0);
            assert_parsers_agree(&m, &format!("shape {n}, a zero inserted at {at}"));
        }
        for round in 0..2_000 {
            let mut m = bytes.clone();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..m.len());
                m[at] = rng.gen();
            }
            assert_parsers_agree(&m, &format!("shape {n}, random round {round}"));
        }
    }
    // Changes to the body, metadata text, keys and signature still parse: the comparison saw both outcomes.
    assert!(accepted_mutants > 1_000, "{accepted_mutants}");
}

#[test]
fn the_record_parser_reports_faults_in_bincodes_order() {
    // Goal: when unsorted metadata comes with another fault, both decoders name the other
    // fault (trailing bytes, a malformed later field), since bincode only finds the order
    // when it encodes again; over-long input is refused before anything is read.
    let swapped = sample_with_metadata_swapped();
    let mut trailing = swapped.clone();
    trailing.push(0);
    let mut bad_tag = swapped.clone();
    let some_at = supersedes_tag_at(&bad_tag);
    bad_tag[some_at] = 2;
    let cap = annal_ledger::genesis::RECORD_BYTES_CAP;
    for (m, want) in [(&swapped, "NonCanonical"), (&trailing, "TrailingBytes"), (&bad_tag, "Malformed")] {
        let err = SignedRecord::from_bytes_max(m, cap).unwrap_err();
        assert!(format!("{err:?}").starts_with(want), "{want}: {err:?}");
        assert_parsers_agree(m, want);
    }
    let err = SignedRecord::from_bytes_max(&trailing, trailing.len() - 1).unwrap_err();
    assert!(matches!(err, Error::TooLong { .. }), "{err:?}");
    // No caller's limit lifts the cap any charter is held to.
    let mut huge = sample_record();
    huge.record.body = Body::Inline(vec![0; cap]);
    let err = SignedRecord::from_bytes_max(&huge.to_bytes(), usize::MAX).unwrap_err();
    assert!(matches!(err, Error::TooLong { max, .. } if max == cap), "{err:?}");
}
