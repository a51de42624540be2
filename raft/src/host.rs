//! [`RaftHost`]: a node's multi-Raft runtime. It owns the node's RocksDB, the peer
//! connections, and one openraft instance per hosted shard group, and exposes what the node
//! server and the control plane need: create / open / remove groups, write, linearizable and
//! follower reads, and one-at-a-time membership changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, InitializeError, RaftError as OrError};
use openraft::{ChangeMembers, Config, SnapshotPolicy};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::command::{Outcome, ShardRequest, ShardResponse};
use crate::error::RaftError;
use crate::liveness::Contact;
use crate::network::{GroupNetworkFactory, PeerPool, TransportConfig};
use crate::storage::log::{GroupShared, LogStore};
use crate::storage::sm::{ShardState, ShardStateMachine, DEFAULT_IDEMPOTENCY_WINDOW_MS};
use crate::storage::{Durability, NodeStore, StoreError};
use crate::types::{GroupId, LogId, NodeId, PeerNode, Raft, RaftMetrics};

mod quorum;

/// Raft timing. Defaults suit RocksDB fsyncs (a few ms) and cross-zone round trips (1–2 ms):
/// a leader is declared dead after 1–2 s without a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot (and compact the log) after this many entries.
    pub snapshot_every_entries: u64,
    /// Entries kept after a snapshot, so a briefly absent replica catches up from the log.
    pub keep_after_snapshot: u64,
    /// Quiet groups (the default): no per-group heartbeats; one node-level heartbeat per peer
    /// node carries every group, and followers start elections themselves (see `liveness`).
    /// `false` uses openraft's own per-group heartbeats and election timers.
    pub quiet_groups: bool,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 250,
            election_min_ms: 1000,
            election_max_ms: 2000,
            snapshot_every_entries: 20_000,
            keep_after_snapshot: 5_000,
            quiet_groups: true,
        }
    }
}

/// Everything a [`RaftHost`] needs.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// The cluster's peer credential: required on every peer RPC, never a client key.
    pub peer_token: String,
    pub durability: Durability,
    pub timing: RaftTiming,
    pub transport: TransportConfig,
    pub idempotency_window_ms: i64,
}

impl HostConfig {
    pub fn new(
        node_id: NodeId,
        data_dir: impl Into<PathBuf>,
        peer_token: impl Into<String>,
    ) -> Self {
        HostConfig {
            node_id,
            data_dir: data_dir.into(),
            peer_token: peer_token.into(),
            durability: Durability::default(),
            timing: RaftTiming::default(),
            transport: TransportConfig::default(),
            idempotency_window_ms: DEFAULT_IDEMPOTENCY_WINDOW_MS,
        }
    }
}

/// One hosted replica of a shard group.
pub struct Group {
    pub id: GroupId,
    pub raft: Raft,
    state: Arc<ShardState>,
    dir: PathBuf,
    /// When the leader was last heard from, and when to elect if it stays silent.
    pub(crate) contact: Mutex<Contact>,
    election: (u64, u64),
    /// The group's log (a handle on the node's RocksDB), for pre-votes' log comparison.
    log: LogStore,
    /// Leader last seen by the metrics loop (0: none), to count leader changes.
    pub(crate) last_leader: AtomicU64,
}

impl Group {
    pub(crate) fn leader_contact(&self, committed: u64) {
        self.contact
            .lock()
            .heard(committed, self.election.0, self.election.1);
    }

    /// The id of the replica's last log entry (`None`: empty log).
    pub(crate) fn last_log_id(&self) -> Result<Option<LogId>, crate::types::StorageError> {
        self.log.last_log_id()
    }

    /// The replica's applied state (records and indexes).
    pub fn state(&self) -> &Arc<ShardState> {
        &self.state
    }

    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    pub(crate) fn snapshot_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }
}

/// The answer to an acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteAck {
    /// Log index the write was committed and applied at.
    pub index: u64,
    pub upserted: u64,
    pub deleted: u64,
    /// A retry with an already-used idempotency key: nothing was written this time.
    pub deduplicated: bool,
}

/// How fresh a follower read is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staleness {
    /// Index applied on this replica.
    pub applied_index: u64,
    /// The leader's commit index as last heard by this replica.
    pub known_committed: u64,
    /// Time since this replica last heard from a leader (`None`: never / is the leader).
    pub since_leader_contact: Option<Duration>,
}

/// A node's multi-Raft runtime.
pub struct RaftHost {
    config: HostConfig,
    raft_config: Arc<Config>,
    store: Arc<NodeStore>,
    pool: Arc<PeerPool>,
    groups: RwLock<HashMap<GroupId, Arc<Group>>>,
    /// Peers heartbeated even without a shared group (the cluster's other nodes, set by the
    /// node from its map), so that [`RaftHost::peer_reachable`] knows about every node.
    watched: RwLock<Vec<(NodeId, PeerNode)>>,
    shut_down: AtomicBool,
}

impl std::fmt::Debug for RaftHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RaftHost(node {})", self.config.node_id)
    }
}

impl RaftHost {
    /// Opens the node's store and every group recorded in it. The data dir is bound to one
    /// node id forever: opening it under another id is refused.
    pub async fn open(config: HostConfig) -> Result<Arc<Self>, RaftError> {
        let t = &config.timing;
        // With quiet groups openraft's election timer is off and its election timeout only sets
        // the leader lease (a follower refuses votes for `election_timeout_max` after its last
        // append). Ending the lease when our failure detector may first fire lets the first
        // candidate win instead of being refused until the lease runs out.
        // openraft's heartbeat interval then only sets its tick period and the append-entries
        // RPC timeout: half the lease is kinder to fsync stalls and wakes idle groups less.
        let (hb, el_min, el_max) = if t.quiet_groups {
            let max = t.election_min_ms;
            let hb = (max / 2).saturating_sub(1).max(t.heartbeat_ms);
            (hb, (hb + 1).max(max / 2), max)
        } else {
            (t.heartbeat_ms, t.election_min_ms, t.election_max_ms)
        };
        let raft_config = Config {
            cluster_name: "engram".into(),
            heartbeat_interval: hb,
            election_timeout_min: el_min,
            election_timeout_max: el_max,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.timing.snapshot_every_entries),
            max_in_snapshot_log_to_keep: config.timing.keep_after_snapshot,
            max_payload_entries: 512,
            enable_heartbeat: !config.timing.quiet_groups,
            enable_elect: !config.timing.quiet_groups,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftError::Storage(format!("raft config: {e}")))?;
        let store = NodeStore::open(&config.data_dir, config.durability).map_err(store_err)?;
        match store
            .node_id()
            .map_err(|e| RaftError::Storage(e.to_string()))?
        {
            Some(id) if id != config.node_id => {
                return Err(RaftError::Storage(format!(
                    "data dir {} belongs to node {id}, not node {} (node ids are never reused)",
                    config.data_dir.display(),
                    config.node_id
                )))
            }
            Some(_) => {}
            None => store
                .set_node_id(config.node_id)
                .map_err(|e| RaftError::Storage(e.to_string()))?,
        }
        let pool = PeerPool::new(
            config.node_id,
            config.peer_token.clone(),
            config.transport.clone(),
        );
        let host = Arc::new(RaftHost {
            config,
            raft_config: Arc::new(raft_config),
            store,
            pool,
            groups: RwLock::new(HashMap::new()),
            watched: RwLock::new(Vec::new()),
            shut_down: AtomicBool::new(false),
        });
        let hosted = host
            .store
            .hosted_groups()
            .map_err(|e| RaftError::Storage(e.to_string()))?;
        for gid in hosted {
            host.start_group(gid).await?;
        }
        let interval = Duration::from_millis(host.config.timing.heartbeat_ms.max(1));
        tokio::spawn(crate::liveness::run(
            Arc::downgrade(&host),
            interval,
            host.config.timing.quiet_groups,
        ));
        Ok(host)
    }

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    pub fn peer_token(&self) -> &str {
        &self.config.peer_token
    }

    pub fn transport_config(&self) -> &TransportConfig {
        &self.config.transport
    }

    pub fn store(&self) -> &Arc<NodeStore> {
        &self.store
    }

    pub(crate) fn pool(&self) -> &Arc<PeerPool> {
        &self.pool
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::SeqCst)
    }

    pub(crate) fn election_timeout_ms(&self) -> (u64, u64) {
        (
            self.config.timing.election_min_ms,
            self.config.timing.election_max_ms,
        )
    }

    pub fn group_count(&self) -> usize {
        self.groups.read().len()
    }

    /// Every hosted group.
    pub fn groups(&self) -> Vec<Arc<Group>> {
        self.groups.read().values().cloned().collect()
    }

    pub fn group(&self, gid: GroupId) -> Option<Arc<Group>> {
        self.groups.read().get(&gid).cloned()
    }

    fn require(&self, gid: GroupId) -> Result<Arc<Group>, RaftError> {
        self.group(gid).ok_or(RaftError::GroupNotHosted(gid))
    }

    pub fn group_ids(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self.groups.read().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn group_dir(&self, gid: GroupId) -> PathBuf {
        self.config.data_dir.join("groups").join(gid.to_string())
    }

    async fn start_group(&self, gid: GroupId) -> Result<Arc<Group>, RaftError> {
        let shared = Arc::new(GroupShared::default());
        let log = LogStore::open(gid, self.store.clone(), shared.clone())
            .map_err(|e| RaftError::Storage(e.to_string()))?;
        let dir = self.group_dir(gid);
        let store = self.store.clone();
        let window = self.config.idempotency_window_ms;
        let (sm, log) = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                ShardStateMachine::open(gid, store, dir, shared, &log, window).map(|sm| (sm, log))
            })
            .await
            .map_err(|e| RaftError::Storage(format!("opening group {gid}: {e}")))?
            .map_err(|e| RaftError::Storage(format!("opening group {gid}: {e}")))?
        };
        let state = sm.state();
        let network = GroupNetworkFactory {
            group: gid,
            pool: self.pool.clone(),
        };
        let raft = Raft::new(
            self.config.node_id,
            self.raft_config.clone(),
            network,
            log.clone(),
            sm,
        )
        .await
        .map_err(|e| RaftError::Storage(format!("starting group {gid}: {e}")))?;
        let group = Arc::new(Group {
            id: gid,
            raft,
            state,
            dir,
            contact: Mutex::new(Contact::new(
                self.config.timing.election_min_ms,
                self.config.timing.election_max_ms,
            )),
            election: (
                self.config.timing.election_min_ms,
                self.config.timing.election_max_ms,
            ),
            log,
            last_leader: AtomicU64::new(0),
        });
        self.groups.write().insert(gid, group.clone());
        Ok(group)
    }

    /// Starts an (empty, uninitialised) replica of `gid` here. It joins a group when the
    /// group's leader adds it, or forms one through [`RaftHost::initialize_group`].
    pub async fn create_group(&self, gid: GroupId) -> Result<Arc<Group>, RaftError> {
        if self.group(gid).is_some() {
            return Err(RaftError::GroupExists(gid));
        }
        self.store
            .record_group(gid, true)
            .map_err(|e| RaftError::Storage(e.to_string()))?;
        self.start_group(gid).await
    }

    /// Forms group `gid` with `members` as its voters (call on one member, once).
    pub async fn initialize_group(
        &self,
        gid: GroupId,
        members: BTreeMap<NodeId, PeerNode>,
    ) -> Result<(), RaftError> {
        let g = self.require(gid)?;
        match g.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(OrError::APIError(InitializeError::NotAllowed(_))) => Ok(()), // already formed
            Err(e) => Err(RaftError::Membership {
                group: gid,
                message: e.to_string(),
            }),
        }
    }

    /// Proposes `req` to group `gid` and waits until it is committed on a quorum and applied
    /// here. Only the leader accepts; others answer [`RaftError::NotLeader`] with the leader.
    pub async fn write(&self, gid: GroupId, req: ShardRequest) -> Result<WriteAck, RaftError> {
        let g = self.require(gid)?;
        let started = Instant::now();
        let resp = self.while_quorum(&g, g.raft.client_write(req)).await?.map_err(|e| {
            let e = write_err(gid, e);
            metrics::counter!("engram_raft_proposals_dropped_total", "reason" => drop_reason(&e))
                .increment(1);
            e
        })?;
        metrics::histogram!("engram_raft_commit_seconds").record(started.elapsed().as_secs_f64());
        ack(gid, resp.data)
    }

    /// The group's state after confirming leadership with a quorum (read index): every write
    /// acknowledged before this call is visible.
    pub async fn linearizable(&self, gid: GroupId) -> Result<Arc<ShardState>, RaftError> {
        let g = self.require(gid)?;
        let confirmed = self.while_quorum(&g, g.raft.ensure_linearizable()).await?;
        confirmed.map_err(|e| match e {
            OrError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)) => {
                RaftError::NotLeader {
                    group: gid,
                    leader: f.leader_id.zip(f.leader_node),
                }
            }
            other => RaftError::Unavailable {
                group: gid,
                message: other.to_string(),
            },
        })?;
        Ok(g.state.clone())
    }

    /// This replica's state without contacting the leader, with how stale it may be.
    pub fn follower_read(&self, gid: GroupId) -> Result<(Arc<ShardState>, Staleness), RaftError> {
        let g = self.require(gid)?;
        let is_leader = g.raft.metrics().borrow().current_leader == Some(self.node_id());
        let applied = g.state.applied_index();
        let (last, committed) = {
            let c = g.contact.lock();
            (c.last, c.committed)
        };
        let staleness = if is_leader {
            Staleness {
                applied_index: applied,
                known_committed: applied,
                since_leader_contact: Some(Duration::ZERO),
            }
        } else {
            Staleness {
                applied_index: applied,
                known_committed: committed.max(applied),
                since_leader_contact: last.map(|t| t.elapsed()),
            }
        };
        Ok((g.state.clone(), staleness))
    }

    /// The current leader of `gid` as this replica knows it.
    pub fn leader_of(&self, gid: GroupId) -> Option<NodeId> {
        self.group(gid)
            .and_then(|g| g.raft.metrics().borrow().current_leader)
    }

    /// Waits until `gid` has a leader (or the deadline passes).
    pub async fn wait_leader(&self, gid: GroupId, timeout: Duration) -> Result<NodeId, RaftError> {
        let g = self.require(gid)?;
        wait_metrics(&g, timeout, |m| m.current_leader).await
    }

    /// Builds a snapshot of `gid` on this replica now and purges its log up to it: replicas
    /// that are behind then catch up by snapshot. Operators and tests.
    pub async fn compact(&self, gid: GroupId, timeout: Duration) -> Result<u64, RaftError> {
        let g = self.require(gid)?;
        let target = g.state.applied_index();
        let unavailable = |e: openraft::error::Fatal<NodeId>| RaftError::Unavailable {
            group: gid,
            message: e.to_string(),
        };
        g.raft.trigger().snapshot().await.map_err(unavailable)?;
        let snap = wait_metrics(&g, timeout, |m| {
            m.snapshot.map(|l| l.index).filter(|&s| s >= target)
        })
        .await?;
        g.raft
            .trigger()
            .purge_log(snap)
            .await
            .map_err(unavailable)?;
        wait_metrics(&g, timeout, |m| {
            m.purged.map(|l| l.index).filter(|&p| p >= snap)
        })
        .await?;
        Ok(snap)
    }

    // ---- membership: one change at a time, driven by the control plane ----

    /// Adds `node` as a learner of `gid` and waits until it has caught up (call on the leader;
    /// the node must already host an empty replica, see [`RaftHost::create_group`]).
    pub async fn add_learner(
        &self,
        gid: GroupId,
        node_id: NodeId,
        node: PeerNode,
    ) -> Result<(), RaftError> {
        let g = self.require(gid)?;
        g.raft
            .add_learner(node_id, node, true)
            .await
            .map(|_| ())
            .map_err(|e| write_err(gid, e))
    }

    /// Makes `voters` the group's voter set (learners among them are promoted; voters left
    /// out are removed from the group).
    pub async fn change_voters(
        &self,
        gid: GroupId,
        voters: BTreeSet<NodeId>,
    ) -> Result<(), RaftError> {
        self.change_membership(gid, ChangeMembers::ReplaceAllVoters(voters))
            .await
    }

    /// Removes learners (or non-voting members) from the group.
    pub async fn remove_nodes(
        &self,
        gid: GroupId,
        nodes: BTreeSet<NodeId>,
    ) -> Result<(), RaftError> {
        self.change_membership(gid, ChangeMembers::RemoveNodes(nodes))
            .await
    }

    async fn change_membership(
        &self,
        gid: GroupId,
        change: ChangeMembers<NodeId, PeerNode>,
    ) -> Result<(), RaftError> {
        let g = self.require(gid)?;
        g.raft
            .change_membership(change, false)
            .await
            .map(|_| ())
            .map_err(|e| write_err(gid, e))
    }

    /// Stops this node's replica of `gid` and deletes its data (after it was removed from
    /// the group's membership).
    pub async fn drop_group(&self, gid: GroupId) -> Result<(), RaftError> {
        let g = self
            .groups
            .write()
            .remove(&gid)
            .ok_or(RaftError::GroupNotHosted(gid))?;
        let _ = g.raft.shutdown().await;
        let store = self.store.clone();
        let state = g.state.clone();
        tokio::task::spawn_blocking(move || -> Result<(), RaftError> {
            let shared = Arc::new(GroupShared::default());
            let log = LogStore::open(gid, store.clone(), shared)
                .map_err(|e| RaftError::Storage(e.to_string()))?;
            log.destroy()
                .map_err(|e| RaftError::Storage(e.to_string()))?;
            state
                .destroy()
                .map_err(|e| RaftError::Storage(e.to_string()))?;
            store
                .record_group(gid, false)
                .map_err(|e| RaftError::Storage(e.to_string()))
        })
        .await
        .map_err(|e| RaftError::Storage(e.to_string()))?
    }

    /// Handles a peer's node-level heartbeat; returns the groups that need a real append.
    pub fn on_heartbeat(&self, from: NodeId, beats: &[engram_api::peer::GroupBeat]) -> Vec<u64> {
        crate::liveness::on_heartbeat(self, from, beats)
    }

    /// Answers a peer's pre-vote; returns the groups it would vote in.
    pub fn on_pre_vote(&self, groups: &[engram_api::peer::GroupPreVote]) -> Vec<u64> {
        crate::liveness::on_pre_vote(self, groups)
    }

    /// Serves the peer service on `listener` until `shutdown` resolves.
    pub async fn serve_peers(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), RaftError> {
        // TCP_NODELAY on accepted connections: the builder's option does not reach a custom
        // incoming stream, and small replies would wait for delayed ACKs.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(crate::server::peer_server(self.clone()))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| RaftError::Storage(format!("peer server: {e}")))
    }

    /// Binds `addr` and serves the peer service in a background task; returns the bound
    /// address and a handle that stops it.
    pub async fn spawn_peer_server(
        self: &Arc<Self>,
        addr: SocketAddr,
    ) -> Result<(SocketAddr, PeerServerHandle), RaftError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RaftError::Storage(format!("binding peer address {addr}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| RaftError::Storage(e.to_string()))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let me = self.clone();
        let task = tokio::spawn(async move {
            let _ = me
                .serve_peers(listener, async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok((
            bound,
            PeerServerHandle {
                stop: Some(tx),
                task,
            },
        ))
    }

    /// Stops every group and closes the store.
    pub async fn shutdown(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
        let groups: Vec<Arc<Group>> = self.groups.write().drain().map(|(_, g)| g).collect();
        for g in &groups {
            let _ = g.raft.shutdown().await;
        }
        self.pool.clear();
        self.store.close();
    }
}

/// Stops a peer server started by [`RaftHost::spawn_peer_server`].
pub struct PeerServerHandle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl PeerServerHandle {
    /// Graceful stop: in-flight calls finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Abrupt stop: connections are dropped at once (simulates a crashed server task).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Waits until `f` finds what it looks for in the group's metrics, or `timeout` passes.
async fn wait_metrics<T>(
    g: &Group,
    timeout: Duration,
    mut f: impl FnMut(&RaftMetrics) -> Option<T>,
) -> Result<T, RaftError> {
    let mut rx = g.raft.metrics();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f(&rx.borrow()) {
            return Ok(v);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(RaftError::Unavailable {
                    group: g.id,
                    message: "raft stopped".into(),
                })
            }
            Err(_) => return Err(RaftError::Timeout(timeout)),
        }
    }
}

fn drop_reason(e: &RaftError) -> &'static str {
    match e {
        RaftError::NotLeader { .. } => "not_leader",
        RaftError::Membership { .. } => "membership",
        RaftError::Unavailable { .. } => "unavailable",
        _ => "other",
    }
}

fn store_err(e: StoreError) -> RaftError {
    RaftError::Storage(e.to_string())
}

fn ack(gid: GroupId, resp: ShardResponse) -> Result<WriteAck, RaftError> {
    match resp.outcome {
        Outcome::Rejected { code, message } => Err(RaftError::Rejected {
            group: gid,
            code: engram_api::ErrorCode::try_from(code).unwrap_or(engram_api::ErrorCode::Internal),
            message,
        }),
        Outcome::Written { upserted, deleted } => Ok(WriteAck {
            index: resp.index,
            upserted,
            deleted,
            deduplicated: resp.deduplicated,
        }),
        Outcome::None => Ok(WriteAck {
            index: resp.index,
            upserted: 0,
            deleted: 0,
            deduplicated: resp.deduplicated,
        }),
    }
}

fn write_err(gid: GroupId, e: OrError<NodeId, ClientWriteError<NodeId, PeerNode>>) -> RaftError {
    match e {
        OrError::APIError(ClientWriteError::ForwardToLeader(f)) => RaftError::NotLeader {
            group: gid,
            leader: f.leader_id.zip(f.leader_node),
        },
        OrError::APIError(ClientWriteError::ChangeMembershipError(c)) => RaftError::Membership {
            group: gid,
            message: c.to_string(),
        },
        OrError::Fatal(f) => RaftError::Unavailable {
            group: gid,
            message: f.to_string(),
        },
    }
}
