//! `meshproxy run --config FILE` (static mode) end to end: no control plane at all. A CA and
//! leaves are generated with the mesh's own CA code into a temp dir (keys 0600), real
//! `meshproxy` processes read them, and counting TCP echo servers stand in for the
//! applications, so "the app never saw a byte" is asserted, not assumed.
//!
//! The echo server, the `meshproxy` build and the stream helpers are the agent-mode suite's
//! (`tests/proxy/harness.rs`, included unchanged); `support` adds the PKI, the config files and
//! the static-mode process.

/// The shared proxy-test helpers (one library copy for every target).
use mesh_tests::chain as harness;
mod support;

mod t10_traffic;
mod t20_refusals;
mod t30_startup_errors;
mod t40_reload;
mod t50_cipher_suites;
mod t60_several_listeners;
