//! Answers to peers' requests for history (blocks, certificates, a block by
//! digest), built off the node's loop.
//!
//! These answers read up to hundreds of blocks from the store, or a voted
//! block's file, or encode a block of megabytes the core holds. Built on the
//! loop, a peer holding many requests open (the request protocol allows
//! `limits.sync_streams_max` at once) kept the loop from voting and
//! committing for as long as it liked. Built on the blocking pool, they
//! leave the loop free, and a [`Gate`] bounds what any one peer can make
//! this node spend on them: per peer one run of blocks or certificates (sync)
//! in progress, two in all, and after each a pause as long as it took to
//! build before that peer's next run (on average at most half a core per
//! peer); per peer four single blocks (a core's fetches) in progress, eight in
//! all, unpaused: each is one block's read or copy, and a core that is
//! refused one asks again only at its next view. An honest peer
//! asks for history once per tick (500 ms) and never meets these bounds; a
//! request past them is refused (its stream is closed unanswered) and the
//! asker tries again later.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annal_consensus::{self as consensus, Block, ChainId, Message};
use annal_ledger::block::Height;
use annal_ledger::codec;
use anyhow::{bail, Context, Result};

use crate::app::epoch_chain;
use crate::net::PeerId;
use crate::shared::Shared;
use crate::wire::{self, BlockBody, EpochTail, Link, SyncBlock, SyncResponse};

/// Blocks asked for in one sync request.
pub const SYNC_BATCH: u32 = 128;
/// Blocks an answer may add past those asked for, to end at a block with its own finalization.
pub const SYNC_EXTRA_MAX: u32 = 64;
/// Certificates one answer to `SyncRequest::Certificates` holds at most (heights `from..=from + 1024`).
pub const SYNC_CERTIFICATES_MAX: usize = 1025;
/// Runs of blocks or certificates in progress at once, over all peers.
pub const RUNS_MAX: u32 = 2;
/// Single blocks in progress at once for one peer (a core asks for all it misses at
/// once; the node's own requests in flight are at most 8), and over all peers.
pub const SINGLES_PER_PEER: u32 = 4;
pub const SINGLES_MAX: u32 = 8;

/// A request answered off the loop, with what the loop already looked up.
#[derive(Clone)]
pub enum Request {
    /// Committed blocks from `from`, with their finalizations.
    Blocks { from: u64, max: u32 },
    /// The ledger certificates stored for `from..=to`.
    Certificates { from: u64, to: u64 },
    /// A block by digest the core does not hold: from the file of a block this
    /// validator voted for (`voted`), else committed.
    Block { digest: [u8; 32], voted: Option<PathBuf> },
    /// A block the core holds (its payload shared, not copied), to encode.
    Held { digest: [u8; 32], block: Block },
}

impl std::fmt::Debug for Request {
    /// Names the request, never a block's payload.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Blocks { from, max } => write!(f, "Blocks {{ from: {from}, max: {max} }}"),
            Request::Certificates { from, to } => write!(f, "Certificates {{ from: {from}, to: {to} }}"),
            Request::Block { digest, voted } => {
                write!(f, "Block {{ digest: {}, voted: {} }}", hex::encode(digest), voted.is_some())
            }
            Request::Held { digest, block } => {
                write!(f, "Held {{ digest: {}, height: {} }}", hex::encode(digest), block.height.0)
            }
        }
    }
}

/// Builds the answer to `request` from the store.
pub fn answer(shared: &Shared, limits: &consensus::Limits, request: Request, response_max: usize) -> Result<Vec<u8>> {
    let response = match request {
        Request::Blocks { from, max } => SyncResponse::Blocks(blocks(shared, limits, from, max, response_max)?),
        Request::Certificates { from, to } => {
            let mut out = Vec::new();
            for h in from..=to.min(from.saturating_add(SYNC_CERTIFICATES_MAX as u64 - 1)) {
                // The store's lock is taken per height: a commit waiting for it holds up every reader.
                if let Some(c) = shared.store().certificate(Height(h))? {
                    out.push(c.to_bytes());
                }
            }
            SyncResponse::Certificates(out)
        }
        Request::Block { digest, voted } => SyncResponse::Block(block(shared, limits, &digest, voted.as_deref())?),
        Request::Held { block, .. } => SyncResponse::Block(Some(Message::encode_block_response(&block))),
    };
    Ok(codec::encode(&response))
}

/// The block `digest` as `Message::BlockResponse` wire bytes: from a voted block's file,
/// or rebuilt from the store if committed; `None` if this node holds neither.
fn block(
    shared: &Shared,
    limits: &consensus::Limits,
    digest: &[u8; 32],
    voted: Option<&Path>,
) -> Result<Option<Vec<u8>>> {
    if let Some(bytes) = voted.and_then(|path| std::fs::read(path).ok()) {
        if let Ok(Message::BlockResponse(_)) = Message::decode(&bytes, limits) {
            return Ok(Some(bytes));
        }
    }
    let height = shared.store().app_meta(&wire::digest_key(digest))?;
    match height.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) {
        Some(h) if h <= shared.store().tip().height.0 => {
            Ok(Some(Message::BlockResponse(rebuild_block(shared, limits, h)?.0).encode()))
        }
        _ => Ok(None),
    }
}

/// Committed blocks from `from`: at most `max` (itself at most [`SYNC_BATCH`]), and up to
/// [`SYNC_EXTRA_MAX`] more to end at a block with its own finalization, within half of
/// `response_max` (with blocks of a few bytes, a response's byte bound is ~30,000 of them).
fn blocks(
    shared: &Shared,
    limits: &consensus::Limits,
    from: u64,
    max: u32,
    response_max: usize,
) -> Result<Vec<SyncBlock>> {
    let max = u64::from(max.min(SYNC_BATCH));
    let tip = shared.store().tip().height.0;
    let first = from.max(1);
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for h in first..=tip {
        let (block, link) = rebuild_block(shared, limits, h)?;
        let own = link_is_own(&link, h, limits);
        let certificate = shared.store().certificate(Height(h))?.map(|c| c.to_bytes());
        let tail = match shared.store().app_meta(&wire::tail_key(h))? {
            Some(bytes) => codec::decode(&bytes, response_max)?,
            None => EpochTail::default(),
        };
        let entry = SyncBlock {
            block: Message::BlockResponse(block).encode(),
            finalization: link.finalization,
            certificate,
            tail,
        };
        bytes += entry.block.len() + entry.finalization.len() + 512;
        if bytes > response_max / 2 && !out.is_empty() {
            break;
        }
        out.push(entry);
        let counted = h + 1 - first;
        if counted >= max && (own || counted >= max + u64::from(SYNC_EXTRA_MAX)) {
            break;
        }
    }
    Ok(out)
}

/// Whether a link's finalization is its own block's (not a later block's that covers it).
pub fn link_is_own(link: &Link, h: u64, limits: &consensus::Limits) -> bool {
    matches!(Message::decode(&link.finalization, limits), Ok(Message::Certificate(c)) if c.height.0 == h)
}

/// The consensus chain id blocks at height `h` are signed under.
pub fn chain_of(shared: &Shared, h: u64) -> ChainId {
    epoch_chain(shared.genesis_hash, shared.genesis.params.epoch_of(h))
}

/// Rebuilds the consensus block committed at `h` from the store, with its link.
pub fn rebuild_block(shared: &Shared, limits: &consensus::Limits, h: u64) -> Result<(Block, Link)> {
    let (block, link) = rebuild_block_unchecked(shared, limits, h)?;
    if block.hash(&chain_of(shared, h)) != link.digest {
        bail!("the block rebuilt at height {h} does not hash to its stored digest");
    }
    Ok((block, link))
}

/// The consensus block committed at `h` and its link, as stored, without
/// checking that the block hashes to the link's digest.
pub fn rebuild_block_unchecked(shared: &Shared, limits: &consensus::Limits, h: u64) -> Result<(Block, Link)> {
    let store = shared.store();
    let link: Link = codec::decode(
        &store.app_meta(&wire::link_key(h))?.with_context(|| format!("no consensus link at height {h}"))?,
        limits.message_bytes_max * 2,
    )?;
    let header = store.header(Height(h))?.with_context(|| format!("no header at height {h}"))?;
    let first = store.first_index(Height(h))?;
    let mut appended = VecDeque::from(store.records_in(first, header.log_size)?);
    let total = appended.len() + link.skipped.len();
    let mut skipped: BTreeMap<u32, Vec<u8>> = link.skipped.iter().cloned().collect();
    let mut records = Vec::with_capacity(total);
    for p in 0..total as u32 {
        match skipped.remove(&p) {
            Some(r) => records.push(r),
            None => records.push(appended.pop_front().context("the link's skipped positions disagree")?),
        }
    }
    let block = Block {
        height: consensus::Height(h),
        view: consensus::View(link.view),
        parent_view: consensus::View(link.parent_view),
        parent: link.parent,
        payload: BlockBody::payload_of_bytes(BlockBody { time_ms: link.time_ms, records }.to_bytes()),
    };
    Ok((block, link))
}

/// Why a history request was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The peer already has an answer in progress.
    PeerBusy,
    /// The peer's last answer finished less than its build time ago.
    PeerPausing { left: Duration },
    /// As many answers of the kind as the node builds at once are in progress.
    Full,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::PeerBusy => write!(f, "the peer already has a history answer in progress"),
            Refusal::PeerPausing { left } => {
                write!(f, "the peer's last history answer finished too recently ({} ms to wait)", left.as_millis())
            }
            Refusal::Full => {
                write!(f, "as many history answers of its kind as this node builds at once are in progress")
            }
        }
    }
}

/// What an answer reads: a run of blocks or certificates (sync), or one block (a
/// core's fetch, usually of a block in flight). Each kind has its own bounds, so a
/// node's fetches are not refused behind its own sync answer or a peer's runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Run,
    Single,
}

impl Kind {
    /// Answers of this kind one peer may have in progress, and all peers together.
    /// A run reads up to hundreds of blocks; an honest node asks for one per tick. A
    /// core asks for the blocks it misses all at once (one peer may get several), and
    /// retries a refused one only at its next view: single blocks are many per peer
    /// and never paused, each being one block's read or copy.
    fn bounds(self) -> (u32, u32) {
        match self {
            Kind::Run => (1, RUNS_MAX),
            Kind::Single => (SINGLES_PER_PEER, SINGLES_MAX),
        }
    }

    /// Whether a peer waits, after such an answer, as long as it took to build.
    fn pauses(self) -> bool {
        self == Kind::Run
    }
}

impl Request {
    pub fn kind(&self) -> Kind {
        match self {
            Request::Blocks { .. } | Request::Certificates { .. } => Kind::Run,
            Request::Block { .. } | Request::Held { .. } => Kind::Single,
        }
    }
}

/// Answers in progress by peer and [`Kind`], by kind in all, and until when a peer pauses.
#[derive(Default)]
struct GateState {
    busy: BTreeMap<(PeerId, Kind), u32>,
    paused_until: BTreeMap<(PeerId, Kind), Instant>,
    in_progress: BTreeMap<Kind, u32>,
}

/// Admits history answers within each [`Kind`]'s bounds; after a run, its peer
/// waits as long as it took to build before its next run is served.
#[derive(Clone, Default)]
pub struct Gate {
    state: Arc<Mutex<GateState>>,
}

/// An admitted answer: held while it is built, handed back by [`Permit::done`].
pub struct Permit {
    gate: Gate,
    peer: (PeerId, Kind),
    started: Instant,
    finished: bool,
}

impl Gate {
    pub fn admit(&self, peer: PeerId, kind: Kind, now: Instant) -> std::result::Result<Permit, Refusal> {
        let key = (peer, kind);
        let (per_peer, total) = kind.bounds();
        let mut s = self.state.lock().expect("history gate lock");
        s.paused_until.retain(|_, until| *until > now);
        if s.busy.get(&key).copied().unwrap_or(0) >= per_peer {
            return Err(Refusal::PeerBusy);
        }
        if let Some(until) = s.paused_until.get(&key) {
            return Err(Refusal::PeerPausing { left: *until - now });
        }
        if s.in_progress.get(&kind).copied().unwrap_or(0) >= total {
            return Err(Refusal::Full);
        }
        *s.in_progress.entry(kind).or_default() += 1;
        *s.busy.entry(key).or_default() += 1;
        Ok(Permit { gate: self.clone(), peer: key, started: now, finished: false })
    }

    fn release(&self, key: (PeerId, Kind), pause_until: Option<Instant>) {
        let mut s = self.state.lock().expect("history gate lock");
        if let Some(n) = s.in_progress.get_mut(&key.1) {
            *n -= 1;
        }
        if let Some(n) = s.busy.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                s.busy.remove(&key);
            }
        }
        if let Some(until) = pause_until.filter(|_| key.1.pauses()) {
            s.paused_until.insert(key, until);
        }
    }
}

impl Permit {
    /// The answer is built: after a run, the peer pauses for as long as it took.
    pub fn done(mut self, now: Instant) {
        self.finished = true;
        let took = now.saturating_duration_since(self.started);
        self.gate.release(self.peer, Some(now + took));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.finished {
            // Not finished (the build panicked): free the slot without a pause.
            self.gate.release(self.peer, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        let key = libp2p::identity::Keypair::ed25519_from_bytes([n; 32]).unwrap();
        key.public().to_peer_id()
    }

    #[test]
    fn one_run_per_peer_paused_and_several_single_blocks_unpaused() {
        let gate = Gate::default();
        let t0 = Instant::now();
        let a = gate.admit(peer(1), Kind::Run, t0).unwrap();
        assert_eq!(gate.admit(peer(1), Kind::Run, t0).err(), Some(Refusal::PeerBusy));
        // Single blocks for the same peer meanwhile: their own bounds, four per peer, eight in all.
        let singles: Vec<Permit> =
            (0..SINGLES_PER_PEER).map(|_| gate.admit(peer(1), Kind::Single, t0).unwrap()).collect();
        assert_eq!(gate.admit(peer(1), Kind::Single, t0).err(), Some(Refusal::PeerBusy));
        let more: Vec<Permit> =
            (0..SINGLES_MAX - SINGLES_PER_PEER).map(|_| gate.admit(peer(4), Kind::Single, t0).unwrap()).collect();
        assert_eq!(gate.admit(peer(5), Kind::Single, t0).err(), Some(Refusal::Full));
        let b = gate.admit(peer(2), Kind::Run, t0).unwrap();
        assert_eq!(gate.admit(peer(3), Kind::Run, t0).err(), Some(Refusal::Full));
        // A single block done is not followed by a pause.
        for p in singles.into_iter().chain(more) {
            p.done(t0 + Duration::from_millis(40));
        }
        gate.admit(peer(1), Kind::Single, t0 + Duration::from_millis(41)).unwrap().done(t0);

        // Peer 1's run took 40 ms: it waits 40 ms before the next; the slot is free for others.
        a.done(t0 + Duration::from_millis(40));
        let at = t0 + Duration::from_millis(50);
        let left = Duration::from_millis(30);
        assert_eq!(gate.admit(peer(1), Kind::Run, at).err(), Some(Refusal::PeerPausing { left }));
        gate.admit(peer(1), Kind::Single, at).unwrap().done(at);
        let c = gate.admit(peer(3), Kind::Run, at).unwrap();
        drop(c); // a build that panicked: the slot comes back, no pause.
        gate.admit(peer(3), Kind::Run, at).unwrap().done(at);
        let later = t0 + Duration::from_millis(80);
        gate.admit(peer(1), Kind::Run, later).unwrap().done(later);
        b.done(later);
        let s = gate.state.lock().unwrap();
        assert!(s.in_progress.values().all(|n| *n == 0));
        assert!(s.busy.is_empty());
    }
}
