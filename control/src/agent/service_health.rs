//! `/v1/agent/health/service/{id,name}/...`: a local service's health as one word and one
//! status code, from the agent's own checks (no server involved, so it answers without a
//! leader), as Consul's `AggregatedStatus`: any maintenance check makes it `maintenance`,
//! else the worst of its checks and its node's; no check is `passing`. The code a load
//! balancer reads: 200 passing, 429 warning, 503 critical or maintenance.

use axum::http::StatusCode;

use super::maintenance;
use crate::model::{HealthCheck, HealthStatus};

/// A service's aggregated health: the worst check status, or maintenance above all (the
/// derived order: `Status` by `HealthStatus`'s own order, passing < warning < critical, then
/// `Maintenance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Aggregated {
    Status(HealthStatus),
    Maintenance,
}

impl Aggregated {
    /// Of the checks deciding a service's health (its own and its node's).
    pub fn of<'a>(checks: impl IntoIterator<Item = &'a HealthCheck>) -> Self {
        checks
            .into_iter()
            .map(|c| {
                if maintenance::is_maintenance(&c.check_id) {
                    Self::Maintenance
                } else {
                    Self::Status(c.status)
                }
            })
            .max()
            .unwrap_or(Self::Status(HealthStatus::Passing))
    }

    /// Consul's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status(s) => s.as_str(),
            Self::Maintenance => "maintenance",
        }
    }

    /// The status code Consul answers it with.
    pub fn status_code(self) -> StatusCode {
        match self {
            Self::Status(HealthStatus::Passing) => StatusCode::OK,
            Self::Status(HealthStatus::Warning) => StatusCode::TOO_MANY_REQUESTS,
            Self::Status(HealthStatus::Critical) | Self::Maintenance => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

/// Serialized as its word (`AggregatedStatus` in the JSON answers).
impl serde::Serialize for Aggregated {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: &str, status: HealthStatus) -> HealthCheck {
        HealthCheck {
            node: "n".into(),
            check_id: id.into(),
            name: String::new(),
            status,
            notes: String::new(),
            output: String::new(),
            service_id: String::new(),
            service_name: String::new(),
            create_index: 0,
            modify_index: 0,
        }
    }

    #[test]
    fn worst_check_decides_and_maintenance_wins() {
        assert_eq!(
            Aggregated::of([]),
            Aggregated::Status(HealthStatus::Passing)
        );
        let w = [
            check("a", HealthStatus::Passing),
            check("b", HealthStatus::Warning),
        ];
        assert_eq!(
            Aggregated::of(&w).status_code(),
            StatusCode::TOO_MANY_REQUESTS
        );
        let m = [
            check("a", HealthStatus::Critical),
            check(maintenance::NODE_CHECK_ID, HealthStatus::Critical),
        ];
        assert_eq!(Aggregated::of(&m).as_str(), "maintenance");
        assert_eq!(
            Aggregated::of(&m).status_code(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
