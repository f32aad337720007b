//! Epoch hand-overs under crashes: with epochs of 4 heights a cluster crosses
//! a boundary every second or so, while validators are SIGKILLed and
//! restarted, alone and all at once. Each node must resume in the right
//! epoch (its safety file, its chain id, its anchor), nothing acknowledged is
//! lost, and every node holds the same block at every height.

use std::time::Duration;

use annal_tests::Cluster;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

#[test]
fn epochs_hand_over_through_crashes_and_every_node_agrees() {
    let mut c = Cluster::prepare("epochs", 4, 1);
    c.genesis.params.epoch_blocks = 4;
    std::fs::write(&c.genesis_path, c.genesis.to_json()).unwrap();
    c.genesis = annal_ledger::genesis::Genesis::load(&c.genesis_path).unwrap();
    for i in 0..4 {
        c.start_node(i);
    }
    c.wait_heights(&[0, 1, 2, 3], 2, WAIT);
    let (officer, ns) = c.agency(0);
    let mut acked = Vec::new();
    let mut nonce = 0u64;
    // One node at a time: kill it, let the others cross an epoch or two, restart it.
    for round in 0..8usize {
        let victim = round % 4;
        let live = (0..4).find(|&i| i != victim).unwrap();
        c.kill9(victim);
        for _ in 0..3 {
            nonce += 1;
            let bytes = c.publish(&officer, &ns, &format!("r/{nonce}"), nonce, b"x");
            let answer = c.submit(live, &bytes, true).unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(answer["status"], "final", "{answer}");
            acked.push(annal_ledger::record::SignedRecord::id_of_bytes(&bytes));
        }
        let h = c.height(live);
        c.start_node(victim);
        c.wait_heights(&[0, 1, 2, 3], h + 2, WAIT);
    }
    // All at once, then on.
    for i in 0..4 {
        c.kill9(i);
    }
    for i in 0..4 {
        c.start_node(i);
    }
    let h = c.height(0).max(1);
    c.wait_heights(&[0, 1, 2, 3], h + 9, WAIT);

    let top = (0..4).map(|i| c.height(i)).min().unwrap();
    assert!(top >= 4 * 8, "only {top} heights: too few epochs crossed");
    for height in 1..=top {
        let hashes: Vec<Value> = (0..4)
            .map(|i| c.client(i).get_json::<Value>(&format!("/v1/blocks/{height}"), 64 << 20).unwrap()["hash"].clone())
            .collect();
        assert!(hashes.iter().all(|x| *x == hashes[0]), "height {height}: {hashes:?}");
    }
    for id in &acked {
        for i in 0..4 {
            let r = c.client(i).get_json::<Value>(&format!("/v1/records/{id}"), 1 << 20).unwrap();
            assert_eq!(r["status"], "final", "node {i}, record {id}: {r}");
        }
    }
    // Old epochs' safety files are gone: one per node at most, plus the current one.
    for i in 0..4 {
        let data = c.dir.join(format!("validator-{i}/data"));
        let files = std::fs::read_dir(&data)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("safety"));
        assert!(files.count() <= 2, "validator-{i} keeps old epochs' safety files");
    }
}
