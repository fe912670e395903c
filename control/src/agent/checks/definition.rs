//! The check definition as Consul clients send it, and its validation into something runnable.
//!
//! The wire struct keeps durations and the status as the client wrote them so that validation
//! can name the offending field in its error (serde errors cannot); [`ValidatedCheck`] holds the
//! parsed values the runner uses.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{CheckError, DEFAULT_TIMEOUT};
use crate::duration::{DurationError, format_duration, parse_duration};
use crate::model::HealthStatus;

/// Consul's floor for `DeregisterCriticalServiceAfter` (`check_deregister_interval_min`, 1m):
/// its reaper runs every 30s, so a shorter value could not be honoured anyway.
pub const MIN_DEREGISTER_CRITICAL_SERVICE_AFTER: Duration = Duration::from_secs(60);

/// A Go `time.Duration` as Consul's JSON carries it: a string such as `"10s"` or an integer
/// number of nanoseconds. Parsed during validation so errors can name the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationField {
    Text(String),
    Nanos(i64),
}

impl DurationField {
    /// The duration, with `None` for zero: Consul treats a zero `TTL`/`Interval`/`Timeout` (and an
    /// empty string) as "not set".
    fn parse(&self, field: &'static str) -> Result<Option<Duration>, CheckError> {
        let d = match self {
            DurationField::Text(s) if s.is_empty() => Duration::ZERO,
            DurationField::Text(s) => {
                parse_duration(s).map_err(|source| CheckError::InvalidDuration { field, source })?
            }
            DurationField::Nanos(n) => {
                let n = u64::try_from(*n).map_err(|_| CheckError::InvalidDuration {
                    field,
                    source: DurationError::Negative {
                        input: n.to_string(),
                    },
                })?;
                Duration::from_nanos(n)
            }
        };
        Ok((!d.is_zero()).then_some(d))
    }
}

impl Serialize for DurationField {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DurationField::Text(t) => s.serialize_str(t),
            DurationField::Nanos(n) => s.serialize_i64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for DurationField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationField;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Go duration string such as \"10s\" or integer nanoseconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationField, E> {
                Ok(DurationField::Text(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationField, E> {
                Ok(DurationField::Nanos(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationField, E> {
                i64::try_from(v)
                    .map(DurationField::Nanos)
                    .map_err(|_| E::custom(format!("duration of {v}ns is too large")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl From<Duration> for DurationField {
    fn from(d: Duration) -> Self {
        DurationField::Text(format_duration(d))
    }
}

/// A health check definition in Consul's JSON shape (`/v1/agent/check/register`, or a service's
/// `Check`/`Checks`).
///
/// Unknown fields are ignored, as Consul clients send many (`Namespace`, `Partition`, …). The
/// check kinds Consul has and we do not run (`Args`, `GRPC`, `UDP`, `H2PING`, alias, Docker,
/// OS service) are captured only so validation can reject them by name. Consul follows
/// redirects for HTTP checks and honours `DisableRedirects`; this agent does not follow
/// redirects, so a 3xx is critical.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDefinition {
    #[serde(rename = "CheckID", default, skip_serializing_if = "Option::is_none")]
    pub check_id: Option<String>,
    /// `/v1/agent/check/register` spells the ID `ID`; service definitions spell it `CheckID`.
    #[serde(rename = "ID", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    #[serde(
        rename = "ServiceID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub service_id: String,
    /// Initial status; Consul's default is `critical` for every kind of check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(rename = "TTL", default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<DurationField>,
    /// `host:port`.
    #[serde(rename = "TCP", default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(rename = "HTTP", default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub header: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    /// Accepted for compatibility; only `http://` URLs are supported, so it never takes effect.
    #[serde(rename = "TLSSkipVerify", default)]
    pub tls_skip_verify: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<DurationField>,
    #[serde(default)]
    pub success_before_passing: i64,
    /// Defaults to `FailuresBeforeCritical` (Consul 1.11+).
    #[serde(default)]
    pub failures_before_warning: Option<i64>,
    #[serde(default)]
    pub failures_before_critical: i64,

    // Kinds Consul supports and this agent does not; see `validate`.
    #[serde(default, skip_serializing)]
    args: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    script: Option<serde_json::Value>,
    #[serde(rename = "GRPC", default, skip_serializing)]
    grpc: Option<serde_json::Value>,
    #[serde(rename = "UDP", default, skip_serializing)]
    udp: Option<serde_json::Value>,
    #[serde(rename = "H2PING", default, skip_serializing)]
    h2ping: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    alias_service: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    alias_node: Option<serde_json::Value>,
    #[serde(rename = "DockerContainerID", default, skip_serializing)]
    docker_container_id: Option<serde_json::Value>,
    #[serde(rename = "OSService", default, skip_serializing)]
    os_service: Option<serde_json::Value>,
}

/// A TCP check's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpCheck {
    /// `host:port`, resolved at every probe (as Go's `net.Dial` does).
    pub addr: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// An HTTP check's request.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    pub url: Uri,
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub interval: Duration,
    pub timeout: Duration,
}

/// What a check does.
#[derive(Debug, Clone)]
pub enum CheckKind {
    /// Passive: the service reports its own state through pass/warn/fail within `ttl`.
    Ttl {
        ttl: Duration,
    },
    Tcp(TcpCheck),
    /// Boxed: the request (headers, body) is much larger than the other kinds.
    Http(Box<HttpCheck>),
}

impl CheckKind {
    /// Consul's name of the kind (`Type` in `/v1/agent/checks`).
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Ttl { .. } => "ttl",
            CheckKind::Tcp(_) => "tcp",
            CheckKind::Http(_) => "http",
        }
    }
}

/// A definition that passed validation, with every value parsed and defaulted.
#[derive(Debug, Clone)]
pub struct ValidatedCheck {
    pub name: String,
    pub notes: String,
    pub service_id: String,
    pub kind: CheckKind,
    pub initial_status: HealthStatus,
    /// Already raised to [`MIN_DEREGISTER_CRITICAL_SERVICE_AFTER`], as Consul does.
    pub deregister_critical_service_after: Option<Duration>,
    pub success_before_passing: u32,
    pub failures_before_warning: u32,
    pub failures_before_critical: u32,
}

impl CheckDefinition {
    /// The check's ID: `CheckID`, else `ID`, else `Name` (Consul defaults the ID to the name).
    pub fn effective_id(&self) -> Option<&str> {
        [&self.check_id, &self.id]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .find(|s| !s.is_empty())
            .or((!self.name.is_empty()).then_some(self.name.as_str()))
    }

    /// Checks that the definition describes exactly one runnable check and parses it.
    ///
    /// Rules, from Consul's `CheckType.Validate` where it has one: exactly one of `TTL`, `TCP`,
    /// `HTTP`; `Interval` is required (non-zero) for TCP and HTTP; `Interval` and `TTL` together
    /// are an error; `Timeout` defaults to 10s. Intervals under Consul's 1s minimum are not an
    /// error here: like Consul, the runner raises them (see [`RunnerConfig`](super::RunnerConfig)).
    pub fn validate(&self) -> Result<CheckKind, CheckError> {
        let unsupported = [
            ("Args", self.args.is_some()),
            ("Script", self.script.is_some()),
            ("GRPC", self.grpc.is_some()),
            ("UDP", self.udp.is_some()),
            ("H2PING", self.h2ping.is_some()),
            ("AliasService", self.alias_service.is_some()),
            ("AliasNode", self.alias_node.is_some()),
            ("DockerContainerID", self.docker_container_id.is_some()),
            ("OSService", self.os_service.is_some()),
        ];
        if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(CheckError::UnsupportedKind { field });
        }

        let ttl = parse_opt(&self.ttl, "TTL")?;
        let interval = parse_opt(&self.interval, "Interval")?;
        let timeout = parse_opt(&self.timeout, "Timeout")?.unwrap_or(DEFAULT_TIMEOUT);
        let tcp = self.tcp.as_deref().filter(|s| !s.is_empty());
        let http = self.http.as_deref().filter(|s| !s.is_empty());

        let kinds: Vec<&'static str> = [
            ("TTL", ttl.is_some()),
            ("TCP", tcp.is_some()),
            ("HTTP", http.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        match kinds.len() {
            0 => return Err(CheckError::NoKind),
            1 => {}
            _ => return Err(CheckError::MultipleKinds { kinds }),
        }

        if let Some(ttl) = ttl {
            if interval.is_some() {
                return Err(CheckError::IntervalWithTtl);
            }
            return Ok(CheckKind::Ttl { ttl });
        }
        if let Some(addr) = tcp {
            let interval = interval.ok_or(CheckError::MissingInterval { kind: "TCP" })?;
            validate_tcp_addr(addr)?;
            return Ok(CheckKind::Tcp(TcpCheck {
                addr: addr.to_string(),
                interval,
                timeout,
            }));
        }
        let url = http.unwrap_or_default();
        let interval = interval.ok_or(CheckError::MissingInterval { kind: "HTTP" })?;
        Ok(CheckKind::Http(Box::new(HttpCheck {
            url: validate_url(url)?,
            method: self.parse_method()?,
            headers: self.parse_headers()?,
            body: Bytes::from(self.body.clone()),
            interval,
            timeout,
        })))
    }

    /// [`validate`](Self::validate) plus the settings common to every kind.
    pub fn to_validated(&self) -> Result<ValidatedCheck, CheckError> {
        if let (Some(check_id), Some(id)) = (&self.check_id, &self.id)
            && !check_id.is_empty()
            && !id.is_empty()
            && check_id != id
        {
            return Err(CheckError::ConflictingIds {
                check_id: check_id.clone(),
                id: id.clone(),
            });
        }
        let kind = self.validate()?;
        let initial_status = match self.status.as_deref() {
            None | Some("") => HealthStatus::Critical,
            Some("passing") => HealthStatus::Passing,
            Some("warning") => HealthStatus::Warning,
            Some("critical") => HealthStatus::Critical,
            Some(other) => {
                return Err(CheckError::InvalidStatus {
                    value: other.to_string(),
                });
            }
        };
        let deregister = parse_opt(
            &self.deregister_critical_service_after,
            "DeregisterCriticalServiceAfter",
        )?
        .map(|d| d.max(MIN_DEREGISTER_CRITICAL_SERVICE_AFTER));
        let success_before_passing = counter(self.success_before_passing, "SuccessBeforePassing")?;
        let failures_before_critical =
            counter(self.failures_before_critical, "FailuresBeforeCritical")?;
        let failures_before_warning = match self.failures_before_warning {
            Some(n) => counter(n, "FailuresBeforeWarning")?,
            None => failures_before_critical,
        };
        Ok(ValidatedCheck {
            name: self.name.clone(),
            notes: self.notes.clone(),
            service_id: self.service_id.clone(),
            kind,
            initial_status,
            deregister_critical_service_after: deregister,
            success_before_passing,
            failures_before_warning,
            failures_before_critical,
        })
    }

    fn parse_method(&self) -> Result<Method, CheckError> {
        match self.method.as_deref() {
            None | Some("") => Ok(Method::GET),
            Some(m) => Method::from_bytes(m.as_bytes()).map_err(|_| CheckError::InvalidMethod {
                value: m.to_string(),
            }),
        }
    }

    fn parse_headers(&self) -> Result<HeaderMap, CheckError> {
        let mut headers = HeaderMap::new();
        for (name, values) in &self.header {
            let invalid = |reason| CheckError::InvalidHeader {
                name: name.clone(),
                reason,
            };
            let hn = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid("not a valid header name"))?;
            for v in values {
                let hv = HeaderValue::from_str(v)
                    .map_err(|_| invalid("value contains characters not allowed in a header"))?;
                headers.append(hn.clone(), hv);
            }
        }
        // Consul's defaults, unless the definition sets them: some services answer differently
        // to (or allow-list) the health checker's user agent.
        headers
            .entry(http::header::USER_AGENT)
            .or_insert(HeaderValue::from_static("Consul Health Check"));
        headers
            .entry(http::header::ACCEPT)
            .or_insert(HeaderValue::from_static("text/plain, text/*, */*"));
        Ok(headers)
    }
}

fn parse_opt(
    field_value: &Option<DurationField>,
    field: &'static str,
) -> Result<Option<Duration>, CheckError> {
    match field_value {
        Some(v) => v.parse(field),
        None => Ok(None),
    }
}

fn counter(value: i64, field: &'static str) -> Result<u32, CheckError> {
    if value < 0 {
        return Err(CheckError::NegativeCounter { field, value });
    }
    Ok(u32::try_from(value).unwrap_or(u32::MAX))
}

fn validate_tcp_addr(addr: &str) -> Result<(), CheckError> {
    let invalid = |reason| CheckError::InvalidTcpAddress {
        value: addr.to_string(),
        reason,
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected host:port"))?;
    if host.is_empty() || host == "[]" {
        return Err(invalid("missing host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(invalid(
            "an IPv6 host must be in brackets, as in [::1]:8080",
        ));
    }
    port.parse::<u16>()
        .map_err(|_| invalid("port must be a number from 0 to 65535"))?;
    Ok(())
}

fn validate_url(url: &str) -> Result<Uri, CheckError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| CheckError::InvalidUrl {
            value: url.to_string(),
            reason: e.to_string(),
        })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(CheckError::HttpsUnsupported {
                url: url.to_string(),
            });
        }
        _ => {
            return Err(CheckError::InvalidUrl {
                value: url.to_string(),
                reason: "expected an absolute http:// URL".to_string(),
            });
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(CheckError::InvalidUrl {
            value: url.to_string(),
            reason: "missing host".to_string(),
        });
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(json: &str) -> CheckDefinition {
        serde_json::from_str(json).expect("definition parses")
    }

    #[test]
    fn http_check_with_consul_defaults() {
        let d = def(
            r#"{"ID": "web", "Name": "web health", "HTTP": "http://127.0.0.1:8080/health",
                      "Interval": "10s", "Namespace": "default", "Definition": {"x": 1}}"#,
        );
        assert_eq!(d.effective_id(), Some("web"));
        let v = d.to_validated().unwrap();
        assert_eq!(v.initial_status, HealthStatus::Critical);
        assert_eq!(v.failures_before_warning, 0);
        let CheckKind::Http(h) = v.kind else {
            panic!("not http: {:?}", v.kind)
        };
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.timeout, Duration::from_secs(10));
        assert_eq!(h.interval, Duration::from_secs(10));
        assert_eq!(h.headers["user-agent"], "Consul Health Check");
    }

    #[test]
    fn durations_accept_integer_nanoseconds() {
        let d = def(r#"{"TCP": "127.0.0.1:1", "Interval": 1500000000, "Timeout": "250ms"}"#);
        let CheckKind::Tcp(t) = d.validate().unwrap() else {
            panic!("not tcp")
        };
        assert_eq!(t.interval, Duration::from_millis(1500));
        assert_eq!(t.timeout, Duration::from_millis(250));
    }

    #[test]
    fn ttl_check_and_options() {
        let d = def(r#"{"CheckID": "t", "TTL": "30s", "Status": "passing",
                      "DeregisterCriticalServiceAfter": "10s", "FailuresBeforeCritical": 3}"#);
        let v = d.to_validated().unwrap();
        assert!(matches!(v.kind, CheckKind::Ttl { ttl } if ttl == Duration::from_secs(30)));
        assert_eq!(v.initial_status, HealthStatus::Passing);
        // Raised to Consul's one-minute floor.
        assert_eq!(
            v.deregister_critical_service_after,
            Some(Duration::from_secs(60))
        );
        // FailuresBeforeWarning defaults to FailuresBeforeCritical.
        assert_eq!(v.failures_before_warning, 3);
    }

    #[test]
    fn name_is_the_default_id() {
        assert_eq!(def(r#"{"Name": "n"}"#).effective_id(), Some("n"));
        assert_eq!(def(r#"{}"#).effective_id(), None);
    }

    fn err(json: &str) -> CheckError {
        match def(json).to_validated() {
            Ok(v) => panic!("{json} was accepted: {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn rejects_invalid_definitions() {
        assert!(matches!(err(r#"{"Name": "x"}"#), CheckError::NoKind));
        assert!(matches!(err(r#"{"TTL": "0s"}"#), CheckError::NoKind));
        let two = err(r#"{"TTL": "10s", "TCP": "127.0.0.1:1", "Interval": "1s"}"#);
        assert!(
            matches!(&two, CheckError::MultipleKinds { kinds } if kinds == &["TTL", "TCP"]),
            "{two:?}"
        );
        assert!(two.to_string().contains("TTL and TCP"), "{two}");
        assert!(matches!(
            err(r#"{"TCP": "127.0.0.1:1"}"#),
            CheckError::MissingInterval { kind: "TCP" }
        ));
        let missing = err(r#"{"HTTP": "http://127.0.0.1/"}"#);
        assert_eq!(missing.to_string(), "Interval is required for HTTP checks");
        assert!(matches!(
            err(r#"{"TTL": "10s", "Interval": "10s"}"#),
            CheckError::IntervalWithTtl
        ));
        let bad = err(r#"{"TCP": "127.0.0.1:1", "Interval": "10 seconds"}"#);
        assert!(
            matches!(
                bad,
                CheckError::InvalidDuration {
                    field: "Interval",
                    ..
                }
            ),
            "{bad:?}"
        );
        assert!(bad.to_string().starts_with("invalid Interval:"), "{bad}");
        assert!(matches!(
            err(r#"{"TTL": -5}"#),
            CheckError::InvalidDuration { field: "TTL", .. }
        ));
        let https =
            err(r#"{"HTTP": "https://127.0.0.1/", "Interval": "10s", "TLSSkipVerify": true}"#);
        assert!(matches!(https, CheckError::HttpsUnsupported { .. }));
        assert!(https.to_string().contains("only http:// URLs"), "{https}");
        assert!(matches!(
            err(r#"{"HTTP": "/health", "Interval": "10s"}"#),
            CheckError::InvalidUrl { .. }
        ));
        assert!(matches!(
            err(r#"{"TCP": "localhost", "Interval": "10s"}"#),
            CheckError::InvalidTcpAddress { .. }
        ));
        assert!(matches!(
            err(r#"{"TCP": "::1:80", "Interval": "10s"}"#),
            CheckError::InvalidTcpAddress { .. }
        ));
        assert!(matches!(
            err(r#"{"TTL": "1s", "Status": "ok"}"#),
            CheckError::InvalidStatus { .. }
        ));
        assert!(matches!(
            err(r#"{"TTL": "1s", "SuccessBeforePassing": -1}"#),
            CheckError::NegativeCounter {
                field: "SuccessBeforePassing",
                ..
            }
        ));
        assert!(matches!(
            err(r#"{"Args": ["/bin/true"], "Interval": "10s"}"#),
            CheckError::UnsupportedKind { field: "Args" }
        ));
        assert!(matches!(
            err(r#"{"HTTP": "http://h/", "Interval": "1s", "Method": "GE T"}"#),
            CheckError::InvalidMethod { .. }
        ));
        assert!(matches!(
            err(r#"{"HTTP": "http://h/", "Interval": "1s", "Header": {"X A": ["1"]}}"#),
            CheckError::InvalidHeader { .. }
        ));
        assert!(matches!(
            err(r#"{"ID": "a", "CheckID": "b", "TTL": "1s"}"#),
            CheckError::ConflictingIds { .. }
        ));
    }

    #[test]
    fn accepts_ipv6_tcp_target() {
        let d = def(r#"{"TCP": "[::1]:80", "Interval": "10s"}"#);
        assert!(matches!(d.validate(), Ok(CheckKind::Tcp(_))));
    }

    #[test]
    fn serializes_back_in_consul_shape() {
        let d = def(r#"{"ID": "x", "TTL": "10s", "FailuresBeforeCritical": 2}"#);
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["ID"], "x");
        assert_eq!(v["TTL"], "10s");
        assert_eq!(v["FailuresBeforeCritical"], 2);
    }
}
