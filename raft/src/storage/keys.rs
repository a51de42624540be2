//! Key layout of the node's RocksDB. Every group-owned key starts with the group id
//! (8 bytes, big-endian), so one group's keys are one contiguous range in each column family.
//!
//! | CF      | key                                   | value                         |
//! |---------|---------------------------------------|-------------------------------|
//! | `log`   | gid · index (u64 BE)                  | postcard `Entry`              |
//! | `raft`  | gid · tag (vote/committed/purged/snap)| postcard                      |
//! | `shard` | gid · 0x01                            | applied log id + membership   |
//! | `shard` | gid · 0x02 · collection               | `IndexConfig` JSON            |
//! | `shard` | gid · 0x03 · collection · 0x00 · id   | postcard `StoredRecord`       |
//! | `shard` | gid · 0x04 · idempotency key          | postcard `IdemEntry`          |
//! | `shard` | gid · 0x05 · ts (i64 BE) · index      | idempotency key (expiry order)|
//! | `shard` | gid · 0x06 · key                      | postcard `KvEntry` (versioned)|
//! | `meta`  | `group/` · gid                        | postcard `GroupMeta`          |

use crate::types::GroupId;

pub const CF_LOG: &str = "log";
pub const CF_RAFT: &str = "raft";
pub const CF_SHARD: &str = "shard";
pub const CF_META: &str = "meta";
pub const ALL_CFS: [&str; 4] = [CF_LOG, CF_RAFT, CF_SHARD, CF_META];

pub const RAFT_VOTE: u8 = 1;
pub const RAFT_COMMITTED: u8 = 2;
pub const RAFT_PURGED: u8 = 3;
pub const RAFT_SNAPSHOT: u8 = 4;

pub const SHARD_APPLIED: u8 = 1;
pub const SHARD_COLLECTION: u8 = 2;
pub const SHARD_RECORD: u8 = 3;
pub const SHARD_IDEM: u8 = 4;
pub const SHARD_IDEM_ORDER: u8 = 5;
pub const SHARD_KV: u8 = 6;

pub fn group_prefix(gid: GroupId) -> [u8; 8] {
    gid.to_be_bytes()
}

/// First key past every key of `gid` (for range deletes and iterator bounds).
pub fn group_end(gid: GroupId) -> Vec<u8> {
    match gid.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff; 9],
    }
}

pub fn log_key(gid: GroupId, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&gid.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

pub fn log_index_of(key: &[u8]) -> Option<u64> {
    let b: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

pub fn raft_key(gid: GroupId, tag: u8) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&gid.to_be_bytes());
    k[8] = tag;
    k
}

pub fn shard_key(gid: GroupId, kind: u8, rest: &[&[u8]]) -> Vec<u8> {
    let len = 9 + rest.iter().map(|r| r.len()).sum::<usize>();
    let mut k = Vec::with_capacity(len);
    k.extend_from_slice(&gid.to_be_bytes());
    k.push(kind);
    for r in rest {
        k.extend_from_slice(r);
    }
    k
}

pub fn applied_key(gid: GroupId) -> Vec<u8> {
    shard_key(gid, SHARD_APPLIED, &[])
}

pub fn collection_key(gid: GroupId, name: &str) -> Vec<u8> {
    shard_key(gid, SHARD_COLLECTION, &[name.as_bytes()])
}

/// Prefix of every record of one collection (collection names never contain 0x00).
pub fn records_prefix(gid: GroupId, collection: &str) -> Vec<u8> {
    shard_key(gid, SHARD_RECORD, &[collection.as_bytes(), &[0]])
}

pub fn record_key(gid: GroupId, collection: &str, id: &str) -> Vec<u8> {
    shard_key(
        gid,
        SHARD_RECORD,
        &[collection.as_bytes(), &[0], id.as_bytes()],
    )
}

pub fn kv_key(gid: GroupId, key: &str) -> Vec<u8> {
    shard_key(gid, SHARD_KV, &[key.as_bytes()])
}

pub fn idem_key(gid: GroupId, key: &str) -> Vec<u8> {
    shard_key(gid, SHARD_IDEM, &[key.as_bytes()])
}

pub fn idem_order_key(gid: GroupId, ts_ms: i64, index: u64) -> Vec<u8> {
    shard_key(
        gid,
        SHARD_IDEM_ORDER,
        &[
            &(ts_ms as u64 ^ (1 << 63)).to_be_bytes(),
            &index.to_be_bytes(),
        ],
    )
}

/// Decodes the timestamp of an idempotency-order key.
pub fn idem_order_ts(key: &[u8]) -> Option<i64> {
    let b: [u8; 8] = key.get(9..17)?.try_into().ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}

pub fn group_meta_key(gid: GroupId) -> Vec<u8> {
    let mut k = b"group/".to_vec();
    k.extend_from_slice(&gid.to_be_bytes());
    k
}

pub const GROUP_META_PREFIX: &[u8] = b"group/";

/// The first key strictly after every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ranges_do_not_overlap() {
        let a = log_key(7, u64::MAX);
        let b = log_key(8, 0);
        assert!(a.as_slice() < group_end(7).as_slice());
        assert!(group_end(7).as_slice() <= b.as_slice());
        assert!(record_key(7, "c", "zzz") < group_end(7));
    }

    #[test]
    fn idem_order_sorts_by_time_even_for_negative_times() {
        let a = idem_order_key(1, -5, 9);
        let b = idem_order_key(1, 3, 1);
        assert!(a < b);
        assert_eq!(idem_order_ts(&a), Some(-5));
        assert_eq!(idem_order_ts(&b), Some(3));
    }

    #[test]
    fn prefix_end_is_past_all_extensions() {
        let p = records_prefix(3, "abc");
        let end = prefix_end(&p);
        assert!(record_key(3, "abc", "\u{10FFFF}") < end);
        assert!(record_key(3, "abd", "") >= end);
    }
}
