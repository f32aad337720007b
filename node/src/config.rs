//! The node's configuration file (TOML), documented key by key in docs/OPERATIONS.md.
//!
//! Relative paths are resolved against the folder of the configuration file,
//! so a node folder can be moved whole. Any key can be overridden from the
//! environment as `ANNAL_<KEY>` (sections joined with `_`, upper case), for
//! example `ANNAL_API_LISTEN=0.0.0.0:8080` or `ANNAL_LIMITS_MEMPOOL_RECORDS_MAX=50000`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::net::Multiaddr;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The chain's genesis file.
    pub genesis: PathBuf,
    /// Where the node keeps its RocksDB store, consensus safety state and voted blocks.
    pub data_dir: PathBuf,
    /// The validator's consensus key file (signs votes and checkpoints). Must be mode 0600.
    pub consensus_key: PathBuf,
    /// The node's libp2p identity key file. Must be mode 0600.
    pub p2p_key: PathBuf,
    /// libp2p listen addresses, e.g. `/ip4/0.0.0.0/tcp/7100`.
    pub listen: Vec<String>,
    /// Peers to dial and keep dialling, e.g. `/ip4/10.0.0.2/tcp/7100`.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Address of the HTTP API, e.g. `127.0.0.1:8100`.
    pub api_listen: SocketAddr,
    /// Log filter in `tracing` syntax: `info`, `annal_node=debug,info`, ...
    #[serde(default = "default_log")]
    pub log: String,
    #[serde(default)]
    pub limits: Limits,
    /// Test-only settings; see docs/SECURITY.md. Never set in production.
    #[serde(default)]
    pub testing: Testing,
    /// `ANNAL_*` environment variables that name no config key (the node warns about each).
    #[serde(skip)]
    pub ignored_env: Vec<String>,
}

/// The keys an `ANNAL_*` variable may override: top level, and `limits.*` as `LIMITS_*`.
const TOP_KEYS: [&str; 8] = ["genesis", "data_dir", "consensus_key", "p2p_key", "listen", "peers", "api_listen", "log"];
const LIMIT_KEYS: [&str; 13] = [
    "mempool_records_max",
    "mempool_bytes_max",
    "api_body_bytes_max",
    "api_body_bytes_in_flight_max",
    "api_answer_bytes_in_flight_max",
    "api_connections_max",
    "api_header_timeout_ms",
    "api_body_bytes_per_s_min",
    "api_requests_per_s",
    "api_request_timeout_ms",
    "api_batch_records_max",
    "refusals_retained",
    "store_cache_bytes",
];

/// The shortest `limits.api_request_timeout_ms` a node takes: a `wait=final`
/// ends 50 ms before the bound to answer for itself, and needs some time to wait.
pub const API_REQUEST_TIMEOUT_MS_MIN: u64 = 100;

/// The most `limits.api_connections_max` may be (each connection holds a file handle).
pub const API_CONNECTIONS_MAX: usize = 65_536;

/// Bounds on what the node holds and accepts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Pending records held; past it submissions get 503 with Retry-After.
    pub mempool_records_max: usize,
    /// Pending record bytes held.
    pub mempool_bytes_max: usize,
    /// Largest HTTP request body.
    pub api_body_bytes_max: usize,
    /// Request bodies served at once, summed (declared sizes; a chunked body
    /// counts as `api_body_bytes_max`); past it requests get 503 `busy`.
    pub api_body_bytes_in_flight_max: usize,
    /// Large answers (64 KiB or more) not yet taken by their clients, summed;
    /// past it such requests get 503 `busy`.
    pub api_answer_bytes_in_flight_max: usize,
    /// API connections served at once; more wait in the kernel's accept queue.
    pub api_connections_max: usize,
    /// How long a connection may take to send a request's head (kept alive: to
    /// begin the next one) before it is closed.
    pub api_header_timeout_ms: u64,
    /// The slowest a request body may come: after 5 s from the end of its head
    /// (or `api_header_timeout_ms` if less), it must have arrived at this
    /// average rate (bytes per second); slower gets 408 `too_slow`.
    pub api_body_bytes_per_s_min: u64,
    /// Requests per second one client (an IPv4 address or an IPv6 /64) may make (0: no limit).
    pub api_requests_per_s: u32,
    /// Longest time an API request may take (a `wait=final` may ask for less).
    pub api_request_timeout_ms: u64,
    /// Records in one `POST /v1/records/batch`.
    pub api_batch_records_max: usize,
    /// Records refused at execution remembered for `GET /v1/records/{id}`.
    pub refusals_retained: usize,
    /// RocksDB's block cache: recently read state leaves, log nodes and index
    /// entries (docs/BENCHMARKS.md has what a node holds besides).
    pub store_cache_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Five full blocks: enough for every validator to rebuild proposals from its pool,
            // small enough that overload turns into 503s, not a minute of queueing
            // (docs/BENCHMARKS.md, session 8).
            mempool_records_max: 20_000,
            mempool_bytes_max: 256 << 20,
            api_body_bytes_max: 16 << 20,
            // Four full bodies: each is held several times over while it is decoded and admitted.
            api_body_bytes_in_flight_max: 64 << 20,
            // Room for several full blocks' answers (8 MiB of records is ~11 MB of JSON).
            api_answer_bytes_in_flight_max: 64 << 20,
            // Well under the file handles a node raises its limit to (the store and
            // the network take theirs from the same), well over what clients need.
            api_connections_max: 1024,
            api_header_timeout_ms: 30_000,
            // 512 kbit/s: a largest body (16 MiB) at this rate would outlast the request bound
            // anyway; this bounds how long a small or unsent body holds its place.
            api_body_bytes_per_s_min: 64 << 10,
            api_requests_per_s: 0,
            api_request_timeout_ms: 130_000,
            api_batch_records_max: 10_000,
            refusals_retained: 100_000,
            store_cache_bytes: 128 << 20,
        }
    }
}

/// Settings only tests use.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Testing {
    /// Makes this validator attack the others (`crate::byzantine::BEHAVIOURS`).
    #[serde(default)]
    pub byzantine: Vec<String>,
}

fn default_log() -> String {
    "info".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("config {path}: {key}: {detail}")]
    Value { path: String, key: String, detail: String },
}

impl Config {
    /// Reads `path`, applies `ANNAL_*` environment overrides, resolves relative paths and checks the values.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As `load`, with the environment given (tests).
    pub fn load_with_env(path: &Path, env: impl Iterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let read = |detail: String| ConfigError::Read { path: shown.clone(), detail };
        let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        if text.len() > 1 << 20 {
            return Err(read("is larger than 1 MiB".into()));
        }
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| read(e.to_string()))?;
        let mut ignored_env = Vec::new();
        for (name, value) in env {
            if let Some(key) = name.strip_prefix("ANNAL_") {
                let applied = apply_override(&mut table, key, &value).map_err(|detail| ConfigError::Value {
                    path: shown.clone(),
                    key: name.clone(),
                    detail,
                })?;
                if !applied {
                    ignored_env.push(name);
                }
            }
        }
        let mut config: Config =
            toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| read(e.to_string()))?;
        config.ignored_env = ignored_env;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut config.genesis, &mut config.data_dir, &mut config.consensus_key, &mut config.p2p_key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config.check().map_err(|(key, detail)| ConfigError::Value { path: shown, key: key.into(), detail })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(b) = self.testing.byzantine.iter().find(|b| !crate::byzantine::BEHAVIOURS.contains(&b.as_str())) {
            return Err(("testing.byzantine", format!("{b:?} is not one of {:?}", crate::byzantine::BEHAVIOURS)));
        }
        if self.listen.is_empty() {
            return Err(("listen", "needs at least one address, e.g. \"/ip4/0.0.0.0/tcp/7100\"".into()));
        }
        for (key, list) in [("listen", &self.listen), ("peers", &self.peers)] {
            for a in list {
                a.parse::<Multiaddr>().map_err(|e| (key, format!("{a:?} is not a multiaddr: {e}")))?;
            }
        }
        let l = &self.limits;
        let positive: [(&'static str, u64); 11] = [
            ("limits.mempool_records_max", l.mempool_records_max as u64),
            ("limits.mempool_bytes_max", l.mempool_bytes_max as u64),
            ("limits.api_body_bytes_max", l.api_body_bytes_max as u64),
            ("limits.api_body_bytes_in_flight_max", l.api_body_bytes_in_flight_max as u64),
            ("limits.api_answer_bytes_in_flight_max", l.api_answer_bytes_in_flight_max as u64),
            ("limits.api_connections_max", l.api_connections_max as u64),
            ("limits.api_header_timeout_ms", l.api_header_timeout_ms),
            ("limits.api_body_bytes_per_s_min", l.api_body_bytes_per_s_min),
            ("limits.api_request_timeout_ms", l.api_request_timeout_ms),
            ("limits.api_batch_records_max", l.api_batch_records_max as u64),
            ("limits.store_cache_bytes", l.store_cache_bytes as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err((key, "must be positive".into()));
        }
        if l.api_request_timeout_ms < API_REQUEST_TIMEOUT_MS_MIN {
            return Err((
                "limits.api_request_timeout_ms",
                format!(
                    "{} ms is below {API_REQUEST_TIMEOUT_MS_MIN} ms: a wait=final, which must end before it, \
                     would have no time to wait",
                    l.api_request_timeout_ms
                ),
            ));
        }
        if l.api_connections_max > API_CONNECTIONS_MAX {
            return Err((
                "limits.api_connections_max",
                format!("{} is over {API_CONNECTIONS_MAX}", l.api_connections_max),
            ));
        }
        if l.api_body_bytes_in_flight_max < l.api_body_bytes_max {
            return Err((
                "limits.api_body_bytes_in_flight_max",
                format!(
                    "must be at least limits.api_body_bytes_max ({}), or a largest body never fits",
                    l.api_body_bytes_max
                ),
            ));
        }
        Ok(())
    }

    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen.iter().map(|a| a.parse().expect("checked at load")).collect()
    }

    pub fn peer_addrs(&self) -> Vec<Multiaddr> {
        self.peers.iter().map(|a| a.parse().expect("checked at load")).collect()
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
}

/// Sets `KEY` (from `ANNAL_KEY`) in the table: the first `_`-separated word
/// that names a section (`limits`) selects it; the value keeps the type of the
/// key it replaces (string, integer or list of strings, comma-separated).
/// Returns false, changing nothing, when `KEY` names no config key.
fn apply_override(table: &mut toml::Table, key: &str, value: &str) -> Result<bool, String> {
    let key = key.to_ascii_lowercase();
    let (section, name) = match key.split_once('_') {
        Some((s, rest)) if s == "limits" => (Some(s), rest.to_string()),
        _ => (None, key.clone()),
    };
    let known = match section {
        Some(_) => LIMIT_KEYS.contains(&name.as_str()),
        None => TOP_KEYS.contains(&name.as_str()),
    };
    if !known {
        return Ok(false);
    }
    let target = match section {
        Some(s) => table
            .entry(s)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("[{s}] is not a table"))?,
        None => table,
    };
    let parsed = match name.as_str() {
        "listen" | "peers" => toml::Value::Array(
            value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.into())).collect(),
        ),
        _ if section.is_some() => {
            toml::Value::Integer(value.parse::<i64>().map_err(|e| format!("{value:?} is not an integer: {e}"))?)
        }
        _ => toml::Value::String(value.into()),
    };
    target.insert(name, parsed);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("node.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const MINIMAL: &str = r#"
genesis = "genesis.json"
data_dir = "data"
consensus_key = "consensus.key"
p2p_key = "p2p.key"
listen = ["/ip4/127.0.0.1/tcp/7100"]
api_listen = "127.0.0.1:8100"
"#;

    /// Goal: relative paths resolve against the config's folder, and limits default.
    #[test]
    fn minimal_config_resolves_paths() {
        let d = crate::test_dir("config-minimal");
        let c = Config::load_with_env(&write(&d, MINIMAL), std::iter::empty()).unwrap();
        assert_eq!(c.data_dir, d.join("data"));
        assert_eq!(c.genesis, d.join("genesis.json"));
        assert_eq!(c.limits.mempool_records_max, Limits::default().mempool_records_max);
        assert_eq!(c.log, "info");
    }

    /// Goal: environment overrides replace top-level and section keys with the right types.
    #[test]
    fn environment_overrides() {
        let d = crate::test_dir("config-env");
        let env = [
            ("ANNAL_API_LISTEN", "127.0.0.1:9999"),
            ("ANNAL_LIMITS_MEMPOOL_RECORDS_MAX", "7"),
            ("ANNAL_LIMITS_STORE_CACHE_BYTES", "1048576"),
            ("ANNAL_PEERS", "/ip4/127.0.0.1/tcp/1, /ip4/127.0.0.1/tcp/2"),
            ("OTHER", "x"),
            ("ANNAL_BIN", "/usr/bin/annal"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c = Config::load_with_env(&write(&d, MINIMAL), env.into_iter()).unwrap();
        assert_eq!(c.api_listen.port(), 9999);
        assert_eq!(c.limits.mempool_records_max, 7);
        assert_eq!(c.limits.store_cache_bytes, 1 << 20);
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.ignored_env, vec!["ANNAL_BIN".to_string()], "a variable naming no key is set aside, not fatal");
    }

    /// Goal: unknown keys, bad addresses and zero limits are refused with the key named.
    #[test]
    fn bad_configs_name_the_key() {
        let d = crate::test_dir("config-bad");
        let err = Config::load_with_env(&write(&d, &format!("{MINIMAL}\nmystery = 1\n")), std::iter::empty());
        assert!(err.unwrap_err().to_string().contains("mystery"));
        let err = Config::load_with_env(
            &write(&d, &MINIMAL.replace("/ip4/127.0.0.1/tcp/7100", "nonsense")),
            std::iter::empty(),
        );
        assert!(err.unwrap_err().to_string().contains("listen"));
        let env = [("ANNAL_LIMITS_MEMPOOL_BYTES_MAX".to_string(), "0".to_string())];
        let err = Config::load_with_env(&write(&d, MINIMAL), env.into_iter()).unwrap_err().to_string();
        assert!(err.contains("limits.mempool_bytes_max"), "{err}");
        let env = [("ANNAL_LIMITS_API_REQUEST_TIMEOUT_MS".to_string(), "99".to_string())];
        let err = Config::load_with_env(&write(&d, MINIMAL), env.into_iter()).unwrap_err().to_string();
        assert!(err.contains("limits.api_request_timeout_ms") && err.contains("below 100 ms"), "{err}");
        let env = [("ANNAL_LIMITS_API_REQUEST_TIMEOUT_MS".to_string(), "100".to_string())];
        Config::load_with_env(&write(&d, MINIMAL), env.into_iter()).expect("100 ms is allowed");
        let env = [("ANNAL_LIMITS_MEMPOOL_BYTES_MAX".to_string(), "lots".to_string())];
        let err = Config::load_with_env(&write(&d, MINIMAL), env.into_iter()).unwrap_err().to_string();
        assert!(err.contains("ANNAL_LIMITS_MEMPOOL_BYTES_MAX") && err.contains("not an integer"), "{err}");
    }
}
