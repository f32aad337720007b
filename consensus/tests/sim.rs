//! Simulator scenarios: each runs its share of the seeds (`SIM_SEEDS`, default
//! 2,000 in total) or the one seed in `SIM_SEED`, and panics with the seed on
//! any invariant violation.
#![cfg(feature = "sim")]

use std::time::Duration;

use annal_consensus::sim::byzantine::Kind;
use annal_consensus::sim::rng::Rng;
use annal_consensus::sim::{seeds, Epochs, Sim, SimConfig};
use annal_consensus::Height;

/// Runs `scenario` for each of the scenario's seeds. A failing seed does not stop the
/// others: every failure is printed with its seed, and the test fails at the end listing them.
fn for_each_seed(share_percent: u64, scenario: impl Fn(u64)) {
    let mut failed = Vec::new();
    for seed in seeds(share_percent) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(seed))).is_err() {
            eprintln!("FAILED seed={seed} (replay with SIM_SEED={seed})");
            failed.push(seed);
        }
    }
    assert!(failed.is_empty(), "{} seeds failed: {failed:?}", failed.len());
}

/// Simulated time every honest node gets to finalize 10 more blocks after healing.
const LIVENESS_BOUND: Duration = Duration::from_secs(90);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Validator count for a seed: mostly small, sometimes 10, rarely 31.
fn size(rng: &mut Rng, seed: u64) -> usize {
    if seed % 97 == 13 {
        31
    } else {
        *rng.pick(&[4, 4, 4, 7, 7, 10])
    }
}

/// Equal power, or powers 1..=10 from the seed.
fn powers(rng: &mut Rng, n: usize) -> Vec<u64> {
    if rng.chance(500_000) {
        vec![1; n]
    } else {
        (0..n).map(|_| rng.range(1, 10)).collect()
    }
}

/// The largest prefix of highest-index validators whose power stays below 1/3.
fn faulty_below_third(powers: &[u64]) -> Vec<usize> {
    let total: u64 = powers.iter().sum();
    let mut sum = 0;
    let mut out = Vec::new();
    for i in (0..powers.len()).rev() {
        if 3 * (sum + powers[i]) < total {
            sum += powers[i];
            out.push(i);
        }
    }
    out
}

/// The fewest validators (from index 0) whose power reaches 1/3 or more: enough to stop progress.
fn blocking_set(powers: &[u64]) -> Vec<usize> {
    let total: u64 = powers.iter().sum();
    let mut sum = 0;
    let mut out = Vec::new();
    for (i, p) in powers.iter().enumerate() {
        if 3 * sum >= total {
            break;
        }
        sum += p;
        out.push(i);
    }
    out
}

/// Heals the network and requires every honest node to finalize 10 more blocks in bounded time.
fn heal_and_progress(sim: &mut Sim) {
    sim.heal();
    let target = sim.max_finalized_height().0 + 10;
    if let Err(e) = sim.run_until(|s| s.min_finalized_height().0 >= target, LIVENESS_BOUND) {
        sim.checker.fail(format!("liveness after healing: {e}"));
    }
}

/// One chaos run: f Byzantine validators (a behaviour each, from the seed), loss,
/// duplication, jitter, skew, random crashes and partitions for a while; then heal.
fn chaos_run(seed: u64, equal_power: bool) {
    let mut rng = Rng::new(seed ^ 0xB12A);
    let n = size(&mut rng, seed);
    let mut cfg = SimConfig::swarm(seed, n).chaos();
    if !equal_power {
        cfg.powers = (0..n).map(|_| rng.range(1, 10)).collect();
    }
    cfg.byzantine = faulty_below_third(&cfg.powers).into_iter().map(|i| (i, *rng.pick(&Kind::ALL))).collect();
    cfg.scenario = format!("byzantine-under-chaos n={n} powers={:?} byzantine={:?}", cfg.powers, cfg.byzantine);
    let mut sim = Sim::new(cfg);
    for _ in 0..4 {
        if rng.chance(400_000) {
            let nodes: Vec<usize> = (0..sim.nodes()).collect();
            let cut = rng.range(1, nodes.len() as u64 - 1) as usize;
            sim.partition(&nodes[..cut], &nodes[cut..]);
        }
        sim.run_for(Duration::from_millis(rng.range(500, 1500)));
        sim.clear_partitions();
    }
    heal_and_progress(&mut sim);
}

/// Goal: with f equal-power Byzantine validators (every behaviour, twins included) under loss,
/// duplication, jitter, skew, crashes and partitions, no invariant breaks; after healing every
/// honest node finalizes 10 more blocks.
#[test]
fn byzantine_under_chaos_equal_power() {
    for_each_seed(23, |seed| chaos_run(seed, true));
}

/// Goal: as above with unequal voting power: Byzantine validators hold as much power as stays below 1/3.
#[test]
fn byzantine_under_chaos_unequal_power() {
    for_each_seed(22, |seed| chaos_run(seed, false));
}

/// Goal: with validators holding 1/3 or more of the power crashed, nothing finalizes and nothing forks;
/// restarted from their safety state, progress resumes.
#[test]
fn blocking_set_crashed_then_restarted() {
    for_each_seed(10, |seed| {
        let mut rng = Rng::new(seed ^ 0xF1);
        let n = size(&mut rng, seed + 1);
        let mut cfg = SimConfig::swarm(seed, n);
        cfg.powers = powers(&mut rng, n);
        cfg.scenario = format!("blocking-set-crashed n={n} powers={:?}", cfg.powers);
        let mut sim = Sim::new(cfg);
        sim.run_for(Duration::from_millis(rng.range(500, 3000)));
        for i in blocking_set(&sim.cfg.powers.clone()) {
            sim.crash(i);
        }
        sim.run_for(secs(1));
        let stalled_at = sim.max_finalized_height();
        sim.run_for(secs(10));
        if sim.max_finalized_height() != stalled_at {
            let h = sim.max_finalized_height();
            sim.checker.fail(format!("finalized {h:?} > {stalled_at:?} without a quorum"));
        }
        heal_and_progress(&mut sim);
    });
}

/// Goal: when the leader of every view crashes as it is asked to propose, views keep changing
/// and nothing forks; once leaders stop crashing, progress resumes.
#[test]
fn leader_of_every_view_crashed() {
    for_each_seed(10, |seed| {
        let mut rng = Rng::new(seed ^ 0x1EAD);
        let n = *rng.pick(&[4, 7, 10]);
        let mut cfg = SimConfig::swarm(seed, n);
        cfg.scenario = format!("leader-of-every-view-crashed n={n}");
        let mut sim = Sim::new(cfg);
        sim.run_for(secs(1));
        sim.crash_leaders = true;
        let view = sim.max_view();
        sim.run_for(secs(12));
        if sim.max_view().0 < view.0 + 3 {
            sim.checker.fail(format!("views stuck at {:?} (from {view:?}) while leaders crash", sim.max_view()));
        }
        heal_and_progress(&mut sim);
    });
}

/// Goal: a 2–2 partition of four validators stalls without forking; healing restores progress.
#[test]
fn partition_two_two_then_heal() {
    for_each_seed(10, |seed| {
        let mut cfg = SimConfig::swarm(seed, 4);
        cfg.scenario = "partition-2-2".into();
        let mut sim = Sim::new(cfg);
        sim.run_for(secs(2));
        sim.partition(&[0, 1], &[2, 3]);
        sim.run_for(secs(1));
        let stalled_at = sim.max_finalized_height();
        sim.run_for(secs(15));
        if sim.max_finalized_height() != stalled_at {
            sim.checker.fail(format!("finalized past {stalled_at:?} across a 2-2 partition"));
        }
        heal_and_progress(&mut sim);
    });
}

/// Goal: validators that crash mid-input — losing the last unflushed write, or between persisting
/// and sending — and restart from their safety state never sign conflicting messages, and progress resumes.
#[test]
fn restarts_from_safety_state() {
    for_each_seed(10, |seed| {
        let mut rng = Rng::new(seed ^ 0x5AFE);
        let n = size(&mut rng, seed + 2);
        let mut cfg = SimConfig::swarm(seed, n);
        cfg.powers = powers(&mut rng, n);
        cfg.scenario = format!("restarts-from-safety-state n={n}");
        let mut sim = Sim::new(cfg);
        for _ in 0..8 {
            let victim = rng.range(0, n as u64 - 1) as usize;
            sim.crash_during_next_input(victim, *rng.pick(&[0, 0, 1, 1, 2, 3]));
            sim.run_for(Duration::from_millis(rng.range(50, 800)));
            sim.restart(victim);
            sim.run_for(Duration::from_millis(rng.range(0, 400)));
        }
        heal_and_progress(&mut sim);
    });
}

/// Epochs in a set schedule; the last set stays in force after them.
const SCHEDULED_EPOCHS: usize = 64;

/// A seed-driven set schedule from `first` (identities `0..first.len()`; identities up to
/// `identities` start outside the set): at most boundaries the set changes by one or two steps —
/// a member leaves, an identity joins (a fresh one first, else one that left), or a member's
/// power changes — moving together at most a third of the old set's power, as governance
/// enforces, and keeping the Byzantine identities below a third of the new set's power.
fn set_schedule(rng: &mut Rng, first: &[u64], identities: usize, byzantine: &[usize]) -> Vec<Vec<(usize, u64)>> {
    let total = |set: &[(usize, u64)]| set.iter().map(|(_, p)| p).sum::<u64>();
    let faulty = |set: &[(usize, u64)]| set.iter().filter(|(i, _)| byzantine.contains(i)).map(|(_, p)| p).sum::<u64>();
    let mut sets = vec![first.iter().copied().enumerate().collect::<Vec<_>>()];
    let mut ever: Vec<bool> = (0..identities).map(|i| i < first.len()).collect();
    for _ in 1..SCHEDULED_EPOCHS {
        let old = sets.last().expect("epoch 0").clone();
        let mut new = old.clone();
        if rng.chance(850_000) {
            for _ in 0..rng.range(1, 2) {
                let mut next = new.clone();
                match rng.range(0, 2) {
                    0 => {
                        next.remove(rng.range(0, next.len() as u64 - 1) as usize);
                    }
                    1 => {
                        let out: Vec<usize> = (0..identities).filter(|i| next.iter().all(|(m, _)| m != i)).collect();
                        let fresh: Vec<usize> = out.iter().copied().filter(|&i| !ever[i]).collect();
                        let pool = if fresh.is_empty() { &out } else { &fresh };
                        if pool.is_empty() {
                            continue;
                        }
                        next.push((*rng.pick(pool), rng.range(1, 10)));
                        next.sort();
                    }
                    _ => {
                        let k = rng.range(0, next.len() as u64 - 1) as usize;
                        next[k].1 = rng.range(1, 10);
                    }
                }
                let bounded = 3 * Epochs::moved_power(&old, &next) <= total(&old);
                if bounded && next.len() >= 3 && 3 * faulty(&next) < total(&next) {
                    new = next;
                }
            }
        }
        for (i, _) in &new {
            ever[*i] = true;
        }
        sets.push(new);
    }
    sets
}

/// One run of validator-set changes under chaos: a set schedule from the seed with a change at
/// most boundaries, epochs of 4–8 heights, f Byzantine validators (a behaviour each), two
/// identities that start outside the set, and the chaos of `chaos_run`; then heal.
/// Returns the trace digest.
fn epochs_run(seed: u64, epoch_end_sync: bool) -> [u8; 32] {
    let mut rng = Rng::new(seed ^ 0xE90C);
    let n = *rng.pick(&[4, 4, 5, 7]);
    let mut cfg = SimConfig::swarm(seed, n).chaos();
    cfg.powers = if rng.chance(500_000) { vec![1; n] } else { (0..n).map(|_| rng.range(1, 10)).collect() };
    cfg.byzantine = faulty_below_third(&cfg.powers).into_iter().map(|i| (i, *rng.pick(&Kind::ALL))).collect();
    let byzantine: Vec<usize> = cfg.byzantine.iter().map(|(i, _)| *i).collect();
    let identities = n + 2;
    let blocks = rng.range(4, 8);
    let sets = set_schedule(&mut rng, &cfg.powers, identities, &byzantine);
    cfg.scenario = format!(
        "validator-set-changes-under-chaos n={n} powers={:?} byzantine={:?} epoch_blocks={blocks} sets={:?}",
        cfg.powers,
        cfg.byzantine,
        &sets[..20]
    );
    cfg.epochs = Some(Epochs { blocks, identities, sets, epoch_end_sync });
    let mut sim = Sim::new(cfg);
    for _ in 0..6 {
        if rng.chance(400_000) {
            let nodes: Vec<usize> = (0..sim.nodes()).collect();
            let cut = rng.range(1, nodes.len() as u64 - 1) as usize;
            sim.partition(&nodes[..cut], &nodes[cut..]);
        }
        // Besides the random crashes: one node crashes mid-input (a hand-over included), restarting later.
        let victim = rng.range(0, sim.nodes() as u64 - 1) as usize;
        if rng.chance(500_000) {
            sim.crash_during_next_input(victim, *rng.pick(&[0, 1, 2, 3]));
        }
        sim.run_for(Duration::from_millis(rng.range(500, 1500)));
        sim.restart(victim);
        sim.clear_partitions();
    }
    // Liveness: every honest node — validators, and followers through sync — commits 10 more
    // heights and passes at least one epoch boundary.
    sim.heal();
    let from = sim.max_finalized_height().0;
    let target = Height((from + 10).max((from / blocks + 1) * blocks + 1));
    if let Err(e) = sim.run_until(|s| s.min_finalized_height() >= target, LIVENESS_BOUND) {
        sim.checker.fail(format!("liveness after healing (from height {from} to {target:?}): {e}"));
    }
    sim.trace_digest()
}

/// Goal: with the validator set changing at most epoch boundaries (members leave, fresh and
/// returning identities join, powers change, each change within a third of the power), f
/// Byzantine validators, loss, duplication, jitter, skew, crashes and partitions, honest nodes
/// agree on every committed block across epochs, every finalization verifies under its epoch's
/// set and chain id, no honest validator signs twice in an epoch; after healing every honest
/// node commits 10 more heights across an epoch boundary.
#[test]
fn validator_set_changes_under_chaos() {
    for_each_seed(10, |seed| {
        let trace = epochs_run(seed, true);
        // Every eighth seed runs twice: the hand-over, sync and schedule must be deterministic too.
        if seed % 8 == 0 {
            assert_eq!(trace, epochs_run(seed, true), "seed={seed}: two runs diverged; replay with SIM_SEED={seed}");
        }
    });
}

/// Goal: equal seeds give equal traces (and different seeds different ones): the simulator is deterministic.
#[test]
fn same_seed_same_trace() {
    for_each_seed(5, |seed| {
        let run = |seed: u64| {
            let mut cfg = SimConfig::swarm(seed, 4).chaos();
            cfg.byzantine = vec![(3, Kind::ALL[(seed % 7) as usize])];
            let mut sim = Sim::new(cfg);
            sim.run_for(secs(4));
            (sim.trace_digest(), sim.stats.inputs)
        };
        let (a, b) = (run(seed), run(seed));
        assert_eq!(a, b, "seed={seed}: two runs of one seed diverged; replay with SIM_SEED={seed}");
        assert_ne!(a.0, run(seed + 1_000_003).0, "seed={seed}: different seeds gave one trace");
    });
}

/// Goal: the same scenario with the node's first hand-over scheme (`epoch_end_sync: false`;
/// the node has since adopted the fix, `a8b4274`), kept to reproduce what the fix is for. Ignored because it stalls in about one seed in ten (ADR 0002,
/// "Validator sets"): seed 36 (an epoch's last block finalized only through an empty
/// descendant cannot be synced past) and seed 27 (a validator that missed the last block is
/// one height behind, under the sync gap, and the new set needs it).
#[test]
#[ignore]
fn validator_set_changes_node_scheme() {
    for_each_seed(10, |seed| {
        epochs_run(seed, false);
    });
}
