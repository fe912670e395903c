//! Raft behaviour of in-process server clusters (`mesh_tests::inproc`): partitions, snapshot
//! catch-up, linearizable and stale reads, blocking queries. Servers are real (openraft, redb,
//! gRPC on loopback); partitions are the transport's fault injection.

mod t10_partition;
mod t20_snapshot_catch_up;
mod t30_linearizable_reads;
mod t40_blocking_query;

use mesh_control::server::Server;

/// Sources of every intention `server` holds, sorted.
pub fn intention_sources(server: &Server) -> Vec<String> {
    let mut v: Vec<String> = server.state.read(|s| {
        s.intentions
            .values()
            .map(|i| i.source_name.clone())
            .collect()
    });
    v.sort();
    v
}
