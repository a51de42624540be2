//! Cold segments: the oldest memories, int8-quantised, on disk and not resident.
//!
//! File sections: INFO, QUANT (per-dimension min and step, f32), CODES (`rows × dim` u8),
//! VECTORS (full-precision f32, read only to re-rank), META + META_OFFSETS.
//!
//! Resident per row: meta offset (8 B), user number (4 B), created-at (8 B) — about 20 bytes,
//! against `4 × dim` for the raw vector. A search streams CODES through a small buffer with
//! positioned reads (the page cache holds the file, the process does not), keeps the best
//! `k × rerank` approximate candidates, then reads their f32 vectors and re-ranks exactly.
//! A user's memories, or any known-small matching set, are scanned exactly from VECTORS.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::codec::{cast, decode_attrs, decode_meta, encode_meta};
use super::file::{self, check_crc, find, tag, Section, SegmentWriter, KIND_COLD};
use super::SegmentInfo;
use crate::config::IndexConfig;
use crate::deadset::DeadSet;
use crate::distance::DistanceFn;
use crate::error::{IndexError, Result};
use crate::filter::Filter;
use crate::topk::TopK;
use crate::types::activity;
use crate::types::{Memory, MemoryMeta, Metric};

fn id_hash(id: &[u8]) -> u64 {
    use std::hash::Hasher;
    // In-memory only (never persisted), so std's hasher is stable enough.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(id);
    h.finish()
}

/// Rows per positioned read of the code section during a scan.
const SCAN_ROWS: usize = 4096;

pub(crate) struct ColdSegment {
    pub id: u64,
    pub path: PathBuf,
    pub info: SegmentInfo,
    file: File,
    min: Vec<f32>,
    step: Vec<f32>,
    codes: Section,
    vectors: Section,
    meta: Section,
    meta_offsets: Vec<u64>,
    user_ids: HashMap<String, u32>,
    row_user: Vec<u32>,
    row_created: Vec<i64>,
    /// Sorted hashes of the row ids, with their rows: finds a row by id without keeping the
    /// ids in memory (a hash match is confirmed by reading the id from disk).
    id_hashes: Vec<u64>,
    id_rows: Vec<u32>,
    pub dead: DeadSet,
    dist: DistanceFn,
}

/// Writes a cold segment from rows (meta, prepared vector) in row order.
pub(crate) fn write(
    path: &Path,
    config: &IndexConfig,
    rows: &[(Arc<MemoryMeta>, Arc<[f32]>)],
) -> Result<()> {
    let dim = config.dimension;
    let mut min = vec![f32::INFINITY; dim];
    let mut max = vec![f32::NEG_INFINITY; dim];
    for (_, v) in rows {
        for i in 0..dim {
            min[i] = min[i].min(v[i]);
            max[i] = max[i].max(v[i]);
        }
    }
    if rows.is_empty() {
        min.fill(0.0);
        max.fill(0.0);
    }
    let step: Vec<f32> = min
        .iter()
        .zip(&max)
        .map(|(lo, hi)| ((hi - lo) / 255.0).max(f32::MIN_POSITIVE))
        .collect();
    let mut codes = Vec::with_capacity(rows.len() * dim);
    for (_, v) in rows {
        for i in 0..dim {
            codes.push(((v[i] - min[i]) / step[i]).round().clamp(0.0, 255.0) as u8);
        }
    }
    let info = SegmentInfo {
        dimension: dim,
        metric: config.metric,
        rows: rows.len(),
        oldest_activity_ms: rows.iter().map(|r| activity(&r.0)).min().unwrap_or(0),
        newest_activity_ms: rows.iter().map(|r| activity(&r.0)).max().unwrap_or(0),
        m0: 0,
        m: 0,
        entry: 0,
        max_level: 0,
    };
    let mut w = SegmentWriter::create(path, KIND_COLD)?;
    w.bytes(tag::INFO, &serde_json::to_vec(&info).unwrap_or_default())?;
    w.section(
        tag::QUANT,
        [
            bytemuck::cast_slice::<f32, u8>(&min),
            bytemuck::cast_slice(&step),
        ],
    )?;
    w.bytes(tag::CODES, &codes)?;
    w.section(
        tag::VECTORS,
        rows.iter().map(|(_, v)| bytemuck::cast_slice::<f32, u8>(v)),
    )?;
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

impl ColdSegment {
    /// Opens a cold segment: checks every section's checksum by streaming it (nothing stays
    /// resident), and keeps only per-row attributes in memory.
    pub fn open(id: u64, path: &Path, config: &IndexConfig) -> Result<Self> {
        let file = File::open(path).map_err(|e| IndexError::io(path, e))?;
        let len = file.metadata().map_err(|e| IndexError::io(path, e))?.len();
        let read = |o: u64, l: usize| -> std::io::Result<Vec<u8>> {
            let mut b = vec![0u8; l];
            file.read_exact_at(&mut b, o)?;
            Ok(b)
        };
        let sections = file::read_table(path, len, KIND_COLD, &mut |o, l| read(o, l))?;
        let small = |t: u32| -> Result<Vec<u8>> {
            let s = find(path, &sections, t)?;
            let b = read(s.offset, s.len as usize).map_err(|e| IndexError::io(path, e))?;
            check_crc(path, &s, &b)?;
            Ok(b)
        };
        let info = SegmentInfo::parse(path, &small(tag::INFO)?)?;
        if info.dimension != config.dimension || info.metric != config.metric {
            return Err(IndexError::corrupt(
                path,
                "segment metric/dimension differ from the collection",
            ));
        }
        let dim = info.dimension;
        let quant = small(tag::QUANT)?;
        let quant: &[f32] = cast(path, "quant", &quant)?;
        if quant.len() != 2 * dim {
            return Err(IndexError::corrupt(path, "quantiser has the wrong size"));
        }
        let codes = find(path, &sections, tag::CODES)?;
        let vectors = find(path, &sections, tag::VECTORS)?;
        let meta = find(path, &sections, tag::META)?;
        if codes.len != (info.rows * dim) as u64 || vectors.len != (info.rows * dim * 4) as u64 {
            return Err(IndexError::corrupt(
                path,
                "code or vector section has the wrong size",
            ));
        }
        for s in [&codes, &vectors] {
            stream_crc(&file, path, s)?;
        }
        let offsets_bytes = small(tag::META_OFFSETS)?;
        let meta_offsets: Vec<u64> = cast::<u64>(path, "meta offsets", &offsets_bytes)?.to_vec();
        if meta_offsets.len() != info.rows + 1
            || meta_offsets.windows(2).any(|w| w[0] > w[1])
            || meta_offsets.last().is_some_and(|&e| e > meta.len)
        {
            return Err(IndexError::corrupt(path, "meta offsets out of bounds"));
        }
        // Row attributes: stream META once.
        let meta_bytes = small(tag::META)?;
        let mut user_ids: HashMap<String, u32> = HashMap::new();
        let mut row_user = Vec::with_capacity(info.rows);
        let mut row_created = Vec::with_capacity(info.rows);
        let mut by_hash: Vec<(u64, u32)> = Vec::with_capacity(info.rows);
        for (row, w) in meta_offsets.windows(2).enumerate() {
            let (id, user, created) =
                decode_attrs(path, &meta_bytes[w[0] as usize..w[1] as usize])?;
            by_hash.push((id_hash(id), row as u32));
            let next = user_ids.len() as u32;
            let uid = *user_ids.entry(user).or_insert(next);
            row_user.push(uid);
            row_created.push(created);
        }
        drop(meta_bytes);
        by_hash.sort_unstable();
        let (id_hashes, id_rows) = by_hash.into_iter().unzip();
        let dead = DeadSet::from_rows(super::load_dead(path, info.rows)?);
        Ok(ColdSegment {
            id,
            path: path.to_path_buf(),
            min: quant[..dim].to_vec(),
            step: quant[dim..].to_vec(),
            dist: DistanceFn::new(info.metric),
            info,
            file,
            codes,
            vectors,
            meta,
            meta_offsets,
            user_ids,
            row_user,
            row_created,
            id_hashes,
            id_rows,
            dead,
        })
    }

    pub fn rows(&self) -> usize {
        self.info.rows
    }

    pub fn live_count(&self) -> usize {
        self.info.rows - self.dead.count()
    }

    fn io(&self, e: std::io::Error) -> IndexError {
        IndexError::io(&self.path, e)
    }

    /// Reads a row's metadata from disk.
    pub fn meta(&self, row: u32) -> Result<MemoryMeta> {
        let (a, b) = (
            self.meta_offsets[row as usize],
            self.meta_offsets[row as usize + 1],
        );
        let mut buf = vec![0u8; (b - a) as usize];
        self.file
            .read_exact_at(&mut buf, self.meta.offset + a)
            .map_err(|e| self.io(e))?;
        decode_meta(&self.path, &buf)
    }

    /// Reads a row's full-precision vector from disk.
    pub fn vector(&self, row: u32) -> Result<Vec<f32>> {
        let d = self.info.dimension;
        let mut buf = vec![0u8; d * 4];
        let off = self.vectors.offset + (row as usize * d * 4) as u64;
        self.file
            .read_exact_at(&mut buf, off)
            .map_err(|e| self.io(e))?;
        Ok(buf
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn memory(&self, row: u32) -> Result<Memory> {
        Ok(Memory {
            meta: self.meta(row)?,
            vector: self.vector(row)?,
        })
    }

    /// The live row holding `id`, if any.
    pub fn find_live(&self, id: &str) -> Result<Option<u32>> {
        let h = id_hash(id.as_bytes());
        let start = self.id_hashes.partition_point(|&x| x < h);
        for i in start..self.id_hashes.len() {
            if self.id_hashes[i] != h {
                break;
            }
            let row = self.id_rows[i];
            if !self.dead.contains(row) && self.meta(row)?.id == id {
                return Ok(Some(row));
            }
        }
        Ok(None)
    }

    fn attrs_match(&self, filter: &Filter, user: Option<u32>, row: u32) -> bool {
        if filter.user.is_some() && user != Some(self.row_user[row as usize]) {
            return false;
        }
        let c = self.row_created[row as usize];
        filter.created_after_ms.is_none_or(|a| c >= a)
            && filter.created_before_ms.is_none_or(|b| c < b)
    }

    fn full_match(&self, filter: &Filter, user: Option<u32>, row: u32) -> Result<bool> {
        if !self.attrs_match(filter, user, row) {
            return Ok(false);
        }
        if filter.has_payload_conditions() {
            return Ok(filter.matches_payload(&self.meta(row)?.payload));
        }
        Ok(true)
    }

    pub fn matching_rows(&self, filter: &Filter) -> Result<Vec<u32>> {
        let dead = self.dead.snapshot();
        let user = filter
            .user
            .as_ref()
            .and_then(|u| self.user_ids.get(u).copied());
        if filter.user.is_some() && user.is_none() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for r in 0..self.info.rows as u32 {
            if !dead.contains(r) && self.full_match(filter, user, r)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    pub fn save_dead(&self) -> Result<()> {
        super::save_dead(&self.path, &self.dead.rows())
    }

    pub fn remove_files(&self) -> Result<()> {
        super::warm::remove_if_exists(&super::dead_path(&self.path))?;
        super::warm::remove_if_exists(&self.path)
    }

    /// Up to `k` nearest live rows matching `filter` (distance, row, meta), nearest first;
    /// `candidates` rows are re-ranked with their full-precision vectors.
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        filter: &Filter,
        candidates: usize,
        exact_threshold: usize,
    ) -> Result<Vec<(f32, u32, Arc<MemoryMeta>)>> {
        let dead = self.dead.snapshot();
        let user = match &filter.user {
            Some(u) => match self.user_ids.get(u) {
                Some(&id) => Some(id),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let user_rows: Option<Vec<u32>> = user.map(|u| {
            (0..self.info.rows as u32)
                .filter(|&r| self.row_user[r as usize] == u)
                .collect()
        });
        let mut top = TopK::new(k);
        match &user_rows {
            Some(rows) if rows.len() <= exact_threshold.max(candidates) => {
                for &r in rows {
                    if !dead.contains(r) && self.full_match(filter, user, r)? {
                        top.push(self.dist.distance(q, &self.vector(r)?), r);
                    }
                }
            }
            _ => {
                let approx = self.approximate(q, candidates, &|r| {
                    Ok(!dead.contains(r) && self.full_match(filter, user, r)?)
                })?;
                for r in approx {
                    top.push(self.dist.distance(q, &self.vector(r)?), r);
                }
            }
        }
        top.into_sorted()
            .into_iter()
            .map(|c| Ok((c.dist, c.row, Arc::new(self.meta(c.row)?))))
            .collect()
    }

    /// Scans the codes; returns up to `n` accepted rows by approximate distance.
    fn approximate(
        &self,
        q: &[f32],
        n: usize,
        accept: &dyn Fn(u32) -> Result<bool>,
    ) -> Result<Vec<u32>> {
        let dim = self.info.dimension;
        // Decoded x_i = min_i + step_i * c_i, so q·x = Σ q_i min_i + Σ (q_i step_i) c_i and
        // |q − x|² = Σ ((q_i − min_i) − step_i c_i)².
        let qs: Vec<f32> = q.iter().zip(&self.step).map(|(a, s)| a * s).collect();
        let bias: f32 = q.iter().zip(&self.min).map(|(a, m)| a * m).sum();
        let qm: Vec<f32> = q.iter().zip(&self.min).map(|(a, m)| a - m).collect();
        let metric = self.info.metric;
        let mut top = TopK::new(n);
        let mut buf = vec![0u8; SCAN_ROWS * dim];
        let rows = self.info.rows;
        let mut start = 0;
        while start < rows {
            let count = SCAN_ROWS.min(rows - start);
            let chunk = &mut buf[..count * dim];
            let off = self.codes.offset + (start * dim) as u64;
            self.file
                .read_exact_at(chunk, off)
                .map_err(|e| self.io(e))?;
            for i in 0..count {
                let row = (start + i) as u32;
                if !accept(row)? {
                    continue;
                }
                let c = &chunk[i * dim..(i + 1) * dim];
                let d = match metric {
                    Metric::Cosine => 1.0 - (bias + dot_u8(&qs, c)),
                    Metric::Dot => -(bias + dot_u8(&qs, c)),
                    Metric::L2 => l2_u8(&qm, &self.step, c),
                };
                top.push(d, row);
            }
            start += count;
        }
        Ok(top.into_sorted().into_iter().map(|c| c.row).collect())
    }
}

#[inline]
fn dot_u8(qs: &[f32], c: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    let n = qs.len().min(c.len());
    let chunks = n / 8;
    for k in 0..chunks {
        for l in 0..8 {
            acc[l] += qs[k * 8 + l] * c[k * 8 + l] as f32;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..n {
        s += qs[i] * c[i] as f32;
    }
    s
}

#[inline]
fn l2_u8(qm: &[f32], step: &[f32], c: &[u8]) -> f32 {
    let mut s = 0.0f32;
    for i in 0..qm.len().min(c.len()) {
        let d = qm[i] - step[i] * c[i] as f32;
        s += d * d;
    }
    s
}

/// Verifies a large section's CRC by streaming it through a small buffer.
fn stream_crc(file: &File, path: &Path, s: &Section) -> Result<()> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < s.len {
        let n = (s.len - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], s.offset + done)
            .map_err(|e| IndexError::io(path, e))?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    if h.finalize() != s.crc {
        return Err(IndexError::corrupt(
            path,
            format!("section {} checksum mismatch", s.tag),
        ));
    }
    Ok(())
}
