//! The router: caches the cluster map, sends each shard operation to the node that can serve
//! it, and retries on leader changes and unreachable nodes within the request's deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_api::{ApiError, ErrorCode};
use engram_raft::{Command, GroupId, NodeId, ShardRequest};
use parking_lot::RwLock;

use crate::map::{ClusterMap, CollectionInfo, MAP_KEY, META_GROUP};
use crate::transport::ShardTransport;
use crate::wire::{ReadMode, ShardOp, ShardReply, WireError, WireHit};

/// Request-size limits checked before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Limits {
    pub max_dimension: u32,
    pub max_payload_bytes: usize,
    pub max_text_bytes: usize,
    pub max_batch: usize,
    pub max_k: u32,
    pub max_id_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_dimension: 4096,
            max_payload_bytes: 64 * 1024,
            max_text_bytes: 64 * 1024,
            max_batch: 1000,
            max_k: 1000,
            max_id_bytes: 256,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The node this router is embedded in (served directly, without the network).
    pub local_node: Option<NodeId>,
    /// Its zone: bounded reads prefer replicas here.
    pub local_zone: Option<String>,
    /// Members of the metadata group (id, peer address): where the map is read first.
    pub meta_seeds: Vec<(NodeId, String)>,
    /// Default deadline of a client request (a request's own gRPC timeout wins when shorter).
    pub request_timeout: Duration,
    /// Longest single attempt against one node.
    pub attempt_timeout: Duration,
    /// A node that did not answer (unreachable, or no answer within the attempt timeout) is
    /// suspected for this long: leader hints naming it are not followed and other replicas
    /// are tried first, so a partitioned leader costs one attempt timeout, not one per hint.
    pub suspect_for: Duration,
    /// Bounded reads: how stale a replica may be.
    pub max_staleness_ms: u64,
    pub limits: Limits,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            local_node: None,
            local_zone: None,
            meta_seeds: Vec::new(),
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_millis(1000),
            suspect_for: Duration::from_secs(2),
            max_staleness_ms: 5_000,
            limits: Limits::default(),
        }
    }
}

/// What a tenant-wide search gathered.
#[derive(Debug, Default)]
pub struct Gathered {
    pub hits: Vec<WireHit>,
    pub failed: Vec<(GroupId, ApiError)>,
    pub staleness_ms: u64,
}

pub struct Router {
    cfg: RouterConfig,
    transport: Arc<dyn ShardTransport>,
    map: RwLock<(u64, Arc<ClusterMap>)>,
    leaders: RwLock<HashMap<GroupId, NodeId>>,
    /// Nodes that recently failed to answer, and until when they are suspected.
    suspects: RwLock<HashMap<NodeId, Instant>>,
}

fn deadline_error(gid: GroupId, last: Option<WireError>) -> ApiError {
    let why = last
        .map(|e| format!(": last error: {}", e.message))
        .unwrap_or_default();
    ApiError::new(
        ErrorCode::DeadlineExceeded,
        format!("shard {gid} did not answer before the request deadline{why}"),
    )
    .with("shard", gid.to_string())
}

/// The longest attempt against a suspected node.
const SUSPECT_ATTEMPT: Duration = Duration::from_millis(500);

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((25u64 << attempt.min(5)).min(500))
}

impl Router {
    pub fn new(cfg: RouterConfig, transport: Arc<dyn ShardTransport>) -> Arc<Self> {
        Arc::new(Router {
            cfg,
            transport,
            map: RwLock::new((0, Arc::new(ClusterMap::default()))),
            leaders: RwLock::default(),
            suspects: RwLock::default(),
        })
    }

    /// Whether `node` failed to answer within the last `suspect_for`, or the transport
    /// already knows it is not answering (its peer heartbeats fail).
    pub fn is_suspect(&self, node: NodeId) -> bool {
        self.suspects
            .read()
            .get(&node)
            .is_some_and(|until| Instant::now() < *until)
            || (Some(node) != self.cfg.local_node && !self.transport.reachable(node))
    }

    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// The cached map and its version (0 = none loaded yet).
    pub fn map(&self) -> Arc<ClusterMap> {
        self.map.read().1.clone()
    }

    pub fn map_version(&self) -> u64 {
        self.map.read().0
    }

    /// Installs `map` at `version` unless a newer one is cached.
    pub fn install_map(&self, version: u64, map: ClusterMap) {
        let mut cur = self.map.write();
        if version > cur.0 {
            *cur = (version, Arc::new(map));
        }
    }

    pub fn deadline(&self, grpc_timeout: Option<Duration>) -> Instant {
        let t = grpc_timeout
            .map(|t| t.min(self.cfg.request_timeout))
            .unwrap_or(self.cfg.request_timeout);
        Instant::now() + t
    }

    pub fn leader_hint(&self, gid: GroupId) -> Option<NodeId> {
        self.leaders.read().get(&gid).copied()
    }

    fn addr_of(&self, node: NodeId) -> Option<String> {
        if let Some(n) = self.map.read().1.nodes.get(&node) {
            return Some(n.peer_addr.clone());
        }
        self.cfg
            .meta_seeds
            .iter()
            .find(|(id, _)| *id == node)
            .map(|(_, a)| a.clone())
    }

    fn members(&self, gid: GroupId) -> Vec<NodeId> {
        if gid == META_GROUP {
            return self.cfg.meta_seeds.iter().map(|(id, _)| *id).collect();
        }
        self.map
            .read()
            .1
            .shards
            .get(&gid)
            .map(|s| s.replicas.clone())
            .unwrap_or_default()
    }

    fn first_guess(&self, gid: GroupId) -> Option<NodeId> {
        if let Some(l) = self.leader_hint(gid) {
            return Some(l);
        }
        self.map.read().1.shards.get(&gid).map(|s| s.leader_hint)
    }

    /// Calls one node once.
    pub async fn call_node(
        &self,
        node: NodeId,
        gid: GroupId,
        op: ShardOp,
        timeout: Duration,
    ) -> Result<ShardReply, WireError> {
        let addr = self
            .addr_of(node)
            .ok_or_else(|| WireError::unreachable(node, "no address in the cluster map"))?;
        let res = self.transport.call(node, addr, gid, op, timeout).await;
        match &res {
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::ShardUnavailable | ErrorCode::DeadlineExceeded
                ) =>
            {
                self.suspects
                    .write()
                    .insert(node, Instant::now() + self.cfg.suspect_for);
            }
            Ok(_) | Err(_) => {
                if self.suspects.read().contains_key(&node) {
                    self.suspects.write().remove(&node);
                }
            }
        }
        res
    }

    /// Sends `op` to the leader of `gid`, following leader hints and moving past unreachable
    /// replicas until it succeeds, fails for a reason retrying cannot fix, or `deadline` passes.
    pub async fn leader_call(
        &self,
        gid: GroupId,
        op: ShardOp,
        deadline: Instant,
    ) -> Result<ShardReply, ApiError> {
        let mut attempt: u32 = 0;
        let mut rotate = 0usize;
        let mut last: Option<WireError> = None;
        // This node's own replica said it cannot lead (with every other replica suspected,
        // this node is cut off from the shard).
        let mut local_refused = false;
        loop {
            let members = self.members(gid);
            if members.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::ShardUnavailable,
                    format!("shard {gid} is not in the cluster map"),
                ));
            }
            // Every replica suspected (this node cannot reach the shard): say so at once, so
            // the client tries another node instead of waiting here for the deadline.
            if attempt > 0
                && members
                    .iter()
                    .all(|n| self.is_suspect(*n) || (Some(*n) == self.cfg.local_node && local_refused))
            {
                return Err(ApiError::new(
                    ErrorCode::ShardUnavailable,
                    format!(
                        "no replica of shard {gid} answers from node {}{}",
                        self.cfg.local_node.unwrap_or(0),
                        last.map(|e| format!(": last error: {}", e.message))
                            .unwrap_or_default()
                    ),
                )
                .with("shard", gid.to_string()));
            }
            let guess = self
                .first_guess(gid)
                .filter(|n| members.contains(n) && !self.is_suspect(*n));
            let target = match guess {
                Some(n) if attempt == 0 || self.leader_hint(gid).is_some() => n,
                _ => {
                    // The next replica in turn, skipping suspects while any other is left.
                    let k = members.len();
                    (0..k)
                        .map(|i| members[(rotate + i) % k])
                        .find(|n| !self.is_suspect(*n))
                        .unwrap_or(members[rotate % k])
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(deadline_error(gid, last));
            }
            // A suspect gets a short attempt: enough for a slow node, little for a gone one.
            let cap = if self.is_suspect(target) {
                self.cfg.attempt_timeout.min(SUSPECT_ATTEMPT)
            } else {
                self.cfg.attempt_timeout
            };
            let timeout = (deadline - now).min(cap);
            match self.call_node(target, gid, op.clone(), timeout).await {
                Ok(r) => {
                    self.leaders.write().insert(gid, target);
                    return Ok(r);
                }
                Err(e) => {
                    let code = e.code();
                    tracing::debug!(gid, target, attempt, ?code, error = %e.message, "shard call failed");
                    if Some(target) == self.cfg.local_node {
                        local_refused = true;
                    }
                    match code {
                        ErrorCode::NotLeader => {
                            metrics::counter!("engram_router_retries_total", "reason" => "not_leader").increment(1);
                            // A suspected leader is believed again once every replica
                            // has had its turn (it may be slow, not gone).
                            let believable = |l: &NodeId| {
                                *l != target
                                    && members.contains(l)
                                    && (!self.is_suspect(*l) || attempt as usize >= members.len())
                            };
                            // A round and the only leader anyone names is one this node
                            // cannot reach (a partition: it leads a majority on the other
                            // side): let the client try through another node at once.
                            if attempt as usize + 1 >= members.len()
                                && e.leader.is_some_and(|l| self.is_suspect(l))
                            {
                                return Err(ApiError::new(
                                    ErrorCode::ShardUnavailable,
                                    format!(
                                        "the leader of shard {gid} (node {}) does not answer node {}",
                                        e.leader.unwrap_or(0),
                                        self.cfg.local_node.unwrap_or(0)
                                    ),
                                )
                                .with("shard", gid.to_string()));
                            }
                            match e.leader.filter(believable) {
                                Some(l) => {
                                    self.leaders.write().insert(gid, l);
                                }
                                None => {
                                    self.leaders.write().remove(&gid);
                                    rotate += 1;
                                }
                            }
                        }
                        ErrorCode::ShardUnavailable | ErrorCode::DeadlineExceeded => {
                            metrics::counter!("engram_router_retries_total", "reason" => "unavailable").increment(1);
                            self.leaders.write().remove(&gid);
                            rotate += 1;
                        }
                        _ => return Err(e.into_api(gid)),
                    }
                    last = Some(e);
                    attempt += 1;
                    // Hints are followed at once; a full round without success backs off.
                    if attempt as usize >= members.len() || code != ErrorCode::NotLeader {
                        let pause = backoff(attempt)
                            .min(deadline.saturating_duration_since(Instant::now()));
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }

    /// Sends a read to the nearest replica of `gid` (this node, then its zone, then the
    /// rest); falls back to the leader when no replica is fresh enough.
    pub async fn replica_call(
        &self,
        gid: GroupId,
        op: ShardOp,
        deadline: Instant,
    ) -> Result<ShardReply, ApiError> {
        let map = self.map();
        let mut members = self.members(gid);
        let zone_of = |n: &NodeId| map.nodes.get(n).map(|i| i.zone.as_str());
        members.sort_by_key(|n| {
            let local = Some(*n) == self.cfg.local_node;
            let same_zone = self.cfg.local_zone.as_deref().is_some()
                && zone_of(n) == self.cfg.local_zone.as_deref();
            (!local, !same_zone, *n)
        });
        // Suspected replicas last.
        members.sort_by_key(|n| self.is_suspect(*n));
        for n in members {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let timeout = (deadline - now).min(self.cfg.attempt_timeout);
            match self.call_node(n, gid, op.clone(), timeout).await {
                Ok(r) => return Ok(r),
                Err(e) if e.code().is_retryable() => continue,
                Err(e) => return Err(e.into_api(gid)),
            }
        }
        self.leader_call(gid, op, deadline).await
    }

    /// Reads the map from a metadata replica (local first) and caches it if newer.
    /// `strong` reads it through the metadata leader.
    pub async fn refresh_map(
        &self,
        strong: bool,
        deadline: Instant,
    ) -> Result<Arc<ClusterMap>, ApiError> {
        // Only a newer map travels (and is decoded); the cache is polled twice a second.
        let newer_than = self.map_version();
        let reply = if strong {
            self.leader_call(
                META_GROUP,
                ShardOp::ReadMap {
                    read: ReadMode::Strong,
                    newer_than,
                },
                deadline,
            )
            .await?
        } else {
            self.replica_call(
                META_GROUP,
                ShardOp::ReadMap {
                    read: ReadMode::Bounded {
                        max_staleness_ms: u64::MAX,
                    },
                    newer_than,
                },
                deadline,
            )
            .await?
        };
        if let ShardReply::Map(Some((version, bytes))) = reply {
            let map = ClusterMap::decode(&bytes).map_err(|e| {
                ApiError::new(
                    ErrorCode::Internal,
                    format!("cluster map does not decode: {e}"),
                )
            })?;
            self.install_map(version, map);
        }
        Ok(self.map())
    }

    /// Applies `change` to the current map and stores it with compare-and-set, retrying on
    /// concurrent changes. `change` returns `Ok(false)` when there is nothing to do.
    pub async fn update_map<F>(
        &self,
        deadline: Instant,
        mut change: F,
    ) -> Result<Arc<ClusterMap>, ApiError>
    where
        F: FnMut(&mut ClusterMap) -> Result<bool, ApiError>,
    {
        loop {
            let reply = self
                .leader_call(
                    META_GROUP,
                    ShardOp::ReadMap {
                        read: ReadMode::Strong,
                        newer_than: 0,
                    },
                    deadline,
                )
                .await?;
            let (version, mut map) = match reply {
                ShardReply::Map(Some((v, bytes))) => (
                    v,
                    ClusterMap::decode(&bytes).map_err(|e| {
                        ApiError::new(
                            ErrorCode::Internal,
                            format!("cluster map does not decode: {e}"),
                        )
                    })?,
                ),
                ShardReply::Map(None) => (0, ClusterMap::default()),
                other => {
                    return Err(ApiError::new(
                        ErrorCode::Internal,
                        format!("unexpected reply to a map read: {other:?}"),
                    ))
                }
            };
            if version > 0 {
                self.install_map(version, map.clone());
            }
            if !change(&mut map)? {
                return Ok(Arc::new(map));
            }
            map.epoch += 1;
            let cas = ShardRequest::new(Command::KvCas {
                key: MAP_KEY.to_string(),
                expect_version: Some(version),
                value: map.encode(),
            });
            match self
                .leader_call(META_GROUP, ShardOp::Write(cas), deadline)
                .await
            {
                Ok(ShardReply::Written { index, .. }) => {
                    self.install_map(index, map);
                    return Ok(self.map());
                }
                Ok(other) => {
                    return Err(ApiError::new(
                        ErrorCode::Internal,
                        format!("unexpected reply to a map write: {other:?}"),
                    ))
                }
                Err(e) if e.code == ErrorCode::StaleEpoch => {
                    metrics::counter!("engram_router_retries_total", "reason" => "map_conflict")
                        .increment(1);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A ready collection of the tenant; refreshes the map once through the metadata leader
    /// before answering "not found" (the cache may predate the collection).
    pub async fn collection(
        &self,
        tenant: &str,
        name: &str,
        deadline: Instant,
    ) -> Result<CollectionInfo, ApiError> {
        if let Some(c) = self.map().collection(tenant, name).filter(|c| c.ready) {
            return Ok(c.clone());
        }
        let map = self.refresh_map(true, deadline).await?;
        match map.collection(tenant, name) {
            Some(c) if c.ready => Ok(c.clone()),
            Some(_) => Err(ApiError::new(
                ErrorCode::ShardUnavailable,
                format!("collection {name:?} of tenant {tenant:?} is still being created; retry shortly"),
            )),
            None => Err(ApiError::new(
                ErrorCode::CollectionNotFound,
                format!("tenant {tenant:?} has no collection {name:?}"),
            )
            .with("collection", name)),
        }
    }

    /// Runs `op` on every shard of `shards` in parallel (strong: leaders; bounded: nearest
    /// replicas) and gathers the hits; shards that fail or miss the deadline are reported.
    pub async fn fan_out_search(
        &self,
        shards: &[GroupId],
        make_op: impl Fn(GroupId) -> ShardOp,
        strong: bool,
        deadline: Instant,
    ) -> Gathered {
        let calls = shards.iter().map(|&gid| {
            let op = make_op(gid);
            async move {
                let r = if strong {
                    self.leader_call(gid, op, deadline).await
                } else {
                    self.replica_call(gid, op, deadline).await
                };
                (gid, r)
            }
        });
        let mut out = Gathered::default();
        for (gid, r) in futures::future::join_all(calls).await {
            match r {
                Ok(ShardReply::Hits { hits, staleness_ms }) => {
                    out.hits.extend(hits);
                    out.staleness_ms = out.staleness_ms.max(staleness_ms);
                }
                Ok(other) => out.failed.push((
                    gid,
                    ApiError::new(ErrorCode::Internal, format!("unexpected reply: {other:?}")),
                )),
                Err(e) => out.failed.push((gid, e)),
            }
        }
        out
    }
}
