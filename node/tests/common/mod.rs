//! Shared helpers: a local cluster of real `engram node` processes on a private loopback
//! address (127.x.y.z, its own ports below the ephemeral range) in a temp dir.

#![allow(dead_code)]

use std::time::Duration;

use engram_client::{Client, ClientConfig};
use engram_node::launch::{ClusterSpec, ProcessCluster};
use engram_router::Settings;

pub struct TestCluster {
    pub cluster: ProcessCluster,
    pub _dir: tempfile::TempDir,
}

pub fn spec(nodes: usize, zones: usize, settings: Settings) -> (ClusterSpec, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = ClusterSpec::new(dir.path().join("cluster"), env!("CARGO_BIN_EXE_engram"));
    spec.nodes = nodes;
    spec.zones = zones;
    spec.settings = settings;
    // A private loopback address per test: no port clash with other tests or services.
    spec.host = format!(
        "127.{}.{}.{}",
        rand::random_range(1..=254u8),
        rand::random_range(0..=254u8),
        rand::random_range(1..=254u8)
    );
    spec.base_port = 20_000 + rand::random_range(0..40u16) * 250;
    (spec, dir)
}

/// Placement settings: a shared pool of `shards`, replicas in distinct zones unless
/// `allow_same_zone`.
pub fn pool(shards: u32, allow_same_zone: bool) -> Settings {
    Settings {
        shared_shards: shards,
        allow_same_zone,
        ..Settings::default()
    }
}

pub async fn start(nodes: usize, zones: usize, settings: Settings) -> TestCluster {
    let (spec, dir) = spec(nodes, zones, settings);
    let mut cluster = ProcessCluster::configure(spec).expect("configure");
    cluster.start_all().expect("start");
    if let Err(e) = cluster.wait_ready(Duration::from_secs(90)).await {
        for i in 0..cluster.len() {
            let log = std::fs::read_to_string(cluster.log_path(i)).unwrap_or_default();
            eprintln!("--- node {} log (tail) ---\n{}", i + 1, tail(&log, 40));
        }
        panic!("cluster not ready: {e}");
    }
    TestCluster { cluster, _dir: dir }
}

pub fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Drop for TestCluster {
    /// A failing test shows what the nodes said (CI keeps no other trace of them).
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.cluster.len() {
                let log = std::fs::read_to_string(self.cluster.log_path(i)).unwrap_or_default();
                eprintln!("--- node {} log (tail) ---\n{}", i + 1, tail(&log, 40));
            }
        }
    }
}

impl TestCluster {
    pub fn client(&self) -> Client {
        Client::with_config(
            self.cluster.endpoints(),
            ClientConfig {
                timeout: Duration::from_secs(30),
                max_attempts: 30,
                ..ClientConfig::default()
            },
        )
        .expect("client")
    }

    /// A client that only talks to node `i`.
    pub fn client_of(&self, i: usize) -> Client {
        Client::with_config(
            [self.cluster.endpoints()[i].clone()],
            ClientConfig {
                timeout: Duration::from_secs(30),
                max_attempts: 30,
                ..ClientConfig::default()
            },
        )
        .expect("client")
    }
}
