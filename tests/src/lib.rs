//! Shared helpers for the integration tests.

pub mod chain;
pub mod dev;
pub mod eventually;
pub mod http_raw;
pub mod inproc;
pub mod openssl;
pub mod pod;
pub mod process;
pub mod python;
pub mod sidecar;
pub mod transparent;
