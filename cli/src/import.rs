//! `annal import`: publish many new keys from a JSON Lines file, signed here
//! with one officer's key and sent in binary batches (`POST /v1/records/batch`,
//! docs/API.md) — the path for migrating an existing register.
//!
//! Each line is one record, `{"namespace", "key", "body": "<base64>"}` or
//! `{"namespace", "key", "document": {"sha256": "<hex>", "size": N,
//! "media_type": "…"}}`, with an optional `"metadata": {"name": "value", …}`;
//! blank lines are skipped. Every line is read and checked before anything is
//! sent: a bad line stops the import naming its number, and nothing of the
//! file reaches the node.
//!
//! Record `i` of the file (from 0) is signed with nonce `first + i`. Ed25519
//! signatures are deterministic, so running the same file again with
//! `--first-nonce first` makes the same records with the same ids: the node
//! answers those it has as pending or final, and takes the rest. That is how an
//! import that stopped (a crash, a closed laptop, a node restart) resumes
//! without a duplicate.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use annal_ledger::genesis::RECORD_BYTES_CAP;
use annal_ledger::keys::SecretKey;
use annal_ledger::record::{Body, DocumentAnchor, Op, RecordId, SignedRecord};
use annal_ledger::submission;
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{BatchAnswer, Client, ClientError, SMALL_BYTES_MAX};
use crate::node_cmds::{build_record, signing_facts, Draft};

/// The longest line read: the largest record a chain may allow, in base64, and room for the rest.
const LINE_BYTES_MAX: u64 = (RECORD_BYTES_CAP as u64) * 4 / 3 + (1 << 20);
/// The most record bytes sent in one request: half the node's default `api_body_bytes_max`.
const BATCH_BYTES_MAX: usize = 8 << 20;
/// How long one batch request may take before it is sent again.
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests in a row the node did not answer (unreachable, timed out) before the import stops.
const FAILURES_MAX: u32 = 10;
/// Refusals listed in the output; all are counted.
const REFUSALS_LISTED_MAX: usize = 100;
/// How long `--wait` waits for the last accepted record.
const WAIT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The node's API address, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub node: String,
    /// The officer's key file; its public key must be a submitter key in genesis.
    #[arg(long)]
    pub signer: PathBuf,
    /// The JSON Lines file: one record to publish per line (see above).
    pub file: PathBuf,
    /// Records per request, at most the node's `limits.api_batch_records_max`
    /// (a request also stops at 8 MiB of records).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
    /// The nonce of the file's first record (default: the signer's next nonce,
    /// from the node). Give the one an earlier run printed to resume it.
    #[arg(long)]
    pub first_nonce: Option<u64>,
    /// After sending, wait until the last accepted record is final (or refused at execution).
    #[arg(long)]
    pub wait: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One line of the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    namespace: String,
    key: String,
    body: Option<String>,
    document: Option<DocumentLine>,
    #[serde(default)]
    metadata: Metadata,
}

/// A line's metadata: a JSON object of strings in which no name is repeated
/// (a map would keep the last of two silently).
#[derive(Default)]
struct Metadata(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Metadata, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Metadata;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    if out.contains_key(&name) {
                        return Err(serde::de::Error::custom(format!("metadata name {name:?} is given twice")));
                    }
                    out.insert(name, value);
                }
                Ok(Metadata(out))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentLine {
    sha256: String,
    size: u64,
    media_type: String,
}

impl Line {
    fn draft(self) -> Result<Draft> {
        let body = match (self.body, self.document) {
            (Some(text), None) => Body::Inline(B64.decode(text).map_err(|e| anyhow!("body is not base64: {e}"))?),
            (None, Some(d)) => {
                let sha256: [u8; 32] = hex::decode(&d.sha256)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| anyhow!("document.sha256 is not 64 hex characters"))?;
                Body::Document(DocumentAnchor { sha256, size: d.size, media_type: d.media_type })
            }
            _ => bail!("give exactly one of body and document"),
        };
        Ok(Draft { namespace: self.namespace, key: self.key, op: Op::Publish, body, metadata: self.metadata.0 })
    }
}

/// The file's records in order, each with its line number (from 1), read
/// one line at a time so a file of millions is never held whole.
struct Lines {
    reader: BufReader<std::fs::File>,
    path: PathBuf,
    number: u64,
}

impl Lines {
    fn open(path: &Path) -> Result<Lines> {
        let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Lines { reader: BufReader::with_capacity(1 << 20, file), path: path.to_path_buf(), number: 0 })
    }

    /// The next record's line number and draft; `None` at the end of the file.
    fn next(&mut self) -> Result<Option<(u64, Draft)>> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            self.number += 1;
            let n = (&mut self.reader).take(LINE_BYTES_MAX + 1).read_until(b'\n', &mut buf)?;
            if n == 0 {
                return Ok(None);
            }
            let at = || format!("{} line {}", self.path.display(), self.number);
            if buf.len() as u64 > LINE_BYTES_MAX {
                bail!("{}: longer than {LINE_BYTES_MAX} bytes", at());
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let line: Line = serde_json::from_slice(&buf).map_err(|e| anyhow!("{}: {e}", at()))?;
            return Ok(Some((self.number, line.draft().map_err(|e| anyhow!("{}: {e}", at()))?)));
        }
    }
}

/// What happened to the file's records.
#[derive(Default)]
struct Tally {
    accepted: u64,
    already_final: u64,
    refused: u64,
    refusals: Vec<Value>,
    last_accepted: Option<RecordId>,
}

/// Runs the import; the process's exit code: 0 when every record was
/// accepted, 2 when some were refused (listed), 1 when the import stopped.
pub fn main(args: ImportArgs) -> i32 {
    match import(&args) {
        Ok(tally) if tally.refused == 0 => 0,
        Ok(_) => 2,
        Err(e) => {
            if args.json {
                let code = e.downcast_ref::<ClientError>().and_then(|c| c.code()).unwrap_or("client");
                println!("{}", json!({ "error": code, "detail": format!("{e:#}") }));
            } else {
                eprintln!("error: {e:#}");
            }
            1
        }
    }
}

fn import(args: &ImportArgs) -> Result<Tally> {
    let signer = SecretKey::read_file(&args.signer)?;
    // Every line first: a bad one stops the import before anything is sent.
    let mut lines = Lines::open(&args.file)?;
    let mut records = 0u64;
    while lines.next()?.is_some() {
        records += 1;
    }
    let client = Client::new(&args.node)?;
    let submitter = signer.public();
    let facts = signing_facts(&client, &submitter)?;
    let first = args.first_nonce.unwrap_or(facts.nonce);
    first
        .checked_add(records.saturating_sub(1))
        .ok_or_else(|| anyhow!("--first-nonce {first} leaves no nonce for the file's last record"))?;
    if !args.json {
        eprintln!(
            "importing {records} records from {} as {submitter}, nonces {first}…; to resume this import, \
             run the same command with --first-nonce {first}",
            args.file.display()
        );
    }

    let mut tally = Tally::default();
    let mut lines = Lines::open(&args.file)?;
    let mut nonce = first;
    let started = Instant::now();
    let mut reported = Instant::now();
    // A record signed that did not fit the batch before: the next one starts with it.
    let mut carried: Option<(u64, SignedRecord, usize)> = None;
    loop {
        // The next batch: at most --batch records and BATCH_BYTES_MAX bytes (one record at least).
        let mut batch: Vec<(u64, SignedRecord)> = Vec::new();
        let mut bytes = 0;
        while (batch.len() as u64) < args.batch {
            let (line, signed, size) = match carried.take() {
                Some(c) => c,
                None => {
                    let Some((line, draft)) = lines.next()? else { break };
                    let signed = build_record(&facts.chain_id, draft, None, submitter, nonce)?.sign(&signer);
                    nonce = nonce.wrapping_add(1); // past the last record it is not used
                    let size = signed.to_bytes().len();
                    (line, signed, size)
                }
            };
            if !batch.is_empty() && bytes + size > BATCH_BYTES_MAX {
                carried = Some((line, signed, size));
                break;
            }
            bytes += size;
            batch.push((line, signed));
        }
        if batch.is_empty() {
            break;
        }
        send_batch(&client, &batch, &mut tally)?;
        if !args.json && reported.elapsed() >= Duration::from_secs(5) {
            reported = Instant::now();
            let sent = tally.accepted + tally.refused;
            let rate = sent as f64 / started.elapsed().as_secs_f64();
            eprintln!("{sent} of {records} sent ({rate:.0}/s): {} accepted, {} refused", tally.accepted, tally.refused);
        }
    }

    let mut last_final = None;
    if args.wait {
        if let Some(id) = tally.last_accepted {
            last_final = Some(wait_settled(&client, &id)?);
        }
    }
    let last_nonce = (records > 0).then(|| first + records - 1);
    if args.json {
        let mut out = json!({
            "records": records,
            "first_nonce": first,
            "last_nonce": last_nonce,
            "accepted": tally.accepted,
            "already_final": tally.already_final,
            "refused": tally.refused,
            "refusals": tally.refusals,
            "last_accepted": tally.last_accepted.map(|id| id.to_hex()),
        });
        if let Some(status) = &last_final {
            out["last_accepted_status"] = json!(status);
        }
        println!("{out}");
    } else {
        println!(
            "{records} records: {} accepted ({} already final), {} refused; nonces {first}–{}",
            tally.accepted,
            tally.already_final,
            tally.refused,
            last_nonce.unwrap_or(first)
        );
        for r in &tally.refusals {
            println!(
                "line {}: {}: {}",
                r["line"],
                r["error"].as_str().unwrap_or(""),
                r["detail"].as_str().unwrap_or("")
            );
        }
        if tally.refused as usize > tally.refusals.len() {
            println!("(the first {} refusals are listed)", tally.refusals.len());
        }
        if let (Some(id), Some(status)) = (tally.last_accepted, &last_final) {
            println!("last accepted record {id}: {status}");
        }
    }
    Ok(tally)
}

/// Sends one batch until the node has answered for every record in it: the
/// records after a `mempool_full` are sent again after the node's Retry-After,
/// and a request the node could not take (busy, unreachable) is sent again
/// after a pause, up to [`FAILURES_MAX`] times in a row.
fn send_batch(client: &Client, batch: &[(u64, SignedRecord)], tally: &mut Tally) -> Result<()> {
    let encoded: Vec<Vec<u8>> = batch.iter().map(|(_, r)| r.to_bytes()).collect();
    let mut from = 0;
    let mut failures = 0;
    while from < batch.len() {
        let body = submission::encode_batch(encoded[from..].iter().map(|b| b.as_slice()));
        let answer = client.post::<BatchAnswer>(
            "/v1/records/batch",
            submission::BINARY_BATCH_MEDIA_TYPE,
            &body,
            BATCH_TIMEOUT,
            64 << 20,
        );
        let answer = match answer {
            Ok(a) => a,
            Err(e) if e.code() == Some("too_large") => {
                bail!("{e}; send fewer records per request (--batch)")
            }
            // The node asking for time is waited out for as long as it asks.
            Err(e) if e.code().is_some_and(|c| LATER.contains(&c)) => {
                std::thread::sleep(e.retry_after(Duration::from_secs(1)));
                continue;
            }
            // No answer (or a timeout): the node may be restarting.
            Err(e) if failures + 1 < FAILURES_MAX && e.code().is_none_or(|c| c == "timeout") => {
                failures += 1;
                std::thread::sleep(Duration::from_secs(1 << failures.min(5)));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        failures = 0;
        if answer.results.len() != batch.len() - from {
            bail!("the node answered {} results for a batch of {}", answer.results.len(), batch.len() - from);
        }
        let mut full = false;
        for (result, (line, record)) in answer.results.iter().zip(&batch[from..]) {
            match &result.error {
                None => {
                    let id = record.id();
                    if result.id.as_deref() != Some(id.to_hex().as_str()) {
                        bail!("line {line}: the node answered id {:?}, the record sent has id {id}", result.id);
                    }
                    tally.accepted += 1;
                    tally.already_final += u64::from(result.status.as_deref() == Some("final"));
                    tally.last_accepted = Some(id);
                }
                Some(e) if e.error == "mempool_full" => {
                    full = true;
                    break;
                }
                Some(e) => {
                    tally.refused += 1;
                    if tally.refusals.len() < REFUSALS_LISTED_MAX {
                        tally
                            .refusals
                            .push(json!({ "line": line, "id": result.id, "error": e.error, "detail": e.detail }));
                    }
                }
            }
            from += 1;
        }
        if full {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    Ok(())
}

/// Error codes by which the node asks for the request later (docs/API.md).
const LATER: [&str; 3] = ["mempool_full", "rate_limited", "busy"];

/// Polls the record until it is final or refused at execution.
fn wait_settled(client: &Client, id: &RecordId) -> Result<String> {
    let started = Instant::now();
    loop {
        let answer: Value = client.get_json(&format!("/v1/records/{id}"), SMALL_BYTES_MAX)?;
        match answer["status"].as_str() {
            Some(status @ ("final" | "refused")) => return Ok(status.to_string()),
            _ if started.elapsed() > WAIT_TIMEOUT => {
                bail!("record {id} is still not final after {} s; see `annal get {id}`", WAIT_TIMEOUT.as_secs())
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}
