//! Links the release `meshproxy` with the functions it runs after start-up packed at the front of
//! `.text` (`link/hot-symbols.txt`, made by `link/order.sh`; lld's `--symbol-ordering-file`).
//! Why: a sidecar's resident memory is mostly code pages, and the kernel maps file-backed code
//! in 64 KiB fault-around blocks, so a few hundred hot functions scattered over 9 MB of text keep
//! most of it resident; packed together they keep a fraction (issue 16, `proxy/README.md`).
//! Only the layout changes: a stale list costs memory, never behaviour. Applied to release
//! builds for x86_64 Linux, whose Rust toolchains link with lld by default (Rust 1.90 and
//! later); `MESHPROXY_NO_SYMBOL_ORDER=1` turns it off (e.g. for a toolchain that links with
//! GNU ld, which has no such option).

use std::env;

fn main() {
    println!("cargo::rerun-if-changed=link/hot-symbols.txt");
    println!("cargo::rerun-if-env-changed=MESHPROXY_NO_SYMBOL_ORDER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let lld_target = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let opted_out = env::var_os("MESHPROXY_NO_SYMBOL_ORDER").is_some_and(|v| v != "0");
    if !release || !lld_target || opted_out {
        return;
    }
    let Some(dir) = env::var_os("CARGO_MANIFEST_DIR") else {
        return;
    };
    let list = std::path::Path::new(&dir).join("link/hot-symbols.txt");
    println!(
        "cargo::rustc-link-arg-bin=meshproxy=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    println!("cargo::rustc-link-arg-bin=meshproxy=-Wl,--no-warn-symbol-ordering");
}
