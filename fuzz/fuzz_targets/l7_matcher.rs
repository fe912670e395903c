//! Fuzzes the L7 matcher the proxy runs on every request: arbitrary `Permissions` (as JSON, or
//! built from structured parts; validated or not) and arbitrary request parts go through `IntentionSet::new` (regex
//! compilation) and `decide_http`. Any panic is a bug; so is a decision that contradicts its
//! reason, or an intention that passed `validate` failing to compile in the set.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mesh_policy::intentions::{DefaultPolicy, HttpReason, HttpRequest, IntentionSet, validate};
use mesh_policy::model::{
    HeaderPermission, HttpPermission, Intention, IntentionAction, IntentionPermission,
};

/// Where the permissions come from: JSON as an operator would write it (also exercises the
/// serde model), or built from structured parts (reaches the matcher on nearly every input).
#[derive(Debug, Arbitrary)]
enum Permissions<'a> {
    Json(&'a str),
    Parts(Vec<PermParts<'a>>),
}

#[derive(Debug, Arbitrary)]
struct PermParts<'a> {
    allow: bool,
    /// 0 none, 1 exact, 2 prefix, 3 regex.
    path_kind: u8,
    path: &'a str,
    methods: Vec<u8>,
    headers: Vec<HeaderParts<'a>>,
}

#[derive(Debug, Arbitrary)]
struct HeaderParts<'a> {
    name: &'a str,
    /// 0 present, 1 exact, 2 prefix, 3 suffix, 4 regex.
    kind: u8,
    value: &'a str,
    invert: bool,
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

impl Permissions<'_> {
    fn build(&self) -> Option<Vec<IntentionPermission>> {
        match self {
            Permissions::Json(s) => serde_json::from_str(s).ok(),
            Permissions::Parts(parts) => Some(parts.iter().map(PermParts::build).collect()),
        }
    }
}

impl PermParts<'_> {
    fn build(&self) -> IntentionPermission {
        let mut http = HttpPermission::default();
        match self.path_kind % 4 {
            1 => http.path_exact = self.path.to_string(),
            2 => http.path_prefix = self.path.to_string(),
            3 => http.path_regex = self.path.to_string(),
            _ => {}
        }
        http.methods = self
            .methods
            .iter()
            .map(|m| METHODS[usize::from(*m) % METHODS.len()].to_string())
            .collect();
        http.header = self
            .headers
            .iter()
            .map(|h| {
                let mut p = HeaderPermission {
                    name: h.name.to_string(),
                    invert: h.invert,
                    ..Default::default()
                };
                match h.kind % 5 {
                    0 => p.present = true,
                    1 => p.exact = h.value.to_string(),
                    2 => p.prefix = h.value.to_string(),
                    3 => p.suffix = h.value.to_string(),
                    _ => p.regex = h.value.to_string(),
                }
                p
            })
            .collect();
        IntentionPermission {
            action: if self.allow {
                IntentionAction::Allow
            } else {
                IntentionAction::Deny
            },
            http: Some(http),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    permissions: Permissions<'a>,
    default_allow: bool,
    /// Source matches the intention exactly, or through the `*` wildcard.
    wildcard_source: bool,
    method: &'a [u8],
    path: &'a str,
    headers: Vec<(&'a [u8], &'a [u8])>,
}

fuzz_target!(|input: Input<'_>| {
    let Some(permissions) = input.permissions.build() else {
        return;
    };
    if permissions.is_empty() {
        return;
    }
    let intention = Intention {
        id: String::new(),
        source_name: if input.wildcard_source { "*" } else { "web" }.to_string(),
        source_ns: "default".to_string(),
        destination_name: "api".to_string(),
        destination_ns: "default".to_string(),
        source_type: "consul".to_string(),
        action: None,
        permissions,
        description: String::new(),
        meta: Default::default(),
        precedence: 0,
        create_index: 0,
        modify_index: 0,
    };
    let valid = validate(&intention).is_ok();
    let default = if input.default_allow {
        DefaultPolicy::Allow
    } else {
        DefaultPolicy::Deny
    };
    let set = IntentionSet::new([intention.clone()], default);

    let Ok(method) = http::Method::from_bytes(input.method) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    for (k, v) in input.headers {
        // What hyper hands the proxy is always a valid name and value; anything else is
        // refused before the matcher (and is exercised here by being skipped).
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k),
            http::HeaderValue::from_bytes(v),
        ) {
            headers.append(k, v);
        }
    }
    let req = HttpRequest {
        method: &method,
        path: input.path,
        headers: &headers,
    };
    let d = set.decide_http("default", "web", "default", "api", &req);
    match &d.reason {
        HttpReason::Permission { index, action, .. } => {
            assert!(*index < intention.permissions.len());
            assert_eq!(d.allowed, *action == IntentionAction::Allow);
        }
        HttpReason::NoPermissionMatched { default: p, .. } => assert_eq!(d.allowed, p.allows()),
        HttpReason::InvalidPermissions { .. } => {
            assert!(!valid, "a validated intention failed to compile: {d}");
            assert!(!d.allowed);
        }
        other => panic!("an L7 intention matched, yet the reason is {other}"),
    }
    // The L4 decision of the same set still denies an intention with permissions.
    assert!(!set.decide("web", "api").allowed);
});
