//! The HTTP API over real sockets: a real store, mempool and `Shared`, served
//! with `api::serve` on 127.0.0.1 (ephemeral port) and spoken to in plain
//! HTTP/1.1. Blocks are executed, certified and committed the way the node's
//! loop does, so every answer comes from the same code a validator runs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use annal_ledger::block::{Certificate, Height, View};
use annal_ledger::exec::{execute, BlockMeta, Signatures};
use annal_ledger::genesis::{Agency, Genesis, Params, Validator};
use annal_ledger::gov::{approval_key, Change, GovAction};
use annal_ledger::keys::SecretKey;
use annal_ledger::proof::{self, Bundle, Consistency};
use annal_ledger::record::{Body, Op, Record, RecordId, SignedRecord};
use annal_ledger::store::{Store, StoreOptions};
use annal_ledger::submission;
use annal_node::api;
use annal_node::config::Limits;
use annal_node::shared::{Outcome, Placed, Settled, Shared};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

const CHAIN: &str = "annal-api-test";

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

/// Four validators (keys 1..=4); agency "land" (officers 21, 22) owns `land-titles`.
fn genesis() -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
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
            submitter_keys: vec![key(21).public(), key(22).public()],
            namespaces: vec!["land-titles".into()],
        }],
        params: Params::default(),
    }
}

/// An unsigned record by officer `signer` in `land-titles`.
fn record(signer: u8, key_name: &str, op: Op, supersedes: Option<RecordId>, version: u64, nonce: u64) -> Record {
    Record {
        chain_id: CHAIN.into(),
        namespace: "land-titles".into(),
        key: key_name.into(),
        op,
        body: Body::Inline(format!("{key_name} v{version}").into_bytes()),
        metadata: [("basis".to_string(), "Act 12 s.3".to_string())].into(),
        supersedes,
        version,
        submitter: key(signer).public(),
        nonce,
    }
}

fn publish(signer: u8, key_name: &str, nonce: u64) -> SignedRecord {
    record(signer, key_name, Op::Publish, None, 1, nonce).sign(&key(signer))
}

fn body_of(r: &SignedRecord) -> String {
    json!({ "record": B64.encode(r.to_bytes()) }).to_string()
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A served `Shared` and what keeps it alive.
struct Node {
    addr: SocketAddr,
    shared: Arc<Shared>,
    gossip: mpsc::Receiver<Vec<Vec<u8>>>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

async fn start(name: &str, limits: Limits) -> Node {
    start_as(name, limits, Some(0)).await
}

/// A node that votes as validator `validator` (0-based), or does not vote (`None`).
async fn start_as(name: &str, limits: Limits, validator: Option<u32>) -> Node {
    let dir = std::env::temp_dir().join(format!("annal-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let g = genesis();
    let store = Store::open(&dir, g.hash(), StoreOptions { sync: false, ..StoreOptions::default() }).unwrap();
    let (gossip_tx, gossip_rx) = mpsc::channel(4096);
    let shared = Arc::new(Shared::new(g, limits, validator, store, gossip_tx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(api::serve(listener, shared.clone(), async {
        let _ = stopped.await;
    }));
    Node { addr, shared, gossip: gossip_rx, stop: Some(stop), served: Some(served), _dir: TempDir(dir) }
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Asserts the status and the error code, and returns the detail.
    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{self:?}");
        let v = self.json();
        assert_eq!(v["error"], code, "{self:?}");
        v["detail"].as_str().expect("a detail").to_string()
    }
}

impl Node {
    async fn get(&self, path: &str) -> Answer {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").into_bytes()).await
    }

    async fn post(&self, path: &str, body: &str) -> Answer {
        self.post_as(path, "application/json", body.as_bytes()).await
    }

    async fn post_as(&self, path: &str, content_type: &str, body: &[u8]) -> Answer {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.send(&[head.as_bytes(), body].concat()).await
    }

    /// Writes `request` in one piece and reads the answer until the server closes
    /// (on the blocking pool: std's socket is all this test needs).
    async fn send(&self, request: &[u8]) -> Answer {
        let (addr, request) = (self.addr, request.to_vec());
        let raw = tokio::task::spawn_blocking(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            stream.write_all(&request).unwrap();
            let mut raw = Vec::new();
            // A server that answered without reading the whole body may reset; keep what arrived.
            if let Err(e) = stream.read_to_end(&mut raw) {
                assert!(!raw.is_empty(), "no answer: {e}");
            }
            raw
        });
        parse(&raw.await.unwrap())
    }

    /// Executes `records` as the next block and commits it as the loop does:
    /// with its certificate now (`certify`), or later with the one returned.
    fn commit(&self, records: &[SignedRecord], certify: bool) -> (Vec<RecordId>, Certificate) {
        let s = &self.shared;
        let g = &s.genesis;
        let mut store = s.store.write().unwrap();
        let height = Height(store.tip().height.0 + 1);
        let executed =
            execute(&s.governance(), height, &*store, store.frontier(), records, Signatures::Verify).unwrap();
        let set = g.validator_set();
        let meta = BlockMeta {
            height,
            view: View(height.0),
            parent: store.tip().block_hash,
            time_ms: g.genesis_time_ms + 1000 * height.0,
            proposer: 0,
            validators_hash: set.hash(),
        };
        let header = executed.header(&g.chain_id, &meta);
        let (k1, k2, k3) = (key(1), key(2), key(3));
        let cert = Certificate::sign(&header, &set, &[(0, &k1), (1, &k2), (2, &k3)]);
        store.commit_block(&header, certify.then_some(&cert), &executed, &[]).unwrap();
        drop(store);
        if executed.gov.changed {
            s.set_governance(executed.gov.state.clone());
        }
        let mut pool = s.pool.lock().unwrap();
        let arrived: Vec<_> = executed.ids.iter().map(|id| pool.remove(id)).collect();
        drop(pool);
        let placed = |i: usize| Placed { index: executed.first_index + i as u64, height: height.0 };
        s.settle(
            executed
                .ids
                .iter()
                .zip(arrived)
                .enumerate()
                .map(|(i, (id, arrived))| Settled { id: *id, outcome: Outcome::Final(placed(i)), arrived })
                .collect(),
        );
        (executed.ids.clone(), cert)
    }

    fn answers(&self, status: u16) -> u64 {
        self.shared.metrics.api_requests.lock().unwrap().get(&status).copied().unwrap_or(0)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.served.take().unwrap().await.unwrap().unwrap();
    }
}

fn parse(raw: &[u8]) -> Answer {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| l.split_once(':').unwrap())
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Answer { status, headers, body: String::from_utf8(body).unwrap() }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line + 2..line + 2 + size]);
        raw = &raw[line + 4 + size..];
    }
}

fn small_limits() -> Limits {
    Limits { api_body_bytes_max: 2048, api_batch_records_max: 3, ..Limits::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_is_pending_once_and_resubmit_gives_the_same_id() {
    // Goal: a new record is 202 pending, gossiped once; resubmitting it is 202 with the same id.
    let mut node = start("submit", Limits::default()).await;
    let r = publish(21, "parcel/1", 1);
    let first = node.post("/v1/records", &body_of(&r)).await;
    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!(first.json(), json!({ "id": r.id().to_hex(), "status": "pending" }));
    let again = node.post("/v1/records", &body_of(&r)).await;
    assert_eq!((again.status, again.json()), (202, first.json()));
    assert_eq!(node.gossip.try_recv().unwrap(), vec![r.to_bytes()], "the new record goes to gossip");
    assert!(node.gossip.try_recv().is_err(), "a resubmission is not gossiped again");
    let read = node.get(&format!("/v1/records/{}", r.id().to_hex())).await;
    assert_eq!((read.status, read.json()), (200, json!({ "id": r.id().to_hex(), "status": "pending" })));
    assert_eq!(node.answers(202), 2);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_and_records_are_refused_with_the_reason() {
    // Goal: every way a submission can be wrong gets its status, code, and a detail naming the problem.
    let node = start("refusals", Limits::default()).await;
    let detail = node.post("/v1/records", r#"{"record": "not base64!"}"#).await.error(400, "malformed");
    assert!(detail.contains("base64"), "{detail}");
    let junk = json!({ "record": B64.encode(b"not a record") }).to_string();
    node.post("/v1/records", &junk).await.error(400, "malformed");
    let over = json!({ "record": B64.encode(vec![1; Params::default().record_bytes_max + 1]) }).to_string();
    let detail = node.post("/v1/records", &over).await.error(422, "refused");
    assert!(detail.contains("the chain's limit"), "{detail}");
    let detail = node.post("/v1/records", "{\"record\": ").await.error(400, "malformed");
    assert!(detail.contains("JSON"), "{detail}");
    let detail = node.post("/v1/records", r#"{"records": "x"}"#).await.error(400, "malformed");
    assert!(detail.contains("missing field `record`"), "{detail}");

    let mut other = record(21, "parcel/1", Op::Publish, None, 1, 1);
    other.chain_id = "other-chain".into();
    let detail = node.post("/v1/records", &body_of(&other.sign(&key(21)))).await.error(422, "refused");
    assert!(detail.contains("other-chain") && detail.contains(CHAIN), "{detail}");
    let mut forged = publish(21, "parcel/1", 1);
    forged.record.nonce = 2;
    let detail = node.post("/v1/records", &body_of(&forged)).await.error(422, "refused");
    assert!(detail.contains("signature"), "{detail}");
    let stranger = record(99, "parcel/1", Op::Publish, None, 1, 1).sign(&key(99));
    let detail = node.post("/v1/records", &body_of(&stranger)).await.error(422, "refused");
    assert!(detail.contains("no agency"), "{detail}");
    assert_eq!(node.shared.pool.lock().unwrap().len(), 0, "nothing refused is pending");

    // In a batch the signatures are checked together; a forged one is named and the others go in.
    let (good1, good2) = (publish(21, "parcel/2", 3), publish(22, "parcel/3", 1));
    let records = [&good1, &forged, &good2].map(|r| B64.encode(r.to_bytes()));
    let v = node.post("/v1/records/batch", &json!({ "records": records }).to_string()).await.json();
    assert_eq!(v["accepted"], 2, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "pending");
    assert_eq!(results[1]["error"]["error"], "refused");
    assert!(results[1]["error"]["detail"].as_str().unwrap().contains("signature"), "{v}");
    assert_eq!(results[2]["status"], "pending");
    // Every result has the same three fields; the ones that do not apply are null.
    for r in results {
        let mut fields: Vec<&String> = r.as_object().unwrap().keys().collect();
        fields.sort();
        assert_eq!(fields, ["error", "id", "status"], "{r}");
    }
    assert_eq!((&results[0]["error"], &results[0]["id"]), (&Value::Null, &json!(good1.id().to_hex())));
    assert_eq!((&results[1]["status"], &results[1]["id"]), (&Value::Null, &json!(forged.id().to_hex())));
    assert_eq!(node.shared.pool.lock().unwrap().len(), 2);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_batch_is_answered_as_the_json_one_and_its_framing_is_checked() {
    let mut node = start("binary", small_limits()).await;
    // Goal: with Content-Type application/octet-stream the batch body is the binary list
    // (docs/API.md); its records are admitted and answered as the JSON batch's are. A body
    // whose framing breaks is 400 malformed naming where, a count over the limit is 413
    // before any record is read, and neither form is guessed from the other's bytes.
    // The request's new records go to gossip together, as one message.
    let (good1, good2) = (publish(21, "parcel/1", 1), publish(22, "parcel/2", 1));
    let mut forged = publish(21, "parcel/3", 2);
    forged.record.nonce = 3;
    let bytes = [good1.to_bytes(), forged.to_bytes(), good2.to_bytes()];
    let body = submission::encode_batch(bytes.iter().map(|b| b.as_slice()));
    let binary = "application/octet-stream";

    let cut = node.post_as("/v1/records/batch", binary, &body[..body.len() - 1]).await;
    let detail = cut.error(400, "malformed");
    assert!(detail.contains("not a binary record batch") && detail.contains("records[2] needs"), "{detail}");
    let mut over = submission::encode_batch([]);
    over[1] = 4;
    let detail = node.post_as("/v1/records/batch", binary, &over).await.error(413, "too_large");
    assert!(detail.contains("holds 4 records") && detail.contains("api_batch_records_max"), "{detail}");
    let json_body = json!({ "records": [B64.encode(&bytes[0])] }).to_string();
    let detail = node.post_as("/v1/records/batch", binary, json_body.as_bytes()).await.error(400, "malformed");
    assert!(detail.contains("the format byte is 123"), "{detail}");
    let detail = node.post_as("/v1/records/batch", "application/json", &body).await.error(400, "malformed");
    assert!(detail.contains("not the JSON"), "{detail}");
    assert_eq!(node.shared.pool.lock().unwrap().len(), 0, "nothing of a refused body was admitted");

    let answer = node.post_as("/v1/records/batch", "Application/Octet-Stream; x=y", &body).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let v = answer.json();
    assert_eq!(v["accepted"], 2, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results[0], json!({ "id": good1.id().to_hex(), "status": "pending", "error": null }));
    assert_eq!(results[1]["id"], forged.id().to_hex());
    assert_eq!(results[1]["error"]["error"], "refused");
    assert!(results[1]["error"]["detail"].as_str().unwrap().contains("signature"), "{v}");
    assert_eq!(results[2], json!({ "id": good2.id().to_hex(), "status": "pending", "error": null }));
    assert_eq!(node.shared.pool.lock().unwrap().len(), 2);
    assert_eq!(node.gossip.try_recv().unwrap(), vec![good1.to_bytes(), good2.to_bytes()], "one message");
    assert!(node.gossip.try_recv().is_err());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mempool_is_503_with_retry_after_and_stops_a_batch() {
    // Goal: past its API's share of the pool (half of mempool_records_max) a record is
    // 503 mempool_full with Retry-After and not accepted; a batch sent to a full node is
    // 503 before it is read; in a batch that fills the node, the records after the first
    // mempool_full are not tried (a record that is not even base64 is still said to be
    // malformed). Records gossiped by peers still fill the other half.
    let node = start("full", Limits { mempool_records_max: 4, ..Limits::default() }).await;
    let (a, b, c, d) = (publish(21, "a", 1), publish(21, "b", 2), publish(22, "c", 1), publish(22, "d", 2));
    let e = publish(21, "e", 3);
    assert_eq!(node.post("/v1/records", &body_of(&a)).await.status, 202);
    assert_eq!(node.post("/v1/records", &body_of(&e)).await.status, 202);
    let full = node.post("/v1/records", &body_of(&b)).await;
    full.error(503, "mempool_full");
    assert_eq!(full.header("retry-after"), Some("1"));
    assert_eq!(node.post("/v1/records", &body_of(&a)).await.status, 202, "a pending record is still pending");
    // Full: the batch is not read at all, not even the garbage in it.
    let unread = node.post("/v1/records/batch", "{\"records\": [\"%%\"], \"garbage").await;
    unread.error(503, "mempool_full");
    assert_eq!(unread.header("retry-after"), Some("1"));
    assert!(unread.json()["detail"].as_str().unwrap().contains("no record of this batch was read"), "{unread:?}");

    // Room for one more: the batch fills the node and stops there.
    node.shared.pool.lock().unwrap().remove(&e.id());
    let records = [&a, &b, &c, &d].map(|r| B64.encode(r.to_bytes()));
    let batch = json!({ "records": [records[0], records[1], records[2], "%%", records[3]] }).to_string();
    let answer = node.post("/v1/records/batch", &batch).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("retry-after"), Some("1"));
    let v = answer.json();
    assert_eq!(v["accepted"], 2);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results[0], json!({ "id": a.id().to_hex(), "status": "pending", "error": null }));
    assert_eq!(results[1], json!({ "id": b.id().to_hex(), "status": "pending", "error": null }));
    assert_eq!(results[2]["id"], c.id().to_hex());
    for r in &results[2..] {
        assert_eq!(r["status"], Value::Null);
    }
    for (i, code) in [(2, "mempool_full"), (3, "malformed"), (4, "mempool_full")] {
        assert_eq!(results[i]["error"]["error"], code, "{v}");
    }
    assert!(results[3]["id"].is_null(), "undecodable base64 has no id");
    assert!(results[4]["error"]["detail"].as_str().unwrap().contains("this record was not read"), "{v}");
    assert!(results[2]["error"]["detail"].as_str().unwrap().contains("half its limit"), "{v}");
    assert_eq!(node.shared.pool.lock().unwrap().len(), 2);

    // The other half is for records gossiped by the other validators.
    use annal_node::mempool::Source;
    use annal_node::shared::{Admitted, Failure};
    let f = publish(21, "f", 4);
    let gossiped = node.shared.admit_many(vec![c.to_bytes(), d.to_bytes(), f.to_bytes()], Source::Peer);
    assert_eq!(gossiped[0], Ok(Admitted::Pending { id: c.id(), new: true }));
    assert_eq!(gossiped[1], Ok(Admitted::Pending { id: d.id(), new: true }));
    assert!(matches!(&gossiped[2], Err(Failure::MempoolFull(why)) if why.contains("its limit of 4")), "{gossiped:?}");
    assert_eq!(node.shared.pool.lock().unwrap().len(), 4);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_fills_the_mempool_to_its_limit_first() {
    // Goal: room is checked before signatures, but a batch larger than the room
    // left still fills it: the records that fit go in, the rest are mempool_full.
    let node = start("fill", Limits { mempool_records_max: 6, ..Limits::default() }).await;
    let (a, b, c, d) = (publish(21, "a", 1), publish(21, "b", 2), publish(22, "c", 1), publish(22, "d", 2));
    assert_eq!(node.post("/v1/records", &body_of(&a)).await.status, 202);
    let records = [&b, &c, &d].map(|r| B64.encode(r.to_bytes()));
    let answer = node.post("/v1/records/batch", &json!({ "records": records }).to_string()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let v = answer.json();
    assert_eq!(v["accepted"], 2, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "pending");
    assert_eq!(results[1]["status"], "pending");
    assert_eq!(results[2]["error"]["error"], "mempool_full", "{v}");
    assert_eq!(node.shared.pool.lock().unwrap().len(), 3);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mempool_does_not_read_the_rest_of_a_batch() {
    // Goal: once a new record does not fit, the records after it are refused
    // unread (mempool_full, not decoded: the garbage is not even named
    // malformed), while a pending record is still answered pending.
    use annal_node::mempool::Source;
    use annal_node::shared::{Admitted, Failure};
    let node = start("unread", Limits { mempool_records_max: 2, ..Limits::default() }).await;
    let (a, b, c) = (publish(21, "a", 1), publish(21, "b", 2), publish(22, "c", 1));
    let results =
        node.shared.admit_many(vec![a.to_bytes(), b.to_bytes(), b"garbage".to_vec(), c.to_bytes()], Source::Api);
    assert_eq!(results[0], Ok(Admitted::Pending { id: a.id(), new: true }));
    for (i, r) in results.iter().enumerate().skip(1) {
        assert!(matches!(r, Err(Failure::MempoolFull(_))), "record {i}: {r:?}");
    }
    let Err(Failure::MempoolFull(why)) = &results[2] else { unreachable!() };
    assert!(why.contains("not read"), "{why}");
    // A pending record first: still pending, and it takes no room.
    let results = node.shared.admit_many(vec![a.to_bytes(), b"garbage".to_vec()], Source::Api);
    assert_eq!(results[0], Ok(Admitted::Pending { id: a.id(), new: false }));
    assert!(matches!(results[1], Err(Failure::Malformed(_))), "{:?}", results[1]);
    assert_eq!(node.shared.pool.lock().unwrap().len(), 1);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_batches_one_over_the_limit_are_413() {
    // Goal: a body of exactly api_body_bytes_max is read; one byte more is 413 too_large JSON,
    // declared or chunked; a batch of api_batch_records_max + 1 records is 413 too.
    let node = start("large", small_limits()).await;
    let max = node.shared.limits.api_body_bytes_max;
    let r = publish(21, "parcel/1", 1);
    let body = body_of(&r);
    let at_max = format!("{body}{}", " ".repeat(max - body.len()));
    assert_eq!(node.post("/v1/records", &at_max).await.status, 202);
    let over = format!("{at_max} ");
    let detail = node.post("/v1/records", &over).await.error(413, "too_large");
    assert!(detail.contains(&format!("{}", max + 1)) && detail.contains("api_body_bytes_max"), "{detail}");

    let chunk = format!("{:x}\r\n{over}\r\n0\r\n\r\n", over.len());
    let chunked = format!(
        "POST /v1/records HTTP/1.1\r\nHost: test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
    );
    node.send(chunked.as_bytes()).await.error(413, "too_large");

    let records: Vec<String> = (1..=4).map(|n| B64.encode(publish(22, &format!("b/{n}"), n).to_bytes())).collect();
    let batch = |n: usize| json!({ "records": records[..n] }).to_string();
    assert_eq!(node.post("/v1/records/batch", &batch(3)).await.json()["accepted"], 3);
    let detail = node.post("/v1/records/batch", &batch(4)).await.error(413, "too_large");
    assert!(detail.contains("api_batch_records_max"), "{detail}");
    assert_eq!(node.answers(413), 3);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_records_read_back_with_history_proofs_checkpoint_consistency_and_blocks() {
    // Goal: after two certified blocks every read route answers what API.md says, and the
    // proofs it serves verify offline against the genesis alone.
    let node = start("reads", Limits::default()).await;
    let g = genesis();
    let deed = publish(21, "parcel/42", 1);
    let (ids, _) = node.commit(&[publish(22, "parcel/7", 1), deed.clone()], true);
    let amendment = record(21, "parcel/42", Op::Amend, Some(ids[1]), 2, 2).sign(&key(21));
    node.commit(std::slice::from_ref(&amendment), true);

    let v = node.get(&format!("/v1/records/{}", ids[1].to_hex())).await.json();
    assert_eq!(v["status"], "final");
    assert_eq!((v["index"].as_u64(), v["height"].as_u64()), (Some(1), Some(1)));
    assert_eq!(v["record"], B64.encode(deed.to_bytes()));
    assert_eq!(
        (v["namespace"].as_str(), v["key"].as_str(), v["op"].as_str()),
        (Some("land-titles"), Some("parcel/42"), Some("publish"))
    );
    assert_eq!((v["version"].as_u64(), v["nonce"].as_u64()), (Some(1), Some(1)));
    assert_eq!(v["submitter"], key(21).public().to_hex());
    assert_eq!(v["supersedes"], Value::Null);
    assert_eq!(v["metadata"], json!({ "basis": "Act 12 s.3" }));
    assert_eq!(v["body"], json!({ "inline": B64.encode("parcel/42 v1") }));
    let again = node.post("/v1/records", &body_of(&deed)).await;
    assert_eq!(again.status, 200, "a final record resubmitted answers its place");
    assert_eq!(again.json(), json!({ "id": ids[1].to_hex(), "status": "final", "index": 1, "height": 1 }));
    let unknown = RecordId([7; 32]).to_hex();
    node.get(&format!("/v1/records/{unknown}")).await.error(404, "not_found");

    for path in ["/v1/history/land-titles/parcel/42", "/v1/history/land-titles/parcel%2F42"] {
        let h = node.get(path).await.json();
        assert_eq!(h["key"], "parcel/42", "{path}");
        let versions: Vec<_> = h["versions"].as_array().unwrap().iter().map(|v| v["version"].clone()).collect();
        assert_eq!(versions, [json!(1), json!(2)]);
        assert_eq!(h["versions"][1]["height"], 2);
        assert_eq!(h["head"], json!({ "id": amendment.id().to_hex(), "version": 2, "status": "active" }));
        assert_eq!(h["earlier"], Value::Null, "{path}: every version listed");
    }
    // Paged back from the head: one version, then the one before it, named by `earlier`.
    let h = node.get("/v1/history/land-titles/parcel%2F42?limit=1").await.json();
    assert_eq!(
        (h["versions"][0]["version"].as_u64(), h["earlier"].as_str()),
        (Some(2), Some(&*amendment.id().to_hex()))
    );
    let h = node.get(&format!("/v1/history/land-titles/parcel%2F42?limit=1&before={}", amendment.id().to_hex())).await;
    let h = h.json();
    assert_eq!(h["versions"], json!([{ "version": 1, "index": 1, "id": ids[1].to_hex(), "height": 1 }]));
    assert_eq!(h["earlier"], Value::Null);
    let h = node.get(&format!("/v1/history/land-titles/parcel%2F42?before={}", ids[1].to_hex())).await.json();
    assert_eq!((h["versions"].as_array().map(Vec::len), &h["earlier"]), (Some(0), &Value::Null), "before version 1");
    let other = node.get(&format!("/v1/history/land-titles/parcel%2F42?before={}", ids[0].to_hex())).await;
    assert!(other.error(400, "bad_query").contains("is version 1 of \"parcel/7\""));
    let stranger = node.get(&format!("/v1/history/land-titles/parcel%2F42?before={}", "ab".repeat(32))).await;
    assert!(stranger.error(400, "bad_query").contains("is not a final record"));
    for bad in ["limit=0", "limit=1001", "limit=x", "after=1"] {
        node.get(&format!("/v1/history/land-titles/parcel%2F42?{bad}")).await.error(400, "bad_query");
    }
    node.get("/v1/history/land-titles/nowhere").await.error(404, "not_found");
    let n = node.get(&format!("/v1/nonces/{}", key(21).public().to_hex())).await.json();
    assert_eq!(n["last_nonce"], 2);
    let n = node.get(&format!("/v1/nonces/{}", key(99).public().to_hex())).await.json();
    assert_eq!(n["last_nonce"], Value::Null);

    let answer = node.get(&format!("/v1/proofs/{}?status=true", ids[1].to_hex())).await;
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let bundle = Bundle::from_json(&answer.body).unwrap();
    let verified = proof::verify(&bundle, &g, None).unwrap();
    assert_eq!((verified.id, verified.index), (ids[1], 1));
    assert!(verified.status.unwrap().describe(&ids[1]).starts_with("superseded by"));
    let tlog = node.get(&format!("/v1/proofs/{}?format=tlog-proof", ids[1].to_hex())).await;
    assert!(tlog.header("content-type").unwrap().starts_with("text/plain"));
    assert!(tlog.body.starts_with("c2sp.org/tlog-proof@v1\nindex 1\n"), "{}", tlog.body);
    assert!(tlog.body.ends_with(&bundle.block.checkpoint));
    node.get(&format!("/v1/proofs/{unknown}")).await.error(404, "not_found");

    let c = node.get("/v1/checkpoint").await.json();
    assert_eq!((c["height"].as_u64(), c["log_size"].as_u64()), (Some(2), Some(3)));
    assert!(c["checkpoint"].as_str().unwrap().contains(CHAIN));
    let proof = Consistency::from_json(&node.get("/v1/consistency?from=1").await.body).unwrap();
    let (old, new) = proof::verify_consistency(&proof, &g, None).unwrap();
    assert_eq!((old.size, new.size), (2, 3));
    node.get("/v1/consistency?from=2&to=1").await.error(400, "bad_query");
    node.get("/v1/consistency?from=1&to=3").await.error(404, "not_found");
    node.get("/v1/consistency").await.error(400, "bad_query");

    let b = node.get("/v1/blocks/1").await.json();
    assert_eq!(b["records"], json!([B64.encode(publish(22, "parcel/7", 1).to_bytes()), B64.encode(deed.to_bytes())]));
    assert_eq!((b["height"].as_u64(), b["first_index"].as_u64()), (Some(1), Some(0)));
    assert!(b["checkpoint"].is_string() && b["hash"].as_str().unwrap().len() == 64 && b["header"].is_string());
    assert_eq!(node.get("/v1/blocks/2").await.json()["first_index"], 2);
    node.get("/v1/blocks/0").await.error(400, "bad_query");
    node.get("/v1/blocks/3").await.error(404, "not_found");
    let detail = node.get("/v1/blocks/tall").await.error(400, "bad_query");
    assert!(detail.contains("height"), "{detail}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_awaiting_its_certificate_is_503_not_certified() {
    // Goal: while a final block's certificate is collected its proofs are 503 not_certified with
    // Retry-After (after waiting for it in vain), its block shows a null checkpoint, and it is
    // not yet a consistency end; then all answer.
    let node = start("uncertified", Limits::default()).await;
    node.commit(&[publish(21, "a", 1)], true);
    let (ids, cert) = node.commit(&[publish(21, "b", 2)], false);
    let answer = node.get(&format!("/v1/proofs/{}", ids[0].to_hex())).await;
    answer.error(503, "not_certified");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(node.get("/v1/blocks/2").await.json()["checkpoint"], Value::Null);
    node.get("/v1/consistency?from=1&to=2").await.error(404, "not_found");
    assert_eq!(node.get("/v1/checkpoint").await.json()["height"], 1);

    node.shared.store.write().unwrap().put_certificate(&cert).unwrap();
    let bundle = Bundle::from_json(&node.get(&format!("/v1/proofs/{}", ids[0].to_hex())).await.body).unwrap();
    proof::verify(&bundle, &genesis(), None).unwrap();
    assert!(node.get("/v1/blocks/2").await.json()["checkpoint"].is_string());
    assert_eq!(node.get("/v1/consistency?from=1").await.status, 200);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_waits_for_a_certificate_being_collected_though_the_tip_moves_on() {
    // Goal: a status proof is taken at the tip it was asked at and answered once that tip's
    // certificate arrives, though a later block committed meanwhile (under load the tip is
    // seldom certified: asking for a certified tip was 503 nearly always); a proof of a block
    // whose certificate arrives within the wait is answered, not 503.
    let node = start("collecting", Limits::default()).await;
    let (a, _) = node.commit(&[publish(21, "a", 1)], true);
    let (_, cert2) = node.commit(&[publish(21, "b", 2)], false);
    let path = format!("/v1/proofs/{}?status=true", a[0].to_hex());
    let asked = node.get(&path);
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (c, cert3) = node.commit(&[publish(21, "c", 3)], false);
        node.shared.store.write().unwrap().put_certificate(&cert2).unwrap();
        (c, cert3)
    };
    let (answer, (c, cert3)) = tokio::join!(asked, meanwhile);
    assert_eq!(answer.status, 200, "{answer:?}");
    let verified = proof::verify(&Bundle::from_json(&answer.body).unwrap(), &genesis(), None).unwrap();
    assert_eq!(verified.status.expect("a status").height, 2, "the tip when asked");

    let path = format!("/v1/proofs/{}", c[0].to_hex());
    let asked = node.get(&path);
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        node.shared.store.write().unwrap().put_certificate(&cert3).unwrap();
    };
    let (answer, ()) = tokio::join!(asked, meanwhile);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(proof::verify(&Bundle::from_json(&answer.body).unwrap(), &genesis(), None).unwrap().header.height.0, 3);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_final_answers_when_final_and_times_out_otherwise() {
    // Goal: wait=final is 504 timeout when nothing commits within timeout_ms, 200 with the place once
    // a block carries the record, and its parameters are bounded.
    let node = start("wait", Limits::default()).await;
    let r = publish(21, "a", 1);
    let started = std::time::Instant::now();
    let detail = node.post("/v1/records?wait=final&timeout_ms=200", &body_of(&r)).await.error(504, "timeout");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(detail.contains("still pending"), "{detail}");
    assert!(node.shared.pool.lock().unwrap().contains(&r.id()), "a timed-out record stays pending");

    let body = body_of(&r);
    let waiting = node.post("/v1/records?wait=final&timeout_ms=10000", &body);
    let committing = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        node.commit(std::slice::from_ref(&r), true);
    };
    let (answer, ()) = tokio::join!(waiting, committing);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), json!({ "id": r.id().to_hex(), "status": "final", "index": 0, "height": 1 }));
    // Its time from entering the pool to final is observed, and only that record's.
    let (count, seconds) = {
        let h = node.shared.metrics.finality.lock().unwrap();
        (h.count, h.sum)
    };
    assert_eq!(count, 1, "one record went from the pool to final");
    assert!(seconds >= 0.5, "timed from its first admission, 200 + 300 ms before its block: {seconds} s");

    let detail = node.post("/v1/records?wait=final&timeout_ms=120001", &body_of(&r)).await.error(400, "bad_query");
    assert!(detail.contains("timeout_ms"), "{detail}");
    node.post("/v1/records?wait=soon", &body_of(&r)).await.error(400, "bad_query");
    node.post("/v1/records?wiat=final", &body_of(&r)).await.error(400, "bad_query");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_flight_past_their_budget_are_503_busy() {
    // Goal (review, session 22): request bodies being served add up to at most
    // api_body_bytes_in_flight_max; one that does not fit is 503 busy before it is
    // read, and once the others are answered (or dropped) it fits again.
    let limits = Limits { api_body_bytes_max: 4096, api_body_bytes_in_flight_max: 6144, ..Limits::default() };
    let node = start("in-flight", limits).await;
    let body = body_of(&publish(21, "parcel/1", 1));
    // A client that declares 4,000 bytes and sends none of them holds 4,000 of the 6,144.
    let head =
        "POST /v1/records HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n";
    // From another client than the probes (127.0.0.1), so that the node's budget is
    // what turns them away, not one client's share of it.
    let hold = || async {
        let mut slow = connect_from([127, 0, 0, 2], node.addr).await;
        slow.write_all(head.as_bytes()).unwrap();
        slow.set_nonblocking(true).unwrap();
        slow
    };
    let mut slow = hold().await;
    let padded = format!("{body}{}", " ".repeat(3000 - body.len()));
    let mut busy = None;
    for _ in 0..500 {
        let answer = node.post("/v1/records", &padded).await;
        if answer.status == 503 {
            busy = Some(answer);
            break;
        }
        // The server may take the probe's head before the slow one's (connections are
        // served concurrently): then the probe fits and the slow request is the one
        // turned away. An answer (or a close) on the slow connection says so: try again.
        match slow.read(&mut [0u8; 1]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => slow = hold().await,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let busy = busy.expect("a body past the budget while another is read");
    assert_eq!(busy.header("retry-after"), Some("1"));
    let detail = busy.error(503, "busy");
    assert!(detail.contains("api_body_bytes_in_flight_max"), "{detail}");
    // A small body still fits beside the slow one; GETs take nothing from the budget.
    assert_eq!(node.post("/v1/records", &body).await.status, 202);
    assert_eq!(node.get("/v1/status").await.status, 200);
    // The slow client goes away: its share comes back.
    drop(slow);
    let padded = format!("{}{}", body_of(&publish(21, "parcel/2", 2)), " ".repeat(2000));
    let mut status = 0;
    for _ in 0..500 {
        status = node.post("/v1/records", &padded).await.status;
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 202);
    node.stop().await;
}

/// A blocking socket to `addr` from the loopback address `source` (any 127.0.0.0/8 address is this machine).
async fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let stream = socket.connect(addr).await.unwrap().into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holds_at_most_its_share_of_the_bodies_in_flight() {
    // Goal: a client that declares a body and sends none of it holds its share of
    // api_body_bytes_in_flight_max (a quarter, at least one largest body); its next body
    // is 503 busy naming the share, while another client's still fits the node's budget.
    let limits = Limits { api_body_bytes_max: 4096, api_body_bytes_in_flight_max: 16384, ..Limits::default() };
    let node = start("share", limits).await;
    let head =
        "POST /v1/records HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n";
    let mut slow = connect_from([127, 0, 0, 3], node.addr).await;
    slow.write_all(head.as_bytes()).unwrap();
    let body = body_of(&publish(21, "parcel/1", 1));
    let request = format!(
        "POST /v1/records HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut busy = None;
    for _ in 0..500 {
        let mut again = connect_from([127, 0, 0, 3], node.addr).await;
        let request = request.clone();
        let raw = tokio::task::spawn_blocking(move || {
            again.write_all(request.as_bytes()).unwrap();
            let mut raw = Vec::new();
            let _ = again.read_to_end(&mut raw);
            raw
        });
        let answer = parse(&raw.await.unwrap());
        if answer.status == 503 {
            busy = Some(answer);
            break;
        }
        // The slow request may not have been taken yet: then this one fitted; try again.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let busy = busy.expect("the same client's second body past its share");
    let detail = busy.error(503, "busy");
    assert!(detail.contains("client 127.0.0.3") && detail.contains("its share of 4096 bytes"), "{detail}");
    assert_eq!(node.post("/v1/records", &body).await.status, 202, "another client's body fits");
    drop(slow);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_vote_and_has_no_peers_accepts_nothing() {
    // Goal (review, session 22): a non-voting node only passes records on; with no validator
    // connected it answered 202 and the record waited in its pool for good. Now 503 no_peers,
    // single or batch, until it has a peer.
    let node = start_as("observer", Limits::default(), None).await;
    let r = publish(21, "parcel/1", 1);
    let answer = node.post("/v1/records", &body_of(&r)).await;
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert!(answer.error(503, "no_peers").contains("connected to no validator"));
    let batch = json!({ "records": [B64.encode(r.to_bytes())] }).to_string();
    node.post("/v1/records/batch", &batch).await.error(503, "no_peers");
    assert!(node.shared.pool.lock().unwrap().is_empty());
    node.shared.status.lock().unwrap().peers = 1;
    assert_eq!(node.post("/v1/records", &body_of(&r)).await.status, 202);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_time_bound_is_504() {
    // Goal: a request that outlives api_request_timeout_ms is cut at that bound with 504
    // timeout; a wait=final asked to outlast the bound ends just before it and answers for
    // itself, naming the record still pending (session 23: it was cut by the bound, unnamed).
    let node = start("bound", Limits { api_request_timeout_ms: 300, ..Limits::default() }).await;
    let started = std::time::Instant::now();
    let r = publish(21, "a", 1);
    let answer = node.post("/v1/records?wait=final&timeout_ms=5000", &body_of(&r)).await;
    let detail = answer.error(504, "timeout");
    assert!(detail.contains(&r.id().to_hex()) && detail.contains("still pending"), "{detail}");
    assert!(detail.contains("cut from the 5000 ms asked") && detail.contains("api_request_timeout_ms"), "{detail}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A body that does not arrive in time: the bound itself answers.
    let mut slow = TcpStream::connect(node.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head =
        "POST /v1/records HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    slow.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = slow.read_to_end(&mut raw);
    let detail = parse(&raw).error(504, "timeout");
    assert!(detail.contains("api_request_timeout_ms") && detail.contains("may still have been accepted"), "{detail}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_metrics_health_and_routing_errors() {
    // Goal: status, metrics and healthz answer their documented shapes; unknown paths, wrong
    // methods, bad hex and unknown parameters are JSON errors naming the problem.
    let node = start("status", Limits::default()).await;
    node.commit(&[publish(21, "a", 1)], true);
    let s = node.get("/v1/status").await.json();
    assert_eq!(s["chain_id"], CHAIN);
    assert_eq!(s["genesis_hash"], hex::encode(genesis().hash()));
    assert_eq!(
        (s["validator"].as_u64(), s["height"].as_u64(), s["certified_height"].as_u64()),
        (Some(0), Some(1), Some(1))
    );
    assert_eq!(s["log_size"], 1);
    assert_eq!(s["mempool"]["records_max"], Limits::default().mempool_records_max);
    assert_eq!(s["sync"], json!({ "state": "synced", "target_height": 1 }));
    for field in ["view", "log_root", "state_root", "peers", "evidence"] {
        assert!(!s[field].is_null(), "status lacks {field}");
    }

    let m = node.get("/metrics").await;
    assert_eq!(m.header("content-type"), Some("text/plain; version=0.0.4"));
    assert!(m.body.contains("\nannal_height 1\n"), "{}", m.body);
    assert!(m.body.contains("annal_api_requests_total{code=\"200\"} 1"), "{}", m.body);
    let gauge = |line: &str| -> u64 {
        let value = m.body.lines().find_map(|l| l.strip_prefix(line)).unwrap_or_else(|| panic!("no {line}"));
        value.trim().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    assert!(gauge("annal_store_memory_bytes{use=\"memtables\"}") > 0, "a memtable holds the genesis block");
    gauge("annal_store_memory_bytes{use=\"block_cache\"}");
    assert_eq!(gauge("annal_evidence_total "), 0);
    gauge("annal_store_memory_bytes{use=\"table_readers\"}");
    assert!(gauge("process_resident_memory_bytes") > 1 << 20, "{}", m.body);
    // No loop runs here: its queues read 0, and the record the API admitted waits for gossip.
    for queue in ["net_events", "net_commands", "record_batches"] {
        assert_eq!(gauge(&format!("annal_queue_items{{queue=\"{queue}\"}}")), 0, "{}", m.body);
    }
    assert_eq!(gauge("annal_queue_items{queue=\"api_gossip\"}"), 0, "{}", m.body);
    node.post("/v1/records", &body_of(&publish(21, "a", 2))).await.json();
    let m = node.get("/metrics").await;
    let queued = m.body.lines().find_map(|l| l.strip_prefix("annal_queue_items{queue=\"api_gossip\"}"));
    assert_eq!(queued.map(str::trim), Some("1"), "{}", m.body);

    let h = node.get("/healthz").await;
    assert_eq!((h.status, h.body.as_str()), (200, "ok"));
    node.shared.status.lock().unwrap().healthy = false;
    node.get("/healthz").await.error(503, "unhealthy");

    let detail = node.get("/v1/nowhere").await.error(404, "not_found");
    assert!(detail.contains("/v1/nowhere"), "{detail}");
    let wrong = node.get("/v1/records").await;
    wrong.error(405, "method_not_allowed");
    assert_eq!(wrong.header("allow"), Some("POST"));
    let detail = node.get("/v1/records/abc").await.error(400, "bad_query");
    assert!(detail.contains("id"), "{detail}");
    let detail = node.get("/v1/nonces/zz").await.error(400, "bad_query");
    assert!(detail.contains("submitter"), "{detail}");
    for path in ["/v1/checkpoint?x=1", "/v1/proofs/{id}?x=1", "/healthz?x=1"] {
        let detail = node.get(&path.replace("{id}", &RecordId([7; 32]).to_hex())).await.error(400, "bad_query");
        assert!(detail.contains("\"x\""), "{path}: {detail}");
    }
    assert_eq!(node.answers(405), 1);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_exactly_the_routes_served() {
    // Goal: /openapi.json is OpenAPI 3.0 naming every route the router serves, and no other, with
    // each path parameter declared; each documented path answers something other than the router's 404 or 405.
    let node = start("openapi", Limits::default()).await;
    let doc = node.get("/openapi.json").await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    let mut served: Vec<(String, String)> = api::routes().into_iter().map(|(m, p)| (m.to_string(), p)).collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
    for (method, path) in &documented {
        let operation = &doc["paths"][path][method.to_ascii_lowercase()];
        let mut declared: Vec<String> = operation["parameters"]
            .as_array()
            .map_or(&[][..], |v| v.as_slice())
            .iter()
            .map(|p| match p["$ref"].as_str() {
                Some(r) => &doc["components"]["parameters"][r.rsplit('/').next().unwrap()],
                None => p,
            })
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        let mut placeholders: Vec<String> =
            path.split('{').skip(1).map(|s| s.split('}').next().unwrap().to_string()).collect();
        declared.sort();
        placeholders.sort();
        assert_eq!(declared, placeholders, "{method} {path}: path parameters");
        assert!(operation["responses"]["200"].is_object() || operation["responses"]["202"].is_object());
    }
    let id = RecordId([7; 32]).to_hex();
    for (method, path) in &served {
        let concrete = path
            .replace("{id}", &id)
            .replace("{namespace}", "land-titles")
            .replace("{key}", "k")
            .replace("{submitter}", &key(21).public().to_hex())
            .replace("{height}", "1");
        let answer = match method.as_str() {
            "GET" => node.get(&concrete).await,
            _ => node.post(&concrete, "{}").await,
        };
        let routed = answer.status != 405 && !answer.body.contains("no route");
        assert!(routed, "{method} {path} reached no handler: {answer:?}");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_and_unfinished_heads_are_closed() {
    // Goal: with limits.api_connections_max = 2, two idle connections leave a third
    // unanswered (it waits in the accept queue) until one of them closes; a connection
    // that sends half a request head is closed after limits.api_header_timeout_ms.
    let limits = Limits { api_connections_max: 2, api_header_timeout_ms: 1_000, ..Limits::default() };
    let node = start("connections", limits).await;
    let addr = node.addr;
    let answered = tokio::task::spawn_blocking(move || {
        let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut third = TcpStream::connect(addr).unwrap();
        third.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
        third.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut first = [0u8; 1];
        let waited = third.read(&mut first).is_err();
        drop(idle);
        third.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = Vec::new();
        third.read_to_end(&mut raw).unwrap();
        (waited, String::from_utf8_lossy(&raw).into_owned())
    });
    let (waited, raw) = answered.await.unwrap();
    assert!(waited, "the third connection was served while two others held both slots");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");

    let closed = tokio::task::spawn_blocking(move || {
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: te").unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = std::time::Instant::now();
        let mut raw = Vec::new();
        let _ = slow.read_to_end(&mut raw);
        started.elapsed()
    });
    let after = closed.await.unwrap();
    assert!(after >= Duration::from_millis(900) && after < Duration::from_secs(5), "closed after {after:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_come_is_refused_in_time() {
    // Goal: a submission declaring 100,000 bytes that sends ten is answered 408 `too_slow`
    // after limits.api_header_timeout_ms plus ten bytes at limits.api_body_bytes_per_s_min,
    // not after the request bound (130 s), and its client's share of the body budget
    // (here exactly one body) comes back at once.
    let limits = Limits {
        api_header_timeout_ms: 1_000,
        api_body_bytes_per_s_min: 1_000,
        api_body_bytes_max: 100_000,
        api_body_bytes_in_flight_max: 100_000,
        ..Limits::default()
    };
    let node = start("slow-body", limits).await;
    let addr = node.addr;
    let (after, raw) = tokio::task::spawn_blocking(move || {
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"POST /v1/records HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n{\"record\":")
            .unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let started = std::time::Instant::now();
        let mut raw = Vec::new();
        let _ = slow.read_to_end(&mut raw);
        (started.elapsed(), String::from_utf8_lossy(&raw).into_owned())
    })
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.1 408"), "{raw}");
    assert!(raw.contains("too_slow") && raw.contains("limits.api_body_bytes_per_s_min"), "{raw}");
    assert!(after >= Duration::from_millis(950) && after < Duration::from_secs(5), "answered after {after:?}");
    let submitted = node.post("/v1/records", &body_of(&publish(21, "slow/after", 1))).await;
    assert_eq!(submitted.status, 202, "the client's share came back: {submitted:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_is_held_until_its_client_takes_it() {
    // Goal: a block's answer (~8 MB) that its client does not read keeps its place in
    // limits.api_answer_bytes_in_flight_max: another large answer meanwhile is 503 busy while
    // small ones are served; once the client has read it, whole, the next is served.
    let node = start("answers", Limits { api_answer_bytes_in_flight_max: 1 << 20, ..Limits::default() }).await;
    let records: Vec<SignedRecord> = (1..=100)
        .map(|n| {
            let mut r = record(21, &format!("big/{n}"), Op::Publish, None, 1, n);
            r.body = Body::Inline(vec![b'x'; 60_000]);
            r.sign(&key(21))
        })
        .collect();
    node.commit(&records, true);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(node.addr).await.unwrap().into_std().unwrap();
    slow.set_nonblocking(false).unwrap();
    slow.write_all(b"GET /v1/blocks/1 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    // Its answer has begun, so it holds its place; the socket's buffers take a few MB of it at most.
    let mut raw = vec![0u8; 12];
    slow.read_exact(&mut raw).unwrap();
    assert_eq!(&raw, b"HTTP/1.1 200");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let detail = node.get("/v1/blocks/1").await.error(503, "busy");
    assert!(detail.contains("limits.api_answer_bytes_in_flight_max"), "{detail}");
    assert_eq!(node.get("/v1/status").await.status, 200, "small answers are not held");
    let raw = tokio::task::spawn_blocking(move || {
        slow.read_to_end(&mut raw).unwrap();
        raw
    })
    .await
    .unwrap();
    let answer = parse(&raw);
    assert_eq!(answer.json()["records"].as_array().unwrap().len(), 100);
    let again = node.get("/v1/blocks/1").await;
    assert_eq!(again.status, 200, "{:?}", again.status);
    assert_eq!(again.body, answer.body);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_is_429_with_retry_after() {
    // Goal: with api_requests_per_s = 2, a client's third request in the same instant is 429
    // rate_limited with Retry-After, and counted.
    let node = start("rate", Limits { api_requests_per_s: 2, ..Limits::default() }).await;
    assert_eq!(node.get("/healthz").await.status, 200);
    assert_eq!(node.get("/healthz").await.status, 200);
    let limited = node.get("/healthz").await;
    let detail = limited.error(429, "rate_limited");
    assert!(detail.contains("127.0.0.1") && detail.contains("2 requests per second"), "{detail}");
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(node.answers(429), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(node.get("/healthz").await.status, 200, "a token refills in half a second");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_nonce_and_a_namespace_not_granted_are_422_naming_the_rule() {
    // Goal: admission applies the stateful nonce rule against committed state and the agency's
    // namespace grant, each refusal naming what was wrong; nothing refused is pending.
    let node = start("rules", Limits::default()).await;
    node.commit(&[publish(21, "parcel/1", 5)], true);
    let replay = publish(21, "parcel/2", 5);
    let detail = node.post("/v1/records", &body_of(&replay)).await.error(422, "refused");
    assert!(detail.contains("nonce 5") && detail.contains("last final nonce 5"), "{detail}");
    let mut elsewhere = record(21, "x", Op::Publish, None, 1, 6);
    elsewhere.namespace = "companies".into();
    let detail = node.post("/v1/records", &body_of(&elsewhere.sign(&key(21)))).await.error(422, "refused");
    assert!(detail.contains("companies"), "{detail}");
    assert_eq!(node.shared.pool.lock().unwrap().len(), 0);
    node.stop().await;
}

/// A governance record by validator `signer` (key 1..=4) under `record_key`.
fn gov_record(signer: u8, record_key: String, action: &GovAction, nonce: u64) -> SignedRecord {
    action.signed_record(CHAIN, record_key, &key(signer), nonce)
}

fn approve(signer: u8, proposal: RecordId, nonce: u64) -> SignedRecord {
    let record_key = approval_key(&proposal, &key(signer).public());
    gov_record(signer, record_key, &GovAction::Approve { proposal }, nonce)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_proposals_and_the_membership_in_force_are_served() {
    // Goal: a proposal committed through ordinary records is listed and shown with its change,
    // status, approvals weighed by the set in force, and moves open → scheduled → applied as
    // approvals pass 2/3; /v1/gov shows the membership for the next block before and after;
    // an unknown id is 404, a malformed one 400, and a governance record signed by an officer
    // (not a validator) is refused at admission naming why.
    let node = start("gov", Limits::default()).await;
    let court = Agency {
        name: "court".into(),
        submitter_keys: vec![key(31).public()],
        namespaces: vec!["court-orders".into()],
    };
    let propose =
        GovAction::Propose { change: Change::AddAgency(court.clone()), effective_height: None, expires_height: 100 };
    let proposal = gov_record(1, "proposal/test-1".into(), &propose, 1);
    let id = proposal.id();

    let before = node.get("/v1/gov").await.json();
    assert_eq!(before["height"], 0);
    assert_eq!(before["next_height"], 1);
    assert_eq!(before["validators"].as_array().unwrap().len(), 4);
    assert_eq!(before["validators"][0]["name"], "validator-1");
    assert_eq!(before["validators"][0]["consensus_key"], key(1).public().to_hex());
    assert_eq!(before["validators"][0]["p2p_key"], key(11).public().to_hex());
    assert_eq!(before["validators"][0]["power"], 1);
    assert_eq!(before["total_power"], 4);
    assert_eq!(
        before["agencies"],
        json!([{ "name": "land", "namespaces": ["land-titles"],
        "submitter_keys": [key(21).public().to_hex(), key(22).public().to_hex()] }])
    );
    assert_eq!(before["params"], serde_json::to_value(Params::default()).unwrap());
    assert_eq!(node.get("/v1/gov/proposals").await.json(), json!({ "proposals": [], "next": null }));

    node.commit(std::slice::from_ref(&proposal), true);
    let listed = node.get("/v1/gov/proposals").await.json();
    let p = &listed["proposals"][0];
    assert_eq!(listed["proposals"].as_array().unwrap().len(), 1);
    assert_eq!(p["id"], id.to_hex());
    assert_eq!(p["status"], json!({ "name": "open", "height": null, "reason": null }));
    assert_eq!(p["change"], json!({ "add_agency": serde_json::to_value(&court).unwrap() }));
    assert!(p["description"].as_str().unwrap().contains("add agency \"court\""), "{p}");
    assert_eq!(p["proposer"], key(1).public().to_hex());
    assert_eq!((p["height"].as_u64(), p["expires_height"].as_u64()), (Some(1), Some(100)));
    assert_eq!(p["effective_height"], Value::Null);
    assert_eq!(
        p["approvals"],
        json!([{ "consensus_key": key(1).public().to_hex(), "validator": "validator-1", "power": 1 }])
    );
    assert_eq!((p["approving_power"].as_u64(), p["total_power"].as_u64()), (Some(1), Some(4)));
    assert_eq!(node.get(&format!("/v1/gov/proposals/{id}")).await.json(), *p);

    node.commit(&[approve(2, id, 1), approve(3, id, 1)], true);
    let shown = node.get(&format!("/v1/gov/proposals/{id}")).await.json();
    assert_eq!(shown["status"], json!({ "name": "scheduled", "height": 4, "reason": null }), "{shown}");
    assert_eq!(shown["approving_power"], 3);
    let approvers: Vec<&str> =
        shown["approvals"].as_array().unwrap().iter().map(|a| a["validator"].as_str().unwrap()).collect();
    assert_eq!(approvers.len(), 3);
    for name in ["validator-1", "validator-2", "validator-3"] {
        assert!(approvers.contains(&name), "{approvers:?}");
    }
    assert_eq!(
        node.get("/v1/gov").await.json()["agencies"].as_array().unwrap().len(),
        1,
        "not in force before height 4"
    );

    node.commit(&[], true);
    let shown = node.get(&format!("/v1/gov/proposals/{id}")).await.json();
    assert_eq!(shown["status"], json!({ "name": "applied", "height": 4, "reason": null }), "{shown}");
    let after = node.get("/v1/gov").await.json();
    assert_eq!((after["height"].as_u64(), after["next_height"].as_u64()), (Some(3), Some(4)));
    assert_eq!(
        after["agencies"][1],
        json!({ "name": "court", "namespaces": ["court-orders"],
        "submitter_keys": [key(31).public().to_hex()] })
    );
    assert_eq!(after["open_proposals"], 0);
    assert_ne!(after["charter_hash"], before["charter_hash"]);

    let unknown = RecordId([7; 32]);
    let detail = node.get(&format!("/v1/gov/proposals/{unknown}")).await.error(404, "not_found");
    assert!(detail.contains(&unknown.to_hex()), "{detail}");
    let detail = node.get("/v1/gov/proposals/abc").await.error(400, "bad_query");
    assert!(detail.contains("id"), "{detail}");
    node.get("/v1/gov?x=1").await.error(400, "bad_query");

    // The list comes a page at a time: `next` is the `after` of the following page.
    let grant = GovAction::Propose {
        change: Change::GrantNamespace { agency: "court".into(), namespace: "court-notices".into() },
        effective_height: None,
        expires_height: 100,
    };
    let second = gov_record(2, "proposal/test-2".into(), &grant, 2);
    node.commit(std::slice::from_ref(&second), true);
    let first_page = node.get("/v1/gov/proposals?limit=1").await.json();
    assert_eq!(first_page["proposals"].as_array().unwrap().len(), 1);
    let next = first_page["next"].as_str().expect("a second page").to_string();
    assert_eq!(first_page["proposals"][0]["id"], next);
    let second_page = node.get(&format!("/v1/gov/proposals?limit=1&after={next}")).await.json();
    assert_eq!(second_page["next"], Value::Null, "{second_page}");
    let mut ids = vec![next, second_page["proposals"][0]["id"].as_str().unwrap().to_string()];
    ids.sort();
    let mut want = vec![id.to_hex(), second.id().to_hex()];
    want.sort();
    assert_eq!(ids, want);
    for bad in ["limit=0", "limit=1001", "limit=x", "after=zz", "page=2"] {
        node.get(&format!("/v1/gov/proposals?{bad}")).await.error(400, "bad_query");
    }

    let by_officer = gov_record(21, "proposal/officer".into(), &propose, 50);
    let detail = node.post("/v1/records", &body_of(&by_officer)).await.error(422, "refused");
    assert!(detail.contains("not the consensus key of a validator in force"), "{detail}");
    node.stop().await;
}
