//! The node's loop: the consensus core wired to libp2p, timers and the store.
//!
//! One task owns everything that changes the ledger. It feeds the consensus
//! core its inputs (messages from the consensus topic, timeouts, payloads,
//! validity verdicts) and performs the core's outputs in order (Spec §Host
//! contract): the safety state and voted blocks are fsynced before any
//! message that follows them is published.
//!
//! A block is executed when consensus finalizes it (docs/adr/0005): every node
//! runs the same records on the same state, so every node computes the same
//! header. The node commits the block, its records, log nodes, state, and the
//! consensus finalization in one write batch, then signs the header's
//! checkpoint and gossips the signature; once validators holding more than
//! 2/3 of the power have signed, the signatures are the block's ledger
//! certificate, stored beside it. Sync fetches committed blocks with their
//! finalizations from a peer when this node is behind, verifies them, and
//! commits them the same way.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::safety_file::SafetyFile;
use annal_consensus as consensus;
use annal_consensus::{
    Anchor, Block, Certificate as Finalization, ChainId, Config as CoreConfig, Core, Ed25519Verifier, Input, Message,
    Output, SafetyState, Signer, ValidatorIndex, VoteKind,
};
use annal_ledger::block::{Certificate, Height};
use annal_ledger::codec;
use annal_ledger::exec::{self, BlockMeta};
use annal_ledger::keys::{SecretKey, Signature};
use annal_ledger::record::{Encoded, RecordId, SignedRecord};
use annal_ledger::state::StateView;
use anyhow::{bail, Context, Result};
use sha2::Digest as _;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::gather;
use crate::history::{self, SYNC_BATCH, SYNC_CERTIFICATES_MAX, SYNC_EXTRA_MAX};
use crate::mempool::Source;
use crate::net::{GossipId, NetEvent, NetworkHandle, PeerId, ResponseChannel, Topic, Verdict};
use crate::shared::{Outcome, Placed, Settled, Shared, SyncState};
use crate::wire::{
    self, BlockBody, CompactProposal, Envelope, EpochTail, Link, RecordBatch, SyncBlock, SyncRequest, SyncResponse,
};

/// What a peer's sync request gets: an answer built on the loop, or a request
/// for committed history that the store answers off it ([`history`]).
pub enum SyncAnswer {
    Ready(Vec<u8>),
    History(history::Request),
}

/// A checkpoint signature held until its height is certified, and whether
/// it was checked against the height's header (one that arrives before the
/// header is kept unchecked until the block commits).
#[derive(Clone, Copy)]
struct HeldSignature {
    signature: Signature,
    checked: bool,
}

/// Heights ahead of the tip for which checkpoint signatures are buffered.
const EARLY_SIGNATURES_HEIGHTS: u64 = 256;
/// Heights behind what peers show before this node syncs instead of waiting for consensus.
const SYNC_GAP: u64 = 3;
/// Ticks without a commit (5 s) after which a node asks a peer for the blocks
/// above its tip even though nobody showed it a higher height ([`App::on_tick`]).
const STALL_TICKS: u32 = 10;
/// How long a pending record whose nonce skips past its submitter's next one
/// waits for the lower record before a block may carry it (`Mempool::select`).
const NONCE_GAP_WAIT: Duration = Duration::from_secs(2);
/// How often the loop re-sends its checkpoint signatures and checks whether it is behind.
const TICK: Duration = Duration::from_millis(500);
/// A proposal may carry a time at most this far ahead of a validator's clock.
const FUTURE_TIME_MS: u64 = 10_000;
/// Records gossiped in one batch by the API path.
const GOSSIP_BATCH_RECORDS: usize = 512;
/// Record bytes in one gossiped batch (a single record may exceed it and travels alone).
const GOSSIP_BATCH_BYTES: usize = 4 << 20;
/// A batch of fewer records than this (and under a quarter of `GOSSIP_BATCH_BYTES`) waits up
/// to `GOSSIP_LINGER` for more before it is gossiped, unless a consensus message goes out
/// first: every gossip message costs each validator a fixed amount whatever it carries, and
/// records submitted one at a time would otherwise each be a message.
const GOSSIP_BATCH_RECORDS_MIN: usize = GOSSIP_BATCH_RECORDS / 4;
const GOSSIP_LINGER: Duration = Duration::from_millis(5);
/// This leader's latest whole proposals kept to answer [`SyncRequest::Proposal`].
const OWN_PROPOSALS_KEPT: usize = 4;
/// Whole proposals asked for at once, and compact proposals waiting for their records; past
/// it a compact proposal this node cannot rebuild is dropped (the block still reaches this node
/// through its notarization and the block request path).
const FETCHES_MAX: usize = 8;
/// How long a compact proposal naming records this node lacks waits for them (they are usually
/// in flight: gossiped with the proposal, or queued for their signature check) before the whole
/// proposal is asked of its leader.
const RECORDS_WAIT: Duration = Duration::from_millis(100);
/// How long it waits at most while this node still holds gossiped record batches waiting for
/// their signature check: the missing records are most likely among them, and checking them
/// costs less than fetching the whole proposal, which carries the block's records once more (at
/// rate max 6–17 % of compact proposals were fetched whole with 100 ms alone, 2.4 MB each;
/// docs/BENCHMARKS.md, session 16).
const RECORDS_WAIT_CHECKING: Duration = Duration::from_millis(400);

/// Compact proposals whose named records are remembered for [`App::in_flight`]
/// (a few views' worth; each holds up to `block_records_max` ids).
const NAMED_KEPT: usize = 16;
/// Proposals rebuilt from the pool whose records are kept until the core asks to validate them.
const REBUILT_MAX: usize = 8;

/// The largest record batch a node gossips or accepts: a full batch, or one record at the chain's limit.
pub fn record_batch_bytes_max(params: &annal_ledger::genesis::Params) -> usize {
    batch_bytes_max_for(params.record_bytes_max)
}

/// [`record_batch_bytes_max`] for a chain whose records are at most `record_bytes_max` bytes.
const fn batch_bytes_max_for(record_bytes_max: usize) -> usize {
    let full = if record_bytes_max > GOSSIP_BATCH_BYTES { record_bytes_max } else { GOSSIP_BATCH_BYTES };
    full + 8 * GOSSIP_BATCH_RECORDS + 1024
}

/// Gossiped record batches being checked at once, off the loop.
const RECORD_CHECKS_MAX: usize = 2;
/// Gossiped record batches waiting for a check, and their bytes; past either they are dropped
/// unjudged. The bytes bound the memory (a batch may be up to a few MB); 64 MB holds ~200 batches
/// of 512 records of 512 bytes. At rate max a queue of 64 batches overflowed (up to 160 dropped
/// per node in 30 s, their records then fetched in whole proposals); ~200 dropped none and gave
/// ~4 % more throughput (docs/BENCHMARKS.md, session 16).
const RECORD_QUEUE_MAX: usize = 256;
const RECORD_QUEUE_BYTES_MAX: usize = 64 << 20;
// The largest batch any chain allows fits the queue, twice.
const _: () = assert!(RECORD_QUEUE_BYTES_MAX >= 2 * batch_bytes_max_for(annal_ledger::genesis::RECORD_BYTES_CAP));

/// Gossiped record batches waiting for their signature check, bounded by
/// [`RECORD_QUEUE_MAX`] batches and [`RECORD_QUEUE_BYTES_MAX`] bytes.
/// (`I` names a batch: the gossip message it came in.)
struct RecordQueue<I> {
    batches: VecDeque<(I, Vec<u8>)>,
    bytes: usize,
}

impl<I> RecordQueue<I> {
    fn new() -> Self {
        RecordQueue { batches: VecDeque::new(), bytes: 0 }
    }

    /// Queues a batch, or gives its name back when the queue is full.
    fn push(&mut self, id: I, data: Vec<u8>) -> std::result::Result<(), I> {
        if self.batches.len() >= RECORD_QUEUE_MAX || self.bytes + data.len() > RECORD_QUEUE_BYTES_MAX {
            return Err(id);
        }
        self.bytes += data.len();
        self.batches.push_back((id, data));
        Ok(())
    }

    fn pop(&mut self) -> Option<(I, Vec<u8>)> {
        let (id, data) = self.batches.pop_front()?;
        self.bytes -= data.len();
        Some((id, data))
    }

    fn len(&self) -> usize {
        self.batches.len()
    }
}

/// Wall-clock milliseconds since the Unix epoch (block times only: never hashed by the core's rules).
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A block this node validated or voted for that is not yet committed.
struct Pending {
    height: u64,
    parent: [u8; 32],
    time_ms: u64,
    ids: Vec<RecordId>,
    /// The block's records, decoded and signature-checked on this node, when
    /// it validated or proposed the block (commit then neither decodes,
    /// hashes nor verifies them again).
    records: Option<Vec<Arc<Encoded>>>,
}

/// A proposal rebuilt from the pool (see `App::rebuilt`).
struct Rebuilt {
    /// The digest its leader signed.
    digest: [u8; 32],
    height: u64,
    time_ms: u64,
    records: Vec<Arc<Encoded>>,
}

/// A block's records as `gather` found them, in block order.
struct Gathered {
    /// Each record decoded and signature-checked, or why it is not.
    records: Vec<Result<Arc<Encoded>, String>>,
    /// Positions of the records that were not pending here (checked just now).
    fresh: Vec<usize>,
}

/// What the loop must send after handling an event.
#[derive(Default)]
pub struct Effects {
    pub publish: Vec<(Topic, Vec<u8>)>,
    /// Requests for one peer: whole proposals (a compact one named records this node
    /// lacks) and blocks its core asked for (ADR 0008).
    pub fetch: Vec<(PeerId, SyncRequest)>,
    /// The p2p keys the network must admit from now on (a validator-set change).
    pub allowlist: Option<Vec<annal_ledger::keys::PublicKey>>,
}

/// A block this leader owes consensus (`Output::NeedPayload`).
#[derive(Clone, Copy)]
struct Owed {
    view: consensus::View,
    height: u64,
    parent: [u8; 32],
    /// An empty block goes out then (a quiet chain still makes blocks).
    deadline: Instant,
    /// When consensus asked: a leader waits for more records at most a while after ([`gather`]).
    asked: Instant,
    /// The pool's arrival count when the leader last selected records, and
    /// what it found (records, bytes).
    looked: Option<(u64, (usize, usize))>,
}

/// What a compact proposal whose leader's signature checked says of its
/// block: enough to know which records are in flight before it is rebuilt.
struct Named {
    digest: [u8; 32],
    height: u64,
    parent: [u8; 32],
    ids: Vec<RecordId>,
}

/// A compact proposal that named records this node did not hold.
struct Waiting {
    /// When it came (the whole proposal is asked for a while after: [`App::gives_up_at`]).
    came: Duration,
    /// The leader that signed it, asked for the whole proposal.
    from: u32,
    proposal: CompactProposal,
    /// The ids not in the pool when last looked (only these are looked up again).
    missing: Vec<RecordId>,
}

/// The consensus side of a validator: its core, keys and where it persists.
struct Validator {
    key: SecretKey,
    core: Core,
}

pub struct App {
    shared: Arc<Shared>,
    /// The consensus chain id of the running core's epoch (signatures of one epoch never count in another).
    chain: ChainId,
    /// The running core's epoch and its last height: above it the core only orders empty blocks,
    /// which are never executed, so the last height can be finalized through them (ADR 0006).
    epoch: u64,
    epoch_end: u64,
    set: consensus::ValidatorSet,
    limits: consensus::Limits,
    data_dir: PathBuf,
    /// The safety state file of the running core's epoch.
    safety: SafetyFile,
    validator: Option<Validator>,
    /// This node's consensus key (it votes while its key is in the set in force).
    consensus_key: Option<SecretKey>,
    /// A committed block changed the set: the core must be rebuilt for the new one.
    core_stale: bool,
    peers_by_id: BTreeMap<PeerId, u32>,
    /// The consensus view of the last committed block.
    tip: Link,
    tip_height: u64,
    pending: BTreeMap<[u8; 32], Pending>,
    /// Persisted voted blocks: digest → height (files in `data_dir/blocks`).
    persisted: BTreeMap<[u8; 32], u64>,
    timers: BTreeSet<(Duration, u64)>,
    /// A payload this leader owes.
    owed_payload: Option<Owed>,
    /// Records committed in recent blocks: how long a leader waits to fill a block ([`gather`]).
    load: gather::Load,
    /// The epoch of the running core (its safety state is that epoch's).
    core_epoch: u64,
    /// Checkpoint signatures per height: signer → signature, checked on
    /// arrival for a committed height, else when the height commits.
    signatures: BTreeMap<u64, BTreeMap<u32, HeldSignature>>,
    /// Committed heights whose ledger certificate is not stored yet.
    uncertified: BTreeSet<u64>,
    /// The highest height this node knows the chain has reached: its own
    /// commits, a verified finalization certificate, or a height shown by
    /// validators holding more than a third of the power ([`App::claim`]).
    seen_height: u64,
    /// Per validator of the set in force, the highest height it showed in a
    /// message it sent itself (the relay Noise authenticated is the signer).
    /// One validator's word alone never makes this node think it is behind.
    claims: BTreeMap<u32, u64>,
    behind_ticks: u32,
    /// The tip at the last tick, and for how many ticks in a row it has not moved.
    stall: (u64, u32),
    pub sync_in_flight: bool,
    connected: BTreeSet<PeerId>,
    seq: u64,
    /// Consensus messages the core refused (a gossip message is relayed only if it was not).
    rejected: u64,
    started: Instant,
    /// Records the API admitted, not yet gossiped, and when the oldest of them came.
    gossip_queue: Vec<Vec<u8>>,
    gossip_since: Option<Duration>,
    /// Gossiped record batches queued for their signature check or being checked (set by the loop).
    pub records_unchecked: usize,
    /// The payload this leader last proposed, its time and its records (see `persist_block`).
    proposed: Option<(consensus::Payload, u64, Vec<Arc<Encoded>>)>,
    /// Proposals rebuilt from the pool, by the digest their leader signed: the
    /// time and the records (decoded and checked when they entered the pool),
    /// so `validate` neither decodes, hashes nor looks them up again. At most
    /// [`REBUILT_MAX`], oldest dropped first.
    rebuilt: VecDeque<Rebuilt>,
    /// The view, time and record ids of the payload this leader last proposed (see `compact`).
    proposed_ids: Option<(u64, u64, Vec<RecordId>)>,
    /// This leader's latest proposals, whole: `(height, view)` → the proposal
    /// (its payload shared, not copied), encoded only if a peer asks for it:
    /// most never are, and encoding each one up front copied every block's
    /// records into fresh memory on its leader (docs/BENCHMARKS.md, session 21).
    own_proposals: VecDeque<((u64, u64), consensus::Proposal)>,
    /// Requests to peers (proposals, blocks) sent and not yet answered: to whom, as encoded.
    fetching: BTreeSet<(PeerId, Vec<u8>)>,
    /// Compact proposals waiting for records (ADR 0008).
    waiting: Vec<Waiting>,
    /// The latest compact proposals received, at most [`NAMED_KEPT`] ([`App::in_flight`]).
    named: VecDeque<Named>,
    /// Test-only attacks (`[testing] byzantine`), none in production.
    pub byzantine: Option<crate::byzantine::Byzantine>,
}

impl App {
    /// Builds the loop's state from the store and the persisted consensus files.
    pub fn new(shared: Arc<Shared>, data_dir: PathBuf, consensus_key: Option<SecretKey>) -> Result<App> {
        let genesis = &shared.genesis;
        let epoch_blocks = shared.genesis.params.epoch_blocks;
        // The set that certifies the next block: genesis's, or what governance made it.
        let in_force = shared.governance().validators.clone();
        let set = consensus_set(&in_force);
        let params = &genesis.params;
        let payload_max = params.block_bytes_max + 8 * params.block_records_max + 64;
        let limits = consensus::Limits {
            payload_bytes_max: payload_max,
            message_bytes_max: payload_max + (128 << 10),
            payload_digest: BlockBody::content_digest,
        };
        let peers_by_id = peers_of(&in_force)?;
        let (tip_height, tip) = {
            let store = shared.store();
            let h = store.tip().height.0;
            let link = if h == 0 {
                Link {
                    view: 0,
                    parent_view: 0,
                    parent: [0; 32],
                    digest: shared.genesis_hash,
                    time_ms: genesis.genesis_time_ms,
                    skipped: Vec::new(),
                    finalization: Vec::new(),
                }
            } else {
                let bytes = store
                    .app_meta(&wire::link_key(h))?
                    .with_context(|| format!("the store has no consensus link for its tip at height {h}"))?;
                codec::decode(&bytes, payload_max + (256 << 10))?
            };
            (h, link)
        };
        std::fs::create_dir_all(data_dir.join("blocks"))
            .with_context(|| format!("creating {}", data_dir.join("blocks").display()))?;
        let mut app = App {
            shared: shared.clone(),
            chain: ChainId(shared.genesis_hash),
            epoch: 0,
            epoch_end: epoch_blocks,
            set,
            limits,
            safety: SafetyFile::new(safety_file(&data_dir, 0)),
            data_dir,
            validator: None,
            consensus_key: consensus_key.as_ref().map(|k| SecretKey::from_seed(k.seed())),
            core_stale: false,
            peers_by_id,
            tip,
            tip_height,
            pending: BTreeMap::new(),
            persisted: BTreeMap::new(),
            timers: BTreeSet::new(),
            owed_payload: None,
            load: gather::Load::default(),
            core_epoch: 0,
            signatures: BTreeMap::new(),
            uncertified: BTreeSet::new(),
            seen_height: tip_height,
            claims: BTreeMap::new(),
            behind_ticks: 0,
            stall: (tip_height, 0),
            sync_in_flight: false,
            connected: BTreeSet::new(),
            seq: 0,
            rejected: 0,
            started: Instant::now(),
            gossip_queue: Vec::new(),
            gossip_since: None,
            records_unchecked: 0,
            proposed: None,
            rebuilt: VecDeque::new(),
            proposed_ids: None,
            own_proposals: VecDeque::new(),
            fetching: BTreeSet::new(),
            waiting: Vec::new(),
            named: VecDeque::new(),
            byzantine: None,
        };
        // Validators may publish byte-identical messages (the same certificate):
        // sequence numbers start at a per-process value so envelopes never collide.
        app.seq = u64::from_le_bytes(
            sha2::Sha256::digest(format!("{:?}{:?}", shared.validator, SystemTime::now()))[..8]
                .try_into()
                .expect("8 bytes"),
        ) >> 1;
        app.enter_epoch_of_next_height();
        if tip_height > 0 {
            // Consensus digests are signed into every finalization: a chain made
            // under another digest rule cannot be continued, only replaced.
            let (block, link) = history::rebuild_block_unchecked(&app.shared, &app.limits, tip_height)?;
            if block.hash(&app.chain_of(tip_height)) != link.digest {
                bail!(
                    "the block at height {tip_height} in {} does not hash to the consensus digest it was finalized \
                     under: the chain was made by an earlier version of annal (its block digest covered the whole \
                     payload, annal/block/v1; this version's covers the record ids, annal/block/v2) and cannot be \
                     continued by this one; start a new chain (for `make devnet`: delete ./devnet)",
                    app.data_dir.display()
                );
            }
        }
        app.load_persisted_blocks()?;
        {
            let store = shared.store();
            for h in tip_height.saturating_sub(1024).max(1)..=tip_height {
                if store.certificate(Height(h))?.is_none() {
                    app.uncertified.insert(h);
                }
            }
        }
        if let Some(key) = consensus_key {
            if let Some(index) = in_force.validators.iter().position(|v| v.consensus_key == key.public()) {
                let safety = app.read_safety()?;
                let core = app.new_core(&key, index as u32, safety)?;
                app.core_epoch = app.epoch;
                app.validator = Some(Validator { key, core });
            }
        }
        Ok(app)
    }

    fn new_core(&self, key: &SecretKey, index: u32, safety: SafetyState) -> Result<Core> {
        let params = &self.shared.genesis.params;
        let mut cfg = CoreConfig::new(self.chain, self.set.clone());
        cfg.timeout_base = Duration::from_millis(params.view_timeout_ms);
        cfg.timeout_max = Duration::from_millis(params.view_timeout_ms * 8);
        cfg.limits = self.limits;
        let signer =
            Signer::new(ed25519_dalek::SigningKey::from_bytes(&key.seed()), ValidatorIndex(index), self.chain, safety);
        // A new epoch starts at view 1 on every node, on the last block of the one before;
        // that block's finalization is the old epoch's, which this core cannot check.
        let fresh_epoch = self.tip_height > 0 && self.tip_height == self.epoch_end - self.epoch_blocks();
        let anchor = Anchor {
            height: consensus::Height(self.tip_height),
            view: consensus::View(if fresh_epoch { 0 } else { self.tip.view }),
            digest: self.tip.digest,
        };
        let certificate = if self.tip.finalization.is_empty() || fresh_epoch {
            None
        } else {
            match Message::decode(&self.tip.finalization, &self.limits)? {
                Message::Certificate(c) => Some(c),
                other => bail!("the tip's stored finalization is not a certificate: {other:?}"),
            }
        };
        Ok(Core::new(cfg, signer, anchor, certificate, Box::new(Ed25519Verifier)))
    }

    /// The safety state of the running epoch: `safety` for epoch 0, `safety-<epoch>` after.
    fn safety_path(&self) -> PathBuf {
        safety_file(&self.data_dir, self.epoch)
    }

    fn epoch_blocks(&self) -> u64 {
        self.shared.genesis.params.epoch_blocks
    }

    /// Enters the epoch of height `tip_height + 1`, and forgets the safety
    /// state of the epoch before: its last block is committed, so no core of
    /// that epoch runs again here.
    fn enter_epoch_of_next_height(&mut self) {
        let params = &self.shared.genesis.params;
        self.epoch = params.epoch_of(self.tip_height + 1);
        self.epoch_end = params.epoch_end(self.epoch);
        self.chain = epoch_chain(self.shared.genesis_hash, self.epoch);
        if let Some(before) = self.epoch.checked_sub(1) {
            let _ = std::fs::remove_file(safety_file(&self.data_dir, before));
        }
    }

    /// Remembers what `p` names for [`App::in_flight`], if it came straight
    /// from its leader `from`. The leader signs only the digest: ids or a
    /// parent changed by whoever relays a copy would still pass the signature
    /// check and would show only when the records arrive and the block is
    /// rebuilt. Taken from the leader itself (the peer Noise authenticated),
    /// they are the leader's word, and a lying leader can spoil its own block
    /// anyway.
    fn remember_named(&mut self, relay: &PeerId, from: u32, p: &CompactProposal) {
        let from_leader = self.peers_by_id.get(relay) == Some(&from);
        let fits = p.ids.len() <= self.shared.rules().params().block_records_max;
        if !from_leader || !fits || self.named.iter().any(|n| n.digest == p.digest) {
            return;
        }
        if self.named.len() == NAMED_KEPT {
            self.named.pop_front();
        }
        self.named.push_back(Named { digest: p.digest, height: p.height, parent: p.parent, ids: p.ids.clone() });
    }

    /// Whether `p` is signed by its leader in the epoch before this one: the
    /// empty blocks that carry the last block's finality back, which that
    /// epoch's leaders keep proposing until they too commit it. Honest, and no
    /// use to a node that has moved on; not to be reported as a forgery.
    fn of_the_epoch_before(&self, p: &CompactProposal) -> Result<bool> {
        let Some(before) = self.epoch.checked_sub(1) else { return Ok(false) };
        let last = self.epoch_end - self.epoch_blocks();
        if p.height <= last {
            return Ok(false);
        }
        let set =
            consensus_set(&annal_ledger::proof::set_at(&self.shared.store(), &self.shared.genesis, Height(last))?);
        Ok(leader_signed(p, &epoch_chain(self.shared.genesis_hash, before), &set).is_ok())
    }

    /// The consensus chain id under which height `h` was ordered.
    fn chain_of(&self, h: u64) -> ChainId {
        history::chain_of(&self.shared, h)
    }

    /// The running epoch's safety file (a new one when the epoch changed).
    fn safety(&mut self) -> &mut SafetyFile {
        let path = self.safety_path();
        if self.safety.path() != path {
            self.safety = SafetyFile::new(path);
        }
        &mut self.safety
    }

    fn read_safety(&mut self) -> Result<SafetyState> {
        self.safety().read()
    }

    fn load_persisted_blocks(&mut self) -> Result<()> {
        let dir = self.data_dir.join("blocks");
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let Ok(bytes) = std::fs::read(&path) else { continue };
            match Message::decode(&bytes, &self.limits) {
                Ok(Message::BlockResponse(b)) if b.height.0 > self.tip_height => {
                    let digest = b.hash(&self.chain);
                    self.persisted.insert(digest, b.height.0);
                    if let Ok(body) = BlockBody::from_bytes(&b.payload, self.limits.payload_bytes_max) {
                        let ids = body.ids();
                        self.pending.insert(
                            digest,
                            Pending { height: b.height.0, parent: b.parent, time_ms: body.time_ms, ids, records: None },
                        );
                    }
                }
                // Committed (or unreadable, from a crash mid-write): no longer needed.
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }

    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn envelope(&mut self, message: &Message) -> (Topic, Vec<u8>) {
        let env = Envelope::Consensus { seq: self.next_seq(), message: message.encode() };
        (Topic::Consensus, codec::encode(&env))
    }

    /// Starts the core (arms its first timer).
    pub fn start(&mut self) -> Result<Effects> {
        let mut fx = Effects::default();
        self.drive(Input::Start, &mut fx)?;
        Ok(fx)
    }

    /// Feeds one input to the core and performs every output, feeding back the
    /// answers the application gives at once (payloads, validity).
    fn drive(&mut self, input: Input, fx: &mut Effects) -> Result<()> {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            if self.core_stale {
                // The epoch ended mid-call: the old core's remaining inputs and outputs are dropped
                // (nothing it signs after its last block is persisted, so nothing of it is sent).
                break;
            }
            let now = self.now();
            let Some(v) = self.validator.as_mut() else { return Ok(()) };
            let outputs = v.core.handle(now, input);
            let mut tail = self.epoch_tail(&outputs);
            for out in outputs {
                if self.core_stale {
                    break;
                }
                match out {
                    Output::PersistSafety(s) => self.persist_safety(&s)?,
                    Output::PersistBlock { block, digest } => self.persist_block(&block, digest)?,
                    Output::Send { to, message: Message::BlockRequest(digest) } => {
                        self.request_block(to, digest, fx);
                    }
                    // Block requests go to one peer by request-response (`request_block`), and are
                    // answered there (`block_request`, then `history`): the core's own answers are not sent.
                    Output::Broadcast(Message::BlockRequest(_) | Message::BlockResponse(_))
                    | Output::Send { message: Message::BlockResponse(_), .. } => {}
                    Output::Broadcast(m) | Output::Send { message: m, .. } => {
                        let e = match &m {
                            Message::Propose(p) => self.compact(p),
                            _ => self.envelope(&m),
                        };
                        fx.publish.push(e);
                    }
                    Output::Schedule { view, deadline } => {
                        self.timers.insert((deadline, view.0));
                    }
                    Output::NeedPayload { view, height, parent } => {
                        let deadline = self.propose_by(&parent);
                        let asked = Instant::now();
                        self.owed_payload =
                            Some(Owed { view, height: height.0, parent, deadline, asked, looked: None });
                        if let Some(input) = self.payload_if_ready() {
                            inputs.push_back(input);
                        }
                    }
                    Output::Validate { block, digest } => {
                        let valid = self.verdict(&block, digest);
                        inputs.push_back(Input::Validated { digest, valid });
                    }
                    Output::Finalized { block, digest, certificate } => {
                        let tail = if block.height.0 == self.epoch_end { tail.take() } else { None };
                        self.commit(&block, digest, &certificate, tail, fx)?
                    }
                    Output::Evidence(e) => {
                        warn!(signer = e.first.signer.0, view = e.first.view.0, "equivocation: {e:?}");
                        self.shared.status.lock().expect("status lock").evidence += 1;
                    }
                    Output::Rejected { from, error } => {
                        debug!(from = from.0, "consensus message rejected: {error}");
                        self.rejected += 1;
                    }
                }
            }
        }
        if self.core_stale {
            self.core_stale = false;
            self.restart_core(fx)?;
        }
        self.refresh_status();
        Ok(())
    }

    /// Whether peers have shown heights more than `SYNC_GAP` above this node's tip: it syncs.
    fn behind(&self) -> bool {
        self.seen_height > self.tip_height + SYNC_GAP
    }

    fn refresh_status(&self) {
        let mut s = self.shared.status.lock().expect("status lock");
        if let Some(v) = &self.validator {
            s.view = v.core.view().0;
        }
        s.peers = self.connected.iter().filter(|p| self.peers_by_id.contains_key(p)).count();
        s.sync = if self.behind() { SyncState::CatchingUp { target: self.seen_height } } else { SyncState::Synced };
    }

    /// Writes the safety state durably (`safety_file`: in place, one of two slots).
    fn persist_safety(&mut self, s: &SafetyState) -> Result<()> {
        self.safety().write(s)
    }

    /// Writes a block this validator is about to vote for (or proposed) to
    /// its own file, synced: `digest` is its hash, from the core.
    fn persist_block(&mut self, b: &Block, digest: [u8; 32]) -> Result<()> {
        if self.persisted.contains_key(&digest) {
            return Ok(());
        }
        let path = self.data_dir.join("blocks").join(hex::encode(digest));
        write_synced(&path, &[&Message::block_response_head(b), &b.payload])?;
        sync_dir(&self.data_dir.join("blocks"))?;
        self.persisted.insert(digest, b.height.0);
        if self.pending.contains_key(&digest) {
            // Validated already: its record ids are known.
            return Ok(());
        }
        if let Some((payload, time_ms, records)) = self.proposed.take() {
            if payload == b.payload {
                // This leader's own block: its records came from the pool, decoded and checked.
                let ids = records.iter().map(|r| r.id).collect();
                let pending = Pending { height: b.height.0, parent: b.parent, time_ms, ids, records: Some(records) };
                self.pending.insert(digest, pending);
                return Ok(());
            }
        }
        if let Ok(body) = BlockBody::from_bytes(&b.payload, self.limits.payload_bytes_max) {
            let pending =
                Pending { height: b.height.0, parent: b.parent, time_ms: body.time_ms, ids: body.ids(), records: None };
            self.pending.insert(digest, pending);
        }
        Ok(())
    }

    /// The time of the block `digest` (committed tip or pending), if known.
    fn time_of(&self, digest: &[u8; 32]) -> Option<u64> {
        if *digest == self.tip.digest {
            return Some(self.tip.time_ms);
        }
        self.pending.get(digest).map(|p| p.time_ms)
    }

    /// When a leader with nothing to propose proposes an empty block anyway:
    /// `block_interval_ms` after its parent.
    fn propose_by(&self, parent: &[u8; 32]) -> Instant {
        let interval = self.shared.rules().params().block_interval_ms;
        let wait = match self.time_of(parent) {
            Some(t) => (t + interval).saturating_sub(wall_ms()),
            None => interval,
        };
        Instant::now() + Duration::from_millis(wait.min(interval))
    }

    /// The ids in pending blocks from `parent` back to the tip: a new block
    /// must not repeat them. `None` if this node does not hold every block in
    /// between (it lags): it cannot tell which records are taken already.
    fn in_flight(&self, parent: &[u8; 32], parent_height: u64) -> Option<BTreeSet<RecordId>> {
        // A block this node holds, or a compact proposal it has not rebuilt yet
        // (its records are still arriving or being fetched): it names its
        // records all the same.
        let block = |digest: &[u8; 32], height: u64| {
            if let Some(p) = self.pending.get(digest).filter(|p| p.height == height) {
                return Some((&p.ids[..], p.parent));
            }
            self.named.iter().find(|n| n.digest == *digest && n.height == height).map(|n| (&n.ids[..], n.parent))
        };
        records_down_to((self.tip.digest, self.tip_height), (*parent, parent_height), block)
    }

    /// The owed payload, if records are waiting or the interval has passed.
    fn payload_if_ready(&mut self) -> Option<Input> {
        let Owed { view, height, parent, deadline, asked, looked } = self.owed_payload?;
        // The limits in force (governance may have lowered them since genesis).
        let rules = self.shared.rules();
        let params = rules.params();
        let now = Instant::now();
        let rate = self.load.rate(now);
        let wait = |held: (usize, usize)| held.0 > 0 && gather::wait_for_more(held, params, rate, asked, now);
        // While it waits for more, the leader looks through its pool again only
        // once records arrived (a record past a nonce gap's wait may also become
        // selectable meanwhile; it is taken at the latest when the wait ends).
        let nothing_new = |seen: u64| seen == self.shared.pool.lock().expect("pool lock").arrivals();
        if looked.is_some_and(|(seen, held)| wait(held) && nothing_new(seen)) {
            return None;
        }
        if height > self.epoch_end {
            // Past the epoch's last height: an empty block, at once (it only carries finality back).
            return Some(self.propose(view, &parent, Vec::new()));
        }
        let Some(exclude) = self.in_flight(&parent, height - 1) else {
            // A lagging leader proposes no records: it would repeat ones that are final or in
            // flight, and each would be refused at execution, a block wasted.
            debug!(view = view.0, "the blocks below this one are not all known here: no records in it");
            return Some(self.propose(view, &parent, Vec::new()));
        };
        let (records, arrivals) = {
            let store = self.shared.store();
            let last_final = |s: &annal_ledger::keys::PublicKey| store.last_nonce(s).ok().flatten();
            let pool = self.shared.pool.lock().expect("pool lock");
            let records =
                pool.select(params.block_records_max, params.block_bytes_max, &exclude, last_final, NONCE_GAP_WAIT);
            (records, pool.arrivals())
        };
        let held = (records.len(), records.iter().map(|r| r.bytes().len()).sum());
        if (records.is_empty() && now < deadline) || wait(held) {
            if let Some(owed) = self.owed_payload.as_mut() {
                owed.looked = Some((arrivals, held));
            }
            return None;
        }
        Some(self.propose(view, &parent, records))
    }

    /// Settles the owed payload with `records`, remembering them for `persist_block`.
    fn propose(&mut self, view: consensus::View, parent: &[u8; 32], records: Vec<Arc<Encoded>>) -> Input {
        self.owed_payload = None;
        let time_ms = wall_ms().max(self.time_of(parent).unwrap_or(0));
        debug!(view = view.0, records = records.len(), "proposing");
        let payload = BlockBody::payload(time_ms, records.iter().map(|r| &**r));
        self.proposed_ids = Some((view.0, time_ms, records.iter().map(|r| r.id).collect()));
        self.proposed = Some((payload.clone(), time_ms, records));
        Input::Payload { view, payload }
    }

    /// The gossip envelope of this leader's proposal `p`: its records named by
    /// id (ADR 0008). The whole proposal is kept to answer a receiver that
    /// lacks some of them.
    fn compact(&mut self, p: &consensus::Proposal) -> (Topic, Vec<u8>) {
        let b = &p.block;
        let named = match self.proposed_ids.take() {
            Some((view, time_ms, ids)) if view == b.view.0 => Some((time_ms, ids)),
            _ => BlockBody::from_bytes(&b.payload, self.limits.payload_bytes_max)
                .ok()
                .map(|body| (body.time_ms, body.ids())),
        };
        let Some((time_ms, ids)) = named else {
            // Not a body this node can name by ids (it never proposes one): sent whole.
            return self.envelope(&Message::Propose(p.clone()));
        };
        let key = (b.height.0, b.view.0);
        if !self.own_proposals.iter().any(|(k, _)| *k == key) {
            if self.own_proposals.len() == OWN_PROPOSALS_KEPT {
                self.own_proposals.pop_front();
            }
            self.own_proposals.push_back((key, p.clone()));
        }
        let proposal = CompactProposal {
            height: b.height.0,
            view: b.view.0,
            parent_view: b.parent_view.0,
            parent: b.parent,
            digest: b.hash(&self.chain),
            time_ms,
            ids,
            signature: p.signature,
        };
        (Topic::Consensus, codec::encode(&Envelope::Proposal { seq: self.next_seq(), proposal }))
    }

    /// The whole proposal `p` stands for, rebuilt from this node's pool, or the
    /// ids the pool lacks. `Err` names why no honest leader sent it (more
    /// records or bytes than a block may hold).
    fn rebuild(
        &mut self,
        p: &CompactProposal,
    ) -> std::result::Result<std::result::Result<Message, Vec<RecordId>>, String> {
        let rules = self.shared.rules();
        let params = rules.params();
        if p.ids.len() > params.block_records_max {
            return Err(format!("{} records; the limit is {}", p.ids.len(), params.block_records_max));
        }
        let records = {
            let pool = self.shared.pool.lock().expect("pool lock");
            // One lookup per id; the bytes are copied only once all are held.
            let (mut held, mut missing) = (Vec::with_capacity(p.ids.len()), Vec::new());
            for id in &p.ids {
                match pool.get(id) {
                    Some(r) => held.push(r),
                    None => missing.push(*id),
                }
            }
            if !missing.is_empty() {
                return Ok(Err(missing));
            }
            let bytes: usize = held.iter().map(|r| r.bytes().len()).sum();
            if bytes > params.block_bytes_max {
                return Err(format!("{bytes} record bytes; the limit is {}", params.block_bytes_max));
            }
            held.into_iter().cloned().collect::<Vec<_>>()
        };
        let block = Block {
            height: consensus::Height(p.height),
            view: consensus::View(p.view),
            parent_view: consensus::View(p.parent_view),
            parent: p.parent,
            payload: BlockBody::payload(p.time_ms, records.iter().map(|r| &**r)),
        };
        // The core would refuse a block that does not hash to the digest the
        // leader signed without saying why; a leader that named the wrong
        // records or time (or a bug in rebuilding) is named here instead.
        let digest = block.hash(&self.chain);
        if digest != p.digest {
            return Err(format!(
                "its records and time rebuild a block with digest {}, not the {} its leader signed",
                hex::encode(digest),
                hex::encode(p.digest)
            ));
        }
        // The core will hash it to this digest: `validate` takes these records.
        if self.rebuilt.len() >= REBUILT_MAX {
            self.rebuilt.pop_front();
        }
        self.rebuilt.push_back(Rebuilt { digest: p.digest, height: p.height, time_ms: p.time_ms, records });
        Ok(Ok(Message::Propose(consensus::Proposal { block, signature: p.signature })))
    }

    /// The proposal rebuilt under `digest`, if one is held: taken out.
    fn take_rebuilt(&mut self, digest: &[u8; 32]) -> Option<Rebuilt> {
        let at = self.rebuilt.iter().position(|r| r.digest == *digest)?;
        self.rebuilt.remove(at)
    }

    /// `validate` with the refusal logged: the verdict the core is given.
    fn verdict(&mut self, b: &Block, digest: [u8; 32]) -> bool {
        match self.validate(b, digest) {
            Ok(()) => true,
            Err(why) => {
                warn!(height = b.height.0, view = b.view.0, "refusing a proposed block: {why}");
                false
            }
        }
    }

    /// Is a proposed block's payload acceptable? Checks the body's form and
    /// limits, its time, every record's stateless rules and signature (each
    /// signature once per node: records already pending were checked on
    /// entry). Rules that depend on state are applied at execution, which
    /// refuses a record that breaks them (`exec::execute_ordered`).
    fn validate(&mut self, b: &Block, digest: [u8; 32]) -> std::result::Result<(), String> {
        let rules = self.shared.rules();
        let params = rules.params();
        // Rebuilt here from the pool under the digest the leader signed, and the
        // block hashes to it: the payload is those records, each decoded and
        // checked when it entered the pool. Nothing to decode, hash or look up.
        if let Some(Rebuilt { time_ms, records, .. }) = self.take_rebuilt(&digest) {
            let bytes = records.iter().map(|r| r.bytes().len()).sum();
            self.check_form(b, records.len(), bytes, time_ms, params)?;
            let ids: Vec<RecordId> = records.iter().map(|r| r.id).collect();
            check_distinct(&ids)?;
            let pending = Pending { height: b.height.0, parent: b.parent, time_ms, ids, records: Some(records) };
            self.pending.insert(digest, pending);
            return Ok(());
        }
        let body = BlockBody::from_bytes(&b.payload, self.limits.payload_bytes_max).map_err(|e| e.to_string())?;
        let bytes = body.records.iter().map(Vec::len).sum();
        self.check_form(b, body.records.len(), bytes, body.time_ms, params)?;
        let ids = body.ids();
        check_distinct(&ids)?;
        let gathered = self.gather(&body.records, &ids, params);
        let mut records = Vec::with_capacity(gathered.records.len());
        for (i, r) in gathered.records.into_iter().enumerate() {
            records.push(r.map_err(|why| format!("record {i}: {why}"))?);
        }
        for &i in &gathered.fresh {
            rules.check_stateless(&records[i].fields()).map_err(|e| format!("record {i}: {e}"))?;
        }
        // Checked now: keep them pending here too, so they are not lost if this block is not final.
        {
            let mut pool = self.shared.pool.lock().expect("pool lock");
            for &i in &gathered.fresh {
                let _ = pool.insert(records[i].clone(), Source::Peer);
            }
        }
        let pending =
            Pending { height: b.height.0, parent: b.parent, time_ms: body.time_ms, ids, records: Some(records) };
        self.pending.insert(digest, pending);
        Ok(())
    }

    /// A proposed body's form: nothing past the epoch's end, the record count
    /// and bytes within the limits, its time not before its parent's nor too
    /// far ahead of this node's clock.
    fn check_form(
        &self,
        b: &Block,
        records: usize,
        bytes: usize,
        time_ms: u64,
        params: &annal_ledger::genesis::Params,
    ) -> std::result::Result<(), String> {
        if b.height.0 > self.epoch_end && records > 0 {
            return Err(format!(
                "height {} is past the epoch's last height {}: only an empty block may follow it",
                b.height.0, self.epoch_end
            ));
        }
        if records > params.block_records_max {
            return Err(format!("{records} records; the limit is {}", params.block_records_max));
        }
        if bytes > params.block_bytes_max {
            return Err(format!("{bytes} record bytes; the limit is {}", params.block_bytes_max));
        }
        if let Some(parent_time) = self.time_of(&b.parent) {
            if time_ms < parent_time {
                return Err(format!("time {time_ms} is before its parent's {parent_time}"));
            }
        }
        if time_ms > wall_ms() + FUTURE_TIME_MS {
            return Err(format!("time {time_ms} is more than {FUTURE_TIME_MS} ms ahead of this node's clock"));
        }
        Ok(())
    }

    /// A block's records, each decoded and signature-checked once on this
    /// node: pending ones come from the pool (checked on entry), the others
    /// are decoded and verified here in one batch.
    fn gather(&self, payload: &[Vec<u8>], ids: &[RecordId], params: &annal_ledger::genesis::Params) -> Gathered {
        let mut records = Vec::with_capacity(payload.len());
        let mut fresh = Vec::new();
        {
            let pool = self.shared.pool.lock().expect("pool lock");
            for (bytes, id) in payload.iter().zip(ids) {
                records.push(match pool.get(id) {
                    Some(r) => Ok(r.clone()),
                    None => {
                        fresh.push(records.len());
                        Encoded::decode(bytes.clone(), params).map(Arc::new).map_err(|e| e.to_string())
                    }
                });
            }
        }
        let unchecked: Vec<usize> = fresh.iter().copied().filter(|&i| records[i].is_ok()).collect();
        let batch: Vec<Arc<Encoded>> = unchecked.iter().map(|&i| records[i].clone().expect("decoded")).collect();
        for bad in exec::bad_signatures(&batch) {
            let submitter = batch[bad].submitter();
            records[unchecked[bad]] = Err(format!("signature of submitter {submitter} does not verify"));
        }
        Gathered { records, fresh }
    }

    /// Commits a final block: executes its records on the tip, writes the
    /// block and its consensus finalization in one batch, settles waiters,
    /// and signs the checkpoint.
    /// `digest` is the block's hash under its epoch's chain id (the caller has it).
    fn commit(
        &mut self,
        block: &Block,
        digest: [u8; 32],
        finalization: &Finalization,
        tail: Option<EpochTail>,
        fx: &mut Effects,
    ) -> Result<()> {
        let h = block.height.0;
        if h <= self.tip_height {
            let stored = self.shared.store().app_meta(&wire::link_key(h))?;
            let same = stored.and_then(|b| codec::decode::<Link>(&b, usize::MAX >> 1).ok()).map(|l| l.digest);
            if h > 0 && same != Some(digest) {
                error!(height = h, "consensus finalized a block that differs from the one committed at this height");
            }
            return Ok(());
        }
        if h > self.epoch_end {
            // An empty block past the epoch's end: it finalized the last one, and is never executed.
            return Ok(());
        }
        if h != self.tip_height + 1 || block.parent != self.tip.digest {
            bail!(
                "final block at height {h} does not extend the committed tip at height {} (parent differs or a height is missing)",
                self.tip_height
            );
        }
        let gov = self.shared.governance();
        let params = gov.charter.params.clone();
        // Validated or proposed here: every record decoded and checked already,
        // and the body's time known; the payload is not decoded again.
        let known = self.pending.get_mut(&digest).and_then(|p| Some((p.time_ms, p.records.take()?)));
        // Rebuilt from the pool but never validated: its proposal came after the
        // core had left its view (the other validators made the quorum). The
        // block hashes to the digest, so these are its records, checked when they
        // entered the pool; the slowest validator took a fifth of its blocks
        // this way at rate max (docs/BENCHMARKS.md, session 27).
        let known = known.or_else(|| self.take_rebuilt(&digest).map(|r| (r.time_ms, r.records)));
        let (time_ms, gathered, payload) = match known {
            Some((time_ms, records)) => (time_ms, records.into_iter().map(Ok).collect::<Vec<_>>(), None),
            // A block this node did not validate nor rebuild (synced, fetched whole,
            // or finalized before its proposal arrived).
            None => {
                let body = BlockBody::from_bytes(&block.payload, self.limits.payload_bytes_max)
                    .with_context(|| format!("the final block at height {h} has an unreadable body"))?;
                let gathered = self.gather(&body.records, &body.ids(), &params).records;
                (body.time_ms, gathered, Some(body.records))
            }
        };
        let mut kept = Vec::with_capacity(gathered.len());
        let mut kept_positions = Vec::with_capacity(gathered.len());
        // Each refused record's position in the body, why, and its bytes.
        let mut refused: Vec<(usize, String, Vec<u8>)> = Vec::new();
        for (i, r) in gathered.into_iter().enumerate() {
            match r {
                // The record size limit in force now (governance may have lowered it since the record was checked).
                Ok(r) if r.bytes().len() > params.record_bytes_max => {
                    let why =
                        format!("{} bytes; the record size limit is now {}", r.bytes().len(), params.record_bytes_max);
                    refused.push((i, why, r.bytes().to_vec()));
                }
                Ok(r) => {
                    kept.push(r);
                    kept_positions.push(i);
                }
                Err(why) => {
                    let bytes = payload.as_ref().expect("only records gathered from the decoded body fail")[i].clone();
                    refused.push((i, why, bytes));
                }
            }
        }
        let executed = {
            let store = self.shared.store();
            exec::execute_ordered(&gov, Height(h), &*store, store.frontier(), &kept)?
        };
        let skipped_ids: BTreeMap<RecordId, String> =
            executed.skipped.iter().map(|(id, e)| (*id, e.to_string())).collect();
        if !skipped_ids.is_empty() {
            for (k, r) in kept.iter().enumerate() {
                if let Some(why) = skipped_ids.get(&r.id) {
                    refused.push((kept_positions[k], why.clone(), r.bytes().to_vec()));
                }
            }
        }
        refused.sort_by_key(|(p, _, _)| *p);
        let validators_hash = gov.validators.hash();
        let parent_hash = self.shared.store().tip().block_hash;
        let meta = BlockMeta {
            height: Height(h),
            view: annal_ledger::block::View(block.view.0),
            parent: parent_hash,
            time_ms,
            proposer: self.set.leader(block.view).0,
            validators_hash,
        };
        let header = executed.header(&self.shared.genesis.chain_id, &meta);
        let link = Link {
            view: block.view.0,
            parent_view: block.parent_view.0,
            parent: block.parent,
            digest,
            time_ms,
            skipped: refused.iter().map(|(p, _, bytes)| (*p as u32, bytes.clone())).collect(),
            finalization: Message::Certificate(finalization.clone()).encode(),
        };
        let mut app_meta =
            vec![(wire::link_key(h), codec::encode(&link)), (wire::digest_key(&digest), h.to_be_bytes().to_vec())];
        if let Some(tail) = &tail {
            app_meta.push((wire::tail_key(h), codec::encode(tail)));
        }
        self.shared.store.write().expect("store lock").commit_block(&header, None, &executed, &app_meta)?;
        if executed.gov.changed {
            // Proposals, approvals or a change that took effect: the next block's rules and set come from here.
            self.shared.set_governance(executed.gov.state.clone());
        }
        if executed.next_set.is_some() && h != self.epoch_end {
            bail!("block {h} changes the validator set, but only an epoch's last block ({}) may", self.epoch_end);
        }
        self.tip = link;
        self.tip_height = h;
        if h == self.epoch_end {
            // The epoch's last block: the next height starts a new epoch, with a new core
            // once this block is settled (Spec §Validator sets) — and new peers when the set changed.
            if let Some(next) = &executed.next_set {
                info!(height = h + 1, validators = next.validators.len(), "the validator set changes");
                self.set = consensus_set(next);
                self.peers_by_id = peers_of(next)?;
                // Indices of the old set: their heights are nobody's word in the new one.
                self.claims.clear();
                fx.allowlist = Some(next.validators.iter().map(|v| v.p2p_key).collect());
            }
            self.core_stale = true;
            self.enter_epoch_of_next_height();
        }
        self.uncertified.insert(h);
        self.seen_height = self.seen_height.max(h);

        let first_index = executed.first_index;
        let mut outcomes = Vec::with_capacity(executed.ids.len() + refused.len());
        let mut stale = Vec::new();
        {
            let mut pool = self.shared.pool.lock().expect("pool lock");
            for (i, id) in executed.ids.iter().enumerate() {
                let arrived = pool.remove(id);
                let outcome = Outcome::Final(Placed { index: first_index + i as u64, height: h });
                outcomes.push(Settled { id: *id, outcome, arrived });
            }
            for (_, why, bytes) in &refused {
                let id = SignedRecord::id_of_bytes(bytes);
                let arrived = pool.remove(&id);
                outcomes.push(Settled { id, outcome: Outcome::Refused(why.clone()), arrived });
            }
            // Records whose nonce this block overtook can never be taken: refuse them now
            // rather than carry them in a later block only to be refused there.
            for (submitter, last) in &executed.nonces {
                for r in pool.purge_stale(submitter, *last) {
                    stale.push((r.id, crate::shared::nonce_not_above(r.nonce(), submitter, *last)));
                }
            }
        }
        for (id, why) in stale {
            // A copy of a record already final (a late gossip batch) has nothing to settle.
            if self.shared.placed(&id).ok().flatten().is_none() {
                outcomes.push(Settled { id, outcome: Outcome::Refused(why), arrived: None });
            }
        }
        let m = &self.shared.metrics;
        m.records_finalized.fetch_add(executed.ids.len() as u64, Ordering::Relaxed);
        m.records_refused.fetch_add(refused.len() as u64, Ordering::Relaxed);
        m.blocks_committed.fetch_add(1, Ordering::Relaxed);
        self.load.committed(Instant::now(), executed.ids.len());
        if let Some((position, why, _)) = refused.first() {
            // One reason per block (each refused record's own is kept for `GET /v1/records/{id}`).
            info!(height = h, refused = refused.len(), first = position, "refused at execution: {why}");
        }
        self.shared.settle(outcomes);
        info!(
            height = h,
            view = block.view.0,
            records = executed.ids.len(),
            refused = refused.len(),
            log_size = header.log_size,
            "committed"
        );

        // Blocks at or below the tip are settled: forget them and their files.
        self.pending.retain(|_, p| p.height > h);
        self.rebuilt.retain(|r| r.height > h);
        let done: Vec<[u8; 32]> = self.persisted.iter().filter(|(_, &ph)| ph <= h).map(|(d, _)| *d).collect();
        for d in done {
            self.persisted.remove(&d);
            let _ = std::fs::remove_file(self.data_dir.join("blocks").join(hex::encode(d)));
        }

        if let Some((index, signature)) = self.own_checkpoint_signature(h, &header)? {
            // Held as checked: made by this key under the index `try_certify` checks it under.
            self.signatures.entry(h).or_default().insert(index, HeldSignature { signature, checked: true });
            let env = Envelope::Checkpoint { seq: self.next_seq(), height: h, signer: index, signature: signature.0 };
            fx.publish.push((Topic::Consensus, codec::encode(&env)));
        }
        self.try_certify(h)?;
        Ok(())
    }

    /// This validator's signature of committed height `h`'s checkpoint, with
    /// its index in the set that certifies `h` (a set change may have moved
    /// it); `None` when this node is no validator or not in that set.
    fn own_checkpoint_signature(
        &self,
        h: u64,
        header: &annal_ledger::block::Header,
    ) -> Result<Option<(u32, Signature)>> {
        let Some(v) = &self.validator else { return Ok(None) };
        let key = v.key.public();
        let set = annal_ledger::proof::set_at(&self.shared.store(), &self.shared.genesis, Height(h))?;
        let Some(index) = set.validators.iter().position(|s| s.consensus_key == key) else { return Ok(None) };
        Ok(Some((index as u32, v.key.sign_checkpoint(&header.checkpoint()))))
    }

    /// Verifies the buffered signatures of committed height `h` and stores the
    /// certificate once they hold more than 2/3 of the power.
    fn try_certify(&mut self, h: u64) -> Result<()> {
        if !self.uncertified.contains(&h) {
            self.signatures.remove(&h);
            return Ok(());
        }
        let Some(sigs) = self.signatures.get_mut(&h) else { return Ok(()) };
        let header = self.shared.store().header(Height(h))?.context("a committed height has no header")?;
        let checkpoint = header.checkpoint();
        // Signed by the set that certifies height h (governance may have changed it since genesis).
        let set = annal_ledger::proof::set_at(&self.shared.store(), &self.shared.genesis, Height(h))?;
        let validators = &set.validators;
        // Only those not checked yet (taken before the header was here): one
        // checked on arrival was checked again each time another arrived,
        // about 0.6 % of a validator at rate max (docs/BENCHMARKS.md, session 19).
        sigs.retain(|&i, held| {
            held.checked = held.checked
                || validators
                    .get(i as usize)
                    .is_some_and(|v| v.consensus_key.verify_checkpoint(&checkpoint, &held.signature));
            held.checked
        });
        let power: u64 = sigs.keys().map(|&i| validators[i as usize].power).sum();
        if !set.is_quorum(power) {
            return Ok(());
        }
        let mut signers = vec![0u8; validators.len().div_ceil(8)];
        for &i in sigs.keys() {
            signers[i as usize / 8] |= 1 << (i % 8);
        }
        let cert = Certificate {
            height: Height(h),
            view: header.view,
            block_hash: header.hash(),
            signers,
            signatures: sigs.values().map(|held| held.signature).collect(),
        };
        self.store_certificate(&cert)?;
        Ok(())
    }

    fn store_certificate(&mut self, cert: &Certificate) -> Result<()> {
        self.shared.store.write().expect("store lock").put_certificate(cert)?;
        self.uncertified.remove(&cert.height.0);
        self.signatures.remove(&cert.height.0);
        debug!(height = cert.height.0, "certified");
        Ok(())
    }

    /// Handles a message from the consensus topic, relayed by `relay` (an
    /// admitted peer). Gossip names no author (ADR 0004): each message is
    /// judged by the signatures it carries, never by who passed it on.
    pub fn on_consensus_gossip(&mut self, relay: &PeerId, data: &[u8], fx: &mut Effects) -> Result<Verdict> {
        if let Some(b) = self.byzantine.as_mut() {
            b.heard(data);
        }
        let Ok(env) = codec::decode::<Envelope>(data, self.limits.message_bytes_max + 64) else {
            return Ok(Verdict::Reject);
        };
        match env {
            Envelope::Consensus { message, .. } => {
                let Ok(m) = Message::decode(&message, &self.limits) else { return Ok(Verdict::Reject) };
                if let Message::BlockRequest(_) | Message::BlockResponse(_) = m {
                    // Old gossip-borne block requests are not answered: an answer on gossip reaches
                    // everyone (request_block asks one peer instead).
                    return Ok(Verdict::Ignore);
                }
                let Some(from) = attribute(&self.set, &m) else { return Ok(Verdict::Reject) };
                self.note_height(relay, from, &m);
                return self.on_consensus_message(from, m, fx);
            }
            Envelope::Proposal { proposal, .. } => {
                if proposal.height > self.epoch_end {
                    // Of a later epoch: signed under its chain id, perhaps by a set this node
                    // does not know yet, so it cannot be judged here. A node an epoch behind
                    // (restarted, cut off) refused such proposals as forgeries and blamed the
                    // honest peers relaying them (seen in a fault campaign, session 20).
                    debug!(height = proposal.height, epoch_end = self.epoch_end, "a proposal of a later epoch");
                    return Ok(Verdict::Ignore);
                }
                // Only a view's leader proposes in it: its signature over the digest the
                // proposal names is checked before any lookup. The core checks it again
                // over the rebuilt block, so records that make another block are refused there.
                let from = match leader_signed(&proposal, &self.chain, &self.set) {
                    Ok(leader) => leader,
                    Err(why) => {
                        if self.of_the_epoch_before(&proposal)? {
                            debug!(height = proposal.height, view = proposal.view, "a proposal of the epoch before");
                            return Ok(Verdict::Ignore);
                        }
                        warn!(height = proposal.height, view = proposal.view, "refusing a compact proposal: {why}");
                        return Ok(Verdict::Reject);
                    }
                };
                self.remember_named(relay, from, &proposal);
                // Only the digest is signed: a copy another peer relays may name other ids or
                // another parent. The leader's own copy (its peer Noise authenticated) is its word.
                let from_leader = self.peers_by_id.get(relay) == Some(&from);
                match self.rebuild(&proposal) {
                    Ok(Ok(m)) => {
                        self.shared.metrics.proposals_rebuilt.fetch_add(1, Ordering::Relaxed);
                        return self.on_whole_proposal(from, m, fx);
                    }
                    Ok(Err(missing)) => {
                        let same = self.waiting.iter().position(|w| w.proposal.digest == proposal.digest);
                        match same {
                            // A relay's copy came first and holds the slot: the leader's replaces it
                            // (the wait keeps its start), or it would wait for ids that never come.
                            Some(i) if from_leader && self.waiting[i].proposal != proposal => {
                                let came = self.waiting[i].came;
                                self.waiting[i] = Waiting { came, from, proposal, missing };
                            }
                            Some(_) => {}
                            None if self.validator.is_some() && !self.behind() && self.waiting.len() < FETCHES_MAX => {
                                let came = self.now();
                                self.waiting.push(Waiting { came, from, proposal, missing });
                            }
                            None => {}
                        }
                        // Not relayed: this node cannot tell yet whether it is sound.
                        return Ok(Verdict::Ignore);
                    }
                    Err(why) => {
                        warn!(
                            from,
                            height = proposal.height,
                            view = proposal.view,
                            "refusing a compact proposal: {why}"
                        );
                        // The leader's own list is forgotten only when its own copy fails: another
                        // peer's altered copy must not erase it (`in_flight` needs it to build on).
                        if from_leader {
                            self.named.retain(|n| n.digest != proposal.digest);
                        }
                        return Ok(Verdict::Reject);
                    }
                }
            }
            Envelope::Checkpoint { height, signer, signature, .. } => {
                let signature = Signature(signature);
                if height > self.tip_height {
                    // Not checkable before this node has the header: taken only from the
                    // signer itself (the relay is the peer Noise authenticated). A copy
                    // relayed by others is left alone; the signer sends it again
                    // (`on_tick`) until the height is certified.
                    if self.peers_by_id.get(relay) != Some(&signer) {
                        return Ok(Verdict::Ignore);
                    }
                    // A signer this far ahead may show this node is behind (sync); its signature is not kept.
                    self.claim(signer, height);
                    if height > self.tip_height + EARLY_SIGNATURES_HEIGHTS {
                        return Ok(Verdict::Ignore);
                    }
                    let held = HeldSignature { signature, checked: false };
                    self.signatures.entry(height).or_default().insert(signer, held);
                    return Ok(Verdict::Accept);
                }
                if !self.uncertified.contains(&height) {
                    return Ok(Verdict::Ignore);
                }
                let held = self.signatures.get(&height).and_then(|s| s.get(&signer));
                if held.is_some_and(|h| h.checked && h.signature == signature) {
                    // A copy of one checked already (another sequence number): not checked again.
                    return Ok(Verdict::Ignore);
                }
                // Checked on arrival, so a bad copy from anyone never displaces a good one.
                let header = self.shared.store().header(Height(height))?.context("a committed height has no header")?;
                // The signer index is in the set of that height, which governance may have changed since.
                let set = annal_ledger::proof::set_at(&self.shared.store(), &self.shared.genesis, Height(height))?;
                let valid = set
                    .validators
                    .get(signer as usize)
                    .is_some_and(|v| v.consensus_key.verify_checkpoint(&header.checkpoint(), &signature));
                if !valid {
                    return Ok(Verdict::Reject);
                }
                self.signatures.entry(height).or_default().insert(signer, HeldSignature { signature, checked: true });
                self.try_certify(height)?;
            }
        }
        Ok(Verdict::Accept)
    }

    /// Hands a consensus message from validator `from` to the core; the
    /// gossip verdict says whether the core took it.
    fn on_consensus_message(&mut self, from: u32, m: Message, fx: &mut Effects) -> Result<Verdict> {
        let before = self.rejected;
        let taken = |app: &Self| app.validator.as_ref().map(|v| v.core.messages_taken());
        let taken_before = taken(self);
        self.drive(Input::Message { from: ValidatorIndex(from), message: m }, fx)?;
        if self.rejected > before {
            // Bad signature, wrong signer, malformed certificate: not relayed.
            return Ok(Verdict::Reject);
        }
        if taken_before.is_some() && taken(self) == taken_before {
            // Outside the core's window of views, or a copy of what it holds: it did
            // nothing with it, so neither is it relayed (review, session 30).
            return Ok(Verdict::Ignore);
        }
        Ok(Verdict::Accept)
    }

    /// When a compact proposal stops waiting for its records and its whole
    /// proposal is asked for: [`RECORDS_WAIT`] after it came, or up to
    /// [`RECORDS_WAIT_CHECKING`] while gossiped records wait for their check here.
    fn gives_up_at(&self, w: &Waiting) -> Duration {
        w.came + if self.records_unchecked > 0 { RECORDS_WAIT_CHECKING } else { RECORDS_WAIT }
    }

    /// Hands the core each waiting compact proposal whose records have all
    /// arrived; asks the leader for the whole proposal of those that waited
    /// in vain ([`App::gives_up_at`]).
    fn settle_waiting(&mut self, fx: &mut Effects) -> Result<()> {
        let now = self.now();
        for mut w in std::mem::take(&mut self.waiting) {
            {
                let pool = self.shared.pool.lock().expect("pool lock");
                w.missing.retain(|id| pool.get(id).is_none());
            }
            if !w.missing.is_empty() && self.gives_up_at(&w) > now {
                self.waiting.push(w);
                continue;
            }
            let (height, view) = (w.proposal.height, w.proposal.view);
            match self.rebuild(&w.proposal) {
                Ok(Ok(m)) => {
                    self.shared.metrics.proposals_rebuilt.fetch_add(1, Ordering::Relaxed);
                    self.on_whole_proposal(w.from, m, fx)?;
                }
                Ok(Err(missing)) if self.gives_up_at(&w) > now => self.waiting.push(Waiting { missing, ..w }),
                Ok(Err(_)) => {
                    if let Some(leader) = self.peer_of(w.from) {
                        self.fetch(leader, SyncRequest::Proposal { height, view }, fx);
                    }
                }
                // The rules changed while it waited (governance): refused as on arrival.
                Err(why) => warn!(from = w.from, height, view, "refusing a compact proposal: {why}"),
            }
        }
        Ok(())
    }

    /// Hands the core a proposal rebuilt from a compact one or fetched whole.
    /// One that comes after its view ended (it waited for records while the
    /// others notarized it) is also offered as the block itself, which the core
    /// takes if it wants that block (a certificate names it) instead of asking
    /// a peer.
    fn on_whole_proposal(&mut self, from: u32, m: Message, fx: &mut Effects) -> Result<Verdict> {
        let late = match (&m, &self.validator) {
            (Message::Propose(p), Some(v)) if v.core.view() > p.block.view => Some(p.block.clone()),
            _ => None,
        };
        let verdict = self.on_consensus_message(from, m, fx)?;
        if let Some(block) = late {
            self.drive(Input::Message { from: ValidatorIndex(from), message: Message::BlockResponse(block) }, fx)?;
        }
        Ok(verdict)
    }

    /// A request to a peer was answered or failed: it may be sent again.
    pub fn fetch_done(&mut self, peer: PeerId, request: &SyncRequest) {
        self.fetching.remove(&(peer, codec::encode(request)));
    }

    /// A peer's answer to [`SyncRequest::Proposal`] or [`SyncRequest::Block`]:
    /// handed to the core as the message it carries.
    pub fn apply_fetched(
        &mut self,
        peer: PeerId,
        request: &SyncRequest,
        answer: &[u8],
        fx: &mut Effects,
    ) -> Result<()> {
        self.fetch_done(peer, request);
        let Some(&from) = self.peers_by_id.get(&peer) else { return Ok(()) };
        let bytes = match codec::decode::<SyncResponse>(answer, self.limits.message_bytes_max + 64) {
            Ok(SyncResponse::Proposal(Some(bytes)) | SyncResponse::Block(Some(bytes))) => bytes,
            Ok(SyncResponse::Proposal(None) | SyncResponse::Block(None)) => {
                debug!(%peer, ?request, "the peer does not hold what was asked");
                return Ok(());
            }
            Ok(_) | Err(_) => {
                warn!(%peer, ?request, "unreadable answer");
                return Ok(());
            }
        };
        match (request, Message::decode(&bytes, &self.limits)) {
            (SyncRequest::Proposal { .. }, Ok(m @ Message::Propose(_))) => {
                self.shared.metrics.proposals_fetched.fetch_add(1, Ordering::Relaxed);
                self.on_whole_proposal(from, m, fx)?;
                Ok(())
            }
            // The core takes a block only if it wants it: one a certificate names.
            (SyncRequest::Block { .. }, Ok(message @ Message::BlockResponse(_))) => {
                self.drive(Input::Message { from: ValidatorIndex(from), message }, fx)
            }
            _ => {
                warn!(%peer, ?request, "the answer is not what was asked");
                Ok(())
            }
        }
    }

    fn saw_height(&mut self, h: u64) {
        self.seen_height = self.seen_height.max(h);
    }

    /// What a consensus message relayed by `relay` shows of the chain's
    /// height, before the core judges it (the core drops a message too far
    /// ahead of its view unchecked, and such a message is relayed): a
    /// finalization certificate only once verified against the running set;
    /// a vote (the voter has the block below it) only as its signer's word,
    /// and only when the relay is that signer.
    fn note_height(&mut self, relay: &PeerId, from: u32, m: &Message) {
        match m {
            Message::Vote(v) if self.peers_by_id.get(relay) == Some(&from) => {
                self.claim(from, v.height.0.saturating_sub(1));
            }
            Message::Certificate(c)
                if c.kind == VoteKind::Finalize
                    && c.height.0 > self.seen_height
                    && c.verify(&self.chain, &self.set, &Ed25519Verifier).is_ok() =>
            {
                self.saw_height(c.height.0);
            }
            _ => {}
        }
    }

    /// Takes validator `index`'s word that the chain has reached height `h`.
    /// The height counts once validators holding more than a third of the
    /// power have shown it or more: at least one of them is honest. One lying
    /// validator could otherwise keep every node "catching up" for good, which
    /// stops block fetches, drops proposals and restarts cores on each sync.
    fn claim(&mut self, index: u32, h: u64) {
        if self.set.get(ValidatorIndex(index)).is_none() {
            return;
        }
        let held = self.claims.entry(index).or_default();
        if h <= *held {
            return;
        }
        *held = h;
        let mut shown: Vec<(u64, u64)> =
            (self.claims.iter()).filter_map(|(&i, &h)| self.set.get(ValidatorIndex(i)).map(|v| (h, v.power))).collect();
        shown.sort_unstable_by_key(|&(h, _)| std::cmp::Reverse(h));
        let total = u128::from(self.set.total_power());
        let mut power = 0u128;
        for (h, p) in shown {
            power += u128::from(p);
            if 3 * power > total {
                self.saw_height(h);
                return;
            }
        }
    }

    /// Asks validator `to` for the block `digest` its core lacks, by
    /// request-response: the answer comes from that one peer. Not asked when
    /// this node is far behind (sync brings the blocks) or when a compact
    /// proposal waiting for its records stands for that block.
    fn request_block(&mut self, to: ValidatorIndex, digest: [u8; 32], fx: &mut Effects) {
        if self.behind() || self.waiting.iter().any(|w| w.proposal.digest == digest) {
            return;
        }
        let Some(peer) = self.peer_of(to.0) else { return };
        self.fetch(peer, SyncRequest::Block { digest }, fx);
    }

    /// The peer of validator `index` in the set in force.
    fn peer_of(&self, index: u32) -> Option<PeerId> {
        self.peers_by_id.iter().find(|(_, &i)| i == index).map(|(p, _)| *p)
    }

    /// Sends `request` to `peer` unless it is in flight to that peer already
    /// or [`FETCHES_MAX`] requests are.
    fn fetch(&mut self, peer: PeerId, request: SyncRequest, fx: &mut Effects) {
        let key = (peer, codec::encode(&request));
        if self.fetching.len() < FETCHES_MAX && self.fetching.insert(key) {
            debug!(%peer, ?request, "asking a peer");
            fx.fetch.push((peer, request));
        }
    }

    /// The request for block `digest`, answered off the loop ([`history`]): the core's
    /// block (shared, encoded there: up to megabytes a request), a voted block's file, or
    /// the store.
    fn block_request(&self, digest: &[u8; 32]) -> history::Request {
        if let Some(b) = self.validator.as_ref().and_then(|v| v.core.block(digest)) {
            return history::Request::Held { digest: *digest, block: b.clone() };
        }
        let voted = self.persisted.contains_key(digest).then(|| self.data_dir.join("blocks").join(hex::encode(digest)));
        history::Request::Block { digest: *digest, voted }
    }

    /// A timer fired or the tick came round.
    pub fn on_time(&mut self, fx: &mut Effects) -> Result<()> {
        let now = self.now();
        let due: Vec<(Duration, u64)> = self.timers.range(..=(now, u64::MAX)).copied().collect();
        for t in due {
            self.timers.remove(&t);
            self.drive(Input::Timeout(consensus::View(t.1)), fx)?;
        }
        if let Some(input) = self.payload_if_ready() {
            self.drive(input, fx)?;
        }
        if !self.waiting.is_empty() {
            self.settle_waiting(fx)?;
        }
        Ok(())
    }

    /// Re-sends this validator's signatures for recent uncertified heights and
    /// decides whether to sync. Returns a sync request to send, if any.
    pub fn on_tick(&mut self, fx: &mut Effects) -> Result<Option<(PeerId, SyncRequest)>> {
        if let (Some(b), Some(v)) = (self.byzantine.as_mut(), self.validator.as_ref()) {
            fx.publish.extend(b.attacks(v.core.view().0, self.tip_height + 1));
        }
        if self.validator.is_some() {
            let recent: Vec<u64> = self.uncertified.range(self.tip_height.saturating_sub(16)..).copied().collect();
            for h in recent {
                let Some(header) = self.shared.store().header(Height(h))? else { continue };
                let Some((index, signature)) = self.own_checkpoint_signature(h, &header)? else { continue };
                let env =
                    Envelope::Checkpoint { seq: self.next_seq(), height: h, signer: index, signature: signature.0 };
                fx.publish.push((Topic::Consensus, codec::encode(&env)));
            }
        }
        self.refresh_status();
        if self.sync_in_flight {
            return Ok(None);
        }
        let peer = self.pick_peer();
        // Also behind when peers are past this epoch's last block and this node has not committed it:
        // the epoch's cores that could still deliver it are gone, so only sync can.
        let epoch_passed = self.tip_height < self.epoch_end && self.seen_height >= self.epoch_end;
        if self.behind() || epoch_passed {
            self.behind_ticks += 1;
        } else {
            self.behind_ticks = 0;
        }
        // Also a tip that has not moved for STALL_TICKS: ask a peer what follows it anyway. Claims
        // alone may never show a node behind: one that slept through a set change which moved
        // validators' indices hears votes and checkpoints signed under indices of a set it
        // does not run yet, and no certificate of that set verifies against its own. The
        // answer is verified like any sync; when nothing follows the tip, nothing changes.
        self.stall =
            if self.stall.0 == self.tip_height { (self.tip_height, self.stall.1 + 1) } else { (self.tip_height, 0) };
        if self.behind_ticks >= 2 || self.stall.1 >= STALL_TICKS {
            if let Some(p) = peer {
                debug!(%p, height = self.tip_height, stalled_ticks = self.stall.1, "asking a peer for blocks");
                self.stall.1 = 0;
                self.sync_in_flight = true;
                return Ok(Some((p, SyncRequest::Blocks { from: self.tip_height + 1, max: SYNC_BATCH })));
            }
        }
        // Old heights whose signatures this node missed: ask a peer for their certificates.
        let old: Vec<u64> = self.uncertified.range(..self.tip_height.saturating_sub(16)).copied().take(64).collect();
        if let (Some(&from), Some(&to), Some(p)) = (old.first(), old.last(), peer) {
            self.sync_in_flight = true;
            return Ok(Some((p, SyncRequest::Certificates { from, to })));
        }
        Ok(None)
    }

    /// The connected peers that are validators of the set in force.
    pub fn validator_peers(&self) -> Vec<PeerId> {
        self.connected.iter().filter(|p| self.peers_by_id.contains_key(p)).copied().collect()
    }

    fn pick_peer(&self) -> Option<PeerId> {
        let validators = self.validator_peers();
        if validators.is_empty() {
            return None;
        }
        Some(validators[(self.seq as usize) % validators.len()])
    }

    /// Answers a peer's request: this leader's recent proposals whole (ADR 0008), now;
    /// blocks, certificates and a block by digest (from the core, a voted block's file or
    /// the store) are named for [`history`] to answer off the loop.
    pub fn answer_sync(&self, data: &[u8]) -> Result<SyncAnswer> {
        let request: SyncRequest = codec::decode(data, 64).context("unreadable sync request")?;
        Ok(match request {
            SyncRequest::Blocks { from, max } => SyncAnswer::History(history::Request::Blocks { from, max }),
            SyncRequest::Certificates { from, to } => SyncAnswer::History(history::Request::Certificates { from, to }),
            SyncRequest::Proposal { height, view } => SyncAnswer::Ready(codec::encode(&SyncResponse::Proposal(
                self.own_proposals
                    .iter()
                    .find(|(k, _)| *k == (height, view))
                    .map(|(_, p)| Message::Propose(p.clone()).encode()),
            ))),
            SyncRequest::Block { digest } => SyncAnswer::History(self.block_request(&digest)),
        })
    }

    /// What the store answers off the loop needs: the node's shared state and its limits.
    pub fn history_context(&self) -> (Arc<Shared>, consensus::Limits) {
        (self.shared.clone(), self.limits)
    }

    /// Applies a peer's sync answer: verifies the chain of blocks against this
    /// node's tip and a finalization by the validator set, then commits each.
    pub fn apply_sync(&mut self, peer: PeerId, data: &[u8], fx: &mut Effects) -> Result<()> {
        self.sync_in_flight = false;
        let response: SyncResponse = match codec::decode(data, usize::MAX >> 1) {
            Ok(r) => r,
            Err(e) => {
                warn!(%peer, "unreadable sync answer: {e}");
                return Ok(());
            }
        };
        // No more than an honest answer holds is looked at, and each height's certificate
        // is checked once: a peer's answer of thousands of forged copies of one, or of
        // made-up blocks that chain to this tip, each with a forged finalization, would
        // otherwise hold the loop for seconds (review, session 30).
        match response {
            SyncResponse::Certificates(certs) => {
                let mut tried = BTreeSet::new();
                for bytes in certs.iter().take(SYNC_CERTIFICATES_MAX) {
                    let Ok(cert) = Certificate::from_bytes(bytes) else { continue };
                    if tried.insert(cert.height) {
                        self.verify_and_store_certificate(&cert)?;
                    }
                }
            }
            SyncResponse::Blocks(mut entries) => {
                entries.truncate((SYNC_BATCH + SYNC_EXTRA_MAX) as usize);
                let applied = self.apply_blocks(peer, entries, fx)?;
                if applied > 0 {
                    info!(%peer, applied, height = self.tip_height, "synced blocks");
                    self.restart_core(fx)?;
                }
            }
            SyncResponse::Proposal(_) | SyncResponse::Block(_) => {
                warn!(%peer, "a proposal or block where blocks or certificates were asked for")
            }
        }
        Ok(())
    }

    fn verify_and_store_certificate(&mut self, cert: &Certificate) -> Result<()> {
        let h = cert.height.0;
        if !self.uncertified.contains(&h) {
            return Ok(());
        }
        let Some(header) = self.shared.store().header(cert.height)? else { return Ok(()) };
        let set = annal_ledger::proof::set_at(&self.shared.store(), &self.shared.genesis, cert.height)?;
        match cert.verify(&header, &set) {
            Ok(()) => self.store_certificate(cert),
            Err(e) => {
                warn!(height = h, "a peer's certificate does not verify: {e}");
                Ok(())
            }
        }
    }

    fn apply_blocks(&mut self, peer: PeerId, entries: Vec<SyncBlock>, fx: &mut Effects) -> Result<usize> {
        let mut blocks = Vec::with_capacity(entries.len());
        let mut digests = Vec::with_capacity(entries.len());
        let mut expect_parent = self.tip.digest;
        for (expect_height, e) in (self.tip_height + 1..).zip(&entries) {
            let Ok(Message::BlockResponse(b)) = Message::decode(&e.block, &self.limits) else {
                warn!(%peer, "sync answer carries an unreadable block");
                break;
            };
            if b.height.0 != expect_height || b.parent != expect_parent {
                warn!(%peer, height = b.height.0, "sync answer does not extend this node's chain");
                break;
            }
            // Each block hashes under the chain id of its own epoch.
            expect_parent = b.hash(&self.chain_of(b.height.0));
            digests.push(expect_parent);
            blocks.push(b);
        }
        let (chain, set) = (self.chain, self.set.clone());
        let verifies =
            move |c: &Finalization| c.kind == VoteKind::Finalize && c.verify(&chain, &set, &Ed25519Verifier).is_ok();
        // The last block whose own finalization verifies makes it and every block before it final.
        let mut last_final = None;
        for (i, (b, e)) in blocks.iter().zip(&entries).enumerate().rev() {
            if b.height.0 > self.epoch_end {
                // A later epoch's finalization: checked once this node has entered that epoch.
                continue;
            }
            let Ok(Message::Certificate(c)) = Message::decode(&e.finalization, &self.limits) else { continue };
            let own = c.height == b.height && c.digest == digests[i];
            // The epoch's last block may be final only through the empty blocks after it.
            let through_tail = !own && b.height.0 == self.epoch_end && self.tail_reaches(b, &e.tail, &c);
            if (own || through_tail) && verifies(&c) {
                last_final = Some((i, c, through_tail));
                break;
            }
        }
        let Some((last, finalization, through_tail)) = last_final else { return Ok(0) };
        for (k, ((b, e), &digest)) in blocks.iter().zip(&entries).zip(&digests).take(last + 1).enumerate() {
            // A block's own finalization is kept (and served to others) only if it verifies;
            // else the last block's, which makes this one final too.
            let own = match Message::decode(&e.finalization, &self.limits) {
                Ok(Message::Certificate(c)) if c.height == b.height && c.digest == digest && verifies(&c) => c,
                _ => finalization.clone(),
            };
            let tail = (k == last && through_tail).then(|| e.tail.clone());
            self.commit(b, digest, &own, tail, fx)?;
            if let Some(cert) = e.certificate.as_ref().and_then(|c| Certificate::from_bytes(c).ok()) {
                self.verify_and_store_certificate(&cert)?;
            }
        }
        Ok(last + 1)
    }

    /// When these outputs finalize this epoch's last block through a descendant, the
    /// empty blocks from it to that descendant (they follow it in the same outputs).
    fn epoch_tail(&self, outputs: &[Output]) -> Option<EpochTail> {
        let end = self.epoch_end;
        let mut upto = None;
        let mut blocks = Vec::new();
        for out in outputs {
            let Output::Finalized { block, certificate, .. } = out else { continue };
            if block.height.0 == end && certificate.height.0 > end {
                upto = Some(certificate.height.0);
            } else if upto.is_some_and(|u| block.height.0 > end && block.height.0 <= u) {
                blocks.push(Message::encode_block_response(block));
            }
        }
        let upto = upto?;
        (blocks.len() as u64 == upto - end).then_some(EpochTail { blocks })
    }

    /// Whether `tail` links `b`, this epoch's last block, to the block `c` finalizes:
    /// consecutive empty blocks of this epoch, each the parent of the next.
    fn tail_reaches(&self, b: &Block, tail: &EpochTail, c: &Finalization) -> bool {
        if c.height.0 <= b.height.0 || tail.blocks.len() as u64 != c.height.0 - b.height.0 {
            return false;
        }
        let mut parent = b.hash(&self.chain);
        for (k, bytes) in tail.blocks.iter().enumerate() {
            let Ok(Message::BlockResponse(t)) = Message::decode(bytes, &self.limits) else { return false };
            let empty =
                BlockBody::from_bytes(&t.payload, self.limits.payload_bytes_max).is_ok_and(|x| x.records.is_empty());
            if t.height.0 != b.height.0 + 1 + k as u64 || t.parent != parent || !empty {
                return false;
            }
            parent = t.hash(&self.chain);
        }
        parent == c.digest
    }

    /// Starts a new core at the (synced) tip with this validator's current safety state.
    /// Also starts the core of a new validator set, or stops voting when this
    /// node's key left the set (its signer state carries over either way).
    fn restart_core(&mut self, fx: &mut Effects) -> Result<()> {
        self.core_stale = false;
        self.timers.clear();
        self.owed_payload = None;
        // The signer state carries over within an epoch; a new epoch signs under a new chain id from its own.
        let safety = match self.validator.take() {
            Some(v) if self.core_epoch == self.epoch => v.core.safety_state(),
            _ => self.read_safety()?,
        };
        let Some(key) = self.consensus_key.as_ref().map(|k| SecretKey::from_seed(k.seed())) else { return Ok(()) };
        let in_force = self.shared.governance().validators.clone();
        let Some(index) = in_force.validators.iter().position(|v| v.consensus_key == key.public()) else {
            info!(
                height = self.tip_height + 1,
                "this node's consensus key is not in the validator set in force: not voting"
            );
            return Ok(());
        };
        let core = self.new_core(&key, index as u32, safety)?;
        self.core_epoch = self.epoch;
        self.validator = Some(Validator { key, core });
        self.drive(Input::Start, fx)
    }

    pub fn peer_connected(&mut self, peer: PeerId) {
        self.connected.insert(peer);
        self.refresh_status();
    }

    pub fn peer_disconnected(&mut self, peer: PeerId) {
        self.connected.remove(&peer);
        self.refresh_status();
    }

    /// The next instant the loop must wake for a timer or an owed payload.
    pub fn next_wake(&self) -> Duration {
        let mut next = self.now() + TICK;
        if let Some(&(deadline, _)) = self.timers.first() {
            next = next.min(deadline);
        }
        if self.owed_payload.is_some() {
            next = next.min(self.now() + Duration::from_millis(5));
        }
        if let Some(first) = self.waiting.iter().map(|w| self.gives_up_at(w)).min() {
            next = next.min(first);
        }
        if let Some(since) = self.gossip_since {
            next = next.min(since + GOSSIP_LINGER);
        }
        next
    }

    /// Queues records the API admitted for [`App::drain_gossip`].
    pub fn queue_gossip(&mut self, records: Vec<Vec<u8>>) {
        if records.is_empty() {
            return;
        }
        if self.gossip_queue.is_empty() {
            self.gossip_since = Some(self.now());
        }
        self.gossip_queue.extend(records);
    }

    /// Takes the records the API admitted as gossip batches: every full batch,
    /// and the last, smaller one if it is large enough, has waited
    /// `GOSSIP_LINGER`, or `flush` (a consensus message is about to go out,
    /// and a proposal naming these records must not overtake them).
    pub fn drain_gossip(&mut self, flush: bool) -> Vec<(Topic, Vec<u8>)> {
        let lingered = self.gossip_since.is_some_and(|since| self.now() >= since + GOSSIP_LINGER);
        let queued = self.gossip_queue.len();
        let mut out = Vec::new();
        let mut batch = Vec::new();
        let mut bytes = 0;
        for r in std::mem::take(&mut self.gossip_queue) {
            if batch.len() == GOSSIP_BATCH_RECORDS || (bytes + r.len() > GOSSIP_BATCH_BYTES && !batch.is_empty()) {
                out.push((Topic::Records, codec::encode(&RecordBatch { records: std::mem::take(&mut batch) })));
                bytes = 0;
            }
            bytes += r.len();
            batch.push(r);
        }
        let worth_a_message = batch.len() >= GOSSIP_BATCH_RECORDS_MIN || bytes >= GOSSIP_BATCH_BYTES / 4;
        if !batch.is_empty() && (flush || lingered || worth_a_message) {
            out.push((Topic::Records, codec::encode(&RecordBatch { records: std::mem::take(&mut batch) })));
        }
        // What waits on keeps the time its oldest record came (a full batch sent
        // ahead of it took only records that came earlier or with it).
        if batch.is_empty() {
            self.gossip_since = None;
        }
        self.gossip_queue = batch;
        let m = &self.shared.metrics;
        m.record_batches_gossiped.fetch_add(out.len() as u64, Ordering::Relaxed);
        m.records_gossiped.fetch_add((queued - self.gossip_queue.len()) as u64, Ordering::Relaxed);
        out
    }
}

/// Admits a record batch from the records topic (on a blocking thread: it
/// verifies signatures) and judges it: malformed records mean the relaying
/// peer misbehaves; records refused for a rule or a full mempool do not.
fn admit_gossiped(shared: &Shared, data: &[u8]) -> Verdict {
    let max = record_batch_bytes_max(&shared.genesis.params);
    let Ok(batch) = codec::decode::<RecordBatch>(data, max) else { return Verdict::Reject };
    if batch.records.len() > GOSSIP_BATCH_RECORDS {
        return Verdict::Reject;
    }
    let mut verdict = Verdict::Accept;
    for result in shared.admit_many(batch.records, Source::Peer) {
        match result {
            Ok(_) => {}
            Err(crate::shared::Failure::Malformed(_)) => verdict = Verdict::Reject,
            Err(f) => debug!("gossiped record not admitted: {}", f.detail()),
        }
    }
    verdict
}

/// Whether the link's finalization is the block's own (not a descendant's).
/// A block names each record once.
fn check_distinct(ids: &[RecordId]) -> std::result::Result<(), String> {
    let mut seen = BTreeSet::new();
    match ids.iter().enumerate().find(|(_, id)| !seen.insert(**id)) {
        Some((i, id)) => Err(format!("record {i} ({id}) appears twice")),
        None => Ok(()),
    }
}

/// The validator that leads `p`'s view under `chain` and `set`, if its
/// signature over the digest `p` names checks (ids and parent are not signed).
fn leader_signed(
    p: &CompactProposal,
    chain: &ChainId,
    set: &consensus::ValidatorSet,
) -> std::result::Result<u32, consensus::Error> {
    let vote =
        consensus::proposal_vote(set, consensus::View(p.view), consensus::Height(p.height), p.digest, p.signature);
    consensus::verify_vote(&vote, chain, set, &Ed25519Verifier).map(|()| vote.signer.0)
}

/// The records of the blocks from `from` (digest, height) down to `tip`,
/// each block found by `block(digest, height)` as its record ids and its
/// parent. `None` if a block in between is unknown or the walk passes the tip's
/// height without meeting it. One height per step, so claimed parents cannot
/// make it loop.
fn records_down_to<'a>(
    tip: ([u8; 32], u64),
    from: ([u8; 32], u64),
    block: impl Fn(&[u8; 32], u64) -> Option<(&'a [RecordId], [u8; 32])>,
) -> Option<BTreeSet<RecordId>> {
    let mut out = BTreeSet::new();
    let (mut at, mut height) = from;
    while at != tip.0 {
        if height <= tip.1 {
            return None;
        }
        let (ids, parent) = block(&at, height)?;
        out.extend(ids.iter().copied());
        at = parent;
        height -= 1;
    }
    Some(out)
}

/// Writes `parts` one after another to a new file at `path` and syncs it.
pub(crate) fn write_synced(path: &std::path::Path, parts: &[&[u8]]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    parts
        .iter()
        .try_for_each(|part| f.write_all(part))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn sync_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

/// The consensus chain id of epoch `epoch`: the genesis hash for epoch 0, then
/// `SHA-256("annal/epoch/v1" || genesis hash || epoch LE)`, so no vote of one
/// epoch is a vote in another and each epoch's views start afresh.
pub fn epoch_chain(genesis_hash: [u8; 32], epoch: u64) -> ChainId {
    if epoch == 0 {
        return ChainId(genesis_hash);
    }
    let mut h = sha2::Sha256::new();
    h.update(b"annal/epoch/v1");
    h.update(genesis_hash);
    h.update(epoch.to_le_bytes());
    ChainId(h.finalize().into())
}

/// Where a validator keeps the safety state of `epoch`.
fn safety_file(data_dir: &std::path::Path, epoch: u64) -> PathBuf {
    match epoch {
        0 => data_dir.join("safety"),
        e => data_dir.join(format!("safety-{e}")),
    }
}

/// The consensus core's view of a ledger validator set.
fn consensus_set(set: &annal_ledger::block::ValidatorSet) -> consensus::ValidatorSet {
    consensus::ValidatorSet::new(
        set.validators
            .iter()
            .map(|v| consensus::Validator {
                key: ed25519_dalek::VerifyingKey::from_bytes(&v.consensus_key.0).expect("sets are checked on entry"),
                power: v.power,
            })
            .collect(),
    )
}

/// The validator a consensus message from gossip is attributed to, which
/// names no author: a vote's signer, the leader of a proposal's view, one of
/// a certificate's signers (chosen by view, spreading the block requests a
/// certificate may cause over the validators that voted for the block).
/// The core checks every signature itself and uses `from` only to name the
/// sender of a rejected message, to help a lagging voter and to ask for a
/// block it lacks; `None` when the message names no validator of `set`.
fn attribute(set: &consensus::ValidatorSet, m: &Message) -> Option<u32> {
    let index = match m {
        Message::Vote(v) => v.signer.0,
        Message::Propose(p) => set.leader(p.block.view).0,
        Message::Certificate(c) => {
            let signers = c.signer_indices();
            signers.get((c.view.0 % signers.len().max(1) as u64) as usize)?.0
        }
        Message::BlockRequest(_) | Message::BlockResponse(_) => return None,
    };
    (index < set.len() as u32).then_some(index)
}

/// Peer id → validator index, for a set.
fn peers_of(set: &annal_ledger::block::ValidatorSet) -> Result<BTreeMap<PeerId, u32>> {
    let mut out = BTreeMap::new();
    for (i, v) in set.validators.iter().enumerate() {
        out.insert(crate::net::peer_id(&v.p2p_key)?, i as u32);
    }
    Ok(out)
}

/// Runs the loop until `shutdown` resolves or a fatal error.
pub async fn run_loop(
    mut app: App,
    net: NetworkHandle,
    mut events: mpsc::Receiver<NetEvent>,
    mut admitted: mpsc::Receiver<Vec<Vec<u8>>>,
    response_max: usize,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let (sync_tx, mut sync_rx) = mpsc::channel::<(PeerId, std::result::Result<Vec<u8>, String>)>(4);
    type Fetched = (PeerId, SyncRequest, std::result::Result<Vec<u8>, String>);
    let (fetch_tx, mut fetch_rx) = mpsc::channel::<Fetched>(FETCHES_MAX);
    // Record batches are checked off the loop (signatures cost milliseconds
    // per batch), a few at a time; past that they wait in a bounded queue, and
    // past the queue they are dropped unjudged (their origin node still holds
    // them and proposes them when it leads). Consensus never waits for records.
    let (admitted_tx, mut admitted_rx) = mpsc::channel::<(GossipId, Verdict)>(RECORD_CHECKS_MAX);
    let mut record_queue = RecordQueue::<GossipId>::new();
    let mut record_checks = 0usize;
    let history_gate = history::Gate::default();
    let mut fx = app.start()?;
    let mut tick = tokio::time::interval(TICK);
    loop {
        while record_checks < RECORD_CHECKS_MAX {
            let Some((id, data)) = record_queue.pop() else { break };
            record_checks += 1;
            let (shared, tx) = (app.shared.clone(), admitted_tx.clone());
            tokio::task::spawn_blocking(move || {
                let verdict = admit_gossiped(&shared, &data);
                let _ = tx.blocking_send((id, verdict));
            });
        }
        if let Some(keys) = fx.allowlist.take() {
            match crate::net::Allowlist::new(&keys) {
                Ok(list) => net.set_allowlist(list).await?,
                Err(e) => error!("the new validator set's p2p keys do not make an allowlist: {e}"),
            }
        }
        // Records first: a proposal that names them by id should not overtake them.
        for (topic, data) in app.drain_gossip(!fx.publish.is_empty()).into_iter().chain(fx.publish.drain(..)) {
            if let Err(e) = net.publish(topic, data).await {
                debug!("publish failed: {e}");
            }
        }
        for (peer, request) in fx.fetch.drain(..) {
            let (net, tx) = (net.clone(), fetch_tx.clone());
            tokio::spawn(async move {
                let result = net.request(peer, codec::encode(&request)).await.map_err(|e| e.to_string());
                let _ = tx.send((peer, request, result)).await;
            });
        }
        let m = &app.shared.metrics;
        m.net_events_queued.store(events.len() as u64, Ordering::Relaxed);
        m.net_commands_queued.store(net.commands_queued() as u64, Ordering::Relaxed);
        m.record_batches_queued.store(record_queue.len() as u64, Ordering::Relaxed);
        app.records_unchecked = record_queue.len() + record_checks;
        let wake = tokio::time::Instant::from_std(app.started + app.next_wake());
        tokio::select! {
            _ = shutdown.changed() => break,
            event = events.recv() => {
                let Some(event) = event else { bail!("the network task stopped") };
                match event {
                    NetEvent::Gossip { topic: Topic::Consensus, from, id, data } => {
                        let verdict = app.on_consensus_gossip(&from, &data, &mut fx)?;
                        report(&net, id, verdict).await;
                    }
                    NetEvent::Gossip { topic: Topic::Records, id, data, .. } => {
                        if let Err(id) = record_queue.push(id, data) {
                            app.shared.metrics.record_batches_dropped.fetch_add(1, Ordering::Relaxed);
                            report(&net, id, Verdict::Ignore).await;
                        }
                    }
                    NetEvent::Request { from, data, channel } => {
                        answer(&app, &net, &history_gate, from, &data, channel, response_max).await
                    }
                    NetEvent::PeerConnected { peer } => app.peer_connected(peer),
                    NetEvent::PeerDisconnected { peer } => app.peer_disconnected(peer),
                    NetEvent::PeerSubscribed { .. } => {}
                }
            }
            Some(records) = admitted.recv() => {
                app.queue_gossip(records);
                while let Ok(more) = admitted.try_recv() {
                    app.queue_gossip(more);
                }
                app.on_time(&mut fx)?;
            }
            Some((id, verdict)) = admitted_rx.recv() => {
                record_checks -= 1;
                report(&net, id, verdict).await;
                app.on_time(&mut fx)?;
            }
            Some((peer, request, result)) = fetch_rx.recv() => match result {
                Ok(data) => app.apply_fetched(peer, &request, &data, &mut fx)?,
                Err(e) => {
                    app.fetch_done(peer, &request);
                    debug!(%peer, ?request, "request to a peer failed: {e}");
                }
            },
            Some((peer, result)) = sync_rx.recv() => match result {
                Ok(data) => app.apply_sync(peer, &data, &mut fx)?,
                Err(e) => {
                    app.sync_in_flight = false;
                    debug!(%peer, "sync request failed: {e}");
                }
            },
            _ = tick.tick() => {
                let peers = app.validator_peers();
                let tip = app.tip.digest;
                let (flood, requests) =
                    app.byzantine.as_mut().map(|b| b.history_flood(&peers, tip)).unwrap_or_default();
                for peer in flood {
                    for data in &requests {
                        let (net, data) = (net.clone(), data.clone());
                        tokio::spawn(async move {
                            loop {
                                let answer = net.request(peer, data.clone()).await.map(|a| a.len());
                                debug!(%peer, "history flood (test-only Byzantine mode) answered: {answer:?}");
                                tokio::time::sleep(crate::byzantine::HISTORY_FLOOD_GAP).await;
                            }
                        });
                    }
                }
                let oversized = app.byzantine.as_ref().and_then(|b| b.oversized_request()).zip(app.pick_peer());
                if let Some((data, peer)) = oversized {
                    let net = net.clone();
                    tokio::spawn(async move {
                        let answer = net.request(peer, data).await;
                        debug!(%peer, "oversized request (test-only Byzantine mode) answered: {answer:?}");
                    });
                }
                if let Some((peer, request)) = app.on_tick(&mut fx)? {
                    let (net, tx) = (net.clone(), sync_tx.clone());
                    tokio::spawn(async move {
                        let result = net.request(peer, codec::encode(&request)).await.map_err(|e| e.to_string());
                        let _ = tx.send((peer, result)).await;
                    });
                }
                app.on_time(&mut fx)?;
            }
            _ = tokio::time::sleep_until(wake) => app.on_time(&mut fx)?,
        }
    }
    Ok(())
}

async fn report(net: &NetworkHandle, id: GossipId, verdict: Verdict) {
    if let Err(e) = net.report(id, verdict).await {
        debug!("report failed: {e}");
    }
}

async fn answer(
    app: &App,
    net: &NetworkHandle,
    gate: &history::Gate,
    from: PeerId,
    data: &[u8],
    channel: ResponseChannel,
    max: usize,
) {
    let request = match app.answer_sync(data) {
        Ok(SyncAnswer::Ready(bytes)) => {
            if let Err(e) = net.respond(channel, bytes).await {
                debug!(%from, "sync answer not sent: {e}");
            }
            return;
        }
        Ok(SyncAnswer::History(request)) => request,
        Err(e) => {
            warn!(%from, "cannot answer a sync request: {e:#}");
            return;
        }
    };
    let permit = match gate.admit(from, request.kind(), Instant::now()) {
        Ok(permit) => permit,
        Err(refusal) => {
            // The stream closes unanswered; an honest peer asks again at a later tick.
            app.shared.metrics.history_requests_refused.fetch_add(1, Ordering::Relaxed);
            debug!(%from, ?request, "history request refused: {refusal}");
            return;
        }
    };
    let (shared, limits) = app.history_context();
    let net = net.clone();
    // Named in logs without holding the request (a held block's payload) past its build.
    let shown = format!("{request:?}");
    tokio::spawn(async move {
        let built = tokio::task::spawn_blocking(move || {
            let answer = history::answer(&shared, &limits, request, max);
            permit.done(Instant::now());
            answer
        })
        .await;
        match built {
            Ok(Ok(bytes)) => {
                if let Err(e) = net.respond(channel, bytes).await {
                    debug!(%from, "sync answer not sent: {e}");
                }
            }
            Ok(Err(e)) => warn!(%from, request = %shown, "cannot answer a sync request: {e:#}"),
            Err(e) => error!(%from, request = %shown, "building a sync answer failed: {e}"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> RecordId {
        RecordId([n; 32])
    }

    #[test]
    fn records_in_flight_are_found_down_to_the_tip() {
        // tip [0] at 10 ← [1] at 11 (held) ← [2] at 12 (only named by its proposal).
        let blocks = [
            Named { digest: [1; 32], height: 11, parent: [0; 32], ids: vec![id(1), id(2)] },
            Named { digest: [2; 32], height: 12, parent: [1; 32], ids: vec![id(3)] },
        ];
        let lookup = |d: &[u8; 32], h: u64| {
            blocks.iter().find(|b| b.digest == *d && b.height == h).map(|b| (&b.ids[..], b.parent))
        };
        let found = records_down_to(([0; 32], 10), ([2; 32], 12), lookup).unwrap();
        assert_eq!(found, [id(1), id(2), id(3)].into_iter().collect());
        assert_eq!(records_down_to(([0; 32], 10), ([0; 32], 10), lookup).unwrap(), BTreeSet::new());
        // A block in between unknown, or claimed at another height: not known.
        assert_eq!(records_down_to(([0; 32], 10), ([3; 32], 13), lookup), None);
        assert_eq!(records_down_to(([0; 32], 10), ([2; 32], 13), lookup), None);
    }

    #[test]
    fn the_record_queue_is_bounded_by_batches_and_by_bytes() {
        let gid = |i: usize| i;
        let mut q = RecordQueue::new();
        // By bytes: two batches of half the bound fit, a third byte does not.
        let half = RECORD_QUEUE_BYTES_MAX / 2;
        assert!(q.push(gid(1), vec![0; half]).is_ok());
        assert!(q.push(gid(2), vec![0; half]).is_ok());
        assert_eq!(q.push(gid(3), vec![0; 1]), Err(gid(3)));
        // Checked batches free their bytes, in arrival order.
        assert_eq!(q.pop().map(|(id, d)| (id, d.len())), Some((gid(1), half)));
        assert!(q.push(gid(3), vec![0; 1]).is_ok());
        assert_eq!(q.len(), 2);
        // By batches: small ones stop at the count.
        let mut q = RecordQueue::new();
        for i in 0..RECORD_QUEUE_MAX {
            assert!(q.push(gid(i), vec![0; 10]).is_ok());
        }
        assert!(q.push(gid(0), vec![0; 10]).is_err());
        while q.pop().is_some() {}
        assert_eq!((q.len(), q.bytes), (0, 0));
    }

    /// Goal: only the leader's own copy of a compact proposal speaks for its ids (only the
    /// digest is signed). A relay's altered copy that came first gives its waiting slot to
    /// the leader's, and a relay's copy that fails to rebuild does not erase the leader's
    /// named ids (a next leader builds on them); the leader's own failing copy does.
    #[test]
    fn a_relays_altered_compact_proposal_does_not_displace_the_leaders() {
        use annal_ledger::genesis::{Genesis, Params, Validator};
        use ed25519_dalek::Signer as _;
        let g = Genesis {
            chain_id: "annal-relay-test".into(),
            genesis_time_ms: 1_764_000_000_000,
            validators: (1..=4u8)
                .map(|i| Validator {
                    name: format!("v{i}"),
                    consensus_key: SecretKey::from_seed([i; 32]).public(),
                    p2p_key: SecretKey::from_seed([10 + i; 32]).public(),
                    power: 1,
                })
                .collect(),
            agencies: vec![],
            params: Params::default(),
        };
        let dir = std::env::temp_dir().join(format!("annal-relay-copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = annal_ledger::store::Store::open(
            &dir.join("store"),
            g.hash(),
            annal_ledger::store::StoreOptions { sync: false, ..Default::default() },
        )
        .unwrap();
        let (tx, _rx) = mpsc::channel(16);
        let shared = Arc::new(Shared::new(g.clone(), crate::config::Limits::default(), Some(0), store, tx));
        let mut app = App::new(shared, dir.clone(), Some(SecretKey::from_seed([1; 32]))).unwrap();
        let mut fx = app.start().unwrap();
        // Validator 1 leads view 1 and signs digest [1; 32]; copies differ only in their ids.
        let copy = |ids: Vec<RecordId>| {
            let chain = ChainId(g.hash());
            let bytes = consensus::signing_bytes(
                consensus::VoteKind::Propose,
                &chain,
                consensus::View(1),
                consensus::Height(1),
                &[1; 32],
            );
            let proposal = CompactProposal {
                height: 1,
                view: 1,
                parent_view: 0,
                parent: g.hash(),
                digest: [1; 32],
                time_ms: g.genesis_time_ms + 1,
                ids,
                signature: ed25519_dalek::SigningKey::from_bytes(&[2; 32]).sign(&bytes).to_bytes(),
            };
            codec::encode(&Envelope::Proposal { seq: 1, proposal })
        };
        let leader = crate::net::peer_id(&g.validators[1].p2p_key).unwrap();
        let relay = PeerId::random();
        let waiting_ids = |app: &App| app.waiting.iter().map(|w| w.proposal.ids.clone()).collect::<Vec<_>>();

        assert_eq!(app.on_consensus_gossip(&relay, &copy(vec![id(9)]), &mut fx).unwrap(), Verdict::Ignore);
        assert_eq!(waiting_ids(&app), [vec![id(9)]]);
        assert_eq!(app.on_consensus_gossip(&leader, &copy(vec![id(2)]), &mut fx).unwrap(), Verdict::Ignore);
        assert_eq!(waiting_ids(&app), [vec![id(2)]], "the leader's copy takes the slot");
        assert_eq!(app.on_consensus_gossip(&relay, &copy(vec![id(9)]), &mut fx).unwrap(), Verdict::Ignore);
        assert_eq!(waiting_ids(&app), [vec![id(2)]], "and keeps it");
        assert_eq!(app.named.iter().map(|n| n.ids.clone()).collect::<Vec<_>>(), [vec![id(2)]]);

        let too_many = vec![id(3); Params::default().block_records_max + 1];
        assert_eq!(app.on_consensus_gossip(&relay, &copy(too_many.clone()), &mut fx).unwrap(), Verdict::Reject);
        assert_eq!(app.named.len(), 1, "a relay's failing copy leaves the leader's ids");
        assert_eq!(app.on_consensus_gossip(&leader, &copy(too_many), &mut fx).unwrap(), Verdict::Reject);
        assert!(app.named.is_empty(), "the leader's own failing copy forgets them");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_proposal_naming_itself_as_parent_ends_the_walk() {
        // A block is looked up at one height (as `App::in_flight` does): the
        // claimed parent is asked for one height lower, and is not there.
        let looped = [id(7)];
        let lookup = |d: &[u8; 32], h: u64| (*d == [5; 32] && h == 12).then_some((&looped[..], [5; 32]));
        assert_eq!(records_down_to(([0; 32], 10), ([5; 32], 12), lookup), None);
        // Whatever the lookup says, the walk stops at the tip's height.
        let always = |_: &[u8; 32], _: u64| Some((&looped[..], [5; 32]));
        assert_eq!(records_down_to(([0; 32], 10), ([5; 32], 12), always), None);
        assert_eq!(records_down_to(([0; 32], 10), ([5; 32], 10), always), None);
    }
}
