//! Prints the cost of authenticated record state: a block of 1,000 changed keys
//! (500 overwrites, 500 new) on a tree of N keys (default 1,000,000), the cost
//! of rebuilding the in-memory levels from every leaf (as a store does on open),
//! and the size, generation and verification time of proofs. Leaves live in a
//! `BTreeMap`, so this measures hashing and leaf traffic, not RocksDB.
//!
//! `cargo run --release -p annal-ledger --no-default-features --example state_tree_bench [-- N]`

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Instant;

use annal_ledger::error::Error;
use annal_ledger::merkle::Hash;
use annal_ledger::record::RecordId;
use annal_ledger::state::{Head, StateKey, Status};
use annal_ledger::state_tree::{prove, update, LeafReader, Levels, MemoryTree, StateTreeReader};

/// A tree in memory, counting range scans and leaves read.
struct Counting {
    tree: MemoryTree,
    scans: Cell<usize>,
    leaves_read: Cell<usize>,
}

impl LeafReader for Counting {
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

impl StateTreeReader for Counting {
    fn levels(&self) -> &Levels {
        self.tree.levels()
    }
}

fn key(i: u64) -> StateKey {
    StateKey { namespace: "land-titles".into(), key: format!("parcel/{i:08}") }
}

fn head(i: u64, version: u64) -> Head {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&i.to_le_bytes());
    id[8..16].copy_from_slice(&version.to_le_bytes());
    Head { id: RecordId(id), version, index: i, status: Status::Active }
}

fn main() {
    let n: u64 = std::env::args().nth(1).map(|s| s.parse().expect("N is a number")).unwrap_or(1_000_000);
    let mut db = Counting { tree: MemoryTree::default(), scans: Cell::new(0), leaves_read: Cell::new(0) };
    let start = Instant::now();
    let chunk = 10_000;
    for first in (0..n).step_by(chunk) {
        let block: BTreeMap<_, _> = (first..(first + chunk as u64).min(n)).map(|i| (key(i), head(i, 1))).collect();
        let up = update(&db, &block).expect("in-memory update");
        db.tree.apply(&up);
    }
    let levels = db.tree.levels();
    println!(
        "built {n} keys in blocks of {chunk}: {:.1?}; levels of depth {} ({} bottom subtrees), {} bytes in memory",
        start.elapsed(),
        levels.depth(),
        1u64 << levels.depth(),
        levels.memory_bytes()
    );
    let t = Instant::now();
    let rebuilt = Levels::build(&db.tree.leaves, n).expect("in-memory rebuild");
    println!("levels rebuilt from every leaf (as on open): {:.1?}", t.elapsed());
    assert_eq!(rebuilt.root(), db.tree.root());
    for round in 0..3u64 {
        let mut block: BTreeMap<_, _> = (0..500).map(|j| (key(j * 1999 % n + round), head(j, 2 + round))).collect();
        block.extend((0..500).map(|j| (key(n + round * 1000 + j), head(j, 1))));
        db.scans.set(0);
        db.leaves_read.set(0);
        let t = Instant::now();
        let up = update(&db, &block).expect("in-memory update");
        let took = t.elapsed();
        println!(
            "block of {} changes: {:.1?}, {} range scans reading {} leaves, {} leaves written ({} bytes with keys), \
             {} level positions changed",
            block.len(),
            took,
            db.scans.get(),
            db.leaves_read.get(),
            up.leaves.len(),
            up.leaves.len() * (32 + 53),
            up.slots.len()
        );
        db.tree.apply(&up);
    }
    let queries: Vec<StateKey> = (0..1000u64).map(|j| key(j * 7919 % (2 * n))).collect();
    let t = Instant::now();
    let proofs: Vec<_> = queries.iter().map(|k| prove(&db, k).expect("in-memory proof")).collect();
    let generate = t.elapsed() / queries.len() as u32;
    let root = db.tree.root();
    let sizes: Vec<usize> = proofs.iter().map(|p| p.to_bytes().len()).collect();
    let siblings: usize = proofs.iter().map(|p| p.siblings.len()).sum();
    let t = Instant::now();
    let present = queries.iter().zip(&proofs).filter(|(k, p)| p.verify(&root, k).expect("verifies").is_some()).count();
    let verify = t.elapsed() / queries.len() as u32;
    println!(
        "proofs ({present} present, {} absent): generate {generate:.1?} (each checked before it is returned), \
         verify {verify:.1?}, {:.1} siblings and {} bytes on average, {} at most",
        queries.len() - present,
        siblings as f64 / proofs.len() as f64,
        sizes.iter().sum::<usize>() / sizes.len(),
        sizes.iter().max().expect("1000 proofs")
    );
}
