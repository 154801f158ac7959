//! Errors of the simulator: [`SimError`] for starting and running it, [`ApiError`] for the
//! JSON error answers of its HTTP API.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why the simulator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A flag has a value the simulator cannot work with.
    #[error("invalid {field}: {reason}")]
    Config {
        /// The flag, e.g. `--drift-rate`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Binding or serving the socket failed.
    #[error("sim I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The webhook HTTP client could not be built.
    #[error("webhook client: {0}")]
    WebhookClient(#[source] reqwest::Error),
}

impl SimError {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            field,
            reason: reason.into(),
        }
    }
}

/// A JSON error answer: `{"error": "<code>", "message": "<reason>"}` with a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code (`invalid_parameter`, `not_found`, …).
    pub code: &'static str,
    /// A human-readable reason.
    pub message: String,
}

impl ApiError {
    /// A 400 for a request parameter.
    pub fn bad_param(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_parameter",
            message: message.into(),
        }
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }

    /// A 400 for a body that does not parse.
    pub fn bad_body(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_body",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}
