//! Quiet groups: one heartbeat per node pair instead of one per group.
//!
//! openraft's own per-group heartbeats and election timers are switched off. Instead each
//! node, every `heartbeat_ms`, sends **one** `Heartbeat` RPC to each peer node listing the
//! groups it leads that have a replica there (term and commit index). A follower that hears
//! its leader's node refreshes the group's contact time; one that is behind (or does not know
//! the leader yet) says so and the leader sends that group a real append. A follower whose
//! leader has been silent for a randomised election timeout starts an election itself.
//!
//! Before electing, it asks the group's other voters whether they lost the leader too
//! (pre-vote, as in etcd and TiKV): an election starts only when a majority agrees. A node cut
//! off by a partition or paused therefore never raises its term, and does not depose the
//! healthy leader when it returns.
//!
//! So an idle node costs one small RPC per peer per interval, whatever the number of groups,
//! and a group whose leader dies still elects a new one within the election timeout.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use engram_api::peer::{GroupBeat, GroupPreVote, HeartbeatRequest, PreVoteRequest};
use openraft::ServerState;
use rand::Rng;

use crate::host::{Group, RaftHost};
use crate::types::{LogId, NodeId, PeerNode};

/// Per-group liveness bookkeeping on a follower.
#[derive(Debug)]
pub(crate) struct Contact {
    /// Last time the leader (append or node heartbeat) was heard from; `None` before the first.
    pub last: Option<Instant>,
    /// The leader's commit index as last heard.
    pub committed: u64,
    /// When to start an election if nothing is heard before.
    pub elect_at: Instant,
    /// When this replica last granted another's pre-vote: it then holds its own election
    /// back, so two replicas that lost the leader together do not split the vote.
    pub granted_at: Option<Instant>,
}

impl Contact {
    pub fn new(min_ms: u64, max_ms: u64) -> Self {
        let now = Instant::now();
        Contact {
            last: None,
            committed: 0,
            elect_at: now + random_timeout(min_ms, max_ms),
            granted_at: None,
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

/// How often election timers are checked: fine enough that the randomised election timeout
/// really spreads candidates out. (Checked only at heartbeat ticks, 250 ms apart and in phase
/// on nodes started together, candidates of a group collided and split the vote about one
/// time in four, each split costing another timeout.)
const ELECTION_TICK: Duration = Duration::from_millis(20);

/// The node's liveness loop (node heartbeats and elections for quiet groups, when `quiet`) and
/// node-level Raft gauges; stops when the host is dropped or shut down.
pub(crate) async fn run(host: Weak<RaftHost>, interval: Duration, quiet: bool) {
    // A random phase, so that nodes started together do not tick together.
    let phase = rand::rng().random_range(0..interval.as_millis().max(1) as u64);
    tokio::time::sleep(Duration::from_millis(phase)).await;
    let fine = ELECTION_TICK.min(interval);
    let mut tick = tokio::time::interval(fine);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beat: Option<Instant> = None;
    loop {
        tick.tick().await;
        let Some(host) = host.upgrade() else { return };
        if host.is_shut_down() {
            return;
        }
        let beat = last_beat.is_none_or(|t| t.elapsed() + fine / 2 >= interval);
        if beat {
            last_beat = Some(Instant::now());
        } else if !quiet {
            continue;
        }
        round(&host, interval, quiet, beat).await;
    }
}

/// One pass over the groups: elections due (every tick) and, when `beat`, the node
/// heartbeats and gauges.
async fn round(host: &Arc<RaftHost>, interval: Duration, quiet: bool, beat: bool) {
    let me = host.node_id();
    let (min_ms, max_ms) = host.election_timeout_ms();
    let mut beats: HashMap<NodeId, (PeerNode, Vec<GroupBeat>)> = HashMap::new();
    let mut elect: Vec<Arc<Group>> = Vec::new();
    let now = Instant::now();
    let mut log_entries = 0u64;
    let mut leaders = 0u64;
    let mut apply_lag = 0u64;
    for g in host.groups() {
        if !beat {
            // Between heartbeats: only election timers that are due (a lock and a compare
            // per group), and only for voters that follow or campaign.
            if now < g.contact.lock().elect_at {
                continue;
            }
            let due = {
                let m = g.raft.metrics();
                let m = m.borrow();
                matches!(m.state, ServerState::Follower | ServerState::Candidate)
                    && m.membership_config.membership().voter_ids().any(|v| v == me)
            };
            if due {
                g.contact.lock().elect_at = now + random_timeout(min_ms, max_ms);
                elect.push(g.clone());
            }
            continue;
        }
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
                // A leader that has lost contact with its quorum (CheckQuorum) goes quiet
                // for the group: it refuses writes anyway, and its followers, no longer
                // hearing it, elect a leader that can commit (openraft 0.9 cannot make a
                // leader step down; silence has the same effect). Otherwise a leader whose
                // view of its followers went stale while they still heard it would refuse
                // writes with nobody electing: the group stuck until contact recovered.
                let silent = !host.quorum_contact_of(&m);
                if silent {
                    tracing::debug!(group = g.id, node = me, "leading without a quorum in contact: not heartbeating the group");
                }
                for (id, node) in m.membership_config.membership().nodes() {
                    if *id == me {
                        continue;
                    }
                    let e = beats
                        .entry(*id)
                        .or_insert_with(|| (node.clone(), Vec::new()));
                    if !silent {
                        e.1.push(GroupBeat {
                            group_id: g.id,
                            term: m.current_term,
                            commit_index: committed,
                        });
                    }
                }
            }
            ServerState::Follower | ServerState::Candidate => {
                // Every node we share a group with hears from us each interval (an empty
                // beat when we lead nothing there): its answers are the contact times the
                // leader's quorum check and the router's replica choice go by.
                for (id, node) in m.membership_config.membership().nodes() {
                    if *id != me {
                        beats
                            .entry(*id)
                            .or_insert_with(|| (node.clone(), Vec::new()));
                    }
                }
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
    if !beat {
        if quiet && !elect.is_empty() {
            let deadline = Duration::from_millis((min_ms / 2).max(100));
            tokio::spawn(pre_vote_then_elect(host.clone(), elect, deadline));
        }
        return;
    }
    metrics::gauge!("engram_raft_log_entries").set(log_entries as f64);
    metrics::gauge!("engram_raft_apply_lag_entries").set(apply_lag as f64);
    metrics::gauge!("engram_raft_groups").set(host.group_count() as f64);
    if !quiet {
        return;
    }
    metrics::gauge!("engram_raft_groups_led").set(leaders as f64);
    for (id, node) in host.watched_peers() {
        beats.entry(id).or_insert_with(|| (node, Vec::new()));
    }
    if !elect.is_empty() {
        let deadline = Duration::from_millis((min_ms / 2).max(100));
        tokio::spawn(pre_vote_then_elect(host.clone(), elect, deadline));
    }
    // Heartbeats overlap when a peer is slow: an answer within half the election timeout
    // still counts as contact (a busy peer is not a dead one).
    let beat_deadline = Duration::from_millis((min_ms / 2).max(50)).max(interval);
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
                .heartbeat(req, beat_deadline)
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
        } else {
            // A leader we have not heard from yet (restart, new term): ask for an append.
            // Also when our term is *higher* (an election of ours that lost): the append we
            // then reject makes that leader step down and a fresh election settle the term;
            // otherwise pre-vote (which the others refuse while they hear their leader) would
            // leave this replica without a leader for good.
            lagging.push(b.group_id);
        }
    }
    lagging
}

/// Pre-vote for `groups` (whose leaders went silent here), then elects in those where a
/// majority of voters, this node included, has lost the leader too.
async fn pre_vote_then_elect(host: Arc<RaftHost>, groups: Vec<Arc<Group>>, deadline: Duration) {
    let me = host.node_id();
    let mut per_peer: HashMap<NodeId, (PeerNode, Vec<GroupPreVote>)> = HashMap::new();
    // group id -> (grants so far, votes needed, group)
    let mut tally: HashMap<u64, (usize, usize, Arc<Group>)> = HashMap::new();
    for g in groups {
        let (last_log_term, last_log_index) = match g.last_log_id() {
            Ok(l) => log_position(l.as_ref()),
            Err(e) => {
                tracing::warn!(group = g.id, "cannot read the last log id; not electing: {e}");
                continue;
            }
        };
        {
            let m = g.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            for (id, node) in membership.nodes() {
                if *id == me || !voters.contains(id) {
                    continue;
                }
                per_peer
                    .entry(*id)
                    .or_insert_with(|| (node.clone(), Vec::new()))
                    .1
                    .push(GroupPreVote {
                        group_id: g.id,
                        last_log_index,
                        last_log_term,
                    });
            }
            tally.insert(g.id, (1, voters.len() / 2 + 1, g.clone()));
        }
    }
    let started = Instant::now();
    let mut asks: futures::stream::FuturesUnordered<_> = per_peer
        .into_iter()
        .map(|(target, (node, groups))| {
            let host = host.clone();
            async move {
                let Ok(peer) = host.pool().get(target, &node.addr) else {
                    return Vec::new();
                };
                let req = PreVoteRequest {
                    from_node: me,
                    groups,
                };
                peer.pre_vote(req, deadline).await.unwrap_or_else(|e| {
                    tracing::debug!(target, "pre-vote failed: {e}");
                    Vec::new()
                })
            }
        })
        .collect();
    // Decide each group as soon as its majority is in: waiting for an unreachable voter's
    // timeout would let another candidate win meanwhile, and this one then depose it.
    let decide = |gid: u64, grants: usize, g: &Arc<Group>| {
        let (heard_since, deferred) = {
            let c = g.contact.lock();
            (
                c.last.is_some_and(|t| t > started),
                // Another replica asked first and this one said yes: let it win.
                c.granted_at.is_some_and(|t| t > started),
            )
        };
        if deferred {
            tracing::debug!(group = gid, node = me, "granted another candidate's pre-vote; not electing");
            return None;
        }
        let leading = g.raft.metrics().borrow().state == ServerState::Leader;
        if heard_since || leading {
            return None;
        }
        tracing::info!(
            group = gid,
            node = me,
            grants,
            "leader silent past the election timeout and a majority agrees; electing"
        );
        metrics::counter!("engram_raft_elections_started_total").increment(1);
        Some(g.clone())
    };
    let mut elect = Vec::new();
    for (gid, (grants, needed, g)) in tally.iter() {
        if grants >= needed {
            elect.extend(decide(*gid, *grants, g));
        }
    }
    for g in elect.drain(..) {
        let _ = g.raft.trigger().elect().await;
    }
    use futures::StreamExt;
    while let Some(granted) = asks.next().await {
        for gid in granted {
            if let Some(t) = tally.get_mut(&gid) {
                t.0 += 1;
                if t.0 == t.1 {
                    elect.extend(decide(gid, t.0, &t.2));
                }
            }
        }
        for g in elect.drain(..) {
            let _ = g.raft.trigger().elect().await;
        }
    }
    for (gid, (grants, needed, _)) in tally {
        if grants < needed {
            tracing::debug!(group = gid, grants, needed, "pre-vote lost; not electing");
            metrics::counter!("engram_raft_pre_votes_lost_total").increment(1);
        }
    }
}

/// A log position as (term, index), the order Raft's up-to-date test uses; (0, 0) for an
/// empty log.
fn log_position(last: Option<&LogId>) -> (u64, u64) {
    last.map(|l| (l.leader_id.term, l.index)).unwrap_or((0, 0))
}

/// Answers a pre-vote: grants the groups where this node is not the leader, has not heard its
/// leader for an election timeout either, and whose last log entry is not later than the
/// candidate's, by (term, index): exactly the test the real vote will make.
///
/// A weaker log test (the candidate's last index covering this replica's *applied* index, as
/// before) let a candidate that was behind win the pre-vote, start an election this replica
/// then refused by log; openraft refuses such a vote without adopting its term, so this
/// replica's own next election came at the candidate's term and was refused in turn, over
/// and over: two connected voters of a three-voter group without a leader for a whole
/// partition (chaos seed 3, `isolate n3 | rest`, 8.6 s without writes).
pub(crate) fn on_pre_vote(host: &RaftHost, groups: &[GroupPreVote]) -> Vec<u64> {
    let (min_ms, _) = host.election_timeout_ms();
    let stale = Duration::from_millis(min_ms);
    groups
        .iter()
        .filter_map(|b| {
            let g = host.group(b.group_id)?;
            if g.raft.metrics().borrow().state == ServerState::Leader {
                return None;
            }
            let mine = match g.last_log_id() {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(group = g.id, "cannot read the last log id; refusing a pre-vote: {e}");
                    return None;
                }
            };
            if !candidate_up_to_date((b.last_log_term, b.last_log_index), mine.as_ref()) {
                tracing::debug!(
                    group = g.id,
                    candidate = ?(b.last_log_term, b.last_log_index),
                    mine = ?log_position(mine.as_ref()),
                    "pre-vote refused: the candidate's log is behind"
                );
                return None;
            }
            let mut c = g.contact.lock();
            let lost = c.last.is_none_or(|t| t.elapsed() >= stale);
            if lost {
                // Hold our own election back a while: the asker is about to run.
                let now = Instant::now();
                c.granted_at = Some(now);
                let hold = now + random_timeout(min_ms / 2, min_ms);
                if c.elect_at < hold {
                    c.elect_at = hold;
                }
            }
            lost.then_some(b.group_id)
        })
        .collect()
}

/// Raft's up-to-date test: a log whose last entry is `candidate` (term, index) is at least as
/// up to date as one ending at `mine`.
fn candidate_up_to_date(candidate: (u64, u64), mine: Option<&LogId>) -> bool {
    candidate >= log_position(mine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(term: u64, index: u64) -> LogId {
        openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn up_to_date_compares_term_before_index() {
        // Later term wins even with a shorter log.
        assert!(candidate_up_to_date((3, 5), Some(&id(2, 9))));
        // Same term: the longer log wins; equal is up to date.
        assert!(candidate_up_to_date((3, 9), Some(&id(3, 9))));
        assert!(!candidate_up_to_date((3, 8), Some(&id(3, 9))));
        // An earlier term loses however long the log: the case that duelled.
        assert!(!candidate_up_to_date((2, 50), Some(&id(3, 9))));
        // Against an empty log anything is up to date; an empty log only against one.
        assert!(candidate_up_to_date((0, 0), None));
        assert!(!candidate_up_to_date((0, 0), Some(&id(1, 1))));
    }
}
