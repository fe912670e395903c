//! The servers' internal secret (`fsm::ServerSecret`) on the wire: how a server attaches its
//! replicated secret to a call to another server (gRPC metadata `x-mesh-server-secret`), and
//! how the receiving side checks what it was given.
//!
//! * The cluster methods that change or reveal the cluster (`Cluster.Write`, `ReadIndex`,
//!   `Configuration`, `RemovePeer`, `RotateCa`) [`require`] it: missing or wrong is
//!   `PermissionDenied`, none replicated here yet is `Unavailable` (the caller retries).
//! * Raft's RPCs [`require_if_held`] it: a server that holds a secret accepts only callers
//!   presenting it; one that does not yet (a new or wiped server catching up from the leader)
//!   accepts the leader's entries that bring it.
//! * `Cluster.Hello` and `Cluster.Join` do not ask for it: a new server has no secret before it
//!   joins. With TLS on the RPC port they admit server certificates only (`tls::peer`), which
//!   is what authenticates a joining server.
//!
//! No message here quotes the secret, and comparisons are constant time
//! ([`ServerSecret::matches`]).

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use crate::fsm::ServerSecret;
use crate::http::token::GRPC_SERVER_SECRET_METADATA;
use crate::store::SharedState;

/// What a call presented, held against this server's secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretCheck {
    /// The caller presented this server's secret.
    Valid,
    /// The caller presented none.
    Missing,
    /// The caller presented something else.
    Wrong,
    /// This server holds no secret yet (the first leader has not written it, or it has not
    /// reached this server).
    NotReplicated,
}

/// Holds `presented` against `held`.
pub fn check(held: Option<&ServerSecret>, presented: Option<&str>) -> SecretCheck {
    match (held, presented) {
        (None, _) => SecretCheck::NotReplicated,
        (Some(_), None) => SecretCheck::Missing,
        (Some(h), Some(p)) if h.matches(p) => SecretCheck::Valid,
        (Some(_), Some(_)) => SecretCheck::Wrong,
    }
}

/// The secret this server holds, if the first leader's write has reached it.
pub fn held(state: &SharedState) -> Option<ServerSecret> {
    state.read(|s| s.server_secret.clone())
}

/// The secret a call presents.
pub fn presented<T>(req: &Request<T>) -> Option<&str> {
    req.metadata()
        .get(GRPC_SERVER_SECRET_METADATA)
        .and_then(|v| v.to_str().ok())
}

/// Adds `secret` to an outgoing call.
pub fn attach<T>(req: &mut Request<T>, secret: &ServerSecret) {
    // A validated secret is hex, always a valid metadata value.
    if let Ok(v) = MetadataValue::try_from(secret.expose()) {
        req.metadata_mut().insert(GRPC_SERVER_SECRET_METADATA, v);
    }
}

/// Adds this server's secret to an outgoing call when it holds one.
pub fn attach_held<T>(req: &mut Request<T>, state: &SharedState) {
    if let Some(s) = held(state) {
        attach(req, &s);
    }
}

/// The refusal for a call that did not present this server's secret (`None`: it did).
pub fn refusal(check: SecretCheck) -> Option<Status> {
    match check {
        SecretCheck::Valid => None,
        SecretCheck::Missing => Some(Status::permission_denied(
            "this method is internal to the servers: server secret required",
        )),
        SecretCheck::Wrong => Some(Status::permission_denied("invalid server secret")),
        SecretCheck::NotReplicated => {
            Some(Status::unavailable("cluster secret not replicated yet"))
        }
    }
}

/// Refuses a call to a servers-only method unless it presents this server's secret.
pub fn require<T>(state: &SharedState, req: &Request<T>) -> Result<(), Status> {
    match refusal(check(held(state).as_ref(), presented(req))) {
        None => Ok(()),
        Some(status) => Err(status),
    }
}

/// [`require`], except that a server holding no secret yet accepts the call (Raft RPCs: the
/// leader's entries are how the secret reaches it).
pub fn require_if_held<T>(state: &SharedState, req: &Request<T>) -> Result<(), Status> {
    match check(held(state).as_ref(), presented(req)) {
        SecretCheck::NotReplicated => Ok(()),
        c => refusal(c).map_or(Ok(()), Err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_and_refusals() {
        let s = ServerSecret::new("a".repeat(64)).unwrap();
        let good = "a".repeat(64);
        assert_eq!(check(Some(&s), Some(&good)), SecretCheck::Valid);
        assert_eq!(check(Some(&s), None), SecretCheck::Missing);
        assert_eq!(check(Some(&s), Some("b")), SecretCheck::Wrong);
        assert_eq!(check(None, Some(&good)), SecretCheck::NotReplicated);
        assert!(refusal(SecretCheck::Valid).is_none());
        for (c, code) in [
            (SecretCheck::Missing, tonic::Code::PermissionDenied),
            (SecretCheck::Wrong, tonic::Code::PermissionDenied),
            (SecretCheck::NotReplicated, tonic::Code::Unavailable),
        ] {
            let status = refusal(c).unwrap();
            assert_eq!(status.code(), code);
            assert!(!status.message().contains(&good));
        }
    }

    #[test]
    fn attached_secret_is_what_is_presented() {
        let s = ServerSecret::new("0123456789abcdef".repeat(4)).unwrap();
        let mut req = Request::new(());
        assert_eq!(presented(&req), None);
        attach(&mut req, &s);
        assert_eq!(presented(&req), Some(s.expose()));
    }
}
