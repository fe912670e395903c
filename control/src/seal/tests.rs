//! Seal/open, tampering, wrong keys and purposes, the key-check value, the key file and roots.

use std::os::unix::fs::PermissionsExt;

use super::key_file::{self, KeyFileError};
use super::root::{self, RootKeyError};
use super::*;
use crate::ca::{BuiltinProvider, CaProvider};

fn key(byte: u8) -> SealKey {
    SealKey::from_bytes([byte; KEY_LEN])
}

#[test]
fn sealed_values_open_with_the_same_key_and_purpose_only() {
    let k = key(1);
    let sealed = k.seal("p", b"-----BEGIN PRIVATE KEY-----").unwrap();
    assert!(sealed.starts_with(SEALED_PREFIX) && is_sealed(&sealed));
    assert!(!sealed.contains("PRIVATE KEY"));
    assert_eq!(
        k.open("p", &sealed).unwrap().as_slice(),
        b"-----BEGIN PRIVATE KEY-----"
    );
    // A fresh nonce every time: the same plaintext never seals to the same text.
    assert_ne!(sealed, k.seal("p", b"-----BEGIN PRIVATE KEY-----").unwrap());
    assert_eq!(key(2).open("p", &sealed), Err(SealError::WrongKeyOrAltered));
    assert_eq!(k.open("q", &sealed), Err(SealError::WrongKeyOrAltered));
}

#[test]
fn any_altered_byte_is_refused() {
    let k = key(3);
    let sealed = k.seal("p", b"secret").unwrap();
    let raw = STANDARD.decode(&sealed[SEALED_PREFIX.len()..]).unwrap();
    for i in 0..raw.len() {
        let mut bad = raw.clone();
        bad[i] ^= 0x01;
        let text = format!("{SEALED_PREFIX}{}", STANDARD.encode(&bad));
        assert_eq!(k.open("p", &text), Err(SealError::WrongKeyOrAltered), "{i}");
    }
    let truncated = format!("{SEALED_PREFIX}{}", STANDARD.encode(&raw[..raw.len() - 1]));
    assert_eq!(k.open("p", &truncated), Err(SealError::WrongKeyOrAltered));
    for malformed in [
        "secret",
        "mesh-sealed-v1:%%%",
        "mesh-sealed-v1:AAAA",
        "mesh-sealed-v2:",
    ] {
        assert_eq!(
            k.open("p", malformed),
            Err(SealError::Malformed),
            "{malformed}"
        );
    }
}

#[test]
fn check_values_match_for_equal_keys_only_and_reveal_nothing() {
    let (a, b) = (key(4), key(5));
    assert_eq!(a.check_value(), key(4).check_value());
    assert_ne!(a.check_value(), b.check_value());
    assert!(!a.check_value().contains(a.to_base64().as_str()));
    assert!(same_key(&a.check_value(), &key(4).check_value()));
    assert!(!same_key(&a.check_value(), &b.check_value()));
    assert!(!same_key(&a.check_value(), NO_KEY_CHECK));
    assert!(same_key(&check_value(None), NO_KEY_CHECK));
    // A peer that sent no value holds no key.
    assert!(same_key(NO_KEY_CHECK, ""));
    assert!(!same_key(&a.check_value(), ""));
    assert_eq!(format!("{a:?}"), "SealKey(<redacted>)");

    let (ka, kb, none) = (a.check_value(), b.check_value(), NO_KEY_CHECK);
    assert_eq!(check_peer(&ka, &ka), Ok(()));
    assert_eq!(check_peer(none, ""), Ok(()));
    assert_eq!(check_peer(&ka, &kb), Err(PeerKeyMismatch::Different));
    assert_eq!(check_peer(none, &kb), Err(PeerKeyMismatch::PeerHasKey));
    assert_eq!(check_peer(&ka, none), Err(PeerKeyMismatch::PeerHasNone));
}

fn write_file(dir: &tempfile::TempDir, name: &str, body: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn key_files_are_checked_and_never_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let good = key(6).to_base64();
    let ok = write_file(&dir, "ok", &format!("{}\n", good.as_str()), 0o600);
    assert_eq!(
        key_file::load(&ok).unwrap().check_value(),
        key(6).check_value()
    );

    for mode in [0o640, 0o604, 0o660] {
        let p = write_file(&dir, &format!("open{mode:o}"), &good, mode);
        let e = key_file::load(&p).unwrap_err();
        assert!(matches!(e, KeyFileError::Permissions { .. }), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("chmod 600 {}", p.display())),
            "{e}"
        );
        assert!(!e.to_string().contains(good.as_str()));
    }
    let short = STANDARD.encode([7u8; 16]);
    let p = write_file(&dir, "short", &short, 0o600);
    let e = key_file::load(&p).unwrap_err();
    assert!(
        matches!(e, KeyFileError::WrongLength { len: 16, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("meshctl keygen") && !e.to_string().contains(&short));
    let p = write_file(&dir, "text", "not base64 at all!", 0o600);
    let e = key_file::load(&p).unwrap_err();
    assert!(matches!(e, KeyFileError::NotBase64 { .. }), "{e}");
    assert!(!e.to_string().contains("not base64 at all"));
    let e = key_file::load(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(e, KeyFileError::Read { .. }), "{e}");
}

#[test]
fn keygen_writes_a_new_private_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("key");
    key_file::write_new(&p).unwrap();
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let first = key_file::load(&p).unwrap().check_value();
    let e = key_file::write_new(&p).unwrap_err();
    assert!(matches!(e, KeyFileError::Create { .. }), "{e}");
    assert_eq!(key_file::load(&p).unwrap().check_value(), first);
    // Two keys are never the same.
    assert_ne!(key_file::generate().unwrap(), key_file::generate().unwrap());
}

fn a_root() -> crate::ca::StoredRoot {
    BuiltinProvider
        .generate_root(
            "11111111-2222-3333-4444-555555555555.consul",
            1,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap()
}

#[test]
fn roots_seal_and_open_only_with_the_cluster_key() {
    let plain = a_root();
    let k = key(8);
    let sealed = root::seal(Some(&k), plain.clone()).unwrap();
    assert!(is_sealed(&sealed.private_key_pem));
    assert!(
        !serde_json::to_string(&sealed)
            .unwrap()
            .contains("PRIVATE KEY")
    );
    assert_eq!(sealed.root, plain.root);
    assert_eq!(*root::open(Some(&k), &sealed).unwrap(), plain);
    // Without a key nothing changes.
    assert_eq!(root::seal(None, plain.clone()).unwrap(), plain);
    assert_eq!(*root::open(None, &plain).unwrap(), plain);

    let id = plain.root.id.clone();
    assert_eq!(
        root::open(None, &sealed).err(),
        Some(RootKeyError::KeyRequired {
            root_id: id.clone()
        })
    );
    assert_eq!(
        root::open(Some(&k), &plain).err(),
        Some(RootKeyError::NotSealed {
            root_id: id.clone()
        })
    );
    let e = root::open(Some(&key(9)), &sealed).err().unwrap();
    assert!(matches!(e, RootKeyError::WrongKey { .. }));
    assert!(e.to_string().contains("same key file"), "{e}");
    // A sealed key moved onto another root does not open.
    let mut other = a_root();
    other.private_key_pem = sealed.private_key_pem.clone();
    assert!(matches!(
        root::open(Some(&k), &other),
        Err(RootKeyError::WrongKey { .. })
    ));
}
