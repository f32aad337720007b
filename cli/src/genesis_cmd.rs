//! `annal genesis new|check`: writing a genesis file with fresh keys, and summarising one.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use annal_ledger::genesis::{Agency, Genesis, Params, Validator};
use annal_ledger::keys::SecretKey;
use anyhow::{bail, Context, Result};

use crate::{create_private_dir, ensure_absent};

/// Namespaces given to the first example agencies; later ones get `namespace-<j>`.
const EXAMPLE_NAMESPACES: [&str; 5] = ["land-titles", "companies", "certificates", "court-notices", "contracts"];

/// Writes a new genesis and its keys under `out`; returns what it wrote, for
/// the caller to print (on standard output, or standard error under `--json`).
pub fn new(chain_id: &str, validators: usize, agencies: usize, out: &Path, time_ms: Option<u64>) -> Result<String> {
    if validators == 0 {
        bail!("--validators must be at least 1");
    }
    let genesis_path = out.join("genesis.json");
    ensure_absent(&genesis_path)?;
    // Everything is made and checked in memory first, so a bad argument leaves no files behind.
    let validator_keys: Vec<(SecretKey, SecretKey)> =
        (0..validators).map(|_| (SecretKey::generate(), SecretKey::generate())).collect();
    let agency_keys: Vec<SecretKey> = (0..agencies).map(|_| SecretKey::generate()).collect();
    let genesis = Genesis {
        chain_id: chain_id.to_string(),
        genesis_time_ms: time_ms.unwrap_or_else(now_ms),
        validators: validator_keys
            .iter()
            .enumerate()
            .map(|(i, (consensus, p2p))| Validator {
                name: format!("validator-{i}"),
                consensus_key: consensus.public(),
                p2p_key: p2p.public(),
                power: 1,
            })
            .collect(),
        agencies: agency_keys
            .iter()
            .enumerate()
            .map(|(j, key)| Agency {
                name: format!("agency-{j}"),
                submitter_keys: vec![key.public()],
                namespaces: vec![EXAMPLE_NAMESPACES
                    .get(j)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| format!("namespace-{j}"))],
            })
            .collect(),
        params: Params::default(),
    };
    genesis.validate().context("the genesis these arguments describe is invalid")?;

    create_private_dir(out)?;
    for (i, (consensus, p2p)) in validator_keys.iter().enumerate() {
        let dir = out.join(format!("validator-{i}"));
        create_private_dir(&dir)?;
        consensus.write_file(&dir.join("consensus.key"))?;
        p2p.write_file(&dir.join("p2p.key"))?;
    }
    for (j, key) in agency_keys.iter().enumerate() {
        let dir = out.join(format!("agency-{j}"));
        create_private_dir(&dir)?;
        key.write_file(&dir.join("submitter.key"))?;
    }
    std::fs::write(&genesis_path, genesis.to_json()).with_context(|| format!("writing {}", genesis_path.display()))?;
    Ok(format!(
        "wrote {} ({} validators, {} agencies)\ngenesis hash {}",
        genesis_path.display(),
        validators,
        agencies,
        hex::encode(genesis.hash())
    ))
}

pub fn check(file: &Path) -> Result<()> {
    let genesis = Genesis::load(file)?;
    println!("chain id      {}", genesis.chain_id);
    println!("genesis hash  {}", hex::encode(genesis.hash()));
    println!("validators    {} (total power {})", genesis.validators.len(), genesis.validator_set().total_power());
    for a in &genesis.agencies {
        println!(
            "agency        {}: {} submitter keys, namespaces {}",
            a.name,
            a.submitter_keys.len(),
            a.namespaces.join(", ")
        );
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
