//! Simulator scenarios: each runs its share of the seeds (`SIM_SEEDS`, default
//! 2,000 in total) or the one seed in `SIM_SEED`, and panics with the seed on
//! any invariant violation.
#![cfg(feature = "sim")]

use std::time::Duration;

use annal_consensus::sim::byzantine::Kind;
use annal_consensus::sim::rng::Rng;
use annal_consensus::sim::{seeds, Sim, SimConfig};

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
    for_each_seed(28, |seed| chaos_run(seed, true));
}

/// Goal: as above with unequal voting power: Byzantine validators hold as much power as stays below 1/3.
#[test]
fn byzantine_under_chaos_unequal_power() {
    for_each_seed(27, |seed| chaos_run(seed, false));
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
