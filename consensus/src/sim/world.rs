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
use crate::{signing_bytes, VoteKind};
use crate::{
    Anchor, Block, Certificate, ChainId, Config, Core, Digest, Height, Input, Message, Output, SafetyState, Signer,
    Validator, ValidatorIndex, ValidatorSet, View,
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
}

enum Event {
    Deliver { to: usize, from: ValidatorIndex, bytes: Rc<Vec<u8>> },
    Timer { node: usize, incarnation: u64, view: View },
    App { node: usize, incarnation: u64, input: Input },
    Restart { node: usize },
}

struct Node {
    validator: ValidatorIndex,
    behaviour: Option<Box<dyn Behaviour>>,
    core: Option<Core>,
    incarnation: u64,
    disk: SafetyState,
    committed: Anchor,
    committed_certificate: Option<Certificate>,
    /// Committed and persisted (voted) blocks, kept across crashes like the node's block store.
    store: BTreeMap<Digest, Block>,
    offset_ms: u64,
    drift_ppm: i64,
    rng: Rng,
    /// Crash during the next handled input after this many outputs.
    crash_after: Option<usize>,
    /// Crashed by the scenario (not by random chaos): restarted only by it.
    held_down: bool,
}

/// A deterministic world of validators. See the module docs.
pub struct Sim {
    pub cfg: SimConfig,
    rng: Rng,
    now: Duration,
    seq: u64,
    queue: BTreeMap<(Duration, u64), Event>,
    nodes: Vec<Node>,
    keys: Vec<SigningKey>,
    set: ValidatorSet,
    chain_id: ChainId,
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

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = Rng::new(cfg.seed);
        let n = cfg.powers.len();
        let keys: Vec<SigningKey> =
            (0..n).map(|_| SigningKey::from_bytes(&rng.bytes(32).try_into().expect("32"))).collect();
        let set = ValidatorSet::new(
            keys.iter().zip(&cfg.powers).map(|(k, &power)| Validator { key: k.verifying_key(), power }).collect(),
        );
        let chain_id = ChainId(rng.bytes(32).try_into().expect("32"));
        let mut honest = Vec::with_capacity(n);
        let mut nodes = Vec::new();
        for i in 0..n {
            let kind = cfg.byzantine.iter().find(|(v, _)| *v == i).map(|(_, k)| *k);
            honest.push(kind.is_none());
            for _ in 0..super::byzantine::twins::nodes(kind) {
                let node = Node {
                    validator: ValidatorIndex(i as u32),
                    behaviour: kind.and_then(Kind::build),
                    core: None,
                    incarnation: 0,
                    disk: SafetyState::default(),
                    committed: GENESIS,
                    committed_certificate: None,
                    store: BTreeMap::new(),
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
            set,
            chain_id,
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

    pub fn validator_set(&self) -> &ValidatorSet {
        &self.set
    }

    /// A digest of everything that happened: equal seeds must give equal digests.
    pub fn trace_digest(&self) -> [u8; 32] {
        self.trace.clone().finalize().into()
    }

    fn is_honest_node(&self, i: usize) -> bool {
        self.checker.is_honest(self.nodes[i].validator)
    }

    /// Lowest committed height among honest nodes (crashed ones included).
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
            let core = n.core.as_ref().map_or("down".to_string(), Core::status);
            out += &format!(
                "  node {i} ({:?}{}): {core}; disk {:?}\n",
                n.validator,
                if self.is_honest_node(i) { "" } else { ", faulty" },
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
            if self.nodes[i].core.is_none() {
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
        if node.core.take().is_some() {
            node.incarnation += 1;
            self.stats.crashes += 1;
        }
    }

    /// Restarts a crashed node from its persisted safety state and committed block.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].core.is_none() {
            self.nodes[i].held_down = false;
            self.start(i);
        }
    }

    fn start(&mut self, i: usize) {
        let node = &self.nodes[i];
        let signer =
            Signer::new(self.keys[node.validator.0 as usize].clone(), node.validator, self.chain_id, node.disk.clone());
        let core = Core::new(
            self.core_config(),
            signer,
            node.committed,
            node.committed_certificate.clone(),
            Box::new(self.verifier.clone()),
        );
        self.nodes[i].core = Some(core);
        self.feed(i, Input::Start);
    }

    fn core_config(&self) -> Config {
        let mut cfg = Config::new(self.chain_id, self.set.clone());
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
        let v = self.nodes[i].validator;
        let signer = Signer::new(self.keys[v.0 as usize].clone(), v, self.chain_id, SafetyState::default());
        Core::new(self.core_config(), signer, GENESIS, None, verifier)
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
            Event::Deliver { to, from, bytes } => {
                self.trace.update([1, to as u8]);
                self.trace.update(bytes.as_slice());
                if self.nodes[to].core.is_some() {
                    match Message::decode(&bytes, &crate::Limits::default()) {
                        Ok(Message::BlockRequest(d)) if self.nodes[to].store.contains_key(&d) => {
                            self.serve(to, from, d)
                        }
                        Ok(message) => self.feed(to, Input::Message { from, message }),
                        Err(error) => {
                            self.stats.rejected += 1;
                            self.checker.on_rejected(to, from, &error);
                        }
                    }
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
        }
        true
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
                    self.status() + &self.queue.iter().map(|((at, _), e)| format!("  {at:?} {}\n", match e { Event::Deliver { to, .. } => format!("deliver to {to}"), Event::Timer { node, incarnation, view } => format!("timer {node} inc {incarnation} (now {}) view {view:?}", self.nodes[*node].incarnation), Event::App { node, .. } => format!("app {node}"), Event::Restart { node } => format!("restart {node}") })).collect::<String>()
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
        let validator = self.nodes[i].validator;
        let mut ctx = Ctx {
            rng: &mut rng,
            key: &self.keys[validator.0 as usize],
            chain_id: self.chain_id,
            me: validator,
            validators: &self.set,
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
            let down = self.nodes.iter().filter(|n| n.core.is_none()).count();
            if down < self.cfg.crashed_max {
                crash_after = Some(self.rng.range(0, outputs.len() as u64) as usize);
                let back = self.now + Duration::from_millis(self.rng.range(50, 3_000));
                self.push(back, Event::Restart { node: i });
            }
        }
        for (k, o) in outputs.into_iter().enumerate() {
            if crash_after == Some(k) {
                return self.kill(i);
            }
            self.carry_out(i, o);
        }
        if crash_after.is_some() {
            return self.kill(i);
        }
        for (to, bytes) in raw {
            self.send_raw(i, to, bytes);
        }
    }

    fn carry_out(&mut self, i: usize, o: Output) {
        let validator = self.nodes[i].validator;
        match o {
            Output::PersistSafety(s) => self.nodes[i].disk = s,
            Output::PersistBlock(b) => {
                let digest = b.hash(&self.chain_id);
                self.nodes[i].store.insert(digest, b);
            }
            Output::Broadcast(m) => {
                self.checker.on_sent(validator, &m, &self.chain_id);
                self.register_signature(i, &m);
                if let Message::Propose(p) = &m {
                    self.proposed_at.entry(p.block.hash(&self.chain_id)).or_insert(self.now);
                }
                self.send_raw(i, None, m.encode());
            }
            Output::Send { to, message } => {
                self.checker.on_sent(validator, &message, &self.chain_id);
                self.register_signature(i, &message);
                self.send_raw(i, Some(to), message.encode());
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
                    return;
                }
                let mut payload = view.0.to_le_bytes().to_vec();
                payload.extend_from_slice(&height.0.to_le_bytes());
                payload.push(i as u8);
                let incarnation = self.nodes[i].incarnation;
                self.push(self.now, Event::App { node: i, incarnation, input: Input::Payload { view, payload } });
            }
            Output::Validate(block) => {
                let valid = !block.payload.starts_with(INVALID_PAYLOAD_PREFIX);
                let digest = block.hash(&self.chain_id);
                let incarnation = self.nodes[i].incarnation;
                self.push(self.now, Event::App { node: i, incarnation, input: Input::Validated { digest, valid } });
            }
            Output::Finalized { block, certificate } => {
                let digest = block.hash(&self.chain_id);
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
                if self.checker.is_honest(validator) {
                    self.checker.on_finalized(i, &block, &certificate, &self.chain_id, &self.set);
                    if let Some(at) = self.proposed_at.get(&digest) {
                        self.stats.finality_latencies.push(self.now - *at);
                    }
                    self.stats.finalized_at.push((i, block.height, self.now));
                }
            }
            Output::Evidence(e) => {
                self.stats.evidence += 1;
                self.checker.on_evidence(i, &e.first, &e.second);
            }
            Output::Rejected { from, error } => {
                self.stats.rejected += 1;
                self.checker.on_rejected(i, from, &error);
            }
        }
    }

    /// An honest core's own signature is valid by construction: skip verifying it (see [`CachedVerifier`]).
    fn register_signature(&self, i: usize, m: &Message) {
        let validator = self.nodes[i].validator;
        if !self.is_honest_node(i) {
            return;
        }
        let (kind, view, height, digest, signature) = match m {
            Message::Vote(v) if v.signer == validator => (v.kind, v.view, v.height, v.digest, v.signature),
            Message::Propose(p) => {
                (VoteKind::Propose, p.block.view, p.block.height, p.block.hash(&self.chain_id), p.signature)
            }
            _ => return,
        };
        let key = &self.set.get(validator).expect("a validator").key;
        self.verifier.register(key, &signing_bytes(kind, &self.chain_id, view, height, &digest), &signature);
    }

    /// The host's side of block sync: blocks in its store (committed or voted for), with ancestors.
    fn serve(&mut self, node: usize, to: ValidatorIndex, d: Digest) {
        let mut next = self.nodes[node].store.get(&d).cloned();
        for _ in 0..64 {
            let Some(b) = next.take() else { break };
            next = self.nodes[node].store.get(&b.parent).cloned();
            self.send_raw(node, Some(to), Message::BlockResponse(b).encode());
        }
    }

    fn send_raw(&mut self, from: usize, to: Option<ValidatorIndex>, bytes: Vec<u8>) {
        let bytes = Rc::new(bytes);
        let validator = self.nodes[from].validator;
        for j in 0..self.nodes.len() {
            if j == from || to.is_some_and(|t| self.nodes[j].validator != t) {
                continue;
            }
            self.stats.messages_sent += 1;
            self.stats.bytes_sent += bytes.len() as u64;
            if self.blocked.contains(&(from, j)) || self.rng.chance(self.cfg.loss_ppm) {
                continue;
            }
            let copies = if self.rng.chance(self.cfg.duplicate_ppm) { 2 } else { 1 };
            for _ in 0..copies {
                let delay = self.latency[from][j] + Duration::from_millis(self.rng.range(0, self.cfg.jitter_ms));
                self.push(self.now + delay, Event::Deliver { to: j, from: validator, bytes: Rc::clone(&bytes) });
            }
        }
    }
}
