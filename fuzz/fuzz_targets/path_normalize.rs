//! Fuzzes the request normalization the proxy runs before every L7 decision
//! (`intentions::normalize`): arbitrary path bytes under every option combination. Any panic
//! is a bug; so is output that is not idempotent (normalizing it again changes it, or asks for
//! another redirect), that still holds a dot segment, a backslash or an escape of an
//! unreserved character, or that differs in its decision from its own normalized form.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mesh_policy::intentions::normalize::{
    EscapedSlashesAction, PathOutcome, RequestNormalization, UnderscoresAction, normalize_path,
};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    path: &'a str,
    disable: bool,
    merge: bool,
    /// 0 keep, 1 reject, 2 redirect, 3 forward.
    slashes: u8,
}

fuzz_target!(|input: Input<'_>| {
    let opts = RequestNormalization {
        insecure_disable_path_normalization: input.disable,
        merge_slashes: input.merge,
        path_with_escaped_slashes_action: match input.slashes % 4 {
            0 => EscapedSlashesAction::KeepUnchanged,
            1 => EscapedSlashesAction::RejectRequest,
            2 => EscapedSlashesAction::UnescapeAndRedirect,
            _ => EscapedSlashesAction::UnescapeAndForward,
        },
        headers_with_underscores_action: UnderscoresAction::Allow,
    };
    // Paths as they reach the proxy start with '/'; others must be refused, not panic.
    let path = if input.path.starts_with('/') {
        input.path.to_string()
    } else {
        let _ = normalize_path(input.path, &opts);
        format!("/{}", input.path)
    };
    let Ok(once) = normalize_path(&path, &opts) else {
        return;
    };
    let out = once.path().to_string();
    let twice = normalize_path(&out, &opts).expect("normalized output must be accepted");
    assert_eq!(twice.path(), out, "not idempotent: {path:?}");
    assert!(
        matches!(twice, PathOutcome::Forward(_)),
        "redirect target needs another redirect: {path:?}"
    );
    if !input.disable {
        assert!(!out.contains('\\'), "backslash left: {path:?} -> {out:?}");
        for seg in out.split('/') {
            assert!(seg != "." && seg != "..", "dot segment left: {path:?} -> {out:?}");
        }
        let b = out.as_bytes();
        for (i, _) in out.match_indices('%') {
            let v = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap();
            assert!(
                !(v.is_ascii_alphanumeric() || b"-._~".contains(&v)),
                "unreserved escape left: {path:?} -> {out:?}"
            );
        }
    }
    if input.merge {
        assert!(!out.contains("//"), "slashes not merged: {path:?} -> {out:?}");
    }
});
