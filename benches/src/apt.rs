//! Installing a bench's missing tools with apt: the peers proxy_chain compares against
//! (stunnel, HAProxy) and the iptables the transparent bench's REDIRECT column needs. One
//! place, so every bench installs the same way (non-interactive, `apt-get update` and one retry
//! when the package lists are stale).

use std::process::{Command, Stdio};

/// Why apt cannot install here, or `None` when it can (root and `apt-get` on the PATH).
pub fn cannot_install() -> Option<&'static str> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if Command::new("apt-get").arg("--version").output().is_err() {
        Some("apt-get is not available")
    } else if !root {
        Some("not root, cannot apt-get install")
    } else {
        None
    }
}

/// `apt-get install -y` of `packages`; when that fails, `apt-get update` and one more try.
/// Returns whether the last install succeeded.
pub fn install(packages: &[&str]) -> bool {
    let install = || {
        eprintln!("installing {} with apt-get ...", packages.join(" "));
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if install() {
        return true;
    }
    let _ = Command::new("apt-get")
        .arg("update")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status();
    install()
}
