//! Authenticated record state: the sparse Merkle tree behind `state_root`.
//!
//! `state_root` commits to the map `(namespace, key) → Head` (head record id,
//! version, log index, active | revoked). A [`StateProof`] shows, against the
//! `state_root` of a certified header, either a key's current head or that the
//! key has no record. `docs/PROOFS.md` ("Record state") writes out every byte;
//! ADR 0003 says why the tree is written here rather than taken from a crate.
//!
//! # The tree
//!
//! A binary sparse Merkle tree of depth 256 over `key_hash` (see [`key_hash`]),
//! with the hashing of the Diem / Penumbra jellyfish Merkle tree, so the root of
//! a map here equals the root `jmt` 0.12 computes for the same
//! `(key_hash, value)` pairs:
//!
//! - an empty subtree is [`EMPTY_ROOT`], the 32 ASCII bytes `SPARSE_MERKLE_PLACEHOLDER_HASH__`;
//! - a subtree holding exactly one leaf is that leaf, lifted to the top of the
//!   subtree: `SHA-256("JMT::LeafNode" ‖ key_hash ‖ SHA-256(value))`;
//! - any other subtree is `SHA-256("JMT::IntrnalNode" ‖ left ‖ right)`.
//!
//! Bit `i` of a key hash (most significant bit of byte 0 first) chooses the
//! child at depth `i`: 0 left, 1 right. The value of a leaf is the canonical
//! encoding of the key's [`Head`] (53 bytes).
//!
//! Record state never deletes a key (a revoked key keeps a head with status
//! `Revoked`), so the tree only ever inserts or overwrites leaves.
//!
//! # Storage
//!
//! Nodes are stored by their own hash (content-addressed): the node key is the
//! 32-byte hash, the value is [`encode_node`]'s bytes. Any past root therefore
//! still reaches its whole tree, so a proof can be made as of any height whose
//! nodes are kept, from the root in that height's header alone. An update
//! reads and rewrites only the nodes on the paths of the changed keys, and
//! reports the nodes the new root no longer reaches ([`StateUpdate::stale`]);
//! since versions only grow, a stale node never becomes live again.

use std::collections::{BTreeMap, HashMap};

use bincode::{Decode, Encode};
use sha2::{Digest, Sha256};

use crate::codec::{self, Canonical};
use crate::error::Error;
use crate::merkle::Hash;
use crate::state::{decode_head, encode_head, Head, StateKey};

/// The root of the empty map (and the hash of any empty subtree).
pub const EMPTY_ROOT: Hash = *b"SPARSE_MERKLE_PLACEHOLDER_HASH__";

/// Prefix of the hash that turns a `(namespace, key)` into a tree key.
pub const KEY_DOMAIN: &[u8] = b"annal/state-key/v1";
const LEAF_DOMAIN: &[u8] = b"JMT::LeafNode";
const INTERNAL_DOMAIN: &[u8] = b"JMT::IntrnalNode";

/// A key hash has 256 bits, so no path is longer.
pub const PROOF_SIBLINGS_MAX: usize = 256;
/// The longest canonical `StateProof`: format, tag, the larger leaf, the list length, 256 siblings.
pub const PROOF_BYTES_MAX: usize = 1 + 4 + 64 + 8 + 32 * PROOF_SIBLINGS_MAX;

const NODE_INTERNAL: u8 = 1;
const NODE_LEAF: u8 = 2;
const HEAD_BYTES: usize = 53;

/// Read access to stored tree nodes, by node hash.
pub trait StateTreeReader {
    type Error: Into<Error>;
    /// The stored bytes of the node whose hash is `node_key`, if any.
    fn get(&self, node_key: &Hash) -> Result<Option<Vec<u8>>, Self::Error>;
}

/// Nodes held in memory: tests, benchmarks and the auditor's replay.
impl StateTreeReader for HashMap<Hash, Vec<u8>> {
    type Error = Error;
    fn get(&self, node_key: &Hash) -> Result<Option<Vec<u8>>, Error> {
        Ok(HashMap::get(self, node_key).cloned())
    }
}

impl StateTreeReader for BTreeMap<Hash, Vec<u8>> {
    type Error = Error;
    fn get(&self, node_key: &Hash) -> Result<Option<Vec<u8>>, Error> {
        Ok(BTreeMap::get(self, node_key).cloned())
    }
}

/// `SHA-256("annal/state-key/v1" ‖ 0x01 ‖ u64 LE len ‖ namespace ‖ u64 LE len ‖ key)`:
/// the tree key of `(namespace, key)` (after the domain, the canonical encoding of the pair).
pub fn key_hash(key: &StateKey) -> Hash {
    let mut h = Sha256::new();
    h.update(KEY_DOMAIN);
    h.update([codec::FORMAT_V1]);
    for part in [&key.namespace, &key.key] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// `SHA-256("JMT::LeafNode" ‖ key_hash ‖ value_hash)`.
pub fn leaf_hash(key_hash: &Hash, value_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(LEAF_DOMAIN);
    h.update(key_hash);
    h.update(value_hash);
    h.finalize().into()
}

/// `SHA-256("JMT::IntrnalNode" ‖ left ‖ right)`.
pub fn internal_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(INTERNAL_DOMAIN);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// `SHA-256(canonical head bytes)`: the value hash of a leaf.
pub fn head_value_hash(head: &Head) -> Hash {
    Sha256::digest(encode_head(head)).into()
}

/// Bit `depth` of `hash`, most significant bit of byte 0 first. `depth < 256`.
fn bit(hash: &Hash, depth: usize) -> bool {
    hash[depth / 8] & (0x80 >> (depth % 8)) != 0
}

/// How many leading bits `a` and `b` share (256 when equal).
fn common_prefix_bits(a: &Hash, b: &Hash) -> usize {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let diff = x ^ y;
        if diff != 0 {
            return i * 8 + diff.leading_zeros() as usize;
        }
    }
    256
}

/// A stored node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Internal { left: Hash, right: Hash },
    Leaf { key_hash: Hash, head: Head },
}

impl Node {
    pub fn hash(&self) -> Hash {
        match self {
            Node::Internal { left, right } => internal_hash(left, right),
            Node::Leaf { key_hash, head } => leaf_hash(key_hash, &head_value_hash(head)),
        }
    }
}

/// Stored bytes of a node: `0x01 ‖ left ‖ right` (65 bytes) or
/// `0x02 ‖ key_hash ‖ canonical head` (86 bytes).
pub fn encode_node(node: &Node) -> Vec<u8> {
    match node {
        Node::Internal { left, right } => [&[NODE_INTERNAL][..], left, right].concat(),
        Node::Leaf { key_hash, head } => [&[NODE_LEAF][..], key_hash, &encode_head(head)].concat(),
    }
}

/// Decodes stored node bytes, refusing any other length or tag.
pub fn decode_node(bytes: &[u8]) -> Result<Node, String> {
    let hash_at = |at: usize| -> Hash { bytes[at..at + 32].try_into().expect("length checked") };
    match (bytes.first(), bytes.len()) {
        (Some(&NODE_INTERNAL), 65) => Ok(Node::Internal { left: hash_at(1), right: hash_at(33) }),
        (Some(&NODE_LEAF), len) if len == 33 + HEAD_BYTES => {
            let head = decode_head(&bytes[33..]).map_err(|e| e.to_string())?;
            Ok(Node::Leaf { key_hash: hash_at(1), head })
        }
        (tag, len) => Err(format!("{len} bytes with tag {tag:?} is no node")),
    }
}

/// Reads the node `hash` (not [`EMPTY_ROOT`]) and checks that its bytes hash to it.
fn load<R: StateTreeReader>(reader: &R, hash: &Hash) -> Result<Node, Error> {
    let node_hex = || hex::encode(hash);
    let bytes = reader.get(hash).map_err(Into::into)?.ok_or_else(|| Error::StateNodeMissing { node: node_hex() })?;
    let node = decode_node(&bytes).map_err(|detail| Error::StateNodeCorrupt { node: node_hex(), detail })?;
    if node.hash() != *hash {
        let detail = format!("its bytes hash to {}", hex::encode(node.hash()));
        return Err(Error::StateNodeCorrupt { node: node_hex(), detail });
    }
    Ok(node)
}

/// What one block's changes do to the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateUpdate {
    /// The new `state_root`.
    pub root: Hash,
    /// New nodes `(node hash, node bytes)`, children before parents; write them all.
    pub nodes: Vec<(Hash, Vec<u8>)>,
    /// Nodes reachable from the old root and not from the new one (for pruning, if ever).
    pub stale: Vec<Hash>,
}

/// Applies a block's new heads to the tree whose root is `root`. Reads only the
/// nodes on the changed keys' paths: O(changed · log n).
pub fn update<R: StateTreeReader>(
    reader: &R,
    root: &Hash,
    changes: &BTreeMap<StateKey, Head>,
) -> Result<StateUpdate, Error> {
    let mut leaves: Vec<(Hash, Head)> = changes.iter().map(|(k, h)| (key_hash(k), *h)).collect();
    leaves.sort_unstable_by_key(|a| a.0);
    assert!(leaves.windows(2).all(|w| w[0].0 != w[1].0), "two state keys share a SHA-256 key hash");
    let mut out = StateUpdate { root: *root, nodes: Vec::with_capacity(changes.len() * 12), stale: Vec::new() };
    out.root = insert(reader, *root, 0, &leaves, &mut out)?;
    Ok(out)
}

/// The root of `changes` alone, from nothing (tests and the auditor's replay).
pub fn root_of(changes: &BTreeMap<StateKey, Head>) -> Hash {
    let empty: HashMap<Hash, Vec<u8>> = HashMap::new();
    update(&empty, &EMPTY_ROOT, changes).expect("an empty tree reads no node").root
}

/// Inserts `leaves` (sorted, distinct, all under this subtree) into the subtree
/// `node` at `depth`, returning the subtree's new hash.
fn insert<R: StateTreeReader>(
    reader: &R,
    node: Hash,
    depth: usize,
    leaves: &[(Hash, Head)],
    out: &mut StateUpdate,
) -> Result<Hash, Error> {
    if leaves.is_empty() {
        return Ok(node);
    }
    if node == EMPTY_ROOT {
        return Ok(build(depth, leaves, out));
    }
    let loaded = load(reader, &node)?;
    out.stale.push(node);
    match loaded {
        Node::Leaf { key_hash, head } => {
            // The old leaf joins the new ones unless one of them overwrites it.
            match leaves.binary_search_by(|l| l.0.cmp(&key_hash)) {
                Ok(_) => Ok(build(depth, leaves, out)),
                Err(at) => {
                    let mut all = Vec::with_capacity(leaves.len() + 1);
                    all.extend_from_slice(&leaves[..at]);
                    all.push((key_hash, head));
                    all.extend_from_slice(&leaves[at..]);
                    Ok(build(depth, &all, out))
                }
            }
        }
        Node::Internal { left, right } => {
            assert!(depth < PROOF_SIBLINGS_MAX, "an internal state node at depth 256");
            let split = leaves.partition_point(|l| !bit(&l.0, depth));
            let left = insert(reader, left, depth + 1, &leaves[..split], out)?;
            let right = insert(reader, right, depth + 1, &leaves[split..], out)?;
            Ok(write(Node::Internal { left, right }, out))
        }
    }
}

/// Builds the subtree at `depth` holding exactly `leaves` (sorted, distinct).
fn build(depth: usize, leaves: &[(Hash, Head)], out: &mut StateUpdate) -> Hash {
    match leaves {
        [] => EMPTY_ROOT,
        [(key_hash, head)] => write(Node::Leaf { key_hash: *key_hash, head: *head }, out),
        _ => {
            // Two distinct 256-bit keys differ at some bit, so depth stays below 256.
            assert!(depth < PROOF_SIBLINGS_MAX, "distinct key hashes agree on all 256 bits");
            let split = leaves.partition_point(|l| !bit(&l.0, depth));
            let left = build(depth + 1, &leaves[..split], out);
            let right = build(depth + 1, &leaves[split..], out);
            write(Node::Internal { left, right }, out)
        }
    }
}

fn write(node: Node, out: &mut StateUpdate) -> Hash {
    let hash = node.hash();
    out.nodes.push((hash, encode_node(&node)));
    hash
}

/// What a proof's path ends in.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ProofLeaf {
    /// An empty subtree: the key has no record.
    Empty,
    /// The key's own leaf: its current head.
    Head(Head),
    /// The one leaf of the subtree the key would be in, for another key: the key has no record.
    Other { key_hash: Hash, value_hash: Hash },
}

/// Proof that, under a `state_root`, a key has a given head or no record.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct StateProof {
    pub leaf: ProofLeaf,
    /// Sibling hashes from the root down: `siblings[i]` is the sibling at depth `i + 1`.
    pub siblings: Vec<Hash>,
}

impl Canonical for StateProof {
    const KIND: &'static str = "state proof";
}

/// The proof for `key` in the tree whose root is `root` (any root whose nodes are kept).
pub fn prove<R: StateTreeReader>(reader: &R, root: &Hash, key: &StateKey) -> Result<StateProof, Error> {
    let target = key_hash(key);
    let mut siblings = Vec::new();
    let mut node = *root;
    loop {
        if node == EMPTY_ROOT {
            return Ok(StateProof { leaf: ProofLeaf::Empty, siblings });
        }
        match load(reader, &node)? {
            Node::Leaf { key_hash, head } if key_hash == target => {
                return Ok(StateProof { leaf: ProofLeaf::Head(head), siblings });
            }
            Node::Leaf { key_hash, head } => {
                let value_hash = head_value_hash(&head);
                return Ok(StateProof { leaf: ProofLeaf::Other { key_hash, value_hash }, siblings });
            }
            Node::Internal { left, right } => {
                let depth = siblings.len();
                if depth == PROOF_SIBLINGS_MAX {
                    let detail = "an internal node at depth 256".to_string();
                    return Err(Error::StateNodeCorrupt { node: hex::encode(node), detail });
                }
                let (next, sibling) = if bit(&target, depth) { (right, left) } else { (left, right) };
                siblings.push(sibling);
                node = next;
            }
        }
    }
}

impl StateProof {
    /// Checks the proof against `state_root` for `key`: `Some(head)` if the key's
    /// head is proven, `None` if the key is proven to have no record.
    pub fn verify(&self, state_root: &Hash, key: &StateKey) -> Result<Option<Head>, Error> {
        let depth = self.siblings.len();
        if depth > PROOF_SIBLINGS_MAX {
            return Err(Error::StateProofTooLong { siblings: depth, max: PROOF_SIBLINGS_MAX });
        }
        let target = key_hash(key);
        let (mut acc, proven) = match &self.leaf {
            ProofLeaf::Empty => (EMPTY_ROOT, None),
            ProofLeaf::Head(head) => (leaf_hash(&target, &head_value_hash(head)), Some(*head)),
            ProofLeaf::Other { key_hash, value_hash } => {
                let shared = common_prefix_bits(key_hash, &target);
                if shared == 256 || shared < depth {
                    return Err(Error::StateProofNeighbour {
                        namespace: key.namespace.clone(),
                        key: key.key.clone(),
                        neighbour: hex::encode(key_hash),
                        shared_bits: shared,
                        depth,
                    });
                }
                (leaf_hash(key_hash, value_hash), None)
            }
        };
        for (d, sibling) in self.siblings.iter().enumerate().rev() {
            acc = if bit(&target, d) { internal_hash(sibling, &acc) } else { internal_hash(&acc, sibling) };
        }
        if acc != *state_root {
            return Err(Error::StateRootMismatch {
                namespace: key.namespace.clone(),
                key: key.key.clone(),
                computed: hex::encode(acc),
                expected: hex::encode(state_root),
            });
        }
        Ok(proven)
    }

    /// The canonical bytes (docs/PROOFS.md, "Record state").
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes canonical bytes, refusing anything longer than [`PROOF_BYTES_MAX`],
    /// trailing bytes, non-canonical forms and more than 256 siblings.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let proof: StateProof = codec::decode(bytes, PROOF_BYTES_MAX)?;
        if proof.siblings.len() > PROOF_SIBLINGS_MAX {
            return Err(Error::StateProofTooLong { siblings: proof.siblings.len(), max: PROOF_SIBLINGS_MAX });
        }
        Ok(proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordId;
    use crate::state::Status;

    fn head(n: u8) -> Head {
        Head { id: RecordId([n; 32]), version: n as u64, index: n as u64 * 10, status: Status::Active }
    }

    #[test]
    fn node_bytes_round_trip_and_refuse_other_lengths() {
        // Goal: stored node bytes decode to the same node, and a byte more or less is refused.
        for node in [Node::Internal { left: [1; 32], right: [2; 32] }, Node::Leaf { key_hash: [3; 32], head: head(4) }]
        {
            let bytes = encode_node(&node);
            assert_eq!(decode_node(&bytes).unwrap(), node);
            assert!(decode_node(&bytes[..bytes.len() - 1]).is_err());
            assert!(decode_node(&[bytes.clone(), vec![0]].concat()).is_err());
        }
        assert_eq!(encode_head(&head(1)).len(), HEAD_BYTES);
    }

    #[test]
    fn bits_and_prefixes() {
        // Goal: bit order is most significant bit of byte 0 first, and prefix lengths agree with it.
        let mut a = [0u8; 32];
        a[0] = 0x80;
        assert!(bit(&a, 0) && !bit(&a, 1));
        let mut b = a;
        b[2] = 0x01;
        assert_eq!(common_prefix_bits(&a, &b), 23);
        assert_eq!(common_prefix_bits(&a, &a), 256);
    }

    #[test]
    fn corrupt_node_is_reported() {
        // Goal: a stored node whose bytes do not hash to its key is an error, not a wrong root.
        let key = StateKey { namespace: "ns".into(), key: "k".into() };
        let up = update(&HashMap::new(), &EMPTY_ROOT, &BTreeMap::from([(key.clone(), head(1))])).unwrap();
        let mut nodes: HashMap<Hash, Vec<u8>> = up.nodes.into_iter().collect();
        let bytes = nodes.get_mut(&up.root).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        assert!(matches!(prove(&nodes, &up.root, &key), Err(Error::StateNodeCorrupt { .. })));
    }
}
