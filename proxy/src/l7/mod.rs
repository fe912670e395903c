//! L7 inbound: per-request HTTP/1.1, HTTP/2 and gRPC authorization (issue #6).
//!
//! For a local service whose declared protocol ([`Protocol`], from its `service-defaults`
//! config entry; never sniffed) is `http`, `http2` or `grpc`, the inbound listener hands the
//! mutual-TLS stream to [`server::serve`] instead of the byte pump. It serves HTTP/1.1 (`http`)
//! or HTTP/2 (`http2`, `grpc`) on that stream, decides every request against the peer's SPIFFE
//! ID with [`crate::authz::Policy::authorize_http`] (the newest intentions snapshot, so an
//! intention change applies to the next request), answers denied ones itself ([`deny`]) and
//! forwards allowed ones to the application over one connection per inbound connection
//! ([`forward`]: HTTP/1.1, or HTTP/2 cleartext with prior knowledge), with hop-by-hop headers
//! removed on both legs ([`hop`]). Bodies stream both ways frame by frame, so trailers, gRPC
//! streaming and slow uploads pass unchanged, and an HTTP/1.1 `Upgrade` answered with 101
//! becomes a plain byte tunnel.

pub mod deny;
pub mod forward;
pub mod hop;
pub mod server;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Declared protocol of a service (Consul's `service-defaults` `Protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Opaque bytes: L4 authorization once per connection, then the byte pump.
    #[default]
    Tcp,
    /// HTTP/1.1 on both legs.
    Http,
    /// HTTP/2 over the mesh, h2c (prior knowledge) to the application.
    Http2,
    /// HTTP/2 like `http2`; denials are gRPC `PERMISSION_DENIED` statuses.
    Grpc,
}

/// An unknown protocol name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {value:?} (expected tcp, http, http2 or grpc)")]
pub struct ProtocolError {
    pub value: String,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }

    /// Whether connections are served by the HTTP layer (per-request authorization).
    pub fn is_l7(self) -> bool {
        self != Protocol::Tcp
    }

    /// Whether the HTTP layer speaks HTTP/2 on both legs.
    pub fn is_h2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

impl FromStr for Protocol {
    type Err = ProtocolError;

    /// Case-insensitive, as Consul lower-cases the field; empty means `tcp` (Consul's default).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "tcp" => Ok(Protocol::Tcp),
            "http" => Ok(Protocol::Http),
            "http2" => Ok(Protocol::Http2),
            "grpc" => Ok(Protocol::Grpc),
            _ => Err(ProtocolError {
                value: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
