//! `RaftStateMachine`: applies committed entries to the in-memory `fsm::State`, builds and
//! installs snapshots (persisted in redb so a restart starts from the latest one), and tells
//! readers when something was applied.

use parking_lot::RwLock;
use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, StorageError, StorageIOError, StoredMembership,
};
use redb::{Database, ReadableDatabase};
use tokio::sync::watch;

use super::META;
use crate::fsm::{ApplyResult, State};
use crate::raft::{MeshNode, NodeId, TypeConfig};

const SNAPSHOT_META: &str = "snapshot_meta";
const SNAPSHOT_DATA: &str = "snapshot_data";

type SErr = StorageError<NodeId>;

#[derive(Default)]
struct Data {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, MeshNode>,
    state: State,
    snapshot_seq: u64,
}

/// Read access to the applied state for the API, watches and tests.
#[derive(Clone)]
pub struct SharedState {
    data: Arc<RwLock<Data>>,
    applied: watch::Sender<u64>,
}

impl SharedState {
    /// Runs `f` over the current state (a short read lock; never held across an await).
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.data.read().state)
    }

    /// Index of the last applied log entry.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Changes whenever an entry is applied or a snapshot installed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Waits until the applied index reaches `index` or `deadline` passes.
    pub async fn wait_applied(&self, index: u64, deadline: tokio::time::Instant) -> bool {
        let mut rx = self.subscribe();
        tokio::time::timeout_at(deadline, rx.wait_for(|i| *i >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// The state machine handed to openraft.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    shared: SharedState,
}

impl StateMachine {
    pub(super) fn open(db: Arc<Database>) -> Result<Self, serde_json::Error> {
        let mut data = Data::default();
        if let Some((meta, bytes)) = read_snapshot(&db).ok().flatten() {
            data.state = serde_json::from_slice(&bytes)?;
            data.last_applied = meta.last_log_id;
            data.membership = meta.last_membership;
        }
        let applied = data.last_applied.map(|l| l.index).unwrap_or(0);
        Ok(Self {
            db,
            shared: SharedState {
                data: Arc::new(RwLock::new(data)),
                applied: watch::Sender::new(applied),
            },
        })
    }

    pub fn shared(&self) -> SharedState {
        self.shared.clone()
    }

    fn save_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, MeshNode>,
        bytes: &[u8],
    ) -> Result<(), SErr> {
        let err = |e: redb::Error| -> SErr {
            StorageIOError::write_snapshot(Some(meta.signature()), &e).into()
        };
        let meta_bytes =
            serde_json::to_vec(meta).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut table = txn.open_table(META).map_err(|e| err(e.into()))?;
            table
                .insert(SNAPSHOT_META, meta_bytes.as_slice())
                .map_err(|e| err(e.into()))?;
            table
                .insert(SNAPSHOT_DATA, bytes)
                .map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))
    }
}

type StoredSnapshot = (SnapshotMeta<NodeId, MeshNode>, Vec<u8>);

fn read_snapshot(db: &Database) -> Result<Option<StoredSnapshot>, SErr> {
    let err = |e: redb::Error| -> SErr { StorageIOError::read_snapshot(None, &e).into() };
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let table = txn.open_table(META).map_err(|e| err(e.into()))?;
    let Some(meta) = table.get(SNAPSHOT_META).map_err(|e| err(e.into()))? else {
        return Ok(None);
    };
    let meta: SnapshotMeta<NodeId, MeshNode> = serde_json::from_slice(meta.value())
        .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
    let data = table
        .get(SNAPSHOT_DATA)
        .map_err(|e| err(e.into()))?
        .map(|v| v.value().to_vec())
        .unwrap_or_default();
    Ok(Some((meta, data)))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let (meta, bytes) = {
            let mut data = self.shared.data.write();
            data.snapshot_seq += 1;
            let bytes = serde_json::to_vec(&data.state)
                .map_err(|e| StorageIOError::read_state_machine(&e))?;
            let snapshot_id = match data.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, data.snapshot_seq),
                None => format!("--{}", data.snapshot_seq),
            };
            let meta = SnapshotMeta {
                last_log_id: data.last_applied,
                last_membership: data.membership.clone(),
                snapshot_id,
            };
            (meta, bytes)
        };
        let this = self.clone();
        let (meta, bytes) = {
            let meta2 = meta.clone();
            tokio::task::spawn_blocking(move || {
                this.save_snapshot(&meta2, &bytes).map(|_| (meta2, bytes))
            })
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))??
        };
        tracing::info!(snapshot = %meta.snapshot_id, bytes = bytes.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, MeshNode>), SErr> {
        let data = self.shared.data.read();
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, SErr>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut out = Vec::new();
        let last = {
            let mut data = self.shared.data.write();
            for entry in entries {
                let index = entry.log_id.index;
                data.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => out.push(ApplyResult { index, error: None }),
                    EntryPayload::Normal(cmd) => out.push(data.state.apply(index, cmd)),
                    EntryPayload::Membership(m) => {
                        data.membership = StoredMembership::new(Some(entry.log_id), m);
                        out.push(ApplyResult { index, error: None });
                    }
                }
            }
            data.last_applied.map(|l| l.index).unwrap_or(0)
        };
        self.shared.applied.send_replace(last);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MeshNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let bytes = snapshot.into_inner();
        let state: State = serde_json::from_slice(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let this = self.clone();
        let meta2 = meta.clone();
        let bytes2 = bytes.clone();
        tokio::task::spawn_blocking(move || this.save_snapshot(&meta2, &bytes2))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))??;
        let last = {
            let mut data = self.shared.data.write();
            data.state = state;
            data.last_applied = meta.last_log_id;
            data.membership = meta.last_membership.clone();
            data.last_applied.map(|l| l.index).unwrap_or(0)
        };
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot installed");
        self.shared.applied.send_replace(last);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let db = self.db.clone();
        let found = tokio::task::spawn_blocking(move || read_snapshot(&db))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))??;
        Ok(found.map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
