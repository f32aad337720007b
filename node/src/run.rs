//! `annal node run`: opens everything a validator needs and runs it until Ctrl-C or SIGTERM.

use std::sync::Arc;

use annal_ledger::genesis::Genesis;
use annal_ledger::keys::SecretKey;
use annal_ledger::store::{Store, StoreOptions};
use anyhow::{bail, Context, Result};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::app::{run_loop, App};
use crate::config::Config;
use crate::net::{self, Allowlist, NetConfig, Network};
use crate::shared::Shared;

/// Runs a node until `shutdown` resolves; returns an error naming what failed.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<()> {
    for name in &config.ignored_env {
        warn!(variable = %name, "environment variable starts with ANNAL_ but names no config key; ignored");
    }
    let genesis = Genesis::load(&config.genesis)?;
    let consensus_key = SecretKey::read_file(&config.consensus_key)?;
    let p2p_key = SecretKey::read_file(&config.p2p_key)?;
    let validator = genesis.validators.iter().position(|v| v.consensus_key == consensus_key.public());
    if let Some(i) = validator {
        let v = &genesis.validators[i];
        if v.p2p_key != p2p_key.public() {
            bail!(
                "{}: the consensus key is validator {i} ({})'s, but the p2p key {} is not its p2p_key {} in the genesis",
                config.p2p_key.display(),
                v.name,
                p2p_key.public(),
                v.p2p_key
            );
        }
        info!(validator = i, name = %v.name, "starting as a validator");
    } else {
        warn!(
            key = %consensus_key.public(),
            "the consensus key is not in the genesis validator set: this node follows the chain and votes once \
             governance adds its key (validators refuse its connections until then)"
        );
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let options = StoreOptions { cache_bytes: config.limits.store_cache_bytes, ..StoreOptions::default() };
    let store = Store::open(&config.store_dir(), genesis.hash(), options)?;
    info!(height = store.tip().height.0, log_size = store.tip().log_size, "store opened");
    if let Some(built) = store.levels_built() {
        // Open scans every state leaf (0.15–0.2 s per 200,000 keys): the part of a restart that grows with the state.
        info!(
            keys = built.leaf_count,
            depth = built.depth,
            took_ms = built.took.as_millis() as u64,
            memory_bytes = store.state_levels().memory_bytes(),
            "state tree levels built from the stored leaves"
        );
    }

    // The peers admitted are the validators in force: genesis's, or the set governance made.
    let allowlist = match store.governance()? {
        Some(gov) => Allowlist::new(gov.validators.validators.iter().map(|v| &v.p2p_key))?,
        None => Allowlist::from_genesis(&genesis, &[])?,
    };
    let mut net_config = NetConfig::new(genesis.chain_id.clone(), p2p_key, allowlist);
    net_config.listen = config.listen_addrs();
    net_config.peers = config.peer_addrs();
    let params = &genesis.params;
    let message_max = params.block_bytes_max + 8 * params.block_records_max + (256 << 10);
    net_config.limits.gossip_bytes_max = message_max.max(crate::app::record_batch_bytes_max(params));
    net_config.limits.response_bytes_max = (2 * message_max).max(64 << 20);
    let response_max = net_config.limits.response_bytes_max;
    let honest_request_max = net_config.limits.request_bytes_max;
    if !config.testing.byzantine.is_empty() {
        warn!(behaviours = ?config.testing.byzantine, "TEST-ONLY BYZANTINE MODE: this node attacks the other validators");
        // Its own frame limit is raised so oversized frames leave; receivers must refuse them.
        net_config.limits.request_bytes_max = honest_request_max * 5;
    }
    let (handle, events) = Network::start(net_config).await?;
    for a in handle.listen_addrs().await? {
        info!(addr = %a, peer_id = %handle.local_peer_id(), "p2p listening");
    }

    // In API requests (each at most `api_batch_records_max` records, all of them in the pool too).
    let (gossip_tx, gossip_rx) = mpsc::channel(4_096);
    let shared = Arc::new(Shared::new(genesis, config.limits.clone(), validator.map(|i| i as u32), store, gossip_tx));
    let byzantine = match (validator, config.testing.byzantine.is_empty()) {
        (Some(i), false) => Some(crate::byzantine::Byzantine::new(
            config.testing.byzantine.clone(),
            consensus_key.seed(),
            i as u32,
            annal_consensus::ChainId(shared.genesis_hash),
            honest_request_max,
        )),
        _ => None,
    };
    let mut app = App::new(shared.clone(), config.data_dir.clone(), Some(consensus_key))?;
    app.byzantine = byzantine;

    let listener = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("binding the API address {}", config.api_listen))?;
    info!(addr = %listener.local_addr()?, "API listening");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut api_stop = stop_rx.clone();
    let api = tokio::spawn(crate::api::serve(listener, shared.clone(), async move {
        let _ = api_stop.changed().await;
    }));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let result = run_loop(app, handle.clone(), events, gossip_rx, response_max, stop_rx).await;
    shared.status.lock().expect("status lock").healthy = false;
    let _ = handle.shutdown().await;
    // In-flight `wait=final` requests may wait long; stopping does not.
    if tokio::time::timeout(std::time::Duration::from_secs(2), api).await.is_err() {
        info!("API requests still open at shutdown were cut");
    }
    // The loop's error first: a flush on a full disk fails too, and must not hide why the node stopped.
    if let Err(e) = &result {
        tracing::error!("the node stopped on an error: {e:#}");
    }
    // Nothing is lost if the flush fails: every commit was written to the WAL, synced.
    if let Err(e) = shared.store().flush() {
        tracing::error!("flushing the store at shutdown failed (its WAL keeps every commit): {e}");
        result?;
        return Err(e.into());
    }
    info!("stopped");
    result
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub use net::peer_id;
