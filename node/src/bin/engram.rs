//! `engram`: run a node, a standalone router, or a whole local cluster.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use engram_node::config::{DurabilityMode, NodeConfig};
use engram_node::launch::{ClusterSpec, ProcessCluster};
use engram_router::{EngramService, RemoteTransport, Router, RouterConfig, Settings};

#[derive(Parser)]
#[command(
    name = "engram",
    version,
    about = "Engram: distributed vector memory for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node from a config file (+ ENGRAM__… environment overrides).
    Node {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a standalone router (no data): the public API in front of a cluster.
    Router {
        /// Listen address of the public API.
        #[arg(long, default_value = "127.0.0.1:7400")]
        listen: String,
        /// A node config of the cluster (its initial_cluster, peer_token and limits are used).
        #[arg(long)]
        cluster_config: PathBuf,
    },
    /// Start a local cluster of real node processes on loopback, one zone per node.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 3)]
        zones: usize,
        /// Cluster directory (configs, data, logs); reused on the next `up`.
        #[arg(long, default_value = "engram-data")]
        dir: PathBuf,
        #[arg(long, default_value_t = 7100)]
        base_port: u16,
        /// Shards in the shared pool.
        #[arg(long, default_value_t = 6)]
        shards: u32,
        /// Allow replicas of a shard to share a zone when there are fewer zones than replicas.
        #[arg(long)]
        allow_same_zone: bool,
        /// Create a demo collection with sample memories.
        #[arg(long)]
        demo: bool,
        /// fsync every 10 ms instead of before each acknowledgement.
        #[arg(long)]
        periodic_sync: bool,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn,tower=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("engram: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Node { config } => run_node(config).await,
            Cmd::Router {
                listen,
                cluster_config,
            } => run_router(listen, cluster_config).await,
            Cmd::Up {
                nodes,
                zones,
                dir,
                base_port,
                shards,
                allow_same_zone,
                demo,
                periodic_sync,
            } => {
                let mut spec =
                    ClusterSpec::new(dir, std::env::current_exe().map_err(|e| e.to_string())?);
                spec.nodes = nodes;
                spec.zones = zones;
                spec.base_port = base_port;
                spec.settings = Settings {
                    shared_shards: shards,
                    allow_same_zone,
                    ..Settings::default()
                };
                if periodic_sync {
                    spec.durability = DurabilityMode::Periodic;
                }
                up(spec, demo).await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engram: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_node(config: Option<PathBuf>) -> Result<(), String> {
    let cfg = NodeConfig::load(config.as_deref()).map_err(|e| e.to_string())?;
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("metrics: {e}"))?;
    engram_node::node::run(cfg, Some(prometheus), shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn run_router(listen: String, cluster_config: PathBuf) -> Result<(), String> {
    let cfg = NodeConfig::load(Some(&cluster_config)).map_err(|e| e.to_string())?;
    let router = Router::new(
        RouterConfig {
            meta_seeds: cfg
                .initial_cluster
                .iter()
                .map(|m| (m.id, m.peer_addr.clone()))
                .collect(),
            limits: cfg.limits.clone(),
            max_staleness_ms: cfg.max_staleness_ms,
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
            ..RouterConfig::default()
        },
        Arc::new(RemoteTransport::new(&cfg.peer_token)),
    );
    let refresher = router.clone();
    tokio::spawn(async move {
        loop {
            let _ = refresher
                .refresh_map(false, std::time::Instant::now() + Duration::from_secs(2))
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let addr = listen
        .parse()
        .map_err(|e| format!("--listen {listen}: {e}"))?;
    tracing::info!(%listen, "router serving");
    tonic::transport::Server::builder()
        .add_service(EngramService::server(router))
        .serve_with_shutdown(addr, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn up(spec: ClusterSpec, demo: bool) -> Result<(), String> {
    let dir = spec.dir.clone();
    let mut cluster = ProcessCluster::configure(spec).map_err(|e| e.to_string())?;
    println!(
        "engram up: starting {} nodes in {}",
        cluster.len(),
        dir.display()
    );
    cluster.start_all().map_err(|e| e.to_string())?;
    if let Err(e) = cluster.wait_ready(Duration::from_secs(120)).await {
        cluster.stop_all(Duration::from_secs(5));
        return Err(e.to_string());
    }
    let endpoints = cluster.endpoints();
    if demo {
        let client = engram_client::Client::connect(endpoints.clone())
            .await
            .map_err(|e| e.to_string())?;
        let n = engram_node::demo::load(&client)
            .await
            .map_err(|e| format!("loading the demo: {e}"))?;
        println!(
            "demo: tenant {:?}, collection {:?}: {n} sample memories",
            engram_node::demo::TENANT,
            engram_node::demo::COLLECTION
        );
    }
    println!(
        "\nEngram is up: {} nodes, zones {}",
        cluster.len(),
        cluster
            .configs
            .iter()
            .map(|c| c.zone.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for c in &cluster.configs {
        println!(
            "  node {}  {}  api http://{}  metrics http://{}/metrics",
            c.node_id, c.zone, c.client_addr, c.http_addr
        );
    }
    println!("  logs and data: {}", dir.display());
    println!(
        "\nTry it:  cargo run --release -p engram-client --example agent -- --endpoint {}",
        endpoints[0]
    );
    println!(
        "Ctrl-C stops the cluster (data stays in {}).",
        dir.display()
    );

    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    // One listener for the whole loop: a signal arriving between two polls is not lost.
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticker.tick() => {
                for i in 0..cluster.len() {
                    if !cluster.is_running(i) {
                        eprintln!("engram up: node {} exited (see {}); restarting it", i + 1, cluster.log_path(i).display());
                        cluster.kill(i);
                        let _ = cluster.start(i);
                    }
                }
            }
        }
    }
    println!("\nstopping...");
    cluster.stop_all(Duration::from_secs(10));
    println!("stopped. Data kept in {}", dir.display());
    Ok(())
}
