//! Checks run before anything is loaded or attached, each failing with one clear line:
//! privileges, cgroup v2, the cgroup path, the eBPF object, and the single-instance lock.
//!
//! The parsers (`/proc/self/status`, `/proc/self/mountinfo`, `/proc/self/cgroup`) are pure
//! functions of the file's text so they are unit-tested; the I/O is in the thin `check_*`
//! wrappers.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::error::TransparentError;

/// Capability bits (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Where the single-instance locks live (a tmpfs: they vanish on reboot with the links).
pub const LOCK_DIR: &str = "/run/meshproxy";

/// `CapEff` and the real uid from `/proc/self/status`.
pub fn parse_status(status: &str) -> (Option<u64>, Option<u32>) {
    let mut cap = None;
    let mut uid = None;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("CapEff:") {
            cap = u64::from_str_radix(v.trim(), 16).ok();
        } else if let Some(v) = line.strip_prefix("Uid:") {
            uid = v.split_whitespace().nth(1).and_then(|u| u.parse().ok());
        }
    }
    (cap, uid)
}

/// Which required capability is missing from `cap_eff`, if any. CAP_SYS_ADMIN stands in for
/// CAP_BPF (kernels before 5.8, and what root has anyway).
pub fn missing_capability(cap_eff: u64) -> Option<&'static str> {
    let has = |bit: u32| cap_eff & (1u64 << bit) != 0;
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        Some("CAP_BPF")
    } else if !has(CAP_NET_ADMIN) {
        Some("CAP_NET_ADMIN")
    } else {
        None
    }
}

/// Refuses to go on without the capabilities loading and attaching need.
pub fn check_privileges() -> Result<(), TransparentError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let (cap, uid) = parse_status(&status);
    let uid = uid.unwrap_or(u32::MAX);
    match missing_capability(cap.unwrap_or(0)) {
        None => Ok(()),
        Some(missing) => Err(TransparentError::NotPrivileged { uid, missing }),
    }
}

/// The first cgroup2 mount point in a mountinfo text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The cgroup v2 path of this process (the `0::` line of `/proc/self/cgroup`).
pub fn own_cgroup(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// A cgroup the programs attach to: its path, an open directory handle and its ID (inode).
#[derive(Debug)]
pub struct Cgroup {
    pub path: PathBuf,
    pub dir: File,
    pub id: u64,
}

/// Resolves `--cgroup` (default: the cgroup v2 root) and opens the proxy's own cgroup (the
/// programs skip it by ID).
pub fn check_cgroup(requested: Option<&Path>) -> Result<(Cgroup, Cgroup), TransparentError> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount = cgroup2_mount(&mountinfo).ok_or(TransparentError::NoCgroup2)?;
    let path = requested.map(Path::to_path_buf).unwrap_or(mount.clone());
    let bad = |reason: String| TransparentError::BadCgroup {
        path: path.display().to_string(),
        reason,
    };
    let canonical = std::fs::canonicalize(&path).map_err(|e| bad(format!("{e}")))?;
    if !canonical.starts_with(&mount) {
        return Err(bad(format!(
            "not inside the cgroup v2 hierarchy mounted at {}",
            mount.display()
        )));
    }
    let meta = std::fs::metadata(&canonical).map_err(|e| bad(format!("{e}")))?;
    if !meta.is_dir() || !canonical.join("cgroup.procs").exists() {
        return Err(bad("not a cgroup v2 directory".into()));
    }
    let dir = File::open(&canonical).map_err(|e| bad(format!("{e}")))?;
    // Fail closed: without its own cgroup ID the programs could not tell the proxy's connects
    // from the captured ones, and would redirect them back into the proxy.
    let own = proxy_cgroup(&mount)?;
    // The programs skip the proxy's cgroup by ID; inside the captured cgroup that would skip
    // the apps too and capture nothing, silently. Refuse instead.
    if own.id == meta.ino() {
        return Err(bad(
            "this proxy runs in that cgroup itself, so the apps' connects could not be told \
             from its own: run the proxy in another cgroup (in host mode, a cgroup of its own)"
                .into(),
        ));
    }
    Ok((
        Cgroup {
            path: canonical,
            dir,
            id: meta.ino(),
        },
        own,
    ))
}

/// This process's cgroup v2 directory under the `mount` point.
fn own_cgroup_path(mount: &Path) -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    own_cgroup(&own).map(|p| mount.join(p.trim_start_matches('/')))
}

/// The proxy's own cgroup under the cgroup v2 `mount` point, opened.
fn proxy_cgroup(mount: &Path) -> Result<Cgroup, TransparentError> {
    let path = own_cgroup_path(mount).ok_or_else(|| TransparentError::OwnCgroup {
        reason: "no cgroup v2 (`0::`) line in /proc/self/cgroup".into(),
    })?;
    let bad = |e: std::io::Error| TransparentError::OwnCgroup {
        reason: format!("{}: {e}", path.display()),
    };
    let canonical = std::fs::canonicalize(&path).map_err(bad)?;
    let meta = std::fs::metadata(&canonical).map_err(bad)?;
    let dir = File::open(&canonical).map_err(bad)?;
    Ok(Cgroup {
        path: canonical,
        dir,
        id: meta.ino(),
    })
}

/// The lock file (and `pins::PodRecord`) of the cgroup with inode `cgroup_id`.
pub fn lock_path(cgroup_id: u64) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("transparent-cgroup-{cgroup_id}.lock"))
}

/// Takes the per-cgroup lock (an flock, released by the kernel when the process dies, so a
/// SIGKILLed proxy never blocks its successor). The returned file must live as long as the
/// programs stay attached; it is open for writing, for the holder's
/// `pins::PodRecord`.
pub fn take_lock(cgroup: &Cgroup) -> Result<File, TransparentError> {
    try_lock(cgroup.id)?.ok_or_else(|| TransparentError::AlreadyRunning {
        cgroup: cgroup.path.display().to_string(),
        lock: lock_path(cgroup.id).display().to_string(),
    })
}

/// The lock of the cgroup with inode `cgroup_id`, taken; `None` while another process holds
/// it. What [`take_lock`] and `transparent remove` both take.
pub fn try_lock(cgroup_id: u64) -> Result<Option<File>, TransparentError> {
    let lock = lock_path(cgroup_id);
    let lock_err = |source| TransparentError::Lock {
        lock: lock.display().to_string(),
        source,
    };
    std::fs::create_dir_all(LOCK_DIR).map_err(lock_err)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock)
        .map_err(lock_err)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(lock_err(e)),
    }
}

/// Candidate locations of the eBPF object, in order: the flag (or `MESH_EBPF_OBJECT`), next to
/// the running binary, then the repository's build output.
pub fn object_candidates(flag: Option<&Path>, exe: Option<&Path>) -> Vec<PathBuf> {
    if let Some(f) = flag {
        return vec![f.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Some(dir) = exe.and_then(Path::parent) {
        out.push(dir.join("mesh-ebpf"));
    }
    out.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../ebpf/target/bpfel-unknown-none/release/mesh-ebpf"),
    );
    out
}

/// The first existing candidate, or one error line listing them all.
pub fn find_object(flag: Option<&Path>) -> Result<PathBuf, TransparentError> {
    let exe = std::env::current_exe().ok();
    let candidates = object_candidates(flag, exe.as_deref());
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| TransparentError::ObjectMissing {
            tried: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_from_status() {
        let root = "Name:\tx\nUid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n";
        let (cap, uid) = parse_status(root);
        assert_eq!(uid, Some(0));
        assert_eq!(missing_capability(cap.unwrap()), None);
        let user = "Uid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\n";
        let (cap, uid) = parse_status(user);
        assert_eq!(uid, Some(1000));
        assert_eq!(missing_capability(cap.unwrap()), Some("CAP_BPF"));
        // CAP_BPF without CAP_NET_ADMIN.
        assert_eq!(missing_capability(1 << 39), Some("CAP_NET_ADMIN"));
        assert_eq!(missing_capability((1 << 39) | (1 << 12)), None);
    }

    #[test]
    fn cgroup2_mount_point_and_own_cgroup() {
        let mi = "25 30 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw\n\
                  35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/sda rw\n"), None);
        assert_eq!(own_cgroup("4:memory:/x\n0::/pods/a\n"), Some("/pods/a"));
    }

    #[test]
    fn lock_file_per_cgroup() {
        assert_eq!(
            lock_path(7),
            Path::new("/run/meshproxy/transparent-cgroup-7.lock")
        );
    }

    #[test]
    fn object_lookup_order() {
        let c = object_candidates(None, Some(Path::new("/opt/bin/meshproxy")));
        assert_eq!(c[0], PathBuf::from("/opt/bin/mesh-ebpf"));
        assert!(c[1].ends_with("ebpf/target/bpfel-unknown-none/release/mesh-ebpf"));
        let only = object_candidates(Some(Path::new("/x/obj")), None);
        assert_eq!(only, vec![PathBuf::from("/x/obj")]);
    }
}
