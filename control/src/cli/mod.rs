//! `meshctl`: the operator CLI. Consul-like verbs over the HTTP API of the local agent or a
//! server (`--http-addr`, or `MESH_HTTP_ADDR`). One module per verb group.

mod catalog;
pub mod client;
mod config;
mod connect;
mod intention;
mod operator;
mod table;

use clap::{Parser, Subcommand, ValueEnum};

pub use client::{ApiClient, CliError};

#[derive(Parser)]
#[command(name = "meshctl", version, about = "Operate the mesh")]
pub struct Cli {
    /// Address of the agent's HTTP API.
    #[arg(
        long,
        env = "MESH_HTTP_ADDR",
        default_value = "127.0.0.1:8500",
        global = true
    )]
    pub http_addr: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum Format {
    #[default]
    Pretty,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Cluster operations.
    Operator {
        #[command(subcommand)]
        command: operator::OperatorCmd,
    },
    /// Manage intentions (who may connect to whom).
    Intention {
        #[command(subcommand)]
        command: intention::IntentionCmd,
    },
    /// Configuration entries (service-defaults, service-intentions).
    Config {
        #[command(subcommand)]
        command: config::ConfigCmd,
    },
    /// Service mesh (Connect) settings.
    Connect {
        #[command(subcommand)]
        command: connect::ConnectCmd,
    },
    /// List the services in the catalog.
    Services {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List the nodes (servers and agents) and whether they are alive.
    Members {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let api = ApiClient::new(&cli.http_addr);
    let result = match cli.command {
        Command::Operator { command } => operator::run(&api, command).await,
        Command::Intention { command } => intention::run(&api, command).await,
        Command::Config { command } => config::run(&api, command).await,
        Command::Connect { command } => connect::run(&api, command).await,
        Command::Services { format } => catalog::services(&api, format).await,
        Command::Members { format } => catalog::members(&api, format).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}
