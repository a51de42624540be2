//! The peer transport: openraft's `RaftNetwork` over the `engram.peer.v1.Peer` gRPC service.
//!
//! - One [`PeerClient`] per remote node, shared by every group: one HTTP/2 connection per
//!   node pair, whatever the number of groups.
//! - Raft messages (append-entries, votes) from all groups to the same node are **batched**:
//!   a per-peer task drains whatever is queued into one `RaftBatch` call (a few in flight at
//!   once, so one slow batch does not stall the rest).
//! - Every call has a deadline; snapshot streams have a per-chunk progress deadline and an
//!   overall one, so a peer that is cut off never hangs a sender.
//! - Requests carry the cluster's peer token; the server refuses calls without it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_api::peer::peer_client::PeerClient as GrpcPeerClient;
use engram_api::peer::{
    HeartbeatRequest, PreVoteRequest, RaftBatchRequest, RaftKind, RaftMessage, RaftReply, SnapshotChunk,
};
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::types::{GroupId, NodeId, PeerNode, Snapshot, TypeConfig, Vote};

/// Metadata key carrying the peer credential.
pub const PEER_TOKEN_HEADER: &str = "x-engram-peer-token";

/// Transport tuning.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Most Raft messages in one batch.
    pub max_batch_messages: usize,
    /// Batches in flight per peer.
    pub max_inflight_batches: usize,
    pub connect_timeout: Duration,
    /// Snapshot chunk size.
    pub snapshot_chunk_bytes: usize,
    /// A snapshot stream that makes no progress for this long is abandoned.
    pub snapshot_chunk_timeout: Duration,
    /// A whole snapshot transfer is abandoned after this long.
    pub snapshot_timeout: Duration,
    /// Source address of outgoing peer connections (a node dials from the address it
    /// advertises, so per-address network policy, and the chaos suite's partitions, apply).
    pub local_address: Option<std::net::IpAddr>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_batch_messages: 256,
            max_inflight_batches: 4,
            connect_timeout: Duration::from_secs(2),
            snapshot_chunk_bytes: 1 << 20,
            snapshot_chunk_timeout: Duration::from_secs(10),
            snapshot_timeout: Duration::from_secs(600),
            local_address: None,
        }
    }
}

struct Pending {
    msg: RaftMessage,
    deadline: Duration,
    reply: oneshot::Sender<Result<RaftReply, tonic::Status>>,
}

/// The connection to one remote node, shared by all groups.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    grpc: GrpcPeerClient<Channel>,
    queue: mpsc::UnboundedSender<Pending>,
    token: String,
    config: TransportConfig,
    from: NodeId,
    /// When this client was made, and when the peer last answered one of its RPCs.
    contact: Arc<Contact>,
}

/// A peer's last answer (to a heartbeat, pre-vote or Raft batch): the failure detector the
/// leader's quorum check and the router's replica choice read.
#[derive(Debug)]
pub(crate) struct Contact {
    since: Instant,
    last_ok_ms: AtomicU64,
}

impl Contact {
    fn new() -> Self {
        Contact {
            since: Instant::now(),
            last_ok_ms: AtomicU64::new(u64::MAX),
        }
    }

    fn ok(&self) {
        self.last_ok_ms
            .store(self.since.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether the peer answered within `within` (a client younger than that is given the
    /// benefit of the doubt: it has not had the chance to hear anything yet).
    fn fresh(&self, within: Duration) -> bool {
        let now = self.since.elapsed();
        if now < within {
            return true;
        }
        match self.last_ok_ms.load(Ordering::Relaxed) {
            u64::MAX => false,
            ms => now.saturating_sub(Duration::from_millis(ms)) < within,
        }
    }
}

impl PeerClient {
    fn connect(
        from: NodeId,
        target: NodeId,
        addr: &str,
        token: &str,
        config: &TransportConfig,
    ) -> Result<Arc<Self>, String> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
            .connect_timeout(config.connect_timeout)
            .local_address(config.local_address)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10));
        let channel = endpoint.connect_lazy();
        let grpc = GrpcPeerClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (tx, rx) = mpsc::unbounded_channel();
        let client = Arc::new(PeerClient {
            target,
            addr: addr.to_string(),
            grpc: grpc.clone(),
            queue: tx,
            token: token.to_string(),
            config: config.clone(),
            from,
            contact: Arc::new(Contact::new()),
        });
        tokio::spawn(batch_loop(
            rx,
            grpc,
            from,
            token.to_string(),
            config.max_batch_messages,
            config.max_inflight_batches,
            client.contact.clone(),
        ));
        Ok(client)
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Ok(v) = MetadataValue::try_from(self.token.as_str()) {
            req.metadata_mut().insert(PEER_TOKEN_HEADER, v);
        }
        req
    }

    /// One node-level heartbeat; returns the groups the peer wants a real append for.
    pub(crate) async fn heartbeat(
        &self,
        req: HeartbeatRequest,
        deadline: Duration,
    ) -> Result<Vec<u64>, tonic::Status> {
        let mut r = self.request(req);
        r.set_timeout(deadline);
        let mut grpc = self.grpc.clone();
        match tokio::time::timeout(deadline, grpc.heartbeat(r)).await {
            Ok(Ok(resp)) => {
                self.contact.ok();
                Ok(resp.into_inner().lagging_groups)
            }
            Ok(Err(s)) => Err(s),
            Err(_) => Err(tonic::Status::deadline_exceeded("heartbeat timed out")),
        }
    }

    /// One pre-vote round with this peer; returns the groups it grants.
    pub(crate) async fn pre_vote(
        &self,
        req: PreVoteRequest,
        deadline: Duration,
    ) -> Result<Vec<u64>, tonic::Status> {
        let mut r = self.request(req);
        r.set_timeout(deadline);
        let mut grpc = self.grpc.clone();
        match tokio::time::timeout(deadline, grpc.pre_vote(r)).await {
            Ok(Ok(resp)) => {
                self.contact.ok();
                Ok(resp.into_inner().granted)
            }
            Ok(Err(s)) => Err(s),
            Err(_) => Err(tonic::Status::deadline_exceeded("pre-vote timed out")),
        }
    }

    async fn call(&self, msg: RaftMessage, deadline: Duration) -> Result<RaftReply, tonic::Status> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Pending {
                msg,
                deadline,
                reply: tx,
            })
            .map_err(|_| tonic::Status::unavailable("peer client stopped"))?;
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(tonic::Status::unavailable("peer batch dropped")),
            Err(_) => Err(tonic::Status::deadline_exceeded("peer call timed out")),
        }
    }
}

async fn batch_loop(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    grpc: GrpcPeerClient<Channel>,
    from: NodeId,
    token: String,
    max_batch: usize,
    max_inflight: usize,
    contact: Arc<Contact>,
) {
    let inflight = Arc::new(Semaphore::new(max_inflight.max(1)));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        let mut grpc = grpc.clone();
        let token = token.clone();
        let contact = contact.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let deadline = batch.iter().map(|p| p.deadline).max().unwrap_or_default();
            let (messages, replies): (Vec<RaftMessage>, Vec<_>) =
                batch.into_iter().map(|p| (p.msg, p.reply)).unzip();
            metrics::histogram!("engram_raft_transport_batch_messages")
                .record(messages.len() as f64);
            let mut req = tonic::Request::new(RaftBatchRequest {
                from_node: from,
                messages,
            });
            req.set_timeout(deadline);
            if let Ok(v) = MetadataValue::try_from(token.as_str()) {
                req.metadata_mut().insert(PEER_TOKEN_HEADER, v);
            }
            match tokio::time::timeout(deadline, grpc.raft_batch(req)).await {
                Ok(Ok(resp)) => {
                    contact.ok();
                    let mut got = resp.into_inner().replies.into_iter();
                    for r in replies {
                        let _ = r.send(got.next().ok_or_else(|| {
                            tonic::Status::internal("peer answered fewer messages than sent")
                        }));
                    }
                }
                Ok(Err(status)) => {
                    for r in replies {
                        let _ = r.send(Err(status.clone()));
                    }
                }
                Err(_) => {
                    for r in replies {
                        let _ = r.send(Err(tonic::Status::deadline_exceeded(
                            "peer batch timed out",
                        )));
                    }
                }
            }
        });
    }
}

/// One [`PeerClient`] per remote node.
pub struct PeerPool {
    from: NodeId,
    token: String,
    config: TransportConfig,
    peers: Mutex<HashMap<NodeId, Arc<PeerClient>>>,
}

impl PeerPool {
    pub fn new(from: NodeId, token: impl Into<String>, config: TransportConfig) -> Arc<Self> {
        Arc::new(PeerPool {
            from,
            token: token.into(),
            config,
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// The client for `target` at `addr` (reconnects when the address changed).
    pub fn get(&self, target: NodeId, addr: &str) -> Result<Arc<PeerClient>, String> {
        let mut peers = self.peers.lock();
        if let Some(p) = peers.get(&target) {
            if p.addr == addr {
                return Ok(p.clone());
            }
        }
        let p = PeerClient::connect(self.from, target, addr, &self.token, &self.config)?;
        peers.insert(target, p.clone());
        Ok(p)
    }

    /// Whether `target` answered an RPC of this node within `within` (or is too new a peer
    /// to tell; a peer never dialled counts as reachable).
    pub fn reachable(&self, target: NodeId, within: Duration) -> bool {
        self.peers
            .lock()
            .get(&target)
            .is_none_or(|p| p.contact.fresh(within))
    }

    /// Drops every connection (node shutdown).
    pub fn clear(&self) {
        self.peers.lock().clear();
    }
}

/// openraft's network factory for one group.
pub struct GroupNetworkFactory {
    pub(crate) group: GroupId,
    pub(crate) pool: Arc<PeerPool>,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Self::Network {
        GroupNetwork {
            group: self.group,
            target,
            peer: self.pool.get(target, &node.addr),
        }
    }
}

/// openraft's connection from one group to one target replica.
pub struct GroupNetwork {
    group: GroupId,
    target: NodeId,
    peer: Result<Arc<PeerClient>, String>,
}

type RpcErr<E = RaftError<NodeId>> = RPCError<NodeId, PeerNode, E>;

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(v).map_err(|e| format!("encoding: {e}"))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    postcard::from_bytes(b).map_err(|e| format!("decoding: {e}"))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

fn status_to_rpc<E: std::error::Error>(s: tonic::Status) -> RpcErr<E> {
    let err = TransportError(format!("{}: {}", s.code(), s.message()));
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unauthenticated => {
            RPCError::Unreachable(Unreachable::new(&err))
        }
        _ => RPCError::Network(NetworkError::new(&err)),
    }
}

impl GroupNetwork {
    async fn roundtrip<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        kind: RaftKind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr> {
        let peer = match &self.peer {
            Ok(p) => p.clone(),
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&TransportError(
                    e.clone(),
                ))))
            }
        };
        let payload =
            encode(req).map_err(|e| RPCError::Network(NetworkError::new(&TransportError(e))))?;
        let msg = RaftMessage {
            group_id: self.group,
            kind: kind as i32,
            payload,
        };
        let reply = peer
            .call(msg, option.hard_ttl())
            .await
            .map_err(status_to_rpc)?;
        if !reply.error.is_empty() {
            return Err(RPCError::Network(NetworkError::new(&TransportError(
                reply.error,
            ))));
        }
        let result: Result<Resp, RaftError<NodeId>> = decode(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&TransportError(e))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for GroupNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        self.roundtrip(RaftKind::AppendEntries, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.roundtrip(RaftKind::Vote, &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let peer = match &self.peer {
            Ok(p) => p.clone(),
            Err(e) => {
                return Err(StreamingError::Unreachable(Unreachable::new(
                    &TransportError(e.clone()),
                )))
            }
        };
        let group = self.group;
        let target = self.target;
        let overall = peer.config.snapshot_timeout;
        let send = send_snapshot(peer, group, vote, snapshot);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = tokio::time::timeout(overall, send) => match r {
                Ok(r) => r,
                Err(_) => Err(StreamingError::Timeout(Timeout {
                    action: openraft::network::RPCTypes::InstallSnapshot,
                    id: 0,
                    target,
                    timeout: overall,
                })),
            },
        }
    }
}

fn streaming_net(msg: impl Into<String>) -> StreamingError<TypeConfig, Fatal<NodeId>> {
    StreamingError::Network(NetworkError::new(&TransportError(msg.into())))
}

async fn send_snapshot(
    peer: Arc<PeerClient>,
    group: GroupId,
    vote: Vote,
    snapshot: Snapshot,
) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
    let path = snapshot.snapshot.path.clone();
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| streaming_net(format!("opening {}: {e}", path.display())))?;
    let meta = encode(&(vote, snapshot.meta.clone())).map_err(streaming_net)?;
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(2);
    let chunk_timeout = peer.config.snapshot_chunk_timeout;
    let chunk_bytes = peer.config.snapshot_chunk_bytes;
    let from = peer.from;
    let req = peer.request(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut grpc = peer.grpc.clone();
    let call = tokio::spawn(async move { grpc.install_snapshot(req).await });
    let mut offset = 0u64;
    let mut first = true;
    let mut sent_bytes = 0u64;
    loop {
        let mut buf = vec![0u8; chunk_bytes];
        let mut filled = 0;
        while filled < buf.len() {
            let n = file
                .read(&mut buf[filled..])
                .await
                .map_err(|e| streaming_net(format!("reading {}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        let done = filled < chunk_bytes;
        let chunk = SnapshotChunk {
            group_id: group,
            from_node: from,
            meta: if first { meta.clone() } else { Vec::new() },
            offset,
            data: buf,
            done,
        };
        first = false;
        offset += filled as u64;
        sent_bytes += filled as u64;
        match tokio::time::timeout(chunk_timeout, tx.send(chunk)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break, // the call ended early: its result says why
            Err(_) => {
                call.abort();
                return Err(StreamingError::Unreachable(Unreachable::new(
                    &TransportError(format!(
                        "snapshot stream to node {} made no progress for {chunk_timeout:?}",
                        peer.target
                    )),
                )));
            }
        }
        if done {
            break;
        }
    }
    drop(tx);
    let resp = match tokio::time::timeout(chunk_timeout.max(Duration::from_secs(60)), call).await {
        Ok(Ok(Ok(r))) => r.into_inner(),
        Ok(Ok(Err(status))) => {
            return Err(match status_to_rpc::<RaftError<NodeId>>(status) {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                other => streaming_net(other.to_string()),
            })
        }
        Ok(Err(join)) => return Err(streaming_net(format!("snapshot task failed: {join}"))),
        Err(_) => {
            return Err(streaming_net(
                "peer did not confirm the snapshot install in time",
            ))
        }
    };
    if !resp.error.is_empty() {
        return Err(streaming_net(resp.error));
    }
    metrics::counter!("engram_raft_snapshot_bytes_sent_total").increment(sent_bytes);
    metrics::counter!("engram_raft_snapshots_sent_total").increment(1);
    decode(&resp.payload).map_err(streaming_net)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::snapshot::{SnapshotFile, SnapshotWriter};
    use crate::types::SnapshotMeta;
    use engram_api::peer::peer_server::{Peer, PeerServer};
    use engram_api::peer::{
        FetchShardRequest, HeartbeatRequest, HeartbeatResponse, PreVoteRequest, PreVoteResponse, InstallSnapshotResponse,
        RaftBatchRequest, RaftBatchResponse, ShardChunk,
    };
    use tonic::{Request, Response, Status, Streaming};

    /// A peer that accepts a snapshot stream and then never reads it (a peer cut off
    /// mid-transfer, as far as the sender can tell).
    struct StalledPeer;

    #[tonic::async_trait]
    impl Peer for StalledPeer {
        async fn raft_batch(
            &self,
            _: Request<RaftBatchRequest>,
        ) -> Result<Response<RaftBatchResponse>, Status> {
            Ok(Response::new(RaftBatchResponse { replies: vec![] }))
        }
        async fn heartbeat(
            &self,
            _: Request<HeartbeatRequest>,
        ) -> Result<Response<HeartbeatResponse>, Status> {
            Ok(Response::new(HeartbeatResponse {
                lagging_groups: vec![],
            }))
        }
        async fn pre_vote(
            &self,
            _: Request<PreVoteRequest>,
        ) -> Result<Response<PreVoteResponse>, Status> {
            Ok(Response::new(PreVoteResponse { granted: vec![] }))
        }
        async fn install_snapshot(
            &self,
            _stream: Request<Streaming<SnapshotChunk>>,
        ) -> Result<Response<InstallSnapshotResponse>, Status> {
            std::future::pending().await
        }
        type FetchShardStream =
            std::pin::Pin<Box<dyn futures::Stream<Item = Result<ShardChunk, Status>> + Send>>;
        async fn fetch_shard(
            &self,
            _: Request<FetchShardRequest>,
        ) -> Result<Response<Self::FetchShardStream>, Status> {
            Err(Status::unimplemented("test peer"))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_to_a_stalled_peer_fails_within_the_chunk_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PeerServer::new(StalledPeer))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        // A 32 MiB snapshot: far more than HTTP/2 flow control lets through unread.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let meta = SnapshotMeta {
            last_log_id: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(1, 1),
                10,
            )),
            last_membership: Default::default(),
            snapshot_id: "10-1-test".into(),
        };
        let mut w = SnapshotWriter::create(&path, &meta).unwrap();
        let value = vec![7u8; 1 << 20];
        for i in 0..32u32 {
            w.frame(&i.to_be_bytes(), &value).unwrap();
        }
        w.finish().unwrap();

        let config = TransportConfig {
            snapshot_chunk_bytes: 256 << 10,
            snapshot_chunk_timeout: Duration::from_millis(300),
            snapshot_timeout: Duration::from_secs(20),
            ..TransportConfig::default()
        };
        let pool = PeerPool::new(1, "token", config);
        let mut factory = GroupNetworkFactory { group: 1, pool };
        let mut net = factory
            .new_client(2, &PeerNode::new(addr.to_string(), "z"))
            .await;
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(15),
            net.full_snapshot(
                Vote::new_committed(1, 1),
                Snapshot {
                    meta,
                    snapshot: Box::new(SnapshotFile { path }),
                },
                std::future::pending::<ReplicationClosed>(),
                RPCOption::new(Duration::from_secs(1)),
            ),
        )
        .await
        .expect("the sender must give up by itself, not hang");
        let err = result.expect_err("a stalled peer cannot have installed the snapshot");
        assert!(
            matches!(
                err,
                StreamingError::Unreachable(_) | StreamingError::Timeout(_)
            ),
            "unexpected error: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "gave up only after {:?}",
            started.elapsed()
        );
        server.abort();
    }
}
