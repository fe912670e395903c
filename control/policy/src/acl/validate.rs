//! Write-time checks of tokens, policies and roles, as Consul's ACL endpoints make them.
//!
//! Pure: they look at one object only. Checks that need the store (a linked policy exists, a
//! name is unique, the built-in policy's rules are unchanged) and the configured TTL bounds
//! (`acl.token_min_expiration_ttl` / `token_max_expiration_ttl`) belong to the caller.
//!
//! Names follow Consul (`acl/validation.go`, and the API docs' field descriptions):
//! policy names `[A-Za-z0-9_-]{1,128}`, role names `[A-Za-z0-9_-]{1,256}`, service and node
//! identity names lowercase `[a-z0-9]([a-z0-9_-]*[a-z0-9])?`, at most 256 characters.

use crate::duration::{DurationError, parse_duration};

use super::model::{
    ANONYMOUS_TOKEN_ACCESSOR_ID, ANONYMOUS_TOKEN_SECRET_ID, AclLink, AclNodeIdentity, AclPolicy,
    AclRole, AclServiceIdentity, AclToken,
};
use super::rules::{Rules, RulesError};

/// Longest policy name.
pub const MAX_POLICY_NAME_LEN: usize = 128;
/// Longest role name.
pub const MAX_ROLE_NAME_LEN: usize = 256;
/// Longest service or node identity name.
pub const MAX_IDENTITY_NAME_LEN: usize = 256;

/// Why a token, policy or role was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum AclValidationError {
    /// An ID field that is set but is not a UUID.
    #[error("{field} {value:?} is not a valid UUID")]
    InvalidUuid {
        /// `AccessorID`, `SecretID` or `ID`.
        field: &'static str,
        /// The value as given.
        value: String,
    },
    /// A policy name outside Consul's alphabet or length.
    #[error(
        "invalid policy name {name:?}: only alphanumeric characters, '-' and '_' are allowed, 1 to 128 of them"
    )]
    #[strum(serialize = "invalid_policy_name")]
    PolicyName {
        /// The name as given.
        name: String,
    },
    /// A role name outside Consul's alphabet or length.
    #[error(
        "invalid role name {name:?}: only alphanumeric characters, '-' and '_' are allowed, 1 to 256 of them"
    )]
    #[strum(serialize = "invalid_role_name")]
    RoleName {
        /// The name as given.
        name: String,
    },
    /// A link with neither `ID` nor `Name`.
    #[error("{field}[{index}] has neither ID nor Name")]
    EmptyLink {
        /// `Policies` or `Roles`.
        field: &'static str,
        /// Position in the list.
        index: usize,
    },
    /// A service identity without a name.
    #[error("ServiceIdentities[{index}] is missing the ServiceName field")]
    ServiceIdentityMissingName {
        /// Position in the list.
        index: usize,
    },
    /// A service identity name outside Consul's alphabet or length.
    #[error(
        "ServiceIdentities[{index}] has an invalid ServiceName {name:?}: only lowercase alphanumeric characters, '-' and '_' are allowed, starting and ending with an alphanumeric, at most 256"
    )]
    #[strum(serialize = "invalid_service_identity_name")]
    ServiceIdentityName {
        /// Position in the list.
        index: usize,
        /// The name as given.
        name: String,
    },
    /// A service identity with datacenters on a local token (Consul refuses it: a local token
    /// exists in one datacenter only).
    #[error("ServiceIdentities[{index}] ({name:?}) cannot list Datacenters on a local token")]
    ServiceIdentityDatacentersOnLocalToken {
        /// Position in the list.
        index: usize,
        /// The identity's service name.
        name: String,
    },
    /// A node identity without a name.
    #[error("NodeIdentities[{index}] is missing the NodeName field")]
    NodeIdentityMissingName {
        /// Position in the list.
        index: usize,
    },
    /// A node identity name outside Consul's alphabet or length.
    #[error(
        "NodeIdentities[{index}] has an invalid NodeName {name:?}: only lowercase alphanumeric characters, '-' and '_' are allowed, starting and ending with an alphanumeric, at most 256"
    )]
    #[strum(serialize = "invalid_node_identity_name")]
    NodeIdentityName {
        /// Position in the list.
        index: usize,
        /// The name as given.
        name: String,
    },
    /// A node identity without its datacenter.
    #[error("NodeIdentities[{index}] ({name:?}) is missing the Datacenter field")]
    NodeIdentityMissingDatacenter {
        /// Position in the list.
        index: usize,
        /// The identity's node name.
        name: String,
    },
    /// An empty string in a `Datacenters` list.
    #[error("{field} contains an empty datacenter name")]
    EmptyDatacenter {
        /// Path of the list, e.g. `Datacenters` or `ServiceIdentities[0].Datacenters`.
        field: String,
    },
    /// Both `ExpirationTime` and `ExpirationTTL` set.
    #[error("ExpirationTime and ExpirationTTL cannot both be set")]
    ExpirationBoth,
    /// `ExpirationTime` is not RFC 3339.
    #[error("ExpirationTime {value:?} is not an RFC 3339 time")]
    #[strum(serialize = "invalid_expiration_time")]
    ExpirationTime {
        /// The value as given.
        value: String,
    },
    /// `ExpirationTTL` is not a duration.
    #[error("ExpirationTTL {value:?} is invalid: {source}")]
    #[strum(serialize = "invalid_expiration_ttl")]
    ExpirationTtl {
        /// The value as given.
        value: String,
        /// Why it does not parse.
        #[source]
        source: DurationError,
    },
    /// `ExpirationTTL` is zero.
    #[error("ExpirationTTL must be greater than zero")]
    #[strum(serialize = "zero_expiration_ttl")]
    ExpirationTtlZero,
    /// The policy's `Rules` do not parse.
    #[error("invalid Rules: {0}")]
    Rules(#[source] RulesError),
}

impl AclValidationError {
    /// Stable machine-readable code, for API error bodies and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            AclValidationError::Rules(e) => e.code(),
            other => other.into(),
        }
    }
}

/// A policy name Consul accepts: `[A-Za-z0-9_-]{1,128}`.
pub fn is_valid_policy_name(name: &str) -> bool {
    (1..=MAX_POLICY_NAME_LEN).contains(&name.len()) && name.bytes().all(is_name_byte)
}

/// A role name Consul accepts: `[A-Za-z0-9_-]{1,256}`.
pub fn is_valid_role_name(name: &str) -> bool {
    (1..=MAX_ROLE_NAME_LEN).contains(&name.len()) && name.bytes().all(is_name_byte)
}

/// A service or node identity name Consul accepts: lowercase alphanumerics, `-` and `_`,
/// starting and ending with an alphanumeric, 1 to 256 characters.
pub fn is_valid_identity_name(name: &str) -> bool {
    let b = name.as_bytes();
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            b.len() <= MAX_IDENTITY_NAME_LEN
                && edge(first)
                && edge(last)
                && b.iter().all(|&c| edge(c) || c == b'-' || c == b'_')
        }
        _ => false,
    }
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// `8-4-4-4-12` hexadecimal digits, either case (what Consul's `uuid.ParseUUID` accepts).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Syntax and ranges of an RFC 3339 date-time as Go's `time.RFC3339` parses it:
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
pub fn is_rfc3339(s: &str) -> bool {
    fn num(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    }
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return false;
    }
    if b[16] != b':' {
        return false;
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(min), Some(sec)) = (
        num(&b[0..4]),
        num(&b[5..7]),
        num(&b[8..10]),
        num(&b[11..13]),
        num(&b[14..16]),
        num(&b[17..19]),
    ) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days || hour > 23 || min > 59 || sec > 59 {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest {
        b"Z" => true,
        [sign, h1, h2, b':', m1, m2] if *sign == b'+' || *sign == b'-' => {
            matches!((num(&[*h1, *h2]), num(&[*m1, *m2])), (Some(h), Some(m)) if h <= 23 && m <= 59)
        }
        _ => false,
    }
}

fn check_uuid(field: &'static str, value: &str) -> Result<(), AclValidationError> {
    if value.is_empty() || is_uuid(value) {
        Ok(())
    } else {
        Err(AclValidationError::InvalidUuid {
            field,
            value: value.into(),
        })
    }
}

fn check_links(field: &'static str, links: &[AclLink]) -> Result<(), AclValidationError> {
    match links
        .iter()
        .position(|l| l.id.is_empty() && l.name.is_empty())
    {
        Some(index) => Err(AclValidationError::EmptyLink { field, index }),
        None => Ok(()),
    }
}

fn check_datacenters(
    field: impl FnOnce() -> String,
    dcs: &[String],
) -> Result<(), AclValidationError> {
    if dcs.iter().any(String::is_empty) {
        Err(AclValidationError::EmptyDatacenter { field: field() })
    } else {
        Ok(())
    }
}

fn check_service_identities(
    ids: &[AclServiceIdentity],
    local_token: bool,
) -> Result<(), AclValidationError> {
    for (index, s) in ids.iter().enumerate() {
        if s.service_name.is_empty() {
            return Err(AclValidationError::ServiceIdentityMissingName { index });
        }
        if !is_valid_identity_name(&s.service_name) {
            return Err(AclValidationError::ServiceIdentityName {
                index,
                name: s.service_name.clone(),
            });
        }
        if local_token && !s.datacenters.is_empty() {
            return Err(AclValidationError::ServiceIdentityDatacentersOnLocalToken {
                index,
                name: s.service_name.clone(),
            });
        }
        check_datacenters(
            || format!("ServiceIdentities[{index}].Datacenters"),
            &s.datacenters,
        )?;
    }
    Ok(())
}

fn check_node_identities(ids: &[AclNodeIdentity]) -> Result<(), AclValidationError> {
    for (index, n) in ids.iter().enumerate() {
        if n.node_name.is_empty() {
            return Err(AclValidationError::NodeIdentityMissingName { index });
        }
        if !is_valid_identity_name(&n.node_name) {
            return Err(AclValidationError::NodeIdentityName {
                index,
                name: n.node_name.clone(),
            });
        }
        if n.datacenter.is_empty() {
            return Err(AclValidationError::NodeIdentityMissingDatacenter {
                index,
                name: n.node_name.clone(),
            });
        }
    }
    Ok(())
}

/// Checks a token as Consul's token create/update endpoint does (ACL token HTTP API, create).
///
/// IDs may be empty (the server generates them) but must be UUIDs when given (the anonymous
/// token's SecretID `anonymous` is the one exception); at most one of `ExpirationTime` and
/// `ExpirationTTL`; links name their target; identities are well formed.
pub fn validate_token(token: &AclToken) -> Result<(), AclValidationError> {
    check_uuid("AccessorID", &token.accessor_id)?;
    if !(token.accessor_id == ANONYMOUS_TOKEN_ACCESSOR_ID
        && token.secret_id == ANONYMOUS_TOKEN_SECRET_ID)
    {
        check_uuid("SecretID", &token.secret_id)?;
    }
    check_links("Policies", &token.policies)?;
    check_links("Roles", &token.roles)?;
    check_service_identities(&token.service_identities, token.local)?;
    check_node_identities(&token.node_identities)?;
    match (&token.expiration_time, &token.expiration_ttl) {
        (Some(_), Some(_)) => return Err(AclValidationError::ExpirationBoth),
        (Some(t), None) if !is_rfc3339(t) => {
            return Err(AclValidationError::ExpirationTime { value: t.clone() });
        }
        (None, Some(ttl)) => {
            let d = parse_duration(ttl).map_err(|source| AclValidationError::ExpirationTtl {
                value: ttl.clone(),
                source,
            })?;
            if d.is_zero() {
                return Err(AclValidationError::ExpirationTtlZero);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks a policy as Consul's policy create/update endpoint does, and returns its parsed rules.
pub fn validate_policy(policy: &AclPolicy) -> Result<Rules, AclValidationError> {
    check_uuid("ID", &policy.id)?;
    if !is_valid_policy_name(&policy.name) {
        return Err(AclValidationError::PolicyName {
            name: policy.name.clone(),
        });
    }
    check_datacenters(|| "Datacenters".into(), &policy.datacenters)?;
    Rules::parse(&policy.rules).map_err(AclValidationError::Rules)
}

/// Checks a role as Consul's role create/update endpoint does.
pub fn validate_role(role: &AclRole) -> Result<(), AclValidationError> {
    check_uuid("ID", &role.id)?;
    if !is_valid_role_name(&role.name) {
        return Err(AclValidationError::RoleName {
            name: role.name.clone(),
        });
    }
    check_links("Policies", &role.policies)?;
    check_service_identities(&role.service_identities, false)?;
    check_node_identities(&role.node_identities)
}
