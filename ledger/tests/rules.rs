//! Every way a record can be refused, each checked by its error variant.

mod common;

use annal_ledger::block::Height;
use annal_ledger::exec::{execute, Signatures};
use annal_ledger::merkle::Frontier;
use annal_ledger::record::{Body, Op, RecordId, SignedRecord};
use annal_ledger::state::{MemoryState, StateKey, StateView, Status};
use annal_ledger::state_tree::EMPTY_ROOT;
use annal_ledger::Error;
use common::*;

/// Runs one block on `state`; on success absorbs it and returns the ids.
fn run(state: &mut MemoryState, frontier: &mut Frontier, records: &[SignedRecord]) -> Result<Vec<RecordId>, Error> {
    let executed = execute(&gov(), Height(1), state, frontier, records, Signatures::Verify)?;
    *frontier = executed.frontier.clone();
    state.absorb(&executed);
    Ok(executed.ids)
}

/// The error of the record at `position`, unwrapped.
fn refused(result: Result<Vec<RecordId>, Error>, position: usize) -> Error {
    match result {
        Err(Error::RecordInBlock { position: p, source }) if p == position => *source,
        other => panic!("expected record {position} to be refused, got {other:?}"),
    }
}

fn fresh() -> (MemoryState, Frontier) {
    (MemoryState::default(), Frontier::new())
}

#[test]
fn valid_chain_of_versions_is_accepted_and_tracked() {
    // Goal: publish → amend → revoke is accepted, versions count up and the head ends revoked.
    let (mut s, mut f) = fresh();
    let id1 = run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Publish, None, 1, 1)]).unwrap()[0];
    let id2 = run(&mut s, &mut f, &[signed(22, "land-titles", "p/1", Op::Amend, Some(id1), 2, 1)]).unwrap()[0];
    let id3 = run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Revoke, Some(id2), 3, 2)]).unwrap()[0];
    let head = s.head(&StateKey { namespace: "land-titles".into(), key: "p/1".into() }).unwrap().unwrap();
    assert_eq!((head.id, head.version, head.index, head.status), (id3, 3, 2, Status::Revoked));
    assert_eq!(f.size(), 3);
}

#[test]
fn a_chain_of_versions_within_one_block_is_the_same_state() {
    // Goal: a key published, amended and revoked inside one block (each record
    // reading the head the one before it left), among other keys, ends in the
    // same head, state root and log as the same records one block each.
    let p1 = signed(21, "land-titles", "p/1", Op::Publish, None, 1, 1);
    let other = signed(22, "land-titles", "p/2", Op::Publish, None, 1, 1);
    let v2 = signed(21, "land-titles", "p/1", Op::Amend, Some(p1.id()), 2, 2);
    let v3 = signed(22, "land-titles", "p/1", Op::Revoke, Some(v2.id()), 3, 2);
    let records = [p1, other, v2, v3];
    let (mut one, mut one_log) = fresh();
    let ids = run(&mut one, &mut one_log, &records).unwrap();
    let (mut each, mut each_log) = fresh();
    for r in &records {
        run(&mut each, &mut each_log, std::slice::from_ref(r)).unwrap();
    }
    let key = StateKey { namespace: "land-titles".into(), key: "p/1".into() };
    let head = one.head(&key).unwrap().unwrap();
    assert_eq!((head.id, head.version, head.index, head.status), (ids[3], 3, 3, Status::Revoked));
    assert_eq!(each.head(&key).unwrap(), Some(head));
    assert_eq!(one.state_root(), each.state_root());
    assert_eq!(one_log.root(), each_log.root());
    // A fourth version of the revoked key in the same block is refused by the head the block left.
    let (mut s, mut f) = fresh();
    let after = signed(21, "land-titles", "p/1", Op::Amend, Some(records[3].id()), 4, 3);
    let err = refused(run(&mut s, &mut f, &[records[0].clone(), records[2].clone(), records[3].clone(), after]), 3);
    assert!(matches!(err, Error::KeyRevoked { .. }), "{err:?}");
}

#[test]
fn bad_signature_is_refused() {
    // Goal: a record altered after signing fails with BadSignature, naming its position.
    let good = signed(21, "land-titles", "p/1", Op::Publish, None, 1, 1);
    let mut bad = signed(21, "land-titles", "p/2", Op::Publish, None, 1, 2);
    bad.record.body = Body::Inline(b"forged".to_vec());
    let (mut s, mut f) = fresh();
    let err = refused(run(&mut s, &mut f, &[good, bad]), 1);
    assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
}

#[test]
fn signature_under_another_key_is_refused() {
    // Goal: a record signed by one officer but naming another as submitter fails.
    let mut r = signed(21, "land-titles", "p/1", Op::Publish, None, 1, 1);
    r.record.submitter = key(22).public();
    let (mut s, mut f) = fresh();
    assert!(matches!(refused(run(&mut s, &mut f, &[r]), 0), Error::BadSignature { .. }));
}

#[test]
fn wrong_chain_id_is_refused() {
    // Goal: a record signed for another chain fails with WrongChainId.
    let mut rec = record(21, "land-titles", "p/1", Op::Publish, None, 1, 1);
    rec.chain_id = "other-chain".into();
    let (mut s, mut f) = fresh();
    let err = refused(run(&mut s, &mut f, &[rec.sign(&key(21))]), 0);
    assert!(matches!(err, Error::WrongChainId { ref got, .. } if got == "other-chain"), "{err:?}");
}

#[test]
fn unknown_submitter_is_refused() {
    // Goal: a key in no agency cannot submit.
    let (mut s, mut f) = fresh();
    let err = refused(run(&mut s, &mut f, &[signed(99, "land-titles", "p/1", Op::Publish, None, 1, 1)]), 0);
    assert!(matches!(err, Error::UnknownSubmitter { .. }), "{err:?}");
}

#[test]
fn namespace_of_another_agency_is_refused() {
    // Goal: the companies officer cannot write land titles.
    let (mut s, mut f) = fresh();
    let err = refused(run(&mut s, &mut f, &[signed(31, "land-titles", "p/1", Op::Publish, None, 1, 1)]), 0);
    assert!(matches!(err, Error::NamespaceNotGranted { ref agency, .. } if agency == "companies"), "{err:?}");
}

#[test]
fn replayed_nonce_is_refused_across_and_within_blocks() {
    // Goal: a nonce not above the submitter's last fails, whether the last was committed or earlier in the block.
    let (mut s, mut f) = fresh();
    run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Publish, None, 1, 5)]).unwrap();
    let err = refused(run(&mut s, &mut f, &[signed(21, "land-titles", "p/2", Op::Publish, None, 1, 5)]), 0);
    assert!(matches!(err, Error::NonceNotIncreasing { last: 5, got: 5, .. }), "{err:?}");
    let block = [
        signed(22, "land-titles", "p/3", Op::Publish, None, 1, 1),
        signed(22, "land-titles", "p/4", Op::Publish, None, 1, 1),
    ];
    let err = refused(run(&mut s, &mut f, &block), 1);
    assert!(matches!(err, Error::NonceNotIncreasing { last: 1, got: 1, .. }), "{err:?}");
}

#[test]
fn identical_record_twice_in_a_block_is_refused() {
    // Goal: the same record twice in one block fails (before its nonce is even looked at).
    let r = signed(21, "land-titles", "p/1", Op::Publish, None, 1, 1);
    let (mut s, mut f) = fresh();
    let err = refused(run(&mut s, &mut f, &[r.clone(), r]), 1);
    assert!(matches!(err, Error::DuplicateInBlock { .. }), "{err:?}");
}

#[test]
fn supersedes_must_be_the_current_head() {
    // Goal: amending an old version fails with SupersedesNotHead.
    let (mut s, mut f) = fresh();
    let v1 = run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Publish, None, 1, 1)]).unwrap()[0];
    run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Amend, Some(v1), 2, 2)]).unwrap();
    let err = refused(run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Amend, Some(v1), 3, 3)]), 0);
    assert!(matches!(err, Error::SupersedesNotHead { .. }), "{err:?}");
}

#[test]
fn version_must_follow_the_head() {
    // Goal: a Publish that is not version 1, or an Amend that skips a version, fails with VersionMismatch.
    let (mut s, mut f) = fresh();
    let err = refused(run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Publish, None, 2, 1)]), 0);
    assert!(matches!(err, Error::VersionMismatch { got: 2, want: 1, .. }), "{err:?}");
    let v1 = run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Publish, None, 1, 2)]).unwrap()[0];
    let err = refused(run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Amend, Some(v1), 3, 3)]), 0);
    assert!(matches!(err, Error::VersionMismatch { got: 3, want: 2, .. }), "{err:?}");
}

#[test]
fn revoked_key_cannot_be_amended_or_revoked() {
    // Goal: after a Revoke, both Amend and Revoke of the key fail with KeyRevoked.
    let (mut s, mut f) = fresh();
    let v1 = run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Publish, None, 1, 1)]).unwrap()[0];
    let v2 = run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Revoke, Some(v1), 2, 2)]).unwrap()[0];
    for op in [Op::Amend, Op::Revoke] {
        let err = refused(run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", op, Some(v2), 3, 3)]), 0);
        assert!(matches!(err, Error::KeyRevoked { .. }), "{op:?}: {err:?}");
    }
}

#[test]
fn publish_twice_and_amend_of_nothing_are_refused() {
    // Goal: Publish needs a new key (KeyExists); Amend needs an existing one (KeyNotFound).
    let (mut s, mut f) = fresh();
    let v1 = run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Publish, None, 1, 1)]).unwrap()[0];
    let err = refused(run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Publish, None, 1, 2)]), 0);
    assert!(matches!(err, Error::KeyExists { .. }), "{err:?}");
    let err = refused(run(&mut s, &mut f, &[signed(21, "land-titles", "p/9", Op::Amend, Some(v1), 1, 3)]), 0);
    assert!(matches!(err, Error::KeyNotFound { .. }), "{err:?}");
}

#[test]
fn supersedes_must_match_the_op() {
    // Goal: Amend without supersedes and Publish with one are refused before any state is read.
    let (mut s, mut f) = fresh();
    let err = refused(run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Amend, None, 2, 1)]), 0);
    assert!(matches!(err, Error::SupersedesMissing { .. }), "{err:?}");
    let err = refused(
        run(&mut s, &mut f, &[signed(21, "land-titles", "p/1", Op::Publish, Some(RecordId([7; 32])), 1, 1)]),
        0,
    );
    assert!(matches!(err, Error::SupersedesOnPublish { .. }), "{err:?}");
}

#[test]
fn bodies_and_metadata_over_the_genesis_limits_are_refused() {
    // Goal: one byte over each limit fails with RecordLimit naming the field; at the limit passes.
    let p = genesis().params;
    let with_body = |n: usize, nonce| {
        let mut r = record(21, "land-titles", &format!("p/{nonce}"), Op::Publish, None, 1, nonce);
        r.body = Body::Inline(vec![b'x'; n]);
        r.sign(&key(21))
    };
    let (mut s, mut f) = fresh();
    run(&mut s, &mut f, &[with_body(p.body_bytes_max, 1)]).unwrap();
    let err = refused(run(&mut s, &mut f, &[with_body(p.body_bytes_max + 1, 2)]), 0);
    assert!(matches!(err, Error::RecordLimit { field: "body", .. }), "{err:?}");

    let mut r = record(21, "land-titles", "p/m", Op::Publish, None, 1, 3);
    r.metadata = (0..=p.metadata_entries_max).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let err = refused(run(&mut s, &mut f, &[r.sign(&key(21))]), 0);
    assert!(matches!(err, Error::RecordLimit { field: "metadata entries", .. }), "{err:?}");

    let mut r = record(21, "land-titles", "p/m", Op::Publish, None, 1, 4);
    r.metadata = [("note".to_string(), "y".repeat(p.metadata_bytes_max - 3))].into();
    let err = refused(run(&mut s, &mut f, &[r.sign(&key(21))]), 0);
    assert!(matches!(err, Error::RecordLimit { field: "metadata", .. }), "{err:?}");
}

#[test]
fn a_refused_block_changes_nothing() {
    // Goal: when any record of a block fails, no record of it is applied.
    let (mut s, mut f) = fresh();
    let block = [
        signed(21, "land-titles", "p/1", Op::Publish, None, 1, 1),
        signed(99, "land-titles", "p/2", Op::Publish, None, 1, 1),
    ];
    refused(run(&mut s, &mut f, &block), 1);
    assert!(s.tree.leaves.is_empty() && s.nonces.is_empty() && s.state_root() == EMPTY_ROOT);
    assert_eq!(f.size(), 0);
}

#[test]
fn a_record_checked_on_entry_is_checked_again_when_the_rules_changed() {
    // Goal: a pool record marked as passing the stateless rules is taken as
    // passing only under rules with the same fingerprint: after a change that
    // makes it invalid (its agency lost the namespace), execution refuses it.
    use annal_ledger::exec::execute_ordered;
    use annal_ledger::gov::Governance;
    use annal_ledger::record::Encoded;
    use annal_ledger::state::Rules;

    let before = genesis();
    let mut after = genesis();
    after.agencies[0].namespaces = vec!["deeds".into()];
    let mut other_validators = genesis();
    other_validators.validators[3].power = 2;
    let (r1, r2) = (Rules::new(&before), Rules::new(&after));
    assert_eq!(r1.fingerprint(), rules().fingerprint(), "the same inputs, the same fingerprint");
    assert_ne!(r1.fingerprint(), r2.fingerprint(), "another charter");
    assert_ne!(r1.fingerprint(), Rules::new(&other_validators).fingerprint(), "another validator set");

    let mut marked = Encoded::from(signed(21, "land-titles", "p/1", Op::Publish, None, 1, 1));
    r1.check_and_mark(&mut marked).unwrap();
    r1.check_encoded(&marked).unwrap();
    let err = r2.check_encoded(&marked).unwrap_err();
    assert!(matches!(err, Error::NamespaceNotGranted { .. }), "{err:?}");

    // And through execution: under the new rules the block leaves it out.
    let (state, frontier) = fresh();
    let block = [&marked];
    let kept = execute_ordered(&Governance::genesis(&before), Height(1), &state, &frontier, &block).unwrap();
    assert_eq!(kept.ids, vec![marked.id]);
    let changed = execute_ordered(&Governance::genesis(&after), Height(1), &state, &frontier, &block).unwrap();
    assert!(changed.ids.is_empty(), "refused under the rules in force at execution");
    assert!(matches!(changed.skipped[..], [(id, Error::NamespaceNotGranted { .. })] if id == marked.id));

    // A mark is a claim of this node's own check, not a property of the bytes:
    // a record that fails the rules is refused however it was decoded.
    let mut foreign = Encoded::from(signed(31, "land-titles", "p/2", Op::Publish, None, 1, 1));
    assert!(r1.check_and_mark(&mut foreign).is_err(), "the companies officer cannot write land titles");
    assert!(r1.check_encoded(&foreign).is_err(), "a failed check leaves no mark");
}
