//! One shard's state machine: its records in the node's RocksDB (`shard` column family) and
//! its collections' [`TieredIndex`]es.
//!
//! Applying an entry writes its effects **and the applied log id in one RocksDB batch**, so a
//! restart resumes exactly after the last applied entry: nothing is applied twice, nothing
//! applied is lost. The index is then updated in memory and told the entry's log index
//! (`mark_applied`). Index segments persist up to a watermark; on open, entries between the
//! watermark and the applied index are replayed from the log into the index only (the log
//! keeps them: physical purges stop at the index watermark). When they are not there (a
//! corrupt or missing index directory) the index is rebuilt from the records.

mod apply;
mod snapshots;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use engram_index::{Hit, IndexConfig, IndexError, Memory, SearchRequest, TieredIndex, VectorIndex};
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use parking_lot::{Mutex, RwLock};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use self::apply::replay_into;
use super::keys::{self, CF_SHARD};
use super::log::{delete_log_upto, set_index_durable, GroupShared, LogStore};
use super::snapshot::SnapshotFile;
use super::{decode, storage_io_error, storage_rocks, NodeStore};
use crate::command::{now_ms, Record, ShardResponse};
use crate::types::{
    Entry, GroupId, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// Idempotency keys are remembered this long (by the proposing leader's clock).
pub const DEFAULT_IDEMPOTENCY_WINDOW_MS: i64 = 60 * 60 * 1000;

/// How many expired idempotency keys one apply removes at most (bounded work per entry).
const IDEM_EXPIRE_PER_APPLY: usize = 64;

/// Records are re-indexed in chunks of this many when an index is rebuilt.
const REBUILD_CHUNK: usize = 4096;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// A versioned value of the group's key-value space.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KvEntry {
    pub version: u64,
    pub value: Vec<u8>,
}

/// A record as stored: the log index that wrote it, and the record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRecord {
    pub seq: u64,
    pub record: Record,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdemEntry {
    index: u64,
    ts_ms: i64,
    response: ShardResponse,
}

struct Collection {
    config: IndexConfig,
    index: Arc<TieredIndex>,
}

/// A shard's applied state, shared by its state machine (the only writer) and readers.
pub struct ShardState {
    gid: GroupId,
    store: Arc<NodeStore>,
    dir: PathBuf,
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
    applied: Mutex<AppliedState>,
    applied_index: AtomicU64,
    shared: Arc<GroupShared>,
    idempotency_window_ms: i64,
}

impl std::fmt::Debug for ShardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardState(group {})", self.gid)
    }
}

impl ShardState {
    pub fn group(&self) -> GroupId {
        self.gid
    }

    /// Index of the last applied entry (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::SeqCst)
    }

    pub fn collection_names(&self) -> Vec<String> {
        self.collections.read().keys().cloned().collect()
    }

    pub fn collection_config(&self, name: &str) -> Option<IndexConfig> {
        self.collections.read().get(name).map(|c| c.config.clone())
    }

    fn collection(&self, name: &str) -> Result<Arc<Collection>, IndexError> {
        self.collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| IndexError::UnknownCollection(name.to_string()))
    }

    /// The index of a collection (for searches).
    pub fn index(&self, name: &str) -> Result<Arc<TieredIndex>, IndexError> {
        Ok(self.collection(name)?.index.clone())
    }

    pub fn search(&self, collection: &str, req: &SearchRequest) -> Result<Vec<Hit>, IndexError> {
        self.collection(collection)?.index.search(req)
    }

    pub fn get(&self, collection: &str, id: &str) -> Result<Option<Memory>, IndexError> {
        self.collection(collection)?.index.get(id)
    }

    /// The stored record (from RocksDB, not the index) and the log index that wrote it.
    pub fn get_record(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<Option<StoredRecord>, StorageError> {
        self.store
            .get(CF_SHARD, &keys::record_key(self.gid, collection, id))
    }

    /// The value and version (log index of its last write) of a key written by
    /// [`Command::KvCas`](crate::command::Command::KvCas).
    pub fn kv_get(&self, key: &str) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        Ok(self
            .store
            .get::<KvEntry>(CF_SHARD, &keys::kv_key(self.gid, key))?
            .map(|e| (e.version, e.value)))
    }

    /// Every stored record id of a collection, in key order (tests, audits).
    pub fn record_ids(&self, collection: &str) -> Result<Vec<String>, StorageError> {
        let mut out = Vec::new();
        self.scan_records(collection, |_, rec| {
            out.push(rec.record.id);
            Ok(())
        })?;
        Ok(out)
    }

    fn scan_records(
        &self,
        collection: &str,
        mut f: impl FnMut(Vec<u8>, StoredRecord) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let cf = self.store.cf(CF_SHARD)?;
        let prefix = keys::records_prefix(self.gid, collection);
        let it = self.store.range(cf, &prefix, keys::prefix_end(&prefix));
        for kv in it {
            let (k, v) = kv.map_err(storage_rocks)?;
            f(k.to_vec(), decode(&v, "record")?)?;
        }
        Ok(())
    }

    fn index_dir(&self, collection: &str) -> PathBuf {
        self.dir.join("index").join(collection)
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// Opens the shard's state from the store, replaying or rebuilding indexes as needed.
    fn open(
        gid: GroupId,
        store: Arc<NodeStore>,
        dir: PathBuf,
        shared: Arc<GroupShared>,
        log: &LogStore,
        idempotency_window_ms: i64,
    ) -> Result<Arc<Self>, StorageError> {
        let applied: AppliedState = store
            .get(CF_SHARD, &keys::applied_key(gid))?
            .unwrap_or_default();
        let applied_index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        let state = Arc::new(ShardState {
            gid,
            store,
            dir,
            collections: RwLock::new(BTreeMap::new()),
            applied: Mutex::new(applied),
            applied_index: AtomicU64::new(applied_index),
            shared,
            idempotency_window_ms,
        });
        state.load_collections(Some(log))?;
        Ok(state)
    }

    /// (Re)loads every collection from the records' configs and brings each index up to the
    /// applied index: by log replay when `log` has the entries, else by rebuilding.
    fn load_collections(&self, log: Option<&LogStore>) -> Result<(), StorageError> {
        let applied = self.applied_index();
        let configs = self.stored_configs()?;
        let mut map = BTreeMap::new();
        let mut durable = applied;
        let first_physical = match log {
            Some(l) => l.first_physical()?,
            None => None,
        };
        for (name, config) in configs {
            let dir = self.index_dir(&name);
            let opened = if log.is_some() {
                TieredIndex::open(&dir)
                    .ok()
                    .filter(|ix| ix.config() == &config)
            } else {
                None
            };
            let index = match opened {
                Some(ix) => {
                    let w = ix.watermark();
                    let replayable =
                        w >= applied || first_physical.is_some_and(|first| first <= w + 1);
                    if replayable && w < applied {
                        let entries = log
                            .map(|l| l.read_physical(w + 1, applied + 1))
                            .transpose()?
                            .unwrap_or_default();
                        let contiguous = entries.len() as u64 == applied - w;
                        if contiguous {
                            replay_into(&ix, &name, &entries).map_err(index_storage_error)?;
                            Some(ix)
                        } else {
                            None
                        }
                    } else if replayable {
                        Some(ix)
                    } else {
                        None
                    }
                }
                None => None,
            };
            let index = match index {
                Some(ix) => Arc::new(ix),
                None => {
                    tracing::info!(group = self.gid, collection = %name, "rebuilding index from records");
                    self.rebuild_index(&name, &config)?
                }
            };
            index.mark_applied(applied);
            durable = durable.min(index.watermark());
            map.insert(name, Arc::new(Collection { config, index }));
        }
        *self.collections.write() = map;
        set_index_durable(&self.shared, durable);
        Ok(())
    }

    fn stored_configs(&self) -> Result<Vec<(String, IndexConfig)>, StorageError> {
        let cf = self.store.cf(CF_SHARD)?;
        let prefix = keys::shard_key(self.gid, keys::SHARD_COLLECTION, &[]);
        let it = self.store.range(cf, &prefix, keys::prefix_end(&prefix));
        let mut out = Vec::new();
        for kv in it {
            let (k, v) = kv.map_err(storage_rocks)?;
            let name = String::from_utf8_lossy(&k[prefix.len()..]).to_string();
            let config: IndexConfig = serde_json::from_slice(&v)
                .map_err(|e| storage_io_error(format!("collection {name} config: {e}")))?;
            out.push((name, config));
        }
        Ok(out)
    }

    /// Builds a collection's index from scratch out of its stored records.
    fn rebuild_index(
        &self,
        name: &str,
        config: &IndexConfig,
    ) -> Result<Arc<TieredIndex>, StorageError> {
        let dir = self.index_dir(name);
        remove_dir(&dir)?;
        let index = TieredIndex::create(&dir, config.clone()).map_err(index_storage_error)?;
        let mut chunk = Vec::with_capacity(REBUILD_CHUNK);
        let mut failed = None;
        self.scan_records(name, |_, rec| {
            match rec.record.to_memory() {
                Ok(m) => chunk.push(m),
                Err(e) => failed = Some(format!("record {}: {e}", rec.record.id)),
            }
            if chunk.len() >= REBUILD_CHUNK {
                index
                    .upsert_batch(std::mem::take(&mut chunk))
                    .map_err(index_storage_error)?;
            }
            Ok(())
        })?;
        if let Some(e) = failed {
            return Err(storage_io_error(e));
        }
        if !chunk.is_empty() {
            index.upsert_batch(chunk).map_err(index_storage_error)?;
        }
        index.mark_applied(self.applied_index());
        index.checkpoint().map_err(index_storage_error)?;
        Ok(Arc::new(index))
    }

    /// Seals every index so the log up to the applied index can go; returns the new bound.
    pub fn checkpoint_indexes(&self) -> Result<u64, StorageError> {
        let mut durable = self.applied_index();
        let cols: Vec<Arc<Collection>> = self.collections.read().values().cloned().collect();
        for c in cols {
            durable = durable.min(c.index.checkpoint().map_err(index_storage_error)?);
        }
        set_index_durable(&self.shared, durable);
        // Entries openraft purged while the index still needed them can go now.
        let purged = (*self.shared.last_purged.lock()).map(|l| l.index);
        if let Some(p) = purged {
            delete_log_upto(&self.store, self.gid, p.min(durable))?;
        }
        Ok(durable)
    }

    /// Removes everything this group stored (the replica was removed from the group).
    pub(crate) fn destroy(&self) -> Result<(), StorageError> {
        let cf = self.store.cf(CF_SHARD)?;
        let mut b = WriteBatch::default();
        b.delete_range_cf(
            &cf,
            keys::group_prefix(self.gid).to_vec(),
            keys::group_end(self.gid),
        );
        self.store.write_sync(b)?;
        self.collections.write().clear();
        remove_dir(&self.dir)
    }
}

fn remove_dir(dir: &Path) -> Result<(), StorageError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(storage_io_error(format!("removing {}: {e}", dir.display()))),
    }
}

fn index_storage_error(e: IndexError) -> StorageError {
    storage_io_error(format!("index: {e}"))
}

fn snapshot_storage_error(e: super::snapshot::SnapshotError) -> StorageError {
    storage_io_error(e.to_string())
}

/// `RaftStateMachine` for one group: a handle on its [`ShardState`].
pub struct ShardStateMachine {
    state: Arc<ShardState>,
}

impl ShardStateMachine {
    pub fn open(
        gid: GroupId,
        store: Arc<NodeStore>,
        dir: PathBuf,
        shared: Arc<GroupShared>,
        log: &LogStore,
        idempotency_window_ms: i64,
    ) -> Result<Self, StorageError> {
        let state = ShardState::open(gid, store, dir, shared, log, idempotency_window_ms)?;
        Ok(ShardStateMachine { state })
    }

    pub fn state(&self) -> Arc<ShardState> {
        self.state.clone()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| storage_io_error(format!("state machine task failed: {e}")))?
}

impl RaftSnapshotBuilder<TypeConfig> for ShardStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let st = self.state.clone();
        blocking(move || st.build_snapshot()).await
    }
}

impl RaftStateMachine<TypeConfig> for ShardStateMachine {
    type SnapshotBuilder = ShardStateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let a = self.state.applied.lock().clone();
        Ok((a.last_applied, a.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ShardResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let st = self.state.clone();
        blocking(move || {
            let out = st.apply_entries(&entries)?;
            metrics::counter!("engram_raft_entries_applied_total").increment(entries.len() as u64);
            Ok(out)
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        ShardStateMachine {
            state: self.state.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let dir = self.state.snapshot_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| storage_io_error(format!("{}: {e}", dir.display())))?;
        Ok(Box::new(SnapshotFile {
            path: dir.join(format!("incoming-{}.part", now_ms())),
        }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let st = self.state.clone();
        let meta = meta.clone();
        blocking(move || st.install_snapshot(&meta, &snapshot)).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let st = self.state.clone();
        blocking(move || st.current_snapshot()).await
    }
}
