//! The protocol logic: [`Core::handle`] turns one input into effects (Spec §Rules).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::cert::{proposal_vote, verify_vote, Verifier};
use crate::config::Config;
use crate::error::Error;
use crate::signer::{conflicting, SafetyState, Signer};
use crate::types::{Anchor, Block, Digest, Height, Payload, ValidatorIndex, View};
use crate::wire::{Certificate, Message, Proposal, Vote, VoteKind};

/// Everything that can happen to a core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// First input after construction: arms the timer of the starting view.
    Start,
    /// A decoded message from the authenticated peer `from`.
    Message { from: ValidatorIndex, message: Message },
    /// The deadline of `Output::Schedule { view, .. }` passed.
    Timeout(View),
    /// The application's payload for `Output::NeedPayload { view, .. }`.
    Payload { view: View, payload: Payload },
    /// The application's verdict on `Output::Validate(block)` for the block with this hash.
    Validated { digest: Digest, valid: bool },
}

/// Two signed messages from one validator that an honest validator never signs both of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub first: Vote,
    pub second: Vote,
}

/// Effects, in the order the host must perform them. `PersistSafety` and then
/// `PersistBlock` come first when present and must be durable before any later
/// `Broadcast` or `Send`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    PersistSafety(SafetyState),
    /// Store this block body durably, with the safety state and before any later send:
    /// this validator is about to vote for it, so it must be able to serve it after a crash.
    /// `digest` is the block's hash (`Block::hash`), computed once by the core.
    PersistBlock {
        block: Block,
        digest: Digest,
    },
    Broadcast(Message),
    Send {
        to: ValidatorIndex,
        message: Message,
    },
    /// Deliver `Input::Timeout(view)` at `deadline` (same clock as `now`).
    Schedule {
        view: View,
        deadline: Duration,
    },
    /// This validator leads `view`: supply a payload for a block at `height` extending `parent`.
    NeedPayload {
        view: View,
        height: Height,
        parent: Digest,
    },
    /// Is this block's payload valid on top of its parent? Answer with
    /// `Input::Validated` for `digest`, the block's hash.
    Validate {
        block: Block,
        digest: Digest,
    },
    /// Final, in height order, exactly once per height. `certificate` is the
    /// block's own finalization, or (for an ancestor finalized implicitly) that
    /// of the nearest finalized descendant (`certificate.height > block.height`).
    Finalized {
        block: Block,
        /// The block's hash (the certificate's digest only when it is the block's own).
        digest: Digest,
        certificate: Certificate,
    },
    Evidence(Evidence),
    /// A message from `from` failed a check; the host may score the peer.
    Rejected {
        from: ValidatorIndex,
        error: Error,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Step {
    #[default]
    Idle,
    WaitingParent,
    Validating,
    Voted,
    Rejected,
}

/// What a core knows about one view.
#[derive(Default)]
struct Round {
    proposal: Option<(Digest, Proposal)>,
    step: Step,
    timed_out: bool,
    /// The parent this leader asked a payload for.
    proposing_on: Option<Anchor>,
    votes: [BTreeMap<ValidatorIndex, Vote>; 3],
    certificates: [Option<Certificate>; 3],
}

fn slot(kind: VoteKind) -> usize {
    match kind {
        VoteKind::Notarize => 0,
        VoteKind::Nullify => 1,
        VoteKind::Finalize => 2,
        VoteKind::Propose => unreachable!("proposals are not counted"),
    }
}

impl Round {
    fn notarized(&self) -> Option<&Certificate> {
        self.certificates[0].as_ref().or(self.certificates[2].as_ref())
    }
    fn nullified(&self) -> bool {
        self.certificates[1].is_some()
    }
}

struct Want {
    peers: Vec<ValidatorIndex>,
    attempts: u32,
    last: Duration,
}

/// One validator's consensus state machine. See the crate docs for the protocol.
pub struct Core {
    cfg: Config,
    signer: Signer,
    verifier: Box<dyn Verifier>,
    view: View,
    nullified_in_row: u32,
    rounds: BTreeMap<View, Round>,
    /// Highest finalization known (Spec §Commit), and its certificate.
    finalized: Anchor,
    finalized_certificate: Option<Certificate>,
    finalizations: BTreeMap<Height, Certificate>,
    committed: Anchor,
    blocks: BTreeMap<Digest, Block>,
    wanted: BTreeMap<Digest, Want>,
    helped: BTreeMap<ValidatorIndex, Duration>,
    persisted: SafetyState,
    /// Block bodies to persist before this input's sends (Spec R9).
    persist_blocks: Vec<(Block, Digest)>,
    /// While handling a block response: record wants without sending requests.
    quiet_wants: bool,
    /// The `now` of the input being handled.
    now: Duration,
    sends: Vec<Output>,
    out: Vec<Output>,
    /// Messages this core looked at past its first checks ([`Core::messages_taken`]).
    taken: u64,
}

impl Core {
    /// A core for one epoch. `anchor` is the last block the host committed (the
    /// genesis block at first) and `anchor_certificate` the finalization certificate
    /// it was committed with (`None` for genesis); `signer` carries the last persisted
    /// safety state.
    pub fn new(
        cfg: Config,
        signer: Signer,
        anchor: Anchor,
        anchor_certificate: Option<Certificate>,
        verifier: Box<dyn Verifier>,
    ) -> Core {
        assert!(
            cfg.validators.get(signer.index()).is_some(),
            "signer {:?} is not in the validator set",
            signer.index()
        );
        // Spec R1: start in the view after the anchor, where this core holds the certificate
        // that justifies being there; the signer's state forbids re-signing anything.
        let view = anchor.view.next();
        let persisted = signer.state().clone();
        Core {
            cfg,
            signer,
            verifier,
            view,
            nullified_in_row: 0,
            rounds: BTreeMap::new(),
            finalized: anchor,
            finalized_certificate: anchor_certificate,
            finalizations: BTreeMap::new(),
            committed: anchor,
            blocks: BTreeMap::new(),
            wanted: BTreeMap::new(),
            helped: BTreeMap::new(),
            persisted,
            persist_blocks: Vec::new(),
            now: Duration::ZERO,
            quiet_wants: false,
            sends: Vec::new(),
            out: Vec::new(),
            taken: 0,
        }
    }

    /// How many messages this core has looked at past its first checks (a view
    /// in its window, not one it already holds): a message that leaves this
    /// count alone and was not rejected changed nothing here, and a host need
    /// not pass it on. Counts nothing that is hashed or signed.
    pub fn messages_taken(&self) -> u64 {
        self.taken
    }

    pub fn view(&self) -> View {
        self.view
    }

    pub fn committed(&self) -> Anchor {
        self.committed
    }

    /// Whether this core answers a block request for `d` itself: it holds the
    /// block (retained, or proposed in a view it knows). The host answers for
    /// the committed blocks it does not hold, from its store.
    pub fn holds_block(&self, d: &Digest) -> bool {
        self.block(d).is_some()
    }

    /// The block `d`, if this core holds it (see [`holds_block`](Self::holds_block)).
    pub fn block(&self, d: &Digest) -> Option<&Block> {
        self.blocks.get(d).or_else(|| {
            self.rounds.values().filter_map(|r| r.proposal.as_ref()).find(|(pd, _)| pd == d).map(|(_, p)| &p.block)
        })
    }

    /// One line for logs: view, finalized and committed heights, pending fetches.
    pub fn status(&self) -> String {
        format!(
            "view {} finalized {}@{} committed {} wanted {} rounds {} blocks {}",
            self.view.0,
            self.finalized.height.0,
            self.finalized.view.0,
            self.committed.height.0,
            self.wanted.len(),
            self.rounds.len(),
            self.blocks.len()
        ) + &self
            .rounds
            .range(View(self.view.0.saturating_sub(40))..)
            .map(|(v, r)| {
                let c = |i: usize, ch: &str| if r.certificates[i].is_some() { ch.to_string() } else { String::new() };
                format!(
                    " {}:{}{}{}{}",
                    v.0,
                    c(0, "N"),
                    c(1, "X"),
                    c(2, "F"),
                    if r.proposal.is_some() { format!("p{:?}", r.step) } else { String::new() }
                )
            })
            .collect::<String>()
            + &self
                .wanted
                .iter()
                .map(|(d, w)| {
                    format!(
                        " want {:02x}{:02x} attempts {} last {:?} peers {:?}",
                        d[0], d[1], w.attempts, w.last, w.peers
                    )
                })
                .collect::<String>()
    }

    pub fn safety_state(&self) -> SafetyState {
        self.signer.state().clone()
    }

    /// Handles one input at time `now` and returns the effects, `PersistSafety` first.
    pub fn handle(&mut self, now: Duration, input: Input) -> Vec<Output> {
        self.now = now;
        match input {
            Input::Start => self.on_start(now),
            Input::Message { from, message } => self.on_message(now, from, message),
            Input::Timeout(view) => {
                if view == self.view {
                    self.on_timeout(now);
                }
            }
            Input::Payload { view, payload } => self.on_payload(view, payload),
            Input::Validated { digest, valid } => self.on_validated(now, digest, valid),
        }
        let mut out = Vec::with_capacity(1 + self.sends.len() + self.out.len());
        if *self.signer.state() != self.persisted {
            // Spec R9: the state that permits the signatures below is persisted before they leave.
            self.persisted = self.signer.state().clone();
            out.push(Output::PersistSafety(self.persisted.clone()));
        }
        out.extend(self.persist_blocks.drain(..).map(|(block, digest)| Output::PersistBlock { block, digest }));
        out.append(&mut self.sends);
        out.append(&mut self.out);
        out
    }

    /// Spec R1, R10: arms the starting view's timer. A restarted validator whose last finalize
    /// is above its anchor first takes back the certificate that finalize rests on, which moves
    /// it past that view (R6) and which it re-sends on its timeouts: S3 forbids it to nullify
    /// that view, and its notarize there may be gone (only the last one can be re-signed), so
    /// without the certificate the view could stay uncertified forever (seed 25951).
    fn on_start(&mut self, now: Duration) {
        let justification =
            self.signer.state().finalized_justification.clone().filter(|c| c.view > self.finalized.view);
        match justification {
            // Read back from this validator's own safety state: verified before it was kept.
            Some(c) => self.on_verified_certificate(now, c),
            None => {
                self.arm_timer(now);
                self.progress();
            }
        }
    }

    fn on_message(&mut self, now: Duration, from: ValidatorIndex, message: Message) {
        match message {
            Message::Propose(p) => self.on_proposal(from, p),
            Message::Vote(v) => self.on_vote(now, from, v),
            Message::Certificate(c) => self.on_certificate(from, c),
            Message::BlockRequest(d) => {
                self.taken += 1;
                self.on_block_request(from, d)
            }
            Message::BlockResponse(b) => {
                self.taken += 1;
                self.on_block_response(b)
            }
        }
    }

    fn reject(&mut self, from: ValidatorIndex, error: Error) {
        self.out.push(Output::Rejected { from, error });
    }

    fn broadcast(&mut self, m: Message) {
        self.sends.push(Output::Broadcast(m));
    }

    fn round(&mut self, view: View) -> &mut Round {
        self.rounds.entry(view).or_default()
    }

    fn me(&self) -> ValidatorIndex {
        self.signer.index()
    }

    // ---- proposals (Spec R2, R3) ----

    fn on_proposal(&mut self, from: ValidatorIndex, p: Proposal) {
        let v = p.block.view;
        if v <= self.finalized.view || v.0 > self.view.0 + self.cfg.views_ahead_max {
            return;
        }
        if p.block.payload.len() > self.cfg.limits.payload_bytes_max {
            let error = Error::PayloadTooLarge { got: p.block.payload.len(), max: self.cfg.limits.payload_bytes_max };
            return self.reject(from, error);
        }
        let digest = p.block.hash(&self.cfg.chain_id);
        let vote = proposal_vote(&self.cfg.validators, v, p.block.height, digest, p.signature);
        let existing = self.rounds.get(&v).and_then(|r| r.proposal.as_ref()).map(|(d, q)| (*d, q.clone()));
        if existing.as_ref().is_some_and(|(d, _)| *d == digest) {
            return;
        }
        self.taken += 1;
        if let Err(error) = verify_vote(&vote, &self.cfg.chain_id, &self.cfg.validators, self.verifier.as_ref()) {
            return self.reject(from, error);
        }
        if let Some((d, q)) = existing {
            // Spec R8: two proposals for one view.
            let first = Vote { height: q.block.height, digest: d, signature: q.signature, ..vote.clone() };
            self.out.push(Output::Evidence(Evidence { first, second: vote }));
            return;
        }
        self.round(v).proposal = Some((digest, p));
        self.try_vote(v);
    }

    /// Spec R3: the parent check a validator runs before it asks the application.
    fn check_parent(&self, b: &Block) -> Result<(), bool> {
        let f = self.finalized;
        if b.parent_view >= b.view || b.parent_view < f.view {
            return Err(true);
        }
        let (parent_height, parent_digest) = if b.parent_view == f.view {
            (f.height, f.digest)
        } else {
            match self.rounds.get(&b.parent_view).and_then(Round::notarized) {
                Some(c) => (c.height, c.digest),
                None => return Err(false),
            }
        };
        if parent_digest != b.parent || b.height != parent_height.next() {
            return Err(true);
        }
        let skipped = (b.parent_view.0 + 1)..b.view.0;
        if skipped.into_iter().all(|w| self.rounds.get(&View(w)).is_some_and(Round::nullified)) {
            Ok(())
        } else {
            Err(false)
        }
    }

    fn try_vote(&mut self, v: View) {
        if v != self.view {
            return;
        }
        let Some(round) = self.rounds.get(&v) else { return };
        if round.timed_out || !matches!(round.step, Step::Idle | Step::WaitingParent) {
            return;
        }
        let Some((digest, p)) = &round.proposal else { return };
        let (block, digest) = (p.block.clone(), *digest);
        let step = match self.check_parent(&block) {
            Ok(()) => {
                self.out.push(Output::Validate { block, digest });
                Step::Validating
            }
            Err(false) => Step::WaitingParent,
            Err(true) => Step::Rejected,
        };
        self.round(v).step = step;
        if step == Step::Rejected {
            self.nullify_now();
        }
    }

    fn on_validated(&mut self, now: Duration, digest: Digest, valid: bool) {
        let v = self.view;
        let Some(round) = self.rounds.get_mut(&v) else { return };
        let Some((d, p)) = &round.proposal else { return };
        if *d != digest || round.step != Step::Validating {
            return;
        }
        let height = p.block.height;
        if valid {
            round.step = Step::Voted;
            self.persist_blocks.push((p.block.clone(), digest));
            self.vote(now, VoteKind::Notarize, v, height, digest);
        } else {
            round.step = Step::Rejected;
            self.nullify_now();
        }
    }

    /// Spec R2: the leader asks for a payload once it knows a valid parent.
    fn try_propose(&mut self) {
        let v = self.view;
        if self.cfg.validators.leader(v) != self.me() || self.signer.state().proposed >= v {
            return;
        }
        let round = self.rounds.entry(v).or_default();
        if round.proposing_on.is_some() || round.timed_out {
            return;
        }
        let Some(parent) = self.parent_for(v) else { return };
        self.round(v).proposing_on = Some(parent);
        self.out.push(Output::NeedPayload { view: v, height: parent.height.next(), parent: parent.digest });
    }

    /// The block a proposal in `v` must extend: the highest notarized view below
    /// `v` with every view in between nullified (Spec R2).
    fn parent_for(&self, v: View) -> Option<Anchor> {
        let f = self.finalized;
        let mut w = v.0 - 1;
        while w > f.view.0 {
            let round = self.rounds.get(&View(w))?;
            if let Some(c) = round.notarized() {
                return Some(Anchor { height: c.height, view: View(w), digest: c.digest });
            }
            if !round.nullified() {
                return None;
            }
            w -= 1;
        }
        Some(f)
    }

    fn on_payload(&mut self, view: View, payload: Payload) {
        assert!(
            payload.len() <= self.cfg.limits.payload_bytes_max,
            "the application's payload exceeds payload_bytes_max"
        );
        if view != self.view {
            return;
        }
        let Some(parent) = self.round(view).proposing_on else { return };
        let block =
            Block { height: parent.height.next(), view, parent_view: parent.view, parent: parent.digest, payload };
        let digest = block.hash(&self.cfg.chain_id);
        let Some(vote) = self.signer.propose(view, block.height, digest) else { return };
        let height = block.height;
        self.persist_blocks.push((block.clone(), digest));
        let proposal = Proposal { block, signature: vote.signature };
        self.broadcast(Message::Propose(proposal.clone()));
        let round = self.round(view);
        round.proposal = Some((digest, proposal));
        round.step = Step::Voted;
        self.vote(self.now, VoteKind::Notarize, view, height, digest);
    }

    // ---- votes (Spec R4–R6, R8) ----

    /// Signs (if the safety rules allow), broadcasts and counts one's own notarize or nullify.
    fn vote(&mut self, now: Duration, kind: VoteKind, view: View, height: Height, digest: Digest) {
        let vote = match kind {
            VoteKind::Notarize => self.signer.notarize(view, height, digest),
            VoteKind::Nullify => self.signer.nullify(view),
            VoteKind::Finalize => unreachable!("finalize votes are signed on their certificate in finalize"),
            VoteKind::Propose => unreachable!("proposals are signed in on_payload"),
        };
        self.cast(now, vote);
    }

    /// Spec R5: finalize the block `c` certifies, unless this validator nullified its view or a
    /// later one; the safety state keeps `c` with the vote (R10).
    fn finalize(&mut self, now: Duration, c: &Certificate) {
        let vote = self.signer.finalize(c);
        self.cast(now, vote);
    }

    fn cast(&mut self, now: Duration, vote: Option<Vote>) {
        if let Some(vote) = vote {
            self.broadcast(Message::Vote(vote.clone()));
            self.count(now, vote);
        }
    }

    fn on_vote(&mut self, now: Duration, from: ValidatorIndex, vote: Vote) {
        let mut verified = false;
        if vote.kind == VoteKind::Nullify && vote.view < self.view {
            // Only a vote that verifies shows someone behind: a forged one, relayed, would
            // make every node broadcast its catch-up bundle (review, session 30).
            if let Err(error) = verify_vote(&vote, &self.cfg.chain_id, &self.cfg.validators, self.verifier.as_ref()) {
                return self.reject(from, error);
            }
            verified = true;
            self.taken += 1;
            self.help(now, from);
        }
        if vote.kind == VoteKind::Propose
            || vote.view <= self.finalized.view
            || vote.view.0 > self.view.0 + self.cfg.views_ahead_max
        {
            return;
        }
        let round = self.rounds.entry(vote.view).or_default();
        let same = round.votes[slot(vote.kind)].get(&vote.signer).cloned();
        if same.as_ref() == Some(&vote) {
            return;
        }
        let other = match vote.kind {
            VoteKind::Nullify => round.votes[slot(VoteKind::Finalize)].get(&vote.signer).cloned(),
            VoteKind::Finalize => round.votes[slot(VoteKind::Nullify)].get(&vote.signer).cloned(),
            _ => None,
        };
        if !verified {
            self.taken += 1;
            if let Err(error) = verify_vote(&vote, &self.cfg.chain_id, &self.cfg.validators, self.verifier.as_ref()) {
                return self.reject(from, error);
            }
        }
        for first in [same.clone(), other].into_iter().flatten() {
            if conflicting(&first, &vote) {
                self.out.push(Output::Evidence(Evidence { first, second: vote.clone() }));
            }
        }
        if same.is_none() {
            self.count(now, vote);
        }
    }

    /// Records a verified vote and forms a certificate at quorum (Spec R4).
    fn count(&mut self, now: Duration, vote: Vote) {
        let set = &self.cfg.validators;
        let round = self.rounds.entry(vote.view).or_default();
        let s = slot(vote.kind);
        round.votes[s].entry(vote.signer).or_insert_with(|| vote.clone());
        if round.certificates[s].is_some() {
            return;
        }
        let same_subject = |v: &&Vote| (v.height, v.digest) == (vote.height, vote.digest);
        let power: u64 =
            round.votes[s].values().filter(same_subject).map(|v| set.get(v.signer).map_or(0, |x| x.power)).sum();
        if !set.is_quorum(power) {
            return;
        }
        let cert =
            Certificate::assemble(set, round.votes[s].values().filter(same_subject)).expect("a quorum has votes");
        self.broadcast(Message::Certificate(cert.clone()));
        self.on_verified_certificate(now, cert);
    }

    // ---- certificates (Spec R4–R7) ----

    fn on_certificate(&mut self, from: ValidatorIndex, c: Certificate) {
        if c.view <= self.finalized.view
            || self.rounds.get(&c.view).is_some_and(|r| r.certificates[slot(c.kind)].is_some())
        {
            return;
        }
        self.taken += 1;
        if let Err(error) = c.verify(&self.cfg.chain_id, &self.cfg.validators, self.verifier.as_ref()) {
            return self.reject(from, error);
        }
        self.on_verified_certificate(self.now, c);
    }

    fn on_verified_certificate(&mut self, now: Duration, c: Certificate) {
        let v = c.view;
        let kind = c.kind;
        self.round(v).certificates[slot(kind)] = Some(c.clone());
        match kind {
            VoteKind::Notarize | VoteKind::Finalize => {
                self.keep_block(v, c.digest);
                // Spec R5: finalize what is notarized unless this view was nullified by us.
                self.finalize(now, &c);
                if kind == VoteKind::Finalize {
                    self.on_finalization(c);
                }
                if v >= self.view {
                    self.nullified_in_row = 0;
                }
            }
            VoteKind::Nullify => {
                if v >= self.view {
                    self.nullified_in_row = self.nullified_in_row.saturating_add(1);
                }
            }
            VoteKind::Propose => unreachable!("no proposal certificates"),
        }
        if v >= self.view {
            // Spec R6: a certificate for view v starts view v+1.
            self.view = v.next();
            self.arm_timer(now);
            self.retry_wanted(now);
        }
        self.progress();
    }

    fn progress(&mut self) {
        self.try_propose();
        self.try_vote(self.view);
    }

    fn arm_timer(&mut self, now: Duration) {
        let shift = self.nullified_in_row.min(16);
        let timeout = self.cfg.timeout_base.saturating_mul(1 << shift).min(self.cfg.timeout_max);
        self.out.push(Output::Schedule { view: self.view, deadline: now + timeout });
    }

    // ---- timeouts (Spec R5, R10) ----

    fn on_timeout(&mut self, now: Duration) {
        let v = self.view;
        self.round(v).timed_out = true;
        self.vote(now, VoteKind::Nullify, v, Height(0), [0; 32]);
        for w in self.uncertified_views() {
            self.vote(now, VoteKind::Nullify, w, Height(0), [0; 32]);
        }
        self.resend_own_votes(now);
        // Spec R10: re-send what peers that lost messages need to catch up.
        for c in self.catch_up_bundle() {
            self.broadcast(Message::Certificate(c));
        }
        self.arm_timer(now);
        self.retry_wanted(now);
    }

    /// Spec R5: the views below the current one that the parent walk (R2) crosses without any
    /// certificate, highest first, at most `views_ahead_max`: views left through R6 before their
    /// timer, whose nullification may have been lost with every memory that held it. Nullifying
    /// them after the current view changes no safety state (S3 allows exactly what it allowed
    /// for the current view; `nullified` is already higher).
    fn uncertified_views(&self) -> Vec<View> {
        let mut out = Vec::new();
        for w in (self.finalized.view.0 + 1..self.view.0).rev().map(View) {
            let round = self.rounds.get(&w);
            if round.is_some_and(|r| r.notarized().is_some()) || out.len() as u64 >= self.cfg.views_ahead_max {
                break;
            }
            if !round.is_some_and(Round::nullified) {
                out.push(w);
            }
        }
        out
    }

    /// Spec R10: re-send (re-signed, identical bytes) this validator's last notarize and
    /// finalize while their views are not known final: after a restart they exist only
    /// in the safety state, and a certificate may need them.
    fn resend_own_votes(&mut self, now: Duration) {
        let finalized = self.finalized.view;
        for vote in self.signer.last_votes().into_iter().flatten().filter(|v| v.view > finalized) {
            self.broadcast(Message::Vote(vote.clone()));
            self.count(now, vote);
        }
    }

    /// Nullify the current view at once (invalid or unusable proposal); its timer keeps running.
    fn nullify_now(&mut self) {
        let v = self.view;
        self.round(v).timed_out = true;
        self.vote(self.now, VoteKind::Nullify, v, Height(0), [0; 32]);
    }

    /// Spec R10: a peer still nullifying an older view gets the certificates that move it to ours.
    fn help(&mut self, now: Duration, to: ValidatorIndex) {
        if self.helped.get(&to).is_some_and(|&t| now < t + self.cfg.timeout_base) {
            return;
        }
        self.helped.insert(to, now);
        for c in self.catch_up_bundle() {
            self.sends.push(Output::Send { to, message: Message::Certificate(c) });
        }
    }

    /// The latest finalization, then the certificates that justify the parent for the
    /// current view (Spec R2): the notarization it extends and the nullifications after it,
    /// oldest first, at most `views_ahead_max` of them.
    fn catch_up_bundle(&self) -> Vec<Certificate> {
        let mut bundle = Vec::new();
        for (_, round) in self.rounds.range(..self.view).rev() {
            if let Some(c) = &round.certificates[0] {
                bundle.push(c.clone());
                break;
            }
            match &round.certificates[1] {
                Some(c) => bundle.push(c.clone()),
                None => break,
            }
            if bundle.len() as u64 >= self.cfg.views_ahead_max {
                break;
            }
        }
        if let Some(c) = self.finalized_certificate.clone() {
            bundle.push(c);
        }
        bundle.reverse();
        bundle
    }

    // ---- commit and block fetch (Spec R7) ----

    fn on_finalization(&mut self, c: Certificate) {
        if c.height <= self.committed.height {
            return;
        }
        self.finalizations.insert(c.height, c.clone());
        if c.view > self.finalized.view {
            self.finalized = Anchor { height: c.height, view: c.view, digest: c.digest };
            self.finalized_certificate = Some(c.clone());
            self.rounds = self.rounds.split_off(&c.view);
        }
        self.try_commit();
    }

    /// Copies a certified block out of its round so it outlives the round.
    fn keep_block(&mut self, v: View, digest: Digest) {
        if self.blocks.contains_key(&digest) {
            return;
        }
        let block = self
            .rounds
            .get(&v)
            .and_then(|r| r.proposal.as_ref())
            .filter(|(d, _)| *d == digest)
            .map(|(_, p)| p.block.clone());
        if let Some(b) = block {
            self.blocks.insert(digest, b);
        }
    }

    /// Spec R7: commit, lowest finalization first, every finalized block whose chain
    /// down to the committed block is complete, and want the topmost missing body
    /// under each other finalization, so gaps are fetched in parallel and one slow
    /// body does not hold back the blocks below it.
    fn try_commit(&mut self) {
        let heads: Vec<(Height, Digest)> = self.finalizations.iter().map(|(h, c)| (*h, c.digest)).collect();
        let mut visited = BTreeSet::new();
        let mut blocked = false;
        for (height, digest) in heads {
            if height <= self.committed.height {
                continue;
            }
            match self.chain_to_committed(digest, &mut visited) {
                Ok(chain) if !blocked => self.commit_chain(chain, height),
                Ok(_) => {}
                Err(missing) => {
                    blocked = true;
                    if let Some(d) = missing {
                        let peers = self.fetch_peers(height);
                        self.want(d, peers);
                    }
                }
            }
        }
        self.finalizations = self.finalizations.split_off(&self.committed.height.next());
        let (heights, bytes) = (self.cfg.blocks_retained, self.cfg.blocks_retained_bytes);
        for d in blocks_to_drop(&self.blocks, self.committed.height, heights, bytes) {
            self.blocks.remove(&d);
        }
    }

    /// The digests from `d` down to the block above the committed one, child first;
    /// or the topmost missing digest (`None` when the walk joins one already made).
    fn chain_to_committed(&self, mut d: Digest, visited: &mut BTreeSet<Digest>) -> Result<Vec<Digest>, Option<Digest>> {
        let mut chain = Vec::new();
        loop {
            if !visited.insert(d) {
                return Err(None);
            }
            let b = self.blocks.get(&d).ok_or(Some(d))?;
            assert!(b.height > self.committed.height, "finalized chain passes below the committed height");
            chain.push(d);
            if b.height == self.committed.height.next() {
                assert_eq!(
                    b.parent, self.committed.digest,
                    "the finalized chain does not extend the committed block: a fork"
                );
                return Ok(chain);
            }
            d = b.parent;
        }
    }

    /// Outputs `chain` (child first) in height order. Each block carries its own
    /// finalization if one is known, else the one of `head`, its finalized descendant.
    fn commit_chain(&mut self, chain: Vec<Digest>, head: Height) {
        let head_cert = self.finalizations.get(&head).cloned().expect("the head's finalization is stored");
        for d in chain.into_iter().rev() {
            let block = self.blocks[&d].clone();
            let certificate = match self.finalizations.remove(&block.height) {
                Some(c) if c.digest == d => c,
                _ => head_cert.clone(),
            };
            self.committed = Anchor { height: block.height, view: block.view, digest: d };
            self.out.push(Output::Finalized { block, digest: d, certificate });
        }
    }

    /// Who to ask for a body under the finalization at `height`: its signers, then everyone else.
    fn fetch_peers(&self, height: Height) -> Vec<ValidatorIndex> {
        let mut peers = self.finalizations.get(&height).map(Certificate::signer_indices).unwrap_or_default();
        let others: Vec<_> = self.cfg.validators.iter().map(|(i, _)| i).filter(|i| !peers.contains(i)).collect();
        peers.extend(others);
        peers
    }

    fn want(&mut self, d: Digest, peers: Vec<ValidatorIndex>) {
        if self.wanted.contains_key(&d) || self.wanted.len() >= self.cfg.wanted_max {
            return;
        }
        let me = self.me();
        let peers: Vec<_> = peers.into_iter().filter(|p| *p != me).collect();
        if peers.is_empty() {
            return;
        }
        let want = Want { peers, attempts: 0, last: self.now };
        if !self.quiet_wants {
            self.request(d, &want);
        }
        self.wanted.insert(d, want);
    }

    fn retry_wanted(&mut self, now: Duration) {
        let me = self.me().0 as usize;
        let (base, attempts_max) = (self.cfg.timeout_base, self.cfg.fetch_attempts_max);
        self.wanted.retain(|_, w| w.attempts < attempts_max);
        let mut due = Vec::new();
        for (d, w) in self.wanted.iter_mut() {
            if now >= w.last + base {
                w.attempts += 1;
                w.last = now;
                due.push(*d);
            }
        }
        for d in due {
            let want = &self.wanted[&d];
            let sends = Self::requests(me, d, want);
            self.sends.extend(sends);
        }
    }

    fn request(&mut self, d: Digest, want: &Want) {
        let sends = Self::requests(self.me().0 as usize, d, want);
        self.sends.extend(sends);
    }

    /// One attempt asks two peers (a peer without the body does not answer), rotating per attempt.
    fn requests(me: usize, d: Digest, want: &Want) -> Vec<Output> {
        let n = want.peers.len();
        let first = me + 2 * want.attempts as usize;
        let mut to: Vec<ValidatorIndex> = (0..2.min(n)).map(|k| want.peers[(first + k) % n]).collect();
        to.dedup();
        to.into_iter().map(|to| Output::Send { to, message: Message::BlockRequest(d) }).collect()
    }

    /// Answers with the block and up to `fetch_chain_max - 1` of its ancestors, child first.
    fn on_block_request(&mut self, from: ValidatorIndex, d: Digest) {
        let mut next = self.blocks.get(&d).cloned().or_else(|| {
            self.rounds
                .values()
                .filter_map(|r| r.proposal.as_ref())
                .find(|(pd, _)| *pd == d)
                .map(|(_, p)| p.block.clone())
        });
        let mut sent = 0;
        while let Some(b) = next.take() {
            next = self.blocks.get(&b.parent).cloned();
            self.sends.push(Output::Send { to: from, message: Message::BlockResponse(b) });
            sent += 1;
            if sent >= self.cfg.fetch_chain_max {
                break;
            }
        }
    }

    fn on_block_response(&mut self, b: Block) {
        if b.payload.len() > self.cfg.limits.payload_bytes_max {
            return;
        }
        let d = b.hash(&self.cfg.chain_id);
        if self.wanted.remove(&d).is_some() {
            self.blocks.insert(d, b);
            // The peer sends ancestors right behind this block: want them without asking again.
            self.quiet_wants = true;
            self.try_commit();
            self.quiet_wants = false;
        }
    }
}

/// The blocks a core stops holding once `committed` is committed: those more
/// than `heights` below it, then the oldest until the blocks at or below it
/// hold at most `bytes_max` of payload. Blocks at or above the committed height
/// always stay.
fn blocks_to_drop(blocks: &BTreeMap<Digest, Block>, committed: Height, heights: u64, bytes_max: usize) -> Vec<Digest> {
    let mut below: Vec<(Height, Digest, usize)> =
        blocks.iter().filter(|(_, b)| b.height < committed).map(|(d, b)| (b.height, *d, b.payload.len())).collect();
    below.sort_unstable();
    let mut bytes: usize = blocks.values().filter(|b| b.height <= committed).map(|b| b.payload.len()).sum();
    let keep_from = committed.0.saturating_sub(heights);
    let mut drop = Vec::new();
    for (height, digest, len) in below {
        if height.0 > keep_from && bytes <= bytes_max {
            break;
        }
        drop.push(digest);
        bytes -= len;
    }
    drop
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(heights: std::ops::RangeInclusive<u64>, len: usize) -> BTreeMap<Digest, Block> {
        heights
            .map(|h| {
                let block = Block {
                    height: Height(h),
                    view: View(h),
                    parent_view: View(h - 1),
                    parent: [0; 32],
                    payload: vec![0; len].into(),
                };
                ([h as u8; 32], block)
            })
            .collect()
    }

    #[test]
    fn retained_blocks_are_bounded_by_heights_and_by_bytes() {
        // Goal: committed blocks go oldest first, past the height window or the byte budget,
        // and blocks at or above the committed height stay whatever the budget.
        let held = blocks(1..=10, 100);
        let heights = |drop: Vec<Digest>| drop.iter().map(|d| d[0] as u64).collect::<Vec<_>>();
        assert_eq!(heights(blocks_to_drop(&held, Height(8), 256, 350)), [1, 2, 3, 4, 5], "the budget");
        assert_eq!(heights(blocks_to_drop(&held, Height(8), 3, 1 << 20)), [1, 2, 3, 4, 5], "the window");
        assert_eq!(heights(blocks_to_drop(&held, Height(8), 256, 1 << 20)), Vec::<u64>::new());
        assert_eq!(heights(blocks_to_drop(&held, Height(8), 256, 0)), [1, 2, 3, 4, 5, 6, 7], "the committed one stays");
    }
}
