//! RFC 9457 problem details: every error leaves Warden as `application/problem+json` with a
//! message a person can act on.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use warden_core::Error;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `https://warden.dev/problems/invalid-request`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Individual problems, e.g. every policy error with file:line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// A structured report behind the problem, e.g. the policy test report of a refused
    /// bundle. Boxed: `Problem` is the error of every handler and stays small.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub report: Option<Box<serde_json::Value>>,
    /// Seconds (u32 keeps `Problem`, every handler's error, within 128 bytes).
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Problem {
        Problem {
            problem_type: format!("https://warden.dev/problems/{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: vec![],
            report: None,
            retry_after: None,
        }
    }

    pub fn with_errors(mut self, errors: Vec<String>) -> Problem {
        self.errors = errors;
        self
    }

    pub fn with_report(mut self, report: serde_json::Value) -> Problem {
        self.report = Some(Box::new(report));
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        match e {
            Error::Invalid(m) => Problem::new(StatusCode::BAD_REQUEST, "invalid-request", m),
            Error::Unauthenticated(m) => {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", m)
            }
            Error::Forbidden(m) => Problem::new(StatusCode::FORBIDDEN, "forbidden", m),
            Error::NotFound(m) => Problem::new(StatusCode::NOT_FOUND, "not-found", m),
            Error::Conflict(m) => Problem::new(StatusCode::CONFLICT, "conflict", m),
            Error::TooLarge(m) => Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", m),
            Error::Unavailable {
                message,
                retry_after,
            } => {
                let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
                p.retry_after = Some(
                    retry_after
                        .map(|d| d.as_secs().clamp(1, u64::from(u32::MAX)) as u32)
                        .unwrap_or(1),
                );
                p
            }
            Error::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = self.retry_after;
        let mut resp = (status, axum::Json(&self)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"warden\""),
            );
        }
        resp
    }
}

/// The error type of every handler.
pub type ApiResult<T> = Result<T, Problem>;
