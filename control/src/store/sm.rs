//! `RaftStateMachine`: applies committed entries to the in-memory `fsm::State`, builds and
//! installs snapshots (persisted so a restart starts from the latest one), and tells readers
//! when something was applied.
//!
//! The latest snapshot is one file next to the log's redb database ([`SNAPSHOT_FILE`]),
//! replaced atomically (temporary file, fsync, rename, directory fsync), not a value inside
//! redb: redb keeps the old value's pages until the new one is committed and its file never
//! shrinks, so with the snapshot inside, `raft.redb` grew to several times the snapshot (3.2x
//! at 10k services + 10k intentions, 5-7x at 50k; 1.16x for the data directory at 50k with the
//! file, `control_scale`). Stores written before keep their snapshot in redb until the next one
//! is saved, which moves it to the file.

use parking_lot::{Mutex, RwLock};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, StorageError, StorageIOError, StoredMembership,
};
use redb::{Database, ReadableDatabase};
use tokio::sync::watch;

use super::META;
use crate::fsm::{ApplyResult, State};
use crate::raft::{MeshNode, NodeId, TypeConfig};

/// The latest snapshot's file in a server's data directory: one JSON line
/// `{"meta": SnapshotMeta, "len": N, "sha256": hex}`, then the N bytes of the state's JSON
/// (a file written before the digest existed has no `sha256`, and is checked by length only).
pub const SNAPSHOT_FILE: &str = "raft.snapshot";
/// Where stores written before [`SNAPSHOT_FILE`] existed keep their snapshot (in redb's `meta`).
pub(super) const SNAPSHOT_META: &str = "snapshot_meta";
pub(super) const SNAPSHOT_DATA: &str = "snapshot_data";

/// Why the stored snapshot cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("it is damaged: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("it is damaged: no header line")]
    NoHeader,
    #[error("it is truncated or damaged: {got} bytes after its header, {want} expected")]
    Length { got: usize, want: u64 },
    #[error("it is damaged: the SHA-256 of its state is {got}, its header says {want}")]
    Digest { got: String, want: String },
    #[error("cannot read it from the Raft store: {0}")]
    Store(#[from] redb::Error),
}

/// The header line of [`SNAPSHOT_FILE`].
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    meta: SnapshotMeta<NodeId, MeshNode>,
    len: u64,
    /// Hex SHA-256 of the state's bytes: a flipped bit that still parses as JSON would
    /// otherwise load as a different state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

/// Hex SHA-256 of `bytes`, yielding the CPU between chunks (see [`Yielding`]).
fn sha256_hex(bytes: &[u8]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for chunk in bytes.chunks(YIELD_EVERY) {
        ctx.update(chunk);
        std::thread::yield_now();
    }
    let d = ctx.finish();
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of snapshot work (serializing, hashing) between two yields of the CPU.
const YIELD_EVERY: usize = 64 * 1024;

/// A `Vec` writer that yields the CPU every [`YIELD_EVERY`] bytes. Building a snapshot is
/// tens of ms of CPU at 10k objects (every server builds at the same log index, so all at
/// once): without yields, a request that became runnable meanwhile could wait a whole time
/// slice (linearizable read p99 ~5 ms at 10k objects on two cores, `control_scale`).
struct Yielding {
    out: Vec<u8>,
    since: usize,
}

impl std::io::Write for Yielding {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.extend_from_slice(buf);
        self.since += buf.len();
        if self.since >= YIELD_EVERY {
            self.since = 0;
            std::thread::yield_now();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

type SErr = StorageError<NodeId>;

#[derive(Default)]
struct Data {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, MeshNode>,
    state: State,
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
    snapshots: Arc<Snapshots>,
    shared: SharedState,
}

/// Where the latest snapshot is kept: [`SNAPSHOT_FILE`] in `dir` (or, from an older store, in
/// `db`).
struct Snapshots {
    dir: PathBuf,
    db: Arc<Database>,
    /// The last log ID of the snapshot on disk; held while one is saved, so a build and an
    /// install never write at once and an older snapshot never replaces a newer one.
    saved: Mutex<Option<LogId<NodeId>>>,
    /// Builds so far, part of each snapshot's ID.
    seq: AtomicU64,
}

type StoredSnapshot = (SnapshotMeta<NodeId, MeshNode>, Vec<u8>);

impl Snapshots {
    fn path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    /// The latest snapshot: the file, else one an older store kept in redb, else none.
    fn read(&self) -> Result<Option<StoredSnapshot>, SnapshotError> {
        match std::fs::read(self.path()) {
            Ok(bytes) => decode_file(bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => read_from_db(&self.db),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the stored snapshot with `meta` and `bytes`, unless a newer one is stored.
    fn save(&self, meta: &SnapshotMeta<NodeId, MeshNode>, bytes: &[u8]) -> Result<(), SErr> {
        let err = |e: &dyn std::error::Error| -> SErr {
            StorageIOError::write_snapshot(Some(meta.signature()), &AnyErr(e.to_string())).into()
        };
        let mut saved = self.saved.lock();
        if *saved > meta.last_log_id {
            return Ok(());
        }
        let header = serde_json::to_vec(&Header {
            meta: meta.clone(),
            len: bytes.len() as u64,
            sha256: Some(sha256_hex(bytes)),
        })
        .map_err(|e| err(&e))?;
        crate::data_dir::write_atomic(&self.dir, SNAPSHOT_FILE, &[&header, b"\n", bytes])
            .map_err(|e| err(&e))?;
        *saved = meta.last_log_id;
        drop(saved);
        // The file is durable: drop the copy an older store kept in redb, if any.
        remove_from_db(&self.db).map_err(|e| err(&e))
    }
}

/// An error kept as its message (openraft's storage errors need an owned `Error`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct AnyErr(String);

/// Splits [`SNAPSHOT_FILE`]'s bytes into the meta and the state's bytes, checking the length
/// and the digest.
fn decode_file(mut bytes: Vec<u8>) -> Result<StoredSnapshot, SnapshotError> {
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(SnapshotError::NoHeader)?;
    let header: Header = serde_json::from_slice(&bytes[..nl])?;
    let got = bytes.len() - nl - 1;
    if got as u64 != header.len {
        return Err(SnapshotError::Length {
            got,
            want: header.len,
        });
    }
    if let Some(want) = header.sha256 {
        let got = sha256_hex(&bytes[nl + 1..]);
        if got != want {
            return Err(SnapshotError::Digest { got, want });
        }
    }
    bytes.drain(..=nl);
    Ok((header.meta, bytes))
}

/// The snapshot a store written before [`SNAPSHOT_FILE`] kept in redb.
fn read_from_db(db: &Database) -> Result<Option<StoredSnapshot>, SnapshotError> {
    let txn = db.begin_read().map_err(redb::Error::from)?;
    let table = txn.open_table(META).map_err(redb::Error::from)?;
    let Some(meta) = table.get(SNAPSHOT_META).map_err(redb::Error::from)? else {
        return Ok(None);
    };
    let meta: SnapshotMeta<NodeId, MeshNode> = serde_json::from_slice(meta.value())?;
    let data = table
        .get(SNAPSHOT_DATA)
        .map_err(redb::Error::from)?
        .map(|v| v.value().to_vec())
        .unwrap_or_default();
    Ok(Some((meta, data)))
}

/// Removes the snapshot an older store kept in redb (nothing to do, and no write, without one).
fn remove_from_db(db: &Database) -> Result<(), redb::Error> {
    let present = {
        let txn = db.begin_read()?;
        txn.open_table(META)?.get(SNAPSHOT_META)?.is_some()
    };
    if present {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(META)?;
            table.remove(SNAPSHOT_META)?;
            table.remove(SNAPSHOT_DATA)?;
        }
        txn.commit()?;
    }
    Ok(())
}

impl StateMachine {
    /// Loads the latest snapshot of the store in `dir` (whose log is `db`); a leftover
    /// temporary snapshot file from a crash mid-save is removed (the previous one is intact).
    pub(super) fn open(db: Arc<Database>, dir: &Path) -> Result<Self, SnapshotError> {
        let tmp = dir.join(format!("{}{SNAPSHOT_FILE}", crate::data_dir::TMP_PREFIX));
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let snapshots = Snapshots {
            dir: dir.to_path_buf(),
            db,
            saved: Mutex::new(None),
            seq: AtomicU64::new(0),
        };
        let mut data = Data::default();
        if let Some((meta, bytes)) = snapshots.read()? {
            data.state = serde_json::from_slice(&bytes)?;
            data.last_applied = meta.last_log_id;
            data.membership = meta.last_membership;
            *snapshots.saved.lock() = meta.last_log_id;
        }
        let applied = data.last_applied.map(|l| l.index).unwrap_or(0);
        Ok(Self {
            snapshots: Arc::new(snapshots),
            shared: SharedState {
                data: Arc::new(RwLock::new(data)),
                applied: watch::Sender::new(applied),
            },
        })
    }

    pub fn shared(&self) -> SharedState {
        self.shared.clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let seq = self.snapshots.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let (meta, bytes) = {
            // A read lock: reads (the API's, the watch hub's) go on while the state is
            // serialized (tens of ms at 10k objects); only the next apply waits.
            let data = self.shared.data.read();
            let mut w = Yielding {
                out: Vec::new(),
                since: 0,
            };
            serde_json::to_writer(&mut w, &data.state)
                .map_err(|e| StorageIOError::read_state_machine(&e))?;
            let bytes = w.out;
            let snapshot_id = match data.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, seq),
                None => format!("--{seq}"),
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
                this.snapshots.save(&meta2, &bytes).map(|_| (meta2, bytes))
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
        tokio::task::spawn_blocking(move || this.snapshots.save(&meta2, &bytes2))
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
        let snapshots = self.snapshots.clone();
        let found = tokio::task::spawn_blocking(move || snapshots.read())
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(found.map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
