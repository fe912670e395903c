//! HTTP plumbing shared by the server's API (`crate::server::api`) and the agent's
//! (`crate::agent::http`): Consul-shaped errors, `?index=&wait=&stale` parsing and the blocking
//! wait, `X-Consul-Index` answers, the serve loop with its limits (`serve`).
//!
//! Errors are plain text with Consul's status codes; bodies with unknown fields or malformed
//! JSON get 400 with the reason, and nothing is applied. Bodies are decoded as Consul decodes
//! them ([`json_body`]). This module imports nothing from
//! `server` or `agent`: each converts its own errors into [`ApiError`] where it owns them.

pub mod blocking;
pub mod list_query;
pub mod serve;
pub mod token;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
pub use blocking::QueryOptions;
pub use serve::{HttpLimits, serve};

/// Consul's header on a list answer some entries of which the caller's token may not read.
pub const FILTERED_HEADER: &str = "X-Consul-Results-Filtered-By-ACLs";

/// `response` with `X-Consul-Results-Filtered-By-ACLs: true` when `filtered` (the server's and
/// the agent's list routes both mark their answers here).
pub fn mark_filtered(mut response: Response, filtered: bool) -> Response {
    if filtered {
        response.headers_mut().insert(
            FILTERED_HEADER,
            axum::http::HeaderValue::from_static("true"),
        );
    }
    response
}

/// A JSON request body decoded as Consul decodes it (keys matched to fields ignoring case and
/// snake_case, at every level: `mesh_policy::decode`); 400 `Request decode failed: <path>:
/// <reason>` otherwise, unknown fields included.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    mesh_policy::decode::json(body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))
}

/// Answers a path no route knows, as Consul does.
pub async fn not_found() -> ApiError {
    ApiError::not_found("Invalid URL path: not a recognized HTTP API endpoint")
}

/// An API error: status and plain-text message, as Consul answers.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 401: what Consul answers on its ACL routes when ACLs are disabled.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }

    /// 403: an unknown token or a denied permission.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            self.message,
        )
            .into_response()
    }
}
