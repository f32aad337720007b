//! Records accepted but not yet in a final block, in arrival order, bounded by count and bytes.
//!
//! A record enters once its stateless rules, nonce (against committed state)
//! and signature have been checked, so a record in the pool never needs its
//! signature checked again on this node. It leaves only when a final block
//! carries it (appended or refused at execution): proposing a block does not
//! remove anything, so a block that never becomes final loses nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use annal_ledger::record::{Encoded, RecordId};

pub struct Mempool {
    /// By id; a hash map, since a full pool holds hundreds of thousands of
    /// records and admission asks it about every one (it is never iterated:
    /// `order` gives the order).
    entries: HashMap<RecordId, Entry>,
    /// Arrival order: sequence number → id.
    order: BTreeMap<u64, RecordId>,
    next_seq: u64,
    bytes: usize,
    records_max: usize,
    bytes_max: usize,
}

struct Entry {
    seq: u64,
    record: Arc<Encoded>,
}

/// Why a record was not added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Full {
    Records { max: usize },
    Bytes { max: usize },
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Full::Records { max } => write!(f, "the node holds its limit of {max} pending records"),
            Full::Bytes { max } => write!(f, "the node holds its limit of {max} bytes of pending records"),
        }
    }
}

impl Mempool {
    pub fn new(records_max: usize, bytes_max: usize) -> Mempool {
        Mempool { entries: HashMap::new(), order: BTreeMap::new(), next_seq: 0, bytes: 0, records_max, bytes_max }
    }

    /// Adds a checked record. `Ok(false)` if it was already pending.
    pub fn insert(&mut self, record: Arc<Encoded>) -> Result<bool, Full> {
        let id = record.id;
        if self.entries.contains_key(&id) {
            return Ok(false);
        }
        self.room_for(1, record.bytes.len())?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += record.bytes.len();
        self.order.insert(seq, id);
        self.entries.insert(id, Entry { seq, record });
        Ok(true)
    }

    /// Whether `records` more records of `bytes` bytes in all would fit now:
    /// checked before their signatures, so a full pool costs no verification.
    pub fn room_for(&self, records: usize, bytes: usize) -> Result<(), Full> {
        if self.entries.len() + records > self.records_max {
            return Err(Full::Records { max: self.records_max });
        }
        if self.bytes + bytes > self.bytes_max {
            return Err(Full::Bytes { max: self.bytes_max });
        }
        Ok(())
    }

    pub fn contains(&self, id: &RecordId) -> bool {
        self.entries.contains_key(id)
    }

    /// Removes a record that a final block carried; true if it was pending.
    pub fn remove(&mut self, id: &RecordId) -> bool {
        match self.entries.remove(id) {
            Some(e) => {
                self.order.remove(&e.seq);
                self.bytes -= e.record.bytes.len();
                true
            }
            None => false,
        }
    }

    /// The oldest records not in `exclude`, at most `records_max` of them and
    /// `bytes_max` bytes: a block's payload. Nothing is removed.
    pub fn select(&self, records_max: usize, bytes_max: usize, exclude: &BTreeSet<RecordId>) -> Vec<Arc<Encoded>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for id in self.order.values() {
            if out.len() >= records_max {
                break;
            }
            if exclude.contains(id) {
                continue;
            }
            let e = &self.entries[id].record;
            if bytes + e.bytes.len() > bytes_max {
                break;
            }
            bytes += e.bytes.len();
            out.push(e.clone());
        }
        out
    }

    /// The decoded record, if pending (its signature was checked on entry).
    pub fn get(&self, id: &RecordId) -> Option<&Arc<Encoded>> {
        self.entries.get(id).map(|e| &e.record)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn records_max(&self) -> usize {
        self.records_max
    }

    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annal_ledger::keys::SecretKey;
    use annal_ledger::record::{Body, Op, Record};

    fn record(nonce: u64, body: usize) -> Arc<Encoded> {
        let key = SecretKey::from_seed([3; 32]);
        let r = Record {
            chain_id: "c".into(),
            namespace: "ns".into(),
            key: format!("k{nonce}"),
            op: Op::Publish,
            body: Body::Inline(vec![0; body]),
            metadata: Default::default(),
            supersedes: None,
            version: 1,
            submitter: key.public(),
            nonce,
        }
        .sign(&key);
        Arc::new(Encoded::from(r))
    }

    /// Goal: the pool refuses past its count and byte limits, dedups, and frees room on removal.
    #[test]
    fn bounded_by_count_and_bytes() {
        let (a, b, c) = (record(1, 10), record(2, 10), record(3, 10));
        let mut pool = Mempool::new(2, 1 << 20);
        assert_eq!(pool.insert(a.clone()), Ok(true));
        assert_eq!(pool.insert(a.clone()), Ok(false));
        assert_eq!(pool.room_for(1, 1), Ok(()));
        assert_eq!(pool.insert(b.clone()), Ok(true));
        assert_eq!(pool.room_for(1, 1), Err(Full::Records { max: 2 }));
        assert_eq!(pool.insert(c.clone()), Err(Full::Records { max: 2 }));
        assert!(pool.remove(&a.id));
        assert!(!pool.remove(&a.id));
        assert_eq!(pool.insert(c.clone()), Ok(true));
        assert_eq!(pool.len(), 2);

        let max = a.bytes.len() + b.bytes.len();
        let mut pool = Mempool::new(10, max);
        pool.insert(a.clone()).unwrap();
        assert_eq!(pool.room_for(1, b.bytes.len() + 1), Err(Full::Bytes { max }));
        pool.insert(b.clone()).unwrap();
        assert_eq!(pool.insert(c), Err(Full::Bytes { max }));
        assert_eq!(pool.bytes(), max);
    }

    /// Goal: a payload takes the oldest records first, skips excluded ones and respects both limits.
    #[test]
    fn select_in_arrival_order() {
        let rs: Vec<_> = (1..=5).map(|n| record(n, 100)).collect();
        let mut pool = Mempool::new(10, 1 << 20);
        for r in &rs {
            pool.insert(r.clone()).unwrap();
        }
        let exclude = BTreeSet::from([rs[1].id]);
        let got = pool.select(3, 1 << 20, &exclude);
        assert_eq!(got, vec![rs[0].clone(), rs[2].clone(), rs[3].clone()]);
        let got = pool.select(10, rs[0].bytes.len() * 2, &BTreeSet::new());
        assert_eq!(got.len(), 2);
        assert_eq!(pool.len(), 5, "selecting removes nothing");
    }
}
