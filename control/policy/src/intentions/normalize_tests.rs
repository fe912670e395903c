//! Tests of request normalization (`normalize`): RFC 3986 §5.2.4 and §6.2.2 examples, each
//! escaped-slash and underscore action, the refusals, and properties: normalization is
//! idempotent, its output is in normal form, and a decision on a path equals the decision on
//! its normalized form.

use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;

use super::normalize::*;
use super::*;
use crate::model::{HttpPermission, IntentionPermission};

fn norm(path: &str) -> Result<String, PathError> {
    normalize_path(path, &RequestNormalization::default()).map(|o| o.path().to_string())
}

fn with(f: impl FnOnce(&mut RequestNormalization)) -> RequestNormalization {
    let mut o = RequestNormalization::default();
    f(&mut o);
    o
}

#[test]
fn dot_segments_and_unreserved_escapes() {
    let cases = [
        ("/", "/"),
        ("/v1/items", "/v1/items"),
        ("/v1/../admin", "/admin"),
        ("/v1/./../admin", "/admin"),
        ("/v1/items/../../admin/x", "/admin/x"),
        ("/v1/%2e%2e/admin", "/admin"),
        ("/v1/%2E%2E/admin", "/admin"),
        ("/v1/.%2e/admin", "/admin"),
        ("/v1/%2e./admin", "/admin"),
        ("/v1/%2e%2e/%61dmin", "/admin"),
        ("/%61dmin", "/admin"),
        ("/%41%5A%61%7a%30%39%2D%2E%5F%7E", "/AZaz09-._~"),
        ("/../../admin", "/admin"),
        ("/v1/..", "/"),
        ("/v1/.", "/v1/"),
        ("/v1/x/..", "/v1/"),
        ("/v1/...", "/v1/..."),
        ("/v1/..a/b", "/v1/..a/b"),
        ("/a/./b/./c", "/a/b/c"),
        // Not unreserved: kept encoded, hex upper-cased; decoding happens once.
        ("/a%2fb", "/a%2Fb"),
        ("/a%3fb%20c", "/a%3Fb%20c"),
        ("/v1/%252e%252e/admin", "/v1/%252e%252e/admin"),
        ("/x/%25", "/x/%25"),
        // A literal backslash is a separator.
        ("/v1/..\\admin", "/admin"),
        ("/\\admin", "//admin"),
        // Slashes are not merged by default.
        ("//admin", "//admin"),
        ("/v1//../admin", "/v1/admin"),
        // Path parameters stay (they are part of the segment).
        ("/admin;x=1", "/admin;x=1"),
        ("/*", "/*"),
        ("*", "*"),
    ];
    for (raw, want) in cases {
        assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
    }
}

#[test]
fn refusals() {
    type IsExpected = fn(&PathError) -> bool;
    let cases: [(&str, IsExpected); 12] = [
        ("/a%zz", |e| matches!(e, PathError::BadEscape { at: 2 })),
        ("/a%", |e| matches!(e, PathError::BadEscape { .. })),
        ("/a%4", |e| matches!(e, PathError::BadEscape { .. })),
        ("/a%4g", |e| matches!(e, PathError::BadEscape { .. })),
        ("/a%00b", |e| *e == PathError::EncodedNul),
        // Overlong UTF-8 for '.' and '/', a lone continuation byte, a truncated sequence.
        ("/%c0%ae%c0%ae/admin", |e| *e == PathError::InvalidUtf8),
        ("/%c0%af", |e| *e == PathError::InvalidUtf8),
        ("/%80", |e| *e == PathError::InvalidUtf8),
        ("/%e2%82", |e| *e == PathError::InvalidUtf8),
        (
            "/v1/..;/admin",
            |e| matches!(e, PathError::DotSegmentParams { segment } if segment == "..;"),
        ),
        ("/v1/.;x/admin", |e| {
            matches!(e, PathError::DotSegmentParams { .. })
        }),
        ("admin", |e| *e == PathError::NotAbsolute),
    ];
    for (raw, ok) in cases {
        let e = norm(raw).expect_err(raw);
        assert!(ok(&e), "{raw}: {e:?}");
    }
    // Valid multi-byte UTF-8 is fine (and stays encoded: not unreserved).
    assert_eq!(norm("/caf%C3%A9").as_deref(), Ok("/caf%C3%A9"));
    assert_eq!(
        norm("/a b"),
        Err(PathError::BadCharacter { byte: b' ' }),
        "a raw space cannot arrive through hyper, but the function refuses it anyway"
    );
}

#[test]
fn escaped_slash_actions() {
    use EscapedSlashesAction::{RejectRequest, UnescapeAndForward, UnescapeAndRedirect};
    let raw = "/v1/..%2fadmin";
    type Outcome = Result<PathOutcome<'static>, PathError>;
    let forward = |p: &'static str| -> Outcome { Ok(PathOutcome::Forward(p.into())) };
    let redirect = |p: &'static str| -> Outcome { Ok(PathOutcome::Redirect(p.into())) };
    // (action, or the default; path; outcome)
    let cases = [
        (None, raw, forward("/v1/..%2Fadmin")),
        (Some(RejectRequest), raw, Err(PathError::EscapedSlash)),
        (
            Some(RejectRequest),
            "/v1/..%5cadmin",
            Err(PathError::EscapedSlash),
        ),
        (Some(UnescapeAndForward), raw, forward("/admin")),
        (
            Some(UnescapeAndForward),
            "/v1/..%5Cadmin",
            forward("/admin"),
        ),
        (Some(UnescapeAndRedirect), raw, redirect("/admin")),
        // No escaped slash: nothing to redirect.
        (Some(UnescapeAndRedirect), "/v1/../admin", forward("/admin")),
    ];
    for (action, path, want) in cases {
        let o = with(|o| {
            if let Some(a) = action {
                o.path_with_escaped_slashes_action = a;
            }
        });
        assert_eq!(normalize_path(path, &o), want, "{action:?} {path}");
    }
}

#[test]
fn merge_slashes_and_disabled_normalization() {
    let merge = with(|o| o.merge_slashes = true);
    for (raw, want) in [
        ("//admin", "/admin"),
        ("/v1///items//x", "/v1/items/x"),
        ("/v1//..//admin", "/v1/admin"),
        ("/a/", "/a/"),
    ] {
        assert_eq!(normalize_path(raw, &merge).unwrap().path(), want, "{raw}");
    }
    let off = with(|o| o.insecure_disable_path_normalization = true);
    assert_eq!(
        normalize_path("/v1/../admin", &off).unwrap().path(),
        "/v1/../admin"
    );
    // Malformed escapes are refused even with normalization off.
    assert_eq!(
        normalize_path("/a%zz", &off).unwrap_err(),
        PathError::BadEscape { at: 2 }
    );
}

#[test]
fn unchanged_paths_are_borrowed() {
    let o = RequestNormalization::default();
    for p in ["/", "/v1/items", "/a-b_c~d.e", "/x/%2F"] {
        assert!(
            matches!(
                normalize_path(p, &o).unwrap(),
                PathOutcome::Forward(std::borrow::Cow::Borrowed(_))
            ),
            "{p}"
        );
    }
}

#[test]
fn underscore_headers() {
    let mut h = HeaderMap::new();
    h.insert("x_user", HeaderValue::from_static("admin"));
    h.insert("x-user", HeaderValue::from_static("web"));
    let allow = RequestNormalization::default();
    assert_eq!(check_headers(&h, &allow), Ok(HeaderOutcome::Keep));
    let drop = with(|o| o.headers_with_underscores_action = UnderscoresAction::DropHeader);
    let mut h2 = h.clone();
    normalize_request("/", &mut h2, &drop).unwrap();
    assert!(h2.get("x_user").is_none() && h2.get("x-user").is_some());
    let reject = with(|o| o.headers_with_underscores_action = UnderscoresAction::RejectRequest);
    let mut h3 = h.clone();
    assert_eq!(
        normalize_request("/", &mut h3, &reject).unwrap_err(),
        PathError::HeaderUnderscore {
            name: "x_user".into()
        }
    );
}

#[test]
fn consul_json_shape() {
    let o: RequestNormalization = serde_json::from_str(
        r#"{"MergeSlashes":true,"PathWithEscapedSlashesAction":"UNESCAPE_AND_REDIRECT",
            "HeadersWithUnderscoresAction":"DROP_HEADER","InsecureDisablePathNormalization":false}"#,
    )
    .unwrap();
    assert!(o.merge_slashes);
    assert_eq!(
        o.path_with_escaped_slashes_action,
        EscapedSlashesAction::UnescapeAndRedirect
    );
    assert_eq!(
        o.headers_with_underscores_action,
        UnderscoresAction::DropHeader
    );
    let back = serde_json::to_value(o).unwrap();
    assert_eq!(
        back["PathWithEscapedSlashesAction"],
        "UNESCAPE_AND_REDIRECT"
    );
    assert!(back.get("InsecureDisablePathNormalization").is_none());
    let d: RequestNormalization =
        serde_json::from_str(r#"{"PathWithEscapedSlashesAction":"DEFAULT"}"#).unwrap();
    assert_eq!(d, RequestNormalization::default());
    let e = serde_json::from_str::<RequestNormalization>(
        r#"{"PathWithEscapedSlashesAction":"unescape"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("REJECT_REQUEST"), "{e}");
    assert!(serde_json::from_str::<RequestNormalization>(r#"{"Bogus":1}"#).is_err());
}

fn all_options() -> impl Strategy<Value = RequestNormalization> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(EscapedSlashesAction::KeepUnchanged),
            Just(EscapedSlashesAction::RejectRequest),
            Just(EscapedSlashesAction::UnescapeAndRedirect),
            Just(EscapedSlashesAction::UnescapeAndForward),
        ],
    )
        .prop_map(|(off, merge, slashes)| RequestNormalization {
            insecure_disable_path_normalization: off,
            merge_slashes: merge,
            path_with_escaped_slashes_action: slashes,
            headers_with_underscores_action: UnderscoresAction::Allow,
        })
}

/// Paths built from the pieces attacks are made of.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just("//".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E".to_string()),
        Just("%2f".to_string()),
        Just("%5C".to_string()),
        Just("\\".to_string()),
        Just("%25".to_string()),
        Just("%61".to_string()),
        Just("%7e".to_string()),
        Just("%3b".to_string()),
        Just(";".to_string()),
        Just("admin".to_string()),
        Just("v1".to_string()),
        Just("%C3%A9".to_string()),
        "[a-z0-9._~-]{1,3}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
}

fn intentions() -> IntentionSet {
    let perm = |action, prefix: &str| IntentionPermission {
        action,
        http: Some(HttpPermission {
            path_prefix: prefix.to_string(),
            ..Default::default()
        }),
    };
    let i = Intention {
        permissions: vec![
            perm(IntentionAction::Deny, "/admin"),
            perm(IntentionAction::Allow, "/v1/"),
            perm(IntentionAction::Allow, "/"),
        ],
        ..intention_between("web", "api")
    };
    IntentionSet::new(vec![i], DefaultPolicy::Deny)
}

/// The decision the proxy makes: normalize, then decide on the normalized path (a refused
/// path is a decision too).
fn decide(set: &IntentionSet, path: &str, o: &RequestNormalization) -> Result<bool, PathError> {
    let out = normalize_path(path, o)?;
    let headers = HeaderMap::new();
    let req = HttpRequest {
        method: &Method::GET,
        path: out.path(),
        headers: &headers,
    };
    Ok(set.decide_http_default_ns("web", "api", &req).allowed)
}

proptest! {
    #[test]
    fn normalization_is_idempotent(path in tricky_path(), o in all_options()) {
        if let Ok(once) = normalize_path(&path, &o) {
            let twice = normalize_path(once.path(), &o);
            prop_assert_eq!(twice.as_ref().map(|t| t.path()), Ok(once.path()), "{}", path);
            // A redirect target needs no further redirect.
            prop_assert!(matches!(twice, Ok(PathOutcome::Forward(_))));
        }
    }

    #[test]
    fn output_is_in_normal_form(path in tricky_path(), merge in any::<bool>()) {
        let o = RequestNormalization { merge_slashes: merge, ..Default::default() };
        if let Ok(out) = normalize_path(&path, &o) {
            let p = out.path();
            prop_assert!(p.starts_with('/'));
            prop_assert!(!p.contains('\\'));
            for seg in p.split('/') {
                prop_assert!(seg != "." && seg != "..", "{} -> {}", path, p);
            }
            if merge {
                prop_assert!(!p.contains("//"));
            }
            // No escape of an unreserved character, no lower-case hex.
            let b = p.as_bytes();
            for (i, _) in p.match_indices('%') {
                let h = &b[i + 1..i + 3];
                prop_assert!(!h.iter().any(u8::is_ascii_lowercase), "{}", p);
                let v = u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap();
                prop_assert!(!(v.is_ascii_alphanumeric() || b"-._~".contains(&v)), "{}", p);
            }
        }
    }

    #[test]
    fn decision_equals_decision_on_normalized_form(path in tricky_path(), o in all_options()) {
        let set = intentions();
        if let Ok(out) = normalize_path(&path, &o) {
            prop_assert_eq!(decide(&set, &path, &o), decide(&set, out.path(), &o), "{}", path);
            // With normalization on, a path that resolves under /admin is never allowed.
            if !o.insecure_disable_path_normalization && out.path().starts_with("/admin") {
                prop_assert_eq!(decide(&set, &path, &o), Ok(false), "{}", path);
            }
        }
    }

    #[test]
    fn arbitrary_input_never_panics(path in "/[ -~]{0,40}", o in all_options()) {
        let _ = normalize_path(&path, &o);
    }
}
