//! Fault injectors, each reusable on its own: process faults (SIGKILL + restart, SIGSTOP /
//! SIGCONT, rolling restart) through [`ProcessCluster`], network faults through [`Net`].

use std::time::{Duration, Instant};

use engram_client::Client;
use engram_node::launch::ProcessCluster;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

use crate::net::Net;

/// The kinds of fault a schedule draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL a random node, restart it after the hold.
    Kill,
    /// SIGKILL the leader of a random shard.
    KillLeader,
    /// SIGKILL the placement driver's (metadata group's) leader.
    KillMeta,
    /// SIGSTOP a node for longer than the election timeout, then SIGCONT.
    Pause,
    /// Cut one node off from every other node.
    IsolateNode,
    /// Cut a shard leader off.
    IsolateLeader,
    /// Split the nodes into a majority and a minority.
    Split,
    /// Two halves that only one bridge node connects.
    Bridge,
    /// Drop one node's packets in one direction only.
    OneWay,
    /// Cut a whole zone off.
    Zone,
    /// Restart every node in turn (SIGTERM, start, wait until ready).
    Rolling,
    /// A node killed and another isolated at the same time.
    KillAndIsolate,
}

impl FaultKind {
    /// Whether every shard keeps a connected majority of its voters while this fault is on:
    /// the fault takes out one node or one zone, and a group's three voters sit in three
    /// zones. Writes must then come back *during* the fault (see `checker::stalled`).
    pub fn keeps_majorities(self) -> bool {
        use FaultKind::*;
        matches!(
            self,
            Kill | KillLeader | KillMeta | Pause | IsolateNode | IsolateLeader | Zone
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillMeta => "kill-pd-leader",
            FaultKind::Pause => "pause",
            FaultKind::IsolateNode => "isolate",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::Split => "split",
            FaultKind::Bridge => "bridge",
            FaultKind::OneWay => "one-way",
            FaultKind::Zone => "zone",
            FaultKind::Rolling => "rolling-restart",
            FaultKind::KillAndIsolate => "kill+isolate",
        }
    }

    pub fn needs_network(self) -> bool {
        matches!(
            self,
            FaultKind::IsolateNode
                | FaultKind::IsolateLeader
                | FaultKind::Split
                | FaultKind::Bridge
                | FaultKind::OneWay
                | FaultKind::Zone
                | FaultKind::KillAndIsolate
        )
    }

    /// The kinds a `--faults` group name stands for.
    pub fn group(name: &str) -> Result<Vec<FaultKind>, String> {
        use FaultKind::*;
        Ok(match name.trim() {
            "kill" => vec![Kill, KillLeader, KillMeta],
            "pause" => vec![Pause],
            "partition" => vec![IsolateNode, IsolateLeader, Split, Bridge, OneWay],
            "zone" => vec![Zone],
            "rolling" => vec![Rolling],
            "multi" => vec![KillAndIsolate],
            "all" => vec![
                Kill,
                KillLeader,
                KillMeta,
                Pause,
                IsolateNode,
                IsolateLeader,
                Split,
                Bridge,
                OneWay,
                Zone,
                Rolling,
                KillAndIsolate,
            ],
            other => {
                return Err(format!(
                    "unknown fault group {other:?}: use kill, pause, partition, zone, rolling, multi or all"
                ))
            }
        })
    }
}

/// What is currently broken, so that `heal` can undo exactly that.
#[derive(Default)]
pub struct Damage {
    killed: Vec<usize>,
    paused: Vec<usize>,
}

pub struct Nemesis {
    pub net: Option<Net>,
    pub zones: usize,
    damage: Damage,
}

/// Node ids in the API are 1-based; indexes here are 0-based.
async fn leader_of_random_shard(client: &Client, rng: &mut StdRng, n: usize) -> Option<usize> {
    let st = tokio::time::timeout(Duration::from_secs(5), client.cluster_status())
        .await
        .ok()?
        .ok()?;
    let leaders: Vec<usize> = st
        .shards
        .iter()
        .filter(|s| s.leader_node > 0)
        .map(|s| s.leader_node as usize - 1)
        .filter(|&i| i < n)
        .collect();
    leaders.choose(rng).copied()
}

async fn meta_leader(client: &Client, n: usize) -> Option<usize> {
    let st = tokio::time::timeout(Duration::from_secs(5), client.cluster_status())
        .await
        .ok()?
        .ok()?;
    (st.meta_leader > 0 && (st.meta_leader as usize) <= n).then(|| st.meta_leader as usize - 1)
}

impl Nemesis {
    pub fn new(net: Option<Net>, zones: usize) -> Self {
        Nemesis {
            net,
            zones,
            damage: Damage::default(),
        }
    }

    fn net(&mut self) -> Result<&mut Net, String> {
        self.net
            .as_mut()
            .ok_or_else(|| "network faults need nftables (not set up)".to_string())
    }

    fn kill(&mut self, cluster: &mut ProcessCluster, i: usize) {
        cluster.kill(i);
        self.damage.killed.push(i);
    }

    /// Injects one fault; returns what it touched, in words. `Rolling` runs to completion
    /// here (it heals as it goes).
    pub async fn inject(
        &mut self,
        kind: FaultKind,
        cluster: &mut ProcessCluster,
        client: &Client,
        rng: &mut StdRng,
    ) -> Result<String, String> {
        let n = cluster.len();
        let all: Vec<usize> = (0..n).collect();
        let others = |i: usize| all.iter().copied().filter(|&j| j != i).collect::<Vec<_>>();
        let name = |v: &[usize]| {
            v.iter()
                .map(|i| format!("n{}", i + 1))
                .collect::<Vec<_>>()
                .join(",")
        };
        match kind {
            FaultKind::Kill | FaultKind::KillLeader | FaultKind::KillMeta => {
                let target = match kind {
                    FaultKind::KillLeader => leader_of_random_shard(client, rng, n).await,
                    FaultKind::KillMeta => meta_leader(client, n).await,
                    _ => None,
                }
                .unwrap_or_else(|| rng.random_range(0..n));
                self.kill(cluster, target);
                Ok(name(&[target]))
            }
            FaultKind::Pause => {
                let i = rng.random_range(0..n);
                cluster.signal(i, libc::SIGSTOP);
                self.damage.paused.push(i);
                Ok(name(&[i]))
            }
            FaultKind::IsolateNode | FaultKind::IsolateLeader => {
                let i = match kind {
                    FaultKind::IsolateLeader => leader_of_random_shard(client, rng, n).await,
                    _ => None,
                }
                .unwrap_or_else(|| rng.random_range(0..n));
                self.net()?.split(&[i], &others(i)).map_err(|e| e.to_string())?;
                Ok(format!("{} | rest", name(&[i])))
            }
            FaultKind::Split => {
                let mut v = all.clone();
                v.shuffle(rng);
                let minority = (n - 1) / 2;
                let (a, b) = v.split_at(minority.max(1));
                self.net()?.split(a, b).map_err(|e| e.to_string())?;
                Ok(format!("{} | {}", name(a), name(b)))
            }
            FaultKind::Bridge => {
                let mut v = all.clone();
                v.shuffle(rng);
                let bridge = v[0];
                let rest = &v[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                self.net()?.split(a, b).map_err(|e| e.to_string())?;
                Ok(format!("{} | {} (bridge {})", name(a), name(b), name(&[bridge])))
            }
            FaultKind::OneWay => {
                let i = rng.random_range(0..n);
                let outbound = rng.random_bool(0.5);
                let links: Vec<(usize, usize)> = others(i)
                    .into_iter()
                    .map(|j| if outbound { (i, j) } else { (j, i) })
                    .collect();
                self.net()?.cut(&links).map_err(|e| e.to_string())?;
                Ok(format!(
                    "{} {}",
                    name(&[i]),
                    if outbound { "sends dropped" } else { "receives dropped" }
                ))
            }
            FaultKind::Zone => {
                let z = rng.random_range(0..self.zones.max(1));
                let (inside, outside): (Vec<usize>, Vec<usize>) =
                    all.iter().partition(|&&i| i % self.zones.max(1) == z);
                self.net()?.split(&inside, &outside).map_err(|e| e.to_string())?;
                Ok(format!(
                    "{} ({})",
                    engram_node::launch::zone_name(z),
                    name(&inside)
                ))
            }
            FaultKind::KillAndIsolate => {
                let k = rng.random_range(0..n);
                let mut rest = others(k);
                rest.shuffle(rng);
                let iso = rest[0];
                self.kill(cluster, k);
                let away: Vec<usize> = others(iso);
                self.net()?.split(&[iso], &away).map_err(|e| e.to_string())?;
                Ok(format!("kill {} + isolate {}", name(&[k]), name(&[iso])))
            }
            FaultKind::Rolling => {
                for i in 0..n {
                    cluster.stop(i, Duration::from_secs(15));
                    cluster.start(i).map_err(|e| e.to_string())?;
                    cluster
                        .wait_node_ready(i, Duration::from_secs(60))
                        .await
                        .map_err(|e| format!("rolling restart: {e}"))?;
                }
                Ok("every node in turn".into())
            }
        }
    }

    /// Undoes every fault in place: links restored, paused nodes continued, killed nodes
    /// restarted.
    pub fn heal(&mut self, cluster: &mut ProcessCluster) -> Result<(), String> {
        let mut err = None;
        if let Some(net) = self.net.as_mut() {
            if let Err(e) = net.heal() {
                err = Some(e.to_string());
            }
        }
        for i in self.damage.paused.drain(..) {
            cluster.signal(i, libc::SIGCONT);
        }
        for i in self.damage.killed.drain(..) {
            if let Err(e) = cluster.start(i) {
                err = Some(format!("restarting n{}: {e}", i + 1));
            }
        }
        err.map_or(Ok(()), Err)
    }
}

/// Waits until every node answers ready, or `timeout`; `Err` names the ones that did not.
pub async fn wait_recovered(cluster: &mut ProcessCluster, timeout: Duration) -> Result<f64, String> {
    let start = Instant::now();
    cluster
        .wait_ready(timeout)
        .await
        .map(|_| start.elapsed().as_secs_f64())
        .map_err(|e| e.to_string())
}
