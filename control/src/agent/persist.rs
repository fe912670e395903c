//! The agent's local state on disk, so that restarting an agent does not drop the services of
//! its node.
//!
//! Without it, a restarted agent came back with no services; its first anti-entropy pass then
//! deregistered every service of the node from the catalog, and traffic to them stopped until
//! someone registered them again. Consul keeps what was registered through the HTTP API in the
//! agent's data directory and restores it at start; so does this agent, before it serves its
//! API or syncs, so a restart changes nothing in the catalog.
//!
//! # What is kept, and where
//!
//! `<data-dir>/services/<file>.json`, one file per local service (a sidecar registered through
//! `Connect.SidecarService` is a service of its own, as expanded at registration). Each file
//! holds a [`PersistedService`]: the service, and its checks with their definition as
//! registered, their last status and output, and a TTL check's deadline as wall-clock time
//! (Unix milliseconds), so a TTL check keeps its deadline across a restart. `<file>` is the
//! service ID with every byte outside `[A-Za-z0-9_-]` percent-encoded ([`file_name`]), so
//! operators can tell the files apart; the file's content, not its name, is authoritative.
//!
//! The data directory and `services/` are created with mode 0700 and files are written with
//! mode 0600: check definitions can carry HTTP headers with credentials, and ACL tokens will be
//! stored here too. An existing data directory that group or others can reach, or that holds
//! anything they can reach, stops the agent with the `chmod` that fixes it
//! ([`crate::data_dir`]). A file is replaced atomically (temporary file in the same
//! directory, fsync, rename, fsync of the directory), so a crash leaves the old or the new
//! version, never a torn one; leftover temporary files are removed at load.
//!
//! # Format and versions
//!
//! Versioned JSON (`"Version": 1`, [`FORMAT_VERSION`]). There are no ACL tokens yet. When ACLs
//! arrive, the token a service or check was registered with goes in an optional `Token` field
//! of [`PersistedService`] / [`PersistedCheck`] (as Consul's `persistedService.Token`), which
//! version-1 files simply lack, and the agent's own tokens (`acl set-agent-token`) go in a file
//! of their own next to `services/` (Consul's `acl-tokens.json`), so none of this layout
//! changes. A file with a newer version than this build reads is an error that stops the agent
//! (it was written by a newer `meshd`: downgrading must not silently drop services).
//!
//! # Bad files
//!
//! A file that cannot be decoded (not JSON, wrong shape, or a check definition that no longer
//! validates) is skipped with an error in the log naming the file and the reason, and renamed
//! to `<file>.corrupt` so nothing is lost and it is not read again; the other services are
//! restored. This is what Consul does (it skips undecodable service and check files): one bad
//! file must not keep every other service of the node down. A file that exists but cannot be
//! *read* (permissions, I/O error) stops the agent naming the file instead: that is an
//! environment problem to fix, and skipping it would deregister a healthy service.
//!
//! Encoding and decoding ([`encode`], [`decode`], [`file_name`]) are pure; [`Store`] does the
//! file I/O.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{HealthStatus, ServiceInstance};

/// Version of the persisted format this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// Subdirectory of the data directory holding one file per service.
pub const SERVICES_DIR: &str = "services";
/// Suffix given to a file that could not be decoded.
pub const CORRUPT_SUFFIX: &str = ".corrupt";
/// Modes of the data directory and its subdirectories, and of every file written.
pub use crate::data_dir::{DIR_MODE, FILE_MODE};

const EXTENSION: &str = ".json";
use crate::data_dir::TMP_PREFIX;
/// File names stay well under the usual 255-byte limit; longer encoded IDs are shortened with
/// a hash of the full ID.
const MAX_NAME: usize = 200;

/// One local service as kept on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PersistedService {
    pub version: u64,
    pub service: ServiceInstance,
    #[serde(default)]
    pub checks: Vec<PersistedCheck>,
}

/// One check of a persisted service, with its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PersistedCheck {
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    #[serde(default)]
    pub notes: String,
    /// Consul's check definition JSON as registered; `None` for an alias check.
    #[serde(default)]
    pub definition: Option<Value>,
    /// Alias checks: the local service whose health this check mirrors.
    #[serde(default)]
    pub alias_of: Option<String>,
    pub status: HealthStatus,
    #[serde(default)]
    pub output: String,
    /// TTL checks: when the TTL runs out, in milliseconds since the Unix epoch.
    #[serde(
        rename = "TTLDeadlineUnixMs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_deadline_unix_ms: Option<u64>,
}

/// Why a file's content could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("no \"Version\" field with a version number (1 or more)")]
    MissingVersion,
    #[error("format version {found} is newer than the version this meshd reads ({FORMAT_VERSION})")]
    UnsupportedVersion { found: u64 },
    #[error("not a persisted service: {0}")]
    Shape(#[source] serde_json::Error),
}

/// Errors reading or writing the data directory.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The data directory cannot be created, or is open to other users.
    #[error(transparent)]
    DataDir(#[from] crate::data_dir::DataDirError),
    #[error("cannot list directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode service {id:?}: {source}")]
    Encode {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} was written by a newer meshd; refusing to start without it: {source}")]
    NewerVersion {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
    #[error("cannot set {path} aside as {to}: {source}")]
    SetAside {
        path: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("persistence task failed: {0}")]
    Task(String),
}

/// The file name of service `id` in `services/`: the ID with every byte outside
/// `[A-Za-z0-9_-]` percent-encoded (so no `/`, `.` or `..` can escape the directory), plus
/// `.json`. An encoding longer than 200 bytes is cut and completed with a hash of the whole ID.
pub fn file_name(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + EXTENSION.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_NAME {
        // Only ASCII was pushed, so any byte offset is a character boundary.
        out.truncate(MAX_NAME - 17);
        out.push_str(&format!("~{:016x}", crate::hash::fnv1a64(id.as_bytes())));
    }
    out.push_str(EXTENSION);
    out
}

/// The JSON of a persisted service.
pub fn encode(s: &PersistedService) -> Result<Vec<u8>, serde_json::Error> {
    let mut v = serde_json::to_vec_pretty(s)?;
    v.push(b'\n');
    Ok(v)
}

/// Parses a persisted service, checking its version first so a newer format is told apart from
/// a corrupt file.
pub fn decode(bytes: &[u8]) -> Result<PersistedService, FormatError> {
    let v: Value = serde_json::from_slice(bytes).map_err(FormatError::Json)?;
    let version = v
        .get("Version")
        .and_then(Value::as_u64)
        .filter(|v| *v > 0)
        .ok_or(FormatError::MissingVersion)?;
    if version > FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion { found: version });
    }
    serde_json::from_value(v).map_err(FormatError::Shape)
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A file of `services/` that was not restored and was renamed out of the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    pub path: PathBuf,
    pub moved_to: PathBuf,
    pub reason: String,
}

/// What [`Store::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Decoded services, with the file each came from (sorted by file name).
    pub services: Vec<(PathBuf, PersistedService)>,
    /// Files that could not be decoded, already renamed to `<file>.corrupt`.
    pub set_aside: Vec<SetAside>,
}

/// An agent's data directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens `dir`, creating it and `services/` (mode 0700) when missing; refuses an existing
    /// `dir` that group or others can reach (see [`crate::data_dir::prepare`]).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, PersistError> {
        let store = Store { dir: dir.into() };
        crate::data_dir::prepare(&store.dir)?;
        crate::data_dir::create(&store.services_dir())?;
        Ok(store)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn services_dir(&self) -> PathBuf {
        self.dir.join(SERVICES_DIR)
    }

    /// Where service `id` is kept.
    pub fn path_of(&self, id: &str) -> PathBuf {
        self.services_dir().join(file_name(id))
    }

    /// Writes (atomically replaces) the file of `s`.
    pub fn save(&self, s: &PersistedService) -> Result<(), PersistError> {
        let bytes = encode(s).map_err(|source| PersistError::Encode {
            id: s.service.id.clone(),
            source,
        })?;
        write_atomic(&self.services_dir(), &file_name(&s.service.id), &bytes)
    }

    /// Deletes the file of service `id`; `false` when there was none.
    pub fn remove(&self, id: &str) -> Result<bool, PersistError> {
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.services_dir())?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(PersistError::Remove { path, source }),
        }
    }

    /// Reads every persisted service. Undecodable files are set aside (see the module doc);
    /// an unreadable file or one from a newer format is an error.
    pub fn load(&self) -> Result<Loaded, PersistError> {
        let dir = self.services_dir();
        let entries = fs::read_dir(&dir).map_err(|source| PersistError::ReadDir {
            path: dir.clone(),
            source,
        })?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| PersistError::ReadDir {
                path: dir.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(TMP_PREFIX) {
                // A write interrupted by a crash: the file it was replacing is intact.
                fs::remove_file(&path).map_err(|source| PersistError::Remove {
                    path: path.clone(),
                    source,
                })?;
            } else if name.ends_with(EXTENSION) {
                paths.push(path);
            }
            // Anything else (`*.corrupt`, files an operator left) is not ours to read.
        }
        paths.sort();
        // Read and decode everything before moving anything: an error that stops the agent
        // leaves the directory exactly as it was.
        let mut decoded = Vec::new();
        for path in paths {
            let bytes = fs::read(&path).map_err(|source| PersistError::Read {
                path: path.clone(),
                source,
            })?;
            decoded.push((path, decode(&bytes)));
        }
        let mut loaded = Loaded::default();
        let mut corrupt = Vec::new();
        for (path, result) in decoded {
            match result {
                Ok(s) => loaded.services.push((path, s)),
                Err(e @ FormatError::UnsupportedVersion { .. }) => {
                    return Err(PersistError::NewerVersion { path, source: e });
                }
                Err(e) => corrupt.push((path, e.to_string())),
            }
        }
        for (path, reason) in corrupt {
            let aside = self.set_aside(&path, &reason)?;
            tracing::error!(
                file = %path.display(), moved_to = %aside.moved_to.display(), %reason,
                "cannot decode a persisted service; skipped it and set the file aside"
            );
            loaded.set_aside.push(aside);
        }
        Ok(loaded)
    }

    /// Renames `path` to `<path>.corrupt` (or `<path>.<unix-ms>.corrupt` if that exists), so it
    /// is kept for inspection and not read again.
    pub fn set_aside(&self, path: &Path, reason: &str) -> Result<SetAside, PersistError> {
        let mut to = PathBuf::from(format!("{}{CORRUPT_SUFFIX}", path.display()));
        if to.exists() {
            to = PathBuf::from(format!(
                "{}.{}{CORRUPT_SUFFIX}",
                path.display(),
                unix_ms(SystemTime::now())
            ));
        }
        fs::rename(path, &to).map_err(|source| PersistError::SetAside {
            path: path.to_path_buf(),
            to: to.clone(),
            source,
        })?;
        sync_dir(&self.services_dir())?;
        Ok(SetAside {
            path: path.to_path_buf(),
            moved_to: to,
            reason: reason.to_string(),
        })
    }
}

/// Replaces `dir/name` with `bytes` ([`crate::data_dir::write_atomic`]).
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), PersistError> {
    crate::data_dir::write_atomic(dir, name, &[bytes]).map_err(write_error)
}

fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    crate::data_dir::sync_dir(dir).map_err(write_error)
}

fn write_error(e: crate::data_dir::WriteError) -> PersistError {
    PersistError::Write {
        path: e.path,
        source: e.source,
    }
}

#[cfg(test)]
mod tests;
