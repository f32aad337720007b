//! Fixtures shared by the ledger's integration tests: a small chain with fixed keys.
#![allow(dead_code)]

use annal_ledger::block::{Certificate, Header, Height, View};
use annal_ledger::exec::{execute, BlockMeta, Executed, Signatures};
use annal_ledger::genesis::{Agency, Genesis, Params, Validator};
use annal_ledger::gov::Governance;
use annal_ledger::keys::SecretKey;
use annal_ledger::merkle::Frontier;
use annal_ledger::record::{Body, Op, Record, RecordId, SignedRecord};
use annal_ledger::state::{Rules, StateView};
use annal_ledger::state_tree::StateTreeReader;

pub const CHAIN: &str = "annal-test";

/// This crate's folder, read when the test runs: `env!("CARGO_MANIFEST_DIR")`
/// would be the folder of whichever clone last compiled the test, and build
/// output is shared between clones (the Makefile's fixed `CARGO_TARGET_DIR`).
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(Into::into).unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

pub fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

/// Four validators (keys 1..=4, p2p keys 11..=14); agency "land" (officers 21, 22)
/// owns `land-titles`; agency "companies" (officer 31) owns `companies`.
pub fn genesis() -> Genesis {
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
    }
}

pub fn rules() -> Rules {
    Rules::new(&genesis())
}

/// Governance before the first block (no changes made).
pub fn gov() -> Governance {
    Governance::genesis(&genesis())
}

/// An unsigned record by officer `signer` with an inline body.
pub fn record(
    signer: u8,
    namespace: &str,
    key_name: &str,
    op: Op,
    supersedes: Option<RecordId>,
    version: u64,
    nonce: u64,
) -> Record {
    Record {
        chain_id: CHAIN.into(),
        namespace: namespace.into(),
        key: key_name.into(),
        op,
        body: Body::Inline(format!("{key_name} v{nonce}").into_bytes()),
        metadata: [("basis".to_string(), "Act 12 s.3".to_string())].into(),
        supersedes,
        version,
        submitter: key(signer).public(),
        nonce,
    }
}

pub fn signed(
    signer: u8,
    namespace: &str,
    key_name: &str,
    op: Op,
    supersedes: Option<RecordId>,
    version: u64,
    nonce: u64,
) -> SignedRecord {
    record(signer, namespace, key_name, op, supersedes, version, nonce).sign(&key(signer))
}

/// A header with every field set to a distinct value (pinned in encoding.rs).
pub fn sample_header() -> Header {
    Header {
        chain_id: CHAIN.into(),
        height: Height(42),
        view: View(45),
        parent: [1; 32],
        time_ms: 1_764_000_123_456,
        proposer: 2,
        records_root: [2; 32],
        log_size: 4242,
        log_root: [3; 32],
        state_root: [4; 32],
        validators_hash: [5; 32],
        next_validators_hash: [6; 32],
        charter_hash: [7; 32],
    }
}

/// Executes and certifies a block on top of `state`/`frontier` (signatures verified).
pub fn block<V: StateView + StateTreeReader>(
    state: &V,
    frontier: &Frontier,
    parent: [u8; 32],
    height: u64,
    records: &[SignedRecord],
) -> (Header, Certificate, Executed<'static>) {
    let g = genesis();
    let executed =
        execute(&gov(), Height(height), state, frontier, records, Signatures::Verify).expect("block executes");
    let set = g.validator_set();
    let meta = BlockMeta {
        height: Height(height),
        view: View(height),
        parent,
        time_ms: g.genesis_time_ms + height,
        proposer: (height % 4) as u32,
        validators_hash: set.hash(),
    };
    let header = executed.header(CHAIN, &meta);
    let (k1, k2, k3) = (key(1), key(2), key(3));
    let cert = Certificate::sign(&header, &set, &[(0, &k1), (1, &k2), (2, &k3)]);
    (header, cert, executed)
}
