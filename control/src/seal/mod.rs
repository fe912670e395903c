//! Sealing secrets with the cluster's encryption key (`--encrypt-key-file`) before they enter
//! the Raft log and snapshots, so that `raft.redb`, a backup of it, or a snapshot sent to a
//! follower never shows a CA private key in the clear.
//!
//! AES-256-GCM with a random 96-bit nonce per value. A sealed value reads
//! `mesh-sealed-v1:` + base64(nonce ‖ ciphertext ‖ tag); its additional data binds it to its
//! purpose (for a root's key, the root's ID), so a sealed key moved to another root, or any
//! altered byte, does not open. Servers compare keys through [`SealKey::check_value`], an HMAC
//! of a fixed label: it tells whether two keys are equal without revealing either.
//!
//! * `key_file`: reading the key file (refusing one others can read) and `meshctl keygen`.
//! * `root`: sealing and opening a [`crate::ca::StoredRoot`]'s key, and the start-up check that
//!   this server's key is the one the cluster's roots were sealed with.
//!
//! Pure apart from the nonce's randomness; the key file's I/O is in `key_file`.

pub mod key_file;
pub mod root;

#[cfg(test)]
mod tests;

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// Length of the encryption key: AES-256.
pub const KEY_LEN: usize = 32;

/// Prefix of every sealed value; the version names the format and the algorithm.
pub const SEALED_PREFIX: &str = "mesh-sealed-v1:";

/// Label HMAC'd into [`SealKey::check_value`].
const CHECK_LABEL: &[u8] = b"mesh-seal-check-v1";

/// What [`check_value`] answers for a server without an encryption key.
pub const NO_KEY_CHECK: &str = "none";

/// The cluster's 32-byte encryption key. `Debug` never prints it; the bytes are wiped on drop.
#[derive(Clone)]
pub struct SealKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

/// Why a value could not be sealed or opened. No variant carries key or plaintext bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("not a sealed value (expected the {SEALED_PREFIX} format)")]
    Malformed,
    #[error("does not open with this encryption key: it was sealed with another key, or altered")]
    WrongKeyOrAltered,
    #[error("encryption failed")]
    Encrypt,
}

impl SealKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A fresh random key from the OS-seeded CSPRNG.
    pub fn generate() -> Result<Self, SealError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(bytes.as_mut()).map_err(|_| SealError::Encrypt)?;
        Ok(Self(bytes))
    }

    /// The key as the key file holds it: standard base64 of the 32 bytes.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    fn aead(&self) -> Result<RandomizedNonceKey, SealError> {
        RandomizedNonceKey::new(&AES_256_GCM, self.0.as_ref()).map_err(|_| SealError::Encrypt)
    }

    /// Seals `plaintext` for `purpose` (the additional data the opener must present).
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<String, SealError> {
        // Room for the tag up front: the plaintext is encrypted in place, never reallocated.
        let mut buf = Vec::with_capacity(plaintext.len() + AES_256_GCM.tag_len());
        buf.extend_from_slice(plaintext);
        let nonce = self
            .aead()?
            .seal_in_place_append_tag(Aad::from(aad(purpose)), &mut buf)
            .map_err(|_| SealError::Encrypt)?;
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(out)))
    }

    /// Opens a value [`Self::seal`] made for the same `purpose` with the same key.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let body = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(SealError::Malformed)?;
        let raw = STANDARD.decode(body).map_err(|_| SealError::Malformed)?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let len = self
            .aead()?
            .open_in_place(nonce, Aad::from(aad(purpose)), &mut buf)
            .map_err(|_| SealError::WrongKeyOrAltered)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// HMAC-SHA256(key, "mesh-seal-check-v1") in hex: equal for equal keys, and says nothing
    /// else about the key. Servers exchange it to refuse a peer with another key.
    pub fn check_value(&self) -> String {
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, self.0.as_ref()),
            CHECK_LABEL,
        );
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("hmac-sha256:{hex}")
    }
}

/// Whether `value` is in the sealed format (says nothing about which key sealed it).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

/// The key-check value of a server with `key`, or [`NO_KEY_CHECK`] without one.
pub fn check_value(key: Option<&SealKey>) -> String {
    key.map_or_else(|| NO_KEY_CHECK.to_string(), SealKey::check_value)
}

/// Whether two servers' key-check values say they hold the same key (or both none); an empty
/// value (a peer that sent none) counts as none. Constant time in the values.
pub fn same_key(mine: &str, theirs: &str) -> bool {
    let norm = |v: &str| if v.is_empty() { NO_KEY_CHECK } else { v }.to_string();
    let (a, b) = (norm(mine), norm(theirs));
    a.len() == b.len() && bool::from(subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()))
}

/// How a peer's key differs from this server's, as their key-check values tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerKeyMismatch {
    #[error(
        "it seals CA keys with an encryption key and this server has none: start this server \
         with the cluster's --encrypt-key-file"
    )]
    PeerHasKey,
    #[error(
        "it runs without an encryption key but this server was given --encrypt-key-file: start \
         this server without it, as the cluster's other servers"
    )]
    PeerHasNone,
    #[error(
        "it uses a different encryption key: every server of a cluster needs the same \
         --encrypt-key-file"
    )]
    Different,
}

/// Whether a peer whose key-check value is `theirs` may be in a cluster with this server (whose
/// value is `mine`), and if not, how they differ.
pub fn check_peer(mine: &str, theirs: &str) -> Result<(), PeerKeyMismatch> {
    if same_key(mine, theirs) {
        return Ok(());
    }
    let none = |v: &str| same_key(v, NO_KEY_CHECK);
    Err(match (none(mine), none(theirs)) {
        (true, _) => PeerKeyMismatch::PeerHasKey,
        (_, true) => PeerKeyMismatch::PeerHasNone,
        _ => PeerKeyMismatch::Different,
    })
}

/// The additional data of a sealed value: the format's name and the value's purpose.
fn aad(purpose: &str) -> Vec<u8> {
    let mut v = SEALED_PREFIX.as_bytes().to_vec();
    v.extend_from_slice(purpose.as_bytes());
    v
}
