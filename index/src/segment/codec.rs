//! Binary encoding of row metadata in segment files, and small typed-slice helpers.
//!
//! A row: id, user (u32 length + UTF-8), created_at i64, last_accessed i64, importance f32,
//! payload (u32 length + JSON, length 0 = none), text (u8 flag, then u32 length + UTF-8).

use std::path::Path;

use crate::error::{IndexError, Result};
use crate::types::MemoryMeta;

pub(crate) fn encode_meta(m: &MemoryMeta, out: &mut Vec<u8>) {
    put_str(out, &m.id);
    put_str(out, &m.user);
    out.extend_from_slice(&m.created_at_ms.to_le_bytes());
    out.extend_from_slice(&m.last_accessed_ms.to_le_bytes());
    out.extend_from_slice(&m.importance.to_le_bytes());
    if m.payload.is_null() {
        out.extend_from_slice(&0u32.to_le_bytes());
    } else {
        // Serialising a serde_json::Value cannot fail.
        let json = serde_json::to_vec(&m.payload).unwrap_or_default();
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
    }
    match &m.text {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put_str(out, t);
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Decodes one row; every length is bounds-checked.
pub(crate) fn decode_meta(path: &Path, bytes: &[u8]) -> Result<MemoryMeta> {
    let mut r = Reader { b: bytes, path };
    let id = r.string()?;
    let user = r.string()?;
    let created_at_ms = i64::from_le_bytes(r.array()?);
    let last_accessed_ms = i64::from_le_bytes(r.array()?);
    let importance = f32::from_le_bytes(r.array()?);
    let plen = u32::from_le_bytes(r.array()?) as usize;
    let payload = if plen == 0 {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(r.take(plen)?)
            .map_err(|e| IndexError::corrupt(path, format!("row payload: {e}")))?
    };
    let text = match r.take(1)?[0] {
        0 => None,
        1 => Some(r.string()?),
        f => return Err(IndexError::corrupt(path, format!("row text flag {f}"))),
    };
    Ok(MemoryMeta {
        id,
        user,
        payload,
        text,
        created_at_ms,
        last_accessed_ms,
        importance,
    })
}

struct Reader<'a, 'p> {
    b: &'a [u8],
    path: &'p Path,
}

impl<'a> Reader<'a, '_> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(IndexError::corrupt(self.path, "row metadata truncated"));
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn string(&mut self) -> Result<String> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| IndexError::corrupt(self.path, "row string is not UTF-8"))
    }
}

/// Views bytes as a typed slice, or reports a corrupt (misaligned / ragged) section.
pub(crate) fn cast<'a, T: bytemuck::Pod>(
    path: &Path,
    what: &str,
    bytes: &'a [u8],
) -> Result<&'a [T]> {
    bytemuck::try_cast_slice(bytes)
        .map_err(|e| IndexError::corrupt(path, format!("section {what}: {e:?}")))
}

/// Reads just (id bytes, user, created_at) of a row, without parsing the payload.
pub(crate) fn decode_attrs<'a>(path: &Path, bytes: &'a [u8]) -> Result<(&'a [u8], String, i64)> {
    let mut r = Reader { b: bytes, path };
    let id_len = u32::from_le_bytes(r.array()?) as usize;
    let id = r.take(id_len)?;
    let user = r.string()?;
    let created = i64::from_le_bytes(r.array()?);
    Ok((id, user, created))
}

/// Tombstone file: magic, count, rows (u32 each), crc32 of everything before it.
pub(crate) fn encode_dead(rows: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + rows.len() * 4);
    out.extend_from_slice(b"ENGRDEAD");
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for r in rows {
        out.extend_from_slice(&r.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode_dead(path: &Path, bytes: &[u8], row_count: usize) -> Result<Vec<u32>> {
    let corrupt = |r: &str| IndexError::corrupt(path, r.to_string());
    if bytes.len() < 16 || &bytes[..8] != b"ENGRDEAD" {
        return Err(corrupt("not a tombstone file"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(corrupt("tombstone checksum mismatch"));
    }
    let n = u32::from_le_bytes([body[8], body[9], body[10], body[11]]) as usize;
    let rows: Vec<u32> = body[12..]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if rows.len() != n || body.len() != 12 + 4 * n || rows.iter().any(|&r| r as usize >= row_count)
    {
        return Err(corrupt("tombstone rows out of range"));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_truncation_is_an_error() {
        let m = MemoryMeta {
            id: "id-1".into(),
            user: "ü".into(),
            payload: serde_json::json!({"a": [1, 2]}),
            text: Some("hello".into()),
            created_at_ms: -5,
            last_accessed_ms: 7,
            importance: 0.5,
        };
        let mut b = Vec::new();
        encode_meta(&m, &mut b);
        let p = Path::new("x");
        assert_eq!(decode_meta(p, &b).unwrap(), m);
        for cut in 0..b.len() {
            assert!(decode_meta(p, &b[..cut]).is_err(), "cut at {cut}");
        }
    }
}
