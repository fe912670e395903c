//! Where the chain benches find the release binaries they drive (`meshd`, `meshproxy`), and
//! the one cargo invocation that builds them. Shared by `proxy_chain` and `l7_chain`, which
//! both measure real processes rather than in-process code.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// Workspace root (this crate lives in `<root>/benches`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `target/release` next to this binary (`harness` names it in the warning printed when the
/// harness itself is not a release build).
pub fn release_dir(harness: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("binary has no directory")?;
    if dir.file_name().is_some_and(|n| n == "release") {
        Ok(dir.to_path_buf())
    } else {
        eprintln!(
            "warning: this harness is not a release build ({}); run it with \
             `cargo run --release -p mesh-benches --bin {harness}`",
            dir.display()
        );
        Ok(dir.parent().context("no target dir")?.join("release"))
    }
}

/// Builds meshd and meshproxy in release mode.
pub fn build_binaries() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building meshd and meshproxy (release) ...");
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "mesh-control",
            "-p",
            "meshproxy",
            "--bins",
        ])
        .status()
        .context("running cargo build")?;
    anyhow::ensure!(status.success(), "cargo build of meshd/meshproxy failed");
    Ok(())
}
