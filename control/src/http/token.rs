//! Where a request carries its ACL token, in Consul's order: the `?token=` query parameter,
//! then the `X-Consul-Token` header, then `Authorization: Bearer <token>` (Consul's
//! `parseToken`: the query string wins, then the headers in that order).
//!
//! Only extraction lives here (shared by the server's API and, later, the agent's); resolving
//! the secret to a token is the server's (`crate::server::acl`). The value is a secret: it is
//! never logged.

use std::collections::HashMap;

use axum::http::HeaderMap;

/// Consul's token header.
pub const TOKEN_HEADER: &str = "X-Consul-Token";

/// The gRPC metadata key an agent puts the caller's token in (its own agent token for its own
/// work: anti-entropy, watches).
pub const GRPC_TOKEN_METADATA: &str = "x-consul-token";

/// The gRPC metadata key of the servers' internal secret (`Cluster.*` between servers, never a
/// client token).
pub const GRPC_SERVER_SECRET_METADATA: &str = "x-mesh-server-secret";

/// The token the request carries, or `None` (the request acts as the anonymous token). An
/// empty value counts as none, as in Consul.
pub fn request_token<'a>(
    headers: &'a HeaderMap,
    query: &'a HashMap<String, String>,
) -> Option<&'a str> {
    let query_token = query.get("token").map(String::as_str);
    let header_token = || {
        headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    let bearer = || {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    };
    query_token
        .filter(|t| !t.is_empty())
        .or_else(header_token)
        .or_else(bearer)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn query(token: Option<&str>) -> HashMap<String, String> {
        token
            .map(|t| HashMap::from([("token".to_string(), t.to_string())]))
            .unwrap_or_default()
    }

    #[test]
    fn query_then_header_then_bearer() {
        let all = headers(&[("x-consul-token", "h"), ("authorization", "Bearer b")]);
        assert_eq!(request_token(&all, &query(Some("q"))), Some("q"));
        assert_eq!(request_token(&all, &query(None)), Some("h"));
        let bearer = headers(&[("authorization", "bearer  b ")]);
        assert_eq!(request_token(&bearer, &query(None)), Some("b"));
    }

    #[test]
    fn empty_or_other_schemes_are_no_token() {
        assert_eq!(request_token(&HeaderMap::new(), &query(Some(""))), None);
        let basic = headers(&[("authorization", "Basic Zm9vOmJhcg==")]);
        assert_eq!(request_token(&basic, &query(None)), None);
        let blank = headers(&[("x-consul-token", " ")]);
        assert_eq!(request_token(&blank, &query(None)), None);
    }
}
