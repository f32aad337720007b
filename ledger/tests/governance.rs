//! Governance through the ledger, end to end on a real store: proposals and
//! approvals as records, changes applied at their height, keys judged at the
//! height they signed, and proofs that verify from the original genesis across
//! every change.

mod common;

use std::collections::BTreeMap;

use annal_ledger::block::{Certificate, Height, ValidatorSet, View};
use annal_ledger::exec::{execute_ordered, BlockMeta};
use annal_ledger::genesis::{Charter, Genesis, Validator};
use annal_ledger::gov::{approval_key, Change, GovAction, Governance, ProposalStatus, GOV_NAMESPACE};
use annal_ledger::keys::{PublicKey, SecretKey};
use annal_ledger::proof::{self, Check};
use annal_ledger::record::{Body, Encoded, Op, RecordId, SignedRecord};
use annal_ledger::store::{Store, StoreOptions};
use annal_ledger::Error;
use common::*;

struct Chain {
    dir: std::path::PathBuf,
    store: Store,
    genesis: Genesis,
    nonces: BTreeMap<PublicKey, u64>,
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The secret key behind a fixture public key (seeds 1..=60).
fn secret(public: &PublicKey) -> SecretKey {
    (1..=60).map(key).find(|k| k.public() == *public).expect("a fixture key")
}

impl Chain {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("annal-gov-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Two heights per epoch: set changes wait for odd heights.
        let mut genesis = genesis();
        genesis.params.epoch_blocks = 2;
        let store = Store::open(&dir, genesis.hash(), StoreOptions::default()).unwrap();
        Chain { dir, store, genesis, nonces: BTreeMap::new() }
    }

    fn gov(&self) -> Governance {
        self.store.governance().unwrap().unwrap_or_else(|| Governance::genesis(&self.genesis))
    }

    fn nonce(&mut self, k: &SecretKey) -> u64 {
        let n = self.nonces.entry(k.public()).or_insert(0);
        *n += 1;
        *n
    }

    fn gov_record(&mut self, signer: &SecretKey, record_key: String, action: &GovAction) -> SignedRecord {
        let nonce = self.nonce(signer);
        action.signed_record(CHAIN, record_key, signer, nonce)
    }

    fn propose(&mut self, signer: u8, change: Change) -> SignedRecord {
        let action = GovAction::Propose { change, effective_height: None, expires_height: 1000 };
        let k = key(signer);
        let n = self.nonces.get(&k.public()).copied().unwrap_or(0) + 1;
        self.gov_record(&k, format!("proposal/{signer}-{n}"), &action)
    }

    fn approve(&mut self, signer: u8, proposal: RecordId) -> SignedRecord {
        let k = key(signer);
        self.gov_record(&k, approval_key(&proposal, &k.public()), &GovAction::Approve { proposal })
    }

    fn publish(&mut self, officer: u8, namespace: &str, name: &str) -> SignedRecord {
        let k = key(officer);
        let nonce = self.nonce(&k);
        let mut r = record(officer, namespace, name, Op::Publish, None, 1, nonce);
        r.submitter = k.public();
        r.sign(&k)
    }

    /// Executes and commits the next block, certified by every validator in
    /// force; returns the ids appended and the ids refused.
    fn block(&mut self, records: &[SignedRecord]) -> (Vec<RecordId>, Vec<RecordId>) {
        let gov = self.gov();
        let set = self.store.tip().height.0; // only for the height below
        let height = Height(set + 1);
        let encoded: Vec<Encoded> = records.iter().cloned().map(Encoded::from).collect();
        let executed = execute_ordered(&gov, height, &self.store, self.store.frontier(), &encoded).unwrap();
        let tip = self.store.tip().clone();
        let meta = BlockMeta {
            height,
            view: View(height.0),
            parent: tip.block_hash,
            time_ms: self.genesis.genesis_time_ms + height.0,
            proposer: 0,
            validators_hash: gov.validators.hash(),
        };
        let header = executed.header(CHAIN, &meta);
        let cert = sign_all(&header, &gov.validators);
        self.store.commit(&header, &cert, &executed).unwrap();
        (executed.ids.clone(), executed.skipped.iter().map(|(id, _)| *id).collect())
    }
}

fn sign_all(header: &annal_ledger::block::Header, set: &ValidatorSet) -> Certificate {
    let keys: Vec<SecretKey> = set.validators.iter().map(|v| secret(&v.consensus_key)).collect();
    let signers: Vec<(usize, &SecretKey)> = keys.iter().enumerate().collect();
    Certificate::sign(header, set, &signers)
}

/// Proposes `change` (validator 1) and approves it with validators 2 and 3, all in one block.
fn enact(c: &mut Chain, change: Change, extra: &[SignedRecord]) -> RecordId {
    let p = c.propose(1, change);
    let id = p.id();
    let mut records = vec![p, c.approve(2, id), c.approve(3, id)];
    records.extend_from_slice(extra);
    let (appended, skipped) = c.block(&records);
    assert_eq!(appended.len(), records.len(), "refused: {skipped:?}");
    id
}

fn verify(c: &Chain, id: &RecordId) -> Result<proof::Verified, Error> {
    let bundle = proof::bundle(&c.store, &c.genesis, id, true).unwrap();
    proof::verify(&proof::Bundle::from_json(&bundle.to_json()).unwrap(), &c.genesis, None)
}

#[test]
fn keys_are_judged_at_their_height_and_proofs_survive_every_change() {
    // Goal: add a validator, remove an original one, add and rotate an agency key and revoke
    // another; records before, between and after each change verify from the original genesis;
    // a revoked or rotated-out key is refused from the change's height on; a validator's
    // governance power follows the set in force.
    let mut c = Chain::new("lifecycle");
    let before = c.publish(22, "land-titles", "t/before");
    let (ids, _) = c.block(std::slice::from_ref(&before));
    assert_eq!(ids, vec![before.id()]);

    // Height 2: add validator-5 (power 1 of 4: within a third). Due at 4, so at the epoch starting at 5.
    let v5 =
        Validator { name: "validator-5".into(), consensus_key: key(5).public(), p2p_key: key(15).public(), power: 1 };
    let add = enact(&mut c, Change::AddValidator(v5.clone()), &[]);
    assert_eq!(c.store.proposal(&add).unwrap().unwrap().status, ProposalStatus::Scheduled { height: 5 });
    c.block(&[]); // height 3
    assert_eq!(c.gov().validators.validators.len(), 4);
    c.block(&[]); // height 4, the epoch's last, announces the set of height 5
    assert_eq!(c.gov().validators.validators.len(), 5);
    let h4 = c.store.header(Height(4)).unwrap().unwrap();
    assert_ne!(h4.next_validators_hash, h4.validators_hash);
    let between = c.publish(21, "land-titles", "t/between");
    c.block(std::slice::from_ref(&between)); // height 5, certified by five

    // Height 6: remove validator-4 (1 of 5). Needs 4 of 5 approvals now: three are not enough.
    let p = c.propose(1, Change::RemoveValidator { name: "validator-4".into() });
    let remove = p.id();
    let a2 = c.approve(2, remove);
    let a3 = c.approve(3, remove);
    c.block(&[p, a2, a3]);
    assert_eq!(c.store.proposal(&remove).unwrap().unwrap().status, ProposalStatus::Open, "3 of 5 is no quorum");
    let a5 = c.approve(5, remove);
    c.block(&[a5]); // height 7: 4 of 5 → due at 9, an epoch start
    c.block(&[]); // 8
    assert_eq!(c.gov().validators.validators.len(), 4);
    assert!(c.gov().validators.validators.iter().all(|v| v.name != "validator-4"));

    // Height 9: add key 23 to land, rotate 21 → 24, revoke 22 (records by 22 in the same block still count).
    let in_time = c.publish(22, "land-titles", "t/in-time");
    let change_keys = [
        Change::AddKey { agency: "land".into(), key: key(23).public() },
        Change::RotateKey { agency: "land".into(), old: key(21).public(), new: key(24).public() },
        Change::RevokeKey { agency: "land".into(), key: key(22).public() },
    ];
    let mut records = vec![in_time.clone()];
    for (i, change) in change_keys.into_iter().enumerate() {
        let p = c.propose(1, change);
        let id = p.id();
        records.push(p);
        for v in [2u8, 3, 5].iter().take(if i == 0 { 2 } else { 3 }) {
            records.push(c.approve(*v, id));
        }
    }
    let (_, skipped) = c.block(&records);
    assert!(skipped.is_empty(), "{skipped:?}");
    let early = c.publish(23, "land-titles", "t/too-early");
    let (_, skipped) = c.block(std::slice::from_ref(&early)); // height 10 hands over the charter of 11
    assert_eq!(skipped, vec![early.id()], "key 23 is not valid before its height");
    let revoked = c.publish(22, "land-titles", "t/revoked");
    let rotated_out = c.publish(21, "land-titles", "t/rotated-out");
    let added = c.publish(23, "land-titles", "t/added");
    let rotated_in = c.publish(24, "land-titles", "t/rotated-in");
    let (appended, skipped) = c.block(&[revoked.clone(), rotated_out.clone(), added.clone(), rotated_in.clone()]);
    assert_eq!(appended, vec![added.id(), rotated_in.id()]);
    assert_eq!(skipped, vec![revoked.id(), rotated_out.id()]);

    // Every record verifies offline with the original genesis, across two set changes and a charter change.
    for (r, agency) in
        [(&before, "land"), (&between, "land"), (&in_time, "land"), (&added, "land"), (&rotated_in, "land")]
    {
        let v = verify(&c, &r.id()).unwrap_or_else(|e| panic!("{}: {e}", r.record.key));
        assert_eq!(v.agency, agency);
    }
    let v = verify(&c, &add).unwrap();
    assert_eq!(v.agency, GOV_NAMESPACE);
    assert!(proof::bundle(&c.store, &c.genesis, &before.id(), false).unwrap().charter.is_none());
    assert!(proof::bundle(&c.store, &c.genesis, &added.id(), false).unwrap().charter.is_some());

    // The store reopens with the same governance.
    let gov = c.gov();
    let dir = c.dir.clone();
    let g = c.genesis.clone();
    drop(std::mem::replace(
        &mut c.store,
        Store::open(&c.dir.join("unused"), g.hash(), StoreOptions::default()).unwrap(),
    ));
    c.store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
    assert_eq!(c.gov(), gov);
    assert_eq!(c.store.charter_at(Height(10)).unwrap(), None);
    assert_eq!(c.store.charter_at(Height(11)).unwrap().as_ref(), Some(&gov.charter));
}

#[test]
fn forged_charters_and_certificates_of_a_removed_set_are_refused() {
    // Goal: a bundle that carries another charter than its block names, or whose block after a
    // removal is certified by the old set, does not verify.
    let mut c = Chain::new("forgery");
    let k = enact(&mut c, Change::AddKey { agency: "companies".into(), key: key(32).public() }, &[]);
    c.block(&[]);
    let r = c.publish(32, "companies", "c/new-officer");
    c.block(std::slice::from_ref(&r));
    let good = proof::bundle(&c.store, &c.genesis, &r.id(), false).unwrap();
    proof::verify(&good, &c.genesis, None).unwrap();
    let _ = k;

    // Carry a charter that also names key 33: its hash is not the block's.
    let mut charter: Charter = c.gov().charter;
    charter.agencies[1].submitter_keys.push(key(33).public());
    let mut forged = good.clone();
    forged.charter = Some(base64_of(&annal_ledger::codec::encode(&charter)));
    assert_check(proof::verify(&forged, &c.genesis, None), Check::Charter);
    let mut dropped = good.clone();
    dropped.charter = None; // the genesis charter: key 32 unknown, and the hash differs anyway
    assert_check(proof::verify(&dropped, &c.genesis, None), Check::Charter);

    // Remove validator-4, then forge the next block's certificate with the old set of four.
    enact(&mut c, Change::RemoveValidator { name: "validator-4".into() }, &[]); // height 4: due at 7
    c.block(&[]);
    c.block(&[]);
    let late = c.publish(31, "companies", "c/after-removal");
    c.block(std::slice::from_ref(&late));
    let mut bundle = proof::bundle(&c.store, &c.genesis, &late.id(), false).unwrap();
    proof::verify(&bundle, &c.genesis, None).unwrap();
    let header_bytes = base64_decode(&bundle.block.header);
    let mut header = annal_ledger::block::Header::from_bytes(&header_bytes).unwrap();
    let old_set = c.genesis.validator_set();
    let (k2, k3, k4) = (key(2), key(3), key(4));
    // (a) The real header, signed by the removed validator and one that stayed: a third of the set in force.
    bundle.block.checkpoint =
        Certificate::sign(&header, &old_set, &[(1, &k2), (3, &k4)]).to_note(&header, &old_set).to_string();
    assert_check(proof::verify(&bundle, &c.genesis, None), Check::Checkpoint);
    // (b) A header that names the old set, signed by a quorum of the old set (with the removed validator).
    header.validators_hash = old_set.hash();
    bundle.block.header = base64_of(&header.to_bytes());
    bundle.block.checkpoint =
        Certificate::sign(&header, &old_set, &[(1, &k2), (2, &k3), (3, &k4)]).to_note(&header, &old_set).to_string();
    assert_check(proof::verify(&bundle, &c.genesis, None), Check::ValidatorSet);
}

#[test]
fn governance_records_from_outside_the_set_or_malformed_are_refused() {
    let mut c = Chain::new("refusals");
    let officer = key(21);
    let action = GovAction::Propose {
        change: Change::RemoveAgency { name: "companies".into() },
        effective_height: None,
        expires_height: 100,
    };
    let by_officer = c.gov_record(&officer, "proposal/x".into(), &action);
    let mut junk = c.gov_record(&key(1), "proposal/y".into(), &action);
    junk.record.body = Body::Inline(b"not an action".to_vec());
    let junk = junk.record.sign(&key(1));
    let too_big = c.propose(2, Change::SetPower { name: "validator-1".into(), power: 5 });
    // Limits whose sum overflows (review, session 22: execution panicked on every node).
    let mut params = c.genesis.params.clone();
    (params.body_bytes_max, params.metadata_bytes_max) = (usize::MAX, 1);
    let overflowing = c.propose(3, Change::SetParams(params));
    let (appended, skipped) = c.block(&[by_officer.clone(), junk.clone(), too_big.clone(), overflowing.clone()]);
    assert!(appended.is_empty());
    assert_eq!(skipped, vec![by_officer.id(), junk.id(), too_big.id(), overflowing.id()]);
    let rules = c.gov().rules();
    let e = rules.check_stateless(&by_officer.record.fields()).unwrap_err().to_string();
    assert!(e.contains("not the consensus key of a validator"), "{e}");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn check_of(result: Result<proof::Verified, Error>) -> Check {
    match result {
        Err(Error::Proof { check, .. }) => check,
        Err(other) => panic!("expected a proof error, got {other}"),
        Ok(_) => panic!("a forged bundle verified"),
    }
}

fn assert_check(result: Result<proof::Verified, Error>, want: Check) {
    assert_eq!(check_of(result), want);
}
