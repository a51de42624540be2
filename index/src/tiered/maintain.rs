//! Background aging: seal hot → warm, move warm → cold, compact, promote recalled cold memories.
//!
//! Every structural change has the same three steps: *freeze* (under the locks, pick what to
//! rewrite), *build* (no locks: write and open the new segment), *swap* (under the locks: move
//! the locations of rows that are still live, carry over tombstones made meanwhile, persist).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::persist::{cold_path, warm_path};
use super::{Loc, State, TieredIndex};
use crate::error::Result;
use crate::graph::FlatArrays;
use crate::hot::HotTier;
use crate::segment::cold::{self, ColdSegment};
use crate::segment::warm::{self, WarmSegment};
use crate::traits::VectorIndex;
use crate::types::MemoryMeta;

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Memories sealed from hot into a new warm segment.
    pub sealed: usize,
    /// Warm segments moved to cold.
    pub demoted: usize,
    /// Segments rewritten without their tombstones.
    pub compacted: usize,
    /// Cold memories promoted back to hot.
    pub promoted: usize,
}

type Rows = Vec<(Arc<MemoryMeta>, Arc<[f32]>)>;

/// Where the rows being rewritten came from (to move their locations at swap time).
#[derive(Clone, Copy)]
enum Source {
    Hot(u64),
    Warm(u64),
    Cold(u64),
}

impl Source {
    fn loc(self, row: u32) -> Loc {
        match self {
            Source::Hot(generation) => Loc::Hot { generation, row },
            Source::Warm(segment) => Loc::Warm { segment, row },
            Source::Cold(segment) => Loc::Cold { segment, row },
        }
    }
}

enum Target {
    Warm,
    Cold,
}

impl TieredIndex {
    /// One pass of the aging policy at wall-clock time `now_ms`.
    pub fn maintain(&self, now_ms: i64) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport {
            promoted: self.promote_recalled(now_ms)?,
            ..Default::default()
        };
        let policy = self.config.policy;
        let seal = {
            let st = self.state.read();
            st.hot.row_count() >= policy.hot_max_memories
                || st
                    .hot
                    .oldest_activity_ms()
                    .is_some_and(|t| now_ms - t > policy.hot_max_age_ms)
        };
        if seal {
            report.sealed = self.seal_hot()?;
        }
        for id in self.warm_to_demote(now_ms) {
            if self.rewrite(Source::Warm(id), Target::Cold)? {
                report.demoted += 1;
            }
        }
        let (warm_dirty, cold_dirty) = {
            let st = self.state.read();
            let heavy = |rows: usize, live: usize| {
                rows > 0
                    && (rows - live) as f64 >= policy.compact_dead_fraction * rows as f64
                    && rows > live
            };
            (
                st.warm
                    .iter()
                    .filter(|s| heavy(s.rows(), s.live_count()))
                    .map(|s| s.id)
                    .collect::<Vec<_>>(),
                st.cold
                    .iter()
                    .filter(|s| heavy(s.rows(), s.live_count()))
                    .map(|s| s.id)
                    .collect::<Vec<_>>(),
            )
        };
        for id in warm_dirty {
            report.compacted += usize::from(self.rewrite(Source::Warm(id), Target::Warm)?);
        }
        for id in cold_dirty {
            report.compacted += usize::from(self.rewrite(Source::Cold(id), Target::Cold)?);
        }
        Ok(report)
    }

    fn warm_to_demote(&self, now_ms: i64) -> Vec<u64> {
        let st = self.state.read();
        let policy = self.config.policy;
        let mut ids: Vec<u64> = st
            .warm
            .iter()
            .filter(|s| now_ms - s.info.newest_activity_ms > policy.warm_max_age_ms)
            .map(|s| s.id)
            .collect();
        if let Some(cap) = policy.warm_max_memories {
            let mut by_age: Vec<&Arc<WarmSegment>> =
                st.warm.iter().filter(|s| !ids.contains(&s.id)).collect();
            by_age.sort_by_key(|s| s.info.newest_activity_ms);
            let mut live: usize = by_age.iter().map(|s| s.live_count()).sum();
            for s in by_age {
                if live <= cap {
                    break;
                }
                live -= s.live_count();
                ids.push(s.id);
            }
        }
        ids
    }

    /// Seals the whole hot tier into a new warm segment (its graph is exported, not rebuilt).
    /// Returns how many rows were sealed (0 when the hot tier was empty).
    pub fn seal_hot(&self) -> Result<usize> {
        let _m = self.maintenance.lock();
        let (frozen, watermark) = {
            let _w = self.writer.lock();
            let mut st = self.state.write();
            if let Some(frozen) = st.sealing.clone() {
                // An earlier seal failed after freezing: finish that one first.
                (frozen, st.sealing_watermark)
            } else {
                if st.hot.row_count() == 0 {
                    return Ok(0);
                }
                let fresh = st.new_hot(&self.config);
                let frozen = std::mem::replace(&mut st.hot, fresh);
                st.sealing = Some(frozen.clone());
                st.sealing_watermark = self.applied.load(Ordering::SeqCst);
                (frozen, st.sealing_watermark)
            }
        };
        let rows = frozen.rows_snapshot();
        let result = self.build_and_swap(
            Source::Hot(frozen.generation),
            rows,
            Target::Warm,
            Some(&frozen),
            watermark,
        );
        if let Err(e) = &result {
            // The frozen rows stay searchable as the sealing tier; the next pass retries.
            tracing::warn!(dir = %self.dir.display(), error = %e, "seal failed; will retry");
        }
        result.map(|n| n.unwrap_or(0))
    }

    /// Makes everything applied so far durable in the segments: seals the hot tier, saves the
    /// tombstones, and — when nothing is left in memory — advances the watermark to the last
    /// `mark_applied` sequence. Returns the watermark: the caller may forget its log up to it.
    pub fn checkpoint(&self) -> Result<u64> {
        self.seal_hot()?;
        let _m = self.maintenance.lock();
        let _w = self.writer.lock();
        let mut st = self.state.write();
        if st.hot.row_count() == 0 && st.sealing.is_none() {
            let applied = self.applied.load(std::sync::atomic::Ordering::SeqCst);
            st.watermark = st.watermark.max(applied);
        }
        self.persist_locked(&st)?;
        Ok(st.watermark)
    }

    /// Moves every warm segment to the cold tier now, whatever its age (operators, tests).
    pub fn demote_all_warm(&self) -> Result<usize> {
        let ids: Vec<u64> = self.state.read().warm.iter().map(|s| s.id).collect();
        let mut n = 0;
        for id in ids {
            n += usize::from(self.rewrite(Source::Warm(id), Target::Cold)?);
        }
        Ok(n)
    }

    /// Rewrites one segment's live rows into a new segment of `target`'s kind.
    fn rewrite(&self, source: Source, target: Target) -> Result<bool> {
        let _m = self.maintenance.lock();
        let rows: Rows = {
            let st = self.state.read();
            match source {
                Source::Warm(id) => match st.warm_segment(id) {
                    Some(s) => {
                        let dead = s.dead.snapshot();
                        let mut rows = Vec::with_capacity(s.live_count());
                        for r in 0..s.rows() as u32 {
                            let v: Arc<[f32]> = if dead.contains(r) {
                                Arc::from(Vec::new())
                            } else {
                                s.vector(r)?.into()
                            };
                            rows.push((s.meta(r), v));
                        }
                        rows
                    }
                    None => return Ok(false),
                },
                Source::Cold(id) => match st.cold_segment(id) {
                    Some(s) => {
                        let dead = s.dead.snapshot();
                        let mut rows = Vec::with_capacity(s.live_count());
                        for r in 0..s.rows() as u32 {
                            if dead.contains(r) {
                                rows.push((Arc::new(placeholder_meta()), Arc::from(Vec::new())));
                            } else {
                                let m = s.memory(r)?;
                                rows.push((Arc::new(m.meta), m.vector.into()));
                            }
                        }
                        rows
                    }
                    None => return Ok(false),
                },
                Source::Hot(_) => return Ok(false),
            }
        };
        let watermark = self.state.read().watermark;
        Ok(self
            .build_and_swap(source, rows, target, None, watermark)?
            .is_some())
    }

    /// Builds the new segment from the live rows of `rows` (dead ones have an empty vector or
    /// are dead in `frozen`), then swaps it in. Returns rows written, `None` if nothing changed.
    fn build_and_swap(
        &self,
        source: Source,
        rows: Rows,
        target: Target,
        frozen: Option<&Arc<HotTier>>,
        watermark: u64,
    ) -> Result<Option<usize>> {
        // Hot → warm keeps every row (dead ones stay as tombstones, so the exported graph
        // stays intact); other rewrites drop dead rows.
        let keep_all = frozen.is_some();
        let mut mapping: Vec<(u32, u32)> = Vec::new();
        let mut kept: Rows = Vec::new();
        for (old, (meta, v)) in rows.into_iter().enumerate() {
            if keep_all || !v.is_empty() {
                mapping.push((old as u32, kept.len() as u32));
                kept.push((meta, v));
            }
        }
        let id = {
            let mut st = self.state.write();
            st.next_segment += 1;
            st.next_segment
        };
        enum Built {
            Warm(WarmSegment),
            Cold(ColdSegment),
            Nothing,
        }
        let built = if kept.is_empty() {
            Built::Nothing
        } else {
            match target {
                Target::Warm => {
                    let path = warm_path(&self.dir, id);
                    let flat = match frozen {
                        Some(h) => FlatArrays::from_export(&h.export_graph(), 2 * h.m(), h.m()),
                        None => {
                            // Rebuild the graph over the surviving rows.
                            let tmp = HotTier::new(&self.config, u64::MAX, kept.len());
                            let rows: Vec<u32> = kept
                                .iter()
                                .map(|(m, v)| tmp.append(m.clone(), v.clone()))
                                .collect();
                            tmp.link(&rows);
                            FlatArrays::from_export(&tmp.export_graph(), 2 * tmp.m(), tmp.m())
                        }
                    };
                    warm::write(&path, &self.config, &kept, &flat)?;
                    Built::Warm(WarmSegment::open(id, &path, &self.config)?)
                }
                Target::Cold => {
                    let path = cold_path(&self.dir, id);
                    cold::write(&path, &self.config, &kept)?;
                    Built::Cold(ColdSegment::open(id, &path, &self.config)?)
                }
            }
        };
        // Swap.
        let _w = self.writer.lock();
        let mut st = self.state.write();
        let source_dead = |st: &State, row: u32| -> bool {
            match source {
                Source::Hot(_) => frozen.is_some_and(|h| h.dead.contains(row)),
                Source::Warm(s) => st.warm_segment(s).is_none_or(|x| x.dead.contains(row)),
                Source::Cold(s) => st.cold_segment(s).is_none_or(|x| x.dead.contains(row)),
            }
        };
        let new_loc = |row: u32| match &built {
            Built::Warm(_) => Loc::Warm { segment: id, row },
            _ => Loc::Cold { segment: id, row },
        };
        let mut moved = 0;
        for &(old, new) in &mapping {
            let id = &kept[new as usize].0.id;
            // Cold rows are not in the location map: their liveness is their tombstone bit.
            let live_here = !source_dead(&st, old)
                && (matches!(source, Source::Cold(_))
                    || st.locations.get(id) == Some(&source.loc(old)));
            if live_here {
                match new_loc(new) {
                    loc @ Loc::Warm { .. } => {
                        st.locations.insert(id.clone(), loc);
                    }
                    _ => {
                        st.locations.remove(id);
                    }
                }
                moved += 1;
            } else {
                match &built {
                    Built::Warm(s) => s.dead.insert(new),
                    Built::Cold(s) => s.dead.insert(new),
                    Built::Nothing => false,
                };
            }
        }
        let removed_warm = match source {
            Source::Warm(s) => st
                .warm
                .iter()
                .position(|x| x.id == s)
                .map(|i| st.warm.remove(i)),
            _ => None,
        };
        let removed_cold = match source {
            Source::Cold(s) => st
                .cold
                .iter()
                .position(|x| x.id == s)
                .map(|i| st.cold.remove(i)),
            _ => None,
        };
        if let Source::Hot(_) = source {
            st.sealing = None;
            st.watermark = st.watermark.max(watermark);
        }
        match built {
            Built::Warm(s) => st.warm.push(Arc::new(s)),
            Built::Cold(s) => st.cold.push(Arc::new(s)),
            Built::Nothing => {}
        }
        self.persist_locked(&st)?;
        drop(st);
        if let Some(s) = removed_warm {
            s.remove_files()?;
        }
        if let Some(s) = removed_cold {
            s.remove_files()?;
        }
        tracing::debug!(dir = %self.dir.display(), segment = id, moved, "segment swapped in");
        Ok(Some(moved))
    }

    /// Moves cold memories that searches recalled back into the hot tier, marking them
    /// accessed at `now_ms` (so they age from now).
    fn promote_recalled(&self, now_ms: i64) -> Result<usize> {
        let ids: Vec<String> = self.promote_queue.lock().drain().collect();
        let mut promoted = Vec::new();
        {
            let st = self.state.read();
            for id in ids {
                if let Some(Loc::Cold { segment, row }) = st.locate(&id)? {
                    if let Some(s) = st.cold_segment(segment) {
                        let mut m = s.memory(row)?;
                        m.meta.last_accessed_ms = m.meta.last_accessed_ms.max(now_ms);
                        promoted.push(m);
                    }
                }
            }
        }
        let n = promoted.len();
        if n > 0 {
            self.upsert_batch(promoted)?;
        }
        Ok(n)
    }
}

fn placeholder_meta() -> MemoryMeta {
    MemoryMeta {
        id: String::new(),
        user: String::new(),
        payload: serde_json::Value::Null,
        text: None,
        created_at_ms: 0,
        last_accessed_ms: 0,
        importance: 0.0,
    }
}

/// Runs [`TieredIndex::maintain`] every `interval` on its own thread until stopped or dropped.
pub struct MaintenanceWorker {
    stop: Arc<(parking_lot::Mutex<bool>, parking_lot::Condvar)>,
    handle: Option<JoinHandle<()>>,
    ran: Arc<AtomicBool>,
}

impl MaintenanceWorker {
    pub fn spawn(
        index: Arc<TieredIndex>,
        interval: Duration,
        clock: impl Fn() -> i64 + Send + 'static,
    ) -> Self {
        let stop = Arc::new((parking_lot::Mutex::new(false), parking_lot::Condvar::new()));
        let ran = Arc::new(AtomicBool::new(false));
        let (s, r) = (stop.clone(), ran.clone());
        let handle = std::thread::Builder::new()
            .name("engram-index-maint".into())
            .spawn(move || loop {
                {
                    let mut stopped = s.0.lock();
                    if !*stopped {
                        s.1.wait_for(&mut stopped, interval);
                    }
                    if *stopped {
                        return;
                    }
                }
                match index.maintain(clock()) {
                    Ok(report) if report != MaintenanceReport::default() => {
                        tracing::info!(dir = %index.dir().display(), ?report, "index maintenance")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(dir = %index.dir().display(), error = %e, "index maintenance failed"),
                }
                r.store(true, Ordering::SeqCst);
            })
            .ok();
        MaintenanceWorker { stop, handle, ran }
    }

    /// Whether at least one pass has completed.
    pub fn has_run(&self) -> bool {
        self.ran.load(Ordering::SeqCst)
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for MaintenanceWorker {
    fn drop(&mut self) {
        self.shutdown();
    }
}
