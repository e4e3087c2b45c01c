//! [`ApiError`]: every error answer of the HTTP API (ingest, admin, queues).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use switchyard_api::ErrorBody;

/// An error answer: a status and a message that says what to fix, sent as
/// `{"error": "…"}` ([`switchyard_api::ErrorBody`]), with `Retry-After` or
/// `WWW-Authenticate: Bearer` when the status calls for them.
///
/// It lives here, next to the ingest handler and the bearer-token check, so that ingest
/// and the runtime's admin and queue APIs answer errors the same way; the API's types
/// (`switchyard-api`) stay free of axum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
    /// Sends `WWW-Authenticate: Bearer` (401 answers).
    pub bearer_challenge: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            bearer_challenge: false,
        }
    }

    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409 with `message`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 500 with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 503 with `message`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 401 with `message` and `WWW-Authenticate: Bearer`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError {
            bearer_challenge: true,
            ..Self::new(StatusCode::UNAUTHORIZED, message)
        }
    }

    /// Adds `Retry-After: seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.bearer_challenge {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn the_body_is_the_error_object_and_the_headers_follow_the_status() {
        let r = ApiError::unauthorized("send a token").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"error":"send a token"}"#);

        let r = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "busy")
            .retry_after(5)
            .into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
