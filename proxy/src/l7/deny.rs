//! Responses the proxy writes itself: a denied request, and an application that cannot be
//! reached.
//!
//! HTTP gets a status with a short `text/plain` body. gRPC clients ignore HTTP statuses, so a
//! gRPC request gets what a gRPC server would send for an error: HTTP 200 with
//! `content-type: application/grpc` and `grpc-status`/`grpc-message` in a *trailers-only*
//! response (one HEADERS frame ending the stream, gRPC's HTTP/2 protocol spec), which every
//! gRPC library maps to the status code (7 `PERMISSION_DENIED`, 14 `UNAVAILABLE`).

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::Body;

/// Body of a denied HTTP request (no policy details: those go to the proxy's log).
pub const FORBIDDEN_BODY: &str = "access denied by mesh intentions\n";
/// `grpc-message` of a denied gRPC call.
pub const FORBIDDEN_GRPC_MESSAGE: &str = "access denied by mesh intentions";
/// gRPC status code `PERMISSION_DENIED`.
pub const GRPC_PERMISSION_DENIED: u8 = 7;
/// gRPC status code `UNAVAILABLE`.
pub const GRPC_UNAVAILABLE: u8 = 14;

/// Whether a request is a gRPC call (`content-type: application/grpc[+proto|;…]`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn grpc(code: u8, message: &'static str) -> Response<Body> {
    // An empty body ends the stream with the HEADERS frame: a trailers-only response.
    let mut r = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    h.insert("grpc-message", HeaderValue::from_static(message));
    r
}

/// The answer to a denied request.
pub fn forbidden(grpc_call: bool) -> Response<Body> {
    if grpc_call {
        grpc(GRPC_PERMISSION_DENIED, FORBIDDEN_GRPC_MESSAGE)
    } else {
        text(StatusCode::FORBIDDEN, FORBIDDEN_BODY)
    }
}

/// gRPC status code `INTERNAL`: what an HTTP 400 maps to for gRPC clients (gRPC's "HTTP to
/// gRPC status code mapping").
pub const GRPC_INTERNAL: u8 = 13;

/// The answer to a request refused before authorization (malformed path, escaped slash or
/// underscore header refused by the request normalization). The reason goes to the log only.
pub fn bad_request(grpc_call: bool) -> Response<Body> {
    if grpc_call {
        grpc(
            GRPC_INTERNAL,
            "request refused by the mesh: malformed request",
        )
    } else {
        text(
            StatusCode::BAD_REQUEST,
            "request refused by the mesh: malformed path or headers\n",
        )
    }
}

/// A 307 to `location` (`PathWithEscapedSlashesAction=UNESCAPE_AND_REDIRECT`): the client
/// repeats the request, method and body included, on the normalized path, which is then
/// authorized like any other.
pub fn redirect(location: &http::Uri) -> Response<Body> {
    let mut r = text(StatusCode::TEMPORARY_REDIRECT, "");
    if let Ok(v) = HeaderValue::from_str(&location.to_string()) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

/// The answer when the application cannot be reached or fails mid-request.
pub fn bad_gateway(grpc_call: bool) -> Response<Body> {
    if grpc_call {
        grpc(GRPC_UNAVAILABLE, "upstream application unavailable")
    } else {
        text(
            StatusCode::BAD_GATEWAY,
            "upstream application unavailable\n",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_denial_is_trailers_only() {
        let r = forbidden(true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "7");
        assert!(hyper::body::Body::is_end_stream(r.body()));
        let r = forbidden(false);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&h));
    }
}
