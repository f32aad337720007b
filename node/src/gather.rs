//! When a leader proposes: at once when the chain is quiet or its block is
//! half full, a little later under load, so that blocks carry more records.
//!
//! Every block costs each validator work that does not depend on how many
//! records it carries: the proposal and two rounds of votes crossing the
//! network, the voted block's file synced, a store write with its own sync,
//! checkpoint signatures. A leader that proposes as soon as it holds any record
//! makes, at a steady 10,000 records/s, blocks of a few hundred records, a
//! third of them carrying one (docs/BENCHMARKS.md, session 15). Under load it
//! now waits, at most a quarter of the block interval (and 50 ms) after
//! consensus asked it for a block, or until it holds half a block (by records
//! or bytes), when the records committed over the last second came fast
//! enough that such a wait brings in at least a sixteenth of a block
//! ([`FLOOR_DIVISOR`]); a quieter chain sees no wait, since there a wait
//! would add latency and save little.
//!
//! Only when a leader proposes depends on this; nothing here is hashed or
//! signed, and the records and their order come from the pool as before.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use annal_ledger::genesis::Params;

/// The longest wait is the block interval divided by this, and at most [`WAIT_MAX`].
pub const WAIT_DIVISOR: u32 = 4;
/// However long the block interval a chain chose (an empty block every ten
/// seconds, say), a leader holding records never waits longer than this.
pub const WAIT_MAX: Duration = Duration::from_millis(50);
/// A leader holding at least `block_records_max / FULL_DIVISOR` records, or
/// `block_bytes_max / FULL_DIVISOR` bytes, proposes at once.
pub const FULL_DIVISOR: usize = 2;
/// A leader waits only if the longest wait, at the recent rate, brings at least
/// `block_records_max / FLOOR_DIVISOR` records.
pub const FLOOR_DIVISOR: usize = 16;
/// The arrival rate is the records committed over this much recent time.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Blocks remembered for the rate, at most (a window holds a few dozen).
const COMMITS_KEPT_MAX: usize = 1024;

/// Records committed per recent block, for the recent rate of records.
#[derive(Debug, Default)]
pub struct Load {
    commits: VecDeque<(Instant, usize)>,
}

impl Load {
    /// Notes a block of `records` committed at `now`.
    pub fn committed(&mut self, now: Instant, records: usize) {
        self.forget_before(now);
        if self.commits.len() == COMMITS_KEPT_MAX {
            self.commits.pop_front();
        }
        self.commits.push_back((now, records));
    }

    /// Records committed per second over the [`RATE_WINDOW`] before `now`.
    pub fn rate(&self, now: Instant) -> f64 {
        let since = now.checked_sub(RATE_WINDOW);
        let records: usize = self.commits.iter().filter(|(t, _)| since.is_none_or(|s| *t > s)).map(|(_, r)| r).sum();
        records as f64 / RATE_WINDOW.as_secs_f64()
    }

    fn forget_before(&mut self, now: Instant) {
        let Some(since) = now.checked_sub(RATE_WINDOW) else { return };
        while self.commits.front().is_some_and(|(t, _)| *t <= since) {
            self.commits.pop_front();
        }
    }
}

/// Whether a leader asked for a block at `asked`, holding `held` (records,
/// bytes; at least one record), waits at `now` for more, under the chain's
/// `params`. `rate` is records per second ([`Load::rate`]).
pub fn wait_for_more(held: (usize, usize), params: &Params, rate: f64, asked: Instant, now: Instant) -> bool {
    let longest = (Duration::from_millis(params.block_interval_ms) / WAIT_DIVISOR).min(WAIT_MAX);
    let waited = now.saturating_duration_since(asked);
    let (records, bytes) = held;
    let half_full =
        records >= params.block_records_max / FULL_DIVISOR || bytes >= params.block_bytes_max / FULL_DIVISOR;
    if half_full || waited >= longest {
        return false;
    }
    rate * longest.as_secs_f64() >= (params.block_records_max / FLOOR_DIVISOR).max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of 4,000 records or 8 MiB, an empty block every 200 ms.
    fn params() -> Params {
        Params { block_records_max: 4000, block_bytes_max: 8 << 20, block_interval_ms: 200, ..Params::default() }
    }

    fn wait_at(records: usize, rate: f64, waited_ms: u64) -> bool {
        let asked = Instant::now();
        wait_for_more((records, records * 512), &params(), rate, asked, asked + Duration::from_millis(waited_ms))
    }

    #[test]
    fn under_load_a_small_block_waits_for_more() {
        // 10,000/s: 500 records arrive in the longest wait (50 ms), above the floor (250).
        assert!(wait_at(1, 10_000.0, 0));
        assert!(wait_at(1500, 10_000.0, 0));
        assert!(wait_at(1500, 10_000.0, 49));
    }

    #[test]
    fn a_quiet_chain_proposes_at_once() {
        assert!(!wait_at(1, 0.0, 0));
        assert!(!wait_at(1, 50.0, 0));
        // 4,000/s brings 200 in 50 ms, under the floor of 4000 / 16 = 250.
        assert!(!wait_at(1, 4_000.0, 0));
        assert!(wait_at(1, 5_000.0, 0));
        // Blocks of fewer than 16 records: the floor is one record, not none.
        let tiny = Params { block_records_max: 8, ..params() };
        let asked = Instant::now();
        assert!(!wait_for_more((1, 512), &tiny, 0.0, asked, asked));
        assert!(wait_for_more((1, 512), &tiny, 100.0, asked, asked));
    }

    #[test]
    fn a_half_full_block_or_a_long_wait_goes_at_once() {
        assert!(!wait_at(2000, 100_000.0, 0));
        assert!(wait_at(1999, 100_000.0, 0));
        assert!(!wait_at(10, 100_000.0, 50));
        assert!(!wait_at(10, 100_000.0, 70));
        // Half full by bytes: 100 records of 50 KB.
        let asked = Instant::now();
        assert!(!wait_for_more((100, 100 * 50_000), &params(), 100_000.0, asked, asked));
        assert!(wait_for_more((100, 100 * 40_000), &params(), 100_000.0, asked, asked));
    }

    #[test]
    fn a_long_block_interval_does_not_make_a_long_wait() {
        let asked = Instant::now();
        let at = |ms: u64| asked + Duration::from_millis(ms);
        let ten_s = Params { block_interval_ms: 10_000, ..params() };
        assert!(wait_for_more((1, 512), &ten_s, 10_000.0, asked, at(49)));
        assert!(!wait_for_more((1, 512), &ten_s, 10_000.0, asked, at(50)));
        // A short interval waits a quarter of it.
        let short = Params { block_interval_ms: 40, ..params() };
        assert!(wait_for_more((1, 512), &short, 100_000.0, asked, at(9)));
        assert!(!wait_for_more((1, 512), &short, 100_000.0, asked, at(10)));
    }

    #[test]
    fn the_rate_is_over_the_last_second() {
        let t0 = Instant::now();
        let mut load = Load::default();
        load.committed(t0, 1000);
        load.committed(t0 + Duration::from_millis(500), 3000);
        assert_eq!(load.rate(t0 + Duration::from_millis(900)), 4000.0);
        // The first block left the window; the second is still in it.
        assert_eq!(load.rate(t0 + Duration::from_millis(1200)), 3000.0);
        assert_eq!(load.rate(t0 + Duration::from_millis(1600)), 0.0);
        // Old blocks are dropped as new ones come.
        load.committed(t0 + Duration::from_secs(5), 7);
        assert_eq!(load.commits.len(), 1);
    }

    #[test]
    fn the_memory_of_blocks_is_bounded() {
        let t0 = Instant::now();
        let mut load = Load::default();
        for _ in 0..COMMITS_KEPT_MAX + 10 {
            load.committed(t0, 1);
        }
        assert_eq!(load.commits.len(), COMMITS_KEPT_MAX);
    }
}
