//! Local multi-process clusters on loopback: what `engram up`, the end-to-end tests and
//! `engram-bench cluster` start. Each node is a real `engram node` OS process with its own
//! config file, data directory and log; the cluster directory survives restarts.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engram_router::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{DurabilityMode, Member, NodeConfig};

#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub zones: usize,
    pub dir: PathBuf,
    /// Loopback address the nodes listen on (any 127.0.0.0/8 address).
    pub host: String,
    /// Each node on its own address: node i (from 1) on `host` + (i - 1) in the last octet
    /// (what the chaos suite needs to cut links between nodes).
    pub distinct_hosts: bool,
    /// Node i (from 1) listens on base+i (client), base+100+i (peer), base+200+i (HTTP).
    pub base_port: u16,
    pub settings: Settings,
    pub durability: DurabilityMode,
    /// The `engram` binary to run.
    pub binary: PathBuf,
}

impl ClusterSpec {
    /// The address node `i` (from 1) listens on.
    pub fn node_host(&self, i: usize) -> Result<String, LaunchError> {
        if !self.distinct_hosts {
            return Ok(self.host.clone());
        }
        let ip: std::net::Ipv4Addr = self
            .host
            .parse()
            .map_err(|e| LaunchError::Config(format!("host {:?}: {e}", self.host)))?;
        let o = ip.octets();
        let last = o[3] as usize + i - 1;
        if last > 254 {
            return Err(LaunchError::Config(format!(
                "host {} leaves no room for {} node addresses",
                self.host, self.nodes
            )));
        }
        Ok(format!("{}.{}.{}.{last}", o[0], o[1], o[2]))
    }

    pub fn new(dir: impl Into<PathBuf>, binary: impl Into<PathBuf>) -> Self {
        ClusterSpec {
            nodes: 3,
            zones: 3,
            dir: dir.into(),
            host: "127.0.0.1".into(),
            distinct_hosts: false,
            base_port: 7100,
            settings: Settings::default(),
            durability: DurabilityMode::Sync,
            binary: binary.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
    #[error("node {node} not ready after {waited:?}: {last} (log: {log})")]
    NotReady {
        node: usize,
        waited: Duration,
        last: String,
        log: String,
    },
}

pub fn zone_name(i: usize) -> String {
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    format!("zone-{}", letters[i % letters.len()] as char)
}

/// A running (or stopped) local cluster.
pub struct ProcessCluster {
    pub spec: ClusterSpec,
    pub configs: Vec<NodeConfig>,
    children: Vec<Option<Child>>,
}

fn random_token() -> String {
    format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    )
}

impl ProcessCluster {
    /// Writes node configs into `spec.dir` (or reuses those already there: same ports, token
    /// and data, so a restarted cluster finds its memories).
    pub fn configure(spec: ClusterSpec) -> Result<Self, LaunchError> {
        std::fs::create_dir_all(&spec.dir)?;
        let mut configs = Vec::new();
        let existing: Vec<PathBuf> = (1..=spec.nodes)
            .map(|i| spec.dir.join(format!("node-{i}.toml")))
            .collect();
        if existing.iter().all(|p| p.exists()) {
            for p in &existing {
                let text = std::fs::read_to_string(p)?;
                let cfg: NodeConfig = toml::from_str(&text)
                    .map_err(|e| LaunchError::Config(format!("{}: {e}", p.display())))?;
                configs.push(cfg);
            }
        } else {
            let token = random_token();
            let hosts = (1..=spec.nodes)
                .map(|i| spec.node_host(i))
                .collect::<Result<Vec<_>, _>>()?;
            let addr = |i: usize, port: u16| format!("{}:{port}", hosts[i - 1]);
            let meta_n = spec.nodes.min(if spec.nodes >= 5 { 5 } else { 3 });
            let initial: Vec<Member> = (1..=meta_n)
                .map(|i| Member {
                    id: i as u64,
                    peer_addr: addr(i, spec.base_port + 100 + i as u16),
                    zone: zone_name((i - 1) % spec.zones.max(1)),
                })
                .collect();
            for i in 1..=spec.nodes {
                let cfg = NodeConfig {
                    node_id: i as u64,
                    zone: zone_name((i - 1) % spec.zones.max(1)),
                    data_dir: spec.dir.join(format!("node-{i}")),
                    client_addr: addr(i, spec.base_port + i as u16),
                    peer_addr: addr(i, spec.base_port + 100 + i as u16),
                    http_addr: addr(i, spec.base_port + 200 + i as u16),
                    peer_token: token.clone(),
                    initial_cluster: initial.clone(),
                    cluster: spec.settings.clone(),
                    limits: Default::default(),
                    durability: spec.durability,
                    periodic_sync_ms: 10,
                    max_staleness_ms: 5_000,
                    request_timeout_ms: 10_000,
                };
                cfg.validate()
                    .map_err(|e| LaunchError::Config(e.to_string()))?;
                std::fs::write(&existing[i - 1], cfg.to_toml())?;
                configs.push(cfg);
            }
        }
        let children = configs.iter().map(|_| None).collect();
        Ok(ProcessCluster {
            spec,
            configs,
            children,
        })
    }

    pub fn len(&self) -> usize {
        self.configs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    pub fn config_path(&self, i: usize) -> PathBuf {
        self.spec.dir.join(format!("node-{}.toml", i + 1))
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.spec.dir.join(format!("node-{}.log", i + 1))
    }

    /// `http://` endpoints of every node's public port.
    pub fn endpoints(&self) -> Vec<String> {
        self.configs
            .iter()
            .map(|c| format!("http://{}", c.client_addr))
            .collect()
    }

    /// Starts node `i` (0-based) as a child process; output goes to its log file.
    pub fn start(&mut self, i: usize) -> Result<(), LaunchError> {
        if self.children[i].is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))?;
        let mut cmd = Command::new(&self.spec.binary);
        // SAFETY: prctl in the forked child before exec; async-signal-safe, touches no memory.
        // The node dies with the process that started it (a killed test or `engram up`).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .arg("node")
            .arg("--config")
            .arg(self.config_path(i))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.children[i] = Some(child);
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<(), LaunchError> {
        for i in 0..self.len() {
            self.start(i)?;
        }
        Ok(())
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        match &mut self.children[i] {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `signal` (e.g. `libc::SIGKILL`) to node `i`.
    pub fn signal(&self, i: usize, signal: i32) {
        if let Some(pid) = self.pid(i) {
            // SAFETY: kill(2) on a pid we spawned; no memory is touched.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }

    /// SIGKILLs node `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (clean shutdown), then SIGKILL after `grace`.
    pub fn stop(&mut self, i: usize, grace: Duration) {
        let Some(mut c) = self.children[i].take() else {
            return;
        };
        // SAFETY: as in `signal`.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    pub fn stop_all(&mut self, grace: Duration) {
        for i in 0..self.len() {
            if let Some(pid) = self.pid(i) {
                // SAFETY: as in `signal`.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
            }
        }
        for i in 0..self.len() {
            self.stop(i, grace);
        }
    }

    /// `/readyz` of node `i`: `Ok(())` when ready, else the reason.
    pub async fn readiness(&self, i: usize) -> Result<(), String> {
        http_get(&self.configs[i].http_addr, "/readyz")
            .await
            .and_then(|(code, body)| {
                if code == 200 {
                    Ok(())
                } else {
                    Err(body.trim().to_string())
                }
            })
    }

    /// Waits until every running node is ready.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), LaunchError> {
        let start = Instant::now();
        for i in 0..self.len() {
            if self.children[i].is_none() {
                continue;
            }
            self.wait_node_ready(i, timeout.saturating_sub(start.elapsed()))
                .await?;
        }
        Ok(())
    }

    pub async fn wait_node_ready(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> Result<(), LaunchError> {
        let start = Instant::now();
        let mut last;
        loop {
            if !self.is_running(i) && self.children[i].is_some() {
                return Err(LaunchError::NotReady {
                    node: i + 1,
                    waited: start.elapsed(),
                    last: format!("the process exited; its log ends:\n{}", log_tail(&self.log_path(i), 15)),
                    log: self.log_path(i).display().to_string(),
                });
            }
            match self.readiness(i).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            if start.elapsed() >= timeout {
                return Err(LaunchError::NotReady {
                    node: i + 1,
                    waited: start.elapsed(),
                    last,
                    log: self.log_path(i).display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        // Never leave node processes behind (a failed test, a panic in `up`).
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A minimal HTTP/1.0 GET: (status code, body).
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad HTTP answer: {text:.80}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((code, body))
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// The directory holding the `engram` binary's siblings (for tests and tools locating it).
pub fn sibling_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join(name);
        if p.exists() {
            return Some(p);
        }
    }
    None
}

/// The last `lines` lines of a node's log (what a node that exited said last), or why not.
fn log_tail(path: &std::path::Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
