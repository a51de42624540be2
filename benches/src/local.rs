//! A local cluster of real `engram node` processes for a benchmark, in a temporary directory
//! (removed when dropped), on a free range of loopback ports.

use std::path::PathBuf;
use std::time::Duration;

use engram_node::launch::{ClusterSpec, ProcessCluster};

use crate::load::BoxError;

pub struct LocalCluster {
    pub cluster: ProcessCluster,
    _dir: tempfile::TempDir,
}

/// A base port whose client, peer and HTTP ports (`base + 1..=nodes`, `+100`, `+200`) are
/// all free right now. All below Linux's ephemeral range (32768 and up): a port there can be
/// taken as the source port of some outgoing connection while its node is down, and the
/// node then cannot bind it again when it restarts (`failover` kills and restarts nodes).
fn free_base_port(nodes: usize) -> Result<u16, BoxError> {
    for _ in 0..50 {
        let base = 21_000 + rand::random_range(0..46u16) * 250;
        let all_free = (1..=nodes as u16).all(|i| {
            [base + i, base + 100 + i, base + 200 + i]
                .iter()
                .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        });
        if all_free {
            return Ok(base);
        }
    }
    Err("no free port range for a local cluster".into())
}

impl LocalCluster {
    /// Starts `nodes` nodes in `zones` zones (3 replicas per shard, or fewer on fewer nodes)
    /// with `shards` shards in the shared pool, and waits until every node is ready.
    pub async fn start(
        nodes: usize,
        zones: usize,
        shards: u32,
        binary: Option<PathBuf>,
    ) -> Result<Self, BoxError> {
        let bin = binary
            .or_else(|| engram_node::launch::sibling_binary("engram"))
            .ok_or("no engram binary next to engram-bench: build it (cargo build --release -p engram-node) or pass --engram-bin")?;
        let dir = tempfile::tempdir()?;
        let mut spec = ClusterSpec::new(dir.path().join("cluster"), bin);
        spec.nodes = nodes.max(1);
        spec.zones = zones.clamp(1, spec.nodes);
        spec.base_port = free_base_port(spec.nodes)?;
        spec.settings.shared_shards = shards.max(1);
        spec.settings.replication_factor = (spec.nodes as u32).min(3);
        spec.settings.tenant_spread = spec.settings.tenant_spread.min(spec.settings.shared_shards);
        spec.settings.allow_same_zone = spec.zones < spec.settings.replication_factor as usize;
        let mut cluster = ProcessCluster::configure(spec)?;
        cluster.start_all()?;
        cluster.wait_ready(Duration::from_secs(120)).await?;
        Ok(LocalCluster { cluster, _dir: dir })
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.cluster.endpoints()
    }

    /// Bytes on disk under every node's data directory.
    pub fn disk_bytes(&self) -> u64 {
        crate::dir_bytes(&self.cluster.spec.dir)
    }

    /// Resident memory of every node process, summed.
    pub fn rss_bytes(&self) -> u64 {
        (0..self.cluster.len())
            .filter_map(|i| self.cluster.pid(i))
            .map(|pid| crate::rss::of_pid(pid).total_bytes)
            .sum()
    }

    pub fn stop(&mut self) {
        self.cluster.stop_all(Duration::from_secs(10));
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
