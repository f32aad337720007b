//! `annal bench cluster` and `annal bench verify`: a local validator cluster
//! driven through its real HTTP API, and this machine's ed25519 ceiling.
//!
//! Method (docs/BENCHMARKS.md repeats it): a fresh chain with `--signers`
//! agencies; the whole load is signed before the nodes start. Each signer's
//! records go, in nonce order, to one node (signer `s` → node `s mod N`), in
//! `POST /v1/records/batch` requests of `--batch` records (the binary body,
//! docs/API.md; encoded before the clock starts) from one thread per node,
//! paced to `--rate` or as fast as the nodes accept (`max`; a full
//! mempool's 503 is waited out). Meanwhile a probe thread submits one record
//! every 100 ms with `wait=final` and times it: those are the latency
//! percentiles. After `--warmup` seconds the window opens: finalized records
//! per second is the growth of node 0's log over the window; CPU is each
//! node's user + system time over the window (from /proc); peak RSS is each
//! node's VmHWM at the very end (after the catch-up and the audit, which the
//! nodes serve, when asked for); disk is each node's data folder at the end
//! over its log size. Each node's blocks committed, compact proposals rebuilt
//! and fetched whole, gossiped record batches dropped unchecked, and the
//! batches it gossiped of its API's records and the records in them are the
//! growth of its `/metrics` counters over the window.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use annal_ledger::genesis::Genesis;
use annal_ledger::keys::SecretKey;
use annal_ledger::submission;
use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::bench::Load;
use crate::client::{BatchAnswer, Client};

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// Validators to start (ignored with --nodes).
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seconds of load before the window opens.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Offered load in records per second, or `max` (as fast as the nodes accept).
    #[arg(long, default_value = "max")]
    rate: String,
    /// Size of each signed record's canonical encoding.
    #[arg(long, default_value_t = 512)]
    record_bytes: usize,
    /// Submitter keys (one agency each) signing the load.
    #[arg(long, default_value_t = 16)]
    signers: usize,
    /// Records per batch request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Most records per block (a genesis parameter of the bench chain). Under
    /// load leaders fill blocks to it; 8,000 rather than 4,000 gave ~5 % more
    /// at rate max (docs/BENCHMARKS.md, session 16); a steady rate's blocks stay smaller.
    #[arg(long, default_value_t = 8000)]
    block_records: usize,
    /// With `--rate max`, records signed in advance per second of the run (the most it can offer).
    #[arg(long, default_value_t = 30_000)]
    max_rate: u64,
    /// Drive an existing devnet instead: its API URLs, comma-separated (needs --dir, the devnet folder).
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    /// Folder of the bench chain (default: a new one under /var/tmp, removed afterwards), or of the devnet with --nodes.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Catch-up: stop the last validator before the load and restart it after;
    /// report how fast it catches up with the others (records/s).
    #[arg(long)]
    catch_up: bool,
    /// Audit: after the run, once the nodes are quiet (at most a minute's wait),
    /// replay node 0's whole chain with `annal audit` from the genesis file and
    /// report its rate (records/s).
    #[arg(long)]
    audit: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Seconds to measure each of the single-core and all-core rates.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Signatures checked together in one batch (1 to 10,000). The ceiling
    /// `annal bench cluster` prints is measured at 64.
    #[arg(long, default_value_t = CEILING_BATCH)]
    batch: usize,
    /// Distinct keys signing each batch (1 to 256, at most the batch): the
    /// check sums the terms of one key, so fewer keys check faster.
    #[arg(long, default_value_t = CEILING_BATCH)]
    keys: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Batched ed25519 verifications per second: on one core, and on every core at once.
pub struct Ceiling {
    pub per_core: f64,
    pub all_cores: f64,
    pub cores: usize,
}

/// Signatures per batch, and keys signing it, of the ceiling printed beside every cluster result.
const CEILING_BATCH: usize = 64;

/// Measures the ed25519 batch-verification rate of this machine (batches of
/// 64 signed 512-byte records, each by a different key: the verifier sums the
/// terms of one key, so fewer keys would verify faster than this ceiling).
pub fn ceiling(seconds: u64) -> Result<Ceiling> {
    measure_verify(seconds, CEILING_BATCH, CEILING_BATCH)
}

/// The batch-verification rate for batches of `batch` signed 512-byte records by `keys` keys.
fn measure_verify(seconds: u64, batch: usize, keys: usize) -> Result<Ceiling> {
    let keys: Vec<SecretKey> = (0..keys).map(|i| SecretKey::from_seed([i as u8; 32])).collect();
    let signers: Vec<(&SecretKey, String)> = keys.iter().map(|k| (k, "bench".to_string())).collect();
    let load = Load { chain_id: "ceiling", signers: &signers, record_bytes: 512, body: "random" };
    let records = load.sign(0..batch as u64)?;
    let run = |threads: usize| -> f64 {
        let stop = AtomicBool::new(false);
        let done = AtomicU64::new(0);
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        annal_ledger::exec::verify_batch(&records).expect("the ceiling's records verify");
                        done.fetch_add(records.len() as u64, Ordering::Relaxed);
                    }
                });
            }
            std::thread::sleep(Duration::from_secs(seconds));
            stop.store(true, Ordering::Relaxed);
        });
        done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
    };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    Ok(Ceiling { per_core: run(1), all_cores: run(cores), cores })
}

/// `annal bench verify`.
pub fn verify(args: VerifyArgs) -> Result<()> {
    if !(1..=10_000).contains(&args.batch) || !(1..=256).contains(&args.keys) || args.keys > args.batch {
        bail!(
            "--batch {} --keys {}: the batch must be 1 to 10,000 signatures, and the keys 1 to 256 and at most the batch",
            args.batch,
            args.keys
        );
    }
    let c = measure_verify(args.seconds.max(1), args.batch, args.keys)?;
    if args.json {
        println!(
            "{}",
            json!({ "verifications_per_s_per_core": c.per_core.round(), "verifications_per_s_all_cores": c.all_cores.round(), "cores": c.cores, "batch": args.batch, "keys": args.keys })
        );
    } else {
        println!("ed25519 batch verification (batches of {} records of 512 bytes, {} keys):", args.batch, args.keys);
        println!("  one core       {:>9.0} signatures/s", c.per_core);
        println!("  {} cores        {:>9.0} signatures/s", c.cores, c.all_cores);
        // The ceiling is defined at the shape `annal bench cluster` measures it at.
        if (args.batch, args.keys) == (CEILING_BATCH, CEILING_BATCH) {
            println!("  ceiling for V validators each checking every record: {:.0}/V records/s", c.all_cores);
        }
    }
    Ok(())
}

struct BenchNode {
    api_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// How to start it again (nodes this bench started).
    entry: Option<crate::devnet::NodeEntry>,
}

/// `annal bench cluster`.
pub fn cluster(args: ClusterArgs) -> Result<()> {
    let rate: Option<u64> = match args.rate.as_str() {
        "max" => None,
        r => Some(r.parse().with_context(|| format!("--rate {r:?} is neither a number nor max"))?),
    };
    if args.signers == 0 || args.batch == 0 || args.duration == 0 || args.validators == 0 {
        bail!("--signers, --batch, --duration and --validators must be above 0");
    }
    let own_dir = args.dir.is_none();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("annal-bench-cluster-{}", std::process::id())));
    let ceiling = ceiling(2)?;
    if !args.json {
        eprintln!(
            "ed25519 ceiling on this machine: {:.0}/s on one core, {:.0}/s on {} cores",
            ceiling.per_core, ceiling.all_cores, ceiling.cores
        );
    }

    // The chain: fresh (or the given devnet), its agencies' keys, and the nodes.
    let mut nodes = if args.nodes.is_empty() {
        if dir.exists() {
            bail!("{} exists; give a new folder or none", dir.display());
        }
        // On standard error: under --json, standard output carries the one JSON object.
        eprintln!("{}", crate::genesis_cmd::new("bench", args.validators, args.signers + 1, &dir, None)?);
        let path = dir.join("genesis.json");
        let mut genesis = Genesis::load(&path)?;
        genesis.params.block_records_max = args.block_records;
        genesis.params.block_bytes_max = genesis.params.block_bytes_max.max(args.block_records * args.record_bytes * 2);
        genesis.validate()?;
        std::fs::write(&path, genesis.to_json())?;
        let entries = crate::devnet::write_configs(&dir, args.validators)?;
        let mut nodes = Vec::new();
        for e in entries {
            let child = crate::devnet::spawn_node(&e)?;
            nodes.push(BenchNode {
                api_url: e.api_url.clone(),
                data_dir: e.data_dir.clone(),
                log: e.log.clone(),
                child: Some(child),
                entry: Some(e),
            });
        }
        nodes
    } else {
        args.nodes
            .iter()
            .map(|u| BenchNode {
                api_url: u.clone(),
                data_dir: PathBuf::new(),
                log: PathBuf::new(),
                child: None,
                entry: None,
            })
            .collect()
    };
    let mut result = drive(&args, rate, &dir, &mut nodes, &ceiling);
    for n in &mut nodes {
        if let Some(c) = n.child.as_mut() {
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }
    // Disk at rest: each stopped node's data folder (store flushed, WAL emptied) per record.
    if let Ok(report) = result.as_mut() {
        let records = report["final_log_size"].as_u64().unwrap_or(0).max(1) as f64;
        let per_record: Vec<f64> = nodes
            .iter()
            .filter(|n| !n.data_dir.as_os_str().is_empty())
            .map(|n| dir_bytes(&n.data_dir) as f64 / records)
            .collect();
        let ratio: Vec<f64> = per_record.iter().map(|b| b / args.record_bytes as f64).collect();
        report["disk_bytes_per_record_per_node"] = json!(per_record);
        report["disk_over_raw_per_node"] = json!(ratio);
    }
    if own_dir && result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else if own_dir {
        eprintln!("kept {} (node logs) for inspection", dir.display());
    }
    let report = result?;
    if args.json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    Ok(())
}

fn drive(
    args: &ClusterArgs,
    rate: Option<u64>,
    dir: &Path,
    nodes: &mut [BenchNode],
    ceiling: &Ceiling,
) -> Result<Value> {
    let genesis = Genesis::load(&dir.join("genesis.json"))?;
    let agencies = genesis.agencies.len();
    if agencies < 2 {
        bail!("the chain needs at least two agencies: one to probe latency, the rest to load it");
    }
    let keys: Vec<SecretKey> = (0..agencies)
        .map(|j| SecretKey::read_file(&dir.join(format!("agency-{j}")).join("submitter.key")))
        .collect::<Result<_, _>>()?;
    let namespaces: Vec<String> = genesis.agencies.iter().map(|a| a.namespaces[0].clone()).collect();
    let clients: Vec<Client> = nodes.iter().map(|n| Client::new(&n.api_url)).collect::<Result<_, _>>()?;
    if args.catch_up && (nodes.len() < 4 || nodes[nodes.len() - 1].entry.is_none()) {
        bail!("--catch-up needs at least 4 validators this bench starts (the rest keep a quorum)");
    }

    // Sign everything first: the load, and the probes (the last agency).
    let load_signers: Vec<(&SecretKey, String)> =
        keys[..agencies - 1].iter().zip(&namespaces).map(|(k, n)| (k, n.clone())).collect();
    let seconds = args.warmup + args.duration + 5;
    let total = rate.unwrap_or(args.max_rate) * seconds;
    let t = Instant::now();
    let load =
        Load { chain_id: &genesis.chain_id, signers: &load_signers, record_bytes: args.record_bytes, body: "text" }
            .sign(0..total)?;
    let probe_signer = [(&keys[agencies - 1], namespaces[agencies - 1].clone())];
    let probes =
        Load { chain_id: &genesis.chain_id, signers: &probe_signer, record_bytes: args.record_bytes, body: "text" }
            .sign(0..seconds * 10 + 10)?;
    if !args.json {
        eprintln!("signed {} records in {:.1} s", total + probes.len() as u64, t.elapsed().as_secs_f64());
    }

    wait_ready(&clients, nodes)?;
    if args.catch_up {
        // The last validator misses the whole load; the others keep a quorum.
        stop_node(&mut nodes[nodes.len() - 1], libc::SIGKILL);
    }
    let every_client = &clients[..];
    let clients = &clients[..nodes.len() - usize::from(args.catch_up)];
    // Per node, its signers' records in nonce order, encoded before the clock starts
    // (encoding them while feeding cost the cores the nodes share).
    let n = clients.len();
    let mut per_node: Vec<Vec<Vec<u8>>> = vec![Vec::new(); n];
    for (i, r) in load.iter().enumerate() {
        per_node[(i % load_signers.len()) % n].push(r.to_bytes());
    }
    let stop = AtomicBool::new(false);
    let offered = AtomicU64::new(0);
    let latencies: Mutex<Vec<(Instant, f64)>> = Mutex::new(Vec::new());
    let refused = AtomicU64::new(0);
    let started = Instant::now();
    let window = Mutex::new(None::<(Instant, u64, Vec<u64>, Vec<Option<Counters>>)>);
    let mut end_state = None;
    std::thread::scope(|s| -> Result<()> {
        for (i, records) in per_node.iter().enumerate() {
            let (client, stop, offered, refused) = (&clients[i], &stop, &offered, &refused);
            let per_thread_rate = rate.map(|r| r as f64 / n as f64);
            s.spawn(move || feed(client, records, args.batch, per_thread_rate, stop, offered, refused));
        }
        {
            let (clients, stop, latencies, probes) = (&clients, &stop, &latencies, &probes);
            s.spawn(move || {
                for (k, r) in probes.iter().enumerate() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = json!({ "record": B64.encode(r.to_bytes()) });
                    let t = Instant::now();
                    let answer = clients[k % clients.len()].post_json::<Value>(
                        "/v1/records?wait=final&timeout_ms=60000",
                        &body,
                        Duration::from_secs(70),
                        1 << 20,
                    );
                    if matches!(&answer, Ok(v) if v["status"] == "final") {
                        latencies.lock().expect("latencies").push((t, t.elapsed().as_secs_f64() * 1000.0));
                    }
                    std::thread::sleep(Duration::from_millis(100).saturating_sub(t.elapsed()));
                }
            });
        }
        std::thread::sleep(Duration::from_secs(args.warmup));
        *window.lock().expect("window") =
            Some((Instant::now(), log_size(&clients[0])?, cpu_ticks(nodes), counters(every_client)));
        std::thread::sleep(Duration::from_secs(args.duration));
        end_state = Some((Instant::now(), log_size(&clients[0])?, cpu_ticks(nodes), counters(every_client)));
        stop.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    let caught_up = if args.catch_up { Some(catch_up(&clients[0], nodes)?) } else { None };
    let (t0, size0, cpu0, counted0) = window.into_inner().expect("window").context("the window never opened")?;
    let (t1, size1, cpu1, counted1) = end_state.context("the window never closed")?;
    let elapsed = (t1 - t0).as_secs_f64();
    let finalized = (size1 - size0) as f64 / elapsed;
    let mut lat: Vec<f64> = latencies
        .into_inner()
        .expect("latencies")
        .into_iter()
        .filter(|(t, _)| *t >= t0 && *t <= t1)
        .map(|(_, l)| l)
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| if lat.is_empty() { f64::NAN } else { lat[((lat.len() - 1) as f64 * p).round() as usize] };
    let tick = clock_ticks_per_s();
    let cpu: Vec<f64> = cpu0.iter().zip(&cpu1).map(|(a, b)| (b - a) as f64 / tick / elapsed).collect();
    // What each node spent per finalized record: the quantity a throughput target is a budget of
    // (25,000/s on two cores with four validators leaves each 20 µs; docs/BENCHMARKS.md, session 21).
    let cpu_us_per_record: Vec<Option<f64>> =
        cpu.iter().map(|c| (finalized > 0.0).then(|| (c * 1e6 / finalized * 10.0).round() / 10.0)).collect();
    let _ = started;
    let audited = if args.audit {
        let settled = settle(nodes);
        Some((audit_rate(&nodes[0].api_url, dir)?, settled))
    } else {
        None
    };
    let rss: Vec<f64> = nodes.iter().map(|n| peak_rss_mb(n).unwrap_or(f64::NAN)).collect();
    let mut report = json!({
        "validators": nodes.len(), "record_bytes": args.record_bytes, "signers": load_signers.len(),
        "offered_rate": rate.map_or(json!("max"), |r| json!(r)), "duration_s": elapsed,
        "finalized_records_per_s": finalized.round(), "records_finalized_in_window": size1 - size0,
        "latency_ms_p50": pct(0.5), "latency_ms_p95": pct(0.95), "latency_ms_p99": pct(0.99), "latency_probes": lat.len(),
        "records_offered": offered.load(Ordering::Relaxed), "records_refused": refused.load(Ordering::Relaxed),
        "cpu_cores_per_node": cpu, "cpu_us_per_record_per_node": cpu_us_per_record, "peak_rss_mb_per_node": rss, "final_log_size": log_size(&clients[0])?,
        "verify_per_s_per_core": ceiling.per_core.round(), "verify_per_s_all_cores": ceiling.all_cores.round(),
        "signature_ceiling_records_per_s": (ceiling.all_cores / nodes.len() as f64).round(),
        "block_records_max": genesis.params.block_records_max,
    });
    // Each node's counters over the window (null for a node that did not answer).
    for (k, (key, _)) in COUNTERS.iter().enumerate() {
        let per_node: Vec<Option<u64>> =
            counted0.iter().zip(&counted1).map(|(a, b)| Some(b.as_ref()?[k].saturating_sub(a.as_ref()?[k]))).collect();
        report[*key] = json!(per_node);
    }
    if let Some((records, seconds)) = caught_up {
        report["catch_up_records"] = json!(records);
        report["catch_up_s"] = json!(seconds);
        report["catch_up_records_per_s"] = json!((records as f64 / seconds).round());
    }
    if let Some(((records, seconds), settled)) = audited {
        report["audit_waited_for_quiet_nodes_s"] = json!(settled);
        report["audit_records"] = json!(records);
        report["audit_s"] = json!(seconds);
        report["audit_records_per_s"] = json!((records as f64 / seconds).round());
    }
    Ok(report)
}

fn stop_node(node: &mut BenchNode, signal: libc::c_int) {
    if let Some(mut c) = node.child.take() {
        unsafe {
            libc::kill(c.id() as libc::pid_t, signal);
        }
        let _ = c.wait();
    }
}

/// Once the load has stopped and `leader`'s log has stopped growing (its
/// mempool drained), restarts the last node, stopped since before the load,
/// and times it from process start until its log reaches `leader`'s size.
/// Returns (records it caught up, seconds).
fn catch_up(leader: &Client, nodes: &mut [BenchNode]) -> Result<(u64, f64)> {
    let mut target = log_size(leader)?;
    let quiet_since = Instant::now();
    let mut last_change = Instant::now();
    while last_change.elapsed() < Duration::from_secs(3) && quiet_since.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(250));
        let now = log_size(leader)?;
        if now != target {
            (target, last_change) = (now, Instant::now());
        }
    }
    let node = nodes.last_mut().expect("at least 4 nodes");
    let entry = node.entry.as_ref().expect("checked before the load");
    let started = Instant::now();
    node.child = Some(crate::devnet::spawn_node(entry)?);
    let client = Client::new(&node.api_url)?;
    let mut from = None;
    loop {
        if let Some(Ok(Some(status))) = node.child.as_mut().map(|c| c.try_wait()) {
            bail!("the catching-up node exited ({status}); see {}", node.log.display());
        }
        if let Ok(size) = log_size(&client) {
            let from = *from.get_or_insert(size);
            if size >= target {
                return Ok((target - from, started.elapsed().as_secs_f64()));
            }
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the restarted node did not catch up within 30 minutes; see {}", node.log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the nodes are quiet (compactions after the load done: under
/// 0.05 cores each over a second), at most a minute, so that what is measured
/// next runs on an idle machine; returns the seconds waited.
fn settle(nodes: &[BenchNode]) -> f64 {
    let started = Instant::now();
    let tick = clock_ticks_per_s();
    while started.elapsed() < Duration::from_secs(60) {
        let before: u64 = cpu_ticks(nodes).iter().sum();
        std::thread::sleep(Duration::from_secs(1));
        let used: u64 = cpu_ticks(nodes).iter().sum();
        if (used.saturating_sub(before)) as f64 / tick < 0.05 * nodes.len() as f64 {
            break;
        }
    }
    started.elapsed().as_secs_f64()
}

/// Runs `annal audit` on the node's whole chain from the genesis file; (records replayed, seconds).
fn audit_rate(api_url: &str, dir: &Path) -> Result<(u64, f64)> {
    let exe = std::env::current_exe().context("finding the annal binary")?;
    let started = Instant::now();
    let out = std::process::Command::new(exe)
        .args(["audit", "--json", "--node", api_url, "--genesis"])
        .arg(dir.join("genesis.json"))
        .output()
        .context("running annal audit")?;
    let seconds = started.elapsed().as_secs_f64();
    let answer: Value = serde_json::from_slice(&out.stdout).context("annal audit printed no JSON")?;
    if !out.status.success() || answer["consistent"] != json!(true) {
        bail!("annal audit did not find the chain consistent: {answer}");
    }
    let records = answer["records"].as_u64().or_else(|| answer["log_size"].as_u64()).unwrap_or(0);
    Ok((records, seconds))
}

/// Sends `records` in order in binary batches; waits out a full mempool; paces to `rate` if given.
fn feed(
    client: &Client,
    records: &[Vec<u8>],
    batch: usize,
    rate: Option<f64>,
    stop: &AtomicBool,
    offered: &AtomicU64,
    refused: &AtomicU64,
) {
    let started = Instant::now();
    let mut sent = 0usize;
    // The body of the batch starting at `sent`, kept while a full mempool refuses
    // it whole: encoding 500 records again each time cost the cores the nodes share.
    let mut body: Option<(usize, Vec<u8>)> = None;
    while sent < records.len() && !stop.load(Ordering::Relaxed) {
        if let Some(r) = rate {
            let due = started + Duration::from_secs_f64(sent as f64 / r);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        if body.as_ref().is_none_or(|(from, _)| *from != sent) {
            let chunk = &records[sent..(sent + batch).min(records.len())];
            body = Some((sent, submission::encode_batch(chunk.iter().map(|r| r.as_slice()))));
        }
        let (_, body) = body.as_ref().expect("encoded above");
        let answer = client.post::<BatchAnswer>(
            "/v1/records/batch",
            submission::BINARY_BATCH_MEDIA_TYPE,
            body,
            Duration::from_secs(30),
            16 << 20,
        );
        let Ok(answer) = answer else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        // Accepted up to the first mempool_full; resend from there after a pause.
        let mut taken = 0;
        let mut full = false;
        for r in &answer.results {
            match r.error.as_ref().map(|e| e.error.as_str()) {
                None => taken += 1,
                Some("mempool_full") => {
                    full = true;
                    break;
                }
                Some(_) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    taken += 1;
                }
            }
        }
        sent += taken;
        offered.fetch_add(taken as u64, Ordering::Relaxed);
        if full {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn wait_ready(clients: &[Client], nodes: &mut [BenchNode]) -> Result<()> {
    let started = Instant::now();
    loop {
        for n in nodes.iter_mut() {
            if let Some(Ok(Some(status))) = n.child.as_mut().map(|c| c.try_wait()) {
                bail!("a node exited ({status}); see {}", n.log.display());
            }
        }
        let heights: Vec<u64> = clients
            .iter()
            .map(|c| c.get_json::<Value>("/v1/status", 1 << 20).ok().and_then(|v| v["height"].as_u64()).unwrap_or(0))
            .collect();
        if heights.iter().all(|&h| h >= 2) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the nodes did not finalize blocks within 60 s (heights {heights:?})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The node counters a report gives per node over the window: its key, and the `/metrics` name.
/// Refetched proposals and dropped record batches show a node that falls behind on records;
/// records per gossiped batch, how well a node batches what its API takes.
const COUNTERS: [(&str, &str); 6] = [
    ("blocks_committed_per_node", "annal_blocks_committed_total"),
    ("proposals_rebuilt_per_node", "annal_proposals_rebuilt_total"),
    ("proposals_fetched_per_node", "annal_proposals_fetched_total"),
    ("record_batches_dropped_per_node", "annal_record_batches_dropped_total"),
    ("record_batches_gossiped_per_node", "annal_record_batches_gossiped_total"),
    ("records_gossiped_per_node", "annal_records_gossiped_total"),
];

type Counters = [u64; COUNTERS.len()];

/// Each node's [`COUNTERS`], `None` for a node that does not answer (one the bench stopped).
fn counters(clients: &[Client]) -> Vec<Option<Counters>> {
    clients
        .iter()
        .map(|client| {
            let text = client.get_text("/metrics", 1 << 20).ok()?;
            let mut out = [0; COUNTERS.len()];
            for (slot, (_, name)) in out.iter_mut().zip(COUNTERS) {
                *slot = text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())?;
            }
            Some(out)
        })
        .collect()
}

fn log_size(client: &Client) -> Result<u64> {
    let v: Value = client.get_json("/v1/status", 1 << 20)?;
    v["log_size"].as_u64().context("status has no log_size")
}

/// utime + stime of each node process, in clock ticks (0 for nodes this bench did not start).
/// The unit of `cpu_ticks`: clock ticks per second.
fn clock_ticks_per_s() -> f64 {
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

fn cpu_ticks(nodes: &[BenchNode]) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| {
            let Some(c) = &n.child else { return 0 };
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", c.id())).unwrap_or_default();
            // Fields after the command name (which may hold spaces) start after the last ')'.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        })
        .collect()
}

fn peak_rss_mb(n: &BenchNode) -> Option<f64> {
    let c = n.child.as_ref()?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.id())).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn print_report(r: &Value) {
    println!(
        "annal bench cluster: {} validators, {}-byte records, {} signers, offered {}, window {:.1} s",
        r["validators"],
        r["record_bytes"],
        r["signers"],
        r["offered_rate"],
        r["duration_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  finalized          {} records/s ({} records in the window; signature ceiling {} records/s)",
        r["finalized_records_per_s"], r["records_finalized_in_window"], r["signature_ceiling_records_per_s"]
    );
    println!(
        "  submit → final     p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms ({} probes)",
        r["latency_ms_p50"].as_f64().unwrap_or(f64::NAN),
        r["latency_ms_p95"].as_f64().unwrap_or(f64::NAN),
        r["latency_ms_p99"].as_f64().unwrap_or(f64::NAN),
        r["latency_probes"]
    );
    println!("  CPU cores / node   {}", r["cpu_cores_per_node"]);
    println!("  CPU µs / record    {} (per node, per finalized record)", r["cpu_us_per_record_per_node"]);
    println!("  peak RSS MB / node {}", r["peak_rss_mb_per_node"]);
    println!("  disk bytes/record  {} (× raw: {})", r["disk_bytes_per_record_per_node"], r["disk_over_raw_per_node"]);
    println!("  refused            {} of {} offered", r["records_refused"], r["records_offered"]);
    if r.get("catch_up_records_per_s").is_some() {
        println!(
            "  catch-up           {} records/s ({} records in {:.1} s, from process start)",
            r["catch_up_records_per_s"],
            r["catch_up_records"],
            r["catch_up_s"].as_f64().unwrap_or(f64::NAN)
        );
    }
    if r.get("audit_records_per_s").is_some() {
        println!(
            "  audit replay       {} records/s ({} records in {:.1} s)",
            r["audit_records_per_s"],
            r["audit_records"],
            r["audit_s"].as_f64().unwrap_or(f64::NAN)
        );
    }
}
