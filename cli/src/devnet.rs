//! `annal node run` and `annal devnet`: one validator process, and a local network of them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use annal_node::config::Config;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// `annal node run --config FILE`.
pub fn run_node(config: &Path) -> Result<()> {
    let config = Config::load(config)?;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .with_context(|| format!("log filter {:?} is not valid", config.log))?;
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(annal_node::run::run(config, annal_node::run::signals()))
}

/// One node of a devnet, as `devnet.json` lists it.
pub struct NodeEntry {
    pub name: String,
    pub api_url: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

/// `annal devnet [--validators N] [--dir DIR]`.
pub fn devnet(validators: usize, dir: &Path) -> Result<()> {
    let genesis = dir.join("genesis.json");
    if genesis.exists() {
        println!("reusing the devnet in {}", dir.display());
    } else {
        println!("{}", crate::genesis_cmd::new("devnet", validators, 2, dir, None)?);
    }
    let count = annal_ledger::genesis::Genesis::load(&genesis)?.validators.len();
    let nodes = write_configs(dir, count)?;
    let mut children: Vec<Child> = Vec::new();
    for n in &nodes {
        children.push(spawn_node(n)?);
    }
    let listing = json!({
        "genesis": genesis,
        "nodes": nodes.iter().zip(&children).map(|(n, c)| json!({
            "name": n.name, "api_url": n.api_url, "pid": c.id(), "config": n.config,
            "data_dir": n.data_dir, "log": n.log,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("devnet.json"), serde_json::to_string_pretty(&listing)? + "\n")?;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc_handler(move || stop.store(true, std::sync::atomic::Ordering::SeqCst))?;
    }
    let ready = wait_until_final(&nodes, &mut children, &stop);
    match ready {
        Ok(()) => print_instructions(dir, &nodes),
        Err(e) => {
            stop_all(&mut children);
            return Err(e);
        }
    }
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        for (n, c) in nodes.iter().zip(children.iter_mut()) {
            if let Some(status) = c.try_wait()? {
                eprintln!("{} exited ({status}); see {}", n.name, n.log.display());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\nstopping the devnet…");
    stop_all(&mut children);
    println!("stopped; start it again with the same command (the chain continues from {})", dir.display());
    Ok(())
}

/// Writes (or rewrites, keeping their ports) `DIR/validator-<i>/node.toml` for
/// validators on 127.0.0.1 that all dial each other.
pub fn write_configs(dir: &Path, count: usize) -> Result<Vec<NodeEntry>> {
    let mut nodes = Vec::with_capacity(count);
    let mut ports = Vec::new();
    let mut p2p = Vec::new();
    for i in 0..count {
        let config = dir.join(format!("validator-{i}")).join("node.toml");
        let (p2p_port, api_port) = if config.exists() {
            let c = Config::load_with_env(&config, std::iter::empty())?;
            let p = c.listen[0].rsplit('/').next().and_then(|p| p.parse().ok()).context("reading the p2p port")?;
            (p, c.api_listen.port())
        } else {
            (free_port(&ports)?, 0)
        };
        ports.push(p2p_port);
        let api_port = if api_port == 0 { free_port(&ports)? } else { api_port };
        ports.push(api_port);
        p2p.push(p2p_port);
        nodes.push((i, config, api_port));
    }
    let mut out = Vec::with_capacity(count);
    for (i, config, api_port) in nodes {
        let peers: Vec<String> = p2p
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("\"/ip4/127.0.0.1/tcp/{p}\""))
            .collect();
        let text = format!(
            "# Written by `annal devnet`; see docs/OPERATIONS.md for every key.\n\
             genesis = \"../genesis.json\"\n\
             data_dir = \"data\"\n\
             consensus_key = \"consensus.key\"\n\
             p2p_key = \"p2p.key\"\n\
             listen = [\"/ip4/127.0.0.1/tcp/{}\"]\n\
             peers = [{}]\n\
             api_listen = \"127.0.0.1:{api_port}\"\n\
             log = \"info\"\n",
            p2p[i],
            peers.join(", ")
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let node_dir = config.parent().expect("a config has a folder").to_path_buf();
        out.push(NodeEntry {
            name: format!("validator-{i}"),
            api_url: format!("http://127.0.0.1:{api_port}"),
            data_dir: node_dir.join("data"),
            log: node_dir.join("node.log"),
            config,
        });
    }
    Ok(out)
}

/// Starts `annal node run` (this very binary) for `node`, appending its output to its log.
pub fn spawn_node(node: &NodeEntry) -> Result<Child> {
    let exe = std::env::current_exe().context("finding the annal binary")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .with_context(|| format!("opening {}", node.log.display()))?;
    Command::new(exe)
        .args(["node", "run", "--config"])
        .arg(&node.config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", node.name))
}

/// A port nothing listens on now (and not already chosen), from below the
/// kernel's ephemeral range where it can be read. A port the kernel hands out
/// for `bind(0)` is in that range, and so is the local port of every outgoing
/// connection: between this choice and the node's own bind, a connection
/// could take it (a test saw "binding the API address …: Address already in
/// use"). Below the range only another explicit bind can.
pub fn free_port(taken: &[u16]) -> Result<u16> {
    static PICKED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    if let Some(below) = ports_below_ephemeral() {
        // Spread over the range by process and time, so concurrent tests and devnets start apart.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos;
        let size = u32::from(below.end - below.start);
        for _ in 0..256 {
            let n = PICKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let port = below.start + (seed.wrapping_add(n.wrapping_mul(7_919)) % size) as u16;
            if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    for _ in 0..64 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    bail!("no free port found on 127.0.0.1")
}

/// The ports from 10,000 up to the first of Linux's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), if at least 1,000 of them.
fn ports_below_ephemeral() -> Option<std::ops::Range<u16>> {
    const LOWEST: u16 = 10_000;
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let first: u16 = text.split_whitespace().next()?.parse().ok()?;
    (first >= LOWEST + 1_000).then_some(LOWEST..first)
}

fn wait_until_final(nodes: &[NodeEntry], children: &mut [Child], stop: &std::sync::atomic::AtomicBool) -> Result<()> {
    let started = Instant::now();
    let target = 2;
    loop {
        let mut heights = Vec::new();
        for (n, c) in nodes.iter().zip(children.iter_mut()) {
            if let Some(status) = c.try_wait()? {
                let tail = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                bail!(
                    "{} exited ({status}) before the network started; the end of {}:\n{}",
                    n.name,
                    n.log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            heights.push(status_height(&n.api_url).unwrap_or(0));
        }
        if heights.iter().all(|&h| h >= target) {
            println!("all {} validators are finalizing blocks (heights {heights:?})", nodes.len());
            return Ok(());
        }
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            bail!("interrupted");
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the validators did not finalize a block within 60 s (heights {heights:?}); see the node.log files");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The node's committed height from `GET /v1/status`.
fn status_height(api_url: &str) -> Option<u64> {
    let v: Value = crate::client::Client::new(api_url).ok()?.get_json("/v1/status", 1 << 20).ok()?;
    v["height"].as_u64()
}

fn print_instructions(dir: &Path, nodes: &[NodeEntry]) {
    let d = dir.display();
    let annal = std::env::current_exe().map_or_else(|_| "annal".to_string(), |p| p.display().to_string());
    println!("\nthe devnet is running ({} validators). API URLs:", nodes.len());
    for n in nodes {
        println!("  {:<13} {}   (log: {})", n.name, n.api_url, n.log.display());
    }
    let url = &nodes[0].api_url;
    println!(
        "\nIn another terminal, submit a record, fetch its proof and verify it offline:\n\n  \
         echo 'Parcel 12-345: owner Jane Doe' > deed.txt\n  \
         {annal} submit --node {url} --signer {d}/agency-0/submitter.key --namespace land-titles --key parcel-12-345 --body-file deed.txt --wait\n  \
         {annal} prove --node {url} <the id printed by submit> --out bundle.json\n  \
         {annal} verify bundle.json --genesis {d}/genesis.json\n\n\
         Status: {annal} status --node {url}\n\
         Nodes, pids, configs: {d}/devnet.json.   Ctrl-C stops every node; the chain stays in {d}."
    );
}

fn stop_all(children: &mut [Child]) {
    for c in children.iter() {
        // SIGTERM: each node stops its loop, closes the store and exits.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for c in children.iter_mut() {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Runs `f` on Ctrl-C (SIGINT) or SIGTERM.
fn ctrlc_handler(f: impl Fn() + Send + 'static) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::spawn(move || {
        runtime.block_on(annal_node::run::signals());
        f();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_come_from_below_the_ephemeral_range() {
        // Goal: chosen ports are free, distinct, not among those taken, and below the range the
        // kernel takes outgoing connections' local ports from, so no connection can take one
        // between the choice and the node's bind. Fails with ports from `bind(0)`.
        let below = ports_below_ephemeral().expect("Linux's ephemeral port range is readable here");
        let mut taken = Vec::new();
        for _ in 0..50 {
            let port = free_port(&taken).unwrap();
            assert!(below.contains(&port), "{port} is not in {below:?}");
            assert!(!taken.contains(&port), "{port} chosen twice");
            TcpListener::bind(("127.0.0.1", port)).unwrap();
            taken.push(port);
        }
    }
}
