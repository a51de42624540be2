//! `TieredIndex`: one collection's memories in one shard, across the hot, warm and cold tiers.
//!
//! - Writes go to the hot tier; the previous version of a memory (in any tier) gets a
//!   tombstone. A location map (id → tier instance + row) finds a memory's live row.
//! - Searches plan over the tiers (hot, then warm, then cold when asked for or when too few
//!   results pass the filters), merge by distance and drop duplicates.
//! - Maintenance ([`maintain`](TieredIndex::maintain), usually from a [`MaintenanceWorker`])
//!   ages memories: seals the hot tier into a warm segment, moves old warm segments to cold,
//!   compacts segments heavy with tombstones, and promotes recalled cold memories.
//!
//! # Durability contract
//!
//! The index is derived state: the shard's replicated records are the truth. Sealed segments
//! and their tombstones are persisted; the hot tier is not. [`TieredIndex::mark_applied`] tells
//! the index the sequence number (Raft log index) of the last write applied; each seal records
//! the sequence its segment covers as the *watermark*. After a restart, [`TieredIndex::open`]
//! restores every segment (mapped, not rebuilt) and reports the watermark; the caller re-applies
//! its writes after the watermark. Re-applying an upsert or delete is idempotent.
//!
//! # Locking
//!
//! `writer` serialises every change to the location map (writes and the swap step of
//! maintenance); `state` is held only briefly — searches take it to snapshot the tier list and
//! then search without it. `maintenance` lets one structural change run at a time.

mod maintain;
mod persist;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

pub use maintain::{MaintenanceReport, MaintenanceWorker};

use crate::config::IndexConfig;
use crate::distance::{prepare, DistanceFn};
use crate::error::Result;
use crate::filter::Filter;
use crate::hot::HotTier;
use crate::segment::cold::ColdSegment;
use crate::segment::warm::WarmSegment;
use crate::traits::VectorIndex;
use crate::types::{Hit, Memory, MemoryMeta, SearchRequest, Tier};

/// Where a memory's live row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loc {
    Hot { generation: u64, row: u32 },
    Warm { segment: u64, row: u32 },
    Cold { segment: u64, row: u32 },
}

pub(crate) struct State {
    pub hot: Arc<HotTier>,
    /// A hot tier being written out as a warm segment; still searched until the swap.
    pub sealing: Option<Arc<HotTier>>,
    /// The applied sequence when `sealing` was frozen.
    pub sealing_watermark: u64,
    pub warm: Vec<Arc<WarmSegment>>,
    pub cold: Vec<Arc<ColdSegment>>,
    /// id → live row, for the hot and warm tiers. Cold rows are not here (that would keep
    /// every cold id resident); cold segments find their rows by id hash ([`State::locate`]).
    pub locations: HashMap<String, Loc>,
    pub next_generation: u64,
    pub next_segment: u64,
    pub watermark: u64,
}

impl State {
    fn hot_tier(&self, generation: u64) -> Option<&Arc<HotTier>> {
        if self.hot.generation == generation {
            return Some(&self.hot);
        }
        self.sealing.as_ref().filter(|s| s.generation == generation)
    }

    fn warm_segment(&self, id: u64) -> Option<&Arc<WarmSegment>> {
        self.warm.iter().find(|s| s.id == id)
    }

    fn cold_segment(&self, id: u64) -> Option<&Arc<ColdSegment>> {
        self.cold.iter().find(|s| s.id == id)
    }

    /// Tombstones a row wherever it lives.
    fn kill(&self, loc: Loc) {
        match loc {
            Loc::Hot { generation, row } => {
                if let Some(t) = self.hot_tier(generation) {
                    t.dead.insert(row);
                }
            }
            Loc::Warm { segment, row } => {
                if let Some(s) = self.warm_segment(segment) {
                    s.dead.insert(row);
                }
            }
            Loc::Cold { segment, row } => {
                if let Some(s) = self.cold_segment(segment) {
                    s.dead.insert(row);
                }
            }
        }
    }

    /// Finds a memory's live row in any tier.
    pub(crate) fn locate(&self, id: &str) -> Result<Option<Loc>> {
        if let Some(&loc) = self.locations.get(id) {
            return Ok(Some(loc));
        }
        for s in self.cold.iter().rev() {
            if let Some(row) = s.find_live(id)? {
                return Ok(Some(Loc::Cold { segment: s.id, row }));
            }
        }
        Ok(None)
    }

    /// Removes a memory from the location map (or finds its cold row), returning where it was.
    fn take(&mut self, id: &str) -> Result<Option<Loc>> {
        match self.locations.remove(id) {
            Some(loc) => Ok(Some(loc)),
            None => self.locate(id),
        }
    }

    fn new_hot(&mut self, config: &IndexConfig) -> Arc<HotTier> {
        let generation = self.next_generation;
        self.next_generation += 1;
        Arc::new(HotTier::new(
            config,
            generation,
            config.policy.hot_max_memories,
        ))
    }
}

/// Sizes of the tiers (live memories; rows include tombstoned ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierStats {
    pub hot_rows: usize,
    pub hot_live: usize,
    pub warm_segments: usize,
    pub warm_rows: usize,
    pub warm_live: usize,
    pub cold_segments: usize,
    pub cold_rows: usize,
    pub cold_live: usize,
    pub watermark: u64,
}

pub struct TieredIndex {
    dir: PathBuf,
    config: IndexConfig,
    dist: DistanceFn,
    state: RwLock<State>,
    writer: Mutex<()>,
    maintenance: Mutex<()>,
    applied: AtomicU64,
    promote_queue: Mutex<HashSet<String>>,
}

impl TieredIndex {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records that every write up to `seq` (the caller's log index) has been applied.
    pub fn mark_applied(&self, seq: u64) {
        self.applied.fetch_max(seq, Ordering::SeqCst);
    }

    /// The sequence up to which the persisted segments reflect every write.
    pub fn watermark(&self) -> u64 {
        self.state.read().watermark
    }

    pub fn stats(&self) -> TierStats {
        let st = self.state.read();
        let hot: Vec<&Arc<HotTier>> = std::iter::once(&st.hot).chain(st.sealing.iter()).collect();
        TierStats {
            hot_rows: hot.iter().map(|h| h.row_count()).sum(),
            hot_live: hot.iter().map(|h| h.live_count()).sum(),
            warm_segments: st.warm.len(),
            warm_rows: st.warm.iter().map(|s| s.rows()).sum(),
            warm_live: st.warm.iter().map(|s| s.live_count()).sum(),
            cold_segments: st.cold.len(),
            cold_rows: st.cold.iter().map(|s| s.rows()).sum(),
            cold_live: st.cold.iter().map(|s| s.live_count()).sum(),
            watermark: st.watermark,
        }
    }

    /// Which tier a memory currently lives in.
    pub fn tier_of(&self, id: &str) -> Option<Tier> {
        let loc = self.state.read().locate(id).ok().flatten()?;
        Some(match loc {
            Loc::Hot { .. } => Tier::Hot,
            Loc::Warm { .. } => Tier::Warm,
            Loc::Cold { .. } => Tier::Cold,
        })
    }

    fn write_rows(&self, items: Vec<(Arc<MemoryMeta>, Arc<[f32]>)>) -> Result<()> {
        let _w = self.writer.lock();
        let (hot, rows) = {
            let mut st = self.state.write();
            // Find every previous version first: a disk error here must not leave half a batch.
            let mut previous = Vec::new();
            for (meta, _) in &items {
                if !st.locations.contains_key(&meta.id) {
                    if let Some(loc) = st.locate(&meta.id)? {
                        previous.push(loc);
                    }
                }
            }
            previous.into_iter().for_each(|loc| st.kill(loc));
            let hot = st.hot.clone();
            let mut rows = Vec::with_capacity(items.len());
            for (meta, vector) in items {
                let id = meta.id.clone();
                let row = hot.append(meta, vector);
                let new = Loc::Hot {
                    generation: hot.generation,
                    row,
                };
                if let Some(old) = st.locations.insert(id, new) {
                    st.kill(old);
                }
                rows.push(row);
            }
            (hot, rows)
        };
        // Linking into the graph runs outside the state lock, so searches are not blocked;
        // `writer` is still held, so a seal cannot freeze this tier half-linked.
        hot.link(&rows);
        Ok(())
    }

    /// Delete by id, with the writer lock held.
    fn delete_locked(&self, st: &mut State, id: &str) -> Result<bool> {
        match st.take(id)? {
            Some(loc) => {
                st.kill(loc);
                self.promote_queue.lock().remove(id);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

fn distinct_ids(found: &[(f32, Arc<MemoryMeta>, Tier)]) -> usize {
    found
        .iter()
        .map(|f| f.1.id.as_str())
        .collect::<HashSet<_>>()
        .len()
}

impl VectorIndex for TieredIndex {
    fn config(&self) -> &IndexConfig {
        &self.config
    }

    fn upsert_batch(&self, memories: Vec<Memory>) -> Result<()> {
        memories
            .iter()
            .try_for_each(|m| self.config.validate_memory(m))?;
        let items = memories
            .into_iter()
            .map(|m| {
                let v: Arc<[f32]> = prepare(self.config.metric, m.vector).into();
                (Arc::new(m.meta), v)
            })
            .collect();
        self.write_rows(items)
    }

    fn delete(&self, id: &str) -> Result<bool> {
        let _w = self.writer.lock();
        let mut st = self.state.write();
        self.delete_locked(&mut st, id)
    }

    fn delete_by_filter(&self, filter: &Filter) -> Result<usize> {
        filter.validate()?;
        let _w = self.writer.lock();
        let mut ids: Vec<String> = Vec::new();
        {
            let st = self.state.read();
            for h in std::iter::once(&st.hot).chain(st.sealing.iter()) {
                for r in h.matching_rows(filter) {
                    if let Some((m, _)) = h.row(r) {
                        ids.push(m.id.clone());
                    }
                }
            }
            for s in &st.warm {
                ids.extend(
                    s.matching_rows(filter)
                        .into_iter()
                        .map(|r| s.meta(r).id.clone()),
                );
            }
            for s in &st.cold {
                for r in s.matching_rows(filter)? {
                    ids.push(s.meta(r)?.id);
                }
            }
        }
        let mut st = self.state.write();
        let mut n = 0;
        for id in &ids {
            n += usize::from(self.delete_locked(&mut st, id)?);
        }
        Ok(n)
    }

    fn get(&self, id: &str) -> Result<Option<Memory>> {
        let st = self.state.read();
        let Some(loc) = st.locate(id)? else {
            return Ok(None);
        };
        Ok(match loc {
            Loc::Hot { generation, row } => {
                st.hot_tier(generation)
                    .and_then(|h| h.row(row))
                    .map(|(m, v)| Memory {
                        meta: (*m).clone(),
                        vector: v.to_vec(),
                    })
            }
            Loc::Warm { segment, row } => match st.warm_segment(segment) {
                Some(s) => Some(Memory {
                    meta: (*s.meta(row)).clone(),
                    vector: s.vector(row)?.to_vec(),
                }),
                None => None,
            },
            Loc::Cold { segment, row } => match st.cold_segment(segment) {
                Some(s) => Some(s.memory(row)?),
                None => None,
            },
        })
    }

    fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>> {
        self.config.validate_search(req)?;
        let q = prepare(self.config.metric, req.vector.clone());
        let (k, ef, filter) = (req.k, self.config.ef_for(req), &req.filter);
        let threshold = self.config.exact_scan_threshold;
        let (hot, warm, cold) = {
            let st = self.state.read();
            let hot: Vec<Arc<HotTier>> = std::iter::once(st.hot.clone())
                .chain(st.sealing.clone())
                .collect();
            (hot, st.warm.clone(), st.cold.clone())
        };
        let mut found: Vec<(f32, Arc<MemoryMeta>, Tier)> = Vec::new();
        if req.tiers.includes(Tier::Hot) {
            for h in &hot {
                found.extend(
                    h.search(&q, k, ef, filter, threshold)
                        .into_iter()
                        .map(|(d, m)| (d, m, Tier::Hot)),
                );
            }
        }
        if req.tiers.includes(Tier::Warm) {
            for s in &warm {
                found.extend(
                    s.search(&q, k, ef, filter, threshold)?
                        .into_iter()
                        .map(|(d, m)| (d, m, Tier::Warm)),
                );
            }
        }
        let auto = req.tiers == crate::types::TierSelection::Auto;
        let want_cold = req.tiers.includes(Tier::Cold) || (auto && distinct_ids(&found) < k);
        let mut sources = usize::from(!found.is_empty());
        if want_cold {
            for s in &cold {
                // For the cold tier, the breadth is the number of candidates re-ranked exactly.
                let candidates = req.ef.unwrap_or(k * self.config.cold_rerank_factor).max(k);
                let hits = s.search(&q, k, filter, candidates, threshold)?;
                sources += usize::from(!hits.is_empty());
                found.extend(hits.into_iter().map(|(d, _, m)| (d, m, Tier::Cold)));
            }
        }
        found.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Each tier instance returns an id at most once, and a memory is live in one place;
        // only results merged from several sources can repeat an id (a seal or demotion
        // swapped in between two tier searches).
        if sources > 1 || hot.len() + warm.len() > 1 {
            let mut ids = HashSet::with_capacity(found.len());
            let keep: Vec<bool> = found.iter().map(|f| ids.insert(f.1.id.as_str())).collect();
            let mut it = keep.into_iter();
            found.retain(|_| it.next().unwrap_or(false));
        }
        found.truncate(k);
        if self.config.policy.promote_on_recall {
            let mut queue = self.promote_queue.lock();
            queue.extend(
                found
                    .iter()
                    .filter(|f| f.2 == Tier::Cold)
                    .map(|f| f.1.id.clone()),
            );
        }
        Ok(found
            .into_iter()
            .map(|(d, meta, tier)| Hit {
                meta,
                score: self.dist.score(d),
                tier,
            })
            .collect())
    }

    fn len(&self) -> usize {
        let st = self.state.read();
        st.locations.len() + st.cold.iter().map(|s| s.live_count()).sum::<usize>()
    }
}
