//! Prints the cost of authenticated record state: a block of 1,000 changed keys
//! (500 overwrites, 500 new) on a tree of N keys (default 1,000,000), and the
//! size, generation and verification time of proofs. Nodes live in memory, so
//! this measures hashing and node traffic, not RocksDB.
//!
//! `cargo run --release -p annal-ledger --no-default-features --example state_tree_bench [-- N]`

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use annal_ledger::error::Error;
use annal_ledger::merkle::Hash;
use annal_ledger::record::RecordId;
use annal_ledger::state::{Head, StateKey, Status};
use annal_ledger::state_tree::{prove, update, StateTreeReader, EMPTY_ROOT};

struct Counting {
    nodes: HashMap<Hash, Vec<u8>>,
    reads: Cell<usize>,
}

impl StateTreeReader for Counting {
    type Error = Error;
    fn get(&self, node_key: &Hash) -> Result<Option<Vec<u8>>, Error> {
        self.reads.set(self.reads.get() + 1);
        Ok(self.nodes.get(node_key).cloned())
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
    let mut db = Counting { nodes: HashMap::new(), reads: Cell::new(0) };
    let mut root = EMPTY_ROOT;
    let start = Instant::now();
    let chunk = 10_000;
    for first in (0..n).step_by(chunk) {
        let block: BTreeMap<_, _> = (first..(first + chunk as u64).min(n)).map(|i| (key(i), head(i, 1))).collect();
        let up = update(&db, &root, &block).expect("in-memory update");
        db.nodes.extend(up.nodes);
        root = up.root;
    }
    println!("built {n} keys in blocks of {chunk}: {:.1?}, {} nodes stored", start.elapsed(), db.nodes.len());
    for round in 0..3u64 {
        let mut block: BTreeMap<_, _> = (0..500).map(|j| (key(j * 1999 % n + round), head(j, 2 + round))).collect();
        block.extend((0..500).map(|j| (key(n + round * 1000 + j), head(j, 1))));
        db.reads.set(0);
        let t = Instant::now();
        let up = update(&db, &root, &block).expect("in-memory update");
        let took = t.elapsed();
        let bytes: usize = up.nodes.iter().map(|(k, v)| k.len() + v.len()).sum();
        println!(
            "block of {} changes: {:.1?}, {} node reads, {} nodes written ({} bytes with keys), {} stale",
            block.len(),
            took,
            db.reads.get(),
            up.nodes.len(),
            bytes,
            up.stale.len()
        );
        db.nodes.extend(up.nodes);
        root = up.root;
    }
    let queries: Vec<StateKey> = (0..1000u64).map(|j| key(j * 7919 % (2 * n))).collect();
    let t = Instant::now();
    let proofs: Vec<_> = queries.iter().map(|k| prove(&db, &root, k).expect("in-memory proof")).collect();
    let generate = t.elapsed() / queries.len() as u32;
    let sizes: Vec<usize> = proofs.iter().map(|p| p.to_bytes().len()).collect();
    let siblings: usize = proofs.iter().map(|p| p.siblings.len()).sum();
    let t = Instant::now();
    let present = queries.iter().zip(&proofs).filter(|(k, p)| p.verify(&root, k).expect("verifies").is_some()).count();
    let verify = t.elapsed() / queries.len() as u32;
    println!(
        "proofs ({present} present, {} absent): generate {generate:.1?}, verify {verify:.1?}, {:.1} siblings and {} bytes on average, {} at most",
        queries.len() - present,
        siblings as f64 / proofs.len() as f64,
        sizes.iter().sum::<usize>() / sizes.len(),
        sizes.iter().max().expect("1000 proofs")
    );
}
