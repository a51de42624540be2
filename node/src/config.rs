//! Node configuration: a TOML file, overridden by `ENGRAM__…` environment variables
//! (`ENGRAM__NODE_ID=2`, `ENGRAM__CLUSTER__SHARED_SHARDS=12`, `ENGRAM__LIMITS__MAX_BATCH=500`).

use std::path::{Path, PathBuf};

use engram_raft::NodeId;
use engram_router::{Limits, Settings};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub peer_addr: String,
    pub zone: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// fsync (group-committed) before a write counts: survives power loss of a quorum.
    #[default]
    Sync,
    /// fsync every `periodic_sync_ms`: survives process crashes, not power loss.
    Periodic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub zone: String,
    pub data_dir: PathBuf,
    /// Public gRPC (clients): listen and advertised address.
    pub client_addr: String,
    /// Peer gRPC (Raft, forwarded shard operations): peer credential only.
    pub peer_addr: String,
    /// HTTP: /metrics, /healthz, /readyz.
    pub http_addr: String,
    /// The cluster's shared peer credential (at least 16 characters).
    pub peer_token: String,
    /// The metadata group's voters (3 or 5 nodes; every node lists the same set). Members
    /// bootstrap the cluster; other nodes join through them.
    pub initial_cluster: Vec<Member>,
    /// Placement settings, used when this node bootstraps the cluster map.
    #[serde(default)]
    pub cluster: Settings,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub durability: DurabilityMode,
    #[serde(default = "default_periodic_sync_ms")]
    pub periodic_sync_ms: u64,
    /// Bounded-consistency reads: the staleness a replica may have.
    #[serde(default = "default_max_staleness_ms")]
    pub max_staleness_ms: u64,
    /// Default request deadline.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_periodic_sync_ms() -> u64 {
    10
}
fn default_max_staleness_ms() -> u64 {
    5_000
}
fn default_request_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// Loads `path` (TOML) with `ENGRAM__` environment overrides, and validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut f = Figment::new();
        if let Some(p) = path {
            if !p.exists() {
                return Err(ConfigError::Invalid(format!(
                    "{} does not exist",
                    p.display()
                )));
            }
            f = f.merge(Toml::file(p));
        }
        let cfg: NodeConfig = f
            .merge(Env::prefixed("ENGRAM__").split("__"))
            .extract()
            .map_err(Box::new)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.node_id == 0 {
            return bad("node_id must be at least 1".into());
        }
        if self.zone.is_empty() {
            return bad("zone must be set (replicas of a shard are spread across zones)".into());
        }
        if self.peer_token.len() < 16 {
            return bad("peer_token must be at least 16 characters".into());
        }
        if self.initial_cluster.is_empty() || self.initial_cluster.len() > 7 {
            return bad(format!(
                "initial_cluster lists {} members; give 1-7 (3 or 5 recommended)",
                self.initial_cluster.len()
            ));
        }
        let mut ids: Vec<NodeId> = self.initial_cluster.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.initial_cluster.len() {
            return bad("initial_cluster lists a node id twice".into());
        }
        if let Some(me) = self.initial_cluster.iter().find(|m| m.id == self.node_id) {
            if me.peer_addr != self.peer_addr {
                return bad(format!(
                    "initial_cluster gives node {} peer address {} but peer_addr is {}",
                    self.node_id, me.peer_addr, self.peer_addr
                ));
            }
        }
        for (name, a) in [
            ("client_addr", &self.client_addr),
            ("peer_addr", &self.peer_addr),
            ("http_addr", &self.http_addr),
        ] {
            if a.parse::<std::net::SocketAddr>().is_err() {
                return bad(format!("{name} {a:?} is not an ip:port address"));
            }
        }
        if self.cluster.replication_factor == 0 || self.cluster.shared_shards == 0 {
            return bad(
                "cluster.replication_factor and cluster.shared_shards must be at least 1".into(),
            );
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeConfig {
        NodeConfig {
            node_id: 1,
            zone: "zone-a".into(),
            data_dir: "/tmp/engram-test".into(),
            client_addr: "127.0.0.1:7101".into(),
            peer_addr: "127.0.0.1:7201".into(),
            http_addr: "127.0.0.1:7301".into(),
            peer_token: "0123456789abcdef0123".into(),
            initial_cluster: vec![Member {
                id: 1,
                peer_addr: "127.0.0.1:7201".into(),
                zone: "zone-a".into(),
            }],
            cluster: Settings::default(),
            limits: Limits::default(),
            durability: DurabilityMode::Sync,
            periodic_sync_ms: 10,
            max_staleness_ms: 5_000,
            request_timeout_ms: 10_000,
        }
    }

    // The only test in this binary that touches ENGRAM__ variables.
    #[test]
    fn file_then_environment_overrides() {
        let dir = std::env::temp_dir().join(format!("engram-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("node.toml");
        std::fs::write(&path, sample().to_toml()).expect("write");
        assert_eq!(NodeConfig::load(Some(&path)).expect("load"), sample());

        std::env::set_var("ENGRAM__CLUSTER__SHARED_SHARDS", "12");
        std::env::set_var("ENGRAM__LIMITS__MAX_BATCH", "50");
        std::env::set_var("ENGRAM__ZONE", "zone-z");
        let cfg = NodeConfig::load(Some(&path)).expect("load with env");
        std::env::remove_var("ENGRAM__CLUSTER__SHARED_SHARDS");
        std::env::remove_var("ENGRAM__LIMITS__MAX_BATCH");
        std::env::remove_var("ENGRAM__ZONE");
        assert_eq!(cfg.cluster.shared_shards, 12);
        assert_eq!(cfg.limits.max_batch, 50);
        assert_eq!(cfg.zone, "zone-z");
        assert_eq!(
            cfg.limits.max_k,
            Limits::default().max_k,
            "unset fields keep defaults"
        );

        let mut bad = sample();
        bad.peer_token = "short".into();
        std::fs::write(&path, bad.to_toml()).expect("write");
        let e = NodeConfig::load(Some(&path)).expect_err("short token");
        assert!(e.to_string().contains("peer_token"), "{e}");
        let e = NodeConfig::load(Some(&dir.join("missing.toml"))).expect_err("missing");
        assert!(e.to_string().contains("does not exist"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
