//! The RocksDB store: commits, reopening, queries and proofs read back from disk.

mod common;

use annal_ledger::block::Height;
use annal_ledger::merkle::{self, Hash};
use annal_ledger::record::{Encoded, Op, RecordId, SignedRecord};
use annal_ledger::state::{decode_head, encode_head, StateKey, StateView, Status};
use annal_ledger::state_tree::{depth_for, ProofLeaf, StateProof};
use annal_ledger::store::{Store, StoreOptions};
use annal_ledger::Error;
use common::*;

/// The detail of the `Error::Store` with which the store at `dir` refuses to
/// open for `genesis_hash`; `what` names the case when it opens instead.
fn refused(dir: &std::path::Path, genesis_hash: Hash, what: &str) -> String {
    match Store::open(dir, genesis_hash, StoreOptions::default()) {
        Err(Error::Store { detail, .. }) => detail,
        other => panic!("{what}: expected a refusal, got {:?}", other.map(|_| ())),
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("annal-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Commits `blocks` blocks of `per_block` fresh publishes; returns the leaf hashes in log order.
fn fill(store: &mut Store, blocks: u64, per_block: u64, nonce: &mut u64) -> Vec<Hash> {
    let mut leaves = Vec::new();
    for _ in 0..blocks {
        let records: Vec<SignedRecord> = (0..per_block)
            .map(|_| {
                *nonce += 1;
                signed(21, "land-titles", &format!("p/{nonce}"), Op::Publish, None, 1, *nonce)
            })
            .collect();
        let tip = store.tip().clone();
        let (header, cert, executed) = block(&*store, store.frontier(), tip.block_hash, tip.height.0 + 1, &records);
        cert.verify(&header, &genesis().validator_set()).unwrap();
        leaves.extend(executed.ids.iter().map(|id| id.0));
        store.commit(&header, &cert, &executed).unwrap();
    }
    leaves
}

#[test]
fn commits_survive_reopen_and_proofs_verify() {
    // Goal: after reopening, the tip, headers, records, proofs and consistency proofs read from RocksDB are right.
    let dir = temp_dir("reopen");
    let g = genesis();
    let mut nonce = 0;
    let leaves = {
        let mut store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
        fill(&mut store, 13, 7, &mut nonce)
    };
    let store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
    assert_eq!(store.tip().height, Height(13));
    assert_eq!(store.tip().log_size, 91);
    let root = merkle::root(&leaves);
    assert_eq!(store.log_root(), root);
    assert_eq!(store.header(Height(13)).unwrap().unwrap().log_root, root);
    for index in [0, 1, 45, 89, 90] {
        for size in [index + 1, 64, 91] {
            if size <= index {
                continue;
            }
            let proof = store.inclusion_proof(index, size).unwrap();
            let size_root = merkle::root(&leaves[..size as usize]);
            merkle::verify_inclusion(&leaves[index as usize], index, size, &proof, &size_root).unwrap();
            assert_eq!(store.root_at(size).unwrap(), size_root);
        }
    }
    for (a, b) in [(1, 91), (7, 14), (64, 91), (90, 91)] {
        let proof = store.consistency_proof(a, b).unwrap();
        merkle::verify_consistency(
            a,
            b,
            &proof,
            &merkle::root(&leaves[..a as usize]),
            &merkle::root(&leaves[..b as usize]),
        )
        .unwrap();
    }
    assert!(store.inclusion_proof(5, 92).is_err(), "a size past the tip is refused");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn record_ids_written_behind_are_found_before_and_after_their_run_and_reopen() {
    // Goal (docs/adr/0010): ids held in memory are found like written ones; a run is
    // written once `indexes_behind` are held, and no sooner; a reopened store reads the
    // ids after its last run back out of the segments.
    let dir = temp_dir("ids-behind");
    let g = genesis();
    let options = StoreOptions { indexes_behind: 10, ..StoreOptions::default() };
    let mut nonce = 0;
    let check = |store: &Store, leaves: &[Hash]| {
        for (i, leaf) in leaves.iter().enumerate() {
            assert_eq!(store.index_of(&RecordId(*leaf)).unwrap(), Some(i as u64), "record {i}");
        }
        assert_eq!(store.index_of(&RecordId([9; 32])).unwrap(), None);
    };
    let mut leaves = Vec::new();
    {
        let mut store = Store::open(&dir, g.hash(), options.clone()).unwrap();
        leaves.extend(fill(&mut store, 3, 3, &mut nonce));
        assert_eq!(store.indexed_to(), 0, "9 held, below 10");
        check(&store, &leaves);
        leaves.extend(fill(&mut store, 1, 3, &mut nonce));
        assert_eq!(store.indexed_to(), 12, "12 held: written, this block's with them");
        leaves.extend(fill(&mut store, 2, 3, &mut nonce));
        assert_eq!(store.indexed_to(), 12);
        check(&store, &leaves);
    }
    let mut store = Store::open(&dir, g.hash(), options.clone()).unwrap();
    assert_eq!(store.indexed_to(), 12);
    check(&store, &leaves);
    leaves.extend(fill(&mut store, 2, 3, &mut nonce));
    assert_eq!(store.indexed_to(), 24, "the 6 read back count towards the next run");
    drop(store);
    // Written every block (the old layout): the same answers.
    let store = Store::open(&dir, g.hash(), StoreOptions { indexes_behind: 0, ..options }).unwrap();
    check(&store, &leaves);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn state_leaves_written_behind_give_the_same_headers_heads_and_proofs() {
    // Goal (docs/adr/0010): a store holding changed leaves in memory between runs of 10
    // records builds the same headers (state roots included) as one writing every block,
    // serves the same heads and verifying proofs, and does so again after reopening between
    // runs, with keys amended and revoked on both sides of a run.
    let g = genesis();
    let (dir_every, dir_behind) = (temp_dir("leaves-every"), temp_dir("leaves-behind"));
    let every_block = StoreOptions { indexes_behind: 0, ..StoreOptions::default() };
    let behind = StoreOptions { indexes_behind: 10, ..StoreOptions::default() };
    let mut every = Store::open(&dir_every, g.hash(), every_block).unwrap();
    let mut held = Store::open(&dir_behind, g.hash(), behind.clone()).unwrap();
    let key = |n: u64| StateKey { namespace: "land-titles".into(), key: format!("k/{n}") };
    let mut nonce = 0;
    let mut heads: std::collections::BTreeMap<u64, (RecordId, u64)> = Default::default();
    for height in 1..=14u64 {
        // Three new keys per block; from block 3 on, amend a key of two blocks back, and
        // every third block revoke one of five blocks back.
        let mut records = Vec::new();
        let mut next = |op, n: u64, supersedes: Option<RecordId>, version| {
            nonce += 1;
            signed(21, "land-titles", &format!("k/{n}"), op, supersedes, version, nonce)
        };
        for n in 0..3 {
            records.push(next(Op::Publish, height * 10 + n, None, 1));
        }
        if height >= 3 {
            let n = (height - 2) * 10;
            let (id, version) = heads[&n];
            records.push(next(Op::Amend, n, Some(id), version + 1));
        }
        if height >= 6 && height % 3 == 0 {
            let n = (height - 5) * 10 + 1;
            let (id, version) = heads[&n];
            records.push(next(Op::Revoke, n, Some(id), version + 1));
        }
        for store in [&mut every, &mut held] {
            let tip = store.tip().clone();
            let (header, cert, executed) = block(&*store, store.frontier(), tip.block_hash, height, &records);
            assert_eq!(executed.ids.len(), records.len(), "height {height}: every record appended");
            store.commit(&header, &cert, &executed).unwrap();
        }
        for r in &records {
            heads.insert(r.record.key[2..].parse().unwrap(), (r.id(), r.record.version));
        }
        assert_eq!(held.header(Height(height)).unwrap(), every.header(Height(height)).unwrap(), "height {height}");
        if height == 8 {
            // Reopened between runs: what was held is read back from the segments.
            assert!(held.indexed_to() < held.tip().log_size, "something held at the reopen");
            drop(held);
            held = Store::open(&dir_behind, g.hash(), behind.clone()).unwrap();
        }
    }
    assert!(held.indexed_to() > 0, "runs were written");
    let root = every.header(every.tip().height).unwrap().unwrap().state_root;
    for n in heads.keys().copied().chain([7, 99_999]) {
        let k = key(n);
        assert_eq!(held.head(&k).unwrap(), every.head(&k).unwrap(), "{k:?}");
        let proof = held.state_proof(&k).unwrap();
        assert_eq!(proof, every.state_proof(&k).unwrap(), "{k:?}");
        assert_eq!(
            StateProof::from_bytes(&proof.to_bytes()).unwrap().verify(&root, &k).unwrap(),
            held.head(&k).unwrap()
        );
    }
    let _ = std::fs::remove_dir_all(&dir_every);
    let _ = std::fs::remove_dir_all(&dir_behind);
}

#[test]
fn key_history_and_head_status_are_queryable() {
    // Goal: every version of a key is listed in order with its index, and the head shows revocation.
    let dir = temp_dir("history");
    let g = genesis();
    let mut store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
    let mut ids = Vec::new();
    for (op, nonce) in [(Op::Publish, 1), (Op::Amend, 2), (Op::Amend, 3), (Op::Revoke, 4)] {
        let r = signed(21, "land-titles", "p/7", op, ids.last().copied(), nonce, nonce);
        let tip = store.tip().clone();
        let (header, cert, executed) = block(&store, store.frontier(), tip.block_hash, tip.height.0 + 1, &[r]);
        ids.push(executed.ids[0]);
        store.commit(&header, &cert, &executed).unwrap();
    }
    let key = StateKey { namespace: "land-titles".into(), key: "p/7".into() };
    let versions =
        |ids: &[RecordId]| ids.iter().enumerate().map(|(i, id)| (i as u64 + 1, i as u64, *id)).collect::<Vec<_>>();
    assert_eq!(store.history(&key, None, 10).unwrap(), (versions(&ids), false));
    // Paged: the newest two, then the two before them, named by the oldest listed.
    assert_eq!(store.history(&key, None, 2).unwrap(), (versions(&ids)[2..].to_vec(), true));
    assert_eq!(store.history(&key, Some((2, 1, ids[1])), 2).unwrap(), (versions(&ids)[..2].to_vec(), false));
    assert_eq!(store.history(&key, Some((3, 2, ids[2])), 1).unwrap(), (versions(&ids)[2..3].to_vec(), true));
    let head = store.head(&key).unwrap().unwrap();
    assert_eq!((head.id, head.version, head.status), (ids[3], 4, Status::Revoked));
    assert_eq!(store.last_nonce(&key_pub(21)).unwrap(), Some(4));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(store.index_of(id).unwrap(), Some(i as u64));
    }
    let other = StateKey { namespace: "land-titles".into(), key: "p/70".into() };
    assert!(store.history(&other, None, 10).unwrap().0.is_empty(), "a key that shares a prefix is not mixed in");
    // Two versions of a key in one block, with another key between them.
    let first = signed(21, "land-titles", "p/8", Op::Publish, None, 1, 5);
    let between = signed(21, "land-titles", "p/9", Op::Publish, None, 1, 6);
    let second = signed(21, "land-titles", "p/8", Op::Amend, Some(first.id()), 2, 7);
    let tip = store.tip().clone();
    let (header, cert, executed) =
        block(&store, store.frontier(), tip.block_hash, tip.height.0 + 1, &[first, between, second]);
    store.commit(&header, &cert, &executed).unwrap();
    let p8 = StateKey { namespace: "land-titles".into(), key: "p/8".into() };
    assert_eq!(store.history(&p8, None, 10).unwrap().0, vec![(1, 4, executed.ids[0]), (2, 6, executed.ids[2])]);
    assert_eq!(store.last_nonce(&key_pub(21)).unwrap(), Some(7));
    // The committed nonces are held in memory: a reopened store loads them again.
    drop(store);
    let store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
    assert_eq!(store.last_nonce(&key_pub(21)).unwrap(), Some(7));
    assert_eq!(store.last_nonce(&key_pub(22)).unwrap(), None);
    assert_eq!(store.history(&key, None, 10).unwrap().0, versions(&ids));
    let _ = std::fs::remove_dir_all(&dir);
}

fn key_pub(n: u8) -> annal_ledger::keys::PublicKey {
    key(n).public()
}

#[test]
fn another_chains_store_is_refused() {
    // Goal: a store opened with a different genesis hash is refused, naming both hashes.
    let dir = temp_dir("chain");
    drop(Store::open(&dir, genesis().hash(), StoreOptions::default()).unwrap());
    let detail = refused(&dir, [9; 32], "another chain");
    assert!(detail.contains("belongs to the chain"), "{detail}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn commit_that_does_not_extend_the_tip_is_refused() {
    // Goal: a block at the wrong height or with the wrong parent is refused and the tip is unchanged.
    let dir = temp_dir("extend");
    let g = genesis();
    let mut store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
    let r = [signed(21, "land-titles", "p/1", Op::Publish, None, 1, 1)];
    let tip = store.tip().clone();
    let (header, cert, executed) = block(&store, store.frontier(), tip.block_hash, 2, &r);
    assert!(matches!(store.commit(&header, &cert, &executed), Err(Error::Block { height: 2, .. })));
    let (header, cert, executed) = block(&store, store.frontier(), [0; 32], 1, &r);
    assert!(matches!(store.commit(&header, &cert, &executed), Err(Error::Block { height: 1, .. })));
    assert_eq!(store.tip().height, Height(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn certificate_below_quorum_or_forged_is_refused() {
    // Goal: 2 of 4 equal-power signatures is not a quorum; a signature by a non-member is refused.
    let g = genesis();
    let set = g.validator_set();
    let mut state = annal_ledger::state::MemoryState::default();
    let _ = &mut state;
    let (header, cert, _) = block(&state, &merkle::Frontier::new(), g.hash(), 1, &[]);
    cert.verify(&header, &set).unwrap();
    let (k1, k2) = (key(1), key(2));
    let two = annal_ledger::block::Certificate::sign(&header, &set, &[(0, &k1), (1, &k2)]);
    assert!(matches!(two.verify(&header, &set), Err(Error::QuorumNotReached { power: 2, total: 4, .. })));
    let stranger = key(77);
    let forged = annal_ledger::block::Certificate::sign(&header, &set, &[(0, &k1), (1, &k2), (2, &stranger)]);
    assert!(matches!(forged.verify(&header, &set), Err(Error::Block { .. })));
    let mut other_chain = cert.clone();
    other_chain.block_hash = [0; 32];
    assert!(other_chain.verify(&header, &set).is_err());
    let mut moved = header.clone();
    moved.chain_id = "other-chain".into();
    assert!(cert.verify(&moved, &set).is_err(), "a certificate is bound to its chain id");
}

#[test]
fn proofs_use_in_memory_upper_nodes_after_reopen() {
    // Goal: with thousands of leaves (log nodes above level 8 served from memory), proofs and roots
    // at every tested size still match a recomputation, before and after reopening.
    let dir = temp_dir("upper");
    let g = genesis();
    let mut nonce = 0;
    let mut store = Store::open(&dir, g.hash(), StoreOptions { sync: false, ..StoreOptions::default() }).unwrap();
    let leaves = fill(&mut store, 11, 300, &mut nonce);
    let check = |store: &Store| {
        for size in [257u64, 512, 513, 2048, 3000, 3300] {
            let root = merkle::root(&leaves[..size as usize]);
            assert_eq!(store.root_at(size).unwrap(), root, "root at {size}");
            for index in [0, 255, 256, size / 2, size - 1] {
                let proof = store.inclusion_proof(index, size).unwrap();
                merkle::verify_inclusion(&leaves[index as usize], index, size, &proof, &root).unwrap();
            }
            let proof = store.consistency_proof(100, size).unwrap();
            merkle::verify_consistency(100, size, &proof, &merkle::root(&leaves[..100]), &root).unwrap();
        }
    };
    check(&store);
    drop(store);
    let store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
    check(&store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn state_proofs_verify_across_growth_and_reopen() {
    // Goal: as keys double the in-memory levels grow deeper, status proofs served by the store
    // verify against the tip header's state_root, and after reopening (levels built from the
    // leaves alone) the root and the proofs are the same.
    let dir = temp_dir("state");
    let g = genesis();
    let mut nonce = 0;
    let mut store = Store::open(&dir, g.hash(), StoreOptions { sync: false, ..StoreOptions::default() }).unwrap();
    let depths: Vec<usize> = (0..12)
        .map(|_| {
            fill(&mut store, 1, 100, &mut nonce);
            store.state_levels().depth()
        })
        .collect();
    // Blocks of 100 keys: 100 keys want depth 5, 200 depth 6, 300 (past 256) 7, 600 8, 1100 9.
    assert_eq!(depths, vec![5, 6, 7, 7, 7, 8, 8, 8, 8, 8, 9, 9]);
    assert!(store.levels_built().is_none(), "a new store's levels were not built at open");
    let keys: Vec<StateKey> = [1, 2, 600, 1200, 1201, 99_999]
        .iter()
        .map(|n| StateKey { namespace: "land-titles".into(), key: format!("p/{n}") })
        .collect();
    let check = |store: &Store| {
        let root = store.header(store.tip().height).unwrap().unwrap().state_root;
        assert_eq!(store.state_root(), root);
        keys.iter()
            .map(|k| {
                let proof = store.state_proof(k).unwrap();
                let proven = StateProof::from_bytes(&proof.to_bytes()).unwrap().verify(&root, k).unwrap();
                assert_eq!(proven, store.head(k).unwrap(), "{k:?}");
                proof
            })
            .collect::<Vec<_>>()
    };
    let before = check(&store);
    assert_eq!(before.iter().filter(|p| matches!(p.leaf, ProofLeaf::Head(_))).count(), 4);
    drop(store);
    let store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
    let built = store.levels_built().expect("levels built at open");
    assert_eq!((built.depth, built.leaf_count), (depth_for(1200), 1200));
    assert_eq!(store.state_levels().leaf_count(), 1200);
    assert_eq!(check(&store), before);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens the RocksDB folder of a closed store directly, with every column family.
fn raw_db(dir: &std::path::Path) -> rocksdb::DB {
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).unwrap();
    rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, families).unwrap()
}

#[test]
fn a_store_whose_leaves_disagree_with_the_tip_refuses_to_open() {
    // Goal: a changed leaf, a lost leaf, or the retired node layout makes open fail with an error
    // that says so, rather than serving proofs for another state.
    let dir = temp_dir("leaves");
    let g = genesis();
    let mut nonce = 0;
    {
        // Leaves written with every block (not held behind), so the family holds them all.
        let mut store =
            Store::open(&dir, g.hash(), StoreOptions { indexes_behind: 0, ..StoreOptions::default() }).unwrap();
        fill(&mut store, 3, 10, &mut nonce);
    }
    let (key_hash, head) = {
        let db = raw_db(&dir);
        let leaves = db.cf_handle("leaves").unwrap();
        let (k, v) = db.iterator_cf(leaves, rocksdb::IteratorMode::Start).next().unwrap().unwrap();
        let (k, v) = (k.to_vec(), v.to_vec());
        let mut changed = decode_head(&v).unwrap();
        changed.status = Status::Revoked;
        db.put_cf(leaves, &k, encode_head(&changed)).unwrap();
        (k, v)
    };
    match Store::open(&dir, g.hash(), StoreOptions::default()) {
        Err(Error::StateRootDiffers { height: 3, .. }) => {}
        other => panic!("a changed leaf: expected StateRootDiffers, got {:?}", other.map(|_| ())),
    }
    {
        let db = raw_db(&dir);
        db.delete_cf(db.cf_handle("leaves").unwrap(), &key_hash).unwrap();
    }
    match Store::open(&dir, g.hash(), StoreOptions::default()) {
        Err(Error::StateLeavesDisagree { detail, .. }) => assert!(detail.contains("29 leaves"), "{detail}"),
        other => panic!("a lost leaf: expected StateLeavesDisagree, got {:?}", other.map(|_| ())),
    }
    {
        let mut db = raw_db(&dir);
        db.put_cf(db.cf_handle("leaves").unwrap(), &key_hash, head).unwrap();
        db.create_cf("state", &rocksdb::Options::default()).unwrap();
    }
    let detail = refused(&dir, g.hash(), "the retired layout");
    assert!(detail.contains("\"state\""), "{detail}");
    {
        let mut db = raw_db(&dir);
        db.drop_cf("state").unwrap();
    }
    let store = Store::open(&dir, g.hash(), StoreOptions::default()).expect("restored, the store opens again");
    assert_eq!(store.tip().height, Height(3));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ordered_execution_leaves_out_records_that_break_a_rule() {
    // Goal: execute_ordered appends exactly the records that pass, in order, and names each left out;
    // its result equals strict execution of the kept records.
    let g = genesis();
    let dir = temp_dir("ordered");
    let store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
    let a = signed(21, "land-titles", "p/a", Op::Publish, None, 1, 5);
    let replay = signed(21, "land-titles", "p/b", Op::Publish, None, 1, 5); // nonce 5 again
    let b = signed(21, "land-titles", "p/b", Op::Publish, None, 1, 6);
    let wrong_version = signed(21, "land-titles", "p/c", Op::Publish, None, 2, 7);
    let foreign = signed(21, "companies", "x", Op::Publish, None, 1, 8); // namespace not granted
    let records = vec![a.clone(), replay.clone(), a.clone(), b.clone(), wrong_version.clone(), foreign.clone()];
    let encoded: Vec<Encoded> = records.iter().cloned().map(Encoded::from).collect();
    let ordered = annal_ledger::exec::execute_ordered(&gov(), Height(1), &store, store.frontier(), &encoded).unwrap();
    assert_eq!(ordered.ids, vec![a.id(), b.id()]);
    let skipped: Vec<_> = ordered.skipped.iter().map(|(id, e)| (*id, std::mem::discriminant(e))).collect();
    let d = std::mem::discriminant;
    assert!(skipped
        .contains(&(foreign.id(), d(&Error::NamespaceNotGranted { agency: String::new(), namespace: String::new() }))));
    assert!(
        skipped.contains(&(replay.id(), d(&Error::NonceNotIncreasing { submitter: String::new(), last: 0, got: 0 })))
    );
    assert!(skipped.contains(&(a.id(), d(&Error::DuplicateInBlock { id: String::new() }))));
    assert_eq!(ordered.skipped.len(), 4, "{:?}", ordered.skipped);
    let strict = annal_ledger::exec::execute(
        &gov(),
        Height(1),
        &store,
        store.frontier(),
        &[a, b],
        annal_ledger::exec::Signatures::Verify,
    )
    .unwrap();
    assert_eq!((ordered.log_root(), ordered.state_root), (strict.log_root(), strict.state_root));
    assert!(annal_ledger::exec::execute(
        &gov(),
        Height(1),
        &store,
        store.frontier(),
        &records,
        annal_ledger::exec::Signatures::Verify
    )
    .is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_block_committed_before_its_certificate_gets_it_later() {
    // Goal: commit_block without a certificate keeps proofs waiting (NotCertified); put_certificate
    // refuses another block's certificate, stores the right one, and both survive reopening.
    let g = genesis();
    let dir = temp_dir("late-cert");
    let r = signed(21, "land-titles", "late/1", Op::Publish, None, 1, 1);
    {
        let mut store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
        let tip = store.tip().clone();
        let (header, cert, executed) = block(&store, store.frontier(), tip.block_hash, 1, std::slice::from_ref(&r));
        let meta = vec![("app/note".to_string(), b"kept".to_vec())];
        store.commit_block(&header, None, &executed, &meta).unwrap();
        assert_eq!(store.certified_height(), Height(0));
        assert!(matches!(
            annal_ledger::proof::bundle(&store, &g, &r.id(), false),
            Err(Error::NotCertified { height: 1 })
        ));
        let mut other = cert.clone();
        other.block_hash = [9; 32];
        assert!(store.put_certificate(&other).is_err(), "a certificate for another block is refused");
        let mut above = cert.clone();
        above.height = Height(2);
        assert!(store.put_certificate(&above).is_err(), "a certificate above the tip is refused");
        store.put_certificate(&cert).unwrap();
        assert_eq!(store.certified_height(), Height(1));
        let bad_meta = vec![("tip".to_string(), vec![1])];
        let (h2, _, e2) = block(&store, store.frontier(), header.hash(), 2, &[]);
        assert!(
            store.commit_block(&h2, None, &e2, &bad_meta).is_err(),
            "the store's own meta keys are not the caller's"
        );
    }
    let store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
    assert_eq!(store.certified_height(), Height(1));
    assert_eq!(store.app_meta("app/note").unwrap(), Some(b"kept".to_vec()));
    let bundle = annal_ledger::proof::bundle(&store, &g, &r.id(), false).unwrap();
    annal_ledger::proof::verify(&bundle, &g, None).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_store_with_the_old_history_family_drops_it_when_it_opens() {
    // Goal: a store made when keys' histories had a family of their own opens,
    // loses that family, and still lists a key's versions (now walked).
    let dir = temp_dir("history-family");
    let g = genesis();
    let mut store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
    let r = signed(21, "land-titles", "p/1", Op::Publish, None, 1, 1);
    let tip = store.tip().clone();
    let (header, cert, executed) = block(&store, store.frontier(), tip.block_hash, tip.height.0 + 1, &[r]);
    store.commit(&header, &cert, &executed).unwrap();
    drop(store);
    {
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &dir).unwrap();
        let mut db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &dir, &names).unwrap();
        db.create_cf("history", &rocksdb::Options::default()).unwrap();
        db.put_cf(
            db.cf_handle("history").unwrap(),
            b"\x0bland-titles\x00\x03p/1\0\0\0\0\0\0\0\x01",
            0u64.to_be_bytes(),
        )
        .unwrap();
    }
    let store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
    let key = StateKey { namespace: "land-titles".into(), key: "p/1".into() };
    assert_eq!(store.history(&key, None, 10).unwrap(), (vec![(1, 0, executed.ids[0])], false));
    drop(store);
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &dir).unwrap();
    assert!(!names.iter().any(|n| n == "history"), "the old family is gone: {names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bytes of every file in the store's segments folder, by file name.
fn segment_files(dir: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().into_string().unwrap(), e.metadata().unwrap().len()))
        .collect()
}

#[test]
fn records_roll_over_segments_and_a_torn_append_is_cut_off_on_open() {
    // Goal: records spread over several segments read back whole (one by one and in one scan);
    // bytes appended for a block whose batch never landed, and a segment begun for it, are
    // removed on open, and the next commit lands where the committed records end.
    let dir = temp_dir("segments");
    let g = genesis();
    let small = StoreOptions { segment_bytes: 4096, ..StoreOptions::default() };
    let mut nonce = 0;
    let leaves = {
        let mut store = Store::open(&dir, g.hash(), small.clone()).unwrap();
        fill(&mut store, 12, 5, &mut nonce)
    };
    let files = segment_files(&dir);
    assert!(files.len() >= 4, "60 records of ~300 bytes in 4 KB segments: {files:?}");
    assert!(files.values().all(|&len| len <= 4096), "no segment grows past its bound: {files:?}");
    let committed: u64 = files.values().sum();
    // A crash after an append, before its batch: the open segment grew, and a new one was begun.
    let (last, _) = files.last_key_value().unwrap();
    let mut torn = std::fs::OpenOptions::new().append(true).open(dir.join("segments").join(last)).unwrap();
    std::io::Write::write_all(&mut torn, &[0xee; 1000]).unwrap();
    std::fs::write(dir.join("segments").join(format!("{:020}.seg", 60)), [0xee; 700]).unwrap();

    let mut store = Store::open(&dir, g.hash(), small.clone()).unwrap();
    assert_eq!(segment_files(&dir), files, "the torn bytes and the stray segment are gone");
    assert!(store.disk_bytes() >= committed, "disk bytes count the segments");
    let read: Vec<Hash> = (0..60).map(|i| merkle::leaf_hash(&store.record_bytes(i).unwrap().unwrap())).collect();
    assert_eq!(read, leaves);
    let scanned: Vec<Hash> = store.records_in(3, 57).unwrap().iter().map(|b| merkle::leaf_hash(b)).collect();
    assert_eq!(scanned, leaves[3..57]);
    assert!(store.record_bytes(60).unwrap().is_none());
    let more = fill(&mut store, 3, 5, &mut nonce);
    drop(store);
    let store = Store::open(&dir, g.hash(), small).unwrap();
    let all: Vec<Hash> = store.records_in(0, 75).unwrap().iter().map(|b| merkle::leaf_hash(b)).collect();
    assert_eq!(all, [leaves, more].concat());
    assert_eq!(store.log_root(), merkle::root(&all));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_store_that_lost_committed_record_bytes_or_keeps_records_in_rocksdb_refuses_to_open() {
    // Goal: a segment shorter than its spans say, or missing, or the layout before segments, is
    // refused with an error naming it, not served as a log with holes.
    let dir = temp_dir("segments-lost");
    let g = genesis();
    let mut nonce = 0;
    {
        let mut store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
        fill(&mut store, 2, 4, &mut nonce);
    }
    let (name, len) = segment_files(&dir).pop_first().unwrap();
    let path = dir.join("segments").join(&name);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..len as usize - 1]).unwrap();
    let detail = refused(&dir, g.hash(), "a short segment");
    assert!(detail.contains(&format!("holds {} bytes", len - 1)), "{detail}");
    std::fs::remove_file(&path).unwrap();
    let detail = refused(&dir, g.hash(), "a missing segment");
    assert!(detail.contains("is missing"), "{detail}");
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(dir.join("segments").join("notes.txt"), b"x").unwrap();
    let detail = refused(&dir, g.hash(), "a stranger in the folder");
    assert!(detail.contains("\"notes.txt\" is not a segment"), "{detail}");
    std::fs::remove_file(dir.join("segments").join("notes.txt")).unwrap();
    {
        let mut db = raw_db(&dir);
        db.create_cf("records", &rocksdb::Options::default()).unwrap();
    }
    let files = segment_files(&dir);
    let detail = refused(&dir, g.hash(), "an old records family short of the log");
    assert!(detail.contains("\"records\"") && detail.contains("cannot be migrated"), "{detail}");
    assert_eq!(segment_files(&dir), files, "the refusal cut no record bytes");
    {
        let mut db = raw_db(&dir);
        db.drop_cf("records").unwrap();
    }
    let store = Store::open(&dir, g.hash(), StoreOptions::default()).expect("restored, the store opens again");
    assert_eq!(store.records_in(0, 8).unwrap().len(), 8);
    drop(store);
    // Spans that end short of the tip are refused before the segments are cut to them.
    let files = segment_files(&dir);
    let (key, span) = {
        let db = raw_db(&dir);
        let spans = db.cf_handle("spans").unwrap();
        let (k, v) = db.iterator_cf(spans, rocksdb::IteratorMode::End).next().unwrap().unwrap();
        db.delete_cf(spans, &k).unwrap();
        (k.to_vec(), v.to_vec())
    };
    let detail = refused(&dir, g.hash(), "a lost span");
    assert!(detail.contains("spans end at log index 4"), "{detail}");
    assert_eq!(segment_files(&dir), files, "no record bytes were cut");
    {
        let db = raw_db(&dir);
        db.put_cf(db.cf_handle("spans").unwrap(), key, span).unwrap();
    }
    assert_eq!(Store::open(&dir, g.hash(), StoreOptions::default()).unwrap().records_in(0, 8).unwrap().len(), 8);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn odd_log_levels_are_not_stored_and_every_proof_still_verifies() {
    // Goal: the nodes family holds only even levels (an odd level's node is hashed from its
    // children when read), and inclusion and consistency proofs at every index and many sizes
    // verify, before and after reopening.
    let dir = temp_dir("levels");
    let g = genesis();
    let mut nonce = 0;
    let leaves = {
        let mut store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
        fill(&mut store, 5, 211, &mut nonce)
    };
    {
        let db = raw_db(&dir);
        let levels: std::collections::BTreeSet<u8> = db
            .iterator_cf(db.cf_handle("nodes").unwrap(), rocksdb::IteratorMode::Start)
            .map(|item| item.unwrap().0[0])
            .collect();
        assert_eq!(levels, [2, 4, 6, 8, 9, 10].into(), "1,055 leaves: nodes up to level 10; below 8, even ones only");
    }
    let store = Store::open(&dir, g.hash(), StoreOptions::default()).unwrap();
    assert_eq!(store.log_root(), merkle::root(&leaves));
    for size in [1, 2, 3, 127, 128, 129, 255, 256, 700, 1024, 1055] {
        let root = merkle::root(&leaves[..size as usize]);
        assert_eq!(store.root_at(size).unwrap(), root);
        for index in (0..size).step_by(7).chain([size - 1]) {
            let proof = store.inclusion_proof(index, size).unwrap();
            merkle::verify_inclusion(&leaves[index as usize], index, size, &proof, &root).unwrap();
        }
        for old in [1, 2, 3, 5, 64, 129, 512].into_iter().filter(|&old| old <= size) {
            let proof = store.consistency_proof(old, size).unwrap();
            merkle::verify_consistency(old, size, &proof, &merkle::root(&leaves[..old as usize]), &root).unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_store_with_its_records_in_rocksdb_moves_them_to_segments_when_it_opens() {
    // Goal: a store of the layout before segments (records in a `records` family, no spans)
    // opens with every record moved to segments and the family gone, even after a migration
    // was cut short, and serves the same records, roots and proofs.
    let dir = temp_dir("migrate");
    let g = genesis();
    let mut nonce = 0;
    let small = StoreOptions { segment_bytes: 8192, ..StoreOptions::default() };
    let leaves = {
        let mut store = Store::open(&dir, g.hash(), small.clone()).unwrap();
        fill(&mut store, 9, 11, &mut nonce)
    };
    let records = Store::open(&dir, g.hash(), small.clone()).unwrap().records_in(0, 99).unwrap();
    // Back to the old layout: the records in their family, a migration's leftovers beside them
    // (the spans and segments of a run that never dropped the family, one segment cut short).
    {
        let mut db = raw_db(&dir);
        db.create_cf("records", &rocksdb::Options::default()).unwrap();
        let family = db.cf_handle("records").unwrap();
        for (i, r) in records.iter().enumerate() {
            db.put_cf(family, (i as u64).to_be_bytes(), r).unwrap();
        }
    }
    let (name, len) = segment_files(&dir).pop_last().unwrap();
    let torn = std::fs::OpenOptions::new().write(true).open(dir.join("segments").join(name)).unwrap();
    torn.set_len(len / 2).unwrap();

    let store = Store::open(&dir, g.hash(), small.clone()).expect("the old layout is migrated");
    assert_eq!(store.records_in(0, 99).unwrap(), records);
    assert_eq!(store.log_root(), merkle::root(&leaves));
    let proof = store.inclusion_proof(40, 99).unwrap();
    merkle::verify_inclusion(&leaves[40], 40, 99, &proof, &merkle::root(&leaves)).unwrap();
    drop(store);
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &dir).unwrap();
    assert!(!names.iter().any(|n| n == "records"), "the old family is gone: {names:?}");
    let on_disk: u64 = segment_files(&dir).values().sum();
    assert_eq!(on_disk, records.iter().map(|r| r.len() as u64).sum::<u64>(), "segments hold the records, once");
    let mut store = Store::open(&dir, g.hash(), small).expect("and opens again as a store of segments");
    fill(&mut store, 1, 3, &mut nonce);
    assert_eq!(store.records_in(0, 102).unwrap()[..99], records[..]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn leaves_of_many_spans_merge_held_leaves_in_any_span_order() {
    // Goal: the leaves of several spans read at once (stored ones merged with
    // those held in memory) are each span's own, as read one span at a time,
    // whatever the spans' order and distance.
    use annal_ledger::state_tree::LeafReader;
    let dir = temp_dir("spans");
    let g = genesis();
    let mut store =
        Store::open(&dir, g.hash(), StoreOptions { indexes_behind: 60, ..StoreOptions::default() }).unwrap();
    let mut nonce = 0;
    fill(&mut store, 39, 3, &mut nonce);
    assert_eq!(store.indexed_to(), 60, "60 leaves written, 57 held");
    let all = store.leaves_in(&[0; 32], &[0xff; 32]).unwrap();
    assert_eq!(all.len(), 117);
    // Eight spans by the first byte of the key hash, and the same in other orders.
    let edge = |first: u8, rest: u8| {
        let mut h = [rest; 32];
        h[0] = first;
        h
    };
    let spans: Vec<(Hash, Hash)> = (0..8u8).map(|i| (edge(i * 32, 0), edge(i * 32 + 31, 0xff))).collect();
    let mut reversed = spans.clone();
    reversed.reverse();
    let shuffled = [3, 0, 7, 1, 6, 2, 5, 4].map(|i| spans[i]).to_vec();
    // Most leaves lie between these two.
    let far = vec![(edge(0, 0), edge(7, 0xff)), (edge(248, 0), edge(255, 0xff))];
    for order in [&spans, &reversed, &shuffled, &far] {
        let got = store.leaves_in_each(order).unwrap();
        assert_eq!(got.ends.len(), order.len());
        let mut start = 0;
        for ((from, to), &end) in order.iter().zip(&got.ends) {
            assert_eq!(got.leaves[start..end], store.leaves_in(from, to).unwrap()[..], "span {from:?}..={to:?}");
            start = end;
        }
        if order.len() == spans.len() {
            assert_eq!(start, 117, "every leaf in exactly one span");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
