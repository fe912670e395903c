//! The encryption key file (`--encrypt-key-file`): read and checked at start, and written new by
//! `meshctl keygen -out`. The file is a secret: a file group or others can read is refused (with
//! the `chmod` that fixes it), a new one is created 0600 and never over an existing file, and
//! no message ever quotes its content.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::{KEY_LEN, SealKey};

/// More than any base64 key with a trailing newline; a larger file is not a key file.
const MAX_FILE: u64 = 1024;

/// Why the key file is unusable. Messages name the file and the fix, never its content.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read encryption key file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "encryption key file {} is accessible by group or others (mode {mode:04o}); it must be \
         private to this user: chmod 600 {}",
        path.display(), path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "encryption key file {} is not base64 text; make a key with `meshctl keygen -out FILE`",
        path.display()
    )]
    NotBase64 { path: PathBuf },
    #[error(
        "encryption key file {} holds {len} bytes, the key must be {KEY_LEN} (AES-256); make one \
         with `meshctl keygen -out FILE`",
        path.display()
    )]
    WrongLength { path: PathBuf, len: usize },
    #[error("cannot create encryption key file {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate an encryption key")]
    Generate,
}

/// Reads the key from `path`: base64 of 32 bytes, surrounding whitespace ignored, in a file
/// only its owner can access.
pub fn load(path: &Path) -> Result<SealKey, KeyFileError> {
    let read = |source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mode = file.metadata().map_err(read)?.permissions().mode();
    if let Some(open) = crate::data_dir::too_open(path, crate::data_dir::Kind::File, mode) {
        return Err(KeyFileError::Permissions {
            path: open.path,
            mode: open.mode,
        });
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|_| KeyFileError::NotBase64 {
            path: path.to_path_buf(),
        })?;
    parse(path, text.trim())
}

/// The key given inline (a config file's `encrypt`, base64 as Consul's).
pub fn parse_inline(text: &str) -> Result<SealKey, KeyFileError> {
    parse(Path::new("<`encrypt` in a config file>"), text.trim())
}

/// The key from its base64 text (`path` is only for messages).
fn parse(path: &Path, text: &str) -> Result<SealKey, KeyFileError> {
    let bytes = Zeroizing::new(STANDARD.decode(text).map_err(|_| KeyFileError::NotBase64 {
        path: path.to_path_buf(),
    })?);
    let key: [u8; KEY_LEN] =
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyFileError::WrongLength {
                path: path.to_path_buf(),
                len: bytes.len(),
            })?;
    Ok(SealKey::from_bytes(key))
}

/// A fresh key, as `meshctl keygen` prints it (base64, no newline).
pub fn generate() -> Result<Zeroizing<String>, KeyFileError> {
    Ok(SealKey::generate()
        .map_err(|_| KeyFileError::Generate)?
        .to_base64())
}

/// Writes a fresh key to `path`, created new (never over an existing file) with mode 0600.
pub fn write_new(path: &Path) -> Result<(), KeyFileError> {
    let key = generate()?;
    let create = |source| KeyFileError::Create {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(create)?;
    f.write_all(key.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(create)
}
