//! Proof bundles: a valid bundle verifies offline from genesis alone, and every
//! single forgery — of a path hash, an index, a header field, a signature, the
//! signer set, a record byte, the validator-set chain, a genesis key, a state
//! proof, a document byte — is refused with the check that catches it.

mod common;

use annal_ledger::block::{Certificate, Header, Height, ValidatorSet, View};
use annal_ledger::codec;
use annal_ledger::exec::{execute, BlockMeta, Signatures};
use annal_ledger::genesis::{Genesis, Validator};
use annal_ledger::keys::SecretKey;
use annal_ledger::note::SignedNote;
use annal_ledger::proof::{self, Bundle, Check, HeldTie};
use annal_ledger::record::{Body, DocumentAnchor, Op, RecordId, SignedRecord};
use annal_ledger::store::{Store, StoreOptions};
use annal_ledger::Error;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use sha2::Digest;

const DOCUMENT: &[u8] = b"%PDF-1.7 deed of transfer, parcel 42, registered 2026-11-25";

/// A chain with hand-made validator-set changes: heights 1..=3 certified by the
/// genesis set (keys 1..=4), 4..=5 by set B (keys 5..=7, unequal power), 6.. by set C (keys 8..=11).
struct Chain {
    _dir: TempDir,
    store: Store,
    genesis: Genesis,
    /// The anchored record (height 4) and its amendment (height 6).
    anchored: RecordId,
    amended: RecordId,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn set_of(keys: &[(u8, u64)]) -> ValidatorSet {
    ValidatorSet {
        validators: keys
            .iter()
            .map(|&(k, power)| Validator {
                name: format!("v{k}"),
                consensus_key: key(k).public(),
                p2p_key: key(k + 100).public(),
                power,
            })
            .collect(),
    }
}

fn genesis_with_named_validators() -> Genesis {
    let mut g = genesis();
    g.validators = set_of(&[(1, 1), (2, 1), (3, 1), (4, 1)]).validators;
    g
}

fn set_keys(set: &ValidatorSet) -> Vec<SecretKey> {
    set.validators.iter().map(|v| key(v.name[1..].parse().unwrap())).collect()
}

/// Commits one block signed by the first `signers` members of `set`, changing to `next` if given.
fn commit(
    store: &mut Store,
    g: &Genesis,
    set: &ValidatorSet,
    next: Option<ValidatorSet>,
    records: &[SignedRecord],
) -> Vec<RecordId> {
    let gov = annal_ledger::gov::Governance::genesis(g);
    let height = Height(store.tip().height.0 + 1);
    let mut executed = execute(&gov, height, &*store, store.frontier(), records, Signatures::Verify).unwrap();
    executed.next_set = next;
    let tip = store.tip().clone();
    let meta = BlockMeta {
        height: Height(tip.height.0 + 1),
        view: View(tip.height.0 + 7),
        parent: tip.block_hash,
        time_ms: g.genesis_time_ms + 1000 * (tip.height.0 + 1),
        proposer: 0,
        validators_hash: set.hash(),
    };
    let header = executed.header(&g.chain_id, &meta);
    let keys = set_keys(set);
    let signers: Vec<(usize, &SecretKey)> = keys.iter().enumerate().collect();
    let cert = Certificate::sign(&header, set, &signers);
    cert.verify(&header, set).unwrap();
    store.commit(&header, &cert, &executed).unwrap();
    executed.ids
}

fn chain() -> Chain {
    let dir =
        std::env::temp_dir().join(format!("annal-bundle-{}-{:?}", std::process::id(), std::thread::current().id()));
    let _ = std::fs::remove_dir_all(&dir);
    let g = genesis_with_named_validators();
    let mut store = Store::open(&dir, g.hash(), StoreOptions { sync: false, ..StoreOptions::default() }).unwrap();
    let a = g.validator_set();
    let b = set_of(&[(5, 5), (6, 3), (7, 2)]);
    let c = set_of(&[(8, 1), (9, 1), (10, 1), (11, 1)]);
    let mut nonce = 0;
    let mut next = || {
        nonce += 1;
        nonce
    };
    for _ in 0..2 {
        let recs: Vec<_> = (0..5)
            .map(|_| {
                let n = next();
                signed(21, "land-titles", &format!("p/{n}"), Op::Publish, None, 1, n)
            })
            .collect();
        commit(&mut store, &g, &a, None, &recs);
    }
    commit(&mut store, &g, &a, Some(b.clone()), &[signed(31, "companies", "c/1", Op::Publish, None, 1, next())]);
    let mut doc = record(21, "land-titles", "parcel/42", Op::Publish, None, 1, next());
    doc.body = Body::Document(DocumentAnchor {
        sha256: sha2::Sha256::digest(DOCUMENT).into(),
        size: DOCUMENT.len() as u64,
        media_type: "application/pdf".into(),
    });
    let mut recs: Vec<_> = (0..6)
        .map(|_| {
            let n = next();
            signed(22, "land-titles", &format!("q/{n}"), Op::Publish, None, 1, n)
        })
        .collect();
    recs.insert(3, doc.sign(&key(21)));
    let anchored = commit(&mut store, &g, &b, None, &recs)[3];
    commit(&mut store, &g, &b, Some(c.clone()), &[signed(31, "companies", "c/2", Op::Publish, None, 1, next())]);
    let amended = commit(
        &mut store,
        &g,
        &c,
        None,
        &[signed(21, "land-titles", "parcel/42", Op::Amend, Some(anchored), 2, next())],
    )[0];
    commit(&mut store, &g, &c, None, &[signed(31, "companies", "c/3", Op::Publish, None, 1, next())]);
    Chain { _dir: TempDir(dir), store, genesis: g, anchored, amended }
}

fn check_of(result: Result<proof::Verified, Error>) -> Check {
    match result {
        Err(Error::Proof { check, .. }) => check,
        Err(other) => panic!("expected a proof error, got {other}"),
        Ok(_) => panic!("a forged bundle verified"),
    }
}

fn expect(bundle: &Bundle, g: &Genesis, want: Check, what: &str) {
    let got = check_of(proof::verify(bundle, g, Some(DOCUMENT)));
    assert_eq!(got, want, "{what}: refused by the wrong check");
}

#[test]
fn valid_bundle_verifies_with_status_and_document() {
    // Goal: a bundle across two validator-set changes verifies from genesis alone, with the document and status.
    let c = chain();
    let b = proof::bundle(&c.store, &c.genesis, &c.anchored, true).unwrap();
    let json = b.to_json();
    assert!(json.len() < 8 * 1024, "bundle is {} bytes", json.len());
    let b = Bundle::from_json(&json).unwrap();
    let v = proof::verify(&b, &c.genesis, Some(DOCUMENT)).unwrap();
    assert_eq!(v.id, c.anchored);
    assert_eq!(v.header.height, Height(4));
    assert_eq!(v.agency, "land");
    assert_eq!((v.power, v.total_power), (10, 10));
    assert_eq!(b.set_changes.len(), 2, "both changes lead to the status block at height 7");
    let status = v.status.unwrap();
    assert_eq!(status.head.id, c.amended, "the anchored version was superseded");
    assert!(status.describe(&v.id).starts_with("superseded by"));
    let current = proof::bundle(&c.store, &c.genesis, &c.amended, true).unwrap();
    let v = proof::verify(&current, &c.genesis, None).unwrap();
    assert!(v.status.unwrap().describe(&v.id).starts_with("current as of height 7"));
}

#[test]
fn wrong_document_is_refused() {
    // Goal: a document that differs in one byte, or in length, is refused by the Document check.
    let c = chain();
    let b = proof::bundle(&c.store, &c.genesis, &c.anchored, false).unwrap();
    let mut doc = DOCUMENT.to_vec();
    for i in [0, doc.len() / 2, doc.len() - 1] {
        doc[i] ^= 1;
        assert_eq!(check_of(proof::verify(&b, &c.genesis, Some(&doc))), Check::Document);
        doc[i] ^= 1;
    }
    assert_eq!(check_of(proof::verify(&b, &c.genesis, Some(&DOCUMENT[1..]))), Check::Document);
}

#[test]
fn every_path_hash_index_and_size_forgery_is_refused() {
    // Goal: flipping any bit-position of any path hash, or moving the index or block position, is refused.
    let c = chain();
    let b = proof::bundle(&c.store, &c.genesis, &c.anchored, false).unwrap();
    for i in 0..b.log_path.len() {
        let mut f = b.clone();
        let mut h = B64.decode(&f.log_path[i]).unwrap();
        h[i % 32] ^= 0x80;
        f.log_path[i] = B64.encode(h);
        expect(&f, &c.genesis, Check::LogInclusion, &format!("log path hash {i}"));
    }
    for i in 0..b.block_path.len() {
        let mut f = b.clone();
        let mut h = B64.decode(&f.block_path[i]).unwrap();
        h[31 - i % 32] ^= 1;
        f.block_path[i] = B64.encode(h);
        expect(&f, &c.genesis, Check::BlockInclusion, &format!("block path hash {i}"));
    }
    let mut f = b.clone();
    f.log_path.pop();
    expect(&f, &c.genesis, Check::LogInclusion, "a dropped log path hash");
    let mut f = b.clone();
    f.log_path.push(f.log_path[0].clone());
    expect(&f, &c.genesis, Check::LogInclusion, "an extra log path hash");
    let mut f = b.clone();
    f.log_path[0] = B64.encode([0u8; 31]);
    expect(&f, &c.genesis, Check::LogInclusion, "a short log path hash");
    for delta in [-1i64, 1] {
        let mut f = b.clone();
        f.index = (f.index as i64 + delta) as u64;
        expect(&f, &c.genesis, Check::BlockInclusion, "a moved index");
        let mut f = b.clone();
        f.block_position = (f.block_position as i64 + delta) as u64;
        expect(&f, &c.genesis, Check::BlockInclusion, "a moved block position");
        let mut f = b.clone();
        f.block_records = (f.block_records as i64 + delta) as u64;
        expect(&f, &c.genesis, Check::BlockInclusion, "a changed block record count");
        let mut f = b.clone();
        f.index = (f.index as i64 + delta) as u64;
        f.block_position = (f.block_position as i64 + delta) as u64;
        expect(&f, &c.genesis, Check::BlockInclusion, "index and position moved together");
    }
}

/// Re-encodes the bundle's block header after `edit`.
fn with_header(b: &Bundle, edit: impl Fn(&mut Header)) -> Bundle {
    let mut h = Header::from_bytes(&B64.decode(&b.block.header).unwrap()).unwrap();
    edit(&mut h);
    let mut f = b.clone();
    f.block.header = B64.encode(h.to_bytes());
    f
}

#[test]
fn every_header_field_forgery_is_refused() {
    // Goal: changing any header field breaks the signed checkpoint (or names another chain or set).
    let c = chain();
    let b = proof::bundle(&c.store, &c.genesis, &c.anchored, false).unwrap();
    let g = &c.genesis;
    type Edit = Box<dyn Fn(&mut Header)>;
    let cases: Vec<(&str, Edit, Check)> = vec![
        ("chain_id", Box::new(|h| h.chain_id = "other".into()), Check::HeaderBytes),
        ("height", Box::new(|h| h.height.0 += 1), Check::Checkpoint),
        ("view", Box::new(|h| h.view.0 += 1), Check::Checkpoint),
        ("parent", Box::new(|h| h.parent[0] ^= 1), Check::Checkpoint),
        ("time_ms", Box::new(|h| h.time_ms += 1), Check::Checkpoint),
        ("proposer", Box::new(|h| h.proposer += 1), Check::Checkpoint),
        ("records_root", Box::new(|h| h.records_root[0] ^= 1), Check::Checkpoint),
        ("log_size", Box::new(|h| h.log_size += 1), Check::Checkpoint),
        ("log_root", Box::new(|h| h.log_root[0] ^= 1), Check::Checkpoint),
        ("state_root", Box::new(|h| h.state_root[0] ^= 1), Check::Checkpoint),
        ("validators_hash", Box::new(|h| h.validators_hash[0] ^= 1), Check::ValidatorSet),
        ("next_validators_hash", Box::new(|h| h.next_validators_hash[0] ^= 1), Check::Checkpoint),
    ];
    for (field, edit, want) in cases {
        expect(&with_header(&b, edit), g, want, field);
    }
    let mut f = b.clone();
    f.block.header.push('A');
    expect(&f, g, Check::HeaderBytes, "a header byte appended");
}

#[test]
fn every_signature_and_signer_forgery_is_refused() {
    // Goal: a flipped bit in any signature, a dropped signer (2/3 or less of the power) and a
    // checkpoint from another block are each refused by the Checkpoint check.
    let c = chain();
    let b = proof::bundle(&c.store, &c.genesis, &c.anchored, false).unwrap();
    let note = SignedNote::parse(&b.block.checkpoint).unwrap();
    for i in 0..note.signatures.len() {
        let mut n = note.clone();
        n.signatures[i].signature[i * 7 % 64] ^= 1;
        let mut f = b.clone();
        f.block.checkpoint = n.to_string();
        expect(&f, &c.genesis, Check::Checkpoint, &format!("signature {i}"));
        // An unknown key ID makes the line a stranger's, which C2SP says to ignore: the
        // remaining signers must carry the quorum. Set B's powers are 5, 3, 2 of 10.
        let mut n = note.clone();
        n.signatures[i].key_id[0] ^= 1;
        let mut f = b.clone();
        f.block.checkpoint = n.to_string();
        let remaining = 10 - [5, 3, 2][i];
        if 3 * remaining > 20 {
            proof::verify(&f, &c.genesis, None)
                .unwrap_or_else(|e| panic!("key id {i}: {remaining}/10 still verifies: {e}"));
        } else {
            expect(&f, &c.genesis, Check::Checkpoint, &format!("key id {i}: {remaining}/10"));
        }
    }
    // Set B has powers 5, 3, 2 (of 10): dropping the 3 leaves 7/10 (> 2/3); dropping the 5 leaves 5/10.
    let mut n = note.clone();
    n.signatures.remove(1);
    let mut f = b.clone();
    f.block.checkpoint = n.to_string();
    proof::verify(&f, &c.genesis, None).expect("7 of 10 is more than 2/3");
    let mut n = note.clone();
    n.signatures.remove(0);
    let mut f = b.clone();
    f.block.checkpoint = n.to_string();
    expect(&f, &c.genesis, Check::Checkpoint, "5 of 10 is not more than 2/3");
    let mut n = note.clone();
    n.signatures.truncate(0);
    let mut f = b.clone();
    f.block.checkpoint = format!("{}\n", n.text);
    expect(&f, &c.genesis, Check::Checkpoint, "no signatures");
    // A genuine checkpoint of another block.
    let other = proof::bundle(&c.store, &c.genesis, &c.amended, false).unwrap();
    let mut f = b.clone();
    f.block.checkpoint = other.block.checkpoint.clone();
    expect(&f, &c.genesis, Check::Checkpoint, "another block's checkpoint");
}

#[test]
fn exactly_two_thirds_is_not_a_quorum() {
    // Goal: more than 2/3 of the power verifies (3 of 4); exactly 2/3 (4 of 6) does not.
    let c = chain();
    let b = proof::bundle(&c.store, &c.genesis, &c.amended, false).unwrap();
    let note = SignedNote::parse(&b.block.checkpoint).unwrap();
    assert_eq!(note.signatures.len(), 4);
    let mut n = note.clone();
    n.signatures.truncate(3);
    let mut f = b.clone();
    f.block.checkpoint = n.to_string();
    proof::verify(&f, &c.genesis, None).expect("3 of 4 is more than 2/3");
    // A 3-validator set of powers 1, 1, 1 plus one of power 0 cannot exist (genesis refuses power 0),
    // so take a set of six equal validators where 4 of 6 is exactly 2/3.
    let six = set_of(&[(40, 1), (41, 1), (42, 1), (43, 1), (44, 1), (45, 1)]);
    let h = Header::from_bytes(&B64.decode(&b.block.header).unwrap()).unwrap();
    let keys = set_keys(&six);
    let four: Vec<(usize, &SecretKey)> = keys.iter().enumerate().take(4).collect();
    let five: Vec<(usize, &SecretKey)> = keys.iter().enumerate().take(5).collect();
    assert!(matches!(
        Certificate::sign(&h, &six, &four).verify(&h, &six),
        Err(Error::QuorumNotReached { power: 4, total: 6, .. })
    ));
    Certificate::sign(&h, &six, &five).verify(&h, &six).expect("5 of 6 is more than 2/3");
    assert!(six.verify_checkpoint(&c.genesis.chain_id, &Certificate::sign(&h, &six, &four).to_note(&h, &six)).is_err());
}

#[test]
fn every_record_byte_forgery_is_refused() {
    // Goal: changing any single byte of the record bytes is refused (as malformed, a view mismatch, or a bad signature).
    let c = chain();
    let b = proof::bundle(&c.store, &c.genesis, &c.anchored, false).unwrap();
    let bytes = B64.decode(&b.record.bytes).unwrap();
    for i in 0..bytes.len() {
        let mut forged = bytes.clone();
        forged[i] ^= 0x01;
        let mut f = b.clone();
        f.record.bytes = B64.encode(&forged);
        let check = check_of(proof::verify(&f, &c.genesis, None));
        assert!(
            matches!(check, Check::RecordBytes | Check::RecordView | Check::RecordSignature | Check::ChainId),
            "byte {i}: {check:?}"
        );
    }
    // A forged record with a consistent view still fails its signature.
    let mut r = SignedRecord::from_bytes(&bytes, &c.genesis.params).unwrap();
    r.record.key = "parcel/43".into();
    let mut f = b.clone();
    f.record.bytes = B64.encode(r.to_bytes());
    f.record.decoded = proof::RecordView::of(&r, &r.id());
    expect(&f, &c.genesis, Check::RecordSignature, "a re-keyed record with its view");
    let mut f = b.clone();
    f.record.decoded.version = 9;
    expect(&f, &c.genesis, Check::RecordView, "a decoded view that lies");
}

#[test]
fn every_set_chain_forgery_is_refused() {
    // Goal: a dropped, reordered, under-signed or substituted validator-set change is refused, and so is a
    // block certified by a set the chain does not lead to.
    let c = chain();
    let b = proof::bundle(&c.store, &c.genesis, &c.anchored, true).unwrap();
    assert_eq!(b.set_changes.len(), 2);
    let g = &c.genesis;
    let mut f = b.clone();
    f.set_changes.remove(0);
    assert!(
        matches!(check_of(proof::verify(&f, g, None)), Check::SetChain | Check::ValidatorSet),
        "first change dropped"
    );
    let mut f = b.clone();
    f.set_changes.remove(1);
    assert!(
        matches!(check_of(proof::verify(&f, g, None)), Check::ValidatorSet | Check::SetChain),
        "second change dropped"
    );
    let mut f = b.clone();
    f.set_changes.swap(0, 1);
    assert!(matches!(check_of(proof::verify(&f, g, None)), Check::SetChain | Check::ValidatorSet), "changes reordered");
    let mut f = b.clone();
    f.set_changes.clear();
    expect(&f, g, Check::ValidatorSet, "chain dropped");
    // A change signed by too little power: keep 2 of the genesis set's 4 signatures.
    let mut f = b.clone();
    let mut n = SignedNote::parse(&f.set_changes[0].block.checkpoint).unwrap();
    n.signatures.truncate(2);
    f.set_changes[0].block.checkpoint = n.to_string();
    expect(&f, g, Check::SetChain, "a change certified by 2 of 4");
    // A substituted next set (say, the attacker's keys).
    let mut f = b.clone();
    f.set_changes[0].next_set = B64.encode(codec::encode(&set_of(&[(90, 1), (91, 1), (92, 1)])));
    expect(&f, g, Check::SetChain, "a substituted next set");
    // The record's block re-certified by the genesis set (which the chain says was replaced at height 3).
    let h = Header::from_bytes(&B64.decode(&b.block.header).unwrap()).unwrap();
    let a = g.validator_set();
    let mut old = h.clone();
    old.validators_hash = a.hash();
    let keys = set_keys(&a);
    let all: Vec<(usize, &SecretKey)> = keys.iter().enumerate().collect();
    let mut f = b.clone();
    f.block.header = B64.encode(old.to_bytes());
    f.block.checkpoint = Certificate::sign(&old, &a, &all).to_note(&old, &a).to_string();
    expect(&f, g, Check::ValidatorSet, "a block certified by a replaced set");
    // A change past the highest block is refused.
    let nostatus = proof::bundle(&c.store, &c.genesis, &c.anchored, false).unwrap();
    let mut f = nostatus.clone();
    f.set_changes = b.set_changes.clone();
    expect(&f, g, Check::SetChain, "changes past the highest block");
}

#[test]
fn a_changed_genesis_key_or_chain_is_refused() {
    // Goal: verifying against a genesis with one validator key changed, or another chain id, fails.
    let c = chain();
    let b = proof::bundle(&c.store, &c.genesis, &c.anchored, false).unwrap();
    for i in 0..4 {
        let mut g = c.genesis.clone();
        g.validators[i].consensus_key = key(60 + i as u8).public();
        assert!(
            matches!(check_of(proof::verify(&b, &g, None)), Check::SetChain | Check::ValidatorSet),
            "genesis key {i}"
        );
    }
    let mut g = c.genesis.clone();
    g.chain_id = "another-chain".into();
    expect(&b, &g, Check::ChainId, "another chain");
    let mut g = c.genesis.clone();
    g.agencies[0].namespaces = vec!["elsewhere".into()];
    expect(&b, &g, Check::Charter, "another charter in this genesis");
}

#[test]
fn every_state_proof_forgery_is_refused() {
    // Goal: changing any byte of the state proof, or swapping the status block, is refused by the Status check.
    let c = chain();
    let b = proof::bundle(&c.store, &c.genesis, &c.anchored, true).unwrap();
    let status = b.status.clone().unwrap();
    let bytes = B64.decode(&status.state_proof).unwrap();
    for i in 0..bytes.len() {
        let mut forged = bytes.clone();
        forged[i] ^= 0x04;
        let mut f = b.clone();
        f.status.as_mut().unwrap().state_proof = B64.encode(&forged);
        expect(&f, &c.genesis, Check::Status, &format!("state proof byte {i}"));
    }
    let mut f = b.clone();
    f.status.as_mut().unwrap().block = f.block.clone();
    expect(&f, &c.genesis, Check::Status, "the record's own block as status block");
    // A bad signature on the status block's checkpoint fails the checkpoint check, and the
    // detail says it is the status block's, not the record's (session 23).
    let mut f = b.clone();
    let checkpoint = &mut f.status.as_mut().unwrap().block.checkpoint;
    let last = checkpoint.trim_end().rfind(' ').unwrap() + 1;
    let mut sig = B64.decode(checkpoint.trim_end()[last..].trim()).unwrap();
    *sig.last_mut().unwrap() ^= 1;
    checkpoint.replace_range(last..checkpoint.trim_end().len(), &B64.encode(&sig));
    match proof::verify(&f, &c.genesis, None) {
        Err(Error::Proof { check: Check::Checkpoint, detail }) => {
            assert!(detail.contains("the status block at height 7, not the record's"), "{detail}")
        }
        other => panic!("a status block with a bad signature: {other:?}"),
    }
}

#[test]
fn a_tlog_proof_is_not_written_from_lines_out_of_form() {
    // Goal: the export copies the bundle's lines, so a path entry that is not one
    // base64 hash (here with a line smuggled in) or a checkpoint that is not a signed
    // note is refused, not written out.
    let c = chain();
    let b = proof::bundle(&c.store, &c.genesis, &c.anchored, false).unwrap();
    b.to_tlog_proof().unwrap();
    let mut f = b.clone();
    f.log_path[0] = format!("{}\nindex 0", f.log_path[0]);
    let e = f.to_tlog_proof().unwrap_err();
    assert!(matches!(e, Error::Proof { check: Check::LogInclusion, .. }), "{e}");
    let mut f = b.clone();
    f.block.checkpoint = "not a note".into();
    assert!(matches!(f.to_tlog_proof(), Err(Error::Proof { check: Check::Checkpoint, .. })));
}

#[test]
fn tlog_proof_export_is_checkable_with_standard_pieces() {
    // Goal: the C2SP tlog-proof holds the index, the log path and the signed checkpoint, and those alone
    // prove inclusion with the validators' note keys and RFC 6962 arithmetic.
    let c = chain();
    let b = proof::bundle(&c.store, &c.genesis, &c.anchored, false).unwrap();
    let text = b.to_tlog_proof().unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("c2sp.org/tlog-proof@v1"));
    let index: u64 = lines.next().unwrap().strip_prefix("index ").unwrap().parse().unwrap();
    let mut path = Vec::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        path.push(annal_ledger::note::decode_hash_b64(line, "path").unwrap());
    }
    let checkpoint_note: String = lines.map(|l| format!("{l}\n")).collect();
    let note = SignedNote::parse(&checkpoint_note).unwrap();
    let set = annal_ledger::proof::set_at(&c.store, &c.genesis, Height(4)).unwrap();
    let vkeys: Vec<_> =
        set.verifier_keys().iter().map(|k| annal_ledger::note::VerifierKey::parse(&k.to_string()).unwrap()).collect();
    note.verify(&vkeys).unwrap();
    let cp = annal_ledger::note::Checkpoint::parse(&note.text).unwrap();
    let leaf = annal_ledger::merkle::leaf_hash(&B64.decode(&b.record.bytes).unwrap());
    annal_ledger::merkle::verify_inclusion(&leaf, index, cp.size, &path, &cp.root).unwrap();
}

#[test]
fn consistency_proofs_verify_across_set_changes_and_refuse_forgeries() {
    // Goal: the log at height 7 provably extends the log at height 2 (across two set changes); a forged
    // path, another held checkpoint, reversed heights or a dropped set change are refused.
    let c = chain();
    let g = &c.genesis;
    let p = proof::consistency(&c.store, g, Height(2), Height(7)).unwrap();
    let p = proof::Consistency::from_json(&p.to_json()).unwrap();
    let held = p.old.checkpoint.clone();
    let (old, new) = proof::verify_consistency(&p, g, Some(&held)).unwrap();
    assert_eq!((old.block.height, new.block.height), (2, 7));
    assert!(old.size < new.size);
    for i in 0..p.path.len() {
        let mut f = p.clone();
        let mut h = B64.decode(&f.path[i]).unwrap();
        h[0] ^= 1;
        f.path[i] = B64.encode(h);
        assert!(
            matches!(proof::verify_consistency(&f, g, None), Err(Error::Proof { check: Check::Consistency, .. })),
            "path {i}"
        );
    }
    let other = proof::consistency(&c.store, g, Height(3), Height(7)).unwrap();
    assert!(matches!(
        proof::verify_consistency(&other, g, Some(&held)),
        Err(Error::Proof { check: Check::Consistency, .. })
    ));
    let mut swapped = p.clone();
    std::mem::swap(&mut swapped.old, &mut swapped.new);
    assert!(proof::verify_consistency(&swapped, g, None).is_err());
    let mut dropped = p.clone();
    dropped.set_changes.remove(0);
    assert!(proof::verify_consistency(&dropped, g, None).is_err());
    // A set change that does not decode is named by its place and height.
    for (field, want) in [("header", "set_changes[1]'s header"), ("next_set", "set_changes[1] (height ")] {
        let mut f = p.clone();
        match field {
            "header" => f.set_changes[1].block.header = "%%".into(),
            _ => f.set_changes[1].next_set = "%%".into(),
        }
        let e = proof::verify_consistency(&f, g, None).unwrap_err().to_string();
        assert!(e.contains(want), "{field}: {e}");
    }
    // A bad signature is said of the block it is on.
    for (old, which) in [(true, "the old block at height 2: "), (false, "the new block at height 7: ")] {
        let mut f = p.clone();
        let part = if old { &mut f.old } else { &mut f.new };
        part.checkpoint = part.checkpoint.replace("— ", "— x");
        let e = proof::verify_consistency(&f, g, None).unwrap_err().to_string();
        assert!(e.contains(which), "{which}: {e}");
    }
    // Same height: an empty proof and equal roots.
    let same = proof::consistency(&c.store, g, Height(5), Height(5)).unwrap();
    proof::verify_consistency(&same, g, None).unwrap();
}

#[test]
fn a_record_is_tied_to_a_held_checkpoint_before_or_after_its_block() {
    // Goal: the anchored record (height 4) is tied to a checkpoint held at height 7 (its log
    // contains block 4's) and at height 2 (block 4's log extends it), through a consistency
    // proof between exactly those two blocks, across set changes; its own block's checkpoint
    // needs none. A proof between other blocks, none at all, or a held checkpoint of another
    // block at the same height is refused.
    let c = chain();
    let g = &c.genesis;
    let b = proof::bundle(&c.store, g, &c.anchored, false).unwrap();
    let v = proof::verify(&b, g, None).unwrap();
    assert_eq!(v.header.height, Height(4));
    let held_at = |h: u64| proof::consistency(&c.store, g, Height(h), Height(h)).unwrap().old.checkpoint;

    assert_eq!(proof::tie_to_held(&v.header, &b.block.checkpoint, None, g).unwrap(), HeldTie::Same);
    let later = proof::consistency(&c.store, g, Height(4), Height(7)).unwrap();
    let size7 = c.store.header(Height(7)).unwrap().unwrap().log_size;
    assert_eq!(
        proof::tie_to_held(&v.header, &held_at(7), Some(&later), g).unwrap(),
        HeldTie::Contains { height: 7, size: size7 }
    );
    let earlier = proof::consistency(&c.store, g, Height(2), Height(4)).unwrap();
    let size2 = c.store.header(Height(2)).unwrap().unwrap().log_size;
    assert_eq!(
        proof::tie_to_held(&v.header, &held_at(2), Some(&earlier), g).unwrap(),
        HeldTie::Extended { height: 2, size: size2 }
    );

    let refused = |held: &str, p: Option<&proof::Consistency>| {
        let e = proof::tie_to_held(&v.header, held, p, g).unwrap_err();
        assert!(matches!(e, Error::Proof { check: Check::Consistency, .. }), "{e}");
        e.to_string()
    };
    assert!(refused(&held_at(7), None).contains("from=4&to=7"));
    let other = proof::consistency(&c.store, g, Height(5), Height(7)).unwrap();
    assert!(refused(&held_at(7), Some(&other)).contains("from height 5 to 7"));
    assert!(refused(&held_at(2), Some(&later)).contains("not between"));
    // A forged path between the right blocks fails the proof itself.
    let mut forged = later.clone();
    let mut h = B64.decode(&forged.path[0]).unwrap();
    h[0] ^= 1;
    forged.path[0] = B64.encode(h);
    refused(&held_at(7), Some(&forged));
    // Another block at height 4 (here: block 4's checkpoint text with another root).
    let note = annal_ledger::note::SignedNote::parse(&b.block.checkpoint).unwrap();
    let mut cp = annal_ledger::note::Checkpoint::parse(&note.text).unwrap();
    cp.root[0] ^= 1;
    let fork = b.block.checkpoint.replacen(&note.text, &cp.to_text(), 1);
    assert_ne!(fork, b.block.checkpoint);
    assert!(refused(&fork, None).contains("histories differ"));
}

#[test]
fn every_signer_bitmap_forgery_is_refused() {
    // Goal: flipping any bit of a stored certificate's signer bitmap, or truncating or extending it, is refused.
    let c = chain();
    let header = c.store.header(Height(4)).unwrap().unwrap();
    let cert = c.store.certificate(Height(4)).unwrap().unwrap();
    let set = proof::set_at(&c.store, &c.genesis, Height(4)).unwrap();
    cert.verify(&header, &set).unwrap();
    for bit in 0..cert.signers.len() * 8 {
        let mut f = cert.clone();
        f.signers[bit / 8] ^= 1 << (bit % 8);
        assert!(f.verify(&header, &set).is_err(), "bitmap bit {bit}");
    }
    let mut f = cert.clone();
    f.signers.push(0);
    assert!(f.verify(&header, &set).is_err(), "a bitmap one byte too long");
    let mut f = cert.clone();
    f.signers.clear();
    assert!(f.verify(&header, &set).is_err(), "an empty bitmap");
}
