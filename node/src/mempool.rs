//! Records accepted but not yet in a final block, in arrival order, bounded by count and bytes.
//!
//! A record enters once its stateless rules, nonce (against committed state)
//! and signature have been checked, so a record in the pool never needs its
//! signature checked again on this node. It leaves only when a final block
//! carries it (appended or refused at execution): proposing a block does not
//! remove anything, so a block that never becomes final loses nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annal_ledger::keys::PublicKey;
use annal_ledger::record::{Encoded, RecordId};
// Seeded per process, as std's SipHash is, and a few times cheaper on 32-byte keys.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

pub struct Mempool {
    /// By id; a hash map, since a full pool holds hundreds of thousands of
    /// records and admission asks it about every one (it is never iterated:
    /// `order` gives the order).
    entries: HashMap<RecordId, Entry>,
    /// Arrival order: sequence number → id.
    order: BTreeMap<u64, RecordId>,
    /// Each submitter's records in nonce order (a set per submitter: one
    /// set of every `(submitter, nonce, id)` compared 72-byte keys on each
    /// insert and removal; docs/BENCHMARKS.md, session 17). A submitter is
    /// here only while it has a record pending.
    by_submitter: HashMap<PublicKey, BTreeSet<(u64, RecordId)>>,
    next_seq: u64,
    bytes: usize,
    records_max: usize,
    bytes_max: usize,
}

struct Entry {
    seq: u64,
    arrived: Instant,
    record: Arc<Encoded>,
}

/// Where a record came from, which decides how much of the pool it may fill.
///
/// Records from this node's API fill at most half the pool (by count and by
/// bytes); the other half is kept for the records the other validators
/// gossip. A validator that refused a peer's records for want of room cannot
/// rebuild a proposal naming them from its pool and must fetch the whole
/// proposal from the leader (ADR 0008): under sustained load, with every pool
/// full of its own API's records, about a quarter of proposals were fetched
/// (docs/BENCHMARKS.md, session 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// This node's API: up to half the limits (rounded up).
    Api,
    /// Another validator's gossip: up to the limits.
    Peer,
}

/// Why a record was not added: the pool holds `max` records or bytes, as
/// many as it takes from `source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Full {
    Records { max: usize, source: Source },
    Bytes { max: usize, source: Source },
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (max, unit, source) = match self {
            Full::Records { max, source } => (max, "pending records", source),
            Full::Bytes { max, source } => (max, "bytes of pending records", source),
        };
        match source {
            Source::Api => write!(
                f,
                "the node holds {max} {unit}, as many as it takes from its API (half its limit: \
                 the other half is kept for records gossiped by the other validators)"
            ),
            Source::Peer => write!(f, "the node holds its limit of {max} {unit}"),
        }
    }
}

impl Mempool {
    pub fn new(records_max: usize, bytes_max: usize) -> Mempool {
        Mempool {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            by_submitter: HashMap::new(),
            next_seq: 0,
            bytes: 0,
            records_max,
            bytes_max,
        }
    }

    /// Adds a checked record. `Ok(false)` if it was already pending.
    pub fn insert(&mut self, record: Arc<Encoded>, source: Source) -> Result<bool, Full> {
        let id = record.id;
        let room = self.room_for(1, record.bytes().len(), source);
        // One probe of the map for both the question and the insert: each
        // probe of a pool this size is a cache miss (docs/BENCHMARKS.md, session 19).
        let std::collections::hash_map::Entry::Vacant(slot) = self.entries.entry(id) else {
            return Ok(false);
        };
        room?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += record.bytes().len();
        self.order.insert(seq, id);
        self.by_submitter.entry(*record.submitter()).or_default().insert((record.nonce(), id));
        slot.insert(Entry { seq, arrived: Instant::now(), record });
        Ok(true)
    }

    /// How many records have entered the pool since it was made: it changes
    /// only when one does.
    pub fn arrivals(&self) -> u64 {
        self.next_seq
    }

    /// Whether `records` more records of `bytes` bytes in all would fit now in
    /// the share of the pool `source` may fill: checked before their
    /// signatures, so a full pool costs no verification.
    pub fn room_for(&self, records: usize, bytes: usize, source: Source) -> Result<(), Full> {
        let (records_max, bytes_max) = match source {
            Source::Api => (self.records_max.div_ceil(2), self.bytes_max.div_ceil(2)),
            Source::Peer => (self.records_max, self.bytes_max),
        };
        if self.entries.len() + records > records_max {
            return Err(Full::Records { max: records_max, source });
        }
        if self.bytes + bytes > bytes_max {
            return Err(Full::Bytes { max: bytes_max, source });
        }
        Ok(())
    }

    pub fn contains(&self, id: &RecordId) -> bool {
        self.entries.contains_key(id)
    }

    /// Removes a record that a final block carried; when it was pending, the
    /// time it entered the pool (from which the node measures its finality).
    pub fn remove(&mut self, id: &RecordId) -> Option<Instant> {
        match self.entries.remove(id) {
            Some(e) => {
                self.order.remove(&e.seq);
                let r = &e.record;
                if let Some(nonces) = self.by_submitter.get_mut(r.submitter()) {
                    nonces.remove(&(r.nonce(), *id));
                    if nonces.is_empty() {
                        self.by_submitter.remove(r.submitter());
                    }
                }
                self.bytes -= e.record.bytes().len();
                Some(e.arrived)
            }
            None => None,
        }
    }

    /// A block's payload: at most `records_max` records and `bytes_max`
    /// bytes, none in `exclude` (records in blocks not yet final). Submitters
    /// come in the order of their oldest pending record, and each one's
    /// records in nonce order. Nonces must rise but may skip; still, a record
    /// whose nonce skips past the next one expected (after `last_final` and
    /// after the submitter's records in `exclude`) waits until it has been
    /// pending for `gap_wait`: the lower record is most likely still on its
    /// way (a retried request, a gossip batch checked out of order), and a
    /// block carrying the higher one first would get the lower one refused.
    /// A record at or below a nonce final or in flight is left out (the next
    /// commit for its submitter purges it). Nothing is removed.
    pub fn select(
        &self,
        records_max: usize,
        bytes_max: usize,
        exclude: &BTreeSet<RecordId>,
        last_final: impl Fn(&PublicKey) -> Option<u64>,
        gap_wait: Duration,
    ) -> Vec<Arc<Encoded>> {
        let now = Instant::now();
        // Each submitter's highest nonce in blocks not yet final.
        let mut in_flight: HashMap<PublicKey, u64> = HashMap::new();
        for e in exclude.iter().filter_map(|id| self.entries.get(id)) {
            let r = &e.record;
            let highest = in_flight.entry(*r.submitter()).or_insert(r.nonce());
            *highest = (*highest).max(r.nonce());
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut seen = HashSet::new();
        for id in self.order.values() {
            if seen.len() == self.by_submitter.len() {
                // Every submitter's records were looked at: the rest of `order` repeats them.
                break;
            }
            let submitter = *self.entries[id].record.submitter();
            if !seen.insert(submitter) {
                continue;
            }
            // Below `next` every record is final, in flight or overtaken (a commit purges those).
            let mut next = last_final(&submitter).max(in_flight.get(&submitter).copied()).map(|n| n.saturating_add(1));
            for (nonce, id) in self.nonces_of(&submitter, next.unwrap_or(0), u64::MAX) {
                let e = &self.entries[&id];
                if next.is_some_and(|next| nonce > next) && now.duration_since(e.arrived) < gap_wait {
                    break;
                }
                if out.len() >= records_max || bytes + e.record.bytes().len() > bytes_max {
                    return out;
                }
                bytes += e.record.bytes().len();
                out.push(e.record.clone());
                next = Some(nonce.saturating_add(1));
            }
        }
        out
    }

    /// `submitter`'s pending records with nonces from `from` to `to`, in nonce order.
    fn nonces_of(&self, submitter: &PublicKey, from: u64, to: u64) -> impl Iterator<Item = (u64, RecordId)> + '_ {
        let (lowest, highest) = (RecordId([0; 32]), RecordId([0xff; 32]));
        self.by_submitter
            .get(submitter)
            .into_iter()
            .flat_map(move |nonces| nonces.range((from, lowest)..=(to, highest)).copied())
    }

    /// Removes `submitter`'s records with nonces at or below `last` (its last
    /// final nonce): no block can take them any more. Returns them.
    pub fn purge_stale(&mut self, submitter: &PublicKey, last: u64) -> Vec<Arc<Encoded>> {
        let stale: Vec<RecordId> = self.nonces_of(submitter, 0, last).map(|(_, id)| id).collect();
        let mut out = Vec::with_capacity(stale.len());
        for id in stale {
            if let Some(r) = self.get(&id).cloned() {
                self.remove(&id);
                out.push(r);
            }
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
        record_by(3, nonce, body)
    }

    fn record_by(signer: u8, nonce: u64, body: usize) -> Arc<Encoded> {
        let key = SecretKey::from_seed([signer; 32]);
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
        assert_eq!(pool.insert(a.clone(), Source::Peer), Ok(true));
        assert_eq!(pool.insert(a.clone(), Source::Peer), Ok(false));
        assert_eq!(pool.room_for(1, 1, Source::Peer), Ok(()));
        assert_eq!(pool.insert(b.clone(), Source::Peer), Ok(true));
        assert_eq!(pool.room_for(1, 1, Source::Peer), Err(Full::Records { max: 2, source: Source::Peer }));
        assert_eq!(pool.insert(c.clone(), Source::Peer), Err(Full::Records { max: 2, source: Source::Peer }));
        assert!(pool.remove(&a.id).is_some());
        assert!(pool.remove(&a.id).is_none());
        assert_eq!(pool.insert(c.clone(), Source::Peer), Ok(true));
        assert_eq!(pool.len(), 2);

        let max = a.bytes().len() + b.bytes().len();
        let mut pool = Mempool::new(10, max);
        pool.insert(a.clone(), Source::Peer).unwrap();
        assert_eq!(pool.room_for(1, b.bytes().len() + 1, Source::Peer), Err(Full::Bytes { max, source: Source::Peer }));
        pool.insert(b.clone(), Source::Peer).unwrap();
        assert_eq!(pool.insert(c, Source::Peer), Err(Full::Bytes { max, source: Source::Peer }));
        assert_eq!(pool.bytes(), max);
    }

    /// Goal: records from the API fill at most half the pool (count and bytes,
    /// rounded up); gossiped records fill the rest, and the API's share counts them.
    #[test]
    fn the_api_fills_half_and_peers_the_rest() {
        let rs: Vec<_> = (1..=6).map(|n| record(n, 10)).collect();
        let mut pool = Mempool::new(5, 1 << 20);
        assert_eq!(pool.insert(rs[0].clone(), Source::Api), Ok(true));
        assert_eq!(pool.insert(rs[1].clone(), Source::Peer), Ok(true));
        assert_eq!(pool.insert(rs[2].clone(), Source::Api), Ok(true));
        let api_full = Full::Records { max: 3, source: Source::Api };
        assert_eq!(pool.insert(rs[3].clone(), Source::Api), Err(api_full.clone()));
        assert_eq!(pool.room_for(1, 0, Source::Api), Err(api_full));
        assert!(pool.insert(rs[2].clone(), Source::Api) == Ok(false), "a pending record is pending");
        assert_eq!(pool.insert(rs[3].clone(), Source::Peer), Ok(true));
        assert_eq!(pool.insert(rs[4].clone(), Source::Peer), Ok(true));
        assert_eq!(pool.insert(rs[5].clone(), Source::Peer), Err(Full::Records { max: 5, source: Source::Peer }));
        assert!(Full::Records { max: 3, source: Source::Api }.to_string().contains("half its limit"));

        let one = rs[0].bytes().len();
        let mut pool = Mempool::new(10, 4 * one);
        assert_eq!(pool.insert(rs[0].clone(), Source::Api), Ok(true));
        assert_eq!(pool.room_for(1, one, Source::Api), Ok(()));
        assert_eq!(pool.room_for(1, one + 1, Source::Api), Err(Full::Bytes { max: 2 * one, source: Source::Api }));
        assert_eq!(pool.room_for(2, 2 * one, Source::Peer), Ok(()));
    }

    const NO_WAIT: Duration = Duration::ZERO;
    const LONG_WAIT: Duration = Duration::from_secs(3600);

    /// Goal: a payload takes submitters in the order of their oldest record,
    /// skips excluded records, and respects both limits.
    #[test]
    fn select_in_arrival_order() {
        let rs: Vec<_> = (1..=5u8).map(|n| record_by(n, 1, 100)).collect();
        let mut pool = Mempool::new(10, 1 << 20);
        for r in &rs {
            pool.insert(r.clone(), Source::Peer).unwrap();
        }
        let exclude = BTreeSet::from([rs[1].id]);
        let got = pool.select(3, 1 << 20, &exclude, |_| None, LONG_WAIT);
        assert_eq!(got, vec![rs[0].clone(), rs[2].clone(), rs[3].clone()]);
        let got = pool.select(10, rs[0].bytes().len() * 2, &BTreeSet::new(), |_| None, LONG_WAIT);
        assert_eq!(got.len(), 2);
        assert_eq!(pool.len(), 5, "selecting removes nothing");
    }

    /// Goal: one submitter's records go in nonce order whatever order they
    /// arrived in; a record past a gap waits (for the lower nonce, or for
    /// `gap_wait`), counting from the last final nonce and from records in
    /// blocks not yet final; a stale nonce is not held back.
    #[test]
    fn nonce_order_and_gaps() {
        let (n1, n2, n3, n5) = (record(1, 10), record(2, 10), record(3, 10), record(5, 10));
        let mut pool = Mempool::new(10, 1 << 20);
        for r in [&n3, &n1, &n5, &n2] {
            pool.insert(r.clone(), Source::Peer).unwrap();
        }
        let none = BTreeSet::new();
        assert_eq!(pool.select(10, 1 << 20, &none, |_| None, LONG_WAIT), vec![n1.clone(), n2.clone(), n3.clone()]);
        assert_eq!(
            pool.select(10, 1 << 20, &none, |_| None, NO_WAIT),
            vec![n1.clone(), n2.clone(), n3.clone(), n5.clone()],
            "past gap_wait the skip is taken"
        );
        // 1 and 2 in a pending block: 3 is next.
        let pending = BTreeSet::from([n1.id, n2.id]);
        assert_eq!(pool.select(10, 1 << 20, &pending, |_| None, LONG_WAIT), vec![n3.clone()]);
        // 3 final already: 5 must wait for 4 ...
        pool.remove(&n1.id);
        pool.remove(&n2.id);
        pool.remove(&n3.id);
        assert!(pool.select(10, 1 << 20, &none, |_| Some(3), LONG_WAIT).is_empty());
        let n4 = record(4, 10);
        pool.insert(n4.clone(), Source::Peer).unwrap();
        assert_eq!(pool.select(10, 1 << 20, &none, |_| Some(3), LONG_WAIT), vec![n4.clone(), n5.clone()]);
        // ... and a nonce at or below the last final one is left out, for a commit to purge.
        let stale = record(2, 20);
        pool.insert(stale.clone(), Source::Peer).unwrap();
        assert_eq!(pool.select(1, 1 << 20, &none, |_| Some(3), LONG_WAIT), vec![n4.clone()]);
        assert_eq!(pool.purge_stale(stale.submitter(), 3), vec![stale]);
        assert_eq!(pool.len(), 2);
    }

    /// Goal: a submitter whose records all left holds no room in the pool,
    /// and a submitter whose oldest record arrived after many of another's is
    /// still taken.
    #[test]
    fn submitters_leave_with_their_last_record() {
        let mut pool = Mempool::new(100, 1 << 20);
        let a: Vec<_> = (1..=20).map(|n| record_by(1, n, 10)).collect();
        let b = record_by(2, 1, 10);
        for r in a.iter().chain([&b]) {
            pool.insert(r.clone(), Source::Peer).unwrap();
        }
        let none = BTreeSet::new();
        let got = pool.select(100, 1 << 20, &none, |_| None, LONG_WAIT);
        assert_eq!(got.len(), 21);
        assert_eq!(got.last(), Some(&b));
        assert_eq!(pool.by_submitter.len(), 2);
        assert!(pool.remove(&b.id).is_some());
        assert_eq!(pool.by_submitter.len(), 1, "a submitter with nothing pending is gone");
        assert_eq!(pool.purge_stale(a[0].submitter(), 20).len(), 20);
        assert!(pool.by_submitter.is_empty() && pool.is_empty());
    }
}
