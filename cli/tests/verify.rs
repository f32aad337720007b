//! `annal verify` and `annal verify-consistency` as an auditor runs them: a
//! genesis made by `annal genesis new`, a chain committed with its keys, a
//! bundle on disk, and the exit codes 0 (valid), 1 (invalid), 2 (unreadable).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use annal_ledger::block::{Certificate, Height, View};
use annal_ledger::exec::{execute, BlockMeta, Signatures};
use annal_ledger::genesis::Genesis;
use annal_ledger::keys::SecretKey;
use annal_ledger::proof;
use annal_ledger::record::{Body, DocumentAnchor, Op, Record, RecordId};
use annal_ledger::store::{Store, StoreOptions};
use sha2::Digest;

const DEED: &[u8] = b"deed of transfer: parcel 42 to A. Holder";

fn annal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_annal")).args(args).output().expect("annal runs")
}

struct Net {
    dir: PathBuf,
    genesis: Genesis,
    store: Store,
    published: RecordId,
    amended: RecordId,
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn net(name: &str) -> Net {
    let dir = std::env::temp_dir().join(format!("annal-cli-verify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = annal(&[
        "genesis",
        "new",
        "--chain-id",
        "verify-test",
        "--validators",
        "4",
        "--agencies",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let genesis = Genesis::load(&dir.join("genesis.json")).unwrap();
    let validators: Vec<SecretKey> =
        (0..4).map(|i| SecretKey::read_file(&dir.join(format!("validator-{i}/consensus.key"))).unwrap()).collect();
    let officer = SecretKey::read_file(&dir.join("agency-0/submitter.key")).unwrap();
    let mut store =
        Store::open(&dir.join("data"), genesis.hash(), StoreOptions { sync: false, ..StoreOptions::default() })
            .unwrap();
    let gov = annal_ledger::gov::Governance::genesis(&genesis);
    let set = genesis.validator_set();
    let namespace = genesis.agencies[0].namespaces[0].clone();
    let mut ids = Vec::new();
    let records = [
        (
            Op::Publish,
            None,
            1,
            Body::Document(DocumentAnchor {
                sha256: sha2::Sha256::digest(DEED).into(),
                size: DEED.len() as u64,
                media_type: "application/pdf".into(),
            }),
        ),
        (Op::Amend, Some(0usize), 2, Body::Inline(b"corrected area".to_vec())),
    ];
    for (nonce, (op, supersedes, version, body)) in records.into_iter().enumerate() {
        let r = Record {
            chain_id: genesis.chain_id.clone(),
            namespace: namespace.clone(),
            key: "parcel/42".into(),
            op,
            body,
            metadata: Default::default(),
            supersedes: supersedes.map(|i: usize| ids[i]),
            version,
            submitter: officer.public(),
            nonce: nonce as u64 + 1,
        }
        .sign(&officer);
        let height = Height(store.tip().height.0 + 1);
        let executed = execute(&gov, height, &store, store.frontier(), &[r], Signatures::Verify).unwrap();
        let tip = store.tip().clone();
        let meta = BlockMeta {
            height: Height(tip.height.0 + 1),
            view: View(tip.height.0 + 1),
            parent: tip.block_hash,
            time_ms: genesis.genesis_time_ms + 1000,
            proposer: 0,
            validators_hash: set.hash(),
        };
        let header = executed.header(&genesis.chain_id, &meta);
        let signers: Vec<(usize, &SecretKey)> = validators.iter().enumerate().take(3).collect();
        let cert = Certificate::sign(&header, &set, &signers);
        ids.push(executed.ids[0]);
        store.commit(&header, &cert, &executed).unwrap();
    }
    Net { dir, genesis, store, published: ids[0], amended: ids[1] }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn valid_bundle_exits_zero_with_a_summary_line() {
    // Goal: a valid bundle prints one VALID line naming key, op, version, agency, height and checkpoint size;
    // --document and --current add their findings; --json gives the same as an object.
    let n = net("valid");
    let genesis = n.dir.join("genesis.json");
    let g = genesis.to_str().unwrap();
    let bundle = write(&n.dir, "b.json", &proof::bundle(&n.store, &n.genesis, &n.published, true).unwrap().to_json());
    let deed = write(&n.dir, "deed.pdf", std::str::from_utf8(DEED).unwrap());
    let o = annal(&["verify", &bundle, "--genesis", g, "--document", &deed, "--current"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let line = String::from_utf8(o.stdout.clone()).unwrap();
    assert_eq!(line.lines().count(), 1);
    let header = n.store.header(annal_ledger::block::Height(1)).unwrap().unwrap();
    for want in [
        "VALID land-titles/parcel/42",
        "publish version 1",
        "agency-0",
        "at height 1",
        "checkpoint of size 1",
        format!("(log root {})", hex::encode(header.log_root)).as_str(),
        "document matches",
        "superseded by",
    ] {
        assert!(line.contains(want), "{want:?} missing from {line}");
    }
    let o = annal(&["verify", &bundle, "--genesis", g, "--current", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["log_root"], hex::encode(header.log_root));
    assert_eq!(v["block_hash"], hex::encode(header.hash()));
    assert_eq!(v["status"]["state"], "superseded");
    assert_eq!(v["status"]["head"], n.amended.to_hex());
    let current = write(&n.dir, "c.json", &proof::bundle(&n.store, &n.genesis, &n.amended, true).unwrap().to_json());
    let o = annal(&["verify", &current, "--genesis", g, "--current"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("current as of height 2"), "{}", text(&o));
}

#[test]
fn invalid_bundle_exits_one_naming_the_check() {
    // Goal: a tampered bundle exits 1 and says which check failed; a wrong document too.
    let n = net("invalid");
    let g = n.dir.join("genesis.json");
    let mut b = proof::bundle(&n.store, &n.genesis, &n.published, false).unwrap();
    b.index += 1;
    let bundle = write(&n.dir, "b.json", &b.to_json());
    let o = annal(&["verify", &bundle, "--genesis", g.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("INVALID: the record is in the certified block: failed"),
        "{}",
        text(&o)
    );
    let good = write(&n.dir, "good.json", &proof::bundle(&n.store, &n.genesis, &n.published, false).unwrap().to_json());
    let other = write(&n.dir, "other.pdf", "another deed");
    let o = annal(&["verify", &good, "--genesis", g.to_str().unwrap(), "--document", &other]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("the document matches the digest the record anchors: failed"));
    // A 64 GiB (sparse) file of the wrong size fails on its size, unread (review, session 22:
    // it was read whole into memory first).
    let huge = n.dir.join("huge.pdf");
    std::fs::File::create(&huge).unwrap().set_len(64 << 30).unwrap();
    let started = std::time::Instant::now();
    let o = annal(&["verify", &good, "--genesis", g.to_str().unwrap(), "--document", huge.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("the file has 68719476736 bytes"), "{}", text(&o));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    let o = annal(&["verify", &good, "--genesis", g.to_str().unwrap(), "--current"]);
    assert_eq!(o.status.code(), Some(1), "--current without a status proof is not a pass");
    let o = annal(&["verify", &good, "--genesis", g.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn unreadable_input_and_usage_errors_exit_two() {
    // Goal: a missing file, a file that is not a bundle, a broken genesis and a usage error exit 2.
    let n = net("unreadable");
    let g = n.dir.join("genesis.json");
    let g = g.to_str().unwrap();
    let good = write(&n.dir, "good.json", &proof::bundle(&n.store, &n.genesis, &n.published, false).unwrap().to_json());
    let junk = write(&n.dir, "junk.json", "{ not json");
    let bad_genesis = write(&n.dir, "g2.json", "{}");
    // A pipe as the document: no size to compare, and it might never end.
    let fifo = n.dir.join("deed.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let fifo = fifo.to_str().unwrap();
    for args in [
        vec!["verify", "/nonexistent/bundle.json", "--genesis", g],
        vec!["verify", &junk, "--genesis", g],
        vec!["verify", &good, "--genesis", &bad_genesis],
        vec!["verify", &good],
        vec!["verify", &good, "--genesis", g, "--document", "/nonexistent/deed.pdf"],
        vec!["verify", &good, "--genesis", g, "--document", fifo],
    ] {
        let o = annal(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    }
}

#[test]
fn verify_consistency_checks_a_held_checkpoint() {
    // Goal: a consistency proof from the checkpoint the auditor holds verifies (exit 0); from another, it does not (exit 1).
    let n = net("consistency");
    let g = n.dir.join("genesis.json");
    let p = proof::consistency(&n.store, &n.genesis, Height(1), Height(2)).unwrap();
    let held = write(&n.dir, "held.txt", &p.old.checkpoint);
    let proof_file = write(&n.dir, "p.json", &p.to_json());
    let o = annal(&["verify-consistency", &held, &proof_file, "--genesis", g.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("VALID the log of size 2 at height 2"));
    let newer = write(&n.dir, "newer.txt", &p.new.checkpoint);
    let o = annal(&["verify-consistency", &newer, &proof_file, "--genesis", g.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn verify_ties_a_record_to_a_held_checkpoint() {
    // Goal: `annal verify --held CHECKPOINT --consistency PROOF` ties the record at height 1 to a
    // checkpoint held at height 2 (its log contains the record's block's), and the record at
    // height 2 to one held at height 1 (its log extends it); without the proof, exit 1.
    let n = net("held");
    let g = n.dir.join("genesis.json").to_str().unwrap().to_string();
    let p = proof::consistency(&n.store, &n.genesis, Height(1), Height(2)).unwrap();
    let proof_file = write(&n.dir, "p.json", &p.to_json());
    let held1 = write(&n.dir, "held1.txt", &p.old.checkpoint);
    let held2 = write(&n.dir, "held2.txt", &p.new.checkpoint);
    let older = write(&n.dir, "b1.json", &proof::bundle(&n.store, &n.genesis, &n.published, false).unwrap().to_json());
    let newer = write(&n.dir, "b2.json", &proof::bundle(&n.store, &n.genesis, &n.amended, false).unwrap().to_json());

    let o = annal(&["verify", &older, "--genesis", &g, "--held", &held2, "--consistency", &proof_file]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("the checkpoint you hold (height 2, size 2) contains this block's log"), "{}", text(&o));
    let o = annal(&["verify", &newer, "--genesis", &g, "--held", &held1, "--consistency", &proof_file, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["held"], serde_json::json!({ "relation": "extended", "height": 1, "size": 1 }));
    let o = annal(&["verify", &newer, "--genesis", &g, "--held", &held2]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("the checkpoint you hold is this block's"), "{}", text(&o));

    // Inputs that do not fit are unreadable (2), not a failed check (1): no proof, a proof
    // between other heights, a held file that is not a signed checkpoint.
    let o = annal(&["verify", &older, "--genesis", &g, "--held", &held2]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("give --consistency"), "{}", text(&o));
    let same =
        write(&n.dir, "same.json", &proof::consistency(&n.store, &n.genesis, Height(2), Height(2)).unwrap().to_json());
    let o = annal(&["verify", &older, "--genesis", &g, "--held", &held2, "--consistency", &same]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("runs from height 2 to 2"), "{}", text(&o));
    let o = annal(&["verify", &older, "--genesis", &g, "--held", &proof_file, "--consistency", &proof_file]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // A forged proof between the right heights is a failed check.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut forged = p.clone();
    let mut hash = b64.decode(&forged.path[0]).unwrap();
    hash[0] ^= 1;
    forged.path[0] = b64.encode(hash);
    let forged = write(&n.dir, "forged.json", &forged.to_json());
    let o = annal(&["verify", &older, "--genesis", &g, "--held", &held2, "--consistency", &forged]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = annal(&["verify", &older, "--genesis", &g, "--consistency", &proof_file]);
    assert_eq!(o.status.code(), Some(2), "--consistency without --held is a usage error: {}", text(&o));
}

#[test]
fn tlog_proof_export_writes_the_c2sp_file_and_record_bytes() {
    // Goal: `annal tlog-proof` writes c2sp.org/tlog-proof@v1 (index, path, blank line, signed checkpoint) and the record bytes.
    let n = net("tlog");
    let b = proof::bundle(&n.store, &n.genesis, &n.published, false).unwrap();
    let bundle = write(&n.dir, "b.json", &b.to_json());
    let out = n.dir.join("r.tlog-proof");
    let bytes = n.dir.join("r.bin");
    let o = annal(&["tlog-proof", &bundle, "--out", out.to_str().unwrap(), "--record-bytes", bytes.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = std::fs::read_to_string(&out).unwrap();
    assert!(t.starts_with(&format!("c2sp.org/tlog-proof@v1\nindex {}\n", b.index)), "{t}");
    assert!(t.ends_with(&b.block.checkpoint), "ends with the signed checkpoint");
    assert_eq!(annal_ledger::record::SignedRecord::id_of_bytes(&std::fs::read(&bytes).unwrap()), n.published);
    let again = annal(&["tlog-proof", &bundle, "--out", out.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1), "an existing file is not overwritten");
}
