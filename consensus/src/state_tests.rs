//! Unit tests of the rules in the crate docs, one core at a time.

use std::time::Duration;

use ed25519_dalek::{Signer as _, SigningKey};

use crate::*;

const CHAIN: ChainId = ChainId([9; 32]);
const GENESIS: Anchor = Anchor { height: Height(0), view: View(0), digest: [0; 32] };

fn key(i: usize) -> SigningKey {
    SigningKey::from_bytes(&[i as u8 + 1; 32])
}

fn set(n: usize) -> ValidatorSet {
    ValidatorSet::new((0..n).map(|i| Validator { key: key(i).verifying_key(), power: 1 }).collect())
}

fn core(me: usize, state: SafetyState) -> Core {
    let cfg = Config::new(CHAIN, set(4));
    let signer = Signer::new(key(me), ValidatorIndex(me as u32), CHAIN, state);
    Core::new(cfg, signer, GENESIS, None, Box::new(Ed25519Verifier))
}

fn vote(i: usize, kind: VoteKind, view: u64, height: u64, digest: Digest) -> Vote {
    let signature = key(i).sign(&signing_bytes(kind, &CHAIN, View(view), Height(height), &digest)).to_bytes();
    Vote { kind, view: View(view), height: Height(height), digest, signer: ValidatorIndex(i as u32), signature }
}

fn block(view: u64, height: u64, parent_view: u64, parent: Digest) -> Block {
    Block {
        height: Height(height),
        view: View(view),
        parent_view: View(parent_view),
        parent,
        payload: vec![view as u8].into(),
    }
}

fn proposal(b: Block) -> Message {
    let leader = (b.view.0 % 4) as usize;
    let signature = vote(leader, VoteKind::Propose, b.view.0, b.height.0, b.hash(&CHAIN)).signature;
    Message::Propose(Proposal { block: b, signature })
}

fn msg(c: &mut Core, from: usize, message: Message) -> Vec<Output> {
    c.handle(Duration::from_millis(10), Input::Message { from: ValidatorIndex(from as u32), message })
}

fn votes_sent(out: &[Output]) -> Vec<Vote> {
    out.iter()
        .filter_map(|o| match o {
            Output::Broadcast(Message::Vote(v)) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

fn certificate(kind: VoteKind, view: u64, height: u64, digest: Digest, who: &[usize]) -> Certificate {
    let votes: Vec<Vote> = who.iter().map(|&i| vote(i, kind, view, height, digest)).collect();
    Certificate::assemble(&set(4), votes.iter()).unwrap()
}

/// Goal: the good case — validate, notarize, certify, finalize — emits persist before every vote and commits with a valid certificate.
#[test]
fn good_case_finalizes_with_persist_first() {
    let mut c = core(0, SafetyState::default());
    let out = c.handle(Duration::ZERO, Input::Start);
    assert_eq!(out, vec![Output::Schedule { view: View(1), deadline: Duration::from_millis(1000) }]);
    let b = block(1, 1, 0, GENESIS.digest);
    let d = b.hash(&CHAIN);
    assert_eq!(msg(&mut c, 1, proposal(b.clone())), vec![Output::Validate { block: b.clone(), digest: d }]);
    let out = c.handle(Duration::from_millis(10), Input::Validated { digest: d, valid: true });
    assert!(matches!(out[0], Output::PersistSafety(SafetyState { notarized: View(1), .. })));
    assert_eq!(
        out[1],
        Output::PersistBlock { block: b.clone(), digest: d },
        "a block is persisted before voting for it"
    );
    assert_eq!(votes_sent(&out), vec![vote(0, VoteKind::Notarize, 1, 1, d)]);
    msg(&mut c, 1, Message::Vote(vote(1, VoteKind::Notarize, 1, 1, d)));
    let out = msg(&mut c, 2, Message::Vote(vote(2, VoteKind::Notarize, 1, 1, d)));
    assert!(matches!(out[0], Output::PersistSafety(SafetyState { finalized: View(1), .. })));
    assert_eq!(votes_sent(&out), vec![vote(0, VoteKind::Finalize, 1, 1, d)]);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Broadcast(Message::Certificate(c)) if c.kind == VoteKind::Notarize)));
    assert_eq!(c.view(), View(2), "notarization starts the next view");
    msg(&mut c, 1, Message::Vote(vote(1, VoteKind::Finalize, 1, 1, d)));
    let out = msg(&mut c, 3, Message::Vote(vote(3, VoteKind::Finalize, 1, 1, d)));
    let fin: Vec<_> = out
        .iter()
        .filter_map(|o| {
            if let Output::Finalized { block, digest, certificate } = o {
                Some((block, certificate, digest))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(fin.len(), 1);
    assert_eq!(fin[0].0, &b);
    assert_eq!(fin[0].2, &d, "the block's own hash comes with it");
    assert_eq!(fin[0].1.digest, d);
    assert_eq!(fin[0].1.verify(&CHAIN, &set(4), &Ed25519Verifier), Ok(()));
}

/// Goal: the leader asks for a payload on start and proposes and notarizes its own block, persisting first.
#[test]
fn leader_proposes_on_start() {
    let mut c = core(1, SafetyState::default());
    let out = c.handle(Duration::ZERO, Input::Start);
    assert!(out.contains(&Output::NeedPayload { view: View(1), height: Height(1), parent: GENESIS.digest }));
    let out = c.handle(Duration::ZERO, Input::Payload { view: View(1), payload: vec![1].into() });
    assert!(matches!(out[0], Output::PersistSafety(SafetyState { proposed: View(1), notarized: View(1), .. })));
    let b = block(1, 1, 0, GENESIS.digest);
    let digest = b.hash(&CHAIN);
    assert_eq!(out[1], Output::PersistBlock { block: b, digest }, "the body is persisted before it leaves");
    assert_eq!(out[2], proposal(block(1, 1, 0, GENESIS.digest)).into_broadcast());
    assert_eq!(votes_sent(&out).len(), 1);
}

impl Message {
    fn into_broadcast(self) -> Output {
        Output::Broadcast(self)
    }
}

/// Goal: after a timeout nullifies a view, a notarization of it yields no finalize vote, yet still advances the view.
#[test]
fn no_finalize_after_nullify() {
    let mut c = core(0, SafetyState::default());
    c.handle(Duration::ZERO, Input::Start);
    let out = c.handle(Duration::from_secs(1), Input::Timeout(View(1)));
    assert_eq!(votes_sent(&out), vec![vote(0, VoteKind::Nullify, 1, 0, [0; 32])]);
    assert!(out.iter().any(|o| matches!(o, Output::Schedule { view: View(1), .. })), "the timer re-arms");
    let d = block(1, 1, 0, GENESIS.digest).hash(&CHAIN);
    let out = msg(&mut c, 1, Message::Certificate(certificate(VoteKind::Notarize, 1, 1, d, &[1, 2, 3])));
    assert!(votes_sent(&out).is_empty());
    assert_eq!(c.view(), View(2));
}

/// Goal: a nullification quorum of votes skips the view and backs off the next timeout.
#[test]
fn nullification_skips_view_with_back_off() {
    let mut c = core(0, SafetyState::default());
    c.handle(Duration::ZERO, Input::Start);
    c.handle(Duration::from_secs(1), Input::Timeout(View(1)));
    msg(&mut c, 2, Message::Vote(vote(2, VoteKind::Nullify, 1, 0, [0; 32])));
    let out = msg(&mut c, 3, Message::Vote(vote(3, VoteKind::Nullify, 1, 0, [0; 32])));
    assert_eq!(c.view(), View(2));
    assert!(out.contains(&Output::Schedule { view: View(2), deadline: Duration::from_millis(2010) }), "{out:?}");
}

/// Goal: a proposal that skips a view waits for that view's nullification, then is validated.
#[test]
fn proposal_waits_for_nullification_of_skipped_views() {
    let mut c = core(0, SafetyState::default());
    c.handle(Duration::ZERO, Input::Start);
    msg(&mut c, 1, Message::Certificate(certificate(VoteKind::Nullify, 1, 0, [0; 32], &[1, 2, 3])));
    // Jump to view 3 through a nullification of 2 that arrives after the proposal for 3.
    let b = block(3, 1, 0, GENESIS.digest);
    msg(&mut c, 3, proposal(b.clone()));
    let out = msg(&mut c, 1, Message::Certificate(certificate(VoteKind::Nullify, 2, 0, [0; 32], &[1, 2, 3])));
    let digest = b.hash(&CHAIN);
    assert!(out.contains(&Output::Validate { block: b, digest }), "{out:?}");
}

/// Goal: a proposal whose parent contradicts the notarization of its parent view is refused and nullified at once.
#[test]
fn proposal_with_wrong_parent_is_nullified() {
    let mut c = core(0, SafetyState::default());
    c.handle(Duration::ZERO, Input::Start);
    let d1 = block(1, 1, 0, GENESIS.digest).hash(&CHAIN);
    msg(&mut c, 1, Message::Certificate(certificate(VoteKind::Notarize, 1, 1, d1, &[1, 2, 3])));
    let out = msg(&mut c, 2, proposal(block(2, 2, 1, [7; 32])));
    assert_eq!(votes_sent(&out), vec![vote(0, VoteKind::Nullify, 2, 0, [0; 32])]);
    let out = msg(&mut c, 2, proposal(block(2, 1, 0, GENESIS.digest)));
    assert!(matches!(&out[..], [Output::Evidence(_)]), "a second proposal is equivocation: {out:?}");
}

/// Goal: the application's "invalid" verdict nullifies the view instead of notarizing.
#[test]
fn invalid_block_is_nullified() {
    let mut c = core(0, SafetyState::default());
    c.handle(Duration::ZERO, Input::Start);
    let b = block(1, 1, 0, GENESIS.digest);
    msg(&mut c, 1, proposal(b.clone()));
    let out = c.handle(Duration::ZERO, Input::Validated { digest: b.hash(&CHAIN), valid: false });
    assert_eq!(votes_sent(&out), vec![vote(0, VoteKind::Nullify, 1, 0, [0; 32])]);
}

/// Goal: conflicting notarizes and a nullify-plus-finalize from one validator each yield evidence.
#[test]
fn equivocation_yields_evidence() {
    let mut c = core(0, SafetyState::default());
    c.handle(Duration::ZERO, Input::Start);
    msg(&mut c, 2, Message::Vote(vote(2, VoteKind::Notarize, 1, 1, [1; 32])));
    let out = msg(&mut c, 2, Message::Vote(vote(2, VoteKind::Notarize, 1, 1, [2; 32])));
    assert_eq!(
        out,
        vec![Output::Evidence(Evidence {
            first: vote(2, VoteKind::Notarize, 1, 1, [1; 32]),
            second: vote(2, VoteKind::Notarize, 1, 1, [2; 32])
        })]
    );
    msg(&mut c, 3, Message::Vote(vote(3, VoteKind::Nullify, 1, 0, [0; 32])));
    let out = msg(&mut c, 3, Message::Vote(vote(3, VoteKind::Finalize, 1, 1, [1; 32])));
    assert!(matches!(&out[..], [Output::Evidence(_)]), "{out:?}");
}

/// Goal: a vote with a bad signature, from an unknown signer, and a certificate short of quorum are rejected.
#[test]
fn bad_signatures_are_rejected() {
    let mut c = core(0, SafetyState::default());
    c.handle(Duration::ZERO, Input::Start);
    let mut v = vote(2, VoteKind::Notarize, 1, 1, [1; 32]);
    v.signature[3] ^= 1;
    assert!(matches!(
        &msg(&mut c, 2, Message::Vote(v))[..],
        [Output::Rejected { error: Error::BadSignature { .. }, .. }]
    ));
    let mut v = vote(2, VoteKind::Notarize, 1, 1, [1; 32]);
    v.signer = ValidatorIndex(4);
    assert!(matches!(
        &msg(&mut c, 2, Message::Vote(v))[..],
        [Output::Rejected { error: Error::SignerOutOfRange { .. }, .. }]
    ));
    let short = certificate(VoteKind::Nullify, 1, 0, [0; 32], &[1, 2]);
    assert!(matches!(
        &msg(&mut c, 2, Message::Certificate(short))[..],
        [Output::Rejected { error: Error::QuorumNotReached { .. }, .. }]
    ));
    assert_eq!(c.view(), View(1));
}

/// Goal: a finalization from a later view catches a node up: it fetches the missing chain (retrying on timeouts) and commits it in height order.
#[test]
fn catch_up_from_finalization_fetches_ancestors() {
    let mut c = core(0, SafetyState::default());
    c.handle(Duration::ZERO, Input::Start);
    let b1 = block(1, 1, 0, GENESIS.digest);
    let b2 = block(2, 2, 1, b1.hash(&CHAIN));
    let d2 = b2.hash(&CHAIN);
    let out = msg(&mut c, 1, Message::Certificate(certificate(VoteKind::Finalize, 2, 2, d2, &[1, 2, 3])));
    assert_eq!(c.view(), View(3));
    assert!(out.iter().any(|o| matches!(o, Output::Send { message: Message::BlockRequest(d), .. } if *d == d2)));
    let out = msg(&mut c, 1, Message::BlockResponse(b2.clone()));
    let asks_b1 = |out: &[Output]| {
        out.iter().any(|o| matches!(o, Output::Send { message: Message::BlockRequest(d), .. } if *d == b1.hash(&CHAIN)))
    };
    assert!(!asks_b1(&out), "the peer sends ancestors behind the block; no second request at once");
    let out = c.handle(Duration::from_secs(5), Input::Timeout(View(3)));
    assert!(asks_b1(&out), "an ancestor that did not follow is requested again on the next timeout");
    let out = msg(&mut c, 1, Message::BlockResponse(b1.clone()));
    let heights: Vec<_> = out
        .iter()
        .filter_map(|o| if let Output::Finalized { block, .. } = o { Some(block.height) } else { None })
        .collect();
    assert_eq!(heights, vec![Height(1), Height(2)]);
    assert_eq!(c.committed().digest, d2);
    assert!(
        msg(&mut c, 1, Message::BlockResponse(block(9, 9, 8, [0; 32]))).is_empty(),
        "unsolicited bodies are ignored"
    );
}

/// Goal: a core restarted from the persisted safety state will not notarize a second block in a view it voted in.
#[test]
fn restart_from_safety_state_cannot_double_vote() {
    let mut c = core(0, SafetyState::default());
    c.handle(Duration::ZERO, Input::Start);
    let b = block(1, 1, 0, GENESIS.digest);
    msg(&mut c, 1, proposal(b.clone()));
    let out = c.handle(Duration::ZERO, Input::Validated { digest: b.hash(&CHAIN), valid: true });
    let Output::PersistSafety(state) = out[0].clone() else { panic!("persist first: {out:?}") };
    let mut r = core(0, SafetyState::decode(&state.encode()).unwrap());
    r.handle(Duration::ZERO, Input::Start);
    let other = Block { payload: vec![42].into(), ..b };
    msg(&mut r, 1, proposal(other.clone()));
    let out = r.handle(Duration::ZERO, Input::Validated { digest: other.hash(&CHAIN), valid: true });
    assert!(votes_sent(&out).is_empty(), "{out:?}");
}

/// Validator 0's core in view 3, views 1 and 2 nullified by validators 1 to 3.
fn core_past_two_nullified_views() -> Core {
    let mut c = core(0, SafetyState::default());
    c.handle(Duration::ZERO, Input::Start);
    msg(&mut c, 1, Message::Certificate(certificate(VoteKind::Nullify, 1, 0, [0; 32], &[1, 2, 3])));
    msg(&mut c, 1, Message::Certificate(certificate(VoteKind::Nullify, 2, 0, [0; 32], &[1, 2, 3])));
    c
}

/// Goal: a node nullifying an old view is sent the certificates that bring it to the current view.
#[test]
fn laggard_is_helped() {
    let mut c = core_past_two_nullified_views();
    let out = msg(&mut c, 3, Message::Vote(vote(3, VoteKind::Nullify, 1, 0, [0; 32])));
    let sent: Vec<_> = out
        .iter()
        .filter_map(|o| {
            if let Output::Send { to, message: Message::Certificate(c) } = o {
                Some((to.0, c.view.0))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(sent, vec![(3, 1), (3, 2)]);
}

/// Goal (review, session 30): a nullify for an old view whose signature does not verify
/// helps no one (relayed, a forged one made every node broadcast) and is rejected.
#[test]
fn a_forged_laggards_nullify_is_rejected_not_helped() {
    let mut c = core_past_two_nullified_views();
    let mut forged = vote(3, VoteKind::Nullify, 1, 0, [0; 32]);
    forged.signature[0] ^= 1;
    let out = msg(&mut c, 3, Message::Vote(forged));
    assert!(!out.iter().any(|o| matches!(o, Output::Send { .. })), "{out:?}");
    assert!(out.iter().any(|o| matches!(o, Output::Rejected { .. })), "{out:?}");
}

/// Goal: votes up to `views_ahead_max` views ahead are counted and one view more is dropped.
#[test]
fn votes_beyond_views_ahead_max_are_dropped() {
    let mut c = core(0, SafetyState::default());
    c.handle(Duration::ZERO, Input::Start);
    let ahead = Config::new(CHAIN, set(4)).views_ahead_max;
    let edge = 1 + ahead;
    for who in [1, 2, 3] {
        msg(&mut c, who, Message::Vote(vote(who, VoteKind::Nullify, edge + 1, 0, [0; 32])));
    }
    assert_eq!(c.view(), View(1), "a quorum one view past the window is ignored");
    for who in [1, 2, 3] {
        msg(&mut c, who, Message::Vote(vote(who, VoteKind::Nullify, edge, 0, [0; 32])));
    }
    assert_eq!(c.view(), View(edge + 1), "a quorum at the edge of the window forms a nullification");
}

/// Goal: a missing body at a higher finalized height does not hold back lower finalized blocks whose chain is complete.
#[test]
fn lower_finalized_blocks_commit_while_a_higher_body_is_missing() {
    let mut c = core(0, SafetyState::default());
    c.handle(Duration::ZERO, Input::Start);
    let b1 = block(1, 1, 0, GENESIS.digest);
    let b2 = block(2, 2, 1, b1.hash(&CHAIN));
    let b3 = block(3, 3, 2, b2.hash(&CHAIN));
    msg(&mut c, 1, Message::Certificate(certificate(VoteKind::Finalize, 1, 1, b1.hash(&CHAIN), &[1, 2, 3])));
    msg(&mut c, 2, proposal(b2.clone()));
    msg(&mut c, 1, Message::Certificate(certificate(VoteKind::Finalize, 2, 2, b2.hash(&CHAIN), &[1, 2, 3])));
    let out = msg(&mut c, 1, Message::Certificate(certificate(VoteKind::Finalize, 3, 3, b3.hash(&CHAIN), &[1, 2, 3])));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Send { message: Message::BlockRequest(d), .. } if *d == b3.hash(&CHAIN))));
    let out = msg(&mut c, 1, Message::BlockResponse(b1));
    let heights: Vec<_> = out
        .iter()
        .filter_map(|o| if let Output::Finalized { block, .. } = o { Some(block.height) } else { None })
        .collect();
    assert_eq!(heights, vec![Height(1), Height(2)], "{out:?}");
}

/// Goal: a validator restarted after finalizing a view re-sends the identical finalize vote on
/// timeout, so the finalization can still form; it never nullifies that view.
#[test]
fn restarted_validator_resends_its_last_votes() {
    let mut c = core(0, SafetyState::default());
    c.handle(Duration::ZERO, Input::Start);
    let b = block(1, 1, 0, GENESIS.digest);
    let d = b.hash(&CHAIN);
    msg(&mut c, 1, proposal(b.clone()));
    c.handle(Duration::ZERO, Input::Validated { digest: d, valid: true });
    msg(&mut c, 1, Message::Vote(vote(1, VoteKind::Notarize, 1, 1, d)));
    let out = msg(&mut c, 2, Message::Vote(vote(2, VoteKind::Notarize, 1, 1, d)));
    let Some(Output::PersistSafety(state)) = out.first().cloned() else { panic!("persist first: {out:?}") };
    assert_eq!(state.finalized, View(1));
    let mut r = core(0, state);
    r.handle(Duration::ZERO, Input::Start);
    assert_eq!(r.view(), View(2), "the notarization its finalize rests on moves it past view 1");
    let out = r.handle(Duration::from_secs(1), Input::Timeout(View(2)));
    let sent = votes_sent(&out);
    assert!(sent.contains(&vote(0, VoteKind::Finalize, 1, 1, d)), "{sent:?}");
    assert!(sent.contains(&vote(0, VoteKind::Notarize, 1, 1, d)), "{sent:?}");
    assert!(!sent.iter().any(|v| v.kind == VoteKind::Nullify && v.view == View(1)), "a finalized view: {sent:?}");
    msg(&mut r, 1, Message::Vote(vote(1, VoteKind::Finalize, 1, 1, d)));
    let out = msg(&mut r, 2, Message::Vote(vote(2, VoteKind::Finalize, 1, 1, d)));
    assert!(
        out.iter().any(|o| matches!(o, Output::Broadcast(Message::Certificate(c))
            if c.kind == VoteKind::Finalize && c.view == View(1))),
        "the re-sent vote completes the finalization: {out:?}"
    );
}

/// Goal: a validator that finalized a view and then notarized a later one, and crashed before any
/// of it left, can still get its peers past that view (seed 25951). S3 forbids it to nullify the
/// view, its notarize there can no longer be re-signed (only the last one is kept), and a peer
/// that nullified the view cannot finalize it: only the notarization it kept with its finalize
/// vote in the safety state (R10) ends the view.
#[test]
fn finalized_view_stays_certifiable_after_restart() {
    let mut c = core(0, SafetyState::default());
    c.handle(Duration::ZERO, Input::Start);
    let b1 = block(1, 1, 0, GENESIS.digest);
    let d1 = b1.hash(&CHAIN);
    msg(&mut c, 1, proposal(b1));
    c.handle(Duration::ZERO, Input::Validated { digest: d1, valid: true });
    msg(&mut c, 1, Message::Vote(vote(1, VoteKind::Notarize, 1, 1, d1)));
    msg(&mut c, 3, Message::Vote(vote(3, VoteKind::Notarize, 1, 1, d1)));
    assert_eq!(c.view(), View(2), "notarized (votes 0, 1, 3) and finalized view 1");
    let b2 = block(2, 2, 1, d1);
    msg(&mut c, 2, proposal(b2.clone()));
    c.handle(Duration::ZERO, Input::Validated { digest: b2.hash(&CHAIN), valid: true });
    let state = c.safety_state();
    assert_eq!((state.finalized, state.notarized), (View(1), View(2)));

    // Validator 0 crashes before any of that leaves; it restarts from its safety state at genesis.
    let mut r = core(0, SafetyState::decode(&state.encode()).unwrap());
    r.handle(Duration::ZERO, Input::Start);
    let out = r.handle(Duration::from_secs(1), Input::Timeout(r.view()));
    let sent = votes_sent(&out);
    assert!(!sent.iter().any(|v| v.view == View(1) && v.kind != VoteKind::Finalize), "S2, S3: {sent:?}");
    let notarization = out.iter().find_map(|o| match o {
        Output::Broadcast(Message::Certificate(c)) if c.kind == VoteKind::Notarize && c.view == View(1) => {
            Some(c.clone())
        }
        _ => None,
    });
    let notarization = notarization.unwrap_or_else(|| panic!("view 1 can be certified by nothing else: {out:?}"));

    // Validator 2 saw neither the notarization nor any vote for view 1, and nullified it.
    let mut p = core(2, SafetyState::default());
    p.handle(Duration::ZERO, Input::Start);
    p.handle(Duration::from_secs(1), Input::Timeout(View(1)));
    assert_eq!(p.safety_state().nullified, View(1));
    msg(&mut p, 0, Message::Certificate(notarization));
    assert_eq!(p.view(), View(2), "the kept notarization ends view 1 for the peer");
}

/// Goal: a view skipped (R6) without any certificate — its nullification lost with every memory that
/// held it, as after restarts — is nullified again on the next timeout, so the parent walk (R2) can
/// cross it and the next leader proposes; without that every later view is nullified forever (seed 1561).
#[test]
fn view_skipped_without_certificate_is_nullified_again() {
    let null = |view: u64, who: usize| Message::Vote(vote(who, VoteKind::Nullify, view, 0, [0; 32]));
    // Validator 1 leads view 5. It nullified view 1 before its crash; every copy of that certificate is gone.
    let mut c = core(1, SafetyState { nullified: View(1), ..SafetyState::default() });
    c.handle(Duration::ZERO, Input::Start);
    msg(&mut c, 2, Message::Certificate(certificate(VoteKind::Nullify, 2, 0, [0; 32], &[0, 2, 3])));
    msg(&mut c, 2, Message::Certificate(certificate(VoteKind::Nullify, 3, 0, [0; 32], &[0, 2, 3])));
    assert_eq!(c.view(), View(4), "later certificates skip view 1 (R6)");
    let out = c.handle(Duration::from_secs(9), Input::Timeout(View(4)));
    let sent = votes_sent(&out);
    assert!(sent.contains(&vote(1, VoteKind::Nullify, 4, 0, [0; 32])), "{sent:?}");
    assert!(sent.contains(&vote(1, VoteKind::Nullify, 1, 0, [0; 32])), "the uncertified view 1 again: {sent:?}");
    assert!(!sent.iter().any(|v| v.kind == VoteKind::Nullify && [2, 3].contains(&v.view.0)), "{sent:?}");
    assert_eq!(c.safety_state().nullified, View(4), "re-nullifying an older view changes no safety state");
    msg(&mut c, 2, null(4, 2));
    let out = msg(&mut c, 3, null(4, 3));
    assert_eq!(c.view(), View(5));
    assert!(!out.iter().any(|o| matches!(o, Output::NeedPayload { .. })), "view 1 still blocks the parent: {out:?}");
    msg(&mut c, 2, null(1, 2));
    let out = msg(&mut c, 3, null(1, 3));
    let want = Output::NeedPayload { view: View(5), height: Height(1), parent: GENESIS.digest };
    assert!(out.contains(&want), "the re-formed nullification unblocks the proposal: {out:?}");
}
