//! `annal genesis new|check`: writing a genesis file with fresh keys, and summarising one.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use annal_ledger::genesis::{Agency, Genesis, Params, Validator};
use annal_ledger::keys::SecretKey;
use anyhow::{bail, Context, Result};

use crate::{create_private_dir, ensure_absent};

/// Namespaces given to the first example agencies; later ones get `namespace-<j>`.
const EXAMPLE_NAMESPACES: [&str; 5] = ["land-titles", "companies", "certificates", "court-notices", "contracts"];

pub fn new(chain_id: &str, validators: usize, agencies: usize, out: &Path, time_ms: Option<u64>) -> Result<()> {
    if validators == 0 {
        bail!("--validators must be at least 1");
    }
    let genesis_path = out.join("genesis.json");
    ensure_absent(&genesis_path)?;
    create_private_dir(out)?;
    let mut genesis = Genesis {
        chain_id: chain_id.to_string(),
        genesis_time_ms: time_ms.unwrap_or_else(now_ms),
        validators: Vec::with_capacity(validators),
        agencies: Vec::with_capacity(agencies),
        params: Params::default(),
    };
    for i in 0..validators {
        let dir = out.join(format!("validator-{i}"));
        create_private_dir(&dir)?;
        let consensus = new_key(&dir.join("consensus.key"))?;
        let p2p = new_key(&dir.join("p2p.key"))?;
        genesis.validators.push(Validator { name: format!("validator-{i}"), consensus_key: consensus, p2p_key: p2p, power: 1 });
    }
    for j in 0..agencies {
        let dir = out.join(format!("agency-{j}"));
        create_private_dir(&dir)?;
        let submitter = new_key(&dir.join("submitter.key"))?;
        let namespace = EXAMPLE_NAMESPACES.get(j).map(|s| s.to_string()).unwrap_or_else(|| format!("namespace-{j}"));
        genesis.agencies.push(Agency { name: format!("agency-{j}"), submitter_keys: vec![submitter], namespaces: vec![namespace] });
    }
    genesis.validate().context("the generated genesis is invalid")?;
    std::fs::write(&genesis_path, genesis.to_json()).with_context(|| format!("writing {}", genesis_path.display()))?;
    println!("wrote {} ({} validators, {} agencies)", genesis_path.display(), validators, agencies);
    println!("genesis hash {}", hex::encode(genesis.hash()));
    Ok(())
}

pub fn check(file: &Path) -> Result<()> {
    let genesis = Genesis::load(file)?;
    println!("chain id      {}", genesis.chain_id);
    println!("genesis hash  {}", hex::encode(genesis.hash()));
    println!("validators    {} (total power {})", genesis.validators.len(), genesis.validator_set().total_power());
    for a in &genesis.agencies {
        println!("agency        {}: {} submitter keys, namespaces {}", a.name, a.submitter_keys.len(), a.namespaces.join(", "));
    }
    Ok(())
}

fn new_key(path: &Path) -> Result<annal_ledger::keys::PublicKey> {
    let key = SecretKey::generate();
    key.write_file(path)?;
    Ok(key.public())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
