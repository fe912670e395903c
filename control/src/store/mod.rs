//! Durable Raft storage per server: one redb file for the log, the vote and the committed index,
//! and one file for the latest snapshot (`sm::SNAPSHOT_FILE`, replaced atomically). redb fsyncs
//! on every commit, which is what a Raft log needs: an entry is acknowledged only once it is on
//! disk.
//!
//! The state machine itself lives in memory (`sm::StateMachine`) and is rebuilt at start from
//! the stored snapshot plus the committed log after it.
//!
//! The store holds the CA's private keys and the servers' internal secret: the data directory
//! is created 0700 and `raft.redb` 0600 (created with `O_EXCL`), and an existing directory
//! that group or others can reach is refused ([`crate::data_dir`]).
//!
//! An existing `raft.redb` is opened, never re-created, and its integrity is checked at every
//! open: a server that started over an empty, truncated or damaged store would bootstrap a new
//! cluster with a new trust domain, so such a store is refused with what to do
//! ([`StoreError::Empty`], [`StoreError::Corrupt`]); so is a store removed from a data
//! directory that still holds the embedded agent's directory ([`StoreError::Missing`]).

#[allow(
    clippy::result_large_err,
    reason = "openraft's storage traits fix the error type (StorageError)"
)]
mod log;
#[allow(
    clippy::result_large_err,
    reason = "openraft's storage traits fix the error type (StorageError)"
)]
mod sm;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, TableDefinition};

pub use log::LogStore;
pub use sm::{SNAPSHOT_FILE, SharedState, SnapshotError, StateMachine};

use crate::data_dir::{self, DataDirError};

/// The store's file in a server's data directory.
pub const FILE_NAME: &str = "raft.redb";

pub(crate) const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// What an operator can do about a store that cannot be used.
const RECOVER: &str = "restore the data directory from a backup, or remove the whole data \
                       directory to join the cluster as a new server";

/// Errors opening the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory cannot be created, or is open to other users.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// A store file with nothing in it: this directory held a server (the file is written
    /// with a header when created), and starting over would silently make a new cluster with
    /// a new trust domain.
    #[error(
        "Raft store {path} is empty (truncated?): refusing to start a new cluster over it; \
         {RECOVER}"
    )]
    Empty { path: String },
    /// No store, but the embedded agent's directory is there: the store was removed.
    #[error(
        "Raft store {path} is missing from a data directory that held a server (its {agent}/ \
         directory is there): refusing to start a new cluster; {RECOVER}"
    )]
    Missing { path: String, agent: &'static str },
    /// The file is not a redb database, or failed redb's integrity check.
    #[error(
        "Raft store {path} is damaged ({reason}): refusing to start a new cluster over it; \
         {RECOVER}"
    )]
    Corrupt { path: String, reason: String },
    #[error("cannot open Raft store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: redb::Error,
    },
    #[error("stored snapshot of {path} is unreadable ({source}): {RECOVER}")]
    Snapshot {
        path: String,
        #[source]
        source: SnapshotError,
    },
}

/// Opens (creating when missing) the store under `data_dir`, returning the log store and the
/// state machine, the latter already loaded from the stored snapshot.
pub fn open(data_dir: &Path) -> Result<(LogStore, StateMachine), StoreError> {
    data_dir::prepare(data_dir)?;
    let path = data_dir.join(FILE_NAME);
    let db = open_db(data_dir, &path)?;
    let open_err = |source: redb::Error| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    {
        let txn = db.begin_write().map_err(|e| open_err(e.into()))?;
        txn.open_table(LOGS).map_err(|e| open_err(e.into()))?;
        txn.open_table(META).map_err(|e| open_err(e.into()))?;
        txn.commit().map_err(|e| open_err(e.into()))?;
    }
    let db = Arc::new(db);
    let sm = StateMachine::open(db.clone(), data_dir).map_err(|source| StoreError::Snapshot {
        path: data_dir.display().to_string(),
        source,
    })?;
    Ok((LogStore::new(db), sm))
}

/// Opens the existing database at `path` (checking its integrity) or creates a new one; an
/// empty file, or no file where a server has been, is refused rather than initialized.
fn open_db(data_dir: &Path, path: &Path) -> Result<Database, StoreError> {
    let shown = || path.display().to_string();
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => Err(StoreError::Empty { path: shown() }),
        Ok(_) => Database::builder()
            // A plain open trusts a cleanly closed file and may panic on one damaged since;
            // the check reports the damage instead (and reads the whole file once).
            .set_check_integrity_on_open(true)
            .open(path)
            .map_err(|e| database_error(shown(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let agent = crate::data_dir::AGENT_DIR;
            if data_dir.join(agent).exists() {
                return Err(StoreError::Missing {
                    path: shown(),
                    agent,
                });
            }
            let file = data_dir::create_file(path).map_err(|source| DataDirError::Create {
                path: path.to_path_buf(),
                source,
            })?;
            redb::backends::FileBackend::new(file)
                .and_then(|backend| Database::builder().create_with_backend(backend))
                .map_err(|e| database_error(shown(), e))
        }
        Err(source) => Err(DataDirError::Inspect {
            path: path.to_path_buf(),
            source,
        }
        .into()),
    }
}

/// Tells a damaged file (not redb's, or failing its checks) from other failures to open it.
fn database_error(path: String, e: redb::DatabaseError) -> StoreError {
    use redb::{DatabaseError, StorageError};
    use std::io::ErrorKind;
    match e {
        DatabaseError::Storage(StorageError::Corrupted(reason)) => {
            StoreError::Corrupt { path, reason }
        }
        DatabaseError::Storage(StorageError::Io(io)) if io.kind() == ErrorKind::InvalidData => {
            StoreError::Corrupt {
                path,
                reason: io.to_string(),
            }
        }
        DatabaseError::Storage(StorageError::Io(io)) if io.kind() == ErrorKind::UnexpectedEof => {
            StoreError::Corrupt {
                path,
                reason: format!("truncated: {io}"),
            }
        }
        other => StoreError::Open {
            path,
            source: other.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    //! openraft's storage conformance suite against the redb store.

    use openraft::StorageError;
    use openraft::testing::{StoreBuilder, Suite};

    use super::{LogStore, StateMachine};
    use crate::data_dir::scratch;
    use crate::raft::{NodeId, TypeConfig};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = scratch();
            let (log, sm) = super::open(dir.path()).expect("open store");
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn a_new_data_directory_and_its_store_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = scratch();
        let fresh = tmp.path().join("a").join("s1");
        super::open(&fresh).expect("a new data directory");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&fresh.join("raft.redb")), 0o600);
    }

    /// A store with a vote, 20 applied entries and a snapshot, closed; its file's bytes.
    async fn written_store(dir: &std::path::Path) -> Vec<u8> {
        use openraft::storage::{RaftLogStorage, RaftStateMachine};
        use openraft::{RaftSnapshotBuilder, Vote};
        {
            let (mut log, mut sm) = super::open(dir).unwrap();
            log.save_vote(&Vote::new(3, 7)).await.unwrap();
            sm.apply(entries(20)).await.unwrap();
            sm.build_snapshot().await.unwrap();
        }
        std::fs::read(dir.join(super::FILE_NAME)).unwrap()
    }

    /// [`written_store`] in `dir`; the path of its snapshot file and that file's bytes.
    async fn written_snapshot(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
        written_store(dir).await;
        let snapshot = dir.join(super::SNAPSHOT_FILE);
        let bytes = std::fs::read(&snapshot).unwrap();
        (snapshot, bytes)
    }

    fn entries(n: u64) -> Vec<openraft::Entry<TypeConfig>> {
        (1..=n)
            .map(|i| openraft::Entry {
                log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 7), i),
                payload: openraft::EntryPayload::Normal(crate::fsm::Command::SetDefaultPolicy {
                    policy: crate::intentions::DefaultPolicy::Allow,
                }),
            })
            .collect()
    }

    /// Empty, foreign, truncated (anywhere) or with a damaged header or tree: refused as
    /// damaged, never a panic, never re-created, the file left as it was.
    #[tokio::test]
    async fn an_empty_foreign_truncated_or_damaged_store_is_refused_not_replaced() {
        use super::StoreError;
        let tmp = scratch();
        let file = tmp.path().join(super::FILE_NAME);
        let good = written_store(tmp.path()).await;
        let mut cases = vec![("empty", Vec::new()), ("foreign", vec![0x5a_u8; 4096])];
        for len in [1, 16, 512, 4096, good.len() / 2, good.len() - 1] {
            cases.push(("truncated", good[..len].to_vec()));
        }
        let mut header = good.clone();
        header[..64].iter_mut().for_each(|b| *b ^= 0xa5);
        cases.push(("damaged header", header));
        for (what, bytes) in cases {
            std::fs::write(&file, &bytes).unwrap();
            let err = super::open(tmp.path()).err().expect(what);
            let msg = err.to_string();
            match err {
                StoreError::Empty { .. } => assert!(msg.contains("is empty"), "{msg}"),
                StoreError::Corrupt { .. } => assert!(msg.contains("is damaged"), "{msg}"),
                other => panic!("{what} ({} bytes): {other}", bytes.len()),
            }
            assert!(
                msg.contains(&file.display().to_string())
                    && msg.contains("refusing to start a new cluster")
                    && msg.contains("remove the whole data directory"),
                "{msg}"
            );
            assert_eq!(
                std::fs::read(&file).unwrap(),
                bytes,
                "{what}: left as it was"
            );
        }
        // Intact again, it opens with everything in it.
        std::fs::write(&file, &good).unwrap();
        let (_, mut sm) = super::open(tmp.path()).unwrap();
        use openraft::storage::RaftStateMachine;
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(20));
    }

    #[test]
    fn a_store_removed_from_a_server_data_directory_is_refused() {
        let tmp = scratch();
        crate::data_dir::create(&tmp.path().join(crate::data_dir::AGENT_DIR)).unwrap();
        let err = super::open(tmp.path()).err().expect("refused");
        assert!(matches!(err, super::StoreError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("is missing"), "{err}");
        assert!(!tmp.path().join(super::FILE_NAME).exists(), "not created");
    }

    #[test]
    fn a_data_directory_open_to_others_is_refused_with_the_chmod() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = scratch();
        super::open(tmp.path()).unwrap();
        let file = tmp.path().join(super::FILE_NAME);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = super::open(tmp.path()).err().expect("refused");
        let fix = format!("chmod 600 {}", file.display());
        assert!(err.to_string().ends_with(&fix), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        super::open(tmp.path()).expect("private again");
    }

    #[test]
    fn conformance_suite() {
        Suite::test_all(Builder).expect("redb store passes openraft's storage suite");
    }

    /// The applied index of the store in `dir`, reopened.
    async fn applied_after_reopen(dir: &std::path::Path) -> Option<u64> {
        use openraft::storage::RaftStateMachine;
        let (_, mut sm) = super::open(dir).unwrap();
        let (applied, _) = sm.applied_state().await.unwrap();
        applied.map(|l| l.index)
    }

    /// A kill -9 while a snapshot is written leaves its temporary file half written: the
    /// previous snapshot is used, the leftover removed.
    #[tokio::test]
    async fn a_crash_mid_snapshot_write_keeps_the_previous_snapshot() {
        let dir = scratch();
        let (snapshot, before) = written_snapshot(dir.path()).await;
        let tmp = dir.path().join(format!(".tmp.{}", super::SNAPSHOT_FILE));
        crate::data_dir::create_file(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &before[..before.len() / 2]))
            .unwrap();
        assert_eq!(applied_after_reopen(dir.path()).await, Some(20));
        assert!(!tmp.exists(), "the leftover is removed");
        assert_eq!(std::fs::read(&snapshot).unwrap(), before);
    }

    /// A damaged or truncated snapshot file is refused (the log it replaced is gone), never
    /// ignored, and left as it was.
    #[tokio::test]
    async fn a_damaged_snapshot_file_is_refused() {
        let dir = scratch();
        let (snapshot, good) = written_snapshot(dir.path()).await;
        let mut flipped = good.clone();
        flipped[0] ^= 0x5a;
        // A digit of the state changed: the same length, still valid JSON.
        let mut digit = good.clone();
        let nl = good.iter().position(|b| *b == b'\n').unwrap();
        let at = nl + good[nl..].iter().position(u8::is_ascii_digit).unwrap();
        digit[at] = if good[at] == b'9' { b'8' } else { good[at] + 1 };
        let cases = [
            ("truncated", good[..good.len() - 1].to_vec(), "truncated"),
            ("state digit changed", digit, "SHA-256"),
            ("no header", b"{}".to_vec(), "no header line"),
            ("damaged header", flipped, "damaged"),
        ];
        for (what, bytes, expected) in cases {
            std::fs::write(&snapshot, &bytes).unwrap();
            let err = super::open(dir.path()).err().expect(what);
            let msg = err.to_string();
            assert!(
                matches!(err, super::StoreError::Snapshot { .. })
                    && msg.contains(expected)
                    && msg.contains("remove the whole data directory"),
                "{what}: {msg}"
            );
            assert_eq!(
                std::fs::read(&snapshot).unwrap(),
                bytes,
                "{what}: left as it was"
            );
        }
    }

    /// A snapshot file written before the header carried a digest opens (length check only).
    #[tokio::test]
    async fn a_snapshot_file_without_a_digest_still_opens() {
        let dir = scratch();
        let (snapshot, bytes) = written_snapshot(dir.path()).await;
        let nl = bytes.iter().position(|b| *b == b'\n').unwrap();
        let mut header: serde_json::Value = serde_json::from_slice(&bytes[..nl]).unwrap();
        assert!(header["sha256"].is_string(), "{header}");
        header.as_object_mut().unwrap().remove("sha256");
        let mut old = serde_json::to_vec(&header).unwrap();
        old.extend_from_slice(&bytes[nl..]);
        std::fs::write(&snapshot, old).unwrap();
        assert_eq!(applied_after_reopen(dir.path()).await, Some(20));
    }

    /// A store written before the snapshot file existed kept its snapshot in redb: it opens
    /// from there, and the next snapshot moves to the file and leaves redb.
    #[tokio::test]
    async fn a_snapshot_kept_in_redb_by_an_older_store_is_read_then_moved_to_the_file() {
        use openraft::RaftSnapshotBuilder;
        use redb::ReadableDatabase;
        let dir = scratch();
        written_store(dir.path()).await;
        let snapshot = dir.path().join(super::SNAPSHOT_FILE);
        let (meta, data) = {
            let bytes = std::fs::read(&snapshot).unwrap();
            let nl = bytes.iter().position(|b| *b == b'\n').unwrap();
            let header: serde_json::Value = serde_json::from_slice(&bytes[..nl]).unwrap();
            (
                serde_json::to_vec(&header["meta"]).unwrap(),
                bytes[nl + 1..].to_vec(),
            )
        };
        std::fs::remove_file(&snapshot).unwrap();
        let in_redb = |db: &redb::Database| {
            let txn = db.begin_read().unwrap();
            let t = txn.open_table(super::META).unwrap();
            t.get(super::sm::SNAPSHOT_META).unwrap().is_some()
        };
        {
            let db = redb::Database::open(dir.path().join(super::FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(super::META).unwrap();
                t.insert(super::sm::SNAPSHOT_META, meta.as_slice()).unwrap();
                t.insert(super::sm::SNAPSHOT_DATA, data.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        assert_eq!(applied_after_reopen(dir.path()).await, Some(20));
        {
            let (_, mut sm) = super::open(dir.path()).unwrap();
            sm.build_snapshot().await.unwrap();
        }
        assert!(snapshot.exists());
        let db = redb::Database::open(dir.path().join(super::FILE_NAME)).unwrap();
        assert!(!in_redb(&db), "moved out of redb");
        drop(db);
        assert_eq!(applied_after_reopen(dir.path()).await, Some(20));
    }

    /// Snapshots are not stored in redb: however many are taken, the redb file stays far
    /// smaller than one snapshot (it held every snapshot, rounded up to a power of two, and
    /// the previous one while the next was written).
    #[tokio::test]
    async fn snapshots_do_not_grow_the_redb_file() {
        use openraft::RaftSnapshotBuilder;
        use openraft::storage::RaftStateMachine;
        let dir = scratch();
        let (_, mut sm) = super::open(dir.path()).unwrap();
        let big: Vec<_> = (1..=2000u64)
            .map(|i| openraft::Entry {
                log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 7), i),
                payload: openraft::EntryPayload::Normal(crate::fsm::Command::IntentionUpsert {
                    intention: crate::model::Intention {
                        action: Some(crate::model::IntentionAction::Allow),
                        ..crate::intentions::intention_between(
                            &format!("source-service-number-{i}"),
                            "db",
                        )
                    },
                    replace: true,
                }),
            })
            .collect();
        sm.apply(big).await.unwrap();
        for _ in 0..5 {
            sm.build_snapshot().await.unwrap();
        }
        let size = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().len();
        let (snap, redb) = (size(super::SNAPSHOT_FILE), size(super::FILE_NAME));
        assert!(snap > 500_000, "snapshot of 2,000 intentions: {snap} bytes");
        assert!(redb < snap / 4, "raft.redb {redb} bytes, snapshot {snap}");
    }

    #[tokio::test]
    async fn reopen_keeps_log_vote_and_snapshot() {
        use openraft::Vote;
        use openraft::storage::{RaftLogStorage, RaftStateMachine};

        let dir = scratch();
        written_store(dir.path()).await;
        let (mut log, mut sm) = super::open(dir.path()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 7)));
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(20));
        assert!(sm.shared().read(|s| s.default_policy.allows()));
        let snap = sm
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("a snapshot");
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(20));
    }
}
