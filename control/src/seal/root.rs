//! A CA root's private key, sealed before the root goes into a Raft command (so into the log,
//! the state and every snapshot) and opened in memory only while signing. The additional data
//! is the root's ID, so a sealed key copied onto another root does not open.
//!
//! [`open`] is also the start-up check: a server whose key (or lack of one) does not fit how the
//! cluster's roots are stored refuses to start, rather than fail at its first signature.

use std::ops::Deref;

use zeroize::{Zeroize, Zeroizing};

use super::{SealError, SealKey, is_sealed};
use crate::ca::StoredRoot;

/// The purpose a root's sealed key is bound to.
fn purpose(root_id: &str) -> String {
    format!("ca-root-key:{root_id}")
}

/// Why a root's key cannot be sealed or opened by this server. Never quotes the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootKeyError {
    #[error(
        "the private key of CA root {root_id} is sealed with the cluster's encryption key and \
         this server has none: start it with the cluster's --encrypt-key-file"
    )]
    KeyRequired { root_id: String },
    #[error(
        "the private key of CA root {root_id} is stored unencrypted (the cluster runs without \
         an encryption key) but this server was given --encrypt-key-file: start it without \
         --encrypt-key-file, as the cluster's other servers"
    )]
    NotSealed { root_id: String },
    #[error(
        "the private key of CA root {root_id} does not open with this server's \
         --encrypt-key-file: every server of a cluster needs the same key file ({source})"
    )]
    WrongKey {
        root_id: String,
        #[source]
        source: SealError,
    },
    #[error("cannot seal the private key of CA root {root_id}: {source}")]
    Seal {
        root_id: String,
        #[source]
        source: SealError,
    },
}

/// `root` with its private key sealed under `key` (unchanged without a key: the cluster runs
/// without encryption).
pub fn seal(key: Option<&SealKey>, mut root: StoredRoot) -> Result<StoredRoot, RootKeyError> {
    let Some(key) = key else {
        return Ok(root);
    };
    let plain = Zeroizing::new(std::mem::take(&mut root.private_key_pem));
    root.private_key_pem = key
        .seal(&purpose(&root.root.id), plain.as_bytes())
        .map_err(|source| RootKeyError::Seal {
            root_id: root.root.id.clone(),
            source,
        })?;
    Ok(root)
}

/// A copy of a root with its private key in the clear, for signing; wiped when dropped.
pub struct OpenedRoot(StoredRoot);

impl Deref for OpenedRoot {
    type Target = StoredRoot;
    fn deref(&self) -> &StoredRoot {
        &self.0
    }
}

impl Drop for OpenedRoot {
    fn drop(&mut self) {
        self.0.private_key_pem.zeroize();
    }
}

/// `root` with its key opened under `key`. Refuses a sealed key without a key, a plaintext key
/// with one (the servers disagree on whether the cluster is encrypted) and a key sealed under
/// another key.
pub fn open(key: Option<&SealKey>, root: &StoredRoot) -> Result<OpenedRoot, RootKeyError> {
    let root_id = || root.root.id.clone();
    let sealed = is_sealed(&root.private_key_pem);
    let private_key_pem = match (key, sealed) {
        (None, false) => root.private_key_pem.clone(),
        (None, true) => return Err(RootKeyError::KeyRequired { root_id: root_id() }),
        (Some(_), false) => return Err(RootKeyError::NotSealed { root_id: root_id() }),
        (Some(key), true) => {
            let wrong = |source| RootKeyError::WrongKey {
                root_id: root_id(),
                source,
            };
            let bytes = key
                .open(&purpose(&root.root.id), &root.private_key_pem)
                .map_err(wrong)?;
            String::from_utf8(bytes.to_vec()).map_err(|_| wrong(SealError::Malformed))?
        }
    };
    Ok(OpenedRoot(StoredRoot {
        root: root.root.clone(),
        private_key_pem,
    }))
}
