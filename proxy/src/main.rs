//! `meshproxy`: the data plane's binary. Parses the command line, sets up logging and runs
//! [`meshproxy::app::run`] (agent mode) or [`meshproxy::app::run_static`] (`--config FILE`) on
//! the data-plane runtime.
//!
//! A failure to start is one line on stderr (the error and its causes joined by ": ") and exit
//! status 1, so a supervisor's log shows the reason at a glance.

use std::process::ExitCode;

use clap::Parser;
use meshproxy::config::{Cli, Command, Config};
use meshproxy::static_config::{self, error_chain};

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn fail(what: &str, e: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("meshproxy: {what}: {}", error_chain(e));
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let args = match cli.command {
        Command::Run(args) => *args,
        Command::Transparent(cmd) => {
            return match meshproxy::transparent::pods::run(&cmd) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail("transparent", &e),
            };
        }
    };
    let workers = match args.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // One worker (the sidecar default, as Envoy's `--concurrency 1`): everything runs on the
    // main thread, so a wakeup is never handed between threads and no second thread (nor its
    // malloc arena) exists. More workers: the work-stealing scheduler.
    let rt = || {
        let mut b = if workers == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(workers);
            b
        };
        b.enable_all().thread_name("meshproxy-data").build()
    };
    let result = if let Some(path) = args.config.clone() {
        // The first load is synchronous: a bad file is refused before anything binds.
        let provider = meshproxy::app::crypto_provider();
        let initial = match static_config::load(&path, &provider, 1) {
            Ok(l) => l,
            Err(e) => return fail(&format!("--config {}", path.display()), &e),
        };
        tracing::debug!(config = ?initial.config, "starting in static mode");
        let rt = match rt() {
            Ok(rt) => rt,
            Err(e) => return fail("starting the data-plane runtime", &e),
        };
        let r = rt.block_on(meshproxy::app::run_static(initial));
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
        r
    } else {
        let config = match Config::from_args(args) {
            Ok(c) => c,
            Err(e) => return fail("invalid command line", &e),
        };
        tracing::debug!(?config, "starting");
        let rt = match rt() {
            Ok(rt) => rt,
            Err(e) => return fail("starting the data-plane runtime", &e),
        };
        let r = rt.block_on(meshproxy::app::run(config));
        // Connections still open after the drain deadline are dropped here.
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
        r
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("meshproxy run", &e),
    }
}
