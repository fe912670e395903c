//! The servers' internal secret: set once, well-formed, kept by snapshots, out of the digest
//! and of `Debug`.

use super::*;

fn secret(digit: char) -> ServerSecret {
    ServerSecret::new(digit.to_string().repeat(SERVER_SECRET_HEX_LEN)).unwrap()
}

fn set(s: ServerSecret) -> Command {
    Command::SetServerSecret { secret: s }
}

#[test]
fn the_first_secret_stays() {
    let mut state = State::default();
    apply_ok(&mut state, 1, set(secret('a')));
    assert_eq!(state.server_secret, Some(secret('a')));
    // A second leader's secret (or a retried write) changes nothing.
    apply_noop(&mut state, 2, set(secret('b')));
    assert_eq!(state.server_secret, Some(secret('a')));
}

#[test]
fn only_64_lowercase_hex_digits_are_a_secret() {
    for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"a".repeat(65)] {
        assert!(ServerSecret::new(bad.to_string()).is_err(), "{bad:?}");
    }
    // One that bypassed `new` (decoded from a command) is refused on apply.
    let forged: ServerSecret = serde_json::from_str("\"not-hex\"").unwrap();
    let mut state = State::default();
    assert_rejected!(
        &mut state,
        1,
        set(forged),
        ApplyError::Invalid(Invalid::ServerSecret)
    );
    assert_eq!(state.server_secret, None);
}

#[test]
fn matching_is_whole_and_exact() {
    let s = secret('a');
    assert!(s.matches(&"a".repeat(64)));
    assert!(!s.matches(&"a".repeat(63)));
    assert!(!s.matches(&format!("{}b", "a".repeat(63))));
    assert!(!s.matches(""));
}

#[test]
fn snapshots_keep_it_and_nothing_prints_it() {
    let mut state = State::default();
    apply_ok(&mut state, 1, set(secret('c')));
    let value = "c".repeat(64);
    let snapshot = serde_json::to_vec(&state).unwrap();
    let restored: State = serde_json::from_slice(&snapshot).unwrap();
    assert_eq!(restored, state);
    assert_eq!(restored.server_secret, Some(secret('c')));
    // The digest is served over HTTP: it is the digest of the state without the secret.
    let mut without = state.clone();
    without.server_secret = None;
    assert_eq!(state.digest(), without.digest());
    for text in [format!("{state:?}"), format!("{:?}", set(secret('c')))] {
        assert!(!text.contains(&value), "secret in Debug output");
        assert!(text.contains("<redacted>"));
    }
}
