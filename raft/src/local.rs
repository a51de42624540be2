//! A cluster of [`RaftHost`]s in one process, each with its own RocksDB in its own directory
//! and its own peer server on a loopback port — for tests and benchmarks. Ports are bound to
//! 0 the first time and reused on restart, so group memberships stay valid.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::command::ShardRequest;
use crate::error::RaftError;
use crate::host::{HostConfig, PeerServerHandle, RaftHost, RaftTiming, WriteAck};
use crate::storage::Durability;
use crate::types::{GroupId, NodeId, PeerNode};

/// One node of a [`LocalCluster`].
pub struct LocalNode {
    pub id: NodeId,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub host: Option<Arc<RaftHost>>,
    server: Option<PeerServerHandle>,
}

/// In-process nodes on loopback. Node `i` is in zone `zone-{i % 3}`.
pub struct LocalCluster {
    pub root: PathBuf,
    pub nodes: Vec<LocalNode>,
    pub timing: RaftTiming,
    pub peer_token: String,
    /// Durability of nodes started (or restarted) from now on.
    pub durability: Durability,
    next_id: NodeId,
}

impl LocalCluster {
    /// Starts `n` fresh nodes under `root` (which should be empty).
    pub async fn start(
        root: impl Into<PathBuf>,
        n: usize,
        timing: RaftTiming,
    ) -> Result<Self, RaftError> {
        let mut c = LocalCluster {
            root: root.into(),
            nodes: Vec::new(),
            timing,
            peer_token: "local-cluster-peer-token".into(),
            durability: Durability::default(),
            next_id: 1,
        };
        for _ in 0..n {
            c.add_node().await?;
        }
        Ok(c)
    }

    fn config(&self, id: NodeId, dir: PathBuf) -> HostConfig {
        let mut cfg = HostConfig::new(id, dir, self.peer_token.clone());
        cfg.timing = self.timing.clone();
        cfg.durability = self.durability;
        cfg
    }

    /// Starts a brand-new node (fresh id, fresh dir); returns its position in `nodes`.
    pub async fn add_node(&mut self) -> Result<usize, RaftError> {
        let id = self.next_id;
        self.next_id += 1;
        let dir = self.root.join(format!("node-{id}"));
        let host = RaftHost::open(self.config(id, dir.clone())).await?;
        let (addr, server) = host
            .spawn_peer_server(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await?;
        self.nodes.push(LocalNode {
            id,
            dir,
            addr,
            host: Some(host),
            server: Some(server),
        });
        Ok(self.nodes.len() - 1)
    }

    /// The host of node `i`. Panics if it is down (a test or bench bug).
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

    /// Creates `gids` on the nodes `on` and forms each group with them as voters.
    pub async fn create_groups(
        &self,
        gids: impl IntoIterator<Item = GroupId>,
        on: &[usize],
    ) -> Result<(), RaftError> {
        let members = self.members(on);
        for gid in gids {
            for &i in on {
                self.host(i).create_group(gid).await?;
            }
            self.host(on[0])
                .initialize_group(gid, members.clone())
                .await?;
        }
        Ok(())
    }

    /// Kills node `i` abruptly: its peer server is aborted (connections drop) and every Raft
    /// instance stops; the data dir stays.
    pub async fn kill(&mut self, i: usize) {
        if let Some(s) = self.nodes[i].server.take() {
            s.abort();
        }
        if let Some(h) = self.nodes[i].host.take() {
            h.shutdown().await;
        }
    }

    /// Restarts node `i` from its data dir on its old port.
    pub async fn restart(&mut self, i: usize) -> Result<(), RaftError> {
        if self.nodes[i].host.is_some() {
            return Ok(());
        }
        let cfg = self.config(self.nodes[i].id, self.nodes[i].dir.clone());
        let host = RaftHost::open(cfg).await?;
        let addr = self.nodes[i].addr;
        let deadline = Instant::now() + Duration::from_secs(20);
        let (_, server) = loop {
            match host.spawn_peer_server(addr).await {
                Ok(x) => break x,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.nodes[i].host = Some(host);
        self.nodes[i].server = Some(server);
        Ok(())
    }

    /// Positions of the running nodes.
    pub fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].host.is_some())
            .collect()
    }

    /// The position of the node leading `gid` (as it says itself), if any.
    pub fn current_leader(&self, gid: GroupId) -> Option<usize> {
        self.alive().into_iter().find(|&i| {
            self.host(i).group(gid).is_some_and(|g| {
                let m = g.metrics();
                m.current_leader == Some(self.nodes[i].id)
                    && m.state == openraft::ServerState::Leader
            })
        })
    }

    /// Waits up to `timeout` for a leader of `gid`.
    pub async fn leader(&self, gid: GroupId, timeout: Duration) -> Result<usize, RaftError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.current_leader(gid) {
                return Ok(i);
            }
            if Instant::now() >= deadline {
                return Err(RaftError::Timeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Writes through whichever node leads `gid`, retrying on leader changes until `timeout`.
    /// Rejections are returned at once.
    pub async fn write(
        &self,
        gid: GroupId,
        req: ShardRequest,
        timeout: Duration,
    ) -> Result<WriteAck, RaftError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let leader = self.leader(gid, left.max(Duration::from_millis(1))).await?;
            match self.host(leader).write(gid, req.clone()).await {
                Ok(a) => return Ok(a),
                Err(e @ RaftError::Rejected { .. }) => return Err(e),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// Waits until the replicas of `gid` on nodes `on` have applied at least `index`.
    pub async fn wait_applied(
        &self,
        gid: GroupId,
        index: u64,
        on: &[usize],
        timeout: Duration,
    ) -> Result<(), RaftError> {
        let deadline = Instant::now() + timeout;
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
                if Instant::now() >= deadline {
                    return Err(RaftError::Timeout(timeout));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i).await;
        }
    }
}
