//! Issue 5, "Tests with real processes on loopback": a 4-validator cluster of
//! `annal node run` processes takes records, agrees, survives SIGKILL of one
//! validator and of all four, and refuses a node outside the validator set.

use std::collections::BTreeMap;
use std::time::Duration;

use annal_ledger::keys::SecretKey;
use annal_ledger::proof::{self, Bundle};
use annal_tests::Cluster;
use serde_json::Value;

const RECORDS: usize = 1000;
const SUBMITTERS: usize = 4;
const LONG: Duration = Duration::from_secs(120);

/// `(id, index, height)` of every record acknowledged as final.
type Acks = BTreeMap<String, (u64, u64)>;

fn submit_all(cluster: &Cluster, per_submitter: usize, tag: &str, nodes: &[usize]) -> Acks {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..SUBMITTERS)
            .map(|t| {
                let nodes = nodes.to_vec();
                s.spawn(move || {
                    let (key, namespace) = cluster.agency(t);
                    let mut acks = Acks::new();
                    for k in 0..per_submitter {
                        let node = nodes[(t + k) % nodes.len()];
                        let nonce = nonce_base(tag) + k as u64;
                        let body = format!("record {k} of submitter {t}, batch {tag}");
                        let record =
                            cluster.publish(&key, &namespace, &format!("{tag}-{t}-{k}"), nonce, body.as_bytes());
                        let answer = cluster
                            .submit(node, &record, true)
                            .unwrap_or_else(|e| panic!("record {k} of submitter {t} to node {node}: {e}"));
                        assert_eq!(answer["status"], "final", "{answer}");
                        let id = answer["id"].as_str().expect("id").to_string();
                        acks.insert(
                            id,
                            (answer["index"].as_u64().expect("index"), answer["height"].as_u64().expect("height")),
                        );
                    }
                    acks
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a submitter thread panicked")).collect()
    })
}

/// Nonces must grow across batches of one submitter.
fn nonce_base(tag: &str) -> u64 {
    match tag {
        "a" => 1,
        "b" => 1_000_000,
        _ => 2_000_000,
    }
}

/// The block hash every node serves at `height`.
fn block_hashes(cluster: &Cluster, nodes: &[usize], height: u64) -> Vec<String> {
    nodes
        .iter()
        .map(|&i| {
            let b: Value = cluster.client(i).get_json(&format!("/v1/blocks/{height}"), 64 << 20).expect("block");
            b["hash"].as_str().expect("hash").to_string()
        })
        .collect()
}

/// Waits until the listed nodes agree on the block at a common height at least `min`; returns it.
fn assert_agree(cluster: &mut Cluster, nodes: &[usize], min: u64) -> u64 {
    cluster.wait_heights(nodes, min, LONG);
    let h = nodes.iter().map(|&i| cluster.height(i)).min().expect("nodes");
    let hashes = block_hashes(cluster, nodes, h);
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "nodes {nodes:?} disagree at height {h}: {hashes:?}");
    let roots: Vec<(Value, Value)> = nodes
        .iter()
        .map(|&i| {
            let s = cluster.status(i).expect("status");
            (s["log_size"].clone(), s["height"].clone())
        })
        .collect();
    eprintln!("nodes {nodes:?} agree on block {} at height {h}; (log size, height) now {roots:?}", hashes[0]);
    h
}

fn assert_all_final(cluster: &Cluster, node: usize, acks: &Acks) {
    for (id, (index, height)) in acks {
        let r: Value = cluster.client(node).get_json(&format!("/v1/records/{id}"), 1 << 20).expect("record");
        assert_eq!(r["status"], "final", "node {node}, record {id}: {r}");
        assert_eq!((r["index"].as_u64(), r["height"].as_u64()), (Some(*index), Some(*height)), "record {id}");
    }
}

/// Goal: the whole life of a cluster, in the order of issue 5 §8.
#[test]
fn four_validators_take_records_survive_kills_and_agree() {
    let mut cluster = Cluster::start("lifecycle", 4, SUBMITTERS);
    let all = [0, 1, 2, 3];
    cluster.wait_heights(&all, 2, LONG);

    // The nodes run without transparent huge pages (their memory is counted
    // in 4 KB pages, not whole 2 MB regions; cli/src/main.rs).
    for i in all {
        let pid = cluster.pid(i).expect("the harness runs every node");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the node's /proc status");
        assert!(status.contains("THP_enabled:\t0"), "node {i} runs with transparent huge pages:\n{status}");
        // Started with a soft limit of 1,024 open files, it raised it to the hard limit.
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("the node's /proc limits");
        let files: Vec<&str> = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("a line for open files")
            .split_whitespace()
            .collect();
        assert_eq!(files[3], files[4], "node {i}'s soft open-file limit is its hard one:\n{limits}");
    }

    // 1,000 records across all nodes, each acknowledged final.
    let mut acks = submit_all(&cluster, RECORDS / SUBMITTERS, "a", &all);
    assert_eq!(acks.len(), RECORDS);
    let indexes: std::collections::BTreeSet<u64> = acks.values().map(|(i, _)| *i).collect();
    assert_eq!(indexes.len(), RECORDS, "two records share a log index");

    // Every node reports the same block (hence log root and state root) at a common height.
    let h = assert_agree(&mut cluster, &all, 3);
    for i in all {
        let b: Value = cluster.client(i).get_json(&format!("/v1/blocks/{h}"), 64 << 20).unwrap();
        assert!(b["header"].is_string());
    }
    // A proof fetched from each node verifies offline with only the genesis.
    for (node, id) in acks.keys().take(4).enumerate() {
        let mut bundle = None;
        cluster.wait_for("a certified proof", LONG, |c| {
            bundle = c.client(node).get_json::<Bundle>(&format!("/v1/proofs/{id}"), 16 << 20).ok();
            bundle.is_some()
        });
        let verified = proof::verify(&bundle.unwrap(), &cluster.genesis, None)
            .unwrap_or_else(|e| panic!("proof of {id} from node {node}: {e}"));
        assert_eq!(verified.index, acks[id].0);
    }

    // One validator killed: the other three keep finalizing and take records.
    cluster.kill9(3);
    let before = cluster.height(0);
    cluster.wait_heights(&[0, 1, 2], before + 5, LONG);
    acks.extend(submit_all(&cluster, 5, "b", &[0, 1, 2]));

    // Restarted, it syncs to the block the others have.
    cluster.start_node(3);
    let target = cluster.height(0);
    cluster.wait_heights(&[3], target, LONG);
    assert_agree(&mut cluster, &all, target);

    // All four killed and restarted: every acknowledged record is there, unchanged.
    for i in all {
        cluster.kill9(i);
    }
    for i in all {
        cluster.start_node(i);
    }
    let after = assert_agree(&mut cluster, &all, target + 2);
    assert!(after > target);
    for i in all {
        assert_all_final(&cluster, i, &acks);
        // Each says what its open spent on the state tree (the part of a restart that grows with the state).
        let log = std::fs::read_to_string(&cluster.nodes[i].log).unwrap();
        assert!(log.contains("state tree levels built from the stored leaves"), "node {i}'s log");
    }
}

/// Goal: a node whose keys the genesis does not list is refused at the
/// connection and never gets a block, while the validators carry on.
#[test]
fn node_outside_the_validator_set_cannot_join() {
    let mut cluster = Cluster::start("outsider", 4, 1);
    cluster.wait_heights(&[0, 1, 2, 3], 2, LONG);

    // The outsider: fresh keys, the cluster's genesis, every validator as a peer.
    let dir = cluster.dir.join("outsider");
    std::fs::create_dir_all(&dir).unwrap();
    SecretKey::generate().write_file(&dir.join("consensus.key")).unwrap();
    SecretKey::generate().write_file(&dir.join("p2p.key")).unwrap();
    let peers: Vec<String> = (0..4)
        .map(|i| {
            let c = annal_node_config(&cluster.nodes[i].config);
            format!("{:?}", c.listen[0])
        })
        .collect();
    let port = annal_cli::devnet::free_port(&[]).unwrap();
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "genesis = \"../genesis.json\"\ndata_dir = \"data\"\nconsensus_key = \"consensus.key\"\np2p_key = \"p2p.key\"\n\
             listen = [\"/ip4/127.0.0.1/tcp/{}\"]\npeers = [{}]\napi_listen = \"127.0.0.1:{port}\"\n",
            annal_cli::devnet::free_port(&[port]).unwrap(),
            peers.join(", ")
        ),
    )
    .unwrap();
    cluster.nodes.push(annal_tests::Node::new(
        "outsider",
        &format!("http://127.0.0.1:{port}"),
        config,
        dir.join("node.log"),
    ));
    cluster.start_node(4);
    cluster.wait_for("the outsider's API", LONG, |c| c.status(4).is_some());

    let h = cluster.height(0);
    cluster.wait_heights(&[0, 1, 2, 3], h + 10, LONG);
    let s = cluster.status(4).unwrap();
    assert_eq!(s["peers"], 0, "a validator let the outsider connect: {s}");
    assert_eq!(s["height"], 0, "the outsider got blocks: {s}");
    assert_eq!(s["validator"], Value::Null);
    for i in 0..4 {
        assert_eq!(cluster.status(i).unwrap()["peers"], 3, "validator {i} should see exactly the other three");
    }
}

fn annal_node_config(path: &std::path::Path) -> annal_node::config::Config {
    annal_node::config::Config::load_with_env(path, std::iter::empty()).unwrap()
}

/// Goal (ADR 0008): proposals travel as record ids. Validators that hold the
/// records rebuild each proposal from their pools; a validator whose pool
/// cannot hold them asks the leader for the whole proposal; every node commits
/// the same blocks and every record.
#[test]
fn proposals_travel_as_ids_and_a_node_without_the_records_fetches_them() {
    let mut cluster = Cluster::prepare("compact", 4, SUBMITTERS);
    // Node 3 keeps one pending record at most: the records gossiped to it do not
    // fit, so the others' proposals name records it lacks.
    let mut config = std::fs::read_to_string(&cluster.nodes[3].config).unwrap();
    config.push_str("\n[limits]\nmempool_records_max = 1\n");
    std::fs::write(&cluster.nodes[3].config, config).unwrap();
    for i in 0..4 {
        cluster.start_node(i);
    }
    cluster.wait_heights(&[0, 1, 2, 3], 1, LONG);
    let acks = submit_all(&cluster, 25, "a", &[0, 1, 2]);
    let top = acks.values().map(|(_, h)| *h).max().expect("records");
    assert_agree(&mut cluster, &[0, 1, 2, 3], top);
    assert_all_final(&cluster, 3, &acks);

    let counter = |i: usize, name: &str| -> u64 {
        let metrics = cluster.client(i).get_text("/metrics", 1 << 20).unwrap();
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
        line[name.len() + 1..].parse().unwrap()
    };
    for i in 0..3 {
        assert!(counter(i, "annal_proposals_rebuilt_total") > 0, "node {i} rebuilt no proposal from its pool");
    }
    assert!(counter(3, "annal_proposals_fetched_total") > 0, "node 3 never asked a leader for a whole proposal");
}
