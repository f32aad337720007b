//! Authenticated record state: roots, updates, proofs and their encoding.

use std::cell::Cell;
use std::collections::BTreeMap;

use annal_ledger::merkle::Hash;
use annal_ledger::record::RecordId;
use annal_ledger::state::{encode_head, Head, StateKey, Status};
use annal_ledger::state_tree::{
    depth_for, key_hash, prove, root_of, update, update_prefetched, LeafReader, Levels, MemoryTree, Prefetch,
    ProofLeaf, StateProof, StateTreeReader, EMPTY_ROOT, PROOF_BYTES_MAX, PROOF_SIBLINGS_MAX,
};
use annal_ledger::Error;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn key(ns: &str, k: &str) -> StateKey {
    StateKey { namespace: ns.into(), key: k.into() }
}

fn head(seed: u64, version: u64, status: Status) -> Head {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&seed.to_le_bytes());
    id[31] = version as u8;
    Head { id: RecordId(id), version, index: seed * 100 + version, status }
}

/// Applies `changes` to `tree` as a commit would; returns the new root.
fn apply(tree: &mut MemoryTree, changes: &BTreeMap<StateKey, Head>) -> Hash {
    let up = update(tree, changes).unwrap();
    tree.apply(&up);
    assert_eq!(tree.root(), up.root);
    up.root
}

/// A tree of `n` keys `land/parcel/i`, built in one block.
fn tree(n: u64) -> (MemoryTree, Hash, BTreeMap<StateKey, Head>) {
    let map: BTreeMap<_, _> =
        (0..n).map(|i| (key("land", &format!("parcel/{i}")), head(i, 1, Status::Active))).collect();
    let mut tree = MemoryTree::default();
    let root = apply(&mut tree, &map);
    (tree, root, map)
}

fn flip(bytes: &[u8], i: usize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v[i] ^= 0x01;
    v
}

#[test]
fn empty_map_has_the_documented_root() {
    // Goal: the empty map's root is the fixed constant, and every key is provably absent in it.
    assert_eq!(&EMPTY_ROOT, b"SPARSE_MERKLE_PLACEHOLDER_HASH__");
    assert_eq!(root_of(&BTreeMap::new()), EMPTY_ROOT);
    let proof = prove(&MemoryTree::default(), &key("a", "b")).unwrap();
    assert_eq!(proof, StateProof { leaf: ProofLeaf::Empty, siblings: vec![] });
    assert_eq!(proof.verify(&EMPTY_ROOT, &key("a", "b")).unwrap(), None);
}

#[test]
fn golden_root_of_a_small_map() {
    // Goal: the same map gives the same root bytes on every machine and in every build (pinned).
    // The same value is what jmt 0.12 (Sha256Jmt) computes for these (key_hash, head bytes) pairs.
    let map = BTreeMap::from([
        (key("land-titles", "parcel/0042"), head(1, 1, Status::Active)),
        (key("land-titles", "parcel/0043"), head(2, 3, Status::Revoked)),
        (key("companies", "HRB-1234"), head(3, 2, Status::Active)),
    ]);
    assert_eq!(
        hex::encode(key_hash(&key("land-titles", "parcel/0042"))),
        "4c3c538b2610e4387c3069a40c09226c0ee5c0fd07a89a19f2dc7aa2520c4c3f"
    );
    assert_eq!(hex::encode(root_of(&map)), "95e1766742eb6c8ccab70f66def37af368a9fb1270cc5514313e78b271e274ef");
}

#[test]
fn roots_equal_those_of_jmt() {
    // Goal: the tree hashes exactly as the jellyfish Merkle tree (jmt 0.12, Sha256Jmt) does, so its
    // proofs are standard binary sparse Merkle proofs. The roots below were computed with jmt, out of
    // tree, for the same (key_hash, canonical head) pairs; ADR 0003 says how.
    for (n, want) in [
        (1, "e4e83da0f00edd8818ad075f4c3237363f5af1fbb9fc4ba6ba5e8e19a3f84460"),
        (2, "a296b9d0e2dc4df5bad2b371d1650bd028c7f41021f2cc89affc083d2c630f39"),
        (1000, "a596ee1ef8651613b005ffaa38cf64804a312fa8501427dd878d3aa71d84727c"),
        (20000, "9f9de943bdbd3a5a39f1943016d7096ef7f943ecc266fc005ec5df8cb71f9e9c"),
    ] {
        assert_eq!(hex::encode(tree(n).1), want, "tree of {n} keys");
    }
}

#[test]
fn membership_and_non_membership_proofs_verify() {
    // Goal: every present key proves its head; absent keys prove absence, through both an empty
    // subtree and a neighbouring leaf.
    let (tree, root, map) = tree(200);
    for (k, h) in &map {
        let proof = prove(&tree, k).unwrap();
        assert!(matches!(proof.leaf, ProofLeaf::Head(_)));
        assert_eq!(proof.verify(&root, k).unwrap(), Some(*h));
        let decoded = StateProof::from_bytes(&proof.to_bytes()).unwrap();
        assert_eq!(decoded, proof);
    }
    let (mut empty, mut other) = (0, 0);
    for i in 0..400 {
        let absent = key("land", &format!("absent/{i}"));
        let proof = prove(&tree, &absent).unwrap();
        match proof.leaf {
            ProofLeaf::Empty => empty += 1,
            ProofLeaf::Other { .. } => other += 1,
            ProofLeaf::Head(_) => panic!("absent key {absent:?} proved present"),
        }
        assert_eq!(proof.verify(&root, &absent).unwrap(), None);
    }
    assert!(empty > 0 && other > 0, "both kinds of absence proof are exercised ({empty} empty, {other} other)");
}

/// One proof of each kind against the 50-key tree, with the key it is for.
fn sample_proofs() -> (Hash, Vec<(StateKey, StateProof)>) {
    let (tree, root, map) = tree(50);
    let mut out = vec![];
    let present = map.keys().next().unwrap().clone();
    out.push((present.clone(), prove(&tree, &present).unwrap()));
    let mut kinds = (false, false);
    for i in 0.. {
        let absent = key("land", &format!("absent/{i}"));
        let proof = prove(&tree, &absent).unwrap();
        let is_empty = proof.leaf == ProofLeaf::Empty;
        if (is_empty && !kinds.0) || (!is_empty && !kinds.1) {
            kinds = (kinds.0 || is_empty, kinds.1 || !is_empty);
            out.push((absent, proof));
        }
        if kinds == (true, true) {
            break;
        }
    }
    (root, out)
}

#[test]
fn every_single_byte_change_to_a_proof_or_root_is_rejected() {
    // Goal: flipping any bit-0 of any byte of the encoded proof, or of the root, makes it fail to
    // decode or to verify; nothing panics.
    let (root, proofs) = sample_proofs();
    for (k, proof) in &proofs {
        let bytes = proof.to_bytes();
        for i in 0..bytes.len() {
            let mutated = flip(&bytes, i);
            let outcome = StateProof::from_bytes(&mutated).and_then(|p| p.verify(&root, k));
            assert!(outcome.is_err(), "byte {i} of the proof for {k:?} changed and it still verifies: {outcome:?}");
        }
        for i in 0..32 {
            let bad_root: Hash = flip(&root, i).try_into().unwrap();
            assert!(proof.verify(&bad_root, k).is_err(), "root byte {i} changed and the proof for {k:?} verifies");
        }
    }
}

#[test]
fn every_change_to_the_claimed_head_is_rejected() {
    // Goal: a membership proof whose head differs in any field or byte does not verify.
    let (root, proofs) = sample_proofs();
    let (k, proof) = &proofs[0];
    let ProofLeaf::Head(real) = proof.leaf else { panic!("first sample is a membership proof") };
    let mut variants = vec![
        Head { version: real.version + 1, ..real },
        Head { index: real.index + 1, ..real },
        Head { status: Status::Revoked, ..real },
    ];
    for i in 0..32 {
        let mut id = real.id;
        id.0[i] ^= 1;
        variants.push(Head { id, ..real });
    }
    for claimed in variants {
        let forged = StateProof { leaf: ProofLeaf::Head(claimed), siblings: proof.siblings.clone() };
        assert!(forged.verify(&root, k).is_err(), "forged head {claimed:?} verifies");
    }
    // A membership proof turned into an absence proof does not verify either.
    let absent = StateProof { leaf: ProofLeaf::Empty, siblings: proof.siblings.clone() };
    assert!(absent.verify(&root, k).is_err());
}

#[test]
fn a_membership_proof_is_for_its_key_only() {
    // Goal: a proof of key A's head verifies for no other key, including keys one byte away.
    let (tree, root, map) = tree(30);
    let keys: Vec<_> = map.keys().cloned().collect();
    for a in &keys {
        let proof = prove(&tree, a).unwrap();
        for b in keys.iter().filter(|b| *b != a) {
            assert!(proof.verify(&root, b).is_err(), "proof for {a:?} verifies for {b:?}");
        }
        for (field, len) in [(0, a.namespace.len()), (1, a.key.len())] {
            for i in 0..len {
                let mut b = a.clone();
                let s = if field == 0 { &mut b.namespace } else { &mut b.key };
                let mut bytes = s.clone().into_bytes();
                bytes[i] ^= 1;
                *s = String::from_utf8(bytes).unwrap();
                assert!(proof.verify(&root, &b).is_err(), "proof for {a:?} verifies for {b:?}");
            }
        }
        // The split between namespace and key is part of the key hash.
        let shifted = key(&format!("{}/", a.namespace), a.key.trim_start_matches('/'));
        assert_ne!(key_hash(&shifted), key_hash(a));
    }
}

#[test]
fn an_absence_proof_never_hides_a_present_key() {
    // Goal: a proof that key A is absent fails for every key that is present, including the
    // neighbour leaf it names.
    let (tree, root, map) = tree(64);
    for i in 0..100 {
        let absent = key("land", &format!("absent/{i}"));
        let proof = prove(&tree, &absent).unwrap();
        for present in map.keys() {
            assert!(proof.verify(&root, present).is_err(), "absence proof for {absent:?} verifies for {present:?}");
        }
    }
}

#[test]
fn neighbour_must_share_the_path() {
    // Goal: an absence proof naming a neighbour leaf that could not sit on the key's path is refused.
    let (tree, root, _) = tree(50);
    for i in 0.. {
        let absent = key("land", &format!("absent/{i}"));
        let proof = prove(&tree, &absent).unwrap();
        let ProofLeaf::Other { key_hash: neighbour, value_hash } = proof.leaf else { continue };
        let mut far = neighbour;
        far[0] ^= 0x80; // differs from the key in the first bit, or equals it there and the neighbour does not
        let target = key_hash(&absent);
        let far = if far[0] & 0x80 == target[0] & 0x80 { neighbour } else { far };
        let forged =
            StateProof { leaf: ProofLeaf::Other { key_hash: far, value_hash }, siblings: proof.siblings.clone() };
        if far != neighbour {
            assert!(matches!(forged.verify(&root, &absent), Err(Error::StateProofNeighbour { .. })));
        }
        let same = StateProof { leaf: ProofLeaf::Other { key_hash: target, value_hash }, siblings: proof.siblings };
        assert!(matches!(same.verify(&root, &absent), Err(Error::StateProofNeighbour { .. })));
        break;
    }
}

#[test]
fn hostile_proofs_are_refused_without_panicking() {
    // Goal: over-long input, trailing bytes, 257 siblings and garbage are errors, never panics.
    let (root, proofs) = sample_proofs();
    let (k, proof) = &proofs[0];
    let bytes = proof.to_bytes();
    assert!(matches!(StateProof::from_bytes(&[bytes.clone(), vec![0]].concat()), Err(Error::TrailingBytes { .. })));
    assert!(matches!(StateProof::from_bytes(&vec![1u8; PROOF_BYTES_MAX + 1]), Err(Error::TooLong { .. })));
    assert!(StateProof::from_bytes(&[]).is_err());
    for len in 0..bytes.len() {
        assert!(StateProof::from_bytes(&bytes[..len]).is_err(), "a {len}-byte prefix decodes");
    }
    let deepest = StateProof { leaf: ProofLeaf::Empty, siblings: vec![[7; 32]; PROOF_SIBLINGS_MAX] };
    let encoded = deepest.to_bytes();
    assert!(encoded.len() <= PROOF_BYTES_MAX);
    assert_eq!(StateProof::from_bytes(&encoded).unwrap(), deepest);
    assert!(deepest.verify(&root, k).is_err());
    let too_deep = StateProof { leaf: ProofLeaf::Empty, siblings: vec![[7; 32]; PROOF_SIBLINGS_MAX + 1] };
    assert!(matches!(too_deep.verify(&root, k), Err(Error::StateProofTooLong { siblings: 257, .. })));
    assert!(StateProof::from_bytes(&too_deep.to_bytes()).is_err());
    // A length prefix promising 2^60 siblings is refused before anything is allocated.
    let mut huge = vec![1u8, 0, 0, 0, 0];
    huge.extend_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(StateProof::from_bytes(&huge).is_err());
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..2000 {
        let len = rng.gen_range(0..300);
        let garbage: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if let Ok(p) = StateProof::from_bytes(&garbage) {
            let _ = p.verify(&root, k);
        }
    }
}

#[test]
fn incremental_blocks_give_the_root_of_the_final_map_in_any_order() {
    // Goal: publishing, amending and revoking over many blocks, in any order of keys across
    // blocks, ends at the root of the final map built from nothing.
    for seed in 0..8u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Each key's version chain: 1 = publish, then amends, maybe a final revoke.
        let mut events: Vec<(StateKey, Head)> = vec![];
        for i in 0..150u64 {
            let k = key(["land", "companies", "courts"][i as usize % 3], &format!("k/{i}"));
            let versions = rng.gen_range(1..=4u64);
            for v in 1..=versions {
                let status = if v == versions && rng.gen_bool(0.3) { Status::Revoked } else { Status::Active };
                events.push((k.clone(), head(i, v, status)));
            }
        }
        let mut expected = BTreeMap::new();
        for (k, h) in &events {
            expected.insert(k.clone(), *h);
        }
        let want = root_of(&expected);
        // Blocks must keep each key's versions in order; shuffle keys, then cut into random blocks.
        for attempt in 0..3 {
            let mut order: Vec<usize> = (0..events.len()).collect();
            order.shuffle(&mut rng);
            let mut taken: BTreeMap<StateKey, u64> = BTreeMap::new();
            let mut sequence = vec![];
            for idx in order {
                let (k, _) = &events[idx];
                let next = taken.get(k).copied().unwrap_or(0) + 1;
                let h = events.iter().find(|(ek, eh)| ek == k && eh.version == next).unwrap();
                taken.insert(k.clone(), next);
                sequence.push(h.clone());
            }
            let mut tree = MemoryTree::default();
            let mut so_far = BTreeMap::new();
            let mut rest = &sequence[..];
            while !rest.is_empty() {
                let n = rng.gen_range(1..=rest.len().min(40));
                let block: BTreeMap<StateKey, Head> = rest[..n].iter().cloned().collect();
                let root = apply(&mut tree, &block);
                so_far.extend(block.clone());
                assert_eq!(root, root_of(&so_far), "seed {seed} attempt {attempt}: root after a block");
                // The tip proves what the block wrote.
                for (k, h) in &block {
                    assert_eq!(prove(&tree, k).unwrap().verify(&root, k).unwrap(), Some(*h));
                }
                rest = &rest[n..];
            }
            assert_eq!(
                tree.root(),
                want,
                "seed {seed} attempt {attempt}: incremental root differs from the final map's"
            );
            assert_eq!(tree.levels().depth(), depth_for(expected.len() as u64), "the levels grew with the keys");
        }
    }
}

#[test]
fn same_block_same_bytes() {
    // Goal: an update is deterministic (same inputs, same root, leaves and positions), writes one
    // leaf per changed key and leaves the tree it read untouched.
    let (tree, root, _) = tree(100);
    let block: BTreeMap<_, _> =
        (90..120).map(|i| (key("land", &format!("parcel/{i}")), head(i, 2, Status::Revoked))).collect();
    let before = tree.levels().clone();
    let a = update(&tree, &block).unwrap();
    let b = update(&tree, &block).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.leaves.len(), block.len());
    assert_eq!((a.base_root, a.leaf_count), (root, 120));
    assert!(a.slots.iter().any(|s| s.depth == 0), "the root position changes");
    assert_eq!((tree.levels(), tree.root()), (&before, root), "update wrote nothing");
}

/// Leaves in memory, counting what an update or a proof reads.
struct Counting<'a> {
    tree: &'a MemoryTree,
    scans: Cell<usize>,
    leaves_read: Cell<usize>,
}

impl LeafReader for Counting<'_> {
    fn leaves_in(&self, from: &Hash, to_inclusive: &Hash) -> Result<Vec<(Hash, Head)>, Error> {
        let leaves = self.tree.leaves_in(from, to_inclusive)?;
        self.scans.set(self.scans.get() + 1);
        self.leaves_read.set(self.leaves_read.get() + leaves.len());
        Ok(leaves)
    }
    fn leaf(&self, key_hash: &Hash) -> Result<Option<Head>, Error> {
        self.tree.leaf(key_hash)
    }
}

impl StateTreeReader for Counting<'_> {
    fn levels(&self) -> &Levels {
        self.tree.levels()
    }
}

#[test]
fn an_update_reads_only_the_bottom_subtrees_it_changes() {
    // Goal: changing k keys in a tree of n scans at most k bottom subtrees of 2–4 leaves on
    // average (one range read each), not the tree; a proof scans one.
    let (tree, _, _) = tree(4096);
    assert_eq!(tree.levels().depth(), 11, "4096 keys: 2048 bottom subtrees of 2 on average");
    let reader = Counting { tree: &tree, scans: Cell::new(0), leaves_read: Cell::new(0) };
    let one = BTreeMap::from([(key("land", "parcel/7"), head(7, 2, Status::Active))]);
    update(&reader, &one).unwrap();
    assert_eq!(reader.scans.get(), 1);
    assert!(reader.leaves_read.get() <= 16, "one change read {} leaves", reader.leaves_read.get());
    reader.leaves_read.set(0);
    let many: BTreeMap<_, _> =
        (0..64).map(|i| (key("land", &format!("new/{i}")), head(i, 1, Status::Active))).collect();
    update(&reader, &many).unwrap();
    assert!(reader.scans.get() <= 65, "64 changes made {} scans", reader.scans.get() - 1);
    assert!(reader.leaves_read.get() <= 64 * 12, "64 changes read {} leaves", reader.leaves_read.get());
    reader.scans.set(0);
    prove(&reader, &key("land", "parcel/9")).unwrap();
    assert_eq!(reader.scans.get(), 1, "a proof scans one subtree");
}

#[test]
fn a_prefetch_answers_heads_and_the_update_without_reading_again() {
    // Goal: a block's keys are read once, one scan per bottom subtree they fall in; the
    // heads come from that read, and the update made from it reads nothing more and
    // gives the root a plain update gives. A subtree the prefetch lacks is read then.
    let (tree, _, map) = tree(4096);
    let reader = Counting { tree: &tree, scans: Cell::new(0), leaves_read: Cell::new(0) };
    let mut block: BTreeMap<StateKey, Head> =
        (0..200).map(|i| (key("land", &format!("new/{i}")), head(10_000 + i, 1, Status::Active))).collect();
    for i in (0..4096).step_by(37) {
        block.insert(key("land", &format!("parcel/{i}")), head(i, 2, Status::Active));
    }
    let hashes: Vec<Hash> = block.keys().map(key_hash).collect();
    let prefetch = Prefetch::read(&reader, &hashes).unwrap();
    let position = |h: &Hash| (u32::from_be_bytes(h[..4].try_into().unwrap()) >> (32 - tree.levels().depth())) as usize;
    let mut subtrees: Vec<usize> = hashes.iter().map(position).collect();
    subtrees.sort_unstable();
    subtrees.dedup();
    assert!(reader.scans.get() <= subtrees.len(), "{} scans for {} subtrees", reader.scans.get(), subtrees.len());
    for (k, h) in block.keys().zip(&hashes) {
        assert_eq!(prefetch.head(h), Some(map.get(k).copied()), "{k:?}");
    }
    let elsewhere = (0..).map(|i| key_hash(&key("land", &format!("elsewhere/{i}"))));
    let outside = elsewhere.clone().find(|h| subtrees.binary_search(&position(h)).is_err()).unwrap();
    assert_eq!(prefetch.head(&outside), None, "a subtree not read is not taken for empty");
    let inside_absent = elsewhere.clone().find(|h| subtrees.binary_search(&position(h)).is_ok()).unwrap();
    assert_eq!(prefetch.head(&inside_absent), Some(None), "an absent key of a subtree read is known absent");
    let scans = reader.scans.get();
    let mut leaves: Vec<(Hash, Head)> = block.iter().map(|(k, h)| (key_hash(k), *h)).collect();
    leaves.sort_unstable_by_key(|l| l.0);
    let plain = update(&tree, &block).unwrap();
    let prefetched = update_prefetched(&reader, &prefetch, leaves.clone()).unwrap();
    assert_eq!(reader.scans.get(), scans, "the update read again");
    assert_eq!(prefetched, plain);
    // A prefetch of half the keys: the other half's subtrees are read by the update.
    let half = Prefetch::read(&tree, &hashes[..100]).unwrap();
    assert_eq!(update_prefetched(&reader, &half, leaves).unwrap(), plain);
    assert!(reader.scans.get() > scans, "the missing subtrees were read");
}

#[test]
fn levels_grow_as_keys_double_and_rebuild_to_the_same_root() {
    // Goal: as keys are added block by block the levels deepen (one level per doubling), every
    // root equals the from-scratch root, and levels rebuilt from the leaves alone have the depth
    // and root of the levels kept up to date by updates (the unit tests compare every position).
    let mut tree = MemoryTree::default();
    let mut all = BTreeMap::new();
    let mut depths = vec![];
    for b in 0..40u64 {
        let block: BTreeMap<_, _> =
            (b * 50..b * 50 + 50).map(|i| (key("land", &format!("grow/{i}")), head(i, 1, Status::Active))).collect();
        all.extend(block.clone());
        assert_eq!(apply(&mut tree, &block), root_of(&all), "block {b}");
        depths.push(tree.levels().depth());
        let rebuilt = Levels::build(&tree.leaves, all.len() as u64).unwrap();
        let (kept, n) = (tree.levels(), all.len() as u64);
        assert_eq!((kept.root(), kept.depth(), kept.leaf_count()), (rebuilt.root(), rebuilt.depth(), n), "block {b}");
        // The next level as far as it is due; only the block that deepened the levels starts it late.
        if kept.grown() == rebuilt.grown() {
            assert_eq!(kept, &rebuilt, "block {b}: rebuilt levels differ");
        } else {
            assert_eq!(kept.grown(), 0, "block {b}: behind only just after deepening");
        }
    }
    assert_eq!(depths.first(), Some(&depth_for(50)));
    assert_eq!(depths.last(), Some(&depth_for(2000)));
    assert!(depths.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1), "depths {depths:?}");
    // 2^(D+1) positions of 33 bytes with 2 to 4 keys under each of the 2^D deepest, and the
    // next level as far as it has grown: at most 44 bytes a key.
    let bytes = tree.levels().memory_bytes();
    assert!(bytes <= 2000 * 44, "{bytes} bytes of levels for 2000 keys");
    // Overwrites never deepen the levels.
    let depth = tree.levels().depth();
    let amend: BTreeMap<_, _> = all.keys().take(500).map(|k| (k.clone(), head(9, 2, Status::Revoked))).collect();
    apply(&mut tree, &amend);
    all.extend(amend);
    assert_eq!((tree.root(), tree.levels().depth()), (root_of(&all), depth));
}

#[test]
fn leaves_that_disagree_with_the_levels_are_an_error() {
    // Goal: a leaf missing under the levels, or a count of leaves that is wrong, is reported
    // (naming where), never turned into a proof that does not verify or a wrong root.
    let (mut broken, _, map) = tree(300);
    let k = map.keys().nth(17).unwrap();
    broken.leaves.remove(&key_hash(k));
    assert!(matches!(prove(&broken, k), Err(Error::StateLeavesDisagree { .. })));
    assert!(matches!(Levels::build(&broken.leaves, 300), Err(Error::StateLeavesDisagree { .. })));
    // With one or two keys the root is the one bottom subtree: losing a leaf changes its fill.
    for n in [1, 2] {
        let (mut tree, _, map) = tree(n);
        tree.leaves.remove(&key_hash(map.keys().next().unwrap()));
        let change = BTreeMap::from([(key("land", "other"), head(1, 1, Status::Active))]);
        assert!(matches!(update(&tree, &change), Err(Error::StateLeavesDisagree { depth: 0, .. })), "{n} keys");
    }
}

#[test]
fn a_head_is_53_bytes() {
    // Goal: the stored leaf value is the 53-byte canonical head that docs/PROOFS.md lays out.
    assert_eq!(encode_head(&head(1, 1, Status::Active)).len(), 53);
}
