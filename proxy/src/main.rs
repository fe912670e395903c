//! `meshproxy`: the data plane (mutual TLS sidecar, intention enforcement, eBPF redirection).
//!
//! Only the command-line shell exists so far; the proxy itself is built by the data-plane
//! issue. It refuses to run rather than pretend to proxy anything.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "meshproxy", version, about = "Mesh data plane proxy")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy (not available yet).
    Run,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Run => {
            anyhow::bail!("meshproxy run is not implemented yet: the data plane is pending")
        }
    }
}
