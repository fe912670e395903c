//! `meshctl intention create | get | delete | list | check | match`, as Consul's CLI.

use clap::Subcommand;
use serde_json::json;

use super::{ApiClient, CliError, Format, client::encode, table};

#[derive(Subcommand)]
pub enum IntentionCmd {
    /// Create an intention SRC -> DST (deny unless --allow).
    Create {
        #[arg(long, conflicts_with = "deny")]
        allow: bool,
        #[arg(long)]
        deny: bool,
        /// Replace an existing intention for the same pair instead of failing.
        #[arg(long)]
        replace: bool,
        #[arg(long, default_value = "")]
        description: String,
        source: String,
        destination: String,
    },
    /// Show the intention SRC -> DST.
    Get {
        source: String,
        destination: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Delete the intention SRC -> DST.
    Delete { source: String, destination: String },
    /// List all intentions, highest precedence first.
    List {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Would SRC be allowed to connect to DST? Exit 0 if allowed, 2 if denied.
    Check { source: String, destination: String },
    /// Intentions that match a source or destination, in evaluation order.
    Match {
        #[arg(long, conflicts_with = "destination")]
        source: bool,
        #[arg(long)]
        destination: bool,
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

fn pair(source: &str, destination: &str) -> String {
    format!(
        "source={}&destination={}",
        encode(source),
        encode(destination)
    )
}

fn rows(list: &[serde_json::Value]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            vec![
                i["SourceName"].as_str().unwrap_or_default().to_string(),
                i["DestinationName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                i["Action"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| "(L7 permissions)".to_string()),
                i["Precedence"].as_u64().unwrap_or(0).to_string(),
                i["Description"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    table::render(
        &[
            "Source",
            "Destination",
            "Action",
            "Precedence",
            "Description",
        ],
        &rows,
    )
}

pub async fn run(api: &ApiClient, cmd: IntentionCmd) -> Result<i32, CliError> {
    match cmd {
        IntentionCmd::Create {
            allow,
            deny,
            replace,
            description,
            source,
            destination,
        } => {
            let _ = deny;
            let action = if allow { "allow" } else { "deny" };
            let body = json!({
                "SourceName": source,
                "DestinationName": destination,
                "Action": action,
                "Description": description,
            });
            let body = serde_json::to_vec(&body).unwrap_or_default();
            if replace {
                api.call(
                    http::Method::PUT,
                    &format!(
                        "/v1/connect/intentions/exact?{}",
                        pair(&source, &destination)
                    ),
                    Some(body),
                )
                .await?;
            } else {
                api.call(http::Method::POST, "/v1/connect/intentions", Some(body))
                    .await?;
            }
            println!("Created: {source} => {destination} ({action})");
            Ok(0)
        }
        IntentionCmd::Get {
            source,
            destination,
            format,
        } => {
            let v = api
                .get_json(&format!(
                    "/v1/connect/intentions/exact?{}",
                    pair(&source, &destination)
                ))
                .await?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                let fields = [
                    "SourceName",
                    "DestinationName",
                    "Action",
                    "Precedence",
                    "Description",
                    "CreateIndex",
                    "ModifyIndex",
                ];
                let rows: Vec<Vec<String>> = fields
                    .iter()
                    .map(|f| {
                        let val = match &v[*f] {
                            serde_json::Value::String(s) => s.clone(),
                            serde_json::Value::Null => String::new(),
                            other => other.to_string(),
                        };
                        vec![format!("{f}:"), val]
                    })
                    .collect();
                println!("{}", table::render(&["Field", "Value"], &rows));
            }
            Ok(0)
        }
        IntentionCmd::Delete {
            source,
            destination,
        } => {
            api.call(
                http::Method::DELETE,
                &format!(
                    "/v1/connect/intentions/exact?{}",
                    pair(&source, &destination)
                ),
                None,
            )
            .await?;
            println!("Intention deleted.");
            Ok(0)
        }
        IntentionCmd::List { format } => {
            let v = api.get_json("/v1/connect/intentions").await?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("{}", rows(v.as_array().map(Vec::as_slice).unwrap_or(&[])));
            }
            Ok(0)
        }
        IntentionCmd::Check {
            source,
            destination,
        } => {
            let v = api
                .get_json(&format!(
                    "/v1/connect/intentions/check?{}",
                    pair(&source, &destination)
                ))
                .await?;
            if v["Allowed"].as_bool() == Some(true) {
                println!("Allowed");
                Ok(0)
            } else {
                println!("Denied");
                Ok(2)
            }
        }
        IntentionCmd::Match {
            source,
            destination,
            name,
            format,
        } => {
            let _ = destination;
            let by = if source { "source" } else { "destination" };
            let v = api
                .get_json(&format!(
                    "/v1/connect/intentions/match?by={by}&name={}",
                    encode(&name)
                ))
                .await?;
            let list = v[&name].as_array().cloned().unwrap_or_default();
            if format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else {
                println!("{}", rows(&list));
            }
            Ok(0)
        }
    }
}
