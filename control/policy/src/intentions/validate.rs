//! Write-time validation of intentions, mirroring Consul's `service-intentions` rules.
//!
//! The state machine runs this before it stores an intention, so every rule here is one that
//! Consul enforces on write (`agent/structs/config_entry_intentions.go`, `validate`), with the
//! field named in each message so an API client can show the user what to fix. The decision
//! code in the parent module never depends on an intention being valid, but it only promises
//! Consul's precedence table for intentions that pass.
//!
//! L7 permissions are checked by compiling them exactly as the matcher will
//! (`matcher`): unknown fields are refused by serde (`deny_unknown_fields` on
//! the model), and a regex that does not parse or exceeds `matcher::REGEX_SIZE_LIMIT` is refused
//! here, with its field named, so no request ever meets a bad pattern.

use crate::model::{HeaderPermission, HttpPermission, Intention, IntentionPermission};

use super::matcher::{CompiledPermission, compile_permission};
use super::{IntentionError, WILDCARD};

/// Longest `Description` / meta value Consul accepts (`metaValueMaxLength`).
pub const MAX_DESCRIPTION_LEN: usize = 512;
/// Most `Meta` pairs Consul accepts (`metaMaxKeyPairs`).
pub const MAX_META_PAIRS: usize = 64;
/// Longest `Meta` key Consul accepts (`metaKeyMaxLength`).
pub const MAX_META_KEY_LEN: usize = 128;
/// Longest `Meta` value Consul accepts (`metaValueMaxLength`).
pub const MAX_META_VALUE_LEN: usize = 512;

/// HTTP methods an L7 permission may name (Consul's `isValidHTTPMethod`, RFC 9110 §9 + PATCH).
pub const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

/// Validates an intention before it is written. Returns the first problem found, in the order
/// Consul checks them.
pub fn validate(i: &Intention) -> Result<(), IntentionError> {
    for (field, value) in [
        ("SourceNS", &i.source_ns),
        ("SourceName", &i.source_name),
        ("DestinationNS", &i.destination_ns),
        ("DestinationName", &i.destination_name),
    ] {
        if value.is_empty() {
            return Err(IntentionError::Empty { field });
        }
    }
    validate_wildcards(
        "DestinationNS",
        "DestinationName",
        &i.destination_ns,
        &i.destination_name,
    )?;
    validate_wildcards("SourceNS", "SourceName", &i.source_ns, &i.source_name)?;

    if i.description.len() > MAX_DESCRIPTION_LEN {
        return Err(IntentionError::DescriptionTooLong {
            len: i.description.len(),
            max: MAX_DESCRIPTION_LEN,
        });
    }
    if i.meta.len() > MAX_META_PAIRS {
        return Err(IntentionError::TooManyMeta {
            count: i.meta.len(),
            max: MAX_META_PAIRS,
        });
    }
    for (k, v) in &i.meta {
        if k.len() > MAX_META_KEY_LEN {
            return Err(IntentionError::MetaKeyTooLong {
                key: k.clone(),
                max: MAX_META_KEY_LEN,
            });
        }
        if v.len() > MAX_META_VALUE_LEN {
            return Err(IntentionError::MetaValueTooLong {
                key: k.clone(),
                max: MAX_META_VALUE_LEN,
            });
        }
    }

    // An intention is either L4 (Action) or L7 (Permissions), never both, never neither.
    match (i.action, i.permissions.is_empty()) {
        (Some(_), false) => return Err(IntentionError::ActionWithPermissions),
        (None, true) => return Err(IntentionError::MissingAction),
        _ => {}
    }
    if !i.permissions.is_empty() && (i.destination_ns == WILDCARD || i.destination_name == WILDCARD)
    {
        return Err(IntentionError::PermissionsOnWildcardDestination);
    }

    if i.source_type != "consul" {
        return Err(IntentionError::SourceType {
            value: i.source_type.clone(),
        });
    }

    // Compiling runs the structural checks too, and proves every regex builds within the size
    // limit the proxy will use: a pattern stored is a pattern the matcher can run.
    compile_permissions(&i.permissions)?;
    Ok(())
}

/// Only a whole field may be `*`, and an exact name may not follow a wildcard namespace
/// (`*/web` would mean "web in any namespace", which Consul's precedence table has no row for).
fn validate_wildcards(
    ns_field: &'static str,
    name_field: &'static str,
    ns: &str,
    name: &str,
) -> Result<(), IntentionError> {
    if ns != WILDCARD && ns.contains(WILDCARD) {
        return Err(IntentionError::PartialWildcard {
            field: ns_field,
            value: ns.to_string(),
        });
    }
    if name != WILDCARD {
        if name.contains(WILDCARD) {
            return Err(IntentionError::PartialWildcard {
                field: name_field,
                value: name.to_string(),
            });
        }
        if ns == WILDCARD {
            return Err(IntentionError::ExactAfterWildcardNamespace {
                field: name_field,
                value: name.to_string(),
            });
        }
    }
    Ok(())
}

/// Checks and compiles every permission of one intention; the first error wins. The write
/// path (`validate`) and the matcher's index (`l7`) both compile through here, so neither can
/// compile a permission whose structure was not checked.
pub(super) fn compile_permissions(
    perms: &[IntentionPermission],
) -> Result<Vec<CompiledPermission>, IntentionError> {
    perms
        .iter()
        .enumerate()
        .map(|(index, perm)| {
            validate_permission(index, perm)?;
            compile_permission(index, perm)
        })
        .collect()
}

fn validate_permission(index: usize, perm: &IntentionPermission) -> Result<(), IntentionError> {
    // `Action` is a required enum in the model, so serde already rejected anything but
    // allow/deny; only the HTTP block is left to check.
    let http: &HttpPermission = perm
        .http
        .as_ref()
        .ok_or(IntentionError::MissingHttp { index })?;

    let mut parts = 0;
    for (field, value) in [
        ("PathExact", &http.path_exact),
        ("PathPrefix", &http.path_prefix),
    ] {
        if !value.is_empty() {
            parts += 1;
            if !value.starts_with('/') {
                return Err(IntentionError::PathNotAbsolute {
                    index,
                    field,
                    value: value.clone(),
                });
            }
        }
    }
    if !http.path_regex.is_empty() {
        parts += 1;
    }
    if parts > 1 {
        return Err(IntentionError::ConflictingPaths { index });
    }

    for (header, h) in http.header.iter().enumerate() {
        validate_header(index, header, h)?;
        parts += 1;
    }

    if !http.methods.is_empty() {
        let mut seen: Vec<&str> = Vec::with_capacity(http.methods.len());
        for m in &http.methods {
            if !HTTP_METHODS.contains(&m.as_str()) {
                return Err(IntentionError::InvalidMethod {
                    index,
                    method: m.clone(),
                });
            }
            if seen.contains(&m.as_str()) {
                return Err(IntentionError::DuplicateMethod {
                    index,
                    method: m.clone(),
                });
            }
            seen.push(m);
        }
        parts += 1;
    }

    if parts == 0 {
        return Err(IntentionError::EmptyHttp { index });
    }
    Ok(())
}

fn validate_header(
    index: usize,
    header: usize,
    h: &HeaderPermission,
) -> Result<(), IntentionError> {
    if h.name.is_empty() {
        return Err(IntentionError::HeaderMissingName { index, header });
    }
    let count = usize::from(h.present)
        + [&h.exact, &h.prefix, &h.suffix, &h.regex]
            .iter()
            .filter(|v| !v.is_empty())
            .count();
    if count != 1 {
        return Err(IntentionError::HeaderMatchers {
            index,
            header,
            count,
        });
    }
    Ok(())
}
