//! Who may read a data directory. A server's `raft.redb` holds the CA's private keys and the
//! servers' internal secret; an agent's service files can carry check headers with
//! credentials. So a data directory is created 0700 and every file in it 0600, and a server or
//! agent refuses to start on an existing directory that group or others can reach, or that
//! holds a file or directory they can reach, naming each path, its mode and the `chmod` that
//! fixes it (issue 13 point 4). Fixing the modes silently would hide that the secrets were
//! already exposed; the operator decides (and may rotate the CA).
//!
//! [`too_open`] is the pure decision; [`prepare`], [`check`] and [`tempdir`] do the file I/O.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Subdirectory of a server's data directory holding its embedded agent's services and checks
/// (the store checks for it: a data directory that has one held a server).
pub const AGENT_DIR: &str = "agent";

/// Mode of a data directory and of every directory in it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in a data directory.
pub const FILE_MODE: u32 = 0o600;
/// Permission bits that give group or others any access.
const GROUP_OTHER: u32 = 0o077;
/// How deep [`check`] descends (a data directory is at most `agent/services/<file>` deep).
const MAX_DEPTH: usize = 8;
/// How many paths an error lists; with more, it gives one recursive `chmod` instead.
const MAX_LISTED: usize = 8;

/// What a path in a data directory is, which decides its private mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

impl Kind {
    /// The mode this kind of path is created with.
    pub fn private_mode(self) -> u32 {
        match self {
            Kind::Dir => DIR_MODE,
            Kind::File => FILE_MODE,
        }
    }
}

/// A path in a data directory that group or others can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooOpen {
    pub path: PathBuf,
    pub kind: Kind,
    /// Its permission bits (`mode & 0o7777`).
    pub mode: u32,
}

impl TooOpen {
    /// The command that makes this path private, e.g. `chmod 600 /var/lib/mesh/raft.redb`.
    pub fn fix(&self) -> String {
        format!(
            "chmod {:o} {}",
            self.kind.private_mode(),
            shell_quote(&self.path)
        )
    }
}

/// `Some` when a path of `kind` with permission bits `mode` gives group or others any access
/// (read, write or, for a directory, search): such a path is refused.
pub fn too_open(path: &Path, kind: Kind, mode: u32) -> Option<TooOpen> {
    (mode & GROUP_OTHER != 0).then(|| TooOpen {
        path: path.to_path_buf(),
        kind,
        mode: mode & 0o7777,
    })
}

/// Errors preparing or checking a data directory; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create {} (data directory): {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot inspect {} in the data directory: {source}", path.display())]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The directory, or something in it, is open to group or others.
    #[error("{}", describe(dir, open, *more))]
    TooOpen {
        dir: PathBuf,
        /// The first paths found (at most 8), in walk order.
        open: Vec<TooOpen>,
        /// How many more were found and not listed.
        more: usize,
    },
}

/// The message of [`DataDirError::TooOpen`]: every listed path with its mode, then the
/// command that fixes them all.
fn describe(dir: &Path, open: &[TooOpen], more: usize) -> String {
    let mut s = format!(
        "refusing to start: the data directory {} holds secrets (on a server, the CA's private \
         keys) but is open to other users:",
        dir.display()
    );
    for o in open {
        let what = match o.kind {
            Kind::Dir => "directory",
            Kind::File => "file",
        };
        let _ = write!(s, " {what} {} has mode {:04o};", o.path.display(), o.mode);
    }
    let fix = if more == 0 {
        open.iter()
            .map(TooOpen::fix)
            .collect::<Vec<_>>()
            .join(" && ")
    } else {
        let _ = write!(s, " and {more} more;");
        format!("chmod -R go-rwx {}", shell_quote(dir))
    };
    let _ = write!(
        s,
        " group and others must have no access (directories {DIR_MODE:o}, files \
         {FILE_MODE:o}). Fix it with: {fix}"
    );
    s
}

/// `path` as one shell word: unchanged when it has only characters no shell treats specially,
/// single-quoted otherwise.
fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@%=".contains(&b));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Makes `dir` ready for use as a data directory: creates it (and missing parents) 0700 when
/// missing; when it exists, [`check`]s it.
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    match fs::metadata(dir) {
        Ok(_) => check(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(dir),
        Err(source) => Err(DataDirError::Inspect {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Creates `dir` and its missing parents with mode 0700 (nothing to do when it exists).
pub fn create(dir: &Path) -> Result<(), DataDirError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| DataDirError::Create {
            path: dir.to_path_buf(),
            source,
        })
}

/// Refuses `dir` when it, or any file or directory under it, gives group or others access.
/// Symbolic links are judged by what they point to and not descended into.
pub fn check(dir: &Path) -> Result<(), DataDirError> {
    let inspect = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataDirError::Inspect { path, source }
    };
    let mut open = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), 0_usize)];
    while let Some((path, depth)) = pending.pop() {
        let meta = fs::metadata(&path).map_err(inspect(&path))?;
        let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
        open.extend(too_open(&path, kind, meta.permissions().mode()));
        let real_dir = fs::symlink_metadata(&path)
            .map_err(inspect(&path))?
            .is_dir();
        if real_dir && depth < MAX_DEPTH {
            let mut children = Vec::new();
            for entry in fs::read_dir(&path).map_err(inspect(&path))? {
                children.push((entry.map_err(inspect(&path))?.path(), depth + 1));
            }
            // Reversed so the walk (a stack) visits each directory's entries in name order.
            children.sort_by(|a, b| b.0.cmp(&a.0));
            pending.extend(children);
        }
    }
    if open.is_empty() {
        return Ok(());
    }
    let more = open.len().saturating_sub(MAX_LISTED);
    open.truncate(MAX_LISTED);
    Err(DataDirError::TooOpen {
        dir: dir.to_path_buf(),
        open,
        more,
    })
}

/// Prefix of the temporary file [`write_atomic`] writes next to its target.
pub const TMP_PREFIX: &str = ".tmp.";

/// A failed [`write_atomic`]: the file or directory, and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Replaces `dir/name` with the concatenation of `parts`, so that after a crash at any point
/// the file holds either all of the old or all of the new bytes: a temporary file (mode 0600)
/// in the same directory, fsync, rename over the target, fsync of the directory so the rename
/// itself is durable.
pub fn write_atomic(dir: &Path, name: &str, parts: &[&[u8]]) -> Result<(), WriteError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
    let target = dir.join(name);
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        // `mode` applies only when the file is created; a leftover must not keep wider bits.
        f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        for part in parts {
            f.write_all(part)?;
        }
        f.sync_all()
    };
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError { path, source }
    };
    write().map_err(err(&tmp))?;
    fs::rename(&tmp, &target).map_err(err(&target))?;
    sync_dir(dir)
}

/// Fsyncs the directory `dir`, so that a file created, renamed or removed in it stays so
/// after a crash.
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| WriteError {
            path: dir.to_path_buf(),
            source,
        })
}

/// A new file `path` with mode 0600, failing if it exists (`O_EXCL`).
pub fn create_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// A new temporary directory (mode 0700, removed when dropped) named `<prefix>…`, under
/// `parent` or the system's temporary directory: what `meshd dev`, the tests and the benches
/// use as a data directory (`tempfile` alone would make it 0755, which [`check`] refuses).
pub fn tempdir(prefix: &str, parent: Option<&Path>) -> io::Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix)
        .permissions(fs::Permissions::from_mode(DIR_MODE));
    match parent {
        Some(p) => b.tempdir_in(p),
        None => b.tempdir(),
    }
}

/// A private temporary directory for unit tests.
#[cfg(test)]
pub(crate) fn scratch() -> tempfile::TempDir {
    tempdir("mesh-test-", None).expect("a temporary directory")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{DataDirError, Kind, TooOpen, check, describe, prepare, tempdir, too_open};

    fn open(path: &str, kind: Kind, mode: u32) -> TooOpen {
        TooOpen {
            path: path.into(),
            kind,
            mode,
        }
    }

    #[test]
    fn only_owner_only_modes_pass() {
        let p = Path::new("/d");
        for (kind, mode) in [
            (Kind::Dir, 0o700),
            (Kind::Dir, 0o500),
            (Kind::File, 0o600),
            (Kind::File, 0o400),
            (Kind::Dir, 0o40700),
            (Kind::File, 0o100600),
        ] {
            assert_eq!(too_open(p, kind, mode), None, "{kind:?} {mode:o}");
        }
        for (kind, mode) in [
            (Kind::Dir, 0o755),
            (Kind::Dir, 0o710),
            (Kind::Dir, 0o701),
            (Kind::File, 0o644),
            (Kind::File, 0o620),
            (Kind::File, 0o602),
            (Kind::File, 0o100640),
        ] {
            let o = too_open(p, kind, mode).unwrap_or_else(|| panic!("{kind:?} {mode:o}"));
            assert_eq!(o.mode, mode & 0o7777);
        }
    }

    #[test]
    fn the_fix_is_the_exact_chmod_quoted_for_a_shell() {
        assert_eq!(open("/d", Kind::Dir, 0o755).fix(), "chmod 700 /d");
        assert_eq!(
            open("/var/lib/mesh/raft.redb", Kind::File, 0o644).fix(),
            "chmod 600 /var/lib/mesh/raft.redb"
        );
        assert_eq!(
            open("/my data/it's", Kind::File, 0o644).fix(),
            r"chmod 600 '/my data/it'\''s'"
        );
    }

    #[test]
    fn the_message_lists_paths_modes_and_one_command_for_all() {
        let two = [
            open("/d", Kind::Dir, 0o755),
            open("/d/raft.redb", Kind::File, 0o644),
        ];
        let m = describe(Path::new("/d"), &two, 0);
        assert!(m.contains("directory /d has mode 0755;"), "{m}");
        assert!(m.contains("file /d/raft.redb has mode 0644;"), "{m}");
        assert!(
            m.ends_with("Fix it with: chmod 700 /d && chmod 600 /d/raft.redb"),
            "{m}"
        );
        let m = describe(Path::new("/d"), &two, 3);
        assert!(m.contains("and 3 more;"), "{m}");
        assert!(m.ends_with("Fix it with: chmod -R go-rwx /d"), "{m}");
    }

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn check_walks_the_tree_and_prepare_creates_private_dirs() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempdir("data-dir-test-", None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(root.path()), 0o700);
        let d = root.path().join("a").join("b");
        prepare(&d).unwrap();
        assert_eq!((mode(&d), mode(&root.path().join("a"))), (0o700, 0o700));
        let deep = d.join("c").join("f");
        prepare(&d.join("c")).unwrap();
        std::fs::write(&deep, b"x").unwrap();
        set_mode(&deep, 0o600);
        check(root.path()).unwrap();

        set_mode(&deep, 0o640);
        set_mode(&d, 0o750);
        match check(root.path()) {
            Err(DataDirError::TooOpen { dir, open, more }) => {
                assert_eq!(dir, root.path());
                assert_eq!(more, 0);
                let found: Vec<_> = open.iter().map(|o| (o.path.clone(), o.mode)).collect();
                assert_eq!(found, [(d.clone(), 0o750), (deep.clone(), 0o640)]);
            }
            other => panic!("{other:?}"),
        }
        // `prepare` on an existing directory checks it and changes nothing.
        assert!(prepare(root.path()).is_err());
        assert_eq!(mode(&deep), 0o640);
    }
}
