//! Transparent mode end to end (issue 5), as root: `meshd dev` on the host's loopback, two
//! simulated pods (network namespaces joined by a veth pair, one cgroup v2 directory each),
//! one `meshproxy run --transparent --cgroup --netns` per pod, unmodified Python clients in
//! pod A and an echo server in pod B that records every peer and byte.
//!
//! Without root, or without the eBPF object (`cargo xtask build-ebpf`), the tests fail with a
//! message saying so; they never skip.

mod harness;
mod t10_mesh;
mod t20_lifecycle;
mod t30_bad_environment;
mod t40_exclusions;
mod t50_ipv6;
mod t70_host_mode;
mod t80_restart;
mod t90_source_address;
