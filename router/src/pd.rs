//! Placement driver operations. They run on whichever router receives the request; each is a
//! compare-and-set of the cluster map in the metadata group, followed by the shard writes that
//! make it true. Every step is idempotent, so a retried or resumed operation finishes the job.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_api::{ApiError, ErrorCode};
use engram_index::IndexConfig;
use engram_raft::{Command, GroupId, NodeId, ShardRequest};

use crate::hashing::tenant_shards;
use crate::map::{
    collection_key, ClusterMap, CollectionInfo, NodeInfo, Settings, ShardInfo, TenantInfo,
};
use crate::placement::{PlacementError, Placer};
use crate::router::Router;
use crate::wire::{ShardOp, ShardReply};

/// Why new shards cannot be placed now. With every registered node answering the zone rule
/// could be met, the cause is nodes that did not answer: transient, retryable. Otherwise the
/// cluster's shape cannot meet it: PLACEMENT_IMPOSSIBLE.
fn placement_error(m: &ClusterMap, live: &BTreeSet<NodeId>) -> impl Fn(PlacementError) -> ApiError {
    let all: BTreeSet<NodeId> = m.nodes.keys().copied().collect();
    let down: Vec<NodeId> = all.difference(live).copied().collect();
    let possible_when_all_up = !down.is_empty() && Placer::new(m, &all).place().is_ok();
    move |e| {
        if possible_when_all_up {
            ApiError::new(
                ErrorCode::ShardUnavailable,
                format!("{e}: node(s) {down:?} did not answer; retry when they are back"),
            )
        } else {
            ApiError::new(ErrorCode::PlacementImpossible, e.to_string())
        }
    }
}

/// Creates the cluster map on first use (with `settings`) and records `node` in it.
pub async fn register_node(
    router: &Router,
    id: NodeId,
    info: NodeInfo,
    settings: &Settings,
    deadline: Instant,
) -> Result<Arc<ClusterMap>, ApiError> {
    router
        .update_map(deadline, |m| {
            let mut changed = false;
            if m.next_group == 0 {
                *m = ClusterMap::new(settings.clone());
                changed = true;
            }
            if m.nodes.get(&id) != Some(&info) {
                m.nodes.insert(id, info.clone());
                changed = true;
            }
            Ok(changed)
        })
        .await
}

/// Nodes of the map that answer a ping within two seconds.
pub async fn live_nodes(router: &Router, map: &ClusterMap) -> BTreeSet<NodeId> {
    let pings = map.nodes.keys().map(|&n| async move {
        let ok = router
            .call_node(n, 0, ShardOp::Ping, Duration::from_secs(2))
            .await
            .is_ok();
        (n, ok)
    });
    futures::future::join_all(pings)
        .await
        .into_iter()
        .filter(|(_, ok)| *ok)
        .map(|(n, _)| n)
        .collect()
}

fn new_shards(
    m: &mut ClusterMap,
    placer: &mut Placer,
    n: u32,
    dedicated_to: Option<&str>,
    why: &impl Fn(PlacementError) -> ApiError,
) -> Result<Vec<GroupId>, ApiError> {
    let mut out = Vec::new();
    for _ in 0..n.max(1) {
        let (replicas, leader) = placer.place().map_err(why)?;
        let gid = m.next_group;
        m.next_group += 1;
        m.shards.insert(
            gid,
            ShardInfo {
                replicas,
                leader_hint: leader,
                dedicated_to: dedicated_to.map(str::to_string),
                ready: false,
            },
        );
        out.push(gid);
    }
    Ok(out)
}

/// Creates a tenant's collection: places new shard groups if needed (the shared pool on first
/// use, or the tenant's own shards when `dedicated_shards > 0`), waits for the groups to form,
/// creates the collection on each, then marks it ready.
pub async fn create_collection(
    router: &Router,
    tenant: &str,
    name: &str,
    config: IndexConfig,
    dedicated_shards: u32,
    deadline: Instant,
) -> Result<CollectionInfo, ApiError> {
    let snapshot = router.refresh_map(true, deadline).await?;
    let live = live_nodes(router, &snapshot).await;
    let key = collection_key(tenant, name);
    let map = router
        .update_map(deadline, |m| {
            if let Some(c) = m.collections.get(&key) {
                if c.ready {
                    return Err(ApiError::new(
                        ErrorCode::CollectionExists,
                        format!("tenant {tenant:?} already has a collection {name:?}"),
                    )
                    .with("collection", name));
                }
                if c.config != config {
                    return Err(ApiError::new(
                        ErrorCode::CollectionExists,
                        format!("collection {name:?} of tenant {tenant:?} is being created with another configuration"),
                    ));
                }
                return Ok(false); // resume an interrupted creation
            }
            let why = placement_error(m, &live);
            let mut placer = Placer::new(m, &live);
            let dedicated = m.tenants.get(tenant).map(|t| t.dedicated.clone()).unwrap_or_default();
            let shards = if !dedicated.is_empty() {
                dedicated
            } else if dedicated_shards > 0 {
                let s = new_shards(m, &mut placer, dedicated_shards, Some(tenant), &why)?;
                m.tenants.insert(tenant.to_string(), TenantInfo { dedicated: s.clone() });
                s
            } else {
                if m.shared_pool.is_empty() {
                    let n = m.settings.shared_shards;
                    m.shared_pool = new_shards(m, &mut placer, n, None, &why)?;
                }
                m.tenants.entry(tenant.to_string()).or_default();
                tenant_shards(tenant, &m.shared_pool, m.settings.tenant_spread as usize)
            };
            let id = m.next_collection;
            m.next_collection += 1;
            m.collections.insert(
                key.clone(),
                CollectionInfo {
                    id,
                    tenant: tenant.to_string(),
                    name: name.to_string(),
                    config: config.clone(),
                    shards,
                    created_at_ms: engram_raft::command::now_ms(),
                    ready: false,
                },
            );
            Ok(true)
        })
        .await?;
    let col =
        map.collections.get(&key).cloned().ok_or_else(|| {
            ApiError::new(ErrorCode::Internal, "collection vanished from the map")
        })?;
    // The groups' replicas form them (see the node's reconciler); creating the collection on
    // each retries until its group has a leader.
    let config_json = serde_json::to_string(&col.config)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let create = Command::CreateCollection {
        name: col.shard_name(),
        config_json,
    };
    write_each(
        router,
        &col.shards,
        &create,
        &format!("create/{}", col.shard_name()),
        ErrorCode::CollectionExists,
        deadline,
    )
    .await?;
    let id = col.id;
    let map = router
        .update_map(deadline, |m| {
            let mut changed = false;
            let Some(c) = m.collections.get_mut(&key).filter(|c| c.id == id) else {
                return Err(ApiError::new(
                    ErrorCode::CollectionNotFound,
                    format!("collection {name:?} was dropped while being created"),
                ));
            };
            if !c.ready {
                c.ready = true;
                changed = true;
            }
            let shards = c.shards.clone();
            for gid in shards {
                if let Some(s) = m.shards.get_mut(&gid) {
                    if !s.ready {
                        s.ready = true;
                        changed = true;
                    }
                }
            }
            Ok(changed)
        })
        .await?;
    map.collections
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "collection vanished from the map"))
}

/// Removes a collection from the map, then from its shards.
pub async fn drop_collection(
    router: &Router,
    tenant: &str,
    name: &str,
    deadline: Instant,
) -> Result<bool, ApiError> {
    let key = collection_key(tenant, name);
    let mut removed: Option<CollectionInfo> = None;
    router
        .update_map(deadline, |m| {
            removed = m.collections.remove(&key);
            Ok(removed.is_some())
        })
        .await?;
    let Some(col) = removed else {
        return Ok(false);
    };
    let drop = Command::DropCollection {
        name: col.shard_name(),
    };
    write_each(
        router,
        &col.shards,
        &drop,
        &format!("drop/{}", col.shard_name()),
        ErrorCode::CollectionNotFound,
        deadline,
    )
    .await?;
    Ok(true)
}

/// Writes `command` to every shard in parallel through its leader (retrying while groups
/// form), with a fixed idempotency key so a resumed operation applies it once. `done` is the
/// rejection that means "already applied" (the collection exists / is gone).
async fn write_each(
    router: &Router,
    shards: &[GroupId],
    command: &Command,
    key: &str,
    done: ErrorCode,
    deadline: Instant,
) -> Result<(), ApiError> {
    let writes = shards.iter().map(|&gid| {
        let req = ShardRequest::new(command.clone()).with_idempotency_key(key);
        async move {
            match router.leader_call(gid, ShardOp::Write(req), deadline).await {
                Ok(_) => Ok(()),
                Err(e) if e.code == done => Ok(()),
                Err(e) => Err(e),
            }
        }
    });
    for r in futures::future::join_all(writes).await {
        r?;
    }
    Ok(())
}

/// Per-shard status as the shard's leader (or any replica) reports it.
pub async fn shard_status(
    router: &Router,
    gid: GroupId,
    deadline: Instant,
) -> Result<crate::wire::WireStatus, ApiError> {
    match router.leader_call(gid, ShardOp::Status, deadline).await? {
        ShardReply::Status(s) => Ok(s),
        other => Err(ApiError::new(
            ErrorCode::Internal,
            format!("unexpected status reply: {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(zones: &[&str]) -> ClusterMap {
        let mut m = ClusterMap::new(Settings::default());
        for (i, z) in zones.iter().enumerate() {
            m.nodes.insert(
                i as NodeId + 1,
                NodeInfo {
                    zone: z.to_string(),
                    client_addr: String::new(),
                    peer_addr: String::new(),
                    http_addr: String::new(),
                },
            );
        }
        m
    }

    #[test]
    fn unreachable_nodes_are_retryable_a_bad_shape_is_not() {
        // Three zones, but zone c's node does not answer: retry later.
        let m = map(&["a", "b", "c"]);
        let live: BTreeSet<NodeId> = [1, 2].into_iter().collect();
        let e = Placer::new(&m, &live)
            .place()
            .map_err(placement_error(&m, &live))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ShardUnavailable);
        assert!(
            e.code.is_retryable() && e.message.contains("[3]"),
            "{}",
            e.message
        );

        // Two zones for three replicas: no amount of waiting helps.
        let m = map(&["a", "a", "b"]);
        let live: BTreeSet<NodeId> = [1, 2, 3].into_iter().collect();
        let e = Placer::new(&m, &live)
            .place()
            .map_err(placement_error(&m, &live))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PlacementImpossible);
        let live: BTreeSet<NodeId> = [1, 3].into_iter().collect();
        let e = Placer::new(&m, &live)
            .place()
            .map_err(placement_error(&m, &live))
            .unwrap_err();
        assert_eq!(
            e.code,
            ErrorCode::PlacementImpossible,
            "a node down does not hide a bad shape"
        );
    }
}
