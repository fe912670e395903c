//! The Consul-shaped HTTP API (paths, JSON field names, `X-Consul-Index`, `?index=&wait=`
//! blocking queries, `?stale`), served by every server on `--http-addr`.
//!
//! Errors are plain text with Consul's status codes; bodies with unknown fields or malformed
//! JSON get 400 with the reason, and nothing is applied.

pub mod blocking;
pub mod proxy;
mod routes;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

pub use blocking::QueryOptions;
pub use routes::server_router;

use crate::server::{Server, ServerError};

/// What answers the API.
#[derive(Clone)]
pub enum Backend {
    Server(Arc<Server>),
}

/// Answers a path no route knows, as Consul does.
pub async fn not_found() -> ApiError {
    ApiError::not_found("Invalid URL path: not a recognized HTTP API endpoint")
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    app: axum::Router,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "HTTP server stopped");
    }
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
}

impl From<ServerError> for ApiError {
    fn from(e: ServerError) -> Self {
        Self {
            status: StatusCode::from_u16(e.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: e.to_string(),
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
