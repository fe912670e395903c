//! Shared helpers for the integration tests.

pub mod chain;
pub mod curl;
pub mod dev;
pub mod eventually;
pub mod grpc_curl;
pub mod http_raw;
pub mod inproc;
pub mod load;
pub mod openssl;
pub mod pod;
pub mod process;
pub mod python;
pub mod sidecar;
pub mod transparent;

/// A fresh temporary directory with mode 0700, removed when dropped: a data directory for a
/// server or agent under test (they refuse one that group or others can reach, which
/// `tempfile::tempdir()`'s 0755 is).
pub fn data_dir() -> tempfile::TempDir {
    mesh_control::data_dir::tempdir("mesh-test-", None).expect("a private temporary directory")
}
