//! Who this node can hear, and what a leader does without a majority in contact
//! (CheckQuorum, ADR 0006): the peers every node heartbeats, reachability from their
//! answers, and the guard around leader operations.

use std::time::Duration;

use openraft::ServerState;

use super::{Group, RaftHost};
use crate::error::RaftError;
use crate::types::{NodeId, PeerNode, RaftMetrics};

impl RaftHost {
    /// Peers to heartbeat besides those sharing a group with this node (this node itself is
    /// ignored): their answers feed [`RaftHost::peer_reachable`].
    pub fn watch_peers(&self, peers: Vec<(NodeId, PeerNode)>) {
        let me = self.node_id();
        let peers: Vec<_> = peers.into_iter().filter(|(id, _)| *id != me).collect();
        if *self.watched.read() != peers {
            *self.watched.write() = peers;
        }
    }

    pub(crate) fn watched_peers(&self) -> Vec<(NodeId, PeerNode)> {
        self.watched.read().clone()
    }

    /// Whether `node` answered one of this node's peer RPCs within the election timeout
    /// (heartbeats go to every node sharing a group every `heartbeat_ms`). This node itself,
    /// and peers not dialled yet, count as reachable.
    pub fn peer_reachable(&self, node: NodeId) -> bool {
        node == self.node_id()
            || self.pool.reachable(
                node,
                Duration::from_millis(self.config.timing.election_min_ms.max(1)),
            )
    }

    /// CheckQuorum (as in etcd): a leader that has not heard from a majority of its voters
    /// within the election timeout cannot commit, and the majority is electing a new leader.
    /// `false` only for such a leader.
    fn quorum_contact(&self, g: &Group) -> bool {
        let m = g.raft.metrics();
        let m = m.borrow();
        self.quorum_contact_of(&m)
    }

    pub(crate) fn quorum_contact_of(&self, m: &RaftMetrics) -> bool {
        if m.state != ServerState::Leader {
            return true;
        }
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        let heard = voters.iter().filter(|v| self.peer_reachable(**v)).count();
        heard * 2 > voters.len()
    }

    /// Runs a leader operation (a proposal, a read-index round) unless this node is, or
    /// becomes, a leader cut off from its quorum: then it fails at once with a retryable
    /// `Unavailable` (a proposal already made may still commit later, so its outcome is
    /// unknown, as with any timeout) and the router tries the majority side instead of
    /// waiting out its attempt timeout here.
    pub(super) async fn while_quorum<F: std::future::Future>(
        &self,
        g: &Group,
        op: F,
    ) -> Result<F::Output, RaftError> {
        let lost = || {
            tracing::debug!(group = g.id, node = self.node_id(), "refusing: leader without a quorum in contact");
            RaftError::Unavailable {
            group: g.id,
            message: format!(
                "node {} leads group {} but has not heard from a majority of its replicas for {} ms (cut off from them?)",
                self.node_id(),
                g.id,
                self.config.timing.election_min_ms
            ),
        }
        };
        if !self.quorum_contact(g) {
            metrics::counter!("engram_raft_quorum_lost_refusals_total").increment(1);
            return Err(lost());
        }
        tokio::pin!(op);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.tick().await;
        loop {
            tokio::select! {
                r = &mut op => return Ok(r),
                _ = tick.tick() => {
                    if !self.quorum_contact(g) {
                        metrics::counter!("engram_raft_quorum_lost_refusals_total").increment(1);
                        return Err(lost());
                    }
                }
            }
        }
    }
}
