//! What this agent registered locally: its services and their checks, with the check runners
//! that keep those checks' statuses current. The anti-entropy sync (`sync`) makes the catalog
//! match it. Each service can be turned into the record the agent keeps on disk
//! ([`LocalState::record`]) and rebuilt from it after a restart ([`LocalState::restore`]);
//! see `persist`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::mpsc;

use super::checks::{self, CheckDefinition, CheckHandle, CheckKind, CheckUpdate, ValidatedCheck};
use super::persist::{self, PersistedCheck, PersistedService};
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
    #[error("persisted check {check_id:?} belongs to service {found:?}, not to {service_id:?}")]
    ForeignCheck {
        check_id: String,
        service_id: String,
        found: String,
    },
}

/// One local check.
pub struct LocalCheck {
    pub check: HealthCheck,
    /// Alias checks mirror the health of another local service.
    pub alias_of: Option<String>,
    /// The definition as registered (Consul's JSON), kept to persist the check.
    definition: Option<Value>,
    /// TTL checks: the TTL, and when it runs out without an update (wall clock, so that it can
    /// be persisted and survive a restart).
    ttl: Option<Duration>,
    ttl_deadline: Option<SystemTime>,
    handle: Option<CheckHandle>,
}

/// Parses and validates a check definition as registered.
fn validate(check_id: &str, def: &Value) -> Result<ValidatedCheck, LocalError> {
    let invalid = |reason: String| LocalError::InvalidCheck {
        check_id: check_id.to_string(),
        reason,
    };
    let def: CheckDefinition =
        serde_json::from_value(super::registration::translate_keys(def.clone()))
            .map_err(|e| invalid(e.to_string()))?;
    def.to_validated().map_err(|e| invalid(e.to_string()))
}

fn ttl_of(v: &ValidatedCheck) -> Option<Duration> {
    match v.kind {
        CheckKind::Ttl { ttl } => Some(ttl),
        _ => None,
    }
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
                let validated = c
                    .definition
                    .as_ref()
                    .map(|def| validate(&c.id, def))
                    .transpose()?;
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
        let now = SystemTime::now();
        for (spec, validated) in prepared {
            let (status, ttl, handle) = match validated {
                None => (HealthStatus::Passing, None, None),
                Some(v) => {
                    let status = v.initial_status;
                    let ttl = ttl_of(&v);
                    let handle = checks::CheckRunner::new(runner.clone()).spawn(
                        spec.id.clone(),
                        v,
                        updates.clone(),
                    );
                    (status, ttl, Some(handle))
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
                    definition: spec.definition,
                    ttl,
                    ttl_deadline: ttl.map(|t| now + t),
                    handle,
                },
            );
        }
        self.index += 1;
        Ok(())
    }

    /// Removes a service, its checks, and the sidecar registered with it; returns the IDs of
    /// the services removed.
    pub fn deregister(&mut self, id: &str) -> Result<Vec<String>, LocalError> {
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
        let mut removed = vec![id.to_string()];
        removed.extend(sidecars);
        Ok(removed)
    }

    /// Adds `check`, whose status no runner keeps (a maintenance check): it stays as given until
    /// [`Self::remove_check`]. Whether it was added (an existing check of that ID is kept).
    pub fn add_fixed_check(&mut self, check: HealthCheck) -> bool {
        if self.checks.contains_key(&check.check_id) {
            return false;
        }
        self.checks.insert(
            check.check_id.clone(),
            LocalCheck {
                check,
                alias_of: None,
                definition: None,
                ttl: None,
                ttl_deadline: None,
                handle: None,
            },
        );
        self.index += 1;
        true
    }

    /// Removes check `check_id` (its runner stops with it); whether it was there.
    pub fn remove_check(&mut self, check_id: &str) -> bool {
        let removed = self.checks.remove(check_id).is_some();
        if removed {
            self.index += 1;
        }
        removed
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
            .get_mut(check_id)
            .ok_or_else(|| LocalError::UnknownCheck(check_id.to_string()))?;
        let handle = c.handle.as_ref().ok_or_else(|| {
            LocalError::CheckUpdate(format!("check {check_id:?} is not a TTL check"))
        })?;
        handle
            .ttl_update(status, note.to_string())
            .map_err(|e| LocalError::CheckUpdate(e.to_string()))?;
        // The runner restarts its timer on this update; the persisted deadline follows it.
        c.ttl_deadline = c.ttl.map(|t| SystemTime::now() + t);
        Ok(())
    }

    /// The service owning check `check_id` (empty for a node-level check).
    pub fn service_of_check(&self, check_id: &str) -> Option<String> {
        self.checks
            .get(check_id)
            .map(|c| c.check.service_id.clone())
    }

    /// Service `id` and its checks (definitions and current state) as kept on disk; `None`
    /// when no such service is registered.
    pub fn record(&self, id: &str) -> Option<PersistedService> {
        let service = self.services.get(id)?.clone();
        let checks = self
            .checks
            .values()
            .filter(|c| c.check.service_id == id)
            .map(|c| PersistedCheck {
                check_id: c.check.check_id.clone(),
                name: c.check.name.clone(),
                notes: c.check.notes.clone(),
                definition: c.definition.clone(),
                alias_of: c.alias_of.clone(),
                status: c.check.status,
                output: c.check.output.clone(),
                ttl_deadline_unix_ms: c.ttl_deadline.map(persist::unix_ms),
            })
            .collect();
        Some(PersistedService {
            version: persist::FORMAT_VERSION,
            service,
            checks,
        })
    }

    /// Re-registers a service read from disk after a restart, with its checks resuming from
    /// their persisted status and output (a TTL check keeps its deadline; see
    /// [`checks::Resume`]). Every check is validated first, so a record that no longer
    /// validates changes nothing. `now` is the wall-clock time TTL deadlines are measured from.
    pub fn restore(
        &mut self,
        node: &str,
        rec: PersistedService,
        updates: &mpsc::Sender<CheckUpdate>,
        runner: &checks::RunnerConfig,
        now: SystemTime,
    ) -> Result<(), LocalError> {
        let mut service = rec.service;
        // The node may have been renamed; the catalog entry belongs to this one.
        service.node = node.to_string();
        let mut prepared = Vec::new();
        for c in rec.checks {
            let validated = c
                .definition
                .as_ref()
                .map(|def| validate(&c.check_id, def))
                .transpose()?;
            if let Some(v) = &validated
                && !v.service_id.is_empty()
                && v.service_id != service.id
            {
                return Err(LocalError::ForeignCheck {
                    check_id: c.check_id,
                    service_id: service.id,
                    found: v.service_id.clone(),
                });
            }
            prepared.push((c, validated));
        }
        for (c, validated) in prepared {
            let ttl = validated.as_ref().and_then(ttl_of);
            let ttl_deadline = ttl.map(|t| {
                c.ttl_deadline_unix_ms
                    .map_or(now + t, persist::from_unix_ms)
            });
            let handle = validated.map(|v| {
                let resume = checks::Resume {
                    status: c.status,
                    output: c.output.clone(),
                    ttl_left: ttl_deadline
                        .and_then(|d| d.duration_since(now).ok())
                        .unwrap_or(Duration::ZERO),
                };
                checks::CheckRunner::new(runner.clone()).spawn_resumed(
                    c.check_id.clone(),
                    v,
                    updates.clone(),
                    resume,
                )
            });
            self.checks.insert(
                c.check_id.clone(),
                LocalCheck {
                    check: HealthCheck {
                        node: node.to_string(),
                        check_id: c.check_id,
                        name: c.name,
                        status: c.status,
                        notes: c.notes,
                        output: c.output,
                        service_id: service.id.clone(),
                        service_name: service.service.clone(),
                        create_index: 0,
                        modify_index: 0,
                    },
                    alias_of: c.alias_of,
                    definition: c.definition,
                    ttl,
                    ttl_deadline,
                    handle,
                },
            );
        }
        self.services.insert(service.id.clone(), service);
        self.index += 1;
        Ok(())
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
