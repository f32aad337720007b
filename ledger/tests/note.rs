//! C2SP signed notes and checkpoints: the reference example, Annal's
//! checkpoints signed by a certificate, and every malformed note refused.

mod common;

use annal_ledger::block::Certificate;
use annal_ledger::keys::SecretKey;
use annal_ledger::note::{self, Checkpoint, SignedNote, VerifierKey, NOTE_BYTES_MAX};
use annal_ledger::Error;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;

// The worked example of Go's reference implementation of signed notes
// (golang.org/x/mod/sumdb/note, package documentation, BSD-3-Clause): a
// private key, its verifier key, a text and the signed note it produces.
const GO_SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_TEXT: &str =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const GO_SIG: &str = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=";

fn go_key() -> SecretKey {
    let raw = B64.decode(GO_SKEY.splitn(5, '+').nth(4).unwrap()).unwrap();
    assert_eq!(raw[0], 1, "ed25519 type byte");
    SecretKey::from_seed(raw[1..].try_into().unwrap())
}

#[test]
fn reference_example_key_id_vkey_and_signature() {
    // Goal: our key ID, verifier key text and note signature match the reference implementation byte for byte.
    let key = go_key();
    let vkey = VerifierKey { name: "PeterNeumann".into(), key: key.public() };
    assert_eq!(hex::encode(vkey.key_id()), "c74f20a3");
    assert_eq!(vkey.to_string(), GO_VKEY);
    assert_eq!(VerifierKey::parse(GO_VKEY).unwrap(), vkey);
    // A base64 key with '+' in it parses too.
    let plus = (0..=255u8)
        .map(|n| VerifierKey { name: "v".into(), key: SecretKey::from_seed([n; 32]).public() })
        .find(|k| k.to_string().matches('+').count() > 2)
        .expect("some seed gives a key whose base64 holds '+'");
    assert_eq!(VerifierKey::parse(&plus.to_string()).unwrap(), plus);
    let note_text = format!("{GO_TEXT}\n\u{2014} PeterNeumann {GO_SIG}\n");
    let parsed = SignedNote::parse(&note_text).unwrap();
    assert_eq!(parsed.text, GO_TEXT);
    assert_eq!(parsed.verify(std::slice::from_ref(&vkey)).unwrap(), vec![0]);
    assert_eq!(parsed.to_string(), note_text, "serialising gives the same bytes back");
    // Signing the same text ourselves gives the same signature (ed25519 is deterministic).
    let cp_free_sig = parsed.signatures[0].signature.clone();
    let ours = ed25519_sign(&key, GO_TEXT.as_bytes());
    assert_eq!(ours.to_vec(), cp_free_sig);
}

fn ed25519_sign(key: &SecretKey, msg: &[u8]) -> [u8; 64] {
    use ed25519_dalek::Signer;
    ed25519_dalek::SigningKey::from_bytes(&key.seed()).sign(msg).to_bytes()
}

#[test]
fn checkpoint_text_is_a_tlog_checkpoint() {
    // Goal: the checkpoint text has the C2SP lines (origin, size, base64 root) plus one block line, and parses back.
    let h = sample_header();
    let cp = h.checkpoint();
    let text = cp.to_text();
    let want = format!("annal/{CHAIN}\n4242\n{}\nblock 42 45 {}\n", B64.encode([3u8; 32]), hex::encode(h.hash()));
    assert_eq!(text, want);
    assert_eq!(Checkpoint::parse(&text).unwrap(), cp);
}

#[test]
fn non_canonical_checkpoints_are_refused() {
    // Goal: leading zeros, a short root, uppercase hex, missing or extra lines are each an error.
    let good = sample_header().checkpoint().to_text();
    let lines: Vec<&str> = good.lines().collect();
    let bad_texts = [
        good.replace("\n4242\n", "\n04242\n"),
        good.replace(lines[2], &B64.encode([3u8; 31])),
        good.replace(&lines[3][14..], &lines[3][14..].to_uppercase()),
        good.trim_end_matches('\n').to_string(),
        format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2]),
        format!("{good}extra\n"),
        good.replace("block 42", "block 42 "),
    ];
    for t in bad_texts {
        assert!(Checkpoint::parse(&t).is_err(), "accepted {t:?}");
    }
}

#[test]
fn certificate_is_a_signed_checkpoint_with_quorum() {
    // Goal: a certificate becomes a signed note that verifies against the set; below 2/3 it does not.
    let g = genesis();
    let set = g.validator_set();
    let h = sample_header();
    let (k1, k2, k3) = (key(1), key(2), key(3));
    let cert = Certificate::sign(&h, &set, &[(0, &k1), (1, &k2), (2, &k3)]);
    cert.verify(&h, &set).unwrap();
    let signed = cert.to_note(&h, &set);
    let reparsed = SignedNote::parse(&signed.to_string()).unwrap();
    assert_eq!(set.verify_checkpoint(CHAIN, &reparsed).unwrap(), h.checkpoint());
    // Each signature line verifies with the validator's published verifier key, as any C2SP tool would.
    let vkeys: Vec<VerifierKey> =
        set.verifier_keys().iter().map(|k| VerifierKey::parse(&k.to_string()).unwrap()).collect();
    assert_eq!(reparsed.verify(&vkeys).unwrap(), vec![0, 1, 2]);

    let two = Certificate::sign(&h, &set, &[(0, &k1), (1, &k2)]).to_note(&h, &set);
    assert!(matches!(set.verify_checkpoint(CHAIN, &two), Err(Error::QuorumNotReached { power: 2, total: 4, .. })));
    assert!(set.verify_checkpoint("other-chain", &signed).is_err(), "origin names the chain");
}

#[test]
fn forged_or_altered_signed_checkpoints_are_refused() {
    // Goal: an altered text, a bad signature by a member, and a doubled signer are refused; strangers are ignored.
    let set = genesis().validator_set();
    let h = sample_header();
    let (k1, k2, k3) = (key(1), key(2), key(3));
    let signed = Certificate::sign(&h, &set, &[(0, &k1), (1, &k2), (2, &k3)]).to_note(&h, &set);

    let mut altered = signed.clone();
    altered.text = altered.text.replace("\n4242\n", "\n4243\n");
    assert!(set.verify_checkpoint(CHAIN, &altered).is_err());

    let mut bad_sig = signed.clone();
    bad_sig.signatures[1].signature[0] ^= 1;
    assert!(set.verify_checkpoint(CHAIN, &bad_sig).is_err(), "a member's bad signature rejects the whole note");

    let mut doubled = signed.clone();
    doubled.signatures.push(doubled.signatures[0].clone());
    assert!(set.verify_checkpoint(CHAIN, &doubled).is_err());

    let mut with_stranger = signed.clone();
    let stranger = key(77);
    with_stranger.signatures.push(note::NoteSignature {
        name: "witness.example".into(),
        key_id: note::key_id("witness.example", &stranger.public()),
        signature: stranger.sign_checkpoint(&h.checkpoint()).0.to_vec(),
    });
    set.verify_checkpoint(CHAIN, &with_stranger).expect("unknown keys are ignored");

    let mut impostor = signed.clone();
    impostor.signatures[0].signature = stranger.sign_checkpoint(&h.checkpoint()).0.to_vec();
    assert!(
        set.verify_checkpoint(CHAIN, &impostor).is_err(),
        "a member's name and key ID with another key's signature"
    );
}

#[test]
fn malformed_notes_are_refused() {
    // Goal: every malformed note is an error, never a panic.
    let set = genesis().validator_set();
    let h = sample_header();
    let (k1, k2, k3) = (key(1), key(2), key(3));
    let good = Certificate::sign(&h, &set, &[(0, &k1), (1, &k2), (2, &k3)]).to_note(&h, &set).to_string();
    let cases = [
        good.replace("\n\n", "\n"),
        good.replace('\u{2014}', "--"),
        good.trim_end().to_string(),
        format!("{good}\u{7}"),
        good.replace("validator-1 ", "validator-1  "),
        good.split("\n\n").next().unwrap().to_string() + "\n\n",
        good.replacen("validator-1 ", "validator-1 A", 1),
        "x".repeat(NOTE_BYTES_MAX + 1),
        String::new(),
    ];
    for c in cases {
        assert!(SignedNote::parse(&c).is_err(), "accepted {c:?}");
    }
    for prefix in 0..good.len() {
        if good.is_char_boundary(prefix) {
            let _ = SignedNote::parse(&good[..prefix]);
        }
    }
}
