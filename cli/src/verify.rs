//! `annal verify` and `annal verify-consistency`: offline checks from the genesis file alone.
//!
//! Exit codes: 0 valid, 1 invalid (the failing check is printed), 2 unreadable
//! input or a usage error.

use std::path::{Path, PathBuf};

use annal_ledger::genesis::Genesis;
use annal_ledger::proof::{self, Bundle, Verified};
use annal_ledger::Error;
use serde_json::json;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The proof bundle (JSON; its format is in docs/PROOFS.md).
    bundle: PathBuf,
    /// The chain's genesis file: the only thing trusted.
    #[arg(long)]
    genesis: PathBuf,
    /// Also check that FILE is the document the record anchors (size and SHA-256).
    #[arg(long)]
    document: Option<PathBuf>,
    /// Also say whether the record is still the current version of its key (needs a bundle with a status proof).
    #[arg(long)]
    current: bool,
    /// Also tie the record's block to a checkpoint you hold (a signed note saved with `annal checkpoint --out`):
    /// it must be the block's own, or --consistency must prove one log extends the other.
    #[arg(long, value_name = "CHECKPOINT")]
    held: Option<PathBuf>,
    /// The consistency proof between the record's block and the --held checkpoint
    /// (`annal prove --held CHECKPOINT --consistency FILE` saves it).
    #[arg(long, value_name = "FILE", requires = "held")]
    consistency: Option<PathBuf>,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// The outcome, with the process exit code it maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    Invalid,
    Unreadable,
}

impl Outcome {
    pub fn code(&self) -> i32 {
        match self {
            Outcome::Valid => 0,
            Outcome::Invalid => 1,
            Outcome::Unreadable => 2,
        }
    }
}

/// Reads at most `max` bytes of `path` (a pipe too); more is an error naming `what` and the limit.
fn read(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, String> {
    crate::node_cmds::read_limited(path, max, what).map_err(|e| format!("{e:#}"))
}

/// Opens a document to check: a regular file (a pipe or a device has no size
/// to compare and might never end), with its size.
fn open_document(path: &Path) -> Result<(&Path, std::fs::File, u64), String> {
    let cannot = |e: std::io::Error| format!("cannot read document {}: {e}", path.display());
    let not_regular = || format!("document {} is not a regular file", path.display());
    // Looked at before opening: opening a pipe waits for a writer.
    if !std::fs::metadata(path).map_err(cannot)?.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok((path, file, meta.len()))
}

/// SHA-256 of the file's first `size` bytes, read in 1 MiB pieces; an error if it has fewer.
fn sha256_of(mut file: &std::fs::File, size: u64) -> std::io::Result<[u8; 32]> {
    use sha2::Digest;
    use std::io::Read;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = file.read(&mut buf[..left.min(1 << 20) as usize])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while it was read"));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher.finalize().into())
}

fn unreadable(json: bool, msg: String) -> Outcome {
    if json {
        println!("{}", json!({ "valid": false, "unreadable": true, "error": msg }));
    } else {
        eprintln!("error: {msg}");
    }
    Outcome::Unreadable
}

pub fn verify(args: VerifyArgs) -> Outcome {
    let genesis = match Genesis::load(&args.genesis) {
        Ok(g) => g,
        Err(e) => return unreadable(args.json, e.to_string()),
    };
    let text = match read(&args.bundle, proof::BUNDLE_BYTES_MAX as u64, "bundle") {
        Ok(b) => b,
        Err(e) => return unreadable(args.json, e),
    };
    let bundle = match std::str::from_utf8(&text)
        .map_err(|e| e.to_string())
        .and_then(|t| Bundle::from_json(t).map_err(|e| e.to_string()))
    {
        Ok(b) => b,
        Err(e) => return unreadable(args.json, format!("{} is not a proof bundle: {e}", args.bundle.display())),
    };
    // Opened now (a missing file is unreadable, not invalid), read only once the
    // bundle verifies and the file's size is the anchored one: a document may be
    // gigabytes, so it is hashed as it is read, never held.
    let document = match &args.document {
        Some(p) => match open_document(p) {
            Ok(d) => Some(d),
            Err(e) => return unreadable(args.json, e),
        },
        None => None,
    };
    let held = match &args.held {
        Some(path) => match read_held(path) {
            Ok(t) => Some(t),
            Err(e) => return unreadable(args.json, e),
        },
        None => None,
    };
    let consistency = match &args.consistency {
        Some(path) => match read_consistency(path) {
            Ok(p) => Some(p),
            Err(e) => return unreadable(args.json, e),
        },
        None => None,
    };
    // What was given for the tie must fit it before anything is judged: exit 1 means a check
    // failed (two histories, a forged proof), never a missing or mismatched input.
    if let Some((_, held_at)) = &held {
        if let Err(e) = tie_inputs_fit(&bundle, *held_at, consistency.as_ref()) {
            return unreadable(args.json, e);
        }
    }
    let mut tie = None;
    let result = proof::verify(&bundle, &genesis, None).and_then(|v| {
        if let Some((path, file, size)) = &document {
            proof::check_document_digest(&v.record, *size, None)?;
            let digest = sha256_of(file, *size).map_err(|e| Error::Proof {
                check: proof::Check::Document,
                detail: format!("cannot read document {}: {e}", path.display()),
            })?;
            proof::check_document_digest(&v.record, *size, Some(&digest))?;
        }
        if args.current && v.status.is_none() {
            return Err(Error::Proof {
                check: proof::Check::Status,
                detail: "the bundle has no status proof; fetch one with `annal prove` (it includes one by default)"
                    .into(),
            });
        }
        if let Some((held, _)) = &held {
            tie = Some(proof::tie_to_held(&v.header, held, consistency.as_ref(), &genesis)?);
        }
        Ok(v)
    });
    match result {
        Ok(v) => {
            if args.json {
                let mut out = summary_json(&v, &bundle, args.current, args.document.is_some());
                if let Some(tie) = tie {
                    out["held"] = tie_json(tie, &v);
                }
                println!("{out}");
            } else {
                let mut line = summary_line(&v, args.current, args.document.is_some());
                if let Some(tie) = tie {
                    line.push_str("; ");
                    line.push_str(&describe_tie(tie));
                }
                println!("{line}");
            }
            Outcome::Valid
        }
        Err(e) => {
            let check = match &e {
                Error::Proof { check, .. } => Some(*check),
                _ => None,
            };
            if args.json {
                println!(
                    "{}",
                    json!({ "valid": false, "check": check.map(|c| format!("{c:?}")), "error": e.to_string() })
                );
            } else {
                println!("INVALID: {e}");
            }
            Outcome::Invalid
        }
    }
}

/// A held checkpoint's text and height.
fn read_held(path: &Path) -> Result<(String, u64), String> {
    crate::node_cmds::read_checkpoint(path).map_err(|e| format!("{e:#}"))
}

/// Whether `--held` (at `held_at`) and `--consistency` fit the bundle's block, by
/// heights ([`proof::tie_inputs_fit`]); a block height that cannot be read is left to
/// the bundle's own checks.
fn tie_inputs_fit(bundle: &Bundle, held_at: u64, consistency: Option<&proof::Consistency>) -> Result<(), String> {
    match crate::node_cmds::checkpoint_height(&bundle.block.checkpoint) {
        Ok(at) => proof::tie_inputs_fit(at, held_at, consistency),
        Err(_) => Ok(()),
    }
}

/// A consistency proof file, read within the size of a bundle.
fn read_consistency(path: &Path) -> Result<proof::Consistency, String> {
    read(path, proof::BUNDLE_BYTES_MAX as u64, "consistency proof").and_then(|b| {
        std::str::from_utf8(&b)
            .map_err(|e| e.to_string())
            .and_then(|t| proof::Consistency::from_json(t).map_err(|e| e.to_string()))
            .map_err(|e| format!("{} is not a consistency proof: {e}", path.display()))
    })
}

fn describe_tie(tie: proof::HeldTie) -> String {
    match tie {
        proof::HeldTie::Same => "the checkpoint you hold is this block's".into(),
        proof::HeldTie::Contains { height, size } => {
            format!("the checkpoint you hold (height {height}, size {size}) contains this block's log")
        }
        proof::HeldTie::Extended { height, size } => {
            format!("this block's log extends the checkpoint you hold (height {height}, size {size})")
        }
    }
}

fn tie_json(tie: proof::HeldTie, v: &Verified) -> serde_json::Value {
    let (relation, height, size) = match tie {
        proof::HeldTie::Same => ("same", v.header.height.0, v.header.log_size),
        proof::HeldTie::Contains { height, size } => ("contains", height, size),
        proof::HeldTie::Extended { height, size } => ("extended", height, size),
    };
    json!({ "relation": relation, "height": height, "size": size })
}

fn summary_line(v: &Verified, current: bool, document: bool) -> String {
    let r = &v.record.record;
    let mut s = format!(
        "VALID {}/{}: {} version {} by agency {:?}, at height {} ({}), log index {}; checkpoint of size {} (log root {}) signed by {} validators with {}/{} of the voting power",
        r.namespace,
        r.key,
        r.op.name(),
        r.version,
        v.agency,
        v.header.height.0,
        utc(v.header.time_ms),
        v.index,
        v.header.log_size,
        hex::encode(v.header.log_root),
        v.signers,
        v.power,
        v.total_power
    );
    if document {
        s.push_str("; document matches");
    }
    if let (true, Some(status)) = (current, &v.status) {
        s.push_str("; ");
        s.push_str(&status.describe(&v.id));
    }
    s
}

fn summary_json(v: &Verified, bundle: &Bundle, current: bool, document: bool) -> serde_json::Value {
    let r = &v.record.record;
    let mut out = json!({
        "valid": true,
        "id": v.id.to_hex(),
        "namespace": r.namespace,
        "key": r.key,
        "op": r.op.name(),
        "version": r.version,
        "agency": v.agency,
        "submitter": r.submitter.to_hex(),
        "height": v.header.height.0,
        "time_ms": v.header.time_ms,
        "time": utc(v.header.time_ms),
        "index": v.index,
        "checkpoint_size": v.header.log_size,
        // To compare with a checkpoint held (`annal checkpoint --out`): the same block has the same root and hash.
        "log_root": hex::encode(v.header.log_root),
        "block_hash": hex::encode(v.header.hash()),
        "signers": v.signers,
        "power": v.power,
        "total_power": v.total_power,
        "record": bundle.record.decoded,
    });
    if document {
        out["document"] = json!("matches");
    }
    if let (true, Some(status)) = (current, &v.status) {
        let state = match (status.head.id == v.id, status.head.status) {
            (true, annal_ledger::state::Status::Active) => "current",
            (_, annal_ledger::state::Status::Revoked) => "revoked",
            (false, annal_ledger::state::Status::Active) => "superseded",
        };
        out["status"] = json!({
            "state": state,
            "as_of_height": status.height,
            "head": status.head.id.to_hex(),
            "head_version": status.head.version,
            "description": status.describe(&v.id),
        });
    }
    out
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time (proleptic Gregorian calendar).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_formats_known_instants() {
        // Goal: the date arithmetic matches known instants, leap days included.
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(1_764_000_123_456), "2025-11-24T16:02:03.456Z");
        assert_eq!(utc(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }
}

#[derive(clap::Args)]
pub struct VerifyConsistencyArgs {
    /// The checkpoint you hold (a signed note, as `annal checkpoint` saves it).
    old: PathBuf,
    /// The consistency proof from it to a newer checkpoint (JSON; format in docs/PROOFS.md).
    new: PathBuf,
    /// The chain's genesis file: the only thing trusted.
    #[arg(long)]
    genesis: PathBuf,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

pub fn verify_consistency(args: VerifyConsistencyArgs) -> Outcome {
    let genesis = match Genesis::load(&args.genesis) {
        Ok(g) => g,
        Err(e) => return unreadable(args.json, e.to_string()),
    };
    let held = match read_held(&args.old) {
        Ok((text, _)) => text,
        Err(e) => return unreadable(args.json, e),
    };
    let proof = match read_consistency(&args.new) {
        Ok(p) => p,
        Err(e) => return unreadable(args.json, e),
    };
    match proof::verify_consistency(&proof, &genesis, Some(&held)) {
        Ok((old, new)) => {
            if args.json {
                println!(
                    "{}",
                    json!({ "valid": true, "old_size": old.size, "old_height": old.block.height,
                            "new_size": new.size, "new_height": new.block.height })
                );
            } else {
                println!(
                    "VALID the log of size {} at height {} extends the checkpoint you hold (size {}, height {})",
                    new.size, new.block.height, old.size, old.block.height
                );
            }
            Outcome::Valid
        }
        Err(e) => {
            if args.json {
                println!("{}", json!({ "valid": false, "error": e.to_string() }));
            } else {
                println!("INVALID: {e}");
            }
            Outcome::Invalid
        }
    }
}
