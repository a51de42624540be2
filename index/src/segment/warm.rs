//! Warm segments: a sealed hot tier as one immutable, memory-mapped file.
//!
//! Vectors and graph arrays are used in place from the mapping (nothing is rebuilt or copied
//! on open); row metadata is decoded into memory at open, for filters and results. Deletes after
//! sealing are tombstones (a `.dead` side file) until the segment is compacted or moved to cold.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::codec::{cast, decode_meta, encode_meta};
use super::file::{self, check_crc, find, tag, SegmentWriter, KIND_WARM};
use super::SegmentInfo;
use crate::config::{IndexConfig, WarmResidency};
use crate::deadset::DeadSet;
use crate::distance::DistanceFn;
use crate::error::{IndexError, Result};
use crate::filter::Filter;
use crate::graph::{FlatArrays, FlatGraph};
use crate::topk::plan_search;
use crate::types::activity;
use crate::types::MemoryMeta;

pub(crate) struct WarmSegment {
    pub id: u64,
    pub path: PathBuf,
    pub info: SegmentInfo,
    map: Mmap,
    nodes0: Range<usize>,
    levels: Range<usize>,
    upper_index: Range<usize>,
    upper: Range<usize>,
    metas: Vec<Arc<MemoryMeta>>,
    by_user: HashMap<String, Vec<u32>>,
    pub dead: DeadSet,
    dist: DistanceFn,
}

/// Writes a warm segment from rows (in row order) and their graph.
pub(crate) fn write(
    path: &Path,
    config: &IndexConfig,
    rows: &[(Arc<MemoryMeta>, Arc<[f32]>)],
    graph: &FlatArrays,
) -> Result<()> {
    let info = SegmentInfo {
        dimension: config.dimension,
        metric: config.metric,
        rows: rows.len(),
        oldest_activity_ms: rows.iter().map(|r| activity(&r.0)).min().unwrap_or(0),
        newest_activity_ms: rows.iter().map(|r| activity(&r.0)).max().unwrap_or(0),
        m0: graph.m0,
        m: graph.m,
        entry: graph.entry,
        max_level: graph.max_level,
    };
    let mut w = SegmentWriter::create(path, KIND_WARM)?;
    w.bytes(tag::INFO, &serde_json::to_vec(&info).unwrap_or_default())?;
    let slot = graph.m0 + 1;
    w.section(
        tag::NODES0,
        rows.iter().enumerate().flat_map(|(i, (_, v))| {
            [
                bytemuck::cast_slice::<u32, u8>(&graph.l0[i * slot..(i + 1) * slot]),
                bytemuck::cast_slice::<f32, u8>(v),
            ]
        }),
    )?;
    w.bytes(tag::LEVELS, &graph.levels)?;
    w.bytes(tag::UPPER_INDEX, bytemuck::cast_slice(&graph.upper_index))?;
    w.bytes(tag::UPPER, bytemuck::cast_slice(&graph.upper))?;
    let mut meta = Vec::new();
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    for (m, _) in rows {
        offsets.push(meta.len() as u64);
        encode_meta(m, &mut meta);
    }
    offsets.push(meta.len() as u64);
    w.bytes(tag::META, &meta)?;
    w.bytes(tag::META_OFFSETS, bytemuck::cast_slice(&offsets))?;
    w.finish()
}

impl WarmSegment {
    /// Maps a segment file, checks every checksum and the graph's structure, decodes row
    /// metadata and loads tombstones. No graph is rebuilt.
    pub fn open(id: u64, path: &Path, config: &IndexConfig) -> Result<Self> {
        let f = File::open(path).map_err(|e| IndexError::io(path, e))?;
        // SAFETY: segment files are immutable once renamed into place; Engram never writes to
        // or truncates a published segment, it only deletes it after unmapping.
        let mapped = unsafe { Mmap::map(&f) }.map_err(|e| IndexError::io(path, e))?;
        let map = match config.warm_residency {
            WarmResidency::Mapped => {
                // Graph walks jump around the file: read-ahead would only waste page cache.
                let _ = mapped.advise(memmap2::Advice::Random);
                mapped
            }
            WarmResidency::Resident => load_resident(path, &mapped)?,
        };
        let sections = file::read_table(path, map.len() as u64, KIND_WARM, &mut |o, l| {
            Ok(map[o as usize..o as usize + l].to_vec())
        })?;
        let range = |t: u32| -> Result<Range<usize>> {
            let s = find(path, &sections, t)?;
            let r = s.offset as usize..(s.offset + s.len) as usize;
            check_crc(path, &s, &map[r.clone()])?;
            Ok(r)
        };
        let info = SegmentInfo::parse(path, &map[range(tag::INFO)?])?;
        if info.dimension != config.dimension || info.metric != config.metric {
            return Err(IndexError::corrupt(
                path,
                format!(
                    "segment is {:?}/{}, collection is {:?}/{}",
                    info.metric, info.dimension, config.metric, config.dimension
                ),
            ));
        }
        let (nodes0, levels) = (range(tag::NODES0)?, range(tag::LEVELS)?);
        let (upper_index, upper) = (range(tag::UPPER_INDEX)?, range(tag::UPPER)?);
        let (meta_range, offsets_range) = (range(tag::META)?, range(tag::META_OFFSETS)?);
        let mut seg = WarmSegment {
            id,
            path: path.to_path_buf(),
            nodes0,
            levels,
            upper_index,
            upper,
            metas: Vec::new(),
            by_user: HashMap::new(),
            dead: DeadSet::default(),
            dist: DistanceFn::new(config.metric),
            info,
            map,
        };
        seg.graph()?
            .check()
            .map_err(|r| IndexError::corrupt(path, r))?;
        let meta = &seg.map[meta_range];
        let offsets: &[u64] = cast(path, "meta offsets", &seg.map[offsets_range])?;
        if offsets.len() != seg.info.rows + 1 {
            return Err(IndexError::corrupt(
                path,
                "meta offsets do not match the row count",
            ));
        }
        let mut metas = Vec::with_capacity(seg.info.rows);
        let mut by_user: HashMap<String, Vec<u32>> = HashMap::new();
        for (row, w) in offsets.windows(2).enumerate() {
            let (a, b) = (w[0] as usize, w[1] as usize);
            if a > b || b > meta.len() {
                return Err(IndexError::corrupt(
                    path,
                    format!("row {row}: meta out of bounds"),
                ));
            }
            let m = decode_meta(path, &meta[a..b])?;
            by_user.entry(m.user.clone()).or_default().push(row as u32);
            metas.push(Arc::new(m));
        }
        seg.metas = metas;
        seg.by_user = by_user;
        seg.dead = DeadSet::from_rows(super::load_dead(path, seg.info.rows)?);
        Ok(seg)
    }

    fn graph(&self) -> Result<FlatGraph<'_>> {
        let p = &self.path;
        Ok(FlatGraph {
            dim: self.info.dimension,
            nodes_u32: cast(p, "nodes", &self.map[self.nodes0.clone()])?,
            nodes_f32: cast(p, "nodes", &self.map[self.nodes0.clone()])?,
            m0: self.info.m0,
            m: self.info.m,
            entry: self.info.entry,
            max_level: self.info.max_level,
            levels: &self.map[self.levels.clone()],
            upper_index: cast(p, "upper index", &self.map[self.upper_index.clone()])?,
            upper: cast(p, "upper", &self.map[self.upper.clone()])?,
        })
    }

    pub fn rows(&self) -> usize {
        self.info.rows
    }

    pub fn live_count(&self) -> usize {
        self.info.rows - self.dead.count()
    }

    pub fn meta(&self, row: u32) -> Arc<MemoryMeta> {
        self.metas[row as usize].clone()
    }

    pub fn vector(&self, row: u32) -> Result<&[f32]> {
        Ok(self.graph()?.vector(row))
    }

    /// Row numbers of every row with its metadata (live or dead), in row order.
    pub fn metas(&self) -> &[Arc<MemoryMeta>] {
        &self.metas
    }

    pub fn matching_rows(&self, filter: &Filter) -> Vec<u32> {
        let dead = self.dead.snapshot();
        (0..self.info.rows as u32)
            .filter(|&r| !dead.contains(r) && filter.matches(&self.metas[r as usize]))
            .collect()
    }

    pub fn save_dead(&self) -> Result<()> {
        super::save_dead(&self.path, &self.dead.rows())
    }

    /// Up to `k` nearest live rows matching `filter`, nearest first.
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        filter: &Filter,
        exact_threshold: usize,
    ) -> Result<Vec<(f32, Arc<MemoryMeta>)>> {
        let g = self.graph()?;
        let n = g.len();
        let dead = self.dead.snapshot();
        let accept = |r: u32| {
            !dead.contains(r) && (filter.is_empty() || filter.matches(&self.metas[r as usize]))
        };
        let posting = filter
            .user
            .as_ref()
            .map(|u| self.by_user.get(u).map_or(&[][..], |v| &v[..]));
        let distance = |r: u32| self.dist.distance(q, g.vector(r));
        let walk = || {
            if filter.is_empty() && dead.count() == 0 {
                g.search(&self.dist, q, ef, |_| true)
            } else {
                g.search(&self.dist, q, ef, accept)
            }
        };
        let found = plan_search(k, n, exact_threshold, posting, &accept, &distance, walk);
        Ok(found
            .into_iter()
            .map(|c| (c.dist, self.metas[c.row as usize].clone()))
            .collect())
    }

    /// Removes the segment's files. Searches still holding the segment keep working: the
    /// mapping stays valid until the last reference is dropped.
    pub fn remove_files(&self) -> Result<()> {
        remove_if_exists(&super::dead_path(&self.path))?;
        remove_if_exists(&self.path)
    }
}

/// Copies a segment into anonymous memory backed by transparent huge pages where the kernel
/// allows it: random graph walks then miss the TLB far less than on 4 KiB file pages.
fn load_resident(path: &Path, mapped: &Mmap) -> Result<Mmap> {
    let mut anon =
        memmap2::MmapMut::map_anon(mapped.len().max(1)).map_err(|e| IndexError::io(path, e))?;
    #[cfg(target_os = "linux")]
    let _ = anon.advise(memmap2::Advice::HugePage);
    anon[..mapped.len()].copy_from_slice(mapped);
    anon.make_read_only().map_err(|e| IndexError::io(path, e))
}

pub(crate) fn remove_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(IndexError::io(p, e)),
    }
}
