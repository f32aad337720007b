//! What the node's loop and its HTTP API share: the store, the mempool, the
//! status, and the waiters for records to become final. The API reads through
//! the methods here; only the loop commits blocks.
//!
//! Admission (`Shared::admit`) is the one gate for a record, whether it comes
//! from the API or from gossip: decode, stateless rules, nonce against
//! committed state, signature, then the bounded mempool. A record that passes
//! is never dropped until a final block carries it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use annal_ledger::block::Height;
use annal_ledger::genesis::{Genesis, RECORD_BYTES_CAP};
use annal_ledger::gov::Governance;
use annal_ledger::merkle::Hash;
use annal_ledger::proof::{self, Bundle, Consistency};
use annal_ledger::record::{Body, Encoded, RecordId, SignedRecord};
use annal_ledger::state::{Rules, StateKey, StateView, Status as HeadStatus};
use annal_ledger::store::Store;
use annal_ledger::submission;
use annal_ledger::Error as LedgerError;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::config::Limits;
use crate::mempool::{Mempool, Source};

/// Why a request could not be answered; the API maps each to a status and code (docs/API.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 400 `malformed`.
    Malformed(String),
    /// 400 `bad_query`.
    BadQuery(String),
    /// 404 `not_found`.
    NotFound(String),
    /// 422 `refused`.
    Refused(String),
    /// 503 `mempool_full`.
    MempoolFull(String),
    /// 503 `not_certified`.
    NotCertified(String),
    /// 503 `no_peers`.
    NoPeers(String),
    /// 504 `timeout`.
    Timeout(String),
    /// 500 `internal`.
    Internal(String),
}

impl Failure {
    /// The stable error code of docs/API.md.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Malformed(_) => "malformed",
            Failure::BadQuery(_) => "bad_query",
            Failure::NotFound(_) => "not_found",
            Failure::Refused(_) => "refused",
            Failure::MempoolFull(_) => "mempool_full",
            Failure::NotCertified(_) => "not_certified",
            Failure::NoPeers(_) => "no_peers",
            Failure::Timeout(_) => "timeout",
            Failure::Internal(_) => "internal",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Failure::Malformed(d)
            | Failure::BadQuery(d)
            | Failure::NotFound(d)
            | Failure::Refused(d)
            | Failure::MempoolFull(d)
            | Failure::NotCertified(d)
            | Failure::NoPeers(d)
            | Failure::Timeout(d)
            | Failure::Internal(d) => d,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({ "error": self.code(), "detail": self.detail() })
    }
}

impl From<LedgerError> for Failure {
    fn from(e: LedgerError) -> Failure {
        match e {
            LedgerError::NotCertified { .. } => Failure::NotCertified(e.to_string()),
            e if e.is_storage() => Failure::Internal(e.to_string()),
            e => Failure::Internal(e.to_string()),
        }
    }
}

/// A record's place once final.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub index: u64,
    pub height: u64,
}

/// What admission did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Accepted now (`new`) or already pending.
    Pending { id: RecordId, new: bool },
    /// Already in a final block.
    Final { id: RecordId, placed: Placed },
}

/// Why a record with `nonce` can no longer be taken: its submitter's last final nonce is `last`.
pub(crate) fn nonce_not_above(nonce: u64, submitter: &annal_ledger::keys::PublicKey, last: u64) -> String {
    format!("nonce {nonce} of submitter {} is not above its last final nonce {last}", submitter.to_hex())
}

/// Where record `id` is in the log, if it is final (read under one store guard).
fn placed_in(store: &Store, id: &RecordId) -> Result<Option<Placed>, Failure> {
    match store.index_of(id)? {
        Some(index) => Ok(Some(Placed { index, height: store.height_of_index(index)?.0 })),
        None => Ok(None),
    }
}

/// A record at or below its submitter's last final nonce: final already (then
/// it is answered as such) or refused. `None` when its nonce is above, the
/// only case in which admission goes on. The index is read for those alone,
/// not for every new record. Takes the caller's store guard: taking it again
/// here would deadlock against a commit waiting for the write lock.
fn nonce_taken(store: &Store, r: &Encoded) -> Result<Option<Admitted>, Failure> {
    let (id, submitter, nonce) = (r.id, r.submitter(), r.nonce());
    let Some(last) = store.last_nonce(submitter)?.filter(|&last| nonce <= last) else { return Ok(None) };
    match placed_in(store, &id)? {
        Some(placed) => Ok(Some(Admitted::Final { id, placed })),
        None => Err(Failure::Refused(nonce_not_above(nonce, submitter, last))),
    }
}

/// What `precheck` found: a record already known, or a new one to verify.
enum Prechecked {
    Known(Admitted),
    New(Box<Encoded>),
}

/// How a pending record ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Final(Placed),
    /// Refused at execution: the rule it broke.
    Refused(String),
}

/// A record a commit settled, for [`Shared::settle`].
#[derive(Debug)]
pub struct Settled {
    pub id: RecordId,
    pub outcome: Outcome,
    /// When it entered this node's pool (`Mempool::remove`), if it did: the
    /// start of the finality time the metrics observe.
    pub arrived: Option<Instant>,
}

/// The sync state shown in `/v1/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncState {
    Synced,
    CatchingUp { target: u64 },
}

/// The loop's view of itself, refreshed after every event that changes it.
#[derive(Clone, Debug)]
pub struct Status {
    pub view: u64,
    pub peers: usize,
    pub sync: SyncState,
    pub evidence: u64,
    /// The loop is running and its last commit succeeded.
    pub healthy: bool,
}

/// Counters and the finality histogram behind `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub records_finalized: AtomicU64,
    pub records_refused: AtomicU64,
    pub blocks_committed: AtomicU64,
    /// Compact proposals (ADR 0008) rebuilt from the pool, and whole proposals fetched from their leaders.
    pub proposals_rebuilt: AtomicU64,
    pub proposals_fetched: AtomicU64,
    /// Gossiped record batches dropped unchecked because the check queue was full.
    pub record_batches_dropped: AtomicU64,
    /// Record batches this node gossiped (its API's records), and the records in them.
    pub record_batches_gossiped: AtomicU64,
    pub records_gossiped: AtomicU64,
    /// Peers' requests for committed history refused by the per-peer gate (`history::Gate`).
    pub history_requests_refused: AtomicU64,
    pub api_requests: Mutex<BTreeMap<u16, u64>>,
    pub finality: Mutex<Histogram>,
    /// Items waiting in the loop's queues, set by the loop each turn: network
    /// events for the loop, commands for the network task, gossiped record
    /// batches waiting for their signature check. Each is bounded by a count of
    /// items of up to a gossip message's size, so a node that falls behind holds
    /// its memory there.
    pub net_events_queued: AtomicU64,
    pub net_commands_queued: AtomicU64,
    pub record_batches_queued: AtomicU64,
}

/// A cumulative histogram of seconds (Prometheus buckets).
pub struct Histogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        let bounds = vec![0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        Histogram { counts: vec![0; bounds.len()], bounds, sum: 0.0, count: 0 }
    }
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if seconds <= *b {
                *c += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

pub struct Shared {
    pub genesis: Genesis,
    pub genesis_hash: Hash,
    /// The rules the next block's records are checked under, and the
    /// governance they come from; the loop replaces both when a block changes them.
    rules: RwLock<Arc<Rules>>,
    governance: RwLock<Arc<Governance>>,
    pub limits: Limits,
    /// This node's index in the validator set, if it is a validator.
    pub validator: Option<u32>,
    pub store: RwLock<Store>,
    pub pool: Mutex<Mempool>,
    pub status: Mutex<Status>,
    pub metrics: Metrics,
    waiters: Mutex<BTreeMap<RecordId, Vec<oneshot::Sender<Outcome>>>>,
    refusals: Mutex<(BTreeMap<RecordId, String>, VecDeque<RecordId>)>,
    /// Records the API admitted, for the loop to gossip: one message per request.
    gossip: mpsc::Sender<Vec<Vec<u8>>>,
    /// Turns for building `GET /v1/blocks/{height}` answers ([`BLOCK_BUILDS_MAX`]).
    pub block_builds: Arc<tokio::sync::Semaphore>,
}

/// Block answers built at once by the API. One is up to ~11 MB of JSON for a full
/// block, and several times that while it is built, before the API's answers budget
/// counts it: without a bound, clients holding every connection could make the node
/// build that many at once. The build itself holds its turn, so a client that goes
/// away does not hand it back early; the next request waits its turn within its
/// time bound (`annal audit` asks for one block at a time).
pub const BLOCK_BUILDS_MAX: usize = 4;

impl Shared {
    pub fn new(
        genesis: Genesis,
        limits: Limits,
        validator: Option<u32>,
        store: Store,
        gossip: mpsc::Sender<Vec<Vec<u8>>>,
    ) -> Shared {
        let pool = Mempool::new(limits.mempool_records_max, limits.mempool_bytes_max);
        let governance = match store.governance() {
            Ok(Some(g)) => g,
            Ok(None) => Governance::genesis(&genesis),
            Err(e) => panic!("the store's governance state is unreadable: {e}"),
        };
        Shared {
            genesis_hash: genesis.hash(),
            rules: RwLock::new(Arc::new(governance.rules())),
            governance: RwLock::new(Arc::new(governance)),
            genesis,
            limits,
            validator,
            store: RwLock::new(store),
            pool: Mutex::new(pool),
            status: Mutex::new(Status { view: 0, peers: 0, sync: SyncState::Synced, evidence: 0, healthy: true }),
            metrics: Metrics::default(),
            waiters: Mutex::new(BTreeMap::new()),
            refusals: Mutex::new((BTreeMap::new(), VecDeque::new())),
            gossip,
            block_builds: Arc::new(tokio::sync::Semaphore::new(BLOCK_BUILDS_MAX)),
        }
    }

    pub fn store(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store.read().expect("the store lock is never poisoned: commits do not panic while holding it")
    }

    /// The rules the next block's records are checked under.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.read().expect("rules lock").clone()
    }

    /// Governance after the committed tip.
    pub fn governance(&self) -> Arc<Governance> {
        self.governance.read().expect("governance lock").clone()
    }

    /// Takes in governance after a committed block that changed it.
    pub fn set_governance(&self, governance: Governance) {
        *self.rules.write().expect("rules lock") = Arc::new(governance.rules());
        *self.governance.write().expect("governance lock") = Arc::new(governance);
    }

    /// Checks records and adds them to the mempool in order, verifying their
    /// signatures in one ed25519 batch. One result per record; once the
    /// mempool is full, every later record is refused with `MempoolFull` too.
    /// Room is checked before the signatures, so a full node spends nothing
    /// on records it cannot keep; each record is decoded and hashed once.
    /// Past the first new record that does not fit, the rest are refused
    /// unread: a full node answers a batch without decoding it (under
    /// overload importers resend whole batches many times a second).
    /// `source` decides the share of the pool the records may fill ([`Source`]).
    pub fn admit_many(&self, batch: Vec<Vec<u8>>, source: Source) -> Vec<Result<Admitted, Failure>> {
        let mut results: Vec<Option<Result<Admitted, Failure>>> = Vec::with_capacity(batch.len());
        let mut candidates: Vec<(usize, Box<Encoded>)> = Vec::with_capacity(batch.len());
        let full_message =
            |e: crate::mempool::Full| format!("{e}; the record was not accepted, retry after the Retry-After delay");
        // The room for the new records, checked as each is read: past the
        // first that does not fit (`room_full`), the rest are not read.
        let mut candidate_bytes = 0;
        let mut room_full: Option<String> = None;
        // The rules once for the batch: taken per record, the lock and the
        // shared count's increment were 0.5 % of a validator (session 19).
        let rules = self.rules();
        for bytes in batch {
            if room_full.is_some() {
                results.push(Some(Err(Failure::MempoolFull(
                    "the mempool is full; this record was not read, retry after the Retry-After delay".into(),
                ))));
                continue;
            }
            results.push(match self.precheck(&rules, bytes) {
                Ok(Prechecked::Known(done)) => Some(Ok(done)),
                Ok(Prechecked::New(record)) => {
                    candidate_bytes += record.bytes().len();
                    let room =
                        self.pool.lock().expect("pool lock").room_for(candidates.len() + 1, candidate_bytes, source);
                    room_full = room.err().map(full_message);
                    candidates.push((results.len(), record));
                    None
                }
                Err(f) => Some(Err(f)),
            });
        }
        // The candidates that fit: all but the last when it did not.
        let fit = candidates.len() - usize::from(room_full.is_some());
        let bad = annal_ledger::exec::bad_signatures(&candidates[..fit].iter().map(|(_, r)| &**r).collect::<Vec<_>>());
        // The store before the pool (the order every path takes both in): a block
        // committed since the prechecks may have taken a candidate's nonce, and its
        // purge of the records it overtook is over; one inserted now would wait forever.
        let store = self.store();
        let mut pool = self.pool.lock().expect("pool lock");
        let mut bad = bad.into_iter().peekable();
        let mut full: Option<String> = None;
        for (n, (slot, record)) in candidates.into_iter().enumerate() {
            if bad.next_if_eq(&n).is_some() {
                let submitter = record.submitter().to_hex();
                results[slot] = Some(Err(Failure::Refused(LedgerError::BadSignature { submitter }.to_string())));
                continue;
            }
            if n >= fit || full.is_some() {
                let why = full.clone().or_else(|| room_full.clone()).expect("set by an insert or the room check");
                results[slot] = Some(Err(Failure::MempoolFull(why)));
                continue;
            }
            let id = record.id;
            match nonce_taken(&store, &record) {
                Ok(None) => {}
                done => {
                    results[slot] = done.transpose();
                    continue;
                }
            }
            results[slot] = Some(match pool.insert(Arc::from(record), source) {
                Ok(new) => Ok(Admitted::Pending { id, new }),
                Err(e) => {
                    let why = full_message(e);
                    full = Some(why.clone());
                    Err(Failure::MempoolFull(why))
                }
            });
        }
        results.into_iter().map(|r| r.expect("every record has a result")).collect()
    }

    /// The checks before the signature: size, decoding, already pending or
    /// final (`Known`), the nonce against committed state, stateless rules.
    fn precheck(&self, rules: &Rules, bytes: Vec<u8>) -> Result<Prechecked, Failure> {
        let params = rules.params();
        let mut encoded = submission::decode_record(bytes, params).map_err(|e| match e {
            LedgerError::RecordTooLarge { .. } => Failure::Refused(e.to_string()),
            e => Failure::Malformed(e.to_string()),
        })?;
        let id = encoded.id;
        if self.pool.lock().expect("pool lock").contains(&id) {
            return Ok(Prechecked::Known(Admitted::Pending { id, new: false }));
        }
        if let Some(done) = nonce_taken(&self.store(), &encoded)? {
            return Ok(Prechecked::Known(done));
        }
        rules.check_and_mark(&mut encoded).map_err(|e| Failure::Refused(e.to_string()))?;
        Ok(Prechecked::New(Box::new(encoded)))
    }

    /// Admits records from the API and hands the new ones to the loop to gossip.
    /// (If the loop is gone the node is stopping, and a record stays in this
    /// node's pool only until then.)
    pub async fn submit_many(&self, batch: Vec<Vec<u8>>) -> Vec<Result<Admitted, Failure>> {
        if let Some(why) = self.no_route() {
            return batch.iter().map(|_| Err(Failure::NoPeers(why.clone()))).collect();
        }
        let results = self.admit_many(batch.clone(), Source::Api);
        // One message for the request's new records: sent one by one, the loop
        // woke on the first and gossiped the few it had, so one request went out
        // as several small gossip messages, each costing every validator its
        // fixed share (docs/BENCHMARKS.md, sessions 15 and 26).
        let new: Vec<Vec<u8>> = batch
            .into_iter()
            .zip(&results)
            .filter(|(_, result)| matches!(result, Ok(Admitted::Pending { new: true, .. })))
            .map(|(bytes, _)| bytes)
            .collect();
        if !new.is_empty() {
            let _ = self.gossip.send(new).await;
        }
        results
    }

    /// Why a record submitted here could reach no block, if it could not: a
    /// node that does not vote only passes records on, and with no validator
    /// connected an accepted record would wait in its pool for good.
    pub fn no_route(&self) -> Option<String> {
        (self.validator.is_none() && self.status.lock().expect("status lock").peers == 0).then(|| {
            "this node does not vote and is connected to no validator, so the record would reach no block; \
             it was not accepted: submit to a validator, or retry once this node has peers"
                .to_string()
        })
    }

    /// Admits a record from the API and hands it to the loop to gossip.
    pub async fn submit(&self, bytes: Vec<u8>) -> Result<Admitted, Failure> {
        self.submit_many(vec![bytes]).await.pop().expect("one result per record")
    }

    /// Waits until `id` is final or refused, at most `timeout`.
    pub async fn wait_final(&self, id: RecordId, timeout: Duration) -> Result<Placed, Failure> {
        let rx = {
            let (tx, rx) = oneshot::channel();
            self.waiters.lock().expect("waiters lock").entry(id).or_default().push(tx);
            rx
        };
        // The record may have become final between admission and registering.
        if let Some(placed) = self.placed(&id)? {
            return Ok(placed);
        }
        if let Some(why) = self.refusal(&id) {
            return Err(Failure::Refused(why));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Outcome::Final(placed))) => Ok(placed),
            Ok(Ok(Outcome::Refused(why))) => Err(Failure::Refused(why)),
            Ok(Err(_)) => Err(Failure::Internal("the node is stopping".into())),
            Err(_) => Err(Failure::Timeout(format!(
                "record {id} was not final within {} ms; it is still pending",
                timeout.as_millis()
            ))),
        }
    }

    /// Called by the loop after a commit: wakes waiters, records refusals and
    /// observes each final record's time since it entered the pool.
    pub fn settle(&self, outcomes: Vec<Settled>) {
        let now = Instant::now();
        let mut waiters = self.waiters.lock().expect("waiters lock");
        let mut histogram = self.metrics.finality.lock().expect("histogram lock");
        for Settled { id, outcome, arrived } in outcomes {
            if let (Outcome::Final(_), Some(t)) = (&outcome, arrived) {
                histogram.observe(now.duration_since(t).as_secs_f64());
            }
            if let Outcome::Refused(why) = &outcome {
                let mut r = self.refusals.lock().expect("refusals lock");
                if r.0.insert(id, why.clone()).is_none() {
                    r.1.push_back(id);
                }
                while r.1.len() > self.limits.refusals_retained {
                    let old = r.1.pop_front().expect("non-empty");
                    r.0.remove(&old);
                }
            }
            for tx in waiters.remove(&id).unwrap_or_default() {
                let _ = tx.send(outcome.clone());
            }
        }
        // Waiters whose request gave up leave closed senders behind.
        waiters.retain(|_, txs| {
            txs.retain(|tx| !tx.is_closed());
            !txs.is_empty()
        });
    }

    fn refusal(&self, id: &RecordId) -> Option<String> {
        self.refusals.lock().expect("refusals lock").0.get(id).cloned()
    }

    /// Where a final record sits.
    pub fn placed(&self, id: &RecordId) -> Result<Option<Placed>, Failure> {
        placed_in(&self.store(), id)
    }

    /// `GET /v1/records/{id}`.
    pub fn record(&self, id: &RecordId) -> Result<Value, Failure> {
        if let Some(placed) = self.placed(id)? {
            let bytes = self
                .store()
                .record_bytes(placed.index)?
                .ok_or_else(|| Failure::Internal(format!("record {} is indexed but missing", placed.index)))?;
            let signed = SignedRecord::from_bytes_max(&bytes, RECORD_BYTES_CAP)?;
            let r = &signed.record;
            let body = match &r.body {
                Body::Inline(b) => json!({ "inline": B64.encode(b) }),
                Body::Document(d) => json!({ "document": {
                    "sha256": hex::encode(d.sha256), "size": d.size, "media_type": d.media_type } }),
            };
            return Ok(json!({
                "id": id.to_hex(), "status": "final", "index": placed.index, "height": placed.height,
                "record": B64.encode(&bytes), "namespace": r.namespace, "key": r.key, "op": r.op.name(),
                "version": r.version, "submitter": r.submitter.to_hex(), "nonce": r.nonce,
                "supersedes": r.supersedes.map(|s| s.to_hex()), "metadata": r.metadata, "body": body,
            }));
        }
        if self.pool.lock().expect("pool lock").contains(id) {
            return Ok(json!({ "id": id.to_hex(), "status": "pending" }));
        }
        if let Some(why) = self.refusal(id) {
            return Ok(json!({ "id": id.to_hex(), "status": "refused", "error": Failure::Refused(why).to_json() }));
        }
        Err(Failure::NotFound(format!("no record with id {id} is final, pending or recently refused on this node")))
    }

    /// `GET /v1/history/{namespace}/{key}`: up to `limit` versions, oldest
    /// first, the newest of them the head, or the version just older than
    /// `before` (a version of this key); `earlier` names the oldest listed
    /// when older versions exist (the next page's `before`).
    pub fn history(
        &self,
        namespace: &str,
        key: &str,
        before: Option<RecordId>,
        limit: usize,
    ) -> Result<Value, Failure> {
        let k = StateKey { namespace: namespace.into(), key: key.into() };
        let store = self.store();
        let Some(head) = store.head(&k)? else {
            return Err(Failure::NotFound(format!("key {key:?} in namespace {namespace:?} was never written")));
        };
        let newest = match before {
            None => Some((head.version, head.index, head.id)),
            Some(b) => {
                let not_this =
                    |what: String| Failure::BadQuery(format!("before={b} {what}, not a version of this key"));
                let index = store.index_of(&b)?.ok_or_else(|| not_this("is not a final record".into()))?;
                let bytes = store.record_bytes(index)?.ok_or_else(|| LedgerError::Store {
                    path: store.path().display().to_string(),
                    detail: format!("record {index} is missing"),
                })?;
                let r = SignedRecord::from_bytes_max(&bytes, RECORD_BYTES_CAP)?.record;
                if r.namespace != namespace || r.key != key {
                    return Err(not_this(format!("is version {} of {:?} in {:?}", r.version, r.key, r.namespace)));
                }
                match r.supersedes {
                    Some(previous) => {
                        let index = store.index_of(&previous)?.ok_or_else(|| LedgerError::Store {
                            path: store.path().display().to_string(),
                            detail: format!("record {previous}, superseded by {b}, is not in the log"),
                        })?;
                        Some((r.version - 1, index, previous))
                    }
                    None => None,
                }
            }
        };
        let (versions, older) = match newest {
            Some(newest) => store.history(&k, Some(newest), limit)?,
            None => (Vec::new(), false),
        };
        let earlier = older.then(|| versions[0].2.to_hex());
        let mut out = Vec::with_capacity(versions.len());
        for (version, index, id) in versions {
            out.push(json!({
                "version": version, "index": index, "id": id.to_hex(), "height": store.height_of_index(index)?.0,
            }));
        }
        let status = if head.status == HeadStatus::Revoked { "revoked" } else { "active" };
        Ok(json!({
            "namespace": namespace, "key": key, "versions": out, "earlier": earlier,
            "head": { "id": head.id.to_hex(), "version": head.version, "status": status },
        }))
    }

    /// `GET /v1/nonces/{submitter}`.
    pub fn last_nonce(&self, submitter: &str) -> Result<Value, Failure> {
        let key = annal_ledger::keys::PublicKey::from_hex(submitter).map_err(|e| Failure::BadQuery(e.to_string()))?;
        Ok(json!({ "submitter": key.to_hex(), "last_nonce": self.store().last_nonce(&key)? }))
    }

    /// `GET /v1/proofs/{id}`, waiting up to `wait` for a certificate still being
    /// collected: the record's block's, and for a status proof the one of the
    /// tip the state proof was taken at (the tip moves on meanwhile under load).
    pub fn bundle(&self, id: &RecordId, with_status: bool, wait: Duration) -> Result<Bundle, Failure> {
        if self.placed(id)?.is_none() {
            let pending = self.pool.lock().expect("pool lock").contains(id);
            return Err(Failure::NotFound(if pending {
                format!("record {id} is pending; its proof exists once it is final")
            } else {
                format!("no final record with id {id}")
            }));
        }
        let until = Instant::now() + wait;
        let (mut bundle, pinned) = loop {
            // Bound first: a store guard in the match would be held while waiting, and a
            // commit's write lock waiting behind it would block the next read for good.
            let parts = proof::bundle_parts(&self.store(), &self.genesis, id, with_status);
            match parts {
                Err(LedgerError::NotCertified { height }) if self.certified_by(Height(height), until)? => continue,
                parts => break parts?,
            }
        };
        if let Some(pinned) = pinned {
            self.certified_by(pinned.height, until)?;
            proof::attach_status(&self.store(), &self.genesis, &mut bundle, pinned)?;
        }
        Ok(bundle)
    }

    /// Whether the certificate of `height` is stored by `until` (looked for every 10 ms).
    fn certified_by(&self, height: Height, until: Instant) -> Result<bool, Failure> {
        loop {
            if self.store().certificate(height)?.is_some() {
                return Ok(true);
            }
            if Instant::now() >= until {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `GET /v1/checkpoint`: the latest certified block.
    pub fn checkpoint(&self) -> Result<Value, Failure> {
        let store = self.store();
        let height = store.certified_height();
        if height.0 == 0 {
            return Err(Failure::NotFound("no block is certified yet".into()));
        }
        let (header, block) = proof::certified_block(&store, &self.genesis, height)?;
        Ok(json!({
            "height": height.0, "log_size": header.log_size, "log_root": hex::encode(header.log_root),
            "state_root": hex::encode(header.state_root), "block_hash": hex::encode(header.hash()),
            "checkpoint": block.checkpoint,
        }))
    }

    /// `GET /v1/consistency?from=&to=`.
    pub fn consistency(&self, from: u64, to: Option<u64>) -> Result<Consistency, Failure> {
        let store = self.store();
        if from == 0 {
            return Err(Failure::BadQuery("from height 0 is the genesis state, which has no checkpoint".into()));
        }
        if let Some(to) = to.filter(|&to| from > to) {
            return Err(Failure::BadQuery(format!("from height {from} is above to height {to}")));
        }
        let certified = store.certified_height().0;
        let to = to.unwrap_or(certified);
        if let Some(h) = [from, to].into_iter().find(|&h| h > certified) {
            return Err(Failure::NotFound(format!(
                "height {h} is not certified yet; the latest certified height is {certified}"
            )));
        }
        Ok(proof::consistency(&store, &self.genesis, Height(from), Height(to))?)
    }

    /// `GET /v1/blocks/{height}`.
    pub fn block(&self, height: u64) -> Result<Value, Failure> {
        if height == 0 {
            return Err(Failure::BadQuery("height 0 is the genesis state: read the genesis file".into()));
        }
        let store = self.store();
        let header = store.header(Height(height))?.ok_or_else(|| {
            Failure::NotFound(format!("height {height} is above this node's height {}", store.tip().height.0))
        })?;
        let first = store.first_index(Height(height))?;
        let records: Vec<String> = store.records_in(first, header.log_size)?.iter().map(|b| B64.encode(b)).collect();
        let checkpoint = match store.certificate(Height(height))? {
            Some(cert) => {
                let set = proof::set_at(&store, &self.genesis, Height(height))?;
                Some(cert.to_note(&header, &set).to_string())
            }
            None => None,
        };
        Ok(json!({
            "height": height, "hash": hex::encode(header.hash()), "header": B64.encode(header.to_bytes()),
            "checkpoint": checkpoint, "records": records, "first_index": first,
        }))
    }

    /// `GET /v1/status`.
    pub fn status_json(&self) -> Result<Value, Failure> {
        let store = self.store();
        let tip = store.tip().clone();
        let header = store.header(tip.height)?;
        let status = self.status.lock().expect("status lock").clone();
        let pool = self.pool.lock().expect("pool lock");
        let (sync, target) = match status.sync {
            SyncState::Synced => ("synced", tip.height.0),
            SyncState::CatchingUp { target } => ("catching_up", target),
        };
        Ok(json!({
            "chain_id": self.genesis.chain_id, "genesis_hash": hex::encode(self.genesis_hash),
            "validator": self.validator, "height": tip.height.0, "certified_height": store.certified_height().0,
            "view": status.view, "log_size": tip.log_size, "log_root": hex::encode(store.log_root()),
            "state_root": hex::encode(header.map_or(annal_ledger::state_tree::EMPTY_ROOT, |h| h.state_root)),
            "peers": status.peers,
            "mempool": { "records": pool.len(), "bytes": pool.bytes(), "records_max": pool.records_max(),
                         "bytes_max": pool.bytes_max() },
            "sync": { "state": sync, "target_height": target },
            "evidence": status.evidence,
        }))
    }

    /// `GET /metrics`: Prometheus text format.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write;
        let store = self.store();
        let status = self.status.lock().expect("status lock").clone();
        let (pool_records, pool_bytes) = {
            let p = self.pool.lock().expect("pool lock");
            (p.len(), p.bytes())
        };
        let lag = match status.sync {
            SyncState::Synced => 0,
            SyncState::CatchingUp { target } => target.saturating_sub(store.tip().height.0),
        };
        let m = &self.metrics;
        let mut s = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        gauge("annal_height", "Height of the last committed block.", "gauge", store.tip().height.0.to_string());
        gauge(
            "annal_certified_height",
            "Highest block with a stored certificate.",
            "gauge",
            store.certified_height().0.to_string(),
        );
        gauge("annal_view", "Current consensus view.", "gauge", status.view.to_string());
        for (name, help, counter) in [
            ("annal_records_finalized_total", "Records appended by final blocks.", &m.records_finalized),
            ("annal_records_refused_total", "Records in final blocks refused at execution.", &m.records_refused),
            ("annal_blocks_committed_total", "Blocks committed since start.", &m.blocks_committed),
            (
                "annal_proposals_rebuilt_total",
                "Compact proposals rebuilt from records this node held.",
                &m.proposals_rebuilt,
            ),
            (
                "annal_proposals_fetched_total",
                "Whole proposals fetched from their leader (a compact one named records not held here).",
                &m.proposals_fetched,
            ),
            (
                "annal_record_batches_dropped_total",
                "Gossiped record batches dropped unchecked: the queue for their signature check was full.",
                &m.record_batches_dropped,
            ),
            (
                "annal_record_batches_gossiped_total",
                "Record batches this node gossiped: the records its API admitted, a batch at a time.",
                &m.record_batches_gossiped,
            ),
            ("annal_records_gossiped_total", "Records in the batches this node gossiped.", &m.records_gossiped),
            (
                "annal_history_requests_refused_total",
                "Peers' requests for committed blocks, certificates or single blocks refused: the peer had one of that \
                 kind in progress, had one answered too recently, or the node was building as many as it builds at once.",
                &m.history_requests_refused,
            ),
        ] {
            gauge(name, help, "counter", counter.load(Ordering::Relaxed).to_string());
        }
        gauge("annal_mempool_records", "Pending records.", "gauge", pool_records.to_string());
        gauge("annal_mempool_bytes", "Pending record bytes.", "gauge", pool_bytes.to_string());
        gauge("annal_peers", "Connected validator peers.", "gauge", status.peers.to_string());
        gauge("annal_sync_lag_blocks", "Blocks behind the highest height seen from peers.", "gauge", lag.to_string());
        gauge(
            "annal_store_bytes",
            "Bytes of the store's record segments and SST files.",
            "gauge",
            store.disk_bytes().to_string(),
        );
        gauge("annal_evidence_total", "Equivocations seen.", "counter", status.evidence.to_string());
        let memory = store.memory();
        drop(store);
        let _ = writeln!(s, "# HELP annal_store_memory_bytes Memory the store's RocksDB holds, by use.");
        let _ = writeln!(s, "# TYPE annal_store_memory_bytes gauge");
        for (part, bytes) in [
            ("block_cache", memory.block_cache),
            ("memtables", memory.memtables),
            ("table_readers", memory.table_readers),
        ] {
            let _ = writeln!(s, "annal_store_memory_bytes{{use=\"{part}\"}} {bytes}");
        }
        let _ = writeln!(
            s,
            "# HELP annal_queue_items Items waiting in the node's internal queues: network events for \
             the loop, commands for the network, gossiped record batches awaiting their signature \
             check, API requests whose admitted records await gossip."
        );
        let _ = writeln!(s, "# TYPE annal_queue_items gauge");
        for (queue, items) in [
            ("net_events", m.net_events_queued.load(Ordering::Relaxed)),
            ("net_commands", m.net_commands_queued.load(Ordering::Relaxed)),
            ("record_batches", m.record_batches_queued.load(Ordering::Relaxed)),
            ("api_gossip", (self.gossip.max_capacity() - self.gossip.capacity()) as u64),
        ] {
            let _ = writeln!(s, "annal_queue_items{{queue=\"{queue}\"}} {items}");
        }
        if let Some(rss) = resident_bytes() {
            let _ = writeln!(s, "# HELP process_resident_memory_bytes Resident memory of this process.");
            let _ = writeln!(s, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}");
        }
        let h = m.finality.lock().expect("histogram lock");
        let _ = writeln!(s, "# HELP annal_finality_seconds Time from admission on this node to final.");
        let _ = writeln!(s, "# TYPE annal_finality_seconds histogram");
        for (b, c) in h.bounds.iter().zip(&h.counts) {
            let _ = writeln!(s, "annal_finality_seconds_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(s, "annal_finality_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(s, "annal_finality_seconds_sum {}\nannal_finality_seconds_count {}", h.sum, h.count);
        drop(h);
        let _ = writeln!(s, "# HELP annal_api_requests_total API answers by status code.");
        let _ = writeln!(s, "# TYPE annal_api_requests_total counter");
        for (code, n) in m.api_requests.lock().expect("api lock").iter() {
            let _ = writeln!(s, "annal_api_requests_total{{code=\"{code}\"}} {n}");
        }
        s
    }

    /// Whether `/healthz` answers 200.
    pub fn healthy(&self) -> bool {
        self.status.lock().expect("status lock").healthy
    }

    /// `GET /v1/gov/proposals[?after=ID][&limit=N]`: the proposals the chain has seen, in id
    /// order, a page at a time; `next` is the `after` of the following page (null at the end).
    pub fn gov_proposals(&self, after: Option<RecordId>, limit: usize) -> Result<Value, Failure> {
        let mut proposals = self.store().proposals_after(after.as_ref(), limit + 1)?;
        let more = proposals.len() > limit;
        proposals.truncate(limit);
        let gov = self.governance();
        let out: Vec<Value> = proposals.iter().map(|p| Self::proposal_json(&gov, p)).collect();
        let next = more.then(|| proposals.last().map(|p| p.id.to_hex())).flatten();
        Ok(json!({ "proposals": out, "next": next }))
    }

    /// `GET /v1/gov/proposals/{id}`.
    pub fn gov_proposal(&self, id: &RecordId) -> Result<Value, Failure> {
        let proposal = self
            .store()
            .proposal(id)?
            .ok_or_else(|| Failure::NotFound(format!("no proposal with id {id}; GET /v1/gov/proposals lists them")))?;
        Ok(Self::proposal_json(&self.governance(), &proposal))
    }

    /// `GET /v1/gov`: the validator set and charter in force for the next block.
    pub fn gov_state(&self) -> Result<Value, Failure> {
        let height = self.store().tip().height.0;
        let gov = self.governance();
        let agencies: Vec<Value> = gov
            .charter
            .agencies
            .iter()
            .map(|a| json!({ "name": a.name, "namespaces": a.namespaces, "submitter_keys": a.submitter_keys }))
            .collect();
        Ok(json!({
            "height": height, "next_height": height + 1,
            "validators": gov.validators.validators, "total_power": gov.validators.total_power(),
            "agencies": agencies, "params": gov.charter.params,
            "charter_hash": hex::encode(gov.charter.hash()), "open_proposals": gov.proposals.len(),
        }))
    }

    /// A proposal as the API shows it; approvals are weighed by the set in force (`gov`).
    fn proposal_json(gov: &Governance, p: &annal_ledger::gov::Proposal) -> Value {
        use annal_ledger::gov::ProposalStatus;
        let (height, reason) = match &p.status {
            ProposalStatus::Open => (None, None),
            ProposalStatus::Scheduled { height }
            | ProposalStatus::Applied { height }
            | ProposalStatus::Expired { height } => (Some(*height), None),
            ProposalStatus::Failed { height, reason } => (Some(*height), Some(reason.as_str())),
        };
        let approvals: Vec<Value> = p
            .approvals
            .iter()
            .map(|key| {
                let v = gov.validators.validators.iter().find(|v| v.consensus_key == *key);
                json!({ "consensus_key": key, "validator": v.map(|v| &v.name), "power": v.map(|v| v.power) })
            })
            .collect();
        json!({
            "id": p.id.to_hex(),
            "status": { "name": p.status.name(), "height": height, "reason": reason },
            "change": p.change, "description": p.change.describe(),
            "proposer": p.proposer, "height": p.height,
            "effective_height": p.effective_height, "expires_height": p.expires_height,
            "approvals": approvals, "approving_power": gov.approving_power(p),
            "total_power": gov.validators.total_power(),
        })
    }
}

/// This process's resident memory, from `/proc/self/status` (Linux; None elsewhere).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
