//! The peer gRPC service (`engram.peer.v1.Peer`): Raft traffic from other nodes, dispatched to
//! the local replica of each group. Only reachable with the cluster's peer token.

use std::sync::Arc;
use std::time::Duration;

use engram_api::peer::peer_server::{Peer, PeerServer};
use engram_api::peer::{
    FetchShardRequest, HeartbeatRequest, HeartbeatResponse, PreVoteRequest, PreVoteResponse, InstallSnapshotResponse,
    RaftBatchRequest, RaftBatchResponse, RaftKind, RaftMessage, RaftReply, ShardChunk,
    SnapshotChunk,
};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use crate::host::RaftHost;
use crate::network::PEER_TOKEN_HEADER;
use crate::storage::snapshot::SnapshotFile;
use crate::types::{NodeId, Snapshot, SnapshotMeta, TypeConfig, Vote};

/// The service implementation; build with [`peer_server`].
pub struct PeerService {
    host: Arc<RaftHost>,
}

/// The interceptor guarding every service on the peer port: calls without the cluster's peer
/// token are refused with `Unauthenticated`. Other node-to-node services reuse it.
pub fn peer_auth(token: &str) -> impl tonic::service::Interceptor + Clone + Send + Sync + 'static {
    let token = token.to_string();
    move |req: Request<()>| -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get(PEER_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "peer RPCs need the cluster's peer credential; client credentials are not accepted here",
            ))
        }
    }
}

/// The tonic server for `host`'s peer service, guarded by its peer token.
pub fn peer_server(
    host: Arc<RaftHost>,
) -> tonic::service::interceptor::InterceptedService<
    PeerServer<PeerService>,
    impl tonic::service::Interceptor + Clone,
> {
    let check = peer_auth(host.peer_token());
    let server = PeerServer::new(PeerService { host })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    tonic::service::interceptor::InterceptedService::new(server, check)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PeerService {
    async fn handle(&self, msg: RaftMessage) -> RaftReply {
        let mut reply = RaftReply {
            group_id: msg.group_id,
            kind: msg.kind,
            payload: Vec::new(),
            error: String::new(),
        };
        let Some(group) = self.host.group(msg.group_id) else {
            reply.error = format!(
                "group {} is not hosted on node {}",
                msg.group_id,
                self.host.node_id()
            );
            return reply;
        };
        let result = match RaftKind::try_from(msg.kind) {
            Ok(RaftKind::AppendEntries) => {
                match postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(&msg.payload) {
                    Ok(req) => {
                        let committed = req.leader_commit.map(|l| l.index).unwrap_or(0);
                        let resp = group.raft.append_entries(req).await;
                        if matches!(resp, Ok(openraft::raft::AppendEntriesResponse::Success)) {
                            group.leader_contact(committed);
                        }
                        postcard::to_allocvec(&resp).map_err(|e| e.to_string())
                    }
                    Err(e) => Err(format!("bad append-entries payload: {e}")),
                }
            }
            Ok(RaftKind::Vote) => match postcard::from_bytes::<VoteRequest<NodeId>>(&msg.payload) {
                Ok(req) => {
                    postcard::to_allocvec(&group.raft.vote(req).await).map_err(|e| e.to_string())
                }
                Err(e) => Err(format!("bad vote payload: {e}")),
            },
            _ => Err(format!("unknown raft message kind {}", msg.kind)),
        };
        match result {
            Ok(p) => reply.payload = p,
            Err(e) => reply.error = e,
        }
        reply
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft_batch(
        &self,
        request: Request<RaftBatchRequest>,
    ) -> Result<Response<RaftBatchResponse>, Status> {
        let batch = request.into_inner();
        let replies =
            futures::future::join_all(batch.messages.into_iter().map(|m| self.handle(m))).await;
        Ok(Response::new(RaftBatchResponse { replies }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let req = request.into_inner();
        let lagging = self.host.on_heartbeat(req.from_node, &req.groups);
        Ok(Response::new(HeartbeatResponse {
            lagging_groups: lagging,
        }))
    }

    async fn pre_vote(
        &self,
        request: Request<PreVoteRequest>,
    ) -> Result<Response<PreVoteResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(PreVoteResponse {
            granted: self.host.on_pre_vote(&req.groups),
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<InstallSnapshotResponse>, Status> {
        let mut stream = request.into_inner();
        let chunk_timeout = self.host.transport_config().snapshot_chunk_timeout;
        let Some(first) = next_chunk(&mut stream, chunk_timeout).await? else {
            return Err(Status::invalid_argument("empty snapshot stream"));
        };
        let group = self.host.group(first.group_id).ok_or_else(|| {
            Status::not_found(format!("group {} is not hosted here", first.group_id))
        })?;
        let (vote, meta): (Vote, SnapshotMeta) = postcard::from_bytes(&first.meta)
            .map_err(|e| Status::invalid_argument(format!("bad snapshot meta: {e}")))?;
        let dir = group.snapshot_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
        let path = dir.join(format!(
            "incoming-{}-{}.part",
            meta.snapshot_id,
            rand::random::<u32>()
        ));
        let result = receive(&path, first, &mut stream, chunk_timeout).await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile { path: path.clone() }),
        };
        let install = group.raft.install_full_snapshot(vote, snapshot);
        let resp = match tokio::time::timeout(Duration::from_secs(600), install).await {
            Ok(Ok(r)) => InstallSnapshotResponse {
                payload: postcard::to_allocvec(&r).map_err(|e| Status::internal(e.to_string()))?,
                error: String::new(),
            },
            Ok(Err(fatal)) => InstallSnapshotResponse {
                payload: Vec::new(),
                error: format!("install failed: {fatal}"),
            },
            Err(_) => InstallSnapshotResponse {
                payload: Vec::new(),
                error: "install timed out".into(),
            },
        };
        // Installed files are moved into place; anything left is an abandoned transfer.
        let _ = tokio::fs::remove_file(&path).await;
        Ok(Response::new(resp))
    }

    type FetchShardStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<ShardChunk, Status>> + Send>>;

    async fn fetch_shard(
        &self,
        _request: Request<FetchShardRequest>,
    ) -> Result<Response<Self::FetchShardStream>, Status> {
        Err(Status::unimplemented(
            "FetchShard (shard transfer for rebalancing) is not served yet; replicas catch up through Raft snapshots",
        ))
    }
}

async fn next_chunk(
    s: &mut Streaming<SnapshotChunk>,
    timeout: Duration,
) -> Result<Option<SnapshotChunk>, Status> {
    match tokio::time::timeout(timeout, s.message()).await {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded(
            "snapshot stream made no progress in time",
        )),
    }
}

async fn receive(
    path: &std::path::Path,
    first: SnapshotChunk,
    stream: &mut Streaming<SnapshotChunk>,
    chunk_timeout: Duration,
) -> Result<(), Status> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
    let mut expect = 0u64;
    let mut chunk = first;
    loop {
        if chunk.offset != expect {
            return Err(Status::invalid_argument(format!(
                "snapshot chunk at offset {}, expected {expect}",
                chunk.offset
            )));
        }
        file.write_all(&chunk.data)
            .await
            .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
        expect += chunk.data.len() as u64;
        if chunk.done {
            break;
        }
        chunk = next_chunk(stream, chunk_timeout)
            .await?
            .ok_or_else(|| Status::aborted("snapshot stream ended before the last chunk"))?;
    }
    file.sync_all()
        .await
        .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
    Ok(())
}
