//! The on-disk container shared by warm and cold segments.
//!
//! ```text
//! [header 32 B] magic "ENGRMSEG", format version u32, kind u32, table offset u64,
//!               table length u32, table crc32 u32
//! [sections]    each starts 64-byte aligned (so f32 / u32 arrays can be mapped in place)
//! [table]       per section: tag u32, crc32 u32, offset u64, length u64, reserved u64
//! ```
//! All integers little-endian. A segment is written to `<name>.tmp`, fsynced, renamed, and the
//! directory fsynced: a crash leaves either the whole new file or none. Every section carries a
//! CRC; readers check sizes and bounds and return `Corrupt` instead of panicking.

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{IndexError, Result};

const MAGIC: &[u8; 8] = b"ENGRMSEG";
const VERSION: u32 = 2;
const HEADER_LEN: usize = 32;
const ENTRY_LEN: usize = 32;
pub(crate) const ALIGN: u64 = 64;

/// Segment kinds.
pub(crate) const KIND_WARM: u32 = 1;
pub(crate) const KIND_COLD: u32 = 2;

/// Section tags.
pub(crate) mod tag {
    pub const INFO: u32 = 1;
    pub const VECTORS: u32 = 2;
    pub const LEVELS: u32 = 3;
    /// Warm: layer-0 links and vectors interleaved per node.
    pub const NODES0: u32 = 4;
    pub const UPPER_INDEX: u32 = 5;
    pub const UPPER: u32 = 6;
    pub const META: u32 = 7;
    pub const META_OFFSETS: u32 = 8;
    pub const QUANT: u32 = 9;
    pub const CODES: u32 = 10;
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Section {
    pub tag: u32,
    pub crc: u32,
    pub offset: u64,
    pub len: u64,
}

/// Streams sections into a new segment file.
pub(crate) struct SegmentWriter {
    tmp: PathBuf,
    path: PathBuf,
    out: BufWriter<File>,
    pos: u64,
    sections: Vec<Section>,
    kind: u32,
}

impl SegmentWriter {
    pub fn create(path: &Path, kind: u32) -> Result<Self> {
        let tmp = path.with_extension("tmp");
        let file = File::create(&tmp).map_err(|e| IndexError::io(&tmp, e))?;
        let mut w = SegmentWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            tmp,
            path: path.to_path_buf(),
            pos: 0,
            sections: Vec::new(),
            kind,
        };
        w.raw(&[0u8; HEADER_LEN])?;
        Ok(w)
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| IndexError::io(&self.tmp, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn align(&mut self) -> Result<()> {
        let pad = (ALIGN - self.pos % ALIGN) % ALIGN;
        self.raw(&vec![0u8; pad as usize])
    }

    /// Writes one section from byte chunks.
    pub fn section<'a>(
        &mut self,
        tag: u32,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<()> {
        self.align()?;
        let offset = self.pos;
        let mut crc = crc32fast::Hasher::new();
        for c in chunks {
            crc.update(c);
            self.raw(c)?;
        }
        self.sections.push(Section {
            tag,
            crc: crc.finalize(),
            offset,
            len: self.pos - offset,
        });
        Ok(())
    }

    pub fn bytes(&mut self, tag: u32, bytes: &[u8]) -> Result<()> {
        self.section(tag, [bytes])
    }

    /// Writes the table and header, makes the file durable and moves it into place.
    pub fn finish(mut self) -> Result<()> {
        self.align()?;
        let table_offset = self.pos;
        let mut table = Vec::with_capacity(self.sections.len() * ENTRY_LEN);
        for s in &self.sections {
            table.extend_from_slice(&s.tag.to_le_bytes());
            table.extend_from_slice(&s.crc.to_le_bytes());
            table.extend_from_slice(&s.offset.to_le_bytes());
            table.extend_from_slice(&s.len.to_le_bytes());
            table.extend_from_slice(&0u64.to_le_bytes());
        }
        self.raw(&table)?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&self.kind.to_le_bytes());
        header.extend_from_slice(&table_offset.to_le_bytes());
        header.extend_from_slice(&(table.len() as u32).to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&table).to_le_bytes());
        let io = |e| IndexError::io(&self.tmp, e);
        self.out.flush().map_err(io)?;
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| IndexError::io(&self.tmp, e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        fs::rename(&self.tmp, &self.path).map_err(|e| IndexError::io(&self.path, e))?;
        sync_dir(&self.path)
    }
}

/// fsyncs the directory holding `path`, so a rename or create in it is durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| IndexError::io(dir, e))
}

/// Writes a small file atomically (tmp + fsync + rename + dir fsync).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let io = |e| IndexError::io(&tmp, e);
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| IndexError::io(path, e))?;
    sync_dir(path)
}

/// Parses and checks the header and section table. `read(offset, len)` reads file bytes.
pub(crate) fn read_table(
    path: &Path,
    file_len: u64,
    expect_kind: u32,
    read: &mut dyn FnMut(u64, usize) -> std::io::Result<Vec<u8>>,
) -> Result<Vec<Section>> {
    let corrupt = |r: String| IndexError::corrupt(path, r);
    if file_len < HEADER_LEN as u64 {
        return Err(corrupt(format!(
            "file is {file_len} bytes, shorter than a header"
        )));
    }
    let h = read(0, HEADER_LEN).map_err(|e| IndexError::io(path, e))?;
    if &h[0..8] != MAGIC {
        return Err(corrupt("not an Engram segment (bad magic)".into()));
    }
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |b: &[u8], o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let version = u32_at(&h, 8);
    if version != VERSION {
        return Err(corrupt(format!(
            "format version {version}, this build reads {VERSION}"
        )));
    }
    let kind = u32_at(&h, 12);
    if kind != expect_kind {
        return Err(corrupt(format!(
            "segment kind {kind}, expected {expect_kind}"
        )));
    }
    let (table_offset, table_len, table_crc) =
        (u64_at(&h, 16), u32_at(&h, 24) as usize, u32_at(&h, 28));
    if table_len % ENTRY_LEN != 0 || table_offset.checked_add(table_len as u64) != Some(file_len) {
        return Err(corrupt(
            "section table out of bounds (truncated file?)".into(),
        ));
    }
    let t = read(table_offset, table_len).map_err(|e| IndexError::io(path, e))?;
    if crc32fast::hash(&t) != table_crc {
        return Err(corrupt("section table checksum mismatch".into()));
    }
    let mut sections = Vec::new();
    for e in t.chunks_exact(ENTRY_LEN) {
        let s = Section {
            tag: u32_at(e, 0),
            crc: u32_at(e, 4),
            offset: u64_at(e, 8),
            len: u64_at(e, 16),
        };
        if s.offset % ALIGN != 0
            || s.offset
                .checked_add(s.len)
                .is_none_or(|end| end > table_offset)
        {
            return Err(corrupt(format!("section {} out of bounds", s.tag)));
        }
        sections.push(s);
    }
    // Sections must not overlap, and every byte between them is zero padding: together with
    // the CRCs this means no byte of the file can change unnoticed.
    let mut spans: Vec<(u64, u64)> = sections
        .iter()
        .map(|s| (s.offset, s.offset + s.len))
        .collect();
    spans.sort_unstable();
    let mut pos = HEADER_LEN as u64;
    for (start, end) in spans
        .into_iter()
        .chain(std::iter::once((table_offset, table_offset)))
    {
        if start < pos {
            return Err(corrupt("sections overlap".into()));
        }
        if start > pos {
            let gap = read(pos, (start - pos) as usize).map_err(|e| IndexError::io(path, e))?;
            if gap.iter().any(|&b| b != 0) {
                return Err(corrupt(format!("non-zero padding at byte {pos}")));
            }
        }
        pos = end;
    }
    Ok(sections)
}

pub(crate) fn find(path: &Path, sections: &[Section], tag: u32) -> Result<Section> {
    sections
        .iter()
        .find(|s| s.tag == tag)
        .copied()
        .ok_or_else(|| IndexError::corrupt(path, format!("missing section {tag}")))
}

/// Checks a section's CRC over bytes already in memory.
pub(crate) fn check_crc(path: &Path, s: &Section, bytes: &[u8]) -> Result<()> {
    if crc32fast::hash(bytes) != s.crc {
        return Err(IndexError::corrupt(
            path,
            format!("section {} checksum mismatch", s.tag),
        ));
    }
    Ok(())
}
