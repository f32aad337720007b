//! The deterministic simulator: one seed drives the network, the faults and the Byzantine validators.
//!
//! [`Sim`] runs honest [`crate::Core`]s and [`byzantine`] ones over a
//! simulated network (per-link latency and jitter, loss, duplication,
//! reordering, partitions), crashes and restarts them from their persisted
//! safety state (optionally between persisting and sending, or losing the
//! last write), skews their clocks, optionally changes the validator set
//! at epoch boundaries with the node's hand-over and sync
//! ([`SimConfig::epochs`], Spec §Epochs), and checks the invariants in
//! [`check`] after every step. Everything that varies comes from
//! [`SimConfig::seed`]; a failure panics with the seed and
//! `SIM_SEED=<seed>` replays it.

pub mod byzantine;
pub mod check;
pub mod rng;
mod world;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest as _, Sha256};

use crate::cert::{Ed25519Verifier, Verifier};

pub use world::{epoch_chain, Epochs, Sim, SimConfig, Stats};

/// Payloads starting with these bytes are invalid to the simulated application.
pub const INVALID_PAYLOAD_PREFIX: &[u8] = b"bad!";

/// Total seeds across all scenarios when `SIM_SEEDS` is unset or empty (the CI share).
pub const CI_SEEDS_TOTAL: u64 = 2000;

/// The seeds a scenario runs: `[N]` when `SIM_SEED=N` is set; otherwise
/// `share_percent` of `SIM_SEEDS` (default [`CI_SEEDS_TOTAL`]), at least one.
pub fn seeds(share_percent: u64) -> Vec<u64> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(one) = var("SIM_SEED") {
        return vec![one.trim().parse().unwrap_or_else(|_| panic!("SIM_SEED={one:?} is not a u64"))];
    }
    let total = var("SIM_SEEDS")
        .map_or(CI_SEEDS_TOTAL, |v| v.trim().parse().unwrap_or_else(|_| panic!("SIM_SEEDS={v:?} is not a u64")));
    (0..(total * share_percent / 100).max(1)).collect()
}

/// Verifies each distinct `(key, message, signature)` once across all nodes of a simulation.
///
/// The simulator also registers the signatures honest cores emit (made by
/// [`crate::Signer`], so valid by construction) to skip verifying them;
/// everything a Byzantine node sends is verified for real, and the checker
/// verifies every finalization certificate with its own, unshared cache.
#[derive(Clone, Default)]
pub struct CachedVerifier {
    ok: Arc<Mutex<HashSet<[u8; 32]>>>,
}

fn cache_id(key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> [u8; 32] {
    Sha256::new().chain_update(key.as_bytes()).chain_update(signature).chain_update(message).finalize().into()
}

impl CachedVerifier {
    /// Marks a signature produced by an honest [`crate::Signer`] as valid.
    pub(crate) fn register(&self, key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) {
        self.ok.lock().expect("verifier cache").insert(cache_id(key, message, signature));
    }
}

impl Verifier for CachedVerifier {
    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> bool {
        let id = cache_id(key, message, signature);
        if self.ok.lock().expect("verifier cache").contains(&id) {
            return true;
        }
        let ok = Ed25519Verifier.verify(key, message, signature);
        if ok {
            self.ok.lock().expect("verifier cache").insert(id);
        }
        ok
    }
}

/// Accepts every signature: for measuring the core without signature checks. Never in production.
#[derive(Clone, Copy, Default)]
pub struct AcceptAll;

impl Verifier for AcceptAll {
    fn verify(&self, _key: &VerifyingKey, _message: &[u8], _signature: &[u8; 64]) -> bool {
        true
    }
}
