//! The simulated world: nodes, a seeded network, a clock per node, and the event loop.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha256};

use super::byzantine::{Behaviour, Ctx, Kind};
use super::check::Checker;
use super::rng::Rng;
use super::{CachedVerifier, INVALID_PAYLOAD_PREFIX};
use crate::{
    signing_bytes, Anchor, Block, Certificate, ChainId, Config, Core, Digest, Height, Input, Message, Output,
    SafetyState, Signer, Validator, ValidatorIndex, ValidatorSet, View, VoteKind,
};

/// Everything a run varies. [`SimConfig::swarm`] derives a chaotic network from the seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub scenario: String,
    pub powers: Vec<u64>,
    /// Validator index → Byzantine behaviour.
    pub byzantine: Vec<(usize, Kind)>,
    /// Per-link base one-way latency is drawn from this range once per link.
    pub latency_ms: (u64, u64),
    pub jitter_ms: u64,
    pub loss_ppm: u32,
    pub duplicate_ppm: u32,
    /// Clock offsets up to this many ms and rate drift up to this many ppm, per node.
    pub skew_ms: u64,
    pub drift_ppm: u64,
    /// Chance per handled input that an honest node crashes mid-output (restarting later).
    pub crash_ppm: u32,
    /// Most honest nodes down at once from random crashes.
    pub crashed_max: usize,
    pub timeout_base_ms: u64,
    pub timeout_max_ms: u64,
    /// The validator set changes at fixed epoch boundaries (Spec §Epochs); `None`: one set for good.
    pub epochs: Option<Epochs>,
}

/// Epochs: fixed heights per epoch and the set of each epoch (Spec §Epochs).
///
/// A validator is an *identity* (a key), numbered across all epochs; its
/// [`ValidatorIndex`] is its position in the set of the epoch at hand. The
/// first `SimConfig::powers.len()` identities form epoch 0's set in that
/// order; identities beyond them start as followers (no core) and vote once
/// a set names them.
#[derive(Clone, Debug)]
pub struct Epochs {
    /// Heights per epoch: epoch `e` holds heights `e·blocks + 1 ..= (e+1)·blocks`.
    pub blocks: u64,
    /// Identities in all, validators and followers.
    pub identities: usize,
    /// `sets[e]`: epoch `e`'s validators as `(identity, power)`, in index order. The last set
    /// stays in force after it. `sets[0]` must be `SimConfig::powers` on identities `0..n`.
    pub sets: Vec<Vec<(usize, u64)>>,
    /// The host fix this simulator proposes for the node's hand-over (see [`Sim`]): a host
    /// keeps the certificate that finalized an epoch's last block together with the empty
    /// blocks up to it, serves them in sync, and syncs as soon as a peer shows a height at or
    /// past its epoch's last one. `false` models the node's first scheme (3fba368); the node now does what `true` does.
    pub epoch_end_sync: bool,
}

impl SimConfig {
    /// `n` equal validators, no faults, a calm network with latency and jitter from the seed.
    pub fn swarm(seed: u64, n: usize) -> SimConfig {
        let mut rng = Rng::new(seed ^ 0xC0FFEE);
        SimConfig {
            seed,
            scenario: format!("swarm-{n}"),
            powers: vec![1; n],
            byzantine: Vec::new(),
            latency_ms: (rng.range(1, 10), rng.range(10, 60)),
            jitter_ms: rng.range(0, 20),
            loss_ppm: 0,
            duplicate_ppm: 0,
            skew_ms: rng.range(0, 500),
            drift_ppm: rng.range(0, 10_000),
            crash_ppm: 0,
            crashed_max: 0,
            timeout_base_ms: 400,
            timeout_max_ms: 3_200,
            epochs: None,
        }
    }

    /// Adds seeded chaos: loss, duplication, more jitter, random crashes.
    pub fn chaos(mut self) -> SimConfig {
        let mut rng = Rng::new(self.seed ^ 0xCA05);
        self.loss_ppm = rng.range(0, 100_000) as u32;
        self.duplicate_ppm = rng.range(0, 50_000) as u32;
        self.jitter_ms = rng.range(0, 60);
        self.crash_ppm = rng.range(0, 3_000) as u32;
        self.crashed_max = 1;
        self
    }
}

/// Counters for benchmarks.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub inputs: u64,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub crashes: u64,
    pub rejected: u64,
    pub evidence: u64,
    /// Time from a block's proposal to its finalization, one sample per honest node and block.
    pub finality_latencies: Vec<Duration>,
    /// (node, height, time) of every honest finalization.
    pub finalized_at: Vec<(usize, Height, Duration)>,
    /// Epoch hand-overs performed by nodes (each node counts its own).
    pub epoch_changes: u64,
    /// Sync requests sent, and blocks committed through sync.
    pub sync_requests: u64,
    pub synced_blocks: u64,
}

enum Event {
    /// Consensus bytes from `from`, the sender's index in the set of `epoch`.
    Deliver {
        to: usize,
        from: ValidatorIndex,
        epoch: u64,
        bytes: Rc<Vec<u8>>,
    },
    Timer {
        node: usize,
        incarnation: u64,
        view: View,
    },
    App {
        node: usize,
        incarnation: u64,
        input: Input,
    },
    Restart {
        node: usize,
    },
    /// The host's periodic tick (with epochs): checkpoint announcements and the sync decision.
    Tick {
        node: usize,
        boot: u64,
    },
    /// Host-to-host traffic (with epochs): the node's checkpoint and sync protocols.
    Host {
        to: usize,
        from: usize,
        message: HostMessage,
    },
}

/// What hosts exchange besides consensus messages.
#[derive(Clone)]
enum HostMessage {
    /// A validator committed this height (the node's checkpoint signature envelope).
    Checkpoint(Height),
    /// Committed blocks from this height on, please (the node's `SyncRequest::Blocks`).
    SyncRequest(Height),
    SyncResponse(Rc<Vec<SyncEntry>>),
}

/// One committed block as sync serves it.
struct SyncEntry {
    block: Block,
    /// The certificate it was committed with: its own, or a finalized descendant's.
    finalization: Certificate,
    /// With [`Epochs::epoch_end_sync`], for an epoch's last block committed through a
    /// descendant's finalization: the empty blocks from it up to that descendant, parent first.
    witness: Vec<Block>,
}

/// One height of a node's ledger (its committed chain, kept across crashes).
struct Committed {
    digest: Digest,
    certificate: Certificate,
    witness: Vec<Block>,
}

/// How often a host ticks (the node's `TICK`).
const TICK: Duration = Duration::from_millis(500);
/// Heights behind what peers show before a host syncs (the node's `SYNC_GAP`).
const SYNC_GAP: u64 = 3;
/// Blocks per sync answer, and how many more it may add to reach a block with its own finalization.
const SYNC_BATCH: u64 = 128;
const SYNC_EXTRA: u64 = 64;
/// A sync request with no answer by then is given up.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

struct Node {
    /// The validator key this node runs (twins share one).
    identity: usize,
    behaviour: Option<Box<dyn Behaviour>>,
    /// Present while the host is up and its identity is in the set of `epoch`.
    core: Option<Core>,
    /// The host is running (false while crashed).
    up: bool,
    /// Counts host starts: ticks of an earlier run are dropped.
    boot: u64,
    /// Counts cores: timers and application answers for a replaced core are dropped.
    incarnation: u64,
    /// The epoch of the next height to commit.
    epoch: u64,
    /// The persisted safety state of `epoch` (each epoch has its own, Spec §Epochs).
    disk: SafetyState,
    committed: Anchor,
    committed_certificate: Option<Certificate>,
    /// Height `h` at index `h - 1`.
    ledger: Vec<Committed>,
    /// Committed and persisted (voted) blocks, kept across crashes like the node's block store.
    store: BTreeMap<Digest, Block>,
    /// Highest height peers were seen at (checkpoints, votes, finalizations), for the sync decision.
    seen_height: Height,
    behind_ticks: u32,
    /// A sync request is in flight until then.
    sync_until: Duration,
    offset_ms: u64,
    drift_ppm: i64,
    rng: Rng,
    /// Crash during the next handled input after this many outputs.
    crash_after: Option<usize>,
    /// Crashed by the scenario (not by random chaos): restarted only by it.
    held_down: bool,
}

/// A deterministic world of validators. See the module docs.
///
/// With [`SimConfig::epochs`] the hosts hand consensus over to the next epoch's set as the
/// node does (Spec §Epochs): when a node commits its epoch's last block it drops the core
/// (the rest of that call's outputs are discarded) and, if its identity is in the next set,
/// starts the next epoch's core anchored on that block at view 0, under the epoch's chain id,
/// with a fresh safety state. Nodes outside the set follow: they tick, sync committed blocks
/// from validators of their epoch, and start voting when they commit into a set that names
/// them; so a joiner obtains the blocks up to the boundary by sync, as in the node. Sync, the
/// checkpoint announcements that tell a host it is behind, and which block requests a host
/// answers from its store follow the node too.
pub struct Sim {
    pub cfg: SimConfig,
    rng: Rng,
    now: Duration,
    seq: u64,
    queue: BTreeMap<(Duration, u64), Event>,
    nodes: Vec<Node>,
    /// One key per identity.
    keys: Vec<SigningKey>,
    /// The set of each scheduled epoch (the last stays in force) and its identities in index order.
    sets: Vec<ValidatorSet>,
    members: Vec<Vec<usize>>,
    /// The consensus chain id of each epoch.
    chains: Vec<ChainId>,
    latency: Vec<Vec<Duration>>,
    blocked: BTreeSet<(usize, usize)>,
    pub checker: Checker,
    trace: Sha256,
    pub stats: Stats,
    verifier: CachedVerifier,
    proposed_at: BTreeMap<Digest, Duration>,
    /// Crash each honest leader as it is asked for its view's payload (once per view).
    pub crash_leaders: bool,
    leader_crashed_in: BTreeSet<View>,
    /// Node whose inputs are recorded (with its local time), for replay benchmarks.
    recording: Option<(usize, Vec<(Duration, Input)>)>,
}

const GENESIS: Anchor = Anchor { height: Height(0), view: View(0), digest: [0; 32] };

/// Epochs a simulation can reach (each needs at least one height).
const EPOCHS_MAX: usize = 4096;

/// The consensus chain id of `epoch`, as the node derives it: the base id for epoch 0,
/// then `SHA-256("annal/epoch/v1" || base || epoch LE)`.
pub fn epoch_chain(base: ChainId, epoch: u64) -> ChainId {
    if epoch == 0 {
        return base;
    }
    ChainId(
        Sha256::new()
            .chain_update(b"annal/epoch/v1")
            .chain_update(base.0)
            .chain_update(epoch.to_le_bytes())
            .finalize()
            .into(),
    )
}

impl Epochs {
    /// Power a set change moves, as governance counts it: added + removed + |power changes|.
    pub fn moved_power(old: &[(usize, u64)], new: &[(usize, u64)]) -> u64 {
        let power = |set: &[(usize, u64)], id: usize| set.iter().find(|(i, _)| *i == id).map_or(0, |(_, p)| *p);
        let ids: BTreeSet<usize> = old.iter().chain(new).map(|(i, _)| *i).collect();
        ids.into_iter().map(|id| power(old, id).abs_diff(power(new, id))).sum()
    }
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = Rng::new(cfg.seed);
        let n = cfg.powers.len();
        let mut keys: Vec<SigningKey> =
            (0..n).map(|_| SigningKey::from_bytes(&rng.bytes(32).try_into().expect("32"))).collect();
        let chain_id = ChainId(rng.bytes(32).try_into().expect("32"));
        let first: Vec<(usize, u64)> = cfg.powers.iter().copied().enumerate().collect();
        let (identities, schedule) = match &cfg.epochs {
            None => (n, vec![first]),
            Some(ep) => {
                assert!(ep.blocks > 0, "an epoch holds at least one height");
                assert_eq!(ep.sets.first(), Some(&first), "epoch 0's set is `powers` on identities 0..n");
                for (e, pair) in ep.sets.windows(2).enumerate() {
                    let (moved, total) =
                        (Epochs::moved_power(&pair[0], &pair[1]), pair[0].iter().map(|v| v.1).sum::<u64>());
                    assert!(
                        3 * moved <= total,
                        "epoch {} moves {moved} of {total} power: governance allows a third",
                        e + 1
                    );
                    assert!(
                        pair[1].iter().all(|(i, p)| *i < ep.identities && *p > 0),
                        "epoch {}: bad set {:?}",
                        e + 1,
                        pair[1]
                    );
                }
                (ep.identities, ep.sets.clone())
            }
        };
        keys.extend((n..identities).map(|_| SigningKey::from_bytes(&rng.bytes(32).try_into().expect("32"))));
        let sets: Vec<ValidatorSet> = schedule
            .iter()
            .map(|s| {
                ValidatorSet::new(
                    s.iter().map(|&(i, power)| Validator { key: keys[i].verifying_key(), power }).collect(),
                )
            })
            .collect();
        let members = schedule.iter().map(|s| s.iter().map(|(i, _)| *i).collect()).collect();
        let chains = if cfg.epochs.is_some() {
            (0..EPOCHS_MAX.max(sets.len()) as u64).map(|e| epoch_chain(chain_id, e)).collect()
        } else {
            vec![chain_id]
        };
        let mut honest = Vec::with_capacity(identities);
        let mut nodes = Vec::new();
        for i in 0..identities {
            let kind = cfg.byzantine.iter().find(|(v, _)| *v == i).map(|(_, k)| *k);
            honest.push(kind.is_none());
            for _ in 0..super::byzantine::twins::nodes(kind) {
                let node = Node {
                    identity: i,
                    behaviour: kind.and_then(Kind::build),
                    core: None,
                    up: false,
                    boot: 0,
                    incarnation: 0,
                    epoch: 0,
                    disk: SafetyState::default(),
                    committed: GENESIS,
                    committed_certificate: None,
                    ledger: Vec::new(),
                    store: BTreeMap::new(),
                    seen_height: Height(0),
                    behind_ticks: 0,
                    sync_until: Duration::ZERO,
                    offset_ms: rng.range(0, cfg.skew_ms),
                    drift_ppm: rng.range(0, 2 * cfg.drift_ppm) as i64 - cfg.drift_ppm as i64,
                    rng: rng.fork(i as u64),
                    crash_after: None,
                    held_down: false,
                };
                nodes.push(node);
            }
        }
        let m = nodes.len();
        let (lo, hi) = cfg.latency_ms;
        let latency = (0..m).map(|_| (0..m).map(|_| Duration::from_millis(rng.range(lo, hi))).collect()).collect();
        let verifier = CachedVerifier::default();
        let checker = Checker::new(cfg.seed, cfg.scenario.clone(), honest);
        let mut sim = Sim {
            cfg,
            rng,
            now: Duration::ZERO,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            keys,
            sets,
            members,
            chains,
            latency,
            blocked: BTreeSet::new(),
            checker,
            trace: Sha256::new(),
            stats: Stats::default(),
            verifier,
            proposed_at: BTreeMap::new(),
            crash_leaders: false,
            leader_crashed_in: BTreeSet::new(),
            recording: None,
        };
        for i in 0..m {
            sim.start(i);
        }
        sim
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The set of epoch 0.
    pub fn validator_set(&self) -> &ValidatorSet {
        &self.sets[0]
    }

    /// A digest of everything that happened: equal seeds must give equal digests.
    pub fn trace_digest(&self) -> [u8; 32] {
        self.trace.clone().finalize().into()
    }

    // ---- epochs ----

    /// The epoch of height `h` (0 without epochs).
    pub fn epoch_of(&self, h: Height) -> u64 {
        self.cfg.epochs.as_ref().map_or(0, |ep| h.0.saturating_sub(1) / ep.blocks)
    }

    /// The last height of epoch `e`.
    pub fn epoch_end(&self, e: u64) -> Height {
        self.cfg.epochs.as_ref().map_or(Height(u64::MAX), |ep| Height((e + 1) * ep.blocks))
    }

    fn set_slot(&self, e: u64) -> usize {
        (e as usize).min(self.sets.len() - 1)
    }

    /// The validator set of epoch `e`.
    pub fn set_of(&self, e: u64) -> &ValidatorSet {
        &self.sets[self.set_slot(e)]
    }

    /// The identities of epoch `e`'s set, in index order.
    pub fn members_of(&self, e: u64) -> &[usize] {
        &self.members[self.set_slot(e)]
    }

    fn chain(&self, e: u64) -> ChainId {
        *self
            .chains
            .get(e as usize)
            .unwrap_or_else(|| panic!("epoch {e} is past the {EPOCHS_MAX} a simulation can reach"))
    }

    fn index_in(&self, e: u64, identity: usize) -> Option<ValidatorIndex> {
        self.members_of(e).iter().position(|&m| m == identity).map(|p| ValidatorIndex(p as u32))
    }

    fn identity_of(&self, e: u64, v: ValidatorIndex) -> usize {
        *self.members_of(e).get(v.0 as usize).unwrap_or_else(|| panic!("no validator {v:?} in epoch {e}"))
    }

    /// The epoch node `i` is in (that of its next height).
    pub fn node_epoch(&self, i: usize) -> u64 {
        self.nodes[i].epoch
    }

    fn is_honest_node(&self, i: usize) -> bool {
        self.checker.is_honest(self.nodes[i].identity)
    }

    /// Lowest committed height among honest nodes (crashed ones and followers included).
    pub fn min_finalized_height(&self) -> Height {
        (0..self.nodes.len())
            .filter(|&i| self.is_honest_node(i))
            .map(|i| self.nodes[i].committed.height)
            .min()
            .unwrap_or_default()
    }

    pub fn max_finalized_height(&self) -> Height {
        self.checker.finalized_height()
    }

    /// Highest view any honest running node is in.
    pub fn max_view(&self) -> View {
        self.nodes.iter().filter_map(|n| n.core.as_ref().map(Core::view)).max().unwrap_or_default()
    }

    /// One line per node, for failure reports.
    pub fn status(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let core = match (&n.core, n.up) {
                (Some(c), _) => c.status(),
                (None, true) => "following".to_string(),
                (None, false) => "down".to_string(),
            };
            out += &format!(
                "  node {i} (identity {}{}, epoch {}, committed {:?}, seen {:?}): {core}; disk {:?}\n",
                n.identity,
                if self.is_honest_node(i) { "" } else { ", faulty" },
                n.epoch,
                n.committed.height,
                n.seen_height,
                n.disk
            );
        }
        out
    }

    pub fn committed(&self, node: usize) -> Anchor {
        self.nodes[node].committed
    }

    // ---- faults the scenarios inject ----

    /// Cuts every link between the two groups (node indices), both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
    }

    /// Removes partitions only.
    pub fn clear_partitions(&mut self) {
        self.blocked.clear();
    }

    /// Removes partitions, loss and random crashes; restarts every crashed honest node.
    pub fn heal(&mut self) {
        self.blocked.clear();
        for n in &mut self.nodes {
            n.crash_after = None;
        }
        self.cfg.loss_ppm = 0;
        self.cfg.crash_ppm = 0;
        self.crash_leaders = false;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                self.nodes[i].held_down = false;
                self.restart(i);
            }
        }
    }

    /// Crashes a node now; it stays down until [`Sim::restart`] or [`Sim::heal`].
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].held_down = true;
        self.kill(i);
    }

    /// Crashes a node in the middle of its next input, after `k` of its outputs:
    /// `k = 0` loses an unflushed `PersistSafety` at the head; `k = 1` crashes between persisting and sending.
    pub fn crash_during_next_input(&mut self, i: usize, k: usize) {
        self.nodes[i].crash_after = Some(k);
    }

    fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node.up {
            node.up = false;
            node.core = None;
            node.incarnation += 1;
            self.stats.crashes += 1;
        }
    }

    /// Restarts a crashed node from its persisted safety state and committed block.
    pub fn restart(&mut self, i: usize) {
        if !self.nodes[i].up {
            self.nodes[i].held_down = false;
            self.start(i);
        }
    }

    /// Starts node `i`'s host: its tick (with epochs) and, if it is a validator of its epoch, its core.
    fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.up = true;
        node.boot += 1;
        let boot = node.boot;
        if self.cfg.epochs.is_some() {
            self.push(self.now + TICK, Event::Tick { node: i, boot });
        }
        self.start_core(i);
    }

    /// Builds node `i`'s core from its committed block and persisted safety state, if its identity
    /// is in the set of its epoch. The first core of an epoch is anchored on the last block of the
    /// epoch before at view 0, with no certificate (that block's finalization is the old set's).
    fn start_core(&mut self, i: usize) {
        let (e, identity) = (self.nodes[i].epoch, self.nodes[i].identity);
        let Some(index) = self.index_in(e, identity) else { return };
        let node = &self.nodes[i];
        let (anchor, certificate) = if e > 0 && node.committed.height == self.epoch_end(e - 1) {
            (Anchor { view: View(0), ..node.committed }, None)
        } else {
            (node.committed, node.committed_certificate.clone())
        };
        let signer = Signer::new(self.keys[identity].clone(), index, self.chain(e), node.disk.clone());
        let core = Core::new(self.core_config(e), signer, anchor, certificate, Box::new(self.verifier.clone()));
        self.nodes[i].core = Some(core);
        self.feed(i, Input::Start);
    }

    /// Drops node `i`'s core (its pending timers and answers with it) and starts one afresh, as the
    /// node's `restart_core` does after sync and at an epoch's end.
    fn replace_core(&mut self, i: usize) {
        if self.nodes[i].core.take().is_some() {
            self.nodes[i].incarnation += 1;
        }
        self.start_core(i);
    }

    /// Node `i` committed its epoch's last block: the next height is the next epoch's, with its own safety state.
    fn advance_epoch(&mut self, i: usize) {
        let end = self.epoch_end(self.nodes[i].epoch);
        let node = &mut self.nodes[i];
        assert_eq!(node.committed.height, end, "node {i} leaves epoch {} before its last height", node.epoch);
        node.epoch += 1;
        node.disk = SafetyState::default();
        self.stats.epoch_changes += 1;
    }

    fn core_config(&self, e: u64) -> Config {
        let mut cfg = Config::new(self.chain(e), self.set_of(e).clone());
        cfg.timeout_base = Duration::from_millis(self.cfg.timeout_base_ms);
        cfg.timeout_max = Duration::from_millis(self.cfg.timeout_max_ms);
        cfg
    }

    /// Records every input node `i` handles from now on (call before running).
    pub fn record_inputs(&mut self, i: usize) {
        self.recording = Some((i, Vec::new()));
    }

    /// The recorded inputs, with the node's local time.
    pub fn recorded_inputs(&mut self) -> Vec<(Duration, Input)> {
        self.recording.take().map(|(_, r)| r).unwrap_or_default()
    }

    /// A core in the state node `i` started in (genesis, empty safety state), for replaying its inputs.
    pub fn fresh_core(&self, i: usize, verifier: Box<dyn crate::Verifier>) -> Core {
        let identity = self.nodes[i].identity;
        let index = self.index_in(0, identity).expect("a validator of epoch 0");
        let signer = Signer::new(self.keys[identity].clone(), index, self.chain(0), SafetyState::default());
        Core::new(self.core_config(0), signer, GENESIS, None, verifier)
    }

    // ---- the event loop ----

    fn push(&mut self, at: Duration, e: Event) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), e);
    }

    /// Runs the next event; false when nothing is left.
    pub fn step(&mut self) -> bool {
        let Some(((at, _), event)) = self.queue.pop_first() else { return false };
        self.now = at;
        self.trace.update((at.as_nanos() as u64).to_le_bytes());
        match event {
            Event::Deliver { to, from, epoch, bytes } => {
                self.trace.update([1, to as u8]);
                self.trace.update(bytes.as_slice());
                if self.nodes[to].up {
                    self.deliver(to, from, epoch, &bytes);
                }
            }
            Event::Timer { node, incarnation, view } => {
                self.trace.update([2, node as u8]);
                self.trace.update(view.0.to_le_bytes());
                if self.nodes[node].incarnation == incarnation && self.nodes[node].core.is_some() {
                    self.feed(node, Input::Timeout(view));
                }
            }
            Event::App { node, incarnation, input } => {
                self.trace.update([3, node as u8]);
                if self.nodes[node].incarnation == incarnation && self.nodes[node].core.is_some() {
                    self.feed(node, input);
                }
            }
            Event::Restart { node } => {
                self.trace.update([4, node as u8]);
                if !self.nodes[node].held_down {
                    self.restart(node);
                }
            }
            Event::Tick { node, boot } => {
                self.trace.update([5, node as u8]);
                if self.nodes[node].up && self.nodes[node].boot == boot {
                    self.on_tick(node, boot);
                }
            }
            Event::Host { to, from, message } => {
                self.trace.update([6, to as u8, from as u8]);
                if self.nodes[to].up {
                    self.on_host_message(to, from, message);
                }
            }
        }
        true
    }

    /// Consensus bytes reach node `i`'s host. A message of another epoch than the node's goes
    /// nowhere: its core would reject it (another chain id), as the node's does.
    fn deliver(&mut self, i: usize, from: ValidatorIndex, epoch: u64, bytes: &[u8]) {
        match Message::decode(bytes, &crate::Limits::default()) {
            Err(error) => {
                self.stats.rejected += 1;
                let sender = self.identity_of(epoch, from);
                self.checker.on_rejected(i, sender, &error);
            }
            Ok(message) => {
                if self.cfg.epochs.is_some() {
                    // The node learns how far its peers are from the messages it relays.
                    let seen = match &message {
                        Message::Vote(v) => Height(v.height.0.saturating_sub(1)),
                        Message::Certificate(c) if c.kind == VoteKind::Finalize => c.height,
                        _ => Height(0),
                    };
                    let node = &mut self.nodes[i];
                    node.seen_height = node.seen_height.max(seen);
                }
                match message {
                    Message::BlockRequest(d) if self.servable(i, &d) => self.serve(i, epoch, from, d),
                    message if self.nodes[i].epoch == epoch && self.nodes[i].core.is_some() => {
                        self.feed(i, Input::Message { from, message })
                    }
                    _ => {}
                }
            }
        }
    }

    /// Runs until simulated time advances by `d`.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.queue.first_key_value().is_some_and(|((at, _), _)| *at <= end) {
            self.step();
        }
        self.now = end;
    }

    /// Runs until `done` holds, failing after `limit` of simulated time.
    pub fn run_until(&mut self, mut done: impl FnMut(&Sim) -> bool, limit: Duration) -> Result<Duration, String> {
        let start = self.now;
        let end = start + limit;
        while !done(self) {
            if self.queue.first_key_value().is_none_or(|((at, _), _)| *at > end) {
                return Err(format!(
                    "not done after {limit:?} of simulated time (min finalized height {:?}, max {:?}, max view {:?}, {} events queued)\n{}",
                    self.min_finalized_height(),
                    self.max_finalized_height(),
                    self.max_view(),
                    self.queue.len(),
                    self.status() + &self.queue.iter().take(200).map(|((at, _), e)| format!("  {at:?} {}\n", match e { Event::Deliver { to, epoch, .. } => format!("deliver to {to} (epoch {epoch})"), Event::Timer { node, incarnation, view } => format!("timer {node} inc {incarnation} (now {}) view {view:?}", self.nodes[*node].incarnation), Event::App { node, .. } => format!("app {node}"), Event::Restart { node } => format!("restart {node}"), Event::Tick { node, .. } => format!("tick {node}"), Event::Host { to, from, .. } => format!("host {from} -> {to}") })).collect::<String>()
                ));
            }
            self.step();
        }
        Ok(self.now - start)
    }

    fn local_time(&self, i: usize) -> Duration {
        let n = &self.nodes[i];
        let ns = self.now.as_nanos() as i128;
        let local = ns + ns * n.drift_ppm as i128 / 1_000_000 + n.offset_ms as i128 * 1_000_000;
        Duration::from_nanos(local as u64)
    }

    fn global_time(&self, i: usize, local: Duration) -> Duration {
        let n = &self.nodes[i];
        let ns = local.as_nanos() as i128 - n.offset_ms as i128 * 1_000_000;
        let global = ns * 1_000_000 / (1_000_000 + n.drift_ppm as i128);
        Duration::from_nanos(global.max(0) as u64)
    }

    /// Hands one input to node `i` and carries out its outputs.
    fn feed(&mut self, i: usize, input: Input) {
        let local = self.local_time(i);
        let mut behaviour = self.nodes[i].behaviour.take();
        let mut rng = self.nodes[i].rng.clone();
        let (e, identity) = (self.nodes[i].epoch, self.nodes[i].identity);
        let me = self.index_in(e, identity).expect("a running core's identity is in its epoch's set");
        let slot = self.set_slot(e);
        let mut ctx = Ctx {
            rng: &mut rng,
            key: &self.keys[identity],
            chain_id: self.chains[e as usize],
            me,
            validators: &self.sets[slot],
            raw: Vec::new(),
        };
        if let Some(b) = behaviour.as_mut() {
            b.on_input(&mut ctx, &input);
        }
        if let Some((node, rec)) = self.recording.as_mut() {
            if *node == i {
                rec.push((local, input.clone()));
            }
        }
        let core = self.nodes[i].core.as_mut().expect("feed a running node");
        let mut outputs = core.handle(local, input);
        self.stats.inputs += 1;
        if let Some(b) = behaviour.as_mut() {
            outputs = b.on_outputs(&mut ctx, outputs);
        }
        let raw = std::mem::take(&mut ctx.raw);
        self.nodes[i].behaviour = behaviour;
        self.nodes[i].rng = rng;
        let mut crash_after = self.nodes[i].crash_after.take();
        if crash_after.is_none()
            && self.is_honest_node(i)
            && self.cfg.crash_ppm > 0
            && self.rng.chance(self.cfg.crash_ppm)
        {
            let down = self.nodes.iter().filter(|n| !n.up).count();
            if down < self.cfg.crashed_max {
                crash_after = Some(self.rng.range(0, outputs.len() as u64) as usize);
                let back = self.now + Duration::from_millis(self.rng.range(50, 3_000));
                self.push(back, Event::Restart { node: i });
            }
        }
        let mut outputs = outputs.into_iter().enumerate();
        while let Some((k, o)) = outputs.next() {
            if crash_after == Some(k) {
                return self.kill(i);
            }
            if self.carry_out(i, o) {
                // The epoch's last block is committed: the old core goes, and the rest of its
                // outputs with it (but for the empty blocks its finalization rests on).
                let rest: Vec<Output> = outputs.map(|(_, o)| o).collect();
                return self.end_epoch(i, rest);
            }
        }
        if crash_after.is_some() {
            return self.kill(i);
        }
        for (to, bytes) in raw {
            self.send_raw(i, e, me, to, bytes);
        }
    }

    /// Node `i` committed its epoch's last block `B` through its core; `rest` are the outputs after it.
    fn end_epoch(&mut self, i: usize, rest: Vec<Output>) {
        if self.cfg.epochs.as_ref().is_some_and(|ep| ep.epoch_end_sync) {
            let head = self.nodes[i].ledger.last().expect("just committed").certificate.height;
            let witness: Vec<Block> = rest
                .into_iter()
                .filter_map(|o| match o {
                    Output::Finalized { block, .. } if block.height <= head => Some(block),
                    _ => None,
                })
                .collect();
            self.nodes[i].ledger.last_mut().expect("just committed").witness = witness;
        }
        self.advance_epoch(i);
        self.replace_core(i);
    }

    /// Carries out one output of node `i`'s core; true when it committed the epoch's last block.
    fn carry_out(&mut self, i: usize, o: Output) -> bool {
        let (e, identity) = (self.nodes[i].epoch, self.nodes[i].identity);
        let me = self.index_in(e, identity).expect("a running core's identity is in its epoch's set");
        let chain = self.chain(e);
        match o {
            Output::PersistSafety(s) => self.nodes[i].disk = s,
            Output::PersistBlock { block, digest } => {
                assert_eq!(digest, block.hash(&chain), "node {i}'s core gave a block to persist with a wrong digest");
                self.nodes[i].store.insert(digest, block);
            }
            Output::Broadcast(m) => {
                self.checker.on_sent(e, identity, me, &m, &chain);
                self.register_signature(i, &m);
                if let Message::Propose(p) = &m {
                    self.proposed_at.entry(p.block.hash(&chain)).or_insert(self.now);
                }
                self.send_raw(i, e, me, None, m.encode());
            }
            Output::Send { to, message } => {
                self.checker.on_sent(e, identity, me, &message, &chain);
                self.register_signature(i, &message);
                self.send_raw(i, e, me, Some(to), message.encode());
            }
            Output::Schedule { view, deadline } => {
                let at = self.global_time(i, deadline);
                let incarnation = self.nodes[i].incarnation;
                self.push(at, Event::Timer { node: i, incarnation, view });
            }
            Output::NeedPayload { view, height, .. } => {
                if self.crash_leaders && self.is_honest_node(i) && self.leader_crashed_in.insert(view) {
                    self.nodes[i].crash_after = Some(0);
                    let back = self.now + Duration::from_millis(self.cfg.timeout_max_ms);
                    self.push(back, Event::Restart { node: i });
                    return false;
                }
                // Past the epoch's last height only an empty block, at once (Spec §Epochs).
                let payload = if height > self.epoch_end(e) {
                    Vec::new()
                } else {
                    let mut payload = view.0.to_le_bytes().to_vec();
                    payload.extend_from_slice(&height.0.to_le_bytes());
                    payload.push(i as u8);
                    payload
                };
                let incarnation = self.nodes[i].incarnation;
                self.push(
                    self.now,
                    Event::App { node: i, incarnation, input: Input::Payload { view, payload: payload.into() } },
                );
            }
            Output::Validate { block, digest } => {
                assert_eq!(digest, block.hash(&chain), "node {i}'s core asked to validate a block with a wrong digest");
                let valid = !block.payload.starts_with(INVALID_PAYLOAD_PREFIX)
                    && (block.height <= self.epoch_end(e) || block.payload.is_empty());
                let incarnation = self.nodes[i].incarnation;
                self.push(self.now, Event::App { node: i, incarnation, input: Input::Validated { digest, valid } });
            }
            Output::Finalized { block, digest, certificate } => {
                assert_eq!(digest, block.hash(&chain), "node {i}'s core finalized a block with a wrong digest");
                return self.commit(i, block, certificate);
            }
            Output::Evidence(ev) => {
                self.stats.evidence += 1;
                let signer = self.identity_of(e, ev.first.signer);
                self.checker.on_evidence(i, signer, &ev.first, &ev.second);
            }
            Output::Rejected { from, error } => {
                self.stats.rejected += 1;
                let sender = self.identity_of(e, from);
                self.checker.on_rejected(i, sender, &error);
            }
        }
        false
    }

    /// Node `i`'s host commits a final block of its epoch (from its core or from sync) and checks
    /// it; true when it is the epoch's last block.
    fn commit(&mut self, i: usize, block: Block, certificate: Certificate) -> bool {
        let e = self.nodes[i].epoch;
        let chain = self.chain(e);
        let end = self.epoch_end(e);
        let digest = block.hash(&chain);
        self.trace.update(digest);
        let node = &mut self.nodes[i];
        if block.height != node.committed.height.next() || block.parent != node.committed.digest {
            self.checker.fail(format!(
                "node {i} committed height {:?} out of order after {:?}",
                block.height, node.committed.height
            ));
        }
        node.committed = Anchor { height: block.height, view: block.view, digest };
        node.store.insert(digest, block.clone());
        node.committed_certificate = Some(certificate.clone());
        node.ledger.push(Committed { digest, certificate: certificate.clone(), witness: Vec::new() });
        node.seen_height = node.seen_height.max(block.height);
        let validator = node.core.is_some();
        if self.is_honest_node(i) {
            let slot = self.set_slot(e);
            self.checker.on_finalized(i, &block, &certificate, e, end, &chain, &self.sets[slot]);
            if let Some(at) = self.proposed_at.get(&digest) {
                self.stats.finality_latencies.push(self.now - *at);
            }
            self.stats.finalized_at.push((i, block.height, self.now));
        }
        if self.cfg.epochs.is_some() && validator {
            self.send_host(i, None, HostMessage::Checkpoint(block.height));
        }
        block.height == end
    }

    /// An honest core's own signature is valid by construction: skip verifying it (see [`CachedVerifier`]).
    fn register_signature(&self, i: usize, m: &Message) {
        if !self.is_honest_node(i) {
            return;
        }
        let (e, identity) = (self.nodes[i].epoch, self.nodes[i].identity);
        let Some(me) = self.index_in(e, identity) else { return };
        let chain = self.chain(e);
        let (kind, view, height, digest, signature) = match m {
            Message::Vote(v) if v.signer == me => (v.kind, v.view, v.height, v.digest, v.signature),
            Message::Propose(p) => (VoteKind::Propose, p.block.view, p.block.height, p.block.hash(&chain), p.signature),
            _ => return,
        };
        let key = &self.keys[identity].verifying_key();
        self.verifier.register(key, &signing_bytes(kind, &chain, view, height, &digest), &signature);
    }

    /// Whether node `i`'s host answers a block request for `d` from its store. Without epochs:
    /// anything it stored. With epochs, as the node does: blocks persisted above its committed
    /// height, and committed blocks its core no longer holds (`Core::holds_block`).
    fn servable(&self, i: usize, d: &Digest) -> bool {
        let node = &self.nodes[i];
        let Some(b) = node.store.get(d) else { return false };
        if self.cfg.epochs.is_none() {
            return true;
        }
        let tip = node.committed.height.0;
        let committed = node.ledger.get((b.height.0 as usize).wrapping_sub(1)).is_some_and(|c| c.digest == *d);
        if committed {
            !node.core.as_ref().is_some_and(|c| c.holds_block(d))
        } else {
            b.height.0 > tip
        }
    }

    /// The host's side of block sync: blocks in its store (committed or voted for), with ancestors.
    fn serve(&mut self, node: usize, epoch: u64, to: ValidatorIndex, d: Digest) {
        let Some(me) = self.index_in(epoch, self.nodes[node].identity) else { return };
        let mut next = Some(d);
        for _ in 0..64 {
            let Some(b) = next.take().filter(|d| self.servable(node, d)).map(|d| self.nodes[node].store[&d].clone())
            else {
                break;
            };
            next = Some(b.parent);
            self.send_raw(node, epoch, me, Some(to), Message::BlockResponse(b).encode());
        }
    }

    /// Sends consensus bytes from node `from` (index `me` in `epoch`'s set) to the nodes of validator `to`, or to all.
    fn send_raw(&mut self, from: usize, epoch: u64, me: ValidatorIndex, to: Option<ValidatorIndex>, bytes: Vec<u8>) {
        let bytes = Rc::new(bytes);
        let to = to.map(|t| self.identity_of(epoch, t));
        for j in 0..self.nodes.len() {
            if j == from || to.is_some_and(|t| self.nodes[j].identity != t) {
                continue;
            }
            let bytes = Rc::clone(&bytes);
            self.transmit(from, j, bytes.len(), move |to| Event::Deliver {
                to,
                from: me,
                epoch,
                bytes: Rc::clone(&bytes),
            });
        }
    }

    /// One message over the link `from → j`: counted, maybe lost or duplicated, delayed.
    fn transmit(&mut self, from: usize, j: usize, size: usize, event: impl Fn(usize) -> Event) {
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += size as u64;
        if self.blocked.contains(&(from, j)) || self.rng.chance(self.cfg.loss_ppm) {
            return;
        }
        let copies = if self.rng.chance(self.cfg.duplicate_ppm) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = self.latency[from][j] + Duration::from_millis(self.rng.range(0, self.cfg.jitter_ms));
            self.push(self.now + delay, event(j));
        }
    }

    // ---- the host's checkpoints and sync (with epochs) ----

    fn send_host(&mut self, from: usize, to: Option<usize>, message: HostMessage) {
        for j in 0..self.nodes.len() {
            if j == from || to.is_some_and(|t| t != j) {
                continue;
            }
            let m = message.clone();
            self.transmit(from, j, 64, move |to| Event::Host { to, from, message: m.clone() });
        }
    }

    /// The node's tick: a validator announces its tip; a host behind its peers for two ticks
    /// asks a validator of its epoch for the committed blocks it lacks.
    fn on_tick(&mut self, i: usize, boot: u64) {
        self.push(self.now + TICK, Event::Tick { node: i, boot });
        let tip = self.nodes[i].committed.height;
        if self.nodes[i].core.is_some() {
            self.send_host(i, None, HostMessage::Checkpoint(tip));
        }
        if self.now < self.nodes[i].sync_until {
            return;
        }
        let e = self.nodes[i].epoch;
        let fix = self.cfg.epochs.as_ref().is_some_and(|ep| ep.epoch_end_sync);
        let seen = self.nodes[i].seen_height;
        let behind = seen.0 > tip.0 + SYNC_GAP || (fix && seen >= self.epoch_end(e));
        let node = &mut self.nodes[i];
        node.behind_ticks = if behind { node.behind_ticks + 1 } else { 0 };
        if node.behind_ticks < 2 {
            return;
        }
        let identity = node.identity;
        let peers: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| self.nodes[j].identity != identity && self.members_of(e).contains(&self.nodes[j].identity))
            .collect();
        if peers.is_empty() {
            return;
        }
        let j = peers[self.rng.range(0, peers.len() as u64 - 1) as usize];
        self.nodes[i].sync_until = self.now + SYNC_TIMEOUT;
        self.stats.sync_requests += 1;
        self.send_host(i, Some(j), HostMessage::SyncRequest(tip.next()));
    }

    fn on_host_message(&mut self, i: usize, from: usize, message: HostMessage) {
        match message {
            HostMessage::Checkpoint(h) => {
                let node = &mut self.nodes[i];
                node.seen_height = node.seen_height.max(h);
            }
            HostMessage::SyncRequest(from_height) => {
                let entries = self.answer_sync(i, from_height);
                self.send_host(i, Some(from), HostMessage::SyncResponse(Rc::new(entries)));
            }
            HostMessage::SyncResponse(entries) => self.apply_sync(i, &entries),
        }
    }

    /// Committed blocks from `from` on with the certificates they were committed with: at
    /// least [`SYNC_BATCH`], then up to [`SYNC_EXTRA`] more to reach one with its own finalization.
    fn answer_sync(&self, i: usize, from: Height) -> Vec<SyncEntry> {
        let node = &self.nodes[i];
        let fix = self.cfg.epochs.as_ref().is_some_and(|ep| ep.epoch_end_sync);
        let mut out = Vec::new();
        let from = from.0.max(1);
        for h in from..=node.committed.height.0 {
            let c = &node.ledger[h as usize - 1];
            out.push(SyncEntry {
                block: node.store[&c.digest].clone(),
                finalization: c.certificate.clone(),
                witness: if fix { c.witness.clone() } else { Vec::new() },
            });
            let counted = h + 1 - from;
            if counted >= SYNC_BATCH && (c.certificate.height.0 == h || counted >= SYNC_BATCH + SYNC_EXTRA) {
                break;
            }
        }
        out
    }

    /// The node's `apply_blocks`: the entries that extend node `i`'s chain, up to the last one
    /// of its epoch whose own finalization verifies under the epoch's set and chain id, are
    /// committed (the ones before it with that finalization unless they carry their own); then
    /// the core restarts on the new tip. With [`Epochs::epoch_end_sync`] the epoch's last block
    /// also counts when its finalization is a descendant's and the witness links it to that one.
    fn apply_sync(&mut self, i: usize, entries: &[SyncEntry]) {
        self.nodes[i].sync_until = Duration::ZERO;
        let e = self.nodes[i].epoch;
        let (end, chain) = (self.epoch_end(e), self.chain(e));
        let fix = self.cfg.epochs.as_ref().is_some_and(|ep| ep.epoch_end_sync);
        let mut expect_parent = self.nodes[i].committed.digest;
        let mut linked = 0;
        for (expect_height, entry) in (self.nodes[i].committed.height.0 + 1..).zip(entries) {
            if entry.block.height.0 != expect_height || entry.block.parent != expect_parent {
                break;
            }
            expect_parent = entry.block.hash(&self.chain(self.epoch_of(entry.block.height)));
            linked += 1;
        }
        let set = self.set_of(e);
        let verifies = |c: &Certificate| c.kind == VoteKind::Finalize && c.verify(&chain, set, &self.verifier).is_ok();
        let last = entries[..linked].iter().rposition(|entry| {
            let (b, c) = (&entry.block, &entry.finalization);
            if b.height > end {
                return false;
            }
            let digest = b.hash(&chain);
            if c.height == b.height && c.digest == digest {
                return verifies(c);
            }
            fix && b.height == end && witness_links(digest, end, &entry.witness, c, &chain) && verifies(c)
        });
        let Some(last) = last else { return };
        let head = entries[last].finalization.clone();
        for entry in &entries[..=last] {
            let own = entry.finalization.height == entry.block.height;
            let certificate = if own { entry.finalization.clone() } else { head.clone() };
            self.stats.synced_blocks += 1;
            if self.commit(i, entry.block.clone(), certificate) {
                self.nodes[i].ledger.last_mut().expect("just committed").witness = entry.witness.clone();
                self.advance_epoch(i);
            }
        }
        self.replace_core(i);
    }
}

/// Whether `witness` is a chain of empty blocks from the child of `digest` (at height `end`) up to
/// the block `c` finalizes, each hashing under `chain`.
fn witness_links(mut digest: Digest, end: Height, witness: &[Block], c: &Certificate, chain: &ChainId) -> bool {
    let mut height = end;
    for b in witness {
        if b.parent != digest || b.height != height.next() || !b.payload.is_empty() {
            return false;
        }
        digest = b.hash(chain);
        height = b.height;
    }
    !witness.is_empty() && height == c.height && digest == c.digest
}
