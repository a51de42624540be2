//! How a router reaches the node serving a shard: a direct call when it is the local node
//! (see `engram-node`), the peer port's `Shards` service otherwise.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use engram_api::peer::shards_client::ShardsClient;
use engram_api::peer::ShardCall;
use engram_raft::network::PEER_TOKEN_HEADER;
use engram_raft::{GroupId, NodeId};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::wire::{decode, encode, ShardOp, ShardReply, WireError};

/// Sends shard operations to nodes. `addr` is the node's peer address from the cluster map.
pub trait ShardTransport: Send + Sync + 'static {
    fn call(
        &self,
        node: NodeId,
        addr: String,
        gid: GroupId,
        op: ShardOp,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ShardReply, WireError>>;

    /// Whether `node` looks reachable from here by what the transport already knows (a
    /// node's Raft heartbeats, say), without a call. The router tries nodes that do not
    /// first, and gives up on a shard at once when none of its replicas does.
    fn reachable(&self, _node: NodeId) -> bool {
        true
    }
}

/// Calls the `Shards` service of other nodes with the cluster's peer credential.
#[derive(Clone)]
pub struct RemoteTransport {
    token: Arc<str>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    local_address: Option<std::net::IpAddr>,
}

impl RemoteTransport {
    pub fn new(peer_token: &str) -> Self {
        RemoteTransport {
            token: peer_token.into(),
            channels: Arc::default(),
            local_address: None,
        }
    }

    /// Dials from `addr` (a node dials from the address it advertises).
    pub fn with_local_address(mut self, addr: Option<std::net::IpAddr>) -> Self {
        self.local_address = addr;
        self
    }

    fn channel(&self, addr: &str) -> Result<Channel, WireError> {
        if let Some(c) = self.channels.lock().get(addr) {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| WireError::unreachable(0, format!("bad address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .local_address(self.local_address)
            .tcp_nodelay(true)
            // A peer that stops answering (partition, paused process) is noticed within ~2 s
            // even with calls in flight; the next call reconnects (or fails fast).
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(1))
            .keep_alive_while_idle(true);
        let ch = ep.connect_lazy();
        self.channels.lock().insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

impl ShardTransport for RemoteTransport {
    fn call(
        &self,
        node: NodeId,
        addr: String,
        gid: GroupId,
        op: ShardOp,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ShardReply, WireError>> {
        let me = self.clone();
        Box::pin(async move {
            let ch = me.channel(&addr)?;
            let mut client = ShardsClient::new(ch)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            let mut req = tonic::Request::new(ShardCall {
                group_id: gid,
                op: encode(&op),
            });
            req.set_timeout(timeout);
            if let Ok(v) = me.token.parse() {
                req.metadata_mut().insert(PEER_TOKEN_HEADER, v);
            }
            let reply = match tokio::time::timeout(timeout, client.call(req)).await {
                Err(_) => return Err(WireError::unreachable(node, "timed out")),
                Ok(Err(status)) => {
                    if matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Cancelled
                            | tonic::Code::Unknown
                    ) {
                        // Drop the channel so the next call reconnects (the node may have
                        // restarted on the same address).
                        me.channels.lock().remove(&addr);
                    }
                    return Err(WireError::unreachable(node, status.message()));
                }
                Ok(Ok(r)) => r.into_inner(),
            };
            decode::<Result<ShardReply, WireError>>(&reply.result)?
        })
    }
}
