//! HTTP request normalization before L7 authorization (Consul's `mesh` config entry,
//! `HTTP.Incoming.RequestNormalization`, which Consul hands to Envoy's connection manager).
//!
//! Why: permissions match the request path, and the application resolves that path itself. If
//! the two read the same bytes differently, a rule can be bypassed: `/v1/../admin` matches an
//! allow on `/v1/` while every HTTP server serves `/admin`. So the path is normalized once,
//! here, the decision is made on the normalized path, and the normalized path is what the
//! application receives: policy and application see the same path.
//!
//! What [`normalize_path`] does, in Envoy's order (`maybeNormalizePath`):
//!
//! 1. Checks the escapes: every `%` must start `%HH` (else [`PathError::BadEscape`]), `%00` is
//!    refused ([`PathError::EncodedNul`]), and the fully decoded path must be UTF-8 (overlong
//!    forms such as `%C0%AE` are not UTF-8, so a lenient decoder cannot turn them into `.`).
//!    Only visible ASCII may appear literally.
//! 2. Escaped slashes `%2F` and `%5C` per [`EscapedSlashesAction`] (kept by default: they are
//!    data inside a segment, not separators).
//! 3. RFC 3986 §6.2.2 normalization, unless `InsecureDisablePathNormalization`: percent-encoded
//!    unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, other escapes get upper-case
//!    hex, a literal `\` becomes `/` (as browsers and Envoy's canonicalizer treat it), and dot
//!    segments are removed (§5.2.4). Decoding happens once: `%252e` stays `%252E`.
//!    A dot segment carrying `;` parameters (`..;x`) is refused ([`PathError::DotSegmentParams`]):
//!    servlet containers strip the parameters and climb, other servers treat it as a name, so
//!    no single reading is safe.
//! 4. Adjacent slashes are merged when `MergeSlashes` is set (off by default, as in Consul).
//!
//! Headers whose names contain `_` are allowed, dropped or refused per
//! [`UnderscoresAction`] ([`check_headers`]).
//!
//! The result is idempotent: normalizing a normalized path changes nothing (property-tested),
//! so the decision for a path is the decision for its normalized form. Pure code, no I/O; the
//! proxy and `meshctl intention check --http-path` both call it.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `RequestNormalization` of the `mesh` config entry, in Consul's JSON shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RequestNormalization {
    /// Skips step 3 (RFC 3986 normalization). Insecure: rules then see raw paths.
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure_disable_path_normalization: bool,
    /// Merges adjacent slashes (`//a///b` → `/a/b`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub merge_slashes: bool,
    /// Consul's `PathWithEscapedSlashesAction`: what step 2 does with `%2F` / `%5C`.
    #[serde(default, skip_serializing_if = "EscapedSlashesAction::is_default")]
    pub path_with_escaped_slashes_action: EscapedSlashesAction,
    /// Consul's `HeadersWithUnderscoresAction`: what happens to headers whose names contain `_`.
    #[serde(default, skip_serializing_if = "UnderscoresAction::is_default")]
    pub headers_with_underscores_action: UnderscoresAction,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What to do with `%2F` / `%5C` in a path (Envoy's `PathWithEscapedSlashesAction`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum EscapedSlashesAction {
    /// Consul's `""`/`DEFAULT`: keep them (hex upper-cased).
    #[default]
    KeepUnchanged,
    /// Refuse the request with 400.
    RejectRequest,
    /// Decode them and redirect the client to the normalized path (HTTP 307).
    UnescapeAndRedirect,
    /// Decode them (they become separators) and forward.
    UnescapeAndForward,
}

/// What to do with headers whose names contain `_` (Envoy's `HeadersWithUnderscoresAction`).
/// Some servers (CGI-style, nginx's `underscores_in_headers`) map `X_User` and `X-User` to the
/// same variable, so a rule on one can be dodged with the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum UnderscoresAction {
    /// Consul's `""`/`ALLOW`.
    #[default]
    Allow,
    /// Remove such headers before matching and forwarding.
    DropHeader,
    /// Refuse the request with 400.
    RejectRequest,
}

macro_rules! consul_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Consul's spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }

            fn is_default(&self) -> bool {
                *self == $ty::default()
            }

            /// Every accepted spelling, for error messages.
            pub const NAMES: &'static [&'static str] = &[$($name),+];
        }

        impl std::str::FromStr for $ty {
            type Err = String;

            /// Consul's names; `""` and `DEFAULT` mean the default.
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    "" | "DEFAULT" => Ok($ty::default()),
                    $($name => Ok($ty::$variant),)+
                    other => Err(format!(
                        "{} must be one of DEFAULT, {} (got {other:?})",
                        $what,
                        Self::NAMES.join(", ")
                    )),
                }
            }
        }

        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

consul_enum!(EscapedSlashesAction, "PathWithEscapedSlashesAction", {
    KeepUnchanged => "KEEP_UNCHANGED",
    RejectRequest => "REJECT_REQUEST",
    UnescapeAndRedirect => "UNESCAPE_AND_REDIRECT",
    UnescapeAndForward => "UNESCAPE_AND_FORWARD",
});

consul_enum!(UnderscoresAction, "HeadersWithUnderscoresAction", {
    Allow => "ALLOW",
    DropHeader => "DROP_HEADER",
    RejectRequest => "REJECT_REQUEST",
});

impl fmt::Display for RequestNormalization {
    /// One line for logs and `meshctl intention check`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.insecure_disable_path_normalization {
            f.write_str("path normalization DISABLED (InsecureDisablePathNormalization)")?;
        } else {
            f.write_str("RFC 3986 path normalization")?;
        }
        write!(
            f,
            ", MergeSlashes={}, PathWithEscapedSlashesAction={}, HeadersWithUnderscoresAction={}",
            self.merge_slashes,
            self.path_with_escaped_slashes_action.as_str(),
            self.headers_with_underscores_action.as_str()
        )
    }
}

/// Why a request is refused (HTTP 400) before any rule is looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding at byte {at} of the path")]
    BadEscape {
        /// Byte offset of that `%` in the raw path.
        at: usize,
    },
    /// `%00` in the path: a NUL no server should see.
    #[error("encoded NUL (%00) in the path")]
    EncodedNul,
    /// The path's percent-decoded bytes are not UTF-8 (e.g. overlong `%C0%AE`).
    #[error("the percent-decoded path is not valid UTF-8")]
    InvalidUtf8,
    /// A literal byte outside visible ASCII (control, space, DEL or non-ASCII).
    #[error("character {byte:#04x} is not allowed in a path")]
    BadCharacter {
        /// The offending byte.
        byte: u8,
    },
    /// `%2F` or `%5C` in the path while `PathWithEscapedSlashesAction` is `REJECT_REQUEST`.
    #[error("escaped slash (%2F or %5C) in the path (PathWithEscapedSlashesAction=REJECT_REQUEST)")]
    EscapedSlash,
    /// A `.` or `..` segment carrying `;` parameters (`..;x`), which servers read differently.
    #[error("dot segment with parameters ({segment:?}) in the path")]
    DotSegmentParams {
        /// The segment as the client sent it (`..;x`).
        segment: String,
    },
    /// The path does not start with `/`.
    #[error("the path must start with '/'")]
    NotAbsolute,
    /// A header name contains `_` while `HeadersWithUnderscoresAction` is `REJECT_REQUEST`.
    #[error("header {name:?} contains an underscore (HeadersWithUnderscoresAction=REJECT_REQUEST)")]
    HeaderUnderscore {
        /// The header's name as the client sent it.
        name: String,
    },
}

impl PathError {
    /// Stable label for metrics and logs.
    pub fn code(&self) -> &'static str {
        self.into()
    }
}

/// What to do with a request's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathOutcome<'a> {
    /// Authorize and forward this path (borrowed when nothing changed).
    Forward(Cow<'a, str>),
    /// Answer with a redirect to this path (`UNESCAPE_AND_REDIRECT` found escaped slashes).
    /// The redirect target is what the client will send next, so it is authorized then.
    Redirect(String),
}

impl PathOutcome<'_> {
    /// The path the outcome carries.
    pub fn path(&self) -> &str {
        match self {
            PathOutcome::Forward(p) => p,
            PathOutcome::Redirect(p) => p,
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Step 1: escapes well formed, no `%00`, decoded bytes UTF-8, literal bytes visible ASCII.
fn check_escapes(path: &[u8]) -> Result<bool, PathError> {
    if !path.contains(&b'%') {
        // The common case: nothing to decode, no allocation.
        return match path.iter().find(|b| !(0x21..=0x7e).contains(*b)) {
            Some(&byte) => Err(PathError::BadCharacter { byte }),
            None => Ok(false),
        };
    }
    let mut decoded = Vec::with_capacity(path.len());
    let mut any_escape = false;
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                path.get(i + 1).copied().and_then(hex),
                path.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape { at: i });
            };
            let v = hi << 4 | lo;
            if v == 0 {
                return Err(PathError::EncodedNul);
            }
            decoded.push(v);
            any_escape = true;
            i += 3;
        } else {
            if !(0x21..=0x7e).contains(&b) {
                return Err(PathError::BadCharacter { byte: b });
            }
            decoded.push(b);
            i += 1;
        }
    }
    if any_escape && std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    Ok(any_escape)
}

/// Whether `path` might change under normalization; `false` means it is already normal.
fn needs_work(path: &str, opts: &RequestNormalization) -> bool {
    let b = path.as_bytes();
    b.iter().any(|&c| c == b'%' || c == b'\\' || c == b';')
        || path.contains("/.")
        || (opts.merge_slashes && path.contains("//"))
}

/// Normalizes a request path (without its query) per `opts`. See the module docs.
///
/// `*` (the asterisk-form of `OPTIONS *`) passes unchanged; any other path must start with `/`.
pub fn normalize_path<'a>(
    path: &'a str,
    opts: &RequestNormalization,
) -> Result<PathOutcome<'a>, PathError> {
    if path == "*" {
        return Ok(PathOutcome::Forward(Cow::Borrowed(path)));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let any_escape = check_escapes(path.as_bytes())?;
    if !needs_work(path, opts) {
        return Ok(PathOutcome::Forward(Cow::Borrowed(path)));
    }
    // Step 2: escaped slashes.
    let mut redirect = false;
    let mut work: Vec<u8> = Vec::with_capacity(path.len());
    let src = path.as_bytes();
    let mut i = 0;
    while i < src.len() {
        if any_escape && src[i] == b'%' {
            let v = hex(src[i + 1]).unwrap_or(0) << 4 | hex(src[i + 2]).unwrap_or(0);
            if v == b'/' || v == b'\\' {
                match opts.path_with_escaped_slashes_action {
                    EscapedSlashesAction::KeepUnchanged => {}
                    EscapedSlashesAction::RejectRequest => return Err(PathError::EscapedSlash),
                    EscapedSlashesAction::UnescapeAndRedirect => {
                        redirect = true;
                        work.push(v);
                        i += 3;
                        continue;
                    }
                    EscapedSlashesAction::UnescapeAndForward => {
                        work.push(v);
                        i += 3;
                        continue;
                    }
                }
            }
        }
        work.push(src[i]);
        i += 1;
    }
    // Step 3: RFC 3986 normalization.
    if !opts.insecure_disable_path_normalization {
        work = decode_unreserved(&work);
        work = remove_dot_segments(&work)?;
    }
    // Step 4: merge slashes.
    if opts.merge_slashes {
        work.dedup_by(|a, b| *a == b'/' && *b == b'/');
    }
    // Only ASCII went in and only ASCII was produced (decoded bytes are unreserved ASCII).
    let out = String::from_utf8(work).map_err(|_| PathError::InvalidUtf8)?;
    if redirect {
        return Ok(PathOutcome::Redirect(out));
    }
    Ok(PathOutcome::Forward(if out == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(out)
    }))
}

/// Decodes `%HH` of unreserved characters, upper-cases the hex of the others, turns `\` into
/// `/`. Input escapes were checked by [`check_escapes`].
fn decode_unreserved(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'%' if i + 2 < p.len() && hex(p[i + 1]).is_some() && hex(p[i + 2]).is_some() => {
                let v = hex(p[i + 1]).unwrap_or(0) << 4 | hex(p[i + 2]).unwrap_or(0);
                if is_unreserved(v) {
                    out.push(v);
                } else {
                    out.push(b'%');
                    out.push(p[i + 1].to_ascii_uppercase());
                    out.push(p[i + 2].to_ascii_uppercase());
                }
                i += 3;
            }
            b'\\' => {
                out.push(b'/');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// RFC 3986 §5.2.4 on a path that starts with `/`, done segment by segment. A trailing `.` or
/// `..` leaves a trailing slash (`/a/b/..` → `/a/`), as the RFC's algorithm does.
fn remove_dot_segments(p: &[u8]) -> Result<Vec<u8>, PathError> {
    // Segments after the leading '/'.
    let segs: Vec<&[u8]> = p[1..].split(|&c| c == b'/').collect();
    let mut out: Vec<&[u8]> = Vec::with_capacity(segs.len());
    let last = segs.len() - 1;
    for (i, seg) in segs.iter().enumerate() {
        let bare = seg.split(|&c| c == b';').next().unwrap_or(seg);
        let is_dot = bare == b".";
        let is_dotdot = bare == b"..";
        if (is_dot || is_dotdot) && bare.len() != seg.len() {
            return Err(PathError::DotSegmentParams {
                segment: String::from_utf8_lossy(seg).into_owned(),
            });
        }
        if is_dot || is_dotdot {
            if is_dotdot {
                out.pop();
            }
            if i == last {
                // "/a/." and "/a/.." end in a directory: keep the trailing slash.
                out.push(b"");
            }
            continue;
        }
        out.push(seg);
    }
    let mut v = Vec::with_capacity(p.len());
    for seg in &out {
        v.push(b'/');
        v.extend_from_slice(seg);
    }
    if v.is_empty() {
        v.push(b'/');
    }
    Ok(v)
}

/// What to do with a request's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOutcome {
    /// Nothing to change.
    Keep,
    /// Remove these headers (names contain `_`) before matching and forwarding.
    Drop(Vec<http::header::HeaderName>),
}

/// Applies `HeadersWithUnderscoresAction` to `headers`.
pub fn check_headers(
    headers: &http::HeaderMap,
    opts: &RequestNormalization,
) -> Result<HeaderOutcome, PathError> {
    if opts.headers_with_underscores_action == UnderscoresAction::Allow {
        return Ok(HeaderOutcome::Keep);
    }
    let mut drop = Vec::new();
    for name in headers.keys() {
        if name.as_str().contains('_') {
            if opts.headers_with_underscores_action == UnderscoresAction::RejectRequest {
                return Err(PathError::HeaderUnderscore {
                    name: name.as_str().to_string(),
                });
            }
            drop.push(name.clone());
        }
    }
    Ok(if drop.is_empty() {
        HeaderOutcome::Keep
    } else {
        HeaderOutcome::Drop(drop)
    })
}

/// Both checks on one request: drops headers as configured, and returns what to do with the
/// path. What the proxy and `meshctl intention check` run before [`super::IntentionSet::decide_http`].
pub fn normalize_request<'a>(
    path: &'a str,
    headers: &mut http::HeaderMap,
    opts: &RequestNormalization,
) -> Result<PathOutcome<'a>, PathError> {
    if let HeaderOutcome::Drop(names) = check_headers(headers, opts)? {
        for n in names {
            headers.remove(n);
        }
    }
    normalize_path(path, opts)
}
