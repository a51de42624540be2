//! One group's Raft log, vote and committed index in the node's shared RocksDB.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogId, RaftLogReader};
use parking_lot::Mutex;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::keys::{self, CF_LOG, CF_RAFT};
use super::{decode, encode, storage_rocks, NodeStore};
use crate::types::{Entry, GroupId, LogId, StorageError, TypeConfig, Vote};

/// State a group's log store and state machine share.
#[derive(Debug, Default)]
pub struct GroupShared {
    /// Log entries up to here may be deleted from disk: the index segments of every collection
    /// cover them (the state machine replays the rest of the log into the index on restart).
    pub index_durable: AtomicU64,
    /// The highest index openraft asked to purge (entries at or below are logically gone).
    pub last_purged: Mutex<Option<LogId>>,
}

/// `RaftLogStorage` for one group.
#[derive(Clone)]
pub struct LogStore {
    gid: GroupId,
    store: Arc<NodeStore>,
    shared: Arc<GroupShared>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogStore(group {})", self.gid)
    }
}

impl LogStore {
    pub fn open(
        gid: GroupId,
        store: Arc<NodeStore>,
        shared: Arc<GroupShared>,
    ) -> Result<Self, StorageError> {
        let purged: Option<LogId> = store.get(CF_RAFT, &keys::raft_key(gid, keys::RAFT_PURGED))?;
        *shared.last_purged.lock() = purged;
        Ok(LogStore { gid, store, shared })
    }

    pub fn group(&self) -> GroupId {
        self.gid
    }

    fn last_purged(&self) -> Option<LogId> {
        *self.shared.last_purged.lock()
    }

    /// Entries physically present in `[from, to)`, in order (used by the state machine to
    /// replay the index after a restart).
    pub(crate) fn read_physical(&self, from: u64, to: u64) -> Result<Vec<Entry>, StorageError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let cf = self.store.cf(CF_LOG)?;
        let it = self.store.range(
            cf,
            &keys::log_key(self.gid, from),
            keys::log_key(self.gid, to),
        );
        let mut out = Vec::new();
        for kv in it {
            let (_, v) = kv.map_err(storage_rocks)?;
            out.push(decode::<Entry>(&v, "log entry")?);
        }
        Ok(out)
    }

    /// First index physically in the log, if any.
    pub(crate) fn first_physical(&self) -> Result<Option<u64>, StorageError> {
        let cf = self.store.cf(CF_LOG)?;
        let mut it = self
            .store
            .range(cf, &keys::log_key(self.gid, 0), keys::group_end(self.gid));
        match it.next() {
            None => Ok(None),
            Some(kv) => {
                let (k, _) = kv.map_err(storage_rocks)?;
                Ok(keys::log_index_of(&k))
            }
        }
    }

    /// The id (term, index) of the last entry in the log, purged or not: what a vote's
    /// "is the candidate's log at least as up to date" test compares against.
    pub(crate) fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let last_purged = self.last_purged();
        let last = self.last_physical()?.map(|e| *e.get_log_id());
        Ok(match (last, last_purged) {
            (Some(l), Some(p)) if l.index > p.index => Some(l),
            (Some(_), Some(p)) => Some(p),
            (l, p) => l.or(p),
        })
    }

    fn last_physical(&self) -> Result<Option<Entry>, StorageError> {
        let cf = self.store.cf(CF_LOG)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(keys::log_key(self.gid, 0).to_vec());
        let end = keys::group_end(self.gid);
        let mut it =
            self.store
                .db()
                .iterator_cf_opt(&cf, ro, IteratorMode::From(&end, Direction::Reverse));
        match it.next() {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv.map_err(storage_rocks)?;
                if !k.starts_with(&keys::group_prefix(self.gid)) {
                    return Ok(None);
                }
                Ok(Some(decode::<Entry>(&v, "log entry")?))
            }
        }
    }

    /// Deletes every key of this group from the log and raft column families (group removed).
    pub(crate) fn destroy(&self) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        for name in [CF_LOG, CF_RAFT] {
            let cf = self.store.cf(name)?;
            b.delete_range_cf(
                &cf,
                keys::group_prefix(self.gid).to_vec(),
                keys::group_end(self.gid),
            );
        }
        self.store.write_sync(b)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let floor = self.last_purged().map(|l| l.index + 1).unwrap_or(0);
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(floor);
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        let entries = self.read_physical(start, end)?;
        // Only a contiguous run counts (the log never has holes; this guards against one).
        let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
        for e in entries {
            if let Some(prev) = out.last() {
                if e.get_log_id().index != prev.get_log_id().index + 1 {
                    break;
                }
            }
            out.push(e);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState {
            last_purged_log_id: self.last_purged(),
            last_log_id: self.last_log_id()?,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let cf = self.store.cf(CF_RAFT)?;
        let mut b = WriteBatch::default();
        b.put_cf(
            &cf,
            keys::raft_key(self.gid, keys::RAFT_VOTE),
            encode(vote)?,
        );
        self.store.write_sync(b)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.store
            .get(CF_RAFT, &keys::raft_key(self.gid, keys::RAFT_VOTE))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let cf = self.store.cf(CF_RAFT)?;
        let mut b = WriteBatch::default();
        b.put_cf(
            &cf,
            keys::raft_key(self.gid, keys::RAFT_COMMITTED),
            encode(&committed)?,
        );
        self.store.write(b)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .store
            .get::<Option<LogId>>(CF_RAFT, &keys::raft_key(self.gid, keys::RAFT_COMMITTED))?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let cf = self.store.cf(CF_LOG)?;
        let mut b = WriteBatch::default();
        let mut n = 0u64;
        for e in entries {
            b.put_cf(
                &cf,
                keys::log_key(self.gid, e.get_log_id().index),
                encode(&e)?,
            );
            n += 1;
        }
        metrics::counter!("engram_raft_log_entries_appended_total").increment(n);
        self.store
            .write_then_sync(b, Box::new(move |result| callback.log_io_completed(result)));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf = self.store.cf(CF_LOG)?;
        let mut b = WriteBatch::default();
        b.delete_range_cf(
            &cf,
            keys::log_key(self.gid, log_id.index).to_vec(),
            keys::group_end(self.gid),
        );
        self.store.write_sync(b)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf_raft = self.store.cf(CF_RAFT)?;
        let cf_log = self.store.cf(CF_LOG)?;
        let mut b = WriteBatch::default();
        b.put_cf(
            &cf_raft,
            keys::raft_key(self.gid, keys::RAFT_PURGED),
            encode(&log_id)?,
        );
        // Entries the index has not made durable yet stay on disk (logically purged).
        let upto = log_id
            .index
            .min(self.shared.index_durable.load(Ordering::SeqCst));
        b.delete_range_cf(
            &cf_log,
            keys::log_key(self.gid, 0),
            keys::log_key(self.gid, upto.saturating_add(1)),
        );
        self.store.write(b)?;
        *self.shared.last_purged.lock() = Some(log_id);
        Ok(())
    }
}

/// How many entries a group's log holds (for the log-size metric).
pub(crate) fn log_len(last_purged: Option<LogId>, last_index: Option<u64>) -> u64 {
    let lo = last_purged.map(|l| l.index + 1).unwrap_or(0);
    let hi = last_index.map(|i| i + 1).unwrap_or(0);
    hi.saturating_sub(lo)
}

/// Deletes `gid`'s log entries at or below `upto` from disk.
pub(crate) fn delete_log_upto(
    store: &NodeStore,
    gid: GroupId,
    upto: u64,
) -> Result<(), StorageError> {
    let cf = store.cf(CF_LOG)?;
    let mut b = WriteBatch::default();
    b.delete_range_cf(
        cf,
        keys::log_key(gid, 0),
        keys::log_key(gid, upto.saturating_add(1)),
    );
    store.write(b)
}

/// Used by the state machine to let physical purges catch up once the index is durable.
pub(crate) fn set_index_durable(shared: &GroupShared, upto: u64) {
    shared.index_durable.fetch_max(upto, Ordering::SeqCst);
}
