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
//! Regexes are compiled once, when the [`IntentionSet`] is built, with [`REGEX_SIZE_LIMIT`];
//! [`compile_permission`] is also what `validate` runs on write, so a pattern the store
//! accepted always compiles here. If it does not anyway (a snapshot from elsewhere), the
//! intention fails closed: every request it decides is denied with
//! [`HttpReason::InvalidPermissions`].

use std::fmt;
use std::sync::Arc;

use regex::bytes::{Regex, RegexBuilder};

use super::validate::validate_permission;
use super::{DefaultPolicy, IntentionError, IntentionKey, IntentionSet};
use crate::model::{HeaderPermission, Intention, IntentionAction, IntentionPermission};

/// Largest compiled program a `PathRegex` or header `Regex` may produce, in bytes (the `regex`
/// crate's `size_limit`). 64 KiB admits any realistic route pattern (hundreds of alternations)
/// while bounding the memory a single permission can pin in every proxy; `a{1000}{1000}` style
/// patterns are rejected at write time.
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// Longest regex pattern accepted, in bytes. Checked before compiling so a huge pattern costs
/// nothing to reject.
pub const MAX_REGEX_LEN: usize = 4096;

/// A request as the matcher sees it. Borrowed: evaluating allocates nothing unless a matched
/// header was sent more than once.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a http::Method,
    /// Path only, without the query string (`/a/b`, not `/a/b?c=d`).
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
}

/// Outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpDecision {
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
        key: Arc<IntentionKey>,
        index: usize,
        action: IntentionAction,
    },
    /// Intention `key` has `Permissions` but none matched: the default policy decided.
    NoPermissionMatched {
        key: Arc<IntentionKey>,
        default: DefaultPolicy,
    },
    /// An L4 intention (one with an `Action`) decided.
    Intention {
        key: Arc<IntentionKey>,
        action: IntentionAction,
    },
    /// A matching intention had neither `Action` nor `Permissions`: deny (as at L4).
    NoAction { key: Arc<IntentionKey> },
    /// A matching intention's permissions could not be compiled (only possible for input that
    /// bypassed `validate`): deny rather than guess.
    InvalidPermissions {
        key: Arc<IntentionKey>,
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

/// Why a regex was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegexError {
    #[error("pattern is {len} bytes long, more than the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("compiled pattern exceeds the size limit of {limit} bytes")]
    TooBig { limit: usize },
    #[error("{0}")]
    Syntax(String),
}

/// Compiles a `PathRegex` or header `Regex` the way the matcher uses it: anchored at both ends
/// (a full match, like Envoy's `safe_regex`), over bytes, with [`REGEX_SIZE_LIMIT`].
pub fn compile_regex(pattern: &str) -> Result<Regex, RegexError> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(RegexError::TooLong {
            len: pattern.len(),
            max: MAX_REGEX_LEN,
        });
    }
    // Parse the bare pattern first (syntax only: cheap) so an error points into the user's
    // text, not our wrapper: `\A(?:...)\z` would shift positions and could "fix" an
    // unbalanced `)` (`a)|(b` would compile wrapped). Compiling happens once, wrapped.
    regex_syntax::ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| RegexError::Syntax(e.to_string()))?;
    RegexBuilder::new(&format!(r"\A(?:{pattern})\z"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => RegexError::TooBig { limit },
            other => RegexError::Syntax(other.to_string()),
        })
}

/// How a permission matches the path.
#[derive(Debug, Clone)]
enum PathMatch {
    Any,
    Exact(Box<str>),
    Prefix(Box<str>),
    Regex(Regex),
}

#[derive(Debug, Clone)]
enum ValueMatch {
    Present,
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Suffix(Box<[u8]>),
    Regex(Regex),
}

#[derive(Debug, Clone)]
struct HeaderMatch {
    name: http::HeaderName,
    value: ValueMatch,
    invert: bool,
}

impl HeaderMatch {
    fn matches(&self, headers: &http::HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let Some(first) = values.next() else {
            // Absent: only "Present, inverted" matches (Envoy's header matcher).
            return self.invert && matches!(self.value, ValueMatch::Present);
        };
        let joined;
        let value: &[u8] = match values.next() {
            None => first.as_bytes(),
            Some(second) => {
                let mut v = Vec::with_capacity(first.len() + second.len() + 1);
                v.extend_from_slice(first.as_bytes());
                for more in std::iter::once(second).chain(values) {
                    v.push(b',');
                    v.extend_from_slice(more.as_bytes());
                }
                joined = v;
                &joined
            }
        };
        let hit = match &self.value {
            ValueMatch::Present => true,
            ValueMatch::Exact(e) => value == &e[..],
            ValueMatch::Prefix(p) => value.starts_with(p),
            ValueMatch::Suffix(s) => value.ends_with(s),
            ValueMatch::Regex(r) => r.is_match(value),
        };
        hit != self.invert
    }
}

/// One permission, ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledPermission {
    action: IntentionAction,
    path: PathMatch,
    /// Empty means any method.
    methods: Vec<http::Method>,
    headers: Vec<HeaderMatch>,
}

impl CompiledPermission {
    pub fn action(&self) -> IntentionAction {
        self.action
    }

    /// Whether every part of this permission's `HTTP` block matches `req`. The parts are
    /// pure and all must hold, so the cheap method check runs before any regex.
    pub fn matches(&self, req: &HttpRequest<'_>) -> bool {
        (self.methods.is_empty() || self.methods.contains(req.method))
            && match &self.path {
                PathMatch::Any => true,
                PathMatch::Exact(p) => req.path == &**p,
                PathMatch::Prefix(p) => req.path.starts_with(&**p),
                PathMatch::Regex(r) => r.is_match(req.path.as_bytes()),
            }
            && self.headers.iter().all(|h| h.matches(req.headers))
    }
}

/// Validates and compiles permission `index`. `validate` calls this on write, so the store only
/// holds permissions that compile.
pub fn compile_permission(
    index: usize,
    perm: &IntentionPermission,
) -> Result<CompiledPermission, IntentionError> {
    validate_permission(index, perm)?;
    let Some(http) = perm.http.as_ref() else {
        return Err(IntentionError::MissingHttp { index });
    };
    let regex = |field: String, pattern: &str| {
        compile_regex(pattern).map_err(|e| IntentionError::InvalidRegex {
            index,
            field,
            reason: e.to_string(),
        })
    };
    let path = if !http.path_exact.is_empty() {
        PathMatch::Exact(http.path_exact.as_str().into())
    } else if !http.path_prefix.is_empty() {
        PathMatch::Prefix(http.path_prefix.as_str().into())
    } else if !http.path_regex.is_empty() {
        PathMatch::Regex(regex("PathRegex".to_string(), &http.path_regex)?)
    } else {
        PathMatch::Any
    };
    let mut methods = Vec::with_capacity(http.methods.len());
    for m in &http.methods {
        methods.push(http::Method::from_bytes(m.as_bytes()).map_err(|_| {
            IntentionError::InvalidMethod {
                index,
                method: m.clone(),
            }
        })?);
    }
    let mut headers = Vec::with_capacity(http.header.len());
    for (hi, h) in http.header.iter().enumerate() {
        headers.push(compile_header(index, hi, h, &regex)?);
    }
    Ok(CompiledPermission {
        action: perm.action,
        path,
        methods,
        headers,
    })
}

fn compile_header(
    index: usize,
    header: usize,
    h: &HeaderPermission,
    regex: &impl Fn(String, &str) -> Result<Regex, IntentionError>,
) -> Result<HeaderMatch, IntentionError> {
    let name = http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
        IntentionError::InvalidHeaderName {
            index,
            header,
            name: h.name.clone(),
        }
    })?;
    let bytes = |s: &str| -> Box<[u8]> { s.as_bytes().into() };
    let value = if h.present {
        ValueMatch::Present
    } else if !h.exact.is_empty() {
        ValueMatch::Exact(bytes(&h.exact))
    } else if !h.prefix.is_empty() {
        ValueMatch::Prefix(bytes(&h.prefix))
    } else if !h.suffix.is_empty() {
        ValueMatch::Suffix(bytes(&h.suffix))
    } else if !h.regex.is_empty() {
        ValueMatch::Regex(regex(format!("Header[{header}].Regex"), &h.regex)?)
    } else {
        return Err(IntentionError::HeaderMatchers {
            index,
            header,
            count: 0,
        });
    };
    Ok(HeaderMatch {
        name,
        value,
        invert: h.invert,
    })
}

/// Compiles every permission of one intention; the first error wins.
pub fn compile_permissions(
    perms: &[IntentionPermission],
) -> Result<Vec<CompiledPermission>, IntentionError> {
    perms
        .iter()
        .enumerate()
        .map(|(i, p)| compile_permission(i, p))
        .collect()
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
                        allowed: p.action == IntentionAction::Allow,
                        reason: HttpReason::Permission {
                            key,
                            index,
                            action: p.action,
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
