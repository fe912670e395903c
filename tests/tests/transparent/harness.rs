//! The transparent-mode harness lives in the tests library (`mesh_tests::transparent`) so the
//! demo uses the same pods, proxies and clients as these tests.

pub use mesh_tests::transparent::*;
