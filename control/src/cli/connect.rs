//! `meshctl connect ca roots | get-config | set-config | rotate`.

use std::path::PathBuf;

use clap::Subcommand;

use super::{ApiClient, CliError, Format, table};

#[derive(Subcommand)]
pub enum ConnectCmd {
    /// Certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCmd,
    },
}

#[derive(Subcommand)]
pub enum CaCmd {
    /// Show the trusted roots.
    Roots {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show the CA configuration.
    GetConfig,
    /// Replace the CA configuration from a JSON file (a root-key change rotates the root).
    SetConfig {
        #[arg(long)]
        config_file: PathBuf,
    },
    /// Rotate the root: a new root, cross-signed by the current one, becomes active.
    Rotate,
}

pub async fn run(api: &ApiClient, cmd: ConnectCmd) -> Result<i32, CliError> {
    let ConnectCmd::Ca { command } = cmd;
    match command {
        CaCmd::Roots { format } => {
            let v = api.get_json("/v1/connect/ca/roots").await?;
            table::print(&v, format, |v| {
                let rows = table::rows(&v["Roots"], |r| {
                    vec![
                        table::text(&r["ID"]),
                        r["Active"].as_bool().unwrap_or(false).to_string(),
                        table::text(&r["NotAfter"]),
                    ]
                });
                format!(
                    "Trust domain: {}\n{}",
                    v["TrustDomain"].as_str().unwrap_or_default(),
                    table::render(&["ID", "Active", "NotAfter"], &rows)
                )
            });
            Ok(0)
        }
        CaCmd::GetConfig => {
            let v = api.get_json("/v1/connect/ca/configuration").await?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(0)
        }
        CaCmd::SetConfig { config_file } => {
            let body = std::fs::read(&config_file).map_err(|e| {
                CliError::Usage(format!("cannot read {}: {e}", config_file.display()))
            })?;
            serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| {
                CliError::Usage(format!("{} is not valid JSON: {e}", config_file.display()))
            })?;
            api.call(
                http::Method::PUT,
                "/v1/connect/ca/configuration",
                Some(body),
            )
            .await?;
            println!("Configuration updated!");
            Ok(0)
        }
        CaCmd::Rotate => {
            let body = api
                .call(http::Method::PUT, "/v1/connect/ca/rotate", None)
                .await?;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            println!(
                "Root rotated; active root is now {}",
                v["ActiveRootID"].as_str().unwrap_or_default()
            );
            Ok(0)
        }
    }
}
