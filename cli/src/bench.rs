//! `annal bench ledger`: the ledger core's throughput, proof cost and disk use, measured.
//!
//! Method (docs/BENCHMARKS.md repeats it): a one-validator chain with
//! `--signers` submitter keys; every record is signed before timing starts;
//! then blocks of `--block-records` are executed with every signature verified
//! in one ed25519 batch, certified, and committed to RocksDB (one fsynced
//! write batch per block) on the calling thread. Then inclusion proofs for
//! random indices are generated from RocksDB and verified, and the store is
//! compacted and its SST bytes divided by the raw record bytes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use annal_ledger::block::{Certificate, Height, View};
use annal_ledger::exec::{execute, verify_batch, BlockMeta, Signatures};
use annal_ledger::genesis::{Agency, Genesis, Params, Validator};
use annal_ledger::gov::Governance;
use annal_ledger::keys::SecretKey;
use annal_ledger::merkle;
use annal_ledger::record::{Body, Op, Record, SignedRecord};
use annal_ledger::store::{Store, StoreOptions};
use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

#[derive(clap::Args)]
pub struct LedgerArgs {
    /// Records to commit.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Records per block.
    #[arg(long, default_value_t = 1000)]
    block_records: usize,
    /// Size of each signed record's canonical encoding, in bytes (the body is padded to reach it).
    #[arg(long, default_value_t = 512)]
    record_bytes: usize,
    /// Body content: `text` (printable, like a filing) or `random` (incompressible).
    #[arg(long, default_value = "text")]
    body: String,
    /// Distinct submitter keys signing the load.
    #[arg(long, default_value_t = 16)]
    signers: usize,
    /// Inclusion proofs to generate and verify at the end.
    #[arg(long, default_value_t = 20_000)]
    proofs: usize,
    /// Validators in the chain; each block is certified by the smallest quorum
    /// (more than 2/3), which sets the size of proof bundles.
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Proof bundles to build and verify at the end (with status proofs).
    #[arg(long, default_value_t = 200)]
    bundles: usize,
    /// Store folder (default: a new folder under /var/tmp, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Do not fsync each block (measures RocksDB without the durability promise).
    #[arg(long)]
    no_sync: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn ledger(args: LedgerArgs) -> Result<()> {
    if args.block_records == 0 || args.signers == 0 || args.records == 0 {
        bail!("--records, --block-records and --signers must be above 0");
    }
    if args.validators == 0 || args.validators > annal_ledger::genesis::VALIDATORS_MAX {
        bail!("--validators must be 1 to {}", annal_ledger::genesis::VALIDATORS_MAX);
    }
    let chain_id = "annal-bench";
    let validators: Vec<SecretKey> = (0..args.validators).map(|i| SecretKey::from_seed(seed_of(10 + i))).collect();
    let quorum = args.validators - (args.validators - 1) / 3;
    let signers: Vec<SecretKey> = (0..args.signers).map(|i| SecretKey::from_seed(seed_of(1000 + i))).collect();
    let genesis = Genesis {
        chain_id: chain_id.into(),
        genesis_time_ms: 0,
        validators: validators
            .iter()
            .enumerate()
            .map(|(i, k)| Validator {
                name: format!("validator-{i}"),
                consensus_key: k.public(),
                p2p_key: SecretKey::from_seed(seed_of(5000 + i)).public(),
                power: 1,
            })
            .collect(),
        agencies: vec![Agency {
            name: "registry".into(),
            submitter_keys: signers.iter().map(|k| k.public()).collect(),
            namespaces: vec!["land-titles".into()],
        }],
        params: Params::default(),
    };
    genesis.validate()?;
    let gov = Governance::genesis(&genesis);
    let set = genesis.validator_set();

    let t = Instant::now();
    let records = sign_load(&args, chain_id, &signers)?;
    let raw_bytes: u64 = records.iter().map(|r| r.to_bytes().len() as u64).sum();
    let sign_time = t.elapsed();

    let (dir, remove_after) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("annal-bench-ledger-{}", std::process::id())), true),
    };
    if dir.exists() {
        bail!("{} exists; give a new --dir", dir.display());
    }
    let mut store = Store::open(&dir, genesis.hash(), StoreOptions { sync: !args.no_sync, ..StoreOptions::default() })?;

    // Commit, timed, with the time split into its three stages.
    let t = Instant::now();
    let (mut t_verify, mut t_execute, mut t_commit) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    // Each block's certify and write: a slow one stalls every validator's commit at that block.
    let mut writes = Vec::with_capacity(records.len().div_ceil(args.block_records));
    for (b, block) in records.chunks(args.block_records).enumerate() {
        let t0 = Instant::now();
        verify_batch(block).with_context(|| format!("verifying block {}", b + 1))?;
        let t1 = Instant::now();
        let height = Height(store.tip().height.0 + 1);
        let executed = execute(&gov, height, &store, store.frontier(), block, Signatures::Verified)
            .with_context(|| format!("executing block {}", b + 1))?;
        let t2 = Instant::now();
        let meta = BlockMeta {
            height: Height(store.tip().height.0 + 1),
            view: View(b as u64),
            parent: store.tip().block_hash,
            time_ms: b as u64,
            proposer: 0,
            validators_hash: set.hash(),
        };
        let header = executed.header(chain_id, &meta);
        let quorum_keys: Vec<(usize, &SecretKey)> = validators.iter().enumerate().take(quorum).collect();
        let cert = Certificate::sign(&header, &set, &quorum_keys);
        store.commit(&header, &cert, &executed)?;
        t_verify += t1 - t0;
        t_execute += t2 - t1;
        t_commit += t2.elapsed();
        writes.push(t2.elapsed());
    }
    let commit_time = t.elapsed();
    let size = store.tip().log_size;
    let root = store.log_root();

    // Proofs at the final size, for random indices.
    if args.proofs == 0 {
        bail!("--proofs must be above 0");
    }
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let indices: Vec<u64> = (0..args.proofs).map(|_| rng.gen_range(0..size)).collect();
    let t = Instant::now();
    let mut proofs = Vec::with_capacity(indices.len());
    for &i in &indices {
        proofs.push(store.inclusion_proof(i, size)?);
    }
    let gen_time = t.elapsed();
    let leaves: Vec<merkle::Hash> = indices
        .iter()
        .map(|&i| Ok(merkle::leaf_hash(&store.record_bytes(i)?.context("record missing")?)))
        .collect::<Result<_>>()?;
    let t = Instant::now();
    for ((&i, proof), leaf) in indices.iter().zip(&proofs).zip(&leaves) {
        merkle::verify_inclusion(leaf, i, size, proof, &root)?;
    }
    let verify_time = t.elapsed();

    // Proof bundles (record, paths, certified block, status proof as of the tip).
    let (mut bundle_bytes, mut bare_bytes) = (0usize, 0usize);
    let (mut bundle_build, mut bundle_verify) = (Duration::ZERO, Duration::ZERO);
    let mut sample_bundle = None;
    for &i in indices.iter().take(args.bundles) {
        let id = SignedRecord::id_of_bytes(&store.record_bytes(i)?.context("record missing")?);
        let t = Instant::now();
        let b = annal_ledger::proof::bundle(&store, &genesis, &id, true)?;
        bundle_build += t.elapsed();
        let json = b.to_json();
        bundle_bytes += json.len();
        bare_bytes += annal_ledger::proof::Bundle { status: None, ..b }.to_json().len();
        let t = Instant::now();
        let parsed = annal_ledger::proof::Bundle::from_json(&json)?;
        annal_ledger::proof::verify(&parsed, &genesis, None)?;
        bundle_verify += t.elapsed();
        sample_bundle.get_or_insert(json);
    }
    let bundles = args.bundles.min(indices.len()).max(1);
    let process_ms = match &sample_bundle {
        Some(json) => time_verify_process(&dir, &genesis, json)?,
        None => 0.0,
    };

    store.flush()?;
    store.compact();
    let disk = store.disk_bytes();
    drop(store);
    if remove_after {
        std::fs::remove_dir_all(&dir).ok();
    }

    let per_s = size as f64 / commit_time.as_secs_f64();
    let gen_us = micros(gen_time) / args.proofs.max(1) as f64;
    let verify_us = micros(verify_time) / args.proofs.max(1) as f64;
    let disk_ratio = disk as f64 / raw_bytes as f64;
    let bundle_avg = bundle_bytes / bundles;
    let bare_avg = bare_bytes / bundles;
    let bundle_build_us = micros(bundle_build) / bundles as f64;
    let bundle_verify_us = micros(bundle_verify) / bundles as f64;
    let (slowest_block, slowest) =
        writes.iter().enumerate().max_by_key(|w| *w.1).map_or((0, Duration::ZERO), |(b, w)| (b + 1, *w));
    writes.sort_unstable();
    let write_ms_p50 = writes.get(writes.len() / 2).map_or(0.0, |w| w.as_secs_f64() * 1e3);
    let write_ms_max = slowest.as_secs_f64() * 1e3;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "records": size, "block_records": args.block_records, "record_bytes": args.record_bytes,
                "body": args.body, "sync": !args.no_sync,
                "records_per_s": per_s, "proof_gen_us": gen_us, "proof_verify_us": verify_us,
                "disk_bytes": disk, "raw_record_bytes": raw_bytes, "disk_per_raw": disk_ratio,
                "validators": args.validators, "bundle_bytes": bundle_avg, "bundle_bytes_without_status": bare_avg, "bundle_build_us": bundle_build_us,
                "bundle_verify_us": bundle_verify_us, "verify_process_ms": process_ms,
                "sign_s": sign_time.as_secs_f64(), "commit_s": commit_time.as_secs_f64(),
                "verify_s": t_verify.as_secs_f64(), "execute_s": t_execute.as_secs_f64(), "write_s": t_commit.as_secs_f64(),
                "write_ms_p50": write_ms_p50, "write_ms_max": write_ms_max,
            })
        );
    } else {
        println!(
            "annal bench ledger: {size} records of {} bytes ({} bodies), blocks of {}, fsync {}",
            args.record_bytes, args.body, args.block_records, !args.no_sync
        );
        println!("  signing the load (untimed)      {:>10.2} s", sign_time.as_secs_f64());
        println!("  commit, signatures verified     {:>10.0} records/s  ({:.2} s)", per_s, commit_time.as_secs_f64());
        println!(
            "    of which: signatures {:.2} s, execute (rules, log, state tree) {:.2} s, certify and write {:.2} s",
            t_verify.as_secs_f64(),
            t_execute.as_secs_f64(),
            t_commit.as_secs_f64()
        );
        println!(
            "    one block's certify and write: median {write_ms_p50:.1} ms, slowest {write_ms_max:.1} ms (block {slowest_block})"
        );
        println!(
            "  inclusion proof, generate       {:>10.2} µs  (at {size} leaves, from RocksDB, {} proofs)",
            gen_us, args.proofs
        );
        println!("  inclusion proof, verify         {:>10.2} µs", verify_us);
        println!(
            "  proof bundle ({} validators)    {:>10} bytes of JSON with status proof ({bare_avg} without), built in {:.0} µs, verified in {:.0} µs (parse included)",
            args.validators, bundle_avg, bundle_build_us, bundle_verify_us
        );
        println!("  `annal verify` whole process    {:>10.2} ms", process_ms);
        println!(
            "  disk after compaction           {:>10} bytes = {:.3} × raw record bytes ({raw_bytes})",
            disk, disk_ratio
        );
    }
    Ok(())
}

/// Runs `annal verify` on a bundle as a separate process, several times; the median in milliseconds.
fn time_verify_process(dir: &std::path::Path, genesis: &Genesis, bundle_json: &str) -> Result<f64> {
    let bundle = dir.join("bench-bundle.json");
    let genesis_file = dir.join("bench-genesis.json");
    std::fs::write(&bundle, bundle_json)?;
    std::fs::write(&genesis_file, genesis.to_json())?;
    let exe = std::env::current_exe()?;
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let out = std::process::Command::new(&exe)
            .arg("verify")
            .arg(&bundle)
            .arg("--genesis")
            .arg(&genesis_file)
            .arg("--current")
            .output()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if !out.status.success() {
            bail!("annal verify failed on a bench bundle: {}", String::from_utf8_lossy(&out.stdout));
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Signs `args.records` records, spread over the signers, before timing starts.
fn sign_load(args: &LedgerArgs, chain_id: &str, signers: &[SecretKey]) -> Result<Vec<SignedRecord>> {
    let signers: Vec<(&SecretKey, String)> = signers.iter().map(|k| (k, "land-titles".to_string())).collect();
    Load { chain_id, signers: &signers, record_bytes: args.record_bytes, body: &args.body }.sign(0..args.records)
}

/// A load of publish records: record `i` is signed by signer `i mod n` in its
/// namespace, with nonce `i / n + 1` and key `parcel/<i>`, padded to `record_bytes`.
pub struct Load<'a> {
    pub chain_id: &'a str,
    pub signers: &'a [(&'a SecretKey, String)],
    pub record_bytes: usize,
    /// `text` or `random`.
    pub body: &'a str,
}

impl Load<'_> {
    /// Signs records `range`, on every core.
    pub fn sign(&self, range: std::ops::Range<u64>) -> Result<Vec<SignedRecord>> {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as u64;
        let per_thread = (range.end - range.start).div_ceil(threads);
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let start = range.start + t * per_thread;
                    let end = (start + per_thread).min(range.end);
                    s.spawn(move || (start..end).map(|i| self.record(i)).collect::<Result<Vec<_>>>())
                })
                .collect();
            for h in handles {
                out.extend(h.join().expect("signing thread")?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    pub fn record(&self, i: u64) -> Result<SignedRecord> {
        let n = self.signers.len() as u64;
        let (signer, namespace) = &self.signers[(i % n) as usize];
        let mut record = Record {
            chain_id: self.chain_id.into(),
            namespace: namespace.clone(),
            key: format!("parcel/{i:010}"),
            op: Op::Publish,
            body: Body::Inline(Vec::new()),
            metadata: [("basis".to_string(), "Land Registration Act s.12".to_string())].into(),
            supersedes: None,
            version: 1,
            submitter: signer.public(),
            nonce: i / n + 1,
        };
        let overhead = record.clone().sign(signer).to_bytes().len();
        if overhead > self.record_bytes {
            bail!("--record-bytes {} is below the {overhead} bytes a record needs without a body", self.record_bytes);
        }
        let mut rng = ChaCha20Rng::seed_from_u64(i);
        let body_len = self.record_bytes - overhead;
        let body: Vec<u8> = match self.body {
            "random" => (0..body_len).map(|_| rng.gen()).collect(),
            "text" => filing_text(&mut rng, i, body_len),
            other => bail!("--body must be text or random, not {other:?}"),
        };
        record.body = Body::Inline(body);
        Ok(record.sign(signer))
    }
}

/// Printable text shaped like a land-title filing: repeated field names, varying values.
fn filing_text(rng: &mut ChaCha20Rng, i: u64, len: usize) -> Vec<u8> {
    let mut s = String::with_capacity(len + 64);
    while s.len() < len {
        s.push_str(&format!(
            "parcel={i};owner=Holder {};area_m2={};district={};deed={:08};",
            rng.gen_range(0..1_000_000u32),
            rng.gen_range(50..100_000u32),
            rng.gen_range(1..400u32),
            rng.gen_range(0..100_000_000u32)
        ));
    }
    s.truncate(len);
    s.into_bytes()
}

fn seed_of(i: usize) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    seed
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
