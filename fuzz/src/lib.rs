//! Fixed inputs the fuzz targets verify against, and the seed corpora built from them.
//!
//! Two geneses: `genesis/example.json` (the documented example; its secret
//! keys were discarded, so nothing the fuzzer finds can pass its signature
//! checks) and [`fixture_genesis`], the ledger tests' chain with keys from
//! fixed seeds, so the seed bundles verify in full and mutations of them reach
//! the inclusion, status and validator-set checks.

use std::sync::LazyLock;

use annal_consensus::{ChainId, Validator as ConsensusValidator, ValidatorSet as ConsensusSet};
use annal_ledger::genesis::{Agency, Genesis, Params, Validator};
use annal_ledger::keys::SecretKey;

pub mod seeds;

/// The documented example genesis.
pub static EXAMPLE: LazyLock<Genesis> =
    LazyLock::new(|| Genesis::from_json(include_str!("../../genesis/example.json")).expect("example genesis is valid"));

/// The fixture genesis (see [`fixture_genesis`]).
pub static FIXTURE: LazyLock<Genesis> = LazyLock::new(fixture_genesis);

/// The fixture chain's id (the ledger tests' `annal-test`).
pub const CHAIN: &str = "annal-test";

/// The key of seed `n`, as in the ledger tests.
pub fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

/// Four validators (keys 1..=4); agency "land" (officers 21, 22) owns
/// `land-titles`, agency "companies" (officer 31) owns `companies`.
pub fn fixture_genesis() -> Genesis {
    let genesis = Genesis {
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
        agencies: vec![
            Agency {
                name: "land".into(),
                submitter_keys: vec![key(21).public(), key(22).public()],
                namespaces: vec!["land-titles".into()],
            },
            Agency {
                name: "companies".into(),
                submitter_keys: vec![key(31).public()],
                namespaces: vec!["companies".into()],
            },
        ],
        params: Params::default(),
    };
    genesis.validate().expect("fixture genesis is valid");
    genesis
}

/// The `api_body` target's batch limit: small, so the fuzzer meets it from
/// both sides (the node's default `limits.api_batch_records_max` is 10,000).
pub const API_BATCH_RECORDS_MAX: usize = 4;

/// The `api_body` target's record size limit: small, so records on both sides
/// of it fit libFuzzer's default input length (the default `Params` allow 96 KiB).
pub const API_RECORD_BYTES_MAX: usize = 512;

/// The consensus chain id the seed messages are signed under.
pub const CONSENSUS_CHAIN: ChainId = ChainId([7; 32]);

/// The consensus signing key of validator `i` (seeds 1..=4, as in the fixture genesis).
pub fn consensus_key(i: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[i + 1; 32])
}

/// Four validators with unequal power, keys [`consensus_key`]`(0..4)`.
pub static CONSENSUS_SET: LazyLock<ConsensusSet> = LazyLock::new(|| {
    ConsensusSet::new(
        (0..4u8)
            .map(|i| ConsensusValidator { key: consensus_key(i).verifying_key(), power: u64::from(i) + 1 })
            .collect(),
    )
});
