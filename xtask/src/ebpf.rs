//! `cargo xtask build-ebpf`: builds the `no_std` eBPF crate in `ebpf/` for
//! `bpfel-unknown-none`, installing what a fresh machine lacks first.
//!
//! Why an xtask and not a build script (aya-build): the eBPF crate needs nightly with
//! `-Z build-std=core` and a BPF linker, while everything else builds on stable. Keeping the
//! eBPF crate out of the workspace and building it from here keeps `cargo check/clippy/test
//! --workspace` host-only and fast (see `../shared/EBPF-TOOLCHAIN.md` for the facts behind
//! each step).
//!
//! What it installs, each only when missing or broken:
//! - nightly's `rust-src` component (for `-Z build-std=core`);
//! - `bpf-linker` 0.13.0 into the git-ignored `.tools/` directory, built against the nightly
//!   toolchain's own `libLLVM` (a plain `cargo install bpf-linker` wants a system LLVM that
//!   this machine does not have). It is re-checked with `bpf-linker --version` on every run,
//!   because a nightly update changes the library it links.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::steps::{root, run};

/// The nightly toolchain the eBPF crate builds with.
const NIGHTLY: &str = "nightly";
/// bpf-linker release that matches the nightly's LLVM major version.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";

/// Where the built object lands.
pub fn object_path() -> PathBuf {
    root().join("ebpf/target/bpfel-unknown-none/release/mesh-ebpf")
}

/// A `Command` for a tool of the nightly toolchain, with the environment that `cargo xtask`
/// itself runs under removed (cargo sets `RUSTC`, `RUSTUP_TOOLCHAIN`, `CARGO_*`, which would
/// pin the stable toolchain).
fn clean(program: &str) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO")
            || k.starts_with("RUSTC")
            || k == "RUSTUP_TOOLCHAIN"
            || k == "RUSTFLAGS"
            || k == "RUSTDOC"
        {
            c.env_remove(&k);
        }
    }
    c
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let out = clean("rustc")
        .args([&format!("+{NIGHTLY}"), "--print", "sysroot"])
        .output()
        .context("running `rustc +nightly --print sysroot` (is rustup installed?)")?;
    if !out.status.success() {
        bail!(
            "no nightly toolchain: `rustc +nightly` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn ensure_rust_src(sysroot: &Path) -> anyhow::Result<()> {
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    run(
        "rustup component add rust-src --toolchain nightly",
        clean("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]),
    )
}

fn linker_works(linker: &Path) -> bool {
    Command::new(linker)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Builds bpf-linker against the nightly's `libLLVM.so.*` unless a working one is installed.
fn ensure_bpf_linker(sysroot: &Path) -> anyhow::Result<PathBuf> {
    let tools = root().join(".tools");
    let linker = tools.join("bin/bpf-linker");
    if linker_works(&linker) {
        return Ok(linker);
    }
    let lib = sysroot.join("lib");
    let libllvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") || n.starts_with("libLLVM-"))
        })
        .with_context(|| format!("the nightly toolchain has no libLLVM in {}", lib.display()))?;
    // bpf-linker's build script links `-lLLVM` from `$LLVM_PREFIX/lib`.
    let prefix = tools.join("llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)
        .with_context(|| format!("linking {} -> {}", link.display(), libllvm.display()))?;
    run(
        &format!(
            "build bpf-linker {BPF_LINKER_VERSION} against {}",
            libllvm.display()
        ),
        clean("cargo")
            .args([
                &format!("+{NIGHTLY}"),
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                BPF_LINKER_LLVM_FEATURE,
                "--force",
                "--root",
            ])
            .arg(&tools)
            .env("LLVM_PREFIX", &prefix)
            .env(
                "RUSTFLAGS",
                format!("-C link-arg=-Wl,-rpath,{}", lib.display()),
            ),
    )?;
    if !linker_works(&linker) {
        bail!(
            "bpf-linker was built but `{} --version` fails",
            linker.display()
        );
    }
    Ok(linker)
}

/// `cargo xtask build-ebpf`.
pub fn build_ebpf() -> anyhow::Result<PathBuf> {
    let sysroot = nightly_sysroot()?;
    ensure_rust_src(&sysroot)?;
    let linker = ensure_bpf_linker(&sysroot)?;
    let crate_dir = root().join("ebpf");
    if !crate_dir.join("Cargo.toml").is_file() {
        bail!(
            "{} has no Cargo.toml: nothing to build",
            crate_dir.display()
        );
    }
    run(
        "build the eBPF programs (nightly, bpfel-unknown-none)",
        clean("cargo")
            .current_dir(&crate_dir)
            .args([
                &format!("+{NIGHTLY}"),
                "build",
                "--release",
                "-Z",
                "build-std=core",
                "--target",
                "bpfel-unknown-none",
            ])
            .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &linker)
            .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf"),
    )?;
    let object = object_path();
    if !object.is_file() {
        bail!(
            "the eBPF build succeeded but {} is missing",
            object.display()
        );
    }
    eprintln!("==> eBPF object: {}", object.display());
    Ok(object)
}
