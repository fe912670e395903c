//! `meshctl config write | read | list | delete`: config entries over `/v1/config`, as
//! Consul's `consul config` verbs. Entries are JSON in Consul's shape (HCL is not supported:
//! no maintained Rust crate reads Consul's HCL dialect without surprises).
//!
//! `write` parses and validates the file locally with the same code the servers run, so a bad
//! entry is reported with its reason before anything is sent.

use clap::Subcommand;

use super::client::encode;
use super::{ApiClient, CliError};
use crate::config_entries::{ConfigEntry, ConfigKind};

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Create or update the entry in FILE (JSON; `-` reads stdin).
    Write {
        file: String,
        /// Check-and-set: 0 only creates; N only replaces an entry whose ModifyIndex is N.
        #[arg(long)]
        cas: Option<u64>,
    },
    /// Print one entry as JSON.
    Read {
        #[arg(long)]
        kind: String,
        #[arg(long)]
        name: String,
    },
    /// List the names of the entries of a kind.
    List {
        #[arg(long)]
        kind: String,
    },
    /// Delete one entry.
    Delete {
        #[arg(long)]
        kind: String,
        #[arg(long)]
        name: String,
        /// Check-and-set: only delete if the entry's ModifyIndex is N.
        #[arg(long)]
        cas: Option<u64>,
    },
}

fn kind(k: &str) -> Result<ConfigKind, CliError> {
    k.parse::<ConfigKind>()
        .map_err(|e| CliError::Usage(e.to_string()))
}

fn cas_query(cas: Option<u64>) -> String {
    cas.map(|c| format!("?cas={c}")).unwrap_or_default()
}

fn read_file(file: &str) -> Result<Vec<u8>, CliError> {
    if file == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| CliError::Usage(format!("reading stdin: {e}")))?;
        Ok(buf)
    } else {
        std::fs::read(file).map_err(|e| CliError::Usage(format!("reading {file}: {e}")))
    }
}

pub async fn run(api: &ApiClient, cmd: ConfigCmd) -> Result<i32, CliError> {
    match cmd {
        ConfigCmd::Write { file, cas } => {
            let body = read_file(&file)?;
            let entry = ConfigEntry::from_json(&body)
                .map_err(|e| CliError::Usage(format!("invalid config entry in {file}: {e}")))?;
            let resp = api
                .call(
                    http::Method::PUT,
                    &format!("/v1/config{}", cas_query(cas)),
                    Some(body),
                )
                .await?;
            if resp.as_ref().trim_ascii() == b"true" {
                println!("Config entry written: {}/{}", entry.kind(), entry.name());
                Ok(0)
            } else {
                eprintln!(
                    "Config entry not updated: {}/{} (check-and-set index did not match)",
                    entry.kind(),
                    entry.name()
                );
                Ok(1)
            }
        }
        ConfigCmd::Read { kind: k, name } => {
            let k = kind(&k)?;
            let v = api
                .get_json(&format!("/v1/config/{k}/{}", encode(&name)))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(0)
        }
        ConfigCmd::List { kind: k } => {
            let k = kind(&k)?;
            let v = api.get_json(&format!("/v1/config/{k}")).await?;
            for e in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
                println!("{}", e["Name"].as_str().unwrap_or_default());
            }
            Ok(0)
        }
        ConfigCmd::Delete { kind: k, name, cas } => {
            let k = kind(&k)?;
            let resp = api
                .call(
                    http::Method::DELETE,
                    &format!("/v1/config/{k}/{}{}", encode(&name), cas_query(cas)),
                    None,
                )
                .await?;
            if resp.as_ref().trim_ascii() == b"false" {
                eprintln!(
                    "Config entry not deleted: {k}/{name} (check-and-set index did not match)"
                );
                Ok(1)
            } else {
                println!("Config entry deleted: {k}/{name}");
                Ok(0)
            }
        }
    }
}
