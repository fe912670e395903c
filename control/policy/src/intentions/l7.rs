//! L7 (HTTP) authorization: evaluating an intention's `Permissions` against one request.
//!
//! The proxy calls [`IntentionSet::decide_http`] for every HTTP/1.1, HTTP/2 or gRPC request on a
//! destination whose protocol is not `tcp`; `meshctl intention check --http-*` calls the same
//! function, so the CLI and the data plane cannot disagree.
//!
//! Semantics are Consul's (`service-intentions` config entry, `Permissions`), which Consul
//! hands to Envoy's RBAC filter:
//!
//! * The highest-precedence intention matching `src => dst` decides, exactly as at L4
//!   ([`IntentionSet::decide_ns`] picks the same one). An L4 intention decides by its `Action`.
//! * An intention with `Permissions` evaluates them top to bottom; the first permission whose
//!   `HTTP` block matches decides by its `Action`. No match falls back to the default policy
//!   (it does *not* fall through to lower-precedence intentions).
//! * Within one `HTTP` block every given part must match (path, methods, each header).
//!   `PathExact` compares the whole path, `PathPrefix` its start, `PathRegex` must match the
//!   whole path (Envoy `safe_regex` is a full match). The path never includes the query.
//! * Header names are case-insensitive. A header sent several times is matched on its values
//!   joined with `,` (Envoy's `getAllOfHeaderAsString`). `Invert` negates the match, but an
//!   absent header only matches `Present` + `Invert` (Envoy's header matcher: a missing header
//!   fails every value match, inverted or not).
//!
//! Regexes are compiled once, when the [`IntentionSet`] is built (`matcher`, with its
//! `REGEX_SIZE_LIMIT`), through `validate::compile_permissions`, which is also what `validate` runs on write, so a pattern the store
//! accepted always compiles here. If it does not anyway (a snapshot from elsewhere), the
//! intention fails closed: every request it decides is denied with
//! [`HttpReason::InvalidPermissions`].

use std::fmt;
use std::sync::Arc;

use super::matcher::CompiledPermission;
pub use super::matcher::HttpRequest;
use super::validate::compile_permissions;
use super::{DefaultPolicy, IntentionError, IntentionKey, IntentionSet};
use crate::model::{Intention, IntentionAction};

/// Outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpDecision {
    /// Whether the request may go on to the application.
    pub allowed: bool,
    /// Which rule decided. `Display` gives one short phrase for a log line.
    pub reason: HttpReason,
}

impl fmt::Display for HttpDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        write!(f, "{verdict}: {}", self.reason)
    }
}

/// Why an HTTP request was allowed or denied. Keys are shared (`Arc`), so building a reason
/// does not allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpReason {
    /// Permission `index` (0-based position in `Permissions`) of intention `key` matched.
    Permission {
        /// Source and destination of the intention whose permission matched.
        key: Arc<IntentionKey>,
        /// Position of the matching permission in `Permissions` (0-based); the first match wins.
        index: usize,
        /// That permission's `Action`, which is the decision.
        action: IntentionAction,
    },
    /// Intention `key` has `Permissions` but none matched: the default policy decided.
    NoPermissionMatched {
        /// Source and destination of the L7 intention.
        key: Arc<IntentionKey>,
        /// The default policy, which decided.
        default: DefaultPolicy,
    },
    /// An L4 intention (one with an `Action`) decided.
    Intention {
        /// Source and destination of the L4 intention.
        key: Arc<IntentionKey>,
        /// The intention's `Action`, which is the decision.
        action: IntentionAction,
    },
    /// A matching intention had neither `Action` nor `Permissions`: deny (as at L4).
    NoAction {
        /// Source and destination of the intention.
        key: Arc<IntentionKey>,
    },
    /// A matching intention's permissions could not be compiled (only possible for input that
    /// bypassed `validate`): deny rather than guess.
    InvalidPermissions {
        /// Source and destination of the intention.
        key: Arc<IntentionKey>,
        /// Why its permissions do not compile.
        error: Arc<IntentionError>,
    },
    /// No intention matched: the default policy decided.
    DefaultPolicy(DefaultPolicy),
}

impl HttpReason {
    /// The intention that decided, if one did.
    pub fn key(&self) -> Option<&IntentionKey> {
        match self {
            HttpReason::Permission { key, .. }
            | HttpReason::NoPermissionMatched { key, .. }
            | HttpReason::Intention { key, .. }
            | HttpReason::NoAction { key }
            | HttpReason::InvalidPermissions { key, .. } => Some(key),
            HttpReason::DefaultPolicy(_) => None,
        }
    }

    /// Index of the matched permission, when a permission decided.
    pub fn permission_index(&self) -> Option<usize> {
        match self {
            HttpReason::Permission { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// A label from a fixed set, for metrics (`permission`, `no_permission_matched`,
    /// `intention`, `no_action`, `invalid_permissions`, `default_policy`).
    pub fn kind(&self) -> &'static str {
        match self {
            HttpReason::Permission { .. } => "permission",
            HttpReason::NoPermissionMatched { .. } => "no_permission_matched",
            HttpReason::Intention { .. } => "intention",
            HttpReason::NoAction { .. } => "no_action",
            HttpReason::InvalidPermissions { .. } => "invalid_permissions",
            HttpReason::DefaultPolicy(_) => "default_policy",
        }
    }
}

impl fmt::Display for HttpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpReason::Permission { key, index, action } => write!(
                f,
                "Permissions[{index}] ({}) of L7 intention {key}",
                action.as_str()
            ),
            HttpReason::NoPermissionMatched { key, default } => write!(
                f,
                "no permission of L7 intention {key} matched; default policy ({default})"
            ),
            HttpReason::Intention { key, action } => {
                write!(f, "L4 intention {key} ({})", action.as_str())
            }
            HttpReason::NoAction { key } => {
                write!(f, "intention {key} without Action or Permissions (deny)")
            }
            HttpReason::InvalidPermissions { key, error } => {
                write!(f, "intention {key} has invalid Permissions (deny): {error}")
            }
            HttpReason::DefaultPolicy(p) => write!(f, "no intention matched; default policy ({p})"),
        }
    }
}

/// What an intention does to a request, prepared once per [`IntentionSet`].
#[derive(Debug, Clone)]
enum Rules {
    L4(Option<IntentionAction>),
    Permissions(Vec<CompiledPermission>),
    Invalid(Arc<IntentionError>),
}

#[derive(Debug, Clone)]
struct Entry {
    key: Arc<IntentionKey>,
    rules: Rules,
}

/// The compiled form of every intention of a set, in the set's order.
#[derive(Debug, Clone, Default)]
pub(super) struct L7Index {
    entries: Vec<Entry>,
}

impl L7Index {
    pub(super) fn build(intentions: &[Intention]) -> Self {
        let entries = intentions
            .iter()
            .map(|i| Entry {
                key: Arc::new(IntentionKey::of(i)),
                rules: if i.permissions.is_empty() {
                    Rules::L4(i.action)
                } else {
                    match compile_permissions(&i.permissions) {
                        Ok(p) => Rules::Permissions(p),
                        Err(e) => Rules::Invalid(Arc::new(e)),
                    }
                },
            })
            .collect();
        Self { entries }
    }
}

impl IntentionSet {
    /// L7 decision for one request from `src_ns/src` to `dst_ns/dst`.
    ///
    /// The highest-precedence intention matching src→dst decides (the same one
    /// [`decide_ns`](Self::decide_ns) picks); an L4 intention decides by its `Action`; an
    /// intention with `Permissions` is evaluated top to bottom, first match wins, no match
    /// falls back to the default policy.
    pub fn decide_http(
        &self,
        src_ns: &str,
        src: &str,
        dst_ns: &str,
        dst: &str,
        req: &HttpRequest<'_>,
    ) -> HttpDecision {
        let Some(pos) = self.deciding(src_ns, src, dst_ns, dst) else {
            return HttpDecision {
                allowed: self.default.allows(),
                reason: HttpReason::DefaultPolicy(self.default),
            };
        };
        let entry = &self.l7.entries[pos];
        let key = Arc::clone(&entry.key);
        match &entry.rules {
            Rules::L4(Some(action)) => HttpDecision {
                allowed: *action == IntentionAction::Allow,
                reason: HttpReason::Intention {
                    key,
                    action: *action,
                },
            },
            Rules::L4(None) => HttpDecision {
                allowed: false,
                reason: HttpReason::NoAction { key },
            },
            Rules::Invalid(error) => HttpDecision {
                allowed: false,
                reason: HttpReason::InvalidPermissions {
                    key,
                    error: Arc::clone(error),
                },
            },
            Rules::Permissions(perms) => {
                match perms.iter().enumerate().find(|(_, p)| p.matches(req)) {
                    Some((index, p)) => HttpDecision {
                        allowed: p.action() == IntentionAction::Allow,
                        reason: HttpReason::Permission {
                            key,
                            index,
                            action: p.action(),
                        },
                    },
                    None => HttpDecision {
                        allowed: self.default.allows(),
                        reason: HttpReason::NoPermissionMatched {
                            key,
                            default: self.default,
                        },
                    },
                }
            }
        }
    }

    /// [`decide_http`](Self::decide_http) with both sides in the default namespace.
    pub fn decide_http_default_ns(
        &self,
        src: &str,
        dst: &str,
        req: &HttpRequest<'_>,
    ) -> HttpDecision {
        self.decide_http(
            super::DEFAULT_NAMESPACE,
            src,
            super::DEFAULT_NAMESPACE,
            dst,
            req,
        )
    }
}
