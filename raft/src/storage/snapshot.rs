//! Snapshot files: a consistent copy of one group's `shard` keys, written from a RocksDB
//! snapshot, streamed to peers in chunks and installed atomically.
//!
//! Layout: `ENGSNAP1`, `u32` meta length + postcard `SnapshotMeta`, then frames
//! `1 · u32 key len · key · u32 value len · value` (keys without the group prefix), then
//! `0 · u64 frame count · u32 CRC32` of every byte before the CRC. A file that is truncated,
//! altered or mislabelled is rejected before anything is installed.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"ENGSNAP1";

/// One key/value pair of a snapshot.
pub type Frame = (Vec<u8>, Vec<u8>);

/// A snapshot's data: a file on the local disk (openraft's `SnapshotData`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("I/O error on snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// Streams frames into a new snapshot file.
pub struct SnapshotWriter {
    path: PathBuf,
    out: BufWriter<File>,
    crc: crc32fast::Hasher,
    frames: u64,
    bytes: u64,
}

impl SnapshotWriter {
    pub fn create(path: &Path, meta: &SnapshotMeta) -> Result<Self, SnapshotError> {
        let io = |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = File::create(path).map_err(io)?;
        let mut w = SnapshotWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
            frames: 0,
            bytes: 0,
        };
        let meta_bytes = postcard::to_allocvec(meta).map_err(|e| SnapshotError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("encoding meta: {e}"),
        })?;
        w.put(MAGIC)?;
        w.put(&(meta_bytes.len() as u32).to_le_bytes())?;
        w.put(&meta_bytes)?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<(), SnapshotError> {
        self.crc.update(b);
        self.bytes += b.len() as u64;
        self.out.write_all(b).map_err(|source| SnapshotError::Io {
            path: self.path.clone(),
            source,
        })
    }

    pub fn frame(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        self.put(&[1])?;
        self.put(&(key.len() as u32).to_le_bytes())?;
        self.put(key)?;
        self.put(&(value.len() as u32).to_le_bytes())?;
        self.put(value)?;
        self.frames += 1;
        Ok(())
    }

    /// Writes the trailer and fsyncs; returns the file size.
    pub fn finish(mut self) -> Result<u64, SnapshotError> {
        self.put(&[0])?;
        let frames = self.frames;
        self.put(&frames.to_le_bytes())?;
        let crc = self.crc.clone().finalize();
        let path = self.path.clone();
        let io = |source| SnapshotError::Io {
            path: path.clone(),
            source,
        };
        self.out.write_all(&crc.to_le_bytes()).map_err(io)?;
        let file = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        Ok(self.bytes + 4)
    }
}

/// Reads a snapshot file's meta.
pub fn read_meta(path: &Path) -> Result<SnapshotMeta, SnapshotError> {
    let mut r = SnapshotReader::open(path)?;
    r.meta.take().ok_or_else(|| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        reason: "no meta".into(),
    })
}

/// Reads frames back, checking the trailer.
pub struct SnapshotReader {
    path: PathBuf,
    input: BufReader<File>,
    crc: crc32fast::Hasher,
    frames: u64,
    pub meta: Option<SnapshotMeta>,
    finished: bool,
}

impl SnapshotReader {
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        let file = File::open(path).map_err(|source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut r = SnapshotReader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
            frames: 0,
            meta: None,
            finished: false,
        };
        let magic = r.take(8)?;
        if magic != MAGIC {
            return Err(r.corrupt("bad magic"));
        }
        let len = r.u32()? as usize;
        if len > 64 << 20 {
            return Err(r.corrupt(format!("meta length {len} is implausible")));
        }
        let meta_bytes = r.take(len)?;
        let meta = postcard::from_bytes(&meta_bytes)
            .map_err(|e| r.corrupt(format!("decoding meta: {e}")))?;
        r.meta = Some(meta);
        Ok(r)
    }

    fn corrupt(&self, reason: impl Into<String>) -> SnapshotError {
        SnapshotError::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>, SnapshotError> {
        let mut buf = vec![0u8; n];
        self.input.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.corrupt("truncated")
            } else {
                SnapshotError::Io {
                    path: self.path.clone(),
                    source: e,
                }
            }
        })?;
        self.crc.update(&buf);
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The next (key, value), or `None` after the trailer verified.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SnapshotError> {
        if self.finished {
            return Ok(None);
        }
        let tag = self.take(1)?[0];
        match tag {
            1 => {
                let klen = self.u32()? as usize;
                if klen > 1 << 20 {
                    return Err(self.corrupt(format!("key length {klen} is implausible")));
                }
                let key = self.take(klen)?;
                let vlen = self.u32()? as usize;
                if vlen > 1 << 30 {
                    return Err(self.corrupt(format!("value length {vlen} is implausible")));
                }
                let value = self.take(vlen)?;
                self.frames += 1;
                Ok(Some((key, value)))
            }
            0 => {
                let b = self.take(8)?;
                let count = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                let expected = self.crc.clone().finalize();
                let mut crc = [0u8; 4];
                self.input
                    .read_exact(&mut crc)
                    .map_err(|_| self.corrupt("truncated trailer"))?;
                if u32::from_le_bytes(crc) != expected {
                    return Err(self.corrupt("checksum mismatch"));
                }
                if count != self.frames {
                    return Err(self.corrupt(format!(
                        "trailer counts {count} frames, file has {}",
                        self.frames
                    )));
                }
                let mut extra = [0u8; 1];
                if self.input.read(&mut extra).unwrap_or(0) != 0 {
                    return Err(self.corrupt("bytes after the trailer"));
                }
                self.finished = true;
                Ok(None)
            }
            t => Err(self.corrupt(format!("unknown frame tag {t}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(2, 1),
                9,
            )),
            last_membership: Default::default(),
            snapshot_id: "9-2-x".into(),
        }
    }

    fn write(path: &Path, frames: &[(&[u8], &[u8])]) {
        let mut w = SnapshotWriter::create(path, &meta()).unwrap();
        for (k, v) in frames {
            w.frame(k, v).unwrap();
        }
        w.finish().unwrap();
    }

    fn read_all(path: &Path) -> Result<Vec<Frame>, SnapshotError> {
        let mut r = SnapshotReader::open(path)?;
        let mut out = Vec::new();
        while let Some(f) = r.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.snap");
        write(&p, &[(b"a", b"1"), (b"bb", b"")]);
        assert_eq!(read_meta(&p).unwrap(), meta());
        let frames = read_all(&p).unwrap();
        assert_eq!(
            frames,
            vec![(b"a".to_vec(), b"1".to_vec()), (b"bb".to_vec(), vec![])]
        );
    }

    #[test]
    fn any_flipped_byte_or_truncation_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.snap");
        write(&p, &[(b"key-1", b"value-1"), (b"key-2", b"value-2")]);
        let good = std::fs::read(&p).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            std::fs::write(&p, &bad).unwrap();
            assert!(read_all(&p).is_err(), "flipped byte {i} was accepted");
        }
        for cut in 0..good.len() {
            std::fs::write(&p, &good[..cut]).unwrap();
            assert!(read_all(&p).is_err(), "truncation at {cut} was accepted");
        }
    }
}
