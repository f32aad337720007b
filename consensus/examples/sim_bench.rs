//! Prints the consensus numbers recorded in `docs/BENCHMARKS.md`:
//! good-case finality latency in one-way delays δ, view-change time after a
//! leader crash, messages per finalized block, and the core's own throughput.
//!
//! `cargo run -p annal-consensus --features sim --release --example sim_bench`

use std::time::{Duration, Instant};

use annal_consensus::sim::{AcceptAll, CachedVerifier, Sim, SimConfig};
use annal_consensus::{Ed25519Verifier, Input, Verifier};

const DELTA_MS: u64 = 10;
const TIMEOUT_MS: u64 = 400;

/// A calm network: every link exactly δ, no jitter, loss, skew or faults.
fn calm(n: usize) -> SimConfig {
    let mut cfg = SimConfig::swarm(1, n);
    cfg.latency_ms = (DELTA_MS, DELTA_MS);
    cfg.jitter_ms = 0;
    cfg.skew_ms = 0;
    cfg.drift_ppm = 0;
    cfg.timeout_base_ms = TIMEOUT_MS;
    cfg.timeout_max_ms = 8 * TIMEOUT_MS;
    cfg
}

fn percentile(mut xs: Vec<Duration>, p: f64) -> Duration {
    xs.sort();
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

fn in_delta(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0 / DELTA_MS as f64
}

fn good_case(n: usize) {
    let mut sim = Sim::new(calm(n));
    sim.run_for(Duration::from_secs(10));
    let blocks = sim.max_finalized_height().0;
    let lat = sim.stats.finality_latencies.clone();
    println!(
        "| {n:>2} | {:.1}δ | {:.1}δ | {:.1}δ | {} | {:.0} | {:.1} |",
        in_delta(percentile(lat.clone(), 0.0)),
        in_delta(percentile(lat.clone(), 0.5)),
        in_delta(percentile(lat, 0.99)),
        blocks,
        sim.stats.messages_sent as f64 / blocks as f64,
        sim.stats.bytes_sent as f64 / blocks as f64 / 1024.0,
    );
}

/// Gaps between consecutive finalizations at node 0 while one validator is down:
/// the views it leads time out once per round-robin cycle.
fn view_change(n: usize) {
    let mut sim = Sim::new(calm(n));
    sim.run_for(Duration::from_secs(1));
    sim.crash(n - 1);
    let from = sim.stats.finalized_at.len();
    sim.run_for(Duration::from_secs(20));
    let times: Vec<Duration> =
        sim.stats.finalized_at[from..].iter().filter(|(node, _, _)| *node == 0).map(|(_, _, t)| *t).collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let slow: Vec<Duration> = gaps.iter().copied().filter(|g| *g > Duration::from_millis(5 * DELTA_MS)).collect();
    let normal: Vec<Duration> = gaps.iter().copied().filter(|g| *g <= Duration::from_millis(5 * DELTA_MS)).collect();
    let slow_med = percentile(slow.clone(), 0.5);
    println!(
        "| {n:>2} | {} | {:.1}δ | {:.0} ms = timeout + {:.1}δ | {:.0} ms |",
        slow.len(),
        in_delta(percentile(normal, 0.5)),
        slow_med.as_secs_f64() * 1000.0,
        in_delta(slow_med.saturating_sub(Duration::from_millis(TIMEOUT_MS))),
        percentile(slow, 1.0).as_secs_f64() * 1000.0,
    );
}

/// Replays one node's recorded inputs into a fresh core, timing only `handle`.
fn throughput(n: usize) {
    let mut sim = Sim::new(calm(n));
    sim.record_inputs(0);
    sim.run_for(Duration::from_secs(10));
    let inputs = sim.recorded_inputs();
    let run = |verifier: Box<dyn Verifier>| {
        let mut core = sim.fresh_core(0, verifier);
        core.handle(Duration::ZERO, Input::Start);
        let start = Instant::now();
        let mut outputs = 0usize;
        for (t, input) in inputs.iter().cloned() {
            outputs += core.handle(t, input).len();
        }
        let secs = start.elapsed().as_secs_f64();
        (inputs.len() as f64 / secs, core.committed().height.0, outputs)
    };
    let (without, h1, o1) = run(Box::new(AcceptAll));
    let (with, h2, o2) = run(Box::new(Ed25519Verifier));
    let (cached, _, _) = run(Box::<CachedVerifier>::default());
    assert_eq!((h1, o1), (h2, o2), "the replays must behave identically");
    println!("| {n:>2} | {} | {h1} | {:.0} | {:.0} | {:.0} |", inputs.len(), without, with, cached);
}

fn main() {
    println!("δ = {DELTA_MS} ms on every link, timeout {TIMEOUT_MS} ms, equal power, 10 s simulated.\n");
    println!("Good case: finality latency from proposal, per honest node and block");
    println!("| n | min | median | p99 | blocks | messages/block | KiB/block |");
    println!("|---|---|---|---|---|---|---|");
    for n in [4, 7, 10, 31] {
        good_case(n);
    }
    println!("\nView change: one validator crashed; gaps between consecutive finalizations at node 0");
    println!("| n | slow gaps | normal gap | median slow gap | max slow gap |");
    println!("|---|---|---|---|---|");
    for n in [4, 7, 10, 31] {
        view_change(n);
    }
    println!("\nCore throughput on one core: node 0's recorded inputs replayed into a fresh core");
    println!(
        "| n | inputs | height | inputs/s, no signature checks | inputs/s, ed25519 checks | inputs/s, cached checks |"
    );
    println!("|---|---|---|---|---|---|");
    for n in [4, 7, 10, 31] {
        throughput(n);
    }
}
