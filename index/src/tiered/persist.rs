//! Creating, opening and persisting a tiered index directory.
//!
//! ```text
//! <dir>/manifest.json     config, segment lists, watermark (written atomically)
//! <dir>/warm-<id>.seg     warm segments      <dir>/warm-<id>.dead  their tombstones
//! <dir>/cold-<id>.seg     cold segments      <dir>/cold-<id>.dead
//! ```
//! A segment is published by writing its file first and the manifest second; files the
//! manifest does not name (left by a crash mid-seal) are removed at open.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::{Loc, State, TieredIndex};
use crate::config::IndexConfig;
use crate::distance::DistanceFn;
use crate::error::{IndexError, Result};
use crate::hot::HotTier;
use crate::segment::cold::ColdSegment;
use crate::segment::file::write_atomic;
use crate::segment::warm::{remove_if_exists, WarmSegment};

const MANIFEST: &str = "manifest.json";
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    config: IndexConfig,
    next_segment: u64,
    watermark: u64,
    warm: Vec<u64>,
    cold: Vec<u64>,
}

pub(crate) fn warm_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("warm-{id:08}.seg"))
}

pub(crate) fn cold_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("cold-{id:08}.seg"))
}

impl TieredIndex {
    /// Creates a new, empty index in `dir` (created if missing; must not hold an index).
    pub fn create(dir: impl AsRef<Path>, config: IndexConfig) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| IndexError::io(&dir, e))?;
        if dir.join(MANIFEST).exists() {
            return Err(IndexError::InvalidConfig(format!(
                "{} already holds an index",
                dir.display()
            )));
        }
        let index = Self::assemble(dir, config, Vec::new(), Vec::new(), 0, 0);
        index.persist_locked(&index.state.read())?;
        Ok(index)
    }

    /// Opens an existing index: maps its warm segments, opens its cold segments, loads their
    /// tombstones and rebuilds the location map. Nothing is re-indexed.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, |_| {})
    }

    /// Opens an existing index, first adjusting its run-time settings (search breadth, warm
    /// residency, limits, policy...). The dimension and metric cannot change.
    pub fn open_with(dir: impl AsRef<Path>, tweak: impl FnOnce(&mut IndexConfig)) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let mpath = dir.join(MANIFEST);
        let bytes = std::fs::read(&mpath).map_err(|e| IndexError::io(&mpath, e))?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| IndexError::corrupt(&mpath, format!("manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(IndexError::corrupt(
                &mpath,
                format!("manifest format {}", m.format),
            ));
        }
        let mut m = m;
        let (dimension, metric) = (m.config.dimension, m.config.metric);
        tweak(&mut m.config);
        if (m.config.dimension, m.config.metric) != (dimension, metric) {
            return Err(IndexError::InvalidConfig(
                "dimension and metric are fixed at creation".into(),
            ));
        }
        m.config.validate()?;
        let warm = m
            .warm
            .iter()
            .map(|&id| WarmSegment::open(id, &warm_path(&dir, id), &m.config).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let cold = m
            .cold
            .iter()
            .map(|&id| ColdSegment::open(id, &cold_path(&dir, id), &m.config).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        remove_orphans(&dir, &m)?;
        let index = Self::assemble(dir, m.config, warm, cold, m.next_segment, m.watermark);
        index.rebuild_locations()?;
        Ok(index)
    }

    /// Opens the index in `dir`, or creates it with `config` when there is none.
    pub fn open_or_create(dir: impl AsRef<Path>, config: IndexConfig) -> Result<Self> {
        if dir.as_ref().join(MANIFEST).exists() {
            let index = Self::open(dir)?;
            if index.config.dimension != config.dimension || index.config.metric != config.metric {
                return Err(IndexError::InvalidConfig(format!(
                    "index in {} is {:?}/{}, asked for {:?}/{}",
                    index.dir.display(),
                    index.config.metric,
                    index.config.dimension,
                    config.metric,
                    config.dimension
                )));
            }
            Ok(index)
        } else {
            Self::create(dir, config)
        }
    }

    fn assemble(
        dir: PathBuf,
        config: IndexConfig,
        warm: Vec<Arc<WarmSegment>>,
        cold: Vec<Arc<ColdSegment>>,
        next_segment: u64,
        watermark: u64,
    ) -> Self {
        let hot = Arc::new(HotTier::new(&config, 0, config.policy.hot_max_memories));
        let state = State {
            hot,
            sealing: None,
            sealing_watermark: watermark,
            warm,
            cold,
            locations: HashMap::new(),
            next_generation: 1,
            next_segment,
            watermark,
        };
        TieredIndex {
            dir,
            dist: DistanceFn::new(config.metric),
            config,
            state: RwLock::new(state),
            writer: Mutex::new(()),
            maintenance: Mutex::new(()),
            applied: AtomicU64::new(watermark),
            promote_queue: Mutex::new(HashSet::new()),
        }
    }

    /// Rebuilds id → row for the warm segments' live rows. An id live in two places (not
    /// expected: tombstones are saved before the manifest) keeps its newest warm copy.
    fn rebuild_locations(&self) -> Result<()> {
        let mut st = self.state.write();
        let mut locations: HashMap<String, Loc> = HashMap::new();
        let mut dup = 0usize;
        for s in &st.warm {
            let dead = s.dead.snapshot();
            for (row, m) in s.metas().iter().enumerate() {
                let row = row as u32;
                if dead.contains(row) {
                    continue;
                }
                if let Some(old) = locations.insert(m.id.clone(), Loc::Warm { segment: s.id, row })
                {
                    st.kill(old);
                    dup += 1;
                }
                for c in &st.cold {
                    if let Some(r) = c.find_live(&m.id)? {
                        c.dead.insert(r);
                        dup += 1;
                    }
                }
            }
        }
        if dup > 0 {
            tracing::warn!(dir = %self.dir.display(), duplicates = dup, "ids live in two segments; kept the newest");
        }
        st.locations = locations;
        Ok(())
    }

    /// Saves every segment's tombstones, then the manifest. Call with `state` held (read or
    /// write) and `writer` held, so the two agree.
    pub(crate) fn persist_locked(&self, st: &State) -> Result<()> {
        for s in &st.warm {
            s.save_dead()?;
        }
        for s in &st.cold {
            s.save_dead()?;
        }
        let m = Manifest {
            format: FORMAT,
            config: self.config.clone(),
            next_segment: st.next_segment,
            watermark: st.watermark,
            warm: st.warm.iter().map(|s| s.id).collect(),
            cold: st.cold.iter().map(|s| s.id).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&m).unwrap_or_default();
        write_atomic(&self.dir.join(MANIFEST), &bytes)
    }

    /// Persists the segments' current tombstones (deletes since the last seal).
    pub fn flush(&self) -> Result<()> {
        let _w = self.writer.lock();
        let st = self.state.read();
        self.persist_locked(&st)
    }
}

fn remove_orphans(dir: &Path, m: &Manifest) -> Result<()> {
    let keep: HashSet<PathBuf> = m
        .warm
        .iter()
        .map(|&id| warm_path(dir, id))
        .chain(m.cold.iter().map(|&id| cold_path(dir, id)))
        .flat_map(|p| [crate::segment::dead_path(&p), p])
        .collect();
    let entries = std::fs::read_dir(dir).map_err(|e| IndexError::io(dir, e))?;
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        let ours = (name.starts_with("warm-") || name.starts_with("cold-"))
            && (name.ends_with(".seg") || name.ends_with(".dead") || name.ends_with(".tmp"));
        if ours && !keep.contains(&p) {
            tracing::info!(path = %p.display(), "removing orphaned segment file");
            remove_if_exists(&p)?;
        }
    }
    Ok(())
}
