//! The public gRPC service (`engram.v1.Engram`), served by every node and by `engram router`:
//! validates each request, routes it through the [`Router`], and answers typed errors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_api::v1::engram_server::{Engram, EngramServer};
use engram_api::v1::{self, scope, ShardPosition};
use engram_api::{ApiError, ErrorCode};
use engram_index::Memory;
use engram_raft::{Command, GroupId, NodeId, ShardRequest};
use tonic::{Request, Response, Status};

use crate::convert::*;
use crate::hashing::shard_for_user;
use crate::map::{CollectionInfo, Settings};
use crate::pd;
use crate::router::Router;
use crate::wire::{ReadMode, ShardOp, ShardReply, WireQuery};

pub struct EngramService {
    router: Arc<Router>,
}

impl EngramService {
    pub fn new(router: Arc<Router>) -> Self {
        EngramService { router }
    }

    /// The tonic server, with message limits sized for the largest allowed batch.
    pub fn server(router: Arc<Router>) -> EngramServer<Self> {
        EngramServer::new(EngramService::new(router))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
}

/// The deadline a request carries (`grpc-timeout`), capped by the router's default.
fn deadline_of<T>(router: &Router, req: &Request<T>) -> Instant {
    let t = req
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    router.deadline(t)
}

fn parse_grpc_timeout(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn read_mode(router: &Router, consistency: i32) -> Result<ReadMode, ApiError> {
    match v1::Consistency::try_from(consistency) {
        Ok(v1::Consistency::StrongUnspecified) => Ok(ReadMode::Strong),
        Ok(v1::Consistency::Bounded) => Ok(ReadMode::Bounded {
            max_staleness_ms: router.config().max_staleness_ms,
        }),
        Err(_) => Err(invalid(format!("unknown consistency {consistency}"))),
    }
}

fn track<T>(
    op: &'static str,
    started: Instant,
    r: Result<T, ApiError>,
) -> Result<Response<T>, Status> {
    metrics::histogram!("engram_router_request_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    match r {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            metrics::counter!("engram_router_errors_total", "op" => op, "code" => e.code.as_str_name())
                .increment(1);
            Err(e.into())
        }
    }
}

fn new_idempotency_key() -> String {
    format!("auto-{:032x}", rand::random::<u128>())
}

impl EngramService {
    /// Runs one request: its deadline (the call's gRPC timeout or the router default, raised
    /// to `floor` and capped at `cap`), the handler, and the request metrics.
    async fn serve<Req, Resp, F, Fut>(
        &self,
        op: &'static str,
        req: Request<Req>,
        (floor, cap): (Option<Duration>, Option<Duration>),
        handler: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(Req, Instant) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, ApiError>>,
    {
        let started = Instant::now();
        let mut deadline = deadline_of(&self.router, &req);
        if let Some(f) = floor {
            deadline = deadline.max(started + f);
        }
        if let Some(c) = cap {
            deadline = deadline.min(started + c);
        }
        track(op, started, handler(req.into_inner(), deadline).await)
    }

    async fn resolve(
        &self,
        tenant: &str,
        collection: &str,
        deadline: Instant,
    ) -> Result<CollectionInfo, ApiError> {
        validate_tenant(tenant)?;
        validate_collection_name(collection)?;
        self.router.collection(tenant, collection, deadline).await
    }

    fn user_shard(&self, col: &CollectionInfo, user: &str) -> Result<GroupId, ApiError> {
        shard_for_user(&col.tenant, user, &col.shards).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Internal,
                format!("collection {} has no shards", col.name),
            )
        })
    }

    /// Writes per-shard commands in parallel; each shard's idempotency key is derived from
    /// the request's, so a retried request replays on the shards that already applied it.
    async fn write_shards(
        &self,
        col: &CollectionInfo,
        key: &str,
        commands: BTreeMap<GroupId, Command>,
        deadline: Instant,
    ) -> Result<(u64, u64, bool, Vec<ShardPosition>), ApiError> {
        let calls = commands.into_iter().map(|(gid, command)| {
            let req = ShardRequest::new(command)
                .with_idempotency_key(format!("{}/{}/{}", col.id, key, gid));
            async move {
                (
                    gid,
                    self.router
                        .leader_call(gid, ShardOp::Write(req), deadline)
                        .await,
                )
            }
        });
        let (mut upserted, mut deleted, mut replayed) = (0, 0, true);
        let mut positions = Vec::new();
        let mut first_err = None;
        for (gid, r) in futures::future::join_all(calls).await {
            match r {
                Ok(ShardReply::Written {
                    index,
                    upserted: u,
                    deleted: d,
                    deduplicated,
                }) => {
                    upserted += u;
                    deleted += d;
                    replayed &= deduplicated;
                    positions.push(ShardPosition {
                        shard_id: gid,
                        log_index: index,
                    });
                }
                Ok(other) => {
                    first_err.get_or_insert(ApiError::new(
                        ErrorCode::Internal,
                        format!("unexpected write reply: {other:?}"),
                    ));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok((upserted, deleted, replayed, positions))
    }

    async fn upsert_memories(
        &self,
        tenant: &str,
        collection: &str,
        memories: &[v1::Memory],
        idempotency_key: &str,
        deadline: Instant,
    ) -> Result<v1::UpsertResponse, ApiError> {
        let limits = &self.router.config().limits;
        if memories.is_empty() {
            return Err(invalid("no memories to write").with("field", "memories"));
        }
        if memories.len() > limits.max_batch {
            return Err(ApiError::new(
                ErrorCode::BatchTooLarge,
                format!(
                    "{} memories in one batch; the limit is {}",
                    memories.len(),
                    limits.max_batch
                ),
            ));
        }
        let col = self.resolve(tenant, collection, deadline).await?;
        let now = engram_raft::command::now_ms();
        // Validate everything first: a bad memory rejects the whole request before any write.
        let mut by_shard: BTreeMap<GroupId, Vec<Memory>> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for m in memories {
            let memory = memory_from(m, &col.config, limits, now)?;
            if !seen.insert(memory.meta.id.clone()) {
                return Err(invalid(format!(
                    "memory {:?} of user {:?} appears twice in the batch",
                    m.id, m.user
                )));
            }
            by_shard
                .entry(self.user_shard(&col, &memory.meta.user)?)
                .or_default()
                .push(memory);
        }
        let key = if idempotency_key.is_empty() {
            new_idempotency_key()
        } else {
            idempotency_key.to_string()
        };
        let commands = by_shard
            .into_iter()
            .map(|(gid, ms)| (gid, Command::upsert(col.shard_name(), ms)))
            .collect();
        let (upserted, _, replayed, positions) =
            self.write_shards(&col, &key, commands, deadline).await?;
        metrics::counter!("engram_router_memories_written_total").increment(upserted);
        Ok(v1::UpsertResponse {
            written: if replayed { 0 } else { upserted as u32 },
            replayed,
            positions,
        })
    }
}

#[tonic::async_trait]
impl Engram for EngramService {
    async fn create_collection(
        &self,
        req: Request<v1::CreateCollectionRequest>,
    ) -> Result<Response<v1::Collection>, Status> {
        self.serve(
            "create_collection",
            req,
            (Some(Duration::from_secs(30)), None),
            |r, deadline| async move {
                validate_tenant(&r.tenant)?;
                validate_collection_name(&r.name)?;
                let config = collection_config(&r, &self.router.config().limits)?;
                let c = pd::create_collection(
                    &self.router,
                    &r.tenant,
                    &r.name,
                    config,
                    r.shards,
                    deadline,
                )
                .await?;
                Ok(collection_to(&c))
            },
        )
        .await
    }

    async fn describe_collection(
        &self,
        req: Request<v1::DescribeCollectionRequest>,
    ) -> Result<Response<v1::Collection>, Status> {
        self.serve(
            "describe_collection",
            req,
            (None, None),
            |r, deadline| async move {
                self.resolve(&r.tenant, &r.name, deadline)
                    .await
                    .map(|c| collection_to(&c))
            },
        )
        .await
    }

    async fn list_collections(
        &self,
        req: Request<v1::ListCollectionsRequest>,
    ) -> Result<Response<v1::ListCollectionsResponse>, Status> {
        self.serve(
            "list_collections",
            req,
            (None, None),
            |r, deadline| async move {
                validate_tenant(&r.tenant)?;
                let map = self.router.refresh_map(true, deadline).await?;
                Ok(v1::ListCollectionsResponse {
                    collections: map
                        .tenant_collections(&r.tenant)
                        .filter(|c| c.ready)
                        .map(collection_to)
                        .collect(),
                })
            },
        )
        .await
    }

    async fn drop_collection(
        &self,
        req: Request<v1::DropCollectionRequest>,
    ) -> Result<Response<v1::DropCollectionResponse>, Status> {
        self.serve(
            "drop_collection",
            req,
            (Some(Duration::from_secs(30)), None),
            |r, deadline| async move {
                validate_tenant(&r.tenant)?;
                validate_collection_name(&r.name)?;
                let dropped =
                    pd::drop_collection(&self.router, &r.tenant, &r.name, deadline).await?;
                Ok(v1::DropCollectionResponse { dropped })
            },
        )
        .await
    }

    async fn upsert(
        &self,
        req: Request<v1::UpsertRequest>,
    ) -> Result<Response<v1::UpsertResponse>, Status> {
        self.serve("upsert", req, (None, None), |r, deadline| async move {
            match &r.memory {
                None => Err(invalid("memory is required").with("field", "memory")),
                Some(m) => {
                    self.upsert_memories(
                        &r.tenant,
                        &r.collection,
                        std::slice::from_ref(m),
                        &r.idempotency_key,
                        deadline,
                    )
                    .await
                }
            }
        })
        .await
    }

    async fn upsert_batch(
        &self,
        req: Request<v1::UpsertBatchRequest>,
    ) -> Result<Response<v1::UpsertResponse>, Status> {
        self.serve(
            "upsert_batch",
            req,
            (None, None),
            |r, deadline| async move {
                self.upsert_memories(
                    &r.tenant,
                    &r.collection,
                    &r.memories,
                    &r.idempotency_key,
                    deadline,
                )
                .await
            },
        )
        .await
    }

    async fn get(&self, req: Request<v1::GetRequest>) -> Result<Response<v1::GetResponse>, Status> {
        self.serve("get", req, (None, None), |r, deadline| async move {
            let limits = &self.router.config().limits;
            validate_key("user", &r.user, limits)?;
            if r.ids.is_empty() || r.ids.len() > limits.max_batch {
                return Err(
                    invalid(format!("ids: give 1..={} ids", limits.max_batch)).with("field", "ids")
                );
            }
            let col = self.resolve(&r.tenant, &r.collection, deadline).await?;
            let gid = self.user_shard(&col, &r.user)?;
            let read = read_mode(&self.router, r.consistency)?;
            let op = ShardOp::Get {
                collection: col.shard_name(),
                user: r.user.clone(),
                ids: r
                    .ids
                    .iter()
                    .map(|id| validate_key("id", id, limits).map(|_| internal_id(&r.user, id)))
                    .collect::<Result<Vec<_>, _>>()?,
                read,
                include_vectors: r.include_vectors,
            };
            let reply = match read {
                ReadMode::Strong => self.router.leader_call(gid, op, deadline).await?,
                ReadMode::Bounded { .. } => self.router.replica_call(gid, op, deadline).await?,
            };
            match reply {
                ShardReply::Memories { found, missing } => Ok(v1::GetResponse {
                    memories: found
                        .into_iter()
                        .map(|m| memory_to(m, r.include_vectors, true))
                        .collect(),
                    missing: missing
                        .iter()
                        .map(|id| external_id(id).to_string())
                        .collect(),
                }),
                other => Err(ApiError::new(
                    ErrorCode::Internal,
                    format!("unexpected reply: {other:?}"),
                )),
            }
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        self.serve("delete", req, (None, None), |r, deadline| async move {
            let limits = &self.router.config().limits;
            let col = self.resolve(&r.tenant, &r.collection, deadline).await?;
            let mut commands = BTreeMap::new();
            match &r.target {
                Some(v1::delete_request::Target::Ids(ids)) => {
                    validate_key("user", &ids.user, limits)?;
                    if ids.ids.is_empty() || ids.ids.len() > limits.max_batch {
                        return Err(invalid(format!("ids: give 1..={} ids", limits.max_batch)));
                    }
                    // Ids are scoped to their user: another user's memory with the same id is
                    // a different memory and is left alone.
                    let gid = self.user_shard(&col, &ids.user)?;
                    let internal = ids
                        .ids
                        .iter()
                        .map(|id| {
                            validate_key("id", id, limits).map(|_| internal_id(&ids.user, id))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    commands.insert(
                        gid,
                        Command::Delete {
                            collection: col.shard_name(),
                            ids: internal,
                        },
                    );
                }
                Some(v1::delete_request::Target::Filter(fs)) => {
                    let mut filter = filter_from(fs.filter.as_ref())?;
                    let shards = match fs.scope.as_ref().and_then(|s| s.scope.as_ref()) {
                        Some(scope::Scope::User(u)) => {
                            validate_key("user", u, limits)?;
                            filter.user = Some(u.clone());
                            vec![self.user_shard(&col, u)?]
                        }
                        Some(scope::Scope::Tenant(true)) => col.shards.clone(),
                        _ => {
                            return Err(invalid(
                                "delete by filter needs a scope: a user, or tenant = true",
                            )
                            .with("field", "scope"))
                        }
                    };
                    let filter_json = serde_json::to_string(&filter)
                        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
                    for gid in shards {
                        commands.insert(
                            gid,
                            Command::DeleteByFilter {
                                collection: col.shard_name(),
                                filter_json: filter_json.clone(),
                            },
                        );
                    }
                }
                None => {
                    return Err(invalid("delete needs a target: ids of a user, or a filter")
                        .with("field", "target"))
                }
            }
            let key = if r.idempotency_key.is_empty() {
                new_idempotency_key()
            } else {
                r.idempotency_key.clone()
            };
            let (_, deleted, replayed, _) =
                self.write_shards(&col, &key, commands, deadline).await?;
            Ok(v1::DeleteResponse { deleted, replayed })
        })
        .await
    }

    async fn search(
        &self,
        req: Request<v1::SearchRequest>,
    ) -> Result<Response<v1::SearchResponse>, Status> {
        self.serve("search", req, (None, None), |r, deadline| async move {
            let limits = &self.router.config().limits;
            if r.k == 0 || r.k > limits.max_k {
                return Err(
                    invalid(format!("k = {} is out of range 1..={}", r.k, limits.max_k))
                        .with("field", "k"),
                );
            }
            let col = self.resolve(&r.tenant, &r.collection, deadline).await?;
            col.config.validate_vector(&r.vector).map_err(|e| {
                ApiError::new(
                    engram_raft::index_error_code(&e),
                    format!("query vector: {e}"),
                )
            })?;
            let mut filter = filter_from(r.filter.as_ref())?;
            let read = read_mode(&self.router, r.consistency)?;
            let (shards, user_scope) = match r.scope.as_ref().and_then(|s| s.scope.as_ref()) {
                Some(scope::Scope::User(u)) => {
                    validate_key("user", u, limits)?;
                    filter.user = Some(u.clone());
                    (vec![self.user_shard(&col, u)?], true)
                }
                Some(scope::Scope::Tenant(true)) => (col.shards.clone(), false),
                _ => {
                    return Err(invalid("search needs a scope: a user, or tenant = true")
                        .with("field", "scope"))
                }
            };
            let filter_json = serde_json::to_string(&filter)
                .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
            let query = WireQuery {
                vector: r.vector.clone(),
                k: r.k,
                filter_json,
                tiers: tiers_from(&r.tiers)?,
                ef: (r.ef > 0).then_some(r.ef),
                include_vectors: r.include_vectors,
            };
            let name = col.shard_name();
            let gathered = self
                .router
                .fan_out_search(
                    &shards,
                    |_| ShardOp::Search {
                        collection: name.clone(),
                        query: query.clone(),
                        read,
                    },
                    read == ReadMode::Strong,
                    deadline,
                )
                .await;
            if !gathered.failed.is_empty()
                && (user_scope || r.require_complete || gathered.failed.len() == shards.len())
            {
                let (gid, e) = gathered
                    .failed
                    .into_iter()
                    .next()
                    .unwrap_or((0, ApiError::new(ErrorCode::Internal, "no shard answered")));
                return Err(e.with("shard", gid.to_string()));
            }
            if !gathered.failed.is_empty() {
                metrics::counter!("engram_router_partial_results_total").increment(1);
            }
            let mut hits = gathered.hits;
            hits.sort_by(|a, b| {
                b.score
                    .total_cmp(&a.score)
                    .then_with(|| a.memory.record.id.cmp(&b.memory.record.id))
            });
            hits.truncate(r.k as usize);
            Ok(v1::SearchResponse {
                hits: hits
                    .into_iter()
                    .map(|h| hit_to(h, r.include_vectors, r.include_payload))
                    .collect(),
                partial: !gathered.failed.is_empty(),
                failed_shards: gathered
                    .failed
                    .into_iter()
                    .map(|(gid, e)| v1::ShardFailure {
                        shard_id: gid,
                        error: Some(v1::ErrorDetail {
                            code: e.code as i32,
                            message: e.message,
                            metadata: e.metadata,
                        }),
                    })
                    .collect(),
                staleness_ms: gathered.staleness_ms,
            })
        })
        .await
    }

    async fn cluster_status(
        &self,
        req: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        self.serve(
            "cluster_status",
            req,
            (None, Some(Duration::from_secs(5))),
            |_, deadline| async move {
                let map = self.router.refresh_map(false, deadline).await?;
                let live = pd::live_nodes(&self.router, &map).await;
                let (statuses, meta) = futures::future::join(
                    futures::future::join_all(map.shards.keys().map(|&gid| async move {
                        (gid, pd::shard_status(&self.router, gid, deadline).await)
                    })),
                    pd::shard_status(&self.router, crate::map::META_GROUP, deadline),
                )
                .await;
                let mut leaders: BTreeMap<NodeId, u32> = BTreeMap::new();
                let mut shards = Vec::new();
                for (gid, st) in statuses {
                    let info = &map.shards[&gid];
                    let (leader, term, commit, count) = match st {
                        Ok(s) => (
                            s.leader.unwrap_or(0),
                            s.term,
                            s.commit_index,
                            s.memory_count,
                        ),
                        Err(_) => (0, 0, 0, 0),
                    };
                    *leaders.entry(leader).or_default() += 1;
                    shards.push(v1::ShardStatus {
                        shard_id: gid,
                        leader_node: leader,
                        replica_nodes: info.replicas.clone(),
                        term,
                        commit_index: commit,
                        memory_count: count,
                    });
                }
                let load = map.load();
                Ok(v1::ClusterStatusResponse {
                    shard_map_epoch: map.epoch,
                    nodes: map
                        .nodes
                        .iter()
                        .map(|(id, n)| v1::NodeStatus {
                            node_id: *id,
                            zone: n.zone.clone(),
                            address: n.client_addr.clone(),
                            alive: live.contains(id),
                            replicas: load.get(id).map(|l| l.0 as u32).unwrap_or(0),
                            leaders: leaders.get(id).copied().unwrap_or(0),
                        })
                        .collect(),
                    shards,
                    meta_leader: meta.ok().and_then(|s| s.leader).unwrap_or(0),
                })
            },
        )
        .await
    }
}

/// Settings are part of the bootstrap; re-exported for the node's config.
pub type ClusterSettings = Settings;
