//! The seed corpora: small real inputs for each target, built with the crates'
//! own encoders and signers (no RocksDB: the chain is executed in memory).
//! `cargo run --bin make_seeds -- corpus` writes them; each is checked to pass
//! its parser (and, for bundles, full verification) before it is written.

use std::collections::BTreeMap;

use annal_consensus::{
    signing_bytes, Block, Certificate, Height, Message, Proposal, ValidatorIndex, View, Vote, VoteKind,
};
use annal_ledger::block::{
    Certificate as LedgerCertificate, Header, Height as LedgerHeight, ValidatorSet, View as LedgerView,
};
use annal_ledger::codec;
use annal_ledger::exec::{execute, BlockMeta, Executed, Signatures};
use annal_ledger::genesis::{Genesis, Params, Validator};
use annal_ledger::keys::SecretKey;
use annal_ledger::merkle::{self, Frontier, Hash, MemoryNodes};
use annal_ledger::note::{SignedNote, VerifierKey};
use annal_ledger::proof::{self, Bundle, CertifiedBlock, Consistency, RecordPart, RecordView, SetChange, StatusPart};
use annal_ledger::record::{Body, DocumentAnchor, Op, Record, RecordId, SignedRecord};
use annal_ledger::state::{MemoryState, StateKey};
use annal_ledger::state_tree;
use annal_ledger::submission::{self, BatchBody, SubmitBody};
use annal_ledger::Error;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::Signer as _;

use crate::{
    consensus_key, key, API_BATCH_RECORDS_MAX, API_RECORD_BYTES_MAX, CHAIN, CONSENSUS_CHAIN, CONSENSUS_SET, FIXTURE,
};

/// One seed file: its name in `corpus/<target>/` and its bytes.
pub type Seed = (String, Vec<u8>);

/// The document the seed chain's anchored record pins.
pub const DOCUMENT: &[u8] = b"%PDF-1.7 deed of transfer, parcel 42, registered 2026-11-25";

/// `ledger/tests/encoding.rs`'s golden record: every field set.
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

/// Go's signed-note reference example (golang.org/x/mod/sumdb/note), as in `ledger/tests/note.rs`.
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_NOTE: &str = concat!(
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n",
    "\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
);

fn record(
    signer: u8,
    namespace: &str,
    key_name: &str,
    op: Op,
    supersedes: Option<RecordId>,
    version: u64,
    nonce: u64,
) -> Record {
    Record {
        chain_id: CHAIN.into(),
        namespace: namespace.into(),
        key: key_name.into(),
        op,
        body: Body::Inline(format!("{key_name} v{nonce}").into_bytes()),
        metadata: [("basis".to_string(), "Act 12 s.3".to_string())].into(),
        supersedes,
        version,
        submitter: key(signer).public(),
        nonce,
    }
}

fn signed(
    signer: u8,
    namespace: &str,
    key_name: &str,
    op: Op,
    supersedes: Option<RecordId>,
    version: u64,
    nonce: u64,
) -> SignedRecord {
    record(signer, namespace, key_name, op, supersedes, version, nonce).sign(&key(signer))
}

/// Seeds for `record_decode`: the golden record and one record of each op and body.
pub fn records() -> Vec<Seed> {
    let golden = hex::decode(GOLDEN_RECORD).expect("golden hex");
    let mut doc = record(21, "land-titles", "parcel/42", Op::Publish, None, 1, 1);
    doc.body = Body::Document(DocumentAnchor { sha256: [0xcd; 32], size: 59, media_type: "application/pdf".into() });
    doc.metadata = BTreeMap::new();
    let amend = signed(22, "land-titles", "parcel/42", Op::Amend, Some(RecordId([0xab; 32])), 2, 9);
    let revoke = signed(31, "companies", "c/1", Op::Revoke, Some(RecordId([0x11; 32])), 3, 4);
    let seeds = vec![
        ("golden".to_string(), golden),
        ("publish-document".to_string(), doc.sign(&key(21)).to_bytes()),
        ("amend-inline".to_string(), amend.to_bytes()),
        ("revoke".to_string(), revoke.to_bytes()),
    ];
    for (name, bytes) in &seeds {
        let r = SignedRecord::from_bytes(bytes, &FIXTURE.params).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        r.verify_signature().unwrap_or_else(|e| panic!("seed {name}: {e}"));
    }
    seeds
}

fn vote(i: u8, kind: VoteKind, view: u64, height: u64, digest: [u8; 32]) -> Vote {
    let (view, height) = (View(view), Height(height));
    let signature = consensus_key(i).sign(&signing_bytes(kind, &CONSENSUS_CHAIN, view, height, &digest)).to_bytes();
    Vote { kind, view, height, digest, signer: ValidatorIndex(u32::from(i)), signature }
}

/// Seeds for `consensus_message`: one message of every tag, signed by the fixture set.
pub fn consensus_messages() -> Vec<Seed> {
    let block = Block {
        height: Height(1),
        view: View(1),
        parent_view: View(0),
        parent: [0; 32],
        payload: b"records".to_vec().into(),
    };
    let digest = block.hash(&CONSENSUS_CHAIN);
    let leader = CONSENSUS_SET.leader(View(1));
    let proposal = {
        let bytes = signing_bytes(VoteKind::Propose, &CONSENSUS_CHAIN, View(1), Height(1), &digest);
        let signature = consensus_key(leader.0 as u8).sign(&bytes).to_bytes();
        Proposal { block: block.clone(), signature }
    };
    // Powers 1..=4 (total 10): validators 1, 2, 3 hold 9, a quorum.
    let cert = |kind, view, height, digest| {
        let votes: Vec<Vote> = (1..4).map(|i| vote(i, kind, view, height, digest)).collect();
        let c = Certificate::assemble(&CONSENSUS_SET, votes.iter()).expect("three votes");
        c.verify(&CONSENSUS_CHAIN, &CONSENSUS_SET, &annal_consensus::Ed25519Verifier).expect("a quorum certificate");
        c
    };
    let seeds = vec![
        ("propose".to_string(), Message::Propose(proposal)),
        ("notarize".to_string(), Message::Vote(vote(2, VoteKind::Notarize, 1, 1, digest))),
        ("nullify".to_string(), Message::Vote(vote(0, VoteKind::Nullify, 2, 0, [0; 32]))),
        ("finalize".to_string(), Message::Vote(vote(3, VoteKind::Finalize, 1, 1, digest))),
        ("notarization".to_string(), Message::Certificate(cert(VoteKind::Notarize, 1, 1, digest))),
        ("nullification".to_string(), Message::Certificate(cert(VoteKind::Nullify, 2, 0, [0; 32]))),
        ("finalization".to_string(), Message::Certificate(cert(VoteKind::Finalize, 1, 1, digest))),
        ("block-request".to_string(), Message::BlockRequest(digest)),
        ("block-response".to_string(), Message::BlockResponse(block)),
    ];
    seeds
        .into_iter()
        .map(|(name, m)| {
            let bytes = m.encode();
            assert_eq!(Message::decode(&bytes, &Default::default()).as_ref(), Ok(&m), "seed {name}");
            (name, bytes)
        })
        .collect()
}

/// A committed block of the seed chain.
struct Committed {
    header: Header,
    block: CertifiedBlock,
    ids: Vec<RecordId>,
    records: Vec<Vec<u8>>,
}

/// A short chain on the fixture genesis, executed in memory: height 1 by the
/// genesis set, which hands over to set B (keys 5..=7, unequal power); heights
/// 2 and 3 by set B.
struct Chain {
    blocks: Vec<Committed>,
    state: MemoryState,
    frontier: Frontier,
    nodes: MemoryNodes,
    set_b: ValidatorSet,
    /// Height 1's set change, as bundles carry it.
    change: SetChange,
}

fn set_b() -> ValidatorSet {
    ValidatorSet {
        validators: [(5u8, 5u64), (6, 3), (7, 2)]
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

impl Chain {
    fn new() -> Self {
        Chain {
            blocks: Vec::new(),
            state: MemoryState::default(),
            frontier: Frontier::new(),
            nodes: MemoryNodes::new(),
            set_b: set_b(),
            change: SetChange {
                block: CertifiedBlock { header: String::new(), checkpoint: String::new() },
                next_set: String::new(),
            },
        }
    }

    /// Executes `records` as the next block, certified by every member of `set` (keys `signers`).
    fn commit(&mut self, set: &ValidatorSet, signers: &[u8], next: Option<ValidatorSet>, records: &[SignedRecord]) {
        let g: &Genesis = &FIXTURE;
        let height = self.blocks.len() as u64 + 1;
        let gov = annal_ledger::gov::Governance::genesis(g);
        let mut executed: Executed =
            execute(&gov, LedgerHeight(height), &self.state, &self.frontier, records, Signatures::Verify)
                .expect("seed block executes");
        executed.next_set = next;
        let meta = BlockMeta {
            height: LedgerHeight(height),
            view: LedgerView(height + 6),
            parent: self.blocks.last().map_or_else(|| g.hash(), |b| b.header.hash()),
            time_ms: g.genesis_time_ms + 1000 * height,
            proposer: 0,
            validators_hash: set.hash(),
        };
        let header = executed.header(&g.chain_id, &meta);
        let keys: Vec<SecretKey> = signers.iter().map(|&k| key(k)).collect();
        let pairs: Vec<(usize, &SecretKey)> = keys.iter().enumerate().collect();
        let cert = LedgerCertificate::sign(&header, set, &pairs);
        cert.verify(&header, set).expect("seed certificate verifies");
        let block = CertifiedBlock {
            header: B64.encode(header.to_bytes()),
            checkpoint: cert.to_note(&header, set).to_string(),
        };
        if let Some(next) = &executed.next_set {
            self.change = SetChange { block: block.clone(), next_set: B64.encode(codec::encode(next)) };
        }
        self.state.absorb(&executed);
        self.nodes.extend(executed.nodes.iter().copied());
        self.frontier = executed.frontier.clone();
        self.blocks.push(Committed {
            header,
            block,
            ids: executed.ids.clone(),
            records: executed.records.iter().map(|r| r.to_vec()).collect(),
        });
    }

    fn build() -> Self {
        let mut c = Chain::new();
        let genesis_set = FIXTURE.validator_set();
        let mut first: Vec<SignedRecord> =
            (1..=4).map(|n| signed(21, "land-titles", &format!("p/{n}"), Op::Publish, None, 1, n)).collect();
        first.push(signed(31, "companies", "c/1", Op::Publish, None, 1, 1));
        let p1 = first[0].id();
        c.commit(&genesis_set, &[1, 2, 3], Some(c.set_b.clone()), &first);

        let mut doc = record(22, "land-titles", "parcel/42", Op::Publish, None, 1, 1);
        use sha2::Digest;
        doc.body = Body::Document(DocumentAnchor {
            sha256: sha2::Sha256::digest(DOCUMENT).into(),
            size: DOCUMENT.len() as u64,
            media_type: "application/pdf".into(),
        });
        let second = vec![doc.sign(&key(22)), signed(21, "land-titles", "p/1", Op::Amend, Some(p1), 2, 5)];
        let set_b = c.set_b.clone();
        c.commit(&set_b, &[5, 6, 7], None, &second);
        let third = vec![signed(31, "companies", "c/1", Op::Revoke, Some(c.blocks[0].ids[4]), 2, 2)];
        c.commit(&set_b, &[5, 6], None, &third);
        c
    }

    /// The bundle of record `position` of block `height`, with a status as of the tip when `with_status`.
    fn bundle(&self, height: usize, position: usize, with_status: bool) -> Bundle {
        let b = &self.blocks[height - 1];
        let bytes = &b.records[position];
        let record = SignedRecord::from_bytes(bytes, &FIXTURE.params).expect("committed record decodes");
        let id = b.ids[position];
        let leaves: Vec<Hash> = b.ids.iter().map(|i| i.0).collect();
        let block_path =
            merkle::inclusion_proof(&MemoryNodes::from_leaves(&leaves), position as u64, leaves.len() as u64)
                .expect("block path");
        let index = b.header.log_size - leaves.len() as u64 + position as u64;
        let log_path = merkle::inclusion_proof(&self.nodes, index, b.header.log_size).expect("log path");
        let tip = self.blocks.last().expect("a block");
        let status = with_status.then(|| {
            let key = StateKey { namespace: record.record.namespace.clone(), key: record.record.key.clone() };
            let state_proof = state_tree::prove(&self.state, &key).expect("state proof");
            StatusPart { block: tip.block.clone(), state_proof: B64.encode(state_proof.to_bytes()) }
        });
        let top = if with_status { self.blocks.len() } else { height };
        Bundle {
            format: proof::BUNDLE_FORMAT.into(),
            chain_id: CHAIN.into(),
            record: RecordPart { bytes: B64.encode(bytes), decoded: RecordView::of(&record, &id) },
            index,
            block: b.block.clone(),
            block_position: position as u64,
            block_records: leaves.len() as u64,
            block_path: proof::b64_hashes(&block_path),
            log_path: proof::b64_hashes(&log_path),
            set_changes: if top > 1 { vec![self.change.clone()] } else { Vec::new() },
            // The seed chain keeps the genesis charter.
            charter: None,
            status,
        }
    }

    fn consistency(&self, from: usize, to: usize) -> Consistency {
        let (old, new) = (&self.blocks[from - 1], &self.blocks[to - 1]);
        let path =
            merkle::consistency_proof(&self.nodes, old.header.log_size, new.header.log_size).expect("consistency path");
        Consistency {
            format: proof::CONSISTENCY_FORMAT.into(),
            chain_id: CHAIN.into(),
            old: old.block.clone(),
            new: new.block.clone(),
            path: proof::b64_hashes(&path),
            set_changes: if to > 1 { vec![self.change.clone()] } else { Vec::new() },
        }
    }
}

/// Seeds for `bundle_verify`: bundles and consistency proofs that verify against the fixture genesis.
pub fn bundles() -> Vec<Seed> {
    let chain = Chain::build();
    let bundles = [
        ("bundle-plain", chain.bundle(1, 2, false)),
        ("bundle-status-superseded", chain.bundle(1, 0, true)),
        ("bundle-document-set-change", chain.bundle(2, 0, true)),
        ("bundle-revoked", chain.bundle(3, 0, true)),
    ];
    let mut seeds = Vec::new();
    for (name, b) in bundles {
        let document = matches!(name, "bundle-document-set-change").then_some(DOCUMENT);
        proof::verify(&b, &FIXTURE, document).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        seeds.push((name.to_string(), b.to_json().into_bytes()));
    }
    for (name, from, to) in [("consistency-1-3", 1, 3), ("consistency-2-3", 2, 3), ("consistency-1-1", 1, 1)] {
        let c = chain.consistency(from, to);
        let held = chain.blocks[from - 1].block.checkpoint.clone();
        proof::verify_consistency(&c, &FIXTURE, Some(&held)).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        seeds.push((name.to_string(), c.to_json().into_bytes()));
    }
    seeds
}

/// Seeds for `note_parse`: the Go reference note and verifier key, the seed
/// chain's signed checkpoints, a bare checkpoint text and the fixture's verifier keys.
pub fn notes() -> Vec<Seed> {
    let chain = Chain::build();
    let mut seeds = vec![
        ("go-note".to_string(), GO_NOTE.as_bytes().to_vec()),
        ("go-vkey".to_string(), GO_VKEY.as_bytes().to_vec()),
    ];
    for (i, b) in chain.blocks.iter().enumerate() {
        seeds.push((format!("checkpoint-note-{}", i + 1), b.block.checkpoint.clone().into_bytes()));
    }
    seeds.push(("checkpoint-text".to_string(), chain.blocks[0].header.checkpoint().to_text().into_bytes()));
    let vkey = FIXTURE.validator_set().verifier_keys()[0].to_string();
    seeds.push(("fixture-vkey".to_string(), vkey.into_bytes()));
    let note = SignedNote::parse(GO_NOTE).expect("go note parses");
    note.verify(&[VerifierKey::parse(GO_VKEY).expect("go vkey parses")]).expect("go note verifies");
    seeds
}

/// Seeds for `api_body`: `POST /v1/records` and `POST /v1/records/batch`
/// bodies as clients send them (records signed for the fixture genesis), one
/// with escapes, spacing and an unknown field, a record over the target's size
/// limit, a batch mixing good and bad base64, an empty batch and one over the
/// target's batch limit; and binary batches of three records, of none, and
/// one cut a byte short.
pub fn api_bodies() -> Vec<Seed> {
    let publish = signed(21, "land-titles", "parcel/7", Op::Publish, None, 1, 1);
    let amend = signed(22, "land-titles", "parcel/7", Op::Amend, Some(publish.id()), 2, 1);
    let revoke = signed(31, "companies", "c/1", Op::Revoke, Some(RecordId([0x11; 32])), 3, 4);
    let mut big = record(21, "land-titles", "parcel/8", Op::Publish, None, 1, 2);
    big.body = Body::Inline(vec![b'x'; API_RECORD_BYTES_MAX]);
    let big = big.sign(&key(21));
    let b64 = |r: &SignedRecord| B64.encode(r.to_bytes());
    let submit = |r: &SignedRecord| serde_json::to_vec(&SubmitBody { record: b64(r) }).expect("body JSON");
    let batch = |records: Vec<String>| serde_json::to_vec(&BatchBody { records }).expect("body JSON");
    let binary = |records: &[&SignedRecord]| {
        let bytes: Vec<Vec<u8>> = records.iter().map(|r| r.to_bytes()).collect();
        submission::encode_batch(bytes.iter().map(|b| b.as_slice()))
    };
    // The first character as a JSON \u escape, a '/' as "\/", spacing and a field the node ignores.
    let text = b64(&publish);
    assert!(text.contains('/'), "the escaped seed's base64 has a '/' to escape");
    let escaped = format!("\\u{:04x}{}", u32::from(text.as_bytes()[0]), text[1..].replace('/', "\\/"));
    let spaced = format!("{{ \"wait\" : \"final\",\n  \"record\" : \"{escaped}\" }}\n");
    let seeds = vec![
        ("submit-publish".to_string(), submit(&publish)),
        ("submit-revoke".to_string(), submit(&revoke)),
        ("submit-escaped".to_string(), spaced.into_bytes()),
        ("submit-over-size".to_string(), submit(&big)),
        ("batch-three".to_string(), batch(vec![b64(&publish), b64(&amend), b64(&revoke)])),
        ("batch-mixed".to_string(), batch(vec![b64(&publish), "%%".into(), String::new(), b64(&big)])),
        ("batch-empty".to_string(), batch(Vec::new())),
        ("batch-over".to_string(), batch(vec!["AQI=".to_string(); API_BATCH_RECORDS_MAX + 1])),
        ("binary-three".to_string(), binary(&[&publish, &amend, &revoke])),
        ("binary-empty".to_string(), binary(&[])),
        ("binary-cut".to_string(), {
            let whole = binary(&[&publish, &amend]);
            whole[..whole.len() - 1].to_vec()
        }),
    ];
    let params = Params { record_bytes_max: API_RECORD_BYTES_MAX, ..FIXTURE.params.clone() };
    let decodes = |bytes: &[u8]| match submission::decode_record(bytes.to_vec(), &params) {
        Ok(r) if annal_ledger::exec::bad_signatures(std::slice::from_ref(&r)).is_empty() => "ok",
        Ok(_) => "bad signature",
        Err(Error::RecordTooLarge { .. }) => "too large",
        Err(_) => "malformed",
    };
    for (name, json) in &seeds {
        let outcomes: Vec<&str> = if name.starts_with("binary") {
            match submission::binary_batch(json, API_BATCH_RECORDS_MAX) {
                Ok(records) => records.iter().map(|b| decodes(b)).collect(),
                Err(_) => vec!["not binary"],
            }
        } else if name.starts_with("submit") {
            let body: SubmitBody = submission::from_json(json).unwrap_or_else(|e| panic!("seed {name}: {e}"));
            vec![decodes(&body.record_bytes().unwrap_or_else(|e| panic!("seed {name}: {e}")))]
        } else {
            match BatchBody::from_json(json, API_BATCH_RECORDS_MAX) {
                Ok(body) => {
                    body.record_bytes().iter().map(|d| d.as_ref().map_or("not base64", |b| decodes(b))).collect()
                }
                Err(Error::BatchTooLarge { .. }) => vec!["over the limit"],
                Err(e) => panic!("seed {name}: {e}"),
            }
        };
        let want: &[&str] = match name.as_str() {
            "submit-over-size" => &["too large"],
            "batch-three" => &["ok"; 3],
            "batch-mixed" => &["ok", "not base64", "malformed", "too large"],
            "batch-empty" => &[],
            "batch-over" => &["over the limit"],
            "binary-three" => &["ok"; 3],
            "binary-empty" => &[],
            "binary-cut" => &["not binary"],
            _ => &["ok"],
        };
        assert_eq!(outcomes, want, "seed {name}");
    }
    seeds
}
