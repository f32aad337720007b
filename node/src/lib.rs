//! The validator process: libp2p gossip, mempool, block sync, consensus execution, HTTP API and metrics.
//!
//! [`net`] carries gossip and sync over libp2p; [`shared`] holds what the
//! loop and the HTTP API share (store, mempool, status) and admits records;
//! [`mempool`] bounds what is pending; [`api`] serves docs/API.md over HTTP
//! from [`shared`]; [`config`] reads the node's TOML.

pub mod api;
pub mod app;
pub mod byzantine;
pub mod config;
pub mod gather;
pub mod history;
pub mod mempool;
pub mod net;
pub mod run;
pub mod safety_file;
pub mod shared;
pub mod wire;

/// A fresh folder for one unit test: `annal-<name>-<pid>` under the system's temp dir.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("annal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
