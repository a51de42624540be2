//! Applying entries: validation, staged RocksDB batches, idempotency, index updates.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use engram_api::ErrorCode;
use engram_index::collections::validate_collection_name;
use engram_index::{Filter, IndexConfig, IndexError, Memory, TieredIndex, VectorIndex};
use openraft::{EntryPayload, RaftLogId};
use rocksdb::WriteBatch;

use super::{
    index_storage_error, remove_dir, Collection, IdemEntry, KvEntry, ShardState, StoredRecord,
    IDEM_EXPIRE_PER_APPLY,
};
use crate::command::{Command, Outcome, ShardRequest, ShardResponse};
use crate::error::index_error_code;
use crate::storage::keys::{self, CF_SHARD};
use crate::storage::{encode, storage_io_error, storage_rocks};
use crate::types::{Entry, StorageError, StoredMembership};

impl ShardState {
    /// Applies entries in order. Each entry's record changes and applied id are one RocksDB
    /// batch; index upserts of consecutive entries are merged into one (parallel) index
    /// batch, flushed before any other index change and at the end, so the index sees the
    /// same sequence of states, just in fewer steps.
    pub(super) fn apply_entries(
        &self,
        entries: &[Entry],
    ) -> Result<Vec<ShardResponse>, StorageError> {
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
    pub(super) fn apply_entry(
        &self,
        entry: &Entry,
    ) -> Result<(ShardResponse, Vec<AfterWrite>), StorageError> {
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

    pub(super) fn apply_request(
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
    pub(super) fn expire_idempotency_keys(
        &self,
        batch: &mut WriteBatch,
        now: i64,
    ) -> Result<(), StorageError> {
        let cf = self.store.cf(CF_SHARD)?;
        let prefix = keys::shard_key(self.gid, keys::SHARD_IDEM_ORDER, &[]);
        let it = self.store.range(
            cf,
            &prefix,
            keys::idem_order_key(self.gid, now.saturating_sub(self.idempotency_window_ms), 0),
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
    pub(super) fn plan(
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
            Command::KvCas {
                key,
                expect_version,
                value,
            } => {
                let k = keys::kv_key(self.gid, key);
                let current = self
                    .store
                    .get::<KvEntry>(CF_SHARD, &k)?
                    .map(|e| e.version)
                    .unwrap_or(0);
                if let Some(expected) = expect_version {
                    if *expected != current {
                        return Ok(Err((
                            ErrorCode::StaleEpoch,
                            format!("key {key:?} is at version {current}, the write expected {expected}"),
                        )));
                    }
                }
                let entry = KvEntry {
                    version: index,
                    value: value.clone(),
                };
                batch.put_cf(&cf, k, encode(&entry)?);
                Ok(Ok(Outcome::Written {
                    upserted: 1,
                    deleted: 0,
                }))
            }
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

    pub(super) fn after_write(&self, a: AfterWrite, index: u64) -> Result<(), StorageError> {
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
}

pub(super) enum AfterWrite {
    Create(String, IndexConfig),
    Drop(String),
    Upsert(Arc<Collection>, Vec<Memory>),
    Delete(Arc<Collection>, Vec<String>),
}

/// Re-applies log entries to one collection's index only (records are already stored).
pub(super) fn replay_into(
    index: &TieredIndex,
    collection: &str,
    entries: &[Entry],
) -> Result<(), IndexError> {
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
