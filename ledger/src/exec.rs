//! Executing a block: check every record, update state, extend the global log.
//!
//! `execute` is the ledger's one entry for turning an ordered list of records
//! into state changes and new log nodes. It is deterministic: the same
//! committed state, frontier and records give the same bytes on every machine.
//! Nothing here writes to disk; the store commits an `Executed` in one batch.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;

use crate::block::{Header, Height, ValidatorSet, View};
use crate::codec;
use crate::error::Error;
use crate::gov::{BlockGov, GovUpdate, Governance, GOV_NAMESPACE};
use crate::keys::{verify_cofactored, Domain, Message, PublicKey, Signature};
use crate::merkle::{self, Frontier, Hash};
use crate::record::{Encoded, RecordId, RecordRef, SignedRecord};
use crate::state::{Overlay, Rules, StateView};
use crate::state_tree::{self, key_hash_of, Prefetch, StateTreeReader, StateUpdate};

/// Whether `execute` checks the records' signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signatures {
    /// Verify every signature (in one batch).
    Verify,
    /// The caller verified each signature already (the node does, once, at mempool entry).
    Verified,
    /// The caller checked them, on a thread of its own (`annal audit` does):
    /// the position of the first record whose signature does not verify, if any.
    Checked(Option<usize>),
}

/// The outcome of executing one block's records.
#[derive(Debug)]
pub struct Executed<'a> {
    /// Log index of the block's first record.
    pub first_index: u64,
    pub ids: Vec<RecordId>,
    /// Canonical bytes of each signed record, in block order: borrowed from
    /// the records executed when they outlive this (copying them was ~1 % of
    /// a validator at rate max: an allocation and a copy per record, then a free).
    pub records: Vec<Cow<'a, [u8]>>,
    /// Last nonce of every submitter the block touched.
    pub nonces: BTreeMap<PublicKey, u64>,
    /// Newly completed log nodes `(level, index, hash)`.
    pub nodes: Vec<(u8, u64, Hash)>,
    /// The log's right edge after the block.
    pub frontier: Frontier,
    pub records_root: Hash,
    /// Root of authenticated record state after this block (`state_tree`).
    pub state_root: Hash,
    /// The state tree's change: leaf puts and in-memory level positions, applied at commit.
    pub state: StateUpdate,
    /// The validator set that certifies the next block, when this block changes it.
    pub next_set: Option<ValidatorSet>,
    /// Hash of the charter this block's records were checked under.
    pub charter_hash: Hash,
    /// Governance after this block (`gov`).
    pub gov: GovUpdate,
    /// Records `execute_ordered` left out, with the rule each broke (always empty from `execute`).
    pub skipped: Vec<(RecordId, Error)>,
}

/// The consensus facts a header carries besides what execution computes.
#[derive(Clone, Debug)]
pub struct BlockMeta {
    pub height: Height,
    pub view: View,
    pub parent: Hash,
    pub time_ms: u64,
    pub proposer: u32,
    /// Hash of the set that certifies this block.
    pub validators_hash: Hash,
}

impl Executed<'_> {
    /// The same outcome holding its own copy of the record bytes.
    pub fn into_owned(self) -> Executed<'static> {
        Executed {
            first_index: self.first_index,
            ids: self.ids,
            records: self.records.into_iter().map(|r| Cow::Owned(r.into_owned())).collect(),
            nonces: self.nonces,
            nodes: self.nodes,
            frontier: self.frontier,
            records_root: self.records_root,
            state_root: self.state_root,
            state: self.state,
            next_set: self.next_set,
            charter_hash: self.charter_hash,
            gov: self.gov,
            skipped: self.skipped,
        }
    }

    pub fn log_size(&self) -> u64 {
        self.frontier.size()
    }

    pub fn log_root(&self) -> Hash {
        self.frontier.root()
    }

    /// The header for this execution.
    pub fn header(&self, chain_id: &str, meta: &BlockMeta) -> Header {
        Header {
            chain_id: chain_id.to_string(),
            height: meta.height,
            view: meta.view,
            parent: meta.parent,
            time_ms: meta.time_ms,
            proposer: meta.proposer,
            records_root: self.records_root,
            log_size: self.log_size(),
            log_root: self.log_root(),
            state_root: self.state_root,
            validators_hash: meta.validators_hash,
            next_validators_hash: self.next_set.as_ref().map_or(meta.validators_hash, |set| set.hash()),
            charter_hash: self.charter_hash,
        }
    }
}

/// Executes block `height`'s `records` in order on top of committed `state`
/// (its heads, nonces and state tree), the log `frontier` and `gov`, the
/// governance state after the block before; reads them, never changes them.
/// The first record that fails any rule fails the whole block, and the error
/// names it.
pub fn execute<V: StateView + StateTreeReader>(
    gov: &Governance,
    height: Height,
    state: &V,
    frontier: &Frontier,
    records: &[SignedRecord],
    signatures: Signatures,
) -> Result<Executed<'static>, Error> {
    // Encoded once: the signatures are checked over the same bytes the log takes.
    let encoded: Vec<Encoded> = records.iter().cloned().map(Encoded::from).collect();
    Ok(execute_encoded(gov, height, state, frontier, &encoded, signatures)?.into_owned())
}

/// `execute` for records already decoded with their bytes and ids.
pub fn execute_encoded<'a, V: StateView + StateTreeReader, E: Borrow<Encoded>>(
    gov: &Governance,
    height: Height,
    state: &V,
    frontier: &Frontier,
    records: &'a [E],
    signatures: Signatures,
) -> Result<Executed<'a>, Error> {
    let rules = gov.rules();
    let at = |position: usize| move |e: Error| Error::RecordInBlock { position, source: Box::new(e) };
    for (i, e) in records.iter().enumerate() {
        rules.check_encoded(e.borrow()).map_err(at(i))?;
    }
    let first_bad = match signatures {
        Signatures::Verify => bad_signatures(records).first().copied(),
        Signatures::Verified => None,
        Signatures::Checked(first_bad) => first_bad,
    };
    if let Some(i) = first_bad {
        assert!(i < records.len(), "the first bad signature is at {i}, past the block's {} records", records.len());
        return Err(bad_signature_at(i, records[i].borrow().submitter()));
    }
    let refs: Vec<&Encoded> = records.iter().map(Borrow::borrow).collect();
    run(&rules, BlockGov::new(gov, height.0), state, frontier, &refs, false)
}

/// Executes records that consensus ordered: a record that breaks a rule
/// (stateless or against the state left by the records before it) is left
/// out of the log and named in `Executed::skipped`, and the rest are applied.
/// Every node skips the same records, so the result is as deterministic as
/// `execute`'s. Signatures must have been verified by the caller (the node
/// verifies each record once, before it votes for the block that carries it).
/// Records come decoded with their bytes and ids (`Encoded`), so none is
/// encoded or hashed again here.
pub fn execute_ordered<'a, V: StateView + StateTreeReader, E: Borrow<Encoded>>(
    gov: &Governance,
    height: Height,
    state: &V,
    frontier: &Frontier,
    records: &'a [E],
) -> Result<Executed<'a>, Error> {
    let rules = gov.rules();
    let mut kept = Vec::with_capacity(records.len());
    let mut skipped = Vec::new();
    for e in records {
        let e = e.borrow();
        match rules.check_encoded(e) {
            Ok(()) => kept.push(e),
            Err(err) => skipped.push((e.id, err)),
        }
    }
    let mut out = run(&rules, BlockGov::new(gov, height.0), state, frontier, &kept, true)?;
    skipped.append(&mut out.skipped);
    out.skipped = skipped;
    Ok(out)
}

/// Applies stateless-checked, signature-checked records in order; with `skip`
/// a record that breaks a state rule is left out instead of failing the block.
fn run<'a, V: StateView + StateTreeReader>(
    rules: &Rules,
    mut gov: BlockGov,
    state: &V,
    frontier: &Frontier,
    records: &[&'a Encoded],
    skip: bool,
) -> Result<Executed<'a>, Error> {
    let at = |position: usize| move |e: Error| Error::RecordInBlock { position, source: Box::new(e) };
    // Every record's key hash, and the stored leaves around them, read at once in key-hash order.
    let fields: Vec<RecordRef<'a>> = records.iter().map(|e| e.fields()).collect();
    let key_hashes: Vec<Hash> = fields.iter().map(|r| key_hash_of(r.namespace, r.key)).collect();
    let prefetch = Prefetch::read(state, &key_hashes)?;
    let mut overlay = Overlay::new(state, &prefetch);
    let mut frontier = frontier.clone();
    let first_index = frontier.size();
    let mut ids = Vec::with_capacity(records.len());
    let mut appended = Vec::with_capacity(records.len());
    let mut nodes = Vec::with_capacity(records.len() * 2);
    let mut skipped = Vec::new();
    // Ids applied so far, only asked for membership (a B-tree grown per record was 0.7 % of a validator).
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    for (i, e) in records.iter().enumerate() {
        let (r, id) = (&fields[i], e.id);
        let index = first_index + ids.len() as u64;
        let applied = if !seen.insert(id) {
            Err(Error::DuplicateInBlock { id: id.to_hex() })
        } else {
            // A governance record must also make sense to governance; checked first, taken in once appended.
            let action = (r.namespace == GOV_NAMESPACE).then(|| gov.check(r)).transpose();
            action.and_then(|action| overlay.apply(r, id, index, &key_hashes[i]).map(|_| action))
        };
        let action = match applied {
            Ok(applied) => applied,
            // A storage failure is this node's, not the record's: never a reason to skip.
            Err(e) if skip && !e.is_storage() => {
                skipped.push((id, e));
                continue;
            }
            Err(e) => return Err(at(i)(e)),
        };
        if let Some(action) = action {
            gov.accept(r, id, action);
        }
        frontier.append(id.0, &mut nodes);
        ids.push(id);
        appended.push(Cow::Borrowed(e.bytes()));
    }
    let records_root = merkle::root(&ids.iter().map(|id| id.0).collect::<Vec<_>>());
    let (heads, nonces) = overlay.finish();
    let update = state_tree::update_prefetched(state, &prefetch, heads)?;
    let gov = gov.finish();
    let next_set = gov.next_set.clone();
    Ok(Executed {
        first_index,
        ids,
        records: appended,
        nonces,
        nodes,
        frontier,
        records_root,
        state_root: update.root,
        state: update,
        next_set,
        charter_hash: rules.charter_hash(),
        gov,
        skipped,
    })
}

/// Verifies every record's signature in one ed25519 batch; on failure, finds
/// and names the first bad one.
pub fn verify_batch(records: &[SignedRecord]) -> Result<(), Error> {
    let unsigned: Vec<Vec<u8>> = records.iter().map(|s| codec::encode(&s.record)).collect();
    let items: Vec<_> = records
        .iter()
        .zip(&unsigned)
        .map(|(s, unsigned)| {
            (&s.record.submitter, Message::signing(Domain::Record, &s.record.chain_id, unsigned), &s.signature)
        })
        .collect();
    match bad_signatures_of(&items).first() {
        Some(&i) => Err(bad_signature_at(i, &records[i].record.submitter)),
        None => Ok(()),
    }
}

/// The error naming the record at `position` of a block as badly signed.
fn bad_signature_at(position: usize, submitter: &PublicKey) -> Error {
    let source = Box::new(Error::BadSignature { submitter: submitter.to_hex() });
    Error::RecordInBlock { position, source }
}

/// The positions of the records whose signature does not verify, in order
/// (empty when all do): one batch, and only if the batch fails each signature
/// alone, under the same cofactored rule (`keys::verify_cofactored`), so
/// the batch and the single checks agree.
pub fn bad_signatures<E: Borrow<Encoded>>(records: &[E]) -> Vec<usize> {
    let items: Vec<_> = records
        .iter()
        .map(|e| {
            let e = e.borrow();
            (e.submitter(), Message::signing(Domain::Record, e.chain_id(), e.signed_part()), e.signature())
        })
        .collect();
    bad_signatures_of(&items)
}

/// `bad_signatures` over each record's key, signed message and signature.
fn bad_signatures_of(items: &[(&PublicKey, Message<'_>, &Signature)]) -> Vec<usize> {
    if verify_cofactored(items) {
        return Vec::new();
    }
    // The rule gives one signature alone the batch's answer: find the bad ones.
    (0..items.len()).filter(|&i| !verify_cofactored(&items[i..=i])).collect()
}
