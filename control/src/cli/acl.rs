//! `meshctl acl bootstrap | token … | policy … | role …`, as Consul's `consul acl` commands:
//! the same verbs and flags over the same `/v1/acl/*` HTTP API, printed in Consul's layout
//! (`--format json` prints the API's JSON instead).
//!
//! The caller's token comes from `--token` / `MESH_HTTP_TOKEN` (see [`super::Cli`]); nothing
//! here prints a secret except the token a command has just created or was asked to read.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{ApiClient, CliError, Format, client::encode, table};

/// `meshctl acl …`.
#[derive(Subcommand)]
pub enum AclCmd {
    /// Bootstrap the ACL system: create the initial management token (once per cluster).
    Bootstrap {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Manage tokens.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Manage policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCmd,
    },
    /// Manage roles.
    Role {
        #[command(subcommand)]
        command: RoleCmd,
    },
}

/// What a token or role is granted (the flags `token create/update` and `role create/update`
/// share).
#[derive(Args, Default)]
pub struct Grants {
    /// ID of a policy to link; repeat for more.
    #[arg(long = "policy-id")]
    policy_id: Vec<String>,
    /// Name of a policy to link; repeat for more.
    #[arg(long = "policy-name")]
    policy_name: Vec<String>,
    /// Service identity `NAME[:DC1,DC2]`; repeat for more.
    #[arg(long = "service-identity")]
    service_identity: Vec<String>,
    /// Node identity `NODE:DC`; repeat for more.
    #[arg(long = "node-identity")]
    node_identity: Vec<String>,
}

/// `list` of tokens, policies or roles: only the output format.
#[derive(Args)]
pub struct Listing {
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// `read` of a policy or a role: by `--id` or `--name`.
#[derive(Args)]
pub struct Lookup {
    #[arg(long, required_unless_present = "name")]
    id: Option<String>,
    #[arg(long, conflicts_with = "id")]
    name: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// `meshctl acl token …`.
#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token.
    Create {
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        grants: Grants,
        /// ID of a role to link; repeat for more.
        #[arg(long = "role-id")]
        role_id: Vec<String>,
        /// Name of a role to link; repeat for more.
        #[arg(long = "role-name")]
        role_name: Vec<String>,
        /// A token valid only in this datacenter.
        #[arg(long)]
        local: bool,
        /// Expire the token after this long (e.g. `1h`).
        #[arg(long = "expires-ttl")]
        expires_ttl: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Read a token by AccessorID, or the caller's own with `--self`.
    Read {
        #[arg(long, required_unless_present = "self_")]
        id: Option<String>,
        #[arg(long = "self", conflicts_with = "id")]
        self_: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List tokens (SecretIDs hidden unless the caller may write ACLs).
    List(Listing),
    /// Update a token: the fields given replace the token's.
    Update {
        #[arg(long)]
        id: String,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        grants: Grants,
        #[arg(long = "role-id")]
        role_id: Vec<String>,
        #[arg(long = "role-name")]
        role_name: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Delete a token.
    Delete {
        #[arg(long)]
        id: String,
    },
}

/// `meshctl acl policy …`.
#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Create a policy from rules (HCL or JSON; `@FILE` reads them from a file).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, default_value = "")]
        rules: String,
        /// Datacenter the policy applies in; repeat for more (default: all).
        #[arg(long = "valid-datacenter")]
        valid_datacenter: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Read a policy by ID or name.
    Read(Lookup),
    /// List policies.
    List(Listing),
    /// Update a policy: the fields given replace the policy's.
    Update {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        rules: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Delete a policy by ID or name.
    Delete {
        #[arg(long, required_unless_present = "name")]
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        name: Option<String>,
    },
}

/// `meshctl acl role …`.
#[derive(Subcommand)]
pub enum RoleCmd {
    /// Create a role.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        grants: Grants,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Read a role by ID or name.
    Read(Lookup),
    /// List roles.
    List(Listing),
    /// Update a role: the fields given replace the role's.
    Update {
        #[arg(long)]
        id: String,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        grants: Grants,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Delete a role by ID.
    Delete {
        #[arg(long)]
        id: String,
    },
}

/// Runs `meshctl acl …`; the exit code.
pub async fn run(api: &ApiClient, cmd: AclCmd) -> Result<i32, CliError> {
    match cmd {
        AclCmd::Bootstrap { format } => {
            let v = put(api, "/v1/acl/bootstrap", json!({})).await?;
            table::print(&v, format, token_text);
        }
        AclCmd::Token { command } => token(api, command).await?,
        AclCmd::Policy { command } => policy(api, command).await?,
        AclCmd::Role { command } => role(api, command).await?,
    }
    Ok(0)
}

async fn token(api: &ApiClient, cmd: TokenCmd) -> Result<(), CliError> {
    match cmd {
        TokenCmd::Create {
            description,
            grants,
            role_id,
            role_name,
            local,
            expires_ttl,
            format,
        } => {
            let mut body = json!({ "Description": description, "Local": local });
            grants.apply(&mut body)?;
            set_links(&mut body, "Roles", &role_id, &role_name);
            if let Some(ttl) = expires_ttl {
                body["ExpirationTTL"] = json!(ttl);
            }
            let v = put(api, "/v1/acl/token", body).await?;
            table::print(&v, format, token_text);
        }
        TokenCmd::Read { id, self_, format } => {
            let path = match (self_, id) {
                (true, _) | (false, None) => "/v1/acl/token/self".to_string(),
                (false, Some(id)) => format!("/v1/acl/token/{}", encode(&id)),
            };
            let v = get(api, &path).await?;
            table::print(&v, format, token_text);
        }
        TokenCmd::List(l) => list(api, "/v1/acl/tokens", l.format, token_text).await?,
        TokenCmd::Update {
            id,
            description,
            grants,
            role_id,
            role_name,
            format,
        } => {
            update(api, "token", &id, format, token_text, |body| {
                set_some(body, "Description", description);
                grants.apply(body)?;
                set_links(body, "Roles", &role_id, &role_name);
                Ok(())
            })
            .await?;
        }
        TokenCmd::Delete { id } => {
            delete(api, &format!("/v1/acl/token/{}", encode(&id))).await?;
            println!("Token {id:?} deleted successfully");
        }
    }
    Ok(())
}

async fn policy(api: &ApiClient, cmd: PolicyCmd) -> Result<(), CliError> {
    match cmd {
        PolicyCmd::Create {
            name,
            description,
            rules,
            valid_datacenter,
            format,
        } => {
            let body = json!({
                "Name": name,
                "Description": description,
                "Rules": rules_text(&rules)?,
                "Datacenters": valid_datacenter,
            });
            let v = put(api, "/v1/acl/policy", body).await?;
            table::print(&v, format, policy_text);
        }
        PolicyCmd::Read(key) => read(api, "policy", key, policy_text).await?,
        PolicyCmd::List(l) => list(api, "/v1/acl/policies", l.format, policy_text).await?,
        PolicyCmd::Update {
            id,
            name,
            description,
            rules,
            format,
        } => {
            let rules = rules.as_deref().map(rules_text).transpose()?;
            update(api, "policy", &id, format, policy_text, |body| {
                set_some(body, "Name", name);
                set_some(body, "Description", description);
                set_some(body, "Rules", rules);
                Ok(())
            })
            .await?;
        }
        PolicyCmd::Delete { id, name } => {
            // Consul deletes by ID: a name is looked up first.
            let id = match id {
                Some(id) => id,
                None => {
                    let v = get(api, &by_id_or_name("policy", None, name)).await?;
                    table::text(&v["ID"])
                }
            };
            delete(api, &format!("/v1/acl/policy/{}", encode(&id))).await?;
            println!("Policy {id:?} deleted successfully");
        }
    }
    Ok(())
}

async fn role(api: &ApiClient, cmd: RoleCmd) -> Result<(), CliError> {
    match cmd {
        RoleCmd::Create {
            name,
            description,
            grants,
            format,
        } => {
            let mut body = json!({ "Name": name, "Description": description });
            grants.apply(&mut body)?;
            let v = put(api, "/v1/acl/role", body).await?;
            table::print(&v, format, role_text);
        }
        RoleCmd::Read(key) => read(api, "role", key, role_text).await?,
        RoleCmd::List(l) => list(api, "/v1/acl/roles", l.format, role_text).await?,
        RoleCmd::Update {
            id,
            description,
            grants,
            format,
        } => {
            update(api, "role", &id, format, role_text, |body| {
                set_some(body, "Description", description);
                grants.apply(body)
            })
            .await?;
        }
        RoleCmd::Delete { id } => {
            delete(api, &format!("/v1/acl/role/{}", encode(&id))).await?;
            println!("Role {id:?} deleted successfully");
        }
    }
    Ok(())
}

impl Grants {
    /// Sets the policies and identities given on the command line into `body` (fields not
    /// given are left as they are).
    fn apply(self, body: &mut Value) -> Result<(), CliError> {
        set_links(body, "Policies", &self.policy_id, &self.policy_name);
        if !self.service_identity.is_empty() {
            let ids: Vec<Value> = self
                .service_identity
                .iter()
                .map(|s| {
                    let (name, dcs) = s.split_once(':').unwrap_or((s, ""));
                    let dcs: Vec<&str> = dcs.split(',').filter(|d| !d.is_empty()).collect();
                    json!({ "ServiceName": name, "Datacenters": dcs })
                })
                .collect();
            body["ServiceIdentities"] = json!(ids);
        }
        if !self.node_identity.is_empty() {
            let ids = self
                .node_identity
                .iter()
                .map(|n| match n.split_once(':') {
                    Some((node, dc)) if !node.is_empty() && !dc.is_empty() => {
                        Ok(json!({ "NodeName": node, "Datacenter": dc }))
                    }
                    _ => Err(CliError::Usage(format!(
                        "--node-identity {n:?}: expected NODE:DATACENTER"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            body["NodeIdentities"] = json!(ids);
        }
        Ok(())
    }
}

/// Sets `field` to links by ID and by name, when any is given.
fn set_links(body: &mut Value, field: &str, ids: &[String], names: &[String]) {
    if ids.is_empty() && names.is_empty() {
        return;
    }
    let links: Vec<Value> = ids
        .iter()
        .map(|id| json!({ "ID": id }))
        .chain(names.iter().map(|n| json!({ "Name": n })))
        .collect();
    body[field] = json!(links);
}

/// The rules text of `--rules`: the value itself, or with `@FILE` the file's content.
fn rules_text(arg: &str) -> Result<String, CliError> {
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("cannot read rules from {path:?}: {e}"))),
        None => Ok(arg.to_string()),
    }
}

/// `acl … list`: the list at `path`, each entry in `text`'s layout.
async fn list(
    api: &ApiClient,
    path: &str,
    format: Format,
    text: fn(&Value) -> String,
) -> Result<(), CliError> {
    let v = get(api, path).await?;
    table::print(&v, format, |v| list_text(v, text));
    Ok(())
}

/// `acl … update`: reads the object, lets `change` set what the flags give, writes it back.
async fn update(
    api: &ApiClient,
    kind: &str,
    id: &str,
    format: Format,
    text: fn(&Value) -> String,
    change: impl FnOnce(&mut Value) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let path = format!("/v1/acl/{kind}/{}", encode(id));
    let mut body = get(api, &path).await?;
    change(&mut body)?;
    let v = put(api, &path, body).await?;
    table::print(&v, format, text);
    Ok(())
}

/// Sets `field` when the flag was given.
fn set_some(body: &mut Value, field: &str, value: Option<String>) {
    if let Some(v) = value {
        body[field] = json!(v);
    }
}

/// `acl policy read` / `acl role read`.
async fn read(
    api: &ApiClient,
    kind: &str,
    key: Lookup,
    text: fn(&Value) -> String,
) -> Result<(), CliError> {
    let v = get(api, &by_id_or_name(kind, key.id, key.name)).await?;
    table::print(&v, key.format, text);
    Ok(())
}

fn by_id_or_name(kind: &str, id: Option<String>, name: Option<String>) -> String {
    match (id, name) {
        (Some(id), _) => format!("/v1/acl/{kind}/{}", encode(&id)),
        (None, name) => format!("/v1/acl/{kind}/name/{}", encode(&name.unwrap_or_default())),
    }
}

async fn get(api: &ApiClient, path: &str) -> Result<Value, CliError> {
    let body = api.call(http::Method::GET, path, None).await?;
    decode(path, &body)
}

async fn put(api: &ApiClient, path: &str, body: Value) -> Result<Value, CliError> {
    let body = api
        .call(http::Method::PUT, path, Some(body.to_string().into_bytes()))
        .await?;
    decode(path, &body)
}

async fn delete(api: &ApiClient, path: &str) -> Result<(), CliError> {
    api.call(http::Method::DELETE, path, None).await.map(drop)
}

fn decode(path: &str, body: &[u8]) -> Result<Value, CliError> {
    serde_json::from_slice(body).map_err(|e| CliError::Decode {
        path: path.to_string(),
        message: e.to_string(),
    })
}

/// Entries of a list, each in `one`'s layout, separated by a blank line (as Consul prints).
fn list_text(v: &Value, one: fn(&Value) -> String) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .map(one)
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// `Label:` lines with the values aligned, as Consul's `acl` commands print an object.
fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| {
            format!("{:<width$} {v}", format!("{k}:"))
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `   ID - Name` lines of a link list under `title`, or nothing when it is empty.
fn links_text(title: &str, links: &Value) -> String {
    let lines: Vec<String> = links
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| format!("   {} - {}", table::text(&l["ID"]), table::text(&l["Name"])))
        .collect();
    section(title, lines)
}

fn identities_text(v: &Value) -> String {
    let services = v["ServiceIdentities"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let dcs: Vec<String> = s["Datacenters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(table::text)
                .collect();
            let dcs = if dcs.is_empty() {
                "all".to_string()
            } else {
                dcs.join(", ")
            };
            format!("   {} (Datacenters: {dcs})", table::text(&s["ServiceName"]))
        })
        .collect();
    let nodes = v["NodeIdentities"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            format!(
                "   {} (Datacenter: {})",
                table::text(&n["NodeName"]),
                table::text(&n["Datacenter"])
            )
        })
        .collect();
    [
        section("Service Identities", services),
        section("Node Identities", nodes),
    ]
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join("\n")
}

fn section(title: &str, lines: Vec<String>) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("{title}:\n{}", lines.join("\n"))
    }
}

fn join_nonempty(parts: &[String]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

fn token_text(v: &Value) -> String {
    let mut rows = vec![
        ("AccessorID", table::text(&v["AccessorID"])),
        ("SecretID", table::text(&v["SecretID"])),
        ("Description", table::text(&v["Description"])),
        ("Local", v["Local"].as_bool().unwrap_or(false).to_string()),
        ("Create Time", table::text(&v["CreateTime"])),
    ];
    if let Some(exp) = v["ExpirationTime"].as_str() {
        rows.push(("Expiration Time", exp.to_string()));
    }
    join_nonempty(&[
        fields(&rows),
        links_text("Policies", &v["Policies"]),
        links_text("Roles", &v["Roles"]),
        identities_text(v),
    ])
}

fn policy_text(v: &Value) -> String {
    let dcs: Vec<String> = v["Datacenters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(table::text)
        .collect();
    let head = fields(&[
        ("ID", table::text(&v["ID"])),
        ("Name", table::text(&v["Name"])),
        ("Description", table::text(&v["Description"])),
        ("Datacenters", dcs.join(", ")),
    ]);
    match v["Rules"].as_str() {
        Some(rules) => format!("{head}\nRules:\n{rules}"),
        None => head,
    }
}

fn role_text(v: &Value) -> String {
    join_nonempty(&[
        fields(&[
            ("ID", table::text(&v["ID"])),
            ("Name", table::text(&v["Name"])),
            ("Description", table::text(&v["Description"])),
        ]),
        links_text("Policies", &v["Policies"]),
        identities_text(v),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_become_consul_fields() {
        let mut body = json!({});
        Grants {
            policy_id: vec!["p1".into()],
            policy_name: vec!["ops".into()],
            service_identity: vec!["web".into(), "db:dc1,dc2".into()],
            node_identity: vec!["n1:dc1".into()],
        }
        .apply(&mut body)
        .unwrap();
        assert_eq!(body["Policies"], json!([{"ID": "p1"}, {"Name": "ops"}]));
        assert_eq!(
            body["ServiceIdentities"],
            json!([
                {"ServiceName": "web", "Datacenters": []},
                {"ServiceName": "db", "Datacenters": ["dc1", "dc2"]}
            ])
        );
        assert_eq!(
            body["NodeIdentities"],
            json!([{"NodeName": "n1", "Datacenter": "dc1"}])
        );
        let bad = Grants {
            node_identity: vec!["n1".into()],
            ..Grants::default()
        };
        assert!(matches!(bad.apply(&mut json!({})), Err(CliError::Usage(_))));
    }

    #[test]
    fn token_prints_in_consuls_layout() {
        let t = json!({
            "AccessorID": "a-1", "SecretID": "s-1", "Description": "web token",
            "Local": false, "CreateTime": "2026-12-04T00:00:00Z",
            "Policies": [{"ID": "p1", "Name": "ops"}],
            "ServiceIdentities": [{"ServiceName": "web"}]
        });
        let text = token_text(&t);
        assert!(
            text.starts_with("AccessorID:  a-1\nSecretID:    s-1"),
            "{text}"
        );
        assert!(text.contains("Policies:\n   p1 - ops"), "{text}");
        assert!(
            text.contains("Service Identities:\n   web (Datacenters: all)"),
            "{text}"
        );
        assert!(!text.contains("Roles:"), "{text}");
    }
}
