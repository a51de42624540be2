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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use engram_api::ErrorCode;
use engram_index::collections::validate_collection_name;
use engram_index::{
    Filter, Hit, IndexConfig, IndexError, Memory, SearchRequest, TieredIndex, VectorIndex,
};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftLogId, RaftSnapshotBuilder};
use parking_lot::{Mutex, RwLock};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use serde::{Deserialize, Serialize};

use super::keys::{self, CF_RAFT, CF_SHARD};
use super::log::{delete_log_upto, set_index_durable, GroupShared, LogStore};
use super::snapshot::{read_meta, SnapshotFile, SnapshotReader, SnapshotWriter};
use super::{decode, encode, storage_io_error, storage_rocks, NodeStore};
use crate::command::{now_ms, Command, Outcome, Record, ShardRequest, ShardResponse};
use crate::error::index_error_code;
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
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::prefix_end(&prefix));
        let it = self.store.db().iterator_cf_opt(
            &cf,
            ro,
            IteratorMode::From(&prefix, Direction::Forward),
        );
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
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::prefix_end(&prefix));
        let it = self.store.db().iterator_cf_opt(
            &cf,
            ro,
            IteratorMode::From(&prefix, Direction::Forward),
        );
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

    // ---- applying entries ----

    /// Applies entries in order. Each entry's record changes and applied id are one RocksDB
    /// batch; index upserts of consecutive entries are merged into one (parallel) index
    /// batch, flushed before any other index change and at the end, so the index sees the
    /// same sequence of states, just in fewer steps.
    fn apply_entries(&self, entries: &[Entry]) -> Result<Vec<ShardResponse>, StorageError> {
        let mut out = Vec::with_capacity(entries.len());
        let mut pending: Option<(Arc<Collection>, Vec<Memory>, u64)> = None;
        let flush = |pending: &mut Option<(Arc<Collection>, Vec<Memory>, u64)>| {
            if let Some((col, memories, index)) = pending.take() {
                self.after_write(AfterWrite::Upsert(col, memories), index)?;
            }
            Ok::<(), StorageError>(())
        };
        for e in entries {
            let index = e.get_log_id().index;
            let (response, after) = self.apply_entry(e)?;
            for a in after {
                match a {
                    AfterWrite::Upsert(col, memories) => match &mut pending {
                        Some((p, pm, pi)) if Arc::ptr_eq(p, &col) => {
                            pm.extend(memories);
                            *pi = index;
                        }
                        _ => {
                            flush(&mut pending)?;
                            pending = Some((col, memories, index));
                        }
                    },
                    other => {
                        flush(&mut pending)?;
                        self.after_write(other, index)?;
                    }
                }
            }
            out.push(response);
        }
        flush(&mut pending)?;
        if let Some(last) = entries.last() {
            self.applied_index
                .store(last.get_log_id().index, Ordering::SeqCst);
        }
        Ok(out)
    }

    /// Writes one entry's effects and applied id; returns the index changes still to make.
    fn apply_entry(&self, entry: &Entry) -> Result<(ShardResponse, Vec<AfterWrite>), StorageError> {
        let log_id = *entry.get_log_id();
        let cf = self.store.cf(CF_SHARD)?;
        let mut batch = WriteBatch::default();
        let mut after: Vec<AfterWrite> = Vec::new();
        let mut applied = self.applied.lock().clone();
        let mut response = ShardResponse {
            index: log_id.index,
            outcome: Outcome::None,
            deduplicated: false,
        };
        match &entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Membership(m) => {
                applied.membership = StoredMembership::new(Some(log_id), m.clone());
            }
            EntryPayload::Normal(req) => {
                response = self.apply_request(&mut batch, &mut after, log_id.index, req)?;
            }
        }
        applied.last_applied = Some(log_id);
        batch.put_cf(&cf, keys::applied_key(self.gid), encode(&applied)?);
        self.store.write(batch)?;
        *self.applied.lock() = applied;
        Ok((response, after))
    }

    fn apply_request(
        &self,
        batch: &mut WriteBatch,
        after: &mut Vec<AfterWrite>,
        index: u64,
        req: &ShardRequest,
    ) -> Result<ShardResponse, StorageError> {
        let cf = self.store.cf(CF_SHARD)?;
        if let Some(key) = &req.idempotency_key {
            if let Some(prev) = self
                .store
                .get::<IdemEntry>(CF_SHARD, &keys::idem_key(self.gid, key))?
            {
                if req.proposed_at_ms - prev.ts_ms <= self.idempotency_window_ms {
                    let mut r = prev.response;
                    r.deduplicated = true;
                    return Ok(r);
                }
            }
        }
        let outcome = match self.plan(batch, after, index, &req.command)? {
            Ok(outcome) => outcome,
            Err((code, message)) => {
                after.clear();
                batch.clear();
                Outcome::rejected(code, message)
            }
        };
        let response = ShardResponse {
            index,
            outcome,
            deduplicated: false,
        };
        if let Some(key) = &req.idempotency_key {
            if matches!(response.outcome, Outcome::Written { .. }) {
                let entry = IdemEntry {
                    index,
                    ts_ms: req.proposed_at_ms,
                    response: response.clone(),
                };
                batch.put_cf(&cf, keys::idem_key(self.gid, key), encode(&entry)?);
                batch.put_cf(
                    &cf,
                    keys::idem_order_key(self.gid, req.proposed_at_ms, index),
                    key.as_bytes(),
                );
            }
            self.expire_idempotency_keys(batch, req.proposed_at_ms)?;
        }
        Ok(response)
    }

    /// Removes a bounded number of idempotency keys older than the window.
    fn expire_idempotency_keys(
        &self,
        batch: &mut WriteBatch,
        now: i64,
    ) -> Result<(), StorageError> {
        let cf = self.store.cf(CF_SHARD)?;
        let prefix = keys::shard_key(self.gid, keys::SHARD_IDEM_ORDER, &[]);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::idem_order_key(
            self.gid,
            now.saturating_sub(self.idempotency_window_ms),
            0,
        ));
        let it = self.store.db().iterator_cf_opt(
            &cf,
            ro,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for kv in it.take(IDEM_EXPIRE_PER_APPLY) {
            let (k, v) = kv.map_err(storage_rocks)?;
            let key = String::from_utf8_lossy(&v).to_string();
            let order_index = k
                .get(17..25)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            let ik = keys::idem_key(self.gid, &key);
            if let Some(e) = self.store.get::<IdemEntry>(CF_SHARD, &ik)? {
                if Some(e.index) == order_index {
                    batch.delete_cf(&cf, ik);
                }
            }
            batch.delete_cf(&cf, k);
        }
        Ok(())
    }

    /// Validates a command against the current state and stages its writes. The outer error
    /// is a storage failure; the inner one a rejection (nothing is written).
    #[allow(clippy::type_complexity)]
    fn plan(
        &self,
        batch: &mut WriteBatch,
        after: &mut Vec<AfterWrite>,
        index: u64,
        command: &Command,
    ) -> Result<Result<Outcome, (ErrorCode, String)>, StorageError> {
        let cf = self.store.cf(CF_SHARD)?;
        let reject = |e: &IndexError| Ok(Err((index_error_code(e), e.to_string())));
        match command {
            Command::Noop => Ok(Ok(Outcome::Written {
                upserted: 0,
                deleted: 0,
            })),
            Command::CreateCollection { name, config_json } => {
                if let Err(e) = validate_collection_name(name) {
                    return reject(&e);
                }
                let config: IndexConfig = match serde_json::from_str(config_json) {
                    Ok(c) => c,
                    Err(e) => {
                        return Ok(Err((
                            ErrorCode::InvalidArgument,
                            format!("collection config is not valid: {e}"),
                        )))
                    }
                };
                if let Err(e) = config.validate() {
                    return reject(&e);
                }
                if self.collections.read().contains_key(name) {
                    return reject(&IndexError::CollectionExists(name.clone()));
                }
                batch.put_cf(
                    &cf,
                    keys::collection_key(self.gid, name),
                    config_json.as_bytes(),
                );
                after.push(AfterWrite::Create(name.clone(), config));
                Ok(Ok(Outcome::Written {
                    upserted: 0,
                    deleted: 0,
                }))
            }
            Command::DropCollection { name } => {
                if let Err(e) = self.collection(name) {
                    return reject(&e);
                }
                let prefix = keys::records_prefix(self.gid, name);
                let end = keys::prefix_end(&prefix);
                batch.delete_range_cf(&cf, prefix, end);
                batch.delete_cf(&cf, keys::collection_key(self.gid, name));
                after.push(AfterWrite::Drop(name.clone()));
                Ok(Ok(Outcome::Written {
                    upserted: 0,
                    deleted: 0,
                }))
            }
            Command::Upsert {
                collection,
                records,
            } => {
                let col = match self.collection(collection) {
                    Ok(c) => c,
                    Err(e) => return reject(&e),
                };
                let mut memories = Vec::with_capacity(records.len());
                for r in records {
                    let m = match r.to_memory() {
                        Ok(m) => m,
                        Err(e) => {
                            return reject(&IndexError::InvalidPayload(format!(
                                "memory {:?}: payload is not JSON: {e}",
                                r.id
                            )))
                        }
                    };
                    if let Err(e) = col.config.validate_memory(&m) {
                        return Ok(Err((
                            index_error_code(&e),
                            format!("memory {:?}: {e}", r.id),
                        )));
                    }
                    memories.push(m);
                }
                for r in records {
                    let stored = StoredRecord {
                        seq: index,
                        record: r.clone(),
                    };
                    batch.put_cf(
                        &cf,
                        keys::record_key(self.gid, collection, &r.id),
                        encode(&stored)?,
                    );
                }
                let n = memories.len() as u64;
                after.push(AfterWrite::Upsert(col, memories));
                Ok(Ok(Outcome::Written {
                    upserted: n,
                    deleted: 0,
                }))
            }
            Command::Delete { collection, ids } => {
                let col = match self.collection(collection) {
                    Ok(c) => c,
                    Err(e) => return reject(&e),
                };
                let mut deleted = Vec::new();
                let mut seen = std::collections::HashSet::with_capacity(ids.len());
                for id in ids {
                    if !seen.insert(id.as_str()) {
                        continue;
                    }
                    let k = keys::record_key(self.gid, collection, id);
                    if self
                        .store
                        .db()
                        .get_pinned_cf(&cf, &k)
                        .map_err(storage_rocks)?
                        .is_some()
                    {
                        batch.delete_cf(&cf, k);
                        deleted.push(id.clone());
                    }
                }
                let n = deleted.len() as u64;
                after.push(AfterWrite::Delete(col, deleted));
                Ok(Ok(Outcome::Written {
                    upserted: 0,
                    deleted: n,
                }))
            }
            Command::DeleteByFilter {
                collection,
                filter_json,
            } => {
                let col = match self.collection(collection) {
                    Ok(c) => c,
                    Err(e) => return reject(&e),
                };
                let filter: Filter = match serde_json::from_str(filter_json) {
                    Ok(f) => f,
                    Err(e) => return reject(&IndexError::InvalidFilter(format!("not valid: {e}"))),
                };
                if let Err(e) = filter.validate() {
                    return reject(&e);
                }
                let mut deleted = Vec::new();
                let mut bad = None;
                self.scan_records(collection, |k, rec| {
                    match rec.record.to_memory() {
                        Ok(m) if filter.matches(&m.meta) => {
                            batch.delete_cf(&cf, k);
                            deleted.push(rec.record.id);
                        }
                        Ok(_) => {}
                        Err(e) => bad = Some(format!("record {}: {e}", rec.record.id)),
                    }
                    Ok(())
                })?;
                if let Some(e) = bad {
                    return Err(storage_io_error(e));
                }
                let n = deleted.len() as u64;
                after.push(AfterWrite::Delete(col, deleted));
                Ok(Ok(Outcome::Written {
                    upserted: 0,
                    deleted: n,
                }))
            }
        }
    }

    fn after_write(&self, a: AfterWrite, index: u64) -> Result<(), StorageError> {
        match a {
            AfterWrite::Create(name, config) => {
                let dir = self.index_dir(&name);
                remove_dir(&dir)?;
                let ix = TieredIndex::create(&dir, config.clone()).map_err(index_storage_error)?;
                ix.mark_applied(index);
                // An empty index is durable at its creation index: a restart never replays
                // entries of an earlier collection with the same name into it.
                ix.checkpoint().map_err(index_storage_error)?;
                self.collections.write().insert(
                    name,
                    Arc::new(Collection {
                        config,
                        index: Arc::new(ix),
                    }),
                );
            }
            AfterWrite::Drop(name) => {
                self.collections.write().remove(&name);
                remove_dir(&self.index_dir(&name))?;
            }
            AfterWrite::Upsert(col, memories) => {
                col.index
                    .upsert_batch(memories)
                    .map_err(index_storage_error)?;
                col.index.mark_applied(index);
            }
            AfterWrite::Delete(col, ids) => {
                for id in ids {
                    col.index.delete(&id).map_err(index_storage_error)?;
                }
                col.index.mark_applied(index);
            }
        }
        Ok(())
    }

    // ---- snapshots ----

    fn current_snapshot_id(&self) -> Result<Option<String>, StorageError> {
        self.store
            .get(CF_RAFT, &keys::raft_key(self.gid, keys::RAFT_SNAPSHOT))
    }

    fn snapshot_path(&self, id: &str) -> PathBuf {
        self.snapshot_dir().join(format!("{id}.snap"))
    }

    fn set_current_snapshot(&self, id: &str) -> Result<(), StorageError> {
        let cf = self.store.cf(CF_RAFT)?;
        let mut b = WriteBatch::default();
        b.put_cf(
            &cf,
            keys::raft_key(self.gid, keys::RAFT_SNAPSHOT),
            encode(&id.to_string())?,
        );
        self.store.write_sync(b)?;
        // Older snapshot files are no longer served (a stream already reading one keeps its
        // open file).
        if let Ok(rd) = std::fs::read_dir(self.snapshot_dir()) {
            let keep = format!("{id}.snap");
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with(".snap") && name != keep {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    fn build_snapshot(&self) -> Result<Snapshot, StorageError> {
        self.checkpoint_indexes()?;
        let db = self.store.db();
        let view = db.snapshot();
        let cf = self.store.cf(CF_SHARD)?;
        let applied: AppliedState = match view
            .get_pinned_cf(&cf, keys::applied_key(self.gid))
            .map_err(storage_rocks)?
        {
            Some(v) => decode(&v, "applied state")?,
            None => AppliedState::default(),
        };
        let last = applied.last_applied;
        let snapshot_id = format!(
            "{}-{}-{}",
            last.map(|l| l.index).unwrap_or(0),
            last.map(|l| l.leader_id.term).unwrap_or(0),
            now_ms()
        );
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: applied.membership.clone(),
            snapshot_id: snapshot_id.clone(),
        };
        let path = self.snapshot_path(&snapshot_id);
        let tmp = path.with_extension("tmp");
        let mut w = SnapshotWriter::create(&tmp, &meta).map_err(snapshot_storage_error)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::group_end(self.gid));
        let start = keys::group_prefix(self.gid);
        let it = view.iterator_cf_opt(&cf, ro, IteratorMode::From(&start, Direction::Forward));
        for kv in it {
            let (k, v) = kv.map_err(storage_rocks)?;
            w.frame(&k[8..], &v).map_err(snapshot_storage_error)?;
        }
        let bytes = w.finish().map_err(snapshot_storage_error)?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| storage_io_error(format!("{}: {e}", path.display())))?;
        self.set_current_snapshot(&snapshot_id)?;
        metrics::counter!("engram_raft_snapshots_built_total").increment(1);
        metrics::counter!("engram_raft_snapshot_bytes_built_total").increment(bytes);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile { path }),
        })
    }

    fn install_snapshot(
        &self,
        meta: &SnapshotMeta,
        file: &SnapshotFile,
    ) -> Result<(), StorageError> {
        let file_meta = read_meta(&file.path).map_err(snapshot_storage_error)?;
        if file_meta.last_log_id != meta.last_log_id {
            return Err(storage_io_error(format!(
                "snapshot {} covers {:?}, expected {:?}",
                file.path.display(),
                file_meta.last_log_id,
                meta.last_log_id
            )));
        }
        let cf = self.store.cf(CF_SHARD)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            &cf,
            keys::group_prefix(self.gid).to_vec(),
            keys::group_end(self.gid),
        );
        let mut reader = SnapshotReader::open(&file.path).map_err(snapshot_storage_error)?;
        let prefix = keys::group_prefix(self.gid);
        let mut key = Vec::new();
        let mut bytes = 0u64;
        while let Some((k, v)) = reader.next_frame().map_err(snapshot_storage_error)? {
            key.clear();
            key.extend_from_slice(&prefix);
            key.extend_from_slice(&k);
            bytes += (k.len() + v.len()) as u64;
            batch.put_cf(&cf, &key, &v);
        }
        // The applied state is part of the snapshot's keys; make sure it says what meta says.
        let applied = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        batch.put_cf(&cf, keys::applied_key(self.gid), encode(&applied)?);
        self.store.write_sync(batch)?;
        *self.applied.lock() = applied;
        self.applied_index.store(
            meta.last_log_id.map(|l| l.index).unwrap_or(0),
            Ordering::SeqCst,
        );
        // Indexes: everything from the records.
        {
            let mut cols = self.collections.write();
            cols.clear();
        }
        remove_dir(&self.dir.join("index"))?;
        self.load_collections(None)?;
        // Keep the installed file as our current snapshot (we may serve it to others).
        let own = self.snapshot_path(&meta.snapshot_id);
        if file.path != own {
            std::fs::create_dir_all(self.snapshot_dir())
                .map_err(|e| storage_io_error(format!("{}: {e}", self.snapshot_dir().display())))?;
            if std::fs::rename(&file.path, &own).is_err() {
                std::fs::copy(&file.path, &own)
                    .map_err(|e| storage_io_error(format!("{}: {e}", own.display())))?;
            }
        }
        self.set_current_snapshot(&meta.snapshot_id)?;
        metrics::counter!("engram_raft_snapshots_installed_total").increment(1);
        metrics::counter!("engram_raft_snapshot_bytes_installed_total").increment(bytes);
        Ok(())
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        let Some(id) = self.current_snapshot_id()? else {
            return Ok(None);
        };
        let path = self.snapshot_path(&id);
        match read_meta(&path) {
            Ok(meta) => Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(SnapshotFile { path }),
            })),
            Err(e) => {
                tracing::warn!(group = self.gid, error = %e, "current snapshot unreadable; a new one will be built");
                Ok(None)
            }
        }
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

enum AfterWrite {
    Create(String, IndexConfig),
    Drop(String),
    Upsert(Arc<Collection>, Vec<Memory>),
    Delete(Arc<Collection>, Vec<String>),
}

/// Re-applies log entries to one collection's index only (records are already stored).
fn replay_into(index: &TieredIndex, collection: &str, entries: &[Entry]) -> Result<(), IndexError> {
    for e in entries {
        let EntryPayload::Normal(req) = &e.payload else {
            continue;
        };
        match &req.command {
            Command::Upsert {
                collection: c,
                records,
            } if c == collection => {
                let memories: Vec<Memory> =
                    records.iter().filter_map(|r| r.to_memory().ok()).collect();
                // A rejected batch was rejected as a whole at apply time; it is again here.
                let _ = index.upsert_batch(memories);
            }
            Command::Delete { collection: c, ids } if c == collection => {
                for id in ids {
                    index.delete(id)?;
                }
            }
            Command::DeleteByFilter {
                collection: c,
                filter_json,
            } if c == collection => {
                if let Ok(f) = serde_json::from_str::<Filter>(filter_json) {
                    let _ = index.delete_by_filter(&f);
                }
            }
            _ => {}
        }
        index.mark_applied(e.get_log_id().index);
    }
    Ok(())
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
