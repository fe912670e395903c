//! `/v1/agent/service/register` bodies (Consul's `AgentServiceRegistration`), turned into the
//! service instances and check definitions the agent keeps: IDs and names defaulted as Consul
//! does, and a `Connect.SidecarService` expanded into its own `connect-proxy` service with
//! Consul's sidecar defaults (port from 21000-21255, proxy pointing at the parent, inherited
//! tags and meta, a TCP "listening" check and an alias check of the parent).
//!
//! Consul accepts snake_case keys here (`sidecar_service`, `local_bind_port`, ...); they are
//! translated to the PascalCase names first, except inside user maps such as `Meta`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::model::{ProxyConfig, ServiceConnect, ServiceInstance, Upstream};

/// First and last port of the automatic sidecar port range (Consul's defaults).
pub const SIDECAR_MIN_PORT: u16 = 21000;
pub const SIDECAR_MAX_PORT: u16 = 21255;

/// Errors in a registration body.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("Request decode failed: {0}")]
    Decode(String),
    #[error("Missing service name")]
    MissingName,
    #[error("Invalid service port {0}")]
    BadPort(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("no free sidecar port in {SIDECAR_MIN_PORT}-{SIDECAR_MAX_PORT}")]
    NoSidecarPort,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "Consul fields accepted so existing clients work; not acted on (yet)"
)]
struct Registration {
    #[serde(default)]
    kind: String,
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    port: Option<i64>,
    #[serde(default)]
    address: String,
    #[serde(default)]
    socket_path: String,
    #[serde(default)]
    tagged_addresses: Option<Value>,
    #[serde(default)]
    enable_tag_override: bool,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    weights: Option<Value>,
    #[serde(default)]
    check: Option<Value>,
    #[serde(default)]
    checks: Option<Vec<Value>>,
    #[serde(default)]
    proxy: Option<ProxyBody>,
    #[serde(default)]
    connect: Option<ConnectBody>,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    partition: String,
    #[serde(default)]
    locality: Option<Value>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "Consul fields accepted so existing clients work; not acted on (yet)"
)]
struct ConnectBody {
    #[serde(default)]
    native: bool,
    #[serde(default)]
    sidecar_service: Option<Box<Registration>>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "Consul fields accepted so existing clients work; not acted on (yet)"
)]
struct ProxyBody {
    #[serde(default)]
    destination_service_name: String,
    #[serde(rename = "DestinationServiceID", default)]
    destination_service_id: String,
    #[serde(default)]
    local_service_address: String,
    #[serde(default)]
    local_service_port: u16,
    #[serde(default)]
    local_service_socket_path: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    transparent_proxy: Option<Value>,
    #[serde(default)]
    config: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    upstreams: Vec<UpstreamBody>,
    #[serde(default)]
    mesh_gateway: Option<Value>,
    #[serde(default)]
    expose: Option<Value>,
    #[serde(default)]
    access_logs: Option<Value>,
    #[serde(default)]
    envoy_extensions: Option<Value>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "Consul fields accepted so existing clients work; not acted on (yet)"
)]
struct UpstreamBody {
    #[serde(default)]
    destination_type: String,
    #[serde(default)]
    destination_namespace: String,
    #[serde(default)]
    destination_partition: String,
    #[serde(default)]
    destination_peer: String,
    destination_name: String,
    #[serde(default)]
    datacenter: String,
    #[serde(default)]
    local_bind_address: String,
    #[serde(default)]
    local_bind_port: u16,
    #[serde(default)]
    local_bind_socket_path: String,
    #[serde(default)]
    local_bind_socket_mode: String,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    mesh_gateway: Option<Value>,
    #[serde(default)]
    centrally_configured: bool,
}

/// A check to register with a service: its ID, and either a definition to run or an alias of
/// another service's health.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub id: String,
    pub name: String,
    pub service_id: String,
    pub service_name: String,
    /// Consul's check definition JSON (TTL/TCP/HTTP ...), or `None` for an alias check.
    pub definition: Option<Value>,
    /// For alias checks: the service whose health this check mirrors.
    pub alias_of: Option<String>,
}

/// A registered service with its checks.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub service: ServiceInstance,
    pub checks: Vec<CheckSpec>,
}

/// Parses a registration body into the service (and its sidecar, if any), with checks.
/// `used_ports` are the sidecar ports already taken on this agent.
pub fn parse(
    body: &[u8],
    node: &str,
    used_ports: &[u16],
) -> Result<Vec<ServiceSpec>, RegistrationError> {
    let raw: Value =
        serde_json::from_slice(body).map_err(|e| RegistrationError::Decode(e.to_string()))?;
    let raw = translate_keys(raw);
    let reg: Registration =
        mesh_policy::decode::value_as(raw).map_err(|e| RegistrationError::Decode(e.to_string()))?;
    let mut out = Vec::new();
    let parent = build(&reg, node)?;
    if let Some(sidecar) = reg
        .connect
        .as_ref()
        .and_then(|c| c.sidecar_service.as_deref())
    {
        if reg.kind == "connect-proxy" {
            return Err(RegistrationError::Invalid(
                "A connect-proxy cannot have a SidecarService".into(),
            ));
        }
        out.push(parent.clone());
        out.push(sidecar_spec(
            &reg,
            sidecar,
            &parent.service,
            node,
            used_ports,
        )?);
    } else {
        out.push(parent);
    }
    Ok(out)
}

fn build(reg: &Registration, node: &str) -> Result<ServiceSpec, RegistrationError> {
    if reg.name.is_empty() {
        return Err(RegistrationError::MissingName);
    }
    let port = match reg.port {
        None => 0,
        Some(p) if (0..=65535).contains(&p) => p as u16,
        Some(p) => return Err(RegistrationError::BadPort(p)),
    };
    if !matches!(reg.kind.as_str(), "" | "connect-proxy") {
        return Err(RegistrationError::Invalid(format!(
            "unsupported service Kind {:?}",
            reg.kind
        )));
    }
    let id = if reg.id.is_empty() {
        reg.name.clone()
    } else {
        reg.id.clone()
    };
    let proxy = reg.proxy.as_ref().map(proxy_config);
    if reg.kind == "connect-proxy"
        && proxy
            .as_ref()
            .is_none_or(|p| p.destination_service_name.is_empty())
    {
        return Err(RegistrationError::Invalid(
            "Proxy.DestinationServiceName must be set for a connect-proxy".into(),
        ));
    }
    if reg.kind == "connect-proxy" && port == 0 {
        return Err(RegistrationError::Invalid(
            "Port must be set for a connect-proxy".into(),
        ));
    }
    let service = ServiceInstance {
        id: id.clone(),
        service: reg.name.clone(),
        node: node.to_string(),
        kind: reg.kind.clone(),
        address: reg.address.clone(),
        port,
        tags: reg.tags.clone().unwrap_or_default(),
        meta: reg.meta.clone().unwrap_or_default(),
        proxy,
        connect: ServiceConnect {
            native: reg.connect.as_ref().is_some_and(|c| c.native),
        },
        create_index: 0,
        modify_index: 0,
    };
    let mut defs: Vec<Value> = reg.check.iter().cloned().collect();
    defs.extend(reg.checks.iter().flatten().cloned());
    let numbered = defs.len() > 1;
    let checks = defs
        .into_iter()
        .enumerate()
        .map(|(i, def)| {
            let given = def
                .get("CheckID")
                .or_else(|| def.get("ID"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            let check_id = given.unwrap_or_else(|| {
                if numbered {
                    format!("service:{id}:{}", i + 1)
                } else {
                    format!("service:{id}")
                }
            });
            let name = def
                .get("Name")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| format!("Service '{}' check", reg.name));
            CheckSpec {
                id: check_id,
                name,
                service_id: id.clone(),
                service_name: reg.name.clone(),
                definition: Some(def),
                alias_of: None,
            }
        })
        .collect();
    Ok(ServiceSpec { service, checks })
}

fn proxy_config(p: &ProxyBody) -> ProxyConfig {
    ProxyConfig {
        destination_service_name: p.destination_service_name.clone(),
        destination_service_id: p.destination_service_id.clone(),
        local_service_address: p.local_service_address.clone(),
        local_service_port: p.local_service_port,
        mode: p.mode.clone(),
        upstreams: p
            .upstreams
            .iter()
            .map(|u| Upstream {
                destination_type: if u.destination_type.is_empty() {
                    "service".into()
                } else {
                    u.destination_type.clone()
                },
                destination_name: u.destination_name.clone(),
                datacenter: u.datacenter.clone(),
                local_bind_address: u.local_bind_address.clone(),
                local_bind_port: u.local_bind_port,
            })
            .collect(),
        config: p.config.clone().unwrap_or_default(),
    }
}

fn sidecar_spec(
    parent_reg: &Registration,
    sidecar: &Registration,
    parent: &ServiceInstance,
    node: &str,
    used_ports: &[u16],
) -> Result<ServiceSpec, RegistrationError> {
    let mut reg = sidecar.clone();
    if reg
        .connect
        .as_ref()
        .is_some_and(|c| c.sidecar_service.is_some())
    {
        return Err(RegistrationError::Invalid(
            "A SidecarService cannot have its own SidecarService".into(),
        ));
    }
    reg.kind = "connect-proxy".into();
    if reg.id.is_empty() {
        reg.id = format!("{}-sidecar-proxy", parent.id);
    }
    if reg.name.is_empty() {
        reg.name = format!("{}-sidecar-proxy", parent.service);
    }
    if reg.tags.is_none() {
        reg.tags = parent_reg.tags.clone();
    }
    if reg.meta.is_none() {
        reg.meta = parent_reg.meta.clone();
    }
    if reg.address.is_empty() {
        reg.address = parent.address.clone();
    }
    if reg.port.is_none_or(|p| p == 0) {
        let free = (SIDECAR_MIN_PORT..=SIDECAR_MAX_PORT)
            .find(|p| !used_ports.contains(p))
            .ok_or(RegistrationError::NoSidecarPort)?;
        reg.port = Some(i64::from(free));
    }
    let mut proxy = reg.proxy.clone().unwrap_or_default();
    proxy.destination_service_name = parent.service.clone();
    proxy.destination_service_id = parent.id.clone();
    if proxy.local_service_address.is_empty() {
        proxy.local_service_address = "127.0.0.1".into();
    }
    if proxy.local_service_port == 0 {
        proxy.local_service_port = parent.port;
    }
    reg.proxy = Some(proxy);
    let mut spec = build(&reg, node)?;
    if spec.checks.is_empty() {
        let addr = if reg.address.is_empty() {
            "127.0.0.1"
        } else {
            reg.address.as_str()
        };
        spec.checks = vec![
            CheckSpec {
                id: format!("service:{}:1", spec.service.id),
                name: "Connect Sidecar Listening".into(),
                service_id: spec.service.id.clone(),
                service_name: spec.service.service.clone(),
                definition: Some(serde_json::json!({
                    "TCP": format!("{addr}:{}", spec.service.port),
                    "Interval": "10s",
                })),
                alias_of: None,
            },
            CheckSpec {
                id: format!("service:{}:2", spec.service.id),
                name: format!("Connect Sidecar Aliasing {}", parent.id),
                service_id: spec.service.id.clone(),
                service_name: spec.service.service.clone(),
                definition: None,
                alias_of: Some(parent.id.clone()),
            },
        ];
    }
    Ok(spec)
}

/// Keys whose values are user data and must keep their own keys.
const OPAQUE: &[&str] = &["Meta", "Header", "Config", "NodeMeta", "TaggedAddresses"];

/// Rewrites snake_case and lower-case keys to Consul's PascalCase names, as Consul's agent
/// endpoint accepts both.
pub fn translate_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = pascal(&k);
                    let v = if OPAQUE.contains(&key.as_str()) {
                        v
                    } else {
                        translate_keys(v)
                    };
                    (key, v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(translate_keys).collect()),
        other => other,
    }
}

fn pascal(k: &str) -> String {
    if !k.contains('_') && k.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
        return k.to_string();
    }
    k.split('_')
        .filter(|p| !p.is_empty())
        .map(|part| match part.to_ascii_lowercase().as_str() {
            "id" => "ID".to_string(),
            "ttl" => "TTL".to_string(),
            "tcp" => "TCP".to_string(),
            "http" => "HTTP".to_string(),
            "tls" => "TLS".to_string(),
            "grpc" => "GRPC".to_string(),
            "udp" => "UDP".to_string(),
            "ns" => "NS".to_string(),
            "uri" => "URI".to_string(),
            _ => {
                let mut c = part.chars();
                match c.next() {
                    Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                    None => String::new(),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_sidecar_registration() {
        let body = br#"{
            "name": "web", "port": 8080,
            "meta": {"team_name": "a"},
            "connect": {"sidecar_service": {"proxy": {"upstreams": [
                {"destination_name": "db", "local_bind_port": 9191}
            ]}}}
        }"#;
        let specs = parse(body, "n1", &[21000]).unwrap();
        assert_eq!(specs.len(), 2);
        let (web, side) = (&specs[0].service, &specs[1].service);
        assert_eq!((web.id.as_str(), web.port), ("web", 8080));
        assert_eq!(web.meta.get("team_name").map(String::as_str), Some("a"));
        assert_eq!(side.id, "web-sidecar-proxy");
        assert_eq!(side.kind, "connect-proxy");
        assert_eq!(side.port, 21001, "first free port of the sidecar range");
        let p = side.proxy.as_ref().unwrap();
        assert_eq!(p.destination_service_name, "web");
        assert_eq!(p.destination_service_id, "web");
        assert_eq!(p.local_service_port, 8080);
        assert_eq!(p.upstreams[0].destination_name, "db");
        assert_eq!(p.upstreams[0].local_bind_port, 9191);
        assert_eq!(side.meta, web.meta, "meta inherited from the parent");
        assert_eq!(specs[1].checks.len(), 2);
        assert_eq!(specs[1].checks[1].alias_of.as_deref(), Some("web"));
    }

    #[test]
    fn check_ids_default_like_consul() {
        let one = parse(br#"{"Name":"a","Check":{"TTL":"10s"}}"#, "n", &[]).unwrap();
        assert_eq!(one[0].checks[0].id, "service:a");
        let two = parse(
            br#"{"Name":"a","ID":"a1","Checks":[{"TTL":"10s"},{"TTL":"5s","CheckID":"mine"}]}"#,
            "n",
            &[],
        )
        .unwrap();
        assert_eq!(two[0].checks[0].id, "service:a1:1");
        assert_eq!(two[0].checks[1].id, "mine");
    }

    #[test]
    fn rejects_bad_bodies() {
        for (body, want) in [
            (&b"{"[..], "decode"),
            (br#"{"Port": 1}"#, "name"),
            (br#"{"Name":"a","Bogus":1}"#, "unknown field"),
            (br#"{"Name":"a","Port":70000}"#, "port"),
            (
                br#"{"Name":"a","Kind":"connect-proxy","Port":1}"#,
                "DestinationServiceName",
            ),
        ] {
            let err = parse(body, "n", &[]).unwrap_err().to_string();
            assert!(
                err.to_lowercase().contains(&want.to_lowercase()),
                "{err} should mention {want}"
            );
        }
    }

    #[test]
    fn sidecar_port_range_exhaustion_is_an_error() {
        let used: Vec<u16> = (SIDECAR_MIN_PORT..=SIDECAR_MAX_PORT).collect();
        let err = parse(
            br#"{"Name":"a","Connect":{"SidecarService":{}}}"#,
            "n",
            &used,
        );
        assert!(matches!(err, Err(RegistrationError::NoSidecarPort)));
    }
}
