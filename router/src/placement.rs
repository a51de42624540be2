//! Replica placement: each shard's replicas on distinct nodes in distinct zones, least-loaded
//! first, and its first leader on the replica leading the fewest shards.

use std::collections::{BTreeMap, BTreeSet};

use engram_raft::NodeId;

use crate::map::ClusterMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error(
        "cannot place {rf} replicas in distinct zones: live nodes span {zones} zone(s) ({names}); \
         add nodes in other zones, lower the replication factor, or bootstrap the cluster with \
         allow_same_zone = true to accept replicas sharing a zone"
    )]
    TooFewZones {
        rf: usize,
        zones: usize,
        names: String,
    },
    #[error("cannot place {rf} replicas: only {nodes} live node(s)")]
    TooFewNodes { rf: usize, nodes: usize },
}

/// Running load while placing several shards at once.
#[derive(Debug, Clone)]
pub struct Placer {
    zone_of: BTreeMap<NodeId, String>,
    /// (replicas, leaders) per node.
    load: BTreeMap<NodeId, (usize, usize)>,
    rf: usize,
    allow_same_zone: bool,
}

impl Placer {
    /// Places on `live` nodes of `map` (nodes known to the map and answering).
    pub fn new(map: &ClusterMap, live: &BTreeSet<NodeId>) -> Self {
        let zone_of = map
            .nodes
            .iter()
            .filter(|(id, _)| live.contains(id))
            .map(|(id, n)| (*id, n.zone.clone()))
            .collect::<BTreeMap<_, _>>();
        let all = map.load();
        let load = zone_of
            .keys()
            .map(|id| (*id, all.get(id).copied().unwrap_or((0, 0))))
            .collect();
        Placer {
            zone_of,
            load,
            rf: map.settings.replication_factor.max(1) as usize,
            allow_same_zone: map.settings.allow_same_zone,
        }
    }

    /// Replicas for one new shard and its first leader.
    pub fn place(&mut self) -> Result<(Vec<NodeId>, NodeId), PlacementError> {
        let rf = self.rf;
        if self.zone_of.len() < rf {
            return Err(PlacementError::TooFewNodes {
                rf,
                nodes: self.zone_of.len(),
            });
        }
        let mut by_zone: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
        for (id, z) in &self.zone_of {
            by_zone.entry(z.as_str()).or_default().push(*id);
        }
        if by_zone.len() < rf && !self.allow_same_zone {
            return Err(PlacementError::TooFewZones {
                rf,
                zones: by_zone.len(),
                names: by_zone.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        let node_load = |id: &NodeId| self.load.get(id).map(|l| l.0).unwrap_or(0);
        // Zones by their total load, then each zone's least-loaded node.
        let mut zones: Vec<(usize, &str, Vec<NodeId>)> = by_zone
            .into_iter()
            .map(|(z, mut nodes)| {
                nodes.sort_by_key(|n| (node_load(n), *n));
                (nodes.iter().map(node_load).sum(), z, nodes)
            })
            .collect();
        zones.sort_by_key(|(load, z, _)| (*load, z.to_string()));
        let mut chosen = Vec::with_capacity(rf);
        // Round-robin over zones: one replica per zone first; a second round only when relaxed.
        let mut round = 0;
        while chosen.len() < rf {
            let before = chosen.len();
            for (_, _, nodes) in &zones {
                if chosen.len() == rf {
                    break;
                }
                if let Some(&n) = nodes.get(round) {
                    chosen.push(n);
                }
            }
            if chosen.len() == before {
                break;
            }
            round += 1;
        }
        if chosen.len() < rf {
            return Err(PlacementError::TooFewNodes {
                rf,
                nodes: self.zone_of.len(),
            });
        }
        let leader = *chosen
            .iter()
            .min_by_key(|n| (self.load.get(n).map(|l| l.1).unwrap_or(0), **n))
            .unwrap_or(&chosen[0]);
        for n in &chosen {
            self.load.entry(*n).or_default().0 += 1;
        }
        self.load.entry(leader).or_default().1 += 1;
        chosen.sort_unstable();
        Ok((chosen, leader))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{NodeInfo, Settings, ShardInfo};

    fn map(zones: &[&str], settings: Settings) -> ClusterMap {
        let mut m = ClusterMap::new(settings);
        for (i, z) in zones.iter().enumerate() {
            m.nodes.insert(
                i as NodeId + 1,
                NodeInfo {
                    zone: z.to_string(),
                    client_addr: String::new(),
                    peer_addr: String::new(),
                    http_addr: String::new(),
                },
            );
        }
        m
    }

    fn live(m: &ClusterMap) -> BTreeSet<NodeId> {
        m.nodes.keys().copied().collect()
    }

    #[test]
    fn replicas_land_in_distinct_zones_and_leaders_spread() {
        let m = map(&["a", "a", "b", "b", "c", "c"], Settings::default());
        let mut p = Placer::new(&m, &live(&m));
        let mut leaders = BTreeMap::new();
        let mut replicas = BTreeMap::new();
        for _ in 0..12 {
            let (r, l) = p.place().expect("placeable");
            let zones: BTreeSet<&str> = r.iter().map(|n| m.nodes[n].zone.as_str()).collect();
            assert_eq!(zones.len(), 3, "replicas {r:?} share a zone");
            assert!(r.contains(&l));
            *leaders.entry(l).or_insert(0) += 1;
            for n in r {
                *replicas.entry(n).or_insert(0) += 1;
            }
        }
        // 12 shards × 3 replicas over 6 nodes: 6 each; 12 leaders: 2 each.
        assert!(replicas.values().all(|&c| c == 6), "{replicas:?}");
        assert!(leaders.values().all(|&c| c == 2), "{leaders:?}");
    }

    #[test]
    fn too_few_zones_is_refused_unless_relaxed() {
        let m = map(&["a", "a", "b"], Settings::default());
        let err = Placer::new(&m, &live(&m)).place().unwrap_err();
        assert!(matches!(err, PlacementError::TooFewZones { zones: 2, .. }));
        assert!(err.to_string().contains("allow_same_zone"), "{err}");

        let relaxed = map(
            &["a", "a", "b"],
            Settings {
                allow_same_zone: true,
                ..Settings::default()
            },
        );
        let (r, _) = Placer::new(&relaxed, &live(&relaxed))
            .place()
            .expect("relaxed");
        assert_eq!(r, vec![1, 2, 3]);
    }

    #[test]
    fn dead_nodes_are_skipped_and_existing_load_counts() {
        let mut m = map(&["a", "a", "b", "c"], Settings::default());
        m.shards.insert(
            1,
            ShardInfo {
                replicas: vec![1, 3, 4],
                leader_hint: 1,
                dedicated_to: None,
                ready: true,
            },
        );
        let (r, l) = Placer::new(&m, &live(&m)).place().expect("placeable");
        assert_eq!(r, vec![2, 3, 4], "zone a's idle node 2 is preferred");
        assert_eq!(l, 2);
        let only: BTreeSet<NodeId> = [1, 2, 3].into_iter().collect();
        assert!(
            Placer::new(&m, &only).place().is_err(),
            "node 4 (zone c) is down"
        );
    }
}
