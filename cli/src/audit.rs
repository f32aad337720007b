//! `annal audit`: replay a node's whole chain from the genesis file and check
//! every block it serves.
//!
//! Per block (`Replay::check`): the header decodes and hashes to the hash the
//! node states; it continues the parent chain (height 1's parent is the
//! genesis hash); it names the validator set in force; its signed checkpoint
//! (when collected) carries more than 2/3 of that set's power over exactly
//! this header; and re-executing the block's appended records with every
//! signature verified, on state rebuilt from genesis, gives the header's
//! `records_root`, `log_size`, `log_root`, `state_root` and `charter_hash`,
//! and governance replayed alike gives its `next_validators_hash` (so the
//! audit follows validator-set and charter changes). The first discrepancy is
//! named by height and field.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use annal_ledger::block::Header;
use annal_ledger::exec::{bad_signatures, execute_encoded, Signatures};
use annal_ledger::genesis::{Genesis, RECORD_BYTES_CAP};
use annal_ledger::gov::Governance;
use annal_ledger::merkle::{Frontier, Hash};
use annal_ledger::note::SignedNote;
use annal_ledger::record::Encoded;
use annal_ledger::state::MemoryState;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use crate::client::{Client, SMALL_BYTES_MAX};
use crate::verify::Outcome;

#[derive(clap::Args)]
pub struct AuditArgs {
    /// The node's API address, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    node: String,
    /// The chain's genesis file: the only thing trusted.
    #[arg(long)]
    genesis: PathBuf,
    /// Check signatures (records and checkpoints) from this height on; lower
    /// blocks are still replayed and their roots compared, since state is
    /// rebuilt from genesis, but their signatures are taken as checked.
    #[arg(long, default_value_t = 1)]
    from_height: u64,
    /// Fail (exit 2) if more than this many blocks at the top have no checkpoint
    /// checked: they rest on the node's word only. Checkpoints of the newest
    /// blocks are still being collected, so a small number is normal; without
    /// this option any number passes (and is printed).
    #[arg(long, value_name = "BLOCKS")]
    uncertified_max: Option<u64>,
    /// Print one JSON object instead of text, and no progress line.
    #[arg(long)]
    json: bool,
}

/// `GET /v1/blocks/{height}` (docs/API.md).
#[derive(Clone, Debug, Deserialize)]
pub struct BlockAnswer {
    pub height: u64,
    pub hash: String,
    pub header: String,
    pub checkpoint: Option<String>,
    pub records: Vec<String>,
    pub first_index: u64,
}

/// The header field (or part of the answer) where a block departs from the replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Header,
    Height,
    Hash,
    ChainId,
    Parent,
    ValidatorsHash,
    Checkpoint,
    FirstIndex,
    Records,
    RecordsRoot,
    LogSize,
    LogRoot,
    StateRoot,
    CharterHash,
    NextValidatorsHash,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Header => "header",
            Field::Height => "height",
            Field::Hash => "hash",
            Field::ChainId => "chain_id",
            Field::Parent => "parent",
            Field::ValidatorsHash => "validators_hash",
            Field::Checkpoint => "checkpoint",
            Field::FirstIndex => "first_index",
            Field::Records => "records",
            Field::RecordsRoot => "records_root",
            Field::LogSize => "log_size",
            Field::LogRoot => "log_root",
            Field::StateRoot => "state_root",
            Field::CharterHash => "charter_hash",
            Field::NextValidatorsHash => "next_validators_hash",
        }
    }
}

/// Why a block fails the audit.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("height {height}: {}: {detail}", field.name())]
    Discrepancy { height: u64, field: Field, detail: String },
}

/// What a block that passed left to say.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    pub records: usize,
    /// The node has not collected this block's certificate yet.
    pub uncertified: bool,
    /// Its checkpoint's signatures were checked: the validators vouch for
    /// this block and, through the parent hashes, for every block below it.
    pub signed: bool,
}

/// A block answer with its records decoded and their signatures checked:
/// the part of a block's audit that needs no replayed state, so it runs
/// ahead of the replay on other threads.
pub struct Prepared {
    answer: BlockAnswer,
    /// The records with their bytes and ids, up to the first that does not decode.
    records: Vec<Encoded>,
    /// Why the record after them does not decode, if one does not.
    undecodable: Option<String>,
    /// Whether signatures are checked at this height (`--from-height`).
    check_signatures: bool,
    /// Position of the first record whose signature does not verify.
    first_bad_signature: Option<usize>,
}

/// Records per signature-checking thread below which one thread checks a block alone.
const VERIFY_CHUNK_MIN: usize = 256;

impl Prepared {
    /// Decodes the answer's records and, with `check_signatures`, verifies their
    /// signatures on up to `threads` threads. Each record is bounded here by the
    /// largest limit any charter may set; the replay applies the charter in force.
    pub fn new(answer: BlockAnswer, check_signatures: bool, threads: usize) -> Prepared {
        let mut records = Vec::with_capacity(answer.records.len());
        let mut undecodable = None;
        for (i, b64) in answer.records.iter().enumerate() {
            let decoded = B64
                .decode(b64)
                .map_err(|e| format!("record {i} is not base64: {e}"))
                .and_then(|bytes| decode_record(bytes).map_err(|e| format!("record {i}: {e}")));
            match decoded {
                Ok(e) => records.push(e),
                Err(why) => {
                    undecodable = Some(why);
                    break;
                }
            }
        }
        let first_bad_signature = if check_signatures && undecodable.is_none() {
            first_bad_signature(&records, threads.min(records.len() / VERIFY_CHUNK_MIN).max(1))
        } else {
            None
        };
        Prepared { answer, records, undecodable, check_signatures, first_bad_signature }
    }
}

/// Decodes one record's canonical bytes, up to the largest size any charter allows.
fn decode_record(bytes: Vec<u8>) -> Result<Encoded, annal_ledger::error::Error> {
    Encoded::decode_max(bytes, RECORD_BYTES_CAP)
}

/// The first record whose signature does not verify, checking `threads` runs
/// of the records at once (the rule gives each signature the same answer in
/// any batch, so the split does not change the result).
fn first_bad_signature(records: &[Encoded], threads: usize) -> Option<usize> {
    let chunk = records.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let runs: Vec<_> = records
            .chunks(chunk)
            .enumerate()
            .map(|(n, run)| scope.spawn(move || bad_signatures(run).first().map(|i| n * chunk + i)))
            .collect();
        runs.into_iter().filter_map(|run| run.join().expect("signature check panicked")).min()
    })
}

/// The replayed chain: state, log and parent hash after the last block checked.
pub struct Replay {
    /// Governance after the last block checked: the set and charter of the next.
    gov: Governance,
    state: MemoryState,
    frontier: Frontier,
    parent: Hash,
    /// Height of the last block checked (0 = genesis).
    pub height: u64,
    /// Blocks at or below this height must carry a checkpoint (the node said they are certified).
    certified_height: u64,
}

impl Replay {
    pub fn new(genesis: &Genesis, certified_height: u64) -> Self {
        Replay {
            gov: Governance::genesis(genesis),
            state: MemoryState::default(),
            frontier: Frontier::new(),
            parent: genesis.hash(),
            height: 0,
            certified_height,
        }
    }

    /// Checks the next block; on success, takes its records into the replayed state.
    /// Signatures (records' and checkpoint's) are verified if `prepared` says so.
    pub fn check(&mut self, prepared: &Prepared) -> Result<Checked, Problem> {
        let (block, check_signatures) = (&prepared.answer, prepared.check_signatures);
        let height = self.height + 1;
        let bad = |field: Field, detail: String| Problem::Discrepancy { height, field, detail };
        let bytes = B64.decode(&block.header).map_err(|e| bad(Field::Header, format!("not base64: {e}")))?;
        let header = Header::from_bytes(&bytes).map_err(|e| bad(Field::Header, e.to_string()))?;
        if block.height != height || header.height.0 != height {
            return Err(bad(
                Field::Height,
                format!("asked for height {height}; the answer says {}, its header {}", block.height, header.height.0),
            ));
        }
        let hash = header.hash();
        if block.hash != hex::encode(hash) {
            return Err(bad(
                Field::Hash,
                format!("the header hashes to {}, the node says {}", hex::encode(hash), block.hash),
            ));
        }
        if header.chain_id != self.gov.chain_id {
            return Err(bad(Field::ChainId, format!("{:?}, genesis is {:?}", header.chain_id, self.gov.chain_id)));
        }
        if header.parent != self.parent {
            return Err(bad(
                Field::Parent,
                format!(
                    "{}; the block at height {} hashes to {}",
                    hex::encode(header.parent),
                    height - 1,
                    hex::encode(self.parent)
                ),
            ));
        }
        if header.validators_hash != self.gov.validators.hash() {
            return Err(bad(
                Field::ValidatorsHash,
                format!(
                    "{}; the set in force is {}",
                    hex::encode(header.validators_hash),
                    hex::encode(self.gov.validators.hash())
                ),
            ));
        }
        let (uncertified, signed) = match &block.checkpoint {
            Some(note) => {
                if check_signatures {
                    self.check_checkpoint(&header, note).map_err(|d| bad(Field::Checkpoint, d))?;
                }
                (false, check_signatures)
            }
            None if height <= self.certified_height => {
                return Err(bad(
                    Field::Checkpoint,
                    format!("none, but the node says blocks up to {} are certified", self.certified_height),
                ));
            }
            None => (true, false),
        };
        self.execute(&header, prepared).map_err(|(field, detail)| bad(field, detail))?;
        self.parent = hash;
        self.height = height;
        Ok(Checked { records: block.records.len(), uncertified, signed })
    }

    fn check_checkpoint(&self, header: &Header, note: &str) -> Result<(), String> {
        let signed = SignedNote::parse(note).map_err(|e| e.to_string())?;
        let checkpoint =
            self.gov.validators.verify_checkpoint(&self.gov.chain_id, &signed).map_err(|e| e.to_string())?;
        if checkpoint != header.checkpoint() {
            return Err(format!("the signed checkpoint is not this header's:\n{}", signed.text));
        }
        Ok(())
    }

    /// Re-executes the block's records and compares the roots; on success absorbs the state.
    fn execute(&mut self, header: &Header, prepared: &Prepared) -> Result<(), (Field, String)> {
        let block = &prepared.answer;
        if block.first_index != self.frontier.size() {
            return Err((
                Field::FirstIndex,
                format!("{}; the replayed log has {} records", block.first_index, self.frontier.size()),
            ));
        }
        // In block order: a record over the charter's limit before the first undecodable one is named first.
        let records = &prepared.records;
        let max = self.gov.charter.params.record_bytes_max;
        if let Some((i, e)) = records.iter().enumerate().find(|(_, e)| e.bytes().len() > max) {
            let detail = format!("record {i} is {} bytes; the charter in force allows {max}", e.bytes().len());
            return Err((Field::Records, detail));
        }
        if let Some(why) = &prepared.undecodable {
            return Err((Field::Records, why.clone()));
        }
        let signatures = Signatures::Checked(prepared.first_bad_signature);
        let executed = execute_encoded(&self.gov, header.height, &self.state, &self.frontier, records, signatures)
            .map_err(|e| (Field::Records, format!("the appended records do not execute: {e}")))?;
        let hex32 = hex::encode;
        let compare = [
            (Field::RecordsRoot, hex32(executed.records_root), hex32(header.records_root)),
            (Field::LogSize, executed.log_size().to_string(), header.log_size.to_string()),
            (Field::LogRoot, hex32(executed.log_root()), hex32(header.log_root)),
            (Field::StateRoot, hex32(executed.state_root), hex32(header.state_root)),
            (Field::CharterHash, hex32(executed.charter_hash), hex32(header.charter_hash)),
            (
                Field::NextValidatorsHash,
                hex32(executed.gov.state.validators.hash()),
                hex32(header.next_validators_hash),
            ),
        ];
        if let Some((field, replayed, stated)) = compare.into_iter().find(|(_, a, b)| a != b) {
            return Err((field, format!("the header says {stated}; replaying the records gives {replayed}")));
        }
        self.state.absorb(&executed);
        self.frontier = executed.frontier;
        self.gov = executed.gov.state;
        Ok(())
    }
}

#[derive(Deserialize)]
struct StatusAnswer {
    chain_id: String,
    genesis_hash: String,
    height: u64,
    certified_height: u64,
}

/// A `\r`-updated progress line on standard error, at most four times a second.
struct Progress {
    started: Instant,
    shown: Instant,
    records: u64,
    on: bool,
}

impl Progress {
    fn show(&mut self, height: u64, top: u64, force: bool) {
        if !self.on || (!force && self.shown.elapsed() < Duration::from_millis(250)) {
            return;
        }
        self.shown = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\raudited {height}/{top} blocks, {} records; {:.0} blocks/s, {:.0} records/s   ",
            self.records,
            height as f64 / secs,
            self.records as f64 / secs
        );
        let _ = std::io::stderr().flush();
    }

    fn end(&self) {
        if self.on {
            eprintln!();
        }
    }
}

/// The block answer's size limit: the chain's block limit in base64, with room for the JSON around it.
fn block_answer_bytes_max(genesis: &Genesis) -> u64 {
    let p = &genesis.params;
    let records = p.block_bytes_max.saturating_add(p.record_bytes_max) as u64;
    (records / 3 + 1) * 4 + 8 * p.block_records_max as u64 + 64 * 1024
}

pub fn audit(args: AuditArgs) -> Outcome {
    let json = args.json;
    let cannot = |msg: String, height: u64| {
        if json {
            println!("{}", json!({ "consistent": null, "checked_to": height, "error": msg }));
        } else {
            eprintln!("could not check: {msg}");
        }
        Outcome::Unreadable
    };
    let genesis = match Genesis::load(&args.genesis) {
        Ok(g) => g,
        Err(e) => return cannot(e.to_string(), 0),
    };
    let client = match Client::new(&args.node) {
        Ok(c) => c,
        Err(e) => return cannot(e.to_string(), 0),
    };
    let status: StatusAnswer = match client.get_json("/v1/status", SMALL_BYTES_MAX) {
        Ok(s) => s,
        Err(e) => return cannot(e.to_string(), 0),
    };
    if status.chain_id != genesis.chain_id || status.genesis_hash != hex::encode(genesis.hash()) {
        return cannot(
            format!(
                "the node runs chain {:?} with genesis {}; your genesis file is {:?} with hash {}",
                status.chain_id,
                status.genesis_hash,
                genesis.chain_id,
                hex::encode(genesis.hash())
            ),
            0,
        );
    }
    let top = status.height;
    let limit = block_answer_bytes_max(&genesis);
    let mut replay = Replay::new(&genesis, status.certified_height);
    let mut uncertified = Vec::new();
    // The highest height whose checkpoint this audit checked (0: none).
    let mut signed_to = 0;
    let now = Instant::now();
    let mut progress = Progress { started: now, shown: now, records: 0, on: !json };
    // Blocks are fetched (HTTP, JSON) on one thread and decoded and signature-checked on others,
    // a few ahead, while this one replays them.
    let blocks = prepare(prefetch(client, replay.height + 1, top, limit, json), args.from_height);
    while replay.height < top {
        let h = replay.height + 1;
        let block = match blocks.recv() {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                progress.end();
                return cannot(e, replay.height);
            }
            Err(_) => {
                progress.end();
                return cannot(format!("the block fetcher or checker stopped before height {h}"), replay.height);
            }
        };
        match replay.check(&block) {
            Ok(checked) => {
                progress.records += checked.records as u64;
                if checked.uncertified {
                    uncertified.push(h);
                }
                if checked.signed {
                    signed_to = h;
                }
            }
            Err(problem) => {
                progress.end();
                return report_problem(&problem, json, replay.height);
            }
        }
        progress.show(replay.height, top, false);
    }
    progress.show(replay.height, top, true);
    progress.end();
    if top > 0 && signed_to == 0 {
        // Blocks that replay to their own headers prove nothing by themselves: a node can
        // make such a chain from records it holds. Only a checkpoint ties them to the validators.
        return cannot(
            format!(
                "heights 1 to {top} replay to the headers the node serves, but no checkpoint from height {} on \
                 was there to check (the node says {} are certified): nothing ties these blocks to the validators",
                args.from_height, status.certified_height
            ),
            top,
        );
    }
    if let Some(max) = args.uncertified_max.filter(|max| top - signed_to > *max) {
        return cannot(
            format!(
                "heights 1 to {top} replay to the headers the node serves, but the validators' checkpoints vouch \
                 only for heights 1 to {signed_to}: the {} blocks above rest on the node's word, more than \
                 --uncertified-max {max}",
                top - signed_to
            ),
            top,
        );
    }
    if json {
        println!(
            "{}",
            json!({ "consistent": true, "checked_to": top, "records": progress.records,
                    "checkpoints_checked_to": signed_to,
                    "uncertified": uncertified, "signatures_from_height": args.from_height })
        );
    } else {
        println!("OK heights 1 to {top} ({} records) replay to the headers the node serves", progress.records);
        println!("the validators' checkpoints vouch for heights 1 to {signed_to}");
        if !uncertified.is_empty() {
            println!(
                "not yet certified (checkpoint still being collected), the node's word only: heights {uncertified:?}"
            );
        }
    }
    Outcome::Valid
}

/// Blocks fetched, and blocks decoded and checked, ahead of the replay.
const PREFETCH_BLOCKS: usize = 4;
/// Threads checking one block's signatures at most.
const VERIFY_THREADS_MAX: usize = 8;

type Ahead<T> = Receiver<std::result::Result<T, String>>;

/// Fetches heights `from..=to` in order, ahead of the reader (`ahead`); a node
/// sending as many large answers as it holds at once (503 `busy`) is asked again.
fn prefetch(client: Client, from: u64, to: u64, limit: u64, json: bool) -> Ahead<BlockAnswer> {
    ahead((from..=to).map(move |h| {
        crate::node_cmds::with_retries(&["busy"], json, || {
            client.get_json::<BlockAnswer>(&format!("/v1/blocks/{h}"), limit)
        })
        .map_err(|e| e.to_string())
    }))
}

/// Decodes and signature-checks fetched blocks in order, ahead of the reader
/// (`ahead`, with helper threads per block); passes a fetch failure through.
fn prepare(fetched: Ahead<BlockAnswer>, from_height: u64) -> Ahead<Prepared> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(VERIFY_THREADS_MAX);
    ahead(fetched.into_iter().map(move |answer| {
        answer.map(|a| {
            let check = a.height >= from_height;
            Prepared::new(a, check, threads)
        })
    }))
}

/// Runs `items` on a thread of its own, at most `PREFETCH_BLOCKS` ahead of the
/// receiver; stops after the first failure (sent as the last item) or when the
/// receiver is gone.
fn ahead<T: Send + 'static>(items: impl Iterator<Item = std::result::Result<T, String>> + Send + 'static) -> Ahead<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(PREFETCH_BLOCKS);
    std::thread::spawn(move || {
        for item in items {
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                break;
            }
        }
    });
    rx
}

fn report_problem(problem: &Problem, json: bool, checked_to: u64) -> Outcome {
    match problem {
        Problem::Discrepancy { height, field, detail } => {
            if json {
                println!(
                    "{}",
                    json!({ "consistent": false, "checked_to": checked_to,
                            "discrepancy": { "height": height, "field": field.name(), "detail": detail } })
                );
            } else {
                println!("DISCREPANCY at {problem}");
            }
            Outcome::Invalid
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use annal_ledger::block::{Certificate, Height, View};
    use annal_ledger::exec::execute;
    use annal_ledger::exec::BlockMeta;
    use annal_ledger::genesis::{Agency, Params, Validator};
    use annal_ledger::keys::SecretKey;
    use annal_ledger::record::{Body, Op, Record, SignedRecord};

    pub(crate) fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    /// Four validators (keys 1..=4); agency "land" (officer 21) owns `land-titles`.
    pub(crate) fn genesis() -> Genesis {
        Genesis {
            chain_id: "annal-test".into(),
            genesis_time_ms: 1_764_000_000_000,
            validators: (1..=4)
                .map(|i| Validator {
                    name: format!("validator-{i}"),
                    consensus_key: key(i).public(),
                    p2p_key: key(10 + i).public(),
                    power: 1,
                })
                .collect(),
            agencies: vec![Agency {
                name: "land".into(),
                submitter_keys: vec![key(21).public()],
                namespaces: vec!["land-titles".into()],
            }],
            params: Params::default(),
        }
    }

    fn publish(n: u64) -> SignedRecord {
        Record {
            chain_id: "annal-test".into(),
            namespace: "land-titles".into(),
            key: format!("parcel/{n}"),
            op: Op::Publish,
            body: Body::Inline(format!("deed {n}").into_bytes()),
            metadata: Default::default(),
            supersedes: None,
            version: 1,
            submitter: key(21).public(),
            nonce: n,
        }
        .sign(&key(21))
    }

    /// A chain of `blocks` blocks of three records each, as the node's block API serves it.
    pub(crate) fn chain(blocks: u64) -> Vec<BlockAnswer> {
        let g = genesis();
        let gov = Governance::genesis(&g);
        let set = g.validator_set();
        let mut state = MemoryState::default();
        let mut frontier = Frontier::new();
        let mut parent = g.hash();
        let mut out = Vec::new();
        for h in 1..=blocks {
            let records: Vec<SignedRecord> = (0..3).map(|i| publish(h * 10 + i)).collect();
            let executed = execute(&gov, Height(h), &state, &frontier, &records, Signatures::Verify).unwrap();
            let meta = BlockMeta {
                height: Height(h),
                view: View(h),
                parent,
                time_ms: g.genesis_time_ms + h,
                proposer: 0,
                validators_hash: set.hash(),
            };
            let header = executed.header(&g.chain_id, &meta);
            let (k1, k2, k3) = (key(1), key(2), key(3));
            let cert = Certificate::sign(&header, &set, &[(0, &k1), (1, &k2), (2, &k3)]);
            out.push(BlockAnswer {
                height: h,
                hash: hex::encode(header.hash()),
                header: B64.encode(header.to_bytes()),
                checkpoint: Some(cert.to_note(&header, &set).to_string()),
                records: executed.records.iter().map(|b| B64.encode(b)).collect(),
                first_index: executed.first_index,
            });
            state.absorb(&executed);
            frontier = executed.frontier;
            parent = header.hash();
        }
        out
    }

    fn audit_blocks(blocks: &[BlockAnswer], certified_height: u64) -> Result<u64, Problem> {
        let mut replay = Replay::new(&genesis(), certified_height);
        for b in blocks {
            replay.check(&prepared(b))?;
        }
        Ok(replay.height)
    }

    fn prepared(block: &BlockAnswer) -> Prepared {
        Prepared::new(block.clone(), true, 1)
    }

    /// Re-encodes block `i`'s header after `change`, keeping the node's stated hash consistent.
    fn tamper_header(blocks: &mut [BlockAnswer], i: usize, change: impl FnOnce(&mut Header)) {
        let mut header = Header::from_bytes(&B64.decode(&blocks[i].header).unwrap()).unwrap();
        change(&mut header);
        blocks[i].header = B64.encode(header.to_bytes());
        blocks[i].hash = hex::encode(header.hash());
    }

    /// Replaces the first record of the first block with a copy whose signature does not verify.
    fn spoil_first_signature(blocks: &mut [BlockAnswer]) {
        let mut r = publish(10);
        r.signature.0[0] ^= 1;
        blocks[0].records[0] = B64.encode(r.to_bytes());
    }

    fn field_at(result: Result<u64, Problem>) -> (u64, Field) {
        match result {
            Err(Problem::Discrepancy { height, field, .. }) => (height, field),
            other => panic!("expected a discrepancy, got {other:?}"),
        }
    }

    #[test]
    fn an_honest_chain_passes() {
        // Goal: blocks built by executing and certifying records replay to their own headers.
        assert_eq!(audit_blocks(&chain(4), 4), Ok(4));
    }

    #[test]
    fn a_tampered_state_root_is_the_first_discrepancy() {
        // Goal: a header whose state_root differs from the replay is named by height and field, even
        // though its hash and parent link were made to agree (a node that rewrote history consistently).
        let mut blocks = chain(4);
        tamper_header(&mut blocks, 2, |h| h.state_root = [0xee; 32]);
        assert_eq!(field_at(audit_blocks(&blocks, 0)), (3, Field::Checkpoint), "the certificate no longer matches");
        let mut blocks = chain(4);
        tamper_header(&mut blocks, 2, |h| h.state_root = [0xee; 32]);
        blocks[2].checkpoint = None;
        assert_eq!(field_at(audit_blocks(&blocks, 0)), (3, Field::StateRoot));
    }

    #[test]
    fn a_changed_record_is_caught_at_its_block() {
        // Goal: swapping a record for another valid one breaks records_root at that block, not later.
        let mut blocks = chain(3);
        blocks[1].records[2] = B64.encode(publish(25).to_bytes());
        assert_eq!(field_at(audit_blocks(&blocks, 3)), (2, Field::RecordsRoot));
    }

    #[test]
    fn a_dropped_record_shifts_the_log() {
        // Goal: a block that omits an appended record fails on its roots.
        let mut blocks = chain(3);
        blocks[0].records.pop();
        assert_eq!(field_at(audit_blocks(&blocks, 3)), (1, Field::RecordsRoot));
    }

    #[test]
    fn a_record_that_execution_refuses_is_named() {
        // Goal: a block serving a record that the rules refuse (a replayed record) fails on `records`.
        let mut blocks = chain(3);
        let replayed = blocks[0].records[0].clone();
        blocks[2].records[0] = replayed;
        assert_eq!(field_at(audit_blocks(&blocks, 3)), (3, Field::Records));
    }

    #[test]
    fn a_bad_signature_on_a_record_is_caught() {
        // Goal: the replay verifies record signatures; a record whose signature was changed is refused.
        let mut blocks = chain(2);
        spoil_first_signature(&mut blocks);
        assert_eq!(field_at(audit_blocks(&blocks, 2)), (1, Field::Records));
    }

    #[test]
    fn signatures_checked_in_runs_name_the_first_bad_record() {
        // Goal: split across threads, the check still names the first bad record of the block,
        // whichever run it falls in, and finds none in an honest block.
        let mut records: Vec<Encoded> = (0..10).map(|n| Encoded::from(publish(n))).collect();
        for threads in [1, 3, 4, 10, 16] {
            assert_eq!(first_bad_signature(&records, threads), None, "{threads} threads");
        }
        for bad in [8, 4] {
            let mut r = records[bad].to_signed();
            r.signature.0[5] ^= 1;
            records[bad] = Encoded::from(r);
        }
        for threads in [1, 3, 4, 10, 16] {
            assert_eq!(first_bad_signature(&records, threads), Some(4), "{threads} threads");
        }
    }

    #[test]
    fn an_undecodable_record_is_named() {
        // Goal: a record that is not base64, or not a canonical record, fails its block on `records`.
        for bad in ["not base64!".to_string(), B64.encode([1u8, 2, 3])] {
            let mut blocks = chain(2);
            blocks[1].records[1] = bad;
            match audit_blocks(&blocks, 2) {
                Err(Problem::Discrepancy { height: 2, field: Field::Records, detail }) => {
                    assert!(detail.starts_with("record 1"), "{detail}")
                }
                other => panic!("expected record 1 named, got {other:?}"),
            }
        }
    }

    #[test]
    fn signatures_below_from_height_are_not_checked() {
        // Goal: a block prepared without signature checks (below `--from-height`) does not fail on
        // its bad signature; the changed record still fails the roots, since its id changed.
        let mut blocks = chain(2);
        spoil_first_signature(&mut blocks);
        let field = |check| match Replay::new(&genesis(), 0).check(&Prepared::new(blocks[0].clone(), check, 2)) {
            Err(Problem::Discrepancy { field, .. }) => field,
            Ok(_) => panic!("a changed record passed"),
        };
        assert_eq!(field(true), Field::Records);
        assert_eq!(field(false), Field::RecordsRoot);
    }

    #[test]
    fn broken_links_are_named() {
        // Goal: wrong parent, wrong stated hash, wrong height and wrong first index each name their field.
        let mut blocks = chain(3);
        tamper_header(&mut blocks, 1, |h| h.parent = [7; 32]);
        assert_eq!(field_at(audit_blocks(&blocks, 0)), (2, Field::Parent));
        let mut blocks = chain(3);
        blocks[1].hash = hex::encode([7u8; 32]);
        assert_eq!(field_at(audit_blocks(&blocks, 3)), (2, Field::Hash));
        let mut blocks = chain(3);
        blocks.remove(1);
        assert_eq!(field_at(audit_blocks(&blocks, 3)), (2, Field::Height));
        let mut blocks = chain(3);
        blocks[1].first_index += 1;
        assert_eq!(field_at(audit_blocks(&blocks, 3)), (2, Field::FirstIndex));
    }

    #[test]
    fn checkpoints_need_a_quorum_of_the_set_in_force() {
        // Goal: a checkpoint signed by too few validators fails, naming the checkpoint field.
        let mut blocks = chain(2);
        let g = genesis();
        let header = Header::from_bytes(&B64.decode(&blocks[1].header).unwrap()).unwrap();
        let set = g.validator_set();
        let (k1, k2) = (key(1), key(2));
        let weak = Certificate::sign(&header, &set, &[(0, &k1), (1, &k2)]);
        blocks[1].checkpoint = Some(weak.to_note(&header, &set).to_string());
        assert_eq!(field_at(audit_blocks(&blocks, 2)), (2, Field::Checkpoint));
    }

    #[test]
    fn missing_checkpoints_fail_only_below_the_certified_height() {
        // Goal: the last blocks may still lack a certificate; a block the node calls certified may not.
        let mut blocks = chain(3);
        blocks[2].checkpoint = None;
        let mut replay = Replay::new(&genesis(), 2);
        for b in &blocks[..2] {
            assert!(!replay.check(&prepared(b)).unwrap().uncertified);
        }
        assert_eq!(replay.check(&prepared(&blocks[2])), Ok(Checked { records: 3, uncertified: true, signed: false }));
        assert_eq!(field_at(audit_blocks(&blocks, 3)), (3, Field::Checkpoint));
    }

    /// Runs `annal audit --json` against a stand-in node serving `status` and then `blocks`.
    fn audit_served(blocks: &[BlockAnswer], certified_height: u64, from_height: u64) -> Outcome {
        audit_served_with(blocks, certified_height, from_height, None)
    }

    fn audit_served_with(
        blocks: &[BlockAnswer],
        certified_height: u64,
        from_height: u64,
        uncertified_max: Option<u64>,
    ) -> Outcome {
        use annal_cli::canned::{answer, serve};
        let g = genesis();
        let status = json!({ "chain_id": g.chain_id, "genesis_hash": hex::encode(g.hash()),
                             "height": blocks.len(), "certified_height": certified_height });
        let mut answers = vec![answer("200 OK", status.to_string().as_bytes(), "")];
        for b in blocks {
            let body = json!({ "height": b.height, "hash": b.hash, "header": b.header, "checkpoint": b.checkpoint,
                               "records": b.records, "first_index": b.first_index });
            answers.push(answer("200 OK", body.to_string().as_bytes(), ""));
        }
        // One file per call: tests run on parallel threads of one process.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("annal-audit-served-{}-{call}.json", std::process::id()));
        std::fs::write(&path, serde_json::to_string(&g).unwrap()).unwrap();
        let args = AuditArgs { node: serve(answers), genesis: path.clone(), from_height, uncertified_max, json: true };
        let outcome = audit(args);
        let _ = std::fs::remove_file(&path);
        outcome
    }

    #[test]
    fn an_audit_that_checked_no_checkpoint_does_not_pass() {
        // Goal (review, session 22): blocks that replay to their own headers prove nothing by
        // themselves (a node can build them from records it holds); without one checkpoint
        // checked, nothing ties them to the validators, and the audit must not exit 0.
        assert_eq!(audit_served(&chain(3), 3, 1), Outcome::Valid);
        let mut stripped = chain(3);
        for b in &mut stripped {
            b.checkpoint = None;
        }
        assert_eq!(audit_served(&stripped, 0, 1), Outcome::Unreadable);
        // Signatures taken as checked below --from-height: none above it to check.
        assert_eq!(audit_served(&chain(3), 3, 4), Outcome::Unreadable);
    }

    #[test]
    fn a_long_uncertified_tail_fails_when_bounded() {
        // Goal (left alone in session 22, done in 23): blocks above the last checked
        // checkpoint rest on the node's word; an auditor can bound how many may.
        let mut tail = chain(4);
        for b in &mut tail[1..] {
            b.checkpoint = None;
        }
        assert_eq!(audit_served_with(&tail, 1, 1, None), Outcome::Valid, "unbounded: printed, passes");
        assert_eq!(audit_served_with(&tail, 1, 1, Some(3)), Outcome::Valid, "three blocks above, three allowed");
        assert_eq!(audit_served_with(&tail, 1, 1, Some(2)), Outcome::Unreadable, "three above, two allowed");
        assert_eq!(audit_served_with(&chain(4), 4, 1, Some(0)), Outcome::Valid, "every block vouched for");
    }

    #[test]
    fn a_validator_set_change_the_replay_does_not_make_is_a_discrepancy() {
        // Goal: the audit replays governance, so it knows each block's next set; a header announcing
        // another set than the replay computes is named.
        let mut blocks = chain(2);
        tamper_header(&mut blocks, 0, |h| h.next_validators_hash = [9; 32]);
        blocks[0].checkpoint = None;
        assert_eq!(field_at(audit_blocks(&blocks, 0)), (1, Field::NextValidatorsHash));
    }

    #[test]
    fn block_answer_limit_fits_a_full_block() {
        // Goal: the response limit admits the largest block genesis allows, in base64 inside JSON.
        let g = genesis();
        let p = &g.params;
        assert!(block_answer_bytes_max(&g) > (p.block_bytes_max as u64 + p.record_bytes_max as u64) * 4 / 3);
    }
}
