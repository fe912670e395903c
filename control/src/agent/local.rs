//! What this agent registered locally: its services and their checks, with the check runners
//! that keep those checks' statuses current. The anti-entropy sync (`sync`) makes the catalog
//! match it.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use super::checks::{self, CheckDefinition, CheckHandle, CheckUpdate};
use super::registration::ServiceSpec;
use crate::model::{HealthCheck, HealthStatus, ServiceInstance};

/// Errors changing the local state.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("Invalid check {check_id:?}: {reason}")]
    InvalidCheck { check_id: String, reason: String },
    #[error(
        "Unknown service ID {0:?}. Ensure that the service ID is passed, not the service name."
    )]
    UnknownService(String),
    #[error("Unknown check ID {0:?}. Ensure that the check ID is passed, not the check name.")]
    UnknownCheck(String),
    #[error("{0}")]
    CheckUpdate(String),
}

/// One local check.
pub struct LocalCheck {
    pub check: HealthCheck,
    /// Alias checks mirror the health of another local service.
    pub alias_of: Option<String>,
    handle: Option<CheckHandle>,
}

/// The agent's local services and checks.
#[derive(Default)]
pub struct LocalState {
    pub services: BTreeMap<String, ServiceInstance>,
    pub checks: BTreeMap<String, LocalCheck>,
    /// Bumped on every change (blocking queries on `/v1/agent/services`).
    pub index: u64,
}

impl LocalState {
    /// Registers services (a parent and its sidecar come together). Every check is validated
    /// before anything changes, so a bad check leaves the state as it was.
    pub fn register(
        &mut self,
        node: &str,
        specs: Vec<ServiceSpec>,
        replace_existing_checks: bool,
        updates: &mpsc::Sender<CheckUpdate>,
        runner: &checks::RunnerConfig,
    ) -> Result<(), LocalError> {
        let mut prepared = Vec::new();
        for spec in &specs {
            for c in &spec.checks {
                let validated = match &c.definition {
                    None => None,
                    Some(def) => {
                        let def: CheckDefinition = serde_json::from_value(
                            super::registration::translate_keys(def.clone()),
                        )
                        .map_err(|e| LocalError::InvalidCheck {
                            check_id: c.id.clone(),
                            reason: e.to_string(),
                        })?;
                        let v = def.to_validated().map_err(|e| LocalError::InvalidCheck {
                            check_id: c.id.clone(),
                            reason: e.to_string(),
                        })?;
                        Some(v)
                    }
                };
                prepared.push((c.clone(), validated));
            }
        }
        for spec in &specs {
            let sid = spec.service.id.clone();
            if replace_existing_checks {
                self.checks.retain(|_, c| c.check.service_id != sid);
            }
            self.services.insert(sid, spec.service.clone());
        }
        for (spec, validated) in prepared {
            let (status, handle) = match validated {
                None => (HealthStatus::Passing, None),
                Some(v) => {
                    let status = v.initial_status;
                    let handle = checks::CheckRunner::new(runner.clone()).spawn(
                        spec.id.clone(),
                        v,
                        updates.clone(),
                    );
                    (status, Some(handle))
                }
            };
            self.checks.insert(
                spec.id.clone(),
                LocalCheck {
                    check: HealthCheck {
                        node: node.to_string(),
                        check_id: spec.id,
                        name: spec.name,
                        status,
                        notes: String::new(),
                        output: String::new(),
                        service_id: spec.service_id,
                        service_name: spec.service_name,
                        create_index: 0,
                        modify_index: 0,
                    },
                    alias_of: spec.alias_of,
                    handle,
                },
            );
        }
        self.index += 1;
        Ok(())
    }

    /// Removes a service, its checks, and the sidecar registered with it.
    pub fn deregister(&mut self, id: &str) -> Result<(), LocalError> {
        if self.services.remove(id).is_none() {
            return Err(LocalError::UnknownService(id.to_string()));
        }
        let sidecars: Vec<String> = self
            .services
            .values()
            .filter(|s| {
                s.kind == "connect-proxy"
                    && s.id == format!("{id}-sidecar-proxy")
                    && s.proxy
                        .as_ref()
                        .is_some_and(|p| p.destination_service_id == id)
            })
            .map(|s| s.id.clone())
            .collect();
        for s in &sidecars {
            self.services.remove(s);
        }
        self.checks
            .retain(|_, c| c.check.service_id != id && !sidecars.contains(&c.check.service_id));
        self.index += 1;
        Ok(())
    }

    /// A status change reported by a check runner.
    pub fn apply_update(&mut self, u: CheckUpdate) -> bool {
        match self.checks.get_mut(&u.check_id) {
            Some(c) if c.check.status != u.status || c.check.output != u.output => {
                c.check.status = u.status;
                c.check.output = u.output;
                self.index += 1;
                true
            }
            _ => false,
        }
    }

    /// `/v1/agent/check/pass|warn|fail/:id`: a TTL check's new status.
    pub fn ttl_update(
        &mut self,
        check_id: &str,
        status: HealthStatus,
        note: &str,
    ) -> Result<(), LocalError> {
        let c = self
            .checks
            .get(check_id)
            .ok_or_else(|| LocalError::UnknownCheck(check_id.to_string()))?;
        let handle = c.handle.as_ref().ok_or_else(|| {
            LocalError::CheckUpdate(format!("check {check_id:?} is not a TTL check"))
        })?;
        handle
            .ttl_update(status, note.to_string())
            .map_err(|e| LocalError::CheckUpdate(e.to_string()))
    }

    /// The checks with alias checks resolved to the worst status of the service they mirror.
    pub fn effective_checks(&self) -> Vec<HealthCheck> {
        self.checks
            .values()
            .map(|c| {
                let mut check = c.check.clone();
                if let Some(target) = &c.alias_of {
                    let worst = self
                        .checks
                        .values()
                        .filter(|o| o.alias_of.is_none() && &o.check.service_id == target)
                        .map(|o| o.check.status)
                        .max()
                        .unwrap_or(HealthStatus::Passing);
                    check.status = worst;
                    check.output = format!("Aliasing service {target:?}: {}", worst.as_str());
                }
                check
            })
            .collect()
    }

    /// Ports of the local sidecar proxies (for automatic sidecar ports).
    pub fn sidecar_ports(&self) -> Vec<u16> {
        self.services
            .values()
            .filter(|s| s.kind == "connect-proxy")
            .map(|s| s.port)
            .collect()
    }
}
