//! Serves shard operations on this node: the `Shards` peer service, and direct calls from the
//! embedded router when the target is this node.

use std::sync::Arc;
use std::time::Duration;

use engram_api::peer::shards_server::{Shards, ShardsServer};
use engram_api::peer::{ShardCall, ShardCallReply};
use engram_api::ErrorCode;
use engram_index::{Filter, SearchRequest, VectorIndex};
use engram_raft::{GroupId, RaftError, RaftHost};
use engram_router::map::MAP_KEY;
use engram_router::wire::{
    decode, encode, ReadMode, ShardOp, ShardReply, WireError, WireHit, WireMemory, WireStatus,
};
use engram_router::{RemoteTransport, ShardTransport};
use futures::future::BoxFuture;
use tonic::{Request, Response, Status};

fn storage(e: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorCode::Internal, e.to_string())
}

/// The replica state to read, per the read mode.
async fn read_state(
    host: &RaftHost,
    gid: GroupId,
    read: ReadMode,
) -> Result<(Arc<engram_raft::storage::sm::ShardState>, u64), WireError> {
    match read {
        ReadMode::Strong => Ok((host.linearizable(gid).await?, 0)),
        ReadMode::Bounded { max_staleness_ms } => {
            let (state, s) = host.follower_read(gid)?;
            let staleness = s
                .since_leader_contact
                .map(|d| d.as_millis() as u64)
                .unwrap_or(u64::MAX);
            if staleness > max_staleness_ms {
                return Err(WireError::new(
                    ErrorCode::ShardUnavailable,
                    format!(
                        "replica of shard {gid} on node {} last heard from its leader {} ago (bound {max_staleness_ms} ms)",
                        host.node_id(),
                        if staleness == u64::MAX { "never".to_string() } else { format!("{staleness} ms") },
                    ),
                ));
            }
            Ok((state, staleness))
        }
    }
}

/// Executes one shard operation against the local replica of `gid`.
pub async fn execute(
    host: Arc<RaftHost>,
    gid: GroupId,
    op: ShardOp,
) -> Result<ShardReply, WireError> {
    match op {
        ShardOp::Ping => Ok(ShardReply::Pong),
        ShardOp::Write(req) => {
            let ack = host.write(gid, req).await?;
            Ok(ShardReply::Written {
                index: ack.index,
                upserted: ack.upserted,
                deleted: ack.deleted,
                deduplicated: ack.deduplicated,
            })
        }
        ShardOp::ReadMap { read, newer_than } => {
            let (state, _) = read_state(&host, gid, read).await?;
            Ok(match state.kv_get(MAP_KEY).map_err(storage)? {
                Some((version, _)) if version <= newer_than => ShardReply::MapUnchanged,
                map => ShardReply::Map(map),
            })
        }
        ShardOp::Search {
            collection,
            query,
            read,
        } => {
            let (state, staleness_ms) = read_state(&host, gid, read).await?;
            let filter: Filter = serde_json::from_str(&query.filter_json).map_err(|e| {
                WireError::new(
                    ErrorCode::InvalidFilter,
                    format!("filter does not decode: {e}"),
                )
            })?;
            let mut req = SearchRequest::new(query.vector, query.k as usize)
                .with_filter(filter)
                .with_tiers(query.tiers);
            req.ef = query.ef.map(|e| e as usize);
            let include_vectors = query.include_vectors;
            let hits = tokio::task::spawn_blocking(move || -> Result<Vec<WireHit>, WireError> {
                let hits = state
                    .search(&collection, &req)
                    .map_err(|e| WireError::from(RaftError::Index(e)))?;
                Ok(hits
                    .into_iter()
                    .map(|h| {
                        let vector = if include_vectors {
                            state
                                .get(&collection, h.id())
                                .ok()
                                .flatten()
                                .map(|m| m.vector)
                                .unwrap_or_default()
                        } else {
                            Vec::new()
                        };
                        WireHit {
                            memory: WireMemory::from_meta(&h.meta, vector, Some(h.tier)),
                            score: h.score,
                        }
                    })
                    .collect())
            })
            .await
            .map_err(storage)??;
            Ok(ShardReply::Hits { hits, staleness_ms })
        }
        ShardOp::Get {
            collection,
            user,
            ids,
            read,
            include_vectors,
        } => {
            let (state, _) = read_state(&host, gid, read).await?;
            if state.collection_config(&collection).is_none() {
                return Err(WireError::new(
                    ErrorCode::CollectionNotFound,
                    format!("collection {collection} is not on shard {gid}"),
                ));
            }
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for id in ids {
                match state.get_record(&collection, &id).map_err(storage)? {
                    Some(rec) if rec.record.user == user => {
                        let mut record = rec.record;
                        if !include_vectors {
                            record.vector.clear();
                        }
                        found.push(WireMemory { record, tier: None });
                    }
                    _ => missing.push(id),
                }
            }
            Ok(ShardReply::Memories { found, missing })
        }
        ShardOp::Status => {
            let g = host.group(gid).ok_or(RaftError::GroupNotHosted(gid))?;
            let m = g.metrics();
            let state = g.state();
            let memory_count = state
                .collection_names()
                .iter()
                .filter_map(|c| state.index(c).ok())
                .map(|ix| ix.len() as u64)
                .sum();
            Ok(ShardReply::Status(WireStatus {
                leader: m.current_leader,
                term: m.current_term,
                commit_index: m.last_log_index.unwrap_or(0),
                applied_index: state.applied_index(),
                voters: m.membership_config.membership().voter_ids().collect(),
                memory_count,
            }))
        }
    }
}

/// The `Shards` peer service.
pub struct ShardService {
    host: Arc<RaftHost>,
}

impl ShardService {
    pub fn server(host: Arc<RaftHost>) -> ShardsServer<Self> {
        ShardsServer::new(ShardService { host })
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
}

#[tonic::async_trait]
impl Shards for ShardService {
    async fn call(&self, req: Request<ShardCall>) -> Result<Response<ShardCallReply>, Status> {
        let call = req.into_inner();
        let result = match decode::<ShardOp>(&call.op) {
            Ok(op) => execute(self.host.clone(), call.group_id, op).await,
            Err(e) => Err(e),
        };
        Ok(Response::new(ShardCallReply {
            result: encode(&result),
        }))
    }
}

/// The embedded router's transport: this node's replicas directly, others over the network.
pub struct NodeTransport {
    host: Arc<RaftHost>,
    remote: RemoteTransport,
}

impl NodeTransport {
    pub fn new(host: Arc<RaftHost>) -> Self {
        let remote = RemoteTransport::new(host.peer_token())
            .with_local_address(host.transport_config().local_address);
        NodeTransport { host, remote }
    }
}

impl ShardTransport for NodeTransport {
    fn call(
        &self,
        node: engram_raft::NodeId,
        addr: String,
        gid: GroupId,
        op: ShardOp,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ShardReply, WireError>> {
        if node == self.host.node_id() {
            let host = self.host.clone();
            Box::pin(async move {
                tokio::time::timeout(timeout, execute(host, gid, op))
                    .await
                    .map_err(|_| {
                        WireError::new(
                            ErrorCode::DeadlineExceeded,
                            format!("shard {gid} did not answer in {timeout:?}"),
                        )
                    })?
            })
        } else {
            self.remote.call(node, addr, gid, op, timeout)
        }
    }

    fn reachable(&self, node: engram_raft::NodeId) -> bool {
        self.host.peer_reachable(node)
    }
}
