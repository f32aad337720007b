//! Issue 6 §1: a fault campaign on a real 4-validator cluster.
//!
//! Each validator runs in its own network namespace (when this runs as root;
//! otherwise on loopback, without the link faults). Four submitters drive
//! records through the API with `wait=final` while faults chosen from the
//! seed hit the cluster one after another: SIGKILL and restart, SIGSTOP and
//! SIGCONT, a node's link cut (a minority isolated), two links cut (no side
//! has a quorum), a flapping link, and a node whose data filesystem fills up
//! (it must stop cleanly on its own and restart with nothing lost). Then everything is healed and the
//! campaign checks: finality resumes within a bound; every node finalized the
//! same block at every height sampled; every record acknowledged as final is
//! on every node with the same index; no node exited on its own.
//!
//! `CHAOS_SECONDS` (default 60) sets the campaign's length and `CHAOS_SEED`
//! replays one; the report prints both. `tc netem` delay and loss need the
//! kernel's `sch_netem`, which this kernel lacks: the report says so.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use annal_tests::{Cluster, Namespaces};
use serde_json::Value;

const NODES: usize = 4;
const RESUME_BOUND: Duration = Duration::from_secs(60);

/// A small deterministic generator (xorshift64*), so a seed replays the same faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

#[test]
fn fault_campaign_loses_nothing_acknowledged() {
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let seconds = env_u64("CHAOS_SECONDS").unwrap_or(60);
    eprintln!("chaos campaign: seed {seed} (replay with CHAOS_SEED={seed}), {seconds} s");
    // Any seed but 0 is a state of its own (xorshift never leaves 0). Until session 31
    // this was `seed | 1`: an even seed ran the campaign of the next odd one.
    let mut rng = Rng(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed });

    let ns = match Namespaces::create(NODES) {
        Ok(ns) => Some(ns),
        Err(why) => {
            eprintln!("network namespaces unavailable ({why}): link faults skipped, process faults on loopback");
            None
        }
    };
    let mut cluster = match &ns {
        Some(ns) => Cluster::start_in("chaos", NODES, NODES, ns),
        None => Cluster::start("chaos", NODES, NODES),
    };
    cluster.wait_heights(&[0, 1, 2, 3], 2, Duration::from_secs(120));

    let stop = AtomicBool::new(false);
    let acks: Mutex<BTreeMap<String, (u64, u64)>> = Mutex::new(BTreeMap::new());
    let heights: Mutex<Vec<(Instant, u64)>> = Mutex::new(Vec::new());
    let mut faults: Vec<String> = Vec::new();
    let cluster_ref = std::sync::RwLock::new(cluster);

    /// Stops the load and monitor threads however the campaign ends (a failed check panics).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        // Load: each submitter sends its records in nonce order, each to the next node, waiting for finality.
        for t in 0..NODES {
            let (stop, acks, cluster) = (&stop, &acks, &cluster_ref);
            s.spawn(move || {
                let (key, namespace) = cluster.read().unwrap().agency(t);
                let mut nonce = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    nonce += 1;
                    let c = cluster.read().unwrap();
                    let record =
                        c.publish(&key, &namespace, &format!("chaos-{t}-{nonce}"), nonce, b"filed during chaos");
                    let node = (t + nonce as usize) % NODES;
                    let client = c.client(node);
                    drop(c);
                    let body = serde_json::json!({ "record": base64_encode(&record) });
                    let answer = client.post_json::<Value>(
                        "/v1/records?wait=final&timeout_ms=8000",
                        &body,
                        Duration::from_secs(10),
                        1 << 20,
                    );
                    match answer {
                        Ok(v) if v["status"] == "final" => {
                            let id = v["id"].as_str().unwrap().to_string();
                            acks.lock()
                                .unwrap()
                                .insert(id, (v["index"].as_u64().unwrap(), v["height"].as_u64().unwrap()));
                        }
                        _ => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            });
        }
        // Monitor: the highest height any node reports, over time.
        {
            let (stop, heights, cluster) = (&stop, &heights, &cluster_ref);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let c = cluster.read().unwrap();
                    let clients: Vec<_> = (0..NODES).map(|i| c.client(i)).collect();
                    drop(c);
                    let h = clients
                        .iter()
                        .filter_map(|cl| cl.get_json::<Value>("/v1/status", 1 << 20).ok())
                        .filter_map(|v| v["height"].as_u64())
                        .max()
                        .unwrap_or(0);
                    heights.lock().unwrap().push((Instant::now(), h));
                    std::thread::sleep(Duration::from_millis(250));
                }
            });
        }

        // Faults, one after another, each healed before the next.
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            let all: &[&str] = if ns.is_some() {
                &["kill", "stop", "isolate", "split", "flap", "disk-full"]
            } else {
                &["kill", "stop"]
            };
            // CHAOS_FAULTS=kill,disk-full narrows the campaign to those kinds.
            let chosen = std::env::var("CHAOS_FAULTS").unwrap_or_default();
            let kinds: Vec<&str> =
                all.iter().copied().filter(|k| chosen.is_empty() || chosen.split(',').any(|c| c == *k)).collect();
            assert!(!kinds.is_empty(), "CHAOS_FAULTS={chosen:?} names no fault this run can inject ({all:?})");
            let kind = kinds[rng.below(kinds.len() as u64) as usize];
            let victim = rng.below(NODES as u64) as usize;
            let hold = Duration::from_millis(1000 + rng.below(4000));
            faults.push(format!("{kind} validator-{victim} for {} ms", hold.as_millis()));
            match kind {
                "kill" => {
                    cluster_ref.write().unwrap().kill9(victim);
                    std::thread::sleep(hold);
                    cluster_ref.write().unwrap().start_node(victim);
                }
                "stop" => {
                    cluster_ref.write().unwrap().pause(victim, true);
                    std::thread::sleep(hold);
                    cluster_ref.write().unwrap().pause(victim, false);
                }
                "isolate" => {
                    let ns = ns.as_ref().unwrap();
                    ns.set_link(victim, false);
                    std::thread::sleep(hold);
                    ns.set_link(victim, true);
                }
                "split" => {
                    // Two of four cut off: neither side holds more than 2/3 of the power.
                    let ns = ns.as_ref().unwrap();
                    let other = (victim + 1 + rng.below(NODES as u64 - 1) as usize) % NODES;
                    *faults.last_mut().unwrap() =
                        format!("split validator-{victim} and validator-{other} off for {} ms", hold.as_millis());
                    ns.set_link(victim, false);
                    ns.set_link(other, false);
                    std::thread::sleep(hold);
                    ns.set_link(victim, true);
                    ns.set_link(other, true);
                }
                "disk-full" => {
                    // The node must stop cleanly on its own, and restart with nothing lost.
                    // It stops at its first write that fails. RocksDB frees space as it
                    // compacts, so the disk is topped up until the node has stopped.
                    let started = Instant::now();
                    let (ballast, status) = loop {
                        let ballast = cluster_ref.read().unwrap().fill_disk(victim);
                        let status = cluster_ref.write().unwrap().wait_exit(victim, Duration::from_millis(500));
                        if status.is_some() || started.elapsed() > Duration::from_secs(120) {
                            break (ballast, status);
                        }
                    };
                    std::fs::remove_file(&ballast).expect("removing the ballast");
                    let status = status
                        .unwrap_or_else(|| panic!("validator-{victim} kept running on a full disk (seed {seed})"));
                    let log =
                        std::fs::read_to_string(&cluster_ref.read().unwrap().nodes[victim].log).unwrap_or_default();
                    assert!(!log.contains("panicked"), "validator-{victim} panicked on a full disk (seed {seed})");
                    assert!(
                        log.contains("the node stopped on an error"),
                        "validator-{victim} exited without saying why"
                    );
                    *faults.last_mut().unwrap() =
                        format!("disk-full validator-{victim}: stopped ({status}), restarted");
                    std::thread::sleep(hold);
                    cluster_ref.write().unwrap().start_node(victim);
                }
                "flap" => {
                    let ns = ns.as_ref().unwrap();
                    let until = Instant::now() + hold;
                    let mut up = false;
                    while Instant::now() < until {
                        ns.set_link(victim, up);
                        up = !up;
                        std::thread::sleep(Duration::from_millis(150 + rng.below(300)));
                    }
                    ns.set_link(victim, true);
                }
                _ => unreachable!(),
            }
            let exited = cluster_ref.write().unwrap().exited();
            assert!(exited.is_empty(), "nodes exited on their own during the campaign: {exited:?} (seed {seed})");
            std::thread::sleep(Duration::from_millis(500 + rng.below(2000)));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let mut cluster = cluster_ref.into_inner().unwrap();

    // Healed (every fault above was undone): finality must resume within the bound.
    let healed_at = Instant::now();
    let h0 = (0..NODES).map(|i| cluster.height(i)).max().unwrap();
    cluster.wait_heights(&[0, 1, 2, 3], h0 + 3, RESUME_BOUND);
    let resumed_after = healed_at.elapsed();

    // Agreement: the same block at every sampled height on every node.
    let top = (0..NODES).map(|i| cluster.height(i)).min().unwrap();
    let step = (top / 60).max(1);
    let mut checked = 0;
    for h in (1..=top).step_by(step as usize).chain(std::iter::once(top)) {
        let hashes: Vec<String> = (0..NODES)
            .map(|i| {
                let b: Value = cluster.client(i).get_json(&format!("/v1/blocks/{h}"), 64 << 20).expect("block");
                b["hash"].as_str().unwrap().to_string()
            })
            .collect();
        assert!(hashes.windows(2).all(|w| w[0] == w[1]), "fork at height {h}: {hashes:?} (seed {seed})");
        checked += 1;
    }

    // Nothing acknowledged is lost: every acked record, final, same place, on every node. One
    // client (one kept-alive connection) per node: a client per request opened a connection
    // each, and a long campaign's ~28,000 acks ran out of local ports (28,232, each held in
    // TIME_WAIT for a minute), which showed as records lost.
    let acks = acks.into_inner().unwrap();
    let mut lost = Vec::new();
    for i in 0..NODES {
        let client = cluster.client(i);
        for (id, (index, height)) in &acks {
            let r = client.get_json::<Value>(&format!("/v1/records/{id}"), 1 << 20).map_err(|e| e.to_string());
            let ok = r.as_ref().is_ok_and(|r| {
                r["status"] == "final" && r["index"].as_u64() == Some(*index) && r["height"].as_u64() == Some(*height)
            });
            if !ok {
                lost.push((i, id.clone(), r));
            }
        }
    }
    let exited = cluster.exited();

    // Longest stall: the longest time the highest height seen did not grow.
    let samples = heights.into_inner().unwrap();
    let mut longest = Duration::ZERO;
    let mut since = samples.first().map(|(t, _)| *t);
    let mut last = 0;
    for (t, h) in &samples {
        if *h > last {
            last = *h;
            since = Some(*t);
        } else if let Some(s) = since {
            longest = longest.max(*t - s);
        }
    }

    eprintln!("\n=== chaos report ===");
    eprintln!("seed               {seed}");
    eprintln!("campaign           {seconds} s, {} faults, network namespaces: {}", faults.len(), ns.is_some());
    for f in &faults {
        eprintln!("  fault            {f}");
    }
    eprintln!("delay/loss (netem) not injected: this kernel has no sch_netem");
    eprintln!("records acked      {}", acks.len());
    eprintln!("records lost       {}", lost.len());
    eprintln!("heights checked    {checked} (of 1..={top}), all nodes agree");
    eprintln!("longest stall      {:.1} s", longest.as_secs_f64());
    eprintln!("finality resumed   {:.1} s after the last heal", resumed_after.as_secs_f64());
    eprintln!("nodes exited       {exited:?}");
    assert!(lost.is_empty(), "acknowledged records lost or changed: {:?} (seed {seed})", &lost[..lost.len().min(5)]);
    assert!(exited.is_empty(), "nodes exited on their own: {exited:?} (seed {seed})");
    assert!(!acks.is_empty(), "no record was acknowledged during the campaign (seed {seed})");
    drop(cluster);
    drop(ns);
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
