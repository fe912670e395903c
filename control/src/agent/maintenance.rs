//! Maintenance mode, as Consul's agent does it: a critical check the agent owns, registered
//! to take the node (`_node_maintenance`) or one service (`_service_maintenance:<id>`) out of
//! every healthy answer, and removed to end it. The check is an ordinary local check, so the
//! anti-entropy sync carries it to the catalog and deregisters it there once removed, and a
//! service's maintenance check is persisted with the service (it survives a restart, as in
//! Consul); node maintenance is not yet (the agent keeps no node checks on disk), so a
//! restart ends it. This module decides the checks and parses the request; `http` applies
//! them.

use crate::model::{HealthCheck, HealthStatus, ServiceInstance};

/// Consul's `structs.NodeMaint`: the ID of the node maintenance check.
pub const NODE_CHECK_ID: &str = "_node_maintenance";

/// Consul's `structs.ServiceMaintPrefix`: a service maintenance check is this and the
/// service's ID.
pub const SERVICE_CHECK_PREFIX: &str = "_service_maintenance:";

/// Consul's notes when `?reason` is not given.
const DEFAULT_NODE_REASON: &str = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.";
const DEFAULT_SERVICE_REASON: &str = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";

/// A maintenance request Consul refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaintenanceError {
    #[error("Missing value for enable")]
    MissingEnable,
    #[error("Invalid value for enable: {0:?} (use true or false)")]
    InvalidEnable(String),
}

/// `?enable=` as Consul reads it (Go's `strconv.ParseBool`: `1 t T TRUE true True` and
/// `0 f F FALSE false False`; py-consul sends `True`).
pub fn parse_enable(raw: Option<&str>) -> Result<bool, MaintenanceError> {
    match raw.ok_or(MaintenanceError::MissingEnable)? {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(MaintenanceError::InvalidEnable(other.to_string())),
    }
}

/// The ID of service `service_id`'s maintenance check.
pub fn service_check_id(service_id: &str) -> String {
    format!("{SERVICE_CHECK_PREFIX}{service_id}")
}

/// Whether `check_id` is a maintenance check (Consul's `AggregatedStatus` reports such a
/// service as `maintenance`).
pub fn is_maintenance(check_id: &str) -> bool {
    check_id == NODE_CHECK_ID || check_id.starts_with(SERVICE_CHECK_PREFIX)
}

/// The critical check that puts node `node` in maintenance, `reason` in its notes.
pub fn node_check(node: &str, reason: &str) -> HealthCheck {
    check(
        node,
        NODE_CHECK_ID.into(),
        "Node Maintenance Mode",
        reason,
        DEFAULT_NODE_REASON,
        None,
    )
}

/// The critical check that puts `service` in maintenance, `reason` in its notes.
pub fn service_check(service: &ServiceInstance, reason: &str) -> HealthCheck {
    check(
        &service.node,
        service_check_id(&service.id),
        "Service Maintenance Mode",
        reason,
        DEFAULT_SERVICE_REASON,
        Some(service),
    )
}

fn check(
    node: &str,
    check_id: String,
    name: &str,
    reason: &str,
    default_reason: &str,
    service: Option<&ServiceInstance>,
) -> HealthCheck {
    HealthCheck {
        node: node.to_string(),
        check_id,
        name: name.to_string(),
        status: HealthStatus::Critical,
        notes: if reason.is_empty() {
            default_reason
        } else {
            reason
        }
        .to_string(),
        output: String::new(),
        service_id: service.map(|s| s.id.clone()).unwrap_or_default(),
        service_name: service.map(|s| s.service.clone()).unwrap_or_default(),
        create_index: 0,
        modify_index: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_is_read_as_go_parses_a_bool() {
        assert_eq!(parse_enable(Some("True")), Ok(true));
        assert_eq!(parse_enable(Some("0")), Ok(false));
        assert_eq!(parse_enable(None), Err(MaintenanceError::MissingEnable));
        assert_eq!(
            parse_enable(Some("yes")),
            Err(MaintenanceError::InvalidEnable("yes".into()))
        );
    }

    #[test]
    fn checks_are_critical_with_the_reason_or_consuls_default() {
        let n = node_check("n1", "");
        assert_eq!(
            (n.check_id.as_str(), n.status),
            (NODE_CHECK_ID, HealthStatus::Critical)
        );
        assert!(
            n.notes
                .starts_with("Maintenance mode is enabled for this node")
        );
        assert!(n.service_id.is_empty());
        assert!(is_maintenance(&n.check_id));
        assert!(is_maintenance(&service_check_id("web-1")));
        assert!(!is_maintenance("service:web-1"));
    }

    /// A service's maintenance check is persisted with it and restored after a restart, goes
    /// with it on deregistration, and removing it is what ends maintenance.
    #[test]
    fn service_maintenance_survives_a_restart_and_goes_with_the_service() {
        use std::time::SystemTime;

        use crate::agent::checks::RunnerConfig;
        use crate::agent::local::LocalState;
        use crate::agent::registration;

        let (tx, _rx) = tokio::sync::mpsc::channel(4);
        let runner = RunnerConfig::default();
        let mut before = LocalState::default();
        let specs = registration::parse(br#"{"Name": "web", "Port": 80}"#, "n1", &[]).unwrap();
        before.register("n1", specs, false, &tx, &runner).unwrap();
        let web = before.services["web"].clone();
        assert!(before.add_fixed_check(service_check(&web, "upgrade")));
        assert!(
            !before.add_fixed_check(service_check(&web, "again")),
            "kept as it was"
        );

        let mut after = LocalState::default();
        let record = before.record("web").unwrap();
        after
            .restore("n1", record, &tx, &runner, SystemTime::now())
            .unwrap();
        let id = service_check_id("web");
        let c = &after.checks[&id].check;
        assert_eq!(
            (c.status, c.notes.as_str()),
            (HealthStatus::Critical, "upgrade")
        );
        assert_eq!(
            (c.service_id.as_str(), c.service_name.as_str()),
            ("web", "web")
        );

        assert!(after.remove_check(&id) && !after.remove_check(&id));
        assert!(after.add_fixed_check(service_check(&web, "")));
        after.deregister("web").unwrap();
        assert!(
            after.checks.is_empty(),
            "the maintenance check went with its service"
        );
    }
}
