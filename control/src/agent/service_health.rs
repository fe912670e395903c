//! `/v1/agent/health/service/{id,name}/...`: a local service's health as one word and one
//! status code, from the agent's own checks (no server involved, so it answers without a
//! leader), as Consul's `AggregatedStatus`: any maintenance check makes it `maintenance`,
//! else the worst of its checks and its node's; no check is `passing`. The code a load
//! balancer reads: 200 passing, 429 warning, 503 critical or maintenance.

use axum::http::StatusCode;

use super::maintenance;
use crate::model::{HealthCheck, HealthStatus};

/// A service's aggregated health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Aggregated {
    Passing,
    Warning,
    Critical,
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
                    match c.status {
                        HealthStatus::Passing => Self::Passing,
                        HealthStatus::Warning => Self::Warning,
                        HealthStatus::Critical => Self::Critical,
                    }
                }
            })
            .max()
            .unwrap_or(Self::Passing)
    }

    /// Consul's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Maintenance => "maintenance",
        }
    }

    /// The status code Consul answers it with.
    pub fn status_code(self) -> StatusCode {
        match self {
            Self::Passing => StatusCode::OK,
            Self::Warning => StatusCode::TOO_MANY_REQUESTS,
            Self::Critical | Self::Maintenance => StatusCode::SERVICE_UNAVAILABLE,
        }
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
        assert_eq!(Aggregated::of([]), Aggregated::Passing);
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
