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
    ///
    /// With any `--http-*` flag, evaluates one HTTP request as the proxy does: the path and
    /// headers are first normalized per the `mesh` config entry's
    /// `HTTP.Incoming.RequestNormalization` (a request the proxy would refuse with 400 is
    /// reported as such, exit 2), then decided with the L7 matcher
    /// (`IntentionSet::decide_http`) over the intentions the agent serves to proxies; prints
    /// the normalized path and the rule that decided.
    Check {
        source: String,
        destination: String,
        /// Request method (default GET when another --http-* flag is given).
        #[arg(long)]
        http_method: Option<String>,
        /// Request path (default `/`); a query string is ignored, as by the proxy.
        #[arg(long)]
        http_path: Option<String>,
        /// Request header `Name=Value` (or `Name:Value`); repeat for more.
        #[arg(long = "http-header")]
        http_header: Vec<String>,
    },
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
            http_method,
            http_path,
            http_header,
        } if http_method.is_some() || http_path.is_some() || !http_header.is_empty() => {
            let req = HttpCheck::parse(http_method, http_path, &http_header)?;
            check_http(api, &source, &destination, &req).await
        }
        IntentionCmd::Check {
            source,
            destination,
            ..
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

/// The request of `intention check --http-*`, owned so `HttpRequest` can borrow it.
struct HttpCheck {
    method: http::Method,
    path: String,
    headers: http::HeaderMap,
}

impl HttpCheck {
    fn parse(
        method: Option<String>,
        path: Option<String>,
        headers: &[String],
    ) -> Result<Self, CliError> {
        let method = method.unwrap_or_else(|| "GET".to_string());
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|_| CliError::Usage(format!("invalid --http-method {method:?}")))?;
        let mut path = path.unwrap_or_else(|| "/".to_string());
        if let Some(q) = path.find('?') {
            path.truncate(q);
        }
        if !path.starts_with('/') {
            return Err(CliError::Usage(format!(
                "--http-path must start with '/' (got {path:?})"
            )));
        }
        let mut map = http::HeaderMap::new();
        for h in headers {
            let (k, v) = h
                .split_once('=')
                .or_else(|| h.split_once(':'))
                .ok_or_else(|| {
                    CliError::Usage(format!("--http-header must be Name=Value (got {h:?})"))
                })?;
            let name = http::HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| CliError::Usage(format!("invalid header name {k:?}")))?;
            let value = http::HeaderValue::from_str(v.trim_start())
                .map_err(|_| CliError::Usage(format!("invalid header value {v:?}")))?;
            map.append(name, value);
        }
        Ok(Self {
            method,
            path,
            headers: map,
        })
    }
}

/// The request normalization in force: the `mesh` entry's, or Consul's defaults without one.
async fn request_normalization(
    api: &ApiClient,
) -> Result<crate::intentions::normalize::RequestNormalization, CliError> {
    let path = "/v1/config/mesh/mesh";
    match api.call(http::Method::GET, path, None).await {
        Ok(body) => {
            let decode_error = |message: String| CliError::Decode {
                path: path.to_string(),
                message,
            };
            match serde_json::from_slice(&body).map_err(|e| decode_error(e.to_string()))? {
                crate::config_entries::ConfigEntry::Mesh(mesh) => Ok(mesh.request_normalization()),
                other => Err(decode_error(format!(
                    "expected Kind mesh, got {}",
                    other.kind()
                ))),
            }
        }
        Err(CliError::Status { status: 404, .. }) => Ok(Default::default()),
        Err(e) => Err(e),
    }
}

async fn check_http(
    api: &ApiClient,
    source: &str,
    destination: &str,
    req: &HttpCheck,
) -> Result<i32, CliError> {
    use crate::intentions::normalize::{PathOutcome, normalize_request};
    let opts = request_normalization(api).await?;
    let mut headers = req.headers.clone();
    let outcome = match normalize_request(&req.path, &mut headers, &opts) {
        Ok(o) => o,
        Err(e) => {
            println!("Denied");
            println!("Reason: the proxy refuses this request with 400 before any intention: {e}");
            println!("Normalization: {opts}");
            return Ok(2);
        }
    };
    let path = format!("/v1/agent/connect/intentions/{}", encode(destination));
    let body = api.call(http::Method::GET, &path, None).await?;
    let feed: crate::wire::IntentionsSnapshot =
        serde_json::from_slice(&body).map_err(|e| CliError::Decode {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let (set, trust_domain) = feed.into_parts();
    // The one decider the proxy runs, for a caller of this mesh's trust domain (the
    // datacenter is not part of any decision).
    let peer = crate::spiffe::SpiffeId::service(&trust_domain, "dc1", source);
    let d = crate::authorize::authorize(
        &set,
        &trust_domain,
        &peer,
        destination,
        Some(&crate::intentions::HttpRequest {
            method: &req.method,
            path: outcome.path(),
            headers: &headers,
        }),
    );
    println!("{}", if d.allowed { "Allowed" } else { "Denied" });
    println!("Reason: {}", d.reason);
    if outcome.path() != req.path {
        println!("Path: {:?} normalized to {:?}", req.path, outcome.path());
    } else {
        println!("Path: {:?} (already normal)", req.path);
    }
    if let PathOutcome::Redirect(to) = &outcome {
        println!("Redirect: the proxy answers 307 to {to:?}; the decision above is for it");
    }
    println!("Normalization: {opts}");
    Ok(if d.allowed { 0 } else { 2 })
}
