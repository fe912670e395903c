//! `meshproxy transparent status` and `meshproxy transparent remove`: what an operator sees
//! of the pinned captures ([`super::pins`]) and the one explicit way to take one away.
//!
//! `remove` takes the pod's lock first, so it refuses while a proxy serves the pod and no
//! proxy can start for it halfway through; it then unpins everything, and the kernel detaches
//! the programs and frees them with their maps.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;

use super::error::TransparentError;
use super::pins::{self, PodPins, PodRecord};

/// `meshproxy transparent …`.
#[derive(Debug, Subcommand)]
pub enum PodsCommand {
    /// List the pods whose capture is pinned, their programs, and whether a proxy holds each.
    Status {
        /// One JSON array instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a pod's capture (its traffic then goes direct, unauthenticated). Refused while
    /// a proxy serves the pod.
    Remove(RemoveArgs),
}

/// Which pod `remove` acts on.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("pod").required(true).args(["cgroup", "pod_id"])))]
pub struct RemoveArgs {
    /// The pod's cgroup v2 directory (as given to `run --cgroup`).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// The pod's id as `status` shows it (`cgroup-<inode>`), e.g. once its cgroup is gone.
    #[arg(long, value_name = "ID")]
    pub pod_id: Option<String>,
    /// The pod's network namespace: checked against the one the capture was made for.
    #[arg(long, value_name = "NAME|PATH")]
    pub netns: Option<String>,
}

/// One pinned pod, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodStatus {
    pub id: String,
    pub pin_dir: PathBuf,
    pub cgroup: Option<PathBuf>,
    pub netns: Option<PathBuf>,
    /// Pid of the live proxy serving the pod; `None`: no proxy, connections are refused.
    pub proxy_pid: Option<u32>,
    /// Programs whose links are pinned.
    pub programs: Vec<String>,
    pub maps: usize,
}

impl PodStatus {
    fn of(pins: &PodPins) -> Self {
        let record = pins::parse_pod_id(&pins.id)
            .and_then(|id| PodRecord::read_from(&super::preflight::lock_path(id)));
        Self {
            id: pins.id.clone(),
            pin_dir: pins.dir.clone(),
            cgroup: record.as_ref().map(|r| r.cgroup.clone()),
            netns: record.as_ref().and_then(|r| r.netns.clone()),
            proxy_pid: record.as_ref().filter(|r| r.alive()).map(|r| r.pid),
            programs: pins.links(),
            maps: pins.maps().len(),
        }
    }
}

/// Every pinned pod.
pub fn status() -> Vec<PodStatus> {
    PodPins::list().iter().map(PodStatus::of).collect()
}

/// The table `status` prints.
pub fn render(pods: &[PodStatus]) -> String {
    if pods.is_empty() {
        return format!("no pinned pods (nothing under {})\n", pins::PIN_ROOT);
    }
    let mut out = String::from("POD\tPROXY\tCGROUP\tNETNS\tPROGRAMS\n");
    for p in pods {
        let proxy = p.proxy_pid.map_or_else(
            || "none (fail-closed: connections refused)".to_string(),
            |pid| format!("pid {pid}"),
        );
        let show = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or_else(|| "-".to_string(), |p| p.display().to_string())
        };
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            p.id,
            proxy,
            show(&p.cgroup),
            show(&p.netns),
            p.programs.join(",")
        ));
    }
    out
}

/// Removes one pod's capture; returns what it was.
pub fn remove(args: &RemoveArgs) -> Result<PodStatus, TransparentError> {
    let cgroup_id = match (&args.cgroup, &args.pod_id) {
        (Some(path), _) => std::fs::metadata(path)
            .map_err(|e| TransparentError::BadCgroup {
                path: path.display().to_string(),
                reason: format!("{e} (once a cgroup is gone, use --pod-id from `status`)"),
            })?
            .ino(),
        (None, Some(id)) => pins::parse_pod_id(id).ok_or_else(|| TransparentError::NotPinned {
            what: format!("pod id {id:?} (ids look like cgroup-<number>)"),
        })?,
        (None, None) => {
            return Err(TransparentError::NotPinned {
                what: "no pod (give --cgroup or --pod-id)".into(),
            });
        }
    };
    let pins = PodPins::for_cgroup(cgroup_id);
    if !pins.exists() {
        return Err(TransparentError::NotPinned {
            what: format!("pod {}", pins.id),
        });
    }
    let status = PodStatus::of(&pins);
    if let (Some(want), Some(had)) = (&args.netns, &status.netns) {
        let want = super::args::netns_path(want);
        if !same_file(&want, had) {
            return Err(TransparentError::BadNetns {
                path: want.display().to_string(),
                source: std::io::Error::other(format!(
                    "pod {} was captured in {}",
                    pins.id,
                    had.display()
                )),
            });
        }
    }
    let Some(lock) = super::preflight::try_lock(cgroup_id)? else {
        return Err(TransparentError::StillServed {
            pid: status.proxy_pid.unwrap_or(0),
            cgroup: status
                .cgroup
                .as_ref()
                .map_or_else(|| pins.id.clone(), |c| c.display().to_string()),
        });
    };
    pins.remove()?;
    remove_caller_routing(status.netns.as_deref());
    let _ = std::fs::remove_file(super::preflight::lock_path(cgroup_id));
    drop(lock);
    Ok(status)
}

/// Removes the pod's caller-address routing ([`super::reply_route`]) with its capture; a
/// namespace that is gone took it along.
fn remove_caller_routing(netns: Option<&Path>) {
    let Some(path) = netns.filter(|p| p.exists()) else {
        return;
    };
    let removed = super::netns::Netns::open(path)
        .map_err(|e| e.to_string())
        .and_then(|ns| super::reply_route::remove(&ns).map_err(|e| e.to_string()));
    if let Err(e) = removed {
        eprintln!(
            "warning: the caller-address routing in {} was not removed: {e}",
            path.display()
        );
    }
}

/// Whether two paths name the same file (a netns given by name or by path).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// Runs `meshproxy transparent …`: prints the result, or returns why it failed.
pub fn run(cmd: &PodsCommand) -> Result<(), TransparentError> {
    match cmd {
        PodsCommand::Status { json } => {
            let pods = status();
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&pods).unwrap_or_default()
                );
            } else {
                print!("{}", render(&pods));
            }
            Ok(())
        }
        PodsCommand::Remove(args) => {
            let was = remove(args)?;
            println!(
                "removed the capture of pod {} ({} programs unpinned); its traffic now goes direct",
                was.id,
                was.programs.len()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_says_when_no_proxy_serves_a_pod() {
        let pod = PodStatus {
            id: "cgroup-9".into(),
            pin_dir: "/sys/fs/bpf/mesh/cgroup-9".into(),
            cgroup: Some("/sys/fs/cgroup/pods/db".into()),
            netns: None,
            proxy_pid: None,
            programs: vec!["mesh_connect4".into(), "mesh_sk_lookup".into()],
            maps: 14,
        };
        let t = render(std::slice::from_ref(&pod));
        assert!(t.contains("cgroup-9\tnone (fail-closed: connections refused)\t/sys/fs/cgroup/pods/db\t-\tmesh_connect4,mesh_sk_lookup"), "{t}");
        let held = PodStatus {
            proxy_pid: Some(77),
            ..pod
        };
        assert!(render(&[held]).contains("\tpid 77\t"));
        assert!(render(&[]).starts_with("no pinned pods"));
    }
}
