//! The servers' internal secret: a random 32-byte value (64 lowercase hex digits) the first
//! leader writes once through Raft (`Command::SetServerSecret`), so every server holds the same
//! one. Servers present it to each other (Raft RPCs, forwarded writes, the cluster methods) and
//! the agent a server embeds presents it instead of a token; see `raft::secret` for the wire.
//!
//! Set once: applying the command again when a secret exists changes nothing, so two leaders
//! racing at bootstrap (or a leader change mid-write) agree on the first one committed.
//!
//! The value never leaves the servers: `Debug` redacts it, the state digest leaves it out
//! (`State::digest`), no route renders it. It is compared in constant time ([`Self::matches`]).
//! Generating it is the proposer's job (the state machine has no randomness).

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// Length of the secret in hex digits (32 bytes).
pub const SERVER_SECRET_HEX_LEN: usize = 64;

/// A value that is not 64 lowercase hex digits (the value is not quoted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server secret must be 64 lowercase hex digits")]
pub struct MalformedSecret;

/// The servers' internal secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerSecret(String);

impl ServerSecret {
    /// The secret written as `hex`; refused unless it is 64 lowercase hex digits.
    pub fn new(hex: String) -> Result<Self, MalformedSecret> {
        let well_formed = hex.len() == SERVER_SECRET_HEX_LEN
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if well_formed {
            Ok(Self(hex))
        } else {
            Err(MalformedSecret)
        }
    }

    /// The value, to put on the wire (gRPC metadata between servers). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this secret, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl std::fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerSecret(<redacted>)")
    }
}
