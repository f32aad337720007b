//! A cluster of real `annal node run` processes on 127.0.0.1 for the tests in
//! `tests/tests/`: started from a fresh genesis, driven through the HTTP API,
//! killed with SIGKILL and restarted.
//!
//! The processes run the `annal` binary built beside the test binary (cargo
//! builds it with the workspace; `ANNAL_BIN` overrides the path). A test's
//! folder is removed when it passes and kept, with the nodes' logs, when it
//! fails.

use std::os::unix::process::CommandExt;
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
    /// The network namespace the node runs in, if any.
    pub netns: Option<String>,
    child: Option<Child>,
}

impl Node {
    /// A node the test configured itself (not one of the genesis validators' set-up).
    pub fn new(name: &str, api_url: &str, config: PathBuf, log: PathBuf) -> Node {
        Node { name: name.into(), api_url: api_url.into(), config, log, netns: None, child: None }
    }
}

pub struct Cluster {
    pub dir: PathBuf,
    pub genesis_path: PathBuf,
    pub genesis: Genesis,
    pub nodes: Vec<Node>,
    /// tmpfs mounts under the cluster's folder (unmounted on drop).
    mounts: Vec<PathBuf>,
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
        let mut cluster = Cluster::prepare(name, validators, agencies);
        for i in 0..validators {
            cluster.start_node(i);
        }
        cluster
    }

    /// As `start`, without starting the nodes (a test may edit their configs first).
    pub fn prepare(name: &str, validators: usize, agencies: usize) -> Cluster {
        let dir = scratch(name);
        annal_cli::genesis_cmd::new("test-chain", validators, agencies, &dir, None).expect("genesis");
        let entries = annal_cli::devnet::write_configs(&dir, validators).expect("configs");
        let genesis_path = dir.join("genesis.json");
        let genesis = Genesis::load(&genesis_path).expect("genesis loads");
        let nodes = entries.into_iter().map(|e| Node::new(&e.name, &e.api_url, e.config, e.log)).collect();
        Cluster { dir, genesis_path, genesis, nodes, mounts: Vec::new() }
    }

    /// Starts node `i` (again) with its config.
    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} is already running", node.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("log file");
        let mut command = match &node.netns {
            // `ip netns exec` enters the namespace and execs the node: the child is the node itself.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(annal_bin());
                c
            }
            None => Command::new(annal_bin()),
        };
        // Started with the common soft limit of 1,024 open files, as a login
        // shell gives (the node raises it to the hard limit itself).
        // SAFETY: the closure only calls getrlimit/setrlimit, which are async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_max > 1024 {
                    limit.rlim_cur = 1024;
                    libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                }
                Ok(())
            });
        }
        let child = command
            .args(["node", "run", "--config"])
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("starting annal node run");
        node.child = Some(child);
    }

    /// The process id of node `i`, while this harness runs it.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
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
        for m in &self.mounts {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        if std::thread::panicking() || std::env::var_os("ANNAL_KEEP_TEST_DIRS").is_some() {
            eprintln!("kept the cluster's folder and logs: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Validators each in their own Linux network namespace, joined by veth
/// pairs to one bridge, so a test can cut any node's link. Needs root; `None`
/// (with the reason) where namespaces cannot be made.
pub struct Namespaces {
    prefix: String,
    bridge: String,
    /// `10.a.b.` — node `i` is `10.a.b.(i+1)`, the bridge `.254`.
    subnet: String,
    count: usize,
}

impl Namespaces {
    pub fn create(count: usize) -> Result<Namespaces, String> {
        let pid = std::process::id();
        let prefix = format!("an{}", pid % 100_000);
        let subnet = format!("10.{}.{}.", 200 + (pid % 50), (pid / 50) % 250);
        let ns = Namespaces { bridge: format!("{prefix}br"), prefix, subnet, count };
        ns.ip(&["link", "add", &ns.bridge, "type", "bridge"])?;
        ns.ip(&["addr", "add", &format!("{}254/24", ns.subnet), "dev", &ns.bridge])?;
        ns.ip(&["link", "set", &ns.bridge, "up"])?;
        for i in 0..count {
            let (name, outside, inside) = (ns.name(i), ns.veth(i), format!("{}v{i}i", ns.prefix));
            ns.ip(&["netns", "add", &name])?;
            ns.ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside])?;
            ns.ip(&["link", "set", &inside, "netns", &name])?;
            ns.ip(&["link", "set", &outside, "master", &ns.bridge])?;
            ns.ip(&["link", "set", &outside, "up"])?;
            ns.ip(&["netns", "exec", &name, "ip", "addr", "add", &format!("{}/24", ns.addr(i)), "dev", &inside])?;
            ns.ip(&["netns", "exec", &name, "ip", "link", "set", &inside, "up"])?;
            ns.ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip").args(args).output().map_err(|e| format!("running ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    pub fn name(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    fn veth(&self, i: usize) -> String {
        format!("{}v{i}o", self.prefix)
    }

    pub fn addr(&self, i: usize) -> String {
        format!("{}{}", self.subnet, i + 1)
    }

    /// Cuts (or restores) node `i`'s only link: it can reach no one and no one it.
    pub fn set_link(&self, i: usize, up: bool) {
        self.ip(&["link", "set", &self.veth(i), if up { "up" } else { "down" }]).expect("setting a link");
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for i in 0..self.count {
            let _ = self.ip(&["netns", "del", &self.name(i)]);
            let _ = self.ip(&["link", "del", &self.veth(i)]);
        }
        let _ = self.ip(&["link", "del", &self.bridge]);
    }
}

/// Size of each validator's data filesystem in `Cluster::start_in`.
pub const DATA_FS_BYTES: u64 = 256 << 20;

impl Cluster {
    /// Fills node `i`'s data filesystem (it must be one of `start_in`'s) by
    /// growing a ballast file until the disk is full; returns the ballast's path.
    pub fn fill_disk(&self, i: usize) -> PathBuf {
        use std::io::Write;
        let ballast = self.dir.join(format!("validator-{i}")).join("data").join("ballast");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&ballast).expect("opening the ballast");
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        ballast
    }

    /// Waits for node `i` to exit on its own; returns its exit status.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(Ok(Some(status))) = self.nodes[i].child.as_mut().map(|c| c.try_wait()) {
                self.nodes[i].child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// As `start`, with each validator in its own network namespace (`ns`).
    pub fn start_in(name: &str, validators: usize, agencies: usize, ns: &Namespaces) -> Cluster {
        let dir = scratch(name);
        annal_cli::genesis_cmd::new("test-chain", validators, agencies, &dir, None).expect("genesis");
        let genesis_path = dir.join("genesis.json");
        let genesis = Genesis::load(&genesis_path).expect("genesis loads");
        let mut nodes = Vec::new();
        for i in 0..validators {
            let node_dir = dir.join(format!("validator-{i}"));
            let peers: Vec<String> =
                (0..validators).filter(|&j| j != i).map(|j| format!("\"/ip4/{}/tcp/7100\"", ns.addr(j))).collect();
            let config = node_dir.join("node.toml");
            std::fs::write(
                &config,
                format!(
                    "genesis = \"../genesis.json\"\ndata_dir = \"data\"\nconsensus_key = \"consensus.key\"\n\
                     p2p_key = \"p2p.key\"\nlisten = [\"/ip4/{a}/tcp/7100\"]\npeers = [{}]\n\
                     api_listen = \"{a}:8100\"\n",
                    peers.join(", "),
                    a = ns.addr(i)
                ),
            )
            .expect("writing a config");
            let mut node = Node::new(
                &format!("validator-{i}"),
                &format!("http://{}:8100", ns.addr(i)),
                config,
                node_dir.join("node.log"),
            );
            node.netns = Some(ns.name(i));
            nodes.push(node);
        }
        // Each data folder is its own small filesystem, so a test can fill one up.
        let mut mounts = Vec::new();
        for i in 0..validators {
            let data = dir.join(format!("validator-{i}")).join("data");
            std::fs::create_dir_all(&data).expect("data folder");
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={DATA_FS_BYTES}")])
                .arg("tmpfs")
                .arg(&data)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "mounting a tmpfs on {}", data.display());
            mounts.push(data);
        }
        let mut cluster = Cluster { dir, genesis_path, genesis, nodes, mounts };
        for i in 0..validators {
            cluster.start_node(i);
        }
        cluster
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) node `i`.
    pub fn pause(&mut self, i: usize, paused: bool) {
        if let Some(c) = &self.nodes[i].child {
            unsafe {
                libc::kill(c.id() as libc::pid_t, if paused { libc::SIGSTOP } else { libc::SIGCONT });
            }
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Nodes that exited without being killed by the test: (name, exit status).
    pub fn exited(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for n in &mut self.nodes {
            if let Some(Ok(Some(status))) = n.child.as_mut().map(|c| c.try_wait()) {
                out.push((n.name.clone(), status.to_string()));
            }
        }
        out
    }
}
