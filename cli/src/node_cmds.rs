//! The agency and auditor commands that talk to a node: `submit`, `get`,
//! `history`, `prove`, `checkpoint`, `consistency`, `status`.
//!
//! Each command asks the node (docs/API.md) and checks what it can offline:
//! record ids are recomputed from the bytes the node returns, bundles and
//! checkpoints are parsed before they are saved, consistency proofs are
//! verified with the ledger's verifier against the genesis file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use annal_ledger::genesis::Genesis;
use annal_ledger::keys::{PublicKey, SecretKey};
use annal_ledger::note::{Checkpoint, SignedNote, NOTE_BYTES_MAX};
use annal_ledger::proof::{self, Bundle, Consistency, BUNDLE_BYTES_MAX};
use annal_ledger::record::{Body, DocumentAnchor, Op, Record, RecordId, SignedRecord};
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{path_segment, Client, ClientError, SMALL_BYTES_MAX};
use crate::verify::Outcome;

/// Attempts at a request the node answers with "retry later" (`mempool_full`, `not_certified`).
pub const ATTEMPTS_MAX: u32 = 5;
/// The largest `--body-file` read; the chain's own limit (`body_bytes_max`) is usually far lower.
pub const BODY_FILE_BYTES_MAX: u64 = 16 << 20;
/// The largest history answer read.
const HISTORY_BYTES_MAX: u64 = 16 << 20;
/// How long `submit --wait` waits for the node's answer (the node's own default wait is 30 s).
const WAIT_FINAL_TIMEOUT: Duration = Duration::from_secs(45);

// ---------------------------------------------------------------- submit

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("content").required(true).args(["body_file", "document", "revoke"])))]
pub struct SubmitArgs {
    /// The node's API address, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    node: String,
    /// The officer's key file (`annal keys new`); its public key must be a submitter key in genesis.
    #[arg(long)]
    signer: PathBuf,
    /// The namespace, granted to the signer's agency in genesis.
    #[arg(long)]
    namespace: String,
    /// The record key within the namespace (e.g. parcel/0042).
    #[arg(long)]
    key: String,
    /// Inline body: the file's bytes go into the record.
    #[arg(long, conflicts_with_all = ["document", "revoke"])]
    body_file: Option<PathBuf>,
    /// Anchor this document instead of inlining it: its SHA-256, size and media type go into the record.
    #[arg(long, conflicts_with = "revoke")]
    document: Option<PathBuf>,
    /// The anchored document's media type.
    #[arg(long, requires = "document", default_value = "application/octet-stream")]
    media_type: String,
    /// A metadata entry (repeatable), e.g. --meta basis="Act 12 s.3".
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Publish a new version of the key, superseding record ID (its current head).
    #[arg(long, value_name = "ID", conflicts_with = "revoke")]
    amend: Option<String>,
    /// Revoke the key, superseding record ID (its current head); needs --reason.
    #[arg(long, value_name = "ID", requires = "reason")]
    revoke: Option<String>,
    /// Why the key is revoked: the revocation's inline body.
    #[arg(long, requires = "revoke")]
    reason: Option<String>,
    /// Wait until the record is in a final block and print its log index and height.
    #[arg(long)]
    wait: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What the user asked to write, before the node's facts (chain id, nonce, head) are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    pub namespace: String,
    pub key: String,
    pub op: Op,
    pub body: Body,
    pub metadata: BTreeMap<String, String>,
}

/// The head a new version supersedes, as the node reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Supersedes {
    pub id: RecordId,
    pub version: u64,
}

/// The next nonce: above the last one in a final block, and at least the current
/// time in microseconds, so records sent in a row while earlier ones are still
/// pending get increasing nonces too. `None` when the last nonce is already `u64::MAX`.
pub fn next_nonce(last_nonce: Option<u64>, now_us: u64) -> Option<u64> {
    match last_nonce {
        None => Some(now_us),
        Some(last) => last.checked_add(1).map(|next| next.max(now_us)),
    }
}

/// The unsigned record for `draft`: version 1 for a publish, the head's version + 1 otherwise.
pub fn build_record(
    chain_id: &str,
    draft: Draft,
    head: Option<Supersedes>,
    submitter: PublicKey,
    nonce: u64,
) -> Result<Record> {
    let (supersedes, version) = match (draft.op, head) {
        (Op::Publish, None) => (None, 1),
        (Op::Amend | Op::Revoke, Some(h)) => {
            let version = h.version.checked_add(1).ok_or_else(|| anyhow!("the head's version is at the maximum"))?;
            (Some(h.id), version)
        }
        (op, head) => bail!("{} with supersedes {:?} is not a valid record", op.name(), head.map(|h| h.id)),
    };
    Ok(Record {
        chain_id: chain_id.into(),
        namespace: draft.namespace,
        key: draft.key,
        op: draft.op,
        body: draft.body,
        metadata: draft.metadata,
        supersedes,
        version,
        submitter,
        nonce,
    })
}

/// The `POST /v1/records` path and body for a signed record.
pub fn submit_request(signed: &SignedRecord, wait: bool) -> (&'static str, Value) {
    let path = if wait { "/v1/records?wait=final" } else { "/v1/records" };
    (path, json!({ "record": B64.encode(signed.to_bytes()) }))
}

/// Parses `--meta KEY=VALUE` entries, refusing a key given twice.
pub fn parse_metadata(entries: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for entry in entries {
        let (k, v) = entry.split_once('=').ok_or_else(|| anyhow!("--meta {entry:?} is not KEY=VALUE"))?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            bail!("--meta key {k:?} is given twice");
        }
    }
    Ok(out)
}

/// A document anchor: the file's SHA-256 and size, read in a stream.
pub fn anchor_document(path: &Path, media_type: &str) -> Result<DocumentAnchor> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(DocumentAnchor { sha256: hasher.finalize().into(), size, media_type: media_type.into() })
}

/// Reads at most `max` bytes of `path` (a pipe too); more is an error naming `what` and the limit.
pub fn read_limited(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    annal_ledger::read_file_max(path, max).with_context(|| format!("reading {what} {}", path.display()))
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros().min(u64::MAX as u128) as u64)
}

#[derive(Deserialize)]
struct StatusAnswer {
    chain_id: String,
    height: u64,
}

#[derive(Deserialize)]
struct NonceAnswer {
    last_nonce: Option<u64>,
}

/// The part of `GET /v1/records/{id}` the commands use; the rest is passed through.
#[derive(Deserialize)]
struct RecordAnswer {
    id: String,
    status: String,
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    version: Option<u64>,
}

#[derive(Deserialize)]
struct SubmitAnswer {
    id: String,
    status: String,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    height: Option<u64>,
}

pub fn parse_id(s: &str) -> Result<RecordId> {
    RecordId::from_hex(s.trim()).map_err(|e| anyhow!("{e}"))
}

/// The head named by `--amend`/`--revoke`, checked to be a final record of the same key.
fn fetch_head(client: &Client, id: &RecordId, namespace: &str, key: &str) -> Result<Supersedes> {
    let answer: RecordAnswer = client.get_json(&format!("/v1/records/{id}"), SMALL_BYTES_MAX)?;
    if answer.status != "final" {
        bail!("record {id} is {}, not final; only a final record can be superseded", answer.status);
    }
    let (Some(ns), Some(k), Some(version)) = (answer.namespace, answer.key, answer.version) else {
        bail!("{}: the node's answer for final record {id} lacks namespace, key or version", client.base());
    };
    if ns != namespace || k != key {
        bail!("record {id} is {ns}/{k}, not {namespace}/{key}");
    }
    Ok(Supersedes { id: *id, version })
}

/// Runs `f` until the node stops answering `retry_code`, waiting as it asks, at most `ATTEMPTS_MAX` times.
pub fn with_retries<T>(
    retry_codes: &[&str],
    json: bool,
    mut f: impl FnMut() -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let mut attempt = 1;
    loop {
        match f() {
            Err(e) if attempt < ATTEMPTS_MAX && e.code().is_some_and(|c| retry_codes.contains(&c)) => {
                let wait = e.retry_after(Duration::from_secs(1));
                if !json {
                    eprintln!("{e}; retrying in {}s (attempt {attempt} of {ATTEMPTS_MAX})", wait.as_secs_f32());
                }
                std::thread::sleep(wait);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// What a signer needs from the node before signing: the chain id, the node's tip height,
/// and the submitter's next nonce.
pub struct SigningFacts {
    pub chain_id: String,
    pub height: u64,
    pub nonce: u64,
}

/// Asks the node for the chain id, its height and `submitter`'s next nonce (`next_nonce`).
pub fn signing_facts(client: &Client, submitter: &PublicKey) -> Result<SigningFacts> {
    let status: StatusAnswer = client.get_json("/v1/status", SMALL_BYTES_MAX)?;
    let nonces: NonceAnswer = client.get_json(&format!("/v1/nonces/{submitter}"), SMALL_BYTES_MAX)?;
    let nonce = next_nonce(nonces.last_nonce, now_us())
        .ok_or_else(|| anyhow!("submitter {submitter} has used nonce {}; no higher one exists", u64::MAX))?;
    Ok(SigningFacts { chain_id: status.chain_id, height: status.height, nonce })
}

/// The node's answer to a submitted record.
pub struct Submitted {
    pub id: RecordId,
    /// `pending` or `final`.
    pub status: String,
    /// The log index and block height, once final.
    pub placed: Option<(u64, u64)>,
}

/// Submits a signed record (`POST /v1/records`), retrying while the node is busy; with `wait`,
/// until it is in a final block. Errors name what to do next.
pub fn send_signed(client: &Client, signed: &SignedRecord, wait: bool, json: bool) -> Result<Submitted> {
    let id = signed.id();
    let (path, body) = submit_request(signed, wait);
    let timeout = if wait { WAIT_FINAL_TIMEOUT } else { crate::client::RESPONSE_TIMEOUT };
    let answer: SubmitAnswer = match with_retries(&["mempool_full", "rate_limited"], json, || {
        client.post_json(path, &body, timeout, SMALL_BYTES_MAX)
    }) {
        Ok(a) => a,
        Err(e) if e.code() == Some("timeout") => {
            bail!(
                "{e}\nrecord {id} was accepted and is still pending; `annal get --node {} {id}` shows when it is final",
                client.base()
            )
        }
        Err(e) if matches!(e.code(), Some("mempool_full" | "rate_limited")) => {
            bail!("{e}\nthe node was still busy after {ATTEMPTS_MAX} attempts; record {id} was not accepted, try again later")
        }
        Err(e) => return Err(e.into()),
    };
    if answer.id != id.to_hex() {
        bail!("the node answered with id {}, but the record sent has id {id}", answer.id);
    }
    let placed = answer.index.zip(answer.height);
    Ok(Submitted { id, status: answer.status, placed })
}

pub fn submit(args: SubmitArgs) -> Result<()> {
    let client = Client::new(&args.node)?;
    let signer = SecretKey::read_file(&args.signer)?;
    let metadata = parse_metadata(&args.meta)?;
    let (op, target) = match (&args.amend, &args.revoke) {
        (Some(id), None) => (Op::Amend, Some(parse_id(id)?)),
        (None, Some(id)) => (Op::Revoke, Some(parse_id(id)?)),
        _ => (Op::Publish, None),
    };
    let body = match (&args.body_file, &args.document, &args.reason) {
        (Some(f), _, _) => Body::Inline(read_limited(f, BODY_FILE_BYTES_MAX, "body file")?),
        (_, Some(d), _) => Body::Document(anchor_document(d, &args.media_type)?),
        (_, _, Some(reason)) => Body::Inline(reason.as_bytes().to_vec()),
        (None, None, None) => unreachable!("clap requires --body-file, --document or --revoke with --reason"),
    };
    let draft = Draft { namespace: args.namespace.clone(), key: args.key.clone(), op, body, metadata };

    let head = match &target {
        Some(id) => Some(fetch_head(&client, id, &args.namespace, &args.key)?),
        None => None,
    };
    let submitter = signer.public();
    let facts = signing_facts(&client, &submitter)?;
    let nonce = facts.nonce;
    let record = build_record(&facts.chain_id, draft, head, submitter, nonce)?;
    let version = record.version;
    let sent = send_signed(&client, &record.sign(&signer), args.wait, args.json)?;
    let id = sent.id;
    if args.json {
        let mut out =
            json!({ "id": id.to_hex(), "status": sent.status, "op": op.name(), "version": version, "nonce": nonce });
        if let Some((index, height)) = sent.placed {
            out["index"] = json!(index);
            out["height"] = json!(height);
        }
        println!("{out}");
    } else {
        println!("{id}");
        match sent.placed {
            Some((index, height)) => println!("{} final at log index {index}, height {height}", op.name()),
            None => println!("{} {} (version {version}, nonce {nonce})", op.name(), sent.status),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- get, history

/// `GET /v1/records/{id}`, with the record bytes (when present) checked to hash to `id`.
fn fetch_record(client: &Client, id: &RecordId) -> Result<(Value, Option<Vec<u8>>)> {
    let value: Value = client.get_json(&format!("/v1/records/{id}"), SMALL_BYTES_MAX)?;
    let answer: RecordAnswer = serde_json::from_value(value.clone())
        .map_err(|e| anyhow!("{}: the record answer is not as docs/API.md says: {e}", client.base()))?;
    if answer.id != id.to_hex() {
        bail!("asked the node for record {id}, it answered with {}", answer.id);
    }
    let bytes = match &answer.record {
        Some(b64) => {
            let bytes = B64.decode(b64).map_err(|e| anyhow!("the node's record bytes are not base64: {e}"))?;
            let got = SignedRecord::id_of_bytes(&bytes);
            if got != *id {
                bail!("the node's bytes for record {id} hash to {got}: it sent another record");
            }
            Some(bytes)
        }
        None => None,
    };
    Ok((value, bytes))
}

pub fn get(node: &str, id: &str, json: bool) -> Result<()> {
    let client = Client::new(node)?;
    let id = parse_id(id)?;
    let (value, _) = fetch_record(&client, &id)?;
    if json {
        println!("{value}");
        return Ok(());
    }
    for line in describe_record(&value) {
        println!("{line}");
    }
    Ok(())
}

/// Lines of text for a record answer.
fn describe_record(v: &Value) -> Vec<String> {
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
    let n = |k: &str| v[k].as_u64().map_or("?".into(), |n| n.to_string());
    let mut lines = vec![format!("id         {}", s("id"))];
    match v["status"].as_str() {
        Some("final") => {}
        Some("refused") => {
            lines.push(format!("status     refused: {}", v["error"]["detail"].as_str().unwrap_or("?")));
            return lines;
        }
        other => {
            lines.push(format!("status     {}", other.unwrap_or("?")));
            return lines;
        }
    }
    lines.push(format!("status     final at log index {}, height {}", n("index"), n("height")));
    lines.push(format!("record     {}/{} version {} ({})", s("namespace"), s("key"), n("version"), s("op")));
    if let Some(sup) = v["supersedes"].as_str() {
        lines.push(format!("supersedes {sup}"));
    }
    lines.push(format!("submitter  {} (nonce {})", s("submitter"), n("nonce")));
    if let Some(doc) = v["body"].get("document") {
        lines.push(format!(
            "document   sha256 {}, {} bytes, {}",
            doc["sha256"].as_str().unwrap_or("?"),
            doc["size"].as_u64().map_or("?".into(), |n| n.to_string()),
            doc["media_type"].as_str().unwrap_or("?")
        ));
    } else if let Some(inline) = v["body"]["inline"].as_str() {
        let bytes = B64.decode(inline).unwrap_or_default();
        match std::str::from_utf8(&bytes) {
            Ok(text) if !text.chars().any(|c| c.is_control() && c != '\n') && text.len() <= 200 => {
                lines.push(format!("body       {text:?}"))
            }
            _ => lines.push(format!("body       {} bytes inline", bytes.len())),
        }
    }
    if let Some(meta) = v["metadata"].as_object() {
        for (k, val) in meta {
            lines.push(format!("metadata   {k} = {}", val.as_str().unwrap_or("?")));
        }
    }
    lines
}

pub fn history(
    node: &str,
    namespace: &str,
    key: &str,
    before: Option<&str>,
    limit: Option<u32>,
    json: bool,
) -> Result<()> {
    let client = Client::new(node)?;
    let mut path = format!("/v1/history/{}/{}", path_segment(namespace), path_segment(key));
    let query: Vec<String> =
        [before.map(|b| format!("before={}", path_segment(b))), limit.map(|n| format!("limit={n}"))]
            .into_iter()
            .flatten()
            .collect();
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let value: Value = client.get_json(&path, HISTORY_BYTES_MAX)?;
    if json {
        println!("{value}");
        return Ok(());
    }
    let head = &value["head"];
    println!(
        "{namespace}/{key}: head {} version {} ({})",
        head["id"].as_str().unwrap_or("?"),
        head["version"].as_u64().map_or("?".into(), |n| n.to_string()),
        head["status"].as_str().unwrap_or("?")
    );
    for v in value["versions"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let n = |k: &str| v[k].as_u64().map_or("?".into(), |n| n.to_string());
        println!(
            "  version {:<4} index {:<8} height {:<8} {}",
            n("version"),
            n("index"),
            n("height"),
            v["id"].as_str().unwrap_or("?")
        );
    }
    if let Some(earlier) = value["earlier"].as_str() {
        println!("older versions: the same command with --before {earlier}");
    }
    Ok(())
}

// ---------------------------------------------------------------- prove, checkpoint

#[derive(clap::Args)]
pub struct ProveArgs {
    /// The node's API address, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    node: String,
    /// The record id (64 hex characters).
    id: String,
    /// Where to save the proof bundle (default: <id>.bundle.json); an existing file is not overwritten.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also save the record's inclusion as a C2SP tlog-proof.
    #[arg(long)]
    tlog_proof: Option<PathBuf>,
    /// Also save the signed record's canonical bytes (its leaf is SHA-256(0x00 || bytes)).
    #[arg(long)]
    record_bytes: Option<PathBuf>,
    /// Include a proof of the key's current state (for `annal verify --current`).
    #[arg(long)]
    status: bool,
    /// A checkpoint you hold (saved with `annal checkpoint --out`): also save the consistency proof between
    /// it and the record's block to --consistency, for `annal verify --held CHECKPOINT --consistency FILE`.
    #[arg(long, value_name = "CHECKPOINT", requires = "consistency")]
    held: Option<PathBuf>,
    /// Where to save that consistency proof; an existing file is not overwritten.
    #[arg(long, value_name = "FILE", requires = "held")]
    consistency: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn prove(args: ProveArgs) -> Result<()> {
    let client = Client::new(&args.node)?;
    let id = parse_id(&args.id)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("{id}.bundle.json")));
    for path in [Some(&out), args.tlog_proof.as_ref(), args.record_bytes.as_ref(), args.consistency.as_ref()]
        .into_iter()
        .flatten()
    {
        crate::ensure_absent(path)?;
    }
    let held = match &args.held {
        Some(path) => Some((path, read_checkpoint(path)?.1)),
        None => None,
    };
    let query = if args.status { "?status=true" } else { "" };
    let text = with_retries(&["not_certified"], args.json, || {
        client.get_text(&format!("/v1/proofs/{id}{query}"), BUNDLE_BYTES_MAX as u64)
    })?;
    let parsed = Bundle::from_json(&text).map_err(|e| anyhow!("the node's bundle is not a proof bundle: {e}"))?;
    if parsed.record.decoded.id != id.to_hex() {
        bail!("asked for the bundle of {id}, the node sent one for {}", parsed.record.decoded.id);
    }
    // Everything is fetched before anything is written: a failure leaves no file behind
    // (a second try would find one and refuse to overwrite it).
    let mut files: Vec<(&Path, Vec<u8>)> = vec![(out.as_path(), parsed.to_json().into_bytes())];
    if let Some(path) = &args.tlog_proof {
        let tlog = with_retries(&["not_certified"], args.json, || {
            client.get_text(&format!("/v1/proofs/{id}?format=tlog-proof"), BUNDLE_BYTES_MAX as u64)
        })?;
        files.push((path, tlog.into_bytes()));
    }
    if let Some(path) = &args.record_bytes {
        let (_, bytes) = fetch_record(&client, &id)?;
        let bytes = bytes.ok_or_else(|| anyhow!("the node's answer for record {id} has no record bytes"))?;
        files.push((path, bytes));
    }
    let mut next = format!("annal verify --genesis GENESIS {}", out.display());
    if let (Some((held_path, held_height)), Some(path)) = (held, &args.consistency) {
        let block_height = checkpoint_height(&parsed.block.checkpoint)
            .map_err(|e| anyhow!("the node's bundle has no readable checkpoint: {e}"))?;
        let (from, to) = (held_height.min(block_height), held_height.max(block_height));
        let text = client.get_text(&format!("/v1/consistency?from={from}&to={to}"), BUNDLE_BYTES_MAX as u64)?;
        let proof =
            Consistency::from_json(&text).map_err(|e| anyhow!("the node's answer is not a consistency proof: {e}"))?;
        files.push((path, proof.to_json().into_bytes()));
        next.push_str(&format!(" --held {} --consistency {}", held_path.display(), path.display()));
    }
    for (path, bytes) in files {
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        let display = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        println!(
            "{}",
            json!({ "id": id.to_hex(), "bundle": out.display().to_string(), "tlog_proof": display(&args.tlog_proof),
                    "record_bytes": display(&args.record_bytes), "consistency": display(&args.consistency),
                    "status": parsed.status.is_some(), "next": next })
        );
    } else {
        println!("saved the proof bundle of {id} to {}", out.display());
        for (what, p) in [
            ("tlog-proof", &args.tlog_proof),
            ("record bytes", &args.record_bytes),
            ("consistency proof with the checkpoint you hold", &args.consistency),
        ] {
            if let Some(p) = p {
                println!("saved the {what} to {}", p.display());
            }
        }
        println!("check it offline, holding only the genesis file:\n  {next}");
    }
    Ok(())
}

#[derive(Deserialize)]
struct CheckpointAnswer {
    height: u64,
    log_size: u64,
    log_root: String,
    checkpoint: String,
}

pub fn checkpoint(node: &str, out: Option<&Path>, json: bool) -> Result<()> {
    let client = Client::new(node)?;
    if let Some(path) = out {
        crate::ensure_absent(path)?;
    }
    let value: Value = client.get_json("/v1/checkpoint", SMALL_BYTES_MAX)?;
    let answer: CheckpointAnswer = serde_json::from_value(value.clone())
        .map_err(|e| anyhow!("{}: the checkpoint answer is not as docs/API.md says: {e}", client.base()))?;
    let note = SignedNote::parse(&answer.checkpoint).map_err(|e| anyhow!("the node's checkpoint: {e}"))?;
    let cp = Checkpoint::parse(&note.text).map_err(|e| anyhow!("the node's checkpoint: {e}"))?;
    if cp.block.height != answer.height || cp.size != answer.log_size {
        bail!(
            "the node says height {} and log size {}, but its signed checkpoint says {} and {}",
            answer.height,
            answer.log_size,
            cp.block.height,
            cp.size
        );
    }
    if let Some(path) = out {
        std::fs::write(path, &answer.checkpoint).with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        println!("{value}");
    } else {
        println!(
            "checkpoint at height {}: log size {}, root {}, {} signatures",
            answer.height,
            answer.log_size,
            answer.log_root,
            note.signatures.len()
        );
        match out {
            Some(path) => println!(
                "saved to {}; later: annal consistency --node {} --genesis GENESIS --from {}",
                path.display(),
                client.base(),
                path.display()
            ),
            None => print!("{}", answer.checkpoint),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- consistency

#[derive(clap::Args)]
pub struct ConsistencyArgs {
    /// The node's API address, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    node: String,
    /// The chain's genesis file: the only thing trusted.
    #[arg(long)]
    genesis: PathBuf,
    /// A checkpoint saved earlier with `annal checkpoint --out`.
    #[arg(long)]
    from: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// A saved checkpoint (`annal checkpoint --out`): its text, read within the size
/// of a note, and its height.
pub fn read_checkpoint(path: &Path) -> Result<(String, u64)> {
    let text = String::from_utf8(read_limited(path, NOTE_BYTES_MAX as u64, "checkpoint")?)
        .map_err(|e| anyhow!("checkpoint {} is not UTF-8: {e}", path.display()))?;
    let height = checkpoint_height(&text).map_err(|e| anyhow!("{} is not a signed checkpoint: {e}", path.display()))?;
    Ok((text, height))
}

/// The height of a saved checkpoint note: the `block <height> <view> <hash>` line.
pub fn checkpoint_height(note: &str) -> Result<u64> {
    let signed = SignedNote::parse(note)?;
    Ok(Checkpoint::parse(&signed.text)?.block.height)
}

/// The outcome of checking a node's consistency proof against a saved checkpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsistencyVerdict {
    /// The node's log extends the saved one: `(old height, old size, new height, new size)`.
    Extends { old_height: u64, old_size: u64, new_height: u64, new_size: u64 },
    /// The proof does not verify: the node's log is not an extension of the saved one.
    Inconsistent(String),
    /// The proof is sound but not about exactly the saved file (its signature lines differ).
    NotThisFile(String),
}

/// Verifies `proof` offline against `genesis` and the saved note `held`.
pub fn judge_consistency(proof: &Consistency, genesis: &Genesis, held: &str) -> ConsistencyVerdict {
    match proof::verify_consistency(proof, genesis, Some(held)) {
        Err(e) => ConsistencyVerdict::Inconsistent(e.to_string()),
        Ok(_) if proof.old.checkpoint != held => ConsistencyVerdict::NotThisFile(
            "the node's copy of the old checkpoint has the same signed text as your file but other signature lines"
                .into(),
        ),
        Ok((old, new)) => ConsistencyVerdict::Extends {
            old_height: old.block.height,
            old_size: old.size,
            new_height: new.block.height,
            new_size: new.size,
        },
    }
}

pub fn consistency(args: ConsistencyArgs) -> Outcome {
    let json = args.json;
    let cannot = |msg: String| {
        if json {
            println!("{}", json!({ "consistent": null, "checked": false, "error": msg }));
        } else {
            eprintln!("could not check: {msg}");
        }
        Outcome::Unreadable
    };
    let genesis = match Genesis::load(&args.genesis) {
        Ok(g) => g,
        Err(e) => return cannot(e.to_string()),
    };
    let (held, height) = match read_checkpoint(&args.from) {
        Ok(read) => read,
        Err(e) => return cannot(format!("{e:#}")),
    };
    let proof = match Client::new(&args.node)
        .and_then(|c| c.get_text(&format!("/v1/consistency?from={height}"), BUNDLE_BYTES_MAX as u64))
    {
        Ok(text) => text,
        Err(e) => return cannot(e.to_string()),
    };
    let proof = match Consistency::from_json(&proof) {
        Ok(p) => p,
        Err(e) => return cannot(format!("the node's answer is not a consistency proof: {e}")),
    };
    match judge_consistency(&proof, &genesis, &held) {
        ConsistencyVerdict::Extends { old_height, old_size, new_height, new_size } => {
            if json {
                println!(
                    "{}",
                    json!({ "consistent": true, "checked": true, "old_height": old_height, "old_size": old_size,
                            "new_height": new_height, "new_size": new_size })
                );
            } else {
                println!(
                    "CONSISTENT the node's log at height {new_height} (size {new_size}) extends your checkpoint at height {old_height} (size {old_size})"
                );
            }
            Outcome::Valid
        }
        ConsistencyVerdict::Inconsistent(e) => {
            if json {
                println!("{}", json!({ "consistent": false, "checked": true, "error": e }));
            } else {
                println!("INCONSISTENT: {e}");
            }
            Outcome::Invalid
        }
        ConsistencyVerdict::NotThisFile(e) => cannot(e),
    }
}

// ---------------------------------------------------------------- status

/// The status keys `annal status --json` guarantees (docs/API.md names them).
pub const STATUS_KEYS: [&str; 7] = ["height", "view", "log_size", "log_root", "state_root", "peers", "sync"];

pub fn status(node: &str, json: bool) -> Result<()> {
    let client = Client::new(node)?;
    let v: Value = client.get_json("/v1/status", SMALL_BYTES_MAX)?;
    if let Some(missing) = STATUS_KEYS.iter().find(|k| v.get(**k).is_none()) {
        bail!("{}: the status answer has no {missing:?} (docs/API.md lists it)", client.base());
    }
    if json {
        let picked: serde_json::Map<String, Value> =
            STATUS_KEYS.iter().map(|k| (k.to_string(), v[*k].clone())).collect();
        println!("{}", Value::Object(picked));
        return Ok(());
    }
    let s = |k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    println!("chain       {} (genesis {})", s("chain_id"), s("genesis_hash"));
    println!("height      {} (certified {}), view {}", s("height"), s("certified_height"), s("view"));
    println!("log         size {}, root {}", s("log_size"), s("log_root"));
    println!("state root  {}", s("state_root"));
    println!("validator   {}", s("validator"));
    println!("peers       {}", s("peers"));
    match v["sync"]["state"].as_str() {
        Some("catching_up") => println!("sync        catching up to height {}", v["sync"]["target_height"]),
        Some(state) => println!("sync        {state}"),
        None => println!("sync        {}", s("sync")),
    }
    if v["mempool"].is_object() {
        println!(
            "mempool     {} records ({} bytes) of at most {} ({} bytes)",
            v["mempool"]["records"], v["mempool"]["bytes"], v["mempool"]["records_max"], v["mempool"]["bytes_max"]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_above_the_last_and_at_least_now() {
        // Goal: the nonce rises past the last final one and tracks the clock, and refuses to wrap.
        assert_eq!(next_nonce(None, 1_000), Some(1_000));
        assert_eq!(next_nonce(Some(5), 1_000), Some(1_000));
        assert_eq!(next_nonce(Some(5_000), 1_000), Some(5_001));
        assert_eq!(next_nonce(Some(1_000), 1_000), Some(1_001));
        assert_eq!(next_nonce(Some(u64::MAX), 1_000), None);
    }

    fn draft(op: Op) -> Draft {
        Draft {
            namespace: "land-titles".into(),
            key: "parcel/0042".into(),
            op,
            body: Body::Inline(b"deed".to_vec()),
            metadata: parse_metadata(&["basis=Act 12 s.3".into(), "ref=a=b".into()]).unwrap(),
        }
    }

    #[test]
    fn records_get_version_and_supersedes_from_the_head() {
        // Goal: publish is version 1 with no supersedes; amend and revoke are the head's version + 1 and name it.
        let submitter = SecretKey::from_seed([21; 32]).public();
        let r = build_record("annal-test", draft(Op::Publish), None, submitter, 7).unwrap();
        assert_eq!((r.version, r.supersedes, r.nonce), (1, None, 7));
        assert_eq!(r.metadata["ref"], "a=b", "only the first '=' splits a --meta entry");
        let head = Supersedes { id: RecordId([9; 32]), version: 3 };
        for op in [Op::Amend, Op::Revoke] {
            let r = build_record("annal-test", draft(op), Some(head), submitter, 8).unwrap();
            assert_eq!((r.version, r.supersedes, r.op), (4, Some(head.id), op));
        }
        assert!(build_record("annal-test", draft(Op::Publish), Some(head), submitter, 8).is_err());
        assert!(build_record("annal-test", draft(Op::Amend), None, submitter, 8).is_err());
    }

    #[test]
    fn metadata_refuses_duplicates_and_missing_equals() {
        // Goal: --meta entries are KEY=VALUE, each key once.
        assert!(parse_metadata(&["a=1".into(), "a=2".into()]).is_err());
        assert!(parse_metadata(&["novalue".into()]).is_err());
        assert_eq!(parse_metadata(&["a=".into()]).unwrap()["a"], "");
    }

    #[test]
    fn submit_request_carries_the_canonical_signed_bytes() {
        // Goal: the POST body is {"record": base64 of the canonical signed record}, and --wait asks for finality.
        let key = SecretKey::from_seed([21; 32]);
        let signed = build_record("annal-test", draft(Op::Publish), None, key.public(), 7).unwrap().sign(&key);
        let (path, body) = submit_request(&signed, false);
        assert_eq!(path, "/v1/records");
        let bytes = B64.decode(body["record"].as_str().unwrap()).unwrap();
        assert_eq!(bytes, signed.to_bytes());
        let decoded = SignedRecord::from_bytes(&bytes, &annal_ledger::genesis::Params::default()).unwrap();
        decoded.verify_signature().unwrap();
        assert_eq!(body.as_object().unwrap().len(), 1);
        assert_eq!(submit_request(&signed, true).0, "/v1/records?wait=final");
    }

    #[test]
    fn document_anchor_is_the_files_digest_and_size() {
        // Goal: --document anchors the file's SHA-256 and byte count, read in a stream.
        use sha2::Digest;
        let path = std::env::temp_dir().join(format!("annal-cli-doc-{}", std::process::id()));
        let content = vec![7u8; 100_003];
        std::fs::write(&path, &content).unwrap();
        let a = anchor_document(&path, "application/pdf").unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(a.size, 100_003);
        assert_eq!(a.sha256, <[u8; 32]>::from(sha2::Sha256::digest(&content)));
        assert_eq!(a.media_type, "application/pdf");
    }

    #[test]
    fn checkpoint_height_comes_from_the_block_line() {
        // Goal: a saved checkpoint's height is read from `block <height> <view> <hash>`, and junk is refused.
        let header = annal_ledger::block::Header {
            chain_id: "annal-test".into(),
            height: annal_ledger::block::Height(1234),
            view: annal_ledger::block::View(1240),
            parent: [1; 32],
            time_ms: 0,
            proposer: 0,
            records_root: [2; 32],
            log_size: 99,
            log_root: [3; 32],
            state_root: [4; 32],
            validators_hash: [5; 32],
            next_validators_hash: [5; 32],
            charter_hash: [6; 32],
        };
        let key = SecretKey::from_seed([1; 32]);
        let set = annal_ledger::block::ValidatorSet {
            validators: vec![annal_ledger::genesis::Validator {
                name: "validator-1".into(),
                consensus_key: key.public(),
                p2p_key: key.public(),
                power: 1,
            }],
        };
        let note = annal_ledger::block::Certificate::sign(&header, &set, &[(0, &key)]).to_note(&header, &set);
        assert_eq!(checkpoint_height(&note.to_string()).unwrap(), 1234);
        assert!(checkpoint_height(&note.text).is_err(), "an unsigned text is not a saved checkpoint");
        assert!(checkpoint_height("annal/x\n1\nAAAA\nblock 1 1 00\n\n— v AAAAAAAA\n").is_err());
    }

    fn certified(block: &crate::audit::BlockAnswer) -> annal_ledger::proof::CertifiedBlock {
        annal_ledger::proof::CertifiedBlock {
            header: block.header.clone(),
            checkpoint: block.checkpoint.clone().unwrap(),
        }
    }

    #[test]
    fn consistency_needs_a_valid_proof_from_exactly_the_saved_checkpoint() {
        // Goal: a sound proof from the saved note extends it; a proof from another checkpoint is
        // inconsistent; the same checkpoint with other signature lines cannot be judged (exit 2).
        use annal_ledger::merkle::{self, MemoryNodes};
        let genesis = crate::audit::tests::genesis();
        let blocks = crate::audit::tests::chain(3);
        let leaves: Vec<_> =
            blocks.iter().flat_map(|b| &b.records).map(|r| merkle::leaf_hash(&B64.decode(r).unwrap())).collect();
        let path = merkle::consistency_proof(&MemoryNodes::from_leaves(&leaves), 3, 9).unwrap();
        let proof = Consistency {
            format: proof::CONSISTENCY_FORMAT.into(),
            chain_id: genesis.chain_id.clone(),
            old: certified(&blocks[0]),
            new: certified(&blocks[2]),
            path: proof::b64_hashes(&path),
            set_changes: vec![],
        };
        let held = blocks[0].checkpoint.clone().unwrap();
        assert_eq!(checkpoint_height(&held).unwrap(), 1);
        assert_eq!(
            judge_consistency(&proof, &genesis, &held),
            ConsistencyVerdict::Extends { old_height: 1, old_size: 3, new_height: 3, new_size: 9 }
        );
        let other = blocks[1].checkpoint.clone().unwrap();
        assert!(matches!(judge_consistency(&proof, &genesis, &other), ConsistencyVerdict::Inconsistent(_)));
        let mut bad_path = proof.clone();
        bad_path.path[0] = B64.encode([0u8; 32]);
        assert!(matches!(judge_consistency(&bad_path, &genesis, &held), ConsistencyVerdict::Inconsistent(_)));
        let mut resigned = SignedNote::parse(&held).unwrap();
        resigned.signatures.pop();
        assert!(matches!(
            judge_consistency(&proof, &genesis, &resigned.to_string()),
            ConsistencyVerdict::NotThisFile(_)
        ));
    }

    #[test]
    fn body_files_one_byte_over_the_limit_are_refused() {
        // Goal: read_limited reads a file of exactly the limit and refuses one byte more.
        let path = std::env::temp_dir().join(format!("annal-cli-body-{}", std::process::id()));
        std::fs::write(&path, [1u8; 10]).unwrap();
        assert_eq!(read_limited(&path, 10, "body file").unwrap().len(), 10);
        let err = format!("{:#}", read_limited(&path, 9, "body file").unwrap_err());
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("over the limit of 9 bytes"), "{err}");
    }
}
