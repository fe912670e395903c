//! Which original destinations are mesh services: an index of `address:port` → service
//! name, built from the catalog, as Consul's transparent proxy does with instance addresses.
//!
//! A service counts as "in the mesh" when some `connect-proxy` registration names it as its
//! destination (or it is Connect-native). The index is rebuilt whenever the catalog's service
//! index moves (a blocking query on `/v1/catalog/services`, then one read of
//! `/v1/catalog/service/:name` per service). Building it is pure ([`MeshIndex::from_entries`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use crate::agent::AgentClient;

/// One row of `/v1/catalog/service/:name` (the fields the index needs).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogEntry {
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub service_kind: String,
    #[serde(default)]
    pub service_name: String,
    #[serde(default)]
    pub service_address: String,
    #[serde(default)]
    pub service_port: u16,
    #[serde(default)]
    pub service_proxy: Option<ProxyPart>,
    #[serde(default)]
    pub service_connect: Option<ConnectPart>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ProxyPart {
    #[serde(default)]
    pub destination_service_name: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ConnectPart {
    #[serde(default)]
    pub native: bool,
}

impl CatalogEntry {
    /// A plain service instance (for tests and examples).
    pub fn service(name: &str, address: &str, port: u16) -> Self {
        Self {
            service_name: name.into(),
            service_address: address.into(),
            service_port: port,
            ..Default::default()
        }
    }

    /// A sidecar proxy of `destination`.
    pub fn sidecar(name: &str, address: &str, port: u16, destination: &str) -> Self {
        Self {
            service_kind: "connect-proxy".into(),
            service_proxy: Some(ProxyPart {
                destination_service_name: destination.into(),
            }),
            ..Self::service(name, address, port)
        }
    }
}

/// Address → mesh service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshIndex {
    by_addr: HashMap<SocketAddr, Arc<str>>,
    services: BTreeSet<Arc<str>>,
}

impl MeshIndex {
    /// Builds the index from catalog rows of every service.
    pub fn from_entries(entries: &[CatalogEntry]) -> Self {
        let mut meshed: BTreeSet<&str> = BTreeSet::new();
        for e in entries {
            if e.service_kind == "connect-proxy"
                && let Some(p) = &e.service_proxy
                && !p.destination_service_name.is_empty()
            {
                meshed.insert(&p.destination_service_name);
            }
            if e.service_connect.as_ref().is_some_and(|c| c.native) {
                meshed.insert(&e.service_name);
            }
        }
        let services: BTreeSet<Arc<str>> = meshed.iter().map(|s| Arc::from(*s)).collect();
        let mut by_addr = HashMap::new();
        for e in entries {
            let typical = e.service_kind.is_empty() || e.service_kind == "typical";
            if !typical || e.service_port == 0 {
                continue;
            }
            let Some(name) = services.get(e.service_name.as_str()) else {
                continue;
            };
            let host = if e.service_address.is_empty() {
                &e.address
            } else {
                &e.service_address
            };
            if let Ok(ip) = host.parse::<IpAddr>() {
                by_addr.insert(SocketAddr::new(ip, e.service_port), name.clone());
            }
        }
        Self { by_addr, services }
    }

    /// The mesh service listening at `addr`, if any.
    pub fn service_at(&self, addr: SocketAddr) -> Option<Arc<str>> {
        self.by_addr.get(&addr).cloned()
    }

    /// Every mesh service (those the proxy needs a TLS client configuration for).
    pub fn services(&self) -> impl Iterator<Item = &Arc<str>> {
        self.services.iter()
    }

    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

/// Keeps `tx` up to date with the catalog until every receiver is gone.
pub async fn run_index(client: AgentClient, tx: watch::Sender<Option<Arc<MeshIndex>>>) {
    let mut index = 0u64;
    let mut backoff = Duration::from_millis(100);
    while !tx.is_closed() {
        match rebuild(&client, index).await {
            Ok((new_index, built)) => {
                backoff = Duration::from_millis(100);
                let same_index = new_index == index;
                if !same_index || tx.borrow().is_none() {
                    tracing::debug!(addresses = built.len(), "mesh index rebuilt");
                    tx.send_replace(Some(Arc::new(built)));
                } else {
                    // The blocking query returned without a change: do not spin.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                index = if new_index < index { 0 } else { new_index };
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the catalog for transparent mode failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn rebuild(client: &AgentClient, index: u64) -> Result<(u64, MeshIndex), String> {
    let path = "/v1/catalog/services";
    let a = client.get(path, index).await.map_err(|e| e.to_string())?;
    let names: BTreeMap<String, Vec<String>> =
        serde_json::from_slice(&a.body).map_err(|e| format!("{path}: {e}"))?;
    let mut entries = Vec::new();
    for name in names.keys() {
        let p = format!("/v1/catalog/service/{name}");
        let rows = client.get(&p, 0).await.map_err(|e| e.to_string())?;
        let mut rows: Vec<CatalogEntry> =
            serde_json::from_slice(&rows.body).map_err(|e| format!("{p}: {e}"))?;
        entries.append(&mut rows);
    }
    Ok((a.index, MeshIndex::from_entries(&entries)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_services_with_a_proxy_are_meshed() {
        let json = r#"[
          {"Address":"10.0.0.1","ServiceName":"web","ServiceAddress":"","ServicePort":8080},
          {"Address":"10.0.0.2","ServiceName":"legacy","ServiceAddress":"10.0.0.2","ServicePort":80},
          {"Address":"10.0.0.1","ServiceKind":"connect-proxy","ServiceName":"web-sidecar-proxy",
           "ServiceAddress":"10.0.0.1","ServicePort":21000,
           "ServiceProxy":{"DestinationServiceName":"web"}},
          {"Address":"10.0.0.3","ServiceName":"native","ServicePort":9000,
           "ServiceConnect":{"Native":true}}
        ]"#;
        let entries: Vec<CatalogEntry> = serde_json::from_str(json).unwrap();
        let idx = MeshIndex::from_entries(&entries);
        assert_eq!(
            idx.service_at("10.0.0.1:8080".parse().unwrap()).as_deref(),
            Some("web")
        );
        assert_eq!(
            idx.service_at("10.0.0.3:9000".parse().unwrap()).as_deref(),
            Some("native")
        );
        assert_eq!(idx.service_at("10.0.0.2:80".parse().unwrap()), None);
        // The proxy's own port is not a service destination.
        assert_eq!(idx.service_at("10.0.0.1:21000".parse().unwrap()), None);
        let names: Vec<&str> = idx.services().map(|s| &**s).collect();
        assert_eq!(names, vec!["native", "web"]);
    }
}
