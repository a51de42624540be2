//! One RocksDB per node, shared by every Raft group the node hosts.
//!
//! - [`NodeStore`]: opens the database (column families `log`, `raft`, `shard`, `meta`; see
//!   [`keys`]) and owns the **group-commit syncer**: log appends from all groups are written
//!   to RocksDB at once (unsynced, so they are readable immediately) and a single syncer
//!   thread makes them durable with one WAL fsync per round, however many groups and entries
//!   queued during the previous one. Only then does openraft learn that the entries are
//!   flushed, so nothing is acknowledged before it is durable on a quorum.
//! - [`log::LogStore`]: one group's log, vote and committed index (`RaftLogStorage`).
//! - [`sm::ShardStateMachine`]: one group's records and index (`RaftStateMachine`).
//! - [`snapshot`]: the snapshot file format and streaming.

pub mod keys;
pub mod log;
pub mod sm;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{GroupId, NodeId, StorageError};

/// When an acknowledged log append is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Durability {
    /// Every append is fsynced (group-committed across groups) before openraft counts it.
    /// The default: an acknowledged write survives power loss on a quorum.
    #[default]
    Sync,
    /// Appends count as flushed once written to the OS; the WAL is fsynced every
    /// `interval_ms`. Survives process crashes, not simultaneous power loss of a quorum.
    Periodic { interval_ms: u64 },
}

/// Errors opening or using the node's store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("RocksDB error in {dir}: {source}")]
    Rocks {
        dir: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt value under {what}: {reason}")]
    Corrupt { what: String, reason: String },
}

type Waiter = Box<dyn FnOnce(Result<(), std::io::Error>) + Send>;

struct SyncQueue {
    waiters: Vec<Waiter>,
    shutdown: bool,
}

struct Syncer {
    queue: Mutex<SyncQueue>,
    wake: Condvar,
    /// fsync rounds and the appends they covered (for the group-commit metric).
    rounds: AtomicU64,
    covered: AtomicU64,
}

/// The node's RocksDB and its group-commit syncer.
pub struct NodeStore {
    db: DB,
    dir: PathBuf,
    durability: Durability,
    syncer: Arc<Syncer>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for NodeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStore").field("dir", &self.dir).finish()
    }
}

impl NodeStore {
    /// Opens (creating if needed) the node's database under `dir/rocksdb`.
    pub fn open(dir: impl AsRef<Path>, durability: Durability) -> Result<Arc<Self>, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let db_dir = dir.join("rocksdb");
        std::fs::create_dir_all(&db_dir).map_err(|source| StoreError::Io {
            path: db_dir.clone(),
            source,
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        // Appends are small and frequent: keep the WAL the only sync point.
        opts.set_use_fsync(false);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // A previous owner of the directory (a process being reaped, or an in-process instance
        // whose last tasks are finishing) may still hold the lock for a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let db = loop {
            let descriptors = keys::ALL_CFS
                .iter()
                .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name)));
            match DB::open_cf_descriptors(&opts, &db_dir, descriptors) {
                Ok(db) => break db,
                Err(e) if e.to_string().contains("lock") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(source) => {
                    return Err(StoreError::Rocks {
                        dir: db_dir.clone(),
                        source,
                    })
                }
            }
        };
        let syncer = Arc::new(Syncer {
            queue: Mutex::new(SyncQueue {
                waiters: Vec::new(),
                shutdown: false,
            }),
            wake: Condvar::new(),
            rounds: AtomicU64::new(0),
            covered: AtomicU64::new(0),
        });
        let store = Arc::new(NodeStore {
            db,
            dir,
            durability,
            syncer,
            threads: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        store.start_syncer();
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn cf(&self, name: &str) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| storage_io_error(format!("column family {name} is missing")))
    }

    /// (fsync rounds, appends covered): their ratio is the group-commit batch size.
    pub fn sync_stats(&self) -> (u64, u64) {
        (
            self.syncer.rounds.load(Ordering::Relaxed),
            self.syncer.covered.load(Ordering::Relaxed),
        )
    }

    fn start_syncer(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let syncer = self.syncer.clone();
        let durability = self.durability;
        let handle = std::thread::Builder::new()
            .name("engram-wal-sync".into())
            .spawn(move || sync_loop(weak, syncer, durability))
            .expect("spawning the WAL sync thread");
        self.threads.lock().push(handle);
    }

    /// Writes `batch` now (readable at once) and calls `done` once it is durable under the
    /// configured profile. Many callers between two fsyncs share one.
    pub(crate) fn write_then_sync(&self, batch: WriteBatch, done: Waiter) {
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        if let Err(e) = self.db.write_opt(batch, &wo) {
            done(Err(std::io::Error::other(e.to_string())));
            return;
        }
        match self.durability {
            Durability::Periodic { .. } => done(Ok(())),
            Durability::Sync => {
                let mut q = self.syncer.queue.lock();
                if q.shutdown {
                    drop(q);
                    done(Err(std::io::Error::other("store is closed")));
                    return;
                }
                q.waiters.push(done);
                self.syncer.wake.notify_one();
            }
        }
    }

    /// Writes `batch` and returns once it is durable (fsynced): votes, snapshot installs.
    pub(crate) fn write_sync(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(storage_rocks)
    }

    /// Writes `batch` without waiting for an fsync (state machine applies: the log they come
    /// from is already durable, and the WAL keeps their order).
    pub(crate) fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db.write_opt(batch, &wo).map_err(storage_rocks)
    }

    /// Iterates `cf` over `[from, to)` in key order.
    pub(crate) fn range(
        &self,
        cf: &ColumnFamily,
        from: &[u8],
        to: impl Into<Vec<u8>>,
    ) -> rocksdb::DBIteratorWithThreadMode<'_, DB> {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(to.into());
        self.db.iterator_cf_opt(
            cf,
            ro,
            rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward),
        )
    }

    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        cf: &str,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let cf_h = self.cf(cf)?;
        match self.db.get_pinned_cf(&cf_h, key).map_err(storage_rocks)? {
            None => Ok(None),
            Some(v) => decode(&v, cf).map(Some),
        }
    }

    /// Stops the syncer (pending waiters are answered with an error) and flushes memtables.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        {
            let mut q = self.syncer.queue.lock();
            q.shutdown = true;
            self.syncer.wake.notify_all();
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        let _ = self.db.flush_wal(true);
    }

    /// Node-level metadata (the node id this data dir belongs to).
    pub fn node_id(&self) -> Result<Option<NodeId>, StorageError> {
        self.get(keys::CF_META, b"node_id")
    }

    pub fn set_node_id(&self, id: NodeId) -> Result<(), StorageError> {
        let cf = self.cf(keys::CF_META)?;
        let mut b = WriteBatch::default();
        b.put_cf(&cf, b"node_id", encode(&id)?);
        self.write_sync(b)
    }

    /// Ids of the groups recorded as hosted here.
    pub fn hosted_groups(&self) -> Result<Vec<GroupId>, StorageError> {
        let cf = self.cf(keys::CF_META)?;
        let mut out = Vec::new();
        let it = self.db.prefix_iterator_cf(&cf, keys::GROUP_META_PREFIX);
        for kv in it {
            let (k, _) = kv.map_err(storage_rocks)?;
            if !k.starts_with(keys::GROUP_META_PREFIX) {
                break;
            }
            let raw: [u8; 8] = k[keys::GROUP_META_PREFIX.len()..]
                .try_into()
                .map_err(|_| storage_io_error("bad group meta key"))?;
            out.push(u64::from_be_bytes(raw));
        }
        Ok(out)
    }

    pub fn record_group(&self, gid: GroupId, hosted: bool) -> Result<(), StorageError> {
        let cf = self.cf(keys::CF_META)?;
        let mut b = WriteBatch::default();
        if hosted {
            b.put_cf(&cf, keys::group_meta_key(gid), [1u8]);
        } else {
            b.delete_cf(&cf, keys::group_meta_key(gid));
        }
        self.write_sync(b)
    }
}

impl Drop for NodeStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn cf_options(name: &str) -> Options {
    let mut o = Options::default();
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    if name == keys::CF_LOG {
        // Log entries are written once, read soon, deleted in ranges.
        o.set_write_buffer_size(64 << 20);
    }
    o
}

fn sync_loop(store: std::sync::Weak<NodeStore>, syncer: Arc<Syncer>, durability: Durability) {
    let periodic = match durability {
        Durability::Periodic { interval_ms } => Some(Duration::from_millis(interval_ms.max(1))),
        Durability::Sync => None,
    };
    let mut last_periodic = Instant::now();
    loop {
        let waiters = {
            let mut q = syncer.queue.lock();
            while q.waiters.is_empty() && !q.shutdown {
                match periodic {
                    Some(p) => {
                        let _ = syncer.wake.wait_for(&mut q, p);
                        if last_periodic.elapsed() >= p {
                            break;
                        }
                    }
                    None => syncer.wake.wait(&mut q),
                }
            }
            if q.shutdown {
                let waiters = std::mem::take(&mut q.waiters);
                drop(q);
                for w in waiters {
                    w(Err(std::io::Error::other("store is closed")));
                }
                return;
            }
            std::mem::take(&mut q.waiters)
        };
        let Some(store) = store.upgrade() else {
            for w in waiters {
                w(Err(std::io::Error::other("store is closed")));
            }
            return;
        };
        let started = Instant::now();
        let result = store.db.flush_wal(true);
        drop(store);
        last_periodic = Instant::now();
        metrics::histogram!("engram_raft_wal_sync_seconds").record(started.elapsed().as_secs_f64());
        if !waiters.is_empty() {
            syncer.rounds.fetch_add(1, Ordering::Relaxed);
            syncer
                .covered
                .fetch_add(waiters.len() as u64, Ordering::Relaxed);
            metrics::histogram!("engram_raft_group_commit_size").record(waiters.len() as f64);
        }
        for w in waiters {
            w(result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())));
        }
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(v).map_err(|e| storage_io_error(format!("encoding: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(|e| storage_io_error(format!("decoding {what}: {e}")))
}

pub(crate) fn storage_rocks(e: rocksdb::Error) -> StorageError {
    storage_io_error(format!("rocksdb: {e}"))
}

pub(crate) fn storage_io_error(msg: impl Into<String>) -> StorageError {
    openraft::StorageIOError::<NodeId>::write(openraft::AnyError::error(msg.into())).into()
}
