//! Test helpers around [`LocalCluster`]: Raft hosts in one process, each with its own
//! RocksDB in its own temp dir and its own peer server on loopback.

#![allow(dead_code)]

use std::time::Duration;

use engram_index::{IndexConfig, Memory, Metric};
use engram_raft::local::LocalCluster;
use engram_raft::{Command, GroupId, RaftTiming, ShardRequest};
use tempfile::TempDir;

pub const DIM: usize = 8;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Fast timing for tests on loopback (production defaults are slower).
pub fn test_timing() -> RaftTiming {
    RaftTiming {
        heartbeat_ms: 100,
        election_min_ms: 500,
        election_max_ms: 1000,
        snapshot_every_entries: 20_000,
        keep_after_snapshot: 5_000,
        quiet_groups: true,
    }
}

pub fn index_config() -> IndexConfig {
    IndexConfig::new(DIM, Metric::L2)
}

/// A deterministic vector for memory number `n`.
pub fn vector(n: u64) -> Vec<f32> {
    (0..DIM as u64)
        .map(|i| (((n * 31 + i * 17) % 97) as f32) / 97.0 + (i as f32) * 0.01)
        .collect()
}

pub fn memory(n: u64, user: &str) -> Memory {
    Memory::new(
        format!("m{n}"),
        user,
        vector(n),
        1_700_000_000_000 + n as i64,
    )
}

/// A [`LocalCluster`] in a temp dir, with panicking helpers for tests.
pub struct TestCluster {
    inner: LocalCluster,
    _root: TempDir,
}

impl std::ops::Deref for TestCluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.inner
    }
}

impl std::ops::DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.inner
    }
}

impl TestCluster {
    pub async fn start(n: usize, timing: RaftTiming) -> Self {
        init_tracing();
        let root = tempfile::tempdir().expect("temp dir");
        let inner = LocalCluster::start(root.path(), n, timing)
            .await
            .expect("start cluster");
        TestCluster { inner, _root: root }
    }

    pub async fn add_node(&mut self) -> usize {
        self.inner.add_node().await.expect("add node")
    }

    pub async fn create_groups(&self, gids: impl IntoIterator<Item = GroupId>, on: &[usize]) {
        self.inner
            .create_groups(gids, on)
            .await
            .expect("create groups")
    }

    pub async fn restart(&mut self, i: usize) {
        assert!(self.inner.nodes[i].host.is_none(), "node {i} is running");
        self.inner.restart(i).await.expect("restart node")
    }

    pub async fn leader(&self, gid: GroupId, timeout: Duration) -> usize {
        self.inner
            .leader(gid, timeout)
            .await
            .unwrap_or_else(|_| panic!("group {gid} has no leader after {timeout:?}"))
    }

    pub async fn wait_applied(&self, gid: GroupId, index: u64, on: &[usize], timeout: Duration) {
        if self
            .inner
            .wait_applied(gid, index, on, timeout)
            .await
            .is_err()
        {
            let applied: Vec<u64> = on
                .iter()
                .map(|&i| {
                    self.host(i)
                        .group(gid)
                        .map(|g| g.state().applied_index())
                        .unwrap_or(0)
                })
                .collect();
            panic!("group {gid}: replicas {on:?} applied {applied:?}, expected {index}");
        }
    }

    pub async fn shutdown(self) {
        self.inner.shutdown().await
    }
}

pub fn create_collection(name: &str) -> ShardRequest {
    ShardRequest::new(Command::create_collection(name, &index_config()))
}

pub fn upsert(collection: &str, memories: Vec<Memory>) -> ShardRequest {
    ShardRequest::new(Command::upsert(collection, memories))
}
