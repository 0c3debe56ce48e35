//! Configuration: built-in defaults, then a TOML file (`--config`, else `config/herald.toml`
//! when present), then `HERALD_*` environment variables. `config/herald.toml` documents every
//! option with its default.

use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use herald_delivery::DeliveryConfig;
use herald_server::ServerConfig;
use herald_server::auth::AuthConfig;
use herald_store::{Durability, EngineKind};
use serde::{Deserialize, Serialize};

/// Everything Herald reads at start-up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP server and tenants.
    pub server: ServerConfig,
    /// Durable storage.
    pub storage: StorageConfig,
    /// Notification delivery.
    pub delivery: DeliveryConfig,
    /// Logging.
    pub log: LogConfig,
    /// Authentication: registered clients and API keys.
    pub auth: AuthConfig,
    /// Retention of the event log and the attempt log.
    pub retention: herald_server::retention::RetentionConfig,
    /// Search.
    pub search: SearchConfig,
    /// Run as a node of a NATS JetStream cluster (docs/cluster.md); absent: one machine.
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: this server is one node of a cluster sharing a JetStream log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URL(s), comma-separated (`nats://a:4222,nats://b:4222`).
    pub nats_url: String,
    /// This node's id, unique in the cluster (lease holder, log message ids).
    pub node_id: String,
    /// Copies of the log stream and the lease bucket (3 on a three-server cluster; 1 on one).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long a delivery lease lives without renewal (a dead node's subscriptions move after
    /// this long).
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
}

fn default_replicas() -> usize {
    3
}

fn default_lease_ttl() -> u64 {
    6
}

/// Search settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Keep the search index (maintained by every write; rebuilt at start-up when its definition
    /// changed). Off: every search and conditional write scans the resources of its type (the
    /// benchmark's baseline).
    pub index: bool,
    /// Index only these parameters of these resource types (`[search.parameters]`, e.g.
    /// `Task = ["identifier", "owner"]`); a type not listed keeps every parameter. Fewer
    /// parameters make writes cheaper; a search on one not listed scans its type.
    pub parameters: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            index: true,
            parameters: std::collections::BTreeMap::new(),
        }
    }
}

/// Storage settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory of the store (the write-ahead log and the engine's files).
    pub data_dir: PathBuf,
    /// The storage engine's block cache, in MiB.
    pub cache_capacity_mb: u64,
    /// `lsm` or `sled`; unset: the engine the data directory already holds (`lsm` for a new
    /// one). Naming the other engine than the directory holds is refused at start-up.
    pub engine: Option<EngineKind>,
    /// `group-commit` (default), `flush-per-write`, or `off` (unsafe; benchmarks only).
    pub durability: Durability,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./herald-data"),
            cache_capacity_mb: 256,
            engine: None,
            durability: Durability::GroupCommit,
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `herald_server=debug,info`.
    pub filter: String,
    /// One JSON object per line instead of human-readable text.
    pub json: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
            json: false,
        }
    }
}

/// Short environment variables and the option each one sets.
const SHORT_ENV: &[(&str, &str)] = &[
    ("HERALD_LISTEN", "server.listen"),
    ("HERALD_PUBLIC_BASE_URL", "server.public_base_url"),
    ("HERALD_MAX_BODY_BYTES", "server.max_body_bytes"),
    ("HERALD_DATA_DIR", "storage.data_dir"),
    ("HERALD_DURABILITY", "storage.durability"),
    ("HERALD_STORE_ENGINE", "storage.engine"),
    ("HERALD_SEARCH_INDEX", "search.index"),
    ("HERALD_LOG", "log.filter"),
    ("HERALD_NATS_URL", "cluster.nats_url"),
    ("HERALD_NODE_ID", "cluster.node_id"),
    ("HERALD_LOG_JSON", "log.json"),
    (
        "HERALD_ALLOW_PRIVATE_ENDPOINTS",
        "delivery.allow_private_endpoints",
    ),
    ("HERALD_INSECURE_NO_AUTH", "auth.insecure_no_auth"),
    // Comma-separated: `10.20.0.0/16,receiver.internal:8443`.
    (
        "HERALD_PRIVATE_ENDPOINT_ALLOWLIST",
        "delivery.private_endpoint_allowlist",
    ),
];

/// Loads the configuration.
pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    match file {
        Some(path) => {
            if !path.exists() {
                anyhow::bail!("configuration file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        None => {
            let default = Path::new("config/herald.toml");
            if default.exists() {
                fig = fig.merge(Toml::file(default));
            }
        }
    }
    for (var, key) in SHORT_ENV {
        fig = fig.merge(Env::raw().only(&[*var]).map(move |_| (*key).into()));
    }
    // Any option as HERALD__SECTION__KEY, e.g. HERALD__SERVER__MAX_PAGE_SIZE=200.
    fig = fig.merge(Env::prefixed("HERALD__").split("__"));
    let cfg: Config = fig
        .extract()
        .context("invalid configuration (defaults, config file, HERALD_* environment)")?;
    cfg.auth
        .check_listen(cfg.server.listen)
        .map_err(anyhow::Error::msg)?;
    herald_server::search::indexer::check_scope(&cfg.server.tenants, &cfg.search.scope())
        .map_err(anyhow::Error::msg)?;
    Ok(cfg)
}

impl SearchConfig {
    /// The parameters the search index files (`[search.parameters]`).
    pub fn scope(&self) -> herald_server::search::indexer::IndexScope {
        herald_server::search::indexer::IndexScope::only(self.parameters.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_file_parses_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/herald.toml");
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(&path))
            .extract()
            .expect("config/herald.toml must parse");
        let defaults = Config::default();
        assert_eq!(
            serde_json::to_value(&cfg).expect("json"),
            serde_json::to_value(&defaults).expect("json"),
            "config/herald.toml should document the defaults exactly"
        );
    }
}
