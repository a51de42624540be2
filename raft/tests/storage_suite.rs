//! openraft's storage conformance suite, run against the RocksDB store (log + state machine
//! of one group in a node's shared database).

use std::sync::Arc;

use engram_raft::storage::log::{GroupShared, LogStore};
use engram_raft::storage::sm::{ShardStateMachine, DEFAULT_IDEMPOTENCY_WINDOW_MS};
use engram_raft::types::StorageError;
use engram_raft::{Durability, NodeStore, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct RocksBuilder {
    /// Which group id the store under test uses: the suite must pass for any group in a
    /// shared database, not only the first.
    group: u64,
}

impl StoreBuilder<TypeConfig, LogStore, ShardStateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, ShardStateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = NodeStore::open(dir.path(), Durability::Sync).expect("open store");
        let shared = Arc::new(GroupShared::default());
        let log = LogStore::open(self.group, store.clone(), shared.clone())?;
        let sm = ShardStateMachine::open(
            self.group,
            store,
            dir.path().join("groups").join(self.group.to_string()),
            shared,
            &log,
            DEFAULT_IDEMPOTENCY_WINDOW_MS,
        )?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_group_1() {
    Suite::test_all(RocksBuilder { group: 1 }).expect("storage suite");
}

#[test]
fn openraft_storage_suite_group_max() {
    Suite::test_all(RocksBuilder { group: u64::MAX }).expect("storage suite");
}
