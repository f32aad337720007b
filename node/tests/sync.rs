//! Sync answers from a peer are verified before anything is committed: the
//! blocks must chain to this node's tip and end in a finalization signed by
//! more than 2/3 of the validator power. A real store, a real `App`.

use std::sync::Arc;

use annal_consensus::{
    signing_bytes, Block, Certificate, ChainId, Height, Message, ValidatorIndex, View, Vote, VoteKind,
};
use annal_ledger::codec;
use annal_ledger::genesis::{Genesis, Params, Validator};
use annal_ledger::keys::SecretKey;
use annal_ledger::record::RecordId;
use annal_ledger::store::{Store, StoreOptions};
use annal_node::app::{epoch_chain, App, Effects, SyncAnswer};
use annal_node::config::Limits;
use annal_node::history;
use annal_node::net::{PeerId, Verdict};
use annal_node::shared::Shared;
use annal_node::wire::{BlockBody, CompactProposal, Envelope, EpochTail, SyncBlock, SyncRequest, SyncResponse};
use ed25519_dalek::{Signer as _, SigningKey};

fn genesis() -> Genesis {
    Genesis {
        chain_id: "annal-sync-test".into(),
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
    }
}

fn set(g: &Genesis) -> annal_consensus::ValidatorSet {
    annal_consensus::ValidatorSet::new(
        g.validators
            .iter()
            .map(|v| annal_consensus::Validator {
                key: ed25519_dalek::VerifyingKey::from_bytes(&v.consensus_key.0).unwrap(),
                power: v.power,
            })
            .collect(),
    )
}

/// What `app` answers `request` with: on its loop, or built from its store as the loop has it built off it.
fn ask(app: &App, request: SyncRequest) -> SyncResponse {
    let bytes = match app.answer_sync(&codec::encode(&request)).unwrap() {
        SyncAnswer::Ready(bytes) => bytes,
        SyncAnswer::History(request) => {
            let (shared, limits) = app.history_context();
            history::answer(&shared, &limits, request, 16 << 20).unwrap()
        }
    };
    codec::decode(&bytes, 16 << 20).unwrap()
}

/// An empty block at `height` on `parent`, and a finalization of it signed by validators `signers` (0-based).
fn final_block(g: &Genesis, height: u64, parent: [u8; 32], signers: &[u8]) -> (Block, Certificate) {
    let chain = ChainId(g.hash());
    let block = Block {
        height: Height(height),
        view: View(height),
        parent_view: View(height - 1),
        parent,
        payload: BlockBody::payload_of_bytes(
            BlockBody { time_ms: g.genesis_time_ms + height, records: vec![] }.to_bytes(),
        ),
    };
    let digest = block.hash(&chain);
    let votes: Vec<Vote> = signers
        .iter()
        .map(|&i| {
            let bytes = signing_bytes(VoteKind::Finalize, &chain, View(height), Height(height), &digest);
            Vote {
                kind: VoteKind::Finalize,
                view: View(height),
                height: Height(height),
                digest,
                signer: ValidatorIndex(i as u32),
                signature: SigningKey::from_bytes(&[i + 1; 32]).sign(&bytes).to_bytes(),
            }
        })
        .collect();
    (block, Certificate::assemble(&set(g), votes.iter()).unwrap())
}

fn answer(entries: &[(Block, Certificate)]) -> Vec<u8> {
    codec::encode(&SyncResponse::Blocks(
        entries
            .iter()
            .map(|(b, c)| SyncBlock {
                block: Message::BlockResponse(b.clone()).encode(),
                finalization: Message::Certificate(c.clone()).encode(),
                certificate: None,
                tail: Default::default(),
            })
            .collect(),
    ))
}

/// A non-voting node on a fresh store in its own folder: the folder, its shared state and its loop.
fn follower(name: &str, g: &Genesis) -> (std::path::PathBuf, Arc<Shared>, App) {
    node(name, g, None)
}

/// A node on a fresh store in its own folder, voting with `consensus_key` if given.
fn node(name: &str, g: &Genesis, consensus_key: Option<SecretKey>) -> (std::path::PathBuf, Arc<Shared>, App) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&dir.join("store"), g.hash(), StoreOptions::default()).unwrap();
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let shared = Arc::new(Shared::new(g.clone(), Limits::default(), None, store, tx));
    let app = App::new(shared.clone(), dir.clone(), consensus_key).unwrap();
    (dir, shared, app)
}

/// A compact proposal at height 1 for `view`, naming `digest` and `ids` record ids, with
/// validator `signer`'s (0-based) signature over `signed` as its digest, as gossip bytes.
fn compact(g: &Genesis, view: u64, ids: usize, signer: u8, digest: [u8; 32], signed: [u8; 32]) -> Vec<u8> {
    let chain = ChainId(g.hash());
    let bytes = signing_bytes(VoteKind::Propose, &chain, View(view), Height(1), &signed);
    let proposal = CompactProposal {
        height: 1,
        view,
        parent_view: 0,
        parent: g.hash(),
        digest,
        time_ms: g.genesis_time_ms + 1,
        ids: vec![RecordId([2; 32]); ids],
        signature: SigningKey::from_bytes(&[signer + 1; 32]).sign(&bytes).to_bytes(),
    };
    codec::encode(&Envelope::Proposal { seq: view, proposal })
}

/// Goal: a chain that does not link to the tip, or whose finalization lacks a quorum or is signed
/// for another block, commits nothing; a proper one commits every block it covers.
#[test]
fn only_verified_chains_from_the_tip_are_committed() {
    let g = genesis();
    let (dir, shared, mut app) = follower("annal-sync", &g);
    let peer = PeerId::random();
    let chain = ChainId(g.hash());
    let height = || shared.store().tip().height.0;
    let mut fx = Effects::default();

    let (b1, c1) = final_block(&g, 1, g.hash(), &[0, 1, 2]);
    let (b2, c2) = final_block(&g, 2, b1.hash(&chain), &[0, 1, 2]);

    // Does not start at the tip.
    app.apply_sync(peer, &answer(&[(b2.clone(), c2.clone())]), &mut fx).unwrap();
    assert_eq!(height(), 0);
    // Two of four signers: no quorum.
    let (_, weak) = final_block(&g, 1, g.hash(), &[0, 1]);
    app.apply_sync(peer, &answer(&[(b1.clone(), weak)]), &mut fx).unwrap();
    assert_eq!(height(), 0);
    // A quorum's finalization of a different block.
    app.apply_sync(peer, &answer(&[(b1.clone(), c2.clone())]), &mut fx).unwrap();
    assert_eq!(height(), 0);
    // A broken signature.
    let mut forged = c1.clone();
    forged.signatures[0][0] ^= 1;
    app.apply_sync(peer, &answer(&[(b1.clone(), forged)]), &mut fx).unwrap();
    assert_eq!(height(), 0);
    // Garbage.
    app.apply_sync(peer, b"not a sync answer", &mut fx).unwrap();
    assert_eq!(height(), 0);

    // The real chain: both blocks committed.
    app.apply_sync(peer, &answer(&[(b1, c1), (b2, c2)]), &mut fx).unwrap();
    assert_eq!(height(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Goal (review, session 30): a block's own finalization in a sync answer is kept (and so
/// served to the next node) only if it verifies: a forged one on a block before the last
/// is replaced by the last block's, which makes it final too.
#[test]
fn a_forged_finalization_before_the_last_block_is_not_kept() {
    let g = genesis();
    let (dir, shared, mut app) = follower("annal-sync-forged", &g);
    let chain = ChainId(g.hash());
    let (b1, c1) = final_block(&g, 1, g.hash(), &[0, 1, 2]);
    let (b2, c2) = final_block(&g, 2, b1.hash(&chain), &[0, 1, 2]);
    let mut forged = c1.clone();
    forged.signatures[0][0] ^= 1;
    app.apply_sync(PeerId::random(), &answer(&[(b1, forged), (b2, c2.clone())]), &mut Effects::default()).unwrap();
    assert_eq!(shared.store().tip().height.0, 2, "both blocks are final through the second's finalization");
    let set = set(&g);
    for height in [1, 2] {
        let link: annal_node::wire::Link =
            codec::decode(&shared.store().app_meta(&annal_node::wire::link_key(height)).unwrap().unwrap(), 1 << 20)
                .unwrap();
        let Ok(Message::Certificate(kept)) = Message::decode(&link.finalization, &annal_consensus::Limits::default())
        else {
            panic!("height {height}: no certificate kept");
        };
        kept.verify(&chain, &set, &annal_consensus::Ed25519Verifier).unwrap_or_else(|e| panic!("height {height}: {e}"));
        assert_eq!(kept, c2, "height {height} keeps the second block's finalization");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Goal (review, session 30): no more of a sync answer is looked at than an honest one
/// holds: blocks past the 128 asked for and the 64 that may follow are dropped, and
/// certificates past 1,025 are not checked.
#[test]
fn a_sync_answer_is_read_no_further_than_an_honest_one_goes() {
    let g = genesis();
    let (dir, shared, mut app) = follower("annal-sync-bounded", &g);
    let chain = ChainId(g.hash());
    let mut entries = Vec::new();
    let mut parent = g.hash();
    for h in 1..=200 {
        let (b, c) = final_block(&g, h, parent, &[0, 1, 2]);
        parent = b.hash(&chain);
        entries.push((b, c));
    }
    app.apply_sync(PeerId::random(), &answer(&entries), &mut Effects::default()).unwrap();
    assert_eq!(shared.store().tip().height.0, 192, "128 asked for and 64 more at most");

    // Height 1 is uncertified (the answer carried no checkpoint certificates): a valid
    // certificate behind 1,025 junk entries is not looked at; alone it is stored.
    let header = shared.store().header(annal_ledger::block::Height(1)).unwrap().unwrap();
    let keys: Vec<SecretKey> = (1..=3u8).map(|i| SecretKey::from_seed([i; 32])).collect();
    let signers: Vec<(usize, &SecretKey)> = keys.iter().enumerate().collect();
    let cert = annal_ledger::block::Certificate::sign(&header, &g.validator_set(), &signers).to_bytes();
    let certificates = |list: Vec<Vec<u8>>| codec::encode(&SyncResponse::Certificates(list));
    let mut padded = vec![b"junk".to_vec(); 1025];
    padded.push(cert.clone());
    app.apply_sync(PeerId::random(), &certificates(padded), &mut Effects::default()).unwrap();
    assert!(shared.store().certificate(annal_ledger::block::Height(1)).unwrap().is_none());
    app.apply_sync(PeerId::random(), &certificates(vec![cert]), &mut Effects::default()).unwrap();
    assert!(shared.store().certificate(annal_ledger::block::Height(1)).unwrap().is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Goal: an epoch's last block finalized only through the empty blocks after it (the old
/// epoch's cores, which held them, are gone) is committed from a sync answer that carries
/// those blocks, and only when they are empty, consecutive and end at the finalized block.
#[test]
fn an_epochs_last_block_final_through_its_empty_tail_is_synced() {
    let mut g = genesis();
    g.params.epoch_blocks = 2;
    let (dir, shared, mut app) = follower("annal-sync-tail", &g);
    let peer = PeerId::random();
    let chain = ChainId(g.hash());
    let height = || shared.store().tip().height.0;
    let mut fx = Effects::default();

    let (b1, c1) = final_block(&g, 1, g.hash(), &[0, 1, 2]);
    let (b2, _) = final_block(&g, 2, b1.hash(&chain), &[0, 1, 2]);
    let (b3, _) = final_block(&g, 3, b2.hash(&chain), &[0, 1, 2]);
    let (b4, c4) = final_block(&g, 4, b3.hash(&chain), &[0, 1, 2]);
    let tail_of = |blocks: &[&Block]| EpochTail {
        blocks: blocks.iter().map(|b| Message::BlockResponse((*b).clone()).encode()).collect(),
    };
    let entry = |b: &Block, c: &Certificate, tail: EpochTail| SyncBlock {
        block: Message::BlockResponse(b.clone()).encode(),
        finalization: Message::Certificate(c.clone()).encode(),
        certificate: None,
        tail,
    };
    let send = |app: &mut App, fx: &mut Effects, entries: Vec<SyncBlock>| {
        app.apply_sync(peer, &codec::encode(&SyncResponse::Blocks(entries)), fx).unwrap();
    };

    // Without the tail, block 2 (the epoch's last) cannot be shown final: only block 1 commits.
    send(&mut app, &mut fx, vec![entry(&b1, &c1, EpochTail::default()), entry(&b2, &c4, EpochTail::default())]);
    assert_eq!(height(), 1);
    // A tail with a gap, or one carrying records, proves nothing.
    send(&mut app, &mut fx, vec![entry(&b2, &c4, tail_of(&[&b4]))]);
    assert_eq!(height(), 1);
    let mut full = b3.clone();
    full.payload = BlockBody::payload_of_bytes(
        BlockBody { time_ms: g.genesis_time_ms + 3, records: vec![vec![1, 2, 3]] }.to_bytes(),
    );
    let (b4_on_full, c4_on_full) = final_block(&g, 4, full.hash(&chain), &[0, 1, 2]);
    send(&mut app, &mut fx, vec![entry(&b2, &c4_on_full, tail_of(&[&full, &b4_on_full]))]);
    assert_eq!(height(), 1);
    // The empty blocks 3 and 4, ending at the finalized block: block 2 commits, and its tail is kept to serve.
    send(&mut app, &mut fx, vec![entry(&b2, &c4, tail_of(&[&b3, &b4]))]);
    assert_eq!(height(), 2);
    let SyncResponse::Blocks(served) = ask(&app, SyncRequest::Blocks { from: 2, max: 1 }) else {
        panic!("blocks asked, blocks answered")
    };
    assert_eq!(served[0].tail, tail_of(&[&b3, &b4]));

    // Now in epoch 1, the old epoch's leaders may still propose its empty tail
    // (here block 3, view 3, led by validator 3 under epoch 0's chain id): honest,
    // ignored without blame. The same block signed by another validator is a forgery.
    let tail_proposal = |signer: u8| {
        let bytes = signing_bytes(VoteKind::Propose, &chain, View(3), Height(3), &b3.hash(&chain));
        let proposal = CompactProposal {
            height: 3,
            view: 3,
            parent_view: 2,
            parent: b2.hash(&chain),
            digest: b3.hash(&chain),
            time_ms: g.genesis_time_ms + 3,
            ids: vec![],
            signature: SigningKey::from_bytes(&[signer + 1; 32]).sign(&bytes).to_bytes(),
        };
        codec::encode(&Envelope::Proposal { seq: 3, proposal })
    };
    assert_eq!(app.on_consensus_gossip(&peer, &tail_proposal(3), &mut fx).unwrap(), Verdict::Ignore);
    assert_eq!(app.on_consensus_gossip(&peer, &tail_proposal(2), &mut fx).unwrap(), Verdict::Reject);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Goal (ADR 0008): a block request is answered by the one peer asked, from
/// its store for committed blocks, byte for byte; an unknown digest or a
/// proposal this node never made gets an empty answer, not an error.
#[test]
fn block_and_proposal_requests_are_answered_from_the_store() {
    let g = genesis();
    let (dir, _shared, mut app) = follower("annal-block-request", &g);
    let chain = ChainId(g.hash());
    let mut fx = Effects::default();
    let (b1, c1) = final_block(&g, 1, g.hash(), &[0, 1, 2]);
    let (b2, c2) = final_block(&g, 2, b1.hash(&chain), &[0, 1, 2]);
    app.apply_sync(PeerId::random(), &answer(&[(b1.clone(), c1), (b2.clone(), c2)]), &mut fx).unwrap();

    for b in [&b1, &b2] {
        let SyncResponse::Block(Some(bytes)) = ask(&app, SyncRequest::Block { digest: b.hash(&chain) }) else {
            panic!("block {} not served", b.height.0)
        };
        assert_eq!(bytes, Message::BlockResponse(b.clone()).encode(), "block {} as committed", b.height.0);
    }
    assert_eq!(ask(&app, SyncRequest::Block { digest: [7; 32] }), SyncResponse::Block(None));
    assert_eq!(ask(&app, SyncRequest::Proposal { height: 3, view: 3 }), SyncResponse::Proposal(None));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Goal (ADR 0004, ADR 0008): gossip names no author, so a compact proposal
/// is judged by its own signature, whoever relays it: one not signed by its
/// view's leader over the digest it names, or naming more records than a
/// block may hold, is refused before any lookup; the leader's own, relayed by
/// a peer that is no validator, is taken (it waits for its records). A block
/// request or answer arriving on gossip is dropped unanswered. A proposal of a
/// later epoch than the node's is ignored, not refused: it cannot be judged yet.
#[test]
fn compact_proposals_are_judged_by_the_leaders_signature_not_the_relay() {
    let g = genesis();
    let (dir, _shared, mut app) = follower("annal-compact-refused", &g);
    let mut fx = Effects::default();
    // Any admitted peer may relay: this one is no validator.
    let relay = PeerId::random();
    // `signer` (0-based; genesis() gives it the seed index + 1) signs `signed` as the proposal's digest.
    let proposal =
        |view: u64, ids: usize, signer: u8, signed: [u8; 32]| compact(&g, view, ids, signer, [1; 32], signed);
    // Validator 1 leads view 1 (round-robin).
    let verdict = app.on_consensus_gossip(&relay, &proposal(1, 1, 2, [1; 32]), &mut fx).unwrap();
    assert_eq!(verdict, Verdict::Reject, "signed by validator 2 in view 1, which validator 1 leads");
    let verdict = app.on_consensus_gossip(&relay, &proposal(1, 1, 1, [9; 32]), &mut fx).unwrap();
    assert_eq!(verdict, Verdict::Reject, "the leader's signature over another digest");
    let too_many = Params::default().block_records_max + 1;
    let verdict = app.on_consensus_gossip(&relay, &proposal(1, too_many, 1, [1; 32]), &mut fx).unwrap();
    assert_eq!(verdict, Verdict::Reject, "{too_many} ids");
    // The leader's own, naming a record this node does not hold: not relayed, not blamed.
    let verdict = app.on_consensus_gossip(&relay, &proposal(1, 1, 1, [1; 32]), &mut fx).unwrap();
    assert_eq!(verdict, Verdict::Ignore);
    assert!(fx.fetch.is_empty(), "a node that does not vote asks for no proposal");
    for message in [Message::BlockRequest([4; 32]), Message::BlockResponse(final_block(&g, 1, g.hash(), &[0]).0)] {
        let data = codec::encode(&Envelope::Consensus { seq: 9, message: message.encode() });
        assert_eq!(app.on_consensus_gossip(&relay, &data, &mut fx).unwrap(), Verdict::Ignore);
    }
    assert!(fx.publish.is_empty(), "nothing answered on gossip");
    // A proposal of the next epoch reaching a node still in this one: signed under another
    // chain id, it cannot be judged here, and the relay is not blamed for it.
    let next = g.params.epoch_blocks + 1;
    let next_chain = epoch_chain(g.hash(), 1);
    let bytes = signing_bytes(VoteKind::Propose, &next_chain, View(1), Height(next), &[1; 32]);
    let later = CompactProposal {
        height: next,
        view: 1,
        parent_view: 0,
        parent: [3; 32],
        digest: [1; 32],
        time_ms: g.genesis_time_ms + next,
        ids: vec![],
        signature: SigningKey::from_bytes(&[2; 32]).sign(&bytes).to_bytes(),
    };
    let data = codec::encode(&Envelope::Proposal { seq: 10, proposal: later });
    assert_eq!(app.on_consensus_gossip(&relay, &data, &mut fx).unwrap(), Verdict::Ignore, "a later epoch's");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Goal (ADR 0008): a validator holding a compact proposal that names records
/// it lacks asks the leader for the whole proposal after 100 ms, or after up
/// to 400 ms while gossiped record batches still wait for their signature
/// check here (the missing records are most likely among them, and the whole
/// proposal would carry the block's records once more).
#[test]
fn a_proposal_waits_longer_for_its_records_while_gossiped_records_are_checked() {
    use std::time::Duration;
    let g = genesis();
    // Validator 0 (its consensus key is seed 1).
    let (dir, _shared, mut app) = node("annal-records-wait", &g, Some(SecretKey::from_seed([1; 32])));
    let mut fx = app.start().unwrap();
    // Validator `leader` (0-based) leads view `view` (round-robin) and names one record.
    let proposal = |view: u64, leader: u8| compact(&g, view, 1, leader, [view as u8; 32], [view as u8; 32]);
    let leader_peer = |i: usize| annal_node::net::peer_id(&g.validators[i].p2p_key).unwrap();
    let asked = |fx: &mut Effects| std::mem::take(&mut fx.fetch);

    // Records are being checked: past 100 ms it still waits, once the checks are done it asks.
    let verdict = app.on_consensus_gossip(&leader_peer(1), &proposal(1, 1), &mut fx).unwrap();
    assert_eq!(verdict, Verdict::Ignore, "waits for its records; not relayed yet");
    app.records_unchecked = 1;
    std::thread::sleep(Duration::from_millis(150));
    app.on_time(&mut fx).unwrap();
    assert!(asked(&mut fx).is_empty(), "asked for the whole proposal while its records may still be checked");
    app.records_unchecked = 0;
    app.on_time(&mut fx).unwrap();
    assert_eq!(asked(&mut fx), vec![(leader_peer(1), SyncRequest::Proposal { height: 1, view: 1 })]);

    // However long the checks go on, it asks after 400 ms.
    app.on_consensus_gossip(&leader_peer(2), &proposal(2, 2), &mut fx).unwrap();
    app.records_unchecked = 1;
    std::thread::sleep(Duration::from_millis(150));
    app.on_time(&mut fx).unwrap();
    assert!(asked(&mut fx).is_empty());
    std::thread::sleep(Duration::from_millis(300));
    app.on_time(&mut fx).unwrap();
    assert_eq!(asked(&mut fx), vec![(leader_peer(2), SyncRequest::Proposal { height: 1, view: 2 })]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Goal (ADR 0004): checkpoint signatures are judged by their signature, not
/// by the peer that relays them. For a committed height each is verified on
/// arrival, so a forged one is refused and cannot displace a good one from
/// the same signer; a quorum of good ones, relayed by a peer that is no
/// validator, certifies the height. Above the tip (no header to check
/// against yet) a signature is kept only when it comes from its signer.
#[test]
fn checkpoint_signatures_are_checked_on_arrival_whoever_relays_them() {
    let g = genesis();
    let chain = ChainId(g.hash());
    let (dir, shared, mut app) = follower("annal-checkpoints", &g);
    let mut fx = Effects::default();
    let (b1, c1) = final_block(&g, 1, g.hash(), &[0, 1, 2]);
    let (b2, c2) = final_block(&g, 2, b1.hash(&chain), &[0, 1, 2]);
    app.apply_sync(PeerId::random(), &answer(&[(b1, c1), (b2, c2)]), &mut fx).unwrap();
    assert_eq!(shared.store().tip().height.0, 2);
    let certified = || shared.store().certified_height().0;
    assert_eq!(certified(), 0);

    let checkpoint = shared.store().header(annal_ledger::block::Height(1)).unwrap().unwrap().checkpoint();
    // Validator `signer` (0-based) signs with the consensus key genesis() gave it.
    let signed = |signer: u32, height: u64| {
        let signature = SecretKey::from_seed([signer as u8 + 1; 32]).sign_checkpoint(&checkpoint).0;
        codec::encode(&Envelope::Checkpoint { seq: u64::from(signer), height, signer, signature })
    };
    let forged = |signer: u32| {
        let signature = SecretKey::from_seed([99; 32]).sign_checkpoint(&checkpoint).0;
        codec::encode(&Envelope::Checkpoint { seq: 100 + u64::from(signer), height: 1, signer, signature })
    };
    let relay = PeerId::random();
    assert_eq!(app.on_consensus_gossip(&relay, &forged(0), &mut fx).unwrap(), Verdict::Reject);
    assert_eq!(app.on_consensus_gossip(&relay, &signed(0, 1), &mut fx).unwrap(), Verdict::Accept);
    assert_eq!(app.on_consensus_gossip(&relay, &forged(0), &mut fx).unwrap(), Verdict::Reject, "after the good one");
    assert_eq!(app.on_consensus_gossip(&relay, &signed(1, 1), &mut fx).unwrap(), Verdict::Accept);
    let copy = {
        let signature = SecretKey::from_seed([2; 32]).sign_checkpoint(&checkpoint).0;
        codec::encode(&Envelope::Checkpoint { seq: 77, height: 1, signer: 1, signature })
    };
    assert_eq!(app.on_consensus_gossip(&relay, &copy, &mut fx).unwrap(), Verdict::Ignore, "a copy, not checked again");
    assert_eq!(certified(), 0, "two of four");
    assert_eq!(app.on_consensus_gossip(&relay, &signed(2, 1), &mut fx).unwrap(), Verdict::Accept);
    assert_eq!(certified(), 1, "three of four, validator 0's good signature still among them");

    // Height 3 is above the tip: only its signer's own copy is kept.
    let signer_3 = annal_node::net::peer_id(&SecretKey::from_seed([14; 32]).public()).unwrap();
    assert_eq!(app.on_consensus_gossip(&relay, &signed(3, 3), &mut fx).unwrap(), Verdict::Ignore);
    assert_eq!(app.on_consensus_gossip(&signer_3, &signed(3, 3), &mut fx).unwrap(), Verdict::Accept);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Goal (review, session 30): a consensus message a validator's core does nothing with
/// (a view outside its window, a copy of a vote it holds) is ignored, not relayed; one it
/// takes is accepted, one that does not verify rejected.
#[test]
fn consensus_messages_the_core_does_nothing_with_are_not_relayed() {
    let g = genesis();
    let chain = ChainId(g.hash());
    let (dir, _shared, mut app) = node("annal-ignored", &g, Some(SecretKey::from_seed([1; 32])));
    let mut fx = Effects::default();
    let vote = |signer: u8, view: u64| {
        let bytes = signing_bytes(VoteKind::Nullify, &chain, View(view), Height(0), &[0; 32]);
        let signature = SigningKey::from_bytes(&[signer + 1; 32]).sign(&bytes).to_bytes();
        Message::Vote(Vote {
            kind: VoteKind::Nullify,
            view: View(view),
            height: Height(0),
            digest: [0; 32],
            signer: ValidatorIndex(signer as u32),
            signature,
        })
    };
    let envelope = |seq: u64, m: &Message| codec::encode(&Envelope::Consensus { seq, message: m.encode() });
    let peer = PeerId::random();
    let mut forged = vote(1, 1);
    if let Message::Vote(v) = &mut forged {
        v.signature[0] ^= 1;
    }
    assert_eq!(app.on_consensus_gossip(&peer, &envelope(1, &forged), &mut fx).unwrap(), Verdict::Reject);
    assert_eq!(app.on_consensus_gossip(&peer, &envelope(2, &vote(1, 1)), &mut fx).unwrap(), Verdict::Accept);
    assert_eq!(app.on_consensus_gossip(&peer, &envelope(3, &vote(1, 1)), &mut fx).unwrap(), Verdict::Ignore, "a copy");
    assert_eq!(app.on_consensus_gossip(&peer, &envelope(4, &vote(2, 5_000)), &mut fx).unwrap(), Verdict::Ignore);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Goal: a checkpoint signature kept before its block committed (from its
/// signer, unchecked: no header yet) is checked when the block commits, and
/// a forged one never counts towards the certificate; one checked on
/// arrival is not checked again.
#[test]
fn early_checkpoint_signatures_are_checked_when_their_block_commits() {
    let g = genesis();
    let chain = ChainId(g.hash());
    let (b1, c1) = final_block(&g, 1, g.hash(), &[0, 1, 2]);
    let (b2, c2) = final_block(&g, 2, b1.hash(&chain), &[0, 1, 2]);
    let (b3, c3) = final_block(&g, 3, b2.hash(&chain), &[0, 1, 2]);
    // Height 3's checkpoint, from a node that has it.
    let (ahead_dir, ahead, mut ahead_app) = follower("annal-early-sigs-ahead", &g);
    let all = answer(&[(b1.clone(), c1.clone()), (b2.clone(), c2.clone()), (b3.clone(), c3.clone())]);
    ahead_app.apply_sync(PeerId::random(), &all, &mut Effects::default()).unwrap();
    let checkpoint = ahead.store().header(annal_ledger::block::Height(3)).unwrap().unwrap().checkpoint();
    let envelope = |signer: u32, seed: u8| {
        let signature = SecretKey::from_seed([seed; 32]).sign_checkpoint(&checkpoint).0;
        codec::encode(&Envelope::Checkpoint { seq: u64::from(seed), height: 3, signer, signature })
    };
    let peer_of = |signer: u8| annal_node::net::peer_id(&SecretKey::from_seed([11 + signer; 32]).public()).unwrap();

    let (dir, shared, mut app) = follower("annal-early-sigs", &g);
    let mut fx = Effects::default();
    app.apply_sync(PeerId::random(), &answer(&[(b1, c1), (b2, c2)]), &mut fx).unwrap();
    // Validator 0's peer sends a signature its key did not make; 1 and 2 send good ones.
    assert_eq!(app.on_consensus_gossip(&peer_of(0), &envelope(0, 99), &mut fx).unwrap(), Verdict::Accept);
    assert_eq!(app.on_consensus_gossip(&peer_of(1), &envelope(1, 2), &mut fx).unwrap(), Verdict::Accept);
    assert_eq!(app.on_consensus_gossip(&peer_of(2), &envelope(2, 3), &mut fx).unwrap(), Verdict::Accept);
    app.apply_sync(PeerId::random(), &answer(&[(b3, c3)]), &mut fx).unwrap();
    assert_eq!(shared.store().tip().height.0, 3);
    let certified = || shared.store().certified_height().0;
    assert!(certified() < 3, "the forged signature was dropped when checked: two good of four");
    // Validator 0's real signature, now checkable on arrival, completes the quorum.
    assert_eq!(app.on_consensus_gossip(&PeerId::random(), &envelope(0, 1), &mut fx).unwrap(), Verdict::Accept);
    assert_eq!(certified(), 3);
    let certificate = shared.store().certificate(annal_ledger::block::Height(3)).unwrap().unwrap();
    assert_eq!(certificate.signatures.len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&ahead_dir);
}

/// Goal (review, session 22): one validator's word never makes a node think
/// it is behind. A vote far ahead (the core drops it unchecked, and it is
/// relayed) counts only as its signer's own claim, and only from the signer's
/// own connection; a height counts once validators holding more than a third
/// of the power have shown it. A finalization certificate counts once verified.
#[test]
fn one_validators_far_vote_does_not_make_a_node_behind() {
    let g = genesis();
    let chain = ChainId(g.hash());
    let (dir, shared, mut app) = follower("annal-far-vote", &g);
    let mut fx = Effects::default();
    let peer_of = |signer: u8| annal_node::net::peer_id(&SecretKey::from_seed([11 + signer; 32]).public()).unwrap();
    let vote = |signer: u8, height: u64, view: u64| {
        let bytes = signing_bytes(VoteKind::Notarize, &chain, View(view), Height(height), &[7; 32]);
        let vote = Vote {
            kind: VoteKind::Notarize,
            view: View(view),
            height: Height(height),
            digest: [7; 32],
            signer: ValidatorIndex(u32::from(signer)),
            signature: SigningKey::from_bytes(&[signer + 1; 32]).sign(&bytes).to_bytes(),
        };
        codec::encode(&Envelope::Consensus { seq: height, message: Message::Vote(vote).encode() })
    };
    let sync_state = |app: &mut App| {
        app.on_tick(&mut Effects::default()).unwrap();
        let status = shared.status_json().unwrap();
        (status["sync"]["state"].as_str().unwrap().to_string(), status["sync"]["target_height"].as_u64().unwrap())
    };
    assert_eq!(sync_state(&mut app), ("synced".into(), 0));

    // Validator 1 (really signed, from its own connection) claims height 2^40.
    app.on_consensus_gossip(&peer_of(1), &vote(1, 1 << 40, 1_000_000), &mut fx).unwrap();
    assert_eq!(sync_state(&mut app), ("synced".into(), 0), "one validator's word");
    // Validator 2's vote relayed by validator 1 is not validator 2's word.
    app.on_consensus_gossip(&peer_of(1), &vote(2, 1 << 40, 1_000_000), &mut fx).unwrap();
    assert_eq!(sync_state(&mut app), ("synced".into(), 0), "a relayed vote is nobody's word");
    // Validator 2 itself, at height 101: two of four validators have shown 100 or more.
    app.on_consensus_gossip(&peer_of(2), &vote(2, 101, 101), &mut fx).unwrap();
    assert_eq!(sync_state(&mut app), ("catching_up".into(), 100));

    // A finalization certificate counts once verified: a forged one does not.
    let (b1, _) = final_block(&g, 1, g.hash(), &[0, 1, 2]);
    let (_, mut c) = final_block(&g, 500, b1.hash(&chain), &[0, 1, 2]);
    let certificate = |c: &Certificate| {
        codec::encode(&Envelope::Consensus { seq: 9, message: Message::Certificate(c.clone()).encode() })
    };
    c.signatures[1][0] ^= 1;
    app.on_consensus_gossip(&PeerId::random(), &certificate(&c), &mut fx).unwrap();
    assert_eq!(sync_state(&mut app), ("catching_up".into(), 100), "a forged certificate");
    c.signatures[1][0] ^= 1;
    app.on_consensus_gossip(&PeerId::random(), &certificate(&c), &mut fx).unwrap();
    assert_eq!(sync_state(&mut app), ("catching_up".into(), 500));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Goal (review, session 22): a peer asking for more blocks than any node
/// asks for (128) gets at most 128, plus the few that reach a block whose own
/// finalization the answer can carry: the answer is built on the node's loop.
#[test]
fn a_request_for_blocks_is_capped_whatever_it_asks() {
    let g = genesis();
    let chain = ChainId(g.hash());
    let (dir, shared, mut app) = follower("annal-sync-cap", &g);
    let mut fx = Effects::default();
    let mut parent = g.hash();
    let mut chain_blocks = Vec::new();
    for h in 1..=200 {
        let (b, c) = final_block(&g, h, parent, &[0, 1, 2]);
        parent = b.hash(&chain);
        chain_blocks.push((b, c));
    }
    for part in chain_blocks.chunks(100) {
        app.apply_sync(PeerId::random(), &answer(part), &mut fx).unwrap();
    }
    assert_eq!(shared.store().tip().height.0, 200);
    let SyncResponse::Blocks(served) = ask(&app, SyncRequest::Blocks { from: 1, max: u32::MAX }) else {
        panic!("blocks asked, blocks answered")
    };
    assert!((128..=128 + 64).contains(&served.len()), "{} blocks served", served.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Goal: a store whose chain was finalized under another consensus digest rule
/// (an earlier version's, which hashed the whole payload) is refused when the node
/// starts, saying why and what to do, rather than failing later on the first peer
/// that asks it for an old block. Its own chain restarts as before.
#[test]
fn a_chain_finalized_under_another_digest_rule_is_refused_at_start() {
    use annal_ledger::block::Certificate as LedgerCertificate;
    use annal_ledger::exec::{execute, BlockMeta, Signatures};
    use annal_node::wire::{link_key, Link};
    let g = genesis();
    let (dir, shared, mut app) = follower("annal-sync-old-digest", &g);
    let chain = ChainId(g.hash());
    let (b1, c1) = final_block(&g, 1, g.hash(), &[0, 1, 2]);
    app.apply_sync(PeerId::random(), &answer(&[(b1.clone(), c1)]), &mut Effects::default()).unwrap();
    assert_eq!(shared.store().tip().height.0, 1);
    drop(app);
    App::new(shared.clone(), dir.clone(), None).expect("a chain of this version restarts");

    // Block 2 as the earlier version committed it: its link names a digest this version does not compute.
    let (b2, c2) = final_block(&g, 2, b1.hash(&chain), &[0, 1, 2]);
    let link = Link {
        view: 2,
        parent_view: 1,
        parent: b2.parent,
        digest: [0xd1; 32],
        time_ms: g.genesis_time_ms + 2,
        skipped: Vec::new(),
        finalization: Message::Certificate(c2).encode(),
    };
    {
        let mut store = shared.store.write().unwrap();
        let height = annal_ledger::block::Height(2);
        let executed =
            execute(&shared.governance(), height, &*store, store.frontier(), &[], Signatures::Verify).unwrap();
        let set = g.validator_set();
        let meta = BlockMeta {
            height,
            view: annal_ledger::block::View(2),
            parent: store.tip().block_hash,
            time_ms: link.time_ms,
            proposer: 1,
            validators_hash: set.hash(),
        };
        let header = executed.header(&g.chain_id, &meta);
        let keys: Vec<SecretKey> = (1..=3u8).map(|i| SecretKey::from_seed([i; 32])).collect();
        let cert = LedgerCertificate::sign(&header, &set, &[(0, &keys[0]), (1, &keys[1]), (2, &keys[2])]);
        store.commit_block(&header, Some(&cert), &executed, &[(link_key(2), codec::encode(&link))]).unwrap();
    }
    let refused = App::new(shared.clone(), dir.clone(), None).err().expect("refused").to_string();
    assert!(refused.contains("earlier version of annal") && refused.contains("annal/block/v2"), "{refused}");
    assert!(refused.contains("start a new chain"), "{refused}");
    assert_eq!(shared.store().tip().height.0, 2, "nothing of the store is touched");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Goal: records the API admitted are gossiped in batches: a full batch at once, a small
/// remainder only after `GOSSIP_LINGER` (5 ms) or before a consensus message goes out, so
/// records submitted one at a time share messages and a proposal never overtakes them.
#[test]
fn api_records_are_gossiped_in_batches_and_a_small_one_waits_a_little() {
    use annal_node::wire::RecordBatch;
    let g = genesis();
    let (dir, shared, mut app) = follower("gossip-linger", &g);
    let records_in = |out: &[(annal_node::net::Topic, Vec<u8>)]| -> Vec<usize> {
        out.iter().map(|(_, data)| codec::decode::<RecordBatch>(data, 64 << 20).unwrap().records.len()).collect()
    };
    let record = |i: u32| i.to_le_bytes().repeat(100);

    app.queue_gossip((0..3).map(record).collect());
    assert_eq!(records_in(&app.drain_gossip(false)), Vec::<usize>::new(), "three records wait");
    assert!(app.next_wake() <= app.now() + std::time::Duration::from_millis(5), "and the loop wakes for them");
    assert_eq!(records_in(&app.drain_gossip(true)), [3], "a consensus message going out takes them along");
    assert_eq!(records_in(&app.drain_gossip(true)), Vec::<usize>::new());

    app.queue_gossip(vec![record(3)]);
    std::thread::sleep(std::time::Duration::from_millis(6));
    assert_eq!(records_in(&app.drain_gossip(false)), [1], "waited long enough");

    app.queue_gossip((0..600).map(record).collect());
    assert_eq!(records_in(&app.drain_gossip(false)), [512], "a full batch goes, 88 wait");
    app.queue_gossip((0..40).map(record).collect());
    assert_eq!(records_in(&app.drain_gossip(false)), [128], "a quarter of a batch is worth a message");
    let counted = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(counted(&shared.metrics.record_batches_gossiped), 4);
    assert_eq!(counted(&shared.metrics.records_gossiped), 3 + 1 + 512 + 128);
    let _ = std::fs::remove_dir_all(dir);
}
