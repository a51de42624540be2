//! A running node: its Raft host, the embedded router, the public / peer / HTTP servers, the
//! registration with the cluster map, and the reconciler that hosts the replicas the map
//! assigns to it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_raft::server::{peer_auth, peer_server};
use engram_raft::{Durability, HostConfig, PeerNode, RaftHost};
use engram_router::map::{NodeInfo, META_GROUP};
use engram_router::{pd, EngramService, Router, RouterConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;

use crate::config::{DurabilityMode, NodeConfig};
use crate::http;
use crate::shard_server::{NodeTransport, ShardService};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("binding {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Raft(#[from] engram_raft::RaftError),
    #[error("{0}")]
    Serve(String),
}

/// Shared view of the node for the HTTP endpoints.
pub struct NodeState {
    pub config: NodeConfig,
    pub host: Arc<RaftHost>,
    pub router: Arc<Router>,
    registered: AtomicBool,
}

impl NodeState {
    /// Ready = registered in the cluster map and every replica it hosts has a leader.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.registered.load(Ordering::SeqCst) {
            return Err("not yet registered in the cluster map".into());
        }
        let map = self.router.map();
        let me = self.config.node_id;
        if !map.nodes.contains_key(&me) {
            return Err("not in the cached cluster map".into());
        }
        for (gid, s) in &map.shards {
            if !s.ready || !s.replicas.contains(&me) {
                continue;
            }
            if self.host.group(*gid).is_none() {
                return Err(format!("shard {gid} is assigned here but not hosted yet"));
            }
            if self.host.leader_of(*gid).is_none() {
                return Err(format!("shard {gid} has no known leader"));
            }
        }
        if self.host.group(META_GROUP).is_some() && self.host.leader_of(META_GROUP).is_none() {
            return Err("the metadata group has no known leader".into());
        }
        Ok(())
    }
}

fn bind_err<'a>(
    what: &'static str,
    addr: &'a str,
) -> impl FnOnce(std::io::Error) -> NodeError + 'a {
    move |source| NodeError::Bind {
        what,
        addr: addr.to_string(),
        source,
    }
}

/// Runs a node until `shutdown` resolves, then stops it cleanly.
pub async fn run(
    config: NodeConfig,
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let mut hc = HostConfig::new(
        config.node_id,
        config.data_dir.join("raft"),
        config.peer_token.clone(),
    );
    // Peer connections leave from the address this node advertises (not 127.0.0.1 / the
    // kernel's pick), so address-based network policy sees which node is talking.
    hc.transport.local_address = config
        .peer_addr
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified());
    if config.durability == DurabilityMode::Periodic {
        hc.durability = Durability::Periodic {
            interval_ms: config.periodic_sync_ms,
        };
    }
    let host = RaftHost::open(hc).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    // Peer port: Raft traffic and forwarded shard operations, both behind the peer token.
    let peer_listener = TcpListener::bind(&config.peer_addr)
        .await
        .map_err(bind_err("peer address", &config.peer_addr))?;
    let peer = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(peer_server(host.clone()))
        .add_service(InterceptedService::new(
            ShardService::server(host.clone()),
            peer_auth(host.peer_token()),
        ))
        .serve_with_incoming_shutdown(incoming(peer_listener), stopped(stop_rx.clone()));
    let peer_task = tokio::spawn(peer);

    // The metadata group: its initial members host it; the lowest id forms it, once.
    let in_initial = config
        .initial_cluster
        .iter()
        .any(|m| m.id == config.node_id);
    if in_initial && host.group(META_GROUP).is_none() {
        host.create_group(META_GROUP).await?;
        let first = config.initial_cluster.iter().map(|m| m.id).min();
        if first == Some(config.node_id) {
            let members: BTreeMap<_, _> = config
                .initial_cluster
                .iter()
                .map(|m| {
                    (
                        m.id,
                        PeerNode {
                            addr: m.peer_addr.clone(),
                            zone: m.zone.clone(),
                        },
                    )
                })
                .collect();
            host.initialize_group(META_GROUP, members).await?;
        }
    }

    let router = Router::new(
        RouterConfig {
            local_node: Some(config.node_id),
            local_zone: Some(config.zone.clone()),
            meta_seeds: config
                .initial_cluster
                .iter()
                .map(|m| (m.id, m.peer_addr.clone()))
                .collect(),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            max_staleness_ms: config.max_staleness_ms,
            limits: config.limits.clone(),
            ..RouterConfig::default()
        },
        Arc::new(NodeTransport::new(host.clone())),
    );
    let state = Arc::new(NodeState {
        config: config.clone(),
        host: host.clone(),
        router: router.clone(),
        registered: AtomicBool::new(false),
    });

    let client_listener = TcpListener::bind(&config.client_addr)
        .await
        .map_err(bind_err("client address", &config.client_addr))?;
    let public = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(EngramService::server(router.clone()))
        .serve_with_incoming_shutdown(incoming(client_listener), stopped(stop_rx.clone()));
    let public_task = tokio::spawn(public);

    let http_listener = TcpListener::bind(&config.http_addr)
        .await
        .map_err(bind_err("http address", &config.http_addr))?;
    let http_task = tokio::spawn(http::serve(
        http_listener,
        state.clone(),
        prometheus,
        stopped(stop_rx.clone()),
    ));

    let control_task = tokio::spawn(control_loop(state.clone(), stop_rx.clone()));
    tracing::info!(
        node = config.node_id,
        zone = %config.zone,
        client = %config.client_addr,
        peer = %config.peer_addr,
        http = %config.http_addr,
        "node started"
    );

    shutdown.await;
    tracing::info!(node = config.node_id, "stopping");
    let _ = stop_tx.send(true);
    let _ = control_task.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), public_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), peer_task).await;
    host.shutdown().await;
    tracing::info!(node = config.node_id, "stopped");
    Ok(())
}

/// Registers the node, then keeps the cached map fresh and the hosted replicas in line with it.
async fn control_loop(state: Arc<NodeState>, mut stop: watch::Receiver<bool>) {
    let cfg = &state.config;
    let info = NodeInfo {
        zone: cfg.zone.clone(),
        client_addr: cfg.client_addr.clone(),
        peer_addr: cfg.peer_addr.clone(),
        http_addr: cfg.http_addr.clone(),
    };
    let mut last_refresh = Instant::now() - Duration::from_secs(10);
    loop {
        if *stop.borrow() {
            return;
        }
        if !state.registered.load(Ordering::SeqCst) {
            let deadline = Instant::now() + Duration::from_secs(3);
            match pd::register_node(
                &state.router,
                cfg.node_id,
                info.clone(),
                &cfg.cluster,
                deadline,
            )
            .await
            {
                Ok(_) => {
                    state.registered.store(true, Ordering::SeqCst);
                    tracing::info!(node = cfg.node_id, "registered in the cluster map");
                }
                Err(e) => tracing::debug!(error = %e, "registration not done yet"),
            }
        } else if last_refresh.elapsed() >= Duration::from_millis(500) {
            last_refresh = Instant::now();
            let deadline = Instant::now() + Duration::from_secs(2);
            if let Err(e) = state.router.refresh_map(false, deadline).await {
                tracing::debug!(error = %e, "map refresh failed");
            }
        }
        reconcile(&state).await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Hosts every replica the map assigns here; forms new groups whose first leader is here.
async fn reconcile(state: &NodeState) {
    let map = state.router.map();
    let me = state.config.node_id;
    // Heartbeat every node of the cluster, so the router knows which ones answer even
    // where this node shares no shard with them.
    state.host.watch_peers(
        map.nodes
            .iter()
            .map(|(id, n)| {
                (
                    *id,
                    engram_raft::PeerNode {
                        addr: n.peer_addr.clone(),
                        zone: n.zone.clone(),
                    },
                )
            })
            .collect(),
    );
    for (gid, s) in &map.shards {
        if !s.replicas.contains(&me) {
            continue;
        }
        if state.host.group(*gid).is_none() {
            match state.host.create_group(*gid).await {
                Ok(_) => tracing::info!(shard = gid, "hosting a new replica"),
                Err(e) => {
                    tracing::warn!(shard = gid, error = %e, "cannot host replica");
                    continue;
                }
            }
        }
        if s.ready || s.leader_hint != me {
            continue;
        }
        let Some(g) = state.host.group(*gid) else {
            continue;
        };
        let formed = g
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .next()
            .is_some();
        if formed {
            continue;
        }
        let members: Option<BTreeMap<_, _>> = s
            .replicas
            .iter()
            .map(|r| {
                map.nodes.get(r).map(|n| {
                    (
                        *r,
                        PeerNode {
                            addr: n.peer_addr.clone(),
                            zone: n.zone.clone(),
                        },
                    )
                })
            })
            .collect();
        let Some(members) = members else { continue };
        match state.host.initialize_group(*gid, members).await {
            Ok(()) => tracing::info!(shard = gid, "formed shard group"),
            Err(e) => tracing::warn!(shard = gid, error = %e, "cannot form shard group"),
        }
    }
}

/// Accepted connections with `TCP_NODELAY` (the builder's setting does not reach a custom
/// incoming stream; without it small replies wait for delayed ACKs, ~40 ms).
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Parses an `ip:port`.
pub fn socket_addr(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}
