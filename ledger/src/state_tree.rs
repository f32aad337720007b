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
//! # Storage: leaves on disk, upper levels in memory
//!
//! Only the leaves are stored, `key_hash → canonical head`, sorted by key hash,
//! so the leaves under any subtree are one contiguous range ([`LeafReader`]).
//! No internal node is stored. The hash of every position of depths `0..=D`
//! is held in memory ([`Levels`], dense, with whether the subtree there is
//! empty, one leaf or more), `D` chosen from the number of keys so that a
//! subtree at depth `D` (a *bottom subtree*) holds 2 to 4 leaves on average
//! ([`depth_for`]), and as much of depth `D + 1` as has grown (below): 33 to
//! 44 bytes of memory per key.
//!
//! An [`update`] reads the leaves of each bottom subtree a changed key falls
//! in (one range scan each), merges the changes in, rehashes those subtrees,
//! then the upper positions above them. It writes nothing: it returns the new
//! root, the leaf puts and the changed positions ([`StateUpdate`]), which the
//! caller applies once its write succeeded. When the number of keys doubles,
//! `D` grows by one. The level `D + 1` is built ahead, a few positions per
//! block, from the leaves under them ([`Levels::grow`]: about one position
//! per new key, so O(1) per insert and no block pays for the whole tree), and
//! is complete by the time the keys have grown half way to the doubling. A
//! store builds the levels, `D + 1` as far as it is due, from a scan of every
//! leaf when it opens ([`Levels::build`]). A [`prove`] takes its siblings from the levels down
//! to depth `D`, then from the rehashed bottom subtree: proofs are made as of
//! the latest state only.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Range;

use bincode::{Decode, Encode};
use sha2::{Digest, Sha256};

use crate::codec::{self, Canonical};
use crate::error::Error;
use crate::merkle::Hash;
use crate::state::{head_bytes, Head, StateKey};

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

/// The deepest in-memory level: 2^24 positions of 33 bytes (553 MB; the levels
/// then take 1.1 GB), grown from 2^24 keys and the bottom one from 2^25.
pub const LEVELS_DEPTH_MAX: usize = 24;
/// A bottom subtree holds `2^BOTTOM_LEAVES_LOG2` to twice that many leaves on average.
/// An update rehashes every leaf of each bottom subtree it touches: 4–8 leaves
/// rather than 8–16 cut `execute` by ~20 % in `annal bench ledger`, and 2–4
/// rather than 4–8 by another ~14 % (session 11), for 16–33 bytes of memory per
/// key instead of 8–16 (17 MB at a million keys; ADR 0003, Update), before the
/// next level grew ahead (33–44 since session 20).
const BOTTOM_LEAVES_LOG2: usize = 1;

/// Read access to the stored leaves, by key hash.
pub trait LeafReader {
    /// Every leaf whose key hash is in `from..=to_inclusive`, sorted by key hash.
    fn leaves_in(&self, from: &Hash, to_inclusive: &Hash) -> Result<Vec<(Hash, Head)>, Error>;
    /// The head stored under `key_hash`, if any.
    fn leaf(&self, key_hash: &Hash) -> Result<Option<Head>, Error>;
    /// The leaves of each of `spans` (disjoint, in key-hash order), one after
    /// another in one list: one [`leaves_in`](Self::leaves_in) each, unless
    /// the reader does better (the store moves one iterator forward through them).
    fn leaves_in_each(&self, spans: &[(Hash, Hash)]) -> Result<SpanLeaves, Error> {
        let mut out = SpanLeaves::with_capacity(spans.len());
        for (from, to) in spans {
            out.leaves.extend(self.leaves_in(from, to)?);
            out.ends.push(out.leaves.len());
        }
        Ok(out)
    }
}

/// The leaves of several spans in one list (a block touches ~4,000 bottom
/// subtrees of 2–4 leaves each: a list per subtree was an allocation each,
/// ~1 % of a validator at rate max; docs/BENCHMARKS.md, session 14).
#[derive(Debug, Default)]
pub struct SpanLeaves {
    /// Every span's leaves, span after span.
    pub leaves: Vec<(Hash, Head)>,
    /// `ends[i]`: where the leaves of span `i` end in `leaves` (they start where span `i − 1`'s end).
    pub ends: Vec<usize>,
}

impl SpanLeaves {
    /// Room for `spans` spans of up to four leaves each.
    pub fn with_capacity(spans: usize) -> SpanLeaves {
        SpanLeaves { leaves: Vec::with_capacity(4 * spans), ends: Vec::with_capacity(spans) }
    }
}

/// The tree as committed: stored leaves and the in-memory levels that agree with them.
pub trait StateTreeReader: LeafReader {
    fn levels(&self) -> &Levels;
}

/// Leaves held in memory: tests, benchmarks, [`MemoryTree`].
impl LeafReader for BTreeMap<Hash, Head> {
    fn leaves_in(&self, from: &Hash, to_inclusive: &Hash) -> Result<Vec<(Hash, Head)>, Error> {
        Ok(self.range(*from..=*to_inclusive).map(|(k, h)| (*k, *h)).collect())
    }
    fn leaf(&self, key_hash: &Hash) -> Result<Option<Head>, Error> {
        Ok(self.get(key_hash).copied())
    }
}

/// `SHA-256("annal/state-key/v1" ‖ 0x01 ‖ u64 LE len ‖ namespace ‖ u64 LE len ‖ key)`:
/// the tree key of `(namespace, key)` (after the domain, the canonical encoding of the pair).
pub fn key_hash(key: &StateKey) -> Hash {
    key_hash_of(&key.namespace, &key.key)
}

/// [`key_hash`] of `(namespace, key)` without building a [`StateKey`].
pub fn key_hash_of(namespace: &str, key: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(KEY_DOMAIN);
    h.update([codec::FORMAT_V1]);
    for part in [namespace, key] {
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
    Sha256::digest(head_bytes(head)).into()
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

/// The position of `key_hash` at `depth`: its first `depth` bits. `depth <= LEVELS_DEPTH_MAX`.
fn position(key_hash: &Hash, depth: usize) -> usize {
    let top = u32::from_be_bytes(key_hash[..4].try_into().expect("4 bytes"));
    if depth == 0 {
        0
    } else {
        (top >> (32 - depth)) as usize
    }
}

/// The first and last key hash under position `index` at `depth`.
fn span(depth: usize, index: usize) -> (Hash, Hash) {
    let (mut from, mut to) = ([0u8; 32], [0xff; 32]);
    if depth > 0 {
        let first = (index as u32) << (32 - depth);
        from[..4].copy_from_slice(&first.to_be_bytes());
        to[..4].copy_from_slice(&(first | (u32::MAX >> depth)).to_be_bytes());
    }
    (from, to)
}

/// The hash of the subtree at `depth` holding exactly `leaves` (sorted, distinct, all under it).
fn subtree_hash(depth: usize, leaves: &[(Hash, Head)]) -> Hash {
    match leaves {
        [] => EMPTY_ROOT,
        [(key_hash, head)] => leaf_hash(key_hash, &head_value_hash(head)),
        _ => {
            // Two distinct 256-bit keys differ at some bit, so depth stays below 256.
            assert!(depth < PROOF_SIBLINGS_MAX, "distinct key hashes agree on all 256 bits");
            let split = leaves.partition_point(|l| !bit(&l.0, depth));
            internal_hash(&subtree_hash(depth + 1, &leaves[..split]), &subtree_hash(depth + 1, &leaves[split..]))
        }
    }
}

/// The root of `changes` alone, from nothing (tests and the auditor's replay).
pub fn root_of(changes: &BTreeMap<StateKey, Head>) -> Hash {
    subtree_hash(0, &sorted_leaves(changes))
}

/// `changes` as leaves sorted by key hash.
fn sorted_leaves(changes: &BTreeMap<StateKey, Head>) -> Vec<(Hash, Head)> {
    let mut leaves: Vec<(Hash, Head)> = changes.iter().map(|(k, h)| (key_hash(k), *h)).collect();
    leaves.sort_unstable_by_key(|a| a.0);
    assert!(leaves.windows(2).all(|w| w[0].0 != w[1].0), "two state keys share a SHA-256 key hash");
    leaves
}

/// `stored` with `changes` merged in (both sorted by key hash); a change replaces a stored leaf.
fn merge(stored: &[(Hash, Head)], changes: &[(Hash, Head)]) -> Vec<(Hash, Head)> {
    let mut out = Vec::with_capacity(stored.len() + changes.len());
    let (mut i, mut j) = (0, 0);
    while i < stored.len() && j < changes.len() {
        match stored[i].0.cmp(&changes[j].0) {
            Ordering::Less => {
                out.push(stored[i]);
                i += 1;
            }
            Ordering::Greater => {
                out.push(changes[j]);
                j += 1;
            }
            Ordering::Equal => {
                out.push(changes[j]);
                (i, j) = (i + 1, j + 1);
            }
        }
    }
    out.extend_from_slice(&stored[i..]);
    out.extend_from_slice(&changes[j..]);
    out
}

/// The depth of the in-memory levels for a tree of `leaves` keys: bottom
/// subtrees then hold 2 to 4 leaves on average (`floor(log2 n) − 1`, at most
/// [`LEVELS_DEPTH_MAX`]).
pub fn depth_for(leaves: u64) -> usize {
    depth_at_most(leaves, LEVELS_DEPTH_MAX)
}

/// [`depth_for`] with the deepest level `depth_max` instead of [`LEVELS_DEPTH_MAX`].
fn depth_at_most(leaves: u64, depth_max: usize) -> usize {
    let log2 = leaves.checked_ilog2().unwrap_or(0) as usize;
    log2.saturating_sub(BOTTOM_LEAVES_LOG2).min(depth_max)
}

/// How many leaves a subtree holds, as far as its hash is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fill {
    /// None: the subtree's hash is [`EMPTY_ROOT`].
    #[default]
    Empty,
    /// Exactly one: the subtree's hash is that leaf's hash.
    One,
    /// Two or more: the subtree's hash is an internal node's.
    Many,
}

impl Fill {
    fn of(leaves: usize) -> Fill {
        match leaves {
            0 => Fill::Empty,
            1 => Fill::One,
            _ => Fill::Many,
        }
    }
}

/// The subtree whose children are `left` and `right`, as `build` would hash it.
fn combine(left: (Hash, Fill), right: (Hash, Fill)) -> (Hash, Fill) {
    match (left.1, right.1) {
        (Fill::Empty, Fill::Empty) => (EMPTY_ROOT, Fill::Empty),
        (Fill::One, Fill::Empty) => left,
        (Fill::Empty, Fill::One) => right,
        _ => (internal_hash(&left.0, &right.0), Fill::Many),
    }
}

/// The upper levels of the tree, in memory: the hash and [`Fill`] of every
/// position of depths `0..=depth`, for the latest state, and the next level
/// as far as it has grown.
///
/// When the number of keys doubles, `depth` grows by one. Computing the new
/// level at that moment meant hashing every leaf on the committing thread
/// (4.9 s at 2^23 keys in `annal bench ledger`, on every validator at the same block), so
/// the level below `depth` is built ahead, a few positions per block
/// ([`Levels::grow`]): by the time the keys have grown half way to the next
/// doubling it is complete, and the switch is free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Levels {
    depth: usize,
    leaf_count: u64,
    /// `hashes[d][i]`: the hash of the subtree at position `i` of depth `d`,
    /// for every `d` in `0..=depth`; below `depth_max`, also
    /// `hashes[depth + 1]`, holding positions `0..2 * grown`.
    hashes: Vec<Vec<Hash>>,
    fills: Vec<Vec<Fill>>,
    /// The positions `0..grown` of `depth` have their children at `depth + 1` held.
    grown: usize,
    /// The deepest level: [`LEVELS_DEPTH_MAX`]; smaller only in tests, which
    /// reach it with a few hundred keys instead of 2^25.
    depth_max: usize,
}

impl Default for Levels {
    /// The empty tree.
    fn default() -> Self {
        Levels {
            depth: 0,
            leaf_count: 0,
            hashes: vec![vec![EMPTY_ROOT], Vec::new()],
            fills: vec![vec![Fill::Empty], Vec::new()],
            grown: 0,
            depth_max: LEVELS_DEPTH_MAX,
        }
    }
}

/// How many positions of `depth` should have their children held once the
/// tree has `leaves` keys: none when `depth` was reached (at `2^(depth + B)`
/// keys, `B` = [`BOTTOM_LEAVES_LOG2`]), all `2^depth` half way to the next
/// doubling, linearly between. So a block that adds `k` keys grows the next
/// level by about `k × 2^(1 − B)` positions, reading their leaves once.
fn growth_due(leaves: u64, depth: usize) -> usize {
    let past = leaves.saturating_sub(1 << (depth + BOTTOM_LEAVES_LOG2));
    usize::try_from(past >> (BOTTOM_LEAVES_LOG2 - 1)).unwrap_or(usize::MAX).min(1 << depth)
}

/// The next level's part of the state after one update: the children, at
/// `depth + 1`, of the positions `first..` of `depth` ([`Levels::grow`]), or
/// levels built from every leaf when the update outgrows two depths at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Growth {
    first: usize,
    /// Two per position, left child first.
    hashes: Vec<Hash>,
    fills: Vec<Fill>,
    rebuilt: Option<Levels>,
}

/// The two children, at `depth + 1`, of the subtree at `depth` holding `leaves`.
fn children(depth: usize, leaves: &[(Hash, Head)]) -> [(Hash, Fill); 2] {
    let (left, right) = leaves.split_at(leaves.partition_point(|l| !bit(&l.0, depth)));
    [(subtree_hash(depth + 1, left), Fill::of(left.len())), (subtree_hash(depth + 1, right), Fill::of(right.len()))]
}

impl Levels {
    pub fn root(&self) -> Hash {
        self.hashes[0][0]
    }

    /// The depth of the bottom subtrees (`D`).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The number of keys in the tree.
    pub fn leaf_count(&self) -> u64 {
        self.leaf_count
    }

    /// How many positions of depth `D` have their children held, ready for `D + 1`.
    pub fn grown(&self) -> usize {
        self.grown
    }

    /// Bytes held by the hashes and fills (the growing level's as far as it has grown).
    pub fn memory_bytes(&self) -> usize {
        self.hashes.iter().map(|level| level.len() * 33).sum()
    }

    /// Whether `update` was computed on exactly these levels: their root,
    /// depth and growing level (its slots index them).
    pub fn is_base_of(&self, update: &StateUpdate) -> bool {
        (update.base_root, update.depth, update.grown) == (self.root(), self.depth, self.grown)
    }

    fn slot(&self, depth: usize, index: usize) -> (Hash, Fill) {
        (self.hashes[depth][index], self.fills[depth][index])
    }

    /// Computes the levels from every leaf `reader` holds, `leaf_count` of
    /// them, at the depth [`depth_for`] chooses, with the next level grown as
    /// far as [`growth_due`] (as a store does on open): one pass over the
    /// leaves. Memory: the levels themselves and nothing of their size beside
    /// them (building (hash, fill) pairs first and splitting them after took
    /// half as much again at the peak); the next level is reserved whole but
    /// only its grown part is written.
    pub fn build<R: LeafReader + ?Sized>(reader: &R, leaf_count: u64) -> Result<Levels, Error> {
        Levels::build_at_most(reader, leaf_count, LEVELS_DEPTH_MAX)
    }

    /// [`build`](Self::build) with the deepest level `depth_max`.
    fn build_at_most<R: LeafReader + ?Sized>(reader: &R, leaf_count: u64, depth_max: usize) -> Result<Levels, Error> {
        let depth = depth_at_most(leaf_count, depth_max);
        let grows = depth < depth_max;
        let due = if grows { growth_due(leaf_count, depth) } else { 0 };
        let mut bottom_hashes = vec![EMPTY_ROOT; 1 << depth];
        let mut bottom_fills = vec![Fill::Empty; 1 << depth];
        let mut next_hashes = Vec::with_capacity(if grows { 2 << depth } else { 0 });
        let mut next_fills = Vec::with_capacity(if grows { 2 << depth } else { 0 });
        // Scan in ranges of 64 bottom subtrees (a few hundred leaves) at a time.
        let chunk_depth = depth.saturating_sub(6);
        let per_chunk = 1usize << (depth - chunk_depth);
        let mut counted = 0u64;
        for chunk in 0..1usize << chunk_depth {
            counted += scan_positions(reader, depth, chunk * per_chunk..(chunk + 1) * per_chunk, |index, under| {
                let (hash, fill) = match index < due {
                    true => {
                        let [left, right] = children(depth, under);
                        next_hashes.extend([left.0, right.0]);
                        next_fills.extend([left.1, right.1]);
                        combine(left, right)
                    }
                    false => (subtree_hash(depth, under), Fill::of(under.len())),
                };
                (bottom_hashes[index], bottom_fills[index]) = (hash, fill);
                Ok(())
            })?;
        }
        if counted != leaf_count {
            let detail = format!("{counted} leaves are stored where {leaf_count} were expected");
            return Err(Error::StateLeavesDisagree { depth: 0, index: 0, detail });
        }
        let mut hashes = vec![bottom_hashes];
        let mut fills = vec![bottom_fills];
        for d in (0..depth).rev() {
            let (below_hashes, below_fills) =
                (hashes.last().expect("the bottom level"), fills.last().expect("the bottom level"));
            let below = |i: usize| (below_hashes[i], below_fills[i]);
            let (level_hashes, level_fills): (Vec<Hash>, Vec<Fill>) =
                (0..1usize << d).map(|i| combine(below(2 * i), below(2 * i + 1))).unzip();
            hashes.push(level_hashes);
            fills.push(level_fills);
        }
        hashes.reverse();
        fills.reverse();
        if grows {
            hashes.push(next_hashes);
            fills.push(next_fills);
        }
        Ok(Levels { depth, leaf_count, hashes, fills, grown: due, depth_max })
    }

    /// The next positions of the growing level after `update` (computed on
    /// these levels, not yet applied): as many as [`growth_due`] asks for the
    /// update's number of keys, or all that remain when the update makes the
    /// tree outgrow this depth. Reads their leaves from `reader` (which does
    /// not yet hold the update's) merged with the update's, and checks that
    /// each position's children combine to the hash the levels will hold for
    /// it: stored leaves that disagree with the levels are an error here,
    /// before anything is written.
    ///
    /// An update that takes the tree past the next doubling too (to
    /// `2^(D + 3)` keys or more: only a young chain's first large blocks can)
    /// outgrows two depths at once: the levels are then built from every leaf,
    /// at most a few times the update's own size, and checked against its root.
    pub fn grow<R: LeafReader + ?Sized>(&self, reader: &R, update: &StateUpdate) -> Result<Growth, Error> {
        assert!(self.is_base_of(update), "a state update computed on other levels");
        let depth = self.depth;
        let mut growth = Growth { first: self.grown, ..Growth::default() };
        let reader = WithChanges { base: reader, changes: &update.leaves };
        let depth_wanted = depth_at_most(update.leaf_count, self.depth_max);
        if depth_wanted > depth + 1 {
            let levels = Levels::build_at_most(&reader, update.leaf_count, self.depth_max)?;
            if levels.root() != update.root {
                let detail = format!(
                    "built at depth {} from the leaves, the root is {}; the update says {}",
                    levels.depth,
                    hex::encode(levels.root()),
                    hex::encode(update.root)
                );
                return Err(Error::StateLeavesDisagree { depth: 0, index: 0, detail });
            }
            growth.rebuilt = Some(levels);
            return Ok(growth);
        }
        if depth == self.depth_max {
            return Ok(growth);
        }
        let target = match depth_wanted > depth {
            true => 1 << depth,
            false => growth_due(update.leaf_count, depth),
        };
        if target <= self.grown {
            return Ok(growth);
        }
        // The update's new positions at this depth (one run, by index).
        let start = update.slots.partition_point(|s| s.depth as usize > depth);
        let updated =
            &update.slots[start..start + update.slots[start..].partition_point(|s| s.depth as usize == depth)];
        let after = |index: usize| match updated.binary_search_by_key(&(index as u32), |s| s.index) {
            Ok(at) => (updated[at].hash, updated[at].fill),
            Err(_) => self.slot(depth, index),
        };
        growth.hashes.reserve(2 * (target - self.grown));
        growth.fills.reserve(2 * (target - self.grown));
        // 64 positions (a few hundred leaves) per range scan.
        for first in (self.grown..target).step_by(64) {
            scan_positions(&reader, depth, first..(first + 64).min(target), |index, under| {
                let [left, right] = children(depth, under);
                let (computed, held) = (combine(left, right), after(index));
                if computed != held {
                    let detail = format!(
                        "the {} leaves stored under it hash to {} ({:?}); the levels hold {} ({:?})",
                        under.len(),
                        hex::encode(computed.0),
                        computed.1,
                        hex::encode(held.0),
                        held.1
                    );
                    return Err(Error::StateLeavesDisagree { depth, index: index as u64, detail });
                }
                growth.hashes.extend([left.0, right.0]);
                growth.fills.extend([left.1, right.1]);
                Ok(())
            })?;
        }
        Ok(growth)
    }

    /// Writes `update`'s positions. The update must have been computed on
    /// exactly these levels (a broken invariant otherwise: this panics).
    pub fn apply(&mut self, update: &StateUpdate) {
        assert!(
            self.is_base_of(update),
            "a state update computed on root {} at depth {} ({} grown) applied to root {} at depth {} ({} grown)",
            hex::encode(update.base_root),
            update.depth,
            update.grown,
            hex::encode(self.root()),
            self.depth,
            self.grown
        );
        for slot in &update.slots {
            let (d, i) = (slot.depth as usize, slot.index as usize);
            self.hashes[d][i] = slot.hash;
            self.fills[d][i] = slot.fill;
        }
        self.leaf_count = update.leaf_count;
        assert_eq!(self.root(), update.root, "a state update's positions lead to its root");
    }

    /// Adds `growth` (computed by [`grow`](Self::grow) for the update just
    /// [`apply`](Self::apply)'d) to the growing level. When that level is
    /// complete and the keys have outgrown this depth, it becomes the bottom
    /// level and the next one starts, empty. Afterwards the depth is
    /// [`depth_for`] the number of keys.
    pub fn extend(&mut self, growth: Growth) {
        assert_eq!(growth.first, self.grown, "growth computed for other levels");
        if let Some(levels) = growth.rebuilt {
            assert_eq!(levels.root(), self.root(), "levels rebuilt for another state");
            *self = levels;
            return;
        }
        if self.depth == self.depth_max {
            assert!(growth.hashes.is_empty(), "no level grows below the deepest");
            return;
        }
        let next = self.depth + 1;
        self.hashes[next].extend(growth.hashes);
        self.fills[next].extend(growth.fills);
        self.grown = self.hashes[next].len() / 2;
        if self.grown < 1 << self.depth || depth_at_most(self.leaf_count, self.depth_max) == self.depth {
            return;
        }
        self.depth = next;
        self.grown = 0;
        if next < self.depth_max {
            // Reserved, not filled: the pages are touched as the level grows.
            self.hashes.push(Vec::with_capacity(2 << next));
            self.fills.push(Vec::with_capacity(2 << next));
        }
    }
}

/// Whether `leaves`, read for `from..=to` (starting at position `index` of `depth`), are sorted and in it.
fn check_span(leaves: &[(Hash, Head)], from: &Hash, to: &Hash, depth: usize, index: usize) -> Result<(), Error> {
    let in_order = leaves.windows(2).all(|w| w[0].0 < w[1].0);
    if in_order && leaves.first().is_none_or(|l| l.0 >= *from) && leaves.last().is_none_or(|l| l.0 <= *to) {
        return Ok(());
    }
    let detail = "the leaf reader returned leaves out of order or out of range".to_string();
    Err(Error::StateLeavesDisagree { depth, index: index as u64, detail })
}

/// Reads the leaves under the positions `positions` of `depth` in one range
/// scan, checked to be sorted and in range, and calls `each` with every
/// position in turn and the leaves under it. Returns how many leaves it read.
fn scan_positions<R: LeafReader + ?Sized>(
    reader: &R,
    depth: usize,
    positions: Range<usize>,
    mut each: impl FnMut(usize, &[(Hash, Head)]) -> Result<(), Error>,
) -> Result<u64, Error> {
    let (from, to) = (span(depth, positions.start).0, span(depth, positions.end - 1).1);
    let leaves = reader.leaves_in(&from, &to)?;
    check_span(&leaves, &from, &to, depth, positions.start)?;
    let mut rest = &leaves[..];
    for index in positions {
        let (under, later) = rest.split_at(rest.partition_point(|l| position(&l.0, depth) == index));
        rest = later;
        each(index, under)?;
    }
    Ok(leaves.len() as u64)
}

/// Whether `leaves`, read for position `index` at `depth`, are sorted, in its
/// span and of the fill the levels record.
fn check(leaves: &[(Hash, Head)], depth: usize, index: usize, fill: Fill) -> Result<(), Error> {
    let (from, to) = span(depth, index);
    check_span(leaves, &from, &to, depth, index)?;
    if Fill::of(leaves.len()) == fill {
        return Ok(());
    }
    let detail = format!("{} leaves are stored where the levels record {fill:?}", leaves.len());
    Err(Error::StateLeavesDisagree { depth, index: index as u64, detail })
}

/// The leaves under a position of the levels, checked against the fill the levels record.
fn leaves_under<R: StateTreeReader + ?Sized>(tree: &R, depth: usize, index: usize) -> Result<Vec<(Hash, Head)>, Error> {
    let (_, fill) = tree.levels().slot(depth, index);
    if fill == Fill::Empty {
        return Ok(Vec::new());
    }
    let (from, to) = span(depth, index);
    let leaves = tree.leaves_in(&from, &to)?;
    check(&leaves, depth, index, fill)?;
    Ok(leaves)
}

/// A reader's leaves with a not yet written update's leaves merged in.
struct WithChanges<'a, R: ?Sized> {
    base: &'a R,
    /// Sorted by key hash.
    changes: &'a [(Hash, Head)],
}

impl<R: LeafReader + ?Sized> LeafReader for WithChanges<'_, R> {
    fn leaves_in(&self, from: &Hash, to_inclusive: &Hash) -> Result<Vec<(Hash, Head)>, Error> {
        let stored = self.base.leaves_in(from, to_inclusive)?;
        let start = self.changes.partition_point(|l| l.0 < *from);
        let end = self.changes.partition_point(|l| l.0 <= *to_inclusive);
        Ok(merge(&stored, &self.changes[start..end.max(start)]))
    }
    fn leaf(&self, key_hash: &Hash) -> Result<Option<Head>, Error> {
        match self.changes.binary_search_by(|l| l.0.cmp(key_hash)) {
            Ok(at) => Ok(Some(self.changes[at].1)),
            Err(_) => self.base.leaf(key_hash),
        }
    }
}

/// One changed position of the levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub depth: u8,
    pub index: u32,
    pub hash: Hash,
    pub fill: Fill,
}

/// What one block's changes do to the tree. Nothing is written until the
/// caller puts [`leaves`](Self::leaves) and applies the update to its levels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateUpdate {
    /// The root the update was computed on, the depth of those levels and how
    /// far their next level had grown.
    pub base_root: Hash,
    pub depth: usize,
    pub grown: usize,
    /// The new `state_root`.
    pub root: Hash,
    /// Keys in the tree after the update.
    pub leaf_count: u64,
    /// The changed keys' new leaves, sorted by key hash: one put each.
    pub leaves: Vec<(Hash, Head)>,
    /// The changed positions of the levels, deepest first (those of the
    /// growing level, `depth + 1`, under positions already grown, then
    /// `depth` up to the root).
    pub slots: Vec<Slot>,
}

/// The stored leaves of the bottom subtrees some keys fall in, read once for a
/// block (one seek each, in key-hash order). Execution takes the keys' current
/// heads from here rather than one point read each, and [`update_prefetched`]
/// rehashes the same subtrees without reading them again: the point reads and
/// the second scan were 3.8 % and 6.7 % of a validator at rate max
/// (docs/BENCHMARKS.md, session 10's profile; session 11 for the change).
#[derive(Debug)]
pub struct Prefetch {
    /// The levels the leaves were read against: their root and depth.
    base_root: Hash,
    depth: usize,
    /// The stored leaves of every subtree in `subtrees`, one after another.
    leaves: Vec<(Hash, Head)>,
    /// Each bottom subtree a key falls in, by position, with where its stored
    /// leaves are in `leaves` (checked against the levels; none read for a
    /// subtree the levels record empty).
    subtrees: Vec<(usize, Range<usize>)>,
}

impl Prefetch {
    /// Reads the bottom subtrees `key_hashes` fall in (in any order, repeats allowed).
    pub fn read<R: StateTreeReader + ?Sized>(tree: &R, key_hashes: &[Hash]) -> Result<Prefetch, Error> {
        let levels = tree.levels();
        let depth = levels.depth;
        let mut positions: Vec<usize> = key_hashes.iter().map(|k| position(k, depth)).collect();
        positions.sort_unstable();
        positions.dedup();
        let fill = |index: usize| levels.fills[depth][index];
        let spans: Vec<_> = positions.iter().filter(|&&i| fill(i) != Fill::Empty).map(|&i| span(depth, i)).collect();
        let scanned = tree.leaves_in_each(&spans)?;
        // One end per span asked, in order, the last at the end of the list.
        let well_formed = scanned.ends.len() == spans.len()
            && scanned.ends.windows(2).all(|w| w[0] <= w[1])
            && scanned.ends.last().map_or(scanned.leaves.is_empty(), |&end| end == scanned.leaves.len());
        if !well_formed {
            let detail = format!(
                "the leaf reader's span ends are not one per span, in order, up to its leaves \
                 ({} ends for {} spans, {} leaves)",
                scanned.ends.len(),
                spans.len(),
                scanned.leaves.len()
            );
            return Err(Error::StateLeavesDisagree { depth, index: 0, detail });
        }
        let mut ends = scanned.ends.iter();
        let mut start = 0;
        let mut subtrees = Vec::with_capacity(positions.len());
        for index in positions {
            let range = match fill(index) {
                Fill::Empty => 0..0,
                recorded => {
                    let end = *ends.next().expect("one span per subtree not empty");
                    check(&scanned.leaves[start..end], depth, index, recorded)?;
                    std::mem::replace(&mut start, end)..end
                }
            };
            subtrees.push((index, range));
        }
        Ok(Prefetch { base_root: levels.root(), depth, leaves: scanned.leaves, subtrees })
    }

    /// The stored head of `key_hash`: `None` if its bottom subtree was not read.
    pub fn head(&self, key_hash: &Hash) -> Option<Option<Head>> {
        let leaves = self.subtree(position(key_hash, self.depth))?;
        Some(leaves.binary_search_by(|l| l.0.cmp(key_hash)).ok().map(|at| leaves[at].1))
    }

    fn subtree(&self, index: usize) -> Option<&[(Hash, Head)]> {
        let at = self.subtrees.binary_search_by_key(&index, |s| s.0).ok()?;
        Some(&self.leaves[self.subtrees[at].1.clone()])
    }
}

/// Applies a block's new heads to the tree: reads the leaves of the bottom
/// subtrees the changed keys fall in (one range scan each) and rehashes those
/// subtrees and the positions above them. Writes nothing.
pub fn update<R: StateTreeReader + ?Sized>(tree: &R, changes: &BTreeMap<StateKey, Head>) -> Result<StateUpdate, Error> {
    let leaves = sorted_leaves(changes);
    let hashes: Vec<Hash> = leaves.iter().map(|l| l.0).collect();
    update_prefetched(tree, &Prefetch::read(tree, &hashes)?, leaves)
}

/// [`update`] with the changed keys' bottom subtrees read already: `leaves`
/// are the new heads by key hash (sorted, distinct), `prefetch` was read from
/// `tree` as it stands (a subtree it lacks is read now).
pub fn update_prefetched<R: StateTreeReader + ?Sized>(
    tree: &R,
    prefetch: &Prefetch,
    leaves: Vec<(Hash, Head)>,
) -> Result<StateUpdate, Error> {
    let levels = tree.levels();
    let depth = levels.depth;
    assert!(
        prefetch.base_root == levels.root() && prefetch.depth == depth,
        "the prefetched leaves were read from other levels"
    );
    assert!(leaves.windows(2).all(|w| w[0].0 < w[1].0), "the changed leaves come sorted and distinct");
    let mut out = StateUpdate {
        base_root: levels.root(),
        depth,
        grown: levels.grown,
        root: levels.root(),
        leaf_count: levels.leaf_count,
        leaves: Vec::new(),
        slots: Vec::new(),
    };
    // Each bottom subtree from its stored leaves and the changes under it.
    let mut changed: Vec<(usize, (Hash, Fill))> = Vec::new();
    // Under positions whose children the growing level holds, the children too
    // (hashed on the way to the position's own hash anyway: see `combine`).
    let mut grown = Vec::new();
    let mut rest = &leaves[..];
    while let Some(first) = rest.first() {
        let index = position(&first.0, depth);
        let n = rest.partition_point(|l| position(&l.0, depth) == index);
        let (changes, after) = rest.split_at(n);
        rest = after;
        let read_now;
        let stored = match prefetch.subtree(index) {
            Some(stored) => stored,
            None => {
                read_now = leaves_under(tree, depth, index)?;
                &read_now[..]
            }
        };
        let merged = merge(stored, changes);
        out.leaf_count += (merged.len() - stored.len()) as u64;
        let hash = match index < levels.grown {
            true => {
                // A child no change falls under keeps the hash the growing level
                // holds for it: only the other child's leaves are hashed again.
                let split = merged.partition_point(|l| !bit(&l.0, depth));
                let changed_split = changes.partition_point(|l| !bit(&l.0, depth));
                let halves = [(&merged[..split], changed_split > 0), (&merged[split..], changed_split < changes.len())];
                let [left, right] = [0, 1].map(|side| {
                    let (under, changed) = halves[side];
                    let child = 2 * index + side;
                    if !changed {
                        return levels.slot(depth + 1, child);
                    }
                    let (hash, fill) = (subtree_hash(depth + 1, under), Fill::of(under.len()));
                    grown.push(Slot { depth: (depth + 1) as u8, index: child as u32, hash, fill });
                    (hash, fill)
                });
                combine(left, right)
            }
            false => (subtree_hash(depth, &merged), Fill::of(merged.len())),
        };
        changed.push((index, hash));
    }
    let (slots, root) = rehash_upward(levels, changed);
    grown.extend(slots);
    (out.slots, out.root) = (grown, root.unwrap_or(out.root));
    out.leaves = leaves;
    Ok(out)
}

/// The positions above the changed bottom subtrees (`changed`, in index
/// order), each from its changed children and its unchanged ones in memory:
/// every changed position, deepest first, and the new root (`None` if nothing changed).
fn rehash_upward(levels: &Levels, mut changed: Vec<(usize, (Hash, Fill))>) -> (Vec<Slot>, Option<Hash>) {
    let mut slots = Vec::with_capacity(changed.len() * (levels.depth + 1));
    for d in (0..=levels.depth).rev() {
        slots.extend(changed.iter().map(|&(index, (hash, fill))| Slot {
            depth: d as u8,
            index: index as u32,
            hash,
            fill,
        }));
        if d == 0 {
            break;
        }
        let mut parents = Vec::with_capacity(changed.len());
        let mut next = changed.iter().peekable();
        while let Some(&(index, _)) = next.peek() {
            let parent = index / 2;
            let mut child = |i: usize| match next.next_if(|c| c.0 == i) {
                Some(&(_, slot)) => slot,
                None => levels.slot(d, i),
            };
            let left = child(2 * parent);
            let right = child(2 * parent + 1);
            parents.push((parent, combine(left, right)));
        }
        changed = parents;
    }
    (slots, changed.first().map(|&(_, (root, _))| root))
}

/// A whole tree in memory (leaves and levels): tests, benchmarks, the auditor's replay.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    /// The stored leaves. Change them only through [`MemoryTree::apply`] (tests break them on purpose).
    pub leaves: BTreeMap<Hash, Head>,
    levels: Levels,
}

impl MemoryTree {
    pub fn root(&self) -> Hash {
        self.levels.root()
    }

    /// Takes an update computed on this tree, as a store's commit does.
    pub fn apply(&mut self, update: &StateUpdate) {
        let growth = self.levels.grow(&self.leaves, update).expect("leaves in memory agree with the levels");
        self.leaves.extend(update.leaves.iter().copied());
        self.levels.apply(update);
        self.levels.extend(growth);
    }
}

impl LeafReader for MemoryTree {
    fn leaves_in(&self, from: &Hash, to_inclusive: &Hash) -> Result<Vec<(Hash, Head)>, Error> {
        self.leaves.leaves_in(from, to_inclusive)
    }
    fn leaf(&self, key_hash: &Hash) -> Result<Option<Head>, Error> {
        Ok(self.leaves.get(key_hash).copied())
    }
}

impl StateTreeReader for MemoryTree {
    fn levels(&self) -> &Levels {
        &self.levels
    }
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

/// The proof for `key` as of the tree's latest state: siblings from the
/// levels down to the bottom subtree, then from that subtree's leaves. The
/// proof is checked against the levels' root before it is returned, so
/// leaves that disagree with the levels are an error, never a bad proof.
pub fn prove<R: StateTreeReader + ?Sized>(tree: &R, key: &StateKey) -> Result<StateProof, Error> {
    let levels = tree.levels();
    let target = key_hash(key);
    let mut siblings = Vec::with_capacity(levels.depth + 8);
    let mut depth = 0;
    let index = loop {
        let index = position(&target, depth);
        if levels.fills[depth][index] != Fill::Many || depth == levels.depth {
            break index;
        }
        let other = 2 * index + usize::from(!bit(&target, depth));
        siblings.push(levels.hashes[depth + 1][other]);
        depth += 1;
    };
    let leaves = leaves_under(tree, depth, index)?;
    let leaf = prove_in(depth, &leaves, &target, &mut siblings);
    let proof = StateProof { leaf, siblings };
    proof.verify(&levels.root(), key).map_err(|e| Error::StateLeavesDisagree {
        depth,
        index: index as u64,
        detail: format!("the proof for key hash {} does not verify: {e}", hex::encode(target)),
    })?;
    Ok(proof)
}

/// The end of `target`'s path in the subtree at `depth` holding `leaves`,
/// pushing the siblings below `depth` on the way.
fn prove_in(depth: usize, leaves: &[(Hash, Head)], target: &Hash, siblings: &mut Vec<Hash>) -> ProofLeaf {
    match leaves {
        [] => ProofLeaf::Empty,
        [(key_hash, head)] if key_hash == target => ProofLeaf::Head(*head),
        [(key_hash, head)] => ProofLeaf::Other { key_hash: *key_hash, value_hash: head_value_hash(head) },
        _ => {
            let split = leaves.partition_point(|l| !bit(&l.0, depth));
            let (on, off) = leaves.split_at(split);
            let (on, off) = if bit(target, depth) { (off, on) } else { (on, off) };
            siblings.push(subtree_hash(depth + 1, off));
            prove_in(depth + 1, on, target, siblings)
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
    fn positions_and_spans_agree_with_bits() {
        // Goal: a key hash lies in the span of its own position at every depth, and its position
        // there is its first `depth` bits.
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&0xa5c3_0f01u32.to_be_bytes());
        k[31] = 7;
        for depth in 0..=LEVELS_DEPTH_MAX {
            let index = position(&k, depth);
            let from_bits = (0..depth).fold(0usize, |acc, d| acc * 2 + usize::from(bit(&k, d)));
            assert_eq!(index, from_bits, "depth {depth}");
            let (from, to) = span(depth, index);
            assert!(from <= k && k <= to, "depth {depth}");
            if depth > 0 {
                assert_eq!(span(depth, index ^ 1).0 > to, index & 1 == 0, "neighbour span at depth {depth}");
            }
        }
        assert_eq!(span(0, 0), ([0; 32], [0xff; 32]));
    }

    fn head(i: u64, version: u64) -> Head {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&i.to_le_bytes());
        id[8..16].copy_from_slice(&version.to_le_bytes());
        Head { id: crate::record::RecordId(id), version, index: i, status: crate::state::Status::Active }
    }

    fn block(keys: Range<u64>, version: u64) -> BTreeMap<StateKey, Head> {
        keys.map(|i| (StateKey { namespace: "land".into(), key: format!("p/{i}") }, head(i, version))).collect()
    }

    /// Levels `0..=D`, and `D + 1` as far as it has grown, are those computed from every leaf.
    fn assert_agrees_with_a_build(tree: &MemoryTree) {
        let levels = &tree.levels;
        let built = Levels::build_at_most(&tree.leaves, levels.leaf_count, levels.depth_max).unwrap();
        assert!(levels.depth <= built.depth, "{} keys: depth {} past {}", levels.leaf_count, levels.depth, built.depth);
        for d in 0..=levels.depth {
            assert!(levels.hashes[d] == built.hashes[d] && levels.fills[d] == built.fills[d], "depth {d}");
        }
        if levels.depth < levels.depth_max {
            let next = levels.depth + 1;
            assert_eq!(levels.hashes[next].len(), 2 * levels.grown);
            assert!(levels.hashes[next] == built.hashes[next][..2 * levels.grown], "the growing level");
            assert!(levels.fills[next] == built.fills[next][..2 * levels.grown], "the growing level's fills");
        }
    }

    #[test]
    fn the_next_level_grows_a_little_per_block_and_agrees_with_one_built_from_every_leaf() {
        // Goal: growing depth D + 1 a few positions per block (overwrites under grown positions
        // writing their children too) gives exactly the levels computed from every leaf, after every
        // block; unless a block outgrows the depth, no block grows more positions than it and the
        // block before add keys (the one that switched depth starts nothing); and the level is
        // complete half way to the doubling. Fails if an update under a grown position leaves its
        // children stale, or if the pace lags or runs ahead.
        let mut tree = MemoryTree::default();
        let (mut next, mut version, mut fresh_before) = (0u64, 1u64, 0u64);
        let mut switches = 0;
        for b in 0..90u64 {
            // New keys (7 to 150 a block) and overwrites of earlier keys spread over the tree.
            let fresh = 7 + (b * 37) % 144;
            let mut changes = block(next..next + fresh, 1);
            version += 1;
            changes.extend(block(0..next, version).into_iter().filter(|(_, h)| h.index % 11 == b % 11));
            next += fresh;
            let before = (tree.levels.depth, tree.levels.grown);
            tree.apply(&update(&tree, &changes).unwrap());
            let levels = &tree.levels;
            assert_eq!(levels.leaf_count, next);
            assert_agrees_with_a_build(&tree);
            assert_eq!(levels.depth, depth_for(next), "block {b}");
            if levels.depth > before.0 {
                switches += 1;
            } else {
                let bound = (fresh + fresh_before) as usize + 1;
                assert!(levels.grown - before.1 <= bound, "block {b}: {before:?} → {}", levels.grown);
                assert!(levels.grown >= growth_due(next, levels.depth), "block {b}: behind the pace");
                if next >= 3 << levels.depth {
                    assert_eq!(levels.grown, 1 << levels.depth, "block {b}: complete half way to the doubling");
                }
            }
            fresh_before = fresh;
        }
        assert!(switches >= 8, "{switches} switches");
    }

    /// An empty tree whose deepest level is `depth_max` instead of [`LEVELS_DEPTH_MAX`].
    fn tree_at_most(depth_max: usize) -> MemoryTree {
        MemoryTree { leaves: BTreeMap::new(), levels: Levels { depth_max, ..Levels::default() } }
    }

    #[test]
    fn at_the_deepest_level_bottom_subtrees_fill_up_and_nothing_grows_below() {
        // Goal: once the levels reach their deepest depth (2^24 positions, from 2^25 keys, in a
        // store; depth 3 here, from 16 keys) they stop deepening, no level grows below them, and
        // updates, proofs and builds stay right while the bottom subtrees fill up (here to ~40
        // leaves each). Reached two ways: block by block (the level below grows, becomes the
        // bottom at the cap and starts no other), and by a young chain's first block outgrowing
        // two depths at once (built from every leaf, at the cap). After every block the root is
        // the one computed from every head alone and the levels are those built from every leaf.
        // Fails if the cap is ignored anywhere (a level grown below it, a depth past it) or if an
        // update or proof breaks on large bottom subtrees.
        const CAP: usize = 3;
        for first_block in [5u64, 100] {
            let mut tree = tree_at_most(CAP);
            let mut all: BTreeMap<StateKey, Head> = BTreeMap::new();
            let (mut next, mut version) = (0u64, 1u64);
            let mut depths = Vec::new();
            for b in 0..40u64 {
                let fresh = if b == 0 { first_block } else { 3 + (b * 5) % 11 };
                let mut changes = block(next..next + fresh, 1);
                version += 1;
                changes.extend(block(0..next, version).into_iter().filter(|(_, h)| h.index % 5 == b % 5));
                next += fresh;
                all.extend(changes.iter().map(|(k, h)| (k.clone(), *h)));
                tree.apply(&update(&tree, &changes).unwrap());
                let levels = &tree.levels;
                assert_eq!(tree.root(), root_of(&all), "first block {first_block}, block {b}: the root");
                assert_eq!(levels.depth, depth_at_most(next, CAP), "first block {first_block}, block {b}");
                assert_agrees_with_a_build(&tree);
                if levels.depth == CAP {
                    assert_eq!((levels.hashes.len(), levels.grown), (CAP + 1, 0), "nothing grows below the cap");
                }
                depths.push(levels.depth);
            }
            assert_eq!(depths.last(), Some(&CAP), "{next} keys");
            assert!(next >= 40 << CAP, "bottom subtrees of ~40 leaves: {next} keys");
            if first_block == 100 {
                assert_eq!(depths[0], CAP, "a first block of 100 keys goes straight to the cap");
            } else {
                assert!(depths.contains(&(CAP - 1)), "the cap reached by growing: {depths:?}");
            }
            for (i, (key, head)) in all.iter().enumerate().filter(|(i, _)| i % 13 == 0) {
                let proof = prove(&tree, key).unwrap();
                assert_eq!(proof.verify(&tree.root(), key).unwrap(), Some(*head), "key {i}");
            }
            let absent = StateKey { namespace: "land".into(), key: "never".into() };
            assert_eq!(prove(&tree, &absent).unwrap().verify(&tree.root(), &absent).unwrap(), None);
        }
    }

    #[test]
    fn stored_leaves_that_disagree_with_the_levels_fail_the_growth_step() {
        // Goal: the growth step checks each position's children against the levels, so a stored
        // leaf changed behind the levels' back is an error naming the position, before any write.
        let mut tree = MemoryTree::default();
        for first in (0..1200).step_by(100) {
            tree.apply(&update(&tree, &block(first..first + 100, 1)).unwrap());
        }
        let (depth, grown) = (tree.levels.depth, tree.levels.grown);
        assert_eq!((depth, grown), (9, growth_due(1200, 9)));
        // A leaf the next block's growth reads (positions `grown..growth_due(1210, 9)`).
        let victim = *tree.leaves.keys().find(|k| position(k, depth) >= grown).unwrap();
        assert!(position(&victim, depth) < growth_due(1210, 9), "a stored leaf under the next positions");
        let up = update(&tree, &block(1200..1210, 1)).unwrap();
        assert!(tree.levels.grow(&tree.leaves, &up).is_ok(), "the intact leaves agree");
        tree.leaves.insert(victim, head(99_999, 7));
        match tree.levels.grow(&tree.leaves, &up) {
            Err(Error::StateLeavesDisagree { depth: 9, index, detail }) => {
                assert_eq!(index, position(&victim, depth) as u64);
                assert!(detail.contains("leaves stored under it hash to"), "{detail}")
            }
            other => panic!("expected the disagreement at depth 9: {other:?}"),
        }
    }

    #[test]
    fn depth_keeps_bottom_subtrees_at_2_to_4_leaves() {
        // Goal: the levels' depth grows by one each time the number of keys doubles, from 4 keys,
        // and stops at the bound.
        for (keys, depth) in [(0, 0), (3, 0), (4, 1), (7, 1), (8, 2), (1 << 20, 19), (u64::MAX, LEVELS_DEPTH_MAX)] {
            assert_eq!(depth_for(keys), depth, "{keys} keys");
        }
        for keys in [16u64, 100, 4096, 1_000_000, 30_000_000] {
            let per_bottom = keys as f64 / (1u64 << depth_for(keys)) as f64;
            assert!((2.0..4.0).contains(&per_bottom), "{keys} keys: {per_bottom} per bottom subtree");
        }
    }
}
