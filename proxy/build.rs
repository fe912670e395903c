//! Links the release `meshproxy` with the functions it runs after start-up packed at the front of
//! its code (`link/hot-symbols.txt`, made by `link/order.sh`).
//! Why: a sidecar's resident memory is mostly code pages, and the kernel maps file-backed code
//! in 64 KiB fault-around blocks, so a few hundred hot functions scattered over 9 MB of text keep
//! most of it resident; packed together they keep a fraction (issue 16, `proxy/README.md`).
//!
//! Two linker inputs, both from the one list:
//! * Rust functions are matched **without their hashes**: a mangled name's `17h…E` hash, its
//!   crate disambiguators and LTO's `.NNN` suffixes change with the toolchain, the dependency
//!   versions and any change to the crate graph, so exact names go stale (half the list no
//!   longer matched a few commits after it was made). Each becomes a section pattern in a linker
//!   script (every function has its own `.text.<name>` section) that gathers them into one
//!   output section placed just before `.text`.
//! * C and assembly functions (aws-lc) keep stable names and go to lld's
//!   `--symbol-ordering-file`, which puts them first in `.text`, right after the Rust ones.
//!
//! Only the layout changes: a stale list costs memory, never behaviour. Applied to release
//! builds for x86_64 Linux, whose Rust toolchains link with lld by default (Rust 1.90 and
//! later); `MESHPROXY_NO_SYMBOL_ORDER=1` turns it off (e.g. for a toolchain that links with
//! GNU ld).

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

#[path = "link/patterns.rs"]
mod patterns;
use patterns::{is_plain_symbol, rust_pattern};

fn main() {
    println!("cargo::rerun-if-changed=link/hot-symbols.txt");
    println!("cargo::rerun-if-env-changed=MESHPROXY_NO_SYMBOL_ORDER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let lld_target = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let opted_out = env::var_os("MESHPROXY_NO_SYMBOL_ORDER").is_some_and(|v| v != "0");
    if !release || !lld_target || opted_out {
        return;
    }
    let (Some(dir), Some(out)) = (env::var_os("CARGO_MANIFEST_DIR"), env::var_os("OUT_DIR")) else {
        return;
    };
    let list = PathBuf::from(dir).join("link/hot-symbols.txt");
    let Ok(names) = std::fs::read_to_string(&list) else {
        return;
    };
    let out = PathBuf::from(out);

    let mut patterns = Vec::new();
    let mut exact = String::new();
    for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
        match rust_pattern(name) {
            Some(p) if !patterns.contains(&p) => patterns.push(p),
            Some(_) => {}
            None if is_plain_symbol(name) => {
                exact.push_str(name);
                exact.push('\n');
            }
            None => {}
        }
    }
    let mut script = String::from("SECTIONS {\n  .text.meshproxy_hot : {\n");
    for p in &patterns {
        let _ = writeln!(script, "    *(.text.{p})");
    }
    script.push_str("  }\n} INSERT BEFORE .text;\n");
    let script_path = out.join("hot-text.ld");
    let order_path = out.join("hot-symbols-exact.txt");
    if std::fs::write(&script_path, script).is_err() || std::fs::write(&order_path, exact).is_err()
    {
        return;
    }
    println!(
        "cargo::rustc-link-arg-bin=meshproxy=-Wl,-T,{}",
        script_path.display()
    );
    println!(
        "cargo::rustc-link-arg-bin=meshproxy=-Wl,--symbol-ordering-file={}",
        order_path.display()
    );
    println!("cargo::rustc-link-arg-bin=meshproxy=-Wl,--no-warn-symbol-ordering");
}
