//! The data plane end to end: `meshd dev` (or an in-process server where a test needs the CA's
//! root key), two or three `meshproxy run` processes registered as sidecars through the agent
//! API, and a TCP echo server as the application that counts every connection and byte it
//! sees, so "the app never saw a byte" is asserted, not assumed.
//!
//! t10 echoes 1 GiB through the chain (acceptance 1); the dev profile optimizes meshproxy and
//! its TLS stack so that takes seconds, not minutes (root `Cargo.toml`).

/// The shared proxy-test helpers (one library copy for every target).
use mesh_tests::chain as harness;
mod t10_traffic;
mod t20_intentions;
mod t30_bad_peers;
mod t40_rotation;
mod t50_resumption;
mod t60_early_sidecars;
mod t70_restart;
mod t80_side_by_side;
