//! The data plane end to end: `meshd dev` (or an in-process server where a test needs the CA's
//! root key), two or three `meshproxy run` processes registered as sidecars through the agent
//! API, and a TCP echo server as the application that counts every connection and byte it
//! sees, so "the app never saw a byte" is asserted, not assumed.
//!
//! The 1 GiB transfer is in the benches (`benches/`); here 64 MiB keeps the suite fast.

mod harness;
mod t10_traffic;
mod t20_intentions;
mod t30_bad_peers;
mod t40_rotation;
