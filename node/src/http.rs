//! The node's HTTP port: `/metrics` (Prometheus text), `/healthz` (the process serves),
//! `/readyz` (member of the cluster and serving its shards).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::node::NodeState;

#[derive(Clone)]
struct Http {
    node: Arc<NodeState>,
    prometheus: Option<PrometheusHandle>,
}

pub async fn serve(
    listener: TcpListener,
    node: Arc<NodeState>,
    prometheus: Option<PrometheusHandle>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Http { node, prometheus });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "http server stopped");
    }
}

async fn metrics(State(s): State<Http>) -> (StatusCode, String) {
    match &s.prometheus {
        Some(h) => (StatusCode::OK, h.render()),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed in this process\n".into(),
        ),
    }
}

async fn readyz(State(s): State<Http>) -> (StatusCode, String) {
    match s.node.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
