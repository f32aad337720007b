//! Issue 6 §2: a Byzantine validator over the real network. Validator 3 runs
//! the test-only mode (`[testing] byzantine`): it equivocates (two notarize
//! votes per view on made-up blocks), replays old consensus messages, and
//! publishes malformed and oversized frames, and floods every peer with
//! requests for the whole chain and for one block by digest, while a load of
//! records runs. The three
//! honest validators must stay live and agree, refuse the junk, report the
//! equivocations as evidence in `/v1/status` and `/metrics`, and refuse the
//! history requests past one run in progress per peer.

use std::io::Write;
use std::time::Duration;

use annal_tests::Cluster;
use serde_json::Value;

#[test]
fn honest_validators_stay_safe_and_live_and_record_evidence() {
    let mut cluster = Cluster::prepare("byzantine", 4, 1);
    let mut config = std::fs::OpenOptions::new().append(true).open(&cluster.nodes[3].config).unwrap();
    writeln!(
        config,
        "\n[testing]\nbyzantine = [\"equivocate\", \"replay\", \"malformed\", \"oversized\", \"history-flood\"]"
    )
    .unwrap();
    drop(config);
    for i in 0..4 {
        cluster.start_node(i);
    }
    let honest = [0, 1, 2];
    cluster.wait_heights(&honest, 3, Duration::from_secs(120));

    // Records keep becoming final through the attack.
    let (key, namespace) = cluster.agency(0);
    for k in 0..30u64 {
        let record = cluster.publish(&key, &namespace, &format!("byz-{k}"), k + 1, b"filed under attack");
        let answer = cluster.submit((k % 3) as usize, &record, true).expect("a record is final under attack");
        assert_eq!(answer["status"], "final");
    }
    let h = cluster.height(0);
    cluster.wait_heights(&honest, h + 10, Duration::from_secs(120));

    // Agreement among the honest validators.
    let top = honest.iter().map(|&i| cluster.height(i)).min().unwrap();
    for height in [top / 2, top] {
        let hashes: Vec<Value> = honest
            .iter()
            .map(|&i| {
                cluster.client(i).get_json::<Value>(&format!("/v1/blocks/{height}"), 64 << 20).unwrap()["hash"].clone()
            })
            .collect();
        assert!(hashes.windows(2).all(|w| w[0] == w[1]), "honest validators disagree at {height}: {hashes:?}");
    }

    // Evidence of the equivocations, in status and in metrics, on every honest validator.
    for i in honest {
        let status = cluster.status(i).unwrap();
        assert!(status["evidence"].as_u64().unwrap() > 0, "validator {i} recorded no evidence: {status}");
        let metrics = cluster.client(i).get_text("/metrics", 1 << 20).unwrap();
        let line = metrics.lines().find(|l| l.starts_with("annal_evidence_total ")).expect("evidence metric");
        assert_ne!(line, "annal_evidence_total 0", "validator {i}: {line}");
        let refused = metrics.lines().find(|l| l.starts_with("annal_history_requests_refused_total ")).unwrap();
        assert_ne!(refused, "annal_history_requests_refused_total 0", "validator {i}: {refused}");
    }
    assert!(cluster.exited().is_empty(), "a validator exited: {:?}", cluster.exited());
    let log = std::fs::read_to_string(&cluster.nodes[3].log).unwrap();
    assert!(log.contains("TEST-ONLY BYZANTINE MODE"), "the attacker says what it is");
}
