//! The one binary `annal`: keys, genesis, node, devnet, submit, get, history, prove, verify, audit, bench.
//!
//! Each subcommand is a thin shell over a library call; the work happens in
//! `annal-ledger` (and, later, `annal-node`). `anyhow` is used here only.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod genesis_cmd;
mod verify;

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
    /// Benchmarks that print measured numbers.
    #[command(subcommand)]
    Bench(BenchCommand),
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
}

fn main() {
    let cli = Cli::parse();
    let cli = match cli.command {
        Command::Verify(args) => std::process::exit(verify::verify(args).code()),
        Command::VerifyConsistency(args) => std::process::exit(verify::verify_consistency(args).code()),
        _ => cli,
    };
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
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
            genesis_cmd::new(&chain_id, validators, agencies, &out, time_ms)
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
        Command::TlogProof { bundle, out, record_bytes } => {
            tlog_proof(&bundle, out.as_deref(), record_bytes.as_deref())
        }
        Command::Verify(_) | Command::VerifyConsistency(_) => unreachable!("handled in main for their exit codes"),
    }
}

fn tlog_proof(
    bundle: &std::path::Path,
    out: Option<&std::path::Path>,
    record_bytes: Option<&std::path::Path>,
) -> Result<()> {
    use base64::Engine;
    let len = std::fs::metadata(bundle).with_context(|| format!("reading {}", bundle.display()))?.len();
    if len > annal_ledger::proof::BUNDLE_BYTES_MAX as u64 {
        bail!("{} is {len} bytes; a bundle is at most {}", bundle.display(), annal_ledger::proof::BUNDLE_BYTES_MAX);
    }
    let text = std::fs::read_to_string(bundle).with_context(|| format!("reading {}", bundle.display()))?;
    let b = annal_ledger::proof::Bundle::from_json(&text)?;
    let proof = b.to_tlog_proof();
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

/// Refuses to overwrite a file.
fn ensure_absent(path: &std::path::Path) -> Result<()> {
    if path.exists() {
        bail!("{} already exists; refusing to overwrite it", path.display());
    }
    Ok(())
}

/// Creates a folder (and its parents) for key files, readable by its owner only.
fn create_private_dir(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}
