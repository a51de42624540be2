//! Snapshots of a shard: built from a RocksDB snapshot of its key range, installed
//! atomically, then the indexes rebuilt from the records.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::{remove_dir, snapshot_storage_error, AppliedState, ShardState};
use crate::command::now_ms;
use crate::storage::keys::{self, CF_RAFT, CF_SHARD};
use crate::storage::snapshot::{read_meta, SnapshotFile, SnapshotReader, SnapshotWriter};
use crate::storage::{decode, encode, storage_io_error, storage_rocks};
use crate::types::{Snapshot, SnapshotMeta, StorageError};

impl ShardState {
    pub(super) fn current_snapshot_id(&self) -> Result<Option<String>, StorageError> {
        self.store
            .get(CF_RAFT, &keys::raft_key(self.gid, keys::RAFT_SNAPSHOT))
    }

    pub(super) fn snapshot_path(&self, id: &str) -> PathBuf {
        self.snapshot_dir().join(format!("{id}.snap"))
    }

    pub(super) fn set_current_snapshot(&self, id: &str) -> Result<(), StorageError> {
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

    pub(super) fn build_snapshot(&self) -> Result<Snapshot, StorageError> {
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

    pub(super) fn install_snapshot(
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

    pub(super) fn current_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
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
}
