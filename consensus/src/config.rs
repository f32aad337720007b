//! What a core needs to know before its first input.

use std::time::Duration;

use crate::types::{ChainId, ValidatorSet};
use crate::wire::Limits;

/// Static parameters of one core (one epoch: one validator set).
#[derive(Clone, Debug)]
pub struct Config {
    pub chain_id: ChainId,
    /// The validators of this epoch, supplied by the application (Spec §Validator sets).
    pub validators: ValidatorSet,
    /// Timeout of a view after a notarized one; doubles per consecutive nullified view.
    pub timeout_base: Duration,
    /// Ceiling of the back-off.
    pub timeout_max: Duration,
    pub limits: Limits,
    /// Votes and proposals further than this many views ahead are dropped.
    pub views_ahead_max: u64,
    /// Committed blocks kept to answer block requests from peers that fell behind.
    pub blocks_retained: u64,
    /// Payload bytes those committed blocks may hold together; the oldest go first.
    /// (256 full blocks of 2 MB would otherwise hold half a gigabyte; the
    /// application answers requests for older blocks from its store.)
    pub blocks_retained_bytes: usize,
    /// Blocks being fetched at once.
    pub wanted_max: usize,
    /// Blocks sent back for one block request: the block and its ancestors.
    pub fetch_chain_max: usize,
    /// Attempts to fetch one block before giving up on it.
    pub fetch_attempts_max: u32,
}

impl Config {
    pub fn new(chain_id: ChainId, validators: ValidatorSet) -> Config {
        Config {
            chain_id,
            validators,
            timeout_base: Duration::from_millis(1000),
            timeout_max: Duration::from_millis(8000),
            limits: Limits::default(),
            views_ahead_max: 256,
            blocks_retained: 256,
            blocks_retained_bytes: 64 << 20,
            wanted_max: 1024,
            fetch_attempts_max: 32,
            fetch_chain_max: 64,
        }
    }
}
