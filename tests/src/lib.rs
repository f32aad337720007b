//! A cluster of real `annal node run` processes on 127.0.0.1 for the tests in
//! `tests/tests/`: started from a fresh genesis, driven through the HTTP API,
//! killed with SIGKILL and restarted.
//!
//! The processes run the `annal` binary built beside the test binary (cargo
//! builds it with the workspace; `ANNAL_BIN` overrides the path). A test's
//! folder is removed when it passes and kept, with the nodes' logs, when it
//! fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use annal_cli::client::{Client, ClientError};
use annal_ledger::genesis::Genesis;
use annal_ledger::keys::SecretKey;
use annal_ledger::record::{Body, Op, Record};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

pub struct Node {
    pub name: String,
    pub api_url: String,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// A node the test configured itself (not one of the genesis validators' set-up).
    pub fn new(name: &str, api_url: &str, config: PathBuf, log: PathBuf) -> Node {
        Node { name: name.into(), api_url: api_url.into(), config, log, child: None }
    }
}

pub struct Cluster {
    pub dir: PathBuf,
    pub genesis_path: PathBuf,
    pub genesis: Genesis,
    pub nodes: Vec<Node>,
}

/// The `annal` binary: `ANNAL_BIN`, or `target/<profile>/annal` beside this test binary's `deps/`.
pub fn annal_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ANNAL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test binary has a path");
    let bin = exe.parent().and_then(Path::parent).expect("target/<profile>/deps").join("annal");
    assert!(bin.exists(), "{} is missing: build it first (cargo build -p annal-cli)", bin.display());
    bin
}

/// A fresh folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("annal-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the test folder");
    dir
}

impl Cluster {
    /// Writes a genesis with `validators` validators and `agencies` agencies and starts every validator.
    pub fn start(name: &str, validators: usize, agencies: usize) -> Cluster {
        let dir = scratch(name);
        annal_cli::genesis_cmd::new("test-chain", validators, agencies, &dir, None).expect("genesis");
        let entries = annal_cli::devnet::write_configs(&dir, validators).expect("configs");
        let genesis_path = dir.join("genesis.json");
        let genesis = Genesis::load(&genesis_path).expect("genesis loads");
        let nodes = entries
            .into_iter()
            .map(|e| Node { name: e.name, api_url: e.api_url, config: e.config, log: e.log, child: None })
            .collect();
        let mut cluster = Cluster { dir, genesis_path, genesis, nodes };
        for i in 0..validators {
            cluster.start_node(i);
        }
        cluster
    }

    /// Starts node `i` (again) with its config.
    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} is already running", node.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("log file");
        let child = Command::new(annal_bin())
            .args(["node", "run", "--config"])
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("starting annal node run");
        node.child = Some(child);
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn client(&self, i: usize) -> Client {
        Client::new(&self.nodes[i].api_url).expect("a valid URL")
    }

    /// `GET /v1/status` of node `i`, or None while it does not answer.
    pub fn status(&self, i: usize) -> Option<Value> {
        self.client(i).get_json("/v1/status", 1 << 20).ok()
    }

    pub fn height(&self, i: usize) -> u64 {
        self.status(i).and_then(|s| s["height"].as_u64()).unwrap_or(0)
    }

    /// Fails the test, naming `what`, unless `ready` becomes true within `timeout`.
    /// Also fails as soon as a node that should run has exited.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut(&Cluster) -> bool) {
        let started = Instant::now();
        loop {
            if ready(self) {
                return;
            }
            for n in &mut self.nodes {
                if let Some(Ok(Some(status))) = n.child.as_mut().map(|c| c.try_wait()) {
                    panic!("{} exited ({status}) while waiting for {what}; see {}", n.name, n.log.display());
                }
            }
            assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every listed node is at height `h` or above.
    pub fn wait_heights(&mut self, nodes: &[usize], h: u64, timeout: Duration) {
        let nodes = nodes.to_vec();
        self.wait_for(&format!("nodes {nodes:?} to reach height {h}"), timeout, |c| {
            nodes.iter().all(|&i| c.height(i) >= h)
        });
    }

    /// The submitter key of agency `j` and the namespace granted to it.
    pub fn agency(&self, j: usize) -> (SecretKey, String) {
        let key =
            SecretKey::read_file(&self.dir.join(format!("agency-{j}")).join("submitter.key")).expect("agency key");
        (key, self.genesis.agencies[j].namespaces[0].clone())
    }

    /// A signed publish record's canonical bytes.
    pub fn publish(&self, key: &SecretKey, namespace: &str, record_key: &str, nonce: u64, body: &[u8]) -> Vec<u8> {
        Record {
            chain_id: self.genesis.chain_id.clone(),
            namespace: namespace.into(),
            key: record_key.into(),
            op: Op::Publish,
            body: Body::Inline(body.to_vec()),
            metadata: Default::default(),
            supersedes: None,
            version: 1,
            submitter: key.public(),
            nonce,
        }
        .sign(key)
        .to_bytes()
    }

    /// `POST /v1/records[?wait=final]` to node `i`.
    pub fn submit(&self, i: usize, record: &[u8], wait: bool) -> Result<Value, ClientError> {
        let path = if wait { "/v1/records?wait=final" } else { "/v1/records" };
        self.client(i).post_json(path, &json!({ "record": B64.encode(record) }), Duration::from_secs(60), 1 << 20)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
        if std::thread::panicking() || std::env::var_os("ANNAL_KEEP_TEST_DIRS").is_some() {
            eprintln!("kept the cluster's folder and logs: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
