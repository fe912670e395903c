//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so a proxy removes them
//! before forwarding a message on its own next connection.
//!
//! Removed: `Connection` and every header it names, `Keep-Alive`, `Proxy-Connection`,
//! `Transfer-Encoding` (hyper frames each leg itself), `Upgrade`, and `TE` unless its only
//! meaning left is `trailers` (which gRPC requires end to end, RFC 9113 §8.2.2). For the
//! upgrade path (an HTTP/1.1 request asking to switch protocols, and the 101 answering it)
//! `Connection: upgrade` and `Upgrade` are kept, because the application must see them to
//! switch.

use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE};

/// Legacy hop-by-hop headers that need not be listed in `Connection`.
const KEEP_ALIVE: &str = "keep-alive";
const PROXY_CONNECTION: &str = "proxy-connection";

/// Whether `Connection` (any of its values) lists `token`.
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether an HTTP/1.1 message asks to switch protocols (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_has(headers, "upgrade")
}

/// Removes the hop-by-hop headers of `headers`. With `keep_upgrade`, `Upgrade` stays and
/// `Connection` is reduced to `upgrade`.
pub fn strip(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Headers named by Connection are hop-by-hop too (RFC 9110 §7.6.1).
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if keep_upgrade && name == UPGRADE {
            continue;
        }
        // A client cannot use Connection to strip TE: trailers from a gRPC request.
        if name != TE {
            headers.remove(&name);
        }
    }
    headers.remove(CONNECTION);
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    headers.remove(TRANSFER_ENCODING);
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
    let trailers = headers
        .get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(TE);
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn removes_listed_and_legacy_headers() {
        let mut h = map(&[
            ("connection", "close, X-Trace"),
            ("connection", "x-other"),
            ("x-trace", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("x-kept", "3"),
            ("content-length", "4"),
        ]);
        strip(&mut h, false);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept", "content-length"]);
    }

    #[test]
    fn te_trailers_survives() {
        let mut h = map(&[("te", "deflate;q=0.5, trailers"), ("connection", "te")]);
        strip(&mut h, false);
        assert_eq!(h.get(TE).unwrap(), "trailers");
        let mut h = map(&[("te", "trailers")]);
        strip(&mut h, false);
        assert_eq!(h.get(TE).unwrap(), "trailers");
    }

    #[test]
    fn upgrade_path_keeps_upgrade() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&h));
        strip(&mut h, true);
        assert_eq!(h.get(UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(CONNECTION).unwrap(), "upgrade");
        assert_eq!(h.get("sec-websocket-key").unwrap(), "k");
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }
}
