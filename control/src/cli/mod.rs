//! `meshctl`: the operator CLI. Consul-like verbs over the HTTP API of the local agent or a
//! server (`--http-addr`, or `MESH_HTTP_ADDR`). One module per verb group.

mod acl;
mod catalog;
pub mod client;
mod config;
mod connect;
mod intention;
mod operator;
mod table;
mod tls;

use std::collections::BTreeSet;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

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
    /// ACL token sent with every request (`X-Consul-Token`); never printed.
    #[arg(long, env = "MESH_HTTP_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
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
    #[command(flatten)]
    Api(ApiCommand),
    /// The control plane's CA and certificates, as files here (no server is contacted).
    Tls {
        #[command(subcommand)]
        command: tls::TlsCmd,
    },
    /// Print a new encryption key for `meshd --encrypt-key-file` (base64 of 32 random bytes),
    /// as `consul keygen` does; every server of a cluster needs the same one.
    Keygen {
        /// Write the key to this new file (mode 0600; never over an existing file) instead of
        /// printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
}

/// The commands that talk to an agent's or server's HTTP API.
#[derive(Subcommand)]
pub enum ApiCommand {
    /// ACL tokens, policies and roles (`acl bootstrap` first).
    Acl {
        #[command(subcommand)]
        command: acl::AclCmd,
    },
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

/// The command line with Consul's single-dash long flags (`-policy-name web`,
/// `-format=json`) spelled as clap's (`--policy-name`), so commands copied from Consul's docs
/// work. Only a word that is one of `meshctl`'s long flag names is rewritten; anything after a
/// `--` is left alone.
pub fn consul_style_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    fn longs(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        out.extend(
            cmd.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_string)),
        );
        for sub in cmd.get_subcommands() {
            longs(sub, out);
        }
    }
    let mut known = BTreeSet::new();
    longs(&Cli::command(), &mut known);
    let mut rest_is_positional = false;
    args.into_iter()
        .map(|a| {
            if a == "--" {
                rest_is_positional = true;
            }
            let name = a.strip_prefix('-').filter(|n| !n.starts_with('-'));
            match name {
                Some(n) if !rest_is_positional => {
                    let flag = n.split_once('=').map_or(n, |(f, _)| f);
                    if known.contains(flag) {
                        format!("-{a}")
                    } else {
                        a
                    }
                }
                _ => a,
            }
        })
        .collect()
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        // Local files only: no API client, so a bad address or token cannot stop it.
        Command::Tls { command } => tls::run(command).map_err(CliError::from),
        Command::Keygen { out } => keygen(out.as_deref()),
        Command::Api(command) => match ApiClient::new(&cli.http_addr, cli.token.as_deref()) {
            Ok(api) => run_api(&api, command).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}

/// `meshctl keygen [-out FILE]`.
fn keygen(out: Option<&std::path::Path>) -> Result<i32, CliError> {
    use crate::seal::key_file;
    match out {
        Some(path) => {
            key_file::write_new(path)?;
            println!("==> Saved {}", path.display());
        }
        None => println!("{}", key_file::generate()?.as_str()),
    }
    Ok(0)
}

async fn run_api(api: &ApiClient, command: ApiCommand) -> Result<i32, CliError> {
    match command {
        ApiCommand::Acl { command } => acl::run(api, command).await,
        ApiCommand::Operator { command } => operator::run(api, command).await,
        ApiCommand::Intention { command } => intention::run(api, command).await,
        ApiCommand::Config { command } => config::run(api, command).await,
        ApiCommand::Connect { command } => connect::run(api, command).await,
        ApiCommand::Services { format } => catalog::services(api, format).await,
        ApiCommand::Members { format } => catalog::members(api, format).await,
    }
}

#[cfg(test)]
mod tests {
    use super::consul_style_args;

    #[test]
    fn consul_single_dash_flags_are_accepted() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            consul_style_args(args(&[
                "meshctl",
                "acl",
                "token",
                "create",
                "-policy-name",
                "ops",
                "-format=json",
                "--description",
                "-x",
                "-unknown-flag",
                "--",
                "-policy-name"
            ])),
            args(&[
                "meshctl",
                "acl",
                "token",
                "create",
                "--policy-name",
                "ops",
                "--format=json",
                "--description",
                "-x",
                "-unknown-flag",
                "--",
                "-policy-name"
            ])
        );
    }
}
