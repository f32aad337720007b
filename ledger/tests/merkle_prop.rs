//! Our RFC 6962 log against an independent implementation, ct-merkle 0.3
//! (a dev-dependency only): on random trees of up to 10,000 leaves the roots
//! agree at every size, both sides produce the same proofs, and each side's
//! proofs verify under the other's verifier.

use annal_ledger::merkle::{self, Frontier, Hash, MemoryNodes};
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2_v011::Sha256;

type TheirHash = ct_merkle::digest::Output<Sha256>;

/// The same leaves in both implementations.
struct Trees {
    data: Vec<Vec<u8>>,
    nodes: MemoryNodes,
    /// `roots[m]`: the root of the first m leaves, agreed by both (`roots[0]` is the empty root).
    roots: Vec<Hash>,
    theirs: MemoryBackedTree<Sha256, Vec<u8>>,
}

impl Trees {
    /// `n` random leaves of 0–47 bytes from `seed`; checks that the roots
    /// agree after every append.
    fn build(n: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut frontier, mut out) = (Frontier::new(), Vec::new());
        let mut t = Trees {
            data: Vec::with_capacity(n),
            nodes: MemoryNodes::new(),
            roots: vec![merkle::empty_root()],
            theirs: MemoryBackedTree::new(),
        };
        for _ in 0..n {
            let mut data = vec![0u8; rng.gen_range(0..48)];
            rng.fill(&mut data[..]);
            frontier.append(merkle::leaf_hash(&data), &mut out);
            t.theirs.push(data.clone());
            t.data.push(data);
            let root = frontier.root();
            assert_eq!(
                root,
                Hash::from(*t.theirs.root().as_bytes()),
                "seed {seed}: roots differ at size {}",
                frontier.size()
            );
            t.roots.push(root);
        }
        t.nodes.extend(out);
        assert_eq!(merkle::root_at(&t.nodes, n as u64).unwrap(), t.roots[n]);
        t
    }

    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// ct-merkle's view of the root at `size`.
    fn their_root(&self, size: u64) -> RootHash<Sha256> {
        RootHash::new(TheirHash::from(self.roots[size as usize]), size)
    }
}

fn to_theirs(proof: &[Hash]) -> Vec<TheirHash> {
    proof.iter().map(|h| TheirHash::from(*h)).collect()
}

fn from_theirs(bytes: &[u8]) -> Vec<Hash> {
    bytes.chunks(32).map(|c| Hash::try_from(c).expect("ct-merkle proofs are whole 32-byte hashes")).collect()
}

/// Our proof for leaf `index` in the tree of `size` leaves verifies under ct-merkle.
fn ours_verify_under_theirs_inclusion(t: &Trees, index: u64, size: u64) {
    let ours = merkle::inclusion_proof(&t.nodes, index, size).unwrap();
    let proof = InclusionProof::<Sha256>::from_digests(&to_theirs(&ours));
    t.their_root(size)
        .verify_inclusion(&t.data[index as usize], index, &proof)
        .unwrap_or_else(|e| panic!("leaf {index} of {size}: ct-merkle rejects our proof: {e}"));
}

/// Our proof from `size1` to `size2` verifies under ct-merkle (which needs `size1 ≥ 1`).
fn ours_verify_under_theirs_consistency(t: &Trees, size1: u64, size2: u64) {
    let ours = merkle::consistency_proof(&t.nodes, size1, size2).unwrap();
    let proof = ConsistencyProof::<Sha256>::from_digests(&to_theirs(&ours));
    t.their_root(size2)
        .verify_consistency(&t.their_root(size1), &proof)
        .unwrap_or_else(|e| panic!("{size1} -> {size2}: ct-merkle rejects our proof: {e}"));
}

/// ct-merkle's proof for leaf `index` of the whole tree equals ours and verifies under ours.
fn theirs_equal_ours_inclusion(t: &Trees, index: u64) {
    let n = t.size();
    let theirs = from_theirs(t.theirs.prove_inclusion(index as usize).as_bytes());
    let leaf = merkle::leaf_hash(&t.data[index as usize]);
    merkle::verify_inclusion(&leaf, index, n, &theirs, &t.roots[n as usize])
        .unwrap_or_else(|e| panic!("leaf {index} of {n}: we reject ct-merkle's proof: {e}"));
    assert_eq!(merkle::inclusion_proof(&t.nodes, index, n).unwrap(), theirs);
}

/// ct-merkle's proof from `size1` (≥ 1) to the whole tree equals ours and verifies under ours.
fn theirs_equal_ours_consistency(t: &Trees, size1: u64) {
    let n = t.size();
    let theirs = t.theirs.prove_consistency((n - size1) as usize);
    let theirs = from_theirs(theirs.as_bytes());
    let (root1, root2) = (&t.roots[size1 as usize], &t.roots[n as usize]);
    merkle::verify_consistency(size1, n, &theirs, root1, root2)
        .unwrap_or_else(|e| panic!("{size1} -> {n}: we reject ct-merkle's proof: {e}"));
    assert_eq!(merkle::consistency_proof(&t.nodes, size1, n).unwrap(), theirs);
}

/// Tree sizes skewed small, so most cases are cheap but every range is hit.
fn tree_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 1usize..=64,
        3 => 65usize..=1024,
        1 => 1025usize..=10_000,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Failures print the minimal input; no regression file is written.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn agrees_with_ct_merkle_on_random_trees(
        n in tree_size(),
        seed in any::<u64>(),
        picks in prop::collection::vec(any::<u64>(), 8),
    ) {
        // Goal: roots agree at every size; for random leaves and sizes, proofs
        // agree and each side's proofs verify under the other's verifier.
        let t = Trees::build(n, seed);
        let n = n as u64;
        for p in picks {
            // index < size2 ≤ n and 1 ≤ size1 ≤ size2, all drawn from one pick.
            let index = p % n;
            let size2 = index + 1 + (p >> 24) % (n - index);
            let size1 = 1 + (p >> 44) % size2;
            ours_verify_under_theirs_inclusion(&t, index, size2);
            ours_verify_under_theirs_consistency(&t, size1, size2);
            theirs_equal_ours_inclusion(&t, index);
            theirs_equal_ours_consistency(&t, size1);
        }
    }
}

#[test]
fn agrees_with_ct_merkle_on_every_proof_of_a_10000_leaf_tree() {
    // Goal: at exactly 10,000 leaves, every inclusion proof and every consistency
    // proof into the full tree is the same in both implementations and verifies in both.
    let t = Trees::build(10_000, 0x616e6e616c);
    let n = t.size();
    for index in 0..n {
        ours_verify_under_theirs_inclusion(&t, index, n);
        theirs_equal_ours_inclusion(&t, index);
    }
    for size1 in 1..=n {
        ours_verify_under_theirs_consistency(&t, size1, n);
        theirs_equal_ours_consistency(&t, size1);
    }
}
