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
    /// Would SRC be allowed to connect to DST, and what decides? Exit 0 if allowed, 2 if denied.
    ///
    /// Decides with the proxy's own decider over the intentions, default policy and trust
    /// domain the agent serves to DST's proxy (`/v1/agent/connect/intentions/DST`), and prints
    /// `Allowed` or `Denied`, then the reason in the words the proxy logs, the rule that
    /// decided (the intention with its precedence and ID, the permission index inside it, or
    /// the default policy) and the trust-domain and namespace checks. SRC is a service name
    /// (in the mesh's trust domain, namespace `default`) or a whole SPIFFE ID
    /// (`spiffe://<td>/ns/<ns>/dc/<dc>/svc/<name>`) to check another namespace or trust domain.
    /// Against an address that serves no agent API, or with a token that cannot
    /// read DST's intentions, it falls back to the server's `/v1/connect/intentions/check` and
    /// prints only `Allowed`/`Denied`, saying why on stderr.
    ///
    /// With any `--http-*` flag, evaluates one HTTP request as the proxy does: the path and
    /// headers are first normalized per the `mesh` config entry's
    /// `HTTP.Incoming.RequestNormalization` (a request the proxy would refuse with 400 is
    /// reported as such, exit 2), then decided with the L7 matcher; prints the normalized path
    /// too.
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
        /// `json`: one object `{Allowed, Reason, Decided: {Kind, Intention, PermissionIndex,
        /// DefaultPolicy}, Checks: [{Name, Passed, Detail}]}` (see `mesh_policy::explanation`).
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Intentions that match a source or destination, in evaluation order.
    ///
    /// With `--explain`, lists every intention in evaluation order (precedence, highest first)
    /// and why each does or does not match NAME; with `--peer OTHER` too, why each did or did
    /// not decide the pair (`-destination db --peer web` explains web => db: `matched:
    /// decides`, `not reached: ...`, `not matched: source is web`).
    Match {
        #[arg(long, conflicts_with = "destination")]
        source: bool,
        #[arg(long)]
        destination: bool,
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Show every intention considered and why it did or did not match.
        #[arg(long)]
        explain: bool,
        /// With --explain: the other side of the pair to explain the decision for.
        #[arg(long, requires = "explain")]
        peer: Option<String>,
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
            format,
        } => {
            let http = http_method.is_some() || http_path.is_some() || !http_header.is_empty();
            let req = http
                .then(|| HttpCheck::parse(http_method, http_path, &http_header))
                .transpose()?;
            check(api, &source, &destination, req.as_ref(), format).await
        }
        IntentionCmd::Match {
            source,
            name,
            format,
            explain: true,
            peer,
            ..
        } => explain_match(api, source, &name, peer.as_deref(), format).await,
        IntentionCmd::Match {
            source,
            name,
            format,
            ..
        } => {
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

/// `GET path` decoded as `T`.
async fn get_as<T: serde::de::DeserializeOwned>(
    api: &ApiClient,
    path: &str,
) -> Result<T, CliError> {
    let body = api.call(http::Method::GET, path, None).await?;
    serde_json::from_slice(&body).map_err(|e| CliError::Decode {
        path: path.to_string(),
        message: e.to_string(),
    })
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn exit_code(allowed: bool) -> i32 {
    if allowed { 0 } else { 2 }
}

/// The caller: a SPIFFE ID as given, or service `source` of this mesh (namespace `default`;
/// the datacenter is not part of any decision).
fn peer_of(source: &str, trust_domain: &str) -> Result<crate::spiffe::SpiffeId, CliError> {
    use crate::spiffe::SpiffeId;
    if source.starts_with("spiffe://") {
        SpiffeId::parse(source).map_err(|e| {
            CliError::Usage(format!(
                "SRC {source:?} is not a SPIFFE service ID (spiffe://<trust domain>/ns/<ns>/dc/<dc>/svc/<name>): {e}"
            ))
        })
    } else {
        Ok(SpiffeId::service(trust_domain, "dc1", source))
    }
}

/// `intention check`: the decision of the proxy's decider with its explanation.
async fn check(
    api: &ApiClient,
    source: &str,
    destination: &str,
    req: Option<&HttpCheck>,
    format: Format,
) -> Result<i32, CliError> {
    use crate::intentions::normalize::{PathOutcome, normalize_request};
    // Normalize first: the proxy refuses a malformed request before any intention.
    let normalized = match req {
        None => None,
        Some(req) => {
            let opts = request_normalization(api).await?;
            let mut headers = req.headers.clone();
            match normalize_request(&req.path, &mut headers, &opts) {
                Ok(outcome) => Some((outcome, headers, opts)),
                Err(e) => {
                    let reason = format!(
                        "the proxy refuses this request with 400 before any intention: {e}"
                    );
                    if format == Format::Json {
                        print_json(&json!({
                            "Allowed": false, "Reason": reason, "Decided": null, "Checks": [],
                        }));
                    } else {
                        println!("Denied\nReason: {reason}\nNormalization: {opts}");
                    }
                    return Ok(2);
                }
            }
        }
    };
    let path = format!("/v1/agent/connect/intentions/{}", encode(destination));
    let feed: crate::wire::IntentionsSnapshot = match get_as(api, &path).await {
        Ok(feed) => feed,
        Err(CliError::Status { status, .. }) if req.is_none() && matches!(status, 403 | 404) => {
            return check_without_explanation(api, source, destination, status, format).await;
        }
        Err(e) => return Err(e),
    };
    let (set, trust_domain) = feed.into_parts();
    let peer = peer_of(source, &trust_domain)?;
    let request = match (req, &normalized) {
        (Some(req), Some((outcome, headers, _))) => Some(crate::intentions::HttpRequest {
            method: &req.method,
            path: outcome.path(),
            headers,
        }),
        _ => None,
    };
    let e = crate::explanation::explain(&set, &trust_domain, &peer, destination, request.as_ref());
    let (Some(req), Some((outcome, _, opts))) = (req, &normalized) else {
        if format == Format::Json {
            print_json(&e);
        } else {
            println!("{e}");
        }
        return Ok(exit_code(e.allowed));
    };
    if format == Format::Json {
        let mut v = serde_json::to_value(&e).unwrap_or_default();
        v["Path"] = json!(outcome.path());
        print_json(&v);
        return Ok(exit_code(e.allowed));
    }
    println!("{e}");
    if outcome.path() != req.path {
        println!("Path: {:?} normalized to {:?}", req.path, outcome.path());
    } else {
        println!("Path: {:?} (already normal)", req.path);
    }
    if let PathOutcome::Redirect(to) = outcome {
        println!("Redirect: the proxy answers 307 to {to:?}; the decision above is for it");
    }
    println!("Normalization: {opts}");
    Ok(exit_code(e.allowed))
}

/// `intention check` where the agent's intentions feed cannot be read (`status` 404: not an
/// agent; 403: the token may not read the intentions): the server's Consul-shaped answer
/// alone, and why there is no explanation on stderr.
async fn check_without_explanation(
    api: &ApiClient,
    source: &str,
    destination: &str,
    status: u16,
    format: Format,
) -> Result<i32, CliError> {
    let v = api
        .get_json(&format!(
            "/v1/connect/intentions/check?{}",
            pair(source, destination)
        ))
        .await?;
    let allowed = v["Allowed"].as_bool() == Some(true);
    let why = if status == 403 {
        "the token may not read the intentions of the destination (intentions:read)"
    } else {
        "this address serves no agent API (/v1/agent/connect/intentions); point --http-addr at an agent"
    };
    eprintln!("no explanation: {why}");
    if format == Format::Json {
        print_json(&json!({ "Allowed": allowed }));
    } else {
        println!("{}", if allowed { "Allowed" } else { "Denied" });
    }
    Ok(exit_code(allowed))
}

/// One line of `intention match --explain -format=json`.
#[derive(serde::Serialize)]
struct ConsideredRow<'a> {
    #[serde(flatten)]
    intention: crate::explanation::IntentionRef,
    #[serde(flatten)]
    outcome: &'a crate::intentions::Outcome,
}

/// `intention match --explain`: every intention, in evaluation order, and what became of it.
async fn explain_match(
    api: &ApiClient,
    by_source: bool,
    name: &str,
    peer: Option<&str>,
    format: Format,
) -> Result<i32, CliError> {
    use crate::intentions::{DEFAULT_NAMESPACE as NS, IntentionSet, Outcome};
    let all: Vec<crate::model::Intention> = get_as(api, "/v1/connect/intentions").await?;
    // The default policy plays no part in which intention matches.
    let set = IntentionSet::new(all, Default::default());
    let considered = match peer {
        Some(peer) => {
            let (src, dst) = if by_source {
                (name, peer)
            } else {
                (peer, name)
            };
            set.explain_ns(NS, src, NS, dst)
        }
        None => set.explain_side(by_source, NS, name),
    };
    if format == Format::Json {
        let rows: Vec<ConsideredRow<'_>> = considered
            .iter()
            .map(|c| ConsideredRow {
                intention: crate::explanation::IntentionRef::of(c.intention),
                outcome: &c.outcome,
            })
            .collect();
        print_json(&rows);
        return Ok(0);
    }
    for c in &considered {
        println!("{c}");
    }
    if considered.is_empty() {
        println!("No intentions.");
    }
    if let Some(peer) = peer
        && !considered.iter().any(|c| c.outcome == Outcome::Decided)
    {
        let (src, dst) = if by_source {
            (name, peer)
        } else {
            (peer, name)
        };
        println!(
            "No intention matched {src:?} => {dst:?}: the default policy decides (`meshctl intention check {src} {dst}` names it)"
        );
    }
    Ok(0)
}
