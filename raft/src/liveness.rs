//! Quiet groups: one heartbeat per node pair instead of one per group.
//!
//! openraft's own per-group heartbeats and election timers are switched off. Instead each
//! node, every `heartbeat_ms`, sends **one** `Heartbeat` RPC to each peer node listing the
//! groups it leads that have a replica there (term and commit index). A follower that hears
//! its leader's node refreshes the group's contact time; one that is behind (or does not know
//! the leader yet) says so and the leader sends that group a real append. A follower whose
//! leader has been silent for a randomised election timeout starts an election itself.
//!
//! So an idle node costs one small RPC per peer per interval, whatever the number of groups,
//! and a group whose leader dies still elects a new one within the election timeout.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use engram_api::peer::{GroupBeat, HeartbeatRequest};
use openraft::ServerState;
use rand::Rng;

use crate::host::{Group, RaftHost};
use crate::types::{NodeId, PeerNode};

/// Per-group liveness bookkeeping on a follower.
#[derive(Debug)]
pub(crate) struct Contact {
    /// Last time the leader (append or node heartbeat) was heard from; `None` before the first.
    pub last: Option<Instant>,
    /// The leader's commit index as last heard.
    pub committed: u64,
    /// When to start an election if nothing is heard before.
    pub elect_at: Instant,
}

impl Contact {
    pub fn new(min_ms: u64, max_ms: u64) -> Self {
        let now = Instant::now();
        Contact {
            last: None,
            committed: 0,
            elect_at: now + random_timeout(min_ms, max_ms),
        }
    }

    pub fn heard(&mut self, committed: u64, min_ms: u64, max_ms: u64) {
        let now = Instant::now();
        self.last = Some(now);
        self.committed = self.committed.max(committed);
        self.elect_at = now + random_timeout(min_ms, max_ms);
    }
}

pub(crate) fn random_timeout(min_ms: u64, max_ms: u64) -> Duration {
    let ms = if max_ms > min_ms {
        rand::rng().random_range(min_ms..max_ms)
    } else {
        min_ms
    };
    Duration::from_millis(ms)
}

/// The node's liveness loop (node heartbeats and elections for quiet groups, when `quiet`) and
/// node-level Raft gauges; stops when the host is dropped or shut down.
pub(crate) async fn run(host: Weak<RaftHost>, interval: Duration, quiet: bool) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(host) = host.upgrade() else { return };
        if host.is_shut_down() {
            return;
        }
        round(&host, interval, quiet).await;
    }
}

async fn round(host: &Arc<RaftHost>, interval: Duration, quiet: bool) {
    let me = host.node_id();
    let (min_ms, max_ms) = host.election_timeout_ms();
    let mut beats: HashMap<NodeId, (PeerNode, Vec<GroupBeat>)> = HashMap::new();
    let mut elect: Vec<Arc<Group>> = Vec::new();
    let now = Instant::now();
    let mut log_entries = 0u64;
    let mut leaders = 0u64;
    let mut apply_lag = 0u64;
    for g in host.groups() {
        let m = g.raft.metrics();
        let m = m.borrow();
        log_entries += crate::storage::log::log_len(m.purged, m.last_log_index);
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        apply_lag = apply_lag.max(m.last_log_index.unwrap_or(0).saturating_sub(applied));
        let leader = m.current_leader.unwrap_or(0);
        if g.last_leader
            .swap(leader, std::sync::atomic::Ordering::Relaxed)
            != leader
            && leader != 0
        {
            metrics::counter!("engram_raft_leader_changes_total").increment(1);
        }
        if !quiet {
            continue;
        }
        match m.state {
            ServerState::Leader => {
                leaders += 1;
                let committed = m.last_applied.map(|l| l.index).unwrap_or(0);
                for (id, node) in m.membership_config.membership().nodes() {
                    if *id == me {
                        continue;
                    }
                    beats
                        .entry(*id)
                        .or_insert_with(|| (node.clone(), Vec::new()))
                        .1
                        .push(GroupBeat {
                            group_id: g.id,
                            term: m.current_term,
                            commit_index: committed,
                        });
                }
            }
            ServerState::Follower | ServerState::Candidate => {
                let is_voter = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == me);
                if !is_voter {
                    continue;
                }
                let mut c = g.contact.lock();
                if now >= c.elect_at {
                    // Retry at a fresh random time if this election does not settle it.
                    c.elect_at = now + random_timeout(min_ms, max_ms);
                    elect.push(g.clone());
                }
            }
            ServerState::Learner | ServerState::Shutdown => {}
        }
    }
    metrics::gauge!("engram_raft_log_entries").set(log_entries as f64);
    metrics::gauge!("engram_raft_apply_lag_entries").set(apply_lag as f64);
    metrics::gauge!("engram_raft_groups").set(host.group_count() as f64);
    if !quiet {
        return;
    }
    metrics::gauge!("engram_raft_groups_led").set(leaders as f64);
    for g in elect {
        tracing::info!(
            group = g.id,
            node = me,
            "leader silent past the election timeout; electing"
        );
        metrics::counter!("engram_raft_elections_started_total").increment(1);
        let _ = g.raft.trigger().elect().await;
    }
    for (target, (node, groups)) in beats {
        let host = host.clone();
        tokio::spawn(async move {
            let n = groups.len();
            let Ok(peer) = host.pool().get(target, &node.addr) else {
                return;
            };
            let req = HeartbeatRequest {
                from_node: host.node_id(),
                groups,
            };
            match peer
                .heartbeat(req, interval.max(Duration::from_millis(50)))
                .await
            {
                Ok(lagging) => {
                    metrics::counter!("engram_raft_group_beats_sent_total").increment(n as u64);
                    for gid in lagging {
                        if let Some(g) = host.group(gid) {
                            let _ = g.raft.trigger().heartbeat().await;
                        }
                    }
                }
                Err(e) => tracing::debug!(target, "heartbeat failed: {e}"),
            }
        });
    }
}

/// Applies a peer's heartbeat; returns the groups that need a real append from it.
pub(crate) fn on_heartbeat(host: &RaftHost, from: NodeId, beats: &[GroupBeat]) -> Vec<u64> {
    let (min_ms, max_ms) = host.election_timeout_ms();
    let mut lagging = Vec::new();
    for b in beats {
        let Some(g) = host.group(b.group_id) else {
            continue;
        };
        let (knows_leader, term, applied) = {
            let m = g.raft.metrics();
            let m = m.borrow();
            (
                m.current_leader == Some(from),
                m.current_term,
                m.last_applied.map(|l| l.index).unwrap_or(0),
            )
        };
        if knows_leader && term == b.term {
            g.contact.lock().heard(b.commit_index, min_ms, max_ms);
            if applied < b.commit_index {
                lagging.push(b.group_id);
            }
        } else if term <= b.term {
            // A leader we have not heard from yet (restart, new term): ask for an append.
            lagging.push(b.group_id);
        }
    }
    lagging
}
