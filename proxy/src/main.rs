//! `meshproxy`: the data plane's binary. Parses the command line, sets up logging and runs
//! [`meshproxy::app::run`] on the data-plane runtime.

use anyhow::Context;
use clap::Parser;
use meshproxy::config::{Cli, Command, Config};

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Run(args) => {
            let config = Config::from_args(args).context("invalid command line")?;
            tracing::debug!(?config, "starting");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("meshproxy-data")
                .build()
                .context("starting the data-plane runtime")?;
            rt.block_on(meshproxy::app::run(config))
                .context("meshproxy run")?;
            // Connections still open after the drain deadline are dropped here.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            Ok(())
        }
    }
}
