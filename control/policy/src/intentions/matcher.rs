//! One L7 permission compiled into the matcher the proxy evaluates per request, and the
//! request as that matcher sees it.
//!
//! Split from `l7` (which evaluates) and `validate` (which checks structure on write) so both
//! use it without importing each other: `validate` compiles every permission it accepts,
//! so a pattern the store holds always compiles here, and `l7` builds its per-set index
//! through the same `validate::compile_permissions`. Regexes are anchored at both ends (Envoy's
//! `safe_regex` is a full match), run over bytes, and are bounded by [`REGEX_SIZE_LIMIT`].

use regex::bytes::{Regex, RegexBuilder};

use super::IntentionError;
use crate::model::{HeaderPermission, IntentionAction, IntentionPermission};

/// A request as the matcher sees it. Borrowed: evaluating allocates nothing unless a matched
/// header was sent more than once.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The request's method, matched against a permission's `Methods`.
    pub method: &'a http::Method,
    /// Path only, without the query string (`/a/b`, not `/a/b?c=d`).
    pub path: &'a str,
    /// The request's headers, matched against a permission's `Header` list.
    pub headers: &'a http::HeaderMap,
}

/// Largest compiled program a `PathRegex` or header `Regex` may produce, in bytes (the `regex`
/// crate's `size_limit`). 64 KiB admits any realistic route pattern (hundreds of alternations)
/// while bounding the memory a single permission can pin in every proxy; `a{1000}{1000}` style
/// patterns are rejected at write time.
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// Longest regex pattern accepted, in bytes. Checked before compiling so a huge pattern costs
/// nothing to reject.
pub const MAX_REGEX_LEN: usize = 4096;

/// Why a regex was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegexError {
    /// The pattern is longer than [`MAX_REGEX_LEN`].
    #[error("pattern is {len} bytes long, more than the limit of {max}")]
    TooLong {
        /// Length of the pattern, in bytes.
        len: usize,
        /// The limit, [`MAX_REGEX_LEN`].
        max: usize,
    },
    /// The compiled program is over [`REGEX_SIZE_LIMIT`].
    #[error("compiled pattern exceeds the size limit of {limit} bytes")]
    TooBig {
        /// The limit in bytes, [`REGEX_SIZE_LIMIT`].
        limit: usize,
    },
    /// The pattern does not parse; carries the parser's message.
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
    /// What a request this permission matches gets (its `Action`).
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

/// Compiles permission `index`, which `validate` has checked for structure (one path
/// matcher, one matcher per header, known methods): given two, the first would silently win.
/// Callers go through `validate::compile_permissions`, which checks first.
pub(super) fn compile_permission(
    index: usize,
    perm: &IntentionPermission,
) -> Result<CompiledPermission, IntentionError> {
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
