//! L7 inbound: per-request HTTP/1.1, HTTP/2 and gRPC authorization (issue #6).
//!
//! For a local service whose declared protocol (from its `service-defaults` config entry,
//! never sniffed) is `http`, `http2` or `grpc`, the inbound listener hands the mutual-TLS
//! stream to [`server::serve`] instead of the byte pump. It serves HTTP/1.1 (`http`)
//! or HTTP/2 (`http2`, `grpc`) on that stream, decides every request against the peer's SPIFFE
//! ID with [`crate::authz::Policy::authorize_http`] (the newest intentions snapshot, so an
//! intention change applies to the next request), answers denied ones itself ([`deny`]) and
//! forwards allowed ones to the application over one connection per inbound connection
//! ([`forward`]: HTTP/1.1, or HTTP/2 cleartext with prior knowledge), with hop-by-hop headers
//! removed on both legs ([`hop`]). Bodies stream both ways frame by frame, so trailers, gRPC
//! streaming and slow uploads pass unchanged, and an HTTP/1.1 `Upgrade` answered with 101
//! becomes a plain byte tunnel.
//!
//! The protocol type is the control plane's own (`mesh_policy::config_entries::Protocol`),
//! imported from there by every user, so the proxy and the config-entry validation can never
//! disagree about a spelling.

pub mod body;
pub mod deny;
pub mod forward;
pub mod hop;
pub mod linger;
pub mod server;

/// Body of every response the L7 server sends: the application's, or one the proxy wrote
/// ([`deny`]). Defined here, below [`server`] and [`deny`], so both name it without importing
/// each other.
pub type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

#[cfg(test)]
mod tests {
    use mesh_policy::config_entries::Protocol;

    #[test]
    fn parses_consul_spellings() {
        assert_eq!("".parse::<Protocol>().unwrap(), Protocol::Tcp);
        assert_eq!("HTTP".parse::<Protocol>().unwrap(), Protocol::Http);
        assert_eq!("http2".parse::<Protocol>().unwrap(), Protocol::Http2);
        assert_eq!("grpc".parse::<Protocol>().unwrap(), Protocol::Grpc);
        let e = "quic".parse::<Protocol>().unwrap_err();
        assert!(e.to_string().contains("quic"), "{e}");
        assert!(!Protocol::Tcp.is_l7() && Protocol::Http.is_l7());
        assert!(Protocol::Grpc.is_h2() && !Protocol::Http.is_h2());
    }
}
