//! The replicated state machine: one deterministic `apply(index, command)` over the catalog,
//! the intentions, the config entries (`service-defaults`; `service-intentions` are a view of
//! the intentions, see `crate::config_entries`), the CA state, the ACL tables and the servers'
//! internal secret (`secret`, set once).
//!
//! No I/O, no clock, no randomness: whatever varies is inside the command (see `command`). The
//! Raft storage layer (`crate::store`) calls `State::apply` for every committed entry and takes
//! snapshots by serializing `State`; this module is unit-tested alone.

mod acl;
mod acl_state;
mod ca;
mod ca_config;
mod catalog;
mod command;
mod config_entries;
mod indexes;
mod intentions;
mod secret;
mod state;

pub use acl_state::{AclState, anonymous_token};
pub use ca_config::{
    DEFAULT_LEAF_TTL, LeafTtlError, MAX_LEAF_TTL, MIN_LEAF_TTL, ROOT_MATERIAL_KEYS, SuppliedRoot,
    SuppliedRootError, check_leaf_ttl, has_root_material, leaf_ttl, root_ttl, supplied_root,
    without_root_material,
};
pub use command::{ApplyError, ApplyResult, Command, Conflict, Invalid, NotFound};
pub use indexes::Moved;
pub use secret::{MalformedSecret, SERVER_SECRET_HEX_LEN, ServerSecret};
pub use state::{CaState, State, TableIndexes};

#[cfg(test)]
mod tests;
