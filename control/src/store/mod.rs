//! Durable Raft storage in one redb file per server: the log, the vote, the committed index and
//! the latest snapshot. redb fsyncs on every commit, which is what a Raft log needs: an entry is
//! acknowledged only once it is on disk.
//!
//! The state machine itself lives in memory (`sm::StateMachine`) and is rebuilt at start from
//! the stored snapshot plus the committed log after it.

mod log;
mod sm;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, TableDefinition};

pub use log::LogStore;
pub use sm::{SharedState, StateMachine};

pub(crate) const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Errors opening the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open Raft store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: redb::Error,
    },
    #[error("stored snapshot in {path} is unreadable: {source}")]
    Snapshot {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Opens (creating when missing) the store under `data_dir`, returning the log store and the
/// state machine, the latter already loaded from the stored snapshot.
pub fn open(data_dir: &Path) -> Result<(LogStore, StateMachine), StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let path = data_dir.join("raft.redb");
    let open_err = |source: redb::Error| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let db = Database::create(&path).map_err(|e| open_err(e.into()))?;
    {
        let txn = db.begin_write().map_err(|e| open_err(e.into()))?;
        txn.open_table(LOGS).map_err(|e| open_err(e.into()))?;
        txn.open_table(META).map_err(|e| open_err(e.into()))?;
        txn.commit().map_err(|e| open_err(e.into()))?;
    }
    let db = Arc::new(db);
    let sm = StateMachine::open(db.clone()).map_err(|source| StoreError::Snapshot {
        path: path.display().to_string(),
        source,
    })?;
    Ok((LogStore::new(db), sm))
}
