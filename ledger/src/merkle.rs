//! The RFC 6962 Merkle log: hashing, roots, inclusion and consistency proofs.
//!
//! Every accepted record is one leaf of a single append-only Merkle tree; the
//! leaf index is the record's global sequence number.
//!
//! # Hashing (RFC 6962 §2.1, unchanged in RFC 9162 §2.1.1)
//!
//! - A leaf is `SHA-256(0x00 || data)` ([`leaf_hash`]); an interior node is
//!   `SHA-256(0x01 || left || right)` ([`node_hash`]). The two prefixes keep a
//!   leaf from ever being passed off as an interior node.
//! - The Merkle Tree Hash of n leaf hashes ([`root`]): for n = 0 it is
//!   `SHA-256("")` ([`empty_root`]); for n = 1 the leaf hash itself; otherwise,
//!   with k the largest power of two below n, `node_hash(MTH(first k),
//!   MTH(the rest))`. The left part is therefore always a perfect tree: only
//!   the right edge of a tree can be ragged.
//!
//! # Node addressing
//!
//! The node `(level L, index i)` is the perfect subtree over the leaves
//! `[i·2^L, (i+1)·2^L)`; level 0 holds the leaf hashes. In a tree of n leaves
//! the node is *complete* when `(i+1)·2^L ≤ n`. A complete node never changes
//! as the log grows, so the store keeps exactly the complete nodes (2n −
//! popcount(n) of them), and [`Frontier::append`] emits each one the moment it
//! completes.
//!
//! Seen this way, the RFC 6962 tree of n leaves is a perfect tree of height
//! ⌈log2 n⌉ cut off at n: a node with nothing on its right passes its left
//! child's hash up unchanged, and a node cut short by n (one on the right
//! edge) hashes as the right fold of the complete nodes that tile its range,
//! one per set bit of its width. [`root_at`] is that fold over `[0, n)`.
//!
//! # Why generation reads O(log n) nodes
//!
//! [`root_at`] reads popcount(n) ≤ 64 nodes. An inclusion path has at most one
//! hash per level, so at most ⌈log2 n⌉ hashes. A sibling left of the path is
//! complete: one read. A sibling right of the path is complete too, except at
//! the one level where the path leaves the right edge of the tree; that
//! sibling is folded from at most ⌈log2 n⌉ complete nodes. An inclusion proof
//! therefore costs at most 2·⌈log2 n⌉ reads, and a consistency proof (the path
//! of the old tree's last complete node, plus that node) at most one more.
//! Nothing here ever walks the leaves.
//!
//! # Verification
//!
//! [`verify_inclusion`] and [`verify_consistency`] follow RFC 9162 §2.1.3.2
//! and §2.1.4.2. They check the path length before hashing, so a proof of the
//! wrong length is reported as such, and every failure is a [`MerkleError`]:
//! they do not panic or overflow on any input.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, an interior node or a root.
pub type Hash = [u8; 32];

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is out of range for a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("inclusion path has {got} hashes; index {index} in a tree of {size} needs {want}")]
    InclusionPathLength { index: u64, size: u64, got: usize, want: usize },
    #[error(
        "inclusion path for index {index} in a tree of {size} leads to root {}, expected {}",
        hex::encode(.computed),
        hex::encode(.expected)
    )]
    InclusionRootMismatch { index: u64, size: u64, computed: Hash, expected: Hash },
    #[error("consistency from size {size1} to size {size2}: the first tree is larger than the second")]
    SizesOutOfOrder { size1: u64, size2: u64 },
    #[error("consistency path has {got} hashes; from size {size1} to size {size2} needs {want}")]
    ConsistencyPathLength { size1: u64, size2: u64, got: usize, want: usize },
    #[error(
        "consistency path from size {size1} to size {size2} gives first root {}, expected {}",
        hex::encode(.computed),
        hex::encode(.expected)
    )]
    FirstRootMismatch { size1: u64, size2: u64, computed: Hash, expected: Hash },
    #[error(
        "consistency path from size {size1} to size {size2} gives second root {}, expected {}",
        hex::encode(.computed),
        hex::encode(.expected)
    )]
    SecondRootMismatch { size1: u64, size2: u64, computed: Hash, expected: Hash },
    #[error(
        "two trees of {size} leaves have different roots {} and {}",
        hex::encode(.root1),
        hex::encode(.root2)
    )]
    EqualSizeRootsDiffer { size: u64, root1: Hash, root2: Hash },
}

/// Why a proof, root or frontier could not be generated from stored nodes.
#[derive(Debug, thiserror::Error)]
pub enum ProofGenError<E> {
    #[error("cannot prove leaf {index}: the tree has {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("cannot prove consistency from size {size1} to size {size2}: the first tree is larger")]
    SizesOutOfOrder { size1: u64, size2: u64 },
    #[error("log node at level {level}, index {index} could not be read")]
    Read {
        level: u8,
        index: u64,
        #[source]
        source: E,
    },
}

/// Read access to stored complete nodes (see the module docs for addressing).
pub trait NodeReader {
    type Error;
    /// The hash of the complete node covering leaves `[index·2^level, (index+1)·2^level)`.
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// `SHA-256(0x00 || data)`: the hash of a leaf holding `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// `SHA-256("")`: the root of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The RFC 6962 Merkle Tree Hash of `leaves` (leaf hashes), computed from the
/// definition. Recursion depth is ⌈log2 n⌉.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [only] => *only,
        _ => {
            let k = split_point(leaves.len() as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly below `n`; `n ≥ 2`.
fn split_point(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// ⌈log2 size⌉: the level of the root of a tree of `size` leaves.
fn height(size: u64) -> u32 {
    if size <= 1 {
        0
    } else {
        64 - (size - 1).leading_zeros()
    }
}

/// How many hashes the path has from the node at `level` that holds leaf
/// `leaf` up to the root of a tree of `size` leaves (`leaf < size`).
///
/// Below the level where the paths to `leaf` and to the last leaf meet, every
/// sibling is non-empty; above it, only siblings on the left exist (one per
/// set bit of `leaf` there).
fn path_len(leaf: u64, level: u32, size: u64) -> usize {
    let meet = 64 - (leaf ^ (size - 1)).leading_zeros();
    let below = meet.saturating_sub(level);
    let above = leaf.checked_shr(meet.max(level)).unwrap_or(0).count_ones();
    (below + above) as usize
}

/// Number of hashes in a consistency proof from `size1` to `size2` (`size1 ≤ size2`).
fn consistency_len(size1: u64, size2: u64) -> usize {
    if size1 == 0 || size1 == size2 {
        return 0;
    }
    let level = size1.trailing_zeros();
    let own = usize::from(!size1.is_power_of_two());
    own + path_len(size1 - 1, level, size2)
}

/// The hash of the leaf at `index` in a tree of `size` leaves, folded up
/// through `proof` (RFC 9162 §2.1.3.2). Compare it with a trusted root, or use
/// [`verify_inclusion`].
pub fn root_from_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash]) -> Result<Hash, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let length_error =
        || MerkleError::InclusionPathLength { index, size, got: proof.len(), want: path_len(index, 0, size) };
    if proof.len() != path_len(index, 0, size) {
        return Err(length_error());
    }
    // RFC 9162 names these fn and sn: the node on the path and the last node,
    // at the current level.
    let (mut node, mut last) = (index, size - 1);
    let mut acc = *leaf;
    for p in proof {
        if last == 0 {
            return Err(length_error());
        }
        if node & 1 == 1 || node == last {
            acc = node_hash(p, &acc);
            while node & 1 == 0 && node != 0 {
                node >>= 1;
                last >>= 1;
            }
        } else {
            acc = node_hash(&acc, p);
        }
        node >>= 1;
        last >>= 1;
    }
    if last != 0 {
        return Err(length_error());
    }
    Ok(acc)
}

/// Checks that `leaf` is the leaf at `index` of the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), MerkleError> {
    let computed = root_from_inclusion(leaf, index, size, proof)?;
    if computed != *root {
        return Err(MerkleError::InclusionRootMismatch { index, size, computed, expected: *root });
    }
    Ok(())
}

/// Checks that the tree of `size1` leaves with root `root1` is a prefix of the
/// tree of `size2` leaves with root `root2` (RFC 9162 §2.1.4.2).
///
/// Every tree extends the empty one, so from `size1 = 0` the proof is empty
/// and `root1` must be [`empty_root`].
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), MerkleError> {
    if size1 > size2 {
        return Err(MerkleError::SizesOutOfOrder { size1, size2 });
    }
    let want = consistency_len(size1, size2);
    let length_error = || MerkleError::ConsistencyPathLength { size1, size2, got: proof.len(), want };
    if proof.len() != want {
        return Err(length_error());
    }
    if size1 == 0 && *root1 != empty_root() {
        return Err(MerkleError::FirstRootMismatch { size1, size2, computed: empty_root(), expected: *root1 });
    }
    if size1 == size2 {
        if root1 != root2 {
            return Err(MerkleError::EqualSizeRootsDiffer { size: size1, root1: *root1, root2: *root2 });
        }
        return Ok(());
    }
    if size1 == 0 {
        return Ok(());
    }
    // The path starts at the old tree's last complete node: given in the proof,
    // or the old root itself when size1 is a power of two.
    let (seed, rest) =
        if size1.is_power_of_two() { (root1, proof) } else { proof.split_first().ok_or_else(length_error)? };
    let (mut node, mut last) = (size1 - 1, size2 - 1);
    while node & 1 == 1 {
        node >>= 1;
        last >>= 1;
    }
    let (mut first, mut second) = (*seed, *seed);
    for c in rest {
        if last == 0 {
            return Err(length_error());
        }
        if node & 1 == 1 || node == last {
            first = node_hash(c, &first);
            second = node_hash(c, &second);
            while node & 1 == 0 && node != 0 {
                node >>= 1;
                last >>= 1;
            }
        } else {
            second = node_hash(&second, c);
        }
        node >>= 1;
        last >>= 1;
    }
    if last != 0 {
        return Err(length_error());
    }
    if first != *root1 {
        return Err(MerkleError::FirstRootMismatch { size1, size2, computed: first, expected: *root1 });
    }
    if second != *root2 {
        return Err(MerkleError::SecondRootMismatch { size1, size2, computed: second, expected: *root2 });
    }
    Ok(())
}

fn read<R: NodeReader>(r: &R, level: u32, index: u64) -> Result<Hash, ProofGenError<R::Error>> {
    // Levels come from bit positions of a u64, so they are below 64.
    let level = level as u8;
    r.node(level, index).map_err(|source| ProofGenError::Read { level, index, source })
}

/// The hash of the leaves `[start, start + width)`, `width ≥ 1`, where `start`
/// is a multiple of the power of two at or above `width`: the right fold of
/// the complete nodes tiling the range, one per set bit of `width`.
fn range_hash<R: NodeReader>(r: &R, start: u64, width: u64) -> Result<Hash, ProofGenError<R::Error>> {
    // Take set bits lowest first, i.e. nodes right to left; after clearing a
    // bit, `rest` is the width of the nodes still to its left.
    let mut rest = width;
    let mut acc: Option<Hash> = None;
    while rest != 0 {
        let level = rest.trailing_zeros();
        rest &= rest - 1;
        let hash = read(r, level, (start + rest) >> level)?;
        acc = Some(match acc {
            None => hash,
            Some(right) => node_hash(&hash, &right),
        });
    }
    Ok(acc.unwrap_or_else(empty_root))
}

/// Appends to `out` the siblings on the path from the node at `level` holding
/// leaf `leaf` to the root of a tree of `size` leaves.
fn push_path<R: NodeReader>(
    r: &R,
    leaf: u64,
    level: u32,
    size: u64,
    out: &mut Vec<Hash>,
) -> Result<(), ProofGenError<R::Error>> {
    for level in level..height(size) {
        // `leaf >> level` is below 2^(64-level), and so is its sibling: no overflow.
        let start = ((leaf >> level) ^ 1) << level;
        if start >= size {
            continue; // nothing on the right: the node passes its hash up unchanged
        }
        let width = (size - start).min(1 << level);
        out.push(range_hash(r, start, width)?);
    }
    Ok(())
}

/// The inclusion proof for the leaf at `index` in the tree of `size` leaves.
pub fn inclusion_proof<R: NodeReader>(r: &R, index: u64, size: u64) -> Result<Vec<Hash>, ProofGenError<R::Error>> {
    if index >= size {
        return Err(ProofGenError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::with_capacity(path_len(index, 0, size));
    push_path(r, index, 0, size, &mut proof)?;
    Ok(proof)
}

/// The consistency proof from the tree of `size1` leaves to the tree of
/// `size2` leaves (RFC 9162 §2.1.4.1; empty when `size1` is 0 or `size2`).
pub fn consistency_proof<R: NodeReader>(r: &R, size1: u64, size2: u64) -> Result<Vec<Hash>, ProofGenError<R::Error>> {
    if size1 > size2 {
        return Err(ProofGenError::SizesOutOfOrder { size1, size2 });
    }
    let mut proof = Vec::with_capacity(consistency_len(size1, size2));
    if size1 == 0 || size1 == size2 {
        return Ok(proof);
    }
    // The old tree's last complete node: [size1 - 2^level, size1).
    let level = size1.trailing_zeros();
    let index = (size1 - 1) >> level;
    if index != 0 {
        proof.push(read(r, level, index)?);
    }
    push_path(r, size1 - 1, level, size2, &mut proof)?;
    Ok(proof)
}

/// The root of the tree of the first `size` leaves, from popcount(size) stored nodes.
pub fn root_at<R: NodeReader>(r: &R, size: u64) -> Result<Hash, ProofGenError<R::Error>> {
    range_hash(r, 0, size)
}

/// The right edge of the log: the roots of the perfect subtrees that tile
/// `[0, size)`, largest (leftmost) first, one per set bit of `size`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the frontier of the first `size` leaves from popcount(size) stored nodes.
    pub fn from_reader<R: NodeReader>(r: &R, size: u64) -> Result<Self, ProofGenError<R::Error>> {
        let mut hashes = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0;
        for level in (0..64).rev() {
            if (size >> level) & 1 == 1 {
                hashes.push(read(r, level, start >> level)?);
                start += 1 << level;
            }
        }
        Ok(Self { size, hashes })
    }

    /// The number of leaves appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The RFC 6962 root of everything appended.
    pub fn root(&self) -> Hash {
        let mut it = self.hashes.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(last) => it.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }

    /// Appends the leaf hash `leaf` and pushes onto `out`, as `(level, index,
    /// hash)`, every node this completes: the leaf itself, then each parent up.
    ///
    /// # Panics
    /// If the log already has `u64::MAX` leaves.
    pub fn append(&mut self, leaf: Hash, out: &mut Vec<(u8, u64, Hash)>) {
        let index = self.size;
        assert!(index < u64::MAX, "the log is full: it has {index} leaves");
        out.push((0, index, leaf));
        let mut acc = leaf;
        let mut level = 0u32;
        // Each trailing one bit of `index` is a perfect subtree that the new
        // leaf completes into one twice as large.
        while (index >> level) & 1 == 1 {
            let left = self.hashes.pop().expect("a frontier holds one hash per set bit of its size");
            acc = node_hash(&left, &acc);
            level += 1;
            out.push((level as u8, index >> level, acc));
        }
        self.hashes.push(acc);
        self.size += 1;
    }
}

/// An in-memory [`NodeReader`], filled from [`Frontier::append`]'s output.
#[derive(Clone, Debug, Default)]
pub struct MemoryNodes {
    nodes: HashMap<(u8, u64), Hash>,
}

/// [`MemoryNodes`] has no node at this address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no log node is stored at level {level}, index {index}")]
pub struct MissingNode {
    pub level: u8,
    pub index: u64,
}

impl MemoryNodes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every complete node of the tree over `leaves` (leaf hashes).
    pub fn from_leaves(leaves: &[Hash]) -> Self {
        let mut frontier = Frontier::new();
        let mut out = Vec::with_capacity(2 * leaves.len());
        for leaf in leaves {
            frontier.append(*leaf, &mut out);
        }
        let mut nodes = Self::new();
        nodes.extend(out);
        nodes
    }

    pub fn insert(&mut self, level: u8, index: u64, hash: Hash) {
        self.nodes.insert((level, index), hash);
    }

    /// The number of nodes stored.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl Extend<(u8, u64, Hash)> for MemoryNodes {
    fn extend<I: IntoIterator<Item = (u8, u64, Hash)>>(&mut self, nodes: I) {
        for (level, index, hash) in nodes {
            self.insert(level, index, hash);
        }
    }
}

impl NodeReader for MemoryNodes {
    type Error = MissingNode;

    fn node(&self, level: u8, index: u64) -> Result<Hash, MissingNode> {
        self.nodes.get(&(level, index)).copied().ok_or(MissingNode { level, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A reader that counts its reads.
    struct Counting<'a> {
        inner: &'a MemoryNodes,
        reads: Cell<usize>,
    }

    impl<'a> Counting<'a> {
        fn new(inner: &'a MemoryNodes) -> Self {
            Self { inner, reads: Cell::new(0) }
        }
        /// Reads since the last call.
        fn take(&self) -> usize {
            self.reads.replace(0)
        }
    }

    impl NodeReader for Counting<'_> {
        type Error = MissingNode;
        fn node(&self, level: u8, index: u64) -> Result<Hash, MissingNode> {
            self.reads.set(self.reads.get() + 1);
            self.inner.node(level, index)
        }
    }

    fn read_bound(size: u64) -> usize {
        2 * height(size) as usize + 2
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    /// The eight RFC 6962 test leaves.
    fn rfc6962_leaves() -> Vec<Hash> {
        let data: [&[u8]; 8] = [
            b"",
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f],
        ];
        data.iter().map(|d| leaf_hash(d)).collect()
    }

    #[test]
    fn rfc6962_roots_match_published_values() {
        // Goal: hashing and MTH reproduce the roots published for the RFC 6962 test leaves.
        let want = [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let leaves = rfc6962_leaves();
        let nodes = MemoryNodes::from_leaves(&leaves);
        let mut frontier = Frontier::new();
        for (n, want) in want.iter().enumerate() {
            assert_eq!(hex::encode(root(&leaves[..n])), *want, "root of {n}");
            assert_eq!(hex::encode(root_at(&nodes, n as u64).unwrap()), *want, "root_at {n}");
            assert_eq!(hex::encode(frontier.root()), *want, "frontier root {n}");
            if n < leaves.len() {
                frontier.append(leaves[n], &mut Vec::new());
            }
        }
    }

    #[test]
    fn every_proof_of_every_tree_up_to_64_verifies_within_the_read_bound() {
        // Goal: for sizes 0..=64, every generated root, inclusion and consistency
        // proof is right, and each reads at most 2⌈log2 n⌉+2 nodes, all complete at n.
        let all = leaves(64);
        for n in 0..=64u64 {
            let stored = MemoryNodes::from_leaves(&all[..n as usize]);
            let r = Counting::new(&stored);
            let want_root = root(&all[..n as usize]);
            assert_eq!(root_at(&r, n).unwrap(), want_root, "root_at({n})");
            assert!(r.take() <= read_bound(n), "root_at({n}) reads");
            assert_eq!(Frontier::from_reader(&r, n).unwrap().root(), want_root);
            r.take();
            for i in 0..n {
                let proof = inclusion_proof(&r, i, n).unwrap();
                let reads = r.take();
                assert!(reads <= read_bound(n), "inclusion {i} in {n}: {reads} reads");
                verify_inclusion(&all[i as usize], i, n, &proof, &want_root)
                    .unwrap_or_else(|e| panic!("inclusion {i} in {n}: {e}"));
            }
            for m in 0..=n {
                let proof = consistency_proof(&r, m, n).unwrap();
                let reads = r.take();
                assert!(reads <= read_bound(n), "consistency {m}->{n}: {reads} reads");
                let root1 = root(&all[..m as usize]);
                verify_consistency(m, n, &proof, &root1, &want_root)
                    .unwrap_or_else(|e| panic!("consistency {m}->{n}: {e}"));
            }
        }
    }

    #[test]
    fn altered_proofs_are_rejected() {
        // Goal: flipping a bit of any proof hash, or shifting index or sizes, fails verification.
        // (An inclusion path alone does not pin the tree size: the path for leaf 0 of 3
        // also fits leaf 0 of 4. The root does, so a size is always checked with its root.)
        let all = leaves(21);
        for n in 1..=20u64 {
            let stored = MemoryNodes::from_leaves(&all[..n as usize]);
            let root_n = root(&all[..n as usize]);
            let root_next = root(&all[..n as usize + 1]);
            for i in 0..n {
                let proof = inclusion_proof(&stored, i, n).unwrap();
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[k][k % 32] ^= 1;
                    let err = verify_inclusion(&all[i as usize], i, n, &bad, &root_n);
                    assert!(matches!(err, Err(MerkleError::InclusionRootMismatch { .. })));
                }
                for (j, m, r) in [(i + 1, n, root_n), (i ^ 1, n, root_n), (i, n + 1, root_next)] {
                    let ok = verify_inclusion(&all[i as usize], j, m, &proof, &r);
                    assert!(ok.is_err(), "index {j} size {m} accepted a proof for {i} in {n}");
                }
            }
            for m in 1..n {
                let proof = consistency_proof(&stored, m, n).unwrap();
                let root_m = root(&all[..m as usize]);
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[k][0] ^= 0x80;
                    assert!(verify_consistency(m, n, &bad, &root_m, &root_n).is_err());
                }
                assert!(verify_consistency(m + 1, n, &proof, &root_m, &root_n).is_err());
                assert!(verify_consistency(m, n + 1, &proof, &root_m, &root_next).is_err());
                assert!(verify_consistency(m, n, &proof, &root_n, &root_m).is_err());
            }
        }
    }

    #[test]
    fn frontier_emits_each_complete_node_once_with_its_hash() {
        // Goal: after n appends the frontier has emitted exactly the 2n − popcount(n)
        // complete nodes, each once, each with the hash of the leaves it covers.
        let all = leaves(100);
        let mut frontier = Frontier::new();
        let mut out = Vec::new();
        for (n, leaf) in all.iter().enumerate() {
            frontier.append(*leaf, &mut out);
            let n = n as u64 + 1;
            assert_eq!(frontier.size(), n);
            assert_eq!(frontier.root(), root(&all[..n as usize]));
            assert_eq!(out.len() as u64, 2 * n - u64::from(n.count_ones()));
        }
        let mut seen = std::collections::HashSet::new();
        for &(level, index, hash) in &out {
            assert!(seen.insert((level, index)), "({level}, {index}) emitted twice");
            let (start, end) = ((index << level) as usize, ((index + 1) << level) as usize);
            assert!(end <= all.len());
            assert_eq!(hash, root(&all[start..end]), "({level}, {index})");
        }
        let stored = MemoryNodes::from_leaves(&all);
        assert_eq!(Frontier::from_reader(&stored, 100).unwrap(), frontier);
    }

    #[test]
    fn extreme_inputs_are_errors_not_panics() {
        // Goal: u64::MAX sizes and indices, zero sizes and missing nodes give errors.
        let h = leaf_hash(b"x");
        let max = u64::MAX;
        assert_eq!(
            verify_inclusion(&h, max, max, &[], &h),
            Err(MerkleError::IndexOutOfRange { index: max, size: max })
        );
        assert_eq!(verify_inclusion(&h, 0, 0, &[], &h), Err(MerkleError::IndexOutOfRange { index: 0, size: 0 }));
        for index in [0, 1, max / 2, max - 2, max - 1] {
            let want = path_len(index, 0, max);
            assert!(want <= 64);
            let err = verify_inclusion(&h, index, max, &[], &h).unwrap_err();
            if want != 0 {
                assert!(matches!(err, MerkleError::InclusionPathLength { got: 0, .. }));
            }
            let full = vec![h; want];
            let err = verify_inclusion(&h, index, max, &full, &h).unwrap_err();
            assert!(matches!(err, MerkleError::InclusionRootMismatch { .. }), "{err}");
            assert!(verify_inclusion(&h, index, max, &vec![h; 65], &h).is_err());
        }
        for (size1, size2) in [(1, max), (max - 1, max), (max, max), (max / 2, max), (max, 1)] {
            for len in [0, 1, 63, 64, 65, 128] {
                if (size1, size2, len) != (max, max, 0) {
                    assert!(verify_consistency(size1, size2, &vec![h; len], &h, &h).is_err());
                }
            }
        }
        assert_eq!(verify_consistency(max, max, &[], &h, &h), Ok(()), "equal sizes and roots with an empty proof");
        let empty = MemoryNodes::new();
        for result in [
            inclusion_proof(&empty, max - 1, max),
            consistency_proof(&empty, max - 1, max),
            consistency_proof(&empty, 1, max),
        ] {
            assert!(matches!(result, Err(ProofGenError::Read { .. })));
        }
        assert!(matches!(root_at(&empty, max), Err(ProofGenError::Read { .. })));
        assert!(matches!(Frontier::from_reader(&empty, max), Err(ProofGenError::Read { .. })));
        assert!(matches!(inclusion_proof(&empty, max, max), Err(ProofGenError::IndexOutOfRange { .. })));
        assert!(matches!(consistency_proof(&empty, max, 1), Err(ProofGenError::SizesOutOfOrder { .. })));
        assert_eq!(root_at(&empty, 0).unwrap(), empty_root());
    }

    #[test]
    fn empty_tree_is_a_prefix_of_every_tree_only_with_its_own_root() {
        // Goal: from size 0 the proof must be empty and root1 must be the empty root.
        let all = leaves(3);
        let r3 = root(&all);
        assert_eq!(verify_consistency(0, 3, &[], &empty_root(), &r3), Ok(()));
        assert!(matches!(verify_consistency(0, 3, &[], &r3, &r3), Err(MerkleError::FirstRootMismatch { .. })));
        assert!(matches!(
            verify_consistency(0, 3, &[r3], &empty_root(), &r3),
            Err(MerkleError::ConsistencyPathLength { got: 1, want: 0, .. })
        ));
        assert!(matches!(
            verify_consistency(0, 0, &[], &empty_root(), &r3),
            Err(MerkleError::EqualSizeRootsDiffer { size: 0, .. })
        ));
    }

    #[test]
    fn error_messages_name_the_values() {
        // Goal: errors say what failed, where, and with which values (hex for hashes).
        let all = leaves(5);
        let proof = inclusion_proof(&MemoryNodes::from_leaves(&all), 1, 5).unwrap();
        let msg = verify_inclusion(&all[1], 1, 5, &proof[..2], &root(&all)).unwrap_err().to_string();
        assert_eq!(msg, "inclusion path has 2 hashes; index 1 in a tree of 5 needs 3");
        let wrong = [0xab; 32];
        let msg = verify_inclusion(&all[1], 1, 5, &proof, &wrong).unwrap_err().to_string();
        assert!(msg.contains(&hex::encode(root(&all))), "{msg}");
        assert!(msg.contains(&"ab".repeat(32)), "{msg}");
        assert!(msg.contains("index 1 in a tree of 5"), "{msg}");
        let msg = verify_consistency(6, 2, &[], &wrong, &wrong).unwrap_err().to_string();
        assert!(msg.contains("size 6 to size 2"), "{msg}");
        let err = inclusion_proof(&MemoryNodes::new(), 0, 2).unwrap_err();
        assert_eq!(err.to_string(), "log node at level 0, index 1 could not be read");
        let source = std::error::Error::source(&err).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("no log node is stored at level 0, index 1"));
    }
}
