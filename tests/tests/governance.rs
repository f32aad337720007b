//! Governance on a live cluster of real `annal node` processes (issue 7): a
//! fifth validator joins at an epoch start, syncs and votes; an original one
//! is removed; an agency's key is rotated and another's revoked — each through
//! records approved by more than 2/3 of the power; a proposal without that
//! never applies; every record, before, between and after the changes,
//! verifies offline with only the original genesis file. A validator down
//! while a removal moves every other validator's index catches up when it
//! comes back.

use std::collections::BTreeMap;
use std::time::Duration;

use annal_ledger::gov::{approval_key, Change, GovAction};
use annal_ledger::keys::{PublicKey, SecretKey};
use annal_ledger::proof::{self, Bundle};
use annal_ledger::record::{RecordId, SignedRecord};
use annal_tests::Cluster;

const WAIT: Duration = Duration::from_secs(90);

struct Gov {
    nonces: BTreeMap<PublicKey, u64>,
}

impl Gov {
    fn next(&mut self, key: &SecretKey) -> u64 {
        let n = self.nonces.entry(key.public()).or_insert(0);
        *n += 1;
        *n
    }

    fn record(&mut self, c: &Cluster, key: &SecretKey, record_key: String, action: &GovAction) -> SignedRecord {
        let nonce = self.next(key);
        action.signed_record(&c.genesis.chain_id, record_key, key, nonce)
    }

    /// Proposes `change` with validator `by`'s key and approves it with each of `approvers`, waiting
    /// for each record to be final; returns the height of the last approval's block.
    fn enact(&mut self, c: &Cluster, change: Change, by: usize, approvers: &[usize]) -> u64 {
        let proposer = validator_key(c, by);
        let nonce = self.nonces.get(&proposer.public()).copied().unwrap_or(0) + 1;
        let action = GovAction::Propose { change, effective_height: None, expires_height: c.height(0) + 500 };
        let p = self.record(c, &proposer, format!("proposal/{by}-{nonce}"), &action);
        let id = p.id();
        let mut height = submit_final(c, &p.to_bytes());
        for &a in approvers {
            let k = validator_key(c, a);
            let r = self.record(c, &k, approval_key(&id, &k.public()), &GovAction::Approve { proposal: id });
            height = submit_final(c, &r.to_bytes());
        }
        height
    }
}

fn validator_key(c: &Cluster, i: usize) -> SecretKey {
    SecretKey::read_file(&c.dir.join(format!("validator-{i}/consensus.key"))).expect("validator key")
}

/// Gives the cluster's genesis (as prepared, not yet started) epochs of 8 heights; returns it.
fn with_epochs_of_8(c: &mut Cluster) -> annal_ledger::genesis::Genesis {
    c.genesis.params.epoch_blocks = 8;
    std::fs::write(&c.genesis_path, c.genesis.to_json()).unwrap();
    c.genesis = annal_ledger::genesis::Genesis::load(&c.genesis_path).unwrap();
    c.genesis.clone()
}

/// The names of the validators in force, as node `i` serves them.
fn validator_names(c: &Cluster, i: usize) -> Vec<String> {
    let members = c.client(i).get_json::<serde_json::Value>("/v1/gov", 1 << 20).unwrap();
    members["validators"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap().to_string()).collect()
}

/// Submits to node 0 and waits until final; returns the record's block height.
fn submit_final(c: &Cluster, bytes: &[u8]) -> u64 {
    let answer = c.submit(0, bytes, true).unwrap_or_else(|e| panic!("submission refused: {e}"));
    assert_eq!(answer["status"], "final", "{answer}");
    answer["height"].as_u64().expect("a final answer names its height")
}

/// The proof bundle of `id` from node `i`, once certified.
fn bundle(c: &mut Cluster, i: usize, id: &RecordId) -> Bundle {
    let mut out = None;
    c.wait_for("a certified proof bundle", WAIT, |c| {
        out = c.client(i).get_text(&format!("/v1/proofs/{id}"), 64 << 20).ok();
        out.is_some()
    });
    Bundle::from_json(&out.unwrap()).expect("a bundle")
}

#[test]
fn validators_and_keys_change_through_the_ledger_and_every_record_verifies() {
    // Five validators' keys and configs, but genesis names only the first four; epochs of 8 heights.
    let mut c = Cluster::prepare("governance", 5, 2);
    let fifth = c.genesis.validators.remove(4);
    let genesis = with_epochs_of_8(&mut c);
    for i in 0..4 {
        c.start_node(i);
    }
    c.wait_heights(&[0, 1, 2, 3], 2, WAIT);
    let mut gov = Gov { nonces: BTreeMap::new() };
    let (officer0, ns0) = c.agency(0);
    let (officer1, ns1) = c.agency(1);
    let rotated = SecretKey::from_seed([77; 32]);
    let mut published = Vec::new();
    let mut nonces: BTreeMap<PublicKey, u64> = BTreeMap::new();
    let mut publish = |c: &Cluster, key: &SecretKey, ns: &str, name: &str| {
        let nonce = nonces.entry(key.public()).or_insert(0);
        *nonce += 1;
        let bytes = c.publish(key, ns, name, *nonce, name.as_bytes());
        submit_final(c, &bytes);
        published.push(SignedRecord::id_of_bytes(&bytes));
    };
    publish(&c, &officer0, &ns0, "before");
    publish(&c, &officer1, &ns1, "before-revocation");

    // Add the fifth (1 of 5 power): it takes effect at the next epoch start past the approval.
    let approved = gov.enact(&c, Change::AddValidator(fifth), 0, &[1, 2]);
    let start = genesis.params.epoch_start_from(approved + 2);
    c.start_node(4);
    c.wait_heights(&[0, 4], start + 4, WAIT);
    // With 5 of power 1, finality needs 4: stop an original validator; the new one's votes carry it.
    c.kill9(3);
    let h = c.height(0);
    c.wait_heights(&[0, 1, 2, 4], h + 10, WAIT);
    publish(&c, &officer0, &ns0, "between");

    // Remove validator-3 (down): 4 of 5 approve; afterwards 4 validators, quorum 3.
    let name = genesis.validators[3].name.clone();
    let approved = gov.enact(&c, Change::RemoveValidator { name }, 0, &[1, 2, 4]);
    let start = genesis.params.epoch_start_from(approved + 2);
    c.wait_heights(&[0, 1, 2, 4], start + 2, WAIT);
    // Now one more may stop: 3 of 4 still finalize.
    c.kill9(2);
    let h = c.height(0);
    c.wait_heights(&[0, 1, 4], h + 5, WAIT);
    publish(&c, &officer0, &ns0, "after-removal");

    // Rotate agency 0's key, revoke agency 1's: 3 of the 4 in force approve each.
    let (agency0, agency1) = (genesis.agencies[0].name.clone(), genesis.agencies[1].name.clone());
    let change = Change::RotateKey { agency: agency0.clone(), old: officer0.public(), new: rotated.public() };
    gov.enact(&c, change, 0, &[1, 4]);
    let approved = gov.enact(&c, Change::RevokeKey { agency: agency1, key: officer1.public() }, 1, &[0, 4]);
    c.wait_heights(&[0, 1, 4], approved + 3, WAIT);
    publish(&c, &rotated, &ns0, "after-rotation");
    for (key, ns, name) in [(&officer0, &ns0, "rotated-out"), (&officer1, &ns1, "revoked")] {
        let err = c.submit(0, &c.publish(key, ns, name, 99, b"x"), false).expect_err("refused");
        assert!(err.to_string().contains("belongs to no agency"), "{name}: {err}");
    }

    // A proposal with 1 of 4 approvals never applies: agency 0 keeps its namespace.
    gov.enact(&c, Change::WithdrawNamespace { agency: agency0, namespace: ns0.clone() }, 4, &[]);
    let h = c.height(0);
    c.wait_heights(&[0], h + 10, WAIT);
    publish(&c, &rotated, &ns0, "still-granted");

    let names = validator_names(&c, 0);
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.iter().any(|n| n == "validator-4") && !names.iter().any(|n| n == "validator-3"), "{names:?}");

    // Every record verifies offline from the original genesis alone, across both set changes and the
    // key changes, from the joined node and from an original one.
    for i in [0, 4] {
        for id in &published {
            let b = bundle(&mut c, i, id);
            let v = proof::verify(&b, &genesis, None).unwrap_or_else(|e| panic!("node {i}, record {id}: {e}"));
            assert_eq!(v.id, *id);
        }
    }
}

#[test]
fn a_node_down_while_every_validator_index_shifts_catches_up() {
    // Five validators, epochs of 8 heights. Validator 3 is down while validator 0 is removed, so
    // every validator after 0 moves down one index in the new set. Restarted, validator 3 still
    // runs the old set: no vote or checkpoint it hears is signed under the index its relay has
    // there, and no certificate verifies against it, yet it must find out that it is behind.
    let mut c = Cluster::prepare("governance-lag", 5, 1);
    let genesis = with_epochs_of_8(&mut c);
    for i in 0..5 {
        c.start_node(i);
    }
    c.wait_heights(&[0, 1, 2, 3, 4], 2, WAIT);
    c.kill9(3);
    let down_at = c.height(0);

    let mut gov = Gov { nonces: BTreeMap::new() };
    let name = genesis.validators[0].name.clone();
    let approved = gov.enact(&c, Change::RemoveValidator { name }, 1, &[2, 4, 0]);
    let start = genesis.params.epoch_start_from(approved + 2);
    c.wait_heights(&[1, 2, 4], start + 4, WAIT);
    // The removed validator stops too: nothing signed under the old indices is left to hear.
    c.kill9(0);
    let h = c.height(1);
    assert!(h > down_at + 8, "the chain moved on an epoch past the stopped node ({down_at} → {h})");

    c.start_node(3);
    c.wait_heights(&[3], h + 2, WAIT);
    let names = validator_names(&c, 3);
    assert!(!names.iter().any(|n| n == "validator-0") && names.len() == 4, "{names:?}");
}
