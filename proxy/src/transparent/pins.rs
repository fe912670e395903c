//! The capture's pinned state, one directory per pod in bpffs: why transparent mode fails
//! closed.
//!
//! A `bpf_link` held only by the proxy's file descriptors is detached by the kernel when the
//! proxy exits, and the pod's traffic then goes direct, in plaintext, past every intention.
//! Pinned in `/sys/fs/bpf/mesh/<pod-id>/` (`pod-id` = `cgroup-<inode of the pod's cgroup>`),
//! the links and maps outlive the proxy: its connects are still rewritten to the (now closed)
//! outbound listener and refused, and `mesh_sk_lookup` drops inbound connections to captured
//! ports while the listener slot is empty (`FLAG_FAIL_CLOSED`). A proxy started again for the
//! pod opens the same maps (by pin) and swaps in its own links ([`PodPins::pin_link`]: pin
//! beside, then rename over), so the capture never has a gap. Only
//! `meshproxy transparent remove` ([`PodPins::remove`]) or `--fail-open` takes it away.
//!
//! bpffs holds only BPF objects, so who holds a pod (pid, cgroup, netns) is the JSON
//! [`PodRecord`] in the pod's lock file under `/run/meshproxy` (a tmpfs, like bpffs: both
//! vanish on reboot, with the cgroups they describe).

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use aya::programs::links::FdLink;
use serde::{Deserialize, Serialize};

use super::error::TransparentError;

/// Where bpffs is mounted (mounted there by the proxy if it is not yet, as Cilium does).
pub const BPFFS: &str = "/sys/fs/bpf";
/// Every pod's directory is under this one.
pub const PIN_ROOT: &str = "/sys/fs/bpf/mesh";
/// Pins of links start with this, then the program's name.
const LINK_PREFIX: &str = "link_";
/// A link pinned with this suffix is renamed over its final name once pinned (bpffs refuses
/// dots in names: EPERM).
const NEW_SUFFIX: &str = "_new";
/// `BPF_FS_MAGIC` (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The pinned state of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPins {
    /// `cgroup-<inode>`.
    pub id: String,
    pub dir: PathBuf,
}

/// Who holds a pod, written into its lock file by the proxy that holds the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub pid: u32,
    pub cgroup: PathBuf,
    pub netns: Option<PathBuf>,
    pub fail_open: bool,
}

impl PodRecord {
    /// Replaces the content of the (locked) lock file with this record.
    pub fn write_to(&self, lock: &mut std::fs::File) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        lock.set_len(0)?;
        lock.rewind()?;
        lock.write_all(&json)?;
        lock.flush()
    }

    /// The record in a lock file, if one was written.
    pub fn read_from(path: &Path) -> Option<Self> {
        let mut s = String::new();
        std::fs::File::open(path)
            .ok()?
            .read_to_string(&mut s)
            .ok()?;
        serde_json::from_str(&s).ok()
    }

    /// Whether the recorded process still runs and is a `meshproxy` binary (a reused pid is
    /// not).
    pub fn alive(&self) -> bool {
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid));
        exe.ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .is_some_and(|n| n == "meshproxy")
    }
}

/// The prefix of this build's map pins.
fn abi_prefix() -> String {
    format!("abi{}_", mesh_ebpf_common::MAPS_ABI)
}

/// The pod id of the cgroup with inode `cgroup_id`.
pub fn pod_id(cgroup_id: u64) -> String {
    format!("cgroup-{cgroup_id}")
}

/// `cgroup-<inode>` back to the inode; `None` for anything else (never a path).
pub fn parse_pod_id(id: &str) -> Option<u64> {
    id.strip_prefix("cgroup-")?.parse().ok()
}

fn pin_err(what: &str, path: &Path, e: impl std::error::Error) -> TransparentError {
    // The causes too: aya's pin errors say which call failed, their source says why.
    let mut reason = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        reason.push_str(&format!(": {c}"));
        cur = c.source();
    }
    TransparentError::Pin {
        what: what.to_string(),
        path: path.display().to_string(),
        reason,
    }
}

impl PodPins {
    pub fn for_cgroup(cgroup_id: u64) -> Self {
        let id = pod_id(cgroup_id);
        Self {
            dir: Path::new(PIN_ROOT).join(&id),
            id,
        }
    }

    /// Mounts bpffs if needed and creates the pod's directory (0700).
    pub fn create(&self) -> Result<(), TransparentError> {
        ensure_bpffs()?;
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| pin_err("creating the pin directory", &self.dir, e))
    }

    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    /// Where map `name` is pinned: its name with this build's layout version
    /// ([`mesh_ebpf_common::MAPS_ABI`]).
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}{name}", abi_prefix()))
    }

    /// Unpins the links of programs not in `keep`.
    pub fn prune_links(&self, keep: &[&str]) {
        for prog in self
            .links()
            .into_iter()
            .filter(|p| !keep.contains(&p.as_str()))
        {
            let p = self.dir.join(format!("{LINK_PREFIX}{prog}"));
            match std::fs::remove_file(&p) {
                Ok(()) => {
                    tracing::info!(program = %prog, "detached a predecessor's program this start does not use")
                }
                Err(e) => {
                    tracing::warn!(program = %prog, error = %e, "could not unpin a predecessor's link")
                }
            }
        }
    }

    /// Unpins maps of other layout versions: once this build's links replaced the old ones,
    /// no program uses them.
    pub fn prune_other_abis(&self) {
        let mine = abi_prefix();
        for n in self.maps().into_iter().filter(|n| !n.starts_with(&mine)) {
            let p = self.dir.join(&n);
            match std::fs::remove_file(&p) {
                Ok(()) => tracing::info!(map = %n, "unpinned a map of another meshproxy version"),
                Err(e) => {
                    tracing::warn!(map = %n, error = %e, "could not unpin a map of another meshproxy version")
                }
            }
        }
    }

    /// Pins `link` of program `prog` as the pod's link for it, replacing the one pinned
    /// before (whose link the kernel then detaches once nothing else holds it). Pinned beside
    /// and renamed over, so one of the two is attached at every instant.
    pub fn pin_link(&self, prog: &str, link: FdLink) -> Result<(), TransparentError> {
        let path = self.dir.join(format!("{LINK_PREFIX}{prog}"));
        let new = self.dir.join(format!("{LINK_PREFIX}{prog}{NEW_SUFFIX}"));
        // A leftover of a start that failed between the two steps.
        let _ = std::fs::remove_file(&new);
        let pinned = link
            .pin(&new)
            .map_err(|e| pin_err("pinning a link", &new, e))?;
        std::fs::rename(&new, &path).map_err(|e| pin_err("renaming a pinned link", &path, e))?;
        // Closes this process's descriptor only: the pin keeps the link.
        drop(pinned);
        Ok(())
    }

    /// The programs whose links are pinned, by name.
    pub fn links(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .entries()
            .into_iter()
            .filter_map(|n| n.strip_prefix(LINK_PREFIX).map(str::to_string))
            .filter(|n| !n.ends_with(NEW_SUFFIX))
            .collect();
        out.sort();
        out
    }

    /// The names of the maps pinned.
    pub fn maps(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .entries()
            .into_iter()
            .filter(|n| !n.starts_with(LINK_PREFIX))
            .collect();
        out.sort();
        out
    }

    fn entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Unpins everything (links first, so nothing runs against a half-removed set of maps)
    /// and removes the directory. The kernel detaches the links and frees the programs and
    /// maps once no process holds them.
    pub fn remove(&self) -> Result<(), TransparentError> {
        let mut names = self.entries();
        names.sort_by_key(|n| !n.starts_with(LINK_PREFIX));
        for n in names {
            let p = self.dir.join(&n);
            std::fs::remove_file(&p).map_err(|e| pin_err("unpinning", &p, e))?;
        }
        std::fs::remove_dir(&self.dir).map_err(|e| pin_err("removing", &self.dir, e))
    }

    /// Every pod with a pin directory.
    pub fn list() -> Vec<Self> {
        let mut out: Vec<Self> = std::fs::read_dir(PIN_ROOT)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| {
                let id = e.file_name().to_string_lossy().into_owned();
                parse_pod_id(&id)?;
                Some(Self { dir: e.path(), id })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

/// Mounts bpffs at [`BPFFS`] unless it is there already.
fn ensure_bpffs() -> Result<(), TransparentError> {
    let root = Path::new(BPFFS);
    let is_bpffs =
        |p: &Path| nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC);
    if is_bpffs(root) {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        Some("mode=0700"),
    )
    .map_err(|e| pin_err("mounting bpffs (mount -t bpf bpf /sys/fs/bpf)", root, e))?;
    tracing::info!(path = BPFFS, "mounted bpffs");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ids_round_trip_and_reject_paths() {
        assert_eq!(pod_id(4242), "cgroup-4242");
        assert_eq!(parse_pod_id("cgroup-4242"), Some(4242));
        assert_eq!(parse_pod_id("cgroup-../x"), None);
        assert_eq!(parse_pod_id("4242"), None);
        let p = PodPins::for_cgroup(7);
        assert_eq!(p.dir, Path::new("/sys/fs/bpf/mesh/cgroup-7"));
    }

    #[test]
    fn record_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        // A longer earlier record must not leave a tail behind.
        f.write_all(&[b'x'; 300]).unwrap();
        let r = PodRecord {
            pid: std::process::id(),
            cgroup: "/sys/fs/cgroup/pods/a".into(),
            netns: Some("/run/netns/a".into()),
            fail_open: false,
        };
        r.write_to(&mut f).unwrap();
        assert_eq!(PodRecord::read_from(&path), Some(r.clone()));
        // This test binary is not a meshproxy: the pid alone does not make it "alive".
        assert!(!r.alive());
    }
}
