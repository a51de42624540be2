//! A cluster of Raft hosts for tests: each node has its own RocksDB in its own temp dir and
//! serves the peer service on its own loopback port (bound to port 0 the first time, reused
//! on restart so the group memberships stay valid).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use engram_index::{IndexConfig, Memory, Metric};
use engram_raft::host::PeerServerHandle;
use engram_raft::{
    Command, GroupId, HostConfig, NodeId, PeerNode, RaftError, RaftHost, RaftTiming, ShardRequest,
    WriteAck,
};
use tempfile::TempDir;

pub const TOKEN: &str = "test-peer-token";
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

pub struct TestNode {
    pub id: NodeId,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub host: Option<Arc<RaftHost>>,
    server: Option<PeerServerHandle>,
}

pub struct TestCluster {
    pub root: TempDir,
    pub nodes: Vec<TestNode>,
    pub timing: RaftTiming,
    next_id: NodeId,
}

impl TestCluster {
    pub async fn start(n: usize, timing: RaftTiming) -> Self {
        init_tracing();
        let root = tempfile::tempdir().expect("temp dir");
        let mut c = TestCluster {
            root,
            nodes: Vec::new(),
            timing,
            next_id: 1,
        };
        for _ in 0..n {
            c.add_node().await;
        }
        c
    }

    fn config(&self, id: NodeId, dir: PathBuf) -> HostConfig {
        let mut cfg = HostConfig::new(id, dir, TOKEN);
        cfg.timing = self.timing.clone();
        cfg
    }

    /// Starts a brand-new node (fresh id, fresh dir); returns its index in `nodes`.
    pub async fn add_node(&mut self) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        let dir = self.root.path().join(format!("node-{id}"));
        let host = RaftHost::open(self.config(id, dir.clone()))
            .await
            .expect("open host");
        let (addr, server) = host
            .spawn_peer_server("127.0.0.1:0".parse().unwrap())
            .await
            .expect("peer server");
        self.nodes.push(TestNode {
            id,
            dir,
            addr,
            host: Some(host),
            server: Some(server),
        });
        self.nodes.len() - 1
    }

    pub fn host(&self, i: usize) -> &Arc<RaftHost> {
        self.nodes[i].host.as_ref().expect("node is down")
    }

    pub fn peer(&self, i: usize) -> PeerNode {
        PeerNode::new(self.nodes[i].addr.to_string(), format!("zone-{}", i % 3))
    }

    pub fn members(&self, idx: &[usize]) -> BTreeMap<NodeId, PeerNode> {
        idx.iter()
            .map(|&i| (self.nodes[i].id, self.peer(i)))
            .collect()
    }

    pub fn index_of(&self, id: NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .expect("known node id")
    }

    /// Creates `gids` on the nodes `on` and forms each group with them as voters.
    pub async fn create_groups(&self, gids: impl IntoIterator<Item = GroupId>, on: &[usize]) {
        let members = self.members(on);
        for gid in gids {
            for &i in on {
                self.host(i).create_group(gid).await.expect("create group");
            }
            self.host(on[0])
                .initialize_group(gid, members.clone())
                .await
                .expect("initialize group");
        }
    }

    /// Kills node `i` abruptly: its peer server is aborted (connections drop) and every
    /// Raft instance stops; the data dir stays.
    pub async fn kill(&mut self, i: usize) {
        if let Some(s) = self.nodes[i].server.take() {
            s.abort();
        }
        if let Some(h) = self.nodes[i].host.take() {
            h.shutdown().await;
        }
    }

    /// Restarts node `i` from its data dir on its old port.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].host.is_none(), "node {i} is running");
        let cfg = self.config(self.nodes[i].id, self.nodes[i].dir.clone());
        let host = RaftHost::open(cfg).await.expect("reopen host");
        let addr = self.nodes[i].addr;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let (bound, server) = loop {
            match host.spawn_peer_server(addr).await {
                Ok(x) => break x,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!("rebinding {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot rebind {addr}: {e}"),
            }
        };
        assert_eq!(bound, addr);
        self.nodes[i].host = Some(host);
        self.nodes[i].server = Some(server);
    }

    pub fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].host.is_some())
            .collect()
    }

    /// The leader of `gid` that a live node reports as itself, waiting up to `timeout`.
    pub async fn leader(&self, gid: GroupId, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            for i in self.alive() {
                if let Some(g) = self.host(i).group(gid) {
                    let m = g.metrics();
                    if m.current_leader == Some(self.nodes[i].id)
                        && m.state == openraft::ServerState::Leader
                    {
                        return i;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "group {gid} has no leader after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes through whichever node leads `gid`, retrying on leader changes until `timeout`.
    pub async fn write(
        &self,
        gid: GroupId,
        req: ShardRequest,
        timeout: Duration,
    ) -> Result<WriteAck, RaftError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let leader = self
                .leader(
                    gid,
                    deadline
                        .saturating_duration_since(tokio::time::Instant::now())
                        .max(Duration::from_millis(1)),
                )
                .await;
            match self.host(leader).write(gid, req.clone()).await {
                Ok(a) => return Ok(a),
                Err(e @ RaftError::Rejected { .. }) => return Err(e),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::info!("write to group {gid} via node {leader} failed: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Waits until every live replica of `gid` has applied at least `index`.
    pub async fn wait_applied(&self, gid: GroupId, index: u64, on: &[usize], timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        for &i in on {
            loop {
                let applied = self
                    .host(i)
                    .group(gid)
                    .map(|g| g.state().applied_index())
                    .unwrap_or(0);
                if applied >= index {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node {} applied {applied} of group {gid}, expected {index}",
                    self.nodes[i].id
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i).await;
        }
    }
}

pub fn create_collection(name: &str) -> ShardRequest {
    ShardRequest::new(Command::create_collection(name, &index_config()))
}

pub fn upsert(collection: &str, memories: Vec<Memory>) -> ShardRequest {
    ShardRequest::new(Command::upsert(collection, memories))
}
