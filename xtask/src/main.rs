//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `demo`: the main job. Starts the embedded single-node control plane (`meshd dev`), shows
//!   its state, writes and checks intentions, rotates the CA, and stops it.
//! - `build-ebpf`: builds the eBPF programs in `ebpf/` (nightly, `bpfel-unknown-none`),
//!   installing nightly `rust-src` and a project-local bpf-linker first when missing.
//! - `test`: the whole test suite, exactly what CI runs (`.ci/run` calls it): format check,
//!   clippy with warnings denied, the eBPF build, then every test in the workspace.
//!
//! Each task installs what it needs that a fresh machine lacks, so the README's two commands
//! work as they are.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

mod ebpf;
mod steps;

use steps::{cargo, root, run};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run the demo on the embedded single-node control plane.
    Demo,
    /// Build the eBPF programs (installs nightly rust-src and bpf-linker when missing).
    BuildEbpf,
    /// Run the whole test suite (what CI runs).
    Test,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Demo => demo(),
        Task::BuildEbpf => ebpf::build_ebpf().map(|_| ()),
        Task::Test => test(),
    }
}

/// Adds a rustup component when the tool it provides is missing.
fn ensure_component(tool_args: &[&str], component: &str) -> anyhow::Result<()> {
    let ok = cargo()
        .args(tool_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        run(
            &format!("rustup component add {component}"),
            Command::new("rustup").args(["component", "add", component]),
        )?;
    }
    Ok(())
}

/// Installs a Debian package when the program it provides is missing (the tests drive real
/// `curl`, `openssl` and `ip`; a fresh machine may lack some of them).
fn ensure_program(program: &str, package: &str) -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
    if found {
        return Ok(());
    }
    if !is_root() {
        bail!("`{program}` is missing: install the Debian package {package}");
    }
    let install = || {
        run(
            &format!("apt-get install {package} (for `{program}`)"),
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", package])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null()),
        )
    };
    install().or_else(|_| {
        // The package lists may be missing or stale on a fresh machine.
        run(
            "apt-get update",
            Command::new("apt-get").arg("update").stdin(Stdio::null()),
        )?;
        install()
    })
}

fn test() -> anyhow::Result<()> {
    for (program, package) in [("curl", "curl"), ("openssl", "openssl"), ("ip", "iproute2")] {
        ensure_program(program, package)?;
    }
    ensure_component(&["fmt", "--version"], "rustfmt")?;
    ensure_component(&["clippy", "--version"], "clippy")?;
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "cargo build (binaries used by the process tests)",
        cargo().args(["build", "--workspace", "--bins"]),
    )?;
    // The transparent-mode tests load the eBPF programs: build them first.
    let object = ebpf::build_ebpf()?;
    run(
        "cargo test",
        cargo()
            .args(["test", "--workspace"])
            .env("MESH_EBPF_OBJECT", &object),
    )?;
    Ok(())
}

/// Stops the dev server on drop, whatever happens in between.
struct DevServer(Child);

impl Drop for DevServer {
    fn drop(&mut self) {
        // SIGTERM by PID for a clean shutdown; SIGKILL if it does not exit in time.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The main job. As root: the full transparent-mode demo (`mesh-demo`: control plane, two
/// pods with eBPF capture, an allowed and a denied connection, teardown). Without root, which
/// namespaces, cgroups and eBPF need, the control-plane part only, saying so.
fn demo() -> anyhow::Result<()> {
    if !is_root() {
        eprintln!(
            "==> not root: network namespaces, cgroups and eBPF need root, so this runs the \
             control-plane part of the demo only (run as root for the full demo)"
        );
        return demo_control_plane();
    }
    ensure_program("ip", "iproute2")?;
    let object = ebpf::build_ebpf()?;
    run(
        "build meshd, meshctl, meshproxy and the demo (release)",
        cargo().args([
            "build",
            "--release",
            "-p",
            "mesh-control",
            "-p",
            "meshproxy",
            "-p",
            "mesh-tests",
            "--bins",
        ]),
    )?;
    run(
        "mesh-demo",
        Command::new(root().join("target/release/mesh-demo"))
            .env("MESH_EBPF_OBJECT", &object)
            .env("MESH_LOG", "warn")
            .stdin(Stdio::null()),
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        == Some("0")
}

/// The control plane on its own: `meshd dev`, its state, intentions, a CA rotation.
fn demo_control_plane() -> anyhow::Result<()> {
    run(
        "build meshd and meshctl",
        cargo().args(["build", "--release", "-p", "mesh-control", "--bins"]),
    )?;
    let bin = root().join("target/release");
    let started = std::time::Instant::now();
    let mut child = Command::new(bin.join("meshd"))
        .args(["dev", "--http-addr", "127.0.0.1:0", "--bind", "127.0.0.1:0"])
        .env("MESH_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting meshd dev")?;
    let stdout = child.stdout.take().expect("piped");
    let server = DevServer(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading meshd's address line")?;
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .with_context(|| format!("meshd did not report its HTTP address: {line:?}"))?
        .to_string();
    println!("meshd dev is up at http://{http} ({:?})", started.elapsed());

    let ctl = |args: &[&str]| -> anyhow::Result<i32> {
        println!("\n$ meshctl {}", args.join(" "));
        let status = Command::new(bin.join("meshctl"))
            .arg("--http-addr")
            .arg(&http)
            .args(args)
            .status()
            .context("running meshctl")?;
        Ok(status.code().unwrap_or(-1))
    };
    // Wait (bounded) until the CA exists: the leader creates it right after election.
    let mut ready = false;
    for _ in 0..100 {
        let out = Command::new(bin.join("meshctl"))
            .args([
                "--http-addr",
                &http,
                "connect",
                "ca",
                "roots",
                "--format",
                "json",
            ])
            .output()?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"Active\": true")
        {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !ready {
        bail!("the control plane did not become ready within 5s");
    }
    ctl(&["operator", "raft", "list-peers"])?;
    ctl(&["connect", "ca", "roots"])?;
    ctl(&["intention", "create", "--allow", "web", "db"])?;
    ctl(&["intention", "create", "--deny", "*", "db"])?;
    ctl(&["intention", "list"])?;
    let allowed = ctl(&["intention", "check", "web", "db"])?;
    let denied = ctl(&["intention", "check", "api", "db"])?;
    println!("(exit codes: web -> db {allowed}, api -> db {denied}; default policy is deny)");
    ctl(&["intention", "match", "--destination", "db"])?;
    ctl(&["connect", "ca", "rotate"])?;
    ctl(&["connect", "ca", "roots"])?;
    drop(server);
    println!("\nmeshd dev stopped; its temporary data directory is gone.");
    if allowed != 0 || denied != 2 {
        bail!("unexpected intention check results");
    }
    Ok(())
}
