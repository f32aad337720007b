//! The one binary `annal`: keys, genesis, node, devnet, submit, get, history, prove, verify, audit, gov, bench.
//!
//! Each subcommand is a thin shell over a library call; the work happens in
//! `annal-ledger` and `annal-node`; the node API client, genesis and devnet
//! set-up live in this crate's library half (`src/lib.rs`).

use std::path::PathBuf;

/// mimalloc instead of glibc's malloc: a validator allocates and frees every
/// record several times on its way to the log, and glibc's bin handling was
/// ~12 % of a validator's CPU at rate max (docs/BENCHMARKS.md, session 9).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod audit;
mod bench;
mod bench_cluster;
mod gov_cmd;
mod import;
mod node_cmds;
mod verify;

use annal_cli::{client, devnet, ensure_absent, genesis_cmd};

#[derive(Parser)]
#[command(name = "annal", version, about = "Annal: a permissioned ledger for public records", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create ed25519 key files.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Create, hash and inspect genesis files.
    #[command(subcommand)]
    Genesis(GenesisCommand),
    /// Check a proof bundle offline, holding only the genesis file.
    ///
    /// Exit status: 0 valid (one summary line), 1 invalid (the failing check),
    /// 2 unreadable input or usage error.
    ///
    /// Examples:
    ///   annal verify bundle.json --genesis genesis.json
    ///   annal verify bundle.json --genesis genesis.json --document deed.pdf --current
    ///   annal verify bundle.json --genesis genesis.json --json
    #[command(verbatim_doc_comment)]
    Verify(verify::VerifyArgs),
    /// Check, offline, that a newer signed checkpoint extends one you hold.
    ///
    /// Exit status as for `verify`.
    ///
    /// Example: annal verify-consistency old-checkpoint.txt consistency.json --genesis genesis.json
    VerifyConsistency(verify::VerifyConsistencyArgs),
    /// Write a proof bundle's inclusion proof as a C2SP tlog-proof
    /// (c2sp.org/tlog-proof@v1), for standard transparency-log tooling.
    ///
    /// Example: annal tlog-proof bundle.json --out record.tlog-proof --record-bytes record.bin
    TlogProof {
        /// The proof bundle (JSON).
        bundle: PathBuf,
        /// Where to write the tlog-proof (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write the record's canonical bytes (its leaf is SHA-256(0x00 || bytes)).
        #[arg(long)]
        record_bytes: Option<PathBuf>,
    },
    /// Sign a record with an officer's key and submit it to a node.
    ///
    /// The chain id, the nonce and (for --amend/--revoke) the superseded head's
    /// version come from the node; the record is signed here, never by the node.
    #[command(after_help = "Examples:
  annal submit --node http://127.0.0.1:8080 --signer officer.key --namespace land-titles \\
    --key parcel/0042 --document deed.pdf --media-type application/pdf --meta basis=\"Act 12 s.3\" --wait
  annal submit --node http://127.0.0.1:8080 --signer officer.key --namespace land-titles \\
    --key parcel/0042 --revoke <ID> --reason \"court order 2026/17\"")]
    Submit(node_cmds::SubmitArgs),
    /// Publish many new keys from a JSON Lines file, signed with an officer's key (for migrating a register).
    ///
    /// Each line is one record: {"namespace", "key", "body": "<base64>"} or
    /// {"namespace", "key", "document": {"sha256": "<hex>", "size": N, "media_type": "…"}},
    /// with an optional "metadata": {"name": "value", …}. Every line is checked
    /// before anything is sent. Record i of the file is signed with nonce
    /// first + i, so running the same command again with the --first-nonce it
    /// printed resumes a stopped import without duplicates. Records go in binary
    /// batches (POST /v1/records/batch); a full mempool is waited out.
    /// Exit status: 0 every record accepted, 2 some refused (listed by line), 1 stopped.
    #[command(after_help = "Example:
  annal import --node http://127.0.0.1:8080 --signer officer.key titles.jsonl --wait
  with titles.jsonl lines like
  {\"namespace\": \"land-titles\", \"key\": \"parcel/0042\", \"body\": \"T3duZXI6IEphbmUgRG9l\", \"metadata\": {\"basis\": \"Act 12 s.3\"}}")]
    Import(import::ImportArgs),
    /// Show a record by id: final (with its place in the log), pending or refused.
    #[command(after_help = "Example: annal get --node http://127.0.0.1:8080 3f1c…e9 --json")]
    Get {
        /// The node's API address, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        node: String,
        /// The record id (64 hex characters).
        id: String,
        /// Print the node's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a key's versions, oldest first (the newest 100 unless told otherwise), and its current head.
    #[command(
        after_help = "Example: annal history --node http://127.0.0.1:8080 --namespace land-titles --key parcel/0042
Older versions, when there are more: the same with --before <the id it prints>."
    )]
    History {
        /// The node's API address, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        node: String,
        /// The namespace, e.g. land-titles.
        #[arg(long)]
        namespace: String,
        /// The record key within it, e.g. parcel/0042.
        #[arg(long)]
        key: String,
        /// List the versions older than this one (a record id of the key; 64 hex characters).
        #[arg(long)]
        before: Option<String>,
        /// How many versions to list, 1 to 1000 (the node's default: 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Print the node's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Fetch a record's proof bundle from a node and save it for `annal verify`.
    #[command(after_help = "Example: annal prove --node http://127.0.0.1:8080 3f1c…e9 --out deed.bundle.json --status
Then:    annal verify --genesis genesis.json deed.bundle.json --current")]
    Prove(node_cmds::ProveArgs),
    /// Show the node's latest signed checkpoint; --out saves it for `annal consistency` later.
    #[command(after_help = "Example: annal checkpoint --node http://127.0.0.1:8080 --out checkpoint-2026-11-25.txt")]
    Checkpoint {
        /// The node's API address, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        node: String,
        /// Save the signed checkpoint note to FILE (an existing file is not overwritten).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the node's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check that a node's current log extends a checkpoint you saved earlier.
    ///
    /// Exit status: 0 consistent, 1 not consistent, 2 could not check (network, unreadable files).
    #[command(
        after_help = "Example: annal consistency --node http://127.0.0.1:8080 --genesis genesis.json --from checkpoint-2026-11-25.txt"
    )]
    Consistency(node_cmds::ConsistencyArgs),
    /// Replay a node's whole chain from the genesis file and check every block it serves.
    ///
    /// Exit status: 0 every block matches, 1 a discrepancy (the first is named by
    /// height and field), 2 could not check (network, unreadable files).
    #[command(after_help = "Example: annal audit --node http://127.0.0.1:8080 --genesis genesis.json")]
    Audit(audit::AuditArgs),
    /// Show a node's height, log, peers and sync state.
    #[command(after_help = "Example: annal status --node http://127.0.0.1:8080 --json")]
    Status {
        /// The node's API address, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        node: String,
        /// Print height, view, log_size, log_root, state_root, peers and sync as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Propose and approve membership changes (validators, agencies, keys,
    /// parameters) with a validator's consensus key, and follow them.
    ///
    /// A change takes effect once validators holding more than 2/3 of the
    /// voting power approved it (docs/OPERATIONS.md "Governance").
    #[command(subcommand, verbatim_doc_comment)]
    Gov(gov_cmd::GovCommand),
    /// Benchmarks that print measured numbers.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run a validator node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Start a local network of validators on 127.0.0.1 and print how to use it.
    ///
    /// Writes DIR/genesis.json and the keys (or reuses DIR), starts each
    /// validator as `annal node run`, writes DIR/devnet.json (name, api_url,
    /// pid, config, data_dir of each node), waits until blocks are final and
    /// prints copy-paste commands. Ctrl-C stops every node.
    ///
    /// Example: annal devnet --validators 4 --dir ./devnet
    #[command(verbatim_doc_comment)]
    Devnet {
        /// How many validators (used only when DIR holds no genesis yet).
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// The devnet folder.
        #[arg(long, default_value = "devnet")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Run a validator with the given configuration until Ctrl-C or SIGTERM.
    ///
    /// The configuration file (TOML) is documented key by key in docs/OPERATIONS.md;
    /// any key can be overridden from the environment as ANNAL_<KEY>.
    ///
    /// Example: annal node run --config /etc/annal/node.toml
    #[command(verbatim_doc_comment)]
    Run {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new ed25519 key to FILE (mode 0600) and print its public key.
    ///
    /// Example: annal keys new --out officer.key
    New {
        /// Where to write the key; the file must not exist yet.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum GenesisCommand {
    /// Write DIR/genesis.json plus one key folder per validator and per agency.
    ///
    /// Example: annal genesis new --chain-id land-registry-test --validators 4 --agencies 2 --out ./net
    New {
        /// The chain id: lowercase letters, digits, '.', '_' or '-', at most 64 bytes.
        #[arg(long)]
        chain_id: String,
        /// How many validators (each gets DIR/validator-<i>/ with consensus.key and p2p.key).
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// How many agencies (each gets DIR/agency-<j>/submitter.key and one namespace).
        #[arg(long, default_value_t = 1)]
        agencies: usize,
        /// The output folder; genesis.json must not exist in it yet.
        #[arg(long)]
        out: PathBuf,
        /// Genesis time in milliseconds since the Unix epoch (default: now).
        #[arg(long)]
        time_ms: Option<u64>,
    },
    /// Print the SHA-256 of the genesis file's canonical form: the chain's trust root.
    ///
    /// Example: annal genesis hash ./net/genesis.json
    Hash { file: PathBuf },
    /// Check a genesis file and print a summary.
    Check { file: PathBuf },
    /// Print each validator's C2SP note verifier key, one per line, for
    /// checking Annal checkpoints with standard transparency-log tools.
    ///
    /// Example: annal genesis vkeys ./net/genesis.json
    Vkeys { file: PathBuf },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Ledger core: records/s committed into RocksDB with signatures verified,
    /// inclusion-proof time, bytes on disk per record.
    ///
    /// Example: annal bench ledger --records 1000000
    Ledger(bench::LedgerArgs),
    /// A local validator cluster driven through its HTTP API: finalized
    /// records/s, submit → final latency percentiles, CPU, peak RSS and disk
    /// per node, beside this machine's ed25519 ceiling.
    ///
    /// Examples:
    ///   annal bench cluster --validators 4 --duration 60 --rate max
    ///   annal bench cluster --rate 10000 --duration 60 --json
    #[command(verbatim_doc_comment)]
    Cluster(bench_cluster::ClusterArgs),
    /// This machine's ed25519 batch-verification rate, on one core and on all.
    ///
    /// Example: annal bench verify
    Verify(bench_cluster::VerifyArgs),
}

/// No transparent huge pages for this process unless `MIMALLOC_ALLOW_THP` is
/// set (then mimalloc's own setting rules). mimalloc asks the kernel for huge
/// pages over its whole arena, so every touch of a fresh 2 MB region makes
/// the kernel zero and map all of it: in the million-record runs the peak RSS
/// of a validator was up to 1,008 MB with huge pages and up to 772 MB without,
/// at the same throughput within run-to-run noise (docs/BENCHMARKS.md, session 13).
/// The kernel applies the flag to every later fault, including in memory
/// mapped before `main`. Where `prctl` is refused the system default stays.
fn no_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

/// The open-file limit raised to its hard maximum. A node keeps every RocksDB
/// table file open (`max_open_files` is left unbounded) and every record
/// segment: at the common soft default of 1,024, a store of a few hundred GB
/// would start failing to open files while running. Where the call is refused
/// the limit stays as it was.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn main() {
    no_transparent_huge_pages();
    raise_open_files_limit();
    // Die quietly on a closed pipe (`annal get … | head`), as command-line tools do.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let cli = match cli.command {
        Command::Verify(args) => std::process::exit(verify::verify(args).code()),
        Command::VerifyConsistency(args) => std::process::exit(verify::verify_consistency(args).code()),
        Command::Consistency(args) => std::process::exit(node_cmds::consistency(args).code()),
        Command::Audit(args) => std::process::exit(audit::audit(args).code()),
        Command::Import(args) => std::process::exit(import::main(args)),
        _ => cli,
    };
    let json = wants_json(&cli.command);
    if let Err(e) = run(cli) {
        if json {
            let code = e.downcast_ref::<client::ClientError>().and_then(|c| c.code()).unwrap_or("client");
            println!("{}", serde_json::json!({ "error": code, "detail": format!("{e:#}") }));
        } else {
            eprintln!("error: {e:#}");
        }
        std::process::exit(1);
    }
}

/// Whether a command was asked for JSON output (its errors are then JSON too).
fn wants_json(command: &Command) -> bool {
    match command {
        Command::Get { json, .. }
        | Command::History { json, .. }
        | Command::Checkpoint { json, .. }
        | Command::Status { json, .. } => *json,
        Command::Submit(args) => args.json,
        Command::Prove(args) => args.json,
        Command::Gov(command) => command.json(),
        _ => false,
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keys(KeysCommand::New { out }) => {
            let key = annal_ledger::keys::SecretKey::generate();
            key.write_file(&out)?;
            println!("{}", key.public());
            Ok(())
        }
        Command::Genesis(GenesisCommand::New { chain_id, validators, agencies, out, time_ms }) => {
            println!("{}", genesis_cmd::new(&chain_id, validators, agencies, &out, time_ms)?);
            Ok(())
        }
        Command::Genesis(GenesisCommand::Hash { file }) => {
            let genesis = annal_ledger::genesis::Genesis::load(&file)?;
            println!("{}", hex::encode(genesis.hash()));
            Ok(())
        }
        Command::Genesis(GenesisCommand::Check { file }) => genesis_cmd::check(&file),
        Command::Genesis(GenesisCommand::Vkeys { file }) => {
            let genesis = annal_ledger::genesis::Genesis::load(&file)?;
            for vkey in genesis.validator_set().verifier_keys() {
                println!("{vkey}");
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Ledger(args)) => bench::ledger(args),
        Command::Bench(BenchCommand::Cluster(args)) => bench_cluster::cluster(args),
        Command::Bench(BenchCommand::Verify(args)) => bench_cluster::verify(args),
        Command::TlogProof { bundle, out, record_bytes } => {
            tlog_proof(&bundle, out.as_deref(), record_bytes.as_deref())
        }
        Command::Node(NodeCommand::Run { config }) => devnet::run_node(&config),
        Command::Devnet { validators, dir } => devnet::devnet(validators, &dir),
        Command::Submit(args) => node_cmds::submit(args),
        Command::Get { node, id, json } => node_cmds::get(&node, &id, json),
        Command::History { node, namespace, key, before, limit, json } => {
            node_cmds::history(&node, &namespace, &key, before.as_deref(), limit, json)
        }
        Command::Prove(args) => node_cmds::prove(args),
        Command::Checkpoint { node, out, json } => node_cmds::checkpoint(&node, out.as_deref(), json),
        Command::Status { node, json } => node_cmds::status(&node, json),
        Command::Gov(command) => gov_cmd::run(command),
        Command::Verify(_)
        | Command::VerifyConsistency(_)
        | Command::Consistency(_)
        | Command::Audit(_)
        | Command::Import(_) => {
            unreachable!("handled in main for their exit codes")
        }
    }
}

fn tlog_proof(
    bundle: &std::path::Path,
    out: Option<&std::path::Path>,
    record_bytes: Option<&std::path::Path>,
) -> Result<()> {
    use base64::Engine;
    let bytes = node_cmds::read_limited(bundle, annal_ledger::proof::BUNDLE_BYTES_MAX as u64, "bundle")?;
    let text = String::from_utf8(bytes).with_context(|| format!("bundle {} is not UTF-8", bundle.display()))?;
    let b = annal_ledger::proof::Bundle::from_json(&text)?;
    let proof = b.to_tlog_proof().with_context(|| format!("{} cannot be exported", bundle.display()))?;
    match out {
        Some(path) => {
            ensure_absent(path)?;
            std::fs::write(path, &proof).with_context(|| format!("writing {}", path.display()))?;
        }
        None => print!("{proof}"),
    }
    if let Some(path) = record_bytes {
        ensure_absent(path)?;
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(&b.record.bytes).context("record bytes are not base64")?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
