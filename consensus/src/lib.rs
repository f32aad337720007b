//! Sans-IO Simplex BFT core and the deterministic simulator that attacks it.
//!
//! This page is the protocol specification. The code cites its rules as
//! `Spec R<n>` and its sections as `Spec §<name>`.
//!
//! # Model
//!
//! A fixed [`ValidatorSet`] per epoch; validator `i` has voting power `p_i`
//! and the total is `P`. Byzantine validators hold less than `P/3` of the
//! power. The network is asynchronous but eventually synchronous: after an
//! unknown global stabilisation time every message between honest validators
//! arrives within `δ`. Signatures are ed25519 and unforgeable.
//!
//! The core is a pure state machine, [`Core::handle`]`(now, Input) -> Vec<Output>`:
//! no I/O, no clock, no randomness, only ordered maps. Time is an argument.
//!
//! # §Quorums
//! A quorum is any set of signers with power `> 2P/3`
//! ([`ValidatorSet::is_quorum`]). Two quorums share power `> P/3`, hence
//! at least one honest validator.
//!
//! # §Leaders
//! The leader of view `v` is validator `v mod n` ([`ValidatorSet::leader`]).
//!
//! # §Signatures
//! A validator signs `domain || chain_id || height || view || digest`
//! (`domain || chain_id || view` for nullify), little-endian, with domains
//! `annal/propose/v1`, `annal/notarize/v1`, `annal/nullify/v1`,
//! `annal/finalize/v1` ([`signing_bytes`]). A block's digest is
//! `SHA-256(annal/block/v2 || chain_id || height || view || parent_view || parent || content)`,
//! where `content` is the payload's content digest ([`Payload`]): by default
//! `SHA-256(annal/payload/v1 || payload)`, or the application's own
//! collision-resistant digest of the bytes ([`Limits::payload_digest`](wire::Limits)).
//!
//! # §Certificates
//! A notarization, nullification or finalization of view `v` is a
//! [`Certificate`]: the subject, a signer bitmap, and the signatures of a
//! quorum on it, in signer order. [`Certificate::verify`] checks all of it. A
//! finalization certificate is what the node stores as a block's proof of
//! finality.
//!
//! # §Rules
//! Each validator is in one view at a time, starting (also after a restart) in
//! the view after its anchor, the last block it committed; a restarted
//! validator catches up through R6 and R10, and its signer keeps it from
//! re-signing anything (R9). Certificates live only in memory, but for the one
//! a validator's last finalize rests on, which its safety state keeps (R5);
//! what a crash loses everywhere is signed again (R5, R10).
//!
//! * **R1 (enter).** On entering view `v`, arm a timer for
//!   `timeout_base · 2^k` (capped at `timeout_max`), `k` being the number of
//!   views nullified in a row just before `v`.
//! * **R2 (propose).** The leader of `v` proposes a block extending the
//!   *parent for v*: the block of the highest view `p < v` that has a
//!   notarization (or finalization), such that every view strictly between
//!   `p` and `v` has a nullification, or the last finalized block if every
//!   view down to it is nullified. It asks the application for the payload.
//! * **R3 (notarize).** In view `v`, a validator that has not timed out
//!   notarizes the first proposal signed by the leader of `v` if (a) the
//!   proposal's parent is the notarized (or finalized) block of
//!   `parent_view` at height one less, (b) every view strictly between
//!   `parent_view` and `v` has a nullification, (c) `parent_view` is not
//!   below the last finalized view, and (d) the application says the block
//!   is valid. If (a)–(c) fail for lack of certificates it waits; if they
//!   fail otherwise, or (d) fails, it nullifies `v` at once.
//! * **R4 (certify).** A quorum of notarize (nullify, finalize) votes on one
//!   subject forms a notarization (nullification, finalization); the
//!   validator broadcasts it. Certificates from peers are verified and count
//!   the same.
//! * **R5 (finalize / nullify).** On a notarization of `v`, a validator that
//!   has not nullified `v` (or any later view) sends `finalize(v)`, keeping
//!   that notarization (its *justification*) in the safety state. On its
//!   timer in `v` it sends `nullify(v)`, and never sends `finalize(v)`
//!   afterwards; with it, `nullify(w)` for every view `w < v` that the walk
//!   to the parent for `v` (R2) crosses with no certificate at all — a view
//!   it left through R6 before its timer, whose nullification may have been
//!   lost with every memory that held it (at most `views_ahead_max` per
//!   timeout). S3 allows `nullify(w)` only if it allowed `nullify(v)`, so
//!   this changes nothing in the safety state.
//! * **R6 (advance).** Any certificate for a view `v ≥` the current view
//!   moves the validator to `v + 1` at once: the next proposal does not wait
//!   for finality, and certificates seen in later views are catch-up.
//! * **R7 (commit).** A finalization of block `b` at height `h` makes `b`
//!   and, through parent links, all its ancestors final. They are output in
//!   height order. Missing bodies are fetched by digest, asking the
//!   certificate's signers first and then every other validator; a body is
//!   accepted only if it hashes to a wanted digest, and a peer answers with
//!   the block and its ancestors (child first), so the requester wants those
//!   without asking again and re-asks only on its next timeout.
//! * **R8 (evidence).** Two verified messages from one validator that
//!   [`conflicting`] calls conflicting become an [`Evidence`] output.
//! * **R9 (persist).** Every signature passes through [`Signer`] (rules
//!   S1–S4 on its methods), which advances [`SafetyState`] first (for a
//!   finalize, together with its justification, R5);
//!   `handle` emits `PersistSafety` — and `PersistBlock` for a block this
//!   validator proposes or is about to notarize — before the messages
//!   carrying the signatures. The host makes them durable before sending
//!   anything after them.
//! * **R10 (repair).** On each timeout a validator re-sends its nullify, its
//!   last notarize and finalize while their views are not known final
//!   (re-signed from the safety state: identical bytes, so no conflict; after a
//!   restart they are the only copies), the latest finalization it knows and
//!   the certificates that justify the
//!   parent for its current view (R2: the notarization and the
//!   nullifications after it), and retries block fetches. A peer seen
//!   nullifying an older view is sent the same certificates directly (at
//!   most once per `timeout_base`). A validator restarting with a
//!   justification (R5) above its anchor takes it as a certificate first
//!   (R6), so it holds it and re-sends it: S3 forbids it ever to nullify that
//!   view, and its notarize there is lost once it notarized a later view
//!   (only the last one can be re-signed), so without the justification no
//!   certificate for that view might ever form again.
//!
//! # §Safety argument
//! *One notarized block per view.* Two notarizations of view `v` for
//! different blocks need two quorums, sharing an honest validator that
//! notarized twice in `v` — forbidden by S2.
//!
//! *A finalized view is never nullified.* A finalization of `v` holds a
//! quorum of finalize votes, so more than `P/3` honest power sent
//! `finalize(v)`; by S3/S4 none of them ever nullifies `v` (not even as an
//! older view in R5), leaving less than `2P/3` for a nullification.
//!
//! *Every later notarized block extends a finalized one.* Let `b` be
//! finalized in view `v`, and let `b'` be notarized in a view `v' > v`. Some
//! honest validator notarized `b'` after checking R3: `parent_view(b') ≥ v`
//! (else view `v` would need a nullification, which cannot exist) and the
//! parent is the notarized block of `parent_view(b')`. If that is `v`, the
//! parent is `b` (one notarized block per view); otherwise induct on the
//! parent's view. So two finalized blocks lie on one chain, and R7 commits
//! each height once: **agreement**. Restarting from the persisted
//! `SafetyState` cannot break S1–S4, because the state that allows a
//! signature is durable before the signature leaves (R9).
//!
//! # §Liveness argument
//! After stabilisation, honest validators enter views within `δ` of one
//! another (R4 broadcasts, R6, R10). If the leader of `v` is honest and the
//! timeout exceeds `3δ` plus the skew, its proposal reaches everyone within
//! `δ`, its parent check passes (the leader used certificates it broadcast),
//! notarize votes form a notarization within `2δ`, and finalize votes a
//! finalization within `3δ` of the proposal. If the leader is faulty the
//! view times out and a nullification forms from the honest quorum. A
//! nullification that crashes erased from every memory forms again: R6 can
//! move every honest validator past a view before its timer, but then each
//! one's next timeout nullifies that view too (R5), so no parent walk stays
//! blocked on it. The only views an honest validator can never nullify are
//! those up to its last finalize (S3); for those it holds, even across
//! crashes, the justification of that finalize (R5, R10), a certificate for a
//! view at or above them that moves every peer past them (R6). So in a view
//! that no certificate ends, every honest validator either nullifies it or
//! re-sends a certificate that ends it. Timeouts
//! double across consecutive nullified views (R1), so they eventually exceed
//! the real delay; round-robin leaders bring an honest leader within `f + 1`
//! views.
//!
//! # §Host contract
//! The host (the node; in tests the simulator) translates, and nothing else:
//!
//! * It performs the outputs of one `handle` call in order. `PersistSafety`
//!   and `PersistBlock` come first when present; they must be durable before
//!   any later `Broadcast` or `Send` leaves. A crash that loses them also
//!   loses those messages, which is safe: nothing signed under the lost state
//!   was seen. Persisted blocks let the validator serve, after a crash, the
//!   bodies it voted for: at least f + 1 honest validators stored every
//!   notarized block.
//! * It turns `Schedule { view, deadline }` into `Input::Timeout(view)` at the
//!   deadline, `NeedPayload` into `Input::Payload`, `Validate` into
//!   `Input::Validated`, and commits `Finalized` blocks with their
//!   certificate in the order given.
//! * It answers `BlockRequest`s for blocks in its store (committed or
//!   persisted; the block and its ancestors, child first); the core answers
//!   only for blocks it still holds in memory (`Config::blocks_retained`
//!   heights, at most `Config::blocks_retained_bytes` of payload).
//! * On restart it builds a new core from the last committed block and the
//!   certificate it was committed with (the anchor) and the last persisted
//!   [`SafetyState`]. The core starts in the view after the anchor — a view
//!   whose justification it holds — or, if the safety state's justification
//!   (R5) is of a later view, in the view after that; it catches up through R6
//!   and R10, and the signer refuses anything that could conflict with what
//!   was signed before. The safety state is 112 bytes plus that certificate.
//!
//! # §Validator sets
//! A core serves one epoch with one [`ValidatorSet`] supplied by the
//! application through [`Config`]. A certificate for height `h` is verified
//! against the set, and under the chain id, of `h`'s epoch (§Epochs).
//!
//! # §Epochs
//! The set changes only at fixed epoch boundaries, and the host hands
//! consensus over; the core knows nothing of it. With `E` heights per epoch,
//! epoch `e` holds heights `e·E + 1 ..= (e+1)·E`, and the set of epoch `e+1`
//! is fixed by the time the last block `B` of epoch `e` (height `(e+1)·E`) is
//! committed. Each epoch's core signs under its own chain id (epoch 0: the
//! genesis hash; then `SHA-256("annal/epoch/v1" || genesis hash || e LE)`),
//! so no vote of one epoch counts in another, and keeps its own
//! [`SafetyState`] (a restart within an epoch resumes that epoch's). Past
//! height `(e+1)·E` the old core orders only empty payloads, which the
//! application refuses otherwise and the leader proposes at once; they are
//! never committed, and exist only so that `B` can be finalized through a
//! descendant (R7) when its own view is not. When the host commits `B` it
//! drops the old core — the rest of that `handle` call's outputs with it —
//! and, if its key is in the new set, starts the next epoch's core with
//! anchor `{height: B, view: 0, digest: B}`, no anchor certificate, the new
//! set, chain id and a fresh safety state; every validator starts the epoch
//! in view 1. A node outside the new set stops voting and follows by sync; a
//! node entering it syncs the blocks up to `B` first. Governance bounds each
//! boundary's change (added + removed + changed power) by a third of the old
//! set's power. Nothing of an epoch's core survives the hand-over, so the
//! host must let a node that missed `B` catch up without it: sync must carry
//! the proof that `B` is final even when that proof is a finalization of an
//! empty descendant (with the empty blocks that link it to `B`), and a node
//! must sync as soon as peers show a height at or past its epoch's end, not
//! only when it is several heights behind (the simulator's
//! `validator_set_changes_under_chaos`; ADR 0002).
//!
//! # §Limits
//! Messages, payloads, bitmaps (at most [`VALIDATORS_MAX`] validators),
//! views ahead, pending fetches and retained blocks are bounded by [`Limits`]
//! and [`Config`]; decoding rejects anything over a limit or with trailing
//! bytes (see [`wire`]).

mod cert;
mod config;
mod error;
mod signer;
mod state;
#[cfg(test)]
mod state_tests;
mod types;
pub mod wire;

#[cfg(feature = "sim")]
pub mod sim;

pub use cert::{proposal_vote, verify_vote, Ed25519Verifier, Verifier};
pub use config::Config;
pub use error::Error;
pub use signer::{conflicting, SafetyState, Signer};
pub use state::{Core, Evidence, Input, Output};
pub use types::{
    raw_payload_digest, Anchor, Block, ChainId, Digest, Height, Payload, Validator, ValidatorIndex, ValidatorSet, View,
    VALIDATORS_MAX,
};
pub use wire::{signing_bytes, Certificate, Limits, Message, Proposal, Vote, VoteKind};
