//! The one place where errors become HTTP responses.
//!
//! Every error body is one line of `text/plain` saying what went wrong and what to do.
//! `401` carries `WWW-Authenticate: Bearer` (RFC 6750) with the reason as `error_description`.

use crate::auth::AuthError;
use crate::media::MediaError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("unsupported Content-Type {got:?}: send {expected}")]
    UnsupportedMediaType { got: String, expected: &'static str },
    #[error("body larger than {limit} bytes; send a smaller one (see [http] max_sdp_bytes)")]
    PayloadTooLarge { limit: usize },
    #[error("no table {0} on this node; check the table id in the URL")]
    UnknownTable(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("internal error: {0}; see the node's log")]
    Internal(String),
    /// A dealer action the round's state or its arguments refuse.
    #[error("{0}")]
    Dealer(#[from] crate::table::DealerError),
    #[error(transparent)]
    TableStopped(#[from] crate::control::TableUnavailable),
    /// Over a `[limits]` cap or rate: `429` with `Retry-After`.
    #[error(transparent)]
    Limited(#[from] crate::limits::Refused),
    /// The table's writer is not on this node (a link must go to the owner): `409`.
    #[error("table {0} is not owned by this node; ask GET /api/v1/tables/{0} for its owner")]
    NotOwner(String),
    #[error("no live node {0} in the cluster; GET /api/v1/cluster/nodes lists them")]
    UnknownNode(String),
    /// This node is draining or its cluster is out of reach: `503` with `Retry-After`.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Auth(e) if e.is_unauthenticated() => StatusCode::UNAUTHORIZED,
            ApiError::Auth(_) => StatusCode::FORBIDDEN,
            ApiError::Media(e) => match e {
                MediaError::BadSdp(_) | MediaError::BadSdpFrag(_) => StatusCode::BAD_REQUEST,
                MediaError::UnusableSdp(_) => StatusCode::UNPROCESSABLE_ENTITY,
                MediaError::NoSession(_) => StatusCode::NOT_FOUND,
                MediaError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
                MediaError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
                MediaError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnknownTable(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Dealer(e) => match e.code() {
                crate::protocol::ErrorCode::WrongState => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            },
            ApiError::TableStopped(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotOwner(_) => StatusCode::CONFLICT,
            ApiError::UnknownNode(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `WWW-Authenticate` challenge for auth failures.
    fn challenge(&self) -> Option<String> {
        let ApiError::Auth(e) = self else { return None };
        let description = quoted_safe(&e.to_string());
        Some(match e {
            // RFC 6750 §3.1: no error code when the request carried no credentials.
            AuthError::Missing => "Bearer realm=\"tablecast\"".to_owned(),
            AuthError::Malformed(_) | AuthError::Expired | AuthError::UnknownKey(_) => {
                format!(
                    "Bearer realm=\"tablecast\", error=\"invalid_token\", error_description=\"{description}\""
                )
            }
            AuthError::WrongRole { .. } | AuthError::WrongTable { .. } => {
                format!(
                    "Bearer realm=\"tablecast\", error=\"insufficient_scope\", error_description=\"{description}\""
                )
            }
        })
    }
}

/// Makes a message safe inside a quoted header parameter (no quotes, backslashes or controls).
fn quoted_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '"' || c == '\\' || !(' '..='~').contains(&c) {
                '\''
            } else {
                c
            }
        })
        .collect()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error()
            && !matches!(
                self,
                ApiError::Unavailable(_)
                    | ApiError::TableStopped(crate::control::TableUnavailable::Moving(_))
            )
        {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
        let line: String = self.to_string().lines().collect::<Vec<_>>().join(" ");
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{line}\n"),
        )
            .into_response();
        if let ApiError::Limited(refused) = &self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(refused.retry_after_secs),
            );
        }
        if let ApiError::Unavailable(_) = &self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u32));
        }
        if let Some(value) = self
            .challenge()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_media_error_docs() {
        let cases = [
            (MediaError::BadSdp("x".into()), 400),
            (MediaError::UnusableSdp("x".into()), 422),
            (MediaError::NoSession("x".into()), 404),
            (MediaError::PreconditionRequired, 428),
            (MediaError::PreconditionFailed, 412),
            (MediaError::BadSdpFrag("x".into()), 400),
            (MediaError::Unavailable("x".into()), 503),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::Media(e).status().as_u16(), status);
        }
    }

    #[test]
    fn auth_failures_carry_a_bearer_challenge() {
        let r = ApiError::Auth(AuthError::Expired).into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let c = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            c.starts_with("Bearer ") && c.contains("invalid_token"),
            "{c}"
        );
        let r = ApiError::Auth(AuthError::Missing).into_response();
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"tablecast\""
        );
    }

    #[test]
    fn quoted_parameters_stay_quoted() {
        assert_eq!(quoted_safe("a \"b\" \\ c\n"), "a 'b' ' c'");
    }
}
